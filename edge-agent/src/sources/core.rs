//! What every poller keeps and does the same way, whatever its protocol: the
//! device's identity and profile, its schedule and dead-band state, its
//! command channel, its health after a successful cycle, and the counters
//! every device has. A protocol poller holds a [`PollerCore`] and supplies
//! only how to read and write its device (see [`super::driver::Poller`]).

use super::command::{DeviceCommand, WriteError};
use super::health::{BadPoint, DeviceHealth, DeviceState, RefusedRegisters};
use super::report::Reporter;
use super::schedule::Schedule;
use crate::buffer::{Buffer, NewReading};
use crate::config::DeviceConfig;
use device_profile::{Decoded, Point, Profile};
use qi_proto::v1::Quality;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Counter handles resolved once: a labelled `metrics::counter!` per cycle
/// would hash and look up its key every time.
struct CoreMetrics {
    polls: metrics::Counter,
    readings: metrics::Counter,
    writes_ok: metrics::Counter,
    writes_failed: metrics::Counter,
}

pub struct PollerCore {
    pub id: String,
    pub profile: Arc<Profile>,
    pub buffer: Arc<Buffer>,
    /// This poller is the only writer of its device's health.
    pub health: watch::Sender<DeviceHealth>,
    pub schedule: Schedule,
    pub reporter: Reporter,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub(super) commands: mpsc::Receiver<DeviceCommand>,
    /// Shared copies of the strings every reading carries (no allocation per reading).
    device: Arc<str>,
    names: Vec<Arc<str>>,
    units: Vec<Arc<str>>,
    /// Requests in the last poll of each group.
    last_requests: Vec<u32>,
    m: CoreMetrics,
}

/// What one successful poll of a group produced.
#[derive(Default)]
pub struct Cycle {
    /// Readings due for the buffer (see [`PollerCore::offer`]).
    pub readings: Vec<NewReading>,
    /// The latest value of each point read: (point index, value, Unix ms).
    pub live: Vec<(usize, Decoded, i64)>,
    /// Requests (or queries) this poll of the group took.
    pub requests: u32,
    /// Points the device currently refuses; any makes the device "degraded".
    pub bad_points: Vec<BadPoint>,
    pub refused_registers: Vec<RefusedRegisters>,
    /// Values read but not decodable.
    pub decode_errors: u64,
    /// Round trip of the cycle's latest request, if the protocol measures it per cycle.
    pub rtt_ms: Option<f64>,
}

impl PollerCore {
    /// `polls_metric` names the protocol's poll counter (e.g. `edge_modbus_polls_total`).
    pub fn new(
        cfg: &DeviceConfig,
        profile: Arc<Profile>,
        endpoint: &str,
        buffer: Arc<Buffer>,
        commands: mpsc::Receiver<DeviceCommand>,
        polls_metric: &'static str,
    ) -> (PollerCore, watch::Receiver<DeviceHealth>) {
        let (health, rx) = watch::channel(DeviceHealth::new(&cfg.id, &profile.model.id, endpoint));
        let schedule =
            Schedule::from_profile(&profile, Duration::from_millis(cfg.poll_interval_ms));
        let d = cfg.id.clone();
        let m = CoreMetrics {
            polls: metrics::counter!(polls_metric, "device" => d.clone()),
            readings: metrics::counter!(crate::metric_names::EDGE_READINGS_TOTAL, "device" => d.clone()),
            writes_ok: metrics::counter!(crate::metric_names::EDGE_WRITES_TOTAL, "device" => d.clone(), "result" => "ok"),
            writes_failed: metrics::counter!(crate::metric_names::EDGE_WRITES_TOTAL, "device" => d, "result" => "error"),
        };
        let core = PollerCore {
            id: cfg.id.clone(),
            device: Arc::from(cfg.id.as_str()),
            names: profile
                .points
                .iter()
                .map(|p| Arc::from(p.name.as_str()))
                .collect(),
            units: profile
                .points
                .iter()
                .map(|p| Arc::from(p.unit.as_str()))
                .collect(),
            last_requests: vec![0; schedule.groups.len()],
            retry_min: Duration::from_millis(cfg.retry_min_ms),
            retry_max: Duration::from_millis(cfg.retry_max_ms),
            profile,
            buffer,
            health,
            schedule,
            reporter: Reporter::default(),
            commands,
            m,
        };
        (core, rx)
    }

