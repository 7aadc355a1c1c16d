//! Helpers of the certificate tests (issue #15): an issuing PKI generated
//! now (rcgen, ECDSA P-256; never committed), the hub's `[certificates]`
//! table for it, and the verifiers nobody here wrote (Debian's `xmlsec1`,
//! Python's jwcrypto) next to the hub's own offline command.

use crate::peers::{peer_script, python};
use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
    PKCS_ECDSA_P256_SHA256,
};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and an issuing key with its certificate, as PEM files.
pub struct IssuingPki {
    pub ca: PathBuf,
    pub key: PathBuf,
    pub chain: PathBuf,
}

impl IssuingPki {
    pub fn new(dir: &Path, name: &str) -> Result<IssuingPki> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut leaf = CertificateParams::new(Vec::<String>::new())?;
        leaf.distinguished_name
            .push(DnType::CommonName, format!("{name} certificate issuer"));
        let leaf = leaf.signed_by(&key, &ca)?;
        let pki = IssuingPki {
            ca: dir.join(format!("{name}-ca.pem")),
            key: dir.join(format!("{name}-issuer.key")),
            chain: dir.join(format!("{name}-issuer-chain.pem")),
        };
        std::fs::write(&pki.ca, ca.pem())?;
        std::fs::write(&pki.key, key.serialize_pem())?;
        std::fs::write(&pki.chain, format!("{}{}", leaf.pem(), ca.pem()))?;
        Ok(pki)
    }

    /// The hub's `[certificates]` table for this key, with `extra` keys.
    pub fn hub_table(&self, extra: &str) -> String {
        format!(
            "[certificates]\nkey_file = \"{}\"\nchain_file = \"{}\"\n{extra}\n",
            self.key.display(),
            self.chain.display()
        )
    }

    /// The issuing key, for re-signing a document in a test.
    pub fn issuing_key(&self) -> Result<cloud_hub::certificates::pki::IssuingKey> {
        cloud_hub::certificates::pki::IssuingKey::from_pem(
            &std::fs::read(&self.key)?,
            &std::fs::read(&self.chain)?,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

fn run(cmd: &mut Command) -> Result<(bool, String)> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// Debian's `xmlsec1 --verify` of an enveloped signature, trusting `ca`.
pub fn xmlsec1_verify(xml: &Path, ca: &Path) -> Result<(bool, String)> {
    if Command::new("xmlsec1").arg("--version").output().is_err() {
        bail!("xmlsec1 missing: run scripts/setup-test-peers.sh (Debian package xmlsec1)");
    }
    run(Command::new("xmlsec1")
        .arg("--verify")
        .arg("--trusted-pem")
        .arg(ca)
        .arg(xml))
}

/// jwcrypto (PyPI) verifying a detached JWS over `payload`, its x5c leaf
/// checked against `ca` (tests/peers/jws_verify.py).
pub fn jwcrypto_verify(jws: &Path, payload: &Path, ca: &Path) -> Result<(bool, String)> {
    run(Command::new(python()?)
        .arg(peer_script("jws_verify.py"))
        .arg(jws)
        .arg(payload)
        .arg(ca))
}

/// `cloud-hub certificate verify` with these arguments (no config, no
/// database): (exit 0, output).
pub fn offline_verify(bundle: &Path, ca: &Path, extra: &[&str]) -> Result<(bool, String)> {
    run(Command::new(crate::bin("cloud-hub")?)
        .args(["--config", "/nonexistent/hub.toml", "certificate", "verify"])
        .arg(bundle)
        .arg("--trust")
        .arg(ca)
        .args(extra))
}

/// The bytes of a GET with a bearer token.
pub async fn get_bytes(url: &str, token: &str) -> Result<Vec<u8>> {
    let r = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await?;
    let s = r.status().as_u16();
    let b = r.bytes().await?.to_vec();
    if s != 200 {
        bail!("GET {url}: {s} {}", String::from_utf8_lossy(&b));
    }
    Ok(b)
}
