//! Opening the buffer: sled's directory lock, damage found on open (the
//! quarantine, a buffer moved aside), and the lanes' stored counts.

use super::record::{ACKED_KEY, LAST_SEQ_KEY, PENDING_KEYS, decode_record, lane_range, seq_of_key};
use super::{Buffer, BufferError, BufferOptions, Lane, sequence};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;

/// sled reports a held directory lock as an `Other` error with this text.
pub(super) fn is_lock_held(e: &std::io::Error) -> bool {
    e.to_string().contains("could not acquire lock")
}

pub(super) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Buffer {
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
                let aside = path.with_file_name(format!(
                    "{}.corrupt-{}",
                    path.file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("buffer"),
                    now_secs()
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
                metrics::counter!(crate::metric_names::EDGE_BUFFER_QUARANTINED_TOTAL).increment(1);
                let b = Buffer::open_checked(path, opts)?;
                // The old counter is gone, and the hub may hold sequences from it.
                // Restart numbering at the clock in nanoseconds: above anything
                // the old buffer can have handed out (it would have needed more
                // than one reading per nanosecond of its life), even before the
                // uplink learns the hub's highest sequence.
                let base = sequence::clock_base();
                let db = b.db()?;
                db.insert(LAST_SEQ_KEY, &base.to_be_bytes())?;
                db.flush()?;
                b.last_seq.store(base, Ordering::SeqCst);
                b.durable_seq.store(base, Ordering::SeqCst);
                if let Ok(mut d) = b.damage.lock() {
                    *d = Some(format!("{what}; sequence numbers continue from {base}"));
                }
                Ok(b)
            }
            Err(e) => Err(e),
        }
    }

    pub(super) fn open_checked(path: &Path, opts: BufferOptions) -> Result<Buffer, BufferError> {
        let b = Buffer::open_raw(path, opts)?;
        b.check()?;
        b.repair_sequence()?;
        Ok(b)
    }

    /// Finds the lanes' counts: stored with every change, so normally just
    /// read. A buffer without them (written before they existed) is walked
    /// once: undecodable records go to quarantine, the rest are counted.
    pub(super) fn check(&self) -> Result<(), BufferError> {
        let db = self.db()?;
        let stored: Vec<Option<u64>> = PENDING_KEYS
            .iter()
            .map(|k| {
                db.get(k)
                    .ok()
                    .flatten()
                    .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            })
            .collect();
        if let [Some(high), Some(normal)] = stored[..] {
            self.pending[0].store(high, Ordering::SeqCst);
            self.pending[1].store(normal, Ordering::SeqCst);
            return Ok(());
        }
        let quarantine = db.open_tree("quarantine")?;
        let (mut bad, mut records) = (0u64, 0u64);
        let mut highest = 0u64;
        let mut batch = sled::Batch::default();
        for lane in Lane::ALL {
            let mut pending = 0u64;
            for item in db.range(lane_range(lane)) {
                let (k, v) = item?;
                let Some(first) = seq_of_key(&k) else {
                    continue;
                };
                records += 1;
                match decode_record(&v) {
                    Some(rec) if rec.first_seq() == Some(first) => {
                        let n = rec.len() as u64;
                        pending += n;
                        highest = highest.max(first + n - 1);
                    }
                    _ => {
                        quarantine.insert(&k, v)?;
                        batch.remove(k);
                        bad += 1;
                    }
                }
            }
            self.pending[lane.index()].store(pending, Ordering::SeqCst);
            batch.insert(PENDING_KEYS[lane.index()], &pending.to_be_bytes());
        }
        db.apply_batch(batch)?;
        db.flush()?;
        // The counter and the records are written in one atomic batch, so they
        // agree; max() guards against a counter lost with damaged metadata.
        self.last_seq.fetch_max(highest, Ordering::SeqCst);
        self.durable_seq.fetch_max(highest, Ordering::SeqCst);
        if bad > 0 {
            self.report_corrupt(
                bad,
                format!("{bad} of {records} records undecodable (moved to the quarantine tree)"),
            );
        }
        Ok(())
    }

    pub(super) fn report_corrupt(&self, bad: u64, what: String) {
        tracing::error!(damage = %what, "buffer damaged; resuming with what is intact");
        self.corrupt.fetch_add(bad, Ordering::Relaxed);
        metrics::counter!(crate::metric_names::EDGE_BUFFER_CORRUPT_RECORDS_TOTAL).increment(bad);
        if let Ok(mut d) = self.damage.lock() {
            *d = Some(match d.take() {
                Some(before) => format!("{before}; {what}"),
                None => what,
            });
        }
    }

    /// Opens sled in `path`. sled locks its directory; a previous owner (a
    /// process still exiting, or a handle whose background flusher has not
    /// finished) holds it for a moment, so wait up to 5 s before calling the
    /// buffer busy.
    pub(super) fn open_sled(path: &Path, opts: &BufferOptions) -> Result<sled::Db, BufferError> {
        let mut tries = 0;
        loop {
            match sled::Config::new()
                .path(path)
                .cache_capacity(opts.cache_bytes)
                .mode(sled::Mode::HighThroughput)
                .open()
            {
                Err(sled::Error::Io(e)) if is_lock_held(&e) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(sled::Error::Io(e)) if is_lock_held(&e) => {
                    return Err(BufferError::Busy(path.display().to_string()));
                }
                other => return Ok(other?),
            }
        }
    }

    pub(super) fn open_raw(path: &Path, opts: BufferOptions) -> Result<Buffer, BufferError> {
        // sled starts empty, silently, when it finds nothing valid in its log:
        // existing files that yield no recovered database are damage, not a new buffer.
        let existed = std::fs::metadata(path.join("db")).is_ok_and(|m| m.len() > 0);
        let tree = Buffer::open_sled(path, &opts)?;
        if existed && !tree.was_recovered() {
            return Err(BufferError::Corrupt(
                "its files exist but sled recovered nothing from them".into(),
            ));
        }
        let read_u64 = |key: &[u8]| -> Result<Option<u64>, BufferError> {
            match tree.get(key)? {
                Some(v) => {
                    let b: [u8; 8] = v.as_ref().try_into().map_err(|_| {
                        BufferError::Corrupt(format!(
                            "{} has {} bytes, expected 8",
                            String::from_utf8_lossy(key),
                            v.len()
                        ))
                    })?;
                    Ok(Some(u64::from_be_bytes(b)))
                }
                None => Ok(None),
            }
        };
        let last_seq = read_u64(LAST_SEQ_KEY)?.unwrap_or(0);
        let acked = read_u64(ACKED_KEY).ok().flatten().unwrap_or(0);
        Ok(Buffer {
            db: std::sync::RwLock::new(Some(tree)),
            path: path.to_path_buf(),
            written_bytes: AtomicU64::new(0),
            written_readings: AtomicU64::new(0),
            memory_at_open: AtomicU64::new((opts.memory_probe)().unwrap_or(0)),
            recycles: AtomicU64::new(0),
            write_lock: Mutex::new(()),
            last_seq: AtomicU64::new(last_seq),
            durable_seq: AtomicU64::new(last_seq),
            acked_up_to: AtomicU64::new(acked.min(last_seq)),
            pending: [AtomicU64::new(0), AtomicU64::new(0)],
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
            appended: Notify::new(),
            tap: std::sync::OnceLock::new(),
        })
    }
}
