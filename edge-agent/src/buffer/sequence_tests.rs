//! The gateway sequence across reopens, hub hints and older formats.

use super::record::{PENDING_KEYS, record_key};
use super::tests::{ack_all, cycle, open, reading, seqs};
use super::*;

#[tokio::test]
async fn ensure_seq_above_skips_ahead() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    assert!(b.ensure_seq_above(100).await.unwrap());
    assert_eq!(b.append(&[reading(1)]).await.unwrap(), (101, 101));
    assert_eq!(b.stats().backlog, 1);
    assert!(!b.ensure_seq_above(50).await.unwrap());
}

#[tokio::test]
async fn a_hubs_implausible_sequence_is_not_adopted() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    let max = qi_proto::limits::SEQ_PLAUSIBLE_MAX;
    assert_eq!(
        b.adopt_hub_seq(i64::MAX as u64).await.unwrap(),
        Adoption::Implausible
    );
    assert_eq!(b.append(&[reading(1)]).await.unwrap(), (1, 1));
    assert_eq!(b.adopt_hub_seq(max).await.unwrap(), Adoption::Raised);
    assert_eq!(b.append(&[reading(2)]).await.unwrap(), (max + 1, max + 1));
    assert_eq!(b.adopt_hub_seq(5).await.unwrap(), Adoption::Unchanged);
}

/// A buffer poisoned by an earlier agent (it took 2^63-1 from the hub and
/// numbered past what the hub stores) renumbers what it owes on open.
#[tokio::test]
async fn a_buffer_numbered_beyond_the_hubs_range_renumbers_on_open() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    {
        let b = open(dir.path());
        b.append(&cycle(0, 3)).await.unwrap();
        // What the old ensure_seq_above did with a forged 2^63-1.
        assert!(b.ensure_seq_above(i64::MAX as u64).await.unwrap());
        b.append(&cycle(3, 2)).await.unwrap();
        b.append_to(Lane::High, &cycle(5, 1)).await.unwrap();
        assert_eq!(b.stats().last_seq, i64::MAX as u64 + 3);
    }
    let b = open(dir.path());
    let s = b.stats();
    assert!(
        s.last_seq <= qi_proto::limits::SEQ_PLAUSIBLE_MAX,
        "{}",
        s.last_seq
    );
    assert_eq!(s.backlog, 6);
    let mut all = b.read(Lane::High, None, None, 100).unwrap();
    all.extend(b.read(Lane::Normal, None, None, 100).unwrap());
    let mut values: Vec<f64> = all
        .iter()
        .flat_map(|r| r.readings.iter().map(|x| x.value))
        .collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, (0..6).map(f64::from).collect::<Vec<_>>());
    let seqs = seqs(&all);
    assert!(
        seqs.iter()
            .all(|s| *s <= qi_proto::limits::SEQ_PLAUSIBLE_MAX)
    );
    let mut unique = seqs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6);
    assert!(b.stats().damage.is_some());
    // New readings continue above the renumbered ones.
    let (first, _) = b.append(&cycle(6, 1)).await.unwrap();
    assert!(first > *unique.last().unwrap());
}

/// A buffer as agent 0.1.0 left it (records in format version 1: the count,
/// then the wire type) opens, is read and acknowledged, and new appends go
/// on in version 2 beside it.
#[tokio::test]
async fn a_buffer_written_by_release_0_1_0_keeps_opening() {
    use prost::Message;
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        for (first, n) in [(1u64, 3u64), (4, 2)] {
            let wire = qi_proto::v1::ReadingBatch {
                readings: (first..first + n)
                    .map(|seq| qi_proto::v1::Reading {
                        seq,
                        device_id: "meter-1".into(),
                        metric: "voltage_l1".into(),
                        timestamp_us: 1_700_000_000_000_000 + seq as i64,
                        value: seq as f64,
                        unit: "V".into(),
                        quality: 1,
                        ..Default::default()
                    })
                    .collect(),
                events: vec![],
                run_events: vec![],
                traceparent: String::new(),
            };
            let mut v = (n as u32).to_be_bytes().to_vec();
            wire.encode(&mut v).unwrap();
            db.insert(record_key(Lane::Normal, first), v).unwrap();
        }
        db.insert(super::record::LAST_SEQ_KEY, &5u64.to_be_bytes())
            .unwrap();
        db.insert(PENDING_KEYS[0], &0u64.to_be_bytes()).unwrap();
        db.insert(PENDING_KEYS[1], &5u64.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let b = open(dir.path());
    assert_eq!((b.stats().backlog, b.stats().last_seq), (5, 5));
    assert_eq!(b.append(&cycle(0, 2)).await.unwrap(), (6, 7));
    let records = b.read(Lane::Normal, None, None, 100).unwrap();
    assert_eq!(seqs(&records), (1..=7).collect::<Vec<_>>());
    let old = &records[0].readings[0];
    assert_eq!(
        (
            old.device_id.as_str(),
            old.metric.as_str(),
            old.value,
            old.unit.as_str()
        ),
        ("meter-1", "voltage_l1", 1.0, "V")
    );
    ack_all(&b, &records);
    assert_eq!(b.stats().backlog, 0);
    assert!(b.stats().damage.is_none());
}
