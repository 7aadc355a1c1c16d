//! Polls one SCPI / ASCII instrument: one query per point, reply parsed by
//! field, error replies counted per point, resync after noise or timeouts.

use super::line::{Io, LineError, LinePort};
use crate::buffer::{Buffer, NewReading};
use crate::config::{DeviceConfig, Transport};
use crate::sources::command::{DeviceCommand, WriteError};
use crate::sources::core::{Cycle, PollerCore};
use crate::sources::driver::{PollFailure, Poller, drive};
use crate::sources::health::{BadPoint, DeviceHealth};
use crate::sources::serial::LineSettings;
use device_profile::{DataType, Decoded, Point, Profile, ScpiDefaults};
use qi_common::shutdown::Stop;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Consecutive timeouts after which the device counts as offline (reconnect, backoff).
const TIMEOUTS_BEFORE_OFFLINE: u32 = 2;
/// Quiet time that marks the end of line noise when resynchronising.
const RESYNC_QUIET: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub enum ScpiEndpoint {
    Tcp(String),
    Serial(LineSettings),
}

impl std::fmt::Display for ScpiEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScpiEndpoint::Tcp(a) => write!(f, "tcp://{a}"),
            ScpiEndpoint::Serial(l) => write!(f, "serial://{l}"),
        }
    }
}

impl ScpiEndpoint {
    pub fn from_config(t: &Transport, profile: &Profile) -> Result<ScpiEndpoint, String> {
        match t {
            Transport::Tcp(a) => Ok(ScpiEndpoint::Tcp(a.clone())),
            Transport::Serial(l) => Ok(ScpiEndpoint::Serial(LineSettings::resolve(
                l,
                &profile.serial,
            ))),
            Transport::RtuOverTcp(_) => {
                Err("rtu_over_tcp is a Modbus transport; use tcp or serial for SCPI".into())
            }
        }
    }
}

/// How one query went.
enum Outcome {
    Value(f64),
    Text(String),
    /// The device answered with an error reply, or something we cannot parse.
    PointError(String),
}

pub struct ScpiPoller {
    core: PollerCore,
    scpi: ScpiDefaults,
    endpoint: ScpiEndpoint,
    timeout: Duration,
    inter_request: Duration,
    port: Option<LinePort>,
    /// Points whose last query failed, with the error (logged once per streak).
    failing: BTreeMap<usize, (String, i64, u32)>,
}

impl ScpiPoller {
    pub fn new(
        cfg: &DeviceConfig,
        profile: Arc<Profile>,
        endpoint: ScpiEndpoint,
        buffer: Arc<Buffer>,
        commands: mpsc::Receiver<DeviceCommand>,
    ) -> (ScpiPoller, watch::Receiver<DeviceHealth>) {
        let scpi = profile.scpi_defaults();
        let (core, rx) = PollerCore::new(
            cfg,
            profile,
            &endpoint.to_string(),
            buffer,
            commands,
            crate::metric_names::EDGE_SCPI_POLLS_TOTAL,
        );
        let poller = ScpiPoller {
            core,
            timeout: Duration::from_millis(cfg.timeout_ms.unwrap_or(scpi.timeout_ms)),
            inter_request: Duration::from_millis(scpi.inter_request_delay_ms),
            scpi,
            endpoint,
            port: None,
            failing: BTreeMap::new(),
        };
        (poller, rx)
    }

    pub async fn run(mut self, stop: Stop) {
        tracing::info!(device = %self.core.id, endpoint = %self.endpoint, points = self.core.profile.points.len(), "polling SCPI device");
        drive(&mut self, stop).await;
        tracing::info!(device = %self.core.id, "poller stopped");
    }

