//! The session data model.

use time::OffsetDateTime;

use crate::Values;

/// Where a session stands within one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Status {
    /// Nothing changed: nothing is written to the store and no cookie is sent.
    #[default]
    Unmodified,
    /// Changed: committed to the store and the cookie is (re)sent.
    Modified,
    /// Destroyed: removed from the store and the cookie is deleted.
    Destroyed,
}

/// What a store keeps for a session, before encoding: the absolute deadline and the values.
#[derive(Clone, PartialEq)]
pub struct SessionData {
    /// The absolute end of the session's life, whatever the idle timeout says.
    pub deadline: OffsetDateTime,
    /// The values by key.
    pub values: Values,
}

impl SessionData {
    /// An empty session that lives until `deadline`.
    pub fn new(deadline: OffsetDateTime) -> Self {
        Self {
            deadline,
            values: Values::new(),
        }
    }
}

impl std::fmt::Debug for SessionData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys and values are user data: show only how many there are.
        f.debug_struct("SessionData")
            .field("deadline", &self.deadline)
            .field("values", &self.values.len())
            .finish()
    }
}
