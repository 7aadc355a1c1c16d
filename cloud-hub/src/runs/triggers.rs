//! Which runs one gateway stream's acknowledged batch sends to evaluation.
//!
//! The ingest writes up to two batches of a stream at once, so the batch
//! holding a run's COMPLETED event can commit before the batch holding its
//! last readings. Evaluations are therefore started when a batch is
//! acknowledged (acks go out in arrival order: every earlier batch is in),
//! never when it commits. A batch that brings new readings to a run already
//! completed (the redelivery of a batch whose write failed after the next one
//! had committed) evaluates it again, since the first evaluation saw too
//! little; when that happens inside one stream, the COMPLETED batch acked
//! right after needs no second evaluation.

use crate::storage::run_events::RunsStored;
use std::collections::BTreeSet;

/// Runs evaluated for late readings in this stream, whose COMPLETED batch
/// may still be acknowledged after them. Bounded: a stream forgets them
/// beyond this many (at worst a run is evaluated twice, which is harmless).
const REMEMBERED: usize = 1024;

/// One stream's bookkeeping (owned by its ingest loop).
#[derive(Debug, Default)]
pub struct EvaluationTriggers {
    late_evaluated: BTreeSet<String>,
}

impl EvaluationTriggers {
    /// The runs to evaluate now that this batch and all before it are
    /// committed.
    pub fn after_commit(&mut self, runs: RunsStored) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for run in runs.late {
            if self.late_evaluated.len() >= REMEMBERED {
                self.late_evaluated.clear();
            }
            self.late_evaluated.insert(run.clone());
            out.push(run);
        }
        for run in runs.completed {
            // Evaluated already, after both this batch and its readings
            // were committed.
            if !self.late_evaluated.remove(&run) && !out.contains(&run) {
                out.push(run);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(completed: &[&str], late: &[&str]) -> RunsStored {
        RunsStored {
            events: 0,
            completed: completed.iter().map(|s| s.to_string()).collect(),
            late: late.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_completed_run_is_evaluated_when_its_batch_is_acknowledged() {
        let mut t = EvaluationTriggers::default();
        assert!(t.after_commit(stored(&[], &[])).is_empty());
        assert_eq!(t.after_commit(stored(&["r1"], &[])), vec!["r1"]);
    }

    #[test]
    fn readings_committed_after_the_completed_batch_evaluate_once() {
        // Pipelined: the COMPLETED batch committed first, the readings' batch
        // saw the run completed; acks in order: readings, then COMPLETED.
        let mut t = EvaluationTriggers::default();
        assert_eq!(t.after_commit(stored(&[], &["r1"])), vec!["r1"]);
        assert!(t.after_commit(stored(&["r1"], &[])).is_empty());
        // A later completion of the same id (not possible, but) is not lost.
        assert_eq!(t.after_commit(stored(&["r1"], &[])), vec!["r1"]);
    }

    #[test]
    fn a_redelivered_batch_with_late_readings_evaluates_again() {
        // New stream after a broken one: no COMPLETED follows.
        let mut t = EvaluationTriggers::default();
        assert_eq!(t.after_commit(stored(&[], &["r2", "r3"])), vec!["r2", "r3"]);
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut t = EvaluationTriggers::default();
        for i in 0..(REMEMBERED * 3) {
            t.after_commit(stored(&[], &[&format!("r{i}")]));
        }
        assert!(t.late_evaluated.len() <= REMEMBERED);
    }
}
