//! A run's evaluation inputs from what is stored: the values its labels
//! recorded (the last by seq), its record series' aggregates (in SQL, over
//! every reading), the sample's values from other runs and observations
//! (the before/after rule), and its parameters.

use super::RunRow;
use chrono::{DateTime, Utc};
use qi_protocol::{Protocol, RECORD_AGGREGATES, ValueSource};
use serde_json::{Value, json};
use sqlx::PgConnection;
use std::collections::BTreeMap;

/// Readings of this quality (bad) are left out of values and aggregates.
const BAD_QUALITY: i16 = 3;

/// The inputs and where each came from.
#[derive(Debug, Default)]
pub struct Inputs {
    pub values: BTreeMap<String, f64>,
    /// name -> {"from": "run"|"sample_run"|"observation"|"parameter", ...}
    pub sources: BTreeMap<String, Value>,
    /// Sample values that could not be resolved, with why.
    pub missing: BTreeMap<String, String>,
}

impl Inputs {
    pub fn to_json(&self) -> Value {
        json!({"values": self.values, "sources": self.sources, "missing": self.missing})
    }
}

/// The last value (by seq) of each of the run's series but the record
/// series and IV curves: `<label>.<name>`.
async fn label_values(
    conn: &mut PgConnection,
    run_id: &str,
    records: &[String],
) -> Result<Vec<(String, f64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT ON (s.run_series) s.run_series, x.value, x.seq
           FROM series s JOIN samples x ON x.series_id = s.series_id
          WHERE s.run_id = $1::uuid AND s.run_series <> ALL($2::text[])
            AND s.run_series NOT LIKE '%.curve' AND x.quality <> $3
          ORDER BY s.run_series, x.seq DESC",
    )
    .bind(run_id)
    .bind(records)
    .bind(BAD_QUALITY)
    .fetch_all(conn)
    .await
}

/// min, max, mean and count of each named record series of the run.
async fn aggregates(
    conn: &mut PgConnection,
    run_id: &str,
    records: &[String],
) -> Result<Vec<(String, f64, f64, f64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.run_series, min(x.value), max(x.value), avg(x.value), count(*)
           FROM series s JOIN samples x ON x.series_id = s.series_id
          WHERE s.run_id = $1::uuid AND s.run_series = ANY($2::text[]) AND x.quality <> $3
          GROUP BY s.run_series",
    )
    .bind(run_id)
    .bind(records)
    .bind(BAD_QUALITY)
    .fetch_all(conn)
    .await
}

/// One value another run recorded: its label's last value, or for
/// `<record>.min|max|mean` the aggregate.
async fn value_of_run(
    conn: &mut PgConnection,
    run_id: &str,
    value: &str,
) -> Result<Option<f64>, sqlx::Error> {
    let last: Option<(String, f64, i64)> = label_values(conn, run_id, &[])
        .await?
        .into_iter()
        .find(|(n, _, _)| n == value);
    if let Some((_, v, _)) = last {
        return Ok(Some(v));
    }
    let Some((record, agg)) = value.rsplit_once('.') else {
        return Ok(None);
    };
    if !RECORD_AGGREGATES.contains(&agg) {
        return Ok(None);
    }
    let rows = aggregates(conn, run_id, &[record.to_string()]).await?;
    Ok(rows.first().map(|(_, min, max, mean, _)| match agg {
        "min" => *min,
        "max" => *max,
        _ => *mean,
    }))
}

/// The other run a `before.`/`after.` value comes from, by the rule:
/// before = the latest completed run of that protocol on the sample that
/// ended before this run started; after = the earliest completed one that
/// started after this run ended.
async fn other_run(
    conn: &mut PgConnection,
    run: &RunRow,
    protocol: &str,
    before: bool,
) -> Result<Option<(String, DateTime<Utc>, DateTime<Utc>)>, sqlx::Error> {
    let sql = if before {
        "SELECT run_id::text, started_at, ended_at FROM runs
          WHERE sample_id = $1 AND protocol_id = $2 AND state = 'completed'
            AND ended_at < $3 AND run_id <> $4::uuid
          ORDER BY ended_at DESC, run_id LIMIT 1"
    } else {
        "SELECT run_id::text, started_at, ended_at FROM runs
          WHERE sample_id = $1 AND protocol_id = $2 AND state = 'completed'
            AND started_at > $3 AND run_id <> $4::uuid
          ORDER BY started_at, run_id LIMIT 1"
    };
    let at = if before { run.started_at } else { run.ended_at };
    sqlx::query_as(sql)
        .bind(&run.sample_id)
        .bind(protocol)
        .bind(at)
        .bind(&run.run_id)
        .fetch_optional(conn)
        .await
}

