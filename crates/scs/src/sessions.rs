//! The sessions of one request, one per layered manager, and how handlers reach them.

use bytes::Bytes;
use http::{Extensions, HeaderMap, Request, Response, StatusCode};

use scs_core::token::Token;

use crate::{Session, SessionManager};

/// Every session of a request, one per [`SessionManager`] layered on the route,
/// outermost first, each loaded. With a single manager, take [`Session`] directly; with
/// several, take `Sessions` and pick by cookie name (or use [`SessionManager::session`]).
///
/// ```
/// async fn handler(sessions: scs::Sessions) -> String {
///     let admin = sessions.get("admin_session").map(|s| s.keys().len()).unwrap_or(0);
///     format!("{admin} admin keys")
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Sessions(Vec<Session>);

impl Sessions {
    /// Every session of a request that went through one or more `LoadAndSave` layers,
    /// each loaded from its store now if no earlier call loaded it. For plain hyper or
    /// tower handlers; axum handlers take `Sessions` as an extractor.
    ///
    /// # Errors
    /// [`SessionRejection::MissingLayer`] when no layer ran;
    /// [`SessionRejection::Load`] when a store or codec failed.
    pub fn from_request<B>(
        req: &Request<B>,
    ) -> impl Future<Output = Result<Self, SessionRejection>> + Send + 'static {
        Self::from_parts(req.headers(), req.extensions())
    }

    pub(crate) fn from_parts(
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> impl Future<Output = Result<Self, SessionRejection>> + Send + 'static {
        // What the request holds is read now, so the future borrows nothing.
        let all = of_request(extensions).map(|all| {
            all.iter()
                .map(|s| (s.clone(), s.load_token(headers)))
                .collect::<Vec<_>>()
        });
        async move {
            let all = all.ok_or(SessionRejection::MissingLayer)?;
            let mut loaded = Vec::with_capacity(all.len());
            for (session, token) in all {
                loaded.push(self::loaded(session, token).await?);
            }
            Ok(Self(loaded))
        }
    }

    /// The session of the manager whose cookie is named `cookie_name`.
    pub fn get(&self, cookie_name: &str) -> Option<&Session> {
        self.0
            .iter()
            .find(|s| s.manager().config().cookie.name == cookie_name)
    }

    /// The session of `manager`.
    pub fn of(&self, manager: &SessionManager) -> Option<&Session> {
        self.iter().find(|s| s.manager().same_as(manager))
    }

    /// Every session, outermost layer first.
    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.0.iter()
    }

    /// How many sessions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Session {
    /// The session of a request that went through one `LoadAndSave` layer, loaded from the
    /// store now if no earlier call loaded it (a request that never asks costs no store
    /// call). For plain hyper or tower handlers; axum handlers take `Session` as an
    /// extractor.
    ///
    /// ```
    /// use http::{Request, Response};
    ///
    /// async fn handler(req: Request<String>) -> Response<String> {
    ///     let session = match scs::Session::from_request(&req).await {
    ///         Ok(session) => session,
    ///         Err(rejection) => return rejection.response().map(|b| {
    ///             String::from_utf8_lossy(&b).into_owned()
    ///         }),
    ///     };
    ///     let visits = session.get::<u64>("visits").unwrap_or(0) + 1;
    ///     session.put("visits", &visits).unwrap();
    ///     Response::new(format!("visit number {visits}"))
    /// }
    /// ```
    ///
    /// # Errors
    /// [`SessionRejection::MissingLayer`] when no layer ran; [`SessionRejection::Ambiguous`]
    /// when several managers are layered (use [`SessionManager::session`] or
    /// [`Sessions`]); [`SessionRejection::Load`] when the store or codec failed.
    pub fn from_request<B>(
        req: &Request<B>,
    ) -> impl Future<Output = Result<Self, SessionRejection>> + Send + 'static {
        Self::from_parts(req.headers(), req.extensions())
    }

    pub(crate) fn from_parts(
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> impl Future<Output = Result<Self, SessionRejection>> + Send + 'static {
        // What the request holds is read now, so the future borrows nothing.
        let found = match of_request(extensions) {
            None => Err(SessionRejection::MissingLayer),
            Some(all) if !all.rest.is_empty() => Err(SessionRejection::Ambiguous),
            Some(all) => Ok((all.first.clone(), all.first.load_token(headers))),
        };
        async move {
            let (session, token) = found?;
            loaded(session, token).await
        }
    }
}

