//! The transparency log's read API (docs/transparency-log.md): public, no
//! login, because the point of the log is that anyone can check it. Every
//! answer is bounded: a proof reads O(log n) rows, an entries page at most
//! [`MAX_ENTRIES`] entries and about [`MAX_PAGE_BYTES`] of them.

use super::{ApiError, ApiState};
use crate::translog::sth::{hash_from_hex, log_id, public_key_pem, to_hex};
use crate::translog::{LogError, store};
use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

/// Most entries one `GET /api/v1/log/entries` returns.
pub const MAX_ENTRIES: u64 = 256;
/// An entries page stops once this many bytes of entries are in it.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/log/head", get(head))
        .route("/api/v1/log/key", get(key))
        .route("/api/v1/log/proof/inclusion", get(inclusion))
        .route("/api/v1/log/proof/consistency", get(consistency))
        .route("/api/v1/log/entries", get(entries))
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> ApiError {
        match e {
            LogError::Db(e) => ApiError::unavailable(e),
            LogError::Proof(p) => ApiError::bad_request(p.to_string()),
            e @ LogError::TooLarge { .. } => ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                e.to_string(),
            ),
            e @ (LogError::Corrupt(_) | LogError::Key(_)) => {
                tracing::error!(error = %e, "transparency log failure");
                ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the hub's log",
                )
            }
        }
    }
}

/// A non-negative integer parameter, with a message saying what to send.
fn number(name: &str, v: &Option<String>) -> Result<Option<u64>, ApiError> {
    match v.as_deref() {
        None => Ok(None),
        Some(s) => s.parse::<u64>().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "`{name}` must be a non-negative integer; got {s:?}"
            ))
        }),
    }
}

fn required(name: &str, v: &Option<String>) -> Result<u64, ApiError> {
    number(name, v)?.ok_or_else(|| ApiError::bad_request(format!("`{name}` is required")))
}

fn head_json(s: &ApiState, sth: &crate::translog::SignedTreeHead) -> Value {
    let mut v = json!(sth);
    v["log_id"] = json!(to_hex(&log_id(s.translog.public_key())));
    v
}

async fn head(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let mut conn = s.store.pool().acquire().await?;
    let sth = s.translog.latest(&mut conn).await?;
    Ok(Json(head_json(&s, &sth)))
}

async fn key(State(s): State<ApiState>) -> Json<Value> {
    let k = s.translog.public_key();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Json(json!({
        "algorithm": "Ed25519",
        "log_id": to_hex(&log_id(k)),
        "public_key_pem": public_key_pem(k),
        "jwk": {
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
            "kid": b64.encode(log_id(k)), "x": b64.encode(k),
        },
    }))
}

#[derive(Deserialize)]
struct InclusionParams {
    index: Option<String>,
    leaf_hash: Option<String>,
    tree_size: Option<String>,
}

async fn inclusion(
    State(s): State<ApiState>,
    q: Result<Query<InclusionParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let index = number("index", &q.index)?;
    let wanted = number("tree_size", &q.tree_size)?;
    let mut conn = s.store.pool().acquire().await?;
    // Without a tree size: the latest head, which comes along.
    let (size, sth) = match wanted {
        Some(n) => {
            let have = store::head(&mut conn).await?.tree_size;
            if n == 0 || n > have {
                return Err(ApiError::bad_request(format!(
                    "`tree_size` must be from 1 to the log's size, {have}; got {n}"
                )));
            }
            (n, None)
        }
        None => {
            let sth = s.translog.latest(&mut conn).await?;
            (sth.tree_size, Some(sth))
        }
    };
    let (index, leaf) = match (index, q.leaf_hash.as_deref()) {
        (Some(i), None) => (i, None),
        (None, Some(h)) => {
            let h = hash_from_hex(h).ok_or_else(|| {
                ApiError::bad_request("`leaf_hash` must be 64 hex digits (a SHA-256)")
            })?;
            let i = store::index_of(&mut conn, &h)
                .await?
                .ok_or_else(|| ApiError::not_found("no entry with this leaf hash in the log"))?;
            (i, Some(h))
        }
        _ => {
            return Err(ApiError::bad_request(
                "name the leaf: either `index` or `leaf_hash`",
            ));
        }
    };
    if index >= size {
        return Err(ApiError::bad_request(format!(
            "leaf {index} is not in the tree of size {size}"
        )));
    }
    let path = store::inclusion_proof(&mut conn, index, size).await?;
    let leaf = match leaf {
        Some(h) => h,
        None => store::leaf_hash_at(&mut conn, index).await?,
    };
    metrics::counter!(crate::metric_names::HUB_TRANSLOG_PROOFS_TOTAL, "kind" => "inclusion")
        .increment(1);
    let mut v = json!({
        "leaf_index": index,
        "tree_size": size,
        "leaf_hash": to_hex(&leaf),
        "audit_path": path.iter().map(|h| to_hex(h)).collect::<Vec<_>>(),
    });
    if let Some(sth) = sth {
        v["signed_tree_head"] = head_json(&s, &sth);
    }
    Ok(Json(v))
}

#[derive(Deserialize)]
struct ConsistencyParams {
    first: Option<String>,
    second: Option<String>,
}

async fn consistency(
    State(s): State<ApiState>,
    q: Result<Query<ConsistencyParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let first = required("first", &q.first)?;
    let second = required("second", &q.second)?;
    let mut conn = s.store.pool().acquire().await?;
    let have = store::head(&mut conn).await?.tree_size;
    if first > second || second > have {
        return Err(ApiError::bad_request(format!(
            "need first <= second <= the log's size, {have}; got first {first}, second {second}"
        )));
    }
    let proof = store::consistency_proof(&mut conn, first, second).await?;
    metrics::counter!(crate::metric_names::HUB_TRANSLOG_PROOFS_TOTAL, "kind" => "consistency")
        .increment(1);
    Ok(Json(json!({
        "first": first,
        "second": second,
        "proof": proof.iter().map(|h| to_hex(h)).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
struct EntriesParams {
    start: Option<String>,
    end: Option<String>,
}

async fn entries(
    State(s): State<ApiState>,
    q: Result<Query<EntriesParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let start = required("start", &q.start)?;
    let end = required("end", &q.end)?;
    if start > end || end - start > MAX_ENTRIES {
        return Err(ApiError::bad_request(format!(
            "need start <= end and at most {MAX_ENTRIES} entries (end is exclusive); got start {start}, end {end}"
        )));
    }
    let mut conn = s.store.pool().acquire().await?;
    // Cut at the log's end (also keeps indexes beyond i64 out of SQL).
    let have = store::head(&mut conn).await?.tree_size;
    let rows = if start < have {
        store::entries(&mut conn, start, end.min(have), MAX_PAGE_BYTES).await?
    } else {
        Vec::new()
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let next = rows.last().map_or(start, |r| r.index + 1);
    Ok(Json(json!({
        "start": start,
        // Exclusive; less than asked when the log is shorter or the page full.
        "end": next,
        "entries": rows.iter().map(|r| json!({
            "index": r.index,
            "leaf_hash": to_hex(&r.leaf_hash),
            "entry": b64.encode(&r.entry),
            "appended_at": r.appended_at,
        })).collect::<Vec<_>>(),
    })))
}
