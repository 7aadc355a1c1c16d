//! The durable store-and-forward buffer.
//!
//! Every reading gets its per-gateway sequence number here and is on disk
//! (sled, fsynced) before `append` returns. The uplink reads whole records
//! from a lane and deletes exactly the records the hub has acknowledged. sled
//! stays behind this narrow interface (append, read, ack, stats) so it can be
//! tested alone and replaced.
//!
//! Layout (one sled tree, so a record and the sequence counter are written
//! atomically in one `apply_batch`):
//! - `r` + lane (0 = high, 1 = normal) + first seq (u64 big-endian) -> one
//!   record per `append` (format in `record`: the buffer's own versioned
//!   type, converted to the wire type by the uplink) whose readings carry
//!   seqs first..first+count-1. One record per poll cycle instead of one per
//!   reading keeps sled's per-key cost off the hot path, and key order puts
//!   the high lane first.
//! - `m/last_seq` -> u64 big-endian, the highest sequence ever assigned. Kept
//!   even when every reading is acknowledged and deleted, so sequence numbers
//!   are never reused (the hub would take a reused one for a duplicate).
//! - `m/acked` -> u64 big-endian, the highest sequence the hub acknowledged
//!   (informative; a record's presence is what says it is still owed).
//! - `m/pending/0`, `m/pending/1` -> u64 big-endian, readings stored per lane,
//!   written in the same atomic batch as every change to the records. Opening
//!   the buffer reads these instead of walking every record: a walk pulls the
//!   whole backlog through sled's cache, and sled does not give that memory
//!   back (measured: 981 MiB RSS for a 1.2 GB backlog with the walk, 18 MiB
//!   without). Records are checked as they are read instead; an undecodable
//!   one is quarantined then.
//!
//! A tree of its own, `calibration`, keeps what the hub said of the
//! instruments' calibration (`buffer::calibration`; the bytes are the
//! `calibration` module's business). Another, `hub_verdicts`, keeps what
//! the hub said of this gateway's runs (`buffer::verdicts`; the bytes are
//! the `verdicts` module's).
//!
//! Sequence numbers are global across lanes, so the hub's dedupe on
//! (gateway, seq) holds whatever order the lanes are sent in.
//!
//! The rooms: `record` (keys and the on-disk record format), `open` (open,
//! damage recovery and quarantine, the directory lock), `append` (durable
//! append with group commit), `bounds` (TTL and the full policy), `cursor`
//! (what the uplink reads and acknowledges), `recycle` (the sled handle and
//! giving sled's memory back), `sequence` (sequence numbers the hub told us).

mod append;
mod bounds;
mod calibration;
mod cursor;
#[cfg(test)]
mod event_tests;
mod open;
mod record;
mod recycle;
mod run_state;
mod sequence;
#[cfg(test)]
mod sequence_tests;
#[cfg(test)]
mod tests;
mod verdicts;

pub use record::{
    StoredBatch, StoredBenchPoint, StoredEvent, StoredReading, StoredRunEvent, StoredRunStart,
};
pub use recycle::{DEFAULT_RECYCLE_AFTER_BYTES, resident_bytes};
pub use sequence::Adoption;

use record::PENDING_KEYS;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

