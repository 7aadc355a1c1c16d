//! Where records live in the sled tree and how one is laid out on disk.
//!
//! The on-disk record is the buffer's own type (`StoredBatch`), not the gRPC
//! wire type: the uplink converts at its edge, so a change to the wire
//! contract is not a change to what gateways hold on disk, and the other way
//! round. Formats, told apart by the first byte:
//! - version 1 (agent 0.1.0): u32 big-endian count, then a protobuf
//!   `qi.uplink.v1.ReadingBatch`; its first byte is 0 (a record holds far
//!   fewer than 2^24 readings);
//! - version 2: the byte 2, the u32 big-endian count, then a protobuf
//!   `StoredBatch`, whose field numbers are those of version 1;
//! - version 3 (records holding audit events): the byte 3, the u32
//!   big-endian count of readings plus events, then a `StoredBatch` whose
//!   field 2 holds the events. An older agent that finds one (a downgrade)
//!   quarantines it instead of miscounting it.
//!
//! - version 4 (records holding protocol runs' data: run events, or
//!   readings tagged with a run): the byte 4, the u32 big-endian count of
//!   run events plus readings plus audit events, then a `StoredBatch` whose
//!   field 3 holds the run events and whose readings may carry fields 8 and
//!   9 (run id, series). An agent before runs quarantines such a record
//!   instead of sending run readings as untagged ones.
//!
//! All four are read; version 2 is written for readings only (so such
//! records are what they always were), version 3 when there are audit
//! events, version 4 when there is anything of a run. Within a record the
//! sequence runs through the run events, then the readings, then the audit
//! events.

use super::{BufferError, Lane};
use prost::Message;

pub(super) const READING_PREFIX: u8 = b'r';
pub(super) const LAST_SEQ_KEY: &[u8] = b"m/last_seq";
pub(super) const ACKED_KEY: &[u8] = b"m/acked";
pub(super) const PENDING_KEYS: [&[u8]; 2] = [b"m/pending/0", b"m/pending/1"];

const VERSION_2: u8 = 2;
const VERSION_3: u8 = 3;
const VERSION_4: u8 = 4;
/// Prefix of a protocol run's checkpoint key (`s/run/<run id>`); `s`
/// sorts after the record keys, so no record range ever meets one.
pub(super) const RUN_STATE_PREFIX: &[u8] = b"s/run/";

/// One reading as the buffer stores it, with its sequence number.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredReading {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(string, tag = "2")]
    pub device_id: String,
    #[prost(string, tag = "3")]
    pub metric: String,
    /// Acquisition time, microseconds since the Unix epoch (UTC).
    #[prost(int64, tag = "4")]
    pub timestamp_us: i64,
    #[prost(double, tag = "5")]
    pub value: f64,
    #[prost(string, tag = "6")]
    pub unit: String,
    /// `qi.uplink.v1.Quality` as its number.
    #[prost(int32, tag = "7")]
    pub quality: i32,
    /// Set when a protocol run recorded the reading (a UUID), else empty.
    #[prost(string, tag = "8")]
    pub run_id: String,
    /// The series within the run (`stc.pmax`, `module_temperature`).
    #[prost(string, tag = "9")]
    pub run_series: String,
}

/// Something that happened to a protocol run (fields as in the wire's
/// `RunEvent`), with its sequence number.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredRunEvent {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(int64, tag = "2")]
    pub timestamp_us: i64,
    #[prost(string, tag = "3")]
    pub run_id: String,
    /// `qi.uplink.v1.RunEventKind` as its number.
    #[prost(int32, tag = "4")]
    pub kind: i32,
    #[prost(string, tag = "5")]
    pub step: String,
    #[prost(string, tag = "6")]
    pub message: String,
    #[prost(message, optional, tag = "7")]
    pub start: Option<StoredRunStart>,
}

/// What a run started with (the wire's `RunStart`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredRunStart {
    #[prost(string, tag = "1")]
    pub protocol_id: String,
    #[prost(string, tag = "2")]
    pub protocol_version: String,
    #[prost(string, tag = "3")]
    pub template_toml: String,
    #[prost(string, tag = "4")]
    pub template_sha256: String,
    #[prost(string, tag = "5")]
    pub bench_id: String,
    #[prost(string, tag = "6")]
    pub sample_id: String,
    #[prost(btree_map = "string, double", tag = "7")]
    pub parameters: std::collections::BTreeMap<String, f64>,
    #[prost(string, tag = "8")]
    pub operator: String,
    #[prost(double, tag = "9")]
    pub time_scale: f64,
    #[prost(message, repeated, tag = "10")]
    pub bindings: Vec<StoredBenchPoint>,
}

