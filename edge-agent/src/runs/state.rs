//! A run's checkpoint: everything needed to carry on after a crash or power
//! cut, stored in the buffer's database with every step transition (in the
//! same atomic write as the transition's events) and every second or so
//! while a step's timers run. JSON, versioned: a checkpoint of another
//! format is refused, never guessed at.

use super::cursor::Cursor;
use crate::benches::Bench;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped on incompatible changes.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// Progress of the current step; its timers are simulated seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepProgress {
    /// Time in the step, not counting pauses.
    pub elapsed_s: f64,
    /// wait_until: how long the condition has held without a break.
    pub hold_s: f64,
    /// A ramp's starting value.
    pub ramp_from: Option<f64>,
    /// `elapsed_s` at the ramp's last write.
    pub last_write_s: Option<f64>,
    /// apply_bias: the voltage has been written (0 V is owed at the end).
    pub bias_on: bool,
}

/// A recorded series' aggregates over the run (`<name>.min` ...).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub n: u64,
}

impl Aggregate {
    pub fn add(a: Option<Aggregate>, v: f64) -> Aggregate {
        match a {
            None => Aggregate {
                min: v,
                max: v,
                sum: v,
                n: 1,
            },
            Some(a) => Aggregate {
                min: a.min.min(v),
                max: a.max.max(v),
                sum: a.sum + v,
                n: a.n + 1,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: u32,
    pub run_id: String,
    pub protocol_id: String,
    pub protocol_version: String,
    /// The template exactly as the run started with it.
    pub template_toml: String,
    pub template_sha256: String,
    /// The bench's mapping and limits when the run started.
    pub bench: Bench,
    pub sample_id: String,
    pub operator: String,
    pub time_scale: f64,
    pub parameters: BTreeMap<String, f64>,
    pub started_us: i64,
    pub cursor: Cursor,
    pub step: StepProgress,
    /// The device whose absence holds the step, while paused.
    pub paused_by: Option<String>,
    /// When the pause began (Unix ms): the device is back only once it has
    /// been polled successfully after that.
    #[serde(default)]
    pub paused_at_ms: Option<i64>,
    /// Last value written per bench point (where a ramp starts from).
    pub last_setpoints: BTreeMap<String, f64>,
    /// STEP_FINISHED events so far (progress).
    pub steps_done: u64,
    /// Simulated seconds the run has run, not counting pauses.
    pub run_elapsed_s: f64,
    /// When each `[[record]]` series is next due, in run seconds.
    pub record_due_s: Vec<f64>,
    /// The latest value of each measured series (`conditions.irradiance`, `stc.pmax`).
    pub values: BTreeMap<String, f64>,
    pub aggregates: BTreeMap<String, Aggregate>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint is not readable: {0}")]
    Decode(String),
    #[error("checkpoint format {0} is not {CHECKPOINT_FORMAT}")]
    Format(u32),
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        // Plain data of strings, numbers and maps with string keys: cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let cp: Checkpoint =
            serde_json::from_slice(bytes).map_err(|e| CheckpointError::Decode(e.to_string()))?;
        if cp.format != CHECKPOINT_FORMAT {
            return Err(CheckpointError::Format(cp.format));
        }
        Ok(cp)
    }

    /// Values the criteria may read so far: measured series, record
    /// aggregates and the parameters.
    pub fn known_values(&self) -> BTreeMap<String, f64> {
        let mut all = self.parameters.clone();
        all.extend(self.values.iter().map(|(k, v)| (k.clone(), *v)));
        for (name, a) in &self.aggregates {
            all.insert(format!("{name}.min"), a.min);
            all.insert(format!("{name}.max"), a.max);
            all.insert(format!("{name}.mean"), a.sum / a.n.max(1) as f64);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Checkpoint {
        Checkpoint {
            format: CHECKPOINT_FORMAT,
            run_id: "r".into(),
            protocol_id: "tc200".into(),
            protocol_version: "1.0.0".into(),
            template_toml: "x = 1".into(),
            template_sha256: "ab".into(),
            bench: Bench {
                id: "b".into(),
                description: String::new(),
                points: BTreeMap::new(),
                instruments: BTreeMap::new(),
                unavailable: None,
            },
            sample_id: "sample:MOD-1".into(),
            operator: "ann".into(),
            time_scale: 1000.0,
            parameters: [("t_high".to_string(), 85.0)].into_iter().collect(),
            started_us: 1,
            cursor: Cursor::default(),
            step: StepProgress {
                elapsed_s: 12.5,
                hold_s: 3.0,
                ramp_from: Some(25.0),
                last_write_s: Some(10.0),
                bias_on: true,
            },
            paused_by: Some("chamber".into()),
            paused_at_ms: Some(5),
            last_setpoints: [("chamber.temperature".to_string(), 40.0)]
                .into_iter()
                .collect(),
            steps_done: 7,
            run_elapsed_s: 3600.0,
            record_due_s: vec![3660.0],
            values: BTreeMap::new(),
            aggregates: [(
                "module_temperature".to_string(),
                Aggregate::add(Some(Aggregate::add(None, 20.0)), 30.0),
            )]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn a_checkpoint_round_trips_and_another_format_is_refused() {
        let cp = sample();
        assert_eq!(Checkpoint::decode(&cp.encode()).expect("decodes"), cp);
        let mut other = cp.clone();
        other.format = 99;
        assert!(matches!(
            Checkpoint::decode(&other.encode()),
            Err(CheckpointError::Format(99))
        ));
        assert!(matches!(
            Checkpoint::decode(b"{"),
            Err(CheckpointError::Decode(_))
        ));
        let known = cp.known_values();
        assert_eq!(
            (
                known["module_temperature.min"],
                known["module_temperature.max"],
                known["module_temperature.mean"]
            ),
            (20.0, 30.0, 25.0)
        );
        assert_eq!(known["t_high"], 85.0);
    }
}
