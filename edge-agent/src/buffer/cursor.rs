//! What the uplink reads (whole durable records, per lane) and acknowledges.

use super::record::{ACKED_KEY, decode_record, record_count, record_key, seq_of_key};
use super::{Buffer, BufferError, Lane, Record, RecordId};
use std::sync::atomic::Ordering;

impl Buffer {
    /// Acquisition time of the oldest reading not yet acknowledged, if any.
    pub fn oldest_pending_us(&self) -> Option<i64> {
        Lane::ALL
            .iter()
            .filter_map(|l| {
                let rec = self.read(*l, None, None, 1).ok()?.into_iter().next()?;
                [
                    rec.readings.first().map(|r| r.timestamp_us),
                    rec.events.first().map(|e| e.timestamp_us),
                    rec.run_events.first().map(|e| e.timestamp_us),
                ]
                .into_iter()
                .flatten()
                .min()
            })
            .min()
    }

    /// Whole records of `lane` in sequence order: those whose first sequence
    /// is above `after` and below `before` (both optional), up to `max`
    /// readings (always at least one record if any is there). Records not yet
    /// fsynced are not returned.
    pub fn read(
        &self,
        lane: Lane,
        after: Option<u64>,
        before: Option<u64>,
        max: usize,
    ) -> Result<Vec<Record>, BufferError> {
        let durable = self.durable_seq.load(Ordering::SeqCst);
        let from = after.map_or(0, |a| a.saturating_add(1));
        let mut out: Vec<Record> = Vec::new();
        let mut total = 0usize;
        let mut damaged = Vec::new();
        for item in self
            .db()?
            .range(record_key(lane, from)..=record_key(lane, u64::MAX))
        {
            let (k, v) = item?;
            let Some(first) = seq_of_key(&k) else {
                continue;
            };
            if before.is_some_and(|b| first >= b) {
                break;
            }
            let n = record_count(&v).unwrap_or(0) as usize;
            if first + n as u64 - 1 > durable || (!out.is_empty() && total + n > max) {
                break;
            }
            match decode_record(&v) {
                Some(batch) => {
                    total += batch.len();
                    out.push(Record {
                        lane,
                        first_seq: first,
                        readings: batch.readings,
                        events: batch.events,
                        run_events: batch.run_events,
                    });
                }
                None => damaged.push((k, v, first)),
            }
            if total >= max {
                break;
            }
        }
        // Moved aside once the iteration (and its database handle) is gone:
        // taking the write lock while holding a handle could stall a reopen.
        for (k, v, first) in damaged {
            // Its count is taken from its header when that is readable.
            let _guard = self.lock();
            self.db()?.open_tree("quarantine")?.insert(&k, v.clone())?;
            let mut batch = sled::Batch::default();
            batch.remove(k);
            let mut delta = [0i64; 2];
            delta[lane.index()] = -i64::from(record_count(&v).unwrap_or(0));
            self.apply(batch, delta)?;
            self.report_corrupt(
                1,
                format!("record {first} undecodable (moved to the quarantine tree)"),
            );
        }
        Ok(out)
    }

    /// Deletes the records the hub has acknowledged (`up_to`: the highest
    /// sequence among them). A record already gone (dropped by the bounds
    /// while in flight) is skipped.
    pub fn ack(&self, records: &[RecordId], up_to: u64) -> Result<(), BufferError> {
        {
            let _guard = self.lock();
            let db = self.db()?;
            let mut batch = sled::Batch::default();
            let mut delta = [0i64; 2];
            for r in records {
                let key = record_key(r.lane, r.first_seq);
                if let Some(v) = db.get(key)? {
                    delta[r.lane.index()] -= i64::from(record_count(&v).unwrap_or(0));
                    batch.remove(&key);
                }
            }
            self.apply(batch, delta)?;
        }
        // Not flushed here: if the deletion is lost in a crash, the readings are
        // sent again and the hub drops them as duplicates.
        let prev = self.acked_up_to.fetch_max(up_to, Ordering::SeqCst);
        if up_to > prev {
            self.db()?.insert(ACKED_KEY, &up_to.to_be_bytes())?;
        }
        metrics::gauge!(crate::metric_names::EDGE_BUFFER_BACKLOG).set(self.backlog() as f64);
        Ok(())
    }
}
