//! What one device refuses, and for how long the poller stays clear of it:
//! points whose own registers answer with a Modbus exception, and registers
//! that are no point's at all but lie in a gap a coalesced read bridges.
//!
//! Both are learnt while bisecting a refused read, skipped (reads are planned
//! around them) until the retry interval has passed, then tried again; a
//! successful read of an address clears it.

use crate::sources::health::{BadPoint, RefusedRegisters};
use device_profile::{Point, RegisterKind};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;

struct Fault {
    error: String,
    since_ms: i64,
    retry_at: Instant,
    failures: u32,
}

impl Fault {
    fn new(error: String, retry_at: Instant) -> Fault {
        Fault {
            error,
            since_ms: chrono::Utc::now().timestamp_millis(),
            retry_at,
            failures: 1,
        }
    }

    fn again(&mut self, error: String, retry_at: Instant) {
        self.failures += 1;
        self.retry_at = retry_at;
        self.error = error;
    }
}

pub struct Faults {
    device: String,
    retry: Duration,
    /// Point index -> why it is skipped.
    points: HashMap<usize, Fault>,
    /// Single refused addresses outside any point this device reads.
    registers: BTreeMap<(RegisterKind, u16), Fault>,
    /// Registers first refused this cycle, logged together at its end.
    new_registers: Vec<(RegisterKind, u16)>,
    /// Bumped on every change: cached read plans made before it are stale.
    pub generation: u64,
}

impl Faults {
    pub fn new(device: &str, retry: Duration) -> Faults {
        Faults {
            device: device.to_string(),
            retry,
            points: HashMap::new(),
            registers: BTreeMap::new(),
            new_registers: Vec::new(),
            generation: 0,
        }
    }

    /// Spans (kind, first, last) a read must not touch now.
    pub fn avoided(&self, points: &[Point], now: Instant) -> Vec<(RegisterKind, u32, u32)> {
        let bad_points = self
            .points
            .iter()
            .filter(|(_, f)| f.retry_at > now)
            .filter_map(|(&i, _)| points[i].modbus())
            .map(|l| (l.register, u32::from(l.address), l.end_address()));
        let bad_registers = self
            .registers
            .iter()
            .filter(|(_, f)| f.retry_at > now)
            .map(|(&(k, a), _)| (k, u32::from(a), u32::from(a)));
        bad_points.chain(bad_registers).collect()
    }

    /// Whether anything is due to be tried again.
    pub fn retry_due(&self, now: Instant) -> bool {
        self.points.values().any(|f| f.retry_at <= now)
            || self.registers.values().any(|f| f.retry_at <= now)
    }

    /// Whether point `i` is skipped now.
    pub fn skips_point(&self, i: usize, now: Instant) -> bool {
        self.points.get(&i).is_some_and(|f| f.retry_at > now)
    }

    /// A read of `points` spanning `count` registers (bits) from `start` succeeded:
    /// whatever it covered is readable again.
    pub fn read_ok(
        &mut self,
        points: &[Point],
        read: &[usize],
        kind: RegisterKind,
        start: u16,
        count: u16,
    ) {
        for i in read {
            if let Some(f) = self.points.remove(i) {
                self.generation += 1;
                tracing::info!(device = %self.device, point = %points[*i].name,
                    failures = f.failures, "point readable again");
            }
        }
        let end = start.saturating_add(count - 1);
        let cleared: Vec<(RegisterKind, u16)> = self
            .registers
            .range((kind, start)..=(kind, end))
            .map(|(&k, _)| k)
            .collect();
        for k in cleared {
            if let Some(f) = self.registers.remove(&k) {
                self.generation += 1;
                tracing::info!(device = %self.device, register = ?k.0, address = k.1,
                    failures = f.failures, "register readable again");
            }
        }
    }

    pub fn mark_point(&mut self, points: &[Point], i: usize, error: String) {
        let retry_at = Instant::now() + self.retry;
        match self.points.get_mut(&i) {
            Some(f) => f.again(error, retry_at),
            None => {
                // Logged once; retries that fail again are only counted.
                tracing::warn!(device = %self.device, point = %points[i].name, %error,
                    retry_in_s = self.retry.as_secs(), "device refuses this point; skipping it");
                metrics::counter!(crate::metric_names::EDGE_MODBUS_BAD_POINTS_TOTAL, "device" => self.device.clone())
                    .increment(1);
                self.points.insert(i, Fault::new(error, retry_at));
            }
        }
        self.generation += 1;
    }

    /// A register in a gap between points was refused on its own.
    pub fn mark_register(&mut self, kind: RegisterKind, address: u16, error: String) {
        let retry_at = Instant::now() + self.retry;
        match self.registers.get_mut(&(kind, address)) {
            Some(f) => f.again(error, retry_at),
            None => {
                metrics::counter!(crate::metric_names::EDGE_MODBUS_REFUSED_REGISTERS_TOTAL, "device" => self.device.clone())
                    .increment(1);
                self.new_registers.push((kind, address));
                self.registers
                    .insert((kind, address), Fault::new(error, retry_at));
            }
        }
        self.generation += 1;
    }

