//! The buffer's guarantees, end to end through its public face.

use super::record::{PENDING_KEYS, record_key};
use super::*;
use std::path::Path;

pub(super) fn reading(i: u32) -> NewReading {
    NewReading {
        device_id: "dev".into(),
        metric: format!("m{i}").into(),
        timestamp_us: 1_700_000_000_000_000 + i64::from(i),
        value: f64::from(i),
        unit: "V".into(),
        quality: 1,
        priority: Priority::Normal,
    }
}

pub(super) fn cycle(from: u32, n: u32) -> Vec<NewReading> {
    (from..from + n).map(reading).collect()
}

pub(super) fn open(dir: &Path) -> Buffer {
    Buffer::open(dir, BufferOptions::with_cache(1 << 20)).unwrap()
}

pub(super) fn seqs(records: &[Record]) -> Vec<u64> {
    records
        .iter()
        .flat_map(|r| r.readings.iter().map(|x| x.seq))
        .collect()
}

pub(super) fn ack_all(b: &Buffer, records: &[Record]) {
    let ids: Vec<RecordId> = records.iter().map(Record::id).collect();
    let up_to = records.iter().map(Record::last_seq).max().unwrap_or(0);
    b.ack(&ids, up_to).unwrap();
}

#[tokio::test]
async fn sequences_survive_reopen_and_are_never_reused() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    {
        let b = open(dir.path());
        assert_eq!(b.append(&[reading(1), reading(2)]).await.unwrap(), (1, 2));
        assert_eq!(b.append(&[reading(3)]).await.unwrap(), (3, 3));
        let all = b.read(Lane::Normal, None, None, 100).unwrap();
        ack_all(&b, &all);
        b.flush().await.unwrap();
        assert_eq!(b.stats().backlog, 0);
    }
    let b = open(dir.path());
    let s = b.stats();
    assert_eq!((s.last_seq, s.acked_up_to, s.backlog), (3, 3, 0));
    assert_eq!(b.append(&[reading(4)]).await.unwrap(), (4, 4));
}

#[tokio::test]
async fn unacked_records_are_read_again_after_reopen() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    {
        let b = open(dir.path());
        for c in 0..3 {
            b.append(&cycle(c * 10 + 1, 10)).await.unwrap();
        }
        let first = b.read(Lane::Normal, None, None, 10).unwrap();
        assert_eq!(seqs(&first), (1..=10).collect::<Vec<_>>());
        ack_all(&b, &first);
        b.flush().await.unwrap();
    }
    let b = open(dir.path());
    assert_eq!(b.stats().backlog, 20);
    let rs = b.read(Lane::Normal, None, None, 100).unwrap();
    assert_eq!(seqs(&rs), (11..=30).collect::<Vec<_>>());
    assert_eq!(rs[0].readings[0].metric, "m11");
}

#[tokio::test]
async fn reads_return_whole_records_within_the_bounds() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    for c in 0..5 {
        b.append(&cycle(c * 10, 10)).await.unwrap();
    }
    // 25 readings fit two whole records, never half of one.
    let rs = b.read(Lane::Normal, None, None, 25).unwrap();
    assert_eq!(seqs(&rs), (1..=20).collect::<Vec<_>>());
    // A record larger than `max` still goes out alone rather than never.
    assert_eq!(
        seqs(&b.read(Lane::Normal, None, None, 3).unwrap()).len(),
        10
    );
    // `after` and `before` are first sequences of records.
    let mid = b.read(Lane::Normal, Some(11), Some(41), 100).unwrap();
    assert_eq!(seqs(&mid), (21..=40).collect::<Vec<_>>());
}

