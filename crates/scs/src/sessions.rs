//! The sessions of one request, one per layered manager.

use crate::{Session, SessionManager};

/// Every session loaded for a request, one per [`SessionManager`] layered on the route,
/// outermost first. With a single manager, take [`Session`] directly; with several, take
/// `Sessions` and pick by cookie name (or use [`SessionManager::session`]).
///
/// ```
/// async fn handler(sessions: scs::Sessions) -> String {
///     let admin = sessions.get("admin_session").map(|s| s.keys().len()).unwrap_or(0);
///     format!("{admin} admin keys")
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Sessions(Vec<Session>);

impl Sessions {
    pub(crate) fn one(session: Session) -> Self {
        Self(vec![session])
    }

    pub(crate) fn push(&mut self, session: Session) {
        self.0.push(session);
    }

    /// The session of the manager whose cookie is named `cookie_name`.
    pub fn get(&self, cookie_name: &str) -> Option<&Session> {
        self.0
            .iter()
            .find(|s| s.manager().config().cookie.name == cookie_name)
    }

    /// The session of `manager`.
    pub fn of(&self, manager: &SessionManager) -> Option<&Session> {
        self.iter().find(|s| s.manager().same_as(manager))
    }

    /// Every session, outermost layer first.
    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.0.iter()
    }

    /// How many sessions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
