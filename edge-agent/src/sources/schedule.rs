//! When each poll group of a device is due.

use device_profile::Profile;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

pub struct GroupSlot {
    pub name: String,
    pub interval: Duration,
    /// Indexes into the profile's points.
    pub points: Vec<usize>,
    pub next_due: Instant,
}

pub struct Schedule {
    pub groups: Vec<GroupSlot>,
}

impl Schedule {
    /// One slot per poll group the profile's points use; points without a
    /// group poll every `default_interval`.
    pub fn from_profile(profile: &Profile, default_interval: Duration) -> Schedule {
        let mut by_group: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
        for (i, p) in profile.points.iter().enumerate() {
            by_group.entry(p.poll_group.clone()).or_default().push(i);
        }
        let now = Instant::now();
        let groups = by_group
            .into_iter()
            .map(|(name, points)| GroupSlot {
                interval: name
                    .as_ref()
                    .and_then(|n| profile.poll_groups.get(n))
                    .map(|g| Duration::from_millis(g.interval_ms))
                    .unwrap_or(default_interval),
                name: name.unwrap_or_else(|| "default".into()),
                points,
                next_due: now,
            })
            .collect();
        Schedule { groups }
    }

    /// The group due first, and when.
    pub fn next(&self) -> Option<(usize, Instant)> {
        self.groups
            .iter()
            .enumerate()
            .map(|(i, g)| (i, g.next_due))
            .min_by_key(|&(_, d)| d)
    }

    /// After a successful poll of group `gi` that was due at `due`.
    pub fn advance(&mut self, gi: usize, due: Instant) {
        let g = &mut self.groups[gi];
        let now = Instant::now();
        g.next_due = due + g.interval;
        if g.next_due < now {
            // Fell behind (slow device): skip missed ticks rather than burst.
            g.next_due = now;
        }
    }

    /// Brings group `gi` forward to at most `after` from now (to retry points
    /// that failed in an otherwise healthy poll, e.g. after line noise).
    pub fn retry_sooner(&mut self, gi: usize, after: Duration) {
        let g = &mut self.groups[gi];
        g.next_due = g.next_due.min(Instant::now() + after);
    }

    /// After a failure: nothing is polled before `until`.
    pub fn postpone_all(&mut self, until: Instant) {
        for g in &mut self.groups {
            g.next_due = until;
        }
    }
}
