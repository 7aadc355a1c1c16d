//! Password hashes: argon2id with the crate's defaults (19 MiB, 2 passes,
//! 1 lane: OWASP's recommendation), in the PHC string format so the
//! parameters travel with each hash and can be raised later.
//!
//! Hashing costs ~50 ms of one core on purpose; it runs on the blocking pool
//! behind a semaphore, so a flood of logins queues here instead of taking
//! every core from the requests that read data.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::sync::{Arc, OnceLock};
use tokio::sync::Semaphore;

/// Passwords shorter than this are refused when set.
pub const MIN_LEN: usize = 12;
/// Longer than this is refused before hashing (a 1 MB "password" would be
/// hashed happily, and slowly).
pub const MAX_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("a password must have at least {MIN_LEN} characters")]
    TooShort,
    #[error("a password must have at most {MAX_LEN} bytes")]
    TooLong,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

fn permits() -> &'static Arc<Semaphore> {
    static P: OnceLock<Arc<Semaphore>> = OnceLock::new();
    P.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Arc::new(Semaphore::new(cores.div_ceil(2).max(1)))
    })
}

pub fn check_policy(password: &str) -> Result<(), PasswordError> {
    if password.len() > MAX_LEN {
        return Err(PasswordError::TooLong);
    }
    if password.chars().count() < MIN_LEN {
        return Err(PasswordError::TooShort);
    }
    Ok(())
}

/// A new argon2id hash of `password` (policy checked first).
pub async fn hash(password: &str) -> Result<String, PasswordError> {
    check_policy(password)?;
    let pw = password.to_string();
    run_limited(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(pw.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    })
    .await
}

/// Whether `password` matches `stored`. With `stored` None (no such user) a
/// hash is still computed, so the answer takes as long either way.
pub async fn verify(password: &str, stored: Option<String>) -> bool {
    if password.len() > MAX_LEN {
        return false;
    }
    let pw = password.to_string();
    run_limited(move || {
        let stored = stored.unwrap_or_else(|| dummy_hash().to_string());
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return Ok(false);
        };
        Ok(Argon2::default()
            .verify_password(pw.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .unwrap_or(false)
}

fn dummy_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(b"no such user, no such password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

async fn run_limited<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
) -> Result<T, PasswordError> {
    let _permit = permits()
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PasswordError::Hash(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let h = hash("correct horse battery").await.expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse battery", Some(h.clone())).await);
        assert!(!verify("correct horse batterx", Some(h)).await);
        assert!(!verify("correct horse battery", None).await);
        assert!(matches!(hash("short").await, Err(PasswordError::TooShort)));
        assert!(matches!(
            hash(&"x".repeat(MAX_LEN + 1)).await,
            Err(PasswordError::TooLong)
        ));
    }
}
