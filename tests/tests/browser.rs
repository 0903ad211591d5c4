//! The real-browser check (feature `browser`; `cargo xtask browser` installs Debian's
//! `chromium` and `chromium-driver` when missing and runs it): chromedriver on a free port,
//! the demo as `cargo run -p scs-demo` builds it, and headless Chromium that signs in,
//! reloads, sees the session persist, finds the session cookie invisible to
//! `document.cookie` (HttpOnly), and signs out.
//!
//! `CHROMEDRIVER` and `CHROME_BIN` override where chromedriver and Chromium are.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use scs_tests::{DemoBinary, unique_user};

const COOKIE: &str = "scs_demo";

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("browser check: 1 passed, 0 failed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("browser check FAILED: {e}");
            println!("browser check: 0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let chromedriver = find("CHROMEDRIVER", &["chromedriver", "chromium-driver"])
        .ok_or("chromedriver not found: `cargo xtask browser` installs Debian's chromium-driver")?;
    let chrome = find(
        "CHROME_BIN",
        &["chromium", "chromium-browser", "google-chrome"],
    )
    .ok_or("chromium not found: `cargo xtask browser` installs Debian's chromium")?;

    let bin = DemoBinary::build("")?;
    let demo = bin.start(&[]).map_err(|e| e.to_string())?;
    println!("browser check: demo at {} on {}", demo.url, demo.backend);

    let port = free_port()?;
    let driver = Driver::start(&chromedriver, port)?;
    let profile = tempfile::Builder::new()
        .prefix("scs-chromium-")
        .tempdir()
        .map_err(|e| e.to_string())?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = runtime.block_on(drive(
        &driver.url,
        &chrome,
        &profile.path().display().to_string(),
        &demo.url,
    ));
    drop(driver);
    result.map_err(|e| format!("{e}\n--- scs-demo stderr ---\n{}", demo.stderr()))
}

async fn drive(
    driver: &str,
    chrome: &std::path::Path,
    profile: &str,
    base: &str,
) -> Result<(), String> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "binary": chrome.display().to_string(),
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1000,800",
                format!("--user-data-dir={profile}"),
            ],
        }),
    );
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .map_err(|e| format!("starting a Chromium session through chromedriver: {e}"))?;
    let result = steps(&client, base).await;
    screenshot(&client, "scs-demo-browser.png").await;
    let _ = client.close().await;
    result
}

/// Saves what the browser shows, for a person to look at.
async fn screenshot(c: &fantoccini::Client, name: &str) {
    if let Ok(png) = c.screenshot().await {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        if std::fs::write(&path, png).is_ok() {
            println!("browser check: screenshot at {}", path.display());
        }
    }
}

