//! Commands queued for gateways (setpoint writes, config reloads) and their state.

use super::{ApiError, ApiState, filter};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WritePointBody {
    device: String,
    point: String,
    value: f64,
}

const COMMAND_SHAPE: &str = "body must be {\"write_point\": {\"device\": ..., \"point\": ..., \"value\": number}, \"timeout_s\": 1..86400} or {\"reload_config\": {}}";

/// `{"write_point": {"device": "...", "point": "...", "value": 1.5}, "timeout_s": 60}`
/// or `{"reload_config": {}}`. Read by hand from a JSON object because serde's
/// `Option` would take an explicit `null` for a missing key, and the API
/// refuses what its OpenAPI document does not allow.
pub(super) fn command_action(
    body: serde_json::Value,
) -> Result<(serde_json::Value, Option<u32>), ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("{COMMAND_SHAPE}: {why}"));
    let serde_json::Value::Object(mut b) = body else {
        return Err(bad("not a JSON object"));
    };
    if let Some(k) = b
        .keys()
        .find(|k| !matches!(k.as_str(), "write_point" | "reload_config" | "timeout_s"))
    {
        return Err(bad(&format!("unknown field `{k}`")));
    }
    let timeout = match b.remove("timeout_s") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|t| u32::try_from(t).ok())
                .ok_or_else(|| ApiError::bad_request("`timeout_s` must be 1..=86400"))?,
        ),
    };
    let action = match (b.remove("write_point"), b.remove("reload_config")) {
        (Some(w), None) => {
            let w: WritePointBody =
                serde_json::from_value(w).map_err(|e| bad(&format!("write_point: {e}")))?;
            let device = filter("device", Some(w.device))?
                .ok_or_else(|| ApiError::bad_request("`device` is empty"))?;
            let point = filter("point", Some(w.point))?
                .ok_or_else(|| ApiError::bad_request("`point` is empty"))?;
            if !w.value.is_finite() {
                return Err(ApiError::bad_request("`value` must be a finite number"));
            }
            json!({"write_point": {"device": device, "point": point, "value": w.value}})
        }
        (None, Some(serde_json::Value::Object(o))) if o.is_empty() => json!({"reload_config": {}}),
        (None, Some(_)) => return Err(bad("`reload_config` takes no options: {}")),
        _ => {
            return Err(bad(
                "give exactly one action: `write_point` or `reload_config`",
            ));
        }
    };
    Ok((action, timeout))
}

/// Queues a command for a gateway. It is delivered while the gateway is
/// connected, and its state is kept until the gateway reports a result or the
/// timeout passes (`GET /api/v1/commands/{id}`).
pub(super) async fn create_command(
    State(s): State<ApiState>,
    Extension(by): Extension<crate::identity::Principal>,
    super::guard::ReqOrigin(origin, _): super::guard::ReqOrigin,
    Path(gateway): Path<String>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(b) =
        body.map_err(|e| ApiError::bad_request(format!("{COMMAND_SHAPE}: {}", e.body_text())))?;
    let gateway = filter("gateway", Some(gateway))?
        .ok_or_else(|| ApiError::bad_request("empty gateway id"))?;
    let (action, timeout_s) = command_action(b)?;
    let timeout = timeout_s.unwrap_or(60);
    if !(1..=86_400).contains(&timeout) {
        return Err(ApiError::bad_request("`timeout_s` must be 1..=86400"));
    }
    let deadline = Utc::now() + chrono::Duration::seconds(i64::from(timeout));
    let entry = crate::audit::NewEntry::new(
        by.kind,
        &by.id,
        "command.create",
        format!("gateway:{gateway}"),
    )
    .origin(&origin)
    .after(action.clone());
    let row = s
        .store
        .create_command(&gateway, &action, deadline, entry)
        .await?;
    tracing::info!(command = row.id, %gateway, "command queued");
    Ok((StatusCode::ACCEPTED, Json(json!(row))))
}

pub(super) async fn get_command(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("command id must be an integer; got {id:?}")))?;
    match s.store.command(id).await? {
        Some(row) => Ok(Json(json!(row))),
        None => Err(ApiError::not_found(format!("no command {id}"))),
    }
}
