//! Test certificates, generated at test time (rcgen): never committed.

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};

pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub cert_path: PathBuf,
}

pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path, name: &str) -> Result<TestCa> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let cert_path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&cert_path, issuer.pem())?;
        Ok(TestCa { issuer, cert_path })
    }

    /// A leaf certificate with this common name and subject alternative names.
    pub fn issue(&self, dir: &Path, common_name: &str, sans: &[&str]) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.issuer)?;
        let issued = Issued {
            cert: dir.join(format!("{common_name}.crt")),
            key: dir.join(format!("{common_name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem())?;
        std::fs::write(&issued.key, key.serialize_pem())?;
        Ok(issued)
    }
}
