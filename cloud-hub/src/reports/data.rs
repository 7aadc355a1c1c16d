//! What the reports draw, read from the database: a run's IV sweep (the
//! `<label>.curve` series, voltage and current paired in seq order), its
//! chamber profile (a temperature record series) and the setpoint the
//! template asked for over time, and the run's step events for the
//! timeline. Every read is bounded ([`super::MAX_SERIES_READINGS`],
//! [`super::MAX_EVENTS`]).

use super::{MAX_EVENTS, MAX_SERIES_READINGS, ReportError};
use crate::runs::RunRow;
use chrono::{DateTime, Utc};
use qi_protocol::{Protocol, Quantity, Step};
use serde_json::Value;
use sqlx::PgPool;
use std::collections::BTreeMap;

/// Readings of this quality (bad) are left out, as the evaluation does.
const BAD_QUALITY: i16 = 3;

/// An IV sweep: (voltage V, current A) in sweep order.
#[derive(Debug, Clone, Default)]
pub struct IvCurve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

impl IvCurve {
    /// The point of maximum power: (V, I, P).
    pub fn pmax(&self) -> Option<(f64, f64, f64)> {
        self.points
            .iter()
            .map(|&(v, i)| (v, i, v * i))
            .filter(|p| p.2.is_finite())
            .max_by(|a, b| a.2.total_cmp(&b.2))
    }
}

/// A record series over the run and the template's setpoint for it.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// The record series' name (`chamber_temperature`).
    pub series: String,
    pub unit: String,
    /// (hours since the run's start, value).
    pub points: Vec<(f64, f64)>,
    /// The setpoint as a step line (ramps as slopes), same axes.
    pub setpoint: Vec<(f64, f64)>,
    /// More readings than the cap: only the first were read.
    pub truncated: bool,
}

/// What a run's charts need.
#[derive(Debug, Clone, Default)]
pub struct RunCharts {
    pub iv: Option<IvCurve>,
    pub chamber: Option<Profile>,
}

/// One step event of the timeline.
#[derive(Debug, Clone)]
pub struct StepEvent {
    pub seq: i64,
    pub kind: String,
    pub ts: DateTime<Utc>,
    pub step: String,
    pub message: String,
}

/// The run's events in seq order, at most [`MAX_EVENTS`] (and whether
/// there were more).
pub async fn events(pool: &PgPool, run_id: &str) -> Result<(Vec<StepEvent>, bool), ReportError> {
    let rows: Vec<(i64, String, DateTime<Utc>, String, String)> = sqlx::query_as(
        "SELECT seq, kind, ts, step, message FROM run_events
          WHERE run_id = $1::uuid ORDER BY seq LIMIT $2",
    )
    .bind(run_id)
    .bind(MAX_EVENTS as i64 + 1)
    .fetch_all(pool)
    .await?;
    let more = rows.len() > MAX_EVENTS;
    Ok((
        rows.into_iter()
            .take(MAX_EVENTS)
            .map(|(seq, kind, ts, step, message)| StepEvent {
                seq,
                kind,
                ts,
                step,
                message,
            })
            .collect(),
        more,
    ))
}

/// The IV curve of the run's first `*.curve` series, if it has one.
async fn iv_curve(pool: &PgPool, run_id: &str) -> Result<Option<IvCurve>, ReportError> {
    let rows: Vec<(String, String, f64)> = sqlx::query_as(
        "SELECT s.run_series, s.metric, x.value
           FROM series s JOIN samples x ON x.series_id = s.series_id
          WHERE s.run_id = $1::uuid AND s.run_series LIKE '%.curve'
            AND s.run_series = (SELECT min(run_series) FROM series
                                 WHERE run_id = $1::uuid AND run_series LIKE '%.curve')
            AND x.quality <> $2
          ORDER BY x.seq LIMIT $3",
    )
    .bind(run_id)
    .bind(BAD_QUALITY)
    .bind(2 * MAX_SERIES_READINGS as i64)
    .fetch_all(pool)
    .await?;
    let Some(series) = rows.first().map(|r| r.0.clone()) else {
        return Ok(None);
    };
    Ok(Some(IvCurve {
        label: series.trim_end_matches(".curve").to_string(),
        points: pair_curve(rows.iter().map(|(_, m, v)| (m.as_str(), *v))),
    }))
}

