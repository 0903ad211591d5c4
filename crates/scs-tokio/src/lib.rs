#![doc = include_str!("../README.md")]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use scs_core::{Error, ErrorKind, Result};
use tokio::sync::Notify;

/// The owned background task that removes expired sessions every `interval`.
///
/// The task runs `sweep` once per interval (the first run one interval after start). A
/// failed sweep is logged and retried at the next tick; it never ends the task. The task
/// ends when [`stop`](CleanupTask::stop) is called or the handle is dropped; stopping is
/// idempotent and returns at once.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
///
/// let runs = Arc::new(AtomicUsize::new(0));
/// let counter = runs.clone();
/// let task = scs_tokio::CleanupTask::spawn("example", Duration::from_millis(10), move || {
///     let counter = counter.clone();
///     async move {
///         counter.fetch_add(1, Ordering::SeqCst);
///         Ok(0)
///     }
/// })
/// .unwrap();
/// tokio::time::sleep(Duration::from_millis(50)).await;
/// task.stop();
/// task.stop(); // twice is fine
/// assert!(runs.load(Ordering::SeqCst) >= 1);
/// # }
/// ```
#[derive(Debug)]
pub struct CleanupTask {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    stopped: AtomicBool,
    notify: Notify,
}

impl CleanupTask {
    /// Starts the task on the current Tokio runtime. `sweep` returns how many entries it
    /// removed (for the log).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when called outside a Tokio runtime or with a zero interval.
    pub fn spawn<F, Fut>(backend: &'static str, interval: Duration, mut sweep: F) -> Result<Self>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64>> + Send + 'static,
    {
        if interval.is_zero() {
            return Err(
                Error::new(ErrorKind::Config, "the cleanup interval must not be zero")
                    .with_backend(backend),
            );
        }
        let handle = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::new(
                ErrorKind::Config,
                "the cleanup task needs a Tokio runtime: build the store inside one, or turn cleanup off",
            )
            .with_backend(backend)
            .with_source(e)
        })?;
        let shared = Arc::new(Shared::default());
        let task = shared.clone();
        handle.spawn(async move {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = task.notify.notified() => {}
                    _ = ticker.tick() => {}
                }
                if task.stopped.load(Ordering::Acquire) {
                    break;
                }
                match sweep().await {
                    Ok(n) => tracing::debug!(backend, removed = n, "expired sessions removed"),
                    Err(e) => tracing::warn!(backend, error = %e, "session cleanup failed; retrying at the next tick"),
                }
            }
            tracing::debug!(backend, "session cleanup task stopped");
        });
        Ok(Self { shared })
    }

    /// Stops the task. Returns at once; calling it again does nothing.
    pub fn stop(&self) {
        if !self.shared.stopped.swap(true, Ordering::AcqRel) {
            // `notify_one` stores a permit, so a task between two awaits still sees it.
            self.shared.notify.notify_one();
        }
    }

    /// True once [`stop`](Self::stop) was called or the handle dropped.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::Acquire)
    }
}

impl Drop for CleanupTask {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a blocking engine call on Tokio's blocking pool, off the async runtime.
///
/// # Errors
/// The call's own error, or [`ErrorKind::Backend`] when the call panicked or the runtime
/// is shutting down.
pub async fn blocking<T, F>(backend: &'static str, f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(
            Error::new(ErrorKind::Backend, "a blocking store call did not complete")
                .with_backend(backend)
                .with_source(e),
        ),
    }
}

/// True when called from inside a Tokio runtime (so a task can be spawned).
pub fn runtime_available() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(start_paused = true)]
    async fn runs_each_interval_and_stops() {
        let runs = Arc::new(AtomicUsize::new(0));
        let c = runs.clone();
        let task = CleanupTask::spawn("test", Duration::from_secs(60), move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(1)
            }
        })
        .unwrap();
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            0,
            "no run before the first interval"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        task.stop();
        task.stop();
        assert!(task.is_stopped());
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "no run after stop");
    }

    #[tokio::test(start_paused = true)]
    async fn drop_stops_and_errors_do_not_end_the_task() {
        let runs = Arc::new(AtomicUsize::new(0));
        let c = runs.clone();
        let task = CleanupTask::spawn("test", Duration::from_secs(1), move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Err(Error::new(ErrorKind::Connection, "down"))
            }
        })
        .unwrap();
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        drop(task);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn outside_a_runtime_is_a_config_error() {
        let err =
            CleanupTask::spawn("test", Duration::from_secs(1), || async { Ok(0) }).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let err = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async {
                CleanupTask::spawn("test", Duration::ZERO, || async { Ok(0) }).unwrap_err()
            });
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[tokio::test]
    async fn blocking_maps_panics() {
        assert_eq!(blocking("test", || Ok(7)).await.unwrap(), 7);
        let err = blocking::<(), _>("test", || panic!("boom"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Backend);
        assert_eq!(err.backend(), Some("test"));
    }
}
