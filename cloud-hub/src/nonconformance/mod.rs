//! Non-conformances (issue #15): when a run's standing verdict turns fail
//! (the criteria failed it, or an engineer's decision on a provisional
//! verdict did), the hub records a non-conformance (`NC-<year>-<number>`)
//! with the failed criteria and their explanations, and tells the quality
//! system with a `nonconformance.raised` webhook in the same transaction.
//! A re-evaluation that still fails raises none; engineers close one with
//! a comment (audited). docs/webhooks.md, "Non-conformances".
//!
//! Who decides that a verdict turned fail is `crate::runs` (it calls
//! [`raise`]); this module keeps the records. The schema is migration 0016.

use crate::audit::{NewEntry, Origin};
use crate::identity::Principal;
use crate::webhooks::{EventType, WebhookError, enqueue};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

/// Longest non-conformance id the API accepts (`NC-<year>-<number>`).
pub const MAX_ID_LEN: usize = 40;

/// Why a non-conformance was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The criteria failed the run.
    Evaluation,
    /// An engineer's decision on a provisional verdict made it fail.
    Approval,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Evaluation => "evaluation",
            Cause::Approval => "approval",
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Nonconformance {
    pub nc_id: String,
    pub run_id: String,
    pub evaluation_id: i64,
    pub cause: String,
    pub sample_id: Option<String>,
    pub service_request: Option<String>,
    pub protocol_id: Option<String>,
    pub failed_criteria: Value,
    pub decision: Option<Value>,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub closed_by: Option<String>,
    pub closed_at: Option<DateTime<Utc>>,
    pub close_comment: Option<String>,
    #[serde(skip)]
    pub nc_no: i64,
}

const COLUMNS: &str = "nc_id, run_id::text AS run_id, evaluation_id, cause, sample_id, \
    service_request, protocol_id, failed_criteria, decision, state, created_at, closed_by, \
    closed_at, close_comment, nc_no";

pub const STATES: [&str; 2] = ["open", "closed"];

/// What a raised non-conformance is about.
pub struct Raise<'a> {
    pub run_id: &'a str,
    pub evaluation_id: i64,
    pub cause: Cause,
    pub sample_id: Option<&'a str>,
    pub service_request: Option<&'a str>,
    pub protocol_id: Option<&'a str>,
    /// The failed criteria, each with its explanation.
    pub failed_criteria: Value,
    pub decision: Option<Value>,
}

/// The criteria of an evaluation's `results` that failed the run: those
/// with verdict fail, and with `with_approval` those an engineer decided.
pub fn failed_criteria(results: &Value, with_approval: bool) -> Value {
    let failed: Vec<Value> = results
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["verdict"] == "fail" || (with_approval && c["approval_required"] == Value::Bool(true))
        })
        .map(|c| {
            json!({"id": c["id"], "description": c["description"], "verdict": c["verdict"],
                   "explanation": c["explanation"], "unit": c["unit"], "checks": c["checks"]})
        })
        .collect();
    Value::Array(failed)
}

/// Records a non-conformance and queues its event, in the caller's
/// transaction. None when this evaluation already raised one for this cause.
pub async fn raise(
    conn: &mut PgConnection,
    r: Raise<'_>,
) -> Result<Option<Nonconformance>, sqlx::Error> {
    let nc: Option<Nonconformance> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO nonconformances (nc_id, run_id, evaluation_id, cause, sample_id,
                service_request, protocol_id, failed_criteria, decision)
         VALUES ('NC-' || to_char(now(), 'YYYY') || '-'
                     || lpad(nextval('nonconformance_number')::text, 6, '0'),
                 $1::uuid, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (evaluation_id, cause) DO NOTHING
         RETURNING {COLUMNS}"
    )))
    .bind(r.run_id)
    .bind(r.evaluation_id)
    .bind(r.cause.as_str())
    .bind(r.sample_id)
    .bind(r.service_request)
    .bind(r.protocol_id)
    .bind(&r.failed_criteria)
    .bind(&r.decision)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(nc) = nc else {
        return Ok(None);
    };
    enqueue(
        conn,
        EventType::NonconformanceRaised,
        subject(&nc),
        json!({
            "nonconformance_id": nc.nc_id,
            "run_id": nc.run_id,
            "evaluation_id": nc.evaluation_id,
            "cause": nc.cause,
            "sample": nc.sample_id,
            "service_request": nc.service_request,
            "protocol_id": nc.protocol_id,
            "failed_criteria": nc.failed_criteria,
            "decision": nc.decision,
            "created_at": nc.created_at,
        }),
    )
    .await?;
    tracing::info!(nc = %nc.nc_id, run = %nc.run_id, cause = %nc.cause, "non-conformance raised");
    Ok(Some(nc))
}