/// Voltage and current readings, written as pairs, into points: each
/// current goes with the voltage before it.
pub fn pair_curve<'a>(readings: impl Iterator<Item = (&'a str, f64)>) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut v = None;
    for (metric, x) in readings {
        match metric {
            "voltage" => v = Some(x),
            "current" => {
                if let Some(volts) = v.take() {
                    out.push((volts, x));
                }
            }
            _ => {}
        }
    }
    out
}

/// The record series the chamber chart shows: one named like the chamber's
/// temperature, else the first recorded in Cel.
pub fn chamber_record(p: &Protocol) -> Option<&qi_protocol::Record> {
    p.record
        .iter()
        .find(|r| r.name.contains("chamber") && r.unit == "Cel")
        .or_else(|| p.record.iter().find(|r| r.unit == "Cel"))
}

/// The run's template, parsed (None: a run without one, or one that no
/// longer parses: no chamber chart then).
async fn template(pool: &PgPool, run_id: &str) -> Result<Option<Protocol>, ReportError> {
    let text: Option<Option<String>> =
        sqlx::query_scalar("SELECT template_toml FROM runs WHERE run_id = $1::uuid")
            .bind(run_id)
            .fetch_optional(pool)
            .await?;
    Ok(text
        .flatten()
        .and_then(|t| Protocol::parse(&t, std::path::Path::new("run template")).ok()))
}

async fn profile(
    pool: &PgPool,
    run: &RunRow,
    p: &Protocol,
    events: &[StepEvent],
) -> Result<Option<Profile>, ReportError> {
    let Some(rec) = chamber_record(p) else {
        return Ok(None);
    };
    let rows: Vec<(DateTime<Utc>, f64)> = sqlx::query_as(
        "SELECT x.ts, x.value FROM series s JOIN samples x ON x.series_id = s.series_id
          WHERE s.run_id = $1::uuid AND s.run_series = $2 AND x.quality <> $3
          ORDER BY x.ts, x.seq LIMIT $4",
    )
    .bind(&run.run_id)
    .bind(&rec.name)
    .bind(BAD_QUALITY)
    .bind(MAX_SERIES_READINGS as i64 + 1)
    .fetch_all(pool)
    .await?;
    let truncated = rows.len() > MAX_SERIES_READINGS;
    let t0 = run
        .started_at
        .or_else(|| rows.first().map(|r| r.0))
        .or_else(|| events.first().map(|e| e.ts));
    let Some(t0) = t0 else { return Ok(None) };
    let hours = |t: DateTime<Utc>| (t - t0).num_milliseconds() as f64 / 3.6e6;
    let points: Vec<(f64, f64)> = rows
        .iter()
        .take(MAX_SERIES_READINGS)
        .map(|(t, v)| (hours(*t), *v))
        .collect();
    let end = run
        .ended_at
        .map(hours)
        .into_iter()
        .chain(points.last().map(|p| p.0))
        .fold(0.0, f64::max);
    let starts: Vec<(f64, &str)> = events
        .iter()
        .filter(|e| e.kind == "step_started")
        .map(|e| (hours(e.ts), e.step.as_str()))
        .collect();
    let setpoint = setpoint_line(
        p,
        &rec.point,
        &parameters(p, &run.parameters),
        run.time_scale.unwrap_or(1.0),
        &starts,
        end,
    );
    Ok(Some(Profile {
        series: rec.name.clone(),
        unit: rec.unit.clone(),
        points,
        setpoint,
        truncated,
    }))
}

/// The run's parameter values: given, else the template's defaults.
pub fn parameters(p: &Protocol, given: &Value) -> BTreeMap<String, f64> {
    p.parameters
        .iter()
        .filter_map(|par| {
            given
                .get(&par.name)
                .and_then(Value::as_f64)
                .or(par.default)
                .map(|v| (par.name.clone(), v))
        })
        .collect()
}

/// The step a path of the run contract names (`"3:17/1"`: the second
/// step inside the 17th pass of step 3).
pub fn step_at<'a>(p: &'a Protocol, path: &str) -> Option<&'a Step> {
    let mut steps: &[Step] = &p.steps;
    let mut parts = path.split('/').peekable();
    while let Some(part) = parts.next() {
        let idx: usize = part.split(':').next()?.parse().ok()?;
        let step = steps.get(idx)?;
        if parts.peek().is_none() {
            return Some(step);
        }
        match step {
            Step::Repeat { steps: inner, .. } => steps = inner,
            _ => return None,
        }
    }
    None
}

