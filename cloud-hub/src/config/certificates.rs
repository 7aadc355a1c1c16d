//! `[certificates]`: the key certificates are signed with, its chain, how
//! long a certificate is valid, and what the documents say about the lab
//! (`crate::certificates`). Without `key_file` the hub starts and refuses
//! to issue, saying what to configure; a configured key that cannot be
//! used stops the start.

use crate::certificates::{Issuer, pki::IssuingKey};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatesConfig {
    /// The issuing private key: a PEM file, PKCS#8, ECDSA P-256. A file
    /// only: PKCS#11 modules are not supported.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The issuing certificate (the key's), then its intermediates, PEM.
    #[serde(default)]
    pub chain_file: Option<PathBuf>,
    /// Days from issue to expiry.
    #[serde(default = "default_validity_days")]
    pub validity_days: u32,
    /// Base of the verification link in each document
    /// (`<base>/api/v1/verify/<id>`); empty: `http.public_url`.
    #[serde(default)]
    pub verify_base_url: String,
    /// The laboratory's name, as documents name it.
    #[serde(default)]
    pub lab_name: String,
    /// The laboratory's country, ISO 3166-1 alpha-2 (DCC countryCodeISO3166_1).
    #[serde(default)]
    pub lab_country: String,
    /// Certificate ids are `<id_prefix>-<year>-<number>`.
    #[serde(default = "default_id_prefix")]
    pub id_prefix: String,
}

fn default_validity_days() -> u32 {
    730
}
fn default_id_prefix() -> String {
    "QI-CERT".into()
}

impl Default for CertificatesConfig {
    fn default() -> Self {
        CertificatesConfig {
            key_file: None,
            chain_file: None,
            validity_days: default_validity_days(),
            verify_base_url: String::new(),
            lab_name: String::new(),
            lab_country: String::new(),
            id_prefix: default_id_prefix(),
        }
    }
}

