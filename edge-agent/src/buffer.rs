//! The durable store-and-forward buffer.
//!
//! Every reading gets its per-gateway sequence number here and is on disk
//! (sled, fsynced) before `append` returns. The uplink reads from a cursor and
//! deletes only what the hub has acknowledged. sled stays behind this narrow
//! interface (append, read_after, ack_up_to, stats) so it can be tested alone
//! and replaced.
//!
//! Layout (one sled tree, so a record and the sequence counter are written
//! atomically in one `apply_batch`):
//! - `r` + first seq (u64 big-endian) -> one record per `append`: u32
//!   big-endian count, then a protobuf `qi.uplink.v1.ReadingBatch` whose
//!   readings carry seqs first..first+count-1. One record per poll cycle
//!   instead of one per reading keeps sled's per-key cost off the hot path.
//! - `m/last_seq` -> u64 big-endian, the highest sequence ever assigned. Kept
//!   even when every reading is acknowledged and deleted, so sequence numbers
//!   are never reused (the hub would take a reused one for a duplicate).
//! - `m/acked` -> u64 big-endian, highest acknowledged sequence (written
//!   lazily: if it is lost, a few readings are resent and the hub drops them).

use prost::Message;
use qi_proto::v1::{Reading, ReadingBatch};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

const READING_PREFIX: u8 = b'r';
const LAST_SEQ_KEY: &[u8] = b"m/last_seq";
const ACKED_KEY: &[u8] = b"m/acked";

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer storage error: {0}")]
    Storage(#[from] sled::Error),
    #[error("buffer metadata is corrupt: {0}")]
    Corrupt(String),
    #[error("buffer full ({0}); new readings refused (full_policy = reject_newest)")]
    Full(String),
}

/// What an append does when the buffer is at its bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Delete the oldest readings to make room: the hub gets the newest data.
    #[default]
    DropOldest,
    /// Refuse new readings: the hub gets the oldest data, the newest is lost.
    RejectNewest,
}

/// How the buffer is opened and bounded.
#[derive(Debug, Clone)]
pub struct BufferOptions {
    pub cache_bytes: u64,
    /// Group-commit window: appends within it share one fsync (None: each
    /// append flushes at once, still shared with concurrent appenders).
    pub flush_every: Option<std::time::Duration>,
    /// Readings older than this (by acquisition time) are dropped unsent; None keeps them.
    pub ttl: Option<std::time::Duration>,
    pub max_readings: u64,
    pub max_disk_bytes: u64,
    pub full_policy: FullPolicy,
}

impl BufferOptions {
    /// Unbounded (for tests and tools), with a page cache of `cache_bytes`.
    pub fn with_cache(cache_bytes: u64) -> BufferOptions {
        BufferOptions {
            cache_bytes,
            flush_every: None,
            ttl: None,
            max_readings: u64::MAX,
            max_disk_bytes: u64::MAX,
            full_policy: FullPolicy::DropOldest,
        }
    }
}

/// A reading as the sources hand it over, before it has a sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReading {
    pub device_id: Arc<str>,
    pub metric: Arc<str>,
    pub timestamp_us: i64,
    pub value: f64,
    pub unit: Arc<str>,
    pub quality: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BufferStats {
    /// Highest sequence ever assigned.
    pub last_seq: u64,
    /// Everything at or below this has been acknowledged by the hub.
    pub acked_up_to: u64,
    /// Readings waiting for the hub's ack.
    pub backlog: u64,
    /// Records skipped because they could not be decoded.
    pub corrupt_records: u64,
    /// Readings deleted before the hub acknowledged them, to stay within the bounds
    /// (drop_oldest); one already on the wire when deleted may still arrive.
    pub dropped: u64,
    /// Readings refused because the buffer was full (reject_newest).
    pub rejected: u64,
    /// Readings dropped unsent because they outlived `buffer.ttl_s`.
    pub expired: u64,
    /// Disk space used by the buffer's files, bytes (refreshed at most once a second).
    pub disk_bytes: u64,
    pub full_policy: FullPolicy,
    /// Damage found when the buffer was opened, if any (and what was done about it).
    pub damage: Option<String>,
    /// Readings missing between intact records after damage (lost for good).
    pub missing_readings: u64,
}

