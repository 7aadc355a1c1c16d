//! Dead letters: deliveries that spent every attempt. An admin reads why
//! (the last status or error) and, once the receiver is fixed, replays one:
//! it is pending again with its attempts reset, the same event and
//! Idempotency-Key, so a receiver that did get it after all can tell.

use super::WebhookError;
use crate::audit::{NewEntry, Origin};
use crate::identity::Principal;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Delivery {
    pub delivery_id: i64,
    pub event_id: String,
    pub event_type: String,
    pub subscription_id: i64,
    pub url: String,
    pub state: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub dead_at: Option<DateTime<Utc>>,
}

const SELECT: &str = "SELECT d.delivery_id, d.event_id::text AS event_id, e.event_type,
        d.subscription_id, s.url, d.state, d.attempts, d.last_status, d.last_error, d.created_at,
        d.next_attempt_at, d.delivered_at, d.dead_at
   FROM webhook_deliveries d
   JOIN webhook_events e USING (event_id)
   JOIN webhook_subscriptions s USING (subscription_id)";

/// Dead letters in id order, after `after`.
pub async fn list(pool: &PgPool, after: i64, limit: i64) -> Result<Vec<Delivery>, WebhookError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE d.state = 'dead' AND d.delivery_id > $1 ORDER BY d.delivery_id LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Queues a dead letter again (audited).
pub async fn replay(
    pool: &PgPool,
    id: i64,
    who: &Principal,
    origin: &Origin,
) -> Result<Delivery, WebhookError> {
    let mut tx = pool.begin().await?;
    let cur: Option<Delivery> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE d.delivery_id = $1 FOR UPDATE OF d"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let cur = cur.ok_or_else(|| WebhookError::NotFound(format!("no delivery {id}")))?;
    if cur.state != "dead" {
        return Err(WebhookError::Conflict(format!(
            "delivery {id} is {}; only dead letters are replayed",
            cur.state
        )));
    }
    sqlx::query(
        "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = now(),
                dead_at = NULL WHERE delivery_id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let entry = NewEntry::new(
        who.kind,
        &who.id,
        "webhook.replay",
        format!("webhook_delivery:{id}"),
    )
    .origin(origin)
    .before(
        json!({"state": cur.state, "attempts": cur.attempts, "last_status": cur.last_status,
                   "last_error": cur.last_error, "event_id": cur.event_id}),
    )
    .after(json!({"state": "pending"}));
    crate::audit::append_in(&mut tx, entry).await?;
    let done: Delivery = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE d.delivery_id = $1"
    )))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    metrics::counter!(crate::metric_names::HUB_WEBHOOK_REPLAYS_TOTAL).increment(1);
    tracing::info!(delivery = id, event = %done.event_id, by = %who.id, "dead letter replayed");
    Ok(done)
}
