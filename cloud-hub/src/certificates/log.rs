//! The transparency log's place in issuing and verifying certificates.
//!
//! Every issued and every revoked certificate is to be appended as a leaf
//! of the hub's append-only Merkle tree (RFC 6962, `crate::translog`, built
//! on its own branch) in the same transaction as the certificate's row, and
//! the bundle is to carry the leaf's index, its inclusion proof and the
//! signed tree head. Until that module is merged, [`append_to_transparency_log`]
//! records nothing and says so (`None`), bundles carry `"log": null`, and a
//! verifier asked to check a log head refuses: "not in the log" is never
//! passed over in silence.

use serde::Serialize;
use serde_json::Value;

/// What goes into the log for a certificate event.
#[derive(Debug, Clone, Serialize)]
pub struct LogLeaf<'a> {
    /// `issued` or `revoked`.
    pub event: &'a str,
    pub certificate_id: &'a str,
    /// SHA-256 (hex) of the signed XML document.
    pub document_sha256: &'a str,
    pub at: &'a str,
}

/// Appends the leaf in the caller's transaction. Returns the bundle's log
/// entry (index, inclusion proof, signed tree head), or None while no log
/// exists on this hub.
pub async fn append_to_transparency_log(
    _tx: &mut sqlx::PgConnection,
    leaf: &LogLeaf<'_>,
) -> Result<Option<Value>, sqlx::Error> {
    tracing::debug!(
        certificate = leaf.certificate_id,
        event = leaf.event,
        "no transparency log on this hub yet: nothing appended"
    );
    Ok(None)
}

/// What the verifier found out about the log.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum LogStatus {
    /// No log head was given: the log was not checked.
    NotChecked,
    /// Included in the log under the given head.
    Included { index: u64 },
}

/// Checks the bundle's log entry against a log head the verifier trusts.
pub fn verify_entry(
    entry: Option<&Value>,
    head: Option<&Value>,
    _signed_xml: &str,
) -> Result<LogStatus, String> {
    match (entry, head) {
        (_, None) => Ok(LogStatus::NotChecked),
        (None, Some(_)) => {
            Err("the bundle carries no inclusion proof: the certificate is not in the log".into())
        }
        (Some(_), Some(_)) => Err(
            "this verifier cannot check inclusion proofs yet (the transparency log is not merged)"
                .into(),
        ),
    }
}
