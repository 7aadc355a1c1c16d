//! Telemetry published by site devices: the topic scheme and the payloads
//! the agent turns into readings.
//!
//! Topic: `site/{site}/{device_type}/{device_id}/telemetry`. Payload, UTF-8:
//! - one reading: `{"metric": "temp", "value": 21.5, "unit": "Cel",
//!   "ts": "2026-11-22T10:00:00Z" | 1795000000000 (Unix ms), "quality": "good"}`
//!   "priority": "high"}` (`unit`, `ts`, `quality`, `priority` optional; `ts`
//!   defaults to arrival time; `priority` `high` puts the reading in the
//!   buffer's high-priority lane, like a profile point marked high);
//! - a batch: a JSON array of such objects, or `{"readings": [...]}`;
//! - compact text: `temp=21.5,hum=40.1` (or one pair per line), arrival time,
//!   no unit.

use crate::buffer::{NewReading, Priority};
use qi_proto::v1::Quality;
use serde::Deserialize;
use std::sync::Arc;

use qi_proto::limits::{MAX_ID_LEN, MAX_UNIT_LEN};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PayloadError {
    #[error("payload of {0} bytes exceeds mqtt.max_payload_bytes ({1})")]
    TooBig(usize, usize),
    #[error("payload is not UTF-8")]
    NotUtf8,
    #[error("payload is neither JSON nor metric=value text: {0}")]
    Unparseable(String),
    #[error("reading {0}: {1}")]
    Invalid(usize, String),
    #[error("{0} readings in one message (most {1})")]
    TooMany(usize, usize),
    #[error("no readings in the message")]
    Empty,
}

/// The parts of a telemetry topic.
#[derive(Debug, PartialEq, Eq)]
pub struct TelemetryTopic<'a> {
    pub site: &'a str,
    pub device_type: &'a str,
    pub device_id: &'a str,
}

/// `site/{site}/{type}/{device}/telemetry`, or None for any other topic.
pub fn telemetry_topic(topic: &str) -> Option<TelemetryTopic<'_>> {
    let mut p = topic.split('/');
    let (Some("site"), Some(site), Some(device_type), Some(device_id), Some("telemetry"), None) =
        (p.next(), p.next(), p.next(), p.next(), p.next(), p.next())
    else {
        return None;
    };
    Some(TelemetryTopic {
        site,
        device_type,
        device_id,
    })
}

pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Doc {
    One(JsonReading),
    Many(Vec<JsonReading>),
    Wrapped { readings: Vec<JsonReading> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonReading {
    metric: String,
    value: serde_json::Value,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    ts: Option<serde_json::Value>,
    #[serde(default)]
    quality: Option<String>,
    #[serde(default)]
    priority: Option<String>,
}

fn parse_ts(v: &serde_json::Value) -> Result<i64, String> {
    match v {
        serde_json::Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_micros())
            .map_err(|e| format!("ts {s:?} is not RFC 3339: {e}")),
        serde_json::Value::Number(n) => n
            .as_i64()
            .filter(|ms| (0..=32_503_680_000_000).contains(ms))
            .map(|ms| ms * 1000)
            .ok_or_else(|| format!("ts {n} is not Unix milliseconds")),
        other => Err(format!("ts must be a string or a number, got {other}")),
    }
}

/// Parses a telemetry payload into readings for `device`.
pub fn parse(
    device: &Arc<str>,
    payload: &[u8],
    now_us: i64,
    max_bytes: usize,
    max_readings: usize,
) -> Result<Vec<NewReading>, PayloadError> {
    if payload.len() > max_bytes {
        return Err(PayloadError::TooBig(payload.len(), max_bytes));
    }
    let text = std::str::from_utf8(payload).map_err(|_| PayloadError::NotUtf8)?;
    let trimmed = text.trim_start();
    let raw: Vec<JsonReading> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        match serde_json::from_str::<Doc>(text) {
            Ok(Doc::One(r)) => vec![r],
            Ok(Doc::Many(v)) | Ok(Doc::Wrapped { readings: v }) => v,
            Err(e) => return Err(PayloadError::Unparseable(e.to_string())),
        }
    } else {
        let mut v = Vec::new();
        for pair in text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (m, val) = pair.split_once('=').ok_or_else(|| {
                PayloadError::Unparseable(format!("{pair:?} is not metric=value"))
            })?;
            let n: f64 = val.trim().parse().map_err(|_| {
                PayloadError::Unparseable(format!("{:?} is not a number", val.trim()))
            })?;
            v.push(JsonReading {
                metric: m.trim().to_string(),
                value: serde_json::Number::from_f64(n)
                    .map(serde_json::Value::Number)
                    .unwrap_or(serde_json::Value::Null),
                unit: None,
                ts: None,
                quality: None,
                priority: None,
            });
        }
        v
    };
    if raw.is_empty() {
        return Err(PayloadError::Empty);
    }
    if raw.len() > max_readings {
        return Err(PayloadError::TooMany(raw.len(), max_readings));
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let bad = |m: String| PayloadError::Invalid(i, m);
            if !valid_name(&r.metric) {
                return Err(bad(format!(
                    "metric {:?} must be 1-{MAX_ID_LEN} of [A-Za-z0-9_.:-]",
                    r.metric
                )));
            }
            let value = match &r.value {
                serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                serde_json::Value::Bool(b) => f64::from(u8::from(*b)),
                other => return Err(bad(format!("value must be a number, got {other}"))),
            };
            if !value.is_finite() {
                return Err(bad("value is not a finite number".into()));
            }
            let unit = r.unit.unwrap_or_default();
            if !qi_proto::limits::valid_unit(&unit) {
                return Err(bad(format!(
                    "unit is longer than {MAX_UNIT_LEN} bytes or has control characters"
                )));
            }
            let timestamp_us = match &r.ts {
                Some(v) => parse_ts(v).map_err(bad)?,
                None => now_us,
            };
            // The hub refuses a batch holding such a reading: accepted here,
            // it would block the gateway's uplink behind it.
            let skew = qi_proto::limits::MAX_FUTURE_SKEW_S;
            if timestamp_us > now_us.saturating_add(skew * 1_000_000) {
                return Err(bad(format!(
                    "ts is more than {skew} s ahead of the gateway's clock"
                )));
            }
            let quality = match r.quality.as_deref() {
                None | Some("good") => Quality::Good,
                Some("uncertain") => Quality::Uncertain,
                Some("bad") => Quality::Bad,
                Some(q) => return Err(bad(format!("quality {q:?} is not good, uncertain or bad"))),
            };
            let priority = match r.priority.as_deref() {
                None | Some("normal") => Priority::Normal,
                Some("high") => Priority::High,
                Some(p) => return Err(bad(format!("priority {p:?} is not normal or high"))),
            };
            Ok(NewReading {
                device_id: Arc::clone(device),
                metric: r.metric.into(),
                timestamp_us,
                value,
                unit: unit.into(),
                quality: quality as i32,
                priority,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arrival time of the messages `p` parses: 2026-01-01T00:00:07Z.
    const NOW: i64 = 1_767_225_607_000_000;

    fn p(s: &str) -> Result<Vec<NewReading>, PayloadError> {
        parse(&Arc::from("dev"), s.as_bytes(), NOW, 4096, 100)
    }

    #[test]
    fn topics() {
        let t = telemetry_topic("site/s1/thermo/th-1/telemetry").unwrap();
        assert_eq!(
            (t.site, t.device_type, t.device_id),
            ("s1", "thermo", "th-1")
        );
        assert!(telemetry_topic("site/s1/thermo/th-1/health").is_none());
        assert!(telemetry_topic("site/s1/thermo/th-1/telemetry/x").is_none());
    }

    #[test]
    fn accepted_forms() {
        let one = p(r#"{"metric":"temp","value":21.5,"unit":"Cel","ts":"2026-01-01T00:00:00Z"}"#)
            .unwrap();
        assert_eq!((one[0].value, &*one[0].unit), (21.5, "Cel"));
        assert_eq!(one[0].timestamp_us, 1_767_225_600_000_000);
        let many = p(r#"[{"metric":"a","value":1,"ts":1767225600000},{"metric":"b","value":true,"quality":"bad"}]"#).unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(many[0].timestamp_us, 1_767_225_600_000_000);
        assert_eq!(
            (many[1].value, many[1].timestamp_us, many[1].quality),
            (1.0, NOW, 3)
        );
        assert_eq!(
            p(r#"{"readings":[{"metric":"a","value":2}]}"#)
                .unwrap()
                .len(),
            1
        );
        let compact = p("temp=21.5, hum=40\n").unwrap();
        assert_eq!(
            compact.iter().map(|r| r.value).collect::<Vec<_>>(),
            vec![21.5, 40.0]
        );
    }

    #[test]
    fn readings_may_ask_for_the_high_priority_lane() {
        let rs = p(r#"[{"metric":"alarm","value":1,"priority":"high"},{"metric":"t","value":2,"priority":"normal"},{"metric":"u","value":3}]"#)
            .unwrap();
        let got: Vec<Priority> = rs.iter().map(|r| r.priority).collect();
        assert_eq!(
            got,
            vec![Priority::High, Priority::Normal, Priority::Normal]
        );
    }

    #[test]
    fn bad_payloads_are_refused_with_a_reason() {
        assert!(matches!(p("{not json"), Err(PayloadError::Unparseable(_))));
        assert!(matches!(
            p(r#"{"metric":"a","value":"hot"}"#),
            Err(PayloadError::Invalid(0, _))
        ));
        assert!(matches!(
            p(r#"{"metric":"a b","value":1}"#),
            Err(PayloadError::Invalid(0, _))
        ));
        assert!(matches!(p("temp=NaN"), Err(PayloadError::Invalid(0, _))));
        assert!(matches!(
            p(r#"{"metric":"a","value":1,"ts":"yesterday"}"#),
            Err(PayloadError::Invalid(0, _))
        ));
        assert!(matches!(p("[]"), Err(PayloadError::Empty)));
        assert!(matches!(
            p(r#"{"metric":"a","value":1,"priority":"urgent"}"#),
            Err(PayloadError::Invalid(0, _))
        ));
        // At 2026-01-01T00:00:00Z, a reading stamped a day ahead is fine, two are not.
        let at = |ts: &str| {
            parse(
                &Arc::from("d"),
                format!(r#"{{"metric":"a","value":1,"ts":"{ts}"}}"#).as_bytes(),
                1_767_225_600_000_000,
                1000,
                10,
            )
        };
        assert!(at("2026-01-02T00:00:00Z").is_ok());
        assert!(matches!(
            at("2026-01-03T00:00:00Z"),
            Err(PayloadError::Invalid(0, _))
        ));
        assert!(matches!(
            parse(&Arc::from("d"), &[0xff, 0xfe], 0, 10, 10),
            Err(PayloadError::NotUtf8)
        ));
        assert!(matches!(
            parse(&Arc::from("d"), &[b'a'; 100], 0, 10, 10),
            Err(PayloadError::TooBig(100, 10))
        ));
    }
}
