use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The profile format version this crate reads. Bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// Modbus protocol limits per request (Modbus Application Protocol v1.1b3, 6.1-6.4).
pub const MAX_REGISTERS_PER_READ: u16 = 125;
pub const MAX_BITS_PER_READ: u16 = 2000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub format_version: u32,
    pub model: ModelInfo,
    /// How the instrument is spoken to.
    #[serde(default)]
    pub protocol: Protocol,
    /// Modbus defaults; required when `protocol = "modbus"`.
    pub modbus: Option<ModbusDefaults>,
    /// SCPI / ASCII line protocol defaults; required when `protocol = "scpi"`.
    pub scpi: Option<ScpiDefaults>,
    /// Serial line defaults for serial transports (a device entry may override them).
    #[serde(default)]
    pub serial: SerialDefaults,
    /// Named poll groups and their intervals; points without a group use the
    /// device's `poll_interval_ms`.
    #[serde(default)]
    pub poll_groups: BTreeMap<String, PollGroup>,
    pub points: Vec<Point>,
    /// SCPI source-measure units: how to sweep an IV curve.
    pub iv_sweep: Option<crate::sweep::IvSweep>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Modbus,
    /// Line-oriented request/response (SCPI instruments, ASCII chambers).
    Scpi,
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
    /// Largest number of coils / discrete inputs in one read (protocol max 2000).
    #[serde(default = "default_max_bits")]
    pub max_bits_per_read: u16,
    /// Unused registers (or bits) a read may span to merge two groups of points.
    #[serde(default)]
    pub gap_tolerance: u16,
    /// How long to wait for one response.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Pause between two requests to this device (some need it).
    #[serde(default)]
    pub inter_request_delay_ms: u64,
    #[serde(default)]
    pub byte_order: Endianness,
    #[serde(default)]
    pub word_order: Endianness,
    /// Requests the device accepts in flight on one Modbus TCP connection,
    /// answered by transaction id (1 = one at a time, the safe default).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u8,
}

/// The largest `modbus.max_in_flight`: beyond a few in flight the device's
/// own queue, not the round trip, bounds the rate; a large window only
/// turns a slow device into many simultaneous timeouts.
pub const MAX_IN_FLIGHT: u8 = 16;

fn default_max_in_flight() -> u8 {
    1
}

