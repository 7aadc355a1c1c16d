//! What the status page and the logs say about one device.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// Not polled successfully yet.
    Connecting,
    /// Last poll read every block.
    Online,
    /// Reachable, but some blocks answered with Modbus exceptions.
    Degraded,
    /// Last attempt failed (connect, timeout or I/O); retrying with backoff.
    Offline,
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
    pub last_round_trip_ms: Option<f64>,
    /// Milliseconds until the next retry, while offline.
    pub next_retry_ms: Option<u64>,
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
            last_round_trip_ms: None,
            next_retry_ms: None,
        }
    }
}
