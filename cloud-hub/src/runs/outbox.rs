//! What the lab's systems hear about runs, written in the transaction that
//! stores the evaluation or the decision (`crate::webhooks`): a
//! `run.evaluated` or `run.decided` event, and a non-conformance
//! (`crate::nonconformance`) when the run's standing verdict turns fail.

use super::RunRow;
use super::evaluation::Evaluation;
use crate::nonconformance::{self, Cause, Raise};
use crate::webhooks::{EventType, enqueue};
use serde_json::{Value, json};
use sqlx::PgConnection;

async fn service_request_of(
    conn: &mut PgConnection,
    sample: Option<&str>,
) -> Result<Option<String>, sqlx::Error> {
    let Some(sample) = sample else {
        return Ok(None);
    };
    sqlx::query_scalar("SELECT request_id FROM service_request_samples WHERE sample_id = $1")
        .bind(sample)
        .fetch_optional(conn)
        .await
}

/// Each criterion's id, verdict and explanation: what a LIMS records.
fn criteria_summary(results: &Value) -> Value {
    Value::Array(
        results
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                json!({"id": c["id"], "description": c["description"], "verdict": c["verdict"],
                       "explanation": c["explanation"], "approval_required": c["approval_required"]})
            })
            .collect(),
    )
}

fn run_data(run: &RunRow, e: &Evaluation, sr: &Option<String>) -> (Value, Value) {
    let subject = json!({"run_id": run.run_id, "sample": run.sample_id,
                         "service_request": sr, "evaluation_id": e.evaluation_id});
    let data = json!({
        "run_id": run.run_id,
        "sample": run.sample_id,
        "service_request": sr,
        "protocol": {"id": run.protocol_id, "version": run.protocol_version,
                     "template_sha256": run.template_sha256},
        "bench_id": run.bench_id,
        "operator": run.operator,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "evaluation_id": e.evaluation_id,
        "verdict": e.verdict,
        "computed": e.computed,
        "final_verdict": e.final_verdict,
        "simulated": e.simulated,
        "trigger": e.trigger,
        "evaluated_at": e.evaluated_at,
        "approval": e.approval,
        "criteria": criteria_summary(&e.results),
    });
    (subject, data)
}

/// After an evaluation is stored: `run.evaluated`, and a non-conformance
/// when the verdict that stands is now fail and was not before.
pub(super) async fn evaluated(
    conn: &mut PgConnection,
    run: &RunRow,
    e: &Evaluation,
    previous_final: Option<&str>,
) -> Result<(), sqlx::Error> {
    let sr = service_request_of(conn, run.sample_id.as_deref()).await?;
    let (subject, data) = run_data(run, e, &sr);
    enqueue(conn, EventType::RunEvaluated, subject, data).await?;
    if e.final_verdict == "fail" && previous_final != Some("fail") {
        nonconformance::raise(
            conn,
            Raise {
                run_id: &run.run_id,
                evaluation_id: e.evaluation_id,
                cause: Cause::Evaluation,
                sample_id: run.sample_id.as_deref(),
                service_request: sr.as_deref(),
                protocol_id: run.protocol_id.as_deref(),
                failed_criteria: nonconformance::failed_criteria(&e.results, false),
                decision: None,
            },
        )
        .await?;
    }
    Ok(())
}

/// After an engineer's decision: `run.decided`, and a non-conformance when
/// it made the verdict fail (a rejection, or approving a computed fail).
pub(super) async fn decided(conn: &mut PgConnection, e: &Evaluation) -> Result<(), sqlx::Error> {
    let run: RunRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM runs WHERE run_id = $1::uuid",
        super::run_columns(false)
    )))
    .bind(&e.run_id)
    .fetch_one(&mut *conn)
    .await?;
    let sr = service_request_of(conn, run.sample_id.as_deref()).await?;
    let (subject, data) = run_data(&run, e, &sr);
    enqueue(conn, EventType::RunDecided, subject, data).await?;
    if e.final_verdict == "fail" {
        nonconformance::raise(
            conn,
            Raise {
                run_id: &run.run_id,
                evaluation_id: e.evaluation_id,
                cause: Cause::Approval,
                sample_id: run.sample_id.as_deref(),
                service_request: sr.as_deref(),
                protocol_id: run.protocol_id.as_deref(),
                failed_criteria: nonconformance::failed_criteria(&e.results, true),
                decision: e.approval.clone(),
            },
        )
        .await?;
    }
    Ok(())
}
