//! The last hour of every numeric point, held in the agent's memory for the
//! page's charts. Not read from the buffer: the buffer deletes readings once
//! the hub has acknowledged them, so while the hub is reachable it holds
//! next to nothing. Bounded: [`HISTORY_SAMPLES`] samples of [`HISTORY_STEP_S`]
//! per series, 8 bytes each, and at most [`MAX_HISTORY_SERIES`] series
//! (about 6 MiB at worst; 50 devices x 20 points take 2.9 MB).

use super::super::{ApiState, error};
use crate::sources::health::DeviceHealth;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

/// Seconds between two samples of a series.
pub const HISTORY_STEP_S: u64 = 10;
/// Samples kept per series: one hour.
pub const HISTORY_SAMPLES: usize = 360;
/// Series kept at most; samples of further ones are counted and dropped.
pub const MAX_HISTORY_SERIES: usize = 2000;

#[derive(Default)]
struct Series {
    /// (Unix seconds of the reading, value): u32 seconds last until 2106.
    samples: VecDeque<(u32, f32)>,
}

#[derive(Default)]
pub struct History {
    /// device -> point -> series.
    devices: Mutex<HashMap<String, BTreeMap<String, Series>>>,
}

impl History {
    /// Takes each numeric value that is newer than the series' last sample:
    /// an offline device adds nothing, so its gap shows on the chart.
    pub fn sample(&self, devices: &[DeviceHealth]) {
        let mut map = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        // A device gone from the configuration takes its series with it.
        map.retain(|id, _| devices.iter().any(|d| &d.device_id == id));
        let mut count: usize = map.values().map(BTreeMap::len).sum();
        let mut skipped = 0u64;
        for d in devices {
            let points = map.entry(d.device_id.clone()).or_default();
            for (name, v) in &d.values {
                let Some(value) = v.value.filter(|x| x.is_finite()) else {
                    continue;
                };
                let ts = u32::try_from(v.ts_ms.div_euclid(1000)).unwrap_or(0);
                if !points.contains_key(name) {
                    if count >= MAX_HISTORY_SERIES {
                        skipped += 1;
                        continue;
                    }
                    count += 1;
                    points.insert(name.clone(), Series::default());
                }
                let Some(s) = points.get_mut(name) else {
                    continue;
                };
                if s.samples.back().is_some_and(|(t, _)| *t >= ts) {
                    continue;
                }
                if s.samples.len() == HISTORY_SAMPLES {
                    s.samples.pop_front();
                }
                s.samples.push_back((ts, value as f32));
            }
        }
        if skipped > 0 {
            metrics::counter!(crate::metric_names::EDGE_WEB_HISTORY_SKIPPED_TOTAL)
                .increment(skipped);
        }
        metrics::gauge!(crate::metric_names::EDGE_WEB_HISTORY_SERIES).set(count as f64);
    }

    /// `{point: [[unix_s, value], ...]}` of one device since `since_s`.
    fn of(&self, device: &str, since_s: u32) -> Option<Value> {
        let map = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        let points = map.get(device)?;
        let out: serde_json::Map<String, Value> = points
            .iter()
            .map(|(name, s)| {
                let pts: Vec<Value> = s
                    .samples
                    .iter()
                    .filter(|(t, _)| *t >= since_s)
                    .map(|(t, v)| json!([t, v]))
                    .collect();
                (name.clone(), Value::Array(pts))
            })
            .collect();
        Some(Value::Object(out))
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    device: String,
    /// How far back, in seconds (at most the hour kept).
    #[serde(default = "hour")]
    seconds: u64,
}

fn hour() -> u64 {
    HISTORY_STEP_S * HISTORY_SAMPLES as u64
}

/// `GET /api/v1/history?device=ID&seconds=N`.
pub(super) async fn history(
    State(s): State<ApiState>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("query must be ?device=ID[&seconds=N]: {}", e.body_text()),
            );
        }
    };
    let now_s = chrono::Utc::now().timestamp().max(0) as u64;
    let since = now_s.saturating_sub(q.seconds.min(hour()));
    let since = u32::try_from(since).unwrap_or(u32::MAX);
    let known = s
        .fleet
        .view()
        .health
        .iter()
        .any(|h| h.borrow().device_id == q.device);
    if !known {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no device {:?} on this gateway", q.device),
        );
    }
    let points = s
        .web
        .history
        .of(&q.device, since)
        .unwrap_or_else(|| json!({}));
    Json(json!({
        "device": q.device,
        "step_s": HISTORY_STEP_S,
        "held": "agent memory",
        "now_s": now_s,
        "points": points,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str, points: usize, ts_ms: i64) -> DeviceHealth {
        let mut d = DeviceHealth::new(id, "p", "e");
        for k in 0..points {
            d.set_value(
                &format!("p{k}"),
                "V",
                device_profile::Decoded::Number(k as f64),
                ts_ms,
            );
        }
        d
    }

    #[test]
    fn samples_are_bounded_per_series_and_stale_values_add_nothing() {
        let h = History::default();
        for k in 0..(HISTORY_SAMPLES as i64 + 50) {
            h.sample(&[device("a", 2, 1_000_000 + k * 10_000)]);
            // The same reading again (device offline): not a new sample.
            h.sample(&[device("a", 2, 1_000_000 + k * 10_000)]);
        }
        let v = h.of("a", 0).unwrap();
        assert_eq!(v["p0"].as_array().unwrap().len(), HISTORY_SAMPLES);
        assert_eq!(v["p1"][0][1], 1.0);
    }

    #[test]
    fn series_beyond_the_cap_are_not_kept_and_gone_devices_are_forgotten() {
        let h = History::default();
        let many: Vec<DeviceHealth> = (0..(MAX_HISTORY_SERIES / 100 + 1))
            .map(|k| device(&format!("d{k}"), 100, 5_000))
            .collect();
        h.sample(&many);
        let count =
            |h: &History| -> usize { h.devices.lock().unwrap().values().map(BTreeMap::len).sum() };
        assert_eq!(count(&h), MAX_HISTORY_SERIES);
        h.sample(&many[..1]);
        assert_eq!(count(&h), 100);
        assert!(h.of("d3", 0).is_none());
    }
}
