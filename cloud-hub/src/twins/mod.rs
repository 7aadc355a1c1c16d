//! The twin registry: the assets central operations think in (sites,
//! areas, benches, gateways, instruments, samples), their types, the dated
//! graph between them and their live state.
//!
//! Rooms: `model` (kinds, relation kinds, the checks every write passes),
//! `store` (twins: create, read, change, soft delete, each audited in its
//! transaction), `types` (twin types), `graph` (relations, ancestors,
//! subtrees, as of a time), `search` (filtered, sorted, paged listings and
//! location queries), `state` (reported state and links to history).
//! The schema and the SQL functions they share are in migration 0008.

pub mod graph;
pub mod model;
pub mod search;
pub mod state;
pub mod store;
pub mod types;

use crate::audit::{AuditError, Origin};
use crate::identity::Principal;

/// Who writes, for the audit trail.
pub struct Actor<'a> {
    pub principal: &'a Principal,
    pub origin: &'a Origin,
}

impl Actor<'_> {
    pub fn entry(
        &self,
        action: &str,
        target: impl Into<String>,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> crate::audit::NewEntry {
        let mut e =
            crate::audit::NewEntry::new(self.principal.kind, &self.principal.id, action, target)
                .origin(self.origin);
        e.before = before;
        e.after = after;
        e
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TwinError {
    #[error(transparent)]
    Invalid(#[from] model::Invalid),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Optimistic concurrency: the caller wrote on top of an older version.
    #[error(
        "{what} is at version {current}; the request was for version {expected}: read it again and retry"
    )]
    Stale {
        what: String,
        current: i64,
        expected: i64,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// The audit trail's name for a twin.
pub fn audit_target(id: &str) -> String {
    format!("twin:{id}")
}

/// Maps a unique violation to a conflict with a message that says which.
pub(crate) fn unique_conflict(e: sqlx::Error, what: impl FnOnce(&str) -> String) -> TwinError {
    if let sqlx::Error::Database(d) = &e
        && d.code().as_deref() == Some("23505")
    {
        return TwinError::Conflict(what(d.constraint().unwrap_or("")));
    }
    TwinError::Db(e)
}
