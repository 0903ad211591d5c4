//! `cargo xtask bench [--smoke]`: the benchmark report, scs against tower-sessions in the
//! same run (see the performance issue).
//!
//! Builds `scs-bench` in release mode (with the store features whose crates exist and
//! build), runs its parts, and prints one markdown report, also written to
//! `<target dir>/bench/report.md`:
//! 1. in-process middleware cost through tower (no network);
//! 2. HTTP on 127.0.0.1: hyper on a single-threaded runtime pinned to core 0, wrk (or the
//!    Rust generator) pinned to core 1, the servers interleaved over several rounds;
//! 3. memory per live session, one fresh process per measurement;
//! 4. per store: find / commit latency next to the raw driver, and round trips on the wire;
//! 5. store calls per request, with and without an idle timeout;
//!
//! then every goal as PASS / MISS, and, for a missed speed goal, a callgrind profile of the
//! scs side, with every HTTP server's instructions per request counted by callgrind (the
//! steady counterpart of part 2's timings). Goals are ratios within this one run; nothing
//! here is a timed assertion.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

const USAGE: &str = "\
usage: cargo xtask bench [--smoke] [--rounds N] [--secs S] [--window S] [--conns N]
                         [--loadgen wrk|rust] [--profile | --no-profile]

Builds scs-bench (release) and prints the benchmark report, also written to
<target dir>/bench/report.md.

  --smoke        a few-second run that proves the bench builds and runs (for CI):
                 tiny samples, no wrk install, one short profile; its numbers mean
                 nothing
  --rounds N     HTTP rounds, fresh servers each (default 3)
  --secs S       seconds of HTTP load per server, case and round (default 5)
  --window S     seconds per HTTP load window: a case's servers take turns, one
                 window each (default 1)
  --conns N      HTTP connections (default 32)
  --loadgen X    wrk (installed with apt-get when missing) or rust (default: wrk when it
                 is there or can be installed, else rust)
  --profile      profile the scs side of every case with callgrind, missed or not
  --no-profile   never profile (default: profile the cases whose speed goal missed);
                 with any profile, the HTTP servers' instructions per request are
                 counted under callgrind too (about a minute)

environment: SCS_REDIS_URL, SCS_POSTGRES_URL, SCS_MYSQL_URL, SCS_MEMCACHED_URL,
SCS_ETCD_URL, SCS_NATS_URL, SCS_MONGODB_URL (the servers of the per-store part, each with
its local default; a server that does not answer is listed as skipped), CARGO_TARGET_DIR.
";

/// Store features of scs-bench and the crate each needs.
const STORES: [(&str, &str); 17] = [
    ("redis", "scs-redisstore"),
    ("postgres", "scs-pgstore"),
    ("tokio-postgres", "scs-tokiopgstore"),
    ("mysql", "scs-mysqlstore"),
    ("sqlite", "scs-sqlitestore"),
    ("fred", "scs-fredstore"),
    ("memcached", "scs-memcachedstore"),
    ("etcd", "scs-etcdstore"),
    ("nats", "scs-natsstore"),
    ("mongo", "scs-mongostore"),
    ("diesel", "scs-dieselstore"),
    ("seaorm", "scs-seaormstore"),
    ("sled", "scs-sledstore"),
    ("redb", "scs-redbstore"),
    ("fjall", "scs-fjallstore"),
    ("leveldb", "scs-leveldbstore"),
    ("sqlx-sqlite", "scs-sqlxsqlitestore"),
];

const CASES: [(&str, &str); 4] = [
    ("read", "(a) read a live session"),
    ("write", "(b) write to a live session"),
    ("new", "(c) new session (first request, write)"),
    ("none", "(d) session not touched (cookie sent)"),
];

struct Opts {
    smoke: bool,
    rounds: usize,
    secs: f64,
    window: f64,
    conns: usize,
    loadgen: Option<String>,
    profile: Option<bool>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Option<Self>> {
        let mut o = Opts {
            smoke: false,
            rounds: 3,
            secs: 5.0,
            window: 1.0,
            conns: 32,
            loadgen: None,
            profile: None,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .with_context(|| format!("{name} needs a value"))
                    .cloned()
            };
            match arg.as_str() {
                "-h" | "--help" | "help" => return Ok(None),
                "--smoke" => o.smoke = true,
                "--rounds" => o.rounds = value(arg)?.parse().context("--rounds")?,
                "--secs" => o.secs = value(arg)?.parse().context("--secs")?,
                "--window" => o.window = value(arg)?.parse().context("--window")?,
                "--conns" => o.conns = value(arg)?.parse().context("--conns")?,
                "--loadgen" => {
                    let v = value(arg)?;
                    if v != "wrk" && v != "rust" {
                        bail!("--loadgen is wrk or rust, not {v}");
                    }
                    o.loadgen = Some(v);
                }
                "--profile" => o.profile = Some(true),
                "--no-profile" => o.profile = Some(false),
                other => bail!("unknown option {other}\n\n{USAGE}"),
            }
        }
        if o.smoke {
            o.rounds = 1;
            o.secs = 0.3;
            o.window = 0.3;
            o.conns = 4;
            o.loadgen.get_or_insert_with(|| "rust".to_owned());
        }
        o.rounds = o.rounds.max(1);
        if !(o.window > 0.0 && o.secs > 0.0) {
            bail!("--secs and --window take a number of seconds above zero");
        }
        Ok(Some(o))
    }

    /// Load windows per server, case and round.
    fn windows(&self) -> usize {
        ((self.secs / self.window).round() as usize).max(1)
    }
}

/// Where things are, and what this machine offers.
struct Env {
    root: PathBuf,
    out: PathBuf,
    bin: PathBuf,
    /// `taskset` works and there are two cores or more.
    pin: bool,
}

impl Env {
    /// `bin` with `args`, pinned to `core` when pinning works.
    fn command(&self, core: usize, program: &Path, args: &[&str]) -> Command {
        let mut cmd = if self.pin {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(core.to_string()).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args).current_dir(&self.root);
        cmd
    }

    /// Runs a part of scs-bench and returns its JSON lines.
    fn part(&self, args: &[&str]) -> Result<Vec<Value>> {
        let out = self
            .command(0, &self.bin, args)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running scs-bench {}", args.join(" ")))?;
        if !out.status.success() {
            bail!("scs-bench {} failed ({})", args.join(" "), out.status);
        }
        parse_lines(&String::from_utf8_lossy(&out.stdout))
    }
}

