//! What is checked before a run starts, so that a run never begins on a
//! bench that cannot do it: the parameters against the template, every
//! point and instrument against the bench's mapping (and units), and every
//! value the run may write (setpoints, ramp targets, bias voltages and the
//! return to 0 V, the safe state) against the bench's limits.

use crate::benches::{Bench, BenchPoint};
use qi_protocol::units::{self, DurationSpec};
use qi_protocol::{Protocol, Quantity, Step};
use std::collections::BTreeMap;

/// Why a run was not started. Each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StartError {
    #[error("no protocol {0:?} is offered on this gateway")]
    UnknownProtocol(String),
    #[error("no bench {0:?} on this gateway")]
    UnknownBench(String),
    #[error("bench {bench:?} cannot run protocols now: {reason}")]
    BenchUnavailable { bench: String, reason: String },
    #[error("parameter {0}")]
    Parameter(String),
    #[error("the bench cannot run this protocol: {0}")]
    Binding(String),
    #[error("{0}")]
    Limit(String),
    #[error("bench {bench:?} is running run {run}")]
    BenchBusy { bench: String, run: String },
    #[error("sample {sample:?} is under run {run} on this gateway")]
    SampleBusy { sample: String, run: String },
    #[error("sample_id {0}")]
    BadSample(String),
    #[error("cannot record the run: {0}")]
    Storage(String),
    /// An instrument of the bench is past its calibration's due date (or
    /// has none known while `runs.require_calibration` is on).
    #[error("{message}")]
    Calibration {
        device: String,
        due: Option<String>,
        message: String,
    },
}

/// The parameters of a run: every one of the template's, defaults filled in.
pub fn parameters(
    p: &Protocol,
    given: &BTreeMap<String, f64>,
) -> Result<BTreeMap<String, f64>, StartError> {
    if let Some(unknown) = given
        .keys()
        .find(|k| !p.parameters.iter().any(|q| &q.name == *k))
    {
        return Err(StartError::Parameter(format!(
            "{unknown:?} is not a parameter of {}",
            p.protocol.id
        )));
    }
    let mut out = BTreeMap::new();
    for q in &p.parameters {
        let Some(v) = given.get(&q.name).copied().or(q.default) else {
            return Err(StartError::Parameter(format!(
                "{:?} ({}) has no default: the run must give it",
                q.name, q.unit
            )));
        };
        if !v.is_finite() {
            return Err(StartError::Parameter(format!(
                "{:?} must be a finite number",
                q.name
            )));
        }
        if q.min.is_some_and(|m| v < m) || q.max.is_some_and(|m| v > m) {
            return Err(StartError::Parameter(format!(
                "{:?} = {v} {} is outside {}..{}",
                q.name,
                q.unit,
                q.min.map_or("".into(), |m| m.to_string()),
                q.max.map_or("".into(), |m| m.to_string()),
            )));
        }
        out.insert(q.name.clone(), v);
    }
    Ok(out)
}

/// A number or a parameter's value.
pub fn value(q: &Quantity, params: &BTreeMap<String, f64>) -> Option<f64> {
    match q {
        Quantity::Number(n) => Some(*n),
        Quantity::Parameter(name) => params.get(name).copied(),
    }
}

/// A duration in (simulated) seconds.
pub fn seconds(p: &Protocol, s: &str, params: &BTreeMap<String, f64>) -> Option<f64> {
    match units::parse_duration(s).ok()? {
        DurationSpec::Seconds(x) => Some(x),
        DurationSpec::Parameter(name) => {
            let unit = &p.parameters.iter().find(|q| q.name == name)?.unit;
            Some(params.get(&name)? * units::seconds_per(unit)?)
        }
    }
}

/// A value the bench's limits refuse, if so.
pub fn check_limit(bp: &BenchPoint, value: f64, what: &str) -> Result<(), StartError> {
    let below = bp.min.is_some_and(|m| value < m);
    let above = bp.max.is_some_and(|m| value > m);
    if below || above || !value.is_finite() {
        return Err(StartError::Limit(format!(
            "{what}: {value} {} on {} is outside the bench's limits {}..{}",
            bp.unit,
            bp.name,
            bp.min.map_or("".into(), |m| m.to_string()),
            bp.max.map_or("".into(), |m| m.to_string()),
        )));
    }
    Ok(())
}

