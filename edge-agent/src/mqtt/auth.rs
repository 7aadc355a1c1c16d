//! Who may connect to the site bus and which topics each user may publish
//! and subscribe. rumqttd has no ACLs, so the agent's front door checks every
//! CONNECT, PUBLISH and SUBSCRIBE before the broker sees it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use serde::Deserialize;

/// One `[[mqtt.users]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// User name (MQTT username, or the common name of a client certificate).
    pub name: String,
    /// `pbkdf2-sha256$<iterations>$<salt>$<hash>` from `edge-agent mqtt hash-password`;
    /// none: this user can only come in with a client certificate.
    pub password_hash: Option<String>,
    /// Topic filters this user may publish to (`+`, `#`, `%u` = the user name).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic filters this user may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// May publish retained messages (and Wills with the retain flag). Off by
    /// default: a retained message outlives its sender and is what every new
    /// subscriber sees first (device health is retained).
    #[serde(default)]
    pub retain: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    #[error("password_hash must look like pbkdf2-sha256$<iterations>$<salt>$<hash>")]
    Format,
}

const PREFIX: &str = "pbkdf2-sha256";

/// Hashes a password for the config file.
pub fn hash_password(password: &str, iterations: u32) -> String {
    let salt: [u8; 16] = rand::random();
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), &salt, iterations, &mut out);
    format!(
        "{PREFIX}${iterations}${}${}",
        B64.encode(salt),
        B64.encode(out)
    )
}

/// Checks the format of a stored hash (done when the config is loaded).
pub fn check_hash(stored: &str) -> Result<(), HashError> {
    parse_hash(stored).map(|_| ())
}

fn parse_hash(stored: &str) -> Result<(u32, Vec<u8>, Vec<u8>), HashError> {
    let mut parts = stored.split('$');
    if parts.next() != Some(PREFIX) {
        return Err(HashError::Format);
    }
    let iterations: u32 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .ok_or(HashError::Format)?;
    let salt = parts
        .next()
        .and_then(|s| B64.decode(s).ok())
        .ok_or(HashError::Format)?;
    let hash = parts
        .next()
        .and_then(|s| B64.decode(s).ok())
        .filter(|h| h.len() == 32)
        .ok_or(HashError::Format)?;
    if parts.next().is_some() {
        return Err(HashError::Format);
    }
    Ok((iterations, salt, hash))
}

pub fn verify_password(stored: &str, password: &[u8]) -> bool {
    let Ok((iterations, salt, hash)) = parse_hash(stored) else {
        return false;
    };
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, &salt, iterations, &mut out);
    // Constant-time comparison: no early exit on the first differing byte.
    out.iter().zip(&hash).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Does `topic` (a concrete topic name) match `filter`?
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Is every topic `requested` (a subscription filter) could match also matched by `allowed`?
pub fn filter_covered(allowed: &str, requested: &str) -> bool {
    let mut a = allowed.split('/');
    let mut r = requested.split('/');
    loop {
        match (a.next(), r.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(x)) if x != "#" => {}
            (Some(x), Some(y)) if x == y && x != "+" && x != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A topic *name* (what PUBLISH and Will carry) must be non-empty and hold
/// no wildcard or NUL (MQTT 3.1.1 4.7.1, 1.5.3).
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

impl User {
    fn expand(&self, pattern: &str) -> String {
        pattern.replace("%u", &self.name)
    }
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish
            .iter()
            .any(|p| topic_matches(&self.expand(p), topic))
    }
    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.subscribe
            .iter()
            .any(|p| filter_covered(&self.expand(p), filter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_wrong_passwords_fail() {
        let h = hash_password("s3cret", 1000);
        assert!(check_hash(&h).is_ok());
        assert!(verify_password(&h, b"s3cret"));
        assert!(!verify_password(&h, b"s3creT"));
        assert!(!verify_password("plain-text", b"plain-text"));
        assert_eq!(check_hash("s3cret"), Err(HashError::Format));
    }

    #[test]
    fn topic_rules() {
        assert!(topic_matches(
            "site/+/+/+/telemetry",
            "site/a/b/c/telemetry"
        ));
        assert!(!topic_matches("site/+/+/+/telemetry", "site/a/b/telemetry"));
        assert!(topic_matches("site/#", "site/a/b"));
        assert!(filter_covered("site/#", "site/+/x/#"));
        assert!(filter_covered("site/+/health", "site/a/health"));
        assert!(!filter_covered("site/+/health", "site/#"));
        assert!(!filter_covered("site/a/health", "site/+/health"));
        let u = User {
            name: "th-1".into(),
            password_hash: None,
            publish: vec!["site/+/+/%u/telemetry".into()],
            subscribe: vec![],
            retain: false,
        };
        assert!(u.may_publish("site/s1/thermo/th-1/telemetry"));
        assert!(!u.may_publish("site/s1/thermo/th-2/telemetry"));
        assert!(!u.may_subscribe("#"));
    }
}
