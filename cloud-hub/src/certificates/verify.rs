//! Offline verification of a certificate bundle: no database, no hub
//! configuration, only the bundle, the trusted certificate, and optionally a
//! signed revocation list and a log head. Pure and synchronous, so
//! `cloud-hub certificate verify` and the benchmark run exactly this.
//!
//! Checks, in order, each failure naming its reason:
//! 1. the XML's enveloped signature (`dsig`), and its chain up to a trusted
//!    certificate at the signing time (`pki`);
//! 2. the detached JWS over the JSON mirror, and its chain (the same
//!    issuing certificate as the XML's);
//! 3. the JSON mirror and the XML say the same: the XML rendered again
//!    from the JSON equals the signed XML byte for byte;
//! 4. not expired;
//! 5. not revoked or superseded, per the revocation list (its own JWS and
//!    chain checked) when one is given;
//! 6. the transparency log (`log`), when a log head is given.

use super::document::{Certificate, FORMAT};
use super::{dsig, jws, log, pki};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const BUNDLE_FORMAT: &str = "qi-certificate-bundle/1";
pub const REVOCATIONS_FORMAT: &str = "qi-revocations/1";

/// Everything the offline verifier needs, in one file (`GET .../bundle`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: String,
    pub id: String,
    /// The signed DCC XML document.
    pub xml: String,
    /// The JSON mirror, exactly the bytes the JWS signs.
    pub json: String,
    /// The detached JWS over `json`.
    pub jws: String,
    /// The transparency log's entry: index, inclusion proof, signed tree head.
    pub log: Option<serde_json::Value>,
}

/// A revocation list as served (`GET /api/v1/certificates/revocations`):
/// `payload` is the list's JSON text, exactly what `jws` signs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRevocations {
    pub payload: String,
    pub jws: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationList {
    pub format: String,
    /// SHA-256 of the issuing certificate that signed it.
    pub issuer_fingerprint: String,
    pub issued_at: String,
    pub entries: Vec<Revoked>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    pub id: String,
    /// `revoked` or `superseded`.
    pub state: String,
    pub at: String,
    pub reason: String,
    pub superseded_by: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("not a certificate bundle: {0}")]
    Format(String),
    #[error("XML signature: {0}")]
    XmlSignature(String),
    #[error("certificate chain: {0}")]
    Chain(String),
    #[error("JWS over the JSON mirror: {0}")]
    Jws(String),
    #[error("the JSON mirror and the XML differ: {0}")]
    Mismatch(String),
    #[error("expired: the certificate was valid until {0}")]
    Expired(String),
    #[error("revoked at {at}: {reason}")]
    Revoked { at: String, reason: String },
    #[error("superseded at {at} by {by}: {reason}")]
    Superseded {
        at: String,
        by: String,
        reason: String,
    },
    #[error("revocation list: {0}")]
    RevocationList(String),
    #[error("transparency log: {0}")]
    Log(String),
}

impl VerifyError {
    /// A short machine-readable reason (metrics, the exit message).
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::Format(_) => "format",
            VerifyError::XmlSignature(_) => "xml_signature",
            VerifyError::Chain(_) => "chain",
            VerifyError::Jws(_) => "jws",
            VerifyError::Mismatch(_) => "mismatch",
            VerifyError::Expired(_) => "expired",
            VerifyError::Revoked { .. } => "revoked",
            VerifyError::Superseded { .. } => "superseded",
            VerifyError::RevocationList(_) => "revocation_list",
            VerifyError::Log(_) => "log",
        }
    }
}

/// What to check against.
pub struct Options<'a> {
    /// Trusted certificates (DER): the issuing certificate or a CA above it.
    pub trusted: &'a [Vec<u8>],
    pub revocations: Option<&'a SignedRevocations>,
    pub log_head: Option<&'a serde_json::Value>,
    pub now: DateTime<Utc>,
}

/// What a valid certificate is.
#[derive(Debug, Serialize)]
pub struct Verified {
    pub id: String,
    pub kind: String,
    pub subject: String,
    pub issued_at: String,
    pub expires_at: String,
    pub simulated: bool,
    pub issuer_fingerprint: String,
    /// The revocation list's issue time, when one was checked.
    pub revocations_as_of: Option<String>,
    pub log: log::LogStatus,
}

fn time(s: &str, what: &str) -> Result<DateTime<Utc>, VerifyError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| VerifyError::Format(format!("{what} {s:?} is not an RFC 3339 time: {e}")))
}

