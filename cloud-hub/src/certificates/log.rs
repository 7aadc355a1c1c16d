//! Certificates in the transparency log (`crate::translog`, RFC 6962).
//!
//! Every issued and every revoked (or superseded) certificate is appended
//! as a leaf in the transaction that issues or revokes it: the entry is a
//! small JSON record (event, certificate id, SHA-256 of the signed XML,
//! time), never the document. The certificate row keeps the leaf's index
//! and entry; the bundle gets, when it is fetched, the inclusion proof of
//! that leaf in the tree of the latest signed tree head (or of a size the
//! caller names), the head and the log's public key. Proofs are made after
//! commit, never of a tree a rolled-back transaction would take back.
//!
//! The offline verifier ([`verify_entry`], pure) checks the entry names
//! this certificate and this document, and the proof against a log head
//! the verifier trusts (`--log-head`: what `GET /api/v1/log/head` served,
//! fetched independently), whose signature it checks with the log's key.

use crate::translog::sth::{self, SignedTreeHead};
use crate::translog::{LogError, LogSigner, merkle, store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What goes into the log for a certificate event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLeaf {
    /// `issued` or `revoked` (a superseded certificate's is `revoked`
    /// with its successor in `reason`).
    pub event: String,
    pub certificate_id: String,
    /// SHA-256 (hex) of the signed XML document.
    pub document_sha256: String,
    pub at: String,
}

/// Appends the leaf in the caller's transaction; returns what the
/// certificate row keeps: `{"index": n, "entry": "<the entry's JSON>"}`.
pub async fn append_to_transparency_log(
    tx: &mut sqlx::PgConnection,
    leaf: &LogLeaf,
) -> Result<Value, LogError> {
    let entry = serde_json::to_string(leaf).unwrap_or_default();
    let e = store::append(tx, entry.as_bytes()).await?;
    tracing::debug!(certificate = %leaf.certificate_id, event = %leaf.event, index = e.index, "logged");
    Ok(json!({"index": e.index, "entry": entry}))
}

/// The bundle's log part: the stored `{index, entry}` with the inclusion
/// proof in the tree of `tree_size` leaves (None: the latest signed head,
/// which comes along) and the log's public key.
pub async fn bundle_entry(
    conn: &mut sqlx::PgConnection,
    signer: &LogSigner,
    stored: &Value,
    tree_size: Option<u64>,
) -> Result<Value, LogError> {
    let index = stored["index"]
        .as_u64()
        .ok_or_else(|| LogError::Corrupt("a certificate's log entry has no index".into()))?;
    let (size, root, head) = match tree_size {
        None => {
            let h = signer.latest(conn).await?;
            (h.tree_size, h.root_hash, Some(h))
        }
        Some(n) => (n, store::root_at(conn, n).await?, None),
    };
    let proof = store::inclusion_proof(conn, index, size).await?;
    let key = signer.public_key();
    let mut head_json = head.map(|h| json!(h)).unwrap_or(Value::Null);
    if head_json.is_object() {
        head_json["log_id"] = json!(sth::to_hex(&sth::log_id(key)));
    }
    Ok(json!({
        "index": index,
        "entry": stored["entry"],
        "tree_size": size,
        "root_hash": sth::to_hex(&root),
        "inclusion_proof": proof.iter().map(|h| sth::to_hex(h)).collect::<Vec<_>>(),
        "tree_head": head_json,
        "log_id": sth::to_hex(&sth::log_id(key)),
        "public_key_pem": sth::public_key_pem(key),
    }))
}

/// What the verifier found out about the log.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum LogStatus {
    /// No log head was given: the log was not checked.
    NotChecked,
    /// Included in the log under the trusted head.
    Included { index: u64, tree_size: u64 },
}

/// A trusted log head as `GET /api/v1/log/head` serves it.
#[derive(Debug, Deserialize)]
struct TrustedHead {
    #[serde(flatten)]
    sth: SignedTreeHead,
    log_id: String,
}

/// Checks the bundle's log entry against a log head the verifier trusts.
pub fn verify_entry(
    entry: Option<&Value>,
    head: Option<&Value>,
    certificate_id: &str,
    signed_xml: &str,
) -> Result<LogStatus, String> {
    let Some(head) = head else {
        return Ok(LogStatus::NotChecked);
    };
    let entry =
        entry.ok_or("the bundle carries no inclusion proof: the certificate is not in the log")?;
    let head: TrustedHead = serde_json::from_value(head.clone()).map_err(|e| {
        format!("the log head is not a signed tree head as /api/v1/log/head serves it: {e}")
    })?;
    let key = entry["public_key_pem"]
        .as_str()
        .ok_or("the bundle's log entry has no public key")
        .and_then(|p| {
            sth::public_key_from_pem(p).map_err(|_| "the log's public key does not parse")
        })?;
    if sth::to_hex(&sth::log_id(&key)) != head.log_id.to_ascii_lowercase() {
        return Err("the bundle's log key is not the key of the trusted log head's log".into());
    }
    sth::verify_sth(&head.sth, &key)
        .map_err(|e| format!("the trusted log head does not verify: {e}"))?;
    let text = entry["entry"]
        .as_str()
        .ok_or("the log entry has no entry text")?;
    let leaf: LogLeaf =
        serde_json::from_str(text).map_err(|e| format!("the log entry does not parse: {e}"))?;
    let sha = super::pki::sha256_hex(signed_xml.as_bytes());
    if leaf.event != "issued"
        || leaf.certificate_id != certificate_id
        || leaf.document_sha256 != sha
    {
        return Err(format!(
            "the log entry ({} {} {}) is not this certificate's issue (document {sha})",
            leaf.event, leaf.certificate_id, leaf.document_sha256
        ));
    }
    let index = entry["index"]
        .as_u64()
        .ok_or("the log entry has no index")?;
    let size = entry["tree_size"]
        .as_u64()
        .ok_or("the log entry has no tree size")?;
    if size != head.sth.tree_size {
        return Err(format!(
            "the bundle's inclusion proof is for a log of {size} entries; the trusted head is of {}: \
             fetch the bundle with ?tree_size={}",
            head.sth.tree_size, head.sth.tree_size
        ));
    }
    let proof: Vec<merkle::Hash> = entry["inclusion_proof"]
        .as_array()
        .ok_or("the log entry has no inclusion proof")?
        .iter()
        .map(|h| h.as_str().and_then(sth::hash_from_hex))
        .collect::<Option<_>>()
        .ok_or("the inclusion proof is not a list of 64-hex-digit hashes")?;
    merkle::verify_inclusion(
        &merkle::leaf_hash(text.as_bytes()),
        index,
        size,
        &proof,
        &head.sth.root_hash,
    )
    .map_err(|e| {
        format!(
            "not in the log under the trusted head (a forked or different log, or a changed entry): {e}"
        )
    })?;
    Ok(LogStatus::Included {
        index,
        tree_size: size,
    })
}
