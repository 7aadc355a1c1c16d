//! Desired state: an engineer sets the value a writable point of an
//! instrument twin should hold; the hub carries it to the device as a
//! durable gateway command (`commands`), tracks that command (pending,
//! applied, failed, expired), shows it beside the reported value (the
//! twin's `series_latest`) with a drift flag, and re-sends it when the
//! gateway comes back ([`reconcile`]).
//!
//! Rooms: this file (setting, clearing, reading, the drift rule), and
//! `reconcile` (what happens when a gateway connects or reports a result).

mod reconcile;

pub use reconcile::{on_command_result, reconcile_gateway, reconcile_on_connect};

use crate::audit::{ActorKind, NewEntry, Origin};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;

/// Drift: desired and reported differ by more than this fraction of the
/// larger of the two. Devices store what they are sent in their register's
/// format: a float32 register holds 31.3 as 31.2999992, about 2.4e-8 off,
/// and scaled integers carry similar rounding; 1e-6 is well above that and
/// well below any setpoint step people use.
pub const DRIFT_RELATIVE: f64 = 1e-6;
/// Drift near zero: differences below this never count.
pub const DRIFT_ABSOLUTE: f64 = 1e-9;
/// Commands one desired value may get: the first and up to four re-sends on
/// reconnects. A value the device keeps refusing stops being re-sent, so a
/// flapping gateway cannot turn into a storm of writes.
pub const MAX_ATTEMPTS: i32 = 5;
/// Seconds a desired value's command may wait for the gateway, unless the
/// request says otherwise (as for commands).
pub const DEFAULT_DEADLINE_S: i32 = 60;
pub const MAX_DEADLINE_S: i32 = 86_400;

/// Whether `reported` is off `desired` (nothing reported yet counts as drift).
pub fn drifts(desired: f64, reported: Option<f64>) -> bool {
    match reported {
        None => true,
        Some(r) => {
            let tolerance = (DRIFT_RELATIVE * desired.abs().max(r.abs())).max(DRIFT_ABSOLUTE);
            (desired - r).abs() > tolerance
        }
    }
}

/// The tracking state people see, from the state of the latest command.
pub fn tracking_state(command_state: Option<&str>) -> &'static str {
    match command_state {
        Some("succeeded") => "applied",
        Some("failed") => "failed",
        Some("expired") => "expired",
        _ => "pending",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error("no twin {0:?}")]
    NoTwin(String),
    #[error("{0}")]
    NotApplicable(String),
    #[error("{0}")]
    Refused(String),
    #[error("twin {0:?} has no desired value for point {1:?}")]
    NoDesired(String, String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("audit trail: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("{0}")]
    Store(#[from] crate::storage::StoreError),
}

/// One desired point beside what the device reports.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DesiredRow {
    pub twin_id: String,
    pub point: String,
    pub desired: f64,
    pub unit: Option<String>,
    pub reported: Option<f64>,
    pub reported_at: Option<DateTime<Utc>>,
    #[sqlx(skip)]
    pub state: &'static str,
    #[sqlx(skip)]
    pub drift: bool,
    pub attempts: i32,
    pub command_id: i64,
    #[serde(skip)]
    pub command_state: Option<String>,
    /// The gateway's answer or why the command expired.
    pub command_result: Option<String>,
    pub deadline_s: i32,
    pub set_by: String,
    pub set_at: DateTime<Utc>,
    #[serde(skip)]
    pub gateway_id: Option<String>,
    #[serde(skip)]
    pub device_id: Option<String>,
}

impl DesiredRow {
    fn finish(mut self) -> DesiredRow {
        self.state = tracking_state(self.command_state.as_deref());
        self.drift = drifts(self.desired, self.reported);
        self
    }

    /// The live event of a change.
    pub fn event(&self, change: &str) -> crate::live::EventBody {
        let mut v = json!(self);
        v["change"] = json!(change);
        crate::live::EventBody::Desired(v)
    }
}

/// Desired points with their reported values and command states; one twin,
/// or every twin bound to a gateway. `FOR UPDATE` is not taken here.
const ROWS: &str = "SELECT d.twin_id, d.point, d.value AS desired, r.unit, r.value AS reported,
       r.ts AS reported_at, d.attempts, d.command_id, c.state AS command_state,
       c.result AS command_result, d.deadline_s, d.set_by, d.set_at, t.gateway_id, t.device_id
  FROM desired_points d
  JOIN twins t ON t.twin_id = d.twin_id
  JOIN commands c ON c.id = d.command_id
  LEFT JOIN LATERAL (
      SELECT l.value, l.ts, s.unit FROM series s JOIN series_latest l ON l.series_id = s.series_id
       WHERE s.gateway_id = t.gateway_id AND s.device_id = t.device_id AND s.metric = d.point
         AND s.run_id IS NULL
       ORDER BY l.ts DESC LIMIT 1) r ON true";

pub(crate) async fn rows_of_twin(
    conn: &mut PgConnection,
    twin: &str,
    point: Option<&str>,
) -> Result<Vec<DesiredRow>, sqlx::Error> {
    let rows: Vec<DesiredRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ROWS} WHERE d.twin_id = $1 AND ($2::text IS NULL OR d.point = $2) ORDER BY d.point"
    )))
    .bind(twin)
    .bind(point)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(DesiredRow::finish).collect())
}

