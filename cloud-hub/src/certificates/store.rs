//! Stored certificates: listings, one certificate with its documents and
//! bundle, revocation and supersession (audited, appended to the log), the
//! signed revocation list, and the public verification answer.

use super::issue::{SUMMARY_COLUMNS, Summary};
use super::verify::{BUNDLE_FORMAT, Bundle, REVOCATIONS_FORMAT, RevocationList, Revoked};
use super::{CertError, Issuer, log};
use crate::audit::{NewEntry, Origin};
use crate::identity::Principal;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

/// Filters of `GET /api/v1/certificates`.
#[derive(Debug, Default)]
pub struct Filter {
    pub subject: Option<String>,
    pub service_request: Option<String>,
    pub state: Option<String>,
    /// Keyset: certificates issued before this one (`next_before`).
    pub before: Option<i64>,
    pub limit: i64,
}

pub const STATES: [&str; 3] = ["valid", "revoked", "superseded"];

pub async fn list(pool: &PgPool, f: &Filter) -> Result<Vec<Summary>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM certificates
          WHERE ($1::text IS NULL OR subject = $1)
            AND ($2::text IS NULL OR service_request = $2)
            AND ($3::text IS NULL OR state = $3)
            AND ($4::bigint IS NULL OR certificate_no < $4)
          ORDER BY certificate_no DESC LIMIT $5"
    )))
    .bind(&f.subject)
    .bind(&f.service_request)
    .bind(&f.state)
    .bind(f.before)
    .bind(f.limit)
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, id: &str) -> Result<Option<Summary>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM certificates WHERE certificate_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The signed XML, the JSON mirror, the JWS.
pub async fn documents(
    pool: &PgPool,
    id: &str,
) -> Result<Option<(Vec<u8>, Vec<u8>, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT document_xml, document_json, document_jws FROM certificates WHERE certificate_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Everything the offline verifier needs in one file; the log's inclusion
/// proof in the tree of `tree_size` leaves (None: the latest signed head).
pub async fn bundle(
    pool: &PgPool,
    signer: &crate::translog::LogSigner,
    id: &str,
    tree_size: Option<u64>,
) -> Result<Option<Bundle>, CertError> {
    /// The signed XML, the JSON mirror, the JWS, the log entry.
    type Stored = (Vec<u8>, Vec<u8>, String, Option<Value>);
    let row: Option<Stored> = sqlx::query_as(
        "SELECT document_xml, document_json, document_jws, log_entry FROM certificates
          WHERE certificate_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some((xml, json, jws, stored)) = row else {
        return Ok(None);
    };
    let log = match stored {
        Some(stored) => {
            let mut conn = pool.acquire().await?;
            if let Some(n) = tree_size {
                let have = crate::translog::store::head(&mut conn).await?.tree_size;
                let index = stored["index"].as_u64().unwrap_or(u64::MAX);
                if n > have || n <= index {
                    return Err(CertError::Invalid(format!(
                        "`tree_size` must be from {} (the certificate's leaf included) to the log's size, {have}; got {n}",
                        index.saturating_add(1)
                    )));
                }
            }
            Some(log::bundle_entry(&mut conn, signer, &stored, tree_size).await?)
        }
        None => None,
    };
    let text = |b: Vec<u8>| {
        String::from_utf8(b)
            .map_err(|_| CertError::Invalid("a stored document is not UTF-8".into()))
    };
    Ok(Some(Bundle {
        format: BUNDLE_FORMAT.into(),
        id: id.into(),
        xml: text(xml)?,
        json: text(json)?,
        jws,
        log,
    }))
}

fn check_reason(reason: &str) -> Result<(), CertError> {
    if reason.trim().is_empty() || !qi_proto::limits::valid_text(reason) {
        return Err(CertError::Invalid(format!(
            "`reason` must say why, at most {} bytes, no control characters",
            qi_proto::limits::MAX_TEXT_LEN
        )));
    }
    Ok(())
}

/// The certificate's state, locked for a change; refused unless valid.
async fn lock_valid(conn: &mut PgConnection, id: &str) -> Result<Summary, CertError> {
    let cur: Option<Summary> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM certificates WHERE certificate_id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let cur = cur.ok_or_else(|| CertError::NotFound(format!("no certificate {id}")))?;
    if cur.state != "valid" {
        return Err(CertError::Refused(format!(
            "certificate {id} is already {}{}",
            cur.state,
            cur.superseded_by
                .as_deref()
                .map(|b| format!(" (by {b})"))
                .unwrap_or_default()
        )));
    }
    Ok(cur)
}

async fn log_revocation(conn: &mut PgConnection, cur: &Summary) -> Result<(), CertError> {
    let leaf = log::LogLeaf {
        event: "revoked".into(),
        certificate_id: cur.certificate_id.clone(),
        document_sha256: cur.document_sha256.clone(),
        at: Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    };
    log::append_to_transparency_log(conn, &leaf).await?;
    Ok(())
}

pub async fn revoke(
    pool: &PgPool,
    id: &str,
    who: &Principal,
    origin: &Origin,
    reason: &str,
) -> Result<Summary, CertError> {
    check_reason(reason)?;
    let mut tx = pool.begin().await?;
    let cur = lock_valid(&mut tx, id).await?;
    sqlx::query(
        "UPDATE certificates SET state = 'revoked', revocation_reason = $2, revoked_by = $3,
                revoked_at = now() WHERE certificate_id = $1",
    )
    .bind(id)
    .bind(reason)
    .bind(&who.id)
    .execute(&mut *tx)
    .await?;
    log_revocation(&mut tx, &cur).await?;
    let entry = NewEntry::new(
        who.kind,
        &who.id,
        "certificate.revoke",
        format!("certificate:{id}"),
    )
    .origin(origin)
    .before(json!({"state": cur.state}))
    .after(json!({"state": "revoked", "reason": reason}));
    crate::audit::append_in(&mut tx, entry).await?;
    revoked_event(&mut tx, &cur, "revoked", reason, &who.id, None).await?;
    let done = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM certificates WHERE certificate_id = $1"
    )))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    crate::runs::verdicts::changed();
    metrics::counter!(crate::metric_names::HUB_CERTIFICATES_REVOKED_TOTAL, "state" => "revoked")
        .increment(1);
    tracing::info!(certificate = %id, by = %who.id, "certificate revoked");
    Ok(done)
}

