mod validate;

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
}