pub use device_profile::Priority;

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer storage error: {0}")]
    Storage(#[from] sled::Error),
    #[error("buffer metadata is corrupt: {0}")]
    Corrupt(String),
    #[error("buffer full ({0}); new readings refused (full_policy = reject_newest)")]
    Full(String),
    #[error("buffer {0} is in use by another process (is another edge-agent running?)")]
    Busy(String),
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

/// A lane of the buffer: records of one priority, in sequence order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    High = 0,
    Normal = 1,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::High, Lane::Normal];

    fn of(p: Priority) -> Lane {
        match p {
            Priority::High => Lane::High,
            Priority::Normal => Lane::Normal,
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// How one lane is bounded in time and what it does when the buffer is full.
#[derive(Debug, Clone, Copy, Default)]
pub struct LanePolicy {
    /// Readings older than this (by acquisition time) are dropped unsent; None keeps them.
    pub ttl: Option<std::time::Duration>,
    pub full_policy: FullPolicy,
}

/// How the buffer is opened and bounded.
#[derive(Debug, Clone)]
pub struct BufferOptions {
    pub cache_bytes: u64,
    /// sled keeps large records it wrote in memory until the database is
    /// closed (its cache bound does not cover them). So while a backlog
    /// builds up, after every this many bytes of records written, the buffer
    /// closes and reopens sled if the process has grown by as much since
    /// sled was opened and at least half of what was written is still
    /// pending. 0: never.
    pub recycle_after_bytes: u64,
    /// The process's resident memory in bytes (None: unknown, then only the
    /// bytes written count). Replaceable for tests.
    pub memory_probe: fn() -> Option<u64>,
    /// Group-commit window: appends within it share one fsync (None: each
    /// append flushes at once, still shared with concurrent appenders).
    pub flush_every: Option<std::time::Duration>,
    /// Bounds over both lanes together.
    pub max_readings: u64,
    pub max_disk_bytes: u64,
    /// Bulk telemetry.
    pub normal: LanePolicy,
    /// Alarms and test results. When the buffer is full, a high append first
    /// drops normal readings (oldest first) and applies its own policy only
    /// when no normal reading is left.
    pub high: LanePolicy,
}

impl BufferOptions {
    /// Unbounded (for tests and tools), with a page cache of `cache_bytes`.
    pub fn with_cache(cache_bytes: u64) -> BufferOptions {
        BufferOptions {
            cache_bytes,
            recycle_after_bytes: DEFAULT_RECYCLE_AFTER_BYTES,
            memory_probe: resident_bytes,
            flush_every: None,
            max_readings: u64::MAX,
            max_disk_bytes: u64::MAX,
            normal: LanePolicy::default(),
            high: LanePolicy::default(),
        }
    }

    fn lane(&self, lane: Lane) -> &LanePolicy {
        match lane {
            Lane::High => &self.high,
            Lane::Normal => &self.normal,
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
    pub priority: Priority,
}

/// An audit event as the local API hands it over, before it has a sequence
/// number (fields as in [`StoredEvent`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewEvent {
    pub timestamp_us: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub source_address: String,
    pub user_agent: String,
    pub before_json: String,
    pub after_json: String,
}

/// A reading a protocol run recorded, before it has a sequence number.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewRunReading {
    pub device_id: String,
    pub metric: String,
    pub timestamp_us: i64,
    pub value: f64,
    pub unit: String,
    pub run_id: String,
    /// `<record name>`, `<label>.<name>` or `<label>.curve`.
    pub run_series: String,
}

/// A run event before it has a sequence number (fields as in [`StoredRunEvent`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewRunEvent {
    pub timestamp_us: i64,
    pub run_id: String,
    pub kind: qi_proto::v1::RunEventKind,
    pub step: String,
    pub message: String,
    pub start: Option<StoredRunStart>,
}

/// One stored record (one append): where it is and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub lane: Lane,
    pub first_seq: u64,
    pub readings: Vec<StoredReading>,
    pub events: Vec<StoredEvent>,
    /// Numbered before the readings (see `record`).
    pub run_events: Vec<StoredRunEvent>,
}

impl Record {
    pub fn id(&self) -> RecordId {
        RecordId {
            lane: self.lane,
            first_seq: self.first_seq,
        }
    }
    /// Run events, readings and audit events.
    pub fn len(&self) -> usize {
        self.run_events.len() + self.readings.len() + self.events.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.len() as u64 - 1
    }
}

/// Names a record for `ack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordId {
    pub lane: Lane,
    pub first_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BufferStats {
    /// Highest sequence ever assigned.
    pub last_seq: u64,
    /// Highest sequence the hub has acknowledged (lanes are acknowledged
    /// independently, so lower ones may still be waiting: see `backlog`).
    pub acked_up_to: u64,
    /// Readings waiting for the hub's ack, both lanes.
    pub backlog: u64,
    /// Of `backlog`, readings in the high-priority lane.
    pub backlog_high: u64,
    /// Records skipped because they could not be decoded.
    pub corrupt_records: u64,
    /// Readings deleted before the hub acknowledged them, to stay within the bounds
    /// (drop_oldest); one already on the wire when deleted may still arrive.
    pub dropped: u64,
    /// Readings refused because the buffer was full (reject_newest).
    pub rejected: u64,
    /// Readings dropped unsent because they outlived their lane's TTL.
    pub expired: u64,
    /// Disk space used by the buffer's files, bytes (refreshed at most once a second).
    pub disk_bytes: u64,
    /// Times sled was closed and reopened to give back its memory (see
    /// `BufferOptions::recycle_after_bytes`).
    pub recycles: u64,
    pub full_policy: FullPolicy,
    /// Damage found when the buffer was opened, if any (and what was done about it).
    pub damage: Option<String>,
}

