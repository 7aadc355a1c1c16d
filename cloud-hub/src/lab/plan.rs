//! Where a sample stands against its service request: the requested
//! protocols in order, each matched to the sample's run of that protocol
//! (oldest first, each run used once), so a person sees what is done, what
//! failed and what is due next.

use serde::Serialize;

/// A run of the sample, as the plan needs it.
#[derive(Debug, Clone)]
pub struct DoneRun {
    pub protocol_id: String,
    pub run_id: String,
    pub state: String,
    pub verdict: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanItem {
    pub protocol: String,
    /// None: not run yet.
    pub run_id: Option<String>,
    pub state: Option<String>,
    pub verdict: Option<String>,
    /// The first requested protocol without a completed run.
    pub due: bool,
}

/// `runs` oldest first. Aborted and failed runs do not fill a place (the
/// protocol is run again); running ones do.
pub fn plan(requested: &[String], runs: &[DoneRun]) -> Vec<PlanItem> {
    let mut used = vec![false; runs.len()];
    let mut due_marked = false;
    requested
        .iter()
        .map(|p| {
            let found = runs.iter().enumerate().find(|(i, r)| {
                !used[*i]
                    && &r.protocol_id == p
                    && matches!(r.state.as_str(), "completed" | "running" | "paused")
            });
            let mut item = PlanItem {
                protocol: p.clone(),
                run_id: None,
                state: None,
                verdict: None,
                due: false,
            };
            if let Some((i, r)) = found {
                used[i] = true;
                item.run_id = Some(r.run_id.clone());
                item.state = Some(r.state.clone());
                item.verdict = r.verdict.clone();
            }
            if !due_marked && item.state.as_deref() != Some("completed") {
                item.due = true;
                due_marked = true;
            }
            item
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: &str, id: &str, state: &str) -> DoneRun {
        DoneRun {
            protocol_id: p.into(),
            run_id: id.into(),
            state: state.into(),
            verdict: None,
        }
    }

    #[test]
    fn requested_protocols_are_matched_in_order_and_the_next_is_due() {
        let req: Vec<String> = ["stc-power", "tc200", "stc-power"].map(String::from).into();
        let p = plan(&req, &[]);
        assert_eq!(p.iter().filter(|i| i.due).count(), 1);
        assert!(p[0].due && p.iter().all(|i| i.run_id.is_none()));

        let runs = [
            run("stc-power", "r1", "completed"),
            run("tc200", "r2", "aborted"),
            run("tc200", "r3", "running"),
        ];
        let p = plan(&req, &runs);
        assert_eq!(p[0].run_id.as_deref(), Some("r1"));
        assert_eq!(
            p[1].run_id.as_deref(),
            Some("r3"),
            "an aborted run fills no place"
        );
        assert!(p[1].due, "running is not done yet");
        assert_eq!(p[2].run_id, None, "one STC run serves one place");
        assert!(!p[2].due);
    }
}
