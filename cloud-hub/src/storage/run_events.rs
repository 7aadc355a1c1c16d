//! A batch's protocol run events (`ReadingBatch.run_events`) into `run_events`
//! and the `runs` projection, inside the batch's transaction: stored once per
//! (gateway, seq) like readings, and the run's row recomputed from all its
//! events whenever one is new, so late, repeated or reordered events give
//! the same row. The ingest validated them (`crate::runs::validate`).

use super::StoreError;
use chrono::{DateTime, Utc};
use qi_proto::v1::{Reading, RunEvent, RunEventKind};
use sqlx::PgConnection;
use std::collections::{BTreeMap, BTreeSet};

/// The stored name of an event kind; None for unspecified or unknown kinds.
pub fn kind_name(kind: i32) -> Option<&'static str> {
    match RunEventKind::try_from(kind).ok()? {
        RunEventKind::Unspecified => None,
        k => Some(k.name()),
    }
}

/// The run states; a terminal one never changes again.
pub const TERMINAL_STATES: [&str; 3] = ["completed", "aborted", "failed"];

/// One stored event, as the projection reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub seq: i64,
    pub kind: String,
    pub ts: DateTime<Utc>,
    pub step: String,
    pub message: String,
}

/// What a run's events say about it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    pub state: &'static str,
    pub ended_at: Option<DateTime<Utc>>,
    pub current_step: Option<String>,
    pub last_message: Option<String>,
    pub last_seq: i64,
}

/// Folds a run's events in seq order (whatever order they arrived in): the
/// first terminal event ends the run for good; pauses and resumes switch
/// between paused and running; the current step is the last one started.
pub fn project(events: &[EventRow]) -> Projection {
    let mut sorted: Vec<&EventRow> = events.iter().collect();
    sorted.sort_by_key(|e| e.seq);
    let mut p = Projection {
        state: "running",
        ended_at: None,
        current_step: None,
        last_message: None,
        last_seq: 0,
    };
    for e in sorted {
        p.last_seq = e.seq;
        if !e.message.is_empty() {
            p.last_message = Some(e.message.clone());
        }
        if p.ended_at.is_some() {
            continue;
        }
        match e.kind.as_str() {
            "step_started" => p.current_step = Some(e.step.clone()),
            "paused" => p.state = "paused",
            "resumed" | "started" | "interrupted" => p.state = "running",
            k => {
                if let Some(t) = TERMINAL_STATES.iter().find(|t| **t == k) {
                    p.state = t;
                    p.ended_at = Some(e.ts);
                }
            }
        }
    }
    p
}

/// What a batch's run events changed.
#[derive(Debug, Default)]
pub struct RunsStored {
    /// Run events new to the database.
    pub events: u64,
    /// Runs whose COMPLETED event arrived with this batch: to evaluate once
    /// the batch and every batch before it are committed.
    pub completed: Vec<String>,
    /// Completed runs that got new readings with this batch: a batch
    /// redelivered after the one holding the COMPLETED event had committed
    /// (the stream broke in between). Their evaluation saw too little.
    pub late: Vec<String>,
}

fn micros(us: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default()
}

