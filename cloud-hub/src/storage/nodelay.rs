//! TCP_NODELAY for the database connections.
//!
//! sqlx (0.9) never sets it. For ordinary queries that costs nothing (one
//! write, then a reply), but COPY ends with a small CopyDone written right
//! after the data, and Nagle's algorithm holds it until the server's delayed
//! ACK (40 ms on Linux): measured 42 ms per batch. sqlx exposes no socket,
//! so after each new connection this sets the option on every TCP socket of
//! the process that lacks it: harmless for the others (the gRPC and HTTP
//! servers' sockets want it too), and only setsockopt on our own descriptors.

use std::os::fd::BorrowedFd;

/// Returns how many sockets were switched.
pub fn set_on_all_tcp_sockets() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut n = 0;
    for entry in dir.flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: the descriptor stays open for this call in practice (it is
        // one of ours); if it was closed meanwhile, the calls fail with EBADF,
        // and setting TCP_NODELAY on a reused descriptor is harmless.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&borrowed);
        let tcp = sock.r#type().is_ok_and(|t| t == socket2::Type::STREAM)
            && sock.peer_addr().is_ok_and(|a| a.is_ipv4() || a.is_ipv6());
        if tcp && sock.tcp_nodelay().is_ok_and(|on| !on) && sock.set_tcp_nodelay(true).is_ok() {
            n += 1;
        }
    }
    n
}
