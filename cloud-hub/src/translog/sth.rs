//! Signed tree heads, pure (no database): the exact bytes signed, and their
//! verification with the log's Ed25519 public key.
//!
//! The signed message is RFC 6962 section 3.5's `TreeHeadSignature`, 50
//! bytes:
//!
//! | bytes | field | value |
//! |---|---|---|
//! | 0 | version | 0 (v1) |
//! | 1 | signature_type | 1 (tree_hash) |
//! | 2..10 | timestamp | milliseconds since the Unix epoch, u64 big-endian |
//! | 10..18 | tree_size | u64 big-endian |
//! | 18..50 | sha256_root_hash | the root hash |
//!
//! signed with Ed25519 (RFC 8032, the message itself, no pre-hash): a
//! 64-byte signature. In JSON every hash and the signature are lowercase hex.

use super::merkle::Hash;
use serde::{Deserialize, Serialize};

/// Length of the signed message.
pub const SIGNED_LEN: usize = 50;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the raw
/// 32-byte key follows.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a tree head or a key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SthError {
    #[error("the tree head's signature does not verify with this key")]
    BadSignature,
    #[error("not an Ed25519 public key: {0}")]
    BadKey(String),
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// A signed tree head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTreeHead {
    pub tree_size: u64,
    /// Milliseconds since the Unix epoch when the log signed it.
    pub timestamp: u64,
    #[serde(with = "hex_hash")]
    pub root_hash: Hash,
    /// Ed25519 over [`signed_bytes`], 64 bytes.
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

impl SignedTreeHead {
    /// The bytes this head's signature is over.
    pub fn signed_bytes(&self) -> [u8; SIGNED_LEN] {
        signed_bytes(self.tree_size, self.timestamp, &self.root_hash)
    }
}

/// The message a tree head's signature is over (table above).
pub fn signed_bytes(tree_size: u64, timestamp: u64, root: &Hash) -> [u8; SIGNED_LEN] {
    let mut m = [0u8; SIGNED_LEN];
    m[0] = 0;
    m[1] = 1;
    m[2..10].copy_from_slice(&timestamp.to_be_bytes());
    m[10..18].copy_from_slice(&tree_size.to_be_bytes());
    m[18..50].copy_from_slice(root);
    m
}

/// Checks a tree head's signature with the log's raw 32-byte Ed25519 key.
pub fn verify_sth(sth: &SignedTreeHead, public_key: &[u8; 32]) -> Result<(), SthError> {
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key);
    key.verify(&sth.signed_bytes(), &sth.signature)
        .map_err(|_| SthError::BadSignature)
}

/// The SubjectPublicKeyInfo DER of a raw Ed25519 key.
pub fn public_key_der(key: &[u8; 32]) -> Vec<u8> {
    [SPKI_PREFIX.as_slice(), key.as_slice()].concat()
}

/// The key as PEM (`-----BEGIN PUBLIC KEY-----`), as OpenSSL writes it.
pub fn public_key_pem(key: &[u8; 32]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(public_key_der(key));
    format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
}

/// The raw key from a PEM `PUBLIC KEY` block holding an Ed25519 key.
pub fn public_key_from_pem(pem: &str) -> Result<[u8; 32], SthError> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN PUBLIC KEY-----")
        .skip(1)
        .take_while(|l| *l != "-----END PUBLIC KEY-----")
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|e| SthError::BadKey(format!("PEM body is not base64: {e}")))?;
    match der.strip_prefix(SPKI_PREFIX.as_slice()) {
        Some(raw) => raw
            .try_into()
            .map_err(|_| SthError::BadKey("the key is not 32 bytes".into())),
        None => Err(SthError::BadKey(
            "no PUBLIC KEY block with an Ed25519 SubjectPublicKeyInfo".into(),
        )),
    }
}

/// The log's id: SHA-256 of its public key's SubjectPublicKeyInfo DER (as
/// RFC 6962 section 3.2 defines a log's id).
pub fn log_id(key: &[u8; 32]) -> Hash {
    use sha2::Digest;
    sha2::Sha256::digest(public_key_der(key)).into()
}

/// Lowercase hex.
pub fn to_hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// Hex (either case) to bytes.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// A 32-byte hash from 64 hex digits.
pub fn hash_from_hex(s: &str) -> Option<Hash> {
    from_hex(s)?.try_into().ok()
}

/// serde: a hash as 64 hex digits.
pub mod hex_hash {
    use super::Hash;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::to_hex(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = String::deserialize(d)?;
        super::hash_from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// serde: bytes as hex.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::to_hex(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        super::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair;

    fn pair() -> ring::signature::Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key")
    }

    fn signed(k: &ring::signature::Ed25519KeyPair, size: u64, root: Hash) -> SignedTreeHead {
        let ts = 1_790_000_000_123;
        SignedTreeHead {
            tree_size: size,
            timestamp: ts,
            root_hash: root,
            signature: k.sign(&signed_bytes(size, ts, &root)).as_ref().to_vec(),
        }
    }

    #[test]
    fn the_signed_bytes_are_rfc_6962s_tree_head_signature() {
        let m = signed_bytes(0x0102, 0x0a0b, &[7u8; 32]);
        assert_eq!(&m[..2], &[0, 1]);
        assert_eq!(&m[2..10], &[0, 0, 0, 0, 0, 0, 0x0a, 0x0b]);
        assert_eq!(&m[10..18], &[0, 0, 0, 0, 0, 0, 0x01, 0x02]);
        assert_eq!(&m[18..], &[7u8; 32]);
    }

    #[test]
    fn a_head_verifies_and_any_change_fails() {
        let k = pair();
        let public: [u8; 32] = k.public_key().as_ref().try_into().expect("32");
        let sth = signed(&k, 42, [9u8; 32]);
        verify_sth(&sth, &public).expect("verifies");
        let json = serde_json::to_string(&sth).expect("json");
        let back: SignedTreeHead = serde_json::from_str(&json).expect("back");
        verify_sth(&back, &public).expect("verifies after JSON");
        let mut bad = sth.clone();
        bad.tree_size = 43;
        assert_eq!(verify_sth(&bad, &public), Err(SthError::BadSignature));
        let mut bad = sth.clone();
        bad.timestamp += 1;
        assert!(verify_sth(&bad, &public).is_err());
        let mut bad = sth.clone();
        bad.root_hash[31] ^= 1;
        assert!(verify_sth(&bad, &public).is_err());
        let mut bad = sth.clone();
        bad.signature[0] ^= 1;
        assert!(verify_sth(&bad, &public).is_err());
        let other: [u8; 32] = pair().public_key().as_ref().try_into().expect("32");
        assert!(verify_sth(&sth, &other).is_err());
        bad.signature.truncate(10);
        assert!(verify_sth(&bad, &public).is_err());
    }

    #[test]
    fn the_key_round_trips_through_pem() {
        let k = pair();
        let public: [u8; 32] = k.public_key().as_ref().try_into().expect("32");
        let pem = public_key_pem(&public);
        assert_eq!(public_key_from_pem(&pem), Ok(public));
        assert!(
            public_key_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .is_err()
        );
        assert_eq!(log_id(&public).len(), 32);
        assert_eq!(hash_from_hex(&to_hex(&[0xabu8; 32])), Some([0xab; 32]));
        assert_eq!(from_hex("zz"), None);
    }
}
