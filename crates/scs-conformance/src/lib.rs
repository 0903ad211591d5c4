#![doc = include_str!("../README.md")]

use std::future::Future;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use libtest_mimic::{Arguments, Failed, Trial};
use scs_core::{Capabilities, CtxStore, Result};

mod counting;
pub mod embedded;
mod fault;
mod fault_trials;
mod middleware_trials;
mod store_trials;

pub use counting::{CountingStore, Counts};
pub use fault::{Fault, FaultProxy, find_at_once};

/// The environment variable that turns a missing server into a failure (set in CI).
pub const REQUIRE_BACKENDS_VAR: &str = "SCS_REQUIRE_BACKENDS";

/// What the suite asks the factory for: a store in a fresh namespace.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreOptions {
    /// A fresh name, unique per trial: `scs_` and 12 lowercase letters or digits, valid as
    /// a SQL table name, a key prefix, a bucket or a tree name.
    pub namespace: String,
    /// The cleanup interval the trial wants, or `None` for no cleanup task.
    pub cleanup_interval: Option<Duration>,
    /// For a server backend, the URL to connect to: the one given to
    /// [`Backend::server`], or a fault proxy's in front of it. Factories must use it.
    pub url: Option<String>,
}

type RawLenFn = Arc<dyn Fn() -> BoxFuture<'static, Result<usize>> + Send + Sync>;
type TeardownFn = Box<dyn FnOnce() -> BoxFuture<'static, Result<()>> + Send>;
type StopFn = Arc<dyn Fn() + Send + Sync>;

/// A store under test, with the hooks that let the suite look behind it.
pub struct Fixture {
    store: Arc<dyn CtxStore>,
    raw_len: Option<RawLenFn>,
    stop_cleanup: Option<StopFn>,
    teardown: Option<TeardownFn>,
}

impl Fixture {
    /// Wraps the store under test.
    pub fn new(store: impl CtxStore) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// Wraps a shared store under test.
    pub fn from_arc(store: Arc<dyn CtxStore>) -> Self {
        Self {
            store,
            raw_len: None,
            stop_cleanup: None,
            teardown: None,
        }
    }

    /// How many entries the backend physically holds in this namespace, expired ones
    /// included (e.g. `SELECT count(*)`). Enables the cleanup and native-TTL trials.
    #[must_use]
    pub fn with_raw_len<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<usize>> + Send + 'static,
    {
        self.raw_len = Some(Arc::new(move || Box::pin(f())));
        self
    }

    /// Stops the store's cleanup task. Enables the stop trial.
    #[must_use]
    pub fn with_stop_cleanup(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.stop_cleanup = Some(Arc::new(f));
        self
    }

    /// Removes the namespace after the trial (drop the table, delete the prefix).
    #[must_use]
    pub fn with_teardown<F, Fut>(mut self, f: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.teardown = Some(Box::new(move || Box::pin(f())));
        self
    }

    /// The store under test.
    pub fn store(&self) -> &Arc<dyn CtxStore> {
        &self.store
    }
}

type FactoryFn = Arc<dyn Fn(StoreOptions) -> BoxFuture<'static, Result<Fixture>> + Send + Sync>;

/// One backend to run the suite against: a name and a factory that opens a store in a
/// fresh namespace.
///
/// ```no_run
/// use scs_conformance::{Backend, Fixture};
///
/// fn main() -> std::process::ExitCode {
///     scs_conformance::run(Backend::new("memory", |_opts| async {
///         Ok(Fixture::new(MyStore::default()))
///     }))
/// }
/// # #[derive(Default)] struct MyStore;
/// # #[scs_core::async_trait] impl scs_core::Store for MyStore {
/// #   fn backend(&self) -> &'static str { "x" }
/// #   async fn find(&self, _: &str) -> scs_core::Result<Option<Vec<u8>>> { Ok(None) }
/// #   async fn commit(&self, _: &str, _: &[u8], _: scs_core::time::OffsetDateTime) -> scs_core::Result<()> { Ok(()) }
/// #   async fn delete(&self, _: &str) -> scs_core::Result<()> { Ok(()) }
/// # }
/// ```
#[derive(Clone)]
pub struct Backend {
    name: String,
    server: Option<String>,
    factory: FactoryFn,
}

