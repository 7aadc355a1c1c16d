//! The audit trail: who changed what, when, from where, before and after.
//!
//! Every state change at the hub (users, keys, sites, commands, and the
//! writes of the twin, run and certificate capabilities) and every event a
//! gateway's local API reports (logins, device writes) is appended here.
//! Entries are chained: each stores the SHA-256 of the previous entry's hash
//! and its own fields ([`chain`]), so an edited, inserted or deleted row is
//! found by [`verify`](store::verify) (`cloud-hub audit verify`). The table
//! refuses UPDATE, DELETE and TRUNCATE (migration 0006).
//!
//! Rooms: `chain` (what is hashed, and how), `store` (append, query, verify;
//! the SQL of `audit_log`).

mod chain;
mod store;

pub use store::{AuditQuery, VerifyReport, append, append_in, query, verify};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Who did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A hub user (password login).
    User,
    /// A machine with an API key.
    ApiKey,
    /// A user of the configured OpenID Connect provider.
    Oidc,
    /// A local user of a gateway's API (the event came over the uplink).
    GatewayUser,
    /// A gateway itself.
    Gateway,
    /// The `cloud-hub` command line on the hub's host.
    Cli,
    /// The hub on its own (expiry, housekeeping).
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::ApiKey => "api_key",
            ActorKind::Oidc => "oidc",
            ActorKind::GatewayUser => "gateway_user",
            ActorKind::Gateway => "gateway",
            ActorKind::Cli => "cli",
            ActorKind::System => "system",
        }
    }
}

/// An entry to append. `action` is a dotted verb (`user.create`,
/// `command.create`, `gateway.login_failed`, ...), `target` what it acted on
/// (`user:alice`, `gateway:gw-1/device:meter-1`).
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub actor_kind: ActorKind,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// When it happened, if not now (a gateway's buffered event).
    pub occurred_at: Option<DateTime<Utc>>,
    pub gateway_id: Option<String>,
    pub source_addr: Option<String>,
    pub user_agent: Option<String>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

impl NewEntry {
    pub fn new(
        actor_kind: ActorKind,
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
    ) -> NewEntry {
        NewEntry {
            actor_kind,
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            occurred_at: None,
            gateway_id: None,
            source_addr: None,
            user_agent: None,
            before: None,
            after: None,
        }
    }

    /// Where the request came from.
    pub fn origin(mut self, o: &Origin) -> NewEntry {
        self.source_addr = o.addr.clone();
        self.user_agent = o.user_agent.clone();
        self
    }

    pub fn before(mut self, v: serde_json::Value) -> NewEntry {
        self.before = Some(v);
        self
    }

    pub fn after(mut self, v: serde_json::Value) -> NewEntry {
        self.after = Some(v);
        self
    }
}

/// Where a request came from: peer address and user agent (cut to 256
/// characters; it is the caller's text).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub addr: Option<String>,
    pub user_agent: Option<String>,
}

/// An entry as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub id: i64,
    pub recorded_at: DateTime<Utc>,
    pub occurred_at: DateTime<Utc>,
    pub actor_kind: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub gateway_id: Option<String>,
    pub source_addr: Option<String>,
    pub user_agent: Option<String>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    /// Hex SHA-256 of this entry, chained to the previous one.
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit trail: database error: {0}")]
    Db(#[from] sqlx::Error),
}
