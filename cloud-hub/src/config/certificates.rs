//! `[certificates]`: the key certificates are signed with, its chain, how
//! long a certificate is valid, and what the documents say about the lab
//! (`crate::certificates`). Without `key_file` the hub starts and refuses
//! to issue, saying what to configure; a configured key that cannot be
//! used stops the start.

use serde::Deserialize;
use std::path::PathBuf;

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
}