#[tokio::test]
async fn high_priority_readings_have_their_own_lane() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    b.append(&cycle(0, 10)).await.unwrap();
    let mixed: Vec<NewReading> = (0..6)
        .map(|i| NewReading {
            priority: if i % 2 == 0 {
                Priority::High
            } else {
                Priority::Normal
            },
            ..reading(i)
        })
        .collect();
    assert_eq!(b.accept("dev", &mixed).await, 6);
    let s = b.stats();
    assert_eq!((s.backlog, s.backlog_high, s.last_seq), (16, 3, 16));
    let high = b.read(Lane::High, None, None, 100).unwrap();
    assert_eq!(high.len(), 1);
    assert!(
        high[0]
            .readings
            .iter()
            .all(|r| ["m0", "m2", "m4"].contains(&r.metric.as_str()))
    );
    ack_all(&b, &high);
    assert_eq!(b.stats().backlog_high, 0);
    assert_eq!(b.stats().backlog, 13);
}

#[tokio::test]
async fn a_growing_backlog_reopens_sled_and_loses_nothing() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = BufferOptions {
        recycle_after_bytes: 4 << 10,
        // Bytes written decide alone (this process's memory is not under test).
        memory_probe: || None,
        ..BufferOptions::with_cache(1 << 20)
    };
    let b = Arc::new(Buffer::open(dir.path(), opts.clone()).unwrap());
    // Concurrent appenders while the backlog grows (a slow hub), and an
    // uplink acknowledging the oldest 300 readings meanwhile.
    let uplink = {
        let b = Arc::clone(&b);
        tokio::spawn(async move {
            let mut acked = Vec::new();
            while acked.len() < 300 {
                let recs = b.read(Lane::Normal, None, None, 20).unwrap();
                if recs.is_empty() {
                    tokio::task::yield_now().await;
                    continue;
                }
                ack_all(&b, &recs);
                acked.extend(seqs(&recs));
            }
            acked
        })
    };
    let mut tasks = Vec::new();
    for t in 0..4u32 {
        let b = Arc::clone(&b);
        tasks.push(tokio::spawn(async move {
            for c in 0..25u32 {
                b.append(&cycle(t * 1000 + c * 10, 10)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acked = uplink.await.unwrap();
    let stats = b.stats();
    assert!(stats.recycles >= 3, "{stats:?}");
    assert_eq!(stats.backlog, 1000 - acked.len() as u64);
    let all = b.read(Lane::Normal, None, None, usize::MAX).unwrap();
    let mut every = acked.clone();
    every.extend(seqs(&all));
    every.sort_unstable();
    assert_eq!(
        every,
        (1..=1000).collect::<Vec<_>>(),
        "each reading acked or waiting, once"
    );
    // The hub comes back and keeps up: no more reopening.
    ack_all(&b, &all);
    let before = b.stats().recycles;
    for c in 0..40u32 {
        b.append(&cycle(c * 10, 10)).await.unwrap();
        let r = b.read(Lane::Normal, None, None, usize::MAX).unwrap();
        ack_all(&b, &r);
    }
    assert_eq!(b.stats().recycles, before);
    assert_eq!(b.stats().backlog, 0);
    // And what was stored survives a restart, counts included.
    b.append(&cycle(0, 10)).await.unwrap();
    drop(b);
    let b = Buffer::open(dir.path(), opts).unwrap();
    assert_eq!(b.stats().backlog, 10);
    assert_eq!(b.stats().last_seq, 1410);
}

fn bounded(max: u64, policy: FullPolicy) -> BufferOptions {
    BufferOptions {
        max_readings: max,
        normal: LanePolicy {
            full_policy: policy,
            ttl: None,
        },
        ..BufferOptions::with_cache(1 << 20)
    }
}

#[tokio::test]
async fn drop_oldest_keeps_the_newest_within_the_bound() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let b = Buffer::open(dir.path(), bounded(25, FullPolicy::DropOldest)).unwrap();
    for c in 0..6u32 {
        b.append(&cycle(c * 10, 10)).await.unwrap();
    }
    let s = b.stats();
    assert!(s.backlog <= 25, "{s:?}");
    assert_eq!(s.last_seq, 60);
    assert_eq!(s.dropped, 60 - s.backlog);
    let rs = b.read(Lane::Normal, None, None, 100).unwrap();
    assert_eq!(seqs(&rs).last(), Some(&60));
    assert_eq!(seqs(&rs).len() as u64, s.backlog);
}

#[tokio::test]
async fn reject_newest_keeps_the_oldest_and_refuses_the_rest() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let b = Buffer::open(dir.path(), bounded(25, FullPolicy::RejectNewest)).unwrap();
    let mut refused = 0;
    for c in 0..6u32 {
        if let Err(BufferError::Full(_)) = b.append(&cycle(c * 10, 10)).await {
            refused += 1;
        }
    }
    let s = b.stats();
    assert_eq!(
        (s.last_seq, s.backlog, s.rejected, refused),
        (20, 20, 40, 4),
        "{s:?}"
    );
    let rs = b.read(Lane::Normal, None, None, 100).unwrap();
    assert_eq!(seqs(&rs).first(), Some(&1));
    // Once the hub acks, there is room again.
    ack_all(&b, &rs);
    assert!(b.append(&[reading(99)]).await.is_ok());
}

#[tokio::test]
async fn a_full_buffer_sacrifices_normal_readings_for_high_ones() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // Normal readings are refused when full, but alarms still get in.
    let b = Buffer::open(dir.path(), bounded(20, FullPolicy::RejectNewest)).unwrap();
    b.append(&cycle(0, 10)).await.unwrap();
    b.append(&cycle(10, 10)).await.unwrap();
    assert!(matches!(
        b.append(&cycle(20, 5)).await,
        Err(BufferError::Full(_))
    ));
    let (first, last) = b.append_to(Lane::High, &cycle(30, 5)).await.unwrap();
    assert_eq!((first, last), (21, 25));
    let s = b.stats();
    assert_eq!((s.backlog, s.backlog_high, s.dropped), (15, 5, 10), "{s:?}");
    assert_eq!(
        seqs(&b.read(Lane::Normal, None, None, 100).unwrap()),
        (11..=20).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn damaged_records_are_quarantined_when_read() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    {
        let b = open(dir.path());
        for c in 0..4u32 {
            b.append(&cycle(c * 10, 10)).await.unwrap();
        }
        b.db()
            .unwrap()
            .insert(
                record_key(Lane::Normal, 11),
                b"\x00\x00\x00\x0agarbage".to_vec(),
            )
            .unwrap();
        b.flush().await.unwrap();
    }
    let b = open(dir.path());
    assert_eq!(b.stats().backlog, 40);
    let got = seqs(&b.read(Lane::Normal, None, None, 100).unwrap());
    assert_eq!(got, (1..=10).chain(21..=40).collect::<Vec<_>>());
    let s = b.stats();
    assert_eq!((s.corrupt_records, s.backlog), (1, 30), "{s:?}");
    assert!(
        s.damage.as_deref().unwrap_or("").contains("quarantine"),
        "{s:?}"
    );
    assert_eq!(b.db().unwrap().open_tree("quarantine").unwrap().len(), 1);
    assert_eq!(b.append(&[reading(1)]).await.unwrap(), (41, 41));
    // The counts were stored with the changes: a reopen agrees.
    drop(b);
    assert_eq!(open(dir.path()).stats().backlog, 31);
}

#[tokio::test]
async fn a_buffer_without_stored_counts_is_walked_once() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    {
        let b = open(dir.path());
        for c in 0..3u32 {
            b.append(&cycle(c * 10, 10)).await.unwrap();
        }
        b.db()
            .unwrap()
            .insert(
                record_key(Lane::Normal, 21),
                b"\x00\x00\x00\x0agarbage".to_vec(),
            )
            .unwrap();
        for k in PENDING_KEYS {
            b.db().unwrap().remove(k).unwrap();
        }
        b.flush().await.unwrap();
    }
    let b = open(dir.path());
    let s = b.stats();
    assert_eq!((s.backlog, s.corrupt_records), (20, 1), "{s:?}");
    assert!(b.db().unwrap().get(PENDING_KEYS[1]).unwrap().is_some());
}

#[tokio::test]
async fn a_buffer_sled_cannot_open_is_moved_aside() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("buffer");
    {
        let b = open(&path);
        b.append(&[reading(1)]).await.unwrap();
        b.flush().await.unwrap();
    }
    std::fs::write(path.join("db"), vec![0xA5u8; 100_000]).unwrap();
    let b = open(&path);
    let s = b.stats();
    assert!(
        s.damage.as_deref().unwrap_or("").contains("moved to"),
        "{s:?}"
    );
    assert!(s.last_seq > 1_700_000_000_000_000_000, "{s:?}");
    assert_eq!(s.backlog, 0);
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("buffer.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
}

#[tokio::test]
async fn readings_past_their_lanes_ttl_are_dropped_and_counted() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = BufferOptions {
        normal: LanePolicy {
            ttl: Some(std::time::Duration::from_secs(3600)),
            ..LanePolicy::default()
        },
        ..BufferOptions::with_cache(1 << 20)
    };
    let b = Buffer::open(dir.path(), opts).unwrap();
    let now = chrono::Utc::now().timestamp_micros();
    let at = |ts: i64, n: u32| -> Vec<NewReading> {
        (0..n)
            .map(|i| NewReading {
                timestamp_us: ts,
                ..reading(i)
            })
            .collect()
    };
    b.append(&at(now - 7_200_000_000, 10)).await.unwrap(); // 2 h old
    // The high lane has no TTL: its old readings stay.
    b.append_to(Lane::High, &at(now - 7_200_000_000, 2))
        .await
        .unwrap();
    b.append(&at(now - 60_000_000, 5)).await.unwrap(); // 1 min old
    // The check runs at most once a second; the first append already ran it (nothing was old yet).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    b.append(&at(now, 1)).await.unwrap();
    let s = b.stats();
    assert_eq!((s.expired, s.backlog, s.backlog_high), (10, 8, 2), "{s:?}");
    assert_eq!(
        seqs(&b.read(Lane::Normal, None, None, 100).unwrap()).first(),
        Some(&13)
    );
}

#[tokio::test]
async fn group_commit_makes_every_append_durable_with_fewer_fsyncs() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = BufferOptions {
        flush_every: Some(std::time::Duration::from_millis(20)),
        ..BufferOptions::with_cache(1 << 20)
    };
    let b = Arc::new(Buffer::open(dir.path(), opts).unwrap());
    let tasks: Vec<_> = (0..8u32)
        .map(|t| {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                for i in 0..5 {
                    let (_, last) = b.append(&[reading(t * 10 + i)]).await.unwrap();
                    // Accepted means durable: visible to the uplink.
                    assert!(b.durable_seq.load(Ordering::SeqCst) >= last);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(b.stats().last_seq, 40);
    assert_eq!(
        seqs(&b.read(Lane::Normal, None, None, 100).unwrap()).len(),
        40
    );
}

/// What the MQTT bus uses: each reading to its priority's lane, all or
/// nothing, so a client resending an unacknowledged message cannot leave
/// half of it stored twice.
#[tokio::test]
async fn appends_by_priority_are_all_or_nothing_across_lanes() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mixed = |from: u32| {
        let mut v = cycle(from, 3);
        v[1].priority = Priority::High;
        v
    };
    {
        let b = Buffer::open(dir.path(), bounded(4, FullPolicy::RejectNewest)).unwrap();
        assert_eq!(b.append_by_priority(&mixed(0)).await.unwrap(), (1, 3));
        let s = b.stats();
        assert_eq!((s.backlog, s.backlog_high), (3, 1));
        let high = b.read(Lane::High, None, None, 10).unwrap();
        assert_eq!(seqs(&high), vec![1]);
        assert_eq!(
            seqs(&b.read(Lane::Normal, None, None, 10).unwrap()),
            vec![2, 3]
        );
        // Full for the normal part: nothing of the message is stored, not
        // even the high part (which alone would have fit).
        assert!(matches!(
            b.append_by_priority(&mixed(3)).await,
            Err(BufferError::Full(_))
        ));
        let s = b.stats();
        assert_eq!((s.backlog, s.backlog_high, s.last_seq), (3, 1, 3));
    }
    // The counts stored with the records agree after a reopen.
    let b = Buffer::open(dir.path(), bounded(4, FullPolicy::RejectNewest)).unwrap();
    assert_eq!((b.stats().backlog, b.stats().backlog_high), (3, 1));
}