/// In the new certificate's transaction: the old one becomes superseded.
pub(super) async fn mark_superseded(
    conn: &mut PgConnection,
    old: &str,
    new: &str,
    who: &Principal,
    reason: &str,
) -> Result<(), CertError> {
    let cur = lock_valid(conn, old).await?;
    // The new row is inserted right after, in this transaction: the
    // reference is checked at commit (DEFERRABLE, migration 0014).
    sqlx::query(
        "UPDATE certificates SET state = 'superseded', superseded_by = $4, revocation_reason = $2,
                revoked_by = $3, revoked_at = now() WHERE certificate_id = $1",
    )
    .bind(old)
    .bind(reason)
    .bind(&who.id)
    .bind(new)
    .execute(&mut *conn)
    .await?;
    log_revocation(conn, &cur).await?;
    let entry = NewEntry::new(
        who.kind,
        &who.id,
        "certificate.supersede",
        format!("certificate:{old}"),
    )
    .before(json!({"state": cur.state}))
    .after(json!({"state": "superseded", "superseded_by": new, "reason": reason}));
    crate::audit::append_in(&mut *conn, entry).await?;
    revoked_event(conn, &cur, "superseded", reason, &who.id, Some(new)).await?;
    metrics::counter!(crate::metric_names::HUB_CERTIFICATES_REVOKED_TOTAL, "state" => "superseded")
        .increment(1);
    Ok(())
}

