//! A gateway's audit events (its local API's logins, logouts and device
//! writes, carried in `ReadingBatch.events`) into the hub's audit trail:
//! inside the batch's transaction, so they are stored exactly when its
//! readings are, and once per (gateway, seq), so a redelivered batch adds
//! nothing. The ingest validated them (`ingest::validate_events`).

use super::StoreError;
use crate::audit::{ActorKind, AuditError, NewEntry};
use qi_proto::v1::AuditEvent;
use sqlx::PgConnection;

/// The audit entry for one event, as the hub's trail names things: actions
/// `gateway.<action>`, targets under `gateway:<id>/`.
pub fn entry(gateway: &str, e: &AuditEvent) -> NewEntry {
    let json = |s: &str| {
        (!s.is_empty())
            .then(|| serde_json::from_str(s).ok())
            .flatten()
    };
    let mut n = NewEntry::new(
        ActorKind::GatewayUser,
        e.actor.clone(),
        format!("gateway.{}", e.action),
        format!("gateway:{gateway}/{}", e.target),
    );
    n.occurred_at = chrono::DateTime::from_timestamp_micros(e.timestamp_us);
    n.gateway_id = Some(gateway.to_string());
    n.source_addr = (!e.source_address.is_empty()).then(|| e.source_address.clone());
    n.user_agent = (!e.user_agent.is_empty()).then(|| e.user_agent.clone());
    n.before = json(&e.before_json);
    n.after = json(&e.after_json);
    n
}

/// Appends the events not yet recorded; returns how many were new.
pub(super) async fn record(
    conn: &mut PgConnection,
    gateway: &str,
    events: &[AuditEvent],
) -> Result<u64, StoreError> {
    let mut new = 0;
    for e in events {
        let seq = i64::try_from(e.seq).unwrap_or(i64::MAX);
        // Claims the (gateway, seq) first: a concurrent transaction holding
        // the same event (a resend racing the original) waits here, then
        // finds it taken.
        let claimed: Option<i64> = sqlx::query_scalar(
            "INSERT INTO gateway_audit_events (gateway_id, seq, audit_id) VALUES ($1, $2, 0)
             ON CONFLICT DO NOTHING RETURNING seq",
        )
        .bind(gateway)
        .bind(seq)
        .fetch_optional(&mut *conn)
        .await?;
        if claimed.is_none() {
            continue;
        }
        let stored = crate::audit::append_in(&mut *conn, entry(gateway, e))
            .await
            .map_err(|AuditError::Db(e)| StoreError::Db(e))?;
        sqlx::query(
            "UPDATE gateway_audit_events SET audit_id = $3 WHERE gateway_id = $1 AND seq = $2",
        )
        .bind(gateway)
        .bind(seq)
        .bind(stored.id)
        .execute(&mut *conn)
        .await?;
        new += 1;
    }
    Ok(new)
}
