//! Evaluating a completed run: its template's criteria (the text the run
//! carried, never a newer file) over the inputs `inputs` gathers, each
//! criterion explained, one overall verdict, stored with everything needed
//! to reproduce it and compared with the previous evaluation.

use super::{RunError, RunRow, inputs, run_columns};
use chrono::{DateTime, Utc};
use qi_protocol::{CriterionResult, Protocol, expr::EvalError};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;

/// One stored evaluation, with the approval it stands under.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Evaluation {
    pub evaluation_id: i64,
    pub run_id: String,
    /// pass, fail, no_verdict or provisional (as computed).
    pub verdict: String,
    /// What the criteria gave (pass, fail, no_verdict), before approval.
    pub computed: String,
    /// The run was simulated faster than real time (time_scale != 1).
    pub simulated: bool,
    pub template_sha256: String,
    pub inputs: Value,
    pub results: Value,
    /// Same verdict and criterion results as the evaluation before it
    /// (None: the first).
    pub matches_previous: Option<bool>,
    pub trigger: String,
    pub evaluated_by: String,
    pub evaluated_at: DateTime<Utc>,
    pub approval_id: Option<i64>,
    /// The verdict that stands: an approval's (pass, fail), else `verdict`.
    pub final_verdict: String,
    /// The decision it stands under: {decision, comment, decided_by, decided_at, evaluation_id}.
    pub approval: Option<Value>,
}

pub(crate) const EVALUATION_SELECT: &str =
    "SELECT e.evaluation_id, e.run_id::text AS run_id, e.verdict, e.computed, e.simulated,
        e.template_sha256, e.inputs, e.results, e.matches_previous, e.trigger, e.evaluated_by,
        e.evaluated_at, e.approval_id, coalesce(a.final_verdict, e.verdict) AS final_verdict,
        CASE WHEN a.approval_id IS NULL THEN NULL ELSE jsonb_build_object(
            'approval_id', a.approval_id, 'decision', a.decision, 'comment', a.comment,
            'decided_by', a.decided_by, 'decided_at', a.decided_at,
            'evaluation_id', a.evaluation_id) END AS approval
   FROM run_evaluations e LEFT JOIN run_approvals a ON a.approval_id = e.approval_id";

/// The run's latest evaluation.
pub async fn latest(
    conn: &mut sqlx::PgConnection,
    run_id: &str,
) -> Result<Option<Evaluation>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{EVALUATION_SELECT} WHERE e.run_id = $1::uuid ORDER BY e.evaluation_id DESC LIMIT 1"
    )))
    .bind(run_id)
    .fetch_optional(conn)
    .await
}

fn criterion_json(
    r: &CriterionResult,
    description: &str,
    inputs: &inputs::Inputs,
) -> (Value, &'static str) {
    let (verdict, body) = match &r.outcome {
        Ok(x) => {
            let names: Vec<&String> = x.inputs.iter().map(|(n, _)| n).collect();
            (
                if x.verdict { "pass" } else { "fail" },
                json!({
                    "inputs": x.inputs.iter().map(|(n, v)| json!({
                        "name": n, "value": v, "source": inputs.sources.get(n)
                    })).collect::<Vec<_>>(),
                    "checks": x.checks.iter().map(|c| json!({
                        "computed": c.computed, "value": c.value, "op": c.op.to_string(),
                        "limit_expr": c.limit_expr, "limit": c.limit, "holds": c.holds,
                    })).collect::<Vec<_>>(),
                    "input_names": names,
                }),
            )
        }
        Err(e) => {
            let why = match e {
                EvalError::Unknown(n) => inputs.missing.get(n).cloned(),
                _ => None,
            };
            (
                "no_verdict",
                json!({"reason": e.to_string(), "missing_because": why}),
            )
        }
    };
    let mut v = json!({
        "id": r.id,
        "description": description,
        "unit": r.unit,
        "approval_required": r.approval_required,
        "verdict": verdict,
        "explanation": r.to_string(),
    });
    if let (Some(o), Some(b)) = (v.as_object_mut(), body.as_object()) {
        for (k, x) in b {
            if k != "input_names" {
                o.insert(k.clone(), x.clone());
            }
        }
    }
    (v, verdict)
}

