//! The issuer as `[certificates]` configures it: the key loaded from its
//! files (the config module only holds the settings, so it does not depend
//! on this one).

use super::Issuer;
use super::pki::IssuingKey;
use crate::config::certificates::CertificatesConfig;
use std::path::PathBuf;
use std::sync::Arc;

impl Issuer {
    /// The issuer: the key loaded when configured. `public_url` is the
    /// default verification base.
    pub fn from_config(c: &CertificatesConfig, public_url: &str) -> Result<Issuer, String> {
        let key = match (&c.key_file, &c.chain_file) {
            (Some(key_file), Some(chain_file)) => {
                let read = |p: &PathBuf, what: &str| {
                    std::fs::read(p).map_err(|e| {
                        format!("certificates.{what}: cannot read {}: {e}", p.display())
                    })
                };
                let k = IssuingKey::from_pem(
                    &read(key_file, "key_file")?,
                    &read(chain_file, "chain_file")?,
                )
                .map_err(|e| format!("certificates.key_file / chain_file: {e}"))?;
                Some(Arc::new(k))
            }
            _ => None,
        };
        let base = if c.verify_base_url.is_empty() {
            public_url
        } else {
            &c.verify_base_url
        };
        Ok(Issuer {
            key,
            validity_days: c.validity_days,
            verify_base_url: base.trim_end_matches('/').to_string(),
            lab_name: c.lab_name.clone(),
            lab_country: c.lab_country.clone(),
            id_prefix: c.id_prefix.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::certificates::CertificatesConfig;
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
        let i = Issuer::from_config(&CertificatesConfig::default(), "http://127.0.0.1:8081")
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
        let i = Issuer::from_config(&cfg, "http://ignored").expect("issuer");
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
        let e = Issuer::from_config(&with_key(ed, ed_cert), "").expect_err("ed25519");
        assert!(e.contains("P-256"), "{e}");
        let other = tempfile::tempdir().expect("dir");
        let (k2, _) = files(other.path(), &PKCS_ECDSA_P256_SHA256);
        let e = Issuer::from_config(&with_key(k2, c), "").expect_err("mismatch");
        assert!(e.contains("not the key's"), "{e}");
    }
}
