//! What a batch's run events and run-tagged readings, and a Hello's
//! benches, must satisfy before anything of them is written: one bad entry
//! refuses the whole batch (or stream), like a bad reading.

use crate::storage::run_events::kind_name;
use qi_proto::limits::{
    MAX_BATCH_READINGS, MAX_BATCH_RUN_EVENTS, MAX_DEVICE_POINTS, MAX_HELLO_BENCHES, MAX_ID_LEN,
    MAX_TEMPLATE_BYTES, MAX_TEXT_LEN, RUN_ID_LEN, SEQ_MAX, valid_id, valid_text, valid_unit,
};
use qi_proto::v1::{BenchInfo, BenchPoint, ReadingBatch, RunEvent, RunEventKind, RunStart};
use sha2::Digest;
use std::collections::HashSet;

/// Most parameters a run carries.
pub const MAX_RUN_PARAMETERS: usize = 256;
/// Longest step path ("3:17/1").
pub const MAX_STEP_LEN: usize = 64;

/// A run id: a UUID, lowercase and hyphenated (what the gateway chose and
/// what the API takes).
pub fn valid_run_id(s: &str) -> bool {
    s.len() == RUN_ID_LEN
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// Lowercase hex of SHA-256.
pub fn sha256_hex(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks a batch's run events and the run tags of its readings (see
/// `RunEvent` and `Reading.run_id` in uplink.proto). `now_us` and
/// `max_future_us` bound timestamps as for readings.
pub fn validate_batch(batch: &ReadingBatch, now_us: i64, max_future_us: i64) -> Result<(), String> {
    let events = &batch.run_events;
    if events.len() > MAX_BATCH_RUN_EVENTS {
        return Err(format!(
            "{} run events in one batch; at most {MAX_BATCH_RUN_EVENTS}",
            events.len()
        ));
    }
    let total = batch.readings.len() + batch.events.len() + events.len();
    if total > MAX_BATCH_READINGS {
        return Err(format!(
            "{total} readings and events in one batch; at most {MAX_BATCH_READINGS}"
        ));
    }
    for (i, r) in batch.readings.iter().enumerate() {
        if r.run_id.is_empty() && r.run_series.is_empty() {
            continue;
        }
        let at = format!("reading {i} (seq {})", r.seq);
        if !valid_run_id(&r.run_id) {
            return Err(format!(
                "{at}: run_id must be a lowercase hyphenated UUID (a run_series needs one)"
            ));
        }
        if !valid_id(&r.run_series) {
            return Err(format!(
                "{at}: run_series must be 1..={MAX_ID_LEN} printable bytes"
            ));
        }
    }
    let taken: HashSet<u64> = batch
        .readings
        .iter()
        .map(|r| r.seq)
        .chain(batch.events.iter().map(|e| e.seq))
        .collect();
    let mut prev = 0u64;
    for (i, e) in events.iter().enumerate() {
        let at = format!("run event {i} (seq {})", e.seq);
        if e.seq == 0 || e.seq > SEQ_MAX {
            return Err(format!("{at}: seq out of range 1..=2^63-1"));
        }
        if e.seq <= prev {
            return Err(format!("{at}: seq not above the previous {prev}"));
        }
        prev = e.seq;
        if taken.contains(&e.seq) {
            return Err(format!("{at}: seq also used by a reading or audit event"));
        }
        event(e, now_us, max_future_us).map_err(|m| format!("{at}: {m}"))?;
    }
    Ok(())
}

fn event(e: &RunEvent, now_us: i64, max_future_us: i64) -> Result<(), String> {
    if !valid_run_id(&e.run_id) {
        return Err("run_id must be a lowercase hyphenated UUID".into());
    }
    let Some(kind) = kind_name(e.kind) else {
        return Err(format!("unknown kind {}", e.kind));
    };
    if chrono::DateTime::from_timestamp_micros(e.timestamp_us).is_none()
        || e.timestamp_us > now_us.saturating_add(max_future_us)
    {
        return Err("timestamp out of range or ahead of the hub's clock".into());
    }
    let step_ok = e.step.len() <= MAX_STEP_LEN
        && e.step
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b':' || b == b'/');
    if !step_ok {
        return Err(format!(
            "step must be at most {MAX_STEP_LEN} of 0-9 : / (\"3:17/1\")"
        ));
    }
    if !valid_text(&e.message) {
        return Err(format!(
            "message longer than {MAX_TEXT_LEN} bytes or not printable"
        ));
    }
    let started = e.kind == RunEventKind::Started as i32;
    match (&e.start, started) {
        (Some(s), true) => start(s),
        (None, true) => Err("a started event must carry its RunStart".into()),
        (Some(_), false) => Err(format!("a {kind} event carries no RunStart")),
        (None, false) => Ok(()),
    }
}

fn start(s: &RunStart) -> Result<(), String> {
    for (name, v) in [
        ("protocol_id", &s.protocol_id),
        ("bench_id", &s.bench_id),
        ("sample_id", &s.sample_id),
        ("operator", &s.operator),
    ] {
        if !valid_id(v) {
            return Err(format!(
                "start.{name} must be 1..={MAX_ID_LEN} printable bytes"
            ));
        }
    }
    if !valid_text(&s.protocol_version) {
        return Err("start.protocol_version is not printable text".into());
    }
    if s.template_toml.len() > MAX_TEMPLATE_BYTES {
        return Err(format!(
            "start.template_toml is {} bytes; at most {MAX_TEMPLATE_BYTES}",
            s.template_toml.len()
        ));
    }
    if sha256_hex(&s.template_toml) != s.template_sha256 {
        return Err("start.template_sha256 is not the SHA-256 of start.template_toml".into());
    }
    let p = qi_protocol::Protocol::parse(&s.template_toml, std::path::Path::new("run template"))
        .map_err(|e| format!("start.template_toml: {e}"))?;
    if p.protocol.id != s.protocol_id || p.protocol.version != s.protocol_version {
        return Err(format!(
            "start names protocol {} {} but its template is {} {}",
            s.protocol_id, s.protocol_version, p.protocol.id, p.protocol.version
        ));
    }
    if s.parameters.len() > MAX_RUN_PARAMETERS {
        return Err(format!(
            "{} parameters; at most {MAX_RUN_PARAMETERS}",
            s.parameters.len()
        ));
    }
    for (k, v) in &s.parameters {
        if !valid_id(k) || !v.is_finite() {
            return Err(format!(
                "parameter {:?}: the name must be printable and the value finite",
                k.chars().take(40).collect::<String>()
            ));
        }
    }
    if !(s.time_scale.is_finite() && s.time_scale >= 1.0) {
        return Err(format!(
            "start.time_scale {} must be a finite number >= 1 (1 = real time)",
            s.time_scale
        ));
    }
    points("start.bindings", &s.bindings)
}

fn points(at: &str, ps: &[BenchPoint]) -> Result<(), String> {
    if ps.len() > MAX_DEVICE_POINTS {
        return Err(format!(
            "{at}: {} points; at most {MAX_DEVICE_POINTS}",
            ps.len()
        ));
    }
    let mut names = HashSet::new();
    for (j, p) in ps.iter().enumerate() {
        let at = format!("{at}[{j}]");
        if !valid_id(&p.name) || !names.insert(p.name.as_str()) {
            return Err(format!(
                "{at}: name must be 1..={MAX_ID_LEN} printable bytes and unique"
            ));
        }
        let optional_id = |s: &str| s.is_empty() || valid_id(s);
        if !valid_id(&p.device_id) || !optional_id(&p.read_point) || !optional_id(&p.write_point) {
            return Err(format!(
                "{at} ({}): device_id, read_point or write_point not a valid id",
                p.name
            ));
        }
        if !valid_unit(&p.unit) {
            return Err(format!("{at} ({}): unit too long or not printable", p.name));
        }
        let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
        if !finite(p.min) || !finite(p.max) {
            return Err(format!("{at} ({}): min and max must be finite", p.name));
        }
        if let (Some(lo), Some(hi)) = (p.min, p.max)
            && lo > hi
        {
            return Err(format!("{at} ({}): min {lo} above max {hi}", p.name));
        }
    }
    Ok(())
}

/// Checks a Hello's benches before anything is written: a bad one refuses
/// the stream, like a bad device description.
pub fn validate_benches(benches: &[BenchInfo]) -> Result<(), String> {
    if benches.len() > MAX_HELLO_BENCHES {
        return Err(format!(
            "{} benches in the Hello; at most {MAX_HELLO_BENCHES}",
            benches.len()
        ));
    }
    let mut seen = HashSet::new();
    for (i, b) in benches.iter().enumerate() {
        let at = format!("benches[{i}]");
        if !valid_id(&b.bench_id) || !seen.insert(b.bench_id.as_str()) {
            return Err(format!(
                "{at}: bench_id must be 1..={MAX_ID_LEN} printable bytes and unique"
            ));
        }
        if !valid_text(&b.description) {
            return Err(format!(
                "{at} ({}): description longer than {MAX_TEXT_LEN} bytes or not printable",
                b.bench_id
            ));
        }
        points(&format!("{at}.points"), &b.points)?;
        if b.instruments.len() > MAX_DEVICE_POINTS {
            return Err(format!("{at}: too many instruments"));
        }
        let mut names = HashSet::new();
        for (j, ins) in b.instruments.iter().enumerate() {
            if !valid_id(&ins.name) || !names.insert(ins.name.as_str()) || !valid_id(&ins.device_id)
            {
                return Err(format!(
                    "{at}.instruments[{j}]: name (unique) and device_id must be 1..={MAX_ID_LEN} printable bytes"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use qi_proto::v1::Reading;

    pub(crate) const RUN: &str = "0b7c2a4e-9f1d-4c3b-8a2e-5d6f7a8b9c0d";

    fn template() -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocols/stc-power.toml"),
        )
        .unwrap_or_default()
    }

    fn started(seq: u64) -> RunEvent {
        let t = template();
        RunEvent {
            seq,
            timestamp_us: 1_700_000_000_000_000,
            run_id: RUN.into(),
            kind: RunEventKind::Started as i32,
            start: Some(RunStart {
                protocol_id: "stc-power".into(),
                protocol_version: "1.0.0".into(),
                template_sha256: sha256_hex(&t),
                template_toml: t,
                bench_id: "rig-1".into(),
                sample_id: "sample:MOD-1".into(),
                parameters: [("rated_pmax".to_string(), 400.0)].into(),
                operator: "olga".into(),
                time_scale: 1.0,
                bindings: vec![],
            }),
            ..Default::default()
        }
    }

    fn batch(run_events: Vec<RunEvent>, readings: Vec<Reading>) -> ReadingBatch {
        ReadingBatch {
            readings,
            events: vec![],
            run_events,
            traceparent: String::new(),
        }
    }

    fn check(b: &ReadingBatch) -> Result<(), String> {
        validate_batch(b, 1_700_000_000_000_001, 86_400_000_000)
    }

    #[test]
    fn run_ids_are_lowercase_hyphenated_uuids() {
        assert!(valid_run_id(RUN));
        assert!(!valid_run_id(&RUN.to_uppercase()));
        assert!(!valid_run_id(&RUN.replace('-', "")));
        assert!(!valid_run_id("0b7c2a4e-9f1d-4c3b-8a2e-5d6f7a8b9c0g"));
        assert!(!valid_run_id(""));
    }

    #[test]
    fn a_good_start_passes_and_each_fault_is_named() {
        assert!(check(&batch(vec![started(1)], vec![])).is_ok());
        let refused = |f: &dyn Fn(&mut RunEvent), want: &str| {
            let mut e = started(1);
            f(&mut e);
            let err = check(&batch(vec![e], vec![])).expect_err(want);
            assert!(err.contains(want), "{err} should say {want}");
        };
        refused(&|e| e.run_id = "nope".into(), "UUID");
        refused(&|e| e.kind = 42, "unknown kind");
        refused(&|e| e.start = None, "RunStart");
        refused(
            &|e| {
                if let Some(s) = &mut e.start {
                    s.template_sha256 = "00".into();
                }
            },
            "SHA-256",
        );
        refused(
            &|e| {
                if let Some(s) = &mut e.start {
                    s.template_toml.push_str("\n[[bogus]]\n");
                    s.template_sha256 = sha256_hex(&s.template_toml);
                }
            },
            "template_toml",
        );
        refused(
            &|e| {
                if let Some(s) = &mut e.start {
                    s.parameters.insert("x".into(), f64::NAN);
                }
            },
            "finite",
        );
        refused(
            &|e| {
                if let Some(s) = &mut e.start {
                    s.protocol_id = "tc200".into();
                }
            },
            "its template is",
        );
        refused(&|e| e.step = "1; DROP".into(), "step");
        refused(&|e| e.timestamp_us = 1_800_000_000_000_000, "ahead");
    }

    #[test]
    fn seqs_sizes_and_run_tags_are_checked() {
        let mut twice = started(2);
        twice.seq = 2;
        assert!(
            check(&batch(vec![started(2), twice], vec![]))
                .unwrap_err()
                .contains("not above")
        );
        let r = Reading {
            seq: 1,
            run_id: RUN.into(),
            run_series: "stc.pmax".into(),
            ..Default::default()
        };
        assert!(check(&batch(vec![started(2)], vec![r.clone()])).is_ok());
        assert!(
            check(&batch(vec![started(1)], vec![r.clone()]))
                .unwrap_err()
                .contains("also used")
        );
        let mut bad = r.clone();
        bad.run_id = String::new();
        assert!(
            check(&batch(vec![], vec![bad]))
                .unwrap_err()
                .contains("UUID")
        );
        let mut bad = r;
        bad.run_series = String::new();
        assert!(
            check(&batch(vec![], vec![bad]))
                .unwrap_err()
                .contains("run_series")
        );
        let many: Vec<RunEvent> = (1..=MAX_BATCH_RUN_EVENTS as u64 + 1)
            .map(|s| RunEvent {
                seq: s,
                run_id: RUN.into(),
                kind: RunEventKind::StepStarted as i32,
                timestamp_us: 1_700_000_000_000_000,
                ..Default::default()
            })
            .collect();
        assert!(check(&batch(many, vec![])).unwrap_err().contains("at most"));
    }

    #[test]
    fn benches_are_checked_like_devices() {
        let b = BenchInfo {
            bench_id: "rig-1".into(),
            points: vec![BenchPoint {
                name: "chamber.temperature".into(),
                device_id: "chamber".into(),
                read_point: "temperature".into(),
                write_point: "setpoint".into(),
                unit: "Cel".into(),
                min: Some(-45.0),
                max: Some(90.0),
            }],
            ..Default::default()
        };
        assert!(validate_benches(std::slice::from_ref(&b)).is_ok());
        assert!(
            validate_benches(&[b.clone(), b.clone()])
                .unwrap_err()
                .contains("unique")
        );
        let mut bad = b.clone();
        bad.points[0].min = Some(100.0);
        assert!(validate_benches(&[bad]).unwrap_err().contains("above max"));
        let mut bad = b;
        bad.points[0].device_id = String::new();
        assert!(validate_benches(&[bad]).is_err());
    }
}
