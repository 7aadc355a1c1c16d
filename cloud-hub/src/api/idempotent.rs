//! `Idempotency-Key` on the lab's creates (`crate::idempotency`): the
//! header read and checked, the key claimed in the create's transaction,
//! the answer kept, and a retry answered with the first answer: the same
//! status (201), body and ETag, marked `Idempotent-Replayed: true`.

use super::ApiError;
use super::twins::with_etag;
use crate::idempotency::{self, Claim, IdempotencyError, Stored};
use crate::identity::Principal;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;

impl From<IdempotencyError> for ApiError {
    fn from(e: IdempotencyError) -> ApiError {
        match e {
            IdempotencyError::BadKey => ApiError::bad_request(e.to_string()),
            // 409, not 422: the body itself is valid; what conflicts is
            // the key's earlier use (a schema-valid request is never 422).
            IdempotencyError::Reused(_) => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                e.to_string(),
            ),
            IdempotencyError::Db(e) => ApiError::unavailable(e),
        }
    }
}

/// The request's key, if it sent one.
pub(super) fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(idempotency::HEADER) else {
        return Ok(None);
    };
    let k = v
        .to_str()
        .map_err(|_| ApiError::from(IdempotencyError::BadKey))?;
    idempotency::check_key(k)?;
    Ok(Some(k.to_string()))
}

/// Claims the key (if any); Some: the answer to send instead of creating.
pub(super) async fn claim<T: Serialize>(
    conn: &mut PgConnection,
    by: &Principal,
    operation: &str,
    key: Option<&str>,
    body: &T,
) -> Result<Option<Response>, ApiError> {
    let Some(key) = key else {
        return Ok(None);
    };
    let sha = idempotency::fingerprint(operation, body);
    match idempotency::claim(conn, &by.id, operation, key, &sha).await? {
        Claim::New => Ok(None),
        Claim::Replay(s) => {
            let status = StatusCode::from_u16(s.status as u16).unwrap_or(StatusCode::OK);
            let mut r = with_etag(s.etag.unwrap_or_default(), status, s.response);
            r.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(Some(r))
        }
    }
}

/// The create's answer (201 with its ETag), kept under the key if any.
pub(super) async fn record(
    conn: &mut PgConnection,
    by: &Principal,
    operation: &str,
    key: Option<&str>,
    etag: String,
    body: Value,
) -> Result<Response, ApiError> {
    if let Some(key) = key {
        let answer = Stored {
            status: StatusCode::CREATED.as_u16() as i16,
            etag: Some(etag.clone()),
            response: body.clone(),
        };
        idempotency::record(conn, &by.id, operation, key, &answer).await?;
    }
    Ok(with_etag(etag, StatusCode::CREATED, body))
}
