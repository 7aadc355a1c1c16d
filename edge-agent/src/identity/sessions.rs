//! Login sessions: a random token in the cookie, a random CSRF token the
//! page sends back in a header on every state change.
//!
//! Only the SHA-256 of each session token is kept, as the map key: looking a
//! session up by the hash of what the client presented reveals nothing
//! through timing about tokens that exist. Sessions are in memory: a restart
//! ends them all (see the module doc of `identity`).

use super::{Role, UserStore, same_secret};
use base64::Engine;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a request authenticated by a session acts as.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    /// The token the client must echo in `X-CSRF-Token` on state changes.
    pub csrf: String,
}

struct Entry {
    user: String,
    csrf: String,
    /// The password hash at login: a password change ends older sessions.
    password_hash: String,
    created: Instant,
    last_used: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("no such session (logged out, forged, or the agent restarted)")]
    Unknown,
    #[error("session expired")]
    Expired,
    #[error("the session's user was removed or changed password")]
    UserGone,
}

impl SessionError {
    /// Label for the refusal counter.
    pub fn reason(self) -> &'static str {
        match self {
            SessionError::Unknown => "unknown_session",
            SessionError::Expired => "expired_session",
            SessionError::UserGone => "user_gone",
        }
    }
}

pub struct Sessions {
    idle: Duration,
    max_age: Duration,
    map: Mutex<HashMap<[u8; 32], Entry>>,
}

/// Sessions kept at most; past it the least recently used one is ended.
const MAX_SESSIONS: usize = 10_000;

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut b[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn key(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    pub fn new(idle: Duration, max_age: Duration) -> Sessions {
        Sessions {
            idle,
            max_age,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session for `user`; returns (session token, CSRF token).
    pub fn create(&self, user: &super::User) -> (String, String) {
        let (token, csrf) = (random_token(), random_token());
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, e| !self.expired(e, now));
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            key(&token),
            Entry {
                user: user.name.clone(),
                csrf: csrf.clone(),
                password_hash: user.password_hash.clone(),
                created: now,
                last_used: now,
            },
        );
        (token, csrf)
    }

    fn expired(&self, e: &Entry, now: Instant) -> bool {
        now.duration_since(e.last_used) > self.idle || now.duration_since(e.created) > self.max_age
    }

    /// The session a token names, with the user's role as the users file says
    /// now; refreshes its idle timer.
    pub fn check(&self, token: &str, users: &UserStore) -> Result<Session, SessionError> {
        let k = key(token);
        let now = Instant::now();
        let mut map = self.lock();
        let e = map.get_mut(&k).ok_or(SessionError::Unknown)?;
        if self.expired(e, now) {
            map.remove(&k);
            return Err(SessionError::Expired);
        }
        let current = users
            .get(&e.user)
            .filter(|u| same_secret(u.password_hash.as_bytes(), e.password_hash.as_bytes()));
        let Some(user) = current else {
            map.remove(&k);
            return Err(SessionError::UserGone);
        };
        e.last_used = now;
        Ok(Session {
            user: user.name,
            role: user.role,
            csrf: e.csrf.clone(),
        })
    }

    /// Whether a token still names a live session, without refreshing its
    /// idle timer: a page left open on a live stream is not someone using
    /// the gateway, so it must not keep an unattended session alive.
    pub fn peek(&self, token: &str, users: &UserStore) -> Result<(), SessionError> {
        let k = key(token);
        let now = Instant::now();
        let map = self.lock();
        let e = map.get(&k).ok_or(SessionError::Unknown)?;
        if self.expired(e, now) {
            return Err(SessionError::Expired);
        }
        let same = users
            .get(&e.user)
            .is_some_and(|u| same_secret(u.password_hash.as_bytes(), e.password_hash.as_bytes()));
        if same {
            Ok(())
        } else {
            Err(SessionError::UserGone)
        }
    }

    /// Ends a session; true if it existed.
    pub fn revoke(&self, token: &str) -> bool {
        self.lock().remove(&key(token)).is_some()
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let users = UserStore::new(dir.path().join("users.json"));
        users.add("ann", Role::Viewer, "pw").unwrap();
        let ann = users.get("ann").unwrap();
        let s = Sessions::new(Duration::from_millis(200), Duration::from_secs(60));
        let (token, csrf) = s.create(&ann);
        let got = s.check(&token, &users).unwrap();
        assert_eq!((got.user.as_str(), got.csrf), ("ann", csrf));
        assert_eq!(
            s.check("forged", &users).unwrap_err(),
            SessionError::Unknown
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(s.check(&token, &users).unwrap_err(), SessionError::Expired);
        let (token, _) = s.create(&ann);
        assert!(s.revoke(&token));
        assert_eq!(s.check(&token, &users).unwrap_err(), SessionError::Unknown);
        // argon2 in a debug build takes longer than the idle time above.
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        let (token, _) = s.create(&ann);
        users.set_password("ann", "new").unwrap();
        assert_eq!(s.check(&token, &users).unwrap_err(), SessionError::UserGone);
    }

    #[test]
    fn peeking_does_not_keep_a_session_alive() {
        let dir = tempfile::tempdir().unwrap();
        let users = UserStore::new(dir.path().join("users.json"));
        users.add("ann", Role::Viewer, "pw").unwrap();
        let ann = users.get("ann").unwrap();
        let s = Sessions::new(Duration::from_millis(300), Duration::from_secs(60));
        let (token, _) = s.create(&ann);
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(100));
            let _ = s.peek(&token, &users);
        }
        assert_eq!(s.peek(&token, &users).unwrap_err(), SessionError::Expired);
        assert_eq!(s.peek("forged", &users).unwrap_err(), SessionError::Unknown);
    }

    #[test]
    fn the_absolute_lifetime_holds_even_for_a_busy_session() {
        let dir = tempfile::tempdir().unwrap();
        let users = UserStore::new(dir.path().join("users.json"));
        users.add("ann", Role::Viewer, "pw").unwrap();
        let s = Sessions::new(Duration::from_secs(60), Duration::from_millis(250));
        let (token, _) = s.create(&users.get("ann").unwrap());
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(50));
            assert!(s.check(&token, &users).is_ok());
        }
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(s.check(&token, &users).unwrap_err(), SessionError::Expired);
    }
}