/// One bench point mapping (the wire's `BenchPoint`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredBenchPoint {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub device_id: String,
    #[prost(string, tag = "3")]
    pub read_point: String,
    #[prost(string, tag = "4")]
    pub write_point: String,
    #[prost(string, tag = "5")]
    pub unit: String,
    #[prost(double, optional, tag = "6")]
    pub min: Option<f64>,
    #[prost(double, optional, tag = "7")]
    pub max: Option<f64>,
}

/// Something that happened on the gateway which the hub's audit trail must
/// show (a login, a logout, a device write), with its sequence number: it
/// travels and is acknowledged exactly like a reading.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredEvent {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// When it happened, microseconds since the Unix epoch (UTC).
    #[prost(int64, tag = "2")]
    pub timestamp_us: i64,
    #[prost(string, tag = "3")]
    pub actor: String,
    #[prost(string, tag = "4")]
    pub action: String,
    #[prost(string, tag = "5")]
    pub target: String,
    #[prost(string, tag = "6")]
    pub outcome: String,
    #[prost(string, tag = "7")]
    pub source_address: String,
    #[prost(string, tag = "8")]
    pub user_agent: String,
    /// JSON text, empty if unknown.
    #[prost(string, tag = "9")]
    pub before_json: String,
    #[prost(string, tag = "10")]
    pub after_json: String,
}

/// One record: the readings (or events) of one append, in sequence order.
/// Sequence numbers run through the readings, then the events.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredBatch {
    #[prost(message, repeated, tag = "1")]
    pub readings: Vec<StoredReading>,
    #[prost(message, repeated, tag = "2")]
    pub events: Vec<StoredEvent>,
    #[prost(message, repeated, tag = "3")]
    pub run_events: Vec<StoredRunEvent>,
}