/// `certificate.revoked` for the lab's systems, in the change's transaction.
async fn revoked_event(
    conn: &mut PgConnection,
    cur: &Summary,
    state: &str,
    reason: &str,
    by: &str,
    superseded_by: Option<&str>,
) -> Result<(), sqlx::Error> {
    crate::webhooks::enqueue(
        conn,
        crate::webhooks::EventType::CertificateRevoked,
        json!({"certificate_id": cur.certificate_id, "sample": cur.subject,
               "service_request": cur.service_request}),
        json!({"certificate_id": cur.certificate_id, "state": state, "reason": reason, "by": by,
               "superseded_by": superseded_by, "sample": cur.subject,
               "service_request": cur.service_request, "at": Utc::now()}),
    )
    .await
    .map(|_| ())
}

/// The signed list of every revoked or superseded certificate, as of now.
pub async fn revocations(
    pool: &PgPool,
    issuer: &Issuer,
) -> Result<super::verify::SignedRevocations, CertError> {
    let key = issuer.key()?;
    /// id, state, when, reason, successor.
    type Row = (String, String, DateTime<Utc>, String, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT certificate_id, state, revoked_at, coalesce(revocation_reason, ''), superseded_by
           FROM certificates WHERE state <> 'valid' ORDER BY revoked_at, certificate_id",
    )
    .fetch_all(pool)
    .await?;
    let t = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let list = RevocationList {
        format: REVOCATIONS_FORMAT.into(),
        issuer_fingerprint: key.fingerprint().into(),
        issued_at: t(Utc::now()),
        entries: rows
            .into_iter()
            .map(|(id, state, at, reason, by)| Revoked {
                id,
                state,
                at: t(at),
                reason,
                superseded_by: by,
            })
            .collect(),
    };
    Ok(super::verify::sign_revocations(&list, key)?)
}

/// The public answer for an id: its state (valid, revoked, superseded,
/// expired) and the certificate's own public content, or unknown.
pub async fn public_status(pool: &PgPool, id: &str) -> Result<Value, CertError> {
    let row: Option<(Summary, Vec<u8>)> = {
        let s = get(pool, id).await?;
        match s {
            None => None,
            Some(s) => {
                let json: Vec<u8> = sqlx::query_scalar(
                    "SELECT document_json FROM certificates WHERE certificate_id = $1",
                )
                .bind(id)
                .fetch_one(pool)
                .await?;
                Some((s, json))
            }
        }
    };
    let Some((s, json)) = row else {
        return Ok(json!({"certificate_id": id, "status": "unknown"}));
    };
    let status = if s.state != "valid" {
        s.state.clone()
    } else if s.expires_at <= Utc::now() {
        "expired".into()
    } else {
        "valid".into()
    };
    // Only what the signed document itself says, plus its state.
    let certificate: Value = serde_json::from_slice(&json).unwrap_or(Value::Null);
    Ok(json!({
        "certificate_id": id,
        "status": status,
        "revoked_at": s.revoked_at,
        "superseded_by": s.superseded_by,
        "document_sha256": s.document_sha256,
        "certificate": certificate,
    }))
}

/// What a supersession asks for: why, and the runs of the correction
/// (None: the old certificate's).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupersedeRequest {
    pub reason: String,
    #[serde(default)]
    pub runs: Option<Vec<String>>,
    #[serde(default)]
    pub allow_simulated: bool,
}

/// Issues the corrected certificate for `old` (same sample, and the same
/// runs unless others are named) and marks `old` superseded by it.
pub async fn supersede(
    pool: &PgPool,
    issuer: &Issuer,
    old: &str,
    who: &Principal,
    origin: &Origin,
    req: SupersedeRequest,
) -> Result<Summary, CertError> {
    check_reason(&req.reason)?;
    let cur = get(pool, old)
        .await?
        .ok_or_else(|| CertError::NotFound(format!("no certificate {old}")))?;
    let runs = req.runs.unwrap_or_else(|| {
        cur.runs
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["run_id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    });
    let issue = super::issue::IssueRequest {
        sample: cur.subject.clone(),
        runs: Some(runs),
        allow_simulated: req.allow_simulated,
    };
    super::issue::issue(pool, issuer, who, origin, &issue, Some((old, &req.reason))).await
}
