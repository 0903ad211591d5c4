//! Part 1: the middleware cost in-process, driven through tower on a ready service (no
//! network), scs and tower-sessions interleaved in one run.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use scs_bench::apps::{self, Body, Case, Lib};
use scs_bench::stats;
use serde_json::json;
use tower::{Service, ServiceExt as _};

use crate::{Opts, Result, emit, runtime};

/// Sends `n` requests of `case` through `svc`; returns the mean time per request in this
/// batch (ns) and how many answers were not 2xx.
async fn batch<S, RB>(
    svc: &mut S,
    case: Case,
    cookie: Option<&HeaderValue>,
    n: usize,
) -> (f64, usize)
where
    S: Service<Request<Body>, Response = Response<RB>, Error = Infallible>,
{
    let mut failed = 0;
    let start = Instant::now();
    for _ in 0..n {
        let req = apps::request(case, cookie);
        let Ok(ready) = svc.ready().await;
        let Ok(res) = ready.call(req).await;
        failed += usize::from(!res.status().is_success());
        drop(black_box(res));
    }
    (start.elapsed().as_nanos() as f64 / n as f64, failed)
}

/// Whether one request of `case` answered with a `Set-Cookie` (i.e. the middleware saw
/// the session as modified): a check that both apps really do the same work.
async fn sets_cookie<S, RB>(svc: &mut S, case: Case, cookie: Option<&HeaderValue>) -> bool
where
    S: Service<Request<Body>, Response = Response<RB>, Error = Infallible>,
{
    let Ok(ready) = svc.ready().await;
    let Ok(res) = ready.call(apps::request(case, cookie)).await;
    res.headers().contains_key(http::header::SET_COOKIE)
}

pub(crate) fn main(opts: &Opts) -> Result<()> {
    let smoke = opts.flag("smoke");
    let warmup: usize = opts.num("warmup", if smoke { 2 } else { 40 })?;
    let samples: usize = opts.num("samples", if smoke { 5 } else { 300 })?;
    let size: usize = opts.num("batch", if smoke { 50 } else { 200 })?;
    runtime()?.block_on(async {
        let manager = apps::scs_manager();
        let mut scs = apps::scs_app::<Body>(&manager);
        let mut tower = apps::tower_app::<Body>(&tower_sessions::MemoryStore::default());
        let mut bare = apps::bare_app::<Body>();
        let scs_cookie = apps::live_cookie(&mut scs).await;
        let tower_cookie = apps::live_cookie(&mut tower).await;
        if scs_cookie.is_none() || tower_cookie.is_none() {
            return Err("a /new request set no cookie".into());
        }
        for case in Case::ALL {
            emit(&json!({
                "part": "check",
                "case": case.name(),
                "scs_sets_cookie": sets_cookie(&mut scs, case, scs_cookie.as_ref()).await,
                "tower_sets_cookie": sets_cookie(&mut tower, case, tower_cookie.as_ref()).await,
            }));
        }

        // [lib][case] -> ns per request of each sample
        let mut ns = vec![vec![Vec::with_capacity(samples); Case::ALL.len()]; Lib::ALL.len()];
        let mut failed = 0;
        for round in 0..warmup + samples {
            let keep = round >= warmup;
            for (c, case) in Case::ALL.into_iter().enumerate() {
                // Alternate who goes first, so that neither always runs on a warmer cache.
                let (s, t) = if round % 2 == 0 {
                    let s = batch(&mut scs, case, scs_cookie.as_ref(), size).await;
                    let t = batch(&mut tower, case, tower_cookie.as_ref(), size).await;
                    (s, t)
                } else {
                    let t = batch(&mut tower, case, tower_cookie.as_ref(), size).await;
                    let s = batch(&mut scs, case, scs_cookie.as_ref(), size).await;
                    (s, t)
                };
                failed += s.1 + t.1;
                if keep {
                    ns[0][c].push(s.0);
                    ns[1][c].push(t.0);
                }
            }
            let b = batch(&mut bare, Case::Untouched, scs_cookie.as_ref(), size).await;
            failed += b.1;
            if keep {
                ns[2][3].push(b.0);
            }
        }
        if failed > 0 {
            return Err(format!("{failed} requests answered an error status").into());
        }
        for (l, lib) in Lib::ALL.into_iter().enumerate() {
            for (c, case) in Case::ALL.into_iter().enumerate() {
                let v = &mut ns[l][c];
                if v.is_empty() {
                    continue;
                }
                emit(&json!({
                    "part": "inproc",
                    "lib": lib.name(),
                    "case": case.name(),
                    "ns": stats::median(v),
                    "p10": stats::percentile(v, 10.0),
                    "p90": stats::percentile(v, 90.0),
                    "samples": samples,
                    "batch": size,
                    "warmup": warmup,
                }));
            }
        }
        Ok(())
    })
}

/// `profile --case C [--lib L] [--iters N]`: one side of one case in a loop, for
/// `valgrind --tool=callgrind`.
pub(crate) fn profile(opts: &Opts) -> Result<()> {
    let case = Case::parse(opts.req("case")?).ok_or("unknown --case")?;
    let lib = Lib::parse(opts.get("lib").unwrap_or("scs")).ok_or("unknown --lib")?;
    let iters: usize = opts.num("iters", 20_000)?;
    runtime()?.block_on(async {
        let failed = match lib {
            Lib::Scs => {
                let manager = apps::scs_manager();
                let mut app = apps::scs_app::<Body>(&manager);
                let cookie = apps::live_cookie(&mut app).await;
                batch(&mut app, case, cookie.as_ref(), iters).await.1
            }
            Lib::Tower => {
                let mut app = apps::tower_app::<Body>(&tower_sessions::MemoryStore::default());
                let cookie = apps::live_cookie(&mut app).await;
                batch(&mut app, case, cookie.as_ref(), iters).await.1
            }
            Lib::Bare => {
                let cookie = apps::baseline_cookie();
                batch(&mut apps::bare_app::<Body>(), case, Some(&cookie), iters)
                    .await
                    .1
            }
        };
        if failed > 0 {
            return Err(format!("{failed} requests answered an error status").into());
        }
        Ok(())
    })
}
