//! What a certificate carries to prove, offline, that it was logged: a
//! signed tree head and the audit path of its entry in that tree. Pure: the
//! offline verifier checks it with the log's public key and nothing else.

use super::merkle::{self, Hash, ProofError};
use super::sth::{self, SignedTreeHead, SthError};
use serde::{Deserialize, Serialize};

/// An entry's inclusion proof with the signed head it leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionBundle {
    pub leaf_index: u64,
    #[serde(with = "sth::hex_hash")]
    pub leaf_hash: Hash,
    #[serde(with = "hex_hashes")]
    pub audit_path: Vec<Hash>,
    pub signed_tree_head: SignedTreeHead,
}

/// Why a bundle does not prove its entry was logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("the entry's leaf hash is not the bundle's: the entry was changed")]
    WrongEntry,
    #[error("tree head: {0}")]
    Head(#[from] SthError),
    #[error("inclusion proof: {0}")]
    Proof(#[from] ProofError),
}

/// Checks that `entry` is in the log whose key is `public_key`: its leaf
/// hash, the head's signature, the audit path to the head's root.
pub fn verify_bundle(
    b: &InclusionBundle,
    entry: &[u8],
    public_key: &[u8; 32],
) -> Result<(), BundleError> {
    if merkle::leaf_hash(entry) != b.leaf_hash {
        return Err(BundleError::WrongEntry);
    }
    sth::verify_sth(&b.signed_tree_head, public_key)?;
    merkle::verify_inclusion(
        &b.leaf_hash,
        b.leaf_index,
        b.signed_tree_head.tree_size,
        &b.audit_path,
        &b.signed_tree_head.root_hash,
    )?;
    Ok(())
}

/// serde: a list of hashes as hex strings.
pub mod hex_hashes {
    use super::Hash;
    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};

    pub fn serialize<S: Serializer>(v: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for h in v {
            seq.serialize_element(&super::sth::to_hex(h))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                super::sth::hash_from_hex(s)
                    .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
            })
            .collect()
    }
}