    /// One log line per range of registers first refused since the last call
    /// (a device refusing a whole gap would otherwise log every address).
    pub fn log_new_registers(&mut self) {
        if self.new_registers.is_empty() {
            return;
        }
        self.new_registers.sort();
        let mut ranges: Vec<(RegisterKind, u16, u16)> = Vec::new();
        for &(kind, a) in &self.new_registers {
            match ranges.last_mut() {
                Some((k, _, last)) if *k == kind && u32::from(*last) + 1 == u32::from(a) => {
                    *last = a;
                }
                _ => ranges.push((kind, a, a)),
            }
        }
        self.new_registers.clear();
        for (kind, first, last) in ranges {
            let error = self
                .registers
                .get(&(kind, first))
                .map_or("", |f| f.error.as_str());
            tracing::warn!(device = %self.device, register = ?kind, first, last, %error,
                retry_in_s = self.retry.as_secs(),
                "device refuses registers between points; reads are planned around them");
        }
    }

    pub fn bad_points(&self, points: &[Point]) -> Vec<BadPoint> {
        let mut out: Vec<BadPoint> = self
            .points
            .iter()
            .map(|(&i, f)| BadPoint {
                point: points[i].name.clone(),
                error: f.error.clone(),
                since_ms: f.since_ms,
                failures: f.failures,
            })
            .collect();
        out.sort_by(|a, b| a.point.cmp(&b.point));
        out
    }

    /// Refused registers, consecutive addresses of one kind merged into one range.
    pub fn refused_registers(&self) -> Vec<RefusedRegisters> {
        let mut out: Vec<RefusedRegisters> = Vec::new();
        for (&(kind, address), f) in &self.registers {
            match out.last_mut() {
                Some(r) if r.register == kind && u32::from(r.last) + 1 == u32::from(address) => {
                    r.last = address;
                    r.since_ms = r.since_ms.min(f.since_ms);
                    r.failures = r.failures.max(f.failures);
                }
                _ => out.push(RefusedRegisters {
                    register: kind,
                    first: address,
                    last: address,
                    error: f.error.clone(),
                    since_ms: f.since_ms,
                    failures: f.failures,
                }),
            }
        }
        out
    }
}

/// Parts of `[start, start + count)` that none of `reads` covers: the gaps a
/// refused read bridged, which its halves no longer read.
pub fn uncovered(start: u16, count: u16, reads: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut covered: Vec<(u32, u32)> = reads
        .iter()
        .map(|&(s, c)| (u32::from(s), u32::from(s) + u32::from(c)))
        .collect();
    covered.sort();
    let mut out = Vec::new();
    let mut at = u32::from(start);
    let end = u32::from(start) + u32::from(count);
    for (s, e) in covered {
        if s > at && at < end {
            let to = s.min(end);
            out.push((at as u16, (to - at) as u16));
        }
        at = at.max(e);
    }
    if at < end {
        out.push((at as u16, (end - at) as u16));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncovered_finds_the_bridged_gaps() {
        assert_eq!(uncovered(0, 76, &[(0, 10), (10, 66)]), vec![]);
        assert_eq!(
            uncovered(12, 40, &[(12, 2), (52, 0)]),
            vec![(14, 38)],
            "one gap"
        );
        assert_eq!(
            uncovered(0, 20, &[(2, 3), (10, 2)]),
            vec![(0, 2), (5, 5), (12, 8)]
        );
    }

    #[test]
    fn refused_registers_merge_into_ranges_and_clear_on_success() {
        let mut f = Faults::new("d", Duration::from_secs(60));
        f.mark_register(RegisterKind::Input, 33, "x".into());
        f.mark_register(RegisterKind::Input, 32, "x".into());
        f.mark_register(RegisterKind::Holding, 34, "y".into());
        f.mark_register(RegisterKind::Input, 40, "x".into());
        f.mark_register(RegisterKind::Input, 32, "x".into());
        let r = f.refused_registers();
        let spans: Vec<_> = r
            .iter()
            .map(|r| (r.register, r.first, r.last, r.failures))
            .collect();
        assert_eq!(
            spans,
            vec![
                (RegisterKind::Input, 32, 33, 2),
                (RegisterKind::Input, 40, 40, 1),
                (RegisterKind::Holding, 34, 34, 1)
            ]
        );
        let avoided = f.avoided(&[], Instant::now());
        assert_eq!(avoided.len(), 4);
        let before = f.generation;
        f.read_ok(&[], &[], RegisterKind::Input, 30, 5);
        assert!(f.generation > before);
        assert_eq!(f.refused_registers().len(), 2);
        assert!(!f.retry_due(Instant::now()));
        assert!(f.retry_due(Instant::now() + Duration::from_secs(61)));
    }
}