    async fn open(&self) -> Result<LinePort, LineError> {
        let io: Box<dyn Io> = match &self.endpoint {
            ScpiEndpoint::Tcp(addr) => {
                let s = tokio::time::timeout(
                    self.timeout,
                    tokio::net::TcpStream::connect(addr.as_str()),
                )
                .await
                .map_err(|_| LineError::Timeout(self.timeout))??;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            ScpiEndpoint::Serial(line) => Box::new(line.open()?),
        };
        let mut port = LinePort::new(io, &self.scpi.line_ending);
        for cmd in &self.scpi.init {
            port.send(cmd).await?;
            tokio::time::sleep(self.inter_request.max(Duration::from_millis(10))).await;
        }
        tracing::info!(device = %self.core.id, endpoint = %self.endpoint, "connected");
        Ok(port)
    }

    /// Waits for the line to go quiet and throws away what came in meanwhile.
    async fn resync(&mut self, why: &str) -> Result<(), LineError> {
        self.core.health.send_modify(|h| h.errors.resyncs += 1);
        metrics::counter!(crate::metric_names::EDGE_SCPI_RESYNCS_TOTAL, "device" => self.core.id.clone()).increment(1);
        tracing::debug!(device = %self.core.id, why, "resynchronising the line");
        if let Some(port) = self.port.as_mut() {
            port.discard_pending(RESYNC_QUIET).await?;
        }
        Ok(())
    }

    async fn query(&mut self, cmd: &str) -> Result<(String, f64), LineError> {
        if self.port.is_none() {
            self.port = Some(self.open().await?);
        }
        let Some(port) = self.port.as_mut() else {
            return Err(LineError::Closed);
        };
        if !self.inter_request.is_zero() {
            tokio::time::sleep(self.inter_request).await;
        }
        let started = Instant::now();
        let (reply, stale) = port.query(cmd, self.timeout).await?;
        let rtt = started.elapsed().as_secs_f64() * 1000.0;
        if stale > 0 {
            self.core.health.send_modify(|h| h.errors.resyncs += 1);
            tracing::debug!(device = %self.core.id, bytes = stale, "discarded unsolicited input");
        }
        Ok((reply, rtt))
    }

    fn is_error_reply(&self, reply: &str) -> bool {
        self.scpi
            .error_prefixes
            .iter()
            .any(|p| reply.starts_with(p.as_str()))
    }

    fn parse(&self, p: &Point, reply: &str) -> Outcome {
        if self.is_error_reply(reply) {
            return Outcome::PointError(format!("error reply {reply:?}"));
        }
        if p.data_type == Some(DataType::String) {
            return Outcome::Text(reply.to_string());
        }
        let Some(field) = reply.split(p.separator.as_str()).nth(p.field) else {
            return Outcome::PointError(format!("reply {reply:?} has no field {}", p.field));
        };
        match field.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Outcome::Value(v * p.scale + p.offset),
            _ => Outcome::PointError(format!("field {} of {reply:?} is not a number", p.field)),
        }
    }

