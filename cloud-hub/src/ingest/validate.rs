//! What a gateway's batch must satisfy before anything of it is written:
//! one bad reading or event refuses the whole batch.

use qi_proto::limits::{valid_id, valid_unit};
use qi_proto::v1::Reading;

/// Checks a batch before anything is written: a bad batch is refused as a
/// whole, so nothing half-valid is stored.
pub fn validate_batch(readings: &[Reading]) -> Result<(), String> {
    let skew = qi_proto::limits::MAX_FUTURE_SKEW_S * 1_000_000;
    validate_batch_at(readings, chrono::Utc::now().timestamp_micros(), skew)
}

/// `validate_batch` with the hub's clock (`now_us`, Unix microseconds) and
/// how far ahead of it a reading may be stamped (`max_future_us`).
pub fn validate_batch_at(
    readings: &[Reading],
    now_us: i64,
    max_future_us: i64,
) -> Result<(), String> {
    if readings.is_empty() {
        return Err("empty batch".into());
    }
    if readings.len() > qi_proto::limits::MAX_BATCH_READINGS {
        return Err(format!(
            "{} readings in one batch; at most {}",
            readings.len(),
            qi_proto::limits::MAX_BATCH_READINGS
        ));
    }
    let latest_us = now_us.saturating_add(max_future_us);
    let mut prev = 0u64;
    for (i, r) in readings.iter().enumerate() {
        if r.seq == 0 || r.seq > qi_proto::limits::SEQ_MAX {
            return Err(format!(
                "reading {i}: seq {} out of range 1..=2^63-1",
                r.seq
            ));
        }
        if r.seq <= prev {
            return Err(format!(
                "reading {i}: seq {} not above the previous {prev}",
                r.seq
            ));
        }
        prev = r.seq;
        if !valid_id(&r.device_id) {
            return Err(format!("reading {i} (seq {}): invalid device_id", r.seq));
        }
        if !valid_id(&r.metric) {
            return Err(format!("reading {i} (seq {}): invalid metric", r.seq));
        }
        if !valid_unit(&r.unit) {
            return Err(format!("reading {i} (seq {}): invalid unit", r.seq));
        }
        if !r.value.is_finite() {
            return Err(format!("reading {i} (seq {}): value is not finite", r.seq));
        }
        if chrono::DateTime::from_timestamp_micros(r.timestamp_us).is_none() {
            return Err(format!(
                "reading {i} (seq {}): timestamp out of range",
                r.seq
            ));
        }
        if r.timestamp_us > latest_us {
            return Err(format!(
                "reading {i} (seq {}): timestamp more than {} s ahead of the hub's clock (grpc.max_future_skew_s)",
                r.seq,
                max_future_us / 1_000_000
            ));
        }
        if !(0..=3).contains(&r.quality) {
            return Err(format!(
                "reading {i} (seq {}): unknown quality {}",
                r.seq, r.quality
            ));
        }
    }
    Ok(())
}

/// Longest text field of a gateway audit event, and longest before/after JSON.
const MAX_EVENT_FIELD: usize = 512;
const MAX_EVENT_JSON: usize = 4096;

