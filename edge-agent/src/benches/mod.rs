//! Test benches: how a protocol template's points (`chamber.temperature`)
//! map to the points of this gateway's devices, and the bench's limits
//! (`[[benches]]` in the configuration), plus the `[runs]` settings of the
//! run engine. The file's shape is checked when the configuration loads
//! ([`validate`]); the mapping against the devices' firmware profiles once
//! they are loaded ([`resolve`]). The run engine (`runs`) executes on what
//! `resolve` returns; the uplink describes it to the hub (`Hello.benches`).

use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

/// `[runs]`: the protocol run engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsConfig {
    /// Folder of the protocol templates offered (`<id>.toml`).
    #[serde(default = "default_protocols_dir")]
    pub protocols_dir: PathBuf,
    /// Simulation only: the engine's clock runs this many times faster than
    /// wall time. Recorded in every run's start.
    #[serde(default = "default_time_scale")]
    pub time_scale: f64,
    /// Refuse runs on a bench with a device whose calibration the hub has
    /// not told this gateway (none recorded, or never heard). Off: only an
    /// expired calibration refuses (docs/calibration.md).
    #[serde(default)]
    pub require_calibration: bool,
}

impl Default for RunsConfig {
    fn default() -> Self {
        RunsConfig {
            protocols_dir: default_protocols_dir(),
            time_scale: default_time_scale(),
            require_calibration: false,
        }
    }
}

fn default_protocols_dir() -> PathBuf {
    PathBuf::from("/usr/share/edge-agent/protocols")
}
fn default_time_scale() -> f64 {
    1.0
}

/// Largest `runs.time_scale`: a minute of a protocol still lasts 60 us of
/// wall time, longer than a poll of a simulated device takes to matter.
pub const MAX_TIME_SCALE: f64 = 1_000_000.0;

/// One `[[benches]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchConfig {
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub points: Vec<BenchPointConfig>,
    #[serde(default)]
    pub instruments: Vec<InstrumentConfig>,
}

/// One `[[benches.points]]` table: a template point and the device points behind it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchPointConfig {
    /// `<role>.<point>` as templates write it.
    pub name: String,
    pub device: String,
    /// The device point read for it (conditions, measure, record).
    pub read: Option<String>,
    /// The device point written for it (setpoint, apply_bias); must be writable.
    pub write: Option<String>,
    /// The bench's limits: a setpoint outside them is refused.
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// One `[[benches.instruments]]` table: an instrument a step addresses whole (an SMU).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentConfig {
    pub name: String,
    pub device: String,
}

