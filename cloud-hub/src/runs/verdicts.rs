//! What a gateway is told of its runs (`HubMessage.run_verdicts`, issue
//! #16): for each of its runs that ended within `RUN_VERDICT_DAYS` and has
//! been evaluated (the newest `MAX_RUN_VERDICTS`), the verdict that stands
//! and the newest certificate covering it, so the operators' page on the
//! gateway shows them. The signal moves on every evaluation, approval and
//! certificate issued, revoked or superseded; each uplink stream then
//! reads its gateway's list again (`crate::push`).

use crate::push::Signal;
use qi_proto::limits::{MAX_RUN_VERDICTS, RUN_VERDICT_DAYS};
use qi_proto::v1::{RunVerdict, RunVerdicts};
use sqlx::PgPool;

/// Moves when a verdict or a certificate of any run changes.
pub static SIGNAL: Signal = Signal::new();

/// A run was evaluated or decided, or a certificate covering runs was
/// issued, revoked or superseded: streams look again.
pub fn changed() {
    SIGNAL.changed();
}

#[derive(sqlx::FromRow)]
struct Row {
    run_id: String,
    final_verdict: String,
    computed: String,
    evaluation_id: i64,
    evaluated_ms: i64,
    decided_by: Option<String>,
    certificate_id: Option<String>,
    certificate_state: Option<String>,
    protocol_id: Option<String>,
    bench_id: Option<String>,
    sample_id: Option<String>,
    state: String,
    ended_ms: i64,
}

/// The list for `gateway`, the newest run first; `verification_url` makes a
/// certificate's public link (`certificates::Issuer::verification_url`).
pub async fn of_gateway(
    pool: &PgPool,
    gateway: &str,
    verification_url: &(dyn Fn(&str) -> String + Send + Sync),
) -> Result<RunVerdicts, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT r.run_id::text AS run_id, coalesce(a.final_verdict, e.verdict) AS final_verdict,
                e.computed, e.evaluation_id,
                (extract(epoch FROM e.evaluated_at) * 1000)::bigint AS evaluated_ms,
                a.decided_by, c.certificate_id, c.state AS certificate_state,
                r.protocol_id, r.bench_id, r.sample_id, r.state,
                (extract(epoch FROM r.ended_at) * 1000)::bigint AS ended_ms
           FROM (SELECT * FROM runs
                  WHERE gateway_id = $1 AND ended_at IS NOT NULL
                    AND ended_at > now() - make_interval(days => $2)
                  ORDER BY ended_at DESC LIMIT $3) r
           JOIN LATERAL (SELECT * FROM run_evaluations
                          WHERE run_id = r.run_id ORDER BY evaluation_id DESC LIMIT 1) e ON true
           LEFT JOIN run_approvals a ON a.approval_id = e.approval_id
           LEFT JOIN LATERAL (SELECT certificate_id, state FROM certificates
                               WHERE run_ids @> ARRAY[r.run_id]
                               ORDER BY state = 'valid' DESC, certificate_no DESC LIMIT 1) c ON true
          ORDER BY r.ended_at DESC, r.run_id",
    )
    .bind(gateway)
    .bind(i32::try_from(RUN_VERDICT_DAYS).unwrap_or(i32::MAX))
    .bind(i64::try_from(MAX_RUN_VERDICTS).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    Ok(RunVerdicts {
        runs: rows
            .into_iter()
            .map(|r| RunVerdict {
                verification_url: r
                    .certificate_id
                    .as_deref()
                    .map(verification_url)
                    .unwrap_or_default(),
                run_id: r.run_id,
                final_verdict: r.final_verdict,
                computed: r.computed,
                evaluation_id: r.evaluation_id,
                evaluated_at_unix_ms: r.evaluated_ms,
                decided_by: r.decided_by.unwrap_or_default(),
                certificate_id: r.certificate_id.unwrap_or_default(),
                certificate_state: r.certificate_state.unwrap_or_default(),
                protocol_id: r.protocol_id.unwrap_or_default(),
                bench_id: r.bench_id.unwrap_or_default(),
                sample_id: r.sample_id.unwrap_or_default(),
                run_state: r.state,
                ended_at_unix_ms: r.ended_ms,
            })
            .collect(),
    })
}
