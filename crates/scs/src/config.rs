//! Manager settings: every knob of Go's scs, with the same defaults, loadable through serde.

use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;

use crate::{Error, ErrorKind, Result};

/// The `SameSite` attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    /// `SameSite=Lax` (the default): sent on top-level navigations, not on cross-site
    /// subrequests. Blocks most CSRF.
    #[default]
    Lax,
    /// `SameSite=Strict`: never sent cross-site.
    Strict,
    /// `SameSite=None`: sent everywhere (browsers require `Secure` with it).
    None,
    /// No `SameSite` attribute: the browser's default applies.
    Omit,
}

/// The session cookie's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CookieConfig {
    /// Cookie name. Default `session`. Give each manager its own.
    pub name: String,
    /// `Domain` attribute. Default none (host-only cookie).
    pub domain: Option<String>,
    /// `Path` attribute. Default `/`.
    pub path: String,
    /// `HttpOnly`: invisible to JavaScript. Default true.
    pub http_only: bool,
    /// `Secure`: HTTPS only. Default false (turn on in production behind TLS).
    pub secure: bool,
    /// `SameSite`. Default `Lax`.
    pub same_site: SameSite,
    /// `Partitioned` (CHIPS). Default false.
    pub partitioned: bool,
    /// Send `Expires` and `Max-Age`, so the cookie outlives the browser session.
    /// Default true. With false the cookie is a browser-session cookie unless the session
    /// asked for [`remember_me`](crate::Session::remember_me).
    pub persist: bool,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            name: "session".to_owned(),
            domain: None,
            path: "/".to_owned(),
            http_only: true,
            secure: false,
            same_site: SameSite::Lax,
            partitioned: false,
            persist: true,
        }
    }
}

/// How the session token travels between client and server.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenTransport {
    /// In the session cookie (the default, for browsers).
    #[default]
    Cookie,
    /// In a request and response header (for APIs and mobile clients), e.g.
    /// `X-Session-Token`. The server answers a new or renewed token in the same header, and
    /// an empty value when the session is destroyed.
    Header(String),
    /// Either: the cookie is read first, then the header; both are written.
    Both(String),
}

impl TokenTransport {
    pub(crate) fn header(&self) -> Result<Option<HeaderName>> {
        match self {
            Self::Cookie => Ok(None),
            Self::Header(name) | Self::Both(name) => {
                HeaderName::try_from(name.as_str()).map(Some).map_err(|e| {
                    Error::new(
                        ErrorKind::Config,
                        format!("invalid token header name {name:?}"),
                    )
                    .with_source(e)
                })
            }
        }
    }

    pub(crate) fn uses_cookie(&self) -> bool {
        matches!(self, Self::Cookie | Self::Both(_))
    }
}

/// Which built-in codec encodes sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecKind {
    /// MessagePack (the default).
    #[default]
    MsgPack,
    /// JSON.
    Json,
}