/// What the shape of `[[benches]]` and `[runs]` can get wrong, as (key, message).
pub fn validate(
    benches: &[BenchConfig],
    runs: &RunsConfig,
    devices: &HashSet<&str>,
) -> Result<(), (String, String)> {
    let s = runs.time_scale;
    if !(s.is_finite() && (1.0..=MAX_TIME_SCALE).contains(&s)) {
        return Err((
            "runs.time_scale".into(),
            format!(
                "is {s}: must be 1 (real time) up to {MAX_TIME_SCALE} (simulated rigs only); a \
                 run never goes slower than the wall clock"
            ),
        ));
    }
    let mut ids = HashSet::new();
    for (i, b) in benches.iter().enumerate() {
        let at = |k: &str| format!("benches[{i}].{k}");
        if !qi_proto::limits::valid_id(&b.id) || b.id.trim().is_empty() {
            return Err((
                at("id"),
                "must be 1 to 128 bytes, no control characters".into(),
            ));
        }
        if !ids.insert(b.id.as_str()) {
            return Err((at("id"), format!("{:?} is used by another bench", b.id)));
        }
        if !qi_proto::limits::valid_text(&b.description) {
            return Err((
                at("description"),
                "at most 512 bytes, no control characters".into(),
            ));
        }
        let mut names = HashSet::new();
        for (j, p) in b.points.iter().enumerate() {
            let at = |k: &str| format!("benches[{i}].points[{j}].{k}");
            let ok_name = p.name.split_once('.').is_some_and(|(r, n)| {
                !r.is_empty() && !n.is_empty() && !n.contains('.') && is_word(r) && is_word(n)
            });
            if !ok_name {
                return Err((
                    at("name"),
                    format!(
                        "{:?} must be `<role>.<point>` (a-z 0-9 _), e.g. \"chamber.temperature\"",
                        p.name
                    ),
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err((at("name"), format!("{:?} is mapped twice", p.name)));
            }
            if !devices.contains(p.device.as_str()) {
                return Err((
                    at("device"),
                    format!("no device {:?} in [[devices]]", p.device),
                ));
            }
            if p.read.is_none() && p.write.is_none() {
                return Err((at("read"), "a point needs `read`, `write` or both".into()));
            }
            for (k, v) in [("min", p.min), ("max", p.max)] {
                if v.is_some_and(|v| !v.is_finite()) {
                    return Err((at(k), "must be a finite number".into()));
                }
            }
            if let (Some(lo), Some(hi)) = (p.min, p.max)
                && lo > hi
            {
                return Err((at("min"), format!("min {lo} is above max {hi}")));
            }
            if (p.min.is_some() || p.max.is_some()) && p.write.is_none() {
                return Err((
                    at("min"),
                    "limits bound what is written; this point has no `write`".into(),
                ));
            }
        }
        let mut inames = HashSet::new();
        for (j, ins) in b.instruments.iter().enumerate() {
            let at = |k: &str| format!("benches[{i}].instruments[{j}].{k}");
            if !is_word(&ins.name) {
                return Err((at("name"), "a-z 0-9 _".into()));
            }
            if !inames.insert(ins.name.as_str()) {
                return Err((at("name"), format!("{:?} is named twice", ins.name)));
            }
            if !devices.contains(ins.device.as_str()) {
                return Err((
                    at("device"),
                    format!("no device {:?} in [[devices]]", ins.device),
                ));
            }
        }
    }
    Ok(())
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A bench point after checking against its device's profile.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct BenchPoint {
    pub name: String,
    pub device: String,
    pub read: Option<String>,
    pub write: Option<String>,
    /// The profile's unit of the device point(s).
    pub unit: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// How often the read point is polled, ms (its value's freshness is judged by it).
    pub poll_ms: u64,
}

/// A bench ready for runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct Bench {
    pub id: String,
    pub description: String,
    pub points: BTreeMap<String, BenchPoint>,
    /// Instrument name -> device id.
    pub instruments: BTreeMap<String, String>,
    /// Why runs cannot start on it (a device is not polled), if so.
    pub unavailable: Option<String>,
}

/// Why a bench's mapping contradicts a device's profile.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("benches[{index}] ({bench}): {message}")]
pub struct BenchError {
    pub index: usize,
    pub bench: String,
    pub message: String,
}

/// Checks each bench against the loaded profiles (`models`: device id ->
/// profile, and the device's poll interval): points that exist, writes only
/// to points the profile marks writable, read and write in one unit. A bench
/// whose device is not polled (its profile did not load) is kept, unavailable.
pub fn resolve(
    benches: &[BenchConfig],
    models: &BTreeMap<String, (std::sync::Arc<device_profile::Profile>, u64)>,
) -> Result<Vec<Bench>, BenchError> {
    let mut out = Vec::new();
    for (index, b) in benches.iter().enumerate() {
        let err = |message: String| BenchError {
            index,
            bench: b.id.clone(),
            message,
        };
        let mut bench = Bench {
            id: b.id.clone(),
            description: b.description.clone(),
            points: BTreeMap::new(),
            instruments: b
                .instruments
                .iter()
                .map(|i| (i.name.clone(), i.device.clone()))
                .collect(),
            unavailable: None,
        };
        let devices = b
            .points
            .iter()
            .map(|p| &p.device)
            .chain(b.instruments.iter().map(|i| &i.device));
        for d in devices {
            if !models.contains_key(d) && bench.unavailable.is_none() {
                bench.unavailable = Some(format!("device {d:?} is not polled (see /health)"));
            }
        }
        for p in &b.points {
            let Some((profile, interval)) = models.get(&p.device) else {
                continue;
            };
            let find = |name: &str| {
                profile
                    .points
                    .iter()
                    .find(|q| q.name == name)
                    .ok_or_else(|| {
                        err(format!(
                            "point {:?}: device {:?} (profile {}) has no point {name:?}",
                            p.name, p.device, profile.model.id
                        ))
                    })
            };
            let mut unit = None;
            let mut poll_ms = *interval;
            if let Some(r) = &p.read {
                let q = find(r)?;
                unit = Some(q.unit.clone());
                if let Some(g) = q
                    .poll_group
                    .as_ref()
                    .and_then(|g| profile.poll_groups.get(g))
                {
                    poll_ms = g.interval_ms;
                }
            }
            if let Some(w) = &p.write {
                let q = find(w)?;
                if !q.writable {
                    return Err(err(format!(
                        "point {:?}: {:?} of device {:?} is not writable (profile {})",
                        p.name, w, p.device, profile.model.id
                    )));
                }
                if let Some(u) = &unit
                    && *u != q.unit
                {
                    return Err(err(format!(
                        "point {:?}: read {:?} is in {u} but write {w:?} in {}",
                        p.name,
                        p.read.as_deref().unwrap_or(""),
                        q.unit
                    )));
                }
                unit = Some(q.unit.clone());
            }
            bench.points.insert(
                p.name.clone(),
                BenchPoint {
                    name: p.name.clone(),
                    device: p.device.clone(),
                    read: p.read.clone(),
                    write: p.write.clone(),
                    unit: unit.unwrap_or_default(),
                    min: p.min,
                    max: p.max,
                    poll_ms,
                },
            );
        }
        out.push(bench);
    }
    Ok(out)
}

impl BenchPoint {
    pub fn to_proto(&self) -> qi_proto::v1::BenchPoint {
        qi_proto::v1::BenchPoint {
            name: self.name.clone(),
            device_id: self.device.clone(),
            read_point: self.read.clone().unwrap_or_default(),
            write_point: self.write.clone().unwrap_or_default(),
            unit: self.unit.clone(),
            min: self.min,
            max: self.max,
        }
    }
}

impl Bench {
    /// Every device the bench binds (points and instruments), once each.
    pub fn devices(&self) -> Vec<&str> {
        let mut d: Vec<&str> = self
            .points
            .values()
            .map(|p| p.device.as_str())
            .chain(self.instruments.values().map(String::as_str))
            .collect();
        d.sort_unstable();
        d.dedup();
        d
    }

    /// As the hub's Hello describes it.
    pub fn to_proto(&self) -> qi_proto::v1::BenchInfo {
        qi_proto::v1::BenchInfo {
            bench_id: self.id.clone(),
            description: self.description.clone(),
            points: self.points.values().map(BenchPoint::to_proto).collect(),
            instruments: self
                .instruments
                .iter()
                .map(|(n, d)| qi_proto::v1::BenchInstrument {
                    name: n.clone(),
                    device_id: d.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
