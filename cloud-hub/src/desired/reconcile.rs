//! Reconciling: when a gateway comes back, desired values whose last command
//! failed or expired and that the device still does not report are sent
//! again, one command per point, at most [`MAX_ATTEMPTS`] commands per value,
//! never while a write of the same point is queued. Command results update
//! the tracking state and are announced live.

use super::{DesiredError, DesiredRow, MAX_ATTEMPTS, RECONCILER, ROWS};
use crate::audit::NewEntry;
use crate::live::Fanout;
use crate::storage::Store;
use serde_json::json;

/// Most values re-sent per connect (the rest wait for the next one): a
/// gateway with thousands of stale setpoints must not flood its devices.
const MAX_PER_CONNECT: i64 = 256;

/// Re-sends what the gateway missed; returns how many commands were queued.
pub async fn reconcile_gateway(
    store: &Store,
    live: &Fanout,
    gateway: &str,
) -> Result<usize, DesiredError> {
    let expired = store.expire_commands(Some(gateway)).await?;
    let mut tx = store.pool().begin().await?;
    // Rows locked (and skipped when another hub replica holds them): one
    // re-send per value even with two connects at once.
    let candidates: Vec<DesiredRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ROWS} WHERE t.gateway_id = $1 AND t.kind = 'instrument' AND t.deleted_at IS NULL
            AND c.state IN ('failed', 'expired') AND d.attempts < $2
            AND NOT EXISTS (
                SELECT 1 FROM commands o
                 WHERE o.gateway_id = $1 AND o.state IN ('pending', 'sent')
                   AND o.action->'write_point'->>'device' = t.device_id
                   AND o.action->'write_point'->>'point' = d.point)
          ORDER BY d.set_at LIMIT $3
          FOR UPDATE OF d SKIP LOCKED"
    )))
    .bind(gateway)
    .bind(MAX_ATTEMPTS)
    .bind(MAX_PER_CONNECT)
    .fetch_all(&mut *tx)
    .await?;
    let mut resent = Vec::new();
    for row in candidates.into_iter().map(DesiredRow::finish) {
        if !row.drift {
            // The device already holds it (set by hand, or the result was lost).
            continue;
        }
        let Some(dev) = row.device_id.as_deref() else {
            continue;
        };
        let action =
            json!({"write_point": {"device": dev, "point": row.point, "value": row.desired}});
        let deadline = chrono::Utc::now() + chrono::Duration::seconds(i64::from(row.deadline_s));
        let cmd = crate::storage::insert_command(&mut tx, gateway, &action, deadline).await?;
        sqlx::query(
            "UPDATE desired_points SET command_id = $3, attempts = attempts + 1
              WHERE twin_id = $1 AND point = $2",
        )
        .bind(&row.twin_id)
        .bind(&row.point)
        .bind(cmd.id)
        .execute(&mut *tx)
        .await?;
        crate::audit::append_in(
            &mut tx,
            NewEntry::new(
                RECONCILER.0,
                RECONCILER.1,
                "desired.resend",
                format!("twin:{}/point:{}", row.twin_id, row.point),
            )
            .before(
                json!({"state": row.state, "command_id": row.command_id, "reported": row.reported}),
            )
            .after(
                json!({"value": row.desired, "command_id": cmd.id, "attempt": row.attempts + 1}),
            ),
        )
        .await?;
        resent.push((row.twin_id.clone(), row.point.clone()));
    }
    let mut changed = Vec::new();
    for (twin, point) in &resent {
        changed.extend(super::rows_of_twin(&mut tx, twin, Some(point)).await?);
    }
    tx.commit().await?;
    for r in &changed {
        live.publish(r.event("resent"));
        metrics::counter!(crate::metric_names::HUB_DESIRED_COMMANDS_TOTAL, "why" => "resend")
            .increment(1);
        tracing::info!(%gateway, twin = %r.twin_id, point = %r.point, value = r.desired,
            command = r.command_id, attempt = r.attempts, "desired value re-sent after the gateway came back");
    }
    if !expired.is_empty() {
        announce(store, live, &expired, "expired").await?;
    }
    Ok(changed.len())
}

/// [`reconcile_gateway`] when a gateway connects. A failure must not cost
/// the gateway its stream: it is logged and counted, and the values are
/// tried again on the next connect.
pub async fn reconcile_on_connect(store: &Store, live: &Fanout, gateway: &str) {
    match reconcile_gateway(store, live, gateway).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(%gateway, resent = n, "desired values re-sent"),
        Err(e) => {
            metrics::counter!(crate::metric_names::HUB_INGEST_DB_ERRORS_TOTAL).increment(1);
            tracing::error!(%gateway, error = %e, "reconciling desired state failed; retried on the next connect");
        }
    }
}

/// A gateway reported a command's result: if the command carries a desired
/// value, its new tracking state is announced.
pub async fn on_command_result(
    store: &Store,
    live: &Fanout,
    command_id: i64,
) -> Result<(), DesiredError> {
    announce(store, live, &[command_id], "result").await
}

async fn announce(
    store: &Store,
    live: &Fanout,
    commands: &[i64],
    change: &str,
) -> Result<(), DesiredError> {
    let rows: Vec<DesiredRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ROWS} WHERE d.command_id = ANY($1)"
    )))
    .bind(commands)
    .fetch_all(store.pool())
    .await?;
    for r in rows.into_iter().map(DesiredRow::finish) {
        live.publish(r.event(change));
    }
    Ok(())
}
