//! `cargo xtask soak`: two app processes sharing one network store under load, every
//! session's counter checked at the end.
//!
//! Per store: builds `scs-soak`, creates a fresh namespace (a table, a key prefix), starts
//! two `scs-soak serve` processes on free loopback ports over it, runs `scs-soak drive`
//! against both (each session's requests one after another, alternating processes), then
//! stops the servers and deletes the namespace. Prints the driver's report per store and a
//! table at the end; exits 1 when any store had an error, a lost session or a wrong count.
//! Everything is bounded: the driver stops sending at `--seconds`, and the servers stop
//! when this process closes their stdin (or dies), or at `--seconds` plus a margin.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

const USAGE: &str = "\
usage: cargo xtask soak [--requests N] [--sessions N] [--store NAME|URL]... [--seconds N]
                        [--concurrency N] [--release]

  --requests N     requests per store (default 100000)
  --sessions N     sessions they are spread over (default 1000)
  --store X        postgres, redis, or a postgres:// or redis:// URL; repeatable
                   (default: postgres and redis)
  --seconds N      longest the load may run per store (default 600); a run that has not
                   sent every request by then fails
  --concurrency N  requests in flight (default 64)
  --release        build scs-soak with optimizations (default: the dev profile, which
                   shares the workspace's build)

environment: SCS_POSTGRES_URL [postgres://postgres@127.0.0.1:5432/test],
             SCS_REDIS_URL [redis://127.0.0.1:6379], CARGO_TARGET_DIR
";

struct Opts {
    requests: u64,
    sessions: u64,
    stores: Vec<String>,
    seconds: u64,
    concurrency: u64,
    release: bool,
}

pub(crate) fn main(args: &[String]) -> Result<ExitCode> {
    let mut o = Opts {
        requests: 100_000,
        sessions: 1_000,
        stores: Vec::new(),
        seconds: 600,
        concurrency: 64,
        release: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<u64> {
            it.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name}: a whole number"))
        };
        match a.as_str() {
            "--requests" => o.requests = num("--requests")?,
            "--sessions" => o.sessions = num("--sessions")?,
            "--seconds" => o.seconds = num("--seconds")?,
            "--concurrency" => o.concurrency = num("--concurrency")?,
            "--store" => o
                .stores
                .push(it.next().context("--store needs a value")?.clone()),
            "--release" => o.release = true,
            "-h" | "--help" | "help" => {
                print!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => {
                eprint!("xtask soak: unknown argument `{other}`\n\n{USAGE}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    if o.stores.is_empty() {
        o.stores = vec!["postgres".into(), "redis".into()];
    }
    if o.sessions == 0 || o.requests < o.sessions || o.seconds == 0 || o.concurrency == 0 {
        bail!("need --sessions > 0, --requests >= --sessions, --seconds > 0, --concurrency > 0");
    }

    let root = crate::repo_root();
    let profile = if o.release { "release" } else { "debug" };
    println!("==> building scs-soak ({profile})");
    let mut build = Command::new("cargo");
    build.current_dir(&root).args(["build", "-p", "scs-soak"]);
    if o.release {
        build.arg("--release");
    }
    if !build.status().context("running cargo build")?.success() {
        bail!("building scs-soak failed");
    }
    let bin = target_dir(&root)?.join(profile).join("scs-soak");

    let mut rows = Vec::new();
    let mut all_ok = true;
    for store in &o.stores {
        let (name, url) = resolve(store);
        println!("\n==> soak on {name}");
        let (ok, result) = match soak_one(&bin, &url, &o) {
            Ok(r) => r,
            Err(e) => {
                println!("soak on {name}: error: {e:#}");
                (false, None)
            }
        };
        all_ok &= ok;
        rows.push((name, ok, result));
    }

    println!(
        "\n| store | requests | errors | lost sessions | wrong counts | counter total / sent | seconds | req/s | result |"
    );
    println!("|---|---:|---:|---:|---:|---|---:|---:|---|");
    for (name, ok, result) in &rows {
        let f = |k: &str| {
            result
                .as_ref()
                .and_then(|r| field(r, k))
                .unwrap_or("?")
                .to_owned()
        };
        println!(
            "| {name} | {} | {} | {} | {} | {} / {} | {} | {} | {} |",
            f("requests"),
            f("errors"),
            f("lost"),
            f("mismatched"),
            f("total_read"),
            f("total_sent"),
            f("seconds"),
            f("rps"),
            if *ok { "PASS" } else { "FAIL" }
        );
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A display name and URL for `--store`.
fn resolve(store: &str) -> (String, String) {
    let env = |var: &str, default: &str| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    match store {
        "postgres" => (
            "postgres".into(),
            env(
                "SCS_POSTGRES_URL",
                "postgres://postgres@127.0.0.1:5432/test",
            ),
        ),
        "redis" => (
            "redis".into(),
            env("SCS_REDIS_URL", "redis://127.0.0.1:6379"),
        ),
        url => (
            url.split("://").next().unwrap_or("store").to_owned(),
            url.to_owned(),
        ),
    }
}

fn target_dir(root: &Path) -> Result<PathBuf> {
    let out = Command::new("cargo")
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading cargo metadata")?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata gave no target_directory")
}

/// `key=value` from the driver's `RESULT` line.
fn field<'a>(result: &'a str, key: &str) -> Option<&'a str> {
    result
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// A server process, stopped (stdin closed, then killed if it lingers) on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(bin: &Path, url: &str, ns: &str, max_seconds: u64) -> Result<(Server, String)> {
    let mut child = Command::new(bin)
        .args(["serve", "--store", url, "--namespace", ns, "--port", "0"])
        .args(["--max-seconds", &max_seconds.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting scs-soak serve")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let server = Server(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next();
        let _ = tx.send(first);
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .context("scs-soak serve did not start within 60 s")?
        .context("scs-soak serve exited before listening")?
        .context("reading scs-soak serve's output")?;
    let addr = line
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected output from scs-soak serve: {line}"))?
        .to_owned();
    Ok((server, addr))
}

fn soak_one(bin: &Path, url: &str, o: &Opts) -> Result<(bool, Option<String>)> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ns = format!("soak_{}_{stamp}", std::process::id());
    let step = |what: &str| -> Result<()> {
        let ok = Command::new(bin)
            .args([what, "--store", url, "--namespace", &ns])
            .status()
            .with_context(|| format!("running scs-soak {what}"))?
            .success();
        if !ok {
            bail!("scs-soak {what} failed");
        }
        Ok(())
    };
    step("prepare")?;
    let result = (|| -> Result<(bool, Option<String>)> {
        let max = o.seconds + 120;
        let (a, addr_a) = start_server(bin, url, &ns, max)?;
        let (b, addr_b) = start_server(bin, url, &ns, max)?;
        println!("two app processes: {addr_a} and {addr_b}, namespace {ns}");
        let mut child = Command::new(bin)
            .args(["drive", "--targets", &format!("{addr_a},{addr_b}")])
            .args(["--requests", &o.requests.to_string()])
            .args(["--sessions", &o.sessions.to_string()])
            .args(["--concurrency", &o.concurrency.to_string()])
            .args(["--seconds", &o.seconds.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting scs-soak drive")?;
        let mut result = None;
        if let Some(out) = child.stdout.take() {
            for line in BufReader::new(out).lines() {
                let line = line?;
                println!("{line}");
                if let Some(r) = line.strip_prefix("RESULT ") {
                    result = Some(r.to_owned());
                }
            }
        }
        let ok = child.wait()?.success();
        drop((a, b));
        Ok((ok && result.is_some(), result))
    })();
    let cleaned = step("cleanup");
    let out = result?;
    cleaned?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn reads_result_fields() {
        let r = "requests=100 errors=0 lost=0 total_read=100";
        assert_eq!(field(r, "requests"), Some("100"));
        assert_eq!(field(r, "lost"), Some("0"));
        assert_eq!(field(r, "total"), None);
    }
}
