//! Sign out everywhere: sessions bound to a user, found through a per-user index kept in
//! the store itself (no scan), or by iteration where the store cannot keep one.

use scs_core::time::OffsetDateTime;
use scs_core::{Context, Result, Value, token};

use crate::{Session, SessionManager};

/// Internal value key holding the user a session belongs to.
pub(crate) const USER_KEY: &str = "__scs.user";

/// Bytes an index entry starts with; no codec output starts with a zero byte.
pub(crate) const INDEX_MARK: &[u8] = b"\0scs:index\0";

/// Store key of a user's index entry: never a session key (those are exactly 43
/// characters of base64url), and only characters every store accepts in a key.
fn index_key(user: &str) -> String {
    format!("scs-user-{}", token::store_key(user, true))
}

fn parse_index(data: &[u8]) -> Vec<String> {
    data.strip_prefix(INDEX_MARK)
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .map(|s| {
            s.split('\n')
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn index_bytes(keys: &[String]) -> Vec<u8> {
    let mut out = INDEX_MARK.to_vec();
    out.extend_from_slice(keys.join("\n").as_bytes());
    out
}

/// One live session of a user, as [`SessionManager::user_sessions`] lists it.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserSession {
    /// The session's store key: an opaque id for [`SessionManager::revoke_session`]
    /// (never the token).
    pub id: String,
    /// The session's absolute deadline.
    pub deadline: OffsetDateTime,
}

impl std::fmt::Debug for UserSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSession")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Binds this session to `user` (at login), so that
    /// [`SessionManager::user_sessions`] and [`SessionManager::revoke_user`] find it.
    /// Marks the session modified.
    ///
    /// # Errors
    /// Never in practice (a string always encodes).
    pub fn set_user(&self, user: &str) -> Result<()> {
        let value = Value::from_serialize(user)?;
        let mut state = self.inner.state.lock();
        state.set(USER_KEY.to_owned(), value);
        state.status = scs_core::Status::Modified;
        Ok(())
    }

    /// The user this session is bound to, if any.
    pub fn user(&self) -> Option<String> {
        let state = self.inner.state.lock();
        state.data.values.get(USER_KEY).and_then(|v| v.to().ok())
    }

    /// This session's id as [`UserSession::id`] shows it (its store key); `None` before
    /// the first commit.
    pub fn id(&self) -> Option<String> {
        let key = self.inner.state.lock().key;
        key.map(|k| k.as_str().to_owned())
    }
}

impl SessionManager {
    /// Every live session bound to `user` (see [`Session::set_user`]). With a versioned
    /// store this reads the user's index entry and each of their sessions, never
    /// scanning; otherwise it iterates the store.
    ///
    /// # Errors
    /// The store's or codec's error; [`ErrorKind::Unsupported`](crate::ErrorKind) when
    /// the store can neither keep an index nor iterate.
    pub async fn user_sessions(&self, user: &str) -> Result<Vec<UserSession>> {
        let ctx = Context::new();
        let mut out = Vec::new();
        if self.versioned() {
            let Some(index) = self.find_raw_record(&ctx, &index_key(user)).await? else {
                return Ok(out);
            };
            for key in parse_index(&index.data) {
                let Some(rec) = self.find_raw_record(&ctx, &key).await? else {
                    continue;
                };
                let Ok(data) = self.codec().decode(&rec.data) else {
                    continue;
                };
                let owner = data
                    .values
                    .get(USER_KEY)
                    .and_then(|v| v.to::<String>().ok());
                if owner.as_deref() == Some(user) {
                    out.push(UserSession {
                        id: key,
                        deadline: data.deadline,
                    });
                }
            }
            return Ok(out);
        }
        let mut found = Vec::new();
        self.iterate(|s| {
            if s.user().as_deref() == Some(user)
                && let Some(id) = s.id()
            {
                found.push(UserSession {
                    id,
                    deadline: s.deadline(),
                });
            }
            async { Ok(()) }
        })
        .await?;
        out.append(&mut found);
        Ok(out)
    }

    /// Signs `user` out everywhere: deletes every session bound to them except `keep`
    /// (usually the current one). Returns how many went.
    ///
    /// # Errors
    /// The store's error; sessions deleted before it stay deleted.
    pub async fn revoke_user(&self, user: &str, keep: Option<&Session>) -> Result<usize> {
        let keep = keep.and_then(Session::id);
        let ctx = Context::new();
        let mut revoked = 0;
        for s in self.user_sessions(user).await? {
            if Some(&s.id) != keep.as_ref() {
                self.store_delete(&ctx, &s.id).await?;
                revoked += 1;
            }
        }
        if self.versioned() {
            let ikey = index_key(user);
            match &keep {
                Some(k) => {
                    let until = OffsetDateTime::now_utc() + self.config().lifetime;
                    self.store_commit_raw(
                        &ctx,
                        &ikey,
                        &index_bytes(std::slice::from_ref(k)),
                        until,
                    )
                    .await?;
                }
                None => self.store_delete(&ctx, &ikey).await?,
            }
        }
        Ok(revoked)
    }

    /// Deletes one session by its id (from [`user_sessions`](Self::user_sessions)).
    ///
    /// # Errors
    /// The store's error.
    pub async fn revoke_session(&self, id: &str) -> Result<()> {
        self.store_delete(&Context::new(), id).await
    }

    /// After a commit of a session bound to a user under a key the index may not hold
    /// yet (new or renewed): adds the key to the user's index, by compare-and-set.
    pub(crate) async fn index_session(
        &self,
        ctx: &Context,
        user: &str,
        key: &str,
        expiry: OffsetDateTime,
    ) -> Result<()> {
        let ikey = index_key(user);
        for _ in 0..8 {
            let current = self.find_raw_record(ctx, &ikey).await?;
            let (mut keys, version, old_expiry) = match &current {
                Some(r) => (parse_index(&r.data), Some(r.version), Some(r.expiry)),
                None => (Vec::new(), None, None),
            };
            if keys.iter().any(|k| k == key) {
                return Ok(());
            }
            // Drop keys of sessions that are gone, so the index stays small.
            let mut live = Vec::with_capacity(keys.len() + 1);
            for k in keys.drain(..) {
                if self.find_raw_record(ctx, &k).await?.is_some() {
                    live.push(k);
                }
            }
            live.push(key.to_owned());
            let until = old_expiry.map_or(expiry, |e| e.max(expiry));
            if self
                .commit_raw_if(ctx, &ikey, &index_bytes(&live), until, version)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(scs_core::Error::new(
            scs_core::ErrorKind::Conflict,
            "the user's session index kept changing",
        ))
    }
}

/// True for index entries (skipped by iteration).
pub(crate) fn is_index(data: &[u8]) -> bool {
    data.starts_with(INDEX_MARK)
}
