//! What a [`RedisStore`] from `from_url` sends on the wire, seen through a counting TCP
//! relay in front of the server: one command per store call, no `PING` or `UNWATCH` on
//! checkout, a connection whose command was cancelled mid-flight never reused, a broken idle
//! connection retried for reads only.
//!
//! Needs Redis (`SCS_REDIS_URL`, default `redis://127.0.0.1:6379`); without it every test
//! is skipped, loudly, or fails when `SCS_REQUIRE_BACKENDS=1`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use scs_core::time::OffsetDateTime;
use scs_core::{ErrorKind, Store};
use scs_redisstore::RedisStore;
use scs_redisstore::redis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

// ---------------------------------------------------------------------------------------
// The server, or a loud skip

/// The server's URL and its `host:port`, or `None` (after a loud message) when it cannot
/// be reached and `SCS_REQUIRE_BACKENDS` is not set.
async fn server() -> Option<(String, String)> {
    let url = std::env::var("SCS_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let host_port = host_port(&url).unwrap_or_else(|| panic!("cannot read host:port in {url}"));
    if let Err(e) = TcpStream::connect(&host_port).await {
        let required = std::env::var("SCS_REQUIRE_BACKENDS").is_ok_and(|v| v == "1" || v == "true");
        assert!(
            !required,
            "no Redis at {url} ({e}) and SCS_REQUIRE_BACKENDS is set"
        );
        eprintln!("!!! SKIPPED: no Redis at {url}: {e}");
        eprintln!("!!! set SCS_REQUIRE_BACKENDS=1 to make this a failure");
        return None;
    }
    Some((url, host_port))
}

/// The `host:port` of a `redis://` URL (port 6379 when it has none).
fn host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    Some(if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:6379")
    })
}

/// A store on the relay in front of the server, under a fresh prefix.
async fn store_through(url: &str, upstream: &str, relay: &Relay) -> RedisStore {
    let relayed = url.replacen(upstream, &relay.addr, 1);
    RedisStore::from_url(&relayed)
        .await
        .unwrap()
        .with_prefix(format!("scs-wire-{}:", scs_core::new_version()))
        .unwrap()
}

fn in_a_minute() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::from_secs(60)
}

// ---------------------------------------------------------------------------------------
// The relay

/// One command a client sent: the relayed connection it came on, its name and first
/// argument.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    conn: usize,
    name: String,
    arg: String,
}

#[derive(Default)]
struct Shared {
    sent: Mutex<Vec<Sent>>,
    accepted: Mutex<usize>,
    pumps: Mutex<Vec<AbortHandle>>,
}

/// A loopback TCP relay to the server that logs every command clients send, can hold the
/// server's replies back, and can cut every open connection.
struct Relay {
    addr: String,
    shared: Arc<Shared>,
    hold: watch::Sender<bool>,
    accept: AbortHandle,
}

