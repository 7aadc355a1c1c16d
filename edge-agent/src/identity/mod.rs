//! Who may use the gateway's local API: local users with roles, their
//! password hashes, login sessions and the login rate limit.
//!
//! The gateway often runs offline from the hub, so its users live on the
//! gateway itself, in one file ([`users`]) managed by `edge-agent user ...`
//! and re-read by the running daemon when it changes. Sessions ([`sessions`])
//! are kept in memory only: a restart logs everyone out, which keeps logout a
//! sure revocation without a second file of secrets on the gateway's disk.
//! Nothing here knows about HTTP; `local_api` maps it onto requests.

mod config;
mod password;
mod ratelimit;
mod sessions;
mod users;

pub use config::AuthConfig;
pub use password::{hash_password, verify_password};
pub use ratelimit::LoginLimiter;
pub use sessions::{Session, SessionError, Sessions};
pub use users::{User, UserError, UserStore, valid_user_name};

/// The roles are the hub's (one definition in `qi_common::role`).
pub use qi_common::role::{Role, same_secret};

/// Lowercase hex SHA-256, the form configured token hashes take.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Engineer);
        assert!(Role::Engineer < Role::Admin);
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
        assert!(same_secret(b"abc", b"abc") && !same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
    }
}
