//! What the local API shows of a run: its state, where it is, its recent
//! events, the values recorded so far and a provisional verdict per
//! criterion from what is known on the gateway.

use super::state::Checkpoint;
use crate::buffer::NewRunEvent;
use qi_proto::v1::RunEventKind;
use qi_protocol::Protocol;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// Events a view keeps (the newest); the hub keeps them all.
const MAX_EVENTS: usize = 200;
/// Points of the latest IV curve a view keeps (evenly thinned beyond): enough
/// for a chart, bounded whatever the template's sweep asks.
const MAX_CURVE_POINTS: usize = 500;

/// The latest IV curve a run swept, for the local page's chart.
#[derive(Debug, Clone, Serialize)]
pub struct CurveView {
    pub label: String,
    pub at: String,
    /// (voltage V, current A), current positive while the module delivers power.
    pub points: Vec<[f64; 2]>,
}

impl CurveView {
    pub fn of(label: &str, curve: &[(f64, f64)]) -> CurveView {
        let step = curve.len().div_ceil(MAX_CURVE_POINTS).max(1);
        let mut points: Vec<[f64; 2]> = curve.iter().step_by(step).map(|(v, i)| [*v, *i]).collect();
        // The last point (the open-circuit end) is kept whatever the step.
        if let Some((v, i)) = curve.last()
            && points.last() != Some(&[*v, *i])
        {
            points.push([*v, *i]);
        }
        CurveView {
            label: label.to_string(),
            at: chrono::Utc::now().to_rfc3339(),
            points,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Paused,
    Completed,
    Aborted,
    Failed,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Completed => "completed",
            RunState::Aborted => "aborted",
            RunState::Failed => "failed",
        }
    }
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Running | RunState::Paused)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub kind: &'static str,
    pub step: String,
    pub message: String,
    pub at: String,
}

impl EventView {
    pub fn of(e: &NewRunEvent) -> EventView {
        EventView {
            kind: kind_name(e.kind),
            step: e.step.clone(),
            message: e.message.clone(),
            at: chrono::DateTime::from_timestamp_micros(e.timestamp_us)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
        }
    }
}

pub fn kind_name(k: RunEventKind) -> &'static str {
    k.name()
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub criterion: String,
    /// "pass", "fail", "no verdict" or "needs the hub".
    pub verdict: String,
    pub explanation: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub id: String,
    pub protocol: String,
    pub protocol_version: String,
    pub bench: String,
    pub sample_id: String,
    pub operator: String,
    pub time_scale: f64,
    pub parameters: BTreeMap<String, f64>,
    pub state: RunState,
    pub started_at: String,
    /// The current step's path and kind (the last one once ended).
    pub step: String,
    pub step_kind: String,
    pub steps_done: u64,
    pub executed_steps: u64,
    /// Simulated seconds (wall seconds x time_scale), pauses not counted.
    pub elapsed_s: f64,
    pub message: Option<String>,
    pub paused_by: Option<String>,
    pub values: BTreeMap<String, f64>,
    pub events: VecDeque<EventView>,
    /// The latest IV curve of this process's run (none after a restart).
    pub latest_iv: Option<CurveView>,
}

impl RunView {
    pub fn new(cp: &Checkpoint, p: &Protocol) -> RunView {
        let mut v = RunView {
            id: cp.run_id.clone(),
            protocol: cp.protocol_id.clone(),
            protocol_version: cp.protocol_version.clone(),
            bench: cp.bench.id.clone(),
            sample_id: cp.sample_id.clone(),
            operator: cp.operator.clone(),
            time_scale: cp.time_scale,
            parameters: cp.parameters.clone(),
            state: RunState::Running,
            started_at: chrono::DateTime::from_timestamp_micros(cp.started_us)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            step: String::new(),
            step_kind: String::new(),
            steps_done: 0,
            executed_steps: p.executed_steps(),
            elapsed_s: 0.0,
            message: None,
            paused_by: None,
            values: BTreeMap::new(),
            events: VecDeque::new(),
            latest_iv: None,
        };
        v.update_from(cp, p);
        v
    }

    pub fn update_from(&mut self, cp: &Checkpoint, p: &Protocol) {
        self.step = cp.cursor.path();
        self.step_kind = cp
            .cursor
            .step(p)
            .map(|s| s.kind().to_string())
            .unwrap_or_default();
        self.steps_done = cp.steps_done;
        self.elapsed_s = cp.run_elapsed_s;
        self.paused_by = cp.paused_by.clone();
        if self.state.is_active() {
            self.state = if cp.paused_by.is_some() {
                RunState::Paused
            } else {
                RunState::Running
            };
        }
        self.values = cp.known_values();
        for k in cp.parameters.keys() {
            self.values.remove(k);
        }
    }

    pub fn push_event(&mut self, e: EventView) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }
}

/// Each criterion's provisional verdict from the values known here.
pub fn verdicts(
    p: &Protocol,
    values: &BTreeMap<String, f64>,
    params: &BTreeMap<String, f64>,
) -> Vec<Verdict> {
    let mut all = params.clone();
    all.extend(values.iter().map(|(k, v)| (k.clone(), *v)));
    p.evaluate_criteria(&all)
        .into_iter()
        .zip(&p.criteria)
        .map(|(r, c)| {
            let needs_hub = c.parsed.as_ref().is_some_and(|e| {
                e.names()
                    .iter()
                    .any(|n| n.starts_with("before.") || n.starts_with("after."))
            });
            let verdict = if needs_hub {
                "needs the hub".to_string()
            } else {
                match &r.outcome {
                    Ok(x) if x.verdict => "pass".into(),
                    Ok(_) => "fail".into(),
                    Err(_) => "no verdict".into(),
                }
            };
            Verdict {
                criterion: r.id.clone(),
                verdict,
                explanation: r.to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::CurveView;

    #[test]
    fn a_long_curve_is_thinned_and_keeps_both_ends() {
        let curve: Vec<(f64, f64)> = (0..2001).map(|k| (k as f64 * 0.01, 10.0)).collect();
        let c = CurveView::of("stc", &curve);
        assert!(c.points.len() <= 502, "{}", c.points.len());
        assert_eq!(c.points.first(), Some(&[0.0, 10.0]));
        assert_eq!(c.points.last(), Some(&[20.0, 10.0]));
        let short = CurveView::of("stc", &curve[..10]);
        assert_eq!(short.points.len(), 10);
    }
}
