//! The step rules that involve time, as pure functions of simulated
//! seconds, so each is tested with a manual clock: a wait's hold and
//! timeout, a ramp's schedule, and what a device going offline or coming
//! back does to a step.

use super::state::StepProgress;
use qi_protocol::OfflinePolicy;

/// What a wait_until tick decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Continue,
    Done,
    TimedOut,
}

/// Advances a wait by `dt` (already added to `prog.elapsed_s`): the hold
/// grows while the condition holds and restarts when it breaks; the wait is
/// done once it has held for `hold_s`, failed once `timeout_s` has passed.
pub fn wait_tick(
    prog: &mut StepProgress,
    dt: f64,
    holds: bool,
    hold_s: f64,
    timeout_s: f64,
) -> Wait {
    if holds {
        prog.hold_s += dt;
    } else {
        prog.hold_s = 0.0;
    }
    if holds && prog.hold_s >= hold_s {
        Wait::Done
    } else if prog.elapsed_s >= timeout_s {
        Wait::TimedOut
    } else {
        Wait::Continue
    }
}

/// The ramp's setpoint `elapsed_s` after it started at `from`, moving
/// towards `to` at `rate_per_h` (per hour), never past `to`.
pub fn ramp_value(from: f64, to: f64, rate_per_h: f64, elapsed_s: f64) -> f64 {
    let moved = rate_per_h / 3600.0 * elapsed_s;
    if to >= from {
        (from + moved).min(to)
    } else {
        (from - moved).max(to)
    }
}

/// Whether the ramp writes now: its first value, its target, and otherwise
/// at most every `every_s` simulated seconds.
pub fn ramp_due(prog: &StepProgress, value: f64, to: f64, every_s: f64) -> bool {
    match prog.last_write_s {
        None => true,
        Some(at) => value == to || prog.elapsed_s - at >= every_s,
    }
}

/// What a tick does about devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfflineAction {
    Carry,
    Pause(String),
    StayPaused,
    Resume,
    Abort(String),
}

/// `offline`: the first of the bench's devices that is offline now;
/// `paused_by`: the device the step waits for, if paused.
pub fn offline_action(
    policy: OfflinePolicy,
    offline: Option<&str>,
    paused_by: Option<&str>,
) -> OfflineAction {
    match (offline, paused_by) {
        (None, None) => OfflineAction::Carry,
        (None, Some(_)) => OfflineAction::Resume,
        (Some(_), Some(_)) => OfflineAction::StayPaused,
        (Some(d), None) => match policy {
            OfflinePolicy::Pause => OfflineAction::Pause(d.to_string()),
            OfflinePolicy::Abort => OfflineAction::Abort(d.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a wait with a manual clock: `holds(t)` says whether the condition holds at t.
    fn run_wait(dt: f64, hold: f64, timeout: f64, holds: impl Fn(f64) -> bool) -> (Wait, f64) {
        let mut p = StepProgress::default();
        loop {
            p.elapsed_s += dt;
            let h = holds(p.elapsed_s);
            let w = wait_tick(&mut p, dt, h, hold, timeout);
            if w != Wait::Continue {
                return (w, p.elapsed_s);
            }
        }
    }

    #[test]
    fn a_wait_needs_the_condition_to_hold_without_a_break() {
        // Holds from t = 100 s; hold 60 s: done at 160 s.
        assert_eq!(
            run_wait(10.0, 60.0, 1000.0, |t| t > 100.0),
            (Wait::Done, 160.0)
        );
        // A break at 130..140 s restarts the hold.
        let (w, t) = run_wait(10.0, 60.0, 1000.0, |t| {
            t > 100.0 && !(130.0..140.0).contains(&t)
        });
        assert_eq!((w, t), (Wait::Done, 190.0));
        // Never holds: times out.
        assert_eq!(
            run_wait(10.0, 60.0, 300.0, |_| false),
            (Wait::TimedOut, 300.0)
        );
        // Held at the very end counts: the hold wins over the timeout.
        assert_eq!(run_wait(10.0, 20.0, 30.0, |t| t > 0.0), (Wait::Done, 20.0));
    }

    #[test]
    fn a_ramp_moves_at_its_rate_and_stops_at_the_target() {
        // 25 -> 85 Cel at 100 Cel/h: 36 min.
        assert_eq!(ramp_value(25.0, 85.0, 100.0, 0.0), 25.0);
        assert!((ramp_value(25.0, 85.0, 100.0, 1800.0) - 75.0).abs() < 1e-9);
        assert_eq!(ramp_value(25.0, 85.0, 100.0, 2160.0), 85.0);
        assert_eq!(ramp_value(25.0, 85.0, 100.0, 1e6), 85.0);
        assert_eq!(ramp_value(85.0, -40.0, 100.0, 1e6), -40.0);
        assert!((ramp_value(85.0, -40.0, 100.0, 36.0) - 84.0).abs() < 1e-9);
        // The schedule: every 100 s, then the target.
        let mut p = StepProgress::default();
        let mut writes = Vec::new();
        while writes.last() != Some(&85.0) {
            let v = ramp_value(25.0, 85.0, 100.0, p.elapsed_s);
            if ramp_due(&p, v, 85.0, 100.0) {
                writes.push(v);
                p.last_write_s = Some(p.elapsed_s);
            }
            p.elapsed_s += 10.0;
        }
        assert_eq!(writes.len(), 23, "{writes:?}");
        assert!(
            writes
                .windows(2)
                .all(|w| w[1] - w[0] <= 100.0 / 36.0 + 1e-9)
        );
    }

    #[test]
    fn devices_going_away_and_coming_back() {
        use OfflineAction as A;
        use OfflinePolicy as P;
        assert_eq!(offline_action(P::Pause, None, None), A::Carry);
        assert_eq!(
            offline_action(P::Pause, Some("chamber"), None),
            A::Pause("chamber".into())
        );
        assert_eq!(
            offline_action(P::Abort, Some("chamber"), None),
            A::Abort("chamber".into())
        );
        assert_eq!(
            offline_action(P::Pause, Some("chamber"), Some("chamber")),
            A::StayPaused
        );
        assert_eq!(offline_action(P::Pause, None, Some("chamber")), A::Resume);
    }
}
