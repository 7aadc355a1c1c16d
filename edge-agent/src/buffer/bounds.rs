//! The buffer's bounds: readings per lane, disk use, age (TTL), and what a
//! full buffer does (`FullPolicy`).

use super::record::{decode_record, lane_range, record_count};
use super::{Buffer, BufferError, FullPolicy, Lane};
use std::sync::atomic::Ordering;

impl Buffer {
    /// Disk use of sled's files, re-read at most once a second (it is a directory walk).
    pub(super) fn disk_usage(&self) -> u64 {
        let mut checked = self
            .disk_checked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stale = checked.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1));
        if stale {
            *checked = Some(std::time::Instant::now());
            if let Ok(n) = self.db().and_then(|db| Ok(db.size_on_disk()?)) {
                self.disk_bytes.store(n, Ordering::Relaxed);
                metrics::gauge!(crate::metric_names::EDGE_BUFFER_DISK_BYTES).set(n as f64);
            }
        }
        self.disk_bytes.load(Ordering::Relaxed)
    }

    /// Deletes records of `lane` from the oldest on until the backlog is at
    /// most `target` or the lane is empty; returns the readings deleted.
    pub(super) fn drop_front(&self, lane: Lane, target: u64) -> Result<u64, BufferError> {
        let _guard = self.lock();
        let mut backlog = self.backlog();
        let mut dropped = 0u64;
        let mut batch = sled::Batch::default();
        for item in self.db()?.range(lane_range(lane)) {
            if backlog <= target {
                break;
            }
            let (k, v) = item?;
            let n = u64::from(record_count(&v).unwrap_or(0));
            batch.remove(k);
            dropped += n;
            backlog = backlog.saturating_sub(n);
        }
        let mut delta = [0i64; 2];
        delta[lane.index()] = -(dropped as i64);
        self.apply(batch, delta)?;
        Ok(dropped)
    }

    /// Applies the bounds before `n` more readings go into `lane`: drops the
    /// oldest records or refuses the append, per the lane's full policy. A
    /// high append sacrifices normal readings before its own.
    pub(super) fn make_room(&self, lane: Lane, n: u64) -> Result<(), BufferError> {
        self.expire()?;
        let max = self.opts.max_readings;
        let over_count = self.backlog() + n > max;
        let over_disk = self.disk_usage() > self.opts.max_disk_bytes;
        if !over_count && !over_disk {
            return Ok(());
        }
        let why = if over_disk {
            format!(
                "{} bytes on disk > {}",
                self.disk_bytes.load(Ordering::Relaxed),
                self.opts.max_disk_bytes
            )
        } else {
            format!("{} readings waiting, bound {max}", self.backlog())
        };
        // For the disk bound, drop 1 % of the backlog per append (sled frees
        // space lazily, so its size lags the deletions).
        let target = if over_disk {
            let b = self.backlog();
            b - b / 100 - 1
        } else {
            max.saturating_sub(n)
        };
        let mut dropped = 0;
        if lane == Lane::High {
            dropped += self.drop_front(Lane::Normal, target)?;
        }
        if self.backlog() > target {
            match self.opts.lane(lane).full_policy {
                FullPolicy::RejectNewest => {
                    self.count_dropped(dropped, &why);
                    let before = self.rejected.fetch_add(n, Ordering::Relaxed);
                    metrics::counter!(crate::metric_names::EDGE_BUFFER_REJECTED_TOTAL).increment(n);
                    if before == 0 || before / 100_000 != (before + n) / 100_000 {
                        tracing::warn!(%why, lane = ?lane, rejected_total = before + n, "buffer full: refusing new readings");
                    }
                    return Err(BufferError::Full(why));
                }
                FullPolicy::DropOldest => dropped += self.drop_front(lane, target)?,
            }
        }
        self.count_dropped(dropped, &why);
        Ok(())
    }

    pub(super) fn count_dropped(&self, dropped: u64, why: &str) {
        if dropped == 0 {
            return;
        }
        let before = self.dropped.fetch_add(dropped, Ordering::Relaxed);
        metrics::counter!(crate::metric_names::EDGE_BUFFER_DROPPED_TOTAL).increment(dropped);
        if before == 0 || before / 100_000 != (before + dropped) / 100_000 {
            tracing::warn!(%why, dropped_total = before + dropped, "buffer full: dropping the oldest readings");
        }
    }

    /// Drops whole records whose newest reading is older than their lane's
    /// TTL (checked at most once a second, from each lane's oldest record on).
    pub(super) fn expire(&self) -> Result<(), BufferError> {
        if Lane::ALL.iter().all(|l| self.opts.lane(*l).ttl.is_none()) {
            return Ok(());
        }
        {
            let mut checked = self
                .ttl_checked
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if checked.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
                return Ok(());
            }
            *checked = Some(std::time::Instant::now());
        }
        let now = chrono::Utc::now().timestamp_micros();
        for lane in Lane::ALL {
            let Some(ttl) = self.opts.lane(lane).ttl else {
                continue;
            };
            let cutoff = now - ttl.as_micros() as i64;
            let mut expired = 0u64;
            {
                let _guard = self.lock();
                let mut batch = sled::Batch::default();
                for item in self.db()?.range(lane_range(lane)) {
                    let (k, v) = item?;
                    let Some(rec) = decode_record(&v) else { break };
                    match rec.newest_us() {
                        Some(newest) if newest < cutoff => {
                            expired += rec.len() as u64;
                            batch.remove(k);
                        }
                        _ => break,
                    }
                }
                let mut delta = [0i64; 2];
                delta[lane.index()] = -(expired as i64);
                self.apply(batch, delta)?;
            }
            if expired > 0 {
                let before = self.expired.fetch_add(expired, Ordering::Relaxed);
                metrics::counter!(crate::metric_names::EDGE_BUFFER_EXPIRED_TOTAL)
                    .increment(expired);
                tracing::warn!(
                    expired,
                    expired_total = before + expired,
                    lane = ?lane,
                    ttl_s = ttl.as_secs(),
                    "readings older than the buffer TTL dropped unsent"
                );
            }
        }
        Ok(())
    }
}