pub struct Buffer {
    tree: sled::Db,
    /// Serialises sequence assignment with the insert that uses it.
    append_lock: Mutex<()>,
    last_seq: AtomicU64,
    /// Highest sequence known to be on disk. The uplink never reads past it: a
    /// reading sent before its fsync could reach the hub and then vanish in a
    /// crash, and its sequence number would be handed out again.
    durable_seq: AtomicU64,
    acked_up_to: AtomicU64,
    corrupt: AtomicU64,
    dropped: AtomicU64,
    rejected: AtomicU64,
    expired: AtomicU64,
    ttl_checked: Mutex<Option<std::time::Instant>>,
    disk_bytes: AtomicU64,
    disk_checked: Mutex<Option<std::time::Instant>>,
    opts: BufferOptions,
    flush_lock: tokio::sync::Mutex<()>,
    next_flush: Mutex<Option<tokio::time::Instant>>,
    damage: Mutex<Option<String>>,
    missing: AtomicU64,
    appended: Notify,
}

fn reading_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = READING_PREFIX;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Readings in a record (its 4-byte header), if the record is well-formed.
fn record_count(v: &[u8]) -> Option<u32> {
    let n = u32::from_be_bytes(v.get(..4)?.try_into().ok()?);
    (n > 0).then_some(n)
}

fn decode_record(v: &[u8]) -> Option<ReadingBatch> {
    let n = record_count(v)?;
    let batch = ReadingBatch::decode(v.get(4..)?).ok()?;
    (batch.readings.len() == n as usize).then_some(batch)
}

