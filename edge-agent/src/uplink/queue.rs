//! What the uplink sends next: the high lane first, then normal readings,
//! with live data interleaved into a backlog drain so the hub stays current.
//!
//! At the start of a session everything in the normal lane up to the
//! buffer's last sequence is backlog; anything appended later is live. With
//! interleaving on, normal batches alternate between the oldest backlog and
//! the newest live records, so after an outage the hub sees current values
//! within a batch or two while the backlog drains at half the link's rate or
//! more. Each reading still carries its sequence and acquisition time, so the
//! hub stores every device's readings in time order whatever the arrival order.

use crate::buffer::{Buffer, BufferError, Lane, Record};

/// Which part of the buffer a batch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    High,
    Backlog,
    Live,
}

/// A batch chosen by [`SendQueue::peek`], not yet taken.
#[derive(Debug)]
pub struct Pick {
    pub source: Source,
    pub records: Vec<Record>,
}

impl Pick {
    pub fn len(&self) -> usize {
        self.records.iter().map(|r| r.len()).sum()
    }

    /// The buffer's stored type becomes the wire type here, at the edge:
    /// the batch (no trace context yet), its reading count and its last
    /// sequence number (readings, events and run events together).
    pub fn into_wire(self) -> (qi_proto::v1::ReadingBatch, u64, u64) {
        use qi_proto::v1::{AuditEvent, Reading, RunEvent};
        let mut b = qi_proto::v1::ReadingBatch::default();
        for r in self.records {
            b.readings.extend(r.readings.into_iter().map(Reading::from));
            b.events.extend(r.events.into_iter().map(AuditEvent::from));
            b.run_events
                .extend(r.run_events.into_iter().map(RunEvent::from));
        }
        let n = b.readings.len() as u64;
        let last = b
            .readings
            .iter()
            .map(|r| r.seq)
            .chain(b.events.iter().map(|e| e.seq))
            .chain(b.run_events.iter().map(|e| e.seq))
            .max()
            .unwrap_or(0);
        (b, n, last)
    }
}

/// Keeps whole records from the front of `pick` while their run events stay
/// within `limits::MAX_BATCH_RUN_EVENTS` (each carries a template; the hub
/// refuses a batch with more). The first record always stays: the run
/// engine never writes more than that many events in one record.
pub fn cap_run_events(pick: &mut Pick) {
    let mut total = 0;
    let keep = pick
        .records
        .iter()
        .position(|r| {
            total += r.run_events.len();
            total > qi_proto::limits::MAX_BATCH_RUN_EVENTS
        })
        .unwrap_or(pick.records.len())
        .max(1);
    pick.records.truncate(keep);
}

pub struct SendQueue {
    interleave: bool,
    /// Normal records with first seq <= this are backlog.
    boundary: u64,
    high_after: Option<u64>,
    backlog_after: Option<u64>,
    live_after: Option<u64>,
    /// Whose turn the next normal batch is, when both have records.
    live_turn: bool,
}

impl SendQueue {
    /// A queue for one session: everything the buffer holds is owed again.
    pub fn new(buffer: &Buffer, interleave: bool) -> SendQueue {
        let boundary = buffer.last_seq();
        SendQueue {
            interleave,
            boundary,
            high_after: None,
            backlog_after: None,
            live_after: Some(boundary),
            live_turn: false,
        }
    }

    /// The next batch of whole records (up to `max` readings), without
    /// moving past it: the caller may choose to wait for a fuller batch.
    pub fn peek(&self, buffer: &Buffer, max: usize) -> Result<Option<Pick>, BufferError> {
        let high = buffer.read(Lane::High, self.high_after, None, max)?;
        if !high.is_empty() {
            return Ok(Some(Pick {
                source: Source::High,
                records: high,
            }));
        }
        let backlog = || {
            buffer.read(
                Lane::Normal,
                self.backlog_after,
                Some(self.boundary + 1),
                max,
            )
        };
        let live = || buffer.read(Lane::Normal, self.live_after, None, max);
        let order = if self.interleave && self.live_turn {
            [Source::Live, Source::Backlog]
        } else {
            [Source::Backlog, Source::Live]
        };
        for source in order {
            let records = match source {
                Source::Live => live()?,
                _ => backlog()?,
            };
            if !records.is_empty() {
                return Ok(Some(Pick { source, records }));
            }
        }
        Ok(None)
    }