/// The overall verdict from the criteria's: any without a verdict makes it
/// no_verdict (a missing input is never a pass); a failed criterion that
/// needs no approval fails the run for good; otherwise a criterion that
/// needs approval makes the computed verdict provisional.
/// Returns (verdict, computed).
pub fn overall(criteria: &[(&'static str, bool)]) -> (&'static str, &'static str) {
    if criteria.iter().any(|(v, _)| *v == "no_verdict") {
        return ("no_verdict", "no_verdict");
    }
    let computed = if criteria.iter().all(|(v, _)| *v == "pass") {
        "pass"
    } else {
        "fail"
    };
    if criteria
        .iter()
        .any(|(v, approval)| *v == "fail" && !approval)
    {
        return ("fail", "fail");
    }
    if criteria.iter().any(|(_, approval)| *approval) {
        return ("provisional", computed);
    }
    (computed, computed)
}

/// What `evaluate` did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub evaluation: Evaluation,
    /// False when an automatic re-evaluation found exactly what the latest
    /// evaluation holds and stored nothing.
    pub stored: bool,
}

/// Evaluates a completed run and stores the evaluation. `always_store`
/// false (automatic re-evaluations) stores nothing when inputs, verdict and
/// results equal the latest evaluation's.
pub async fn evaluate(
    pool: &PgPool,
    run_id: &str,
    trigger: &str,
    by: &str,
    always_store: bool,
) -> Result<Outcome, RunError> {
    let started = std::time::Instant::now();
    let mut tx = pool.begin().await?;
    // One evaluation of a run at a time: the automatic one after completion
    // and one asked for through the API must not both compare with the same
    // previous evaluation.
    let run: Option<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM runs WHERE run_id = $1::uuid FOR UPDATE",
        run_columns(true)
    )))
    .bind(run_id)
    .fetch_optional(&mut *tx)
    .await?;
    let run = run.ok_or_else(|| RunError::NotFound(format!("no run {run_id}")))?;
    if run.state != "completed" {
        return Err(RunError::Conflict(format!(
            "run {run_id} is {}; only completed runs are evaluated",
            run.state
        )));
    }
    let (Some(text), Some(sha)) = (&run.template_toml, &run.template_sha256) else {
        return Err(RunError::Conflict(format!(
            "run {run_id} completed but its started event has not arrived: no template to evaluate with"
        )));
    };
    let p = Protocol::parse(text, std::path::Path::new("run template"))
        .map_err(|e| RunError::Template(e.to_string()))?;
    let inputs = inputs::gather(&mut tx, &run, &p).await?;
    let results = p.evaluate_criteria(&inputs.values);
    let mut per = Vec::with_capacity(results.len());
    let mut json_results = Vec::with_capacity(results.len());
    for (r, c) in results.iter().zip(&p.criteria) {
        let (j, v) = criterion_json(r, &c.description, &inputs);
        per.push((v, r.approval_required));
        json_results.push(j);
    }
    let (verdict, computed) = overall(&per);
    let results = Value::Array(json_results);
    let inputs_json = inputs.to_json();
    let simulated = run.time_scale.is_some_and(|t| t != 1.0);
    let previous = latest(&mut tx, run_id).await?;
    let matches = previous
        .as_ref()
        .map(|p| p.verdict == verdict && p.computed == computed && p.results == results);
    if let Some(prev) = &previous
        && !always_store
        && matches == Some(true)
        && prev.inputs == inputs_json
    {
        tx.commit().await?;
        return Ok(Outcome {
            evaluation: prev.clone(),
            stored: false,
        });
    }
    // The same outcome keeps the approval it stood under; a different one
    // needs its own.
    let approval_id = match (&previous, matches) {
        (Some(p), Some(true)) => p.approval_id,
        _ => None,
    };
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO run_evaluations (run_id, verdict, computed, simulated, template_sha256,
                inputs, results, matches_previous, trigger, evaluated_by, approval_id)
         VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         RETURNING evaluation_id",
    )
    .bind(run_id)
    .bind(verdict)
    .bind(computed)
    .bind(simulated)
    .bind(sha)
    .bind(&inputs_json)
    .bind(&results)
    .bind(matches)
    .bind(trigger)
    .bind(by)
    .bind(approval_id)
    .fetch_one(&mut *tx)
    .await?;
    let evaluation: Evaluation = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{EVALUATION_SELECT} WHERE e.evaluation_id = $1"
    )))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    super::outbox::evaluated(
        &mut tx,
        &run,
        &evaluation,
        previous.as_ref().map(|p| p.final_verdict.as_str()),
    )
    .await?;
    tx.commit().await?;
    super::verdicts::changed();
    metrics::counter!(crate::metric_names::HUB_RUN_EVALUATIONS_TOTAL, "verdict" => verdict)
        .increment(1);
    metrics::histogram!(crate::metric_names::HUB_RUN_EVALUATION_SECONDS)
        .record(started.elapsed().as_secs_f64());
    if let (Some(p), Some(false)) = (&previous, matches) {
        tracing::info!(run = %run_id, previous = %p.verdict, verdict, approval_dropped = p.approval_id.is_some(),
            "run re-evaluated with a different outcome");
    }
    tracing::info!(run = %run_id, verdict, computed, simulated, trigger, evaluation = id, "run evaluated");
    Ok(Outcome {
        evaluation,
        stored: true,
    })
}