    /// Queues point `i`'s value as a reading if the profile reports the point
    /// and its dead-band lets the value through.
    pub fn offer(
        &mut self,
        i: usize,
        value: f64,
        ts_us: i64,
        now: std::time::Instant,
        readings: &mut Vec<NewReading>,
    ) {
        let p = &self.profile.points[i];
        if p.report && self.reporter.should_report(i, p, value, now) {
            readings.push(NewReading {
                device_id: Arc::clone(&self.device),
                metric: Arc::clone(&self.names[i]),
                timestamp_us: ts_us,
                value,
                unit: Arc::clone(&self.units[i]),
                quality: Quality::Good as i32,
                priority: p.priority,
            });
        }
    }

    /// Appends the cycle's readings (durable before this returns), then
    /// publishes the device as online, or degraded while points fail.
    /// Returns how many readings the buffer took.
    pub async fn finish_cycle(&mut self, gi: usize, c: Cycle) -> u64 {
        let n = self.buffer.accept(&self.id, &c.readings).await;
        self.m.polls.increment(1);
        self.m.readings.increment(n);
        if self.health.borrow().state == DeviceState::Offline {
            tracing::info!(device = %self.id, group = %self.schedule.groups[gi].name, "device back online");
        }
        self.last_requests[gi] = c.requests;
        let requests = self.last_requests.iter().sum();
        let points = &self.profile.points;
        self.health.send_modify(|h| {
            h.state = if c.bad_points.is_empty() {
                DeviceState::Online
            } else {
                DeviceState::Degraded
            };
            h.last_error = c
                .bad_points
                .first()
                .map(|b| format!("{}: {}", b.point, b.error));
            h.bad_points = c.bad_points;
            h.refused_registers = c.refused_registers;
            h.consecutive_failures = 0;
            h.polls_ok += 1;
            h.readings += n;
            h.errors.decode += c.decode_errors;
            h.requests_per_cycle = requests;
            if let Some(ms) = c.rtt_ms {
                h.record_rtt(ms);
            }
            h.last_success_ms = Some(chrono::Utc::now().timestamp_millis());
            h.next_retry_ms = None;
            for (i, d, ts_ms) in c.live {
                let p = &points[i];
                h.set_value(&p.name, &p.unit, d, ts_ms);
            }
        });
        n
    }

    /// The point a write names, if the profile lets it be written at all;
    /// the protocol then checks what it needs (a register, a command template).
    pub fn writable_point(&self, name: &str) -> Result<&Point, WriteError> {
        let Some(p) = self.profile.points.iter().find(|p| p.name == name) else {
            return Err(WriteError::UnknownPoint(name.to_string()));
        };
        if !p.writable {
            return Err(WriteError::NotWritable(name.to_string()));
        }
        Ok(p)
    }