pub struct Buffer {
    /// The open sled database. Every use clones the handle (an Arc) for the
    /// length of one operation; `recycle` swaps it for a freshly opened one.
    /// None only if reopening failed; the next use tries again.
    db: std::sync::RwLock<Option<sled::Db>>,
    path: std::path::PathBuf,
    /// Record bytes and readings appended since sled was (re)opened.
    written_bytes: AtomicU64,
    written_readings: AtomicU64,
    /// Resident memory right after sled was (re)opened.
    memory_at_open: AtomicU64,
    recycles: AtomicU64,
    /// Serialises every change to the records (and so to the stored counts).
    write_lock: Mutex<()>,
    last_seq: AtomicU64,
    /// Highest sequence known to be on disk. The uplink never reads past it: a
    /// reading sent before its fsync could reach the hub and then vanish in a
    /// crash, and its sequence number would be handed out again.
    durable_seq: AtomicU64,
    acked_up_to: AtomicU64,
    /// Readings stored per lane (records present, not yet acknowledged).
    pending: [AtomicU64; 2],
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
    appended: Notify,
    /// Sees what the sources' `accept` made durable (the MQTT bus republishes it).
    tap: std::sync::OnceLock<Tap>,
}

/// Called with a device id and readings just made durable by `accept`.
pub type Tap = Box<dyn Fn(&str, &[NewReading]) + Send + Sync>;

impl Buffer {
    fn backlog(&self) -> u64 {
        self.pending.iter().map(|p| p.load(Ordering::SeqCst)).sum()
    }

    /// Applies `batch` together with the lanes' new counts, atomically.
    /// Callers hold `write_lock`.
    fn apply(&self, mut batch: sled::Batch, delta: [i64; 2]) -> Result<(), BufferError> {
        let mut next = [0u64; 2];
        for lane in Lane::ALL {
            let i = lane.index();
            let now = self.pending[i].load(Ordering::SeqCst);
            next[i] = now.saturating_add_signed(delta[i]);
            if delta[i] != 0 {
                batch.insert(PENDING_KEYS[i], &next[i].to_be_bytes());
            }
        }
        self.db()?.apply_batch(batch)?;
        for lane in Lane::ALL {
            self.pending[lane.index()].store(next[lane.index()], Ordering::SeqCst);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn stats(&self) -> BufferStats {
        let high = self.pending[Lane::High.index()].load(Ordering::SeqCst);
        BufferStats {
            last_seq: self.last_seq.load(Ordering::SeqCst),
            acked_up_to: self.acked_up_to.load(Ordering::SeqCst),
            backlog: high + self.pending[Lane::Normal.index()].load(Ordering::SeqCst),
            backlog_high: high,
            corrupt_records: self.corrupt.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            disk_bytes: self.disk_bytes.load(Ordering::Relaxed),
            recycles: self.recycles.load(Ordering::Relaxed),
            full_policy: self.opts.normal.full_policy,
            damage: self.damage.lock().ok().and_then(|d| d.clone()),
        }
    }

    /// Installs the tap (once; later calls are ignored).
    pub fn set_tap(&self, tap: Tap) {
        let _ = self.tap.set(tap);
    }

    /// Highest sequence assigned so far (the uplink's live/backlog boundary).
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::SeqCst)
    }

    /// Resolves after the next successful append (or at once if one happened
    /// since the last call).
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    /// Writes everything to disk; called on shutdown.
    pub async fn flush(&self) -> Result<(), BufferError> {
        let _flushing = self.flush_lock.lock().await;
        self.db()?.flush_async().await?;
        Ok(())
    }
}

/// sled 0.34 has one process-wide concurrency-control lock shared by every
/// open `Db`; several databases written and flushed at once in one process
/// can deadlock on it (seen with 16 buffer tests in parallel; the agent opens
/// exactly one buffer). Tests that open buffers take this first.
#[cfg(test)]
pub(crate) static SLED_TEST_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
