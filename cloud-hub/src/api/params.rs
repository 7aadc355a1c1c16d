//! Query parameters as the handlers share them: each arrives as text, so a
//! bad value gets the API's own message saying what to change.

use super::ApiError;
use chrono::{DateTime, Utc};

pub fn parse_time(name: &str, v: &Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    match v.as_deref() {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "`{name}` must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z ({e}); got {s:?}"
                ))
            }),
    }
}

pub fn parse_limit(v: &Option<String>, default: u32, max: u32) -> Result<i64, ApiError> {
    match v.as_deref() {
        None => Ok(i64::from(default.min(max))),
        Some(s) => match s.parse::<u32>() {
            Ok(n) if n >= 1 && n <= max => Ok(i64::from(n)),
            _ => Err(ApiError::bad_request(format!(
                "`limit` must be an integer from 1 to {max}; got {s:?}"
            ))),
        },
    }
}

pub fn filter(name: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        // Characters, not bytes: that is what the OpenAPI document's maxLength counts.
        Some(s)
            if s.chars().count() > qi_proto::limits::MAX_ID_LEN
                || s.chars().any(char::is_control) =>
        {
            Err(ApiError::bad_request(format!(
                "`{name}` must be at most {} printable characters",
                qi_proto::limits::MAX_ID_LEN
            )))
        }
        Some(s) => Ok(Some(s)),
    }
}

pub use qi_common::json_fields::present;

/// A JSON body that must be an object. serde's derived structs also take
/// an array (fields by position; `[]` when every field has a default),
/// which no client means and the OpenAPI document refuses.
pub struct JsonObject<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonObject<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(v) = axum::Json::<serde_json::Value>::from_request(req, state).await?;
        if !v.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        serde_json::from_value(v).map(JsonObject).map_err(|e| {
            ApiError::bad_request(format!(
                "Failed to deserialize the JSON body into the target type: {e}"
            ))
        })
    }
}
