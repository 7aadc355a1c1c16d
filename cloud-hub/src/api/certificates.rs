//! Certificates (`crate::certificates`): engineers issue, revoke and
//! supersede; everyone signed in reads them and their documents; anyone,
//! without login, fetches the signed revocation list and asks the public
//! verification endpoint about an id.

use super::guard::ReqOrigin;
use super::params::JsonObject;
use super::{ApiError, ApiState, filter, parse_limit};
use crate::certificates::issue::{self, IssueRequest};
use crate::certificates::{CertError, store};
use crate::identity::Principal;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/certificates", get(list).post(create))
        .route("/api/v1/certificates/revocations", get(revocations))
        .route("/api/v1/certificates/{id}", get(one))
        .route("/api/v1/certificates/{id}/document.xml", get(xml))
        .route("/api/v1/certificates/{id}/document.json", get(json_doc))
        .route("/api/v1/certificates/{id}/document.jws", get(jws_doc))
        .route("/api/v1/certificates/{id}/bundle", get(bundle))
        .route("/api/v1/certificates/{id}/revoke", post(revoke))
        .route("/api/v1/certificates/{id}/supersede", post(supersede))
        .route("/api/v1/verify/{id}", get(verify))
}

impl From<CertError> for ApiError {
    fn from(e: CertError) -> ApiError {
        metrics::counter!(crate::metric_names::HUB_CERTIFICATES_REFUSED_TOTAL, "reason" => e.reason())
            .increment(1);
        match e {
            // 409, not 503: retrying will not help until the hub's
            // config changes, and the hub itself is working.
            CertError::NotConfigured(m) => ApiError::new(StatusCode::CONFLICT, "not_configured", m),
            CertError::NotFound(m) => ApiError::not_found(m),
            CertError::Refused(m) => ApiError::conflict(m),
            CertError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            CertError::Key(e) => {
                tracing::error!(error = %e, "certificate signing failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "signing failed; see the hub's log",
                )
            }
            CertError::Db(e) => ApiError::unavailable(e),
            CertError::Audit(e) => ApiError::unavailable(e),
            CertError::Log(e) => e.into(),
        }
    }
}

/// A certificate id as the hub makes them: `<PREFIX>-<year>-<number>`.
pub(super) fn cert_id(v: &str) -> Result<String, ApiError> {
    let ok = !v.is_empty()
        && v.len() <= crate::certificates::MAX_ID_LEN
        && v.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(v.to_string())
    } else {
        metrics::counter!(crate::metric_names::HUB_CERTIFICATES_REFUSED_TOTAL, "reason" => "bad_id")
            .increment(1);
        Err(ApiError::bad_request(
            "a certificate id is like QI-CERT-2026-000001 (A-Z, 0-9 and -, at most 40)",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    subject: Option<String>,
    service_request: Option<String>,
    state: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

async fn list(
    State(s): State<ApiState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params?;
    // An empty state is not one of the states (the document's enum).
    if p.state.as_deref() == Some("") {
        return Err(ApiError::bad_request("`state` must not be empty"));
    }
    let state = filter("state", p.state)?;
    if let Some(st) = &state
        && !store::STATES.contains(&st.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "`state` must be one of {}",
            store::STATES.join(", ")
        )));
    }
    let before = p
        .before
        .map(|b| {
            b.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::bad_request("`before` must be a non-negative integer (next_before)")
            })
        })
        .transpose()?;
    let f = store::Filter {
        subject: filter("subject", p.subject)?,
        service_request: filter("service_request", p.service_request)?,
        state,
        before,
        limit: parse_limit(&p.limit, 100, s.max_page_size)?,
    };
    let rows = store::list(s.store.pool(), &f).await?;
    let next = (rows.len() as i64 == f.limit)
        .then(|| rows.last().map(|r| r.certificate_no))
        .flatten();
    Ok(Json(
        json!({"count": rows.len(), "certificates": rows, "next_before": next}),
    ))
}

async fn create(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    JsonObject(req): JsonObject<IssueRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let c = issue::issue(s.store.pool(), &s.certificates, &by, &origin, &req, None).await?;
    Ok((StatusCode::CREATED, Json(json!({"certificate": c}))))
}

async fn one(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = cert_id(&id)?;
    let c = store::get(s.store.pool(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no certificate {id}")))?;
    let expired = c.expires_at <= chrono::Utc::now();
    Ok(Json(json!({"certificate": c, "expired": expired})))
}

async fn documents(s: &ApiState, id: &str) -> Result<(Vec<u8>, Vec<u8>, String), ApiError> {
    let id = cert_id(id)?;
    store::documents(s.store.pool(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no certificate {id}")))
}

fn body(content_type: &'static str, id: &str, ext: &str, bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.{ext}\""),
            ),
        ],
        bytes,
    )
        .into_response()
}

async fn xml(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (x, _, _) = documents(&s, &id).await?;
    Ok(body("application/xml", &id, "xml", x))
}

async fn json_doc(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (_, j, _) = documents(&s, &id).await?;
    Ok(body("application/json", &id, "json", j))
}

async fn jws_doc(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (_, _, j) = documents(&s, &id).await?;
    Ok(body("application/jose", &id, "jws", j.into_bytes()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BundleParams {
    tree_size: Option<String>,
}

async fn bundle(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    params: Result<Query<BundleParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let id = cert_id(&id)?;
    let tree_size = p
        .tree_size
        .map(|t| {
            t.parse::<u64>().map_err(|_| {
                ApiError::bad_request(
                    "`tree_size` must be a positive integer (a log head's tree_size)",
                )
            })
        })
        .transpose()?;
    let b = store::bundle(s.store.pool(), &s.translog, &id, tree_size)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no certificate {id}")))?;
    let bytes = serde_json::to_vec_pretty(&b).unwrap_or_default();
    Ok(body("application/json", &id, "bundle.json", bytes))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeBody {
    reason: String,
}

async fn revoke(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    Path(id): Path<String>,
    JsonObject(b): JsonObject<RevokeBody>,
) -> Result<Json<Value>, ApiError> {
    let id = cert_id(&id)?;
    let c = store::revoke(s.store.pool(), &id, &by, &origin, &b.reason).await?;
    Ok(Json(json!({"certificate": c})))
}

async fn supersede(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    Path(id): Path<String>,
    JsonObject(b): JsonObject<store::SupersedeRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = cert_id(&id)?;
    let c = store::supersede(s.store.pool(), &s.certificates, &id, &by, &origin, b).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"certificate": c, "supersedes": id})),
    ))
}

async fn revocations(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let r = store::revocations(s.store.pool(), &s.certificates).await?;
    Ok(Json(json!(r)))
}

async fn verify(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = match cert_id(&id) {
        Ok(id) => id,
        Err(e) => {
            metrics::counter!(crate::metric_names::HUB_CERTIFICATE_VERIFICATIONS_TOTAL, "status" => "bad_id")
                .increment(1);
            return Err(e);
        }
    };
    let v = store::public_status(s.store.pool(), &id).await?;
    let status = match v["status"].as_str() {
        Some("valid") => "valid",
        Some("revoked") => "revoked",
        Some("superseded") => "superseded",
        Some("expired") => "expired",
        _ => "unknown",
    };
    metrics::counter!(crate::metric_names::HUB_CERTIFICATE_VERIFICATIONS_TOTAL, "status" => status)
        .increment(1);
    Ok(Json(v))
}
