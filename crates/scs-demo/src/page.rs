//! HTML: one layout, plain forms, no script.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::macros::format_description;

/// A one-time message shown on the next page (popped from the session).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Flash {
    pub(crate) level: Level,
    pub(crate) text: String,
}

/// How a flash message looks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Level {
    Info,
    Error,
}

impl Flash {
    pub(crate) fn info(text: impl Into<String>) -> Self {
        Self {
            level: Level::Info,
            text: text.into(),
        }
    }

    pub(crate) fn error(text: impl Into<String>) -> Self {
        Self {
            level: Level::Error,
            text: text.into(),
        }
    }
}

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `2025-01-31 14:05:09 UTC`.
pub(crate) fn when(t: Option<OffsetDateTime>) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.and_then(|t| t.to_offset(time::UtcOffset::UTC).format(&format).ok())
        .unwrap_or_else(|| "—".to_owned())
}

/// What every page shows around its body.
pub(crate) struct Layout<'a> {
    pub(crate) title: &'a str,
    pub(crate) theme: &'a str,
    pub(crate) user: Option<&'a str>,
    pub(crate) flash: Option<Flash>,
    pub(crate) backend: &'a str,
}

impl Layout<'_> {
    pub(crate) fn render(&self, body: &str) -> String {
        let mut html = String::with_capacity(4096 + body.len());
        let theme = if self.theme == "dark" {
            "dark"
        } else {
            "light"
        };
        let _ = write!(
            html,
            r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · scs demo</title>
<style>{STYLE}</style>
</head>
<body class="theme-{theme}">
<header>
  <a class="brand" href="/">scs demo</a>
  <nav><a href="/">Home</a> <a href="/sessions">Your sessions</a></nav>
  <span class="who">{who}</span>
</header>
<main>
"#,
            title = esc(self.title),
            who = match self.user {
                Some(u) => format!("signed in as <b>{}</b>", esc(u)),
                None => "not signed in".to_owned(),
            },
        );
        if let Some(flash) = &self.flash {
            let class = match flash.level {
                Level::Info => "info",
                Level::Error => "error",
            };
            let _ = writeln!(
                html,
                r#"<p id="flash" class="flash {class}" role="status">{}</p>"#,
                esc(&flash.text)
            );
        }
        html.push_str(body);
        let _ = write!(
            html,
            r#"
</main>
<footer>Sessions are kept in the <b id="backend">{}</b> store. The session cookie is
HttpOnly and SameSite=Lax; every change of identity renews its token.</footer>
</body>
</html>
"#,
            esc(self.backend)
        );
        html
    }
}

const STYLE: &str = r#"
:root { font-family: system-ui, sans-serif; line-height: 1.5; }
body { margin: 0; }
body.theme-light { background: #fafafa; color: #1d1d1f; }
body.theme-dark { background: #17181c; color: #e8e8ea; }
header, main, footer { max-width: 46rem; margin: 0 auto; padding: 0.75rem 1rem; }
header { display: flex; gap: 1rem; align-items: baseline; flex-wrap: wrap; }
header .brand { font-weight: 700; }
header .who { margin-left: auto; opacity: 0.8; }
a { color: #2f6fde; }
.theme-dark a { color: #8ab4ff; }
.flash { padding: 0.5rem 0.75rem; border-radius: 6px; }
.flash.info { background: #e4f4e4; color: #174d17; }
.flash.error { background: #fbe3e3; color: #6d1414; }
form.card, section.card { border: 1px solid #8884; border-radius: 8px; padding: 0.75rem 1rem; margin: 1rem 0; }
label { display: inline-block; margin-right: 1rem; }
input[type=text] { padding: 0.3rem; }
button { padding: 0.3rem 0.9rem; cursor: pointer; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; display: block; overflow-x: auto; }
th, td { text-align: left; padding: 0.3rem 0.5rem; border-bottom: 1px solid #8884; }
tr.current { font-weight: 600; }
footer { font-size: 0.85rem; opacity: 0.75; }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(esc(r#"<b a="x">&'"#), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn layout_escapes_the_user_and_flash() {
        let html = Layout {
            title: "Home",
            theme: "dark\" onload=\"x",
            user: Some("<script>"),
            flash: Some(Flash::info("<i>hi</i>")),
            backend: "memory",
        }
        .render("<p>body</p>");
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("&lt;i&gt;hi&lt;/i&gt;"));
        assert!(html.contains(r#"class="theme-light""#));
        assert!(!html.contains("<script>"));
    }
}
