//! Audit events in the buffer: numbered with the readings, durable, in the
//! high lane, read and acknowledged like readings, kept across a reopen.

use super::*;

fn event(action: &str) -> NewEvent {
    NewEvent {
        timestamp_us: 1_700_000_000_000_000,
        actor: "ann".into(),
        action: action.into(),
        target: "device/d/point/p".into(),
        outcome: "ok".into(),
        after_json: "1.5".into(),
        ..Default::default()
    }
}

fn reading(i: u32) -> NewReading {
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

#[tokio::test]
async fn events_share_the_sequence_survive_reopen_and_are_acked_like_readings() {
    let _sled = SLED_TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    {
        let b = Buffer::open(dir.path(), BufferOptions::with_cache(1 << 20)).unwrap();
        assert_eq!(b.append(&[reading(1), reading(2)]).await.unwrap(), (1, 2));
        assert_eq!(
            b.append_events(&[event("login"), event("device_write")])
                .await
                .unwrap(),
            (3, 4)
        );
        assert_eq!(b.append(&[reading(3)]).await.unwrap(), (5, 5));
        let s = b.stats();
        assert_eq!((s.backlog, s.backlog_high), (5, 2));
    }
    let b = Buffer::open(dir.path(), BufferOptions::with_cache(1 << 20)).unwrap();
    assert_eq!(b.stats().backlog_high, 2);
    let high = b.read(Lane::High, None, None, 100).unwrap();
    assert_eq!(high.len(), 1);
    let rec = &high[0];
    assert!(rec.readings.is_empty());
    let seqs: Vec<u64> = rec.events.iter().map(|e| e.seq).collect();
    assert_eq!((seqs, rec.last_seq()), (vec![3, 4], 4));
    assert_eq!(rec.events[1].action, "device_write");
    b.ack(&[rec.id()], rec.last_seq()).unwrap();
    let s = b.stats();
    assert_eq!((s.backlog, s.backlog_high), (3, 0));
    assert!(b.read(Lane::High, None, None, 100).unwrap().is_empty());
    assert_eq!(b.append_events(&[event("logout")]).await.unwrap(), (6, 6));
}