/// Re-evaluates every completed run of a sample (oldest first), storing
/// only evaluations that changed: what a new run or observation on the
/// sample calls, since a stress test's `after.*` values come from later
/// runs and inspections. `except` is a run just evaluated. Returns the
/// evaluations stored.
pub async fn reevaluate_sample(
    pool: &PgPool,
    sample_id: &str,
    trigger: &str,
    except: Option<&str>,
) -> Result<Vec<Evaluation>, RunError> {
    let runs: Vec<String> = sqlx::query_scalar(
        "SELECT run_id::text FROM runs
          WHERE sample_id = $1 AND state = 'completed' AND started_seq IS NOT NULL
          ORDER BY started_at, run_id",
    )
    .bind(sample_id)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for r in runs.iter().filter(|r| Some(r.as_str()) != except) {
        let o = evaluate(pool, r, trigger, "hub", false).await?;
        if o.stored {
            out.push(o.evaluation);
        }
    }
    Ok(out)
}

/// After a batch with COMPLETED events is committed: evaluate each run,
/// then the other completed runs of its sample. Off the ingest path (the
/// caller spawns it); a failure is logged and counted, and
/// `POST /api/v1/runs/{id}/evaluate` does it again.
pub async fn on_completed(pool: PgPool, runs: Vec<String>) {
    for run in runs {
        let done = match evaluate(&pool, &run, "completed", "hub", true).await {
            Ok(_) => {
                let sample: Result<Option<String>, sqlx::Error> =
                    sqlx::query_scalar("SELECT sample_id FROM runs WHERE run_id = $1::uuid")
                        .bind(&run)
                        .fetch_one(&pool)
                        .await;
                match sample {
                    Ok(Some(s)) => {
                        reevaluate_sample(&pool, &s, &format!("run {run} completed"), Some(&run))
                            .await
                            .map(|_| ())
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            metrics::counter!(crate::metric_names::HUB_RUN_EVALUATION_ERRORS_TOTAL).increment(1);
            tracing::warn!(run = %run, error = %e, "automatic run evaluation failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::overall;

    #[test]
    fn the_overall_verdict() {
        assert_eq!(
            overall(&[("pass", false), ("pass", false)]),
            ("pass", "pass")
        );
        assert_eq!(
            overall(&[("pass", false), ("fail", false)]),
            ("fail", "fail")
        );
        // A missing input is never a pass, whatever else holds.
        assert_eq!(
            overall(&[("pass", false), ("no_verdict", false)]),
            ("no_verdict", "no_verdict")
        );
        assert_eq!(
            overall(&[("pass", false), ("pass", true)]),
            ("provisional", "pass")
        );
        assert_eq!(
            overall(&[("pass", false), ("fail", true)]),
            ("provisional", "fail")
        );
        // A failure no approval can change is final.
        assert_eq!(
            overall(&[("fail", false), ("pass", true)]),
            ("fail", "fail")
        );
    }
}