async fn steps(c: &fantoccini::Client, base: &str) -> Result<(), String> {
    let user = unique_user("grace");
    let err = |what: &'static str| move |e: fantoccini::error::CmdError| format!("{what}: {e}");
    let text = |id: &'static str| async move {
        c.find(Locator::Id(id))
            .await
            .map_err(|e| format!("finding #{id}: {e}"))?
            .text()
            .await
            .map_err(|e| format!("reading #{id}: {e}"))
    };

    c.goto(base).await.map_err(err("opening the demo"))?;
    let status = text("status").await?;
    expect(
        status == "Not signed in.",
        &format!("a new visitor is not signed in, got {status:?}"),
    )?;

    // Sign in.
    c.find(Locator::Id("name"))
        .await
        .map_err(err("finding the name field"))?
        .send_keys(&user)
        .await
        .map_err(err("typing the name"))?;
    c.find(Locator::Id("signin"))
        .await
        .map_err(err("finding the sign-in button"))?
        .click()
        .await
        .map_err(err("signing in"))?;
    let signed_in = text_when(c, "user", |t| t == user).await?;
    expect(
        signed_in == user,
        &format!("signed in as {user}, page says {signed_in:?}"),
    )?;
    let flash = text("flash").await?;
    expect(
        flash.starts_with("Welcome"),
        &format!("a welcome flash, got {flash:?}"),
    )?;
    let visits: u32 = text("visits")
        .await?
        .parse()
        .map_err(|_| "no visit counter")?;

    // Reload: the session persists, the flash is gone, the counter moved on.
    c.refresh().await.map_err(err("reloading"))?;
    let again = text("user").await?;
    expect(
        again == user,
        &format!("still signed in after a reload, page says {again:?}"),
    )?;
    let after: u32 = text("visits")
        .await?
        .parse()
        .map_err(|_| "no visit counter")?;
    expect(
        after == visits + 1,
        &format!("the counter went from {visits} to {after}"),
    )?;
    expect(
        c.find(Locator::Id("flash")).await.is_err(),
        "the flash message is shown once",
    )?;

    // The cookie is there for the browser, but not for scripts.
    let cookies = c.get_all_cookies().await.map_err(err("listing cookies"))?;
    let session = cookies
        .iter()
        .find(|k| k.name() == COOKIE)
        .ok_or_else(|| format!("no {COOKIE} cookie in the browser: {cookies:?}"))?;
    expect(
        session.http_only() == Some(true),
        "the session cookie is HttpOnly",
    )?;
    let visible = c
        .execute("return document.cookie;", vec![])
        .await
        .map_err(err("reading document.cookie"))?;
    let visible = visible.as_str().unwrap_or_default().to_owned();
    expect(
        !visible.contains(COOKIE),
        &format!("document.cookie does not show the session cookie, got {visible:?}"),
    )?;
    println!("browser check: signed in, reloaded, session kept; document.cookie = {visible:?}");

    // A preference kept in the session.
    c.find(Locator::Id("theme"))
        .await
        .map_err(err("finding the theme menu"))?
        .select_by_value("dark")
        .await
        .map_err(err("choosing the dark theme"))?;
    c.find(Locator::Id("save-theme"))
        .await
        .map_err(err("finding the theme button"))?
        .click()
        .await
        .map_err(err("saving the theme"))?;
    c.wait()
        .at_most(std::time::Duration::from_secs(10))
        .for_element(Locator::Css("body.theme-dark"))
        .await
        .map_err(err("the page in the dark theme"))?;

    // The sessions page lists this one.
    c.goto(&format!("{base}/sessions"))
        .await
        .map_err(err("opening the sessions page"))?;
    let count = text("count").await?;
    expect(
        count.starts_with("1 live session"),
        &format!("one session listed, got {count:?}"),
    )?;
    screenshot(c, "scs-demo-browser-sessions.png").await;

    // Sign out.
    c.goto(base).await.map_err(err("going home"))?;
    c.find(Locator::Id("signout"))
        .await
        .map_err(err("finding the sign-out button"))?
        .click()
        .await
        .map_err(err("signing out"))?;
    let status = text_when(c, "status", |t| t == "Not signed in.").await?;
    expect(
        status == "Not signed in.",
        &format!("signed out, page says {status:?}"),
    )?;
    Ok(())
}

/// After a click that navigates, the old page can still be there for a moment: reads
/// `#id` until `done` holds, or 10 s passed (the last read is returned then, and the
/// caller's check fails with it).
async fn text_when(
    c: &fantoccini::Client,
    id: &'static str,
    done: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let read = match c.find(Locator::Id(id)).await {
            Ok(e) => e.text().await.map_err(|e| format!("reading #{id}: {e}")),
            Err(e) => Err(format!("finding #{id}: {e}")),
        };
        if read.as_deref().is_ok_and(&done) || std::time::Instant::now() > deadline {
            return read;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn expect(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("expected: {what}"))
    }
}

/// `$VAR`, or the first of `names` on `PATH`.
fn find(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var).map(PathBuf::from) {
        return path.is_file().then_some(path);
    }
    let paths = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// A chromedriver process; dropping it stops it.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(path: &std::path::Path, port: u16) -> Result<Self, String> {
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", path.display()))?;
        let mut driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.child.try_wait() {
                return Err(format!("chromedriver exited at once: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "chromedriver did not listen on port {port} within 20 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("browser check: chromedriver on port {port}");
        Ok(driver)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
