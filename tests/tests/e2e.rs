//! End to end: the `scs-demo` binary on a free port, per backend this machine has, driven
//! by an HTTP client that keeps cookies like a browser: sign in, the visit counter, a flash
//! shown once, the theme, sign out, and a second client's session revoked from the first
//! client's sessions page. Plus the startup failures: one line on stderr, exit code 2.
//!
//! A backend whose server is not reachable is skipped loudly (shown as ignored), or fails
//! under `SCS_REQUIRE_BACKENDS=1`. Filter like any test: `cargo test -p scs-tests -- redis`.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use libtest_mimic::{Arguments, Failed, Trial};
use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{StatusCode, Url, redirect};
use scs_tests::{
    BackendCase, DemoBinary, StartError, embedded_backends, protoc_available, require_backends,
    server_backends, unique_user,
};

const COOKIE: &str = "scs_demo";

// ---------------------------------------------------------------------------------------
// The binaries, built once per run, on first use

static DEFAULT_BIN: OnceLock<Result<DemoBinary, String>> = OnceLock::new();
static FULL_BIN: OnceLock<Result<DemoBinary, String>> = OnceLock::new();

/// What `cargo run -p scs-demo` runs.
fn default_bin() -> Result<&'static DemoBinary, Failed> {
    DEFAULT_BIN
        .get_or_init(|| DemoBinary::build(""))
        .as_ref()
        .map_err(|e| Failed::from(e.as_str()))
}

/// Every backend (etcd when protoc is there).
fn full_bin() -> Result<&'static DemoBinary, Failed> {
    FULL_BIN
        .get_or_init(|| {
            DemoBinary::build(if protoc_available() {
                "full"
            } else {
                "all-but-etcd"
            })
        })
        .as_ref()
        .map_err(|e| Failed::from(e.as_str()))
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let dir = match tempfile::Builder::new().prefix("scs-e2e-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("scs-tests: cannot create a temp dir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut trials = vec![Trial::test("e2e::default-store", || {
        flow(default_bin()?, None, "sqlite")
    })];
    let mut cases = embedded_backends(dir.path());
    cases.extend(server_backends());
    for case in cases {
        trials.push(backend_trial(case));
    }
    trials.extend(startup_trials());
    let conclusion = libtest_mimic::run(&args, trials);
    drop(dir);
    conclusion.exit_code()
}

fn backend_trial(case: BackendCase) -> Trial {
    let name = format!("e2e::{}", case.name);
    let mut skip = None;
    if case.name == "etcd" && !protoc_available() {
        skip = Some(
            "etcd-client needs protoc to build (run `cargo xtask test`, or set PROTOC)".to_owned(),
        );
    } else if !case.reachable() {
        skip = Some(format!(
            "no server at {} ({} or its default); `cargo xtask services up` starts it",
            case.server.as_deref().unwrap_or_default(),
            case.env_var.unwrap_or_default()
        ));
    }
    match skip {
        Some(reason) if !require_backends() => {
            eprintln!("!!! SKIPPED {name}: {reason}");
            Trial::test(name, || Ok(())).with_ignored_flag(true)
        }
        Some(reason) => Trial::test(name, move || {
            Err(format!("{reason} (SCS_REQUIRE_BACKENDS=1)").into())
        }),
        None => Trial::test(name, move || {
            flow(full_bin()?, case.url.as_deref(), case.name)
        }),
    }
}

// ---------------------------------------------------------------------------------------
// The flow

