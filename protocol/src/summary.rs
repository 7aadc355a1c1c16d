//! The nominal plan of a validated protocol: how many steps and how long.

use crate::model::{Protocol, Quantity, Step};
use crate::units::{self, DurationSpec};
use std::collections::BTreeMap;

impl Protocol {
    fn resolve(&self, q: &Quantity) -> Option<f64> {
        match q {
            Quantity::Number(n) => Some(*n),
            Quantity::Parameter(name) => self
                .parameters
                .iter()
                .find(|p| &p.name == name)
                .and_then(|p| p.default),
        }
    }

    fn seconds(&self, s: &str) -> f64 {
        match units::parse_duration(s) {
            Ok(DurationSpec::Seconds(s)) => s,
            Ok(DurationSpec::Parameter(name)) => self
                .parameters
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| Some(p.default? * units::seconds_per(&p.unit)?))
                .unwrap_or(0.0),
            Err(_) => 0.0,
        }
    }

    /// Steps executed once the repeats are unrolled.
    pub fn executed_steps(&self) -> u64 {
        fn count(steps: &[Step]) -> u64 {
            steps
                .iter()
                .map(|s| match s {
                    Step::Repeat {
                        count: n, steps, ..
                    } => 1 + u64::from(*n) * count(steps),
                    _ => 1,
                })
                .sum()
        }
        count(&self.steps)
    }

    /// The shortest the run can take with the parameters' defaults: ramps at
    /// their rate (from the previous setpoint of the same point; the first
    /// ramp of a point starts from an unknown value and counts as 0), dwells,
    /// holds and bias durations. Waiting for a chamber to settle, measuring
    /// and sweeping count as 0.
    pub fn nominal_duration_s(&self) -> f64 {
        let mut last = BTreeMap::new();
        self.walk(&self.steps, &mut last)
    }

    fn walk<'a>(&'a self, steps: &'a [Step], last: &mut BTreeMap<&'a str, f64>) -> f64 {
        let mut total = 0.0;
        for s in steps {
            total += match s {
                Step::Setpoint {
                    point,
                    value,
                    ramp_per_h,
                    ..
                } => {
                    let to = self.resolve(value);
                    let from = last.get(point.as_str()).copied();
                    let rate = ramp_per_h.as_ref().and_then(|r| self.resolve(r));
                    if let Some(to) = to {
                        last.insert(point, to);
                    }
                    match (from, to, rate) {
                        (Some(a), Some(b), Some(r)) if r > 0.0 => (b - a).abs() / r * 3600.0,
                        _ => 0.0,
                    }
                }
                Step::WaitUntil { hold, .. } => self.seconds(hold),
                Step::Dwell { duration, .. } | Step::ApplyBias { duration, .. } => {
                    self.seconds(duration)
                }
                Step::Repeat { count, steps, .. } => {
                    // The first pass ramps from whatever came before; later passes
                    // from the end of the previous one, the same every time.
                    let first = self.walk(steps, last);
                    let rest = if *count > 1 {
                        self.walk(steps, last)
                    } else {
                        0.0
                    };
                    first + f64::from(count.saturating_sub(1)) * rest
                }
                Step::Measure { .. } | Step::IvSweep { .. } => 0.0,
            };
        }
        total
    }

    /// One line for `protocols check`.
    pub fn summary(&self) -> String {
        let hours = self.nominal_duration_s() / 3600.0;
        let approval = self.criteria.iter().filter(|c| c.approval_required).count();
        format!(
            "{} ({} v{}, {}): {} steps ({} executed), nominal duration {:.1} h, {} parameters, {} {}{}",
            self.protocol.name,
            self.protocol.id,
            self.protocol.version,
            self.protocol.standard,
            self.steps.len(),
            self.executed_steps(),
            hours,
            self.parameters.len(),
            self.criteria.len(),
            if self.criteria.len() == 1 {
                "criterion"
            } else {
                "criteria"
            },
            if approval > 0 {
                format!(" ({approval} need approval)")
            } else {
                String::new()
            }
        )
    }
}
