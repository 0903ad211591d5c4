//! Part 5 (and the middleware side of part 4): store calls per request, counted by a
//! wrapping store, for every request shape, with and without an idle timeout.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use scs_bench::apps::{self, Body, Case};
use scs_bench::counting::{CountingStore, CountingTowerStore, Counts};
use serde_json::json;
use tower::{Service, ServiceExt as _};
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::{Opts, Result, emit, runtime};

const IDLE: Duration = Duration::from_secs(20 * 60);

/// Sends `n` requests of `case` and emits the store calls per request they caused.
async fn count<S, RB>(
    setup: &str,
    app: &mut S,
    counts: &Counts,
    case: Case,
    cookie: Option<&HeaderValue>,
    n: u64,
    spacing: Duration,
) -> Result<()>
where
    S: Service<Request<Body>, Response = Response<RB>, Error = Infallible>,
{
    let before = counts.snapshot();
    for _ in 0..n {
        if !spacing.is_zero() {
            tokio::time::sleep(spacing).await;
        }
        let Ok(ready) = app.ready().await;
        let Ok(res) = ready.call(apps::request(case, cookie)).await;
        if !res.status().is_success() {
            return Err(format!("{setup}: {} answered {}", case.path(), res.status()).into());
        }
    }
    let after = counts.snapshot();
    let per = |i: usize| (after[i] - before[i]) as f64 / n as f64;
    emit(&json!({
        "part": "idle",
        "setup": setup,
        "case": case.name(),
        "requests": n,
        "finds": per(0),
        "commits": per(1),
        "touches": per(2),
        "deletes": per(3),
    }));
    Ok(())
}

/// How an scs setup is configured.
struct ScsSetup {
    name: &'static str,
    idle: Option<Duration>,
    touch_interval: Option<Duration>,
    /// Whether the store keeps its touch capability.
    touch: bool,
    /// Pause between requests (the touch throttle works on time).
    spacing: Duration,
}

async fn scs_setup(setup: &ScsSetup, cases: &[Case], n: u64) -> Result<()> {
    let store = CountingStore::new(scs_memstore::MemoryStore::new());
    let store = if setup.touch {
        store
    } else {
        store.without_touch()
    };
    let counts: Arc<Counts> = store.counts();
    let mut builder = scs::SessionManager::builder(store);
    if let Some(idle) = setup.idle {
        builder = builder.idle_timeout(idle);
    }
    if let Some(interval) = setup.touch_interval {
        builder = builder.touch_interval(interval);
    }
    let manager = builder.build()?;
    let mut app = apps::scs_app::<Body>(&manager);
    let cookie = apps::live_cookie(&mut app).await;
    for &case in cases {
        count(
            setup.name,
            &mut app,
            &counts,
            case,
            cookie.as_ref(),
            n,
            setup.spacing,
        )
        .await?;
    }
    Ok(())
}

async fn tower_setup(setup: &str, expiry: Option<Expiry>, always_save: bool, n: u64) -> Result<()> {
    let store = CountingTowerStore::new(tower_sessions::MemoryStore::default());
    let counts = store.counts();
    let mut layer = SessionManagerLayer::new(store)
        .with_secure(false)
        .with_always_save(always_save);
    if let Some(expiry) = expiry {
        layer = layer.with_expiry(expiry);
    }
    let mut app = apps::tower_app_on::<Body, _>(layer);
    let cookie = apps::live_cookie(&mut app).await;
    count(
        setup,
        &mut app,
        &counts,
        Case::Read,
        cookie.as_ref(),
        n,
        Duration::ZERO,
    )
    .await
}

/// `idle [--smoke]`.
pub(crate) fn main(opts: &Opts) -> Result<()> {
    let n: u64 = opts.num("requests", if opts.flag("smoke") { 20 } else { 1000 })?;
    let idle = time::Duration::try_from(IDLE)?;
    let spaced = if opts.flag("smoke") { 10 } else { 60 };
    let setups = [
        ScsSetup {
            name: "scs, no idle timeout",
            idle: None,
            touch_interval: None,
            touch: true,
            spacing: Duration::ZERO,
        },
        ScsSetup {
            name: "scs, idle 20 min (touch throttle: idle/10)",
            idle: Some(IDLE),
            touch_interval: None,
            touch: true,
            spacing: Duration::ZERO,
        },
        ScsSetup {
            name: "scs, idle 20 min, touch_interval 0",
            idle: Some(IDLE),
            touch_interval: Some(Duration::ZERO),
            touch: true,
            spacing: Duration::ZERO,
        },
        ScsSetup {
            name: "scs, idle 20 min, touch_interval 0, store without touch",
            idle: Some(IDLE),
            touch_interval: Some(Duration::ZERO),
            touch: false,
            spacing: Duration::ZERO,
        },
        ScsSetup {
            name: "scs, idle 2 s (throttle 200 ms), a request every 50 ms",
            idle: Some(Duration::from_secs(2)),
            touch_interval: None,
            touch: true,
            spacing: Duration::from_millis(50),
        },
    ];
    runtime()?.block_on(async {
        scs_setup(&setups[0], &Case::ALL, n).await?;
        scs_setup(&setups[1], &[Case::Read, Case::Untouched], n).await?;
        scs_setup(&setups[2], &[Case::Read], n).await?;
        scs_setup(&setups[3], &[Case::Read], n).await?;
        scs_setup(&setups[4], &[Case::Read], spaced).await?;
        tower_setup("tower-sessions, defaults", None, false, n).await?;
        tower_setup(
            "tower-sessions, OnInactivity(20 min)",
            Some(Expiry::OnInactivity(idle)),
            false,
            n,
        )
        .await?;
        tower_setup(
            "tower-sessions, OnInactivity(20 min) + always_save",
            Some(Expiry::OnInactivity(idle)),
            true,
            n,
        )
        .await
    })
}
