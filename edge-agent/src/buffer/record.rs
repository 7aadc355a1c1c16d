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
//! All three are read; version 2 is written for readings only (so such
//! records are what they always were), version 3 when there are events.

use super::{BufferError, Lane};
use prost::Message;

pub(super) const READING_PREFIX: u8 = b'r';
pub(super) const LAST_SEQ_KEY: &[u8] = b"m/last_seq";
pub(super) const ACKED_KEY: &[u8] = b"m/acked";
pub(super) const PENDING_KEYS: [&[u8]; 2] = [b"m/pending/0", b"m/pending/1"];

const VERSION_2: u8 = 2;
const VERSION_3: u8 = 3;

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
}

impl StoredBatch {
    /// Readings plus events: the sequence numbers the record holds.
    pub fn len(&self) -> usize {
        self.readings.len() + self.events.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn first_seq(&self) -> Option<u64> {
        self.readings
            .first()
            .map(|r| r.seq)
            .or_else(|| self.events.first().map(|e| e.seq))
    }
    pub fn last_seq(&self) -> Option<u64> {
        self.events
            .last()
            .map(|e| e.seq)
            .or_else(|| self.readings.last().map(|r| r.seq))
    }
    /// The newest time stamp in the record.
    pub fn newest_us(&self) -> Option<i64> {
        let r = self.readings.last().map(|r| r.timestamp_us);
        let e = self.events.last().map(|e| e.timestamp_us);
        r.max(e)
    }
    /// The oldest time stamp in the record.
    pub fn oldest_us(&self) -> Option<i64> {
        let r = self.readings.first().map(|r| r.timestamp_us);
        let e = self.events.first().map(|e| e.timestamp_us);
        match (r, e) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    /// Gives the items consecutive sequence numbers from `first`.
    pub fn renumber(&mut self, first: u64) {
        let seqs = first..;
        let items = self
            .readings
            .iter_mut()
            .map(|r| &mut r.seq)
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
            // Protocol runs tag their readings (issue #14, in progress).
            run_id: String::new(),
            run_series: String::new(),
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
        &VERSION_2 | &VERSION_3 => Some(1),
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
    value.push(if rec.events.is_empty() {
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
        }
    }

    #[test]
    fn records_round_trip_and_damage_is_refused() {
        let rec = StoredBatch {
            readings: vec![reading(7), reading(8)],
            events: vec![],
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
            readings: vec![],
            events: vec![StoredEvent {
                seq: 9,
                timestamp_us: 1_700_000_000_000_000,
                actor: "ann".into(),
                action: "login".into(),
                ..Default::default()
            }],
        };
        let bytes = encode_record(&rec).unwrap();
        assert_eq!((bytes[0], record_count(&bytes)), (VERSION_3, Some(1)));
        assert_eq!(decode_record(&bytes), Some(rec.clone()));
        // Readings-only records stay exactly what agents before events wrote.
        let plain = StoredBatch {
            readings: vec![reading(1)],
            events: vec![],
        };
        assert_eq!(encode_record(&plain).unwrap()[0], VERSION_2);
        let mut both = StoredBatch {
            readings: vec![reading(1)],
            events: rec.events,
        };
        both.renumber(20);
        assert_eq!((both.first_seq(), both.last_seq()), (Some(20), Some(21)));
    }

    /// What agent 0.1.0 wrote: the count, then the wire type's encoding.
    #[test]
    fn version_1_records_still_decode() {
        let wire = qi_proto::v1::ReadingBatch {
            readings: vec![reading(1).into(), reading(2).into()],
            events: vec![],
            run_events: vec![],
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
