//! What a run's export holds: the run and its latest evaluation (fields),
//! the criteria with verdicts and explanations, and every reading of the
//! run's series, read in pages as the file is written.

use super::columns::{CRITERIA, READINGS, RUN};
use super::stream::{Export, Rows, Table};
use super::{Cell, ExportError, PAGE_ROWS};
use crate::runs::RunRow;
use crate::runs::evaluation::Evaluation;
use crate::runs::query::{self, RunSeries};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;

/// The run's fields, in `RUN`'s order.
fn run_fields(run: &RunRow, e: Option<&Evaluation>, now: DateTime<Utc>) -> Vec<Cell> {
    let approval = e.and_then(|e| e.approval.as_ref());
    let a = |k: &str| approval.and_then(|a| a[k].as_str()).map(str::to_string);
    let simulated = e
        .map(|e| e.simulated)
        .or_else(|| run.time_scale.map(|t| t != 1.0));
    let approved_at = a("decided_at")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));
    vec![
        Cell::text(&run.run_id),
        Cell::opt_text(run.protocol_id.clone()),
        Cell::opt_text(run.protocol_version.clone()),
        Cell::opt_text(run.template_sha256.clone()),
        Cell::opt_text(run.sample_id.clone()),
        Cell::opt_text(run.bench_id.clone()),
        Cell::text(&run.gateway_id),
        Cell::opt_text(run.operator.clone()),
        Cell::text(&run.state),
        Cell::opt_time(run.started_at),
        Cell::opt_time(run.ended_at),
        Cell::opt_number(run.time_scale),
        simulated.map_or(Cell::Empty, Cell::Bool),
        Cell::Json(run.parameters.clone()),
        e.map_or(Cell::Empty, |e| Cell::Int(e.evaluation_id)),
        Cell::opt_time(e.map(|e| e.evaluated_at)),
        Cell::opt_text(e.map(|e| e.verdict.clone())),
        Cell::opt_text(e.map(|e| e.computed.clone())),
        Cell::opt_text(e.map(|e| e.final_verdict.clone())),
        Cell::opt_text(a("decision")),
        Cell::opt_text(a("decided_by")),
        Cell::opt_time(approved_at),
        Cell::opt_text(a("comment")),
        Cell::Time(now),
    ]
}

/// One row per criterion of the evaluation, in the template's order.
fn criteria_rows(e: Option<&Evaluation>) -> Vec<Vec<Cell>> {
    let Some(results) = e.and_then(|e| e.results.as_array()) else {
        return Vec::new();
    };
    results
        .iter()
        .map(|r| {
            let s = |k: &str| Cell::opt_text(r[k].as_str());
            // The first check's value and limit (a criterion has one check
            // but for `between`-style templates; the explanation has all).
            let check = &r["checks"][0];
            vec![
                s("id"),
                s("description"),
                s("verdict"),
                r["approval_required"]
                    .as_bool()
                    .map_or(Cell::Empty, Cell::Bool),
                s("unit"),
                Cell::opt_number(check["value"].as_f64()),
                Cell::opt_text(check["op"].as_str()),
                Cell::opt_number(check["limit"].as_f64()),
                s("explanation"),
            ]
        })
        .collect()
}

/// The run's readings series by series (ordered by run series name), each
/// in time order, `PAGE_ROWS` per query on the index (series_id, ts, seq).
pub struct ReadingsPager {
    series: Vec<RunSeries>,
    at: usize,
    after: Option<(DateTime<Utc>, i64)>,
    /// (seq, step) of the run's STEP_STARTED events, in seq order.
    steps: Vec<(i64, String)>,
}

impl ReadingsPager {
    pub async fn new(pool: &PgPool, run_id: &str) -> Result<ReadingsPager, sqlx::Error> {
        let series = query::series(pool, run_id).await?;
        let steps = sqlx::query_as(
            "SELECT seq, step FROM run_events WHERE run_id = $1::uuid AND kind = 'step_started'
              ORDER BY seq",
        )
        .bind(run_id)
        .fetch_all(pool)
        .await?;
        Ok(ReadingsPager {
            series,
            at: 0,
            after: None,
            steps,
        })
    }

