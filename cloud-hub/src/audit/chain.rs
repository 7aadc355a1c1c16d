//! What an entry's hash covers. Changing anything here breaks every chain
//! already stored: add a version instead.
//!
//! hash = SHA-256(prev_hash || field_1 || ... || field_n), each field written
//! as a u32 big-endian length and its UTF-8 bytes, an absent field as the
//! length 0xFFFF_FFFF; fields in this order: id (decimal), recorded_at,
//! occurred_at (RFC 3339, microseconds, `Z`), actor_kind, actor, action,
//! target, gateway_id, source_addr, user_agent, before, after (JSON text as
//! stored). The first entry's prev_hash is 32 zero bytes.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

pub const GENESIS: [u8; 32] = [0u8; 32];

/// The fields of one row, as stored.
pub struct Fields<'a> {
    pub id: i64,
    pub recorded_at: DateTime<Utc>,
    pub occurred_at: DateTime<Utc>,
    pub actor_kind: &'a str,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub gateway_id: Option<&'a str>,
    pub source_addr: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub before: Option<&'a str>,
    pub after: Option<&'a str>,
}

pub fn hash(prev: &[u8], f: &Fields<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    let id = f.id.to_string();
    let recorded = timestamp(f.recorded_at);
    let occurred = timestamp(f.occurred_at);
    for field in [
        Some(id.as_str()),
        Some(recorded.as_str()),
        Some(occurred.as_str()),
        Some(f.actor_kind),
        Some(f.actor),
        Some(f.action),
        Some(f.target),
        f.gateway_id,
        f.source_addr,
        f.user_agent,
        f.before,
        f.after,
    ] {
        match field {
            Some(s) => {
                h.update((s.len() as u32).to_be_bytes());
                h.update(s.as_bytes());
            }
            None => h.update(u32::MAX.to_be_bytes()),
        }
    }
    h.finalize().into()
}

/// PostgreSQL keeps microseconds: hash what it will give back.
pub fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(actor: &str) -> Fields<'_> {
        let t = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default();
        Fields {
            id: 1,
            recorded_at: t,
            occurred_at: t,
            actor_kind: "user",
            actor,
            action: "user.create",
            target: "user:bob",
            gateway_id: None,
            source_addr: Some("127.0.0.1"),
            user_agent: None,
            before: None,
            after: Some("{\"role\":\"viewer\"}"),
        }
    }

    #[test]
    fn every_field_and_the_previous_hash_count() {
        let a = hash(&GENESIS, &fields("alice"));
        assert_ne!(a, hash(&GENESIS, &fields("alicf")));
        assert_ne!(a, hash(&[1u8; 32], &fields("alice")));
        // An absent field is not the same as an empty one.
        let mut f = fields("alice");
        f.user_agent = Some("");
        assert_ne!(a, hash(&GENESIS, &f));
        // Moving bytes between adjacent fields changes the hash.
        let mut g = fields("alice");
        g.actor = "aliceuser.create";
        g.action = "";
        assert_ne!(a, hash(&GENESIS, &g));
    }
}