/// Checks a batch's audit events (see `AuditEvent` in uplink.proto): each
/// seq in range, strictly increasing, none shared with a reading; bounded
/// printable text; before/after valid JSON; a plausible time. Like readings,
/// one bad event refuses the whole batch, before anything is written.
pub fn validate_events(
    batch: &qi_proto::v1::ReadingBatch,
    now_us: i64,
    max_future_us: i64,
) -> Result<(), String> {
    let events = &batch.events;
    if batch.readings.len() + events.len() > qi_proto::limits::MAX_BATCH_READINGS {
        return Err(format!(
            "{} readings and events in one batch; at most {}",
            batch.readings.len() + events.len(),
            qi_proto::limits::MAX_BATCH_READINGS
        ));
    }
    let readings: std::collections::HashSet<u64> = batch.readings.iter().map(|r| r.seq).collect();
    let printable = |s: &str| s.len() <= MAX_EVENT_FIELD && !s.chars().any(char::is_control);
    let json_ok = |s: &str| {
        s.is_empty()
            || (s.len() <= MAX_EVENT_JSON && serde_json::from_str::<serde_json::Value>(s).is_ok())
    };
    let mut prev = 0u64;
    for (i, e) in events.iter().enumerate() {
        let at = format!("event {i} (seq {})", e.seq);
        if e.seq == 0 || e.seq > qi_proto::limits::SEQ_MAX {
            return Err(format!("{at}: seq out of range 1..=2^63-1"));
        }
        if e.seq <= prev {
            return Err(format!("{at}: seq not above the previous {prev}"));
        }
        prev = e.seq;
        if readings.contains(&e.seq) {
            return Err(format!("{at}: seq also used by a reading"));
        }
        let action_ok = !e.action.is_empty()
            && e.action.len() <= 64
            && e.action
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_');
        if !action_ok {
            return Err(format!("{at}: action must be 1..=64 of a-z and _"));
        }
        for (name, v) in [
            ("actor", &e.actor),
            ("target", &e.target),
            ("outcome", &e.outcome),
            ("source_address", &e.source_address),
            ("user_agent", &e.user_agent),
        ] {
            if !printable(v) {
                return Err(format!(
                    "{at}: {name} longer than {MAX_EVENT_FIELD} bytes or not printable"
                ));
            }
        }
        if !json_ok(&e.before_json) || !json_ok(&e.after_json) {
            return Err(format!(
                "{at}: before/after must be JSON of at most {MAX_EVENT_JSON} bytes"
            ));
        }
        if chrono::DateTime::from_timestamp_micros(e.timestamp_us).is_none()
            || e.timestamp_us > now_us.saturating_add(max_future_us)
        {
            return Err(format!(
                "{at}: timestamp out of range or ahead of the hub's clock"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(seq: u64) -> Reading {
        Reading {
            seq,
            device_id: "d".into(),
            metric: "m".into(),
            timestamp_us: 1_700_000_000_000_000,
            value: 1.0,
            unit: "V".into(),
            quality: 1,
            ..Default::default()
        }
    }

    #[test]
    fn accepts_good_and_refuses_bad_batches() {
        assert!(validate_batch(&[r(1), r(2)]).is_ok());
        assert!(validate_batch(&[]).is_err());
        assert!(
            validate_batch(&[r(2), r(2)])
                .unwrap_err()
                .contains("not above")
        );
        assert!(validate_batch(&[r(0)]).is_err());
        let mut nan = r(1);
        nan.value = f64::NAN;
        assert!(validate_batch(&[nan]).unwrap_err().contains("finite"));
        let mut empty = r(1);
        empty.device_id.clear();
        assert!(validate_batch(&[empty]).is_err());
        let mut q = r(1);
        q.quality = 9;
        assert!(validate_batch(&[q]).is_err());
        assert!(validate_batch(&[r(qi_proto::limits::SEQ_MAX)]).is_ok());
        assert!(validate_batch(&[r(qi_proto::limits::SEQ_MAX + 1)]).is_err());
    }

    fn ev(seq: u64) -> qi_proto::v1::AuditEvent {
        qi_proto::v1::AuditEvent {
            seq,
            timestamp_us: 1_700_000_000_000_000,
            actor: "ann".into(),
            action: "device_write".into(),
            target: "device:d/point:p".into(),
            outcome: "ok".into(),
            after_json: "1.5".into(),
            ..Default::default()
        }
    }

    #[test]
    fn audit_events_are_checked_like_readings() {
        use qi_proto::v1::ReadingBatch;
        let now = 1_700_000_000_000_000 + 1;
        let day = 86_400_000_000;
        let ok = |readings: Vec<Reading>, events| {
            validate_events(
                &ReadingBatch {
                    readings,
                    events,
                    run_events: vec![],
                    traceparent: String::new(),
                },
                now,
                day,
            )
        };
        assert!(ok(vec![r(1)], vec![ev(2), ev(3)]).is_ok());
        assert!(ok(vec![], vec![ev(5)]).is_ok());
        assert!(ok(vec![r(2)], vec![ev(2)]).unwrap_err().contains("reading"));
        assert!(
            ok(vec![], vec![ev(3), ev(3)])
                .unwrap_err()
                .contains("not above")
        );
        let mut bad = ev(1);
        bad.action = "DROP TABLE".into();
        assert!(ok(vec![], vec![bad]).is_err());
        let mut bad = ev(1);
        bad.after_json = "{not json".into();
        assert!(ok(vec![], vec![bad]).is_err());
        let mut bad = ev(1);
        bad.actor = "a\nb".into();
        assert!(ok(vec![], vec![bad]).is_err());
        let mut bad = ev(1);
        bad.timestamp_us = now + 2 * day;
        assert!(ok(vec![], vec![bad]).is_err());
    }

    #[test]
    fn readings_from_the_far_future_are_refused() {
        let now = 1_700_000_000_000_000;
        let day = qi_proto::limits::MAX_FUTURE_SKEW_S * 1_000_000;
        let mut soon = r(1);
        soon.timestamp_us = now + day;
        assert!(validate_batch_at(&[soon], now, day).is_ok());
        let mut later = r(2);
        later.timestamp_us = now + day + 1;
        let e = validate_batch_at(&[r(1), later.clone()], now, day).unwrap_err();
        assert!(validate_batch_at(&[r(1), later], now, 2 * day).is_ok());
        assert!(e.contains("ahead of the hub's clock"), "{e}");
    }
}
