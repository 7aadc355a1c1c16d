//! The agent's own publications on the site bus: what it polls (telemetry,
//! through the buffer's tap) and each device's health (retained).
//!
//! This module knows the bus and the buffer, not the pollers: device health
//! comes in through [`DeviceStatus`] and a snapshot function, because the
//! configuration (which the pollers read) already depends on `mqtt`.

use super::Bus;
use crate::buffer::{NewReading, Tap};
use qi_common::shutdown::Stop;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;

/// How often device health is looked at.
const HEALTH_TICK: Duration = Duration::from_secs(1);
/// A device whose state did not change is republished about this often.
const HEALTH_REFRESH_S: u64 = 30;

/// The telemetry body for readings the agent polled: the same JSON array a
/// device may publish (`metric`, `value`, `unit`, `ts` in RFC 3339 ms).
pub fn telemetry_json(readings: &[NewReading]) -> String {
    let body: Vec<serde_json::Value> = readings
        .iter()
        .map(|r| {
            serde_json::json!({
                "metric": &*r.metric,
                "value": r.value,
                "unit": &*r.unit,
                "ts": chrono::DateTime::from_timestamp_micros(r.timestamp_us)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            })
        })
        .collect();
    serde_json::Value::Array(body).to_string()
}

/// A buffer tap that republishes what the sources made durable on
/// `.../{device}/telemetry` (`mqtt.publish_polled`).
pub fn polled_tap(bus: Bus) -> Tap {
    Box::new(move |device, readings| {
        bus.publish(
            bus.topic(device, "telemetry"),
            telemetry_json(readings).into(),
            false,
        );
    })
}

/// A device's state as published on `.../{device}/health`.
pub trait DeviceStatus: Serialize {
    fn device_id(&self) -> &str;
    /// What, when it changes, is published at once; counters and times that
    /// change every poll stay out of it.
    fn change_key(&self) -> String;
}

/// Each device's health as a retained message on `.../health`, whenever it
/// changes (checked every second), so a local HMI sees state on subscribe.
pub async fn publish_health<S, F>(bus: Bus, mut snapshot: F, mut stop: Stop)
where
    S: DeviceStatus,
    F: FnMut() -> Vec<S>,
{
    let mut last: HashMap<String, String> = HashMap::new();
    let mut tick = tokio::time::interval(HEALTH_TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait() => return,
        }
        for h in snapshot() {
            let key = h.change_key();
            let id = h.device_id();
            let due = last.get(id).is_none_or(|k| *k != key) || refresh_due(id);
            if due {
                if let Ok(body) = serde_json::to_string(&h) {
                    bus.publish(bus.topic(id, "health"), body.into(), true);
                }
                last.insert(id.to_string(), key);
            }
        }
    }
}

/// True about once every [`HEALTH_REFRESH_S`] per device (spread by the id's hash).
fn refresh_due(id: &str) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let h = id
        .bytes()
        .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
    (now + h).is_multiple_of(HEALTH_REFRESH_S)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Priority;
    use std::sync::Arc;

    #[test]
    fn telemetry_is_the_documented_json_array() {
        let r = NewReading {
            device_id: Arc::from("m1"),
            metric: Arc::from("voltage_l1"),
            timestamp_us: 1_764_460_800_123_000,
            value: 230.5,
            unit: Arc::from("V"),
            quality: 0,
            priority: Priority::Normal,
        };
        let v: serde_json::Value = serde_json::from_str(&telemetry_json(&[r])).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!([{"metric": "voltage_l1", "value": 230.5, "unit": "V",
                "ts": "2025-11-30T00:00:00.123Z"}])
        );
    }
}