/// The setpoint of `point` over the run, from the template's setpoint
/// steps and when each started (hours): the gateway does not record what
/// it wrote, so this is what the template asked for, not a reading. A ramp
/// runs at its rate (per hour of the template's time, so `time_scale`
/// times faster on a simulated run's clock).
pub fn setpoint_line(
    p: &Protocol,
    point: &str,
    params: &BTreeMap<String, f64>,
    time_scale: f64,
    starts: &[(f64, &str)],
    end: f64,
) -> Vec<(f64, f64)> {
    let value = |q: &Quantity| match q {
        Quantity::Number(n) => Some(*n),
        Quantity::Parameter(name) => params.get(name).copied(),
    };
    let mut line: Vec<(f64, f64)> = Vec::new();
    for &(t, path) in starts {
        let Some(Step::Setpoint {
            point: sp,
            value: q,
            ramp_per_h,
            ..
        }) = step_at(p, path)
        else {
            continue;
        };
        let Some(to) = (sp == point).then(|| value(q)).flatten() else {
            continue;
        };
        let from = line.last().map(|l| l.1);
        if let Some(f) = from {
            line.push((t, f));
        }
        match (from, ramp_per_h.as_ref().and_then(value)) {
            (Some(f), Some(rate)) if rate > 0.0 && time_scale > 0.0 => {
                let dur = (to - f).abs() / rate / time_scale;
                line.push((t + dur, to));
            }
            _ => line.push((t, to)),
        }
    }
    if let Some(&(t, v)) = line.last()
        && end > t
    {
        line.push((end, v));
    }
    line
}

/// The charts of a run: its IV curve and chamber profile, where it has them.
pub async fn run_charts(
    pool: &PgPool,
    run: &RunRow,
    events: &[StepEvent],
) -> Result<RunCharts, ReportError> {
    let iv = iv_curve(pool, &run.run_id).await?;
    let chamber = match template(pool, &run.run_id).await? {
        Some(p) => profile(pool, run, &p, events).await?,
        None => None,
    };
    Ok(RunCharts { iv, chamber })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocol(id: &str) -> Protocol {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../protocols")
            .join(format!("{id}.toml"));
        let text = std::fs::read_to_string(&path).expect("template");
        Protocol::parse(&text, &path).expect("parses")
    }

    #[test]
    fn curves_pair_each_current_with_the_voltage_before_it() {
        let r = [
            ("voltage", 0.0),
            ("current", 9.8),
            ("voltage", 30.0),
            ("current", 9.5),
            ("current", 1.0),
            ("voltage", 48.0),
        ];
        assert_eq!(pair_curve(r.iter().copied()), vec![(0.0, 9.8), (30.0, 9.5)]);
        let c = IvCurve {
            label: "stc".into(),
            points: vec![(0.0, 9.8), (30.0, 9.5), (40.0, 8.0), (48.0, 0.0)],
        };
        assert_eq!(c.pmax(), Some((40.0, 8.0, 320.0)));
    }

    #[test]
    fn the_damp_heat_setpoint_follows_the_template_steps() {
        let p = protocol("dh1000");
        let rec = chamber_record(&p).expect("a chamber record");
        assert_eq!(rec.name, "chamber_temperature");
        let params = parameters(&p, &serde_json::json!({}));
        // The template's steps as a gateway reports them: every step path.
        let starts: Vec<(f64, String)> = (0..p.steps.len())
            .map(|i| (i as f64, i.to_string()))
            .collect();
        let starts: Vec<(f64, &str)> = starts.iter().map(|(t, s)| (*t, s.as_str())).collect();
        let line = setpoint_line(&p, &rec.point, &params, 1.0, &starts, 2000.0);
        assert!(line.len() >= 2, "{line:?}");
        assert_eq!(line.last().map(|l| l.0), Some(2000.0));
        let target = params.get("temperature").copied().expect("temperature");
        assert!(line.iter().any(|l| l.1 == target), "{line:?}");
        assert!(step_at(&p, "99").is_none());
        assert!(step_at(&p, "0:1/0").is_none(), "step 0 is not a repeat");
    }
}