    /// How many readings the run has (the xlsx cap is checked before the
    /// first byte goes out).
    pub async fn count(&self, pool: &PgPool) -> Result<u64, sqlx::Error> {
        let ids: Vec<i32> = self.series.iter().map(|s| s.series_id).collect();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM samples WHERE series_id = ANY($1)")
            .bind(&ids)
            .fetch_one(pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    /// The step a reading belongs to: the last STEP_STARTED before it.
    fn step(&self, seq: i64) -> Cell {
        let i = self.steps.partition_point(|(s, _)| *s < seq);
        match i.checked_sub(1) {
            Some(i) => Cell::text(&self.steps[i].1),
            None => Cell::Empty,
        }
    }

    /// The next page, or None when every series is done.
    pub async fn next_page(
        &mut self,
        pool: &PgPool,
    ) -> Result<Option<Vec<Vec<Cell>>>, sqlx::Error> {
        type Sample = (DateTime<Utc>, i64, f64, i16);
        while let Some(s) = self.series.get(self.at) {
            let rows: Vec<Sample> = match self.after {
                None => {
                    sqlx::query_as(
                        "SELECT ts, seq, value, quality FROM samples WHERE series_id = $1
                      ORDER BY ts, seq LIMIT $2",
                    )
                    .bind(s.series_id)
                    .bind(PAGE_ROWS)
                    .fetch_all(pool)
                    .await?
                }
                Some((ts, seq)) => {
                    sqlx::query_as(
                        "SELECT ts, seq, value, quality FROM samples
                      WHERE series_id = $1 AND (ts, seq) > ($2, $3)
                      ORDER BY ts, seq LIMIT $4",
                    )
                    .bind(s.series_id)
                    .bind(ts)
                    .bind(seq)
                    .bind(PAGE_ROWS)
                    .fetch_all(pool)
                    .await?
                }
            };
            if (rows.len() as i64) < PAGE_ROWS {
                self.at += 1;
                self.after = None;
            } else {
                self.after = rows.last().map(|r| (r.0, r.1));
            }
            if rows.is_empty() {
                continue;
            }
            let out = rows
                .into_iter()
                .map(|(ts, seq, value, quality)| {
                    vec![
                        Cell::Time(ts),
                        Cell::text(&s.series),
                        Cell::text(&s.device_id),
                        Cell::text(&s.metric),
                        Cell::text(&s.unit),
                        Cell::Number(value),
                        Cell::Int(i64::from(quality)),
                        Cell::Int(seq),
                        self.step(seq),
                    ]
                })
                .collect();
            return Ok(Some(out));
        }
        Ok(None)
    }
}

/// The export of a run the caller may see (the API checked).
pub async fn export(pool: &PgPool, run: RunRow) -> Result<Export, ExportError> {
    let evaluation = query::latest_evaluation(pool, &run.run_id).await?;
    let steps = query::steps(pool, &run.run_id).await?;
    let now = Utc::now();
    let pager = ReadingsPager::new(pool, &run.run_id).await?;
    let extra: Vec<(&'static str, Value)> =
        vec![("evaluation", json!(evaluation)), ("steps", json!(steps))];
    Ok(Export {
        format: "qi-run-export/1",
        stem: format!("run-{}", run.run_id),
        extra,
        tables: vec![
            Table {
                spec: &RUN,
                rows: Rows::Ready(vec![run_fields(&run, evaluation.as_ref(), now)]),
            },
            Table {
                spec: &CRITERIA,
                rows: Rows::Ready(criteria_rows(evaluation.as_ref())),
            },
            Table {
                spec: &READINGS,
                rows: Rows::Readings(Box::new(pager)),
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_has_a_cell_per_field() {
        let run = RunRow {
            run_id: "r".into(),
            gateway_id: "g".into(),
            bench_id: None,
            sample_id: None,
            protocol_id: None,
            protocol_version: None,
            template_sha256: None,
            parameters: json!({}),
            operator: None,
            time_scale: Some(60.0),
            bindings: json!([]),
            state: "completed".into(),
            started_at: None,
            ended_at: None,
            current_step: None,
            last_message: None,
            last_seq: 0,
            start_received: true,
            first_seen: Utc::now(),
            updated_at: Utc::now(),
            template_toml: None,
        };
        let f = run_fields(&run, None, Utc::now());
        assert_eq!(f.len(), RUN.columns.len());
        assert_eq!(f[12], Cell::Bool(true), "time_scale 60 is simulated");
        assert!(criteria_rows(None).is_empty());
    }
}
