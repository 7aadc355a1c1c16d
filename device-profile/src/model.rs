use serde::Deserialize;
use std::collections::HashSet;

/// The profile format version this crate reads. Bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub format_version: u32,
    pub model: ModelInfo,
    pub modbus: ModbusDefaults,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    /// Stable identifier, equal to the file name without `.toml`.
    pub id: String,
    pub manufacturer: String,
    pub name: String,
    /// Device type used in topics and twins, e.g. "energy-meter".
    pub device_type: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDefaults {
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Largest number of registers the device answers in one read (protocol max 125).
    #[serde(default = "default_max_registers")]
    pub max_registers_per_read: u16,
    /// How long to wait for one response.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub byte_order: Endianness,
    #[serde(default)]
    pub word_order: Endianness,
}

fn default_unit_id() -> u8 {
    1
}
fn default_max_registers() -> u16 {
    125
}
fn default_timeout_ms() -> u64 {
    1000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterKind {
    /// Function code 04, read-only.
    Input,
    /// Function code 03.
    Holding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endianness {
    #[default]
    Big,
    Little,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl DataType {
    /// Number of 16-bit registers the type occupies.
    pub fn registers(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// Metric name, unique in the profile: `[a-z0-9_]+`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub unit: String,
    pub register: RegisterKind,
    /// 0-based register address (protocol address, not the 3xxxx/4xxxx notation).
    pub address: u16,
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// Overrides the profile's `modbus.byte_order` for this point.
    pub byte_order: Option<Endianness>,
    /// Overrides the profile's `modbus.word_order` for this point.
    pub word_order: Option<Endianness>,
    /// Engineering value = raw * scale + offset.
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    /// How the simulator makes this point's value move.
    #[serde(default)]
    pub sim: SimSpec,
}

fn one() -> f64 {
    1.0
}

/// A value the simulator serves: `base + amplitude*sin(2*pi*t/period_s) + rate_per_s*t + noise`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSpec {
    #[serde(default)]
    pub base: f64,
    #[serde(default)]
    pub amplitude: f64,
    #[serde(default = "default_period")]
    pub period_s: f64,
    /// Steady growth, for counters such as energy.
    #[serde(default)]
    pub rate_per_s: f64,
    /// Uniform noise of +- this much.
    #[serde(default)]
    pub noise: f64,
}

fn default_period() -> f64 {
    60.0
}

impl Default for SimSpec {
    fn default() -> Self {
        SimSpec {
            base: 0.0,
            amplitude: 0.0,
            period_s: default_period(),
            rate_per_s: 0.0,
            noise: 0.0,
        }
    }
}

impl Point {
    pub fn byte_order(&self, defaults: &ModbusDefaults) -> Endianness {
        self.byte_order.unwrap_or(defaults.byte_order)
    }
    pub fn word_order(&self, defaults: &ModbusDefaults) -> Endianness {
        self.word_order.unwrap_or(defaults.word_order)
    }
    /// Last register address (inclusive) the point occupies.
    pub fn end_address(&self) -> u32 {
        u32::from(self.address) + u32::from(self.data_type.registers()) - 1
    }
}

impl Profile {
    /// Checks what the type system cannot; returns the offending field and why.
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        if self.format_version != FORMAT_VERSION {
            return Err((
                "format_version".into(),
                format!(
                    "is {}, this build reads version {FORMAT_VERSION}",
                    self.format_version
                ),
            ));
        }
        if !is_identifier(&self.model.id, true) {
            return Err((
                "model.id".into(),
                "must be non-empty and use only a-z, 0-9, '-' and '_'".into(),
            ));
        }
        let m = &self.modbus;
        if m.max_registers_per_read == 0 || m.max_registers_per_read > 125 {
            return Err((
                "modbus.max_registers_per_read".into(),
                format!(
                    "is {}, must be 1..=125 (the Modbus limit)",
                    m.max_registers_per_read
                ),
            ));
        }
        if m.timeout_ms == 0 {
            return Err(("modbus.timeout_ms".into(), "must be > 0".into()));
        }
        if self.points.is_empty() {
            return Err(("points".into(), "a profile needs at least one point".into()));
        }
        let mut names = HashSet::new();
        for (i, p) in self.points.iter().enumerate() {
            let field = |f: &str| format!("points[{i}] ({}).{f}", p.name);
            if !is_identifier(&p.name, false) {
                return Err((
                    format!("points[{i}].name"),
                    format!(
                        "{:?} must be non-empty and use only a-z, 0-9 and '_'",
                        p.name
                    ),
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err((field("name"), "is used by another point".into()));
            }
            if p.end_address() > 0xFFFF {
                return Err((
                    field("address"),
                    format!(
                        "{} + {} registers runs past the last address 65535",
                        p.address,
                        p.data_type.registers()
                    ),
                ));
            }
            if p.data_type.registers() > m.max_registers_per_read {
                return Err((
                    field("type"),
                    "needs more registers than modbus.max_registers_per_read".into(),
                ));
            }
            if !p.scale.is_finite() || p.scale == 0.0 {
                return Err((field("scale"), "must be finite and non-zero".into()));
            }
            if !p.offset.is_finite() {
                return Err((field("offset"), "must be finite".into()));
            }
            if !(p.sim.period_s.is_finite() && p.sim.period_s > 0.0) {
                return Err((field("sim.period_s"), "must be > 0".into()));
            }
        }
        // Overlapping points would mean two names for the same registers: always a typo here.
        let mut spans: Vec<(RegisterKind, u32, u32, &str)> = self
            .points
            .iter()
            .map(|p| {
                (
                    p.register,
                    u32::from(p.address),
                    p.end_address(),
                    p.name.as_str(),
                )
            })
            .collect();
        spans.sort();
        for w in spans.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            if a.0 == b.0 && b.1 <= a.2 {
                return Err((
                    "points".into(),
                    format!("{} and {} overlap in {:?} registers", a.3, b.3, a.0),
                ));
            }
        }
        Ok(())
    }
}

fn is_identifier(s: &str, allow_dash: bool) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || (allow_dash && b == b'-')
        })
}