impl CertificatesConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        let key = |k: &str| format!("certificates.{k}");
        if let Some(k) = &self.key_file
            && k.to_string_lossy().starts_with("pkcs11:")
        {
            return Err((
                key("key_file"),
                "PKCS#11 is not supported: the issuing key must be a PEM file".into(),
            ));
        }
        if self.key_file.is_some() != self.chain_file.is_some() {
            return Err((
                key("key_file"),
                "key_file and chain_file go together (the key and its certificate chain)".into(),
            ));
        }
        if self.validity_days == 0 || self.validity_days > 36_500 {
            return Err((key("validity_days"), "must be 1..=36500".into()));
        }
        let url = &self.verify_base_url;
        if !url.is_empty()
            && (!(url.starts_with("http://") || url.starts_with("https://"))
                || url.contains(['?', '#', ' ', '"', '<', '>'])
                || url.chars().any(char::is_control))
        {
            return Err((
                key("verify_base_url"),
                "must be an http:// or https:// URL without query or fragment".into(),
            ));
        }
        if self.id_prefix.is_empty()
            || self.id_prefix.len() > 16
            || !self
                .id_prefix
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
        {
            return Err((key("id_prefix"), "1-16 characters of A-Z 0-9 -".into()));
        }
        if self.key_file.is_some() {
            if self.lab_name.trim().is_empty() || !qi_proto::limits::valid_text(&self.lab_name) {
                return Err((
                    key("lab_name"),
                    "the laboratory's name is required to issue certificates (printable text)"
                        .into(),
                ));
            }
            if self.lab_country.len() != 2
                || !self.lab_country.chars().all(|c| c.is_ascii_uppercase())
            {
                return Err((
                    key("lab_country"),
                    "the laboratory's country as ISO 3166-1 alpha-2 (e.g. \"DE\") is required to issue certificates".into(),
                ));
            }
        }
        Ok(())
    }

    /// The issuer: the key loaded when configured. `public_url` is the
    /// default verification base.
    pub fn issuer(&self, public_url: &str) -> Result<Issuer, String> {
        let key = match (&self.key_file, &self.chain_file) {
            (Some(k), Some(c)) => {
                let read = |p: &PathBuf, what: &str| {
                    std::fs::read(p).map_err(|e| {
                        format!("certificates.{what}: cannot read {}: {e}", p.display())
                    })
                };
                let k = IssuingKey::from_pem(&read(k, "key_file")?, &read(c, "chain_file")?)
                    .map_err(|e| format!("certificates.key_file / chain_file: {e}"))?;
                Some(Arc::new(k))
            }
            _ => None,
        };
        let base = if self.verify_base_url.is_empty() {
            public_url
        } else {
            &self.verify_base_url
        };
        Ok(Issuer {
            key,
            validity_days: self.validity_days,
            verify_base_url: base.trim_end_matches('/').to_string(),
            lab_name: self.lab_name.clone(),
            lab_country: self.lab_country.clone(),
            id_prefix: self.id_prefix.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};

    fn files(dir: &std::path::Path, alg: &'static rcgen::SignatureAlgorithm) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate_for(alg).expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, "issuer");
        let cert = p.self_signed(&key).expect("cert");
        let (k, c) = (dir.join("k.pem"), dir.join("c.pem"));
        std::fs::write(&k, key.serialize_pem()).expect("write");
        std::fs::write(&c, cert.pem()).expect("write");
        (k, c)
    }

    fn with_key(k: PathBuf, c: PathBuf) -> CertificatesConfig {
        CertificatesConfig {
            key_file: Some(k),
            chain_file: Some(c),
            lab_name: "Lab".into(),
            lab_country: "DE".into(),
            ..Default::default()
        }
    }

    #[test]
    fn without_a_key_the_issuer_refuses_and_says_what_to_set() {
        let i = CertificatesConfig::default()
            .issuer("http://127.0.0.1:8081")
            .expect("issuer");
        let e = i.key().expect_err("no key");
        assert!(e.to_string().contains("certificates.key_file"), "{e}");
        assert_eq!(i.validity_days, 730);
        assert_eq!(i.id_prefix, "QI-CERT");
        // verify_base_url defaults to http.public_url.
        assert_eq!(
            i.verification_url("X-1"),
            "http://127.0.0.1:8081/api/v1/verify/X-1"
        );
    }

    #[test]
    fn each_key_has_its_effect() {
        let dir = tempfile::tempdir().expect("dir");
        let (k, c) = files(dir.path(), &PKCS_ECDSA_P256_SHA256);
        let mut cfg = with_key(k, c);
        cfg.validity_days = 10;
        cfg.verify_base_url = "https://verify.example/qi/".into();
        cfg.id_prefix = "LAB-7".into();
        cfg.validate().expect("valid");
        let i = cfg.issuer("http://ignored").expect("issuer");
        assert_eq!(i.key().expect("key").fingerprint().len(), 64);
        assert_eq!(
            (
                i.validity_days,
                i.id_prefix.as_str(),
                i.lab_name.as_str(),
                i.lab_country.as_str()
            ),
            (10, "LAB-7", "Lab", "DE")
        );
        assert_eq!(
            i.verification_url("A"),
            "https://verify.example/qi/api/v1/verify/A"
        );
    }

    #[test]
    fn bad_settings_are_refused_with_their_key() {
        let dir = tempfile::tempdir().expect("dir");
        let (k, c) = files(dir.path(), &PKCS_ECDSA_P256_SHA256);
        let refused = |cfg: CertificatesConfig| cfg.validate().expect_err("refused").0;
        let mut x = with_key(k.clone(), c.clone());
        x.key_file = Some("pkcs11:token=lab;object=issuer".into());
        assert_eq!(refused(x), "certificates.key_file");
        let mut x = with_key(k.clone(), c.clone());
        x.chain_file = None;
        assert_eq!(refused(x), "certificates.key_file");
        let mut x = with_key(k.clone(), c.clone());
        x.validity_days = 0;
        assert_eq!(refused(x), "certificates.validity_days");
        let mut x = with_key(k.clone(), c.clone());
        x.lab_country = "Germany".into();
        assert_eq!(refused(x), "certificates.lab_country");
        let mut x = with_key(k.clone(), c.clone());
        x.lab_name = String::new();
        assert_eq!(refused(x), "certificates.lab_name");
        let mut x = with_key(k.clone(), c.clone());
        x.verify_base_url = "ftp://x".into();
        assert_eq!(refused(x), "certificates.verify_base_url");
        let mut x = with_key(k.clone(), c.clone());
        x.id_prefix = "qi cert".into();
        assert_eq!(refused(x), "certificates.id_prefix");
        // A key that is not P-256, or not the chain's, stops the start.
        let ed_dir = tempfile::tempdir().expect("dir");
        let (ed, ed_cert) = files(ed_dir.path(), &PKCS_ED25519);
        let e = with_key(ed, ed_cert).issuer("").expect_err("ed25519");
        assert!(e.contains("P-256"), "{e}");
        let other = tempfile::tempdir().expect("dir");
        let (k2, _) = files(other.path(), &PKCS_ECDSA_P256_SHA256);
        let e = with_key(k2, c).issuer("").expect_err("mismatch");
        assert!(e.contains("not the key's"), "{e}");
    }
}
