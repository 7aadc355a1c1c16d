//! A rule's condition over the readings of its metric, one reading at a
//! time: no database, no clock but the readings' own times (and, for stale
//! data, the hub's clock given by the caller).

use super::rules::{Condition, Detector};
use crate::analytics::math;
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::time::Instant;

/// What a reading (or the passing of time) does to the alarm.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Raise (if none is active), with what shows why.
    Raise(serde_json::Value),
    /// Clear the active alarm, with what shows why.
    Clear(serde_json::Value),
    /// Nothing changes.
    Hold,
}

/// Per-rule memory between readings.
#[derive(Debug)]
pub struct State {
    pub condition: Condition,
    /// Whether an alarm of the rule is active (raised and not cleared).
    pub active: bool,
    /// Reading time the value first went beyond the threshold (for_s).
    beyond_since: Option<DateTime<Utc>>,
    last: Option<(DateTime<Utc>, f64)>,
    window: VecDeque<f64>,
    /// When the last reading arrived at the hub (stale data).
    pub last_arrival: Instant,
}

impl State {
    pub fn new(condition: Condition, active: bool, last_arrival: Instant) -> State {
        State {
            condition,
            active,
            beyond_since: None,
            last: None,
            window: VecDeque::new(),
            last_arrival,
        }
    }

    /// A reading of the rule's metric arrived.
    pub fn reading(&mut self, ts: DateTime<Utc>, value: f64, now: Instant) -> Verdict {
        self.last_arrival = now;
        let prev = self.last.replace((ts, value));
        match self.condition.clone() {
            Condition::Threshold {
                above,
                threshold,
                hysteresis,
                for_s,
            } => {
                let beyond = if above {
                    value > threshold
                } else {
                    value < threshold
                };
                let back = if above {
                    value < threshold - hysteresis
                } else {
                    value > threshold + hysteresis
                };
                let detail = serde_json::json!({"value": value, "threshold": threshold,
                    "hysteresis": hysteresis, "ts": ts});
                if !beyond {
                    self.beyond_since = None;
                }
                if self.active {
                    if back {
                        Verdict::Clear(detail)
                    } else {
                        Verdict::Hold
                    }
                } else if beyond {
                    let since = *self.beyond_since.get_or_insert(ts);
                    let held = (ts - since).as_seconds_f64();
                    if held >= for_s {
                        Verdict::Raise(detail)
                    } else {
                        Verdict::Hold
                    }
                } else {
                    Verdict::Hold
                }
            }
            Condition::RateOfChange { per_s } => match prev {
                Some((pts, pv)) if ts > pts => {
                    let rate = (value - pv) / (ts - pts).as_seconds_f64();
                    let detail = serde_json::json!({"value": value, "previous": pv,
                        "rate_per_s": rate, "limit_per_s": per_s, "ts": ts});
                    match (self.active, rate.abs() > per_s) {
                        (false, true) => Verdict::Raise(detail),
                        (true, false) => Verdict::Clear(detail),
                        _ => Verdict::Hold,
                    }
                }
                _ => Verdict::Hold,
            },
            Condition::Stale { .. } => {
                if self.active {
                    Verdict::Clear(serde_json::json!({"value": value, "ts": ts}))
                } else {
                    Verdict::Hold
                }
            }
            Condition::Anomaly {
                detector,
                window,
                z,
            } => {
                let verdict = if self.window.len() == window {
                    let mut values: Vec<f64> = self.window.iter().copied().collect();
                    values.push(value);
                    let found = match detector {
                        Detector::Zscore => math::rolling_zscore(&values, window, z),
                        Detector::Ewma => math::ewma(&values, 0.3, z, window / 2),
                    };
                    let hit = found.into_iter().find(|a| a.index == window);
                    match (self.active, hit) {
                        (false, Some(a)) => Verdict::Raise(serde_json::json!({"value": value,
                            "score": a.score, "expected": a.expected, "ts": ts})),
                        (true, None) => {
                            Verdict::Clear(serde_json::json!({"value": value, "ts": ts}))
                        }
                        _ => Verdict::Hold,
                    }
                } else {
                    Verdict::Hold
                };
                if self.window.len() == window {
                    self.window.pop_front();
                }
                self.window.push_back(value);
                verdict
            }
        }
    }

