//! The agent's configuration file (TOML). Every key is documented in
//! `docs/configuration.md`; keep the two in step.

use qi_common::config::{ConfigError, load_toml_validated};
use qi_common::logging::LogFormat;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod http;
pub use http::{BadHostName, HttpConfig, allowed_host_name, normalize_host_name};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity of this gateway at the hub; unique per site installation.
    pub gateway_id: String,
    /// Folder holding the firmware profiles (`<id>.toml`).
    #[serde(default = "default_profiles_dir")]
    pub profiles_dir: PathBuf,
    #[serde(default)]
    pub log: LogConfig,
    /// Traces over OTLP (off by default).
    #[serde(default)]
    pub telemetry: qi_common::telemetry::TelemetryConfig,
    pub buffer: BufferConfig,
    pub uplink: UplinkConfig,
    #[serde(default)]
    pub http: HttpConfig,
    /// Local users, sessions and the login limit of the local API.
    #[serde(default)]
    pub auth: crate::identity::AuthConfig,
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// The site MQTT bus; absent: no broker.
    pub mqtt: Option<crate::mqtt::MqttConfig>,
    /// Test benches protocols run on (point mapping and limits).
    #[serde(default)]
    pub benches: Vec<crate::benches::BenchConfig>,
    /// The protocol run engine.
    #[serde(default)]
    pub runs: crate::benches::RunsConfig,
}

fn default_profiles_dir() -> PathBuf {
    PathBuf::from("/usr/share/edge-agent/firmware-profiles")
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Directory of the sled database.
    pub path: PathBuf,
    /// sled page cache, in MiB (sled's own default of 1 GiB is far too much for a gateway).
    #[serde(default = "default_cache_mib")]
    pub cache_mib: u64,
    /// While a backlog builds up, close and reopen sled after this many MiB
    /// of records written (0 = never): sled holds what it wrote in memory
    /// until it is closed.
    #[serde(default = "default_recycle_after_mib")]
    pub recycle_after_mib: u64,
    /// Most readings waiting for the hub; beyond it `full_policy` applies.
    #[serde(default = "default_max_readings")]
    pub max_readings: u64,
    /// Most disk space the buffer may take, in MiB (sled's files; checked once a second).
    #[serde(default = "default_max_disk_mib")]
    pub max_disk_mib: u64,
    /// What to do when full: drop the oldest readings, or refuse new ones.
    #[serde(default)]
    pub full_policy: FullPolicy,
    /// Group-commit window in ms: appends within it share one fsync (0: flush at once).
    #[serde(default)]
    pub flush_every_ms: u64,
    /// Readings older than this many seconds are dropped unsent (0 = keep until the bounds apply).
    #[serde(default)]
    pub ttl_s: u64,
    /// `full_policy` for the high-priority lane (alarms, test results), used
    /// only once no normal reading is left to drop.
    #[serde(default)]
    pub high_full_policy: FullPolicy,
    /// `ttl_s` for the high-priority lane (0 = keep).
    #[serde(default)]
    pub high_ttl_s: u64,
}

fn default_cache_mib() -> u64 {
    8
}
fn default_recycle_after_mib() -> u64 {
    crate::buffer::DEFAULT_RECYCLE_AFTER_BYTES >> 20
}
fn default_max_readings() -> u64 {
    50_000_000
}
fn default_max_disk_mib() -> u64 {
    4096
}

pub use crate::buffer::FullPolicy;