    /// Logs and counts a write's outcome (`edge_writes_total`, by result).
    pub(super) fn record_write(&self, point: &str, value: f64, res: &Result<(), WriteError>) {
        match res {
            Ok(()) => {
                self.m.writes_ok.increment(1);
                tracing::info!(device = %self.id, %point, value, "point written");
            }
            Err(e) => {
                self.m.writes_failed.increment(1);
                tracing::warn!(device = %self.id, %point, value, error = %e, "write refused");
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::buffer::BufferOptions;
    use std::path::Path;

    const PROFILE: &str = "format_version = 1\nprotocol = \"scpi\"\n\
        [model]\nid = \"rig\"\nmanufacturer = \"m\"\nname = \"n\"\ndevice_type = \"t\"\n\
        [scpi]\n[poll_groups.slow]\ninterval_ms = 5000\n\
        [[points]]\nname = \"volts\"\nunit = \"V\"\nquery = \"V?\"\n\
        [[points]]\nname = \"setpoint\"\nquery = \"S?\"\nwritable = true\nwrite_command = \"S {value}\"\npoll_group = \"slow\"\n\
        [[points]]\nname = \"internal\"\nquery = \"I?\"\nreport = false\n";

    pub(in crate::sources) fn core(
        dir: &Path,
    ) -> (PollerCore, watch::Receiver<DeviceHealth>, Arc<Buffer>) {
        let cfg: DeviceConfig = toml::from_str(
            "id = \"rig-1\"\nprofile = \"rig\"\ntransport = { tcp = \"127.0.0.1:1\" }\n",
        )
        .expect("device entry");
        let profile = Profile::parse(PROFILE, Path::new("rig.toml")).expect("profile");
        let buffer = Arc::new(
            Buffer::open(&dir.join("buffer"), BufferOptions::with_cache(1 << 20)).expect("buffer"),
        );
        let (_tx, commands) = mpsc::channel(1);
        let (core, rx) = PollerCore::new(
            &cfg,
            Arc::new(profile),
            "tcp://127.0.0.1:1",
            Arc::clone(&buffer),
            commands,
            "edge_test_polls_total",
        );
        (core, rx, buffer)
    }

    #[tokio::test]
    async fn a_cycle_lands_in_the_buffer_and_in_health_the_same_for_every_protocol() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut core, health, buffer) = core(dir.path());
        assert_eq!(core.schedule.groups.len(), 2);
        let now = std::time::Instant::now();
        let mut readings = Vec::new();
        core.offer(0, 12.5, 1_000_000, now, &mut readings);
        // report = false: a live value only, never a reading.
        core.offer(2, 7.0, 1_000_000, now, &mut readings);
        assert_eq!(readings.len(), 1);
        let n = core
            .finish_cycle(
                0,
                Cycle {
                    readings,
                    live: vec![
                        (0, Decoded::Number(12.5), 1000),
                        (2, Decoded::Number(7.0), 1000),
                    ],
                    requests: 2,
                    decode_errors: 1,
                    rtt_ms: Some(4.0),
                    ..Cycle::default()
                },
            )
            .await;
        assert_eq!((n, buffer.stats().backlog), (1, 1));
        {
            let h = health.borrow();
            assert_eq!(h.state, DeviceState::Online);
            assert_eq!((h.polls_ok, h.readings, h.errors.decode), (1, 1, 1));
            assert_eq!(h.values["volts"].value, Some(12.5));
            assert_eq!(h.values["volts"].unit, "V");
            assert_eq!(h.last_round_trip_ms, Some(4.0));
        }
        // The other group: requests add up over groups; a refused point degrades the device.
        let bad = BadPoint {
            point: "setpoint".into(),
            error: "error reply".into(),
            since_ms: 0,
            failures: 1,
        };
        core.finish_cycle(
            1,
            Cycle {
                requests: 3,
                bad_points: vec![bad],
                ..Cycle::default()
            },
        )
        .await;
        let h = health.borrow().clone();
        assert_eq!(h.state, DeviceState::Degraded);
        assert_eq!(h.requests_per_cycle, 5);
        assert_eq!(h.last_error.as_deref(), Some("setpoint: error reply"));
        assert_eq!(h.polls_ok, 2);
    }

    #[test]
    fn only_writable_points_pass_the_shared_check() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (core, _, _) = core(dir.path());
        assert!(core.writable_point("setpoint").is_ok());
        assert_eq!(
            core.writable_point("volts").err(),
            Some(WriteError::NotWritable("volts".into()))
        );
        assert_eq!(
            core.writable_point("nope").err(),
            Some(WriteError::UnknownPoint("nope".into()))
        );
    }
}
