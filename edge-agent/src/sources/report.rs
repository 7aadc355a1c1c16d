//! Report by exception: a point is emitted when it moved by more than its
//! dead-band, or when its max report interval has passed since the last emit.

use device_profile::{Deadband, Point};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Without an explicit `max_report_interval_ms`, a point with a dead-band is
/// still reported at least once a minute, so the hub can tell "steady" from "dead".
const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Reporter {
    last: HashMap<usize, (f64, Instant)>,
}

impl Reporter {
    /// Decides whether point `idx` with `value` at `now` is emitted, and remembers it if so.
    pub fn should_report(&mut self, idx: usize, p: &Point, value: f64, now: Instant) -> bool {
        let max_interval = p
            .max_report_interval_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_MAX_INTERVAL);
        let emit = match (self.last.get(&idx), p.deadband) {
            (None, _) => true,
            (Some(_), None) if p.max_report_interval_ms.is_none() => true,
            (Some(&(last, at)), band) => {
                let moved = (value - last).abs();
                let beyond = match band {
                    None => false,
                    Some(Deadband::Absolute(a)) => moved > a,
                    Some(Deadband::Percent(pct)) => moved > last.abs() * pct / 100.0,
                };
                beyond || now.duration_since(at) >= max_interval
            }
        };
        if emit {
            self.last.insert(idx, (value, now));
        }
        emit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(extra: &str) -> Point {
        toml::from_str(&format!("name = \"p\"\nquery = \"X?\"\n{extra}")).unwrap()
    }

    #[test]
    fn without_deadband_everything_is_reported() {
        let p = point("");
        let mut r = Reporter::default();
        let t = Instant::now();
        assert!(r.should_report(0, &p, 1.0, t));
        assert!(r.should_report(0, &p, 1.0, t));
    }

    #[test]
    fn absolute_deadband_and_max_interval() {
        let p = point("deadband = { absolute = 0.5 }\nmax_report_interval_ms = 1000");
        let mut r = Reporter::default();
        let t = Instant::now();
        assert!(r.should_report(0, &p, 10.0, t));
        assert!(!r.should_report(0, &p, 10.4, t + Duration::from_millis(10)));
        assert!(!r.should_report(0, &p, 9.6, t + Duration::from_millis(20)));
        assert!(r.should_report(0, &p, 10.6, t + Duration::from_millis(30)));
        // Steady, but the max interval since the last emit (at +30 ms) passed.
        assert!(!r.should_report(0, &p, 10.6, t + Duration::from_millis(900)));
        assert!(r.should_report(0, &p, 10.6, t + Duration::from_millis(1031)));
    }

    #[test]
    fn percent_deadband_is_relative_to_last_reported() {
        let p = point("deadband = { percent = 1.0 }");
        let mut r = Reporter::default();
        let t = Instant::now();
        assert!(r.should_report(0, &p, 230.0, t));
        assert!(!r.should_report(0, &p, 232.0, t)); // 0.87 %
        assert!(r.should_report(0, &p, 232.4, t)); // 1.04 %
        assert!(!r.should_report(0, &p, 230.1, t + DEFAULT_MAX_INTERVAL / 2));
        assert!(r.should_report(0, &p, 232.4, t + DEFAULT_MAX_INTERVAL));
    }
}