/// The buffer's options as the file states them: sizes in MiB become bytes,
/// and 0 ms / 0 s (the file's "off") becomes no window / no TTL.
impl From<&BufferConfig> for crate::buffer::BufferOptions {
    fn from(c: &BufferConfig) -> Self {
        let mib = |m: u64| m.saturating_mul(1024 * 1024);
        let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        crate::buffer::BufferOptions {
            cache_bytes: mib(c.cache_mib),
            recycle_after_bytes: mib(c.recycle_after_mib),
            memory_probe: crate::buffer::resident_bytes,
            flush_every: (c.flush_every_ms > 0).then(|| Duration::from_millis(c.flush_every_ms)),
            max_readings: c.max_readings,
            max_disk_bytes: mib(c.max_disk_mib),
            normal: crate::buffer::LanePolicy {
                ttl: secs(c.ttl_s),
                full_policy: c.full_policy,
            },
            high: crate::buffer::LanePolicy {
                ttl: secs(c.high_ttl_s),
                full_policy: c.high_full_policy,
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// gRPC endpoint of the hub, e.g. `http://hub.example:50051`.
    #[serde(default)]
    pub hub_url: String,
    /// More hubs over the same database: tried in turn, after `hub_url`,
    /// when a connection fails or a stream breaks.
    #[serde(default)]
    pub hub_urls: Vec<String>,
    /// Most readings in one batch.
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// A batch smaller than `batch_max` waits at most this long for more readings
    /// (0: send as soon as there is anything). Fewer, larger batches on slow links.
    #[serde(default)]
    pub batch_linger_ms: u64,
    /// Batches sent but not yet acknowledged, at most.
    #[serde(default = "default_window")]
    pub max_in_flight: usize,
    /// A stream with unacknowledged batches and no ack for this long is torn down and reopened.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// Reconnect backoff starts here and doubles up to `reconnect_max_ms` (with jitter).
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// On shutdown, keep sending the backlog for at most this long before exiting.
    #[serde(default = "default_drain_ms")]
    pub shutdown_drain_ms: u64,
    /// CA (PEM) that signed the hub's certificate; required for `https://` URLs.
    pub ca_cert: Option<PathBuf>,
    /// This gateway's certificate and key (PEM) for mutual TLS; the hub takes
    /// the gateway id from the certificate's common name.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Name to verify in the hub's certificate, if not the URL's host.
    pub tls_domain: Option<String>,
    /// File holding this gateway's bearer token (hub `grpc.auth = "token"`).
    pub token_file: Option<PathBuf>,
    /// Compress batches on the wire: `gzip`, `zstd` (for cellular and metered links) or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// While a backlog drains, alternate its batches with the newest readings
    /// so the hub stays current (false: strictly oldest first).
    #[serde(default = "yes")]
    pub live_interleave: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// tonic's encoding for it (None: uncompressed).
    pub fn encoding(self) -> Option<tonic::codec::CompressionEncoding> {
        match self {
            Compression::Gzip => Some(tonic::codec::CompressionEncoding::Gzip),
            Compression::Zstd => Some(tonic::codec::CompressionEncoding::Zstd),
            Compression::None => None,
        }
    }
}

fn default_batch_max() -> usize {
    1000
}
fn default_window() -> usize {
    4
}
fn default_ack_timeout_ms() -> u64 {
    30_000
}
fn default_reconnect_min_ms() -> u64 {
    250
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}
fn default_drain_ms() -> u64 {
    2_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Unique within this gateway; becomes the reading's `device_id`.
    pub id: String,
    /// Firmware profile id (file `<profiles_dir>/<profile>.toml`).
    pub profile: String,
    /// How to reach the device.
    pub transport: Transport,
    /// Overrides the profile's `modbus.unit_id`.
    pub unit_id: Option<u8>,
    /// Time between the starts of two polls.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// Overrides the profile's `modbus.timeout_ms`.
    pub timeout_ms: Option<u64>,
    /// A point whose reads fail with a Modbus exception is skipped for this long, then tried again.
    #[serde(default = "default_bad_point_retry_s")]
    pub bad_point_retry_s: u64,
    /// After a failure, wait this long before the first retry; doubles up to `retry_max_ms`.
    #[serde(default = "default_retry_min_ms")]
    pub retry_min_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
}

fn default_poll_ms() -> u64 {
    1000
}
fn default_bad_point_retry_s() -> u64 {
    60
}
fn default_retry_min_ms() -> u64 {
    500
}
fn default_retry_max_ms() -> u64 {
    30_000
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Transport {
    /// Modbus TCP (or, for SCPI profiles, a raw socket such as LXI port 5025): `host:port`.
    Tcp(String),
    /// Modbus RTU frames over a TCP socket (serial-to-Ethernet converters): `host:port`.
    RtuOverTcp(String),
    /// A serial line (RS-485 / RS-232): Modbus RTU or SCPI/ASCII, per the profile.
    Serial(SerialLine),
}

/// A serial port; unset line settings come from the profile's `[serial]` table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialLine {
    pub device: PathBuf,
    pub baud: Option<u32>,
    pub parity: Option<device_profile::Parity>,
    pub data_bits: Option<u8>,
    pub stop_bits: Option<u8>,
}

impl Transport {
    /// Modbus RTU framing (a serial line, or one behind a serial-to-Ethernet
    /// converter), where unit 0 is the broadcast address.
    pub fn is_rtu(&self) -> bool {
        matches!(self, Transport::Serial(_) | Transport::RtuOverTcp(_))
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Tcp(a) => write!(f, "tcp://{a}"),
            Transport::RtuOverTcp(a) => write!(f, "rtu+tcp://{a}"),
            Transport::Serial(s) => write!(f, "serial://{}", s.device.display()),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        load_toml_validated(path, Config::validate)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        self.telemetry.validate("telemetry")?;
        // The hub refuses longer or unprintable ids; catch that here, not as a stalled uplink.
        if !valid_id(&self.gateway_id) {
            return Err(("gateway_id".into(), id_rule()));
        }
        let hubs = self.uplink.hub_endpoints();
        if hubs.is_empty() {
            return Err(("uplink.hub_url".into(), "no hub: set hub_url".into()));
        }
        for h in &hubs {
            if !(h.starts_with("http://") || h.starts_with("https://")) {
                return Err((
                    "uplink.hub_urls".into(),
                    format!("{h:?} must start with http:// or https://"),
                ));
            }
            if h.starts_with("https://") != hubs[0].starts_with("https://") {
                return Err((
                    "uplink.hub_urls".into(),
                    "mixes http:// and https://; one TLS setting serves every hub".into(),
                ));
            }
        }
        if let Some(m) = &self.mqtt
            && let Err(e) = m.validate()
        {
            let key = e
                .split(':')
                .next()
                .unwrap_or("mqtt")
                .split(' ')
                .next()
                .unwrap_or("mqtt");
            return Err((key.to_string(), e));
        }
        if let Err(e) = self.http.allowed_host_names() {
            return Err(("http.allowed_hosts".into(), e.to_string()));
        }
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            return Err((
                "http.tls_cert".into(),
                "tls_cert and tls_key go together".into(),
            ));
        }
        self.auth.validate()?;
        if self.buffer.cache_mib == 0 {
            // sled panics on open without a cache, which the buffer would take
            // for damage and move a healthy buffer aside.
            return Err((
                "buffer.cache_mib".into(),
                "is 0: the buffer database cannot open without a page cache; set at least 1 \
                 (default 8)"
                    .into(),
            ));
        }
        if self.buffer.max_readings == 0 {
            return Err(("buffer.max_readings".into(), "must be > 0".into()));
        }
        if self.buffer.max_disk_mib == 0 {
            return Err(("buffer.max_disk_mib".into(), "must be > 0".into()));
        }
        let max = qi_proto::limits::MAX_BATCH_READINGS;
        if self.uplink.batch_max == 0 || self.uplink.batch_max > max {
            return Err(("uplink.batch_max".into(), format!("must be 1..={max}")));
        }
        let u = &self.uplink;
        if u.client_cert.is_some() != u.client_key.is_some() {
            return Err((
                "uplink.client_cert".into(),
                "client_cert and client_key go together".into(),
            ));
        }
        if hubs[0].starts_with("https://") && u.ca_cert.is_none() {
            return Err((
                "uplink.ca_cert".into(),
                "an https:// hub_url needs the CA that signed the hub's certificate".into(),
            ));
        }
        if hubs[0].starts_with("http://") && (u.client_cert.is_some() || u.ca_cert.is_some()) {
            return Err((
                "uplink.hub_url".into(),
                "certificates are configured but the URL is http://; use https://".into(),
            ));
        }
        if self.uplink.ack_timeout_ms == 0 {
            return Err((
                "uplink.ack_timeout_ms".into(),
                "is 0: every stream with a batch in flight would count as stalled at once and be \
                 reopened forever; set it above the hub's commit time (default 30000)"
                    .into(),
            ));
        }
        if self.uplink.max_in_flight == 0 {
            return Err(("uplink.max_in_flight".into(), "must be >= 1".into()));
        }
        if self.uplink.reconnect_min_ms == 0 {
            return Err((
                "uplink.reconnect_min_ms".into(),
                "must be > 0 (0 would redial an unreachable hub in a busy loop)".into(),
            ));
        }
        if self.uplink.reconnect_max_ms < self.uplink.reconnect_min_ms {
            return Err((
                "uplink.reconnect_max_ms".into(),
                format!(
                    "must be >= uplink.reconnect_min_ms ({})",
                    self.uplink.reconnect_min_ms
                ),
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            if !valid_id(&d.id) {
                return Err((format!("devices[{i}].id"), id_rule()));
            }
            if !ids.insert(d.id.as_str()) {
                return Err((
                    format!("devices[{i}].id"),
                    format!("{:?} is used by another device", d.id),
                ));
            }
            if d.poll_interval_ms == 0 {
                return Err((
                    format!("devices[{i}].poll_interval_ms"),
                    "must be > 0".into(),
                ));
            }
            if d.timeout_ms == Some(0) {
                return Err((
                    format!("devices[{i}].timeout_ms"),
                    "is 0: no reply can arrive in 0 ms, so the device would never come online; \
                     set the longest time it takes to answer (e.g. 1000), or remove the key to \
                     use the profile's"
                        .into(),
                ));
            }
            if d.unit_id == Some(0) && d.transport.is_rtu() {
                return Err((format!("devices[{i}].unit_id"), BROADCAST_UNIT.into()));
            }
            if d.retry_min_ms == 0 {
                return Err((
                    format!("devices[{i}].retry_min_ms"),
                    "must be > 0 (0 would retry a dead device in a busy loop)".into(),
                ));
            }
            if d.retry_max_ms < d.retry_min_ms {
                return Err((
                    format!("devices[{i}].retry_max_ms"),
                    format!("must be >= retry_min_ms ({})", d.retry_min_ms),
                ));
            }
            match &d.transport {
                Transport::Tcp(addr) | Transport::RtuOverTcp(addr) => {
                    let port_ok = addr
                        .rsplit_once(':')
                        .and_then(|(_, p)| p.parse::<u16>().ok())
                        .is_some();
                    if !port_ok {
                        let kind = if matches!(d.transport, Transport::Tcp(_)) {
                            "tcp"
                        } else {
                            "rtu_over_tcp"
                        };
                        return Err((
                            format!("devices[{i}].transport.{kind}"),
                            format!("{addr:?} must be host:port"),
                        ));
                    }
                }
                Transport::Serial(line) => {
                    let bad = line.device.as_os_str().is_empty()
                        || line.baud == Some(0)
                        || line.data_bits.is_some_and(|b| !(5..=8).contains(&b))
                        || line.stop_bits.is_some_and(|b| !(1..=2).contains(&b));
                    if bad {
                        return Err((
                            format!("devices[{i}].transport.serial"),
                            "needs `device`; baud > 0, data_bits 5..=8, stop_bits 1 or 2".into(),
                        ));
                    }
                }
            }
            if d.bad_point_retry_s == 0 {
                return Err((
                    format!("devices[{i}].bad_point_retry_s"),
                    "must be > 0".into(),
                ));
            }
        }
        crate::benches::validate(&self.benches, &self.runs, &ids)?;
        Ok(())
    }
}

/// Unit 0 is Modbus RTU's broadcast address: every device on the line obeys
/// writes to it and none answers, so polling it can only time out.
const BROADCAST_UNIT: &str = "is 0, the broadcast address on a serial (RTU) line: no device \
     answers it, so every poll would time out; set the device's own address (1..=247)";

/// The hub's rule for ids (`qi_proto::limits::valid_id`), and not only spaces.
fn id_rule() -> String {
    format!(
        "must be 1 to {} bytes, no control characters, not only spaces",
        qi_proto::limits::MAX_ID_LEN
    )
}

fn valid_id(s: &str) -> bool {
    !s.trim().is_empty() && qi_proto::limits::valid_id(s)
}

impl UplinkConfig {
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }

    /// Every hub to try, in order: `hub_url`, then `hub_urls` (once each).
    pub fn hub_endpoints(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for h in std::iter::once(&self.hub_url).chain(&self.hub_urls) {
            if !h.is_empty() && !all.contains(h) {
                all.push(h.clone());
            }
        }
        all
    }
}

#[cfg(test)]
mod tests;