/// Stores the events not yet held and keeps the touched runs' rows current.
/// A run belongs to the gateway that first reported it: another gateway's
/// event or reading for it refuses the batch ([`StoreError::Refused`]).
pub(super) async fn record(
    conn: &mut PgConnection,
    gateway: &str,
    events: &[RunEvent],
    readings: &[Reading],
    readings_new: bool,
) -> Result<RunsStored, StoreError> {
    let runs: BTreeSet<&str> = events
        .iter()
        .map(|e| e.run_id.as_str())
        .chain(
            readings
                .iter()
                .filter(|r| !r.run_id.is_empty())
                .map(|r| r.run_id.as_str()),
        )
        .collect();
    if runs.is_empty() {
        return Ok(RunsStored::default());
    }
    // Sorted, so concurrent batches lock run rows in one order.
    let ids: Vec<&str> = runs.into_iter().collect();
    sqlx::query(
        "INSERT INTO runs (run_id, gateway_id)
         SELECT id, $2 FROM UNNEST($1::uuid[]) AS t(id) ORDER BY id
         ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(gateway)
    .execute(&mut *conn)
    .await?;
    let foreign: Vec<(String, String)> = sqlx::query_as(
        "SELECT run_id::text, gateway_id FROM runs
          WHERE run_id = ANY($1::uuid[]) AND gateway_id <> $2 ORDER BY run_id",
    )
    .bind(&ids)
    .bind(gateway)
    .fetch_all(&mut *conn)
    .await?;
    if let Some((run, owner)) = foreign.first() {
        return Err(StoreError::Refused(format!(
            "run {run} belongs to gateway {owner:?}; a gateway reports only its own runs"
        )));
    }
    // Before this batch's own events move any run to completed.
    let late: Vec<String> = if readings_new {
        let with_readings: Vec<&str> = readings
            .iter()
            .filter(|r| !r.run_id.is_empty())
            .map(|r| r.run_id.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        sqlx::query_scalar(
            "SELECT run_id::text FROM runs
              WHERE run_id = ANY($1::uuid[]) AND state = 'completed' ORDER BY run_id",
        )
        .bind(&with_readings)
        .fetch_all(&mut *conn)
        .await?
    } else {
        Vec::new()
    };
    if events.is_empty() {
        return Ok(RunsStored {
            late,
            ..RunsStored::default()
        });
    }
    let n = events.len();
    let (mut seq, mut run, mut kind, mut ts, mut step, mut message) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for e in events {
        seq.push(i64::try_from(e.seq).unwrap_or(i64::MAX));
        run.push(e.run_id.as_str());
        kind.push(kind_name(e.kind).unwrap_or("unspecified"));
        ts.push(micros(e.timestamp_us));
        step.push(e.step.as_str());
        message.push(e.message.as_str());
    }
    let new: Vec<(i64, String, String)> = sqlx::query_as(
        "INSERT INTO run_events (gateway_id, seq, run_id, kind, ts, step, message)
         SELECT $1, * FROM UNNEST($2::int8[], $3::uuid[], $4::text[], $5::timestamptz[], $6::text[], $7::text[])
         ON CONFLICT DO NOTHING
         RETURNING seq, run_id::text, kind",
    )
    .bind(gateway)
    .bind(&seq)
    .bind(&run)
    .bind(&kind)
    .bind(&ts)
    .bind(&step)
    .bind(&message)
    .fetch_all(&mut *conn)
    .await?;
    for (_, _, k) in &new {
        metrics::counter!(crate::metric_names::HUB_RUN_EVENTS_TOTAL, "kind" => k.clone())
            .increment(1);
    }
    let new_seqs: BTreeSet<i64> = new.iter().map(|(s, _, _)| *s).collect();
    for e in events {
        let s = i64::try_from(e.seq).unwrap_or(i64::MAX);
        if !new_seqs.contains(&s) {
            continue;
        }
        if let Some(start) = &e.start {
            store_start(conn, e, s, start).await?;
        }
    }
    let touched: BTreeSet<&str> = new.iter().map(|(_, r, _)| r.as_str()).collect();
    for run_id in &touched {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT seq, kind, ts, step, message FROM run_events
              WHERE run_id = $1::uuid AND gateway_id = $2 ORDER BY seq",
        )
        .bind(run_id)
        .bind(gateway)
        .fetch_all(&mut *conn)
        .await?;
        let p = project(&rows);
        sqlx::query(
            "UPDATE runs SET state = $2, ended_at = $3, current_step = $4, last_message = $5,
                    last_seq = $6, updated_at = now()
              WHERE run_id = $1::uuid",
        )
        .bind(run_id)
        .bind(p.state)
        .bind(p.ended_at)
        .bind(&p.current_step)
        .bind(&p.last_message)
        .bind(p.last_seq)
        .execute(&mut *conn)
        .await?;
    }
    let completed: BTreeMap<&str, ()> = new
        .iter()
        .filter(|(_, _, k)| k == "completed")
        .map(|(_, r, _)| (r.as_str(), ()))
        .collect();
    Ok(RunsStored {
        events: new.len() as u64,
        completed: completed.into_keys().map(str::to_string).collect(),
        late,
    })
}

/// The STARTED event's content: template, parameters, sample, bench.
async fn store_start(
    conn: &mut PgConnection,
    e: &RunEvent,
    seq: i64,
    start: &qi_proto::v1::RunStart,
) -> Result<(), StoreError> {
    let parameters: serde_json::Map<String, serde_json::Value> = start
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!(v)))
        .collect();
    let bindings: Vec<serde_json::Value> = start.bindings.iter().map(bench_point_json).collect();
    sqlx::query(
        "UPDATE runs SET started_seq = $2, bench_id = $3, sample_id = $4, protocol_id = $5,
                protocol_version = $6, template_toml = $7, template_sha256 = $8,
                parameters = $9, operator = $10, time_scale = $11, bindings = $12,
                started_at = $13, updated_at = now()
          WHERE run_id = $1::uuid AND started_seq IS NULL",
    )
    .bind(&e.run_id)
    .bind(seq)
    .bind(&start.bench_id)
    .bind(&start.sample_id)
    .bind(&start.protocol_id)
    .bind(&start.protocol_version)
    .bind(&start.template_toml)
    .bind(&start.template_sha256)
    .bind(serde_json::Value::Object(parameters))
    .bind(&start.operator)
    .bind(start.time_scale)
    .bind(serde_json::Value::Array(bindings))
    .bind(micros(e.timestamp_us))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A bench point as the hub stores it (run bindings, bench twins).
