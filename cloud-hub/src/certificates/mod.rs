//! Test certificates anyone can verify offline (issue #15): a DCC-shaped
//! XML document with an enveloped XML signature and a JSON mirror with a
//! detached JWS, both from one structure and signed with the configured
//! issuing key; issued only for runs whose verdict that stands is pass,
//! revoked and superseded with a signed revocation list, verified offline
//! by `cloud-hub certificate verify`. docs/certificates.md is the user's
//! side of it.
//!
//! Rooms: `xml` (the canonical writer), `document` (the content and its
//! two renderings), `pki` (the issuing key, chains), `dsig` (XMLDSig),
//! `jws` (detached JWS), `verify` (offline verification: pure, no SQL),
//! `log` (certificates in the transparency log, `crate::translog`), `issue` (issuing from runs),
//! `store` (reads, revoke, supersede, the revocation list), `calibration`
//! (an instrument's calibration certificate, from `crate::calibration`'s
//! records). The schema is migration 0014 (and 0015's calibrations).

pub mod calibration;
mod configured;
pub mod document;
pub mod dsig;
pub mod issue;
pub mod jws;
pub mod log;
pub mod pki;
pub mod store;
pub mod verify;
pub mod xml;

use std::sync::Arc;

/// Longest certificate id the API accepts (`<prefix>-<year>-<number>`).
pub const MAX_ID_LEN: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The hub has no issuing key: what to configure.
    #[error("{0}")]
    NotConfigured(String),
    #[error("{0}")]
    NotFound(String),
    /// The runs or the certificate are not in a state that allows this.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
    #[error("signing: {0}")]
    Key(#[from] pki::KeyError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("transparency log: {0}")]
    Log(#[from] crate::translog::LogError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

impl CertError {
    /// The refusal counter's label.
    pub fn reason(&self) -> &'static str {
        match self {
            CertError::NotConfigured(_) => "not_configured",
            CertError::NotFound(_) => "not_found",
            CertError::Refused(_) => "refused",
            CertError::Invalid(_) => "invalid",
            CertError::Key(_) => "key",
            CertError::Db(_) | CertError::Audit(_) | CertError::Log(_) => "storage",
        }
    }
}

/// What issuing needs, from `[certificates]` and `[http]`.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// None: issuing is refused with what to configure.
    pub key: Option<Arc<pki::IssuingKey>>,
    pub validity_days: u32,
    /// Links in documents: `<base>/api/v1/verify/<id>`.
    pub verify_base_url: String,
    pub lab_name: String,
    pub lab_country: String,
    pub id_prefix: String,
}

impl Issuer {
    pub fn key(&self) -> Result<&pki::IssuingKey, CertError> {
        self.key.as_deref().ok_or_else(|| {
            CertError::NotConfigured(
                "this hub issues no certificates: set certificates.key_file (an ECDSA P-256 \
                 PKCS#8 PEM key) and certificates.chain_file (its certificate, then \
                 intermediates) in the hub's config (docs/certificates.md)"
                    .into(),
            )
        })
    }

    pub fn verification_url(&self, id: &str) -> String {
        format!("{}/api/v1/verify/{id}", self.verify_base_url)
    }
}

/// Issuing keys for unit tests: a CA and an issuing certificate, generated
/// now (never committed). Returns the key and the CA certificate (DER).
#[cfg(test)]
pub(crate) mod testkeys {
    use super::pki::IssuingKey;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        PKCS_ECDSA_P256_SHA256,
    };

    pub fn issuing_key() -> (IssuingKey, Vec<u8>) {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let ca = CertifiedIssuer::self_signed(ca, ca_key).expect("ca");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("params");
        leaf.distinguished_name
            .push(DnType::CommonName, "test issuer");
        let leaf = leaf.signed_by(&key, &ca).expect("leaf");
        let chain = format!("{}{}", leaf.pem(), ca.pem());
        let k = IssuingKey::from_pem(key.serialize_pem().as_bytes(), chain.as_bytes())
            .expect("issuing key");
        (k, ca.der().to_vec())
    }
}