/// Verifies a bundle file's bytes.
pub fn verify_bundle(bytes: &[u8], o: &Options<'_>) -> Result<Verified, VerifyError> {
    let b: Bundle =
        serde_json::from_slice(bytes).map_err(|e| VerifyError::Format(e.to_string()))?;
    if b.format != BUNDLE_FORMAT {
        return Err(VerifyError::Format(format!(
            "format {:?}, expected {BUNDLE_FORMAT}",
            b.format
        )));
    }
    verify_parts(&b, o)
}

pub fn verify_parts(b: &Bundle, o: &Options<'_>) -> Result<Verified, VerifyError> {
    let checked = dsig::verify(&b.xml).map_err(VerifyError::XmlSignature)?;
    let cert: Certificate = serde_json::from_str(&b.json)
        .map_err(|e| VerifyError::Format(format!("the JSON mirror does not parse: {e}")))?;
    if cert.format != FORMAT {
        return Err(VerifyError::Format(format!(
            "certificate format {:?}",
            cert.format
        )));
    }
    let signed_at = time(&cert.issued_at, "issued_at")?;
    pki::verify_chain(&checked.chain, o.trusted, signed_at.timestamp())
        .map_err(VerifyError::Chain)?;
    let jws_chain = jws::verify_detached(&b.jws, b.json.as_bytes()).map_err(VerifyError::Jws)?;
    if jws_chain.first() != checked.chain.first() {
        return Err(VerifyError::Jws(
            "signed by another certificate than the XML".into(),
        ));
    }
    if cert.to_xml() != checked.unsigned_root {
        return Err(VerifyError::Mismatch(
            "the XML rendered from the signed JSON is not the signed XML".into(),
        ));
    }
    if cert.id != b.id {
        return Err(VerifyError::Mismatch(format!(
            "the bundle names {} but the certificate is {}",
            b.id, cert.id
        )));
    }
    let expires = time(&cert.expires_at, "expires_at")?;
    if o.now >= expires {
        return Err(VerifyError::Expired(cert.expires_at.clone()));
    }
    let fingerprint = pki::sha256_hex(&checked.chain[0]);
    let revocations_as_of = match o.revocations {
        Some(r) => Some(check_revocations(r, &cert, o)?),
        None => None,
    };
    let log = log::verify_entry(b.log.as_ref(), o.log_head, &cert.id, &b.xml)
        .map_err(VerifyError::Log)?;
    Ok(Verified {
        id: cert.id,
        kind: cert.kind,
        subject: cert.item.sample_id,
        issued_at: cert.issued_at,
        expires_at: cert.expires_at,
        simulated: cert.simulated,
        issuer_fingerprint: fingerprint,
        revocations_as_of,
        log,
    })
}

/// Checks the list's signature and chain, then looks the certificate up.
fn check_revocations(
    r: &SignedRevocations,
    cert: &Certificate,
    o: &Options<'_>,
) -> Result<String, VerifyError> {
    let bad = VerifyError::RevocationList;
    let chain = jws::verify_detached(&r.jws, r.payload.as_bytes()).map_err(bad)?;
    let list: RevocationList = serde_json::from_str(&r.payload)
        .map_err(|e| VerifyError::RevocationList(format!("does not parse: {e}")))?;
    if list.format != REVOCATIONS_FORMAT {
        return Err(VerifyError::RevocationList(format!(
            "format {:?}",
            list.format
        )));
    }
    let issued = time(&list.issued_at, "the list's issued_at")?;
    pki::verify_chain(&chain, o.trusted, issued.timestamp())
        .map_err(VerifyError::RevocationList)?;
    if let Some(e) = list.entries.iter().find(|e| e.id == cert.id) {
        return Err(match e.state.as_str() {
            "superseded" => VerifyError::Superseded {
                at: e.at.clone(),
                by: e.superseded_by.clone().unwrap_or_default(),
                reason: e.reason.clone(),
            },
            _ => VerifyError::Revoked {
                at: e.at.clone(),
                reason: e.reason.clone(),
            },
        });
    }
    Ok(list.issued_at)
}