pub fn bench_point_json(p: &qi_proto::v1::BenchPoint) -> serde_json::Value {
    serde_json::json!({
        "name": p.name,
        "device_id": p.device_id,
        "read_point": p.read_point,
        "write_point": p.write_point,
        "unit": p.unit,
        "min": p.min,
        "max": p.max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: i64, kind: &str, step: &str) -> EventRow {
        EventRow {
            seq,
            kind: kind.into(),
            ts: micros(1_700_000_000_000_000 + seq * 1_000_000),
            step: step.into(),
            message: if kind == "paused" {
                "chamber offline".into()
            } else {
                String::new()
            },
        }
    }

    #[test]
    fn the_projection_does_not_depend_on_arrival_order() {
        let events = vec![
            ev(1, "started", ""),
            ev(3, "step_started", "0"),
            ev(5, "paused", "0"),
            ev(6, "resumed", "0"),
            ev(8, "step_finished", "0"),
            ev(9, "step_started", "1"),
            ev(12, "completed", ""),
        ];
        let p = project(&events);
        assert_eq!(p.state, "completed");
        assert_eq!(p.current_step.as_deref(), Some("1"));
        assert_eq!(p.last_message.as_deref(), Some("chamber offline"));
        assert_eq!(p.last_seq, 12);
        assert_eq!(p.ended_at, Some(events[6].ts));
        let mut reversed = events.clone();
        reversed.reverse();
        assert_eq!(project(&reversed), p);
        // Up to the pause only: paused.
        assert_eq!(project(&events[..3]).state, "paused");
        // The first terminal event wins; nothing after it changes the state.
        let mut late = events.clone();
        late.push(ev(13, "aborted", ""));
        assert_eq!(project(&late).state, "completed");
    }

    #[test]
    fn every_kind_has_a_name_and_unspecified_has_none() {
        assert_eq!(kind_name(0), None);
        assert_eq!(kind_name(99), None);
        for k in 1..=10 {
            assert!(kind_name(k).is_some(), "{k}");
        }
        assert_eq!(kind_name(8), Some("completed"));
    }
}
