//! A Modbus bus: one connection (TCP socket or serial line) shared by every
//! device behind it, one request at a time.
//!
//! Several unit ids behind one TCP gateway share its connection; several
//! devices on one RS-485 line share the line. The bus owns the connection and
//! the pacing (RTU inter-frame silence, per-device inter-request delays);
//! pollers borrow it for one request at a time, so devices on one bus
//! interleave fairly.

use crate::sources::serial::LineSettings;
use std::time::Duration;
use tokio::net::{TcpStream, lookup_host};
use tokio::sync::{Mutex, MutexGuard};
use tokio::time::Instant;
use tokio_modbus::Slave;
use tokio_modbus::client::{Client, Context, rtu, tcp};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Tcp(String),
    RtuOverTcp(String),
    Serial(LineSettings),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::RtuOverTcp(a) => write!(f, "rtu+tcp://{a}"),
            Endpoint::Serial(l) => write!(f, "serial://{l}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    #[error("cannot connect to {0}: {1}")]
    Io(String, std::io::Error),
    #[error("connecting to {0} timed out after {1:?}")]
    Timeout(String, Duration),
}

pub struct Bus {
    endpoint: Endpoint,
    /// Minimum quiet time between two frames on this bus.
    silence: Duration,
    inner: Mutex<BusInner>,
}

struct BusInner {
    ctx: Option<Context>,
    last_io: Option<Instant>,
}

pub struct BusGuard<'a> {
    bus: &'a Bus,
    inner: MutexGuard<'a, BusInner>,
}

impl Bus {
    pub fn new(endpoint: Endpoint) -> Bus {
        let silence = match &endpoint {
            Endpoint::Serial(l) => l.rtu_silence(),
            // RTU over TCP: the converter on the far side needs the silence on its line;
            // a small gap costs little and keeps cheap converters from merging frames.
            Endpoint::RtuOverTcp(_) => Duration::from_millis(2),
            Endpoint::Tcp(_) => Duration::ZERO,
        };
        Bus {
            endpoint,
            silence,
            inner: Mutex::new(BusInner {
                ctx: None,
                last_io: None,
            }),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Waits for the bus. Hold the guard for one request only.
    pub async fn lock(&self) -> BusGuard<'_> {
        BusGuard {
            bus: self,
            inner: self.inner.lock().await,
        }
    }
}

impl BusGuard<'_> {
    /// The connection, opening it first if needed; `unit` selects the device.
    pub async fn context(
        &mut self,
        unit: u8,
        timeout: Duration,
    ) -> Result<&mut Context, ConnectError> {
        if self.inner.ctx.is_none() {
            let ctx = tokio::time::timeout(timeout, connect(&self.bus.endpoint))
                .await
                .map_err(|_| ConnectError::Timeout(self.bus.endpoint.to_string(), timeout))??;
            tracing::info!(endpoint = %self.bus.endpoint, "bus connected");
            self.inner.ctx = Some(ctx);
            self.inner.last_io = None;
        }
        let ctx = self.inner.ctx.as_mut().ok_or_else(|| {
            ConnectError::Resolve(self.bus.endpoint.to_string(), "no connection".into())
        })?;
        use tokio_modbus::prelude::SlaveContext;
        ctx.set_slave(Slave(unit));
        Ok(ctx)
    }

    /// Sleeps until the bus has been quiet for its silence interval and `extra`.
    pub async fn pace(&mut self, extra: Duration) {
        if let Some(last) = self.inner.last_io {
            let gap = self.bus.silence.max(extra);
            if !gap.is_zero() {
                tokio::time::sleep_until(last + gap).await;
            }
        }
    }

    /// Marks the end of a request/response exchange.
    pub fn mark_io(&mut self) {
        self.inner.last_io = Some(Instant::now());
    }

    /// Drops the connection after an error that leaves its state unknown
    /// (timeout, I/O, framing): the next request reconnects.
    pub async fn reset(&mut self) {
        if let Some(mut ctx) = self.inner.ctx.take() {
            let _ = tokio::time::timeout(Duration::from_millis(100), ctx.disconnect()).await;
        }
    }
}

async fn connect(endpoint: &Endpoint) -> Result<Context, ConnectError> {
    match endpoint {
        Endpoint::Tcp(addr) => Ok(tcp::attach_slave(tcp_connect(addr).await?, Slave(1))),
        Endpoint::RtuOverTcp(addr) => Ok(rtu::attach_slave(tcp_connect(addr).await?, Slave(1))),
        Endpoint::Serial(line) => {
            let port = line
                .open()
                .map_err(|e| ConnectError::Io(line.device.display().to_string(), e))?;
            Ok(rtu::attach_slave(port, Slave(1)))
        }
    }
}

pub(super) async fn tcp_connect(addr: &str) -> Result<TcpStream, ConnectError> {
    let sock = lookup_host(addr)
        .await
        .map_err(|e| ConnectError::Resolve(addr.to_string(), e.to_string()))?
        .next()
        .ok_or_else(|| ConnectError::Resolve(addr.to_string(), "no address".into()))?;
    let stream = TcpStream::connect(sock)
        .await
        .map_err(|e| ConnectError::Io(addr.to_string(), e))?;
    // Requests are small and latency-bound: never wait for Nagle.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::serial::LineSettings;

    #[tokio::test]
    async fn a_serial_bus_keeps_the_line_quiet_between_frames() {
        let line = LineSettings {
            device: "/dev/null".into(),
            baud: 1200,
            parity: device_profile::Parity::None,
            data_bits: 8,
            stop_bits: 1,
        };
        let silence = line.rtu_silence(); // ~29 ms at 1200 baud
        let bus = Bus::new(Endpoint::Serial(line));
        let mut g = bus.lock().await;
        g.mark_io();
        let start = Instant::now();
        g.pace(Duration::ZERO).await;
        assert!(
            start.elapsed() >= silence,
            "{:?} < {silence:?}",
            start.elapsed()
        );
        // A device's own inter-request delay wins when longer.
        g.mark_io();
        let start = Instant::now();
        g.pace(Duration::from_millis(60)).await;
        assert!(start.elapsed() >= Duration::from_millis(60));
    }
}
