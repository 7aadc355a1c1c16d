//! The events the lab's systems receive and the outbox write: one stable
//! JSON envelope (`id`, `type`, `occurred_at`, `subject`, `data`), stored as
//! the bytes every attempt sends, with one delivery per enabled
//! subscription that asked for its type, in the caller's transaction.

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;

/// Version of the envelope's shape; a change that breaks receivers bumps it.
pub const ENVELOPE_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A run's evaluation was stored (the LIMS's results).
    RunEvaluated,
    /// An engineer approved or rejected a provisional verdict.
    RunDecided,
    /// A service request moved to another state (the LIMS's status).
    ServiceRequestStateChanged,
    CertificateIssued,
    /// Revoked, or superseded by a corrected certificate (`data.state`).
    CertificateRevoked,
    /// A run's standing verdict turned fail (the QMS's non-conformance).
    NonconformanceRaised,
    /// A non-conformance was closed with a comment.
    NonconformanceClosed,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        EventType::RunEvaluated,
        EventType::RunDecided,
        EventType::ServiceRequestStateChanged,
        EventType::CertificateIssued,
        EventType::CertificateRevoked,
        EventType::NonconformanceRaised,
        EventType::NonconformanceClosed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::RunEvaluated => "run.evaluated",
            EventType::RunDecided => "run.decided",
            EventType::ServiceRequestStateChanged => "service_request.state_changed",
            EventType::CertificateIssued => "certificate.issued",
            EventType::CertificateRevoked => "certificate.revoked",
            EventType::NonconformanceRaised => "nonconformance.raised",
            EventType::NonconformanceClosed => "nonconformance.closed",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A random (version 4) UUID, lowercase and hyphenated.
pub(crate) fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    // The system's generator failing is not something to go on without.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        panic!("the operating system's random number generator failed");
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The envelope of an event.
pub fn envelope(id: &str, t: EventType, occurred_at: &str, subject: Value, data: Value) -> Value {
    json!({
        "id": id,
        "type": t.as_str(),
        "version": ENVELOPE_VERSION,
        "occurred_at": occurred_at,
        "subject": subject,
        "data": data,
    })
}

/// Writes the event and its deliveries in the caller's transaction: they
/// exist exactly when the change that caused them is committed. Returns the
/// event id (the deliveries' `Idempotency-Key`).
pub async fn enqueue(
    conn: &mut PgConnection,
    t: EventType,
    subject: Value,
    data: Value,
) -> Result<String, sqlx::Error> {
    let id = uuid_v4();
    let now = Utc::now();
    let body = envelope(
        &id,
        t,
        &now.to_rfc3339_opts(SecondsFormat::Millis, true),
        subject,
        data,
    )
    .to_string();
    sqlx::query(
        "INSERT INTO webhook_events (event_id, event_type, occurred_at, body)
         VALUES ($1::uuid, $2, $3, $4)",
    )
    .bind(&id)
    .bind(t.as_str())
    .bind(now)
    .bind(&body)
    .execute(&mut *conn)
    .await?;
    let n = sqlx::query(
        "INSERT INTO webhook_deliveries (event_id, subscription_id)
         SELECT $1::uuid, subscription_id FROM webhook_subscriptions
          WHERE enabled AND $2 = ANY (event_types)",
    )
    .bind(&id)
    .bind(t.as_str())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    tracing::debug!(event = %id, r#type = t.as_str(), deliveries = n, "webhook event queued");
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip_and_ids_are_v4_uuids() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("run.exploded"), None);
        let a = uuid_v4();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert_ne!(a, uuid_v4());
    }
}