/// An instrument twin as desired state needs it.
#[derive(sqlx::FromRow)]
struct Instrument {
    kind: String,
    gateway_id: Option<String>,
    device_id: Option<String>,
    type_id: Option<String>,
}

/// A request to set a point.
pub struct SetRequest<'a> {
    pub twin: &'a str,
    pub point: &'a str,
    pub value: f64,
    pub deadline_s: i32,
    pub by: &'a crate::identity::Principal,
    pub origin: &'a Origin,
}

/// Checks the point against the twin's type, stores the desired value and
/// queues its command, audited, in one transaction. The twin row is locked
/// meanwhile, so a delete of the twin (refused while commands to its device
/// are pending, `twins::store::delete`) cannot slip in between.
pub async fn set(pool: &sqlx::PgPool, r: SetRequest<'_>) -> Result<DesiredRow, DesiredError> {
    if !r.value.is_finite() {
        return Err(DesiredError::Refused(
            "`value` must be a finite number".into(),
        ));
    }
    let mut tx = pool.begin().await?;
    let twin: Instrument = sqlx::query_as(
        "SELECT kind, gateway_id, device_id, type_id FROM twins
          WHERE twin_id = $1 AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(r.twin)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| DesiredError::NoTwin(r.twin.to_string()))?;
    let (Some(gw), Some(dev)) = (twin.gateway_id.as_deref(), twin.device_id.as_deref()) else {
        return Err(DesiredError::NotApplicable(format!(
            "twin {:?} is a {} not bound to a gateway device: desired state is for instrument twins with gateway_id and device_id",
            r.twin, twin.kind
        )));
    };
    if twin.kind != "instrument" {
        return Err(DesiredError::NotApplicable(format!(
            "twin {:?} is a {}: desired state is for instruments",
            r.twin, twin.kind
        )));
    }
    let Some(type_id) = twin.type_id else {
        return Err(DesiredError::NotApplicable(format!(
            "twin {:?} has no type, so which of its points are writable is not known; give it a type (its gateway reports its profile's)",
            r.twin
        )));
    };
    let metrics: serde_json::Value =
        sqlx::query_scalar("SELECT metrics FROM twin_types WHERE type_id = $1")
            .bind(&type_id)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or_default();
    let metric = metrics
        .as_array()
        .and_then(|a| a.iter().find(|m| m["name"] == r.point))
        .ok_or_else(|| {
            DesiredError::Refused(format!(
                "point {:?} is not a metric of type {type_id:?}",
                r.point
            ))
        })?;
    if metric["writable"] != true {
        return Err(DesiredError::Refused(format!(
            "point {:?} of type {type_id:?} is not writable",
            r.point
        )));
    }
    let (min, max) = (metric["min"].as_f64(), metric["max"].as_f64());
    if min.is_some_and(|m| r.value < m) || max.is_some_and(|m| r.value > m) {
        return Err(DesiredError::Refused(format!(
            "value {} is outside {:?} of point {:?} ({}..={})",
            r.value,
            type_id,
            r.point,
            min.map_or("-inf".into(), |v| v.to_string()),
            max.map_or("inf".into(), |v| v.to_string()),
        )));
    }
    let before: Option<serde_json::Value> = rows_of_twin(&mut tx, r.twin, Some(r.point))
        .await?
        .first()
        .map(|d| json!({"value": d.desired, "state": d.state, "command_id": d.command_id}));
    let action = json!({"write_point": {"device": dev, "point": r.point, "value": r.value}});
    let deadline = Utc::now() + chrono::Duration::seconds(i64::from(r.deadline_s));
    let cmd = crate::storage::insert_command(&mut tx, gw, &action, deadline).await?;
    sqlx::query(
        "INSERT INTO desired_points (twin_id, point, value, deadline_s, set_by, command_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (twin_id, point) DO UPDATE
            SET value = EXCLUDED.value, deadline_s = EXCLUDED.deadline_s, set_by = EXCLUDED.set_by,
                set_at = now(), command_id = EXCLUDED.command_id, attempts = 1",
    )
    .bind(r.twin)
    .bind(r.point)
    .bind(r.value)
    .bind(r.deadline_s)
    .bind(&r.by.id)
    .bind(cmd.id)
    .execute(&mut *tx)
    .await?;
    let mut entry = NewEntry::new(
        r.by.kind,
        &r.by.id,
        "desired.set",
        format!("twin:{}/point:{}", r.twin, r.point),
    )
    .origin(r.origin)
    .after(json!({"value": r.value, "deadline_s": r.deadline_s, "command_id": cmd.id}));
    if let Some(b) = before {
        entry = entry.before(b);
    }
    crate::audit::append_in(&mut tx, entry).await?;
    let row = rows_of_twin(&mut tx, r.twin, Some(r.point))
        .await?
        .pop()
        .ok_or_else(|| DesiredError::NoDesired(r.twin.into(), r.point.into()))?;
    tx.commit().await?;
    metrics::counter!(crate::metric_names::HUB_DESIRED_COMMANDS_TOTAL, "why" => "set").increment(1);
    tracing::info!(twin = %r.twin, point = %r.point, value = r.value, command = cmd.id, by = %r.by.id, "desired value set");
    Ok(row)
}