fn default_unit_id() -> u8 {
    1
}
fn default_max_registers() -> u16 {
    MAX_REGISTERS_PER_READ
}
fn default_max_bits() -> u16 {
    MAX_BITS_PER_READ
}
fn default_timeout_ms() -> u64 {
    1000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScpiDefaults {
    /// Appended to every command: "\n" (SCPI) or "\r\n" (many ASCII chambers).
    #[serde(default = "default_line_ending")]
    pub line_ending: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub inter_request_delay_ms: u64,
    /// Commands sent once after connecting, without reading a reply (e.g. "*CLS").
    #[serde(default)]
    pub init: Vec<String>,
    /// Replies starting with one of these are errors (e.g. "NA" on ESPEC chambers).
    #[serde(default)]
    pub error_prefixes: Vec<String>,
    /// Whether write commands are answered (ESPEC: "OK"); SCPI instruments stay silent.
    #[serde(default)]
    pub write_reply: bool,
}

fn default_line_ending() -> String {
    "\n".into()
}

/// What a profile without a `[scpi]` table gets: the same values as an empty
/// `[scpi]` table (the serde defaults above), kept in one place.
impl Default for ScpiDefaults {
    fn default() -> Self {
        ScpiDefaults {
            line_ending: default_line_ending(),
            timeout_ms: default_timeout_ms(),
            inter_request_delay_ms: 0,
            init: Vec::new(),
            error_prefixes: Vec::new(),
            write_reply: false,
        }
    }
}

impl Default for ModbusDefaults {
    fn default() -> Self {
        ModbusDefaults {
            unit_id: default_unit_id(),
            max_registers_per_read: default_max_registers(),
            max_bits_per_read: default_max_bits(),
            gap_tolerance: 0,
            timeout_ms: default_timeout_ms(),
            inter_request_delay_ms: 0,
            byte_order: Endianness::Big,
            word_order: Endianness::Big,
            max_in_flight: default_max_in_flight(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialDefaults {
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
}

impl Default for SerialDefaults {
    fn default() -> Self {
        SerialDefaults {
            baud: default_baud(),
            parity: Parity::None,
            data_bits: default_data_bits(),
            stop_bits: default_stop_bits(),
        }
    }
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollGroup {
    pub interval_ms: u64,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RegisterKind {
    /// Function code 01 (read), 05/15 (write). One bit each.
    Coil,
    /// Function code 02, read-only bits.
    Discrete,
    /// Function code 04, read-only registers.
    Input,
    /// Function code 03 (read), 06/16 (write).
    Holding,
}

impl RegisterKind {
    pub fn is_bits(self) -> bool {
        matches!(self, RegisterKind::Coil | RegisterKind::Discrete)
    }
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
    /// A coil or discrete input.
    Bool,
    /// One bit (`bit = 0..15`, 0 = least significant) of a holding or input register.
    Bit,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// ASCII text in `length` registers, two characters per register; NULs and spaces trimmed.
    String,
}

impl DataType {
    /// Registers (or bits, for `Bool`) of a numeric type; `None` for strings (see `Point::length`).
    pub fn fixed_size(self) -> Option<u16> {
        match self {
            DataType::Bool | DataType::Bit | DataType::U16 | DataType::I16 => Some(1),
            DataType::U32 | DataType::I32 | DataType::F32 => Some(2),
            DataType::U64 | DataType::I64 | DataType::F64 => Some(4),
            DataType::String => None,
        }
    }
}

/// Which buffer lane a point's readings travel in. `high` readings (alarms,
/// test results) are sent before any `normal` backlog after an outage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Deadband {
    /// Report when the value moved by more than this many units.
    Absolute(f64),
    /// Report when the value moved by more than this percentage of the last reported value.
    Percent(f64),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// Metric name, unique in the profile: `[a-z0-9_]+`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub unit: String,

    // --- Modbus ---
    pub register: Option<RegisterKind>,
    /// 0-based register (or coil) address: the protocol address, not 3xxxx/4xxxx notation.
    pub address: Option<u16>,
    #[serde(rename = "type")]
    pub data_type: Option<DataType>,
    /// For `type = "bit"`: which bit of the register, 0 = least significant.
    pub bit: Option<u8>,
    /// For `type = "string"`: number of registers.
    pub length: Option<u16>,
    /// Overrides the profile's `modbus.byte_order` for this point.
    pub byte_order: Option<Endianness>,
    /// Overrides the profile's `modbus.word_order` for this point.
    pub word_order: Option<Endianness>,
    /// Name of an i16 point holding a SunSpec-style power-of-ten scale factor:
    /// value = raw * 10^sf * scale + offset.
    pub scale_factor: Option<String>,

    // --- SCPI / ASCII ---
    /// Query sent to read the point, e.g. ":MEAS:VOLT?" or "TEMP?".
    pub query: Option<String>,
    /// Which field of a `separator`-separated reply holds the value (0-based).
    #[serde(default)]
    pub field: usize,
    #[serde(default = "default_separator")]
    pub separator: String,
    /// Command template for writes; `{value}` is replaced by the value.
    pub write_command: Option<String>,

    // --- common ---
    /// Engineering value = raw * scale + offset.
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    /// Poll group name (from `[poll_groups]`); none = the device's poll interval.
    pub poll_group: Option<String>,
    /// Report by exception: only emit when the value moved by more than this.
    pub deadband: Option<Deadband>,
    /// With a dead-band, emit at least this often anyway (ms). Default: 60000 when a dead-band is set.
    pub max_report_interval_ms: Option<u64>,
    /// Whether writes to this point are allowed.
    #[serde(default)]
    pub writable: bool,
    /// Whether readings of this point are sent upstream (false for helper
    /// points such as SunSpec scale factors).
    #[serde(default = "yes")]
    pub report: bool,
    /// `high` sends this point's readings ahead of `normal` backlog (alarms, limits).
    #[serde(default)]
    pub priority: Priority,
    /// How the simulator makes this point's value move.
    #[serde(default)]
    pub sim: SimSpec,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn default_separator() -> String {
    ",".into()
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
    /// For string points: the text served.
    #[serde(default)]
    pub text: String,
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
            text: String::new(),
        }
    }
}

/// The Modbus location of a point, once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModbusLocation {
    pub register: RegisterKind,
    pub address: u16,
    pub data_type: DataType,
    /// Registers (or bits) occupied.
    pub size: u16,
}

impl Point {
    /// The engineering values the point's register can hold (`raw * scale +
    /// offset` over the integer type's range), for integer registers of up to
    /// 32 bits: what a write can put on the device. None for floats (bounded
    /// only by the format), text, bits and SCPI points.
    pub fn value_range(&self) -> Option<(f64, f64)> {
        let (lo, hi) = match self.data_type? {
            DataType::U16 => (0.0, f64::from(u16::MAX)),
            DataType::I16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
            DataType::U32 => (0.0, f64::from(u32::MAX)),
            DataType::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
            _ => return None,
        };
        let (a, b) = (lo * self.scale + self.offset, hi * self.scale + self.offset);
        Some((a.min(b), a.max(b)))
    }

    /// Where the point lives on a Modbus device. Only meaningful for Modbus
    /// profiles that passed validation (which guarantees the fields exist).
    pub fn modbus(&self) -> Option<ModbusLocation> {
        let data_type = self.data_type?;
        let size = match data_type.fixed_size() {
            Some(n) => n,
            None => self.length?,
        };
        Some(ModbusLocation {
            register: self.register?,
            address: self.address?,
            data_type,
            size,
        })
    }

    pub fn byte_order(&self, defaults: &ModbusDefaults) -> Endianness {
        self.byte_order.unwrap_or(defaults.byte_order)
    }
    pub fn word_order(&self, defaults: &ModbusDefaults) -> Endianness {
        self.word_order.unwrap_or(defaults.word_order)
    }
    pub fn is_text(&self) -> bool {
        self.data_type == Some(DataType::String)
    }
}

impl ModbusLocation {
    /// Last address (inclusive) the point occupies.
    pub fn end_address(&self) -> u32 {
        u32::from(self.address) + u32::from(self.size) - 1
    }
}

type Invalid = (String, String);

impl Profile {
    /// The Modbus defaults of a Modbus profile (validation guarantees they exist).
    pub fn modbus_defaults(&self) -> ModbusDefaults {
        self.modbus.clone().unwrap_or_default()
    }

    /// The line-protocol defaults of an SCPI profile; a profile without a
    /// `[scpi]` table gets those of an empty one.
    pub fn scpi_defaults(&self) -> ScpiDefaults {
        self.scpi.clone().unwrap_or_default()
    }

    /// Checks what the type system cannot; returns the offending field and why.
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if let Some(s) = &self.iv_sweep {
            if self.protocol != Protocol::Scpi {
                return Err((
                    "iv_sweep".into(),
                    "only an SCPI profile can sweep (its commands are SCPI lines)".into(),
                ));
            }
            s.validate()?;
        }
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
        for (name, g) in &self.poll_groups {
            if g.interval_ms == 0 {
                return Err((
                    format!("poll_groups.{name}.interval_ms"),
                    "must be > 0".into(),
                ));
            }
        }
        if self.points.is_empty() {
            return Err(("points".into(), "a profile needs at least one point".into()));
        }
        let s = &self.serial;
        if s.baud == 0 || !(5..=8).contains(&s.data_bits) || !(1..=2).contains(&s.stop_bits) {
            return Err((
                "serial".into(),
                "baud must be > 0, data_bits 5..=8, stop_bits 1 or 2".into(),
            ));
        }
        let mut names = HashSet::new();
        for (i, p) in self.points.iter().enumerate() {
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
                return Err((field(i, p, "name"), "is used by another point".into()));
            }
            if !p.scale.is_finite() || p.scale == 0.0 {
                return Err((field(i, p, "scale"), "must be finite and non-zero".into()));
            }
            if !p.offset.is_finite() {
                return Err((field(i, p, "offset"), "must be finite".into()));
            }
            if !(p.sim.period_s.is_finite() && p.sim.period_s > 0.0) {
                return Err((field(i, p, "sim.period_s"), "must be > 0".into()));
            }
            if let Some(g) = &p.poll_group
                && !self.poll_groups.contains_key(g)
            {
                return Err((
                    field(i, p, "poll_group"),
                    format!("{g:?} is not defined in [poll_groups]"),
                ));
            }
            match p.deadband {
                Some(Deadband::Absolute(v) | Deadband::Percent(v))
                    if !(v.is_finite() && v >= 0.0) =>
                {
                    return Err((
                        field(i, p, "deadband"),
                        "must be a finite number >= 0".into(),
                    ));
                }
                _ => {}
            }
            if p.max_report_interval_ms == Some(0) {
                return Err((field(i, p, "max_report_interval_ms"), "must be > 0".into()));
            }
        }
        match self.protocol {
            Protocol::Modbus => self.validate_modbus(),
            Protocol::Scpi => self.validate_scpi(),
        }
    }

    fn validate_modbus(&self) -> Result<(), Invalid> {
        let Some(m) = &self.modbus else {
            return Err((
                "modbus".into(),
                "a Modbus profile needs a [modbus] table".into(),
            ));
        };
        if m.max_registers_per_read == 0 || m.max_registers_per_read > MAX_REGISTERS_PER_READ {
            return Err((
                "modbus.max_registers_per_read".into(),
                format!(
                    "is {}, must be 1..=125 (the Modbus limit)",
                    m.max_registers_per_read
                ),
            ));
        }
        if m.max_bits_per_read == 0 || m.max_bits_per_read > MAX_BITS_PER_READ {
            return Err((
                "modbus.max_bits_per_read".into(),
                format!(
                    "is {}, must be 1..=2000 (the Modbus limit)",
                    m.max_bits_per_read
                ),
            ));
        }
        if m.timeout_ms == 0 {
            return Err(("modbus.timeout_ms".into(), "must be > 0".into()));
        }
        if m.max_in_flight == 0 || m.max_in_flight > MAX_IN_FLIGHT {
            return Err((
                "modbus.max_in_flight".into(),
                format!(
                    "is {}, must be 1..={MAX_IN_FLIGHT} (1: one request at a time; more only \
                     for Modbus TCP devices that answer pipelined requests by transaction id)",
                    m.max_in_flight
                ),
            ));
        }
        let by_name: HashMap<&str, &Point> =
            self.points.iter().map(|p| (p.name.as_str(), p)).collect();
        for (i, p) in self.points.iter().enumerate() {
            if p.query.is_some() || p.write_command.is_some() {
                return Err((field(i, p, "query"), "SCPI keys in a Modbus profile".into()));
            }
            let (Some(kind), Some(_), Some(t)) = (p.register, p.address, p.data_type) else {
                return Err((
                    field(i, p, "register"),
                    "a Modbus point needs `register`, `address` and `type`".into(),
                ));
            };
            let fits = if kind.is_bits() {
                t == DataType::Bool
            } else {
                t != DataType::Bool
            };
            if !fits {
                return Err((
                    field(i, p, "type"),
                    "coils and discrete inputs are type \"bool\"; registers are any other type"
                        .into(),
                ));
            }
            if t == DataType::Bit {
                match p.bit {
                    Some(b) if b < 16 => {}
                    _ => {
                        return Err((
                            field(i, p, "bit"),
                            "type \"bit\" needs `bit` = 0..=15".into(),
                        ));
                    }
                }
                if p.writable {
                    return Err((
                        field(i, p, "writable"),
                        "bit-in-register points cannot be written (it would need a read-modify-write that races the device)".into(),
                    ));
                }
            } else if p.bit.is_some() {
                return Err((field(i, p, "bit"), "only for type \"bit\"".into()));
            }
            if t == DataType::String {
                match p.length {
                    Some(n) if n >= 1 && n <= m.max_registers_per_read => {}
                    _ => {
                        return Err((
                            field(i, p, "length"),
                            "type \"string\" needs `length` = 1..=max_registers_per_read registers"
                                .into(),
                        ));
                    }
                }
                if p.writable {
                    return Err((
                        field(i, p, "writable"),
                        "string points cannot be written".into(),
                    ));
                }
            } else if p.length.is_some() {
                return Err((field(i, p, "length"), "only for type \"string\"".into()));
            }
            if p.writable && matches!(kind, RegisterKind::Input | RegisterKind::Discrete) {
                return Err((
                    field(i, p, "writable"),
                    format!("{kind:?} registers are read-only in Modbus").to_lowercase(),
                ));
            }
            let Some(loc) = p.modbus() else {
                return Err((field(i, p, "type"), "incomplete Modbus location".into()));
            };
            if loc.end_address() > 0xFFFF {
                return Err((
                    field(i, p, "address"),
                    format!(
                        "{} + {} runs past the last address 65535",
                        loc.address, loc.size
                    ),
                ));
            }
            let limit = if kind.is_bits() {
                m.max_bits_per_read
            } else {
                m.max_registers_per_read
            };
            if loc.size > limit {
                return Err((
                    field(i, p, "type"),
                    "needs more registers than one read may fetch".into(),
                ));
            }
            if let Some(sf) = &p.scale_factor {
                let Some(sfp) = by_name.get(sf.as_str()) else {
                    return Err((
                        field(i, p, "scale_factor"),
                        format!("no point named {sf:?}"),
                    ));
                };
                if sfp.data_type != Some(DataType::I16) || sfp.scale_factor.is_some() {
                    return Err((
                        field(i, p, "scale_factor"),
                        format!("{sf:?} must be an i16 point without a scale factor of its own"),
                    ));
                }
                if sfp.poll_group != p.poll_group {
                    return Err((
                        field(i, p, "scale_factor"),
                        format!("{sf:?} must be in the same poll group, so both are read together"),
                    ));
                }
            }
        }
        // Overlapping points would mean two names for the same registers: a
        // typo, except for bits of one register, which are meant to share it.
        let mut spans: Vec<(RegisterKind, u32, u32, &str, bool)> = self
            .points
            .iter()
            .filter_map(|p| {
                p.modbus().map(|l| {
                    (
                        l.register,
                        u32::from(l.address),
                        l.end_address(),
                        p.name.as_str(),
                        l.data_type == DataType::Bit,
                    )
                })
            })
            .collect();
        spans.sort();
        for (j, a) in spans.iter().enumerate() {
            for b in &spans[j + 1..] {
                if b.0 != a.0 || b.1 > a.2 {
                    break;
                }
                let both_bits_same_register = a.4 && b.4 && a.1 == b.1;
                if !both_bits_same_register {
                    return Err((
                        "points".into(),
                        format!("{} and {} overlap in {:?} registers", a.3, b.3, a.0)
                            .to_lowercase(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_scpi(&self) -> Result<(), Invalid> {
        let Some(s) = &self.scpi else {
            return Err(("scpi".into(), "an SCPI profile needs a [scpi] table".into()));
        };
        if !(s.line_ending == "\n" || s.line_ending == "\r\n" || s.line_ending == "\r") {
            return Err((
                "scpi.line_ending".into(),
                "must be \"\\n\", \"\\r\\n\" or \"\\r\"".into(),
            ));
        }
        if s.timeout_ms == 0 {
            return Err(("scpi.timeout_ms".into(), "must be > 0".into()));
        }
        for (i, p) in self.points.iter().enumerate() {
            let text_only = matches!(p.data_type, None | Some(DataType::String));
            if p.register.is_some() || p.address.is_some() || !text_only {
                return Err((
                    field(i, p, "register"),
                    "Modbus keys in an SCPI profile (only `type = \"string\"` is allowed, for text replies)".into(),
                ));
            }
            match &p.query {
                Some(q) if !q.trim().is_empty() && !q.contains(['\n', '\r']) => {}
                _ => {
                    return Err((
                        field(i, p, "query"),
                        "an SCPI point needs a one-line `query`".into(),
                    ));
                }
            }
            if p.separator.is_empty() {
                return Err((field(i, p, "separator"), "must not be empty".into()));
            }
            if p.writable {
                match &p.write_command {
                    Some(c) if c.contains("{value") && !c.contains(['\n', '\r']) => {}
                    _ => {
                        return Err((
                            field(i, p, "write_command"),
                            "a writable SCPI point needs a one-line `write_command` containing {value}".into(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn field(i: usize, p: &Point, f: &str) -> String {
    format!("points[{i}] ({}).{f}", p.name)
}

fn is_identifier(s: &str, allow_dash: bool) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || (allow_dash && b == b'-')
        })
}
