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