/// The revocation list's signed form.
pub fn sign_revocations(
    list: &RevocationList,
    key: &pki::IssuingKey,
) -> Result<SignedRevocations, pki::KeyError> {
    let payload = serde_json::to_string(list).unwrap_or_default();
    let jws = jws::sign_detached(payload.as_bytes(), key)?;
    Ok(SignedRevocations { payload, jws })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::{document, testkeys};

    fn bundle(key: &pki::IssuingKey, c: &Certificate) -> Vec<u8> {
        let json = String::from_utf8(c.to_json()).expect("utf8");
        let b = Bundle {
            format: BUNDLE_FORMAT.into(),
            id: c.id.clone(),
            xml: dsig::sign(&c.to_xml(), key).expect("xml"),
            jws: jws::sign_detached(json.as_bytes(), key).expect("jws"),
            json,
            log: None,
        };
        serde_json::to_vec(&b).expect("bundle")
    }

    fn now() -> DateTime<Utc> {
        time("2026-07-01T00:00:00Z", "now").expect("t")
    }

    #[test]
    fn a_bundle_verifies_and_each_tampering_is_refused_with_its_reason() {
        let (key, ca) = testkeys::issuing_key();
        let c = document::tests::sample();
        let good = bundle(&key, &c);
        let trusted = [ca.clone()];
        let o = Options {
            trusted: &trusted,
            revocations: None,
            log_head: None,
            now: now(),
        };
        let v = verify_bundle(&good, &o).expect("valid");
        assert_eq!(v.id, c.id);

        let b: Bundle = serde_json::from_slice(&good).expect("b");
        let refuse = |b: &Bundle| verify_parts(b, &o).expect_err("refused").reason();
        let mut x = b.clone();
        x.xml = x.xml.replacen("<si:value>395.0<", "<si:value>395.1<", 1);
        assert_eq!(refuse(&x), "xml_signature");
        let mut x = b.clone();
        x.json = x.json.replacen("395.0", "395.1", 1);
        assert_eq!(refuse(&x), "jws");
        // Both re-signed consistently by a key the trust does not cover.
        let (other, _) = testkeys::issuing_key();
        let forged: Bundle = serde_json::from_slice(&bundle(&other, &c)).expect("b");
        assert_eq!(refuse(&forged), "chain");
        // XML and JSON each validly signed but of different content.
        let mut c2 = c.clone();
        c2.runs[0].measured[0].value = 401.0;
        let other_json: Bundle = serde_json::from_slice(&bundle(&key, &c2)).expect("b");
        let mut x = b.clone();
        x.json = other_json.json.clone();
        x.jws = other_json.jws.clone();
        assert_eq!(refuse(&x), "mismatch");
        let late = Options {
            now: time("2028-06-01T00:00:00Z", "t").expect("t"),
            ..o
        };
        assert_eq!(
            verify_parts(&b, &late).expect_err("expired").reason(),
            "expired"
        );
    }

    #[test]
    fn a_signed_revocation_list_revokes_and_a_forged_one_is_refused() {
        let (key, ca) = testkeys::issuing_key();
        let c = document::tests::sample();
        let good = bundle(&key, &c);
        let trusted = [ca];
        let mut list = RevocationList {
            format: REVOCATIONS_FORMAT.into(),
            issuer_fingerprint: key.fingerprint().into(),
            issued_at: "2026-06-15T00:00:00Z".into(),
            entries: vec![],
        };
        let empty = sign_revocations(&list, &key).expect("sign");
        let o = Options {
            trusted: &trusted,
            revocations: Some(&empty),
            log_head: None,
            now: now(),
        };
        let v = verify_bundle(&good, &o).expect("not revoked");
        assert_eq!(v.revocations_as_of.as_deref(), Some("2026-06-15T00:00:00Z"));
        list.entries.push(Revoked {
            id: c.id.clone(),
            state: "revoked".into(),
            at: "2026-06-10T00:00:00Z".into(),
            reason: "wrong module type".into(),
            superseded_by: None,
        });
        let revoked = sign_revocations(&list, &key).expect("sign");
        let o2 = Options {
            revocations: Some(&revoked),
            ..o
        };
        let e = verify_bundle(&good, &o2).expect_err("revoked");
        assert!(e.to_string().contains("wrong module type"), "{e}");
        // A list that drops the entry but keeps the old signature.
        let forged = SignedRevocations {
            payload: empty.payload.clone(),
            jws: revoked.jws.clone(),
        };
        let o3 = Options {
            revocations: Some(&forged),
            ..o2
        };
        assert_eq!(
            verify_bundle(&good, &o3).expect_err("forged").reason(),
            "revocation_list"
        );
    }
}
