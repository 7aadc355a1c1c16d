//! Which user owns which MQTT client id, and the QoS 2 packet ids the agent
//! has acknowledged with PUBREC but not yet seen released.
//!
//! rumqttd resumes a persistent session (clean session 0) for whoever
//! presents its client id, and has no notion of users: without this
//! registry, a user without subscribe rights could take over another user's
//! session and receive what it had subscribed to. So a client id belongs to
//! the user that created its session for as long as the broker may keep the
//! session; another user presenting it is refused. The same user presenting
//! it again takes the session over, and the old connection is closed at once
//! (rumqttd drops its side, but the front door would otherwise hold the old
//! socket until its next write).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_client: HashMap<String, Entry>,
    next_conn: u64,
}

struct Entry {
    user: String,
    /// Kept after the connection ends (clean session 0).
    persistent: bool,
    live: Option<(u64, Arc<Notify>)>,
    /// QoS 2 packet ids answered with PUBREC and not yet released: a resent
    /// PUBLISH with one of them is a duplicate (MQTT 3.1.1 4.3.3, method A).
    qos2: HashSet<u16>,
}

/// Why a client id was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct OwnedByAnotherUser;

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `client_id` for `user` (`""` for anonymous). An empty client id
    /// gets a session of its own that nobody can present again.
    pub fn claim(
        self: &Arc<Self>,
        client_id: &str,
        user: &str,
        clean_session: bool,
    ) -> Result<SessionHandle, OwnedByAnotherUser> {
        let close = Arc::new(Notify::new());
        let mut inner = self.lock();
        inner.next_conn += 1;
        let conn = inner.next_conn;
        if client_id.is_empty() {
            return Ok(SessionHandle {
                sessions: Arc::clone(self),
                client_id: None,
                conn,
                close,
                local_qos2: HashSet::new(),
            });
        }
        match inner.by_client.get_mut(client_id) {
            Some(e) if e.user != user => return Err(OwnedByAnotherUser),
            Some(e) => {
                if let Some((_, old)) = e.live.take() {
                    // notify_one keeps a permit: the old connection sees it
                    // even if it is not waiting right now.
                    old.notify_one();
                }
                if clean_session {
                    e.qos2.clear();
                }
                e.persistent = !clean_session;
                e.live = Some((conn, Arc::clone(&close)));
            }
            None => {
                inner.by_client.insert(
                    client_id.to_string(),
                    Entry {
                        user: user.to_string(),
                        persistent: !clean_session,
                        live: Some((conn, Arc::clone(&close))),
                        qos2: HashSet::new(),
                    },
                );
            }
        }
        Ok(SessionHandle {
            sessions: Arc::clone(self),
            client_id: Some(client_id.to_string()),
            conn,
            close,
            local_qos2: HashSet::new(),
        })
    }

    /// Client ids currently bound (for /health and tests).
    pub fn len(&self) -> usize {
        self.lock().by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One connection's hold on its session; dropping it ends the connection's
/// claim (and forgets the session unless it is persistent).
pub struct SessionHandle {
    sessions: Arc<Sessions>,
    client_id: Option<String>,
    conn: u64,
    close: Arc<Notify>,
    /// QoS 2 state of a session without a client id.
    local_qos2: HashSet<u16>,
}

impl SessionHandle {
    /// Resolves when the same user has taken this session over.
    pub fn taken_over(&self) -> Arc<Notify> {
        Arc::clone(&self.close)
    }

    fn with_qos2<T>(&mut self, f: impl FnOnce(&mut HashSet<u16>) -> T) -> T {
        match &self.client_id {
            None => f(&mut self.local_qos2),
            Some(id) => {
                let mut inner = self.sessions.lock();
                match inner.by_client.get_mut(id) {
                    Some(e) => f(&mut e.qos2),
                    None => f(&mut self.local_qos2),
                }
            }
        }
    }

    /// Was this QoS 2 packet id acknowledged with PUBREC and not released yet?
    pub fn qos2_pending(&mut self, pkid: u16) -> bool {
        self.with_qos2(|s| s.contains(&pkid))
    }

    /// Records packet ids answered with PUBREC. Called only once what they
    /// carried is durable: a resend after a failed append must be stored.
    pub fn qos2_received(&mut self, ids: &[u16]) {
        if !ids.is_empty() {
            self.with_qos2(|s| s.extend(ids.iter().copied()));
        }
    }

    /// PUBREL: forgets the id; true if it was the agent's to complete.
    pub fn qos2_release(&mut self, pkid: u16) -> bool {
        self.with_qos2(|s| s.remove(&pkid))
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        let Some(id) = &self.client_id else { return };
        let mut inner = self.sessions.lock();
        let Some(e) = inner.by_client.get_mut(id) else {
            return;
        };
        // A newer connection has taken the session: it is theirs now.
        if e.live.as_ref().is_some_and(|(c, _)| *c != self.conn) {
            return;
        }
        e.live = None;
        if !e.persistent {
            inner.by_client.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_belongs_to_its_user_while_the_session_lives() {
        let s = Arc::new(Sessions::default());
        let a = s.claim("dev-1", "alice", false).unwrap();
        assert!(s.claim("dev-1", "mallory", false).is_err());
        drop(a);
        // Persistent: still alice's after she left.
        assert!(s.claim("dev-1", "mallory", true).is_err());
        let a = s.claim("dev-1", "alice", true).unwrap();
        drop(a);
        // A clean session ends with its connection: the id is free again.
        assert!(s.claim("dev-1", "mallory", true).is_ok());
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn a_takeover_by_the_same_user_closes_the_old_connection() {
        let s = Arc::new(Sessions::default());
        let old = s.claim("dev-1", "alice", false).unwrap();
        let closed = old.taken_over();
        let new = s.claim("dev-1", "alice", false).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), closed.notified())
            .await
            .expect("old connection told to close");
        // The old handle ending does not end the new connection's claim.
        drop(old);
        assert!(s.claim("dev-1", "mallory", true).is_err());
        drop(new);
    }

    #[test]
    fn qos2_ids_survive_a_reconnect_of_a_persistent_session_only() {
        let s = Arc::new(Sessions::default());
        let mut a = s.claim("dev-1", "alice", false).unwrap();
        a.qos2_received(&[7]);
        drop(a);
        let mut a = s.claim("dev-1", "alice", false).unwrap();
        assert!(a.qos2_pending(7));
        assert!(a.qos2_release(7));
        assert!(!a.qos2_pending(7));
        a.qos2_received(&[8]);
        drop(a);
        let mut a = s.claim("dev-1", "alice", true).unwrap();
        assert!(!a.qos2_pending(8));
        let mut anon = s.claim("", "", true).unwrap();
        anon.qos2_received(&[1]);
        assert!(anon.qos2_pending(1));
    }
}
