//! The local audit trail: logins, logouts and device writes become events
//! in the durable buffer (high lane), which the uplink delivers to the hub's
//! audit trail exactly once, like readings, across outages and restarts.

use crate::buffer::{Buffer, NewEvent};
use axum::http::{HeaderMap, header};
use std::net::SocketAddr;

/// Longest User-Agent kept; the rest is cut (the header is the client's to fill).
const MAX_USER_AGENT: usize = 256;

/// Where a request came from, as the audit trail records it.
pub(super) struct Origin {
    pub address: String,
    pub user_agent: String,
}

impl Origin {
    pub fn of(peer: SocketAddr, headers: &HeaderMap) -> Origin {
        let user_agent = headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_USER_AGENT)
            .collect();
        Origin {
            address: peer.ip().to_string(),
            user_agent,
        }
    }
}

/// One event to record.
pub(super) struct Event<'a> {
    pub actor: &'a str,
    pub action: &'static str,
    pub target: String,
    pub outcome: &'a str,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// Makes the event durable. A failure is counted and logged: the action it
/// describes has already happened or been refused, and the log keeps a trace.
pub(super) async fn record(buffer: &Buffer, origin: &Origin, e: Event<'_>) {
    let json = |v: Option<serde_json::Value>| v.map(|v| v.to_string()).unwrap_or_default();
    let event = NewEvent {
        timestamp_us: chrono::Utc::now().timestamp_micros(),
        actor: e.actor.to_string(),
        action: e.action.to_string(),
        target: e.target.clone(),
        outcome: e.outcome.to_string(),
        source_address: origin.address.clone(),
        user_agent: origin.user_agent.clone(),
        before_json: json(e.before),
        after_json: json(e.after),
    };
    match buffer.append_events(&[event]).await {
        Ok((seq, _)) => {
            metrics::counter!(crate::metric_names::EDGE_AUDIT_EVENTS_TOTAL, "action" => e.action)
                .increment(1);
            tracing::info!(seq, actor = e.actor, action = e.action, target = %e.target,
                outcome = e.outcome, from = %origin.address, "audit event buffered for the hub");
        }
        Err(err) => {
            metrics::counter!(crate::metric_names::EDGE_AUDIT_ERRORS_TOTAL).increment(1);
            tracing::error!(error = %err, actor = e.actor, action = e.action, target = %e.target,
                outcome = e.outcome, from = %origin.address, "cannot buffer an audit event; it will not reach the hub");
        }
    }
}
