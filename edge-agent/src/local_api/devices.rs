//! `/api/v1/devices`: each device's health, and writes to writable points.

use super::audit::{self, Event, Origin};
use super::{ApiState, error};
use crate::identity::Session;
use crate::sources::command::WriteError;
use crate::sources::health::DeviceHealth;
use axum::Extension;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub(super) async fn list(State(s): State<ApiState>) -> Json<Vec<DeviceHealth>> {
    Json(s.fleet.view().snapshot())
}

pub(super) async fn one(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    match s
        .fleet
        .view()
        .health
        .iter()
        .find(|d| d.borrow().device_id == id)
    {
        Some(d) => Json(d.borrow().clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no device {id:?} on this gateway"),
        ),
    }
}

/// The device's firmware profile as the page shows it: the model, and each
/// point with its unit, description, whether it may be written and its priority.
pub(super) async fn points(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let view = s.fleet.view();
    let Some((_, profile)) = view.models.iter().find(|(d, _)| *d == id) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no polled device {id:?} on this gateway"),
        );
    };
    let m = &profile.model;
    let points: Vec<_> = profile
        .points
        .iter()
        .filter(|p| p.report)
        .map(|p| {
            json!({
                "name": p.name, "unit": p.unit, "description": p.description,
                "writable": p.writable,
                "priority": if p.priority == device_profile::Priority::High { "high" } else { "normal" },
            })
        })
        .collect();
    Json(json!({
        "device": id,
        "profile": {"id": m.id, "manufacturer": m.manufacturer, "name": m.name,
                    "device_type": m.device_type, "description": m.description},
        "points": points,
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WriteRequest {
    point: String,
    value: f64,
}

/// Writes one point: only points the profile marks writable, encoded per the
/// profile (type, scale, byte and word order); anything else is refused.
/// Every write that reaches a device is audited (who, what, before, after,
/// outcome).
pub(super) async fn write(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Extension(sess): Extension<Session>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<WriteRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "body must be {{\"point\": \"name\", \"value\": number}}: {}",
                    e.body_text()
                ),
            );
        }
    };
    let view = s.fleet.view();
    let Some(handle) = view.handles.get(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            WriteError::UnknownDevice(id).to_string(),
        );
    };
    // The last polled value, if the point is polled: what the write replaced.
    let before = view
        .health
        .iter()
        .find(|d| d.borrow().device_id == id)
        .and_then(|d| d.borrow().values.get(&req.point).and_then(|v| v.value))
        .map(|v| json!(v));
    let result = handle.write(&req.point, req.value).await;
    // A failed write is its own action, with the error where the new value
    // would be: the trail shows at a glance what changed and what did not.
    let (action, outcome, after) = match &result {
        Ok(()) => ("device_write", "ok".to_string(), json!(req.value)),
        Err(e) => (
            "device_write_failed",
            e.to_string(),
            json!({"requested": req.value, "error": e.to_string()}),
        ),
    };
    tracing::info!(user = %sess.user, device = %id, point = %req.point, value = req.value,
        ok = result.is_ok(), "device write through the local API");
    audit::record(
        &s.buffer,
        &Origin::of(peer, &headers),
        Event {
            actor: &sess.user,
            action,
            target: format!("device:{id}/point:{}", req.point),
            outcome: &outcome,
            before,
            after: Some(after),
        },
    )
    .await;
    match result {
        Ok(()) => Json(json!({"ok": true, "device": id, "point": req.point, "value": req.value}))
            .into_response(),
        Err(e) => {
            let (status, kind) = match &e {
                WriteError::UnknownDevice(_) | WriteError::UnknownPoint(_) => {
                    (StatusCode::NOT_FOUND, "not_found")
                }
                WriteError::NotWritable(_) => (StatusCode::FORBIDDEN, "not_writable"),
                WriteError::BadValue(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_value"),
                WriteError::DeviceError(_) => (StatusCode::BAD_GATEWAY, "device_error"),
                WriteError::Unreachable(_) | WriteError::NotRunning(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "unreachable")
                }
                WriteError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                WriteError::Unsupported(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unsupported"),
            };
            error(status, kind, e.to_string())
        }
    }
}