    async fn poll_group_inner(&mut self, gi: usize) -> Result<(), LineError> {
        let points = Arc::clone(&self.core.profile);
        let indexes = self.core.schedule.groups[gi].points.clone();
        let mut readings = Vec::new();
        let mut live = Vec::new();
        let mut timeouts_in_a_row = 0;
        let mut answered = 0;
        // Several points often share one query (fields of one reply): ask once per cycle.
        let mut replies: std::collections::HashMap<String, String> =
            std::collections::HashMap::new();
        for i in indexes {
            let p = &points.points[i];
            let Some(q) = p.query.as_deref() else {
                continue;
            };
            if let Some(reply) = replies.get(q).cloned() {
                self.apply(i, p, &reply, &mut readings, &mut live);
                continue;
            }
            let (reply, rtt) = match self.query(q).await {
                Ok(r) => r,
                Err(LineError::Timeout(d)) => {
                    timeouts_in_a_row += 1;
                    self.core.health.send_modify(|h| h.errors.timeouts += 1);
                    if timeouts_in_a_row >= TIMEOUTS_BEFORE_OFFLINE && answered == 0 {
                        return Err(LineError::Timeout(d));
                    }
                    self.resync("timeout").await?;
                    self.point_failed(i, format!("no reply within {} ms", d.as_millis()));
                    continue;
                }
                Err(LineError::Noise(n)) => {
                    self.core.health.send_modify(|h| h.errors.decode += 1);
                    self.resync("noise").await?;
                    self.point_failed(i, format!("garbled reply ({n})"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            timeouts_in_a_row = 0;
            answered += 1;
            self.core.health.send_modify(|h| h.record_rtt(rtt));
            self.apply(i, p, &reply, &mut readings, &mut live);
            replies.insert(q.to_string(), reply);
        }
        self.finish_cycle(gi, readings, live, answered).await;
        Ok(())
    }

    /// Turns one reply into the point's live value and, if due, a reading.
    fn apply(
        &mut self,
        i: usize,
        p: &Point,
        reply: &str,
        readings: &mut Vec<NewReading>,
        live: &mut Vec<(usize, Decoded, i64)>,
    ) {
        let ts = chrono::Utc::now().timestamp_micros();
        match self.parse(p, reply) {
            Outcome::Value(v) => {
                self.point_ok(i);
                live.push((i, Decoded::Number(v), ts / 1000));
                self.core
                    .offer(i, v, ts, Instant::now().into_std(), readings);
            }
            Outcome::Text(t) => {
                self.point_ok(i);
                live.push((i, Decoded::Text(t), ts / 1000));
            }
            Outcome::PointError(e) => {
                let device_error = self.is_error_reply(reply);
                self.core.health.send_modify(|h| {
                    if device_error {
                        h.errors.device_errors += 1;
                    } else {
                        h.errors.decode += 1;
                    }
                });
                self.point_failed(i, e);
            }
        }
    }

    /// Appends what is due and publishes health. Noise alone does not make a
    /// device offline (something is talking); only silence does
    /// (TIMEOUTS_BEFORE_OFFLINE in poll_group).
    async fn finish_cycle(
        &mut self,
        gi: usize,
        readings: Vec<NewReading>,
        live: Vec<(usize, Decoded, i64)>,
        answered: u32,
    ) {
        let points = &self.core.profile.points;
        let bad_points: Vec<BadPoint> = self
            .failing
            .iter()
            .map(|(&i, (e, since, n))| BadPoint {
                point: points[i].name.clone(),
                error: e.clone(),
                since_ms: *since,
                failures: *n,
            })
            .collect();
        let cycle = Cycle {
            readings,
            live,
            requests: answered,
            bad_points,
            ..Cycle::default()
        };
        self.core.finish_cycle(gi, cycle).await;
    }

    fn point_ok(&mut self, i: usize) {
        if self.failing.remove(&i).is_some() {
            tracing::info!(device = %self.core.id, point = %self.core.profile.points[i].name, "point readable again");
        }
    }

    fn point_failed(&mut self, i: usize, error: String) {
        let name = &self.core.profile.points[i].name;
        match self.failing.get_mut(&i) {
            Some(f) => {
                f.0 = error;
                f.2 += 1;
            }
            None => {
                tracing::warn!(device = %self.core.id, point = %name, %error, "point failed; it stays in the poll and is counted");
                self.failing
                    .insert(i, (error, chrono::Utc::now().timestamp_millis(), 1));
            }
        }
    }

    async fn write_point(&mut self, name: &str, value: f64) -> Result<(), WriteError> {
        let p = self.core.writable_point(name)?;
        let Some(template) = p.write_command.clone() else {
            return Err(WriteError::NotWritable(name.to_string()));
        };
        let (scale, offset) = (p.scale, p.offset);
        if !value.is_finite() {
            return Err(WriteError::BadValue(format!(
                "{value} is not a finite number"
            )));
        }
        let raw = (value - offset) / scale;
        let cmd = render_write(&template, raw);
        if self.port.is_none() {
            self.port = Some(
                self.open()
                    .await
                    .map_err(|e| WriteError::Unreachable(e.to_string()))?,
            );
        }
        let timeout = self.timeout;
        let wants_reply = self.scpi.write_reply;
        let Some(port) = self.port.as_mut() else {
            return Err(WriteError::Unreachable("no connection".into()));
        };
        let res = async {
            port.discard_pending(Duration::from_millis(1)).await?;
            port.send(&cmd).await?;
            if wants_reply {
                port.read_line(timeout).await.map(Some)
            } else {
                Ok(None)
            }
        }
        .await;
        match res {
            Ok(Some(reply)) if self.is_error_reply(&reply) => Err(WriteError::DeviceError(reply)),
            Ok(_) => Ok(()),
            Err(LineError::Timeout(d)) => Err(WriteError::Timeout(d.as_millis() as u64)),
            Err(e) => {
                self.port = None;
                Err(WriteError::Unreachable(e.to_string()))
            }
        }
    }
}

impl ScpiPoller {
    /// Commands, then the query, on this poller's connection; the reply may
    /// be up to `MAX_SWEEP_REPLY` long. A failure drops the connection, so
    /// the next poll starts on a clean line.
    async fn run_transaction(
        &mut self,
        commands: &[String],
        query: &str,
        timeout: Duration,
    ) -> Result<String, WriteError> {
        if self.port.is_none() {
            self.port = Some(
                self.open()
                    .await
                    .map_err(|e| WriteError::Unreachable(e.to_string()))?,
            );
        }
        let pause = self.inter_request;
        let Some(port) = self.port.as_mut() else {
            return Err(WriteError::Unreachable("no connection".into()));
        };
        let res = tokio::time::timeout(timeout, async {
            port.discard_pending(Duration::from_millis(1)).await?;
            for c in commands {
                port.send(c).await?;
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            port.send(query).await?;
            port.read_line_max(timeout, super::line::MAX_SWEEP_REPLY)
                .await
        })
        .await;
        let res = match res {
            Ok(r) => r,
            Err(_) => Err(LineError::Timeout(timeout)),
        };
        match res {
            Ok(reply) if self.is_error_reply(&reply) => Err(WriteError::DeviceError(reply)),
            Ok(reply) => Ok(reply),
            Err(e) => {
                self.port = None;
                Err(match e {
                    LineError::Timeout(d) => WriteError::Timeout(d.as_millis() as u64),
                    other => WriteError::Unreachable(other.to_string()),
                })
            }
        }
    }
}

/// Fills `{value}` (shortest form) or `{value:.N}` (N decimals) in a write template.
pub fn render_write(template: &str, value: f64) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{value") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 6..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let spec = &after[..end];
        match spec
            .strip_prefix(":.")
            .and_then(|d| d.parse::<usize>().ok())
        {
            Some(decimals) => out.push_str(&format!("{value:.decimals$}")),
            None => out.push_str(&format!("{value}")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

impl Poller for ScpiPoller {
    fn core(&mut self) -> &mut PollerCore {
        &mut self.core
    }
    async fn poll_group(&mut self, gi: usize) -> Result<(), PollFailure> {
        self.poll_group_inner(gi).await.map_err(|e| PollFailure {
            timeout: matches!(e, LineError::Timeout(_)),
            message: e.to_string(),
        })
    }
    async fn write(&mut self, point: &str, value: f64) -> Result<(), WriteError> {
        self.write_point(point, value).await
    }
    async fn transaction(
        &mut self,
        commands: &[String],
        query: &str,
        timeout: Duration,
    ) -> Result<String, WriteError> {
        self.run_transaction(commands, query, timeout).await
    }
    fn after_success(&mut self, gi: usize) {
        // Points that failed (noise, error replies) are retried soon, not a group interval later.
        let failing = self.core.schedule.groups[gi]
            .points
            .iter()
            .any(|i| self.failing.contains_key(i));
        if failing {
            let retry_min = self.core.retry_min;
            self.core.schedule.retry_sooner(gi, retry_min);
        }
    }
    fn after_failure(&mut self) {
        self.port = None;
    }
}

#[cfg(test)]
mod tests {
    use super::render_write;

    #[test]
    fn write_templates() {
        assert_eq!(render_write("TEMP,S{value:.1}", 25.0), "TEMP,S25.0");
        assert_eq!(
            render_write(":SOUR:VOLT:LEV {value}", 1.5),
            ":SOUR:VOLT:LEV 1.5"
        );
        assert_eq!(render_write("X {value:.3} Y {value}", 2.0), "X 2.000 Y 2");
    }
}