fn parse_lines(text: &str) -> Result<Vec<Value>> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad JSON line: {l}")))
        .collect()
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn found(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn s(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// The lower and upper quartiles (NaN when there is nothing to rank).
fn quartiles(mut v: Vec<f64>) -> (f64, f64) {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let pos = q * (v.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    };
    (at(0.25), at(0.75))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

// ---------------------------------------------------------------------------------------
// Entry point

pub(crate) fn main(args: &[String]) -> Result<ExitCode> {
    let Some(opts) = Opts::parse(args)? else {
        print!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    let root = crate::repo_root();
    let target = target_dir(&root)?;
    let out = target.join("bench");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let (features, mut skipped_stores) = build(&root, &out)?;
    let env = Env {
        bin: target.join("release").join("scs-bench"),
        pin: found("taskset")
            && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
            && Command::new("taskset")
                .args(["-c", "1", "true"])
                .status()
                .is_ok_and(|s| s.success()),
        root,
        out,
    };
    let started = Instant::now();
    let load_before = loadavg();

    eprintln!("xtask bench: 1/5 in-process middleware cost");
    let mut inproc_args = vec!["inproc"];
    if opts.smoke {
        inproc_args.push("--smoke");
    }
    let inproc = env.part(&inproc_args)?;

    eprintln!("xtask bench: 2/5 HTTP");
    let loadgen = pick_loadgen(&opts);
    let (http, http_windows) = http_part(&env, &opts, &loadgen)?;

    eprintln!("xtask bench: 3/5 memory per session");
    let counts: &[u64] = if opts.smoke {
        &[10_000]
    } else {
        &[100_000, 1_000_000]
    };
    let mut mem = Vec::new();
    for &count in counts {
        for lib in ["scs", "tower-sessions"] {
            let n = count.to_string();
            mem.extend(env.part(&["mem", "--lib", lib, "--count", &n])?);
        }
    }

    eprintln!("xtask bench: 4/5 stores");
    let mut store_args = vec!["stores"];
    if opts.smoke {
        store_args.push("--smoke");
    }
    let mut stores = env.part(&store_args)?;
    for row in &mut stores {
        let name = s(row, "store");
        if let Some(reason) = skipped_stores.remove(&name) {
            row["reason"] = reason.into();
        }
    }

    eprintln!("xtask bench: 5/5 store calls per request");
    let mut idle_args = vec!["idle"];
    if opts.smoke {
        idle_args.push("--smoke");
    }
    let idle = env.part(&idle_args)?;
    idle_args[0] = "primitives";
    let primitives = env.part(&idle_args)?;

    let results = Results {
        inproc,
        http,
        http_windows,
        mem,
        stores,
        idle,
        primitives,
    };
    let goals = results.goals();
    let missed: Vec<&str> = CASES
        .iter()
        .map(|(case, _)| *case)
        .filter(|case| {
            goals
                .iter()
                .any(|g| g.case == Some(*case) && g.pass == Some(false))
        })
        .collect();
    // A smoke run profiles one case, briefly, so that it proves the profiling code runs
    // too; its counts mean nothing.
    let profile_cases: Vec<&str> = match opts.profile {
        Some(false) => Vec::new(),
        _ if opts.smoke => vec!["none"],
        Some(true) => CASES.iter().map(|(c, _)| *c).collect(),
        None => missed,
    };
    let (profile_iters, count_secs) = if opts.smoke {
        (200, 0.3)
    } else {
        (20_000, 2.0)
    };
    let profiles = if profile_cases.is_empty() {
        Vec::new()
    } else if !found("valgrind") || !found("callgrind_annotate") {
        eprintln!("xtask bench: valgrind is not installed; no profiles");
        Vec::new()
    } else {
        eprintln!(
            "xtask bench: profiling {} with callgrind",
            profile_cases.join(", ")
        );
        profile_cases
            .iter()
            .map(|case| profile(&env, case, profile_iters))
            .collect::<Result<Vec<_>>>()?
    };
    // With the profiles, every HTTP server's instructions per request: the steady
    // counterpart of part 2 (a minute or so: each server starts twice under valgrind).
    let mut http_counts = Vec::new();
    if !profiles.is_empty() {
        eprintln!("xtask bench: counting the HTTP servers' instructions with callgrind");
        for (case, _) in CASES {
            if opts.smoke && case != "none" {
                continue;
            }
            let mut libs = vec!["scs", "tower-sessions"];
            if case == "none" {
                libs.push("none");
            }
            for lib in libs {
                // A server valgrind cannot run costs this table, not the report.
                match http_count(&env, lib, case, count_secs) {
                    Ok(count) => {
                        eprintln!(
                            "xtask bench:   {case:5} {lib:14} {:>8.0} instructions/request ({} requests)",
                            count.per_request, count.requests
                        );
                        http_counts.push(count);
                    }
                    Err(e) => eprintln!(
                        "xtask bench:   {case:5} {lib:14} not counted: {e:#} (left out of the report)"
                    ),
                }
            }
        }
    }

    let header = Header {
        smoke: opts.smoke,
        loadgen,
        features,
        opts: &opts,
        pin: env.pin,
        elapsed: started.elapsed(),
        load: format!("{load_before} at the start, {} at the end", loadavg()),
    };
    let report = render(&header, &results, &goals, &profiles, &http_counts);
    print!("{report}");
    let path = env.out.join("report.md");
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("xtask bench: report written to {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// The cargo target dir (honours `CARGO_TARGET_DIR` and config), from `cargo metadata`.
fn target_dir(root: &Path) -> Result<PathBuf> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed");
    }
    let meta: Value = serde_json::from_slice(&out.stdout).context("reading cargo metadata")?;
    Ok(PathBuf::from(s(&meta, "target_directory")))
}

/// Builds scs-bench in release mode with every store feature whose crate exists and
/// builds. Returns the features built and, per store left out, the reason.
fn build(root: &Path, out: &Path) -> Result<(Vec<String>, BTreeMap<String, String>)> {
    let mut skipped = BTreeMap::new();
    let mut wanted = Vec::new();
    for (feature, krate) in STORES {
        if root.join("crates").join(krate).join("Cargo.toml").is_file() {
            wanted.push(feature.to_owned());
        } else {
            skipped.insert(feature.to_owned(), format!("crates/{krate} does not exist"));
        }
    }
    let run = |features: &[String], log: Option<&Path>| -> Result<bool> {
        let mut cmd = cargo();
        cmd.args(["build", "--release", "-p", "scs-bench"])
            .current_dir(root)
            // etcd-client's build script needs protoc: the vendored one, unless set.
            .envs(crate::protoc_env()?);
        if !features.is_empty() {
            cmd.arg("--features").arg(features.join(","));
        }
        if let Some(log) = log {
            let file = std::fs::File::create(log)?;
            cmd.stdout(file.try_clone()?).stderr(file);
        }
        eprintln!("xtask bench: cargo build --release -p scs-bench --features {features:?}");
        Ok(cmd.status().context("running cargo build")?.success())
    };
    if run(&wanted, None)? {
        return Ok((wanted, skipped));
    }
    // Some store crate does not build (another change in flight): find which, keep the rest.
    let mut ok = Vec::new();
    for feature in &wanted {
        let log = out.join(format!("build-{feature}.log"));
        if run(std::slice::from_ref(feature), Some(&log))? {
            ok.push(feature.clone());
        } else {
            let krate = STORES
                .iter()
                .find(|(f, _)| f == feature)
                .map_or("?", |(_, k)| k);
            skipped.insert(
                feature.clone(),
                format!("crates/{krate} does not build (see {})", log.display()),
            );
        }
    }
    if !run(&ok, None)? {
        bail!("scs-bench does not build even without the failing store crates");
    }
    Ok((ok, skipped))
}

// ---------------------------------------------------------------------------------------
// Part 2: HTTP

/// The load generator: wrk when there (installing it with apt-get when missing, outside
/// smoke runs), else scs-bench's own.
fn pick_loadgen(opts: &Opts) -> String {
    if opts.loadgen.as_deref() == Some("rust") {
        return "rust".into();
    }
    if found("wrk") {
        return "wrk".into();
    }
    if found("apt-get") {
        eprintln!("xtask bench: wrk is missing; installing the Debian package");
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-q", "wrk"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let ok = install()
            || (Command::new("apt-get")
                .args(["update", "-q"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
                && install());
        if ok && found("wrk") {
            return "wrk".into();
        }
    }
    if opts.loadgen.as_deref() == Some("wrk") {
        eprintln!("xtask bench: wrk could not be installed; using the Rust load generator");
    }
    "rust".into()
}

struct Server {
    child: Child,
    port: u16,
    cookie: Option<String>,
}

impl Server {
    fn start(env: &Env, lib: &str) -> Result<Self> {
        Self::spawn(env, lib, None)
    }

    /// The server of `lib` under callgrind, which writes its count to `out` as it exits.
    fn start_counted(env: &Env, lib: &str, out: &Path) -> Result<Self> {
        Self::spawn(env, lib, Some(out))
    }

    fn spawn(env: &Env, lib: &str, callgrind: Option<&Path>) -> Result<Self> {
        let serve = ["serve", "--lib", lib];
        let mut cmd = match callgrind {
            None => {
                let mut cmd = env.command(0, &env.bin, &serve);
                cmd.stderr(Stdio::inherit());
                cmd
            }
            Some(out) => {
                let tool = "--tool=callgrind".to_owned();
                let file = format!("--callgrind-out-file={}", out.display());
                let bin = env.bin.display().to_string();
                let mut args = vec![tool.as_str(), file.as_str(), bin.as_str()];
                args.extend(serve);
                let mut cmd = env.command(0, Path::new("valgrind"), &args);
                cmd.stderr(Stdio::null());
                cmd
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting scs-bench serve")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let v: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("scs-bench serve --lib {lib} did not announce its port ({e}): {line:?}");
            }
        };
        Ok(Self {
            port: v["port"].as_u64().context("no port")? as u16,
            cookie: v["cookie"].as_str().map(str::to_owned),
            child,
        })
    }

    /// CPU time the server has run so far (ns, user + kernel), from
    /// `/proc/<pid>/schedstat`; `taskset` execs the server, so the pid is the server's.
    fn cpu_ns(&self) -> Option<u64> {
        std::fs::read_to_string(format!("/proc/{}/schedstat", self.child.id()))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// Closes its stdin (it exits on that) and waits; kills it if it lingers (a server
    /// under valgrind gets longer: it writes its count as it exits).
    fn stop(mut self) -> Result<()> {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// One load run: requests/s, p50 and p99 (µs), non-2xx answers, requests answered, and
/// the server's CPU time per request (µs, user + kernel).
#[derive(Clone, Copy)]
struct Load {
    rps: f64,
    p50: f64,
    p99: f64,
    errors: f64,
    requests: f64,
    cpu_us: f64,
    /// The lower and upper quartiles of the server CPU per request over the windows (the
    /// median is `cpu_us`): how much the machine moved the figure.
    cpu_range: (f64, f64),
}

fn run_load(
    env: &Env,
    loadgen: &str,
    server: &Server,
    path: &str,
    secs: f64,
    conns: usize,
) -> Result<Load> {
    let cookie = server.cookie.as_deref().filter(|_| path != "/new");
    if loadgen == "wrk" {
        let mut args = vec![
            "-t1".to_owned(),
            format!("-c{conns}"),
            format!("-d{}s", secs.round().max(1.0)),
            "--latency".to_owned(),
        ];
        if let Some(c) = cookie {
            args.push("-H".to_owned());
            args.push(format!("Cookie: {c}"));
        }
        args.push(format!("http://127.0.0.1:{}{path}", server.port));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env
            .command(1, Path::new("wrk"), &args)
            .output()
            .context("running wrk")?;
        if !out.status.success() {
            bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        parse_wrk(&String::from_utf8_lossy(&out.stdout))
    } else {
        let port = server.port.to_string();
        let (secs, conns) = (secs.to_string(), conns.to_string());
        let mut args = vec![
            "load", "--port", &port, "--path", path, "--secs", &secs, "--conns", &conns,
        ];
        if let Some(c) = cookie {
            args.extend(["--cookie", c]);
        }
        let out = env
            .command(1, &env.bin, &args)
            .stderr(Stdio::inherit())
            .output()
            .context("running scs-bench load")?;
        if !out.status.success() {
            bail!("scs-bench load failed ({})", out.status);
        }
        let v = parse_lines(&String::from_utf8_lossy(&out.stdout))?
            .pop()
            .context("no result from scs-bench load")?;
        Ok(Load {
            rps: f(&v, "rps"),
            p50: f(&v, "p50_us"),
            p99: f(&v, "p99_us"),
            errors: f(&v, "errors"),
            requests: f(&v, "requests"),
            cpu_us: f64::NAN,
            cpu_range: (f64::NAN, f64::NAN),
        })
    }
}

/// Requests/s and the 50% / 99% latencies from `wrk --latency` output.
fn parse_wrk(out: &str) -> Result<Load> {
    let micros = |v: &str| -> Option<f64> {
        let v = v.trim();
        let (num, scale) = if let Some(n) = v.strip_suffix("us") {
            (n, 1.0)
        } else if let Some(n) = v.strip_suffix("ms") {
            (n, 1e3)
        } else if let Some(n) = v.strip_suffix('s') {
            (n, 1e6)
        } else {
            (v, 1.0)
        };
        num.parse::<f64>().ok().map(|x| x * scale)
    };
    let mut load = Load {
        rps: f64::NAN,
        p50: f64::NAN,
        p99: f64::NAN,
        errors: 0.0,
        requests: f64::NAN,
        cpu_us: f64::NAN,
        cpu_range: (f64::NAN, f64::NAN),
    };
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            load.rps = v.trim().parse().unwrap_or(f64::NAN);
        } else if let Some(v) = line.strip_prefix("50%") {
            load.p50 = micros(v).unwrap_or(f64::NAN);
        } else if let Some(v) = line.strip_prefix("99%") {
            load.p99 = micros(v).unwrap_or(f64::NAN);
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            load.requests = n.trim().parse().unwrap_or(f64::NAN);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            load.errors += v.trim().parse::<f64>().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            load.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<f64>().ok())
                .sum::<f64>();
        }
    }
    if load.rps.is_nan() {
        bail!("no Requests/sec in wrk's output:\n{out}");
    }
    Ok(load)
}

/// Every (case, lib) over HTTP, each load window's result in order: the servers of a case
/// take their windows in turn, so entry `i` of two libs of a case come from neighbouring
/// windows and pair up.
type HttpWindows = BTreeMap<(String, String), Vec<Load>>;

/// Every (case, lib) over HTTP: the median of each figure over the windows.
type HttpMedians = BTreeMap<(String, String), Load>;

/// Every (case, lib) over HTTP. Per round and case, the case's servers are all started
/// (fresh processes, on the same core) and load goes to one at a time, in windows that
/// alternate between them (their order flipping from one window to the next), so a slow
/// phase of the machine falls on each alike; several rounds, so no one process's luck
/// decides. [`HttpWindows`], and the median of each figure over the windows.
fn http_part(env: &Env, opts: &Opts, loadgen: &str) -> Result<(HttpMedians, HttpWindows)> {
    let mut runs: HttpWindows = BTreeMap::new();
    let windows = opts.windows();
    let path = |case: &str| format!("/{case}");
    for round in 0..opts.rounds {
        for (case, _) in CASES {
            let mut libs = vec!["scs", "tower-sessions"];
            if case == "none" {
                libs.push("none");
            }
            let mut servers = Vec::new();
            let result = (|| -> Result<()> {
                for lib in &libs {
                    servers.push(Server::start(env, lib)?);
                }
                if !opts.smoke {
                    // Warm-up: connections, allocator, branch predictors.
                    for server in &servers {
                        run_load(env, loadgen, server, &path(case), 1.0, opts.conns)?;
                    }
                }
                for window in 0..windows {
                    let mut order: Vec<usize> = (0..libs.len()).collect();
                    if (round * windows + window) % 2 == 1 {
                        order.reverse();
                    }
                    for i in order {
                        let (lib, server) = (libs[i], &servers[i]);
                        let cpu = server.cpu_ns();
                        let mut load =
                            run_load(env, loadgen, server, &path(case), opts.window, opts.conns)?;
                        if let (Some(before), Some(after)) = (cpu, server.cpu_ns()) {
                            load.cpu_us = (after - before) as f64 / 1000.0 / load.requests;
                        }
                        eprintln!(
                            "xtask bench:   round {} window {} {case:5} {lib:14} {:>9.0} req/s  p50 {:>7.0} µs  p99 {:>7.0} µs  server CPU {:>6.2} µs/req",
                            round + 1,
                            window + 1,
                            load.rps,
                            load.p50,
                            load.p99,
                            load.cpu_us
                        );
                        runs.entry((case.to_owned(), lib.to_owned()))
                            .or_default()
                            .push(load);
                    }
                }
                Ok(())
            })();
            for server in servers {
                server.stop()?;
            }
            result?;
        }
    }
    let medians = runs
        .iter()
        .map(|(k, v)| {
            let m = |g: fn(&Load) -> f64| median(v.iter().map(g).collect());
            let load = Load {
                rps: m(|l| l.rps),
                p50: m(|l| l.p50),
                p99: m(|l| l.p99),
                errors: v.iter().map(|l| l.errors).sum(),
                requests: m(|l| l.requests),
                cpu_us: m(|l| l.cpu_us),
                cpu_range: quartiles(v.iter().map(|l| l.cpu_us).collect()),
            };
            (k.clone(), load)
        })
        .collect();
    Ok((medians, runs))
}

// ---------------------------------------------------------------------------------------
// Profiles

struct Profile {
    case: String,
    iters: usize,
    total: u64,
    /// (share of all instructions, function), by self cost.
    by_self: Vec<(f64, String)>,
    /// (share, function) by inclusive cost, scs functions only.
    by_inclusive: Vec<(f64, String)>,
}

fn profile(env: &Env, case: &str, iters: usize) -> Result<Profile> {
    let file = env.out.join(format!("callgrind.{case}.out"));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", file.display()))
        .arg(&env.bin)
        .args(["profile", "--lib", "scs", "--case", case, "--iters"])
        .arg(iters.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running valgrind")?;
    if !status.success() {
        bail!("callgrind failed for case {case}");
    }
    let annotate = |inclusive: bool| -> Result<String> {
        let out = Command::new("callgrind_annotate")
            .arg(format!(
                "--inclusive={}",
                if inclusive { "yes" } else { "no" }
            ))
            .arg("--threshold=100")
            .arg(&file)
            .output()
            .context("running callgrind_annotate")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (total, by_self) = parse_annotate(&annotate(false)?);
    let (_, inclusive) = parse_annotate(&annotate(true)?);
    let by_inclusive = inclusive
        .into_iter()
        .filter(|(_, name)| name.contains("scs") && !name.contains("scs_bench"))
        .take(12)
        .collect();
    Ok(Profile {
        case: case.to_owned(),
        iters,
        total,
        by_self: by_self.into_iter().take(15).collect(),
        by_inclusive,
    })
}

/// User-space instructions per request of one HTTP server, counted by callgrind: a steady
/// figure where part 2's timings move with the machine. Kernel work (the socket calls) is
/// not in it.
struct HttpCount {
    case: String,
    lib: String,
    /// Instructions per request: the server's count over a load run, less its count for
    /// starting and stopping with no load, over the requests it answered.
    per_request: f64,
    requests: f64,
}

/// The server of `lib` under callgrind, run once idle and once under `secs` of load on
/// `/case` from the Rust load generator (which counts the requests answered).
fn http_count(env: &Env, lib: &str, case: &str, secs: f64) -> Result<HttpCount> {
    let run = |load: bool| -> Result<(u64, f64)> {
        let file = env.out.join(format!("callgrind.http.{lib}.{case}.out"));
        // Never an earlier run's count: a server that dies unwritten leaves no file.
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", file.display()));
            }
            _ => {}
        }
        let server = Server::start_counted(env, lib, &file)?;
        let requests = if load {
            let result = run_load(env, "rust", &server, &format!("/{case}"), secs, 8);
            match result {
                Ok(l) => l.requests,
                Err(e) => {
                    server.stop()?;
                    return Err(e);
                }
            }
        } else {
            0.0
        };
        server.stop()?;
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let total =
            callgrind_total(&text).with_context(|| format!("no total in {}", file.display()))?;
        Ok((total, requests))
    };
    let (idle, _) = run(false)?;
    let (loaded, requests) = run(true)?;
    if requests < 1.0 {
        bail!("the server of {lib} under callgrind answered no /{case} requests");
    }
    Ok(HttpCount {
        case: case.to_owned(),
        lib: lib.to_owned(),
        per_request: loaded.saturating_sub(idle) as f64 / requests,
        requests,
    })
}

/// The program total of a callgrind output file (its `summary:` or `totals:` line).
fn callgrind_total(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix("summary:")
            .or_else(|| l.strip_prefix("totals:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    })
}

/// What the HTTP speed goals leave for session work, from this run's own numbers: the
/// server CPU per request with no middleware is hyper's and the kernel's share of every
/// request, so a ratio goal over tower-sessions bounds what scs may spend over it.
fn budget(w: &mut String, r: &Results) {
    let Some(bare) = r.http("none", "none").filter(|b| b.cpu_us.is_finite()) else {
        return;
    };
    let _ = writeln!(w, "## What the HTTP goals leave for session work\n");
    let _ = writeln!(
        w,
        "Server CPU per request (µs) in this run. With no middleware a request costs {:.2} µs: \
         hyper's parsing and writing and the socket calls, which every library pays. A goal of \
         k× tower-sessions' req/s allows scs at most tower-sessions' CPU per request / k, so \
         the session work may add at most that minus {:.2} µs over no middleware. The last two \
         columns are what scs adds over no middleware in this run: over HTTP, and in-process \
         (part 1, without a network).\n",
        bare.cpu_us, bare.cpu_us
    );
    let _ = writeln!(
        w,
        "| case | goal | tower-sessions | scs allowed | session work allowed | scs adds (HTTP) | scs adds (in-process) |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|");
    let bare_ns = r.inproc_ns("none", "none");
    for (case, k) in [("read", 1.3), ("write", 1.3), ("new", 1.2)] {
        let (Some(tower), Some(scs)) = (r.http(case, "tower-sessions"), r.http(case, "scs")) else {
            continue;
        };
        let allowed = tower.cpu_us / k;
        let label = CASES
            .iter()
            .find(|(c, _)| *c == case)
            .map_or(case, |(_, l)| l);
        let _ = writeln!(
            w,
            "| {label} | ≥ {k:.1}× | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            tower.cpu_us,
            allowed,
            allowed - bare.cpu_us,
            scs.cpu_us - bare.cpu_us,
            (r.inproc_ns("scs", case) - bare_ns) / 1000.0,
        );
    }
    if let Some(scs) = r.http("none", "scs") {
        let allowed = bare.cpu_us / 0.97;
        let _ = writeln!(
            w,
            "| (d) session not touched | ≥ 97% of no middleware | | {:.2} | {:.2} | {:.2} | {:.2} |",
            allowed,
            allowed - bare.cpu_us,
            scs.cpu_us - bare.cpu_us,
            (r.inproc_ns("scs", "none") - bare_ns) / 1000.0,
        );
    }
    let _ = writeln!(
        w,
        "\nWhere the session work allowed is below what that work needs at its native cost \
         (the building blocks' table below: hashing the token, decoding, encoding, the store \
         call), no implementation of the same behaviour meets the goal on this server stack; \
         the profiles below show where the rest goes.\n"
    );
}

/// The HTTP servers' instructions per request, next to each other.
fn http_counts_table(w: &mut String, counts: &[HttpCount]) {
    if counts.is_empty() {
        return;
    }
    let get = |case: &str, lib: &str| {
        counts
            .iter()
            .find(|c| c.case == case && c.lib == lib)
            .map(|c| c.per_request)
    };
    let _ = writeln!(w, "## HTTP servers' instructions per request (callgrind)\n");
    let _ = writeln!(
        w,
        "Each server of part 2 run under callgrind, once idle and once under 2 s of load \
         (the Rust load generator, 8 connections): its instructions over the load run, less \
         the idle run's, over the requests it answered. These repeat to within a fraction of \
         a percent from run to run, where part 2's timings move with the machine; but they \
         count only the server's own user-space work (hyper, the middleware, the allocator), \
         not the kernel's socket calls, which are most of part 2's CPU time per request. \
         SHA-256 runs in software under valgrind (see the profiles below), which adds to \
         scs's read, write and new session here what SHA-NI makes cheap natively.\n"
    );
    let _ = writeln!(
        w,
        "| case | scs | tower-sessions | no middleware | tower-sessions / scs | scs over no middleware |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|");
    // The app without middleware answers every path alike: its `/none` count is the
    // baseline of every case.
    let bare = get("none", "none");
    for (case, label) in CASES {
        let (Some(scs), Some(tower)) = (get(case, "scs"), get(case, "tower-sessions")) else {
            continue;
        };
        let (base, over) = bare.map_or((String::new(), String::new()), |b| {
            (
                num(b),
                format!("+{} ({:+.1}%)", num(scs - b), (scs / b - 1.0) * 100.0),
            )
        });
        let _ = writeln!(
            w,
            "| {label} | {} | {} | {base} | {:.2}× | {over} |",
            num(scs),
            num(tower),
            tower / scs
        );
    }
    let _ = writeln!(w);
}

/// The program total and `(share %, function)` rows of `callgrind_annotate`.
fn parse_annotate(text: &str) -> (u64, Vec<(f64, String)>) {
    let mut total = 0;
    let mut rows = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some((count, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(count) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        if rest.contains("PROGRAM TOTALS") {
            total = count;
            continue;
        }
        if total == 0 {
            continue;
        }
        // "(12.34%)  file:function [object]"
        let rest = rest.trim_start();
        let rest = rest
            .strip_prefix('(')
            .and_then(|r| r.split_once(')'))
            .map_or(rest, |(_, r)| r)
            .trim();
        let function = rest.split_once(':').map_or(rest, |(_, f)| f);
        let function = function
            .rsplit_once(" [")
            .map_or(function, |(f, _)| f)
            .trim();
        rows.push((count as f64 * 100.0 / total as f64, function.to_owned()));
    }
    (total, rows)
}

// ---------------------------------------------------------------------------------------
// Goals

struct Results {
    inproc: Vec<Value>,
    http: HttpMedians,
    http_windows: HttpWindows,
    mem: Vec<Value>,
    stores: Vec<Value>,
    idle: Vec<Value>,
    primitives: Vec<Value>,
}

/// The ratio of two servers' figures over paired load windows (see [`Results::paired`]).
#[derive(Clone, Copy)]
struct Paired {
    median: f64,
    /// The lower and upper quartiles, with two windows or more.
    quartiles: Option<(f64, f64)>,
}

impl Paired {
    /// `1.12× (middle half 1.05× to 1.20×)`.
    fn times(self) -> String {
        match self.quartiles {
            Some((lo, hi)) => format!("{} (middle half {lo:.2}× to {hi:.2}×)", ratio(self.median)),
            None => ratio(self.median),
        }
    }

    /// `97.1% (middle half 95.0% to 99.2%)`.
    fn percent(self) -> String {
        let p = |r: f64| format!("{:.1}%", r * 100.0);
        match self.quartiles {
            Some((lo, hi)) => format!("{} (middle half {} to {})", p(self.median), p(lo), p(hi)),
            None => p(self.median),
        }
    }
}

/// Requests/s of the first server over the second's.
const RPS: fn(&Load, &Load) -> f64 = |a, b| a.rps / b.rps;

/// Capacity (requests per CPU second) of the first server over the second's.
const CAPACITY: fn(&Load, &Load) -> f64 = |a, b| b.cpu_us / a.cpu_us;

struct Goal {
    name: String,
    measured: String,
    target: String,
    /// None: could not be measured in this run.
    pass: Option<bool>,
    case: Option<&'static str>,
}

impl Results {
    fn inproc_ns(&self, lib: &str, case: &str) -> f64 {
        self.inproc
            .iter()
            .find(|v| s(v, "part") == "inproc" && s(v, "lib") == lib && s(v, "case") == case)
            .map_or(f64::NAN, |v| f(v, "ns"))
    }

    fn http(&self, case: &str, lib: &str) -> Option<Load> {
        self.http.get(&(case.to_owned(), lib.to_owned())).copied()
    }

    /// `ratio(a's window, b's window)` over the windows of `case`, paired in order (the
    /// servers of a case take their windows in turn): the median, and the lower and upper
    /// quartiles, which show how far this run resolves the comparison.
    fn paired(
        &self,
        case: &str,
        (a, b): (&str, &str),
        ratio: fn(&Load, &Load) -> f64,
    ) -> Option<Paired> {
        let windows = |lib: &str| self.http_windows.get(&(case.to_owned(), lib.to_owned()));
        let (a, b) = (windows(a)?, windows(b)?);
        let ratios: Vec<f64> = a
            .iter()
            .zip(b)
            .map(|(a, b)| ratio(a, b))
            .filter(|r| r.is_finite())
            .collect();
        if ratios.is_empty() {
            return None;
        }
        let pairs = ratios.len();
        let (q1, q3) = quartiles(ratios.clone());
        Some(Paired {
            median: median(ratios),
            quartiles: (pairs >= 2).then_some((q1, q3)),
        })
    }

    fn idle_row(&self, setup: &str, case: &str) -> Option<&Value> {
        self.idle
            .iter()
            .find(|v| s(v, "setup") == setup && s(v, "case") == case)
    }

    fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        let mut ratio_goal = |case: &'static str, label: &str, min: f64| {
            let inproc = self.inproc_ns("tower-sessions", case) / self.inproc_ns("scs", case);
            goals.push(Goal {
                name: format!("{label}, in-process"),
                measured: ratio(inproc),
                target: format!("≥ {min:.1}× tower-sessions"),
                pass: (!inproc.is_nan()).then_some(inproc >= min),
                case: Some(case),
            });
            let libs = ("scs", "tower-sessions");
            for (what, f) in [
                ("HTTP req/s", RPS),
                ("HTTP capacity (server CPU per request)", CAPACITY),
            ] {
                let paired = self.paired(case, libs, f);
                let r = paired.map_or(f64::NAN, |p| p.median);
                goals.push(Goal {
                    name: format!("{label}, {what}"),
                    measured: paired.map_or("—".into(), |p| p.times()),
                    target: format!("≥ {min:.1}× tower-sessions"),
                    pass: (!r.is_nan()).then_some(r >= min),
                    case: Some(case),
                });
            }
        };
        ratio_goal("read", "(a) read", 1.3);
        ratio_goal("write", "(b) write", 1.3);
        ratio_goal("new", "(c) new session", 1.2);
        for (what, f) in [
            ("HTTP req/s", RPS),
            ("HTTP capacity (server CPU per request)", CAPACITY),
        ] {
            let paired = self.paired("none", ("scs", "none"), f);
            let r = paired.map_or(f64::NAN, |p| p.median);
            goals.push(Goal {
                name: format!("(d) untouched, {what}"),
                measured: paired.map_or("—".into(), |p| {
                    format!("{} of no middleware", p.percent())
                }),
                target: "≥ 97%".into(),
                pass: (!r.is_nan()).then_some(r >= 0.97),
                case: Some("none"),
            });
        }
        let added = self.inproc_ns("scs", "none") - self.inproc_ns("none", "none");
        let added_tower = self.inproc_ns("tower-sessions", "none") - self.inproc_ns("none", "none");
        goals.push(Goal {
            name: "(d) untouched, in-process (for information)".into(),
            measured: format!(
                "+{} ns over no middleware (tower-sessions +{} ns)",
                num(added),
                num(added_tower)
            ),
            target: "—".into(),
            pass: None,
            case: None,
        });

        for v in self.mem.iter().filter(|v| s(v, "lib") == "scs") {
            let b = f(v, "bytes_per_session");
            goals.push(Goal {
                name: format!("memory, {} sessions", num(f(v, "count"))),
                measured: format!("{b:.0} B/session"),
                target: "≤ 300 B".into(),
                pass: Some(b <= 300.0),
                case: None,
            });
        }

        for v in self.stores.iter().filter(|v| s(v, "status") == "ok") {
            let store = s(v, "store");
            if store == "memory" {
                continue;
            }
            for op in ["find", "commit"] {
                let r = v[op]["store"][0].as_f64().unwrap_or(f64::NAN)
                    / v[op]["raw"][0].as_f64().unwrap_or(f64::NAN);
                goals.push(Goal {
                    name: format!("{store}: {op} p50 vs raw driver"),
                    measured: ratio(r),
                    target: "≤ 1.1×".into(),
                    pass: (!r.is_nan()).then_some(r <= 1.1),
                    case: None,
                });
            }
            if let Some(pool) = v.get("pool").filter(|p| p.is_object()) {
                for op in ["find", "commit"] {
                    let r = pool[op]["store"][0].as_f64().unwrap_or(f64::NAN)
                        / pool[op]["raw"][0].as_f64().unwrap_or(f64::NAN);
                    goals.push(Goal {
                        name: format!(
                            "{store}: {op} p50 vs the same statement through sqlx's own pool \
                             (for information)"
                        ),
                        measured: ratio(r),
                        target: "—".into(),
                        pass: None,
                        case: None,
                    });
                }
            }
            if let Some(rt) = v.get("rt").filter(|rt| rt.is_object()) {
                for op in ["find", "commit"] {
                    let n = rt[op][0].as_f64().unwrap_or(f64::NAN);
                    goals.push(Goal {
                        name: format!("{store}: round trips per {op}"),
                        measured: format!("{n:.2}"),
                        target: "1".into(),
                        pass: (!n.is_nan()).then_some(n <= 1.01),
                        case: None,
                    });
                }
            }
        }

        let setup = "scs, no idle timeout";
        for (case, what, field) in [
            ("read", "store calls per load (read request)", "finds"),
            (
                "write",
                "store writes per commit (write request)",
                "commits",
            ),
        ] {
            if let Some(v) = self.idle_row(setup, case) {
                let n = f(v, field);
                goals.push(Goal {
                    name: format!("middleware: {what}"),
                    measured: format!("{n:.2}"),
                    target: "1".into(),
                    pass: Some((n - 1.0).abs() < 0.01),
                    case: None,
                });
            }
        }
        for case in ["read", "none"] {
            if let Some(v) = self.idle_row(setup, case) {
                let w = f(v, "commits") + f(v, "touches") + f(v, "deletes");
                goals.push(Goal {
                    name: format!("zero writes for an unmodified session ({case})"),
                    measured: format!("{w:.2} writes/request"),
                    target: "0".into(),
                    pass: Some(w == 0.0),
                    case: None,
                });
            }
        }
        goals
    }
}

// ---------------------------------------------------------------------------------------
// The report

struct Header<'a> {
    smoke: bool,
    loadgen: String,
    features: Vec<String>,
    opts: &'a Opts,
    pin: bool,
    elapsed: Duration,
    /// 1-minute load averages: other work on the machine skews every figure.
    load: String,
}

fn ratio(r: f64) -> String {
    if r.is_nan() {
        "—".into()
    } else {
        format!("{r:.2}×")
    }
}

/// A number with thousands separators (rounded).
fn num(x: f64) -> String {
    if x.is_nan() {
        return "—".into();
    }
    let neg = x < 0.0;
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if neg { format!("-{out}") } else { out }
}

fn us(x: f64) -> String {
    if x.is_nan() {
        "—".into()
    } else if x < 10.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        num(x)
    }
}

/// The 1-minute load average.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores; {rustc}")
}

fn render(
    h: &Header,
    r: &Results,
    goals: &[Goal],
    profiles: &[Profile],
    http_counts: &[HttpCount],
) -> String {
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "# scs benchmark report\n");
    if h.smoke {
        let _ = writeln!(
            w,
            "**Smoke run**: tiny samples that prove the benchmark builds and runs; the numbers mean nothing.\n"
        );
    }
    let _ = writeln!(
        w,
        "{}. Release build. scs with its defaults (MessagePack, token hashing on) over \
         `scs-memstore`; tower-sessions 0.15 with its defaults (`with_secure(false)` for plain \
         HTTP) over its `MemoryStore`. The same handler logic behind both. Run took {:.0} s; \
         load average {} (other work on the machine skews every figure).\n",
        machine(),
        h.elapsed.as_secs_f64(),
        h.load
    );

    // 1
    let inproc = r.inproc.iter().find(|v| s(v, "part") == "inproc");
    let _ = writeln!(w, "## 1. In-process middleware cost\n");
    if let Some(v) = inproc {
        let _ = writeln!(
            w,
            "ns per request through tower (`ready().call()`), no network; median of {} samples of {} \
             requests after {} warm-up rounds, scs and tower-sessions interleaved.\n",
            v["samples"], v["batch"], v["warmup"]
        );
    }
    let _ = writeln!(
        w,
        "| case | scs ns | tower-sessions ns | no middleware ns | scs speed / tower-sessions |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|");
    for (case, label) in CASES {
        let (a, b) = (
            r.inproc_ns("scs", case),
            r.inproc_ns("tower-sessions", case),
        );
        let bare = if case == "none" {
            num(r.inproc_ns("none", case))
        } else {
            String::new()
        };
        let _ = writeln!(
            w,
            "| {label} | {} | {} | {bare} | {} |",
            num(a),
            num(b),
            ratio(b / a)
        );
    }
    let checks: Vec<String> = r
        .inproc
        .iter()
        .filter(|v| s(v, "part") == "check")
        .map(|v| {
            format!(
                "{}: {}/{}",
                s(v, "case"),
                v["scs_sets_cookie"],
                v["tower_sets_cookie"]
            )
        })
        .collect();
    let _ = writeln!(
        w,
        "\nSame work check (Set-Cookie sent, scs/tower-sessions): {}.\n",
        checks.join(", ")
    );

    // 2
    let _ = writeln!(w, "## 2. HTTP on 127.0.0.1\n");
    let _ = writeln!(
        w,
        "hyper 1 on a single-threaded Tokio runtime{}; load from {} with {} keep-alive \
         connections{}. {} round(s); in each, per case, the case's servers are started \
         afresh{} and take turns, {} window(s) of {} s each per server, the order flipping \
         every window, so that a slow phase of the machine falls on each alike. Figures are \
         medians over the windows; a ratio between two servers is the median of the ratios \
         of neighbouring windows.\n",
        if h.pin {
            " pinned to core 0"
        } else {
            " (not pinned: no taskset or one core)"
        },
        if h.loadgen == "wrk" {
            "wrk (1 thread)"
        } else {
            "the Rust load generator (scs-bench load)"
        },
        h.opts.conns,
        if h.pin { " on core 1" } else { "" },
        h.opts.rounds,
        if h.smoke { "" } else { " (a 1 s warm-up each)" },
        h.opts.windows(),
        h.opts.window,
    );
    let _ = writeln!(
        w,
        "Server CPU µs/request is the server process's CPU time (user + kernel, \
         `/proc/<pid>/schedstat`) over the requests it answered: its capacity on one core, \
         which other work on a shared machine does not skew the way it skews req/s. In \
         brackets, its lower and upper quartile over the windows.\n"
    );
    let _ = writeln!(
        w,
        "| case | scs req/s | p50 / p99 µs | CPU µs/req | tower-sessions req/s | p50 / p99 µs | CPU µs/req | scs / tower-sessions req/s | capacity |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let cell = |l: Option<Load>| {
        l.map_or("— | — | —".into(), |l| {
            let (lo, hi) = l.cpu_range;
            let range = if lo < hi {
                format!(" ({lo:.2}–{hi:.2})")
            } else {
                String::new()
            };
            format!(
                "{} | {} / {} | {:.2}{range}",
                num(l.rps),
                us(l.p50),
                us(l.p99),
                l.cpu_us
            )
        })
    };
    for (case, label) in CASES {
        let (a, b) = (r.http(case, "scs"), r.http(case, "tower-sessions"));
        let libs = ("scs", "tower-sessions");
        let paired = |f| {
            r.paired(case, libs, f)
                .map_or("—".into(), |p| ratio(p.median))
        };
        let (rr, cr) = (paired(RPS), paired(CAPACITY));
        let _ = writeln!(w, "| {label} | {} | {} | {rr} | {cr} |", cell(a), cell(b));
    }
    if let Some(l) = r.http("none", "none") {
        let _ = writeln!(
            w,
            "| (e) no middleware (baseline of d) | {} | | | | |",
            cell(Some(l))
        );
    }
    let errors: f64 = r.http.values().map(|l| l.errors).sum();
    if errors > 0.0 {
        let _ = writeln!(w, "\n**{errors:.0} requests failed or answered non-2xx.**");
    }
    let _ = writeln!(w);

    // 3
    let _ = writeln!(w, "## 3. Memory per live session\n");
    let _ = writeln!(
        w,
        "RSS delta (`/proc/self/statm`) of N sessions each holding `n` (an i64), stored by each \
         library's own path (scs: hashed key, MessagePack codec, `Store::commit`; tower-sessions: \
         `SessionStore::create`), one fresh process per cell.\n"
    );
    let _ = writeln!(
        w,
        "| sessions | scs-memstore B/session | tower-sessions B/session | scs / tower-sessions |"
    );
    let _ = writeln!(w, "|---:|---:|---:|---:|");
    let mut counts: Vec<u64> = r.mem.iter().filter_map(|v| v["count"].as_u64()).collect();
    counts.dedup();
    for count in counts {
        let get = |lib: &str| {
            r.mem
                .iter()
                .find(|v| v["count"].as_u64() == Some(count) && s(v, "lib") == lib)
                .map_or(f64::NAN, |v| f(v, "bytes_per_session"))
        };
        let (a, b) = (get("scs"), get("tower-sessions"));
        let _ = writeln!(
            w,
            "| {} | {a:.0} | {b:.0} | {} |",
            num(count as f64),
            ratio(a / b)
        );
    }
    let _ = writeln!(w);

    // 4
    let _ = writeln!(w, "## 4. Stores: scs `Store` trait vs the raw driver\n");
    let _ = writeln!(
        w,
        "Latency in µs (p50 / p99) of `find` and `commit` of a live session through the store, \
         next to the same operation sent with the raw driver the store is built on, \
         interleaved in blocks of 50. For PostgreSQL, MariaDB and memcached, the server's \
         workers for these connections (backend processes, connection threads, memcached's \
         threads) are pinned to the bench's core while timed and put back afterwards: left to \
         the kernel, a worker on the client's core answered in about 20 µs and one on the \
         other core in about 100 µs, whichever library sent the statement, so unpinned ratios \
         swung by 3× between runs; the other servers serve both sides from one process and \
         are not pinned (each row's note says). Embedded stores run in this process. Round trips counted on the wire by \
         a relaying proxy on 127.0.0.1 (the client speaking again after the server \
         answered).\n"
    );
    let _ = writeln!(
        w,
        "| store | find: store | find: raw | ratio | commit: store | commit: raw | ratio | round trips find / commit (raw) | raw driver |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---|---|");
    for v in &r.stores {
        let store = s(v, "store");
        if s(v, "status") != "ok" {
            let _ = writeln!(w, "| {store} | skipped: {} | | | | | | | |", s(v, "reason"));
            continue;
        }
        let pair = |op: &str, side: &str| {
            format!(
                "{} / {}",
                us(v[op][side][0].as_f64().unwrap_or(f64::NAN)),
                us(v[op][side][1].as_f64().unwrap_or(f64::NAN))
            )
        };
        let rr = |op: &str| {
            ratio(
                v[op]["store"][0].as_f64().unwrap_or(f64::NAN)
                    / v[op]["raw"][0].as_f64().unwrap_or(f64::NAN),
            )
        };
        let rt = match v.get("rt").filter(|x| x.is_object()) {
            Some(rt) => format!(
                "{:.2} / {:.2} ({:.2} / {:.2})",
                rt["find"][0].as_f64().unwrap_or(f64::NAN),
                rt["commit"][0].as_f64().unwrap_or(f64::NAN),
                rt["find"][1].as_f64().unwrap_or(f64::NAN),
                rt["commit"][1].as_f64().unwrap_or(f64::NAN),
            ),
            None => "n/a (in-process)".into(),
        };
        let _ = writeln!(
            w,
            "| {store} | {} | {} | {} | {} | {} | {} | {rt} | {} |",
            pair("find", "store"),
            pair("find", "raw"),
            rr("find"),
            pair("commit", "store"),
            pair("commit", "raw"),
            rr("commit"),
            s(v, "raw"),
        );
    }
    let pooled: Vec<&Value> = r
        .stores
        .iter()
        .filter(|v| s(v, "status") == "ok" && v.get("pool").is_some_and(Value::is_object))
        .collect();
    if !pooled.is_empty() {
        let _ = writeln!(
            w,
            "\nThe sqlx stores next to the same statements through sqlx's own pool (acquire, \
             run, release; `test_before_acquire(false)`, as the stores build their own pools), \
             measured the same way: what is left when the pool's own cost is taken out.\n"
        );
        let _ = writeln!(
            w,
            "| store | find: store | find: sqlx pool | ratio | commit: store | commit: sqlx pool | ratio |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|");
        for v in pooled {
            let p = &v["pool"];
            let at = |op: &str, side: &str| p[op][side][0].as_f64().unwrap_or(f64::NAN);
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} |",
                s(v, "store"),
                us(at("find", "store")),
                us(at("find", "raw")),
                ratio(at("find", "store") / at("find", "raw")),
                us(at("commit", "store")),
                us(at("commit", "raw")),
                ratio(at("commit", "store") / at("commit", "raw")),
            );
        }
    }
    let notes: Vec<String> = r
        .stores
        .iter()
        .filter(|v| s(v, "status") == "ok" && !s(v, "note").is_empty())
        .map(|v| format!("{}: {}", s(v, "store"), s(v, "note")))
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(w, "\nNotes: {}.", notes.join("; "));
    }
    if !h.features.is_empty() {
        let _ = writeln!(w, "\nStore features built: {}.", h.features.join(", "));
    }
    let _ = writeln!(w);

    // 5
    let _ = writeln!(w, "## 5. Store calls per request\n");
    let _ = writeln!(
        w,
        "Counted by a wrapping store (scs: a `CtxStore` around `MemoryStore`; tower-sessions: a \
         `SessionStore` around its `MemoryStore`) over {} requests of each kind through the real \
         middleware.\n",
        r.idle
            .first()
            .map_or(Value::Null, |v| v["requests"].clone())
    );
    let _ = writeln!(
        w,
        "| setup | request | finds | commits | touches | deletes |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|");
    for v in &r.idle {
        let _ = writeln!(
            w,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            s(v, "setup"),
            s(v, "case"),
            f(v, "finds"),
            f(v, "commits"),
            f(v, "touches"),
            f(v, "deletes")
        );
    }
    let _ = writeln!(w);

    // Goals
    let _ = writeln!(w, "## Goals\n");
    let _ = writeln!(
        w,
        "Over HTTP a ratio is the median over pairs of neighbouring load windows (part 2); \
         in brackets, the middle half of those pairs' ratios (lower to upper quartile). Where \
         that range reaches across the target, this run does not settle the goal.\n"
    );
    let _ = writeln!(w, "| goal | measured | target | result |");
    let _ = writeln!(w, "|---|---|---|---|");
    for g in goals {
        let result = match g.pass {
            Some(true) => "PASS",
            Some(false) => "**MISS**",
            None => "—",
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {result} |",
            g.name, g.measured, g.target
        );
    }
    let _ = writeln!(w);

    budget(w, r);

    http_counts_table(w, http_counts);

    // Profiles
    if !profiles.is_empty() {
        let _ = writeln!(w, "## Profiles of the scs side (callgrind)\n");
        let _ = writeln!(
            w,
            "Instructions (Ir) of `scs-bench profile --case C`: the in-process loop, setup \
             included. Valgrind's CPU has no SHA-NI, so SHA-256 runs sha2's software path there \
             and its share is overstated against a native run on a CPU with SHA extensions.\n"
        );
        for p in profiles {
            let _ = writeln!(
                w,
                "### {} ({} requests, {} Ir/request)\n",
                CASES
                    .iter()
                    .find(|(c, _)| *c == p.case)
                    .map_or(p.case.as_str(), |(_, l)| l),
                num(p.iters as f64),
                num(p.total as f64 / p.iters as f64)
            );
            let _ = writeln!(w, "| self % | function | | inclusive % | scs function |");
            let _ = writeln!(w, "|---:|---|---|---:|---|");
            for i in 0..p.by_self.len().max(p.by_inclusive.len()) {
                let (a, b) = p
                    .by_self
                    .get(i)
                    .map_or((String::new(), String::new()), |(x, n)| {
                        (format!("{x:.1}"), clean(n))
                    });
                let (c, d) = p
                    .by_inclusive
                    .get(i)
                    .map_or((String::new(), String::new()), |(x, n)| {
                        (format!("{x:.1}"), clean(n))
                    });
                let _ = writeln!(w, "| {a} | {b} | | {c} | {d} |");
            }
            let _ = writeln!(w);
        }
    }
    if !r.primitives.is_empty() {
        let _ = writeln!(w, "## Native cost of scs's building blocks\n");
        let _ = writeln!(
            w,
            "Median ns per call on this machine (no valgrind), through the public APIs: what the \
             profiles' functions cost in time.\n"
        );
        let _ = writeln!(w, "| call | ns | where it runs |");
        let _ = writeln!(w, "|---|---:|---|");
        for v in &r.primitives {
            let _ = writeln!(
                w,
                "| `{}` | {:.0} | {} |",
                s(v, "name"),
                f(v, "ns"),
                s(v, "what")
            );
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(
        w,
        "Reproduce: `cargo xtask bench` (full, a few minutes) or `cargo xtask bench --smoke`."
    );
    o
}

/// A function name fit for a table: no hash suffix, no pipes, not too long.
fn clean(name: &str) -> String {
    let mut n = name.replace('|', "\\|");
    if let Some(i) = n.rfind("::h")
        && n[i + 3..].len() == 16
        && n[i + 3..].chars().all(|c| c.is_ascii_hexdigit())
    {
        n.truncate(i);
    }
    if n.chars().count() > 110 {
        n = n.chars().take(107).collect::<String>() + "...";
    }
    format!("`{n}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 5s test @ http://127.0.0.1:1/read
  1 threads and 32 connections
  Latency Distribution
     50%  412.00us
     75%  500.00us
     90%    1.20ms
     99%    2.50ms
  240000 requests in 5.00s, 20.00MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  48000.50
Transfer/sec:      4.00MB
";
        let l = parse_wrk(out).unwrap();
        assert_eq!(l.rps, 48000.5);
        assert_eq!(l.p50, 412.0);
        assert_eq!(l.p99, 2500.0);
        assert_eq!(l.errors, 3.0);
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn reads_callgrind_totals() {
        assert_eq!(callgrind_total("events: Ir\nsummary: 12345\n"), Some(12345));
        assert_eq!(callgrind_total("events: Ir\ntotals: 77\n"), Some(77));
        assert_eq!(callgrind_total("events: Ir\n"), None);
    }

    #[test]
    fn parses_callgrind_annotate() {
        let out = "\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
1,000 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                  file:function
--------------------------------------------------------------------------------
  250 (25.00%)  ???:sha2::sha256::soft::compress [/bin/scs-bench]
  100 (10.00%)  ./malloc/malloc.c:malloc [/usr/lib/libc.so.6]
";
        let (total, rows) = parse_annotate(out);
        assert_eq!(total, 1000);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], (25.0, "sha2::sha256::soft::compress".to_owned()));
        assert_eq!(rows[1].1, "malloc");
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(num(1234567.4), "1,234,567");
        assert_eq!(num(999.0), "999");
        assert_eq!(num(-1500.0), "-1,500");
        assert_eq!(ratio(1.234), "1.23×");
        assert_eq!(clean("a::b::h0123456789abcdef"), "`a::b`");
    }

    #[test]
    fn paired_ratios_pair_windows_in_order() {
        let load = |rps: f64| Load {
            rps,
            p50: 1.0,
            p99: 1.0,
            errors: 0.0,
            requests: 1.0,
            cpu_us: 1e6 / rps,
            cpu_range: (f64::NAN, f64::NAN),
        };
        let mut results = Results {
            inproc: Vec::new(),
            http: BTreeMap::new(),
            http_windows: BTreeMap::new(),
            mem: Vec::new(),
            stores: Vec::new(),
            idle: Vec::new(),
            primitives: Vec::new(),
        };
        let key = |lib: &str| ("read".to_owned(), lib.to_owned());
        let libs = ("scs", "tower-sessions");
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        results.http_windows.insert(key("scs"), vec![load(120.0)]);
        results
            .http_windows
            .insert(key("tower-sessions"), vec![load(100.0)]);
        let one = results.paired("read", libs, RPS).unwrap();
        assert!(close(one.median, 1.2) && one.quartiles.is_none());
        assert_eq!(one.times(), "1.20×");
        // Window by window, not each side sorted: 150/100, 90/50, 120/100, 100/125,
        // 110/100 are 1.5, 1.8, 1.2, 0.8, 1.1 (sorted: 0.8, 1.1, 1.2, 1.5, 1.8).
        let scs = [150.0, 90.0, 120.0, 100.0, 110.0];
        let tower = [100.0, 50.0, 100.0, 125.0, 100.0];
        results
            .http_windows
            .insert(key("scs"), scs.into_iter().map(load).collect());
        results
            .http_windows
            .insert(key("tower-sessions"), tower.into_iter().map(load).collect());
        for f in [RPS, CAPACITY] {
            let p = results.paired("read", libs, f).unwrap();
            let (q1, q3) = p.quartiles.unwrap();
            assert!(close(p.median, 1.2) && close(q1, 1.1) && close(q3, 1.5));
        }
        let p = results.paired("read", libs, RPS).unwrap();
        assert_eq!(p.times(), "1.20× (middle half 1.10× to 1.50×)");
        assert_eq!(p.percent(), "120.0% (middle half 110.0% to 150.0%)");
        assert!(results.paired("write", libs, RPS).is_none());
    }

    #[test]
    fn quartiles_interpolate_and_skip_nan() {
        assert_eq!(quartiles(vec![4.0, 1.0, f64::NAN, 3.0, 2.0]), (1.75, 3.25));
        let (a, b) = quartiles(Vec::new());
        assert!(a.is_nan() && b.is_nan());
    }
}
