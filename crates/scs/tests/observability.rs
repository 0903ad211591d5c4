//! Metrics counters and tracing spans: what they count, and that they never carry a
//! token or a value. One test per binary: it installs global recorders.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::Probe;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use scs::SessionManager;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn counters_and_spans_show_activity_but_no_secrets() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).unwrap();
    let out = Captured::default();
    let writer = out.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .init();

    let store = Probe::new();
    let manager = SessionManager::new(store.clone());
    let s = manager.load(None).await.unwrap();
    s.put("secret_value", "hunter2-credit-card").unwrap();
    let (token, _) = s.commit().await.unwrap();
    let s = manager.load(Some(&token)).await.unwrap();
    s.renew_token().await.unwrap();
    let (renewed, _) = s.commit().await.unwrap();
    store.fail_find(true);
    let err = manager.load(Some(&renewed)).await.unwrap_err();
    let _ = manager.error_response(&err);

    let counters: std::collections::HashMap<String, u64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) => {
                let labels: Vec<String> = key
                    .key()
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                Some((format!("{}{{{}}}", key.key().name(), labels.join(",")), n))
            }
            _ => None,
        })
        .collect();
    let get = |k: &str| counters.get(k).copied().unwrap_or(0);
    assert_eq!(get("scs_loads_total{backend=probe}"), 3, "{counters:#?}");
    assert_eq!(get("scs_commits_total{backend=probe}"), 2, "{counters:#?}");
    assert_eq!(
        get("scs_errors_total{backend=probe,kind=connection}"),
        1,
        "{counters:#?}"
    );
    assert!(
        get("scs_store_calls_total{backend=probe,op=find}") >= 2,
        "{counters:#?}"
    );
    assert_eq!(
        get("scs_store_errors_total{backend=probe,op=find,kind=connection}"),
        1,
        "{counters:#?}"
    );

    let logged = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("scs.load") && logged.contains("scs.store"),
        "no spans logged:\n{logged}"
    );
    for secret in [token.as_str(), renewed.as_str(), "hunter2-credit-card"] {
        assert!(
            !logged.contains(secret),
            "a secret reached the log:\n{logged}"
        );
    }
    assert!(
        !format!("{s:?}").contains(&renewed),
        "Debug of a session shows its token"
    );
}
