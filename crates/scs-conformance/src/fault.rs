//! A TCP fault proxy: forwards to a server until told to delay, drop, reset or black-hole
//! the traffic, for existing and new connections alike.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything (the normal state).
    Forward,
    /// Forward, holding each chunk for this long first.
    Delay(Duration),
    /// Close every connection (FIN) and every new one at once.
    Drop,
    /// Reset every connection (RST) and every new one at once.
    Reset,
    /// Accept and hold connections, forward nothing, answer nothing: a network that
    /// swallows packets.
    BlackHole,
}

/// A loopback TCP proxy in front of one server, with faults on demand. Lives as long as
/// the handle; runs on the current Tokio runtime.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use scs_conformance::{Fault, FaultProxy};
///
/// let proxy = FaultProxy::start("127.0.0.1:6379").await?;
/// let url = format!("redis://{}", proxy.addr());
/// // ... connect a store to `url` ...
/// proxy.set(Fault::BlackHole);
/// // ... requests now hang until the store's timeout ...
/// proxy.set(Fault::Forward);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    mode: Arc<watch::Sender<Fault>>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`).
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, _) = watch::channel(Fault::Forward);
        let mode = Arc::new(tx);
        let upstream = upstream.to_owned();
        let modes = mode.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                tokio::spawn(relay(client, upstream.clone(), modes.subscribe()));
            }
        });
        Ok(Self { addr, mode, accept })
    }

    /// A proxy in front of the server `url` names (its host and port, or its scheme's usual
    /// port), and `url` pointed at the proxy instead.
    ///
    /// ```no_run
    /// # async fn demo() -> std::io::Result<()> {
    /// use scs_conformance::FaultProxy;
    ///
    /// let (proxy, url) = FaultProxy::in_front_of("postgres://postgres@127.0.0.1/test").await?;
    /// assert_eq!(url, format!("postgres://postgres@127.0.0.1:{}/test", proxy.addr().port()));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`std::io::ErrorKind::InvalidInput`] for a URL without a host (or an unparsable one),
    /// or when no loopback port can be bound.
    pub async fn in_front_of(url: &str) -> std::io::Result<(Self, String)> {
        let invalid = |what: &str| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {url}"))
        };
        let parsed = url::Url::parse(url).map_err(|_| invalid("not a URL"))?;
        let upstream = upstream_of(&parsed).ok_or_else(|| invalid("no host and port in"))?;
        let proxy = Self::start(&upstream).await?;
        let proxied =
            redirect(&parsed, proxy.addr()).ok_or_else(|| invalid("cannot point at the proxy"))?;
        Ok((proxy, proxied))
    }

    /// The proxy's address: connect here instead of to the server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the fault, for open connections too.
    pub fn set(&self, fault: Fault) {
        self.mode.send_replace(fault);
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        *self.mode.borrow()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Open relays see the sender go and close.
        self.mode.send_replace(Fault::Drop);
    }
}

/// Finds `key` in `store` through `calls` calls at once, so that a pooled store has that
/// many connections open for a fault to hit, and returns what each call found.
///
/// # Errors
/// The first call that failed.
pub async fn find_at_once(
    store: &dyn scs_core::Store,
    key: &str,
    calls: usize,
) -> scs_core::Result<Vec<Option<Vec<u8>>>> {
    futures_util::future::try_join_all((0..calls).map(|_| store.find(key))).await
}