fn subject(nc: &Nonconformance) -> Value {
    json!({"nonconformance_id": nc.nc_id, "run_id": nc.run_id, "sample": nc.sample_id,
           "service_request": nc.service_request})
}

/// Filters of `GET /api/v1/nonconformances`.
#[derive(Debug, Default)]
pub struct Filter {
    pub state: Option<String>,
    pub run: Option<String>,
    pub service_request: Option<String>,
    /// Keyset: raised after this one (`next_after`).
    pub after: Option<i64>,
    pub limit: i64,
}

pub async fn list(pool: &PgPool, f: &Filter) -> Result<Vec<Nonconformance>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM nonconformances
          WHERE ($1::text IS NULL OR state = $1)
            AND ($2::text IS NULL OR run_id::text = $2)
            AND ($3::text IS NULL OR service_request = $3)
            AND ($4::bigint IS NULL OR nc_no > $4)
          ORDER BY nc_no LIMIT $5"
    )))
    .bind(&f.state)
    .bind(&f.run)
    .bind(&f.service_request)
    .bind(f.after)
    .bind(f.limit)
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, id: &str) -> Result<Option<Nonconformance>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM nonconformances WHERE nc_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Closes an open non-conformance with a comment (audited, and a
/// `nonconformance.closed` event).
pub async fn close(
    pool: &PgPool,
    id: &str,
    comment: &str,
    who: &Principal,
    origin: &Origin,
) -> Result<Nonconformance, WebhookError> {
    if comment.trim().is_empty() || !qi_proto::limits::valid_text(comment) {
        return Err(WebhookError::Invalid(format!(
            "`comment` must say how it was resolved, at most {} bytes, no control characters",
            qi_proto::limits::MAX_TEXT_LEN
        )));
    }
    let mut tx = pool.begin().await?;
    let cur: Option<Nonconformance> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM nonconformances WHERE nc_id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let cur = cur.ok_or_else(|| WebhookError::NotFound(format!("no non-conformance {id}")))?;
    if cur.state != "open" {
        return Err(WebhookError::Conflict(format!(
            "non-conformance {id} is already {}",
            cur.state
        )));
    }
    let done: Nonconformance = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE nonconformances SET state = 'closed', closed_by = $2, closed_at = now(),
                close_comment = $3 WHERE nc_id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(&who.id)
    .bind(comment)
    .fetch_one(&mut *tx)
    .await?;
    let entry = NewEntry::new(
        who.kind,
        &who.id,
        "nonconformance.close",
        format!("nonconformance:{id}"),
    )
    .origin(origin)
    .before(json!({"state": cur.state}))
    .after(json!({"state": "closed", "comment": comment}));
    crate::audit::append_in(&mut tx, entry).await?;
    enqueue(
        &mut tx,
        EventType::NonconformanceClosed,
        subject(&done),
        json!({"nonconformance_id": done.nc_id, "run_id": done.run_id, "comment": comment,
               "closed_by": who.id, "closed_at": done.closed_at}),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(nc = %id, by = %who.id, "non-conformance closed");
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::failed_criteria;
    use serde_json::json;

    #[test]
    fn the_failed_criteria_keep_their_explanations() {
        let results = json!([
            {"id": "pmax", "verdict": "fail", "explanation": "pmax 350 W < 0.95 * rated_pmax 380 W",
             "approval_required": false},
            {"id": "ff", "verdict": "pass", "explanation": "ok", "approval_required": false},
            {"id": "visual", "verdict": "pass", "explanation": "no defects", "approval_required": true},
        ]);
        let f = failed_criteria(&results, false);
        assert_eq!(f.as_array().map(Vec::len), Some(1));
        assert_eq!(f[0]["explanation"], "pmax 350 W < 0.95 * rated_pmax 380 W");
        assert_eq!(
            failed_criteria(&results, true).as_array().map(Vec::len),
            Some(2)
        );
    }
}
