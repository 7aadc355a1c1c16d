//! An engineer's decision on a provisional verdict (a criterion the
//! template marks `approval_required`, such as a visual inspection): four
//! eyes (never the run's operator), audited, bound to the evaluation it
//! signed. A later evaluation with the same outcome keeps it; one with a
//! different outcome needs a new decision (`evaluation`).

use super::RunError;
use super::evaluation::{EVALUATION_SELECT, Evaluation, latest};
use crate::audit::{NewEntry, Origin};
use crate::identity::Principal;
use serde_json::json;
use sqlx::PgPool;

/// approve: the computed verdict becomes final; reject: fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }
}

/// Records the decision on the run's current (latest) evaluation.
pub async fn decide(
    pool: &PgPool,
    run_id: &str,
    who: &Principal,
    origin: &Origin,
    decision: Decision,
    comment: &str,
) -> Result<Evaluation, RunError> {
    if !qi_proto::limits::valid_text(comment) {
        return Err(RunError::Invalid(format!(
            "`comment` must be at most {} bytes, no control characters",
            qi_proto::limits::MAX_TEXT_LEN
        )));
    }
    if decision == Decision::Reject && comment.trim().is_empty() {
        return Err(RunError::Invalid(
            "a rejection needs a `comment` saying why".into(),
        ));
    }
    let mut tx = pool.begin().await?;
    let run: Option<(Option<String>,)> =
        sqlx::query_as("SELECT operator FROM runs WHERE run_id = $1::uuid FOR UPDATE")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?;
    let (operator,) = run.ok_or_else(|| RunError::NotFound(format!("no run {run_id}")))?;
    // Local and hub user names name the same people by convention
    // (docs/runs.md): the operator who started the run signs nothing of it.
    if operator.as_deref() == Some(who.id.as_str()) {
        return Err(RunError::Forbidden(format!(
            "four eyes: {} started run {run_id} and cannot approve its verdict; another engineer must",
            who.id
        )));
    }
    let current = latest(&mut tx, run_id)
        .await?
        .ok_or_else(|| RunError::Conflict(format!("run {run_id} has not been evaluated")))?;
    if current.verdict != "provisional" {
        return Err(RunError::Conflict(format!(
            "the current evaluation ({}) of run {run_id} is {}; only provisional verdicts are approved",
            current.evaluation_id, current.verdict
        )));
    }
    if let Some(a) = &current.approval {
        return Err(RunError::Conflict(format!(
            "the current evaluation of run {run_id} was already decided: {a}"
        )));
    }
    let final_verdict = match decision {
        Decision::Approve if current.computed == "pass" => "pass",
        _ => "fail",
    };
    let approval_id: i64 = sqlx::query_scalar(
        "INSERT INTO run_approvals (evaluation_id, run_id, decision, comment, final_verdict, decided_by)
         VALUES ($1, $2::uuid, $3, $4, $5, $6) RETURNING approval_id",
    )
    .bind(current.evaluation_id)
    .bind(run_id)
    .bind(decision.as_str())
    .bind(comment)
    .bind(final_verdict)
    .bind(&who.id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("UPDATE run_evaluations SET approval_id = $2 WHERE evaluation_id = $1")
        .bind(current.evaluation_id)
        .bind(approval_id)
        .execute(&mut *tx)
        .await?;
    let entry = NewEntry::new(
        who.kind,
        &who.id,
        format!("run.{}", decision.as_str()),
        format!("run:{run_id}"),
    )
    .origin(origin)
    .before(
        json!({"evaluation_id": current.evaluation_id, "verdict": current.verdict,
                   "computed": current.computed}),
    )
    .after(json!({"final_verdict": final_verdict, "comment": comment, "approval_id": approval_id}));
    crate::audit::append_in(&mut tx, entry).await?;
    let done: Evaluation = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{EVALUATION_SELECT} WHERE e.evaluation_id = $1"
    )))
    .bind(current.evaluation_id)
    .fetch_one(&mut *tx)
    .await?;
    super::outbox::decided(&mut tx, &done).await?;
    tx.commit().await?;
    super::verdicts::changed();
    metrics::counter!(crate::metric_names::HUB_RUN_APPROVALS_TOTAL, "decision" => decision.as_str())
        .increment(1);
    tracing::info!(run = %run_id, by = %who.id, decision = decision.as_str(), final_verdict, "run verdict decided");
    Ok(done)
}
