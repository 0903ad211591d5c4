//! Token reading through the real `LoadAndSave` layer: arbitrary bytes become `Cookie`
//! headers (split on `\n`) and, in header mode, an `X-Session-Token` header. The store
//! records every key it is asked for; the target checks that only the hashed key of a
//! well-formed token found in the input ever reaches it, at most once per request; that
//! the one known session loads exactly when its key was asked for; and that a request
//! that changes nothing gets no cookie and no write.

#![no_main]

use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};

use http::{HeaderValue, Request, Response};
use libfuzzer_sys::fuzz_target;
use scs::time::OffsetDateTime;
use scs::{Codec, MsgPackCodec, SessionData, SessionManager, TokenTransport, Value, token};
use scs_core::{Result, Store, async_trait};
use tower::{Layer as _, ServiceExt as _};

/// The one live session: its token is a valid one (all zero bits).
const KNOWN: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[derive(Default)]
struct Recorder {
    known: Vec<u8>,
    asked: Mutex<Vec<String>>,
}

/// The store handle each manager owns; all share one recorder.
struct Shared(Arc<Recorder>);

#[async_trait]
impl Store for Shared {
    fn backend(&self) -> &'static str {
        "recorder"
    }

    async fn find(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.0.asked.lock().unwrap().push(key.to_owned());
        Ok((key == token::store_key(KNOWN, true)).then(|| self.0.known.clone()))
    }

    async fn commit(&self, _: &str, _: &[u8], _: OffsetDateTime) -> Result<()> {
        panic!("an unmodified request committed");
    }

    async fn delete(&self, _: &str) -> Result<()> {
        panic!("an unmodified request deleted");
    }
}

struct World {
    runtime: tokio::runtime::Runtime,
    store: Arc<Recorder>,
    cookie: SessionManager,
    both: SessionManager,
    /// What the handler read from the session (`v`), when it ran.
    seen: Mutex<Option<String>>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let mut data =
            SessionData::new(OffsetDateTime::now_utc() + std::time::Duration::from_secs(86400));
        data.values
            .insert("v".into(), Value::from_serialize("known").unwrap());
        let store = Arc::new(Recorder {
            known: MsgPackCodec.encode(&data).unwrap(),
            ..Recorder::default()
        });
        let cookie = SessionManager::new(Shared(store.clone()));
        let both = SessionManager::builder(Shared(store.clone()))
            .token_transport(TokenTransport::Both("x-session-token".into()))
            .build()
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        World {
            runtime,
            store,
            cookie,
            both,
            seen: Mutex::new(None),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let w = world();
    let header_mode = mode & 1 == 1;
    let manager = if header_mode { &w.both } else { &w.cookie };

    let segments: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let mut req = Request::new(String::new());
    let mut first_cookie: Option<&[u8]> = None;
    for (i, seg) in segments.iter().enumerate() {
        // Bytes a header value cannot hold (CR, NUL, ...) never arrive from hyper either.
        let Ok(value) = HeaderValue::from_bytes(seg) else {
            continue;
        };
        if header_mode && i + 1 == segments.len() {
            req.headers_mut().append("x-session-token", value);
        } else {
            first_cookie.get_or_insert(seg);
            req.headers_mut().append(http::header::COOKIE, value);
        }
    }

    let m = manager.clone();
    let handler = tower::service_fn(move |req: Request<String>| {
        let m = m.clone();
        async move {
            let session = m.session(&req).await.expect("the layer adds the session");
            *world().seen.lock().unwrap() = Some(session.get_string("v").unwrap_or_default());
            Ok::<_, Infallible>(Response::new(String::new()))
        }
    });
    w.store.asked.lock().unwrap().clear();
    *w.seen.lock().unwrap() = None;
    let res = w
        .runtime
        .block_on(manager.layer().layer(handler).oneshot(req))
        .unwrap();

    let asked = std::mem::take(&mut *w.store.asked.lock().unwrap());
    assert_eq!(res.status(), 200);
    assert!(res.headers().get(http::header::SET_COOKIE).is_none());
    assert!(
        asked.len() <= 1,
        "{} store lookups for one request",
        asked.len()
    );
    // Every key asked for is the hash of a well-formed token present in the input.
    let candidates: Vec<String> = rest
        .windows(token::TOKEN_LEN)
        .filter(|w| scs_fuzz::is_token(w))
        .map(|w| token::store_key(std::str::from_utf8(w).unwrap(), true))
        .collect();
    for key in &asked {
        assert!(
            candidates.contains(key),
            "a key not from the input reached the store"
        );
    }
    let loaded_known = asked
        .first()
        .is_some_and(|k| *k == token::store_key(KNOWN, true));
    let seen = w.seen.lock().unwrap().take().expect("the handler ran");
    assert_eq!(
        seen == "known",
        loaded_known,
        "the session loaded is not the one looked up"
    );
    if first_cookie == Some(format!("session={KNOWN}").as_bytes()) {
        assert!(loaded_known, "the plain session cookie was not read");
    }
});
