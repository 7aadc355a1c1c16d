//! Which of the process's main loops are making progress, for the systemd
//! watchdog: a loop registers a [`Beat`] and beats it each time round; work
//! that must finish (a poll, a batch write) holds a `Beat` for its duration
//! and drops it when done. A beat older than the watchdog interval means that
//! loop or that piece of work is stuck, and the watchdog pings stop.
//!
//! One registry per process ([`Progress::process`]), like the metrics
//! recorder: the loops live deep in the daemons (each poller, each ingest
//! stream), and the question "is every loop of this process moving" has one
//! answer per process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Entries {
    next_id: u64,
    /// id -> (name, time of the last beat).
    beats: BTreeMap<u64, (String, Instant)>,
}

/// A registry of loops and work in flight.
#[derive(Clone, Default)]
pub struct Progress(Arc<Mutex<Entries>>);

/// One registered loop or piece of work; unregisters when dropped.
pub struct Beat {
    registry: Progress,
    id: u64,
}

static PROCESS: OnceLock<Progress> = OnceLock::new();

impl Progress {
    pub fn new() -> Progress {
        Progress::default()
    }

    /// The process's registry, the one the watchdog reads.
    pub fn process() -> Progress {
        PROCESS.get_or_init(Progress::new).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding this lock leaves plain data behind: keep going.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `name`, counted as having just beaten.
    pub fn register(&self, name: impl Into<String>) -> Beat {
        let mut e = self.lock();
        e.next_id += 1;
        let id = e.next_id;
        e.beats.insert(id, (name.into(), Instant::now()));
        Beat {
            registry: self.clone(),
            id,
        }
    }

    /// Names of the entries that have not beaten within `within`, sorted.
    pub fn stalled(&self, within: Duration) -> Vec<String> {
        let now = Instant::now();
        let mut names: Vec<String> = self
            .lock()
            .beats
            .values()
            .filter(|(_, t)| now.duration_since(*t) > within)
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// How many loops and pieces of work are registered.
    pub fn len(&self) -> usize {
        self.lock().beats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Beat {
    /// This loop went round once more.
    pub fn beat(&self) {
        if let Some(e) = self.registry.lock().beats.get_mut(&self.id) {
            e.1 = Instant::now();
        }
    }

    /// Sleeps for `d`, beating now and then: a loop waiting out a backoff is
    /// idle on purpose, not stuck.
    pub async fn sleep(&self, d: Duration) {
        let until = tokio::time::Instant::now() + d;
        loop {
            self.beat();
            let now = tokio::time::Instant::now();
            if now >= until {
                return;
            }
            tokio::time::sleep((until - now).min(Duration::from_secs(1))).await;
        }
    }
}

impl Drop for Beat {
    fn drop(&mut self) {
        self.registry.lock().beats.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_beats_is_not_stalled_and_one_that_stops_is() {
        let p = Progress::new();
        let moving = p.register("uplink");
        let stuck = p.register("poller meter-1");
        std::thread::sleep(Duration::from_millis(60));
        moving.beat();
        assert_eq!(p.stalled(Duration::from_millis(30)), vec!["poller meter-1"]);
        drop(stuck);
        assert!(p.stalled(Duration::from_millis(30)).is_empty());
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn work_that_finishes_unregisters() {
        let p = Progress::new();
        {
            let _write = p.register("ingest write");
            assert_eq!(p.len(), 1);
        }
        assert!(p.is_empty());
    }

    #[tokio::test]
    async fn a_backoff_sleep_keeps_beating() {
        let p = Progress::new();
        let b = p.register("uplink");
        b.sleep(Duration::from_millis(2500)).await;
        assert!(p.stalled(Duration::from_millis(1500)).is_empty());
    }
}
