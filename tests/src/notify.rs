//! The service manager's end of systemd's notification protocol, for tests:
//! a real `UnixDatagram` socket given to a daemon as `$NOTIFY_SOCKET` (with
//! `$WATCHDOG_USEC`), every datagram kept in order with its arrival time.

use crate::wait_for;
use anyhow::{Context, Result};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UnixDatagram;

/// One datagram, when it came, and whether the daemon's ports answered then.
#[derive(Debug, Clone)]
pub struct Message {
    pub text: String,
    pub at: Instant,
    pub ports_answered: bool,
}

/// The service manager's end: every datagram the daemon sends, in order.
pub struct Manager {
    socket: std::path::PathBuf,
    seen: Arc<Mutex<Vec<Message>>>,
}

impl Manager {
    /// Binds a socket in `dir`; on each datagram, checks `ports` accept connections.
    pub fn bind(dir: &std::path::Path, ports: Vec<u16>) -> Result<Manager> {
        let socket = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&socket).context("bind the notify socket")?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf).await {
                let at = Instant::now();
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let mut ports_answered = true;
                for p in &ports {
                    if tokio::net::TcpStream::connect(("127.0.0.1", *p))
                        .await
                        .is_err()
                    {
                        ports_answered = false;
                    }
                }
                if let Ok(mut s) = sink.lock() {
                    s.push(Message {
                        text,
                        at,
                        ports_answered,
                    });
                }
            }
        });
        Ok(Manager { socket, seen })
    }

    /// The daemon's environment: the socket and a watchdog of `watchdog_usec`.
    pub fn env(&self, watchdog_usec: &str) -> Vec<(String, String)> {
        vec![
            ("NOTIFY_SOCKET".into(), self.socket.display().to_string()),
            ("WATCHDOG_USEC".into(), watchdog_usec.into()),
        ]
    }

    pub fn messages(&self) -> Vec<Message> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits for a message after the first `from` that satisfies `pred`;
    /// returns its index.
    pub async fn wait(
        &self,
        what: &str,
        from: usize,
        pred: impl Fn(&str) -> bool,
    ) -> Result<usize> {
        wait_for(what, Duration::from_secs(60), || async {
            Ok(self
                .messages()
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, m)| pred(&m.text))
                .map(|(i, _)| i))
        })
        .await
    }

    pub fn count(&self, from: usize, pred: impl Fn(&str) -> bool) -> usize {
        self.messages()
            .iter()
            .skip(from)
            .filter(|m| pred(&m.text))
            .count()
    }
}

pub fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}
