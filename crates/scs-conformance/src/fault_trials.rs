//! The fault tier: the real layer over a network store whose server is cut off, slowed
//! down or reset by a [`FaultProxy`](crate::FaultProxy), then restored.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use scs::SessionManager;

use crate::counting::CountingStore;
use crate::fault::Fault;
use crate::middleware_trials::{App, expect_value, new_session};
use crate::{FaultProxy, Needs, TrialCtx, TrialDef};

macro_rules! trials {
    ($($name:ident: $needs:ident,)*) => {
        /// Every fault-tier trial, in order.
        pub(crate) fn all() -> Vec<TrialDef> {
            vec![$(TrialDef::new(concat!("fault_", stringify!($name)), Needs::$needs, |t| Box::pin($name(t))),)*]
        }
    };
}

trials! {
    black_hole_answers_the_error_handler_within_the_timeout: Server,
    reset_connections_fail_then_the_same_store_recovers: Server,
    slow_backend_times_out_then_recovers: Server,
    failed_commit_is_never_applied_later: Server,
    outage_loses_no_committed_session: Server,
}

/// The manager's store timeout in these trials.
const STORE_TIMEOUT: Duration = Duration::from_secs(1);
/// Slack on top of the timeout for one request (scheduling on a loaded machine).
const SLACK: Duration = Duration::from_millis(1500);

struct Rig {
    app: App,
    manager: SessionManager,
    proxy: std::sync::Arc<FaultProxy>,
}

async fn rig(t: &TrialCtx) -> anyhow::Result<Rig> {
    let (opened, proxy) = t.open_proxied().await?;
    let manager = crate::middleware_trials::builder(CountingStore::from_arc(opened.store))
        .store_timeout(STORE_TIMEOUT)
        .build()?;
    Ok(Rig {
        app: App::new(manager.clone()),
        manager,
        proxy,
    })
}

/// Runs one request and checks it was answered by the error handler in time.
async fn expect_error_in_time(rig: &Rig, path: &str, token: Option<&str>) -> anyhow::Result<()> {
    let started = Instant::now();
    let r = tokio::time::timeout(STORE_TIMEOUT * 10, rig.app.get(path, token))
        .await
        .with_context(|| format!("{path} hung during the fault (no answer in 10 s)"))??;
    let took = started.elapsed();
    ensure!(
        r.status == 500,
        "{path} during the fault answered {} {:?}, not the error handler's 500 (did the fixture ignore StoreOptions::url and bypass the proxy?)",
        r.status,
        r.body
    );
    ensure!(
        took <= STORE_TIMEOUT * 2 + SLACK,
        "{path} took {took:?} during the fault; the store timeout is {STORE_TIMEOUT:?}"
    );
    ensure!(
        r.set_cookie.is_empty(),
        "{path} failed but still set a cookie: {:?}",
        r.set_cookie
    );
    Ok(())
}

/// After the fault lifts, the same store must serve again; a pool may need a try or two
/// to drop dead connections, never a restart.
async fn expect_recovery(rig: &Rig, token: &str, key: &str, want: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    while Instant::now() < deadline {
        match rig.app.get(&format!("/get/{key}"), Some(token)).await {
            Ok(r) if r.status == 200 => {
                ensure!(
                    r.body == want,
                    "after the fault {key} reads {:?}, expected {want:?}",
                    r.body
                );
                return Ok(());
            }
            Ok(r) => last = format!("{} {}", r.status, r.body),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the store did not serve again within 15 s of the backend returning (last: {last})")
}

async fn black_hole_answers_the_error_handler_within_the_timeout(
    t: &TrialCtx,
) -> anyhow::Result<()> {
    let rig = rig(t).await?;
    let token = new_session(&rig.app, "a", "before").await?;
    rig.proxy.set(Fault::BlackHole);
    expect_error_in_time(&rig, "/get/a", Some(&token)).await?;
    expect_error_in_time(&rig, "/put/b/new", None).await?;
    rig.proxy.set(Fault::Forward);
    expect_recovery(&rig, &token, "a", "before").await
}

async fn reset_connections_fail_then_the_same_store_recovers(t: &TrialCtx) -> anyhow::Result<()> {
    let rig = rig(t).await?;
    let token = new_session(&rig.app, "a", "before").await?;
    rig.proxy.set(Fault::Reset);
    expect_error_in_time(&rig, "/get/a", Some(&token)).await?;
    expect_error_in_time(&rig, "/put/a/during", Some(&token)).await?;
    rig.proxy.set(Fault::Forward);
    expect_recovery(&rig, &token, "a", "before").await?;
    let r = rig.app.get("/put/a/after", Some(&token)).await?;
    ensure!(
        r.status == 200,
        "a write after recovery answered {}",
        r.status
    );
    expect_value(&rig.app, &token, "a", "after").await
}

async fn slow_backend_times_out_then_recovers(t: &TrialCtx) -> anyhow::Result<()> {
    let rig = rig(t).await?;
    let token = new_session(&rig.app, "a", "before").await?;
    rig.proxy.set(Fault::Delay(STORE_TIMEOUT * 3));
    expect_error_in_time(&rig, "/get/a", Some(&token)).await?;
    rig.proxy.set(Fault::Forward);
    expect_recovery(&rig, &token, "a", "before").await
}

async fn failed_commit_is_never_applied_later(t: &TrialCtx) -> anyhow::Result<()> {
    let rig = rig(t).await?;
    let token = new_session(&rig.app, "a", "old").await?;
    let r = rig.app.get("/put/b/old", Some(&token)).await?;
    ensure!(r.status == 200, "second put answered {}", r.status);
    // Loaded while the backend is up, committed after it went away.
    let session = rig.manager.load(Some(&token)).await?;
    session.put("a", "new")?;
    session.put("b", "new")?;
    rig.proxy.set(Fault::Reset);
    let started = Instant::now();
    let result = tokio::time::timeout(STORE_TIMEOUT * 10, session.commit())
        .await
        .context("commit hung")?;
    ensure!(
        result.is_err(),
        "a commit through a reset connection reported success"
    );
    ensure!(
        started.elapsed() <= STORE_TIMEOUT * 2 + SLACK,
        "the failed commit took {:?}",
        started.elapsed()
    );
    rig.proxy.set(Fault::Forward);
    // The caller was told the commit failed: it must not land once the backend is back
    // (a driver that queues or replays writes would overwrite newer data with it).
    expect_recovery(&rig, &token, "a", "old")
        .await
        .context("a commit reported as failed was applied after the backend returned")?;
    expect_value(&rig.app, &token, "b", "old").await
}

async fn outage_loses_no_committed_session(t: &TrialCtx) -> anyhow::Result<()> {
    let rig = rig(t).await?;
    let mut sessions = Vec::new();
    for i in 0..10 {
        sessions.push((new_session(&rig.app, "i", &i.to_string()).await?, i));
    }
    for fault in [Fault::BlackHole, Fault::Reset, Fault::Drop] {
        rig.proxy.set(fault);
        let (token, _) = &sessions[0];
        expect_error_in_time(&rig, "/get/i", Some(token)).await?;
        rig.proxy.set(Fault::Forward);
        let (token, i) = &sessions[0];
        expect_recovery(&rig, token, "i", &i.to_string()).await?;
    }
    for (token, i) in &sessions {
        expect_value(&rig.app, token, "i", &i.to_string()).await?;
    }
    Ok(())
}
