//! Synthetic protocol runs as a gateway's run engine reports them (events
//! and run-tagged readings sharing the gateway's sequence), for the hub's
//! run tests and the evaluation benchmark.

use qi_proto::v1::{Reading, RunEvent, RunEventKind, RunStart};
use std::collections::HashMap;

/// The shipped template of a protocol id, as text.
pub fn template(id: &str) -> anyhow::Result<String> {
    let path = crate::workspace_root()
        .join("protocols")
        .join(format!("{id}.toml"));
    Ok(std::fs::read_to_string(path)?)
}

pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A run being written: events and readings in seq order from `seq`, the
/// clock advancing a second per entry from `t_us`.
pub struct Run {
    pub run_id: String,
    pub seq: u64,
    pub t_us: i64,
    pub events: Vec<RunEvent>,
    pub readings: Vec<Reading>,
}

impl Run {
    pub fn new(run_id: &str, first_seq: u64, t_us: i64) -> Run {
        Run {
            run_id: run_id.into(),
            seq: first_seq,
            t_us,
            events: Vec::new(),
            readings: Vec::new(),
        }
    }

    fn tick(&mut self) -> (u64, i64) {
        let at = (self.seq, self.t_us);
        self.seq += 1;
        self.t_us += 1_000_000;
        at
    }

    pub fn event(&mut self, kind: RunEventKind, step: &str) -> &mut Run {
        let (seq, ts) = self.tick();
        self.events.push(RunEvent {
            seq,
            timestamp_us: ts,
            run_id: self.run_id.clone(),
            kind: kind as i32,
            step: step.into(),
            ..Default::default()
        });
        self
    }

    pub fn start(
        &mut self,
        protocol: &str,
        sample: &str,
        operator: &str,
        parameters: &[(&str, f64)],
        time_scale: f64,
    ) -> anyhow::Result<&mut Run> {
        let text = template(protocol)?;
        let version = qi_protocol::Protocol::parse(&text, std::path::Path::new(protocol))?
            .protocol
            .version;
        let (seq, ts) = self.tick();
        self.events.push(RunEvent {
            seq,
            timestamp_us: ts,
            run_id: self.run_id.clone(),
            kind: RunEventKind::Started as i32,
            start: Some(RunStart {
                protocol_id: protocol.into(),
                protocol_version: version,
                template_sha256: sha256_hex(&text),
                template_toml: text,
                bench_id: "rig-1".into(),
                sample_id: sample.into(),
                parameters: parameters
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect::<HashMap<_, _>>(),
                operator: operator.into(),
                time_scale,
                bindings: vec![],
            }),
            ..Default::default()
        });
        Ok(self)
    }

    pub fn reading(
        &mut self,
        series: &str,
        device: &str,
        metric: &str,
        unit: &str,
        value: f64,
    ) -> &mut Run {
        let (seq, ts) = self.tick();
        self.readings.push(Reading {
            seq,
            device_id: device.into(),
            metric: metric.into(),
            timestamp_us: ts,
            value,
            unit: unit.into(),
            quality: 1,
            run_id: self.run_id.clone(),
            run_series: series.into(),
        });
        self
    }

    /// Moves the clock (a long dwell, the time between runs).
    pub fn wait_s(&mut self, s: i64) -> &mut Run {
        self.t_us += s * 1_000_000;
        self
    }

    /// Events and readings with seq in `range`, as one batch.
    pub fn batch(&self, range: std::ops::RangeInclusive<u64>) -> qi_proto::v1::EdgeMessage {
        qi_proto::v1::EdgeMessage {
            kind: Some(qi_proto::v1::edge_message::Kind::Batch(
                qi_proto::v1::ReadingBatch {
                    readings: self
                        .readings
                        .iter()
                        .filter(|r| range.contains(&r.seq))
                        .cloned()
                        .collect(),
                    events: vec![],
                    run_events: self
                        .events
                        .iter()
                        .filter(|e| range.contains(&e.seq))
                        .cloned()
                        .collect(),
                    traceparent: String::new(),
                },
            )),
        }
    }

    /// Everything so far, as one batch.
    pub fn all(&self) -> qi_proto::v1::EdgeMessage {
        self.batch(0..=u64::MAX)
    }
}

/// An STC power run: conditions, an IV sweep with `pmax`, completed.
pub fn stc(run: &mut Run, sample: &str, pmax: f64, operator: &str) -> anyhow::Result<()> {
    run.start("stc-power", sample, operator, &[("rated_pmax", 400.0)], 1.0)?;
    run.event(RunEventKind::StepStarted, "0")
        .reading(
            "conditions.irradiance",
            "refcell",
            "irradiance",
            "W/m2",
            1001.0,
        )
        .reading(
            "conditions.cell_temperature",
            "module",
            "temperature",
            "Cel",
            25.3,
        )
        .event(RunEventKind::StepFinished, "0")
        .event(RunEventKind::StepStarted, "1");
    for (v, i) in [(0.0, 9.8), (30.0, 9.5), (48.0, 0.0)] {
        run.reading("stc.curve", "smu", "voltage", "V", v).reading(
            "stc.curve",
            "smu",
            "current",
            "A",
            i,
        );
    }
    for (m, unit, v) in [
        ("isc", "A", 9.8),
        ("voc", "V", 48.0),
        ("imp", "A", 9.3),
        ("vmp", "V", pmax / 9.3),
        ("pmax", "W", pmax),
        ("ff", "%", 80.0),
    ] {
        run.reading(&format!("stc.{m}"), "smu", m, unit, v);
    }
    run.event(RunEventKind::StepFinished, "1")
        .event(RunEventKind::Completed, "");
    Ok(())
}
