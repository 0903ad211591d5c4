//! The `LoadAndSave` tower layer: load the session before the handler, save it after.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use scs_core::Context;
use tower_layer::Layer;
use tower_service::Service;

use crate::sessions::RequestSessions;
use crate::{Session, SessionManager, transport};

/// The tower [`Layer`] that loads a session before the inner service runs and commits it
/// (or deletes it) after, setting the cookie. Works with axum 0.8 (`Router::layer`), bare
/// hyper 1 (through `hyper_util::service::TowerToHyperService`) and any tower stack.
///
/// Per request: adds `Vary: Cookie`; reads the token; runs the inner service, whose
/// handler gets its session loaded on first access (the [`Session`] extractor,
/// [`Session::from_request`], [`SessionManager::session`]): a store or codec failure
/// then answers the error handler's response and the handler does not run, and a request
/// that never asks costs no store call. Then, by status: modified → commit, `Set-Cookie`
/// and `Cache-Control: no-cache="Set-Cookie"`; destroyed → the deletion cookie;
/// unmodified → no store write and no cookie (with an idle timeout, the expiry slides,
/// whether or not the handler asked for the session). A commit failure replaces the whole
/// response with the error handler's. The body passes through untouched: streaming, SSE
/// and upgrades work, and the cookie is set before the first byte.
///
/// ```
/// use axum::{Router, routing::get};
/// use scs::{Session, SessionManager};
/// use scs_memstore::MemoryStore;
///
/// async fn put(session: Session) -> &'static str {
///     session.put("message", "Hello from a session!").unwrap();
///     "stored"
/// }
///
/// async fn get_message(session: Session) -> String {
///     session.get_string("message").unwrap_or_default()
/// }
///
/// # #[tokio::main] async fn main() {
/// let manager = SessionManager::new(MemoryStore::new());
/// let app: Router = Router::new()
///     .route("/put", get(put))
///     .route("/get", get(get_message))
///     .layer(manager.layer());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct LoadAndSave {
    manager: SessionManager,
}

impl LoadAndSave {
    /// The layer for `manager`.
    pub fn new(manager: SessionManager) -> Self {
        Self { manager }
    }
}

impl<S> Layer<S> for LoadAndSave {
    type Service = LoadAndSaveService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadAndSaveService {
            inner,
            manager: self.manager.clone(),
        }
    }
}

/// The service made by [`LoadAndSave`].
#[derive(Clone, Debug)]
pub struct LoadAndSaveService<S> {
    inner: S,
    manager: SessionManager,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for LoadAndSaveService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = LoadAndSaveFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The clone is ready only after its own poll_ready; keep the one we polled.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let manager = self.manager.clone();
        // With an idle timeout every request with a token slides its session, so the
        // token is read now; otherwise at the handler's first access (a request that never
        // asks never parses its cookies).
        let token = manager
            .slides()
            .then(|| transport::read(&manager, req.headers()));
        let ctx = if manager.wants_context() {
            Context::new().with_extensions(req.extensions().clone())
        } else {
            Context::new()
        };
        // Loaded when the handler first asks for it: a request that never does costs no
        // store call.
        let session = Session::pending(manager, ctx, token);
        RequestSessions::add(req.extensions_mut(), session.clone());
        LoadAndSaveFuture {
            state: State::Inner {
                fut: Box::pin(inner.call(req)),
                session: Some(session),
                slide: matches!(token, Some(Some(_))),
            },
        }
    }
}

pin_project! {
    /// The future of [`LoadAndSaveService`]: the inner service's, then the store work the
    /// session needs (none for a session read or never asked for). The inner future is
    /// on the heap: a server moves this future a few times per request, and a handler's
    /// future (the request inside it) is several hundred bytes to copy each time.
    pub struct LoadAndSaveFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Inner {
            fut: Pin<Box<F>>,
            session: Option<Session>,
            // An untouched session with a token slides (idle timeout).
            slide: bool,
        },
        Finish {
            fut: BoxFuture<Response<ResponseBody<B>>>,
        },
        Done,
    }
}

impl<F, B, E> Future for LoadAndSaveFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Send + 'static,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project().state.project() {
                StateProj::Inner {
                    fut,
                    session,
                    slide,
                } => {
                    let mut res = match fut.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(res)) => res,
                    };
                    let Some(session) = session.take() else {
                        // Not reachable: the state moves on as the session is taken.
                        return Poll::Pending;
                    };
                    let manager = session.manager().clone();
                    transport::add_vary(&manager, res.headers_mut());
                    let work = if session.is_loaded() {
                        manager.has_work(&session)
                    } else {
                        *slide
                    };
                    if !work {
                        self.as_mut().project().state.set(State::Done);
                        return Poll::Ready(Ok(res.map(ResponseBody::inner)));
                    }
                    // A store that answers on the spot: done here, no future to box.
                    if session.is_loaded()
                        && let Some(finished) = manager.finish_now(&session, res.headers_mut())
                    {
                        self.as_mut().project().state.set(State::Done);
                        return Poll::Ready(Ok(match finished {
                            Ok(()) => res.map(ResponseBody::inner),
                            Err(error) => error_response(&manager, &error),
                        }));
                    }
                    let fut = Box::pin(async move {
                        // Untouched but sliding: load (the one read a slide needs). Boxed,
                        // as it is the rarer path: the common one stays small to move.
                        if !session.is_loaded() {
                            let token = session.load_token(&http::HeaderMap::new());
                            if let Err(error) = Box::pin(session.ensure_loaded(token)).await {
                                return error_response(&manager, &error);
                            }
                        }
                        match manager.finish(&session, res.headers_mut()).await {
                            Ok(()) => res.map(ResponseBody::inner),
                            Err(error) => error_response(&manager, &error),
                        }
                    });
                    self.as_mut().project().state.set(State::Finish { fut });
                }
                StateProj::Finish { fut } => {
                    let res = std::task::ready!(fut.as_mut().poll(cx));
                    self.as_mut().project().state.set(State::Done);
                    return Poll::Ready(Ok(res));
                }
                // Polled after completion: allowed to do anything but panic here.
                StateProj::Done => return Poll::Pending,
            }
        }
    }
}

fn error_response<B>(
    manager: &SessionManager,
    error: &scs_core::Error,
) -> Response<ResponseBody<B>> {
    let mut res = manager.error_response(error);
    transport::add_vary(manager, res.headers_mut());
    res.map(ResponseBody::full)
}

pin_project! {
    /// The response body of [`LoadAndSaveService`]: the inner service's body untouched,
    /// or the error handler's.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full { data: Some(data) },
        }
    }
}

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { data } => Poll::Ready(
                data.take()
                    .filter(|d| !d.is_empty())
                    .map(|d| Ok(Frame::data(d))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