impl Relay {
    async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared::default());
        let (hold, _) = watch::channel(false);
        let (s, h, upstream) = (shared.clone(), hold.clone(), upstream.to_owned());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(&upstream).await.unwrap();
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let conn = {
                    let mut accepted = lock(&s.accepted);
                    *accepted += 1;
                    *accepted
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let up = tokio::spawn(requests(conn, client_read, server_write, s.clone()));
                let down = tokio::spawn(replies(server_read, client_write, h.subscribe()));
                lock(&s.pumps).extend([up.abort_handle(), down.abort_handle()]);
            }
        })
        .abort_handle();
        Self {
            addr,
            shared,
            hold,
            accept,
        }
    }

    /// Every command sent so far.
    fn sent(&self) -> Vec<Sent> {
        lock(&self.shared.sent).clone()
    }

    /// Forgets the commands sent so far.
    fn clear(&self) {
        lock(&self.shared.sent).clear();
    }

    /// How many connections clients opened.
    fn accepted(&self) -> usize {
        *lock(&self.shared.accepted)
    }

    /// Holds the server's replies back (`true`) or lets them through.
    fn hold_replies(&self, hold: bool) {
        self.hold.send_replace(hold);
    }

    /// Closes every open connection (new ones are relayed as before).
    fn cut_all(&self) {
        for pump in lock(&self.shared.pumps).drain(..) {
            pump.abort();
        }
    }

    /// Waits until `n` commands were sent in all.
    async fn until_sent(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while lock(&self.shared.sent).len() < n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the relay never saw {n} commands: {:?}", self.sent()));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Client to server: logs each whole command, then forwards the bytes.
async fn requests(
    conn: usize,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: Arc<Shared>,
) {
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some((used, args)) = parse_command(&pending) {
            pending.drain(..used);
            let mut args = args.into_iter();
            let name = args.next().unwrap_or_default().to_ascii_uppercase();
            let arg = args.next().unwrap_or_default();
            lock(&shared.sent).push(Sent { conn, name, arg });
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Server to client, waiting while replies are held.
async fn replies(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut hold: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if hold.wait_for(|held| !held).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// One RESP command (an array of bulk strings) at the start of `buf`: the bytes it takes
/// and its arguments, or `None` when it is not all there yet.
fn parse_command(buf: &[u8]) -> Option<(usize, Vec<String>)> {
    fn line(buf: &[u8], at: usize, kind: u8) -> Option<(usize, usize)> {
        let end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        assert_eq!(
            buf[at],
            kind,
            "not a RESP command: {:?}",
            String::from_utf8_lossy(buf)
        );
        let n = std::str::from_utf8(&buf[at + 1..end]).ok()?.parse().ok()?;
        Some((n, end + 2))
    }
    let (count, mut at) = line(buf, 0, b'*')?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, start) = line(buf, at, b'$')?;
        let arg = buf.get(start..start + len)?;
        args.push(String::from_utf8_lossy(arg).into_owned());
        at = start + len + 2;
        if buf.len() < at {
            return None;
        }
    }
    Some((at, args))
}

// ---------------------------------------------------------------------------------------
// The tests

/// Each store call is exactly one command on the one pooled connection: no `PING` or
/// `UNWATCH` on checkout (deadpool-redis' manager would add both to every call).
#[tokio::test]
async fn every_store_call_is_one_command() {
    let Some((url, upstream)) = server().await else {
        return;
    };
    let relay = Relay::start(&upstream).await;
    let store = store_through(&url, &upstream, &relay).await;
    // Warm up: the scripts may need an `EVAL` the first time a server sees them.
    let version = store
        .commit_if("warm", b"w", in_a_minute(), None)
        .await
        .unwrap();
    store.find_record("warm").await.unwrap();
    store.delete("warm").await.unwrap();
    assert!(version.is_some());
    relay.clear();

    const CALLS: usize = 20;
    let prefix = store.prefix().to_owned();
    for i in 0..CALLS {
        let key = format!("k{i}");
        let data = format!("data {i}");
        store
            .commit(&key, data.as_bytes(), in_a_minute())
            .await
            .unwrap();
        assert_eq!(store.find(&key).await.unwrap().unwrap(), data.as_bytes());
        let record = store.find_record(&key).await.unwrap().unwrap();
        let written = store
            .commit_if(&key, b"new", in_a_minute(), Some(record.version))
            .await
            .unwrap();
        assert!(written.is_some());
        assert!(store.touch(&key, in_a_minute()).await.unwrap());
        store.delete(&key).await.unwrap();
    }

    let sent = relay.sent();
    let names: Vec<&str> = sent.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        sent.len(),
        6 * CALLS,
        "{} commands for {} store calls: {names:?}",
        sent.len(),
        6 * CALLS
    );
    for (i, calls) in sent.chunks(6).enumerate() {
        let key = format!("{prefix}k{i}");
        let got: Vec<(&str, &str)> = calls
            .iter()
            .map(|s| (s.name.as_str(), s.arg.as_str()))
            .collect();
        let (find_record, commit_if) = (got[2].1, got[3].1);
        assert_eq!(
            got,
            [
                ("SET", key.as_str()),
                ("GET", key.as_str()),
                ("EVALSHA", find_record),
                ("EVALSHA", commit_if),
                ("PEXPIREAT", key.as_str()),
                ("DEL", key.as_str()),
            ],
            "call {i}"
        );
    }
    assert!(
        !names.iter().any(|n| matches!(*n, "PING" | "UNWATCH")),
        "{names:?}"
    );
    assert!(
        sent.iter().all(|s| s.conn == sent[0].conn),
        "the calls did not all reuse the one pooled connection: {sent:?}"
    );
    assert_eq!(relay.accepted(), 1, "no new connection was needed");
    store.clear().await.unwrap();
}

/// A `find` dropped after its `GET` went out (its reply held back by the relay) closes its
/// connection: the late reply never reaches another call, and every later `find` reads its
/// own key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_find_cancelled_mid_flight_does_not_poison_the_pool() {
    let Some((url, upstream)) = server().await else {
        return;
    };
    let relay = Relay::start(&upstream).await;
    let store = store_through(&url, &upstream, &relay).await;
    const KEYS: usize = 50;
    for i in 0..KEYS {
        store
            .commit(&format!("k{i}"), format!("v{i}").as_bytes(), in_a_minute())
            .await
            .unwrap();
    }

    let before = relay.sent().len();
    relay.hold_replies(true);
    tokio::select! {
        found = store.find("k0") => panic!("answered while the reply was held: {found:?}"),
        () = relay.until_sent(before + 1) => {}
    }
    // The find future is gone, its GET sent and unanswered.
    let cancelled = relay.sent().last().cloned().unwrap();
    assert_eq!(cancelled.name, "GET");
    assert!(cancelled.arg.ends_with(":k0"), "{cancelled:?}");
    relay.hold_replies(false);

    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..4 {
        for i in 1..KEYS {
            let store = store.clone();
            tasks.spawn(async move {
                let found = store.find(&format!("k{i}")).await.unwrap();
                assert_eq!(
                    found.as_deref(),
                    Some(format!("v{i}").as_bytes()),
                    "round {round}, k{i} read another key's reply"
                );
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    }
    // (New connections may send setup commands of their own.)
    let after: Vec<Sent> = relay.sent().split_off(before + 1);
    assert_eq!(
        after.iter().filter(|s| s.name == "GET").count(),
        4 * (KEYS - 1)
    );
    assert!(
        after.iter().all(|s| s.conn != cancelled.conn),
        "the connection of the cancelled find was used again"
    );
    assert_eq!(store.find("k0").await.unwrap().as_deref(), Some(&b"v0"[..]));
    store.clear().await.unwrap();
}

/// A server-side error (here `WRONGTYPE`) is a whole reply: the connection stays in the
/// pool.
#[tokio::test]
async fn a_server_error_keeps_the_connection() {
    let Some((url, upstream)) = server().await else {
        return;
    };
    let relay = Relay::start(&upstream).await;
    let store = store_through(&url, &upstream, &relay).await;
    let mut direct = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("RPUSH")
        .arg(format!("{}list", store.prefix()))
        .arg("x")
        .query_async::<()>(&mut direct)
        .await
        .unwrap();
    let err = store.find("list").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err:#}");
    assert_eq!(store.find("missing").await.unwrap(), None);
    assert_eq!(
        relay.accepted(),
        1,
        "the connection was closed after WRONGTYPE"
    );
    store.clear().await.unwrap();
}

/// When the pooled connection broke while idle, a read is tried once more on a new
/// connection; a write is not, and fails without being applied.
#[tokio::test]
async fn a_broken_idle_connection_is_retried_for_reads_only() {
    let Some((url, upstream)) = server().await else {
        return;
    };
    let relay = Relay::start(&upstream).await;
    let store = store_through(&url, &upstream, &relay).await;
    store.commit("k", b"old", in_a_minute()).await.unwrap();

    relay.cut_all();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.find("k").await.unwrap().as_deref(), Some(&b"old"[..]));
    assert_eq!(relay.accepted(), 2, "the read went to a new connection");

    relay.cut_all();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = store.commit("k", b"new", in_a_minute()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err:#}");
    assert_eq!(relay.accepted(), 2, "the write was not repeated");
    assert_eq!(store.find("k").await.unwrap().as_deref(), Some(&b"old"[..]));
    store.commit("k", b"new", in_a_minute()).await.unwrap();
    assert_eq!(store.find("k").await.unwrap().as_deref(), Some(&b"new"[..]));
    store.clear().await.unwrap();
}
