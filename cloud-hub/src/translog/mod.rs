//! The transparency log (issue #15): every issued and revoked certificate
//! appended to an append-only Merkle tree (RFC 6962 hashing), signed tree
//! heads, inclusion and consistency proofs. docs/transparency-log.md.
//!
//! Rooms: `merkle` (hashing, proofs, verifiers; pure), `sth` (signed tree
//! heads: encoding and verification; pure), `store` (the tables, append,
//! proofs from the database), `signer` (the log's key and signing).

pub mod merkle;