/// Every setting of a [`SessionManager`](crate::SessionManager), with scs's defaults.
/// Deserializable (durations in human form: `"24h"`, `"30m"`), so it can come from a
/// config file or the environment.
///
/// ```
/// let config: scs::SessionConfig = serde_json::from_str(r#"{
///     "lifetime": "12h",
///     "idle_timeout": "20m",
///     "cookie": { "name": "sid", "secure": true, "same_site": "strict" }
/// }"#).unwrap();
/// assert_eq!(config.lifetime, std::time::Duration::from_secs(12 * 3600));
/// assert_eq!(config.cookie.name, "sid");
/// assert!(config.cookie.http_only); // defaults fill the rest
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Absolute lifetime from creation, whatever the activity. Default 24 hours. Reset by
    /// `destroy` and `renew_token`.
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// Sliding inactivity limit. Default none. The store expiry is
    /// `min(deadline, now + idle_timeout)`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// The cookie's attributes.
    pub cookie: CookieConfig,
    /// Store `base64url(SHA-256(token))` rather than the token. Default true.
    pub hash_token_in_store: bool,
    /// The codec. Default MessagePack.
    pub codec: CodecKind,
    /// Cookie, header, or both. Default cookie.
    pub token_transport: TokenTransport,
    /// Longest a store call may take before the request fails with a timeout.
    /// Default 5 seconds.
    #[serde(with = "humantime_serde")]
    pub store_timeout: Duration,
    /// Largest encoded session accepted at commit, in bytes. Default 1 MiB.
    pub max_session_bytes: usize,
    /// With an idle timeout: the least the store expiry must move before it is written
    /// again, so that a read-heavy site does not write on every request. Default: a tenth
    /// of the idle timeout. Applies to stores that report expiries (versioned stores);
    /// others are touched on every request.
    #[serde(with = "humantime_serde")]
    pub touch_interval: Option<Duration>,
    /// How long a token replaced by `renew_token` keeps leading to the renewed session, so
    /// that requests already in flight with it (parallel API calls, other tabs) neither
    /// lose their changes nor start an unrelated session. Default zero (off): during the
    /// grace period the old token reaches the renewed session, so whoever holds it (for
    /// instance an attacker who planted it before a login) does too. Keep it to seconds.
    #[serde(with = "humantime_serde")]
    pub renew_grace: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(24 * 60 * 60),
            idle_timeout: None,
            cookie: CookieConfig::default(),
            hash_token_in_store: true,
            codec: CodecKind::MsgPack,
            token_transport: TokenTransport::Cookie,
            store_timeout: Duration::from_secs(5),
            max_session_bytes: 1024 * 1024,
            touch_interval: None,
            renew_grace: Duration::ZERO,
        }
    }
}

impl SessionConfig {
    /// Checks the settings that cannot be right.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::new(ErrorKind::Config, what));
        if self.lifetime.is_zero() {
            return bad("the session lifetime must be above zero".into());
        }
        if self.idle_timeout.is_some_and(|d| d.is_zero()) {
            return bad("the idle timeout must be above zero (or unset)".into());
        }
        if self.store_timeout.is_zero() {
            return bad("the store timeout must be above zero".into());
        }
        let name = &self.cookie.name;
        // RFC 6265 cookie-name is an RFC 7230 token.
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return bad(format!("invalid cookie name {name:?}"));
        }
        let attr_ok = |v: &str| v.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';');
        if !attr_ok(&self.cookie.path) || self.cookie.path.is_empty() {
            return bad(format!("invalid cookie path {:?}", self.cookie.path));
        }
        if let Some(domain) = &self.cookie.domain
            && (domain.is_empty() || !attr_ok(domain))
        {
            return bad(format!("invalid cookie domain {domain:?}"));
        }
        self.token_transport.header()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_scs_defaults() {
        let c = SessionConfig::default();
        assert_eq!(c.lifetime, Duration::from_secs(86400));
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.cookie.name, "session");
        assert_eq!(c.cookie.path, "/");
        assert!(c.cookie.http_only && !c.cookie.secure && c.cookie.persist);
        assert_eq!(c.cookie.same_site, SameSite::Lax);
        assert!(c.hash_token_in_store);
        c.validate().unwrap();
    }

    #[test]
    fn rejects_bad_settings() {
        let mut c = SessionConfig::default();
        c.cookie.name = "bad name".into();
        assert_eq!(c.validate().unwrap_err().kind(), ErrorKind::Config);
        let mut c = SessionConfig::default();
        c.cookie.path = "/; Secure".into();
        assert!(c.validate().is_err());
        let c = SessionConfig {
            lifetime: Duration::ZERO,
            ..Default::default()
        };
        assert!(c.validate().is_err());
        let c = SessionConfig {
            token_transport: TokenTransport::Header("bad header\n".into()),
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn deserializes_transport_and_codec() {
        let c: SessionConfig = serde_json::from_str(
            r#"{"token_transport": {"header": "X-Session-Token"}, "codec": "json", "idle_timeout": "15m"}"#,
        )
        .unwrap();
        assert_eq!(
            c.token_transport,
            TokenTransport::Header("X-Session-Token".into())
        );
        assert_eq!(c.codec, CodecKind::Json);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(900)));
        assert!(serde_json::from_str::<SessionConfig>(r#"{"lifetme": "1h"}"#).is_err());
    }
}