/// The layers' sessions of one request, as kept among its extensions: not loaded until a
/// handler asks (private, so a session reaches user code only through a loading call).
#[derive(Clone)]
pub(crate) struct RequestSessions {
    /// The outermost layer's.
    first: Session,
    /// Further layers', outermost first (empty with one manager: no allocation).
    rest: Vec<Session>,
}

impl RequestSessions {
    /// Adds a layer's session to the request.
    pub(crate) fn add(extensions: &mut Extensions, session: Session) {
        match extensions.get_mut::<RequestSessions>() {
            Some(all) => all.rest.push(session),
            None => {
                extensions.insert(RequestSessions {
                    first: session,
                    rest: Vec::new(),
                });
            }
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Session> {
        std::iter::once(&self.first).chain(&self.rest)
    }
}

pub(crate) fn of_request(extensions: &Extensions) -> Option<&RequestSessions> {
    extensions.get::<RequestSessions>()
}

/// `session`, loaded with `token` (from [`Session::load_token`]).
pub(crate) async fn loaded(
    session: Session,
    token: Option<Token>,
) -> Result<Session, SessionRejection> {
    if !session.is_loaded() {
        // A store that answers on the spot loads without a future. Otherwise the load's
        // future lives on the heap: the handler's future that awaits this one is moved
        // several times per request, and stays small this way.
        // (`if let`: its scrutinee is gone before the `else`, so the awaiting path holds
        // nothing of the on-the-spot one.)
        let loaded = if let Some(loaded) = session.ensure_loaded_now(token) {
            loaded
        } else {
            Box::pin(session.ensure_loaded(token)).await
        };
        if let Err(error) = loaded {
            return Err(SessionRejection::Load {
                manager: session.manager().clone(),
                error,
            });
        }
    }
    Ok(session)
}

/// Why a handler could not have its [`Session`] or [`Sessions`]. The first two are
/// programming errors; [`response`](Self::response) answers each with a 500 (a load
/// failure with the manager's error handler).
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionRejection {
    /// No `LoadAndSave` layer ran for this request (or not the asked manager's).
    MissingLayer,
    /// Several managers are layered and one `Session` was asked for: take [`Sessions`]
    /// or use [`SessionManager::session`].
    Ambiguous,
    /// The store or the codec failed while loading the session.
    Load {
        /// What failed.
        error: scs_core::Error,
        /// The manager whose session it was (its error handler answers).
        manager: SessionManager,
    },
}

impl SessionRejection {
    /// The response for the client: the manager's error handler's for a load failure,
    /// a plain 500 naming the cause for the programming errors.
    pub fn response(&self) -> Response<Bytes> {
        match self {
            Self::Load { error, manager } => manager.error_response(error),
            other => {
                tracing::error!(rejection = %other, "session");
                let mut res = Response::new(Bytes::from(other.to_string()));
                *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                res
            }
        }
    }
}

impl std::fmt::Display for SessionRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MissingLayer => {
                f.write_str("no session: the scs LoadAndSave layer is not on this route")
            }
            Self::Ambiguous => f.write_str(
                "several session managers are layered on this route: extract scs::Sessions and pick one by cookie name",
            ),
            Self::Load { error, .. } => write!(f, "loading the session failed: {error}"),
        }
    }
}

impl std::error::Error for SessionRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Load { error, .. } => Some(error),
            _ => None,
        }
    }
}
#[cfg(test)]
mod tests {
    /// Futures of the request path are moved by value (into their parent's state, into a
    /// box): their size is copied on every request. A store call stays a few words (a
    /// plain struct around the store's boxed future), and a handler's wait for its
    /// session is one box away from the load.
    #[tokio::test]
    async fn request_path_futures_stay_small() {
        let manager = crate::SessionManager::new(scs_memstore::MemoryStore::new());
        let ctx = scs_core::Context::new();
        let session = crate::Session::pending(manager.clone(), ctx.clone(), None);
        let store_call = manager.find_raw_record(&ctx, "key");
        assert!(std::mem::size_of_val(&store_call) <= 128);
        let wait = super::loaded(session.clone(), None);
        assert!(std::mem::size_of_val(&wait) <= 96);
        // The end of a request: the rare paths (a slide's own commit, a conflict's re-read
        // and backoff, indexing a session under its user) are boxed, not held inline.
        let mut headers = http::HeaderMap::new();
        let finish = manager.finish(&session, &mut headers);
        assert!(std::mem::size_of_val(&finish) <= 640);
    }
}
