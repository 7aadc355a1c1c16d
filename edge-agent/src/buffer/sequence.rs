//! Keeping the buffer's sequence numbers within what the hub stores.
//!
//! The agent takes the hub's highest sequence for its gateway when the hub
//! holds more than the buffer handed out (a wiped or replaced buffer), so
//! new readings continue above it. A reading forged under the gateway's id
//! could once make that jump go to 2^63-1, after which every reading the
//! agent numbered was beyond what the hub accepts, forever, across
//! restarts. Now an implausible value is not taken (`adopt_hub_seq`), and a
//! buffer left in that state renumbers what it still owes when it opens
//! (`repair_sequence`), so the gateway recovers by itself without losing a
//! reading.

use super::record::{LAST_SEQ_KEY, decode_record, encode_record, record_key, seq_of_key};
use super::{Buffer, BufferError, Lane};
use qi_proto::limits::SEQ_PLAUSIBLE_MAX;
use std::sync::atomic::Ordering;

/// What `adopt_hub_seq` did with the hub's highest sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// The buffer was already at or above it.
    Unchanged,
    /// New readings continue above it.
    Raised,
    /// Beyond `SEQ_PLAUSIBLE_MAX`: forged or broken, not taken.
    Implausible,
}

/// Nanoseconds since the epoch, capped: the base a buffer that lost its
/// counter numbers from (above anything it can have handed out before).
pub(super) fn clock_base() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        .min(SEQ_PLAUSIBLE_MAX / 2)
}

impl Buffer {
    /// Makes sure the next sequence number is above `seq`, the hub's highest
    /// for this gateway, unless `seq` is beyond any sequence an agent can
    /// have sent (see the module doc).
    pub async fn adopt_hub_seq(&self, seq: u64) -> Result<Adoption, BufferError> {
        if seq <= self.last_seq.load(Ordering::SeqCst) {
            return Ok(Adoption::Unchanged);
        }
        if seq > SEQ_PLAUSIBLE_MAX {
            return Ok(Adoption::Implausible);
        }
        Ok(if self.ensure_seq_above(seq).await? {
            Adoption::Raised
        } else {
            Adoption::Unchanged
        })
    }

    /// Renumbers records above `SEQ_PLAUSIBLE_MAX` (see the module doc).
    /// Returns how many readings got new numbers.
    pub(super) fn repair_sequence(&self) -> Result<u64, BufferError> {
        if self.last_seq.load(Ordering::SeqCst) <= SEQ_PLAUSIBLE_MAX {
            return Ok(0);
        }
        let db = self.db()?;
        // Continue above every plausible number still owed, and above the clock.
        let mut last = clock_base();
        for lane in Lane::ALL {
            let plausible = record_key(lane, 0)..=record_key(lane, SEQ_PLAUSIBLE_MAX);
            if let Some(item) = db.range(plausible).next_back() {
                let (_, v) = item?;
                if let Some(rec) = decode_record(&v) {
                    let top = rec.last_seq().unwrap_or(0);
                    last = last.max(top.min(SEQ_PLAUSIBLE_MAX));
                }
            }
        }
        let from = last + 1;
        let mut batch = sled::Batch::default();
        let mut renumbered = 0u64;
        for lane in Lane::ALL {
            let beyond = record_key(lane, SEQ_PLAUSIBLE_MAX + 1)..=record_key(lane, u64::MAX);
            for item in db.range(beyond) {
                let (k, v) = item?;
                // Undecodable records are quarantined when the uplink reads them.
                let (Some(mut rec), Some(_)) = (decode_record(&v), seq_of_key(&k)) else {
                    continue;
                };
                let first = last + 1;
                rec.renumber(first);
                last += rec.len() as u64;
                let value = encode_record(&rec)?;
                batch.remove(k);
                batch.insert(&record_key(lane, first), value);
                renumbered += rec.len() as u64;
            }
        }
        batch.insert(LAST_SEQ_KEY, &last.to_be_bytes());
        db.apply_batch(batch)?;
        db.flush()?;
        self.last_seq.store(last, Ordering::SeqCst);
        self.durable_seq.store(last, Ordering::SeqCst);
        let what = format!(
            "sequence numbers beyond {SEQ_PLAUSIBLE_MAX} (taken from a hub holding a forged reading) renumbered: {renumbered} readings now {from}..={last}"
        );
        tracing::error!(damage = %what, "buffer sequence repaired");
        metrics::counter!(crate::metric_names::EDGE_BUFFER_RENUMBERED_TOTAL).increment(renumbered);
        if let Ok(mut d) = self.damage.lock() {
            *d = Some(match d.take() {
                Some(before) => format!("{before}; {what}"),
                None => what,
            });
        }
        Ok(renumbered)
    }
}

impl Buffer {
    /// Makes sure the next sequence number is above `seq`. Used when the hub
    /// already holds higher sequences for this gateway (the buffer was wiped or
    /// replaced), so new readings are not mistaken for duplicates.
    pub async fn ensure_seq_above(&self, seq: u64) -> Result<bool, BufferError> {
        {
            let _guard = self
                .write_lock
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if self.last_seq.load(Ordering::SeqCst) >= seq {
                return Ok(false);
            }
            self.db()?.insert(LAST_SEQ_KEY, &seq.to_be_bytes())?;
            self.last_seq.store(seq, Ordering::SeqCst);
        }
        let _flushing = self.flush_lock.lock().await;
        self.db()?.flush_async().await?;
        self.durable_seq.fetch_max(seq, Ordering::SeqCst);
        Ok(true)
    }
}
