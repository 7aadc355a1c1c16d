//! The template format as Rust types; `protocols/README.md` documents every key.
//! Unknown keys are refused everywhere (`deny_unknown_fields`), so a typo is a
//! refusal rather than a silently ignored limit.

use crate::expr::Expr;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use std::fmt;

/// The template format version this crate reads. Bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocol {
    pub format_version: u32,
    pub protocol: Info,
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// Values of the sample from other runs (`before.pmax`, `after.pmax`).
    #[serde(default)]
    pub sample_values: Vec<SampleValue>,
    /// Points logged throughout the run.
    #[serde(default)]
    pub record: Vec<Record>,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub safe_state: SafeState,
    pub criteria: Vec<Criterion>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Info {
    pub id: String,
    pub name: String,
    /// The template's own version, so a verdict names the rules it used.
    pub version: String,
    pub standard: String,
    #[serde(default)]
    pub description: String,
    /// Policies of every step that does not set its own.
    pub on_device_offline: OfflinePolicy,
    pub on_restart: RestartPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflinePolicy {
    /// Hold the step (its timers stop) until the device is back.
    Pause,
    /// Apply the safe state and end the run.
    Abort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Continue the interrupted step after an agent restart.
    Resume,
    Abort,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    pub name: String,
    pub unit: String,
    /// Required when a step uses the parameter; a run may override it.
    pub default: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleValue {
    pub name: String,
    pub unit: String,
    /// Where the value comes from (required): see [`ValueSource`].
    pub source: SampleSource,
    #[serde(default)]
    pub description: String,
}

/// `source = { protocol = "stc-power", value = "stc.pmax" }` or
/// `source = { observation = "major_visual_defects" }`, as written; the
/// validation leaves exactly one of the two forms ([`SampleSource::get`]).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SampleSource {
    pub protocol: Option<String>,
    pub value: Option<String>,
    pub observation: Option<String>,
}

/// Where a sample value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueSource<'a> {
    /// A value recorded by a completed run of that protocol on the same
    /// sample (`<label>.<name>` of a measure or IV sweep, or a record
    /// aggregate).
    Run { protocol: &'a str, value: &'a str },
    /// A value recorded about the sample outside runs (an inspection).
    Observation(&'a str),
}

impl SampleSource {
    /// The source, when the table holds exactly one form.
    pub fn get(&self) -> Option<ValueSource<'_>> {
        match (&self.protocol, &self.value, &self.observation) {
            (Some(protocol), Some(value), None) => Some(ValueSource::Run { protocol, value }),
            (None, None, Some(o)) => Some(ValueSource::Observation(o)),
            _ => None,
        }
    }
}

impl SampleValue {
    /// `before` or `after`, and the name after it.
    pub fn when(&self) -> Option<(&str, &str)> {
        self.name.split_once('.')
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub name: String,
    pub point: String,
    pub unit: String,
    pub interval: String,
}

/// A number written in the template, or the name of a parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Quantity {
    Number(f64),
    Parameter(String),
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a parameter name")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity::Number(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity::Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity::Number(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity::Parameter(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Drive a point to a value, optionally ramping.
    Setpoint {
        point: String,
        unit: String,
        value: Quantity,
        /// In the point's unit per hour; absent: step change.
        ramp_per_h: Option<Quantity>,
        on_device_offline: Option<OfflinePolicy>,
        on_restart: Option<RestartPolicy>,
    },
    /// Wait until `condition` has held for `hold`; fail the run after `timeout`.
    WaitUntil {
        condition: String,
        hold: String,
        timeout: String,
        on_device_offline: Option<OfflinePolicy>,
        on_restart: Option<RestartPolicy>,
    },
    Dwell {
        duration: String,
        on_device_offline: Option<OfflinePolicy>,
        on_restart: Option<RestartPolicy>,
    },
    Repeat {
        count: u32,
        steps: Vec<Step>,
        on_device_offline: Option<OfflinePolicy>,
        on_restart: Option<RestartPolicy>,
    },
    /// Read points once; they are recorded as `<label>.<name>`.
    Measure {
        label: String,
        points: Vec<MeasurePoint>,
        on_device_offline: Option<OfflinePolicy>,
        on_restart: Option<RestartPolicy>,
    },
    /// Sweep an IV curve on an SMU; records `<label>.isc` `.voc` `.imp` `.vmp` `.pmax` `.ff`.
    IvSweep {
        label: String,
        instrument: String,
        start_v: Quantity,
        stop_v: Quantity,
        points: u32,
        on_device_offline: Option<OfflinePolicy>,
        on_restart: Option<RestartPolicy>,
    },
    /// Hold a voltage on a point (e.g. a PID bias supply) for a duration.
    ApplyBias {
        point: String,
        voltage: Quantity,
        duration: String,
        on_device_offline: Option<OfflinePolicy>,
        on_restart: Option<RestartPolicy>,
    },
}

/// What an IV sweep records, with units.
pub const IV_METRICS: [(&str, &str); 6] = [
    ("isc", "A"),
    ("voc", "V"),
    ("imp", "A"),
    ("vmp", "V"),
    ("pmax", "W"),
    ("ff", "%"),
];

/// Aggregates of a `[[record]]` series a criterion may read (`<name>.min`).
pub const RECORD_AGGREGATES: [&str; 3] = ["min", "max", "mean"];

impl Step {
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Setpoint { .. } => "setpoint",
            Step::WaitUntil { .. } => "wait_until",
            Step::Dwell { .. } => "dwell",
            Step::Repeat { .. } => "repeat",
            Step::Measure { .. } => "measure",
            Step::IvSweep { .. } => "iv_sweep",
            Step::ApplyBias { .. } => "apply_bias",
        }
    }

    /// The step's own policies (`None`: the protocol's).
    pub fn policies(&self) -> (Option<OfflinePolicy>, Option<RestartPolicy>) {
        match self {
            Step::Setpoint {
                on_device_offline,
                on_restart,
                ..
            }
            | Step::WaitUntil {
                on_device_offline,
                on_restart,
                ..
            }
            | Step::Dwell {
                on_device_offline,
                on_restart,
                ..
            }
            | Step::Repeat {
                on_device_offline,
                on_restart,
                ..
            }
            | Step::Measure {
                on_device_offline,
                on_restart,
                ..
            }
            | Step::IvSweep {
                on_device_offline,
                on_restart,
                ..
            }
            | Step::ApplyBias {
                on_device_offline,
                on_restart,
                ..
            } => (*on_device_offline, *on_restart),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasurePoint {
    pub name: String,
    pub point: String,
    pub unit: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafeState {
    #[serde(default)]
    pub setpoints: Vec<SafeSetpoint>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafeSetpoint {
    pub point: String,
    pub unit: String,
    /// A plain number: the safe state must not depend on a run's parameters.
    pub value: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Criterion {
    pub id: String,
    pub description: String,
    /// Spanned so a refusal can name the line.
    pub expression: toml::Spanned<String>,
    /// Unit of the compared quantities (`%`, `W`, `MOhm.m2`, `1`).
    pub unit: String,
    /// The computed verdict is provisional until a person signs it off.
    #[serde(default)]
    pub approval_required: bool,
    /// Filled by validation.
    #[serde(skip)]
    pub parsed: Option<Expr>,
}
