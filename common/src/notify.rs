//! The systemd notification protocol (`sd_notify(3)`) without libsystemd:
//! one datagram of `KEY=VALUE` lines to the socket named by `$NOTIFY_SOCKET`
//! (a path, or `@name` for a socket in the abstract namespace). Without the
//! variable (not started by systemd with `Type=notify`) every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET {0:?} is neither an absolute path nor an @abstract name")]
    BadAddress(String),
    #[error("cannot send to NOTIFY_SOCKET {socket}: {source}")]
    Send {
        socket: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
enum Address {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

/// Where this process reports its state to the service manager.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: String,
    address: Address,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` when the variable is unset or empty.
    pub fn from_env() -> Result<Option<Notifier>, NotifyError> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(s) if !s.is_empty() => Notifier::new(&s).map(Some),
            _ => Ok(None),
        }
    }

    pub fn new(socket: &str) -> Result<Notifier, NotifyError> {
        let address = if let Some(name) = socket.strip_prefix('@') {
            Address::Abstract(name.as_bytes().to_vec())
        } else if socket.starts_with('/') {
            Address::Path(PathBuf::from(socket))
        } else {
            return Err(NotifyError::BadAddress(socket.to_string()));
        };
        Ok(Notifier {
            socket: socket.to_string(),
            address,
        })
    }

    /// Sends one message (`READY=1`, `STATUS=...`, several lines at once).
    pub fn send(&self, state: &str) -> Result<(), NotifyError> {
        let err = |source| NotifyError::Send {
            socket: self.socket.clone(),
            source,
        };
        let sock = UnixDatagram::unbound().map_err(err)?;
        match &self.address {
            Address::Path(p) => sock.send_to(state.as_bytes(), p).map(|_| ()),
            Address::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).map_err(err)?;
                sock.send_to_addr(state.as_bytes(), &addr).map(|_| ())
            }
        }
        .map_err(err)
    }
}

/// The watchdog interval systemd expects pings within (`WatchdogSec=`),
/// from `$WATCHDOG_USEC`; `None` when unset, zero, unparsable, or meant for
/// another process (`$WATCHDOG_PID`).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// `STATUS=` text on one line: the protocol is line-based, so a newline in
/// a status would start a bogus assignment.
pub fn status_line(text: &str) -> String {
    format!("STATUS={}", text.replace(['\n', '\r'], " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let n = sock.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn a_path_socket_receives_the_datagram() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::new(path.to_str().expect("utf-8")).expect("address");
        n.send("READY=1\nSTATUS=up").expect("send");
        assert_eq!(recv(&rx), "READY=1\nSTATUS=up");
    }

    #[test]
    fn an_abstract_socket_receives_the_datagram() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("qi-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract name");
        let rx = UnixDatagram::bind_addr(&addr).expect("bind");
        let n = Notifier::new(&format!("@{name}")).expect("address");
        n.send("WATCHDOG=1").expect("send");
        assert_eq!(recv(&rx), "WATCHDOG=1");
    }

    #[test]
    fn a_relative_socket_name_is_refused() {
        assert!(matches!(
            Notifier::new("notify"),
            Err(NotifyError::BadAddress(_))
        ));
    }

    #[test]
    fn a_status_stays_on_one_line() {
        assert_eq!(status_line("a\nb\r"), "STATUS=a b ");
    }
}