fn flow(bin: &DemoBinary, store: Option<&str>, backend: &str) -> Result<(), Failed> {
    let env: Vec<(&str, &str)> = store.map(|s| ("SCS_STORE", s)).into_iter().collect();
    let demo = bin.start(&env).map_err(|e| e.to_string())?;
    if demo.backend != backend {
        return Err(format!(
            "the demo says it stores sessions in {:?}, not {backend}",
            demo.backend
        )
        .into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(drive(&demo.url)).map_err(|e| {
        Failed::from(format!(
            "{backend}: {e}\n--- scs-demo stderr ---\n{}",
            demo.stderr()
        ))
    })
}

async fn drive(base: &str) -> Result<(), String> {
    let user = unique_user("ada");
    let a = Client::new(base, "client-a")?;
    let b = Client::new(base, "client-b")?;

    // A new visitor: the counter starts, a browser-session cookie (persist is off).
    let page = a.get("/").await?;
    page.expect("id=\"status\">Not signed in.")?;
    check_eq(page.visits()?, 1, "visits on the first page")?;
    let t0 = a.token().ok_or("no session cookie after the first page")?;
    check(
        page.set_cookie
            .as_deref()
            .is_some_and(|c| !c.contains("Max-Age")),
        "without remember-me the cookie is a browser-session cookie",
    )?;
    check_eq(a.get("/").await?.visits()?, 2, "visits on the second page")?;

    // Sign in with remember-me: a new token, an HttpOnly SameSite=Lax persistent cookie.
    let res = a
        .post("/signin", &[("name", &user), ("remember", "on")])
        .await?;
    let cookie = res.set_cookie.clone().ok_or("sign-in set no cookie")?;
    for attr in ["HttpOnly", "SameSite=Lax", "Max-Age=", "Path=/"] {
        check(
            cookie.contains(attr),
            &format!("the sign-in cookie has {attr}: {cookie}"),
        )?;
    }
    let t1 = a.token().ok_or("no session cookie after signing in")?;
    check(t1 != t0, "signing in renews the token")?;
    let page = a.follow(&res).await?;
    check_eq(
        page.flash().as_deref(),
        Some(format!("Welcome, {user}! You stay signed in on this device for a day.").as_str()),
        "flash after signing in",
    )?;
    check_eq(
        page.user().as_deref(),
        Some(user.as_str()),
        "signed-in user",
    )?;
    check_eq(page.visits()?, 3, "the counter survives signing in")?;

    // The flash is shown once.
    let page = a.get("/").await?;
    check_eq(page.flash(), None, "flash on the next page")?;
    check_eq(page.visits()?, 4, "visits")?;

    // The old token is dead (renew_token removed it from the store).
    let stale = Client::with_token(base, &t0)?;
    stale.get("/").await?.expect("Not signed in.")?;

    // A preference kept in the session.
    let res = a.post("/theme", &[("theme", "dark")]).await?;
    let page = a.follow(&res).await?;
    page.expect("class=\"theme-dark\"")?;
    check_eq(
        page.flash().as_deref(),
        Some("Theme set to dark."),
        "flash after the theme",
    )?;

    // A second client signs in as the same user, without remember-me.
    b.get("/").await?;
    let res = b.post("/signin", &[("name", &user)]).await?;
    let cookie = res
        .set_cookie
        .clone()
        .ok_or("second sign-in set no cookie")?;
    check(
        !cookie.contains("Max-Age") && !cookie.contains("Expires"),
        &format!("without remember-me no Max-Age/Expires: {cookie}"),
    )?;
    let page = b.follow(&res).await?;
    check_eq(
        page.user().as_deref(),
        Some(user.as_str()),
        "second client signed in",
    )?;

    // The first client sees both sessions and signs the other out.
    let page = a.get("/sessions").await?;
    if page.body.contains("id=\"unsupported\"") {
        eprintln!("scs-tests: this store cannot iterate: the revoke step is not run");
    } else {
        check_eq(page.rows(), 2, "sessions listed for the user")?;
        check_eq(page.others(), Some(1), "other sessions")?;
        page.expect("(this one)")?;
        let res = a.post("/sessions/revoke-others", &[]).await?;
        check_eq(
            res.location.as_deref(),
            Some("/sessions"),
            "revoke redirects to the sessions page",
        )?;
        let page = a.follow(&res).await?;
        check_eq(
            page.flash().as_deref(),
            Some("Signed out 1 other session."),
            "flash after revoking",
        )?;
        check_eq(page.rows(), 1, "sessions left")?;
        check_eq(page.others(), Some(0), "other sessions left")?;
        // The second client's next request finds no session.
        let page = b.get("/").await?;
        page.expect("id=\"status\">Not signed in.")?;
        check_eq(page.visits()?, 1, "the revoked client starts over")?;
    }

    // The first client is still signed in, and signs out: a new token again.
    let page = a.get("/").await?;
    check_eq(
        page.user().as_deref(),
        Some(user.as_str()),
        "still signed in",
    )?;
    let res = a.post("/signout", &[]).await?;
    let t2 = a.token().ok_or("no session cookie after signing out")?;
    check(t2 != t1, "signing out renews the token")?;
    let page = a.follow(&res).await?;
    check_eq(
        page.flash().as_deref(),
        Some("Signed out. See you soon."),
        "flash after signing out",
    )?;
    page.expect("id=\"status\">Not signed in.")?;
    page.expect("class=\"theme-dark\"")?;
    check_eq(
        a.get("/").await?.flash(),
        None,
        "flash after signing out, next page",
    )?;

    // Sessions page when signed out: back home with a message.
    let res = a.get_raw("/sessions").await?;
    check_eq(
        res.location.as_deref(),
        Some("/"),
        "the sessions page needs a user",
    )?;
    let page = a.get("/nope").await;
    check(
        page.is_err_and(|e| e.contains("404")),
        "an unknown path is a 404",
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Startup failures: one clear line, exit code 2, no panic

fn startup_trials() -> Vec<Trial> {
    let cases: [(&str, &str, &str, &str); 4] = [
        (
            "startup::malformed-url",
            "SCS_STORE",
            "postgres//localhost/x",
            "is not a store URL",
        ),
        (
            "startup::unknown-scheme",
            "SCS_STORE",
            "cassandra://127.0.0.1",
            "unknown store URL scheme `cassandra`",
        ),
        (
            "startup::feature-off",
            "SCS_STORE",
            "postgres://postgres@127.0.0.1:5432/test",
            "postgres:// needs the `postgres` feature of scs-stores",
        ),
        (
            "startup::bad-setting",
            "SCS_LIFETIME",
            "forever",
            "lifetime: invalid value",
        ),
    ];
    let mut trials: Vec<Trial> = cases
        .into_iter()
        .map(|(name, key, value, want)| {
            Trial::test(name, move || {
                startup_fails(default_bin()?, &[(key, value)], want)
            })
        })
        .collect();
    trials.push(Trial::test("startup::unreachable-server", || {
        // Port 1 on loopback: nothing listens there.
        startup_fails(
            full_bin()?,
            &[("SCS_STORE", "postgres://postgres@127.0.0.1:1/test")],
            "connection error",
        )
    }));
    trials.push(Trial::test("startup::bad-port", || {
        startup_fails(
            default_bin()?,
            &[("SCS_STORE", "memory://"), ("PORT", "http")],
            "PORT must be a port number",
        )
    }));
    trials
}

fn startup_fails(bin: &DemoBinary, env: &[(&str, &str)], want: &str) -> Result<(), Failed> {
    match bin.start(env) {
        Ok(demo) => Err(format!("scs-demo started at {} with {env:?}", demo.url).into()),
        Err(StartError::Exited { code, stderr }) => {
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            check_eq(code, Some(2), "exit code")?;
            check(
                lines.len() == 1,
                &format!("one line on stderr, got:\n{stderr}"),
            )?;
            check(
                lines[0].starts_with("scs-demo: "),
                &format!("the line names the program: {stderr}"),
            )?;
            check(
                lines[0].contains(want),
                &format!("the line says {want:?}: {stderr}"),
            )?;
            check(
                !stderr.contains("panicked") && !stderr.contains("backtrace"),
                "no panic",
            )?;
            Ok(())
        }
        Err(other) => Err(other.to_string().into()),
    }
}

// ---------------------------------------------------------------------------------------
// A cookie-keeping client that does not follow redirects on its own (to see each step)

struct Client {
    http: reqwest::Client,
    jar: Arc<Jar>,
    base: Url,
}

/// A response: 200 pages keep their body, 303 redirects their location.
struct Reply {
    status: StatusCode,
    location: Option<String>,
    set_cookie: Option<String>,
    body: String,
}

impl Client {
    fn new(base: &str, agent: &str) -> Result<Self, String> {
        let jar = Arc::new(Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(Arc::clone(&jar))
            .redirect(redirect::Policy::none())
            .user_agent(format!("scs-tests {agent}"))
            .build()
            .map_err(|e| e.to_string())?;
        let base = Url::parse(base).map_err(|e| e.to_string())?;
        Ok(Self { http, jar, base })
    }

    /// A client that replays a token it was given.
    fn with_token(base: &str, token: &str) -> Result<Self, String> {
        let client = Self::new(base, "replay")?;
        client
            .jar
            .add_cookie_str(&format!("{COOKIE}={token}; Path=/"), &client.base);
        Ok(client)
    }

    fn url(&self, path: &str) -> Result<Url, String> {
        self.base.join(path).map_err(|e| e.to_string())
    }

    /// The session token in the jar.
    fn token(&self) -> Option<String> {
        let header = self.jar.cookies(&self.base)?;
        header
            .to_str()
            .ok()?
            .split("; ")
            .find_map(|pair| pair.strip_prefix(&format!("{COOKIE}=")).map(str::to_owned))
    }

    async fn get_raw(&self, path: &str) -> Result<Reply, String> {
        let res = self
            .http
            .get(self.url(path)?)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        Reply::read(res).await
    }

    /// GET, expecting a 200 page.
    async fn get(&self, path: &str) -> Result<Reply, String> {
        let reply = self.get_raw(path).await?;
        if reply.status != StatusCode::OK {
            return Err(format!("GET {path}: {}", reply.status));
        }
        check(
            reply.body.contains("<html"),
            &format!("GET {path} is an HTML page"),
        )?;
        Ok(reply)
    }

    /// POST a form, expecting a 303 redirect.
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Result<Reply, String> {
        let res = self
            .http
            .post(self.url(path)?)
            .form(form)
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let reply = Reply::read(res).await?;
        if reply.status != StatusCode::SEE_OTHER {
            return Err(format!("POST {path}: {} {}", reply.status, reply.body));
        }
        Ok(reply)
    }

    /// GET where a redirect points.
    async fn follow(&self, redirect: &Reply) -> Result<Reply, String> {
        let to = redirect.location.as_deref().ok_or("no Location")?;
        self.get(to).await
    }
}

impl Reply {
    async fn read(res: reqwest::Response) -> Result<Self, String> {
        let status = res.status();
        let headers: HeaderMap = res.headers().clone();
        let text = |name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let location = text(LOCATION);
        let set_cookie = headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{COOKIE}=")))
            .map(str::to_owned);
        let body = res.text().await.map_err(|e| e.to_string())?;
        Ok(Self {
            status,
            location,
            set_cookie,
            body,
        })
    }

    fn expect(&self, needle: &str) -> Result<(), String> {
        check(
            self.body.contains(needle),
            &format!("the page shows {needle:?}"),
        )
    }

    /// The text of the element with this id (up to the next tag).
    fn text_of(&self, id: &str) -> Option<String> {
        let at = self.body.find(&format!("id=\"{id}\""))?;
        let rest = &self.body[at..];
        let start = rest.find('>')? + 1;
        let end = rest[start..].find('<')? + start;
        Some(unescape(&rest[start..end]))
    }

    fn visits(&self) -> Result<i64, String> {
        self.text_of("visits")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| "no visit counter on the page".to_owned())
    }

    fn flash(&self) -> Option<String> {
        self.text_of("flash")
    }

    fn user(&self) -> Option<String> {
        self.text_of("user")
    }

    fn others(&self) -> Option<usize> {
        self.text_of("others").and_then(|v| v.parse().ok())
    }

    fn rows(&self) -> usize {
        self.body.matches("<tr id=\"session-").count()
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("expected: {what}"))
    }
}

fn check_eq<T: PartialEq + std::fmt::Debug>(got: T, want: T, what: &str) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}