impl StoredBatch {
    /// Run events, readings and audit events: the sequence numbers the record holds.
    pub fn len(&self) -> usize {
        self.run_events.len() + self.readings.len() + self.events.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn first_seq(&self) -> Option<u64> {
        self.run_events
            .first()
            .map(|e| e.seq)
            .or_else(|| self.readings.first().map(|r| r.seq))
            .or_else(|| self.events.first().map(|e| e.seq))
    }
    pub fn last_seq(&self) -> Option<u64> {
        self.events
            .last()
            .map(|e| e.seq)
            .or_else(|| self.readings.last().map(|r| r.seq))
            .or_else(|| self.run_events.last().map(|e| e.seq))
    }
    /// Whether the record holds anything of a protocol run (version 4).
    fn has_run_data(&self) -> bool {
        !self.run_events.is_empty() || self.readings.iter().any(|r| !r.run_id.is_empty())
    }
    /// The newest time stamp in the record.
    pub fn newest_us(&self) -> Option<i64> {
        let r = self.readings.last().map(|r| r.timestamp_us);
        let e = self.events.last().map(|e| e.timestamp_us);
        let x = self.run_events.last().map(|e| e.timestamp_us);
        r.max(e).max(x)
    }
    /// The oldest time stamp in the record.
    pub fn oldest_us(&self) -> Option<i64> {
        [
            self.readings.first().map(|r| r.timestamp_us),
            self.events.first().map(|e| e.timestamp_us),
            self.run_events.first().map(|e| e.timestamp_us),
        ]
        .into_iter()
        .flatten()
        .min()
    }
    /// Gives the items consecutive sequence numbers from `first`.
    pub fn renumber(&mut self, first: u64) {
        let seqs = first..;
        let items = self
            .run_events
            .iter_mut()
            .map(|e| &mut e.seq)
            .chain(self.readings.iter_mut().map(|r| &mut r.seq))
            .chain(self.events.iter_mut().map(|e| &mut e.seq));
        for (slot, seq) in items.zip(seqs) {
            *slot = seq;
        }
    }
}

impl From<StoredEvent> for qi_proto::v1::AuditEvent {
    fn from(e: StoredEvent) -> Self {
        qi_proto::v1::AuditEvent {
            seq: e.seq,
            timestamp_us: e.timestamp_us,
            actor: e.actor,
            action: e.action,
            target: e.target,
            outcome: e.outcome,
            source_address: e.source_address,
            user_agent: e.user_agent,
            before_json: e.before_json,
            after_json: e.after_json,
        }
    }
}

impl From<StoredReading> for qi_proto::v1::Reading {
    fn from(r: StoredReading) -> Self {
        qi_proto::v1::Reading {
            seq: r.seq,
            device_id: r.device_id,
            metric: r.metric,
            timestamp_us: r.timestamp_us,
            value: r.value,
            unit: r.unit,
            quality: r.quality,
            run_id: r.run_id,
            run_series: r.run_series,
        }
    }
}

impl From<StoredBenchPoint> for qi_proto::v1::BenchPoint {
    fn from(p: StoredBenchPoint) -> Self {
        qi_proto::v1::BenchPoint {
            name: p.name,
            device_id: p.device_id,
            read_point: p.read_point,
            write_point: p.write_point,
            unit: p.unit,
            min: p.min,
            max: p.max,
        }
    }
}

impl From<StoredRunEvent> for qi_proto::v1::RunEvent {
    fn from(e: StoredRunEvent) -> Self {
        qi_proto::v1::RunEvent {
            seq: e.seq,
            timestamp_us: e.timestamp_us,
            run_id: e.run_id,
            kind: e.kind,
            step: e.step,
            message: e.message,
            start: e.start.map(|s| qi_proto::v1::RunStart {
                protocol_id: s.protocol_id,
                protocol_version: s.protocol_version,
                template_toml: s.template_toml,
                template_sha256: s.template_sha256,
                bench_id: s.bench_id,
                sample_id: s.sample_id,
                parameters: s.parameters.into_iter().collect(),
                operator: s.operator,
                time_scale: s.time_scale,
                bindings: s.bindings.into_iter().map(Into::into).collect(),
            }),
        }
    }
}

pub(super) fn record_key(lane: Lane, seq: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = READING_PREFIX;
    k[1] = lane as u8;
    k[2..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn lane_range(lane: Lane) -> std::ops::RangeInclusive<[u8; 10]> {
    record_key(lane, 0)..=record_key(lane, u64::MAX)
}

pub(super) fn seq_of_key(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(2..10)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Where the count header starts, by format version.
fn header_at(v: &[u8]) -> Option<usize> {
    match v.first()? {
        0 => Some(0),
        &VERSION_2 | &VERSION_3 | &VERSION_4 => Some(1),
        _ => None,
    }
}

/// Readings in a record (from its header), if the record is well-formed.
pub(super) fn record_count(v: &[u8]) -> Option<u32> {
    let at = header_at(v)?;
    let n = u32::from_be_bytes(v.get(at..at + 4)?.try_into().ok()?);
    (n > 0).then_some(n)
}

/// A record of either version, if it decodes and agrees with its header.
pub(super) fn decode_record(v: &[u8]) -> Option<StoredBatch> {
    let n = record_count(v)?;
    let at = header_at(v)? + 4;
    let batch = StoredBatch::decode(v.get(at..)?).ok()?;
    (batch.len() == n as usize).then_some(batch)
}

/// A record's bytes, in the current version.
pub(super) fn encode_record(rec: &StoredBatch) -> Result<Vec<u8>, BufferError> {
    let mut value = Vec::with_capacity(5 + rec.encoded_len());
    value.push(if rec.has_run_data() {
        VERSION_4
    } else if rec.events.is_empty() {
        VERSION_2
    } else {
        VERSION_3
    });
    value.extend_from_slice(&(rec.len() as u32).to_be_bytes());
    rec.encode(&mut value)
        .map_err(|e| BufferError::Corrupt(e.to_string()))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(seq: u64) -> StoredReading {
        StoredReading {
            seq,
            device_id: "d".into(),
            metric: "m".into(),
            timestamp_us: 1_700_000_000_000_000,
            value: 1.5,
            unit: "V".into(),
            quality: 1,
            ..Default::default()
        }
    }

    #[test]
    fn records_round_trip_and_damage_is_refused() {
        let rec = StoredBatch {
            readings: vec![reading(7), reading(8)],
            ..Default::default()
        };
        let bytes = encode_record(&rec).unwrap();
        assert_eq!((bytes[0], record_count(&bytes)), (VERSION_2, Some(2)));
        assert_eq!(decode_record(&bytes), Some(rec));
        // A header that disagrees with the body, an unknown version, truncation.
        let mut lying = bytes.clone();
        lying[4] = 3;
        assert_eq!(decode_record(&lying), None);
        let mut unknown = bytes.clone();
        unknown[0] = 9;
        assert_eq!(
            (record_count(&unknown), decode_record(&unknown)),
            (None, None)
        );
        assert_eq!(decode_record(&bytes[..bytes.len() - 3]), None);
    }

    #[test]
    fn event_records_are_version_3_and_count_their_events() {
        let rec = StoredBatch {
            events: vec![StoredEvent {
                seq: 9,
                timestamp_us: 1_700_000_000_000_000,
                actor: "ann".into(),
                action: "login".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = encode_record(&rec).unwrap();
        assert_eq!((bytes[0], record_count(&bytes)), (VERSION_3, Some(1)));
        assert_eq!(decode_record(&bytes), Some(rec.clone()));
        // Readings-only records stay exactly what agents before events wrote.
        let plain = StoredBatch {
            readings: vec![reading(1)],
            ..Default::default()
        };
        assert_eq!(encode_record(&plain).unwrap()[0], VERSION_2);
        let mut both = StoredBatch {
            readings: vec![reading(1)],
            events: rec.events,
            ..Default::default()
        };
        both.renumber(20);
        assert_eq!((both.first_seq(), both.last_seq()), (Some(20), Some(21)));
    }

    #[test]
    fn run_records_are_version_4_and_number_run_events_first() {
        let mut tagged = reading(0);
        tagged.run_id = "0b6e3c1e-8a43-4f0e-9d7c-3f1c2b4a5d6e".into();
        tagged.run_series = "stc.pmax".into();
        let mut rec = StoredBatch {
            run_events: vec![StoredRunEvent {
                run_id: tagged.run_id.clone(),
                kind: qi_proto::v1::RunEventKind::Started as i32,
                start: Some(StoredRunStart {
                    protocol_id: "stc-power".into(),
                    parameters: [("rated_pmax".to_string(), 400.0)].into_iter().collect(),
                    time_scale: 1000.0,
                    bindings: vec![StoredBenchPoint {
                        name: "chamber.temperature".into(),
                        min: Some(-45.0),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            readings: vec![tagged],
            ..Default::default()
        };
        rec.renumber(30);
        assert_eq!(rec.run_events[0].seq, 30);
        assert_eq!(rec.readings[0].seq, 31);
        assert_eq!((rec.first_seq(), rec.last_seq()), (Some(30), Some(31)));
        let bytes = encode_record(&rec).unwrap();
        assert_eq!((bytes[0], record_count(&bytes)), (VERSION_4, Some(2)));
        assert_eq!(decode_record(&bytes), Some(rec.clone()));
        // A tagged reading alone makes a version 4 record too: an agent that
        // knows no runs must not send it as a plain reading.
        let only = StoredBatch {
            readings: rec.readings.clone(),
            ..Default::default()
        };
        assert_eq!(encode_record(&only).unwrap()[0], VERSION_4);
        let wire: qi_proto::v1::RunEvent = rec.run_events[0].clone().into();
        let start = wire.start.expect("start");
        assert_eq!(start.parameters["rated_pmax"], 400.0);
        assert_eq!(start.bindings[0].min, Some(-45.0));
        let r: qi_proto::v1::Reading = rec.readings[0].clone().into();
        assert_eq!(r.run_series, "stc.pmax");
    }

    /// What agent 0.1.0 wrote: the count, then the wire type's encoding.
    #[test]
    fn version_1_records_still_decode() {
        let wire = qi_proto::v1::ReadingBatch {
            readings: vec![reading(1).into(), reading(2).into()],
            events: vec![],
            run_events: vec![],
            traceparent: String::new(),
        };
        let mut v1 = (2u32).to_be_bytes().to_vec();
        wire.encode(&mut v1).unwrap();
        let rec = decode_record(&v1).unwrap();
        assert_eq!(rec.readings, vec![reading(1), reading(2)]);
        assert_eq!(record_count(&v1), Some(2));
    }

    #[test]
    fn the_high_lane_sorts_first_and_keys_follow_sequence_order() {
        assert!(record_key(Lane::High, u64::MAX) < record_key(Lane::Normal, 0));
        assert!(record_key(Lane::Normal, 255) < record_key(Lane::Normal, 256));
        assert_eq!(seq_of_key(&record_key(Lane::Normal, 42)), Some(42));
    }
}