async fn relay(mut client: TcpStream, upstream: String, mut mode: watch::Receiver<Fault>) {
    // New connections wait out a black hole; drop and reset apply at once.
    let mut upstream = loop {
        let fault = *mode.borrow_and_update();
        match fault {
            Fault::Drop => return,
            Fault::Reset => {
                let _ = client.set_zero_linger();
                return;
            }
            Fault::BlackHole => {
                if mode.changed().await.is_err() {
                    return;
                }
            }
            Fault::Forward | Fault::Delay(_) => match TcpStream::connect(&upstream).await {
                Ok(up) => {
                    let _ = up.set_nodelay(true);
                    break up;
                }
                Err(_) => return,
            },
        }
    };
    let mut a = vec![0u8; 32 * 1024];
    let mut b = vec![0u8; 32 * 1024];
    loop {
        let fault = *mode.borrow_and_update();
        match fault {
            Fault::Drop => return,
            Fault::Reset => {
                let _ = client.set_zero_linger();
                let _ = upstream.set_zero_linger();
                return;
            }
            Fault::BlackHole => {
                if mode.changed().await.is_err() {
                    return;
                }
            }
            Fault::Forward | Fault::Delay(_) => {
                let delay = match fault {
                    Fault::Delay(d) => d,
                    _ => Duration::ZERO,
                };
                tokio::select! {
                    // A fault takes effect before any byte that arrives with or after it:
                    // a request sent after `set` must never slip through.
                    biased;
                    changed = mode.changed() => {
                        if changed.is_err() { return; }
                    }
                    r = client.read(&mut a) => {
                        let Ok(n @ 1..) = r else { return };
                        if !delay.is_zero() { tokio::time::sleep(delay).await; }
                        if upstream.write_all(&a[..n]).await.is_err() { return; }
                    }
                    r = upstream.read(&mut b) => {
                        let Ok(n @ 1..) = r else { return };
                        if !delay.is_zero() { tokio::time::sleep(delay).await; }
                        if client.write_all(&b[..n]).await.is_err() { return; }
                    }
                }
            }
        }
    }
}

/// The `host:port` a server URL points at, with the usual port of its scheme when the URL
/// has none.
pub(crate) fn upstream_of(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    let port = url.port().or_else(|| match url.scheme() {
        "postgres" | "postgresql" => Some(5432),
        "mysql" | "mariadb" => Some(3306),
        "redis" => Some(6379),
        "memcache" | "memcached" => Some(11211),
        "nats" => Some(4222),
        "mongodb" => Some(27017),
        "etcd" => Some(2379),
        _ => url.port_or_known_default(),
    })?;
    Some(format!("{host}:{port}"))
}

/// `url` pointing at `addr` instead of its own host and port.
pub(crate) fn redirect(url: &url::Url, addr: SocketAddr) -> Option<String> {
    let mut u = url.clone();
    u.set_ip_host(addr.ip()).ok()?;
    u.set_port(Some(addr.port())).ok()?;
    Some(u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forwards_then_black_holes_then_resets() {
        // An echo server upstream.
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n @ 1..) = s.read(&mut buf).await {
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let proxy = FaultProxy::start(&echo_addr.to_string()).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buf = [0u8; 5];
        c.write_all(b"hello").await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");

        proxy.set(Fault::BlackHole);
        c.write_all(b"again").await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(200), c.read_exact(&mut buf)).await;
        assert!(r.is_err(), "a black hole answered");

        proxy.set(Fault::Forward);
        // What was written during the black hole is delivered once it lifts.
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"again");

        proxy.set(Fault::Reset);
        let r = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf))
            .await
            .unwrap();
        assert!(
            matches!(r, Err(_) | Ok(0)),
            "a reset connection stayed open: {r:?}"
        );
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(2), fresh.read(&mut buf))
            .await
            .unwrap();
        assert!(
            matches!(r, Err(_) | Ok(0)),
            "a new connection under reset stayed open"
        );

        proxy.set(Fault::Forward);
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"later").await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"later");
    }

    #[test]
    fn redirects_urls() {
        let u = url::Url::parse("postgres://postgres@127.0.0.1:5432/test").unwrap();
        assert_eq!(upstream_of(&u).as_deref(), Some("127.0.0.1:5432"));
        let to = redirect(&u, "127.0.0.1:40000".parse().unwrap()).unwrap();
        assert_eq!(to, "postgres://postgres@127.0.0.1:40000/test");
        let m = url::Url::parse("mongodb://localhost").unwrap();
        assert_eq!(upstream_of(&m).as_deref(), Some("localhost:27017"));
    }

    #[tokio::test]
    async fn a_proxy_in_front_of_a_url_and_the_url_pointed_at_it() {
        let (proxy, url) = FaultProxy::in_front_of("memcache://127.0.0.1")
            .await
            .unwrap();
        assert_eq!(url, format!("memcache://127.0.0.1:{}", proxy.addr().port()));
        for bad in ["not a url", "unix:///tmp/socket"] {
            let err = FaultProxy::in_front_of(bad).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{bad}");
        }
    }
}