/// Stops reconciling a point (a command already queued still runs).
pub async fn clear(
    pool: &sqlx::PgPool,
    twin: &str,
    point: &str,
    by: &crate::identity::Principal,
    origin: &Origin,
) -> Result<DesiredRow, DesiredError> {
    let mut tx = pool.begin().await?;
    let before = rows_of_twin(&mut tx, twin, Some(point))
        .await?
        .pop()
        .ok_or_else(|| DesiredError::NoDesired(twin.into(), point.into()))?;
    sqlx::query("DELETE FROM desired_points WHERE twin_id = $1 AND point = $2")
        .bind(twin)
        .bind(point)
        .execute(&mut *tx)
        .await?;
    crate::audit::append_in(
        &mut tx,
        NewEntry::new(by.kind, &by.id, "desired.clear", format!("twin:{twin}/point:{point}"))
            .origin(origin)
            .before(json!({"value": before.desired, "state": before.state, "command_id": before.command_id})),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(%twin, %point, by = %by.id, "desired value cleared");
    Ok(before)
}

/// Every desired point of a twin. Commands past their deadline are marked
/// expired first (and announced), so the state shown is current.
pub async fn list(
    store: &crate::storage::Store,
    live: &crate::live::Fanout,
    twin: &str,
) -> Result<Option<Vec<DesiredRow>>, DesiredError> {
    let mut conn = store.pool().acquire().await?;
    let gw: Option<Option<String>> = sqlx::query_scalar(
        "SELECT gateway_id FROM twins WHERE twin_id = $1 AND deleted_at IS NULL",
    )
    .bind(twin)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(gw) = gw else {
        return Ok(None);
    };
    let expired = match gw.as_deref() {
        Some(g) => store.expire_commands(Some(g)).await?,
        None => Vec::new(),
    };
    let rows = rows_of_twin(&mut conn, twin, None).await?;
    for r in rows.iter().filter(|r| expired.contains(&r.command_id)) {
        live.publish(r.event("expired"));
    }
    Ok(Some(rows))
}

/// Who the hub itself is in the audit trail when it re-sends.
pub(crate) const RECONCILER: (ActorKind, &str) = (ActorKind::System, "desired-state-reconciler");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_allows_register_rounding_and_nothing_more() {
        assert!(!drifts(31.3, Some(f64::from(31.3f32))));
        assert!(!drifts(0.0, Some(0.0)));
        assert!(drifts(31.3, Some(31.4)));
        assert!(drifts(1.0, None));
        assert!(drifts(0.0, Some(1e-6)));
        assert!(!drifts(1e6, Some(1e6 + 0.5)));
        assert!(drifts(1e6, Some(1e6 + 2.0)));
    }

    #[test]
    fn command_states_map_to_tracking_states() {
        assert_eq!(tracking_state(Some("pending")), "pending");
        assert_eq!(tracking_state(Some("sent")), "pending");
        assert_eq!(tracking_state(Some("succeeded")), "applied");
        assert_eq!(tracking_state(Some("failed")), "failed");
        assert_eq!(tracking_state(Some("expired")), "expired");
    }
}
