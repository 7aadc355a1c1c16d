//! The issuing key and its X.509 chain: loaded from PEM files (ECDSA P-256,
//! PKCS#8; no PKCS#11 module), signing with `ring` (fixed-length r||s, what
//! both XMLDSig's ecdsa-sha256 and JWS's ES256 want), and checking a chain
//! up to a trusted certificate for the offline verifier.

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use sha2::Digest;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Read(String),
    #[error("{0}")]
    Unsupported(String),
}

/// The key certificates are signed with, and the chain that vouches for it
/// (the issuing certificate first, then intermediates).
pub struct IssuingKey {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    chain: Vec<Vec<u8>>,
    fingerprint: String,
}

impl std::fmt::Debug for IssuingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuingKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The certificates of a PEM text, in order.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, KeyError> {
    let mut r = std::io::BufReader::new(pem);
    let certs: Vec<Vec<u8>> = rustls_pemfile::certs(&mut r)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| KeyError::Read(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(KeyError::Read(
            "no CERTIFICATE block in the PEM text".into(),
        ));
    }
    Ok(certs)
}

/// The subject public key (an uncompressed P-256 point) of a certificate.
pub fn public_key(der: &[u8]) -> Result<Vec<u8>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("a certificate does not parse: {e}"))?;
    Ok(cert
        .tbs_certificate
        .subject_pki
        .subject_public_key
        .data
        .to_vec())
}

impl IssuingKey {
    /// From the key file's and the chain file's text.
    pub fn from_pem(key_pem: &[u8], chain_pem: &[u8]) -> Result<IssuingKey, KeyError> {
        let mut r = std::io::BufReader::new(key_pem);
        let mut key = None;
        for item in rustls_pemfile::read_all(&mut r) {
            match item {
                Ok(rustls_pemfile::Item::Pkcs8Key(k)) => {
                    key = Some(k.secret_pkcs8_der().to_vec());
                    break;
                }
                Ok(rustls_pemfile::Item::Pkcs1Key(_) | rustls_pemfile::Item::Sec1Key(_)) => {
                    return Err(KeyError::Unsupported(
                        "the key is not PKCS#8 (`-----BEGIN PRIVATE KEY-----`); convert it with \
                         `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`"
                            .into(),
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(KeyError::Read(format!("the key file is not PEM: {e}"))),
            }
        }
        let key = key.ok_or_else(|| KeyError::Read("no private key in the PEM text".into()))?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key, &rng).map_err(
            |_| {
                KeyError::Unsupported(
                    "the key is not an ECDSA P-256 key (the only kind supported: \
                     `openssl ecparam -name prime256v1 -genkey | openssl pkcs8 -topk8 -nocrypt`)"
                        .into(),
                )
            },
        )?;
        let chain = certs_from_pem(chain_pem)?;
        let leaf_key = public_key(&chain[0]).map_err(KeyError::Read)?;
        if leaf_key != key.public_key().as_ref() {
            return Err(KeyError::Read(
                "the first certificate of the chain is not the key's: put the issuing \
                 certificate first, then its intermediates"
                    .into(),
            ));
        }
        let fingerprint = sha256_hex(&chain[0]);
        Ok(IssuingKey {
            key,
            rng,
            chain,
            fingerprint,
        })
    }

    /// An ECDSA P-256 / SHA-256 signature, r||s (64 bytes).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.key
            .sign(&self.rng, msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| KeyError::Read("signing failed".into()))
    }

    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// SHA-256 of the issuing certificate (hex).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The JWS `kid`: the fingerprint's first 16 hex digits.
    pub fn kid(&self) -> &str {
        &self.fingerprint[..16]
    }
}

/// Checks an r||s ECDSA P-256 signature with an uncompressed public point.
pub fn verify_p256(public_point: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_point)
        .verify(msg, sig)
        .is_ok()
}

/// Checks that `chain` (leaf first) leads to one of the trusted
/// certificates, each certificate valid at `at` (the signing time: a
/// certificate verified years later was signed while its chain was valid),
/// every issuer a CA. Returns the leaf's public key.
pub fn verify_chain(chain: &[Vec<u8>], trusted: &[Vec<u8>], at: i64) -> Result<Vec<u8>, String> {
    use x509_parser::prelude::*;
    if chain.is_empty() {
        return Err("no certificate in the signature".into());
    }
    fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
        X509Certificate::from_der(der)
            .map(|(_, c)| c)
            .map_err(|e| format!("a certificate of the chain does not parse: {e}"))
    }
    let anchors: Vec<X509Certificate<'_>> =
        trusted.iter().map(|d| parse(d)).collect::<Result<_, _>>()?;
    let when = ASN1Time::from_timestamp(at).map_err(|e| format!("time {at}: {e}"))?;
    for (i, der) in chain.iter().enumerate() {
        let cert = parse(der)?;
        let name = cert.subject().to_string();
        if !cert.validity().is_valid_at(when) {
            return Err(format!(
                "certificate {name:?} was not valid at the signing time (valid {} to {})",
                cert.validity().not_before,
                cert.validity().not_after
            ));
        }
        if i > 0 && !cert.is_ca() {
            return Err(format!(
                "certificate {name:?} issues another but is not a CA"
            ));
        }
        if trusted.iter().any(|t| t == der) {
            return public_key(&chain[0]);
        }
        if anchors
            .iter()
            .any(|a| a.is_ca() && cert.verify_signature(Some(a.public_key())).is_ok())
        {
            return public_key(&chain[0]);
        }
        let Some(next) = chain.get(i + 1) else {
            return Err(format!(
                "the chain ends at {name:?} (issued by {:?}), which is not signed by a trusted certificate",
                cert.issuer().to_string()
            ));
        };
        let next = parse(next)?;
        if cert.verify_signature(Some(next.public_key())).is_err() {
            return Err(format!(
                "certificate {name:?} is not signed by the next certificate of the chain ({:?})",
                next.subject().to_string()
            ));
        }
    }
    Err("the chain does not lead to a trusted certificate".into())
}