/// The observation a value comes from, by the same rule.
async fn observation(
    conn: &mut PgConnection,
    run: &RunRow,
    name: &str,
    before: bool,
) -> Result<Option<(i64, f64, String, DateTime<Utc>, String)>, sqlx::Error> {
    let sql = if before {
        "SELECT observation_id, value, unit, observed_at, source FROM sample_observations
          WHERE sample_id = $1 AND name = $2 AND observed_at < $3
          ORDER BY observed_at DESC, observation_id DESC LIMIT 1"
    } else {
        "SELECT observation_id, value, unit, observed_at, source FROM sample_observations
          WHERE sample_id = $1 AND name = $2 AND observed_at > $3
          ORDER BY observed_at, observation_id LIMIT 1"
    };
    let at = if before { run.started_at } else { run.ended_at };
    sqlx::query_as(sql)
        .bind(&run.sample_id)
        .bind(name)
        .bind(at)
        .fetch_optional(conn)
        .await
}

/// Everything a run's criteria read, from the stored data.
pub async fn gather(
    conn: &mut PgConnection,
    run: &RunRow,
    p: &Protocol,
) -> Result<Inputs, sqlx::Error> {
    let mut out = Inputs::default();
    let records: Vec<String> = p.record.iter().map(|r| r.name.clone()).collect();
    // Only what the template's steps record: a series a gateway tagged
    // `before.pmax` or with a parameter's name never becomes an input.
    let labels = p.recorded_values();
    for (name, value, seq) in label_values(conn, &run.run_id, &records).await? {
        if !labels.contains(&name) {
            continue;
        }
        out.sources
            .insert(name.clone(), json!({"from": "run", "last_seq": seq}));
        out.values.insert(name, value);
    }
    for (name, min, max, mean, n) in aggregates(conn, &run.run_id, &records).await? {
        for (agg, v) in [("min", min), ("max", max), ("mean", mean)] {
            let key = format!("{name}.{agg}");
            out.sources
                .insert(key.clone(), json!({"from": "run", "readings": n}));
            out.values.insert(key, v);
        }
    }
    for sv in &p.sample_values {
        let (Some((when, _)), Some(source)) = (sv.when(), sv.source.get()) else {
            continue;
        };
        let before = when == "before";
        let at = if before { run.started_at } else { run.ended_at };
        if at.is_none() {
            out.missing.insert(
                sv.name.clone(),
                "the run has no start or end time to compare with".into(),
            );
            continue;
        }
        match source {
            ValueSource::Run { protocol, value } => {
                match other_run(conn, run, protocol, before).await? {
                    None => {
                        out.missing.insert(
                            sv.name.clone(),
                            format!(
                                "no completed {protocol} run on {} {} this run",
                                run.sample_id.as_deref().unwrap_or("?"),
                                if before {
                                    "ended before"
                                } else {
                                    "started after"
                                }
                            ),
                        );
                    }
                    Some((other, started, ended)) => match value_of_run(conn, &other, value).await?
                    {
                        Some(v) => {
                            out.values.insert(sv.name.clone(), v);
                            out.sources.insert(
                                sv.name.clone(),
                                json!({"from": "sample_run", "protocol": protocol, "value": value,
                                       "run_id": other, "started_at": started, "ended_at": ended}),
                            );
                        }
                        None => {
                            out.missing.insert(
                                sv.name.clone(),
                                format!("{protocol} run {other} recorded no {value}"),
                            );
                        }
                    },
                }
            }
            ValueSource::Observation(name) => match observation(conn, run, name, before).await? {
                None => {
                    out.missing.insert(
                        sv.name.clone(),
                        format!(
                            "no observation {name} of {} {} this run",
                            run.sample_id.as_deref().unwrap_or("?"),
                            if before { "before" } else { "after" }
                        ),
                    );
                }
                Some((id, _, unit, _, _)) if !unit.is_empty() && unit != sv.unit => {
                    out.missing.insert(
                        sv.name.clone(),
                        format!(
                            "observation {id} ({name}) is in {unit}; the template needs {}",
                            sv.unit
                        ),
                    );
                }
                Some((id, v, _, observed_at, source)) => {
                    out.values.insert(sv.name.clone(), v);
                    out.sources.insert(
                        sv.name.clone(),
                        json!({"from": "observation", "observation_id": id, "name": name,
                               "observed_at": observed_at, "source": source}),
                    );
                }
            },
        }
    }
    // Only the template's own parameters: a name the template does not
    // declare (a forged `stc.pmax`) never becomes an input.
    for par in &p.parameters {
        let given = run.parameters.get(&par.name).and_then(Value::as_f64);
        if let Some(v) = given.or(par.default) {
            out.values.insert(par.name.clone(), v);
            out.sources.insert(
                par.name.clone(),
                json!({"from": "parameter", "given": given.is_some()}),
            );
        }
    }
    Ok(out)
}
