//! `/api/v1/protocols`, `/api/v1/benches` and `/api/v1/runs`: the templates
//! offered, the benches, and protocol runs (start, follow, abort). Starting
//! and aborting are audited like device writes.

use super::audit::{self, Event, Origin};
use super::{ApiState, error};
use crate::identity::Session;
use crate::runs::{StartError, StartRequest};
use axum::Extension;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Longest abort reason kept.
const MAX_REASON: usize = 512;

pub(super) async fn protocols(State(s): State<ApiState>) -> Json<Value> {
    let list: Vec<Value> = s
        .runs
        .templates()
        .values()
        .map(|t| {
            let p = &t.protocol;
            json!({
                "id": p.protocol.id,
                "name": p.protocol.name,
                "version": p.protocol.version,
                "standard": p.protocol.standard,
                "description": p.protocol.description,
                "sha256": t.sha256,
                "executed_steps": p.executed_steps(),
                "nominal_duration_s": p.nominal_duration_s(),
                "parameters": p.parameters.iter().map(|q| json!({
                    "name": q.name, "unit": q.unit, "default": q.default,
                    "min": q.min, "max": q.max, "description": q.description,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({"time_scale": s.runs.time_scale(), "protocols": list}))
}

/// The benches, each with the calibration status of the devices it binds
/// (what the hub last said, kept while offline).
pub(super) async fn benches(State(s): State<ApiState>) -> Json<Value> {
    let now = chrono::Utc::now().timestamp_millis();
    let cal = s.runs.calibrations();
    let list: Vec<Value> = s
        .runs
        .benches()
        .iter()
        .map(|b| {
            let mut v = serde_json::to_value(b).unwrap_or_default();
            v["calibration"] = b.devices().iter().map(|d| cal.view(d, now)).collect();
            v
        })
        .collect();
    Json(json!({"benches": list}))
}

/// The `hub` object of a run: what the hub said of it, null until heard.
fn hub(s: &ApiState, id: &str) -> Value {
    s.verdicts.of(id).map(|h| h.view()).unwrap_or(Value::Null)
}

/// The runs of this agent process, then those of earlier ones the hub told
/// of (`known_from: "hub"`), each with `hub`.
pub(super) async fn list(State(s): State<ApiState>) -> Json<Value> {
    let mut runs: Vec<Value> = Vec::new();
    let mut here = std::collections::BTreeSet::new();
    for r in s.runs.list() {
        here.insert(r.id.clone());
        let mut v = serde_json::to_value(&r).unwrap_or_default();
        v["hub"] = hub(&s, &r.id);
        runs.push(v);
    }
    let earlier = s.verdicts.all().into_iter().rev();
    let earlier: Vec<Value> = earlier
        .filter(|h| !here.contains(&h.run_id))
        .map(|h| h.run_view())
        .collect();
    Json(json!({"runs": runs, "earlier_runs": earlier}))
}

pub(super) async fn one(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    match s.runs.get(&id) {
        Some((run, verdicts)) => {
            let mut v = serde_json::to_value(run).unwrap_or_default();
            v["verdicts"] = serde_json::to_value(verdicts).unwrap_or_default();
            v["hub"] = hub(&s, &id);
            Json(v).into_response()
        }
        None if let Some(h) = s.verdicts.of(&id) => Json(h.run_view()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no run {id:?} on this gateway"),
        ),
    }
}

fn refusal(e: &StartError) -> (StatusCode, &'static str) {
    match e {
        StartError::UnknownProtocol(_) | StartError::UnknownBench(_) => {
            (StatusCode::NOT_FOUND, "not_found")
        }
        StartError::BenchBusy { .. } => (StatusCode::CONFLICT, "bench_busy"),
        StartError::SampleBusy { .. } => (StatusCode::CONFLICT, "sample_busy"),
        StartError::BenchUnavailable { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "bench_unavailable")
        }
        StartError::Parameter(_) | StartError::BadSample(_) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "bad_parameter")
        }
        StartError::Binding(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_binding"),
        StartError::Limit(_) => (StatusCode::UNPROCESSABLE_ENTITY, "over_limit"),
        StartError::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage"),
        StartError::Calibration { .. } => (StatusCode::CONFLICT, "calibration"),
    }
}

/// Starts a run (Operator or above).
pub(super) async fn start(
    State(s): State<ApiState>,
    Extension(sess): Extension<Session>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<StartRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "body must be {{\"protocol\": id, \"bench\": id, \"sample_id\": \"sample:...\", \"parameters\": {{name: number}}}}: {}",
                    e.body_text()
                ),
            );
        }
    };
    let target = format!("bench:{}/protocol:{}", req.bench, req.protocol);
    let after = json!({"protocol": req.protocol, "bench": req.bench, "sample_id": req.sample_id, "parameters": req.parameters});
    let result = s.runs.start(req, &sess.user).await;
    let (action, outcome) = match &result {
        Ok(_) => ("run_start", "ok".to_string()),
        Err(e) => ("run_start_refused", e.to_string()),
    };
    let mut after = after;
    if let Ok(run) = &result {
        after["run_id"] = json!(run.id);
    }
    audit::record(
        &s.buffer,
        &Origin::of(peer, &headers),
        Event {
            actor: &sess.user,
            action,
            target,
            outcome: &outcome,
            before: None,
            after: Some(after),
        },
    )
    .await;
    match result {
        Ok(run) => (StatusCode::CREATED, Json(run)).into_response(),
        Err(e) => {
            let (status, kind) = refusal(&e);
            error(status, kind, e.to_string())
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AbortRequest {
    #[serde(default)]
    reason: String,
}

/// Aborts a run (Operator or above): the safe state, then ABORTED.
pub(super) async fn abort(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Extension(sess): Extension<Session>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<AbortRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("body must be {{\"reason\": \"...\"}}: {}", e.body_text()),
            );
        }
    };
    let reason: String = req
        .reason
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON)
        .collect();
    let message = if reason.trim().is_empty() {
        format!("aborted by {}", sess.user)
    } else {
        format!("aborted by {}: {reason}", sess.user)
    };
    let ok = s.runs.abort(&id, message.clone());
    audit::record(
        &s.buffer,
        &Origin::of(peer, &headers),
        Event {
            actor: &sess.user,
            action: if ok { "run_abort" } else { "run_abort_refused" },
            target: format!("run:{id}"),
            outcome: if ok { "ok" } else { "not_running" },
            before: None,
            after: Some(json!({"reason": reason})),
        },
    )
    .await;
    if ok {
        (
            StatusCode::ACCEPTED,
            Json(json!({"ok": true, "run": id, "message": message})),
        )
            .into_response()
    } else {
        error(
            StatusCode::CONFLICT,
            "not_running",
            format!("no running run {id:?} on this gateway"),
        )
    }
}
