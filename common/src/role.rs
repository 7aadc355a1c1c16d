//! The roles of people and machines, the same on the hub and on gateways:
//! each includes every permission of the ones before it. What a role may do
//! is each daemon's permission table (docs/security.md).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: data, live state, health, metrics.
    Viewer,
    /// Also writes to field devices (commands, device writes) and runs tests.
    Operator,
    /// Also changes the asset registry, approves runs, issues certificates.
    Engineer,
    /// Also manages users, keys, sites; reads the audit trail.
    Admin,
}

impl Role {
    /// Weakest first.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Engineer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Engineer => "engineer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::parse(s)
            .ok_or_else(|| format!("unknown role {s:?}: one of viewer, operator, engineer, admin"))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Constant-time equality, for secrets a caller presents (token digests,
/// CSRF tokens): the time taken must not tell how much matched. Lengths are
/// not secret (digests and tokens have fixed lengths).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_named() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Engineer);
        assert!(Role::Engineer < Role::Admin);
        for r in Role::ALL {
            assert_eq!(r.to_string().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
        assert!(same_secret(b"abc", b"abc") && !same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
