//! The harness of the workspace's end-to-end tests: build the `scs-demo` binary with the
//! features a run needs, start it on a free port over a store URL, and know which backend
//! servers this machine has.
//!
//! The tests themselves are in `tests/tests/`: `e2e.rs` drives the demo with an HTTP client
//! per backend; `browser.rs` (feature `browser`, run by `cargo xtask browser`) drives it
//! with headless Chromium.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the demo may take to print its address (opening a store times out at 15 s).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// True when `SCS_REQUIRE_BACKENDS=1`: a missing server is a failure, not a skip.
pub fn require_backends() -> bool {
    std::env::var("SCS_REQUIRE_BACKENDS").is_ok_and(|v| v == "1" || v == "true")
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// True when etcd-client's build script can find `protoc` (`PROTOC`, or on `PATH`).
pub fn protoc_available() -> bool {
    std::env::var_os("PROTOC").is_some_and(|p| Path::new(&p).is_file())
        || std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join("protoc").is_file())
        })
}

/// A built `scs-demo` binary, copied out of the target directory so that another build
/// with other features cannot replace it while it runs. The copy's directory is also
/// where the demo puts its default SQLite file.
#[derive(Debug)]
pub struct DemoBinary {
    path: PathBuf,
    features: String,
    _dir: tempfile::TempDir,
}

impl DemoBinary {
    /// Builds `scs-demo` with `features` (comma-separated, on top of its defaults; empty
    /// for the defaults, which is what `cargo run -p scs-demo` runs) through the cargo
    /// that runs these tests.
    ///
    /// # Errors
    /// The build's failure, with cargo's diagnostics already on stderr.
    pub fn build(features: &str) -> Result<Self, String> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(workspace_root())
            .args(["build", "--package", "scs-demo", "--bin", "scs-demo"])
            .args(["--message-format", "json-render-diagnostics"]);
        if !features.is_empty() {
            cmd.args(["--features", features]);
        }
        eprintln!(
            "scs-tests: building scs-demo (features: {})",
            or_default(features)
        );
        let out = cmd
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running {cargo}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`cargo build -p scs-demo --features {}` failed ({})",
                or_default(features),
                out.status
            ));
        }
        let built = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|msg| {
                msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "scs-demo"
            })
            .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
            .ok_or("cargo reported no scs-demo executable")?;
        let dir = tempfile::Builder::new()
            .prefix("scs-demo-bin-")
            .tempdir()
            .map_err(|e| format!("creating a temp dir: {e}"))?;
        let path = dir.path().join("scs-demo");
        std::fs::copy(&built, &path)
            .map_err(|e| format!("copying {} to {}: {e}", built.display(), path.display()))?;
        Ok(Self {
            path,
            features: or_default(features).to_owned(),
            _dir: dir,
        })
    }

    /// The executable.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The features it was built with.
    pub fn features(&self) -> &str {
        &self.features
    }

    /// Starts the demo on a free loopback port with `env` added to the environment
    /// (`SCS_STORE`, ...), and waits for it to print its address.
    ///
    /// # Errors
    /// [`StartError::Exited`] when it exits first (its exit code and stderr are kept), or
    /// a timeout.
    pub fn start(&self, env: &[(&str, &str)]) -> Result<Demo, StartError> {
        let mut cmd = Command::new(&self.path);
        // Only what the test says: no SCS_* from the caller's environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SCS_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("ADDR", "127.0.0.1")
            .env("PORT", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| StartError::Other(format!("starting {}: {e}", self.path.display())))?;

        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        let (tx, rx) = mpsc::channel();
        if let Some(pipe) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }

        let mut demo = Demo {
            child,
            url: String::new(),
            backend: String::new(),
            stderr,
        };
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("scs-demo: sessions in ") {
                        demo.backend = rest.split(' ').next().unwrap_or_default().to_owned();
                    }
                    if let Some(url) = line.strip_prefix("scs-demo: listening on ") {
                        demo.url = url.trim().to_owned();
                        return Ok(demo);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {
                    if let Ok(Some(status)) = demo.child.try_wait() {
                        // Let the stderr reader finish.
                        std::thread::sleep(Duration::from_millis(100));
                        return Err(StartError::Exited {
                            code: status.code(),
                            stderr: demo.stderr(),
                        });
                    }
                    if left.is_zero() {
                        return Err(StartError::Other(format!(
                            "scs-demo printed no address within {START_TIMEOUT:?}; stderr: {}",
                            demo.stderr()
                        )));
                    }
                }
            }
        }
    }
}

fn or_default(features: &str) -> &str {
    if features.is_empty() {
        "default"
    } else {
        features
    }
}