fn seq_of_key(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

impl Buffer {
    /// Opens (or creates) the buffer and recovers its counters from disk.
    /// Opens the buffer, checks every record, and resumes. Damage never stops
    /// the agent: undecodable records are moved to a `quarantine` tree and
    /// counted; a buffer sled cannot open at all is moved aside
    /// (`<path>.corrupt-<unix time>`) and replaced by an empty one. Either way
    /// `stats().damage` says what happened.
    pub fn open(path: &Path, opts: BufferOptions) -> Result<Buffer, BufferError> {
        let first_try = std::panic::catch_unwind(|| Buffer::open_checked(path, opts.clone()))
            .unwrap_or_else(|_| Err(BufferError::Corrupt("sled panicked while opening".into())));
        match first_try {
            Ok(b) => Ok(b),
            Err(
                e
                @ (BufferError::Corrupt(_) | BufferError::Storage(sled::Error::Corruption { .. })),
            ) => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let aside = path.with_file_name(format!(
                    "{}.corrupt-{stamp}",
                    path.file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("buffer")
                ));
                std::fs::rename(path, &aside).map_err(|io| {
                    BufferError::Corrupt(format!(
                        "{e}; and it cannot be moved aside to {}: {io}",
                        aside.display()
                    ))
                })?;
                let what = format!(
                    "buffer could not be opened ({e}); moved to {} and started empty",
                    aside.display()
                );
                tracing::error!(damage = %what, "buffer damaged");
                metrics::counter!("edge_buffer_quarantined_total").increment(1);
                let b = Buffer::open_checked(path, opts)?;
                // The old counter is gone, and the hub may hold sequences from it.
                // Restart numbering at the clock in nanoseconds: above anything
                // the old buffer can have handed out (it would have needed more
                // than one reading per nanosecond of its life), even before the
                // uplink learns the hub's highest sequence.
                let base = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0)
                    .min(i64::MAX as u64 / 2);
                b.tree.insert(LAST_SEQ_KEY, &base.to_be_bytes())?;
                b.tree.insert(ACKED_KEY, &base.to_be_bytes())?;
                b.tree.flush()?;
                b.last_seq.store(base, Ordering::SeqCst);
                b.durable_seq.store(base, Ordering::SeqCst);
                b.acked_up_to.store(base, Ordering::SeqCst);
                if let Ok(mut d) = b.damage.lock() {
                    *d = Some(format!("{what}; sequence numbers continue from {base}"));
                }
                Ok(b)
            }
            Err(e) => Err(e),
        }
    }

    fn open_checked(path: &Path, opts: BufferOptions) -> Result<Buffer, BufferError> {
        let b = Buffer::open_raw(path, opts)?;
        b.check()?;
        Ok(b)
    }

    /// Walks every record once: undecodable ones go to quarantine, gaps in the
    /// sequence are counted as missing.
    fn check(&self) -> Result<(), BufferError> {
        let quarantine = self.tree.open_tree("quarantine")?;
        let mut expected: Option<u64> = None;
        let (mut bad, mut missing, mut records) = (0u64, 0u64, 0u64);
        for item in self.tree.range(reading_key(0)..=reading_key(u64::MAX)) {
            let (k, v) = item?;
            let Some(first) = seq_of_key(&k) else {
                continue;
            };
            records += 1;
            match decode_record(&v) {
                Some(batch) if batch.readings.first().map(|r| r.seq) == Some(first) => {
                    if let Some(e) = expected
                        && first > e
                    {
                        missing += first - e;
                    }
                    expected = Some(first + batch.readings.len() as u64);
                }
                _ => {
                    quarantine.insert(&k, v)?;
                    self.tree.remove(&k)?;
                    bad += 1;
                }
            }
        }
        if bad > 0 || missing > 0 {
            let what = format!(
                "{bad} of {records} records undecodable (moved to the quarantine tree), {missing} readings missing between intact records"
            );
            tracing::error!(damage = %what, "buffer damaged; resuming with what is intact");
            self.corrupt.fetch_add(bad, Ordering::Relaxed);
            self.missing.fetch_add(missing, Ordering::Relaxed);
            metrics::counter!("edge_buffer_corrupt_records_total").increment(bad);
            if let Ok(mut d) = self.damage.lock() {
                *d = Some(what);
            }
            self.tree.flush()?;
        }
        Ok(())
    }

    fn open_raw(path: &Path, opts: BufferOptions) -> Result<Buffer, BufferError> {
        // sled starts empty, silently, when it finds nothing valid in its log:
        // existing files that yield no recovered database are damage, not a new buffer.
        let existed = std::fs::metadata(path.join("db")).is_ok_and(|m| m.len() > 0);
        let tree = sled::Config::new()
            .path(path)
            .cache_capacity(opts.cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        if existed && !tree.was_recovered() {
            return Err(BufferError::Corrupt(
                "its files exist but sled recovered nothing from them".into(),
            ));
        }
        let stored_last = match tree.get(LAST_SEQ_KEY)? {
            Some(v) => {
                let b: [u8; 8] = v.as_ref().try_into().map_err(|_| {
                    BufferError::Corrupt(format!("last_seq has {} bytes, expected 8", v.len()))
                })?;
                u64::from_be_bytes(b)
            }
            None => 0,
        };
        let stored_acked = match tree.get(ACKED_KEY)? {
            Some(v) => v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0),
            None => 0,
        };
        let (first, last) = {
            let mut it = tree.range(reading_key(0)..=reading_key(u64::MAX));
            let first = it.next().transpose()?;
            let last = it.next_back().transpose()?.or_else(|| first.clone());
            let first_seq = first.as_ref().and_then(|(k, _)| seq_of_key(k));
            let last_seq =
                last.and_then(|(k, v)| Some(seq_of_key(&k)? + u64::from(record_count(&v)?) - 1));
            (first_seq, last_seq)
        };
        // The counter and the records are written in one atomic batch, so they
        // agree; max() guards against a counter written by an older layout.
        let last_seq = stored_last.max(last.unwrap_or(0));
        let acked_up_to = match first {
            Some(f) => (f - 1).max(stored_acked.min(last_seq)),
            None => last_seq,
        };
        Ok(Buffer {
            tree,
            append_lock: Mutex::new(()),
            last_seq: AtomicU64::new(last_seq),
            durable_seq: AtomicU64::new(last_seq),
            acked_up_to: AtomicU64::new(acked_up_to),
            corrupt: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            ttl_checked: Mutex::new(None),
            disk_bytes: AtomicU64::new(0),
            disk_checked: Mutex::new(None),
            opts,
            flush_lock: tokio::sync::Mutex::new(()),
            next_flush: Mutex::new(None),
            damage: Mutex::new(None),
            missing: AtomicU64::new(0),
            appended: Notify::new(),
        })
    }

    /// Assigns sequence numbers, writes the readings and fsyncs. When this
    /// returns `Ok`, the readings survive a crash or power cut.
    pub async fn append(&self, readings: &[NewReading]) -> Result<(u64, u64), BufferError> {
        if readings.is_empty() {
            let l = self.last_seq.load(Ordering::SeqCst);
            return Ok((l + 1, l));
        }
        self.make_room(readings.len() as u64)?;
        let range = {
            let _guard = self
                .append_lock
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let first = self.last_seq.load(Ordering::SeqCst) + 1;
            let record = ReadingBatch {
                readings: readings
                    .iter()
                    .zip(first..)
                    .map(|(r, seq)| Reading {
                        seq,
                        device_id: r.device_id.to_string(),
                        metric: r.metric.to_string(),
                        timestamp_us: r.timestamp_us,
                        value: r.value,
                        unit: r.unit.to_string(),
                        quality: r.quality,
                    })
                    .collect(),
            };
            let count = readings.len() as u64;
            let last = first + count - 1;
            let mut value = Vec::with_capacity(4 + record.encoded_len());
            value.extend_from_slice(&(count as u32).to_be_bytes());
            record
                .encode(&mut value)
                .map_err(|e| BufferError::Corrupt(e.to_string()))?;
            let mut batch = sled::Batch::default();
            batch.insert(&reading_key(first), value);
            batch.insert(LAST_SEQ_KEY, &last.to_be_bytes());
            self.tree.apply_batch(batch)?;
            self.last_seq.store(last, Ordering::SeqCst);
            (first, last)
        };
        self.commit(range.1).await?;
        metrics::counter!("edge_buffer_appended_total").increment(readings.len() as u64);
        self.appended.notify_one();
        Ok(range)
    }

    /// Group commit: returns once everything up to `last` is fsynced. One
    /// appender at a time flushes, covering every record applied before it
    /// started; the others find their records already durable. With
    /// `flush_every`, appenders first wait for the current window to close, so
    /// one fsync serves everything appended within it.
    async fn commit(&self, last: u64) -> Result<(), BufferError> {
        if let Some(every) = self.opts.flush_every {
            let due = {
                let mut next = self
                    .next_flush
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let now = tokio::time::Instant::now();
                if next.is_none_or(|n| n < now) {
                    *next = Some(now + every);
                }
                next.unwrap_or(now)
            };
            tokio::time::sleep_until(due).await;
        }
        let _leader = self.flush_lock.lock().await;
        if self.durable_seq.load(Ordering::SeqCst) < last {
            let covered = self.last_seq.load(Ordering::SeqCst);
            self.tree.flush_async().await?;
            self.durable_seq.fetch_max(covered, Ordering::SeqCst);
            metrics::counter!("edge_buffer_fsyncs_total").increment(1);
        }
        Ok(())
    }

    /// Disk use of sled's files, re-read at most once a second (it is a directory walk).
    fn disk_usage(&self) -> u64 {
        let mut checked = self
            .disk_checked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stale = checked.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1));
        if stale {
            *checked = Some(std::time::Instant::now());
            if let Ok(n) = self.tree.size_on_disk() {
                self.disk_bytes.store(n, Ordering::Relaxed);
                metrics::gauge!("edge_buffer_disk_bytes").set(n as f64);
            }
        }
        self.disk_bytes.load(Ordering::Relaxed)
    }

    /// Applies the bounds before `n` more readings go in: drops the oldest
    /// records or refuses the append, per the full policy.
    fn make_room(&self, n: u64) -> Result<(), BufferError> {
        self.expire()?;
        let over_count = |b: &Buffer| b.stats_backlog() + n > b.opts.max_readings;
        let over_disk = self.disk_usage() > self.opts.max_disk_bytes;
        if !over_count(self) && !over_disk {
            return Ok(());
        }
        let why = if over_disk {
            format!(
                "{} bytes on disk > {}",
                self.disk_bytes.load(Ordering::Relaxed),
                self.opts.max_disk_bytes
            )
        } else {
            format!(
                "{} readings waiting, bound {}",
                self.stats_backlog(),
                self.opts.max_readings
            )
        };
        match self.opts.full_policy {
            FullPolicy::RejectNewest => {
                let before = self.rejected.fetch_add(n, Ordering::Relaxed);
                metrics::counter!("edge_buffer_rejected_total").increment(n);
                if before == 0 || before / 100_000 != (before + n) / 100_000 {
                    tracing::warn!(%why, rejected_total = before + n, "buffer full: refusing new readings");
                }
                Err(BufferError::Full(why))
            }
            FullPolicy::DropOldest => {
                // Drop whole records from the front until the new readings fit;
                // for the disk bound, drop 1 % of the backlog per append (sled
                // frees space lazily, so its size lags the deletions).
                let target_backlog = if over_disk {
                    self.stats_backlog() - self.stats_backlog() / 100 - 1
                } else {
                    self.opts.max_readings.saturating_sub(n)
                };
                let mut dropped = 0u64;
                let mut batch = sled::Batch::default();
                let mut acked = self.acked_up_to.load(Ordering::SeqCst);
                let last = self.last_seq.load(Ordering::SeqCst);
                for item in self.tree.range(reading_key(0)..=reading_key(u64::MAX)) {
                    if last.saturating_sub(acked) <= target_backlog {
                        break;
                    }
                    let (k, v) = item?;
                    let first = seq_of_key(&k).unwrap_or(0);
                    let end = first + u64::from(record_count(&v).unwrap_or(1)) - 1;
                    dropped += end.saturating_sub(acked.max(first - 1));
                    acked = acked.max(end);
                    batch.remove(k);
                }
                batch.insert(ACKED_KEY, &acked.to_be_bytes());
                self.tree.apply_batch(batch)?;
                self.acked_up_to.fetch_max(acked, Ordering::SeqCst);
                let before = self.dropped.fetch_add(dropped, Ordering::Relaxed);
                metrics::counter!("edge_buffer_dropped_total").increment(dropped);
                if before == 0 || before / 100_000 != (before + dropped) / 100_000 {
                    tracing::warn!(%why, dropped_total = before + dropped, "buffer full: dropping the oldest readings");
                }
                Ok(())
            }
        }
    }

    /// Drops whole records whose newest reading is older than the TTL (checked
    /// at most once a second, from the oldest record on).
    fn expire(&self) -> Result<(), BufferError> {
        let Some(ttl) = self.opts.ttl else {
            return Ok(());
        };
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
        let cutoff = chrono::Utc::now().timestamp_micros() - ttl.as_micros() as i64;
        let mut acked = self.acked_up_to.load(Ordering::SeqCst);
        let (mut expired, mut batch) = (0u64, sled::Batch::default());
        for item in self
            .tree
            .range(reading_key(acked + 1)..=reading_key(u64::MAX))
        {
            let (k, v) = item?;
            let Some(rec) = decode_record(&v) else { break };
            match rec.readings.last() {
                Some(newest) if newest.timestamp_us < cutoff => {
                    let end = newest.seq;
                    let first = seq_of_key(&k).unwrap_or(end);
                    expired += end.saturating_sub(acked.max(first - 1));
                    acked = acked.max(end);
                    batch.remove(k);
                }
                _ => break,
            }
        }
        if expired > 0 {
            batch.insert(ACKED_KEY, &acked.to_be_bytes());
            self.tree.apply_batch(batch)?;
            self.acked_up_to.fetch_max(acked, Ordering::SeqCst);
            let before = self.expired.fetch_add(expired, Ordering::Relaxed);
            metrics::counter!("edge_buffer_expired_total").increment(expired);
            tracing::warn!(
                expired,
                expired_total = before + expired,
                ttl_s = ttl.as_secs(),
                "readings older than the buffer TTL dropped unsent"
            );
        }
        Ok(())
    }

    fn stats_backlog(&self) -> u64 {
        self.last_seq
            .load(Ordering::SeqCst)
            .saturating_sub(self.acked_up_to.load(Ordering::SeqCst))
    }

    /// Acquisition time of the oldest reading not yet acknowledged, if any.
    pub fn oldest_pending_us(&self) -> Option<i64> {
        self.read_after(self.acked_up_to.load(Ordering::SeqCst), 1)
            .ok()
            .and_then(|r| r.first().map(|r| r.timestamp_us))
    }

    /// What the sources call: appends a poll cycle's readings and returns how
    /// many were accepted (durable). Refusals by the full policy are counted
    /// and logged by the buffer; a storage error is logged here, per device.
    pub async fn accept(&self, device: &str, readings: &[NewReading]) -> u64 {
        if readings.is_empty() {
            return 0;
        }
        match self.append(readings).await {
            Ok((first, last)) => last + 1 - first,
            Err(BufferError::Full(_)) => 0,
            Err(e) => {
                metrics::counter!("edge_buffer_append_errors_total").increment(1);
                tracing::error!(device, error = %e, lost = readings.len(), "cannot buffer readings");
                0
            }
        }
    }

    /// Up to `max` readings with sequence > `after`, in sequence order.
    pub fn read_after(&self, after: u64, max: usize) -> Result<Vec<Reading>, BufferError> {
        let mut out = Vec::with_capacity(max.min(4096));
        let want = after.saturating_add(1);
        let durable = self.durable_seq.load(Ordering::SeqCst);
        // The record holding `want` starts at or before it.
        let start = match self
            .tree
            .range(reading_key(0)..=reading_key(want))
            .next_back()
        {
            Some(item) => {
                let (k, v) = item?;
                let first = seq_of_key(&k).unwrap_or(want);
                match record_count(&v) {
                    Some(n) if first + u64::from(n) > want => first,
                    _ => want,
                }
            }
            None => want,
        };
        for item in self.tree.range(reading_key(start)..=reading_key(u64::MAX)) {
            let (k, v) = item?;
            match decode_record(&v) {
                Some(batch) => {
                    for r in batch.readings {
                        if r.seq >= want && r.seq <= durable && out.len() < max {
                            out.push(r);
                        }
                    }
                }
                None => {
                    // Issue #4 adds quarantine; for now skip, count and say so.
                    self.corrupt.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("edge_buffer_corrupt_records_total").increment(1);
                    tracing::error!(first_seq = ?seq_of_key(&k), "undecodable buffer record skipped");
                }
            }
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Deletes every record whose readings all have sequence <= `seq` (the hub has them).
    pub fn ack_up_to(&self, seq: u64) -> Result<(), BufferError> {
        let from = self.acked_up_to.load(Ordering::SeqCst);
        if seq <= from {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for item in self.tree.range(reading_key(0)..=reading_key(seq)) {
            let (k, v) = item?;
            let first = seq_of_key(&k).unwrap_or(0);
            match record_count(&v) {
                Some(n) if first + u64::from(n) - 1 > seq => break,
                _ => batch.remove(k),
            }
        }
        batch.insert(ACKED_KEY, &seq.to_be_bytes());
        self.tree.apply_batch(batch)?;
        // Not flushed here: if the deletion is lost in a crash, the readings are
        // sent again and the hub drops them as duplicates.
        self.acked_up_to.store(seq, Ordering::SeqCst);
        metrics::gauge!("edge_buffer_backlog").set(self.stats().backlog as f64);
        Ok(())
    }

    /// Makes sure the next sequence number is above `seq`. Used when the hub
    /// already holds higher sequences for this gateway (the buffer was wiped or
    /// replaced), so new readings are not mistaken for duplicates.
    pub async fn ensure_seq_above(&self, seq: u64) -> Result<bool, BufferError> {
        {
            let _guard = self
                .append_lock
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if self.last_seq.load(Ordering::SeqCst) >= seq {
                return Ok(false);
            }
            self.tree.insert(LAST_SEQ_KEY, &seq.to_be_bytes())?;
            self.last_seq.store(seq, Ordering::SeqCst);
            if self.acked_up_to.load(Ordering::SeqCst) < seq && self.is_empty_after(seq)? {
                self.acked_up_to.store(seq, Ordering::SeqCst);
            }
        }
        self.tree.flush_async().await?;
        self.durable_seq.fetch_max(seq, Ordering::SeqCst);
        Ok(true)
    }

    fn is_empty_after(&self, seq: u64) -> Result<bool, BufferError> {
        Ok(self
            .tree
            .range(reading_key(0)..=reading_key(seq))
            .next()
            .transpose()?
            .is_none())
    }

    pub fn stats(&self) -> BufferStats {
        let last_seq = self.last_seq.load(Ordering::SeqCst);
        let acked_up_to = self.acked_up_to.load(Ordering::SeqCst);
        BufferStats {
            last_seq,
            acked_up_to,
            backlog: last_seq.saturating_sub(acked_up_to),
            corrupt_records: self.corrupt.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            disk_bytes: self.disk_bytes.load(Ordering::Relaxed),
            full_policy: self.opts.full_policy,
            damage: self.damage.lock().ok().and_then(|d| d.clone()),
            missing_readings: self.missing.load(Ordering::Relaxed),
        }
    }

    /// Resolves after the next successful append (or at once if one happened
    /// since the last call).
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    /// Writes everything to disk; called on shutdown.
    pub async fn flush(&self) -> Result<(), BufferError> {
        self.tree.flush_async().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(i: u32) -> NewReading {
        NewReading {
            device_id: "dev".into(),
            metric: format!("m{i}").into(),
            timestamp_us: 1_700_000_000_000_000 + i64::from(i),
            value: f64::from(i),
            unit: "V".into(),
            quality: 1,
        }
    }

    #[tokio::test]
    async fn sequences_survive_reopen_and_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = Buffer::open(dir.path(), BufferOptions::with_cache(1 << 20)).unwrap();
            assert_eq!(b.append(&[reading(1), reading(2)]).await.unwrap(), (1, 2));
            assert_eq!(b.append(&[reading(3)]).await.unwrap(), (3, 3));
            b.ack_up_to(3).unwrap();
            b.flush().await.unwrap();
            assert_eq!(b.stats().backlog, 0);
        }
        let b = Buffer::open(dir.path(), BufferOptions::with_cache(1 << 20)).unwrap();
        let s = b.stats();
        assert_eq!((s.last_seq, s.acked_up_to, s.backlog), (3, 3, 0));
        assert_eq!(b.append(&[reading(4)]).await.unwrap(), (4, 4));
    }

    #[tokio::test]
    async fn unacked_readings_are_read_again_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = Buffer::open(dir.path(), BufferOptions::with_cache(1 << 20)).unwrap();
            b.append(&(1..=10).map(reading).collect::<Vec<_>>())
                .await
                .unwrap();
            b.ack_up_to(4).unwrap();
            b.flush().await.unwrap();
        }
        let b = Buffer::open(dir.path(), BufferOptions::with_cache(1 << 20)).unwrap();
        assert_eq!(b.stats().acked_up_to, 4);
        let rs = b.read_after(4, 3).unwrap();
        assert_eq!(rs.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5, 6, 7]);
        assert_eq!(rs[0].metric, "m5");
        let rest = b.read_after(7, 100).unwrap();
        assert_eq!(rest.len(), 3);
    }

    #[tokio::test]
    async fn records_are_split_by_reads_and_acks_at_any_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let b = Buffer::open(dir.path(), BufferOptions::with_cache(1 << 20)).unwrap();
        for chunk in 0..5u32 {
            b.append(
                &(chunk * 10..chunk * 10 + 10)
                    .map(reading)
                    .collect::<Vec<_>>(),
            )
            .await
            .unwrap();
        }
        // Reads start in the middle of a record and cross records.
        let rs = b.read_after(13, 15).unwrap();
        assert_eq!(rs.first().map(|r| r.seq), Some(14));
        assert_eq!(rs.last().map(|r| r.seq), Some(28));
        // An ack inside a record keeps the record but the backlog follows the ack.
        b.ack_up_to(25).unwrap();
        assert_eq!(b.stats().backlog, 25);
        assert_eq!(b.read_after(25, 100).unwrap().len(), 25);
        b.flush().await.unwrap();
        drop(b);
        let b = Buffer::open(dir.path(), BufferOptions::with_cache(1 << 20)).unwrap();
        assert_eq!(b.stats().acked_up_to, 25);
        assert_eq!(
            b.read_after(b.stats().acked_up_to, 100)
                .unwrap()
                .first()
                .map(|r| r.seq),
            Some(26)
        );
        b.ack_up_to(50).unwrap();
        assert_eq!(b.stats().backlog, 0);
        assert!(b.read_after(0, 10).unwrap().is_empty());
    }

    fn bounded(max: u64, policy: FullPolicy) -> BufferOptions {
        BufferOptions {
            max_readings: max,
            full_policy: policy,
            ..BufferOptions::with_cache(1 << 20)
        }
    }

    #[tokio::test]
    async fn drop_oldest_keeps_the_newest_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let b = Buffer::open(dir.path(), bounded(25, FullPolicy::DropOldest)).unwrap();
        for c in 0..6u32 {
            b.append(&(c * 10..c * 10 + 10).map(reading).collect::<Vec<_>>())
                .await
                .unwrap();
        }
        let s = b.stats();
        assert!(s.backlog <= 25, "{s:?}");
        assert_eq!(s.last_seq, 60);
        assert_eq!(s.dropped, 60 - s.backlog);
        let rs = b.read_after(s.acked_up_to, 100).unwrap();
        assert_eq!(rs.last().map(|r| r.seq), Some(60));
        assert_eq!(rs.len() as u64, s.backlog);
    }

    #[tokio::test]
    async fn reject_newest_keeps_the_oldest_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let b = Buffer::open(dir.path(), bounded(25, FullPolicy::RejectNewest)).unwrap();
        let mut refused = 0;
        for c in 0..6u32 {
            if let Err(BufferError::Full(_)) = b
                .append(&(c * 10..c * 10 + 10).map(reading).collect::<Vec<_>>())
                .await
            {
                refused += 1;
            }
        }
        let s = b.stats();
        assert_eq!(
            (s.last_seq, s.backlog, s.rejected, refused),
            (20, 20, 40, 4),
            "{s:?}"
        );
        assert_eq!(
            b.read_after(0, 100).unwrap().first().map(|r| r.seq),
            Some(1)
        );
        // Once the hub acks, there is room again.
        b.ack_up_to(20).unwrap();
        assert!(b.append(&[reading(99)]).await.is_ok());
    }

    #[tokio::test]
    async fn damaged_records_are_quarantined_and_gaps_counted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = Buffer::open(dir.path(), BufferOptions::with_cache(1 << 20)).unwrap();
            for c in 0..4u32 {
                b.append(&(c * 10..c * 10 + 10).map(reading).collect::<Vec<_>>())
                    .await
                    .unwrap();
            }
            // Damage record 11..20 and lose record 21..30.
            b.tree
                .insert(reading_key(11), b"\x00\x00\x00\x0agarbage".to_vec())
                .unwrap();
            b.tree.remove(reading_key(21)).unwrap();
            b.flush().await.unwrap();
        }
        let b = Buffer::open(dir.path(), BufferOptions::with_cache(1 << 20)).unwrap();
        let s = b.stats();
        assert_eq!(s.corrupt_records, 1, "{s:?}");
        assert_eq!(s.missing_readings, 20, "{s:?}");
        assert!(
            s.damage.as_deref().unwrap_or("").contains("quarantine"),
            "{s:?}"
        );
        assert_eq!(b.tree.open_tree("quarantine").unwrap().len(), 1);
        let seqs: Vec<u64> = b
            .read_after(0, 100)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, (1..=10).chain(31..=40).collect::<Vec<_>>());
        assert_eq!(b.append(&[reading(1)]).await.unwrap(), (41, 41));
    }

    #[tokio::test]
    async fn a_buffer_sled_cannot_open_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buffer");
        {
            let b = Buffer::open(&path, BufferOptions::with_cache(1 << 20)).unwrap();
            b.append(&[reading(1)]).await.unwrap();
            b.flush().await.unwrap();
        }
        std::fs::write(path.join("db"), vec![0xA5u8; 100_000]).unwrap();
        let b = Buffer::open(&path, BufferOptions::with_cache(1 << 20)).unwrap();
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
    async fn readings_past_their_ttl_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let opts = BufferOptions {
            ttl: Some(std::time::Duration::from_secs(3600)),
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
        b.append(&at(now - 60_000_000, 5)).await.unwrap(); // 1 min old
        // The check runs at most once a second; the first append already ran it (nothing was old yet).
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        b.append(&at(now, 1)).await.unwrap();
        let s = b.stats();
        assert_eq!((s.expired, s.backlog, s.acked_up_to), (10, 6, 10), "{s:?}");
        assert_eq!(
            b.read_after(0, 100).unwrap().first().map(|r| r.seq),
            Some(11)
        );
    }

    #[tokio::test]
    async fn group_commit_makes_every_append_durable_with_fewer_fsyncs() {
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
        assert_eq!(b.read_after(0, 100).unwrap().len(), 40);
    }

    #[tokio::test]
    async fn ensure_seq_above_skips_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let b = Buffer::open(dir.path(), BufferOptions::with_cache(1 << 20)).unwrap();
        assert!(b.ensure_seq_above(100).await.unwrap());
        assert_eq!(b.append(&[reading(1)]).await.unwrap(), (101, 101));
        assert_eq!(b.stats().backlog, 1);
        assert!(!b.ensure_seq_above(50).await.unwrap());
    }
}
