//! Who is calling the REST API and what they may do.
//!
//! Principals come from three places: the hub's own users (password login
//! -> Ed25519-signed access token + rotating refresh token), API keys for
//! machines, and access tokens of a configured OpenID Connect issuer. Each
//! has a role and optionally a list of sites it is limited to; what a role
//! may do is the permission table in [`permissions`].
//!
//! Rooms: `permissions` (roles, the route table), `passwords` (argon2id),
//! `signing` (the hub's token signing keys and JWTs), `sessions` (login,
//! refresh-token families, logout), `api_keys`, `users`, `sites` (which site a
//! gateway is in), `limiter` (brute-force limits), `oidc` (the external
//! issuer), `service` (turns a bearer token into a [`Principal`]).

pub mod api_keys;
pub mod limiter;
pub mod oidc;
pub mod passwords;
pub mod permissions;
pub mod service;
pub mod sessions;
pub mod signing;
pub mod sites;
pub mod users;

pub use permissions::{Permission, Role, Scope};
pub use service::Identity;

use serde::Serialize;

/// An authenticated caller.
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    pub kind: crate::audit::ActorKind,
    /// `alice`, `key:k3x9...`, `oidc:<subject>`: what the audit trail names.
    pub id: String,
    pub role: Role,
    /// None: every site.
    pub sites: Option<Vec<String>>,
}

impl Principal {
    pub fn may(&self, p: Permission) -> bool {
        p.allows(self.role)
    }
}

/// Why a credential was refused. The message is safe to show the caller;
/// `reason` labels the failure metric.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{message}")]
    Unauthenticated {
        reason: &'static str,
        message: String,
    },
    #[error("{message}")]
    Forbidden {
        reason: &'static str,
        message: String,
    },
    #[error("too many attempts from this address; try again in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error("identity store: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

impl AuthError {
    pub fn unauthenticated(reason: &'static str, message: impl Into<String>) -> AuthError {
        AuthError::Unauthenticated {
            reason,
            message: message.into(),
        }
    }

    pub fn forbidden(reason: &'static str, message: impl Into<String>) -> AuthError {
        AuthError::Forbidden {
            reason,
            message: message.into(),
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Unauthenticated { reason, .. } | AuthError::Forbidden { reason, .. } => {
                reason
            }
            AuthError::RateLimited { .. } => "rate_limited",
            AuthError::Db(_) => "database",
            AuthError::Internal(_) => "internal",
        }
    }
}

/// 32 random bytes from the OS, as URL-safe base64 (no padding).
pub(crate) fn random_token() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("the OS random number generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub(crate) fn sha256(s: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).to_vec()
}

pub(crate) use qi_common::role::same_secret as constant_time_eq;
