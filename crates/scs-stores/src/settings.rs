//! The whole manager configuration (store URL included) from a file or the environment.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use figment::Figment;
use figment::providers::{Env, Format, Json, Toml};
use scs::{SessionConfig, SessionManager};
use scs_core::{CtxStore, Error, ErrorKind, Result};
use serde::Deserialize;

use crate::{OpenOptions, redact};

/// The environment variable naming a settings file for [`SessionSettings::from_env`].
pub const CONFIG_FILE_VAR: &str = "SCS_CONFIG";

/// The prefix of the settings' environment variables.
pub const ENV_PREFIX: &str = "SCS_";

/// The store URL of [`SessionSettings::default`].
pub const DEFAULT_STORE: &str = "memory://";

/// Top-level keys read from `SCS_*` variables; other `SCS_*` variables (test settings,
/// server URLs) are not settings and are left alone.
const ENV_KEYS: &[&str] = &[
    "store",
    "migrate",
    "lifetime",
    "idle_timeout",
    "cookie",
    "hash_token_in_store",
    "codec",
    "token_transport",
    "store_timeout",
    "max_session_bytes",
];

/// Everything a [`SessionManager`] needs, the store included, as one serde value: the store
/// URL, whether to create the store's schema, and every [`SessionConfig`] setting at the
/// top level.
///
/// Unknown keys are errors, so a typo in a file does not pass silently.
///
/// A TOML file:
/// ```toml
/// store = "postgres://app@db.internal/app"
/// migrate = true            # create the table at startup (the default)
/// lifetime = "12h"
/// idle_timeout = "30m"
///
/// [cookie]
/// name = "sid"
/// secure = true
/// same_site = "strict"
/// ```
///
/// The same from the environment (`__` separates nested keys):
/// ```sh
/// SCS_STORE=postgres://app@db.internal/app SCS_LIFETIME=12h SCS_IDLE_TIMEOUT=30m \
/// SCS_COOKIE__NAME=sid SCS_COOKIE__SECURE=true SCS_COOKIE__SAME_SITE=strict ./app
/// ```
///
/// ```
/// # #[tokio::main] async fn main() -> scs_core::Result<()> {
/// use scs_stores::SessionSettings;
///
/// let settings: SessionSettings = serde_json::from_str(r#"{
///     "store": "memory://",
///     "lifetime": "2h",
///     "cookie": { "name": "sid" }
/// }"#).unwrap();
/// let manager = settings.build().await?;
/// assert_eq!(manager.config().cookie.name, "sid");
/// assert_eq!(manager.store().backend(), "memory");
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSettings")]
#[non_exhaustive]
pub struct SessionSettings {
    /// The store URL (see [`open`](crate::open)). Default `memory://`.
    pub store: String,
    /// Create the store's schema (table, collection, bucket) when opening it. Default true.
    pub migrate: bool,
    /// Every manager setting (lifetime, idle timeout, cookie, codec, ...), at the top level
    /// of the serialized form.
    pub session: SessionConfig,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            store: DEFAULT_STORE.to_owned(),
            migrate: true,
            session: SessionConfig::default(),
        }
    }
}

impl fmt::Debug for SessionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionSettings")
            .field("store", &redact(&self.store))
            .field("migrate", &self.migrate)
            .field("session", &self.session)
            .finish()
    }
}

/// The serialized shape: `store` and `migrate` beside the flattened manager settings.
#[derive(Deserialize)]
struct RawSettings {
    #[serde(default)]
    store: Option<String>,
    #[serde(default)]
    migrate: Option<bool>,
    /// Kept as a map and decoded on its own, so `SessionConfig`'s `deny_unknown_fields`
    /// still catches typos (serde ignores it on a flattened struct).
    #[serde(flatten)]
    session: serde_json::Map<String, serde_json::Value>,
}

impl TryFrom<RawSettings> for SessionSettings {
    type Error = String;

