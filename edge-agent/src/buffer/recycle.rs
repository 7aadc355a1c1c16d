//! The one owner of the sled handle, and giving sled's memory back by
//! closing and reopening it while a backlog builds.

use super::{Buffer, BufferError};
use std::sync::atomic::Ordering;

/// See [`BufferOptions::recycle_after_bytes`].
pub const DEFAULT_RECYCLE_AFTER_BYTES: u64 = 16 << 20;

/// Resident set size of this process, from /proc (Linux).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

impl Buffer {
    /// The database is open (or reopens now): what `/ready` asks of the
    /// buffer. Appends go through the same handle.
    pub fn is_open(&self) -> bool {
        self.db().is_ok()
    }

    /// The open sled database (a cheap handle clone); reopens it if an
    /// earlier `recycle` could not.
    pub(super) fn db(&self) -> Result<sled::Db, BufferError> {
        if let Some(db) = self
            .db
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
        {
            return Ok(db.clone());
        }
        let mut slot = self
            .db
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            *slot = Some(Buffer::open_sled(&self.path, &self.opts)?);
            tracing::info!(path = %self.path.display(), "buffer database reopened");
        }
        slot.as_ref()
            .cloned()
            .ok_or_else(|| BufferError::Busy(self.path.display().to_string()))
    }

    /// Closes and reopens sled when a backlog has been building up (see
    /// [`BufferOptions::recycle_after_bytes`]): that is the only way to get
    /// back the memory sled holds for what it wrote. Appends and flushes wait
    /// meanwhile (~30 ms measured); nothing on disk changes.
    pub(super) async fn recycle_if_due(&self) -> Result<(), BufferError> {
        let limit = self.opts.recycle_after_bytes;
        let written = self.written_bytes.load(Ordering::Relaxed);
        if limit == 0 || written < limit {
            return Ok(());
        }
        let per_reading = written / self.written_readings.load(Ordering::Relaxed).max(1);
        // Mostly acknowledged already (the hub is keeping up): sled does not
        // hold on to what was deleted. Or the process has not grown (small
        // records, which sled handles well; reopening would cost more than
        // it gives back). Either way, nothing to win.
        let little_pending = self.backlog().saturating_mul(per_reading) < limit / 2;
        let not_grown = (self.opts.memory_probe)().is_some_and(|rss| {
            rss < self
                .memory_at_open
                .load(Ordering::Relaxed)
                .saturating_add(limit)
        });
        if little_pending || not_grown {
            self.written_bytes.store(0, Ordering::Relaxed);
            self.written_readings.store(0, Ordering::Relaxed);
            return Ok(());
        }
        let started = std::time::Instant::now();
        let _flushing = self.flush_lock.lock().await;
        let _guard = self.lock();
        if self.written_bytes.load(Ordering::Relaxed) < limit {
            return Ok(()); // another appender just did it
        }
        let mut slot = self
            .db
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(old) = slot.take() {
            old.flush()?;
            drop(old);
        }
        // What the old database held is free now, but glibc keeps freed
        // memory in its per-thread arenas; hand it back to the system before
        // the new database allocates its own.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free heap memory; no pointers change.
        unsafe {
            libc::malloc_trim(0);
        }
        self.written_bytes.store(0, Ordering::Relaxed);
        self.written_readings.store(0, Ordering::Relaxed);
        *slot = Some(Buffer::open_sled(&self.path, &self.opts)?);
        if let Some(rss) = (self.opts.memory_probe)() {
            self.memory_at_open.store(rss, Ordering::Relaxed);
        }
        self.recycles.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metric_names::EDGE_BUFFER_RECYCLES_TOTAL).increment(1);
        tracing::info!(
            written_bytes = written,
            backlog = self.backlog(),
            took_ms = started.elapsed().as_millis() as u64,
            "buffer database reopened to release sled's memory"
        );
        Ok(())
    }
}
