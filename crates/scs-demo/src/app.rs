//! Routes and handlers.

use std::fmt::Write as _;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use scs::{ErrorKind, Session, SessionManager};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::page::{Flash, Layout, esc, when};

// Session keys.
const USER: &str = "user";
const USER_ID: &str = "user_id";
const SID: &str = "sid";
const SIGNED_IN_AT: &str = "signed_in_at";
const LAST_SEEN: &str = "last_seen";
const AGENT: &str = "agent";
const REMEMBER: &str = "remember";
const VISITS: &str = "visits";
const THEME: &str = "theme";
const FLASH: &str = "flash";

const MAX_NAME: usize = 40;

#[derive(Clone)]
struct App {
    manager: SessionManager,
}

/// The whole app, with the session layer.
pub(crate) fn router(manager: SessionManager) -> Router {
    let layer = manager.layer();
    Router::new()
        .route("/", get(home))
        .route("/signin", post(sign_in))
        .route("/signout", post(sign_out))
        .route("/theme", post(theme))
        .route("/sessions", get(sessions))
        .route("/sessions/revoke-others", post(revoke_others))
        .fallback(not_found)
        .with_state(App { manager })
        .layer(layer)
}

// ---------------------------------------------------------------------------------------
// Pages

async fn home(State(app): State<App>, session: Session) -> Result<Response, AppError> {
    let visits = session.get_i64(VISITS).unwrap_or(0) + 1;
    session.put(VISITS, &visits)?;
    let user = session.get_string(USER);
    if user.is_some() {
        session.put(LAST_SEEN, &OffsetDateTime::now_utc())?;
    }
    let theme = theme_of(&session);

    let mut body = String::new();
    match &user {
        Some(name) => {
            let remembered = session.get_bool(REMEMBER).unwrap_or(false);
            let _ = write!(
                body,
                r#"<h1>Hello, {name}</h1>
<p id="status">Signed in as <b id="user">{name}</b>{remembered}.</p>
<form class="card" method="post" action="/signout">
  <button type="submit" id="signout">Sign out</button>
  <small>renews the session token and forgets who you are; the theme and counter stay</small>
</form>
"#,
                name = esc(name),
                remembered = if remembered {
                    ", remembered on this device"
                } else {
                    " until you close the browser"
                },
            );
        }
        None => {
            body.push_str(
                r#"<h1>Welcome</h1>
<p id="status">Not signed in.</p>
<form class="card" method="post" action="/signin">
  <label>Name <input type="text" name="name" id="name" maxlength="40" required autofocus></label>
  <label><input type="checkbox" name="remember" id="remember" value="on"> Remember me</label>
  <button type="submit" id="signin">Sign in</button>
  <p><small>No password: this is a demo of sessions, not of authentication. Signing in
  renews the session token (against session fixation). Without "remember me" the cookie
  lasts until the browser closes.</small></p>
</form>
"#,
            );
        }
    }
    let _ = write!(
        body,
        r#"<section class="card">
  <p>You have loaded this page <b id="visits">{visits}</b> time{s} in this session.</p>
</section>
<form class="card" method="post" action="/theme">
  <label>Theme <select name="theme" id="theme">{options}</select></label>
  <button type="submit" id="save-theme">Save</button>
  <small>a preference kept in the session</small>
</form>
"#,
        s = if visits == 1 { "" } else { "s" },
        options = ["light", "dark"]
            .iter()
            .map(|t| {
                let selected = if *t == theme { " selected" } else { "" };
                format!(r#"<option value="{t}"{selected}>{t}</option>"#)
            })
            .collect::<String>(),
    );
    Ok(page(&app, &session, "Home", user.as_deref(), &body))
}

#[derive(Deserialize)]
struct SignIn {
    name: String,
    remember: Option<String>,
}

async fn sign_in(
    session: Session,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Result<Redirect, AppError> {
    let name = form.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        session.put(
            FLASH,
            &Flash::error(format!(
                "Please enter a name of 1 to {MAX_NAME} characters."
            )),
        )?;
        return Ok(Redirect::to("/"));
    }
    let remember = form.remember.is_some_and(|v| !v.is_empty() && v != "off");
    // A privilege change: a new token for the same data, the old one gone from the store.
    session.renew_token().await?;
    session.put(USER, name)?;
    session.put(USER_ID, &name.to_lowercase())?;
    session.put(SID, &short_id()?)?;
    session.put(SIGNED_IN_AT, &OffsetDateTime::now_utc())?;
    session.put(LAST_SEEN, &OffsetDateTime::now_utc())?;
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown browser");
    session.put(AGENT, &agent.chars().take(160).collect::<String>())?;
    session.put(REMEMBER, &remember)?;
    session.remember_me(remember);
    let text = if remember {
        format!("Welcome, {name}! You stay signed in on this device for a day.")
    } else {
        format!("Welcome, {name}!")
    };
    session.put(FLASH, &Flash::info(text))?;
    Ok(Redirect::to("/"))
}

async fn sign_out(session: Session) -> Result<Redirect, AppError> {
    if session.exists(USER) {
        session.renew_token().await?;
        for key in [USER, USER_ID, SID, SIGNED_IN_AT, LAST_SEEN, AGENT, REMEMBER] {
            session.remove(key);
        }
        session.remember_me(false);
        session.put(FLASH, &Flash::info("Signed out. See you soon."))?;
    } else {
        session.put(FLASH, &Flash::error("You were not signed in."))?;
    }
    Ok(Redirect::to("/"))
}

#[derive(Deserialize)]
struct Theme {
    theme: String,
}

async fn theme(session: Session, Form(form): Form<Theme>) -> Result<Redirect, AppError> {
    match form.theme.as_str() {
        t @ ("light" | "dark") => {
            session.put(THEME, t)?;
            session.put(FLASH, &Flash::info(format!("Theme set to {t}.")))?;
        }
        _ => session.put(FLASH, &Flash::error("Unknown theme."))?,
    }
    Ok(Redirect::to("/"))
}

/// One live session of the signed-in user, as the sessions page shows it.
struct Row {
    sid: String,
    signed_in_at: Option<OffsetDateTime>,
    last_seen: Option<OffsetDateTime>,
    visits: i64,
    agent: String,
    remember: bool,
    deadline: OffsetDateTime,
}

impl Row {
    fn of(s: &Session) -> Self {
        Self {
            sid: s.get_string(SID).unwrap_or_default(),
            signed_in_at: s.get_time(SIGNED_IN_AT),
            last_seen: s.get_time(LAST_SEEN),
            visits: s.get_i64(VISITS).unwrap_or(0),
            agent: s.get_string(AGENT).unwrap_or_default(),
            remember: s.get_bool(REMEMBER).unwrap_or(false),
            deadline: s.deadline(),
        }
    }
}

async fn sessions(State(app): State<App>, session: Session) -> Result<Response, AppError> {
    let (Some(user), Some(user_id)) = (session.get_string(USER), session.get_string(USER_ID))
    else {
        session.put(FLASH, &Flash::error("Sign in to see your sessions."))?;
        return Ok(Redirect::to("/").into_response());
    };
    let mine = session.get_string(SID).unwrap_or_default();
    let mut rows = Vec::new();
    // Every live session of the store, kept when it is this user's. A demo can afford the
    // scan; an app with many sessions keeps an index of sessions per user.
    let listed = app
        .manager
        .iterate(|s| {
            if s.get_string(USER_ID).as_deref() == Some(user_id.as_str()) {
                rows.push(Row::of(&s));
            }
            async { Ok(()) }
        })
        .await;
    let mut body = format!("<h1>Your sessions, {}</h1>\n", esc(&user));
    match listed {
        Ok(()) => {
            rows.sort_by(|a, b| {
                (b.sid == mine)
                    .cmp(&(a.sid == mine))
                    .then(b.signed_in_at.cmp(&a.signed_in_at))
            });
            let others = rows.iter().filter(|r| r.sid != mine).count();
            let _ = write!(
                body,
                r#"<p id="count">{n} live session{s} signed in as {user}: this one and <b id="others">{others}</b> other{s2}.</p>
<table>
<thead><tr><th>Session</th><th>Signed in</th><th>Last seen</th><th>Visits</th><th>Browser</th><th>Remembered</th><th>Expires</th></tr></thead>
<tbody>
"#,
                n = rows.len(),
                s = if rows.len() == 1 { "" } else { "s" },
                s2 = if others == 1 { "" } else { "s" },
                user = esc(&user),
            );
            for r in &rows {
                let current = r.sid == mine;
                let _ = writeln!(
                    body,
                    r#"<tr id="session-{sid}"{class}><td><code>{sid}</code>{this}</td><td>{signed}</td><td>{seen}</td><td>{visits}</td><td>{agent}</td><td>{remember}</td><td>{expires}</td></tr>"#,
                    sid = esc(&r.sid),
                    class = if current { r#" class="current""# } else { "" },
                    this = if current { " (this one)" } else { "" },
                    signed = when(r.signed_in_at),
                    seen = when(r.last_seen),
                    visits = r.visits,
                    agent = esc(&r.agent),
                    remember = if r.remember { "yes" } else { "no" },
                    expires = when(Some(r.deadline)),
                );
            }
            body.push_str("</tbody>\n</table>\n");
            let _ = write!(
                body,
                r#"<form class="card" method="post" action="/sessions/revoke-others">
  <button type="submit" id="revoke-others"{disabled}>Sign out all other sessions</button>
  <small>destroys them in the store: their next request starts a fresh session</small>
</form>
"#,
                disabled = if others == 0 { " disabled" } else { "" },
            );
        }
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            let _ = write!(
                body,
                r#"<p id="unsupported">The {} store cannot list its sessions, so this page cannot show them.</p>"#,
                esc(app.manager.store().backend())
            );
        }
        Err(e) => return Err(e.into()),
    }
    Ok(page(&app, &session, "Your sessions", Some(&user), &body))
}

async fn revoke_others(State(app): State<App>, session: Session) -> Result<Redirect, AppError> {
    let (Some(user_id), Some(mine)) = (session.get_string(USER_ID), session.get_string(SID)) else {
        session.put(FLASH, &Flash::error("Sign in first."))?;
        return Ok(Redirect::to("/"));
    };
    let mut revoked = 0usize;
    let result = app
        .manager
        .iterate(|s| {
            let other = s.get_string(USER_ID).as_deref() == Some(user_id.as_str())
                && s.get_string(SID).as_deref() != Some(mine.as_str());
            if other {
                revoked += 1;
            }
            async move {
                if other {
                    s.destroy().await?;
                }
                Ok(())
            }
        })
        .await;
    match result {
        Ok(()) => session.put(
            FLASH,
            &Flash::info(format!(
                "Signed out {revoked} other session{}.",
                if revoked == 1 { "" } else { "s" }
            )),
        )?,
        Err(e) if e.kind() == ErrorKind::Unsupported => session.put(
            FLASH,
            &Flash::error("This store cannot list its sessions, so none were signed out."),
        )?,
        Err(e) => return Err(e.into()),
    }
    Ok(Redirect::to("/sessions"))
}

async fn not_found(State(app): State<App>, session: Session) -> Response {
    let user = session.get_string(USER);
    let body = r#"<h1>Not found</h1><p><a href="/">Back home</a></p>"#;
    let mut res = page(&app, &session, "Not found", user.as_deref(), body);
    *res.status_mut() = StatusCode::NOT_FOUND;
    res
}

// ---------------------------------------------------------------------------------------
// Helpers

fn theme_of(session: &Session) -> String {
    session
        .get_string(THEME)
        .filter(|t| t == "dark")
        .unwrap_or_else(|| "light".to_owned())
}

/// Lays out `body`, popping the flash message (shown once).
fn page(app: &App, session: &Session, title: &str, user: Option<&str>, body: &str) -> Response {
    let theme = theme_of(session);
    let html = Layout {
        title,
        theme: &theme,
        user,
        flash: session.pop::<Flash>(FLASH),
        backend: app.manager.store().backend(),
    }
    .render(body);
    // Pages differ per session: never cache them.
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

/// A label for the session on the sessions page: random, not derived from the token.
fn short_id() -> scs::Result<String> {
    Ok(scs::token::try_generate()?.chars().take(10).collect())
}

/// A store failure while handling a request: logged, and a plain 500 page.
struct AppError(scs::Error);

impl From<scs::Error> for AppError {
    fn from(e: scs::Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        tracing::error!(error = %format!("{:#}", self.0), "request failed");
        let body = format!(
            "<!doctype html><title>Error</title><h1>Something went wrong</h1><p>{}</p>",
            esc(&self.0.to_string())
        );
        (StatusCode::INTERNAL_SERVER_ERROR, Html(body)).into_response()
    }
}
