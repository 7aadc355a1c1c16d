//! Idempotent creates: a client (a LIMS) that sends `Idempotency-Key` with
//! a create may retry it after a lost answer and gets the first answer back
//! instead of a second object. The key is claimed in the create's own
//! transaction, before the create: a concurrent retry with the same key
//! waits on the claim's row and then replays; a create that fails rolls
//! the claim back, so the key may be used again. Keys are per caller and
//! operation, kept `TTL_HOURS`. The schema is migration 0017; docs/lab.md
//! ("Inbound from a LIMS") is the user's side.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

/// How long an answer is kept for replay.
pub const TTL_HOURS: i64 = 24;
/// Longest key accepted (characters); IETF's draft and the payment APIs
/// that popularised the header use UUIDs or up to 255 characters.
pub const MAX_KEY_LEN: usize = 128;
/// The header's name.
pub const HEADER: &str = "idempotency-key";

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    #[error(
        "`Idempotency-Key` must be 1 to {MAX_KEY_LEN} visible ASCII characters (a UUID is a good key)"
    )]
    BadKey,
    #[error(
        "the Idempotency-Key {0:?} was used by this caller within {TTL_HOURS} h for a different request; use a new key for a new request"
    )]
    Reused(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Checks a key as it arrived in the header.
pub fn check_key(key: &str) -> Result<(), IdempotencyError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if ok {
        Ok(())
    } else {
        Err(IdempotencyError::BadKey)
    }
}

/// The request's fingerprint: the operation and the body as parsed (so
/// whitespace, key order and spelled-out defaults do not make two bodies
/// differ).
pub fn fingerprint<T: Serialize>(operation: &str, body: &T) -> String {
    let mut h = Sha256::new();
    h.update(operation.as_bytes());
    h.update([0]);
    // A struct the handler already parsed always serializes.
    h.update(serde_json::to_vec(body).unwrap_or_default());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a create with a key must do.
#[derive(Debug)]
pub enum Claim {
    /// The key is new: create, then [`record`] the answer in the same
    /// transaction.
    New,
    /// The same request was answered: send this again.
    Replay(Stored),
}

/// A kept answer.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Stored {
    pub status: i16,
    pub etag: Option<String>,
    pub response: Value,
}

/// Claims `key` for `principal`'s `operation` in the caller's transaction.
pub async fn claim(
    conn: &mut PgConnection,
    principal: &str,
    operation: &str,
    key: &str,
    request_sha256: &str,
) -> Result<Claim, IdempotencyError> {
    check_key(key)?;
    // Expired answers go first, so an old key is new again.
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1::int)",
    )
    .bind(TTL_HOURS as i32)
    .execute(&mut *conn)
    .await?;
    // A concurrent holder of the key makes this wait for its commit or
    // rollback: then the row is there (replay) or not (ours).
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (principal, operation, key, request_sha256, status, response)
         VALUES ($1, $2, $3, $4, 0, 'null') ON CONFLICT DO NOTHING",
    )
    .bind(principal)
    .bind(operation)
    .bind(key)
    .bind(request_sha256)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let (sha, stored): (String, Stored) = {
        let row: Option<(String, i16, Option<String>, Value)> = sqlx::query_as(
            "SELECT request_sha256, status, etag, response FROM idempotency_keys
              WHERE principal = $1 AND operation = $2 AND key = $3",
        )
        .bind(principal)
        .bind(operation)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        match row {
            Some((sha, status, etag, response)) => (
                sha,
                Stored {
                    status,
                    etag,
                    response,
                },
            ),
            // Purged between the insert and the read (a TTL boundary):
            // the caller retries and claims it afresh.
            None => return Err(IdempotencyError::Reused(key.to_string())),
        }
    };
    if sha != request_sha256 {
        metrics::counter!(crate::metric_names::HUB_IDEMPOTENT_REQUESTS_TOTAL, "outcome" => "reused")
            .increment(1);
        return Err(IdempotencyError::Reused(key.to_string()));
    }
    metrics::counter!(crate::metric_names::HUB_IDEMPOTENT_REQUESTS_TOTAL, "outcome" => "replayed")
        .increment(1);
    Ok(Claim::Replay(stored))
}

/// Keeps the answer of a create that claimed `key` (same transaction).
pub async fn record(
    conn: &mut PgConnection,
    principal: &str,
    operation: &str,
    key: &str,
    answer: &Stored,
) -> Result<(), IdempotencyError> {
    sqlx::query(
        "UPDATE idempotency_keys SET status = $4, etag = $5, response = $6
          WHERE principal = $1 AND operation = $2 AND key = $3",
    )
    .bind(principal)
    .bind(operation)
    .bind(key)
    .bind(answer.status)
    .bind(&answer.etag)
    .bind(&answer.response)
    .execute(&mut *conn)
    .await?;
    metrics::counter!(crate::metric_names::HUB_IDEMPOTENT_REQUESTS_TOTAL, "outcome" => "created")
        .increment(1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_visible_ascii() {
        assert!(check_key("3f1c2b9a-0000-4000-8000-000000000001").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
        assert!(check_key("a\nb").is_err());
        assert!(check_key("schlüssel").is_err());
    }

    #[test]
    fn the_fingerprint_is_of_the_parsed_body_and_the_operation() {
        #[derive(Serialize)]
        struct B {
            a: i32,
            b: String,
        }
        let x = fingerprint(
            "op",
            &B {
                a: 1,
                b: "x".into(),
            },
        );
        assert_eq!(
            x,
            fingerprint(
                "op",
                &B {
                    a: 1,
                    b: "x".into()
                }
            )
        );
        assert_ne!(
            x,
            fingerprint(
                "op",
                &B {
                    a: 2,
                    b: "x".into()
                }
            )
        );
        assert_ne!(
            x,
            fingerprint(
                "other",
                &B {
                    a: 1,
                    b: "x".into()
                }
            )
        );
    }
}
