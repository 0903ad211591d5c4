//! Test support: a store wrapper that counts calls and injects faults, and a real HTTP
//! server on a loopback port.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use scs::time::OffsetDateTime;
use scs::{Capabilities, Error, ErrorKind, IterableStore, Result, SessionManager, Store};
use scs_core::async_trait;
use scs_memstore::MemoryStore;

/// The memory store, wrapped to count every call and fail on demand.
#[derive(Clone, Default)]
pub struct Probe {
    pub inner: Arc<ProbeInner>,
}

#[derive(Default)]
pub struct ProbeInner {
    pub store: MemoryStoreCell,
    pub finds: AtomicUsize,
    pub commits: AtomicUsize,
    pub deletes: AtomicUsize,
    pub touches: AtomicUsize,
    pub fail_find: AtomicBool,
    pub fail_commit: AtomicBool,
    pub no_touch: AtomicBool,
    /// Answers finds and compare-and-set commits on the spot, as the memory store does
    /// (the manager then loads and commits without awaiting).
    pub on_the_spot: AtomicBool,
}

pub struct MemoryStoreCell(pub MemoryStore);

impl Default for MemoryStoreCell {
    fn default() -> Self {
        Self(
            MemoryStore::builder()
                .cleanup_interval(None)
                .build()
                .unwrap(),
        )
    }
}

impl Probe {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn without_touch() -> Self {
        let p = Self::default();
        p.inner.no_touch.store(true, Ordering::SeqCst);
        p
    }

    /// A probe that answers on the spot, as the memory store does.
    pub fn on_the_spot() -> Self {
        let p = Self::default();
        p.inner.on_the_spot.store(true, Ordering::SeqCst);
        p
    }

    pub fn mem(&self) -> &MemoryStore {
        &self.inner.store.0
    }

    pub fn finds(&self) -> usize {
        self.inner.finds.load(Ordering::SeqCst)
    }

    pub fn commits(&self) -> usize {
        self.inner.commits.load(Ordering::SeqCst)
    }

    pub fn deletes(&self) -> usize {
        self.inner.deletes.load(Ordering::SeqCst)
    }

    pub fn touches(&self) -> usize {
        self.inner.touches.load(Ordering::SeqCst)
    }

    pub fn writes(&self) -> usize {
        self.commits() + self.deletes() + self.touches()
    }

    pub fn calls(&self) -> usize {
        self.finds() + self.writes()
    }

    pub fn fail_find(&self, on: bool) {
        self.inner.fail_find.store(on, Ordering::SeqCst);
    }

    pub fn fail_commit(&self, on: bool) {
        self.inner.fail_commit.store(on, Ordering::SeqCst);
    }

    /// Keys physically held.
    pub async fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .mem()
            .all()
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        keys
    }
}

fn injected(what: &str) -> Error {
    Error::new(ErrorKind::Connection, format!("injected failure: {what}")).with_backend("probe")
}

#[async_trait]
impl Store for Probe {
    fn backend(&self) -> &'static str {
        "probe"
    }

    fn capabilities(&self) -> Capabilities {
        let caps = Capabilities::new().with_iterate().with_versioned();
        if self.inner.no_touch.load(Ordering::SeqCst) {
            caps
        } else {
            caps.with_touch()
        }
    }

    async fn find(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.finds.fetch_add(1, Ordering::SeqCst);
        if self.inner.fail_find.load(Ordering::SeqCst) {
            return Err(injected("find"));
        }
        self.mem().find(key).await
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        self.inner.commits.fetch_add(1, Ordering::SeqCst);
        if self.inner.fail_commit.load(Ordering::SeqCst) {
            return Err(injected("commit"));
        }
        self.mem().commit(key, data, expiry).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.deletes.fetch_add(1, Ordering::SeqCst);
        self.mem().delete(key).await
    }

    async fn touch(&self, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        if self.inner.no_touch.load(Ordering::SeqCst) {
            return Err(Error::unsupported("probe", "touch"));
        }
        self.inner.touches.fetch_add(1, Ordering::SeqCst);
        self.mem().touch(key, expiry).await
    }

    async fn find_record(&self, key: &str) -> Result<Option<scs::core::Record>> {
        self.inner.finds.fetch_add(1, Ordering::SeqCst);
        if self.inner.fail_find.load(Ordering::SeqCst) {
            return Err(injected("find"));
        }
        self.mem().find_record(key).await
    }

    async fn commit_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Result<Option<u64>> {
        self.inner.commits.fetch_add(1, Ordering::SeqCst);
        if self.inner.fail_commit.load(Ordering::SeqCst) {
            return Err(injected("commit"));
        }
        self.mem().commit_if(key, data, expiry, expected).await
    }

    fn find_record_now(&self, key: &str) -> Option<Result<Option<scs::core::Record>>> {
        if !self.inner.on_the_spot.load(Ordering::SeqCst) {
            return None;
        }
        self.inner.finds.fetch_add(1, Ordering::SeqCst);
        if self.inner.fail_find.load(Ordering::SeqCst) {
            return Some(Err(injected("find")));
        }
        self.mem().find_record_now(key)
    }

    fn commit_if_now(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Option<Result<Option<u64>>> {
        if !self.inner.on_the_spot.load(Ordering::SeqCst) {
            return None;
        }
        self.inner.commits.fetch_add(1, Ordering::SeqCst);
        if self.inner.fail_commit.load(Ordering::SeqCst) {
            return Some(Err(injected("commit")));
        }
        self.mem().commit_if_now(key, data, expiry, expected)
    }

    fn as_iterable(&self) -> Option<&dyn IterableStore> {
        Some(self)
    }
}

#[async_trait]
impl IterableStore for Probe {
    async fn all(&self) -> Result<Vec<scs::core::Entry>> {
        self.mem().all().await
    }
}

/// Serves `app` on a loopback port and returns the base URL.
pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

/// A plain HTTP client: cookies are sent by hand so tests see exactly what goes over
/// the wire.
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    /// Every Set-Cookie value.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// The value of the `name` cookie set by this response, if any.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().iter().find_map(|c| {
            let first = c.split(';').next()?;
            let (n, v) = first.split_once('=')?;
            (n == name).then(|| v.to_owned())
        })
    }

    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

impl Client {
    pub fn new(base: String) -> Self {
        Self {
            base,
            http: reqwest::Client::new(),
        }
    }

    pub async fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        self.send(req).await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.text().await.unwrap();
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// A manager over `store` with defaults, built inside the runtime.
pub fn manager(store: Probe) -> SessionManager {
    SessionManager::new(store)
}