/// Why the demo did not start.
#[derive(Debug)]
pub enum StartError {
    /// It exited before printing its address.
    Exited {
        /// The exit code (none when killed by a signal).
        code: Option<i32>,
        /// Everything it wrote on stderr.
        stderr: String,
    },
    /// It could not be spawned, or printed nothing in time.
    Other(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited { code, stderr } => {
                write!(f, "scs-demo exited with {code:?}: {}", stderr.trim())
            }
            Self::Other(message) => f.write_str(message),
        }
    }
}

/// A running demo; dropping it kills the process.
#[derive(Debug)]
pub struct Demo {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The backend it printed (`sqlite`, `postgres`, ...).
    pub backend: String,
    stderr: Arc<Mutex<String>>,
}

impl Demo {
    /// What the demo wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One backend the end-to-end test runs the demo over.
#[derive(Debug, Clone)]
pub struct BackendCase {
    /// The backend's name, as the demo prints it.
    pub name: &'static str,
    /// The store URL to give the demo (`SCS_STORE`); `None` for the demo's default.
    pub url: Option<String>,
    /// `host:port` of the server, for backends that need one.
    pub server: Option<String>,
    /// The environment variable the URL came from, for messages.
    pub env_var: Option<&'static str>,
}

impl BackendCase {
    /// True when the backend needs no server, or its server accepts a TCP connection.
    pub fn reachable(&self) -> bool {
        self.server.as_deref().is_none_or(|server| {
            server.to_socket_addrs().is_ok_and(|mut addrs| {
                addrs.any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
            })
        })
    }
}

/// The embedded backends, with their store files under `dir`.
pub fn embedded_backends(dir: &Path) -> Vec<BackendCase> {
    let d = dir.display();
    [
        ("memory", "memory://".to_owned()),
        ("sqlite", format!("sqlite://{d}/sessions.db")),
        ("sled", format!("sled://{d}/sled")),
        ("redb", format!("redb://{d}/sessions.redb")),
        ("fjall", format!("fjall://{d}/fjall")),
        ("leveldb", format!("leveldb://{d}/leveldb")),
    ]
    .into_iter()
    .map(|(name, url)| BackendCase {
        name,
        url: Some(url),
        server: None,
        env_var: None,
    })
    .collect()
}

/// The server backends, each from the same environment variable (and default) as the
/// conformance suite. etcd's `http://` URL becomes `etcd://`.
pub fn server_backends() -> Vec<BackendCase> {
    [
        (
            "postgres",
            "SCS_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/test",
            5432,
        ),
        (
            "mysql",
            "SCS_MYSQL_URL",
            "mysql://root@127.0.0.1:3306/test",
            3306,
        ),
        ("redis", "SCS_REDIS_URL", "redis://127.0.0.1:6379", 6379),
        (
            "memcached",
            "SCS_MEMCACHED_URL",
            "memcache://127.0.0.1:11211",
            11211,
        ),
        ("etcd", "SCS_ETCD_URL", "http://127.0.0.1:2379", 2379),
        ("nats", "SCS_NATS_URL", "nats://127.0.0.1:4222", 4222),
        (
            "mongodb",
            "SCS_MONGODB_URL",
            "mongodb://127.0.0.1:27017",
            27017,
        ),
    ]
    .into_iter()
    .map(|(name, var, default, port)| {
        let mut url = std::env::var(var)
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| default.to_owned());
        if name == "etcd" {
            for scheme in ["http://", "https://"] {
                if let Some(rest) = url.strip_prefix(scheme) {
                    url = format!("etcd://{}", rest.replace(scheme, ""));
                }
            }
        }
        BackendCase {
            name,
            server: Some(server_of(&url, port)),
            url: Some(url),
            env_var: Some(var),
        }
    })
    .collect()
}

/// `host:port` of the first host of a URL.
fn server_of(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = hosts.split(',').next().unwrap_or_default();
    let has_port = match host.rsplit_once(':') {
        Some((h, p)) => !h.ends_with(':') && p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty(),
        None => false,
    };
    if has_port && !host.ends_with(']') {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    }
}

/// A user name no earlier run used, so a shared server's leftovers never show up in a
/// run's "your sessions" page.
pub fn unique_user(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos:09}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_of_urls() {
        assert_eq!(server_of("postgres://u:p@db:5433/x", 5432), "db:5433");
        assert_eq!(server_of("redis://127.0.0.1", 6379), "127.0.0.1:6379");
        assert_eq!(server_of("etcd://a:1,b:2", 2379), "a:1");
        assert_eq!(server_of("mongodb://h/db?x=1", 27017), "h:27017");
        assert_eq!(server_of("nats://[::1]", 4222), "[::1]:4222");
        assert_eq!(server_of("nats://[::1]:4333", 4222), "[::1]:4333");
    }

    #[test]
    fn etcd_urls_are_rewritten() {
        let etcd = server_backends()
            .into_iter()
            .find(|b| b.name == "etcd")
            .and_then(|b| b.url);
        assert!(etcd.is_some_and(|u| u.starts_with("etcd://")));
    }
}
