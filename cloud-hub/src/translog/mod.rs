//! The transparency log (issue #15): every issued and revoked certificate
//! appended to an append-only Merkle tree (RFC 6962 hashing), signed tree
//! heads, inclusion and consistency proofs. docs/transparency-log.md.
//!
//! Rooms: `merkle` (hashing, proofs, verifiers; pure), `sth` (signed tree
//! heads: encoding and verification; pure), `store` (the tables, append,
//! proofs from the database), `signer` (the log's key, signing heads),
//! `bundle` (what a certificate carries: a head and its entry's audit path;
//! pure). An offline verifier needs only `merkle`, `sth` and `bundle`.

pub mod bundle;
pub mod merkle;
pub mod signer;
pub mod sth;
pub mod store;

pub use bundle::{BundleError, InclusionBundle, verify_bundle};
pub use merkle::{Hash, ProofError, verify_consistency, verify_inclusion};
pub use signer::LogSigner;
pub use sth::{SignedTreeHead, SthError, verify_sth};
pub use store::{Head, LogEntry, StoredEntry, append, append_many};

/// What the log's database side can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Proof(#[from] ProofError),
    #[error("entry of {len} bytes; the log takes at most {max}")]
    TooLarge { len: usize, max: usize },
    #[error("the log's tables are inconsistent: {0}")]
    Corrupt(String),
    #[error("log signing key: {0}")]
    Key(String),
}
