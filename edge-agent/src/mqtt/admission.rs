//! Connection budgets of the site bus, shared by every listener (TCP, TLS,
//! WebSocket).
//!
//! A connection that has not yet authenticated (TLS handshake, WebSocket
//! upgrade, CONNECT) holds a *pending* slot; only a successful login moves
//! it into the `max_connections` budget. Pending slots are few and short
//! (`mqtt.connect_timeout_ms`), so silent sockets cannot lock logged-in
//! clients out, and one source address may hold at most
//! `max_connections_per_address` of either kind.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_pending: usize,
    pub per_address: usize,
}

/// Why a connection was turned away; the label of
/// `edge_mqtt_connections_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    TooManyPending,
    TooManyFromAddress,
    TooMany,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::TooManyPending => "too_many_pending",
            Refused::TooManyFromAddress => "too_many_from_address",
            Refused::TooMany => "too_many",
        }
    }
}

pub struct Admission {
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    pending: usize,
    open: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection from `ip`, not yet authenticated.
    pub fn arrive(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refused> {
        let mut s = self.lock();
        if s.pending >= self.limits.max_pending {
            return Err(Refused::TooManyPending);
        }
        let n = s.by_address.entry(ip).or_insert(0);
        if *n >= self.limits.per_address {
            return Err(Refused::TooManyFromAddress);
        }
        *n += 1;
        s.pending += 1;
        metrics::gauge!(crate::metric_names::EDGE_MQTT_PENDING_CONNECTIONS).set(s.pending as f64);
        Ok(Ticket {
            admission: Arc::clone(self),
            ip,
            authenticated: false,
        })
    }

    /// (pending, authenticated) connections now.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.lock();
        (s.pending, s.open)
    }
}

/// A connection's place in the budgets; dropping it gives the place back.
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    authenticated: bool,
}

impl Ticket {
    /// Moves this connection from the pending budget into `max_connections`.
    pub fn authenticate(&mut self) -> Result<(), Refused> {
        if self.authenticated {
            return Ok(());
        }
        let a = &self.admission;
        let mut s = a.lock();
        if s.open >= a.limits.max_connections {
            return Err(Refused::TooMany);
        }
        s.open += 1;
        s.pending -= 1;
        self.authenticated = true;
        metrics::gauge!(crate::metric_names::EDGE_MQTT_PENDING_CONNECTIONS).set(s.pending as f64);
        Ok(())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.admission.lock();
        if self.authenticated {
            s.open -= 1;
        } else {
            s.pending -= 1;
        }
        if let Some(n) = s.by_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                s.by_address.remove(&self.ip);
            }
        }
        metrics::gauge!(crate::metric_names::EDGE_MQTT_PENDING_CONNECTIONS).set(s.pending as f64);
    }
}

/// Descriptors one authenticated client costs: its socket, the front door's
/// socket to the broker and the broker's end of it.
pub const FDS_PER_CLIENT: usize = 3;
/// Descriptors kept for everything else: the buffer's files, listeners,
/// the uplink, the local API, Modbus and serial links, logs.
pub const FDS_RESERVED: usize = 256;

/// Fits the budgets into `fd_limit` open files: `FDS_PER_CLIENT` per
/// authenticated client, one per pending connection, `FDS_RESERVED` for
/// the rest. Returns the limits to use (unchanged when they fit).
pub fn fit_to_fd_limit(wanted: Limits, fd_limit: u64) -> Limits {
    let available = (fd_limit as usize).saturating_sub(FDS_RESERVED);
    let need = wanted.max_connections * FDS_PER_CLIENT + wanted.max_pending;
    if need <= available {
        return wanted;
    }
    // Keep a quarter of what is left for pending connections, at most what
    // was asked for, and give the rest to logged-in clients.
    let max_pending = wanted.max_pending.min((available / 4).max(1));
    let max_connections = wanted
        .max_connections
        .min((available.saturating_sub(max_pending) / FDS_PER_CLIENT).max(1));
    Limits {
        max_connections,
        max_pending,
        per_address: wanted.per_address,
    }
}

/// Raises this process's soft limit of open files to its hard limit and
/// returns the soft limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_connections: 2,
        max_pending: 3,
        per_address: 2,
    };

    #[test]
    fn pending_and_logged_in_connections_have_separate_budgets() {
        let a = Admission::new(L);
        let ip1: IpAddr = [10, 0, 0, 1].into();
        let ip2: IpAddr = [10, 0, 0, 2].into();
        let ip3: IpAddr = [10, 0, 0, 3].into();
        let mut t1 = a.arrive(ip1).unwrap();
        let _t2 = a.arrive(ip1).unwrap();
        assert_eq!(a.arrive(ip1).err(), Some(Refused::TooManyFromAddress));
        let mut t3 = a.arrive(ip2).unwrap();
        assert_eq!(a.arrive(ip3).err(), Some(Refused::TooManyPending));
        t1.authenticate().unwrap();
        t3.authenticate().unwrap();
        assert_eq!(a.counts(), (1, 2));
        // Logged-in clients free pending places for newcomers...
        let mut t4 = a.arrive(ip3).unwrap();
        // ...but max_connections still bounds logins.
        assert_eq!(t4.authenticate().err(), Some(Refused::TooMany));
        drop((t1, t4));
        assert_eq!(a.counts(), (1, 1));
        // ip1 now holds one: it may open one more.
        assert!(a.arrive(ip1).is_ok());
    }

    #[test]
    fn budgets_fit_the_open_file_limit() {
        let wanted = Limits {
            max_connections: 1000,
            max_pending: 128,
            per_address: 64,
        };
        assert_eq!(fit_to_fd_limit(wanted, 1 << 20), wanted);
        let fitted = fit_to_fd_limit(wanted, 1024);
        assert!(
            fitted.max_connections * FDS_PER_CLIENT + fitted.max_pending + FDS_RESERVED <= 1024
        );
        assert_eq!(fitted.max_pending, 128);
        assert_eq!(fitted.max_connections, (1024 - 256 - 128) / 3);
        let tiny = fit_to_fd_limit(wanted, 100);
        assert!(tiny.max_connections >= 1 && tiny.max_pending >= 1);
    }
}