fn point<'a>(
    bench: &'a Bench,
    name: &str,
    unit: Option<&str>,
    write: bool,
) -> Result<&'a BenchPoint, StartError> {
    let bp = bench.points.get(name).ok_or_else(|| {
        StartError::Binding(format!("bench {:?} maps no point {name:?}", bench.id))
    })?;
    if write && bp.write.is_none() {
        return Err(StartError::Binding(format!(
            "{name} is written by the protocol but bench {:?} maps no write point for it",
            bench.id
        )));
    }
    if !write && bp.read.is_none() {
        return Err(StartError::Binding(format!(
            "{name} is read by the protocol but bench {:?} maps no read point for it",
            bench.id
        )));
    }
    if let Some(u) = unit
        && u != bp.unit
    {
        return Err(StartError::Binding(format!(
            "{name} is in {u} in the template but in {} on bench {:?} (no conversion is made)",
            bp.unit, bench.id
        )));
    }
    Ok(bp)
}

/// Checks the template against the bench with these parameters.
pub fn check(
    p: &Protocol,
    bench: &Bench,
    params: &BTreeMap<String, f64>,
) -> Result<(), StartError> {
    for r in &p.record {
        point(bench, &r.point, Some(&r.unit), false)?;
    }
    check_steps(p, &p.steps, bench, params, "steps")?;
    for (i, s) in p.safe_state.setpoints.iter().enumerate() {
        let bp = point(bench, &s.point, Some(&s.unit), true)?;
        check_limit(bp, s.value, &format!("safe_state.setpoints[{i}]"))?;
    }
    Ok(())
}

fn check_steps(
    p: &Protocol,
    steps: &[Step],
    bench: &Bench,
    params: &BTreeMap<String, f64>,
    at: &str,
) -> Result<(), StartError> {
    let missing = |what: &str| StartError::Parameter(format!("{what} has no value"));
    for (i, s) in steps.iter().enumerate() {
        let here = format!("{at}[{i}] ({})", s.kind());
        match s {
            Step::Setpoint {
                point: name,
                unit,
                value: v,
                ramp_per_h,
                ..
            } => {
                let bp = point(bench, name, Some(unit), true)?;
                let v = value(v, params).ok_or_else(|| missing(&here))?;
                check_limit(bp, v, &here)?;
                if let Some(r) = ramp_per_h {
                    let r = value(r, params).ok_or_else(|| missing(&here))?;
                    if !(r > 0.0 && r.is_finite()) {
                        return Err(StartError::Parameter(format!(
                            "{here}: ramp_per_h {r} must be > 0"
                        )));
                    }
                }
            }
            Step::WaitUntil {
                condition,
                hold,
                timeout,
                ..
            } => {
                let e = qi_protocol::expr::parse(condition)
                    .map_err(|e| StartError::Binding(format!("{here}: {e}")))?;
                for n in e.names() {
                    if n.contains('.') {
                        point(bench, n, None, false)?;
                    } else if !params.contains_key(n) {
                        return Err(missing(&format!("{here}: {n}")));
                    }
                }
                for d in [hold, timeout] {
                    seconds(p, d, params).ok_or_else(|| missing(&format!("{here}: {d}")))?;
                }
            }
            Step::Dwell { duration, .. } => {
                seconds(p, duration, params).ok_or_else(|| missing(&here))?;
            }
            Step::Repeat { steps, .. } => {
                check_steps(p, steps, bench, params, &format!("{here}.steps"))?
            }
            Step::Measure { points, .. } => {
                for m in points {
                    point(bench, &m.point, Some(&m.unit), false)?;
                }
            }
            Step::IvSweep {
                instrument,
                start_v,
                stop_v,
                ..
            } => {
                if !bench.instruments.contains_key(instrument) {
                    return Err(StartError::Binding(format!(
                        "{here}: bench {:?} has no instrument {instrument:?}",
                        bench.id
                    )));
                }
                let a = value(start_v, params).ok_or_else(|| missing(&here))?;
                let b = value(stop_v, params).ok_or_else(|| missing(&here))?;
                if a >= b {
                    return Err(StartError::Parameter(format!(
                        "{here}: start_v {a} V must be below stop_v {b} V"
                    )));
                }
            }
            Step::ApplyBias {
                point: name,
                voltage,
                duration,
                ..
            } => {
                let bp = point(bench, name, Some("V"), true)?;
                let v = value(voltage, params).ok_or_else(|| missing(&here))?;
                check_limit(bp, v, &here)?;
                check_limit(bp, 0.0, &format!("{here} (the return to 0 V)"))?;
                seconds(p, duration, params).ok_or_else(|| missing(&here))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
