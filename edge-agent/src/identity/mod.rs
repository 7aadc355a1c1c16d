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

/// What a user may do, each role including the ones below it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only screens: device state, health, metrics.
    Viewer,
    /// Device writes (and run control).
    Operator,
    /// Configuration work (reserved for the coming web page).
    Engineer,
    /// User management (reserved; today users are managed with the CLI).
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Engineer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Engineer => "engineer",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: one of viewer, operator, engineer, admin"))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Constant-time equality, for secrets a caller presents (CSRF tokens,
/// the metrics token's hash): the time taken must not tell how much matched.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

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
