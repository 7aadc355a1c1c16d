//! Outbound webhooks to the lab's systems (issue #15): a LIMS subscribes to
//! results and status, a QMS to non-conformances. Durable by construction:
//! the change that causes an event (an evaluation stored, a service request
//! moved, a certificate issued or revoked) writes the event and one
//! delivery per matching subscription in its own transaction (the outbox),
//! and one worker POSTs them, signed, retrying with backoff until a 2xx or
//! the last attempt, after which the delivery is a dead letter an admin may
//! replay. A receiver that is slow or failing never holds up the change.
//! docs/webhooks.md is the user's side of it.
//!
//! Rooms: `signature` (the HMAC scheme, shared with alarm notifications),
//! `events` (the envelope and the outbox write), `subscriptions` (what an
//! admin registers, the URL rules against SSRF), `target` (resolving and
//! checking addresses at connection time), `worker` (the delivery loop),
//! `dead_letters` (listing and replay). The schema is migration 0016.

pub mod dead_letters;
pub mod events;
pub mod signature;
pub mod subscriptions;
pub mod target;
pub mod worker;

pub use events::{EventType, enqueue};

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Invalid(String),
    /// A well-formed URL the hub will not send to (scheme, a non-public or
    /// unresolvable target): refused by policy, not by form.
    #[error("{0}")]
    Target(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

impl WebhookError {
    /// The label of `hub_webhooks_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            WebhookError::Invalid(_) => "invalid",
            WebhookError::Target(_) => "target",
            WebhookError::NotFound(_) => "not_found",
            WebhookError::Conflict(_) => "conflict",
            WebhookError::Db(_) | WebhookError::Audit(_) => "storage",
        }
    }
}
