//! The `alarms` table (migration 0009): raise, clear, acknowledge, list.
//! Each change is audited in its own transaction.

use crate::audit::{self, ActorKind, AuditError, NewEntry, Origin};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

/// An alarm as stored and served. `state` is ThingsBoard's: active or
/// cleared, acknowledged or not.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Alarm {
    pub alarm_id: i64,
    pub rule_id: i64,
    pub twin_id: String,
    pub metric: String,
    pub severity: String,
    pub state: String,
    pub details: Value,
    pub raised_at: DateTime<Utc>,
    pub cleared_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
}

/// The states a listing may ask for.
pub const STATES: [&str; 6] = [
    "active",
    "cleared",
    "active_unack",
    "active_ack",
    "cleared_unack",
    "cleared_ack",
];

const COLUMNS: &str = "alarm_id, rule_id, twin_id, metric, severity,
    (CASE WHEN cleared_at IS NULL THEN 'active' ELSE 'cleared' END) ||
    (CASE WHEN acknowledged_at IS NULL THEN '_unack' ELSE '_ack' END) AS state,
    details, raised_at, cleared_at, acknowledged_at, acknowledged_by";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// What a rule is, for the alarm it raises.
pub struct Raising<'a> {
    pub rule_id: i64,
    pub twin_id: &'a str,
    pub metric: &'a str,
    pub severity: &'a str,
}

/// Raises an alarm of a rule unless one is active (then None).
pub async fn raise(
    pool: &PgPool,
    r: &Raising<'_>,
    details: Value,
) -> Result<Option<Alarm>, StoreError> {
    let mut tx = pool.begin().await?;
    let alarm: Option<Alarm> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO alarms (rule_id, twin_id, metric, severity, details)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (rule_id) WHERE cleared_at IS NULL DO NOTHING
         RETURNING {COLUMNS}"
    )))
    .bind(r.rule_id)
    .bind(r.twin_id)
    .bind(r.metric)
    .bind(r.severity)
    .bind(&details)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(a) = &alarm {
        audit::append_in(
            &mut tx,
            NewEntry::new(
                ActorKind::System,
                "alarms",
                "alarm.raise",
                target(a.alarm_id),
            )
            .after(json!(a)),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(alarm)
}

/// Clears the active alarm of a rule (None when none is active). `by`:
/// the evaluator (system) or the person who disabled or deleted the rule.
pub async fn clear(
    conn: &mut PgConnection,
    rule_id: i64,
    details: Value,
    by: (ActorKind, &str),
    origin: Option<&Origin>,
) -> Result<Option<Alarm>, StoreError> {
    let before: Option<Alarm> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alarms WHERE rule_id = $1 AND cleared_at IS NULL FOR UPDATE"
    )))
    .bind(rule_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(before) = before else {
        return Ok(None);
    };
    let after: Alarm = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE alarms SET cleared_at = now(), details = details || jsonb_build_object('cleared', $2::jsonb)
         WHERE alarm_id = $1 RETURNING {COLUMNS}"
    )))
    .bind(before.alarm_id)
    .bind(&details)
    .fetch_one(&mut *conn)
    .await?;
    let mut e = NewEntry::new(by.0, by.1, "alarm.clear", target(after.alarm_id))
        .before(json!(before))
        .after(json!(after));
    if let Some(o) = origin {
        e = e.origin(o);
    }
    audit::append_in(conn, e).await?;
    Ok(Some(after))
}

/// Acknowledges an alarm; Ok(None) when there is no such alarm, Err-free
/// no-op (the alarm as it is) when it was acknowledged already.
pub async fn acknowledge(
    pool: &PgPool,
    id: i64,
    sites: Option<&[String]>,
    by: (ActorKind, &str),
    origin: &Origin,
) -> Result<Option<(Alarm, bool)>, StoreError> {
    let mut tx = pool.begin().await?;
    let before: Option<Alarm> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alarms WHERE alarm_id = $1
           AND ($2::text[] IS NULL OR twin_site(twin_id) = ANY($2)) FOR UPDATE"
    )))
    .bind(id)
    .bind(sites)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(before) = before else {
        return Ok(None);
    };
    if before.acknowledged_at.is_some() {
        return Ok(Some((before, false)));
    }
    let after: Alarm = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE alarms SET acknowledged_at = now(), acknowledged_by = $2
         WHERE alarm_id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(by.1)
    .fetch_one(&mut *tx)
    .await?;
    audit::append_in(
        &mut tx,
        NewEntry::new(by.0, by.1, "alarm.acknowledge", target(id))
            .origin(origin)
            .before(json!(before))
            .after(json!(after)),
    )
    .await?;
    tx.commit().await?;
    Ok(Some((after, true)))
}

/// Active alarms per rule (what the evaluator resumes with after a restart).
pub async fn active_rules(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT rule_id FROM alarms WHERE cleared_at IS NULL")
        .fetch_all(pool)
        .await
}

pub struct AlarmQuery<'a> {
    pub state: Option<&'a str>,
    pub twin: Option<&'a str>,
    pub severity: Option<&'a str>,
    pub sites: Option<&'a [String]>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// Alarms, newest first.
pub async fn list(pool: &PgPool, q: &AlarmQuery<'_>) -> Result<Vec<Alarm>, sqlx::Error> {
    let (active, acked) = match q.state {
        Some("active") => (Some(true), None),
        Some("cleared") => (Some(false), None),
        Some("active_unack") => (Some(true), Some(false)),
        Some("active_ack") => (Some(true), Some(true)),
        Some("cleared_unack") => (Some(false), Some(false)),
        Some("cleared_ack") => (Some(false), Some(true)),
        _ => (None, None),
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alarms
         WHERE ($1::bool IS NULL OR (cleared_at IS NULL) = $1)
           AND ($2::bool IS NULL OR (acknowledged_at IS NOT NULL) = $2)
           AND ($3::text IS NULL OR twin_id = $3)
           AND ($4::text IS NULL OR severity = $4)
           AND ($5::text[] IS NULL OR twin_site(twin_id) = ANY($5))
           AND ($6::bigint IS NULL OR alarm_id < $6)
         ORDER BY alarm_id DESC LIMIT $7"
    )))
    .bind(active)
    .bind(acked)
    .bind(q.twin)
    .bind(q.severity)
    .bind(q.sites)
    .bind(q.before_id)
    .bind(q.limit)
    .fetch_all(pool)
    .await
}

fn target(id: i64) -> String {
    format!("alarm:{id}")
}
