//! A run's PDF: template, parameters, bench, operator, the steps and the
//! event timeline, the latest evaluation with each criterion's
//! explanation and the approval it stands under, the IV curve and the
//! chamber profile.

use super::certificate::num;
use super::data::{RunCharts, StepEvent};
use super::figures;
use super::layout::{Column, Doc};
use crate::runs::RunRow;
use crate::runs::evaluation::Evaluation;
use crate::runs::query::StepRow;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// Everything the run's report shows.
pub struct RunReport {
    pub run: RunRow,
    pub steps: Vec<StepRow>,
    pub events: Vec<StepEvent>,
    /// More events than [`super::MAX_EVENTS`]: only the first are listed.
    pub events_truncated: bool,
    pub evaluation: Option<Evaluation>,
    pub charts: RunCharts,
}

fn t(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "-".into(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

fn or_dash(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "-".into())
}

fn str_of(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub fn render(r: &RunReport) -> Vec<u8> {
    let run = &r.run;
    let mut d = Doc::new(
        &format!("Protocol run {}", run.run_id),
        &format!("run {} - rendered from the hub's records", run.run_id),
    );
    let protocol = format!(
        "{} {}",
        or_dash(&run.protocol_id),
        run.protocol_version.clone().unwrap_or_default()
    );
    d.title(&format!("Protocol run: {protocol}"));
    let scale = run.time_scale.unwrap_or(1.0);
    if scale != 1.0 {
        d.warning(&format!(
            "SIMULATED: this run ran {}x faster than real time (time_scale != 1). Its results are \
             NOT a real test of the item.",
            num(scale)
        ));
    }
    let params = run
        .parameters
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    d.pairs(&[
        ("Run id", run.run_id.clone()),
        ("Protocol", protocol.clone()),
        ("Template SHA-256", or_dash(&run.template_sha256)),
        ("State", run.state.clone()),
        ("Sample", or_dash(&run.sample_id)),
        (
            "Bench, gateway",
            format!("{} on {}", or_dash(&run.bench_id), run.gateway_id),
        ),
        ("Operator", or_dash(&run.operator)),
        ("Time scale", num(scale)),
        ("Started", t(run.started_at)),
        ("Ended", t(run.ended_at)),
        (
            "Parameters",
            if params.is_empty() {
                "-".into()
            } else {
                params
            },
        ),
        ("Last message", or_dash(&run.last_message)),
    ]);
    evaluation(&mut d, r.evaluation.as_ref());
    if let Some(iv) = &r.charts.iv {
        figures::iv(&mut d, iv);
    }
    if let Some(p) = &r.charts.chamber {
        figures::chamber(&mut d, p);
    }
    d.heading("Steps");
    let steps: Vec<Vec<String>> = r
        .steps
        .iter()
        .map(|s| vec![s.step.clone(), t(s.started_at), t(s.finished_at)])
        .collect();
    d.table(
        &[
            Column {
                title: "Step",
                share: 1.0,
            },
            Column {
                title: "Started",
                share: 2.0,
            },
            Column {
                title: "Finished",
                share: 2.0,
            },
        ],
        &steps,
    );
    d.heading("Event timeline");
    if r.events_truncated {
        d.paragraph(&format!(
            "Only the first {} events are listed: GET /api/v1/runs/{}/events has them all.",
            super::MAX_EVENTS,
            run.run_id
        ));
    }
    let events: Vec<Vec<String>> = r
        .events
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                t(Some(e.ts)),
                e.kind.clone(),
                e.step.clone(),
                e.message.clone(),
            ]
        })
        .collect();
    d.table(
        &[
            Column {
                title: "Seq",
                share: 0.6,
            },
            Column {
                title: "Time",
                share: 1.6,
            },
            Column {
                title: "Event",
                share: 1.2,
            },
            Column {
                title: "Step",
                share: 0.8,
            },
            Column {
                title: "Message",
                share: 2.8,
            },
        ],
        &events,
    );
    d.finish()
}

fn evaluation(d: &mut Doc, e: Option<&Evaluation>) {
    d.heading("Evaluation");
    let Some(e) = e else {
        d.paragraph("Not evaluated (yet): a run is evaluated when it has completed.");
        return;
    };
    let mut rows = vec![
        (
            "Verdict",
            format!(
                "{} (computed {}, evaluation {})",
                e.final_verdict.to_uppercase(),
                e.computed,
                e.evaluation_id
            ),
        ),
        (
            "Evaluated",
            format!(
                "{} by {} ({})",
                t(Some(e.evaluated_at)),
                e.evaluated_by,
                e.trigger
            ),
        ),
    ];
    match &e.approval {
        Some(a) => rows.push((
            "Approval",
            format!(
                "{} by {} at {}: {}",
                str_of(a, "decision"),
                str_of(a, "decided_by"),
                str_of(a, "decided_at"),
                str_of(a, "comment")
            ),
        )),
        None if e.verdict == "provisional" => {
            rows.push(("Approval", "awaits an engineer's decision".into()))
        }
        None => {}
    }
    d.pairs(&rows);
    let criteria: Vec<Vec<String>> = e
        .results
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let checks = c["checks"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|k| {
                    format!(
                        "{} = {} {} {} = {}: {}",
                        str_of(k, "computed"),
                        k["value"].as_f64().map_or("-".into(), num),
                        str_of(k, "op"),
                        str_of(k, "limit_expr"),
                        k["limit"].as_f64().map_or("-".into(), num),
                        if k["holds"].as_bool() == Some(true) {
                            "holds"
                        } else {
                            "does not hold"
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            let why = match str_of(c, "missing_because") {
                m if m.is_empty() => str_of(c, "reason"),
                m => format!("{}: {m}", str_of(c, "reason")),
            };
            vec![
                str_of(c, "id"),
                str_of(c, "verdict"),
                format!("{} {}", str_of(c, "description"), str_of(c, "explanation")),
                if checks.is_empty() { why } else { checks },
            ]
        })
        .collect();
    d.table(
        &[
            Column {
                title: "Criterion",
                share: 1.2,
            },
            Column {
                title: "Verdict",
                share: 0.8,
            },
            Column {
                title: "Explanation",
                share: 3.0,
            },
            Column {
                title: "Checks",
                share: 2.4,
            },
        ],
        &criteria,
    );
}