impl Backend {
    /// A backend named `name` (trial names are prefixed with it) whose stores come from
    /// `factory`.
    pub fn new<F, Fut>(name: impl Into<String>, factory: F) -> Self
    where
        F: Fn(StoreOptions) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Fixture>> + Send + 'static,
    {
        Self {
            name: name.into(),
            server: None,
            factory: Arc::new(move |opts| Box::pin(factory(opts))),
        }
    }

    /// Marks a backend that needs a server at `url`. The factory gets the URL to use in
    /// [`StoreOptions::url`] (this one, or a fault proxy's in front of it). When the server
    /// cannot be reached the backend is skipped, loudly, or fails when
    /// `SCS_REQUIRE_BACKENDS=1`.
    #[must_use]
    pub fn server(mut self, url: impl Into<String>) -> Self {
        self.server = Some(url.into());
        self
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Reads a server URL from the environment variable `var`, or `default`.
pub fn env_url(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// A fresh namespace: `scs_` and 12 lowercase letters or digits.
pub fn namespace() -> String {
    let token = scs_core::token::generate();
    let tail: String = token
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(12)
        .collect();
    format!("scs_{tail}")
}

/// Runs the whole suite against one backend, with the command line of a test binary
/// (`cargo test -p my-store -- expiry` filters). Use as the whole `main` of a
/// `harness = false` test.
pub fn run(backend: Backend) -> ExitCode {
    run_all(vec![backend])
}

/// Runs the whole suite against several backends in one binary (an ORM store on
/// PostgreSQL, MySQL and SQLite, say). Trial names are `backend::trial`.
pub fn run_all(backends: Vec<Backend>) -> ExitCode {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        // Most trials wait on expiry timers: overlap them.
        args.test_threads = Some(8);
    }
    let require = std::env::var(REQUIRE_BACKENDS_VAR).is_ok_and(|v| v == "1" || v == "true");
    let mut failed = false;
    // One libtest run per backend, so that each gets its own counts.
    for backend in backends {
        let (trials, skipped) = trials_for(&backend, require);
        let total = trials.len();
        let conclusion = libtest_mimic::run(&args, trials);
        failed |= conclusion.has_failed();
        if !args.list {
            // One machine-readable line per backend, read by `cargo xtask test`.
            let line = serde_json::json!({
                "backend": backend.name,
                "trials": total,
                "passed": conclusion.num_passed,
                "failed": conclusion.num_failed,
                "ignored": conclusion.num_ignored,
                "filtered_out": conclusion.num_filtered_out,
                "skipped": skipped,
            });
            println!("SCS-SUITE {line}");
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The capability or hook a trial needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Needs {
    Nothing,
    Iterate,
    Touch,
    NativeTtl,
    RawLen,
    RawLenAndCleanup,
    StopCleanup,
    Server,
    Versioned,
    VersionedTouch,
}

/// What the probe learnt about a backend.
#[derive(Clone, Copy)]
struct Probe {
    caps: Capabilities,
    raw_len: bool,
    stop_cleanup: bool,
    server: bool,
}

impl Probe {
    fn missing(&self, needs: Needs) -> Option<&'static str> {
        match needs {
            Needs::Nothing => None,
            Needs::Iterate if !self.caps.iterate => Some("store does not declare iteration"),
            Needs::Touch if !self.caps.touch => Some("store does not declare touch"),
            Needs::NativeTtl if !self.caps.native_ttl => Some("store does not declare native TTL"),
            Needs::NativeTtl | Needs::RawLen if !self.raw_len => {
                Some("fixture gives no raw entry count")
            }
            Needs::RawLenAndCleanup if self.caps.native_ttl => {
                Some("store expires natively (no cleanup task)")
            }
            Needs::RawLenAndCleanup if !self.raw_len => Some("fixture gives no raw entry count"),
            Needs::StopCleanup if !self.stop_cleanup => Some("fixture gives no stop hook"),
            Needs::Server if !self.server => Some("embedded backend (no server to cut off)"),
            Needs::Versioned | Needs::VersionedTouch if !self.caps.versioned => {
                Some("store does not declare versioned commits")
            }
            Needs::VersionedTouch if !self.caps.touch => Some("store does not declare touch"),
            _ => None,
        }
    }
}

/// A server URL fit for messages: user name and password removed.
fn without_credentials(server: &str) -> String {
    match url::Url::parse(server) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.to_string()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Opens a probe store to learn capabilities and whether the server is there.
fn probe(backend: &Backend) -> std::result::Result<Probe, String> {
    let rt = runtime().map_err(|e| format!("building a runtime: {e}"))?;
    rt.block_on(async {
        let opts = StoreOptions {
            namespace: namespace(),
            cleanup_interval: None,
            url: backend.server.clone(),
        };
        let open = tokio::time::timeout(Duration::from_secs(30), (backend.factory)(opts));
        let fixture = match open.await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return Err(format!("{e:#}")),
            Err(_) => return Err("opening the store took over 30 s".to_owned()),
        };
        let probe = Probe {
            caps: fixture.store.capabilities(),
            raw_len: fixture.raw_len.is_some(),
            stop_cleanup: fixture.stop_cleanup.is_some(),
            server: backend.server.is_some(),
        };
        if let Some(teardown) = fixture.teardown {
            teardown().await.map_err(|e| format!("teardown: {e:#}"))?;
        }
        Ok(probe)
    })
}

fn trials_for(backend: &Backend, require: bool) -> (Vec<Trial>, Option<String>) {
    let mut list = store_trials::all();
    list.extend(middleware_trials::all());
    list.extend(fault_trials::all());
    let probe = match probe(backend) {
        Ok(p) => p,
        Err(reason) => {
            let place = backend
                .server
                .as_deref()
                .map_or_else(|| "(embedded)".to_owned(), without_credentials);
            let msg = format!("backend {} unavailable at {place}: {reason}", backend.name);
            if require || backend.server.is_none() {
                let trial =
                    Trial::test(format!("{}::backend_available", backend.name), move || {
                        Err(Failed::from(msg))
                    });
                return (vec![trial], None);
            }
            eprintln!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            eprintln!("!!! SKIPPED: {msg}");
            eprintln!("!!! set {REQUIRE_BACKENDS_VAR}=1 to make this a failure");
            eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
            let trials = list
                .iter()
                .map(|t| {
                    Trial::test(format!("{}::{}", backend.name, t.name), || Ok(()))
                        .with_ignored_flag(true)
                        .with_kind("skipped")
                })
                .collect();
            return (trials, Some(msg));
        }
    };
    let trials = list
        .into_iter()
        .map(|t| {
            let name = format!("{}::{}", backend.name, t.name);
            match probe.missing(t.needs) {
                Some(reason) => Trial::test(name, || Ok(()))
                    .with_ignored_flag(true)
                    .with_kind(reason),
                None => {
                    let ctx = TrialCtx {
                        factory: backend.factory.clone(),
                        caps: probe.caps,
                        server: backend.server.clone(),
                        proxies: Mutex::default(),
                        teardowns: Arc::default(),
                    };
                    let f = t.run;
                    Trial::test(name, move || run_trial(ctx, f))
                }
            }
        })
        .collect();
    (trials, None)
}

type TrialFn = for<'a> fn(&'a TrialCtx) -> BoxFuture<'a, anyhow::Result<()>>;

pub(crate) struct TrialDef {
    name: &'static str,
    needs: Needs,
    run: TrialFn,
}

impl TrialDef {
    pub(crate) const fn new(name: &'static str, needs: Needs, run: TrialFn) -> Self {
        Self { name, needs, run }
    }
}

fn run_trial(ctx: TrialCtx, f: TrialFn) -> std::result::Result<(), Failed> {
    let rt = runtime().map_err(|e| Failed::from(format!("building a runtime: {e}")))?;
    rt.block_on(async {
        let result = tokio::time::timeout(Duration::from_secs(120), f(&ctx)).await;
        let teardowns =
            std::mem::take(&mut *ctx.teardowns.lock().unwrap_or_else(|e| e.into_inner()));
        let mut teardown_err = None;
        for teardown in teardowns {
            if let Err(e) = teardown().await {
                teardown_err = Some(format!("teardown failed: {e:#}"));
            }
        }
        match result {
            Err(_) => Err(Failed::from("the trial took over 120 s")),
            Ok(Err(e)) => Err(Failed::from(format!("{e:#}"))),
            Ok(Ok(())) => teardown_err.map_or(Ok(()), |e| Err(Failed::from(e))),
        }
    })
}

/// What a trial sees: a way to open stores in fresh namespaces, and the capabilities.
pub(crate) struct TrialCtx {
    factory: FactoryFn,
    caps: Capabilities,
    server: Option<String>,
    proxies: Mutex<Vec<Arc<FaultProxy>>>,
    teardowns: Arc<Mutex<Vec<TeardownFn>>>,
}

/// A store opened for a trial, with its hooks.
pub(crate) struct Opened {
    pub(crate) store: Arc<dyn CtxStore>,
    pub(crate) raw_len: Option<RawLenFn>,
    pub(crate) stop_cleanup: Option<StopFn>,
}

impl TrialCtx {
    pub(crate) fn caps(&self) -> Capabilities {
        self.caps
    }

    /// Opens a store in a fresh namespace without a cleanup task.
    pub(crate) async fn open(&self) -> anyhow::Result<Opened> {
        self.open_with(None).await
    }

    /// Opens a store in a fresh namespace with the given cleanup interval.
    pub(crate) async fn open_with(&self, cleanup: Option<Duration>) -> anyhow::Result<Opened> {
        self.open_opts(StoreOptions {
            namespace: namespace(),
            cleanup_interval: cleanup,
            url: self.server.clone(),
        })
        .await
    }

    /// Opens a store through a fault proxy in front of the backend's server. Returns the
    /// store and the proxy.
    pub(crate) async fn open_proxied(&self) -> anyhow::Result<(Opened, Arc<FaultProxy>)> {
        use anyhow::Context as _;
        let server = self.server.as_deref().context("not a server backend")?;
        let (proxy, proxied) = FaultProxy::in_front_of(server)
            .await
            .context("starting the fault proxy")?;
        let proxy = Arc::new(proxy);
        // Kept until after the teardown, which talks to the server through it.
        self.proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(proxy.clone());
        let opened = self
            .open_opts(StoreOptions {
                namespace: namespace(),
                cleanup_interval: None,
                url: Some(proxied),
            })
            .await?;
        Ok((opened, proxy))
    }

    async fn open_opts(&self, opts: StoreOptions) -> anyhow::Result<Opened> {
        let fixture = (self.factory)(opts).await?;
        if let Some(teardown) = fixture.teardown {
            self.teardowns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(teardown);
        }
        Ok(Opened {
            store: fixture.store,
            raw_len: fixture.raw_len,
            stop_cleanup: fixture.stop_cleanup,
        })
    }

    /// A short expiry that the backend can still keep apart from "now", with room for a
    /// few round trips on a loaded machine before it passes.
    pub(crate) fn short_ttl(&self) -> Duration {
        Duration::from_millis(800).max(self.caps.expiry_resolution * 2)
    }

    /// How long to wait after a short expiry before it must have passed.
    pub(crate) fn after(&self, ttl: Duration) -> Duration {
        ttl + self.caps.expiry_resolution + Duration::from_millis(100)
    }
}
