//! `cargo xtask browser`: the real-browser check. Installs Debian's `chromium` and
//! `chromium-driver` when they are missing, then runs the `browser` test of `scs-tests`
//! (built only with its `browser` feature, so the WebDriver client stays out of the normal
//! test build). That test starts chromedriver on a free port and the demo as `cargo run -p
//! scs-demo` builds it, and drives headless Chromium: sign in, reload, the session
//! persists, the session cookie is invisible to `document.cookie` (HttpOnly), sign out.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};

const USAGE: &str = "\
usage: cargo xtask browser [--no-install]

Installs Debian's chromium and chromium-driver when missing (apt-get update, then
apt-get install -y --no-install-recommends; as root, or through sudo -n), then runs
`cargo test -p scs-tests --features browser --test browser`: headless Chromium over
WebDriver signs in to the demo, reloads, sees the session persist, and checks that
document.cookie does not show the HttpOnly session cookie. CHROMEDRIVER and CHROME_BIN
override the binaries. Exits non-zero on failure.
";

const PACKAGES: [&str; 2] = ["chromium", "chromium-driver"];

pub(crate) fn main(args: &[String]) -> Result<ExitCode> {
    if args
        .iter()
        .any(|a| a == "-h" || a == "--help" || a == "help")
    {
        print!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(other) = args.iter().find(|a| *a != "--no-install") {
        eprint!("xtask browser: unknown argument `{other}`\n\n{USAGE}");
        return Ok(ExitCode::from(2));
    }
    let install = !args.iter().any(|a| a == "--no-install");

    let (chrome, driver) = match (chrome(), chromedriver()) {
        (Some(c), Some(d)) => (c, d),
        _ if install => {
            apt_install()?;
            (
                chrome().context("chromium is still missing after apt-get install")?,
                chromedriver().context("chromedriver is still missing after apt-get install")?,
            )
        }
        _ => {
            bail!("chromium and chromedriver are needed: apt-get install chromium chromium-driver")
        }
    };
    eprintln!(
        "xtask browser: {} and {}",
        chrome.display(),
        driver.display()
    );

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "test",
        "--package",
        "scs-tests",
        "--features",
        "browser",
        "--test",
        "browser",
    ])
    .env("CHROME_BIN", &chrome)
    .env("CHROMEDRIVER", &driver);
    eprintln!("xtask browser: running {cmd:?}");
    let status = cmd.status().context("running cargo test")?;
    if status.success() {
        println!("xtask browser: the real-browser check passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("xtask browser: the real-browser check FAILED ({status})");
        Ok(ExitCode::FAILURE)
    }
}

fn chrome() -> Option<PathBuf> {
    env_or_path("CHROME_BIN", &["chromium", "chromium-browser"])
}

fn chromedriver() -> Option<PathBuf> {
    env_or_path("CHROMEDRIVER", &["chromedriver"])
}

fn env_or_path(var: &str, names: &[&str]) -> Option<PathBuf> {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(path) => path.is_file().then_some(path),
        None => on_path(names),
    }
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// `apt-get update` then `apt-get install -y --no-install-recommends chromium
/// chromium-driver`, as root or through `sudo -n`.
fn apt_install() -> Result<()> {
    if on_path(&["apt-get"]).is_none() {
        bail!("chromium and chromedriver are missing and there is no apt-get to install them");
    }
    let root = rustix::process::geteuid().is_root();
    let run = |args: &[&str]| -> Result<()> {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        eprintln!("xtask browser: {cmd:?}");
        let status = cmd.status().context("running apt-get")?;
        if !status.success() {
            bail!("{cmd:?} failed ({status})");
        }
        Ok(())
    };
    run(&["update"])?;
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(PACKAGES);
    run(&install)
}