    /// The hub's clock ticked: stale-data rules raise when nothing arrived.
    pub fn tick(&self, now: Instant) -> Verdict {
        match self.condition {
            Condition::Stale { stale_s } if !self.active => {
                let quiet = now
                    .saturating_duration_since(self.last_arrival)
                    .as_secs_f64();
                if quiet >= stale_s {
                    Verdict::Raise(serde_json::json!({"quiet_s": quiet, "stale_s": stale_s,
                        "last_ts": self.last.map(|l| l.0)}))
                } else {
                    Verdict::Hold
                }
            }
            _ => Verdict::Hold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    /// Applies verdicts as the evaluator does; returns the changes.
    fn run(st: &mut State, values: &[(i64, f64)]) -> Vec<&'static str> {
        let now = Instant::now();
        let mut out = Vec::new();
        for &(t, v) in values {
            match st.reading(at(t), v, now) {
                Verdict::Raise(_) => {
                    st.active = true;
                    out.push("raise")
                }
                Verdict::Clear(_) => {
                    st.active = false;
                    out.push("clear")
                }
                Verdict::Hold => {}
            }
        }
        out
    }

    #[test]
    fn a_threshold_with_hysteresis_raises_once_and_clears_once() {
        let c = Condition::Threshold {
            above: true,
            threshold: 10.0,
            hysteresis: 2.0,
            for_s: 0.0,
        };
        let mut st = State::new(c, false, Instant::now());
        // Chatter around the threshold inside the hysteresis band: one alarm.
        let v = [
            (0, 5.0),
            (1, 11.0),
            (2, 9.0),
            (3, 10.5),
            (4, 8.5),
            (5, 7.9),
            (6, 9.0),
        ];
        assert_eq!(run(&mut st, &v), ["raise", "clear"]);
    }

    #[test]
    fn a_minimum_duration_ignores_short_excursions() {
        let c = Condition::Threshold {
            above: false,
            threshold: 0.0,
            hysteresis: 0.0,
            for_s: 3.0,
        };
        let mut st = State::new(c, false, Instant::now());
        let v = [
            (0, -1.0),
            (1, -1.0),
            (2, 1.0),
            (3, -1.0),
            (5, -1.0),
            (6, -1.0),
            (7, 1.0),
        ];
        assert_eq!(run(&mut st, &v), ["raise", "clear"]);
    }

    #[test]
    fn rate_of_change_stale_and_anomaly() {
        let mut st = State::new(
            Condition::RateOfChange { per_s: 1.0 },
            false,
            Instant::now(),
        );
        assert_eq!(
            run(&mut st, &[(0, 0.0), (1, 0.5), (2, 5.0), (3, 9.0), (4, 9.5)]),
            ["raise", "clear"]
        );
        let start = Instant::now();
        let mut st = State::new(Condition::Stale { stale_s: 5.0 }, false, start);
        assert_eq!(st.tick(start + Duration::from_secs(4)), Verdict::Hold);
        assert!(matches!(
            st.tick(start + Duration::from_secs(6)),
            Verdict::Raise(_)
        ));
        st.active = true;
        assert!(matches!(st.reading(at(0), 1.0, start), Verdict::Clear(_)));
        let c = Condition::Anomaly {
            detector: Detector::Zscore,
            window: 10,
            z: 3.0,
        };
        let mut st = State::new(c, false, Instant::now());
        let mut v: Vec<(i64, f64)> = (0..20).map(|i| (i, 10.0 + (i % 3) as f64 * 0.1)).collect();
        v.push((20, 50.0));
        v.push((21, 10.1));
        assert_eq!(run(&mut st, &v), ["raise", "clear"]);
    }
}
