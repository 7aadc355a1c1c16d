//! What the status page and the logs say about one device. Each poller is the
//! only writer of its device's [`DeviceHealth`] and publishes it on a watch channel.

use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// Not polled successfully yet.
    Connecting,
    /// Last poll read every point.
    Online,
    /// Reachable, but some points fail (Modbus exceptions, error replies) and are skipped.
    Degraded,
    /// Last attempt failed (connect, timeout or I/O); retrying with backoff.
    Offline,
    /// Not polled at all: its profile or settings are unusable (see `last_error`).
    Error,
}

/// Errors by kind since start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorCounts {
    pub timeouts: u64,
    pub transport: u64,
    /// Modbus exception responses, SCPI error replies.
    pub device_errors: u64,
    /// Values that could not be decoded or parsed (bad length, NaN, garbage reply).
    pub decode: u64,
    /// Times an ASCII/SCPI line was resynchronised after noise or a timeout.
    pub resyncs: u64,
}

/// A point currently skipped because the device refuses it.
#[derive(Debug, Clone, Serialize)]
pub struct BadPoint {
    pub point: String,
    pub error: String,
    /// Unix milliseconds when it was first refused.
    pub since_ms: i64,
    /// How many times it has been tried and refused.
    pub failures: u32,
}

/// Registers the device refuses that belong to no point it reads (they lie in
/// a gap a coalesced read would bridge): reads are planned around them.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedRegisters {
    pub register: device_profile::RegisterKind,
    /// First and last refused address (0-based protocol addresses).
    pub first: u16,
    pub last: u16,
    pub error: String,
    /// Unix milliseconds when first refused.
    pub since_ms: i64,
    /// How many times they have been tried and refused.
    pub failures: u32,
}

/// The latest value of a point, whether or not it was reported upstream.
#[derive(Debug, Clone, Serialize)]
pub struct LiveValue {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub unit: String,
    pub ts_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceHealth {
    pub device_id: String,
    pub profile: String,
    pub endpoint: String,
    pub state: DeviceState,
    pub last_error: Option<String>,
    /// Unix milliseconds of the last fully or partly successful poll.
    pub last_success_ms: Option<i64>,
    pub consecutive_failures: u32,
    pub polls_ok: u64,
    pub polls_failed: u64,
    pub readings: u64,
    pub errors: ErrorCounts,
    /// Round trip of the last request, and a moving average, in milliseconds.
    pub last_round_trip_ms: Option<f64>,
    pub avg_round_trip_ms: Option<f64>,
    /// Requests in the last poll cycle.
    pub requests_per_cycle: u32,
    /// Milliseconds until the next retry, while offline.
    pub next_retry_ms: Option<u64>,
    pub bad_points: Vec<BadPoint>,
    /// Modbus only: refused registers between points (see [`RefusedRegisters`]).
    pub refused_registers: Vec<RefusedRegisters>,
    pub values: BTreeMap<String, LiveValue>,
}

impl DeviceHealth {
    pub fn new(device_id: &str, profile: &str, endpoint: &str) -> DeviceHealth {
        DeviceHealth {
            device_id: device_id.to_string(),
            profile: profile.to_string(),
            endpoint: endpoint.to_string(),
            state: DeviceState::Connecting,
            last_error: None,
            last_success_ms: None,
            consecutive_failures: 0,
            polls_ok: 0,
            polls_failed: 0,
            readings: 0,
            errors: ErrorCounts::default(),
            last_round_trip_ms: None,
            avg_round_trip_ms: None,
            requests_per_cycle: 0,
            next_retry_ms: None,
            bad_points: Vec::new(),
            refused_registers: Vec::new(),
            values: BTreeMap::new(),
        }
    }

    /// Updates a point's live value in place (allocating only the first time).
    pub fn set_value(&mut self, name: &str, unit: &str, d: device_profile::Decoded, ts_ms: i64) {
        let (value, text) = match d {
            device_profile::Decoded::Number(v) => (Some(v), None),
            device_profile::Decoded::Text(t) => (None, Some(t)),
        };
        match self.values.get_mut(name) {
            Some(v) => {
                v.value = value;
                v.text = text;
                v.ts_ms = ts_ms;
            }
            None => {
                self.values.insert(
                    name.to_string(),
                    LiveValue {
                        value,
                        text,
                        unit: unit.to_string(),
                        ts_ms,
                    },
                );
            }
        }
    }

    pub fn record_rtt(&mut self, ms: f64) {
        self.last_round_trip_ms = Some(ms);
        self.avg_round_trip_ms = Some(match self.avg_round_trip_ms {
            Some(avg) => avg * 0.9 + ms * 0.1,
            None => ms,
        });
    }
}

impl crate::mqtt::publish::DeviceStatus for DeviceHealth {
    fn device_id(&self) -> &str {
        &self.device_id
    }
    fn change_key(&self) -> String {
        format!("{:?}|{:?}", self.state, self.last_error)
    }
}

/// Records a failed poll (connect, I/O, timeout): state offline, counters, and
/// a log line for the first failure and every 10th, so an outage cannot flood the log.
pub fn record_failure(
    health: &watch::Sender<DeviceHealth>,
    error: &str,
    timeout: bool,
    retry_in: Duration,
) {
    let failures = health.borrow().consecutive_failures + 1;
    let id = health.borrow().device_id.clone();
    metrics::counter!(crate::metric_names::EDGE_POLL_FAILURES_TOTAL, "device" => id.clone())
        .increment(1);
    if failures == 1 || failures.is_multiple_of(10) {
        tracing::warn!(device = %id, %error, failures,
            retry_in_ms = retry_in.as_millis() as u64, "device poll failed; retrying with backoff");
    }
    health.send_modify(|h| {
        h.state = DeviceState::Offline;
        h.last_error = Some(error.to_string());
        h.consecutive_failures = failures;
        h.polls_failed += 1;
        h.next_retry_ms = Some(retry_in.as_millis() as u64);
        if timeout {
            h.errors.timeouts += 1;
        } else {
            h.errors.transport += 1;
        }
    });
}