    /// Moves past a batch that was sent.
    pub fn take(&mut self, pick: &Pick) {
        let last_first = pick.records.last().map(|r| r.first_seq);
        match pick.source {
            Source::High => self.high_after = last_first.or(self.high_after),
            Source::Backlog => {
                self.backlog_after = last_first.or(self.backlog_after);
                self.live_turn = true;
            }
            Source::Live => {
                self.live_after = last_first.or(self.live_after);
                self.live_turn = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{BufferOptions, NewReading, Priority, StoredRunEvent};

    #[test]
    fn a_batch_carries_at_most_the_run_events_the_hub_takes() {
        let max = qi_proto::limits::MAX_BATCH_RUN_EVENTS;
        let rec = |first_seq: u64, n: usize| Record {
            lane: Lane::High,
            first_seq,
            readings: Vec::new(),
            events: Vec::new(),
            run_events: vec![StoredRunEvent::default(); n],
        };
        let mut pick = Pick {
            source: Source::High,
            records: vec![rec(1, max - 1), rec(64, 1), rec(65, 1), rec(66, 1)],
        };
        cap_run_events(&mut pick);
        assert_eq!(pick.records.len(), 2);
        // One record is always sent, whatever it holds.
        let mut big = Pick {
            source: Source::High,
            records: vec![rec(1, max + 1), rec(100, 1)],
        };
        cap_run_events(&mut big);
        assert_eq!(big.records.len(), 1);
    }

    fn cycle(n: usize, priority: Priority) -> Vec<NewReading> {
        (0..n)
            .map(|i| NewReading {
                device_id: "dev".into(),
                metric: format!("m{i}").into(),
                timestamp_us: 1_700_000_000_000_000,
                value: 1.0,
                unit: "V".into(),
                quality: 1,
                priority,
            })
            .collect()
    }

    fn drain(q: &mut SendQueue, b: &Buffer, max: usize) -> Vec<(Source, u64)> {
        let mut out = Vec::new();
        while let Some(p) = q.peek(b, max).unwrap() {
            q.take(&p);
            out.push((p.source, p.records[0].first_seq));
        }
        out
    }

    #[tokio::test]
    async fn alarms_go_first_and_live_data_interleaves_with_the_backlog() {
        let _sled = crate::buffer::SLED_TEST_LOCK.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let b = Buffer::open(dir.path(), BufferOptions::with_cache(1 << 20)).unwrap();
        // Backlog: 4 normal records of 10 (seqs 1..40), one alarm (41).
        for _ in 0..4 {
            b.append(&cycle(10, Priority::Normal)).await.unwrap();
        }
        b.accept("dev", &cycle(1, Priority::High)).await;
        let mut q = SendQueue::new(&b, true);
        // Live data arrives after the session started (42.., 52..).
        b.append(&cycle(10, Priority::Normal)).await.unwrap();
        b.append(&cycle(10, Priority::Normal)).await.unwrap();
        let order = drain(&mut q, &b, 10);
        use Source::*;
        assert_eq!(
            order,
            vec![
                (High, 41),
                (Backlog, 1),
                (Live, 42),
                (Backlog, 11),
                (Live, 52),
                (Backlog, 21),
                (Backlog, 31),
            ]
        );
        // An alarm raised mid-drain overtakes everything still queued.
        let mut q = SendQueue::new(&b, false);
        let first = q.peek(&b, 10).unwrap().unwrap();
        q.take(&first);
        b.accept("dev", &cycle(2, Priority::High)).await;
        assert_eq!(q.peek(&b, 10).unwrap().unwrap().source, High);
    }

    #[tokio::test]
    async fn without_interleaving_batches_follow_sequence_order() {
        let _sled = crate::buffer::SLED_TEST_LOCK.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let b = Buffer::open(dir.path(), BufferOptions::with_cache(1 << 20)).unwrap();
        b.append(&cycle(10, Priority::Normal)).await.unwrap();
        let mut q = SendQueue::new(&b, false);
        b.append(&cycle(10, Priority::Normal)).await.unwrap();
        let order: Vec<u64> = drain(&mut q, &b, 5).iter().map(|(_, s)| *s).collect();
        assert_eq!(order, vec![1, 11]);
    }
}