    fn try_from(raw: RawSettings) -> Result<Self, String> {
        // The path names the bad key (`cookie.same_site: unknown variant ...`).
        let session: SessionConfig = serde_path_to_error::deserialize(serde_json::Value::Object(
            raw.session,
        ))
        .map_err(|e| match e.path().to_string() {
            path if path == "." => e.into_inner().to_string(),
            path => format!("{path}: {}", e.into_inner()),
        })?;
        Ok(Self {
            store: raw.store.unwrap_or_else(|| DEFAULT_STORE.to_owned()),
            migrate: raw.migrate.unwrap_or(true),
            session,
        })
    }
}

impl SessionSettings {
    /// Settings with the defaults over the store at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            store: url.into(),
            ..Self::default()
        }
    }

    /// The `SCS_*` environment variables as a figment provider: `SCS_STORE`,
    /// `SCS_MIGRATE`, `SCS_LIFETIME`, `SCS_IDLE_TIMEOUT`, `SCS_COOKIE__NAME`,
    /// `SCS_COOKIE__SECURE`, ... (`__` for nesting). Variables that name no setting
    /// (`SCS_CONFIG`, `SCS_REQUIRE_BACKENDS`, ...) are ignored.
    pub fn env() -> Env {
        Env::prefixed(ENV_PREFIX)
            .filter(|key| {
                // Keys come in as written; figment lowercases them later.
                let key = key.as_str().to_ascii_lowercase();
                let top = key.split("__").next().unwrap_or_default();
                ENV_KEYS.contains(&top)
            })
            .split("__")
    }

    /// A figment provider for a settings file: TOML (`.toml`) or JSON (`.json`). The
    /// file must exist.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for another extension.
    pub fn file(path: impl AsRef<Path>) -> Result<Figment> {
        let path = path.as_ref();
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("toml") => {
                Ok(Figment::from(Toml::file_exact(path)))
            }
            Some(ext) if ext.eq_ignore_ascii_case("json") => {
                Ok(Figment::from(Json::file_exact(path)))
            }
            _ => Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the settings file {} must end in .toml or .json",
                    path.display()
                ),
            )),
        }
    }

    /// The usual sources, later ones winning: the file named by `SCS_CONFIG` (if set),
    /// then the `SCS_*` environment variables. Merge it over your own defaults:
    ///
    /// ```no_run
    /// # fn f() -> scs_core::Result<()> {
    /// use scs_stores::SessionSettings;
    /// use scs_stores::figment::{Figment, providers::Serialized};
    ///
    /// let figment = Figment::new()
    ///     .merge(Serialized::default("store", "sqlite://app-sessions.db"))
    ///     .merge(Serialized::default("cookie.persist", false))
    ///     .merge(SessionSettings::figment()?);
    /// let settings = SessionSettings::from_figment(&figment)?;
    /// # let _ = settings; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`file`](Self::file) for the `SCS_CONFIG` file.
    pub fn figment() -> Result<Figment> {
        let mut figment = Figment::new();
        if let Some(path) = std::env::var_os(CONFIG_FILE_VAR).filter(|p| !p.is_empty()) {
            figment = figment.merge(Self::file(path)?);
        }
        Ok(figment.merge(Self::env()))
    }

    /// Settings from the file named by `SCS_CONFIG` (if set) and the `SCS_*` environment
    /// variables over the defaults.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] naming the bad value and where it came from.
    pub fn from_env() -> Result<Self> {
        Self::from_figment(&Self::figment()?)
    }

    /// Settings from a TOML or JSON file over the defaults (the environment is not read).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a missing or unreadable file or a bad value.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_figment(&Self::file(path)?)
    }

    /// Settings from any figment (your own sources and defaults).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] naming the bad value and where it came from.
    pub fn from_figment(figment: &Figment) -> Result<Self> {
        figment.extract().map_err(|e| {
            Error::new(ErrorKind::Config, "reading the session settings").with_source(e)
        })
    }

    /// Opens the store ([`OpenOptions`] with this `migrate`).
    ///
    /// # Errors
    /// As [`open`](crate::open).
    pub async fn open_store(&self) -> Result<Arc<dyn CtxStore>> {
        OpenOptions::new()
            .migrate(self.migrate)
            .open(&self.store)
            .await
    }

    /// Opens the store and builds the manager.
    ///
    /// # Errors
    /// As [`open`](crate::open), or [`ErrorKind::Config`] for a setting that cannot be
    /// right (an invalid cookie name, a zero lifetime, ...).
    pub async fn build(&self) -> Result<SessionManager> {
        let store = self.open_store().await?;
        SessionManager::from_config(store, self.session.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use figment::Jail;
    use figment::providers::Serialized;

    use super::*;

    #[test]
    fn defaults() {
        let s: SessionSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(s, SessionSettings::default());
        assert_eq!(s.store, "memory://");
        assert!(s.migrate);
    }

    #[test]
    fn typos_are_errors() {
        let e = serde_json::from_str::<SessionSettings>(r#"{"lifetme": "1h"}"#).unwrap_err();
        assert!(e.to_string().contains("lifetme"), "{e}");
        let e = serde_json::from_str::<SessionSettings>(r#"{"stor": "memory://"}"#).unwrap_err();
        assert!(e.to_string().contains("stor"), "{e}");
    }

    #[test]
    fn debug_hides_the_password() {
        let s = SessionSettings::new("postgres://app:hunter2@db/app");
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("app:***@db"), "{debug}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail decides the closure's error type
    fn files_and_environment() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "scs.toml",
                r#"
                store = "sqlite://from-file.db"
                lifetime = "2h"
                [cookie]
                name = "sid"
                secure = true
                "#,
            )?;
            jail.create_file("scs.json", r#"{"store": "memory://", "codec": "json"}"#)?;

            let s = SessionSettings::from_file("scs.toml").map_err(|e| e.to_string())?;
            assert_eq!(s.store, "sqlite://from-file.db");
            assert_eq!(s.session.lifetime, Duration::from_secs(7200));
            assert_eq!(s.session.cookie.name, "sid");
            assert!(s.session.cookie.secure && s.session.cookie.http_only);

            let s = SessionSettings::from_file("scs.json").map_err(|e| e.to_string())?;
            assert_eq!(s.session.codec, scs::CodecKind::Json);

            assert!(SessionSettings::from_file("missing.toml").is_err());
            assert!(SessionSettings::from_file("scs.yaml").is_err());

            // The environment wins over the file; unrelated SCS_* variables are ignored.
            jail.set_env("SCS_CONFIG", "scs.toml");
            jail.set_env("SCS_LIFETIME", "30m");
            jail.set_env("SCS_COOKIE__SAME_SITE", "strict");
            jail.set_env("SCS_REQUIRE_BACKENDS", "1");
            jail.set_env("SCS_POSTGRES_URL", "postgres://x");
            let s = SessionSettings::from_env().map_err(|e| e.to_string())?;
            assert_eq!(s.store, "sqlite://from-file.db");
            assert_eq!(s.session.lifetime, Duration::from_secs(1800));
            assert_eq!(s.session.cookie.same_site, scs::SameSite::Strict);
            assert_eq!(s.session.cookie.name, "sid");

            jail.set_env("SCS_STORE", "redis://cache:6379");
            jail.set_env("SCS_MIGRATE", "false");
            let s = SessionSettings::from_env().map_err(|e| e.to_string())?;
            assert_eq!(s.store, "redis://cache:6379");
            assert!(!s.migrate);

            // Your own defaults go under the usual sources.
            let figment = Figment::new()
                .merge(Serialized::default("cookie.persist", false))
                .merge(Serialized::default("idle_timeout", "5m"))
                .merge(SessionSettings::figment().map_err(|e| e.to_string())?);
            let s = SessionSettings::from_figment(&figment).map_err(|e| e.to_string())?;
            assert!(!s.session.cookie.persist);
            assert_eq!(s.session.idle_timeout, Some(Duration::from_secs(300)));
            assert_eq!(s.session.cookie.same_site, scs::SameSite::Strict);

            // A bad value names itself.
            jail.set_env("SCS_LIFETIME", "forever");
            let e = SessionSettings::from_env().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config);
            let chain = format!("{e:#}");
            assert!(chain.contains("lifetime: invalid value"), "{chain}");
            Ok(())
        });
    }

    #[tokio::test]
    async fn build_checks_the_settings() {
        let mut s = SessionSettings::new("memory://");
        s.session.cookie.name = "bad name".into();
        assert_eq!(s.build().await.unwrap_err().kind(), ErrorKind::Config);
    }
}
