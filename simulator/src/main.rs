//! `instrument-sim`: a simulated instrument on a real Modbus TCP socket.
//!
//! It serves the registers a firmware profile describes, with values that move
//! as the profile's `sim` tables say (or stay at `sim.base` with `--constant`,
//! which tests use to check values end to end).

use anyhow::{Context, Result};
use clap::Parser;
use device_profile::{Point, Profile, RegisterKind};
use qi_common::logging::{self, LogFormat};
use std::future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Serve a firmware profile's registers over Modbus TCP"
)]
struct Args {
    /// Firmware profile (TOML) describing the instrument to simulate.
    #[arg(long)]
    profile: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5020")]
    listen: SocketAddr,
    /// Unit id to answer to (default: the profile's `modbus.unit_id`).
    #[arg(long)]
    unit_id: Option<u8>,
    /// Serve every point at exactly its `sim.base` value.
    #[arg(long)]
    constant: bool,
    /// Log format: human or json.
    #[arg(long, default_value = "human")]
    log_format: LogFormat,
}

struct Simulated {
    profile: Profile,
    unit_id: u8,
    constant: bool,
    started: Instant,
}

impl Simulated {
    fn value(&self, p: &Point) -> f64 {
        let s = &p.sim;
        if self.constant {
            return s.base;
        }
        let t = self.started.elapsed().as_secs_f64();
        let wave = s.amplitude * (2.0 * std::f64::consts::PI * t / s.period_s).sin();
        let noise = if s.noise > 0.0 {
            rand::random_range(-s.noise..=s.noise)
        } else {
            0.0
        };
        s.base + wave + s.rate_per_s * t + noise
    }

    /// Registers `[addr, addr+qty)` of one kind. Gaps inside the mapped area read
    /// as 0 (as on most real meters); a range touching no point is an illegal address.
    fn read(&self, kind: RegisterKind, addr: u16, qty: u16) -> Result<Vec<u16>, ExceptionCode> {
        if qty == 0 || qty > 125 {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let start = u32::from(addr);
        let end = start + u32::from(qty); // exclusive
        let mut out = vec![0u16; usize::from(qty)];
        let mut touched = false;
        let d = &self.profile.modbus;
        for p in self.profile.points.iter().filter(|p| p.register == kind) {
            let (ps, pe) = (u32::from(p.address), p.end_address() + 1);
            if pe <= start || ps >= end {
                continue;
            }
            touched = true;
            let regs = device_profile::encode(
                self.value(p),
                p.data_type,
                p.byte_order(d),
                p.word_order(d),
                p.scale,
                p.offset,
            );
            for (i, r) in regs.iter().enumerate() {
                let a = ps + i as u32;
                if a >= start && a < end {
                    out[(a - start) as usize] = *r;
                }
            }
        }
        if touched {
            Ok(out)
        } else {
            Err(ExceptionCode::IllegalDataAddress)
        }
    }
}

impl tokio_modbus::server::Service for Simulated {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        if req.slave != self.unit_id {
            return future::ready(Err(ExceptionCode::GatewayTargetDevice));
        }
        let res = match req.request {
            Request::ReadInputRegisters(a, q) => self
                .read(RegisterKind::Input, a, q)
                .map(Response::ReadInputRegisters),
            Request::ReadHoldingRegisters(a, q) => self
                .read(RegisterKind::Holding, a, q)
                .map(Response::ReadHoldingRegisters),
            _ => Err(ExceptionCode::IllegalFunction),
        };
        future::ready(res)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    logging::init(args.log_format, "info");
    let profile = Profile::load(&args.profile)?;
    let unit_id = args.unit_id.unwrap_or(profile.modbus.unit_id);
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(
        profile = %profile.model.id,
        listen = %listener.local_addr()?,
        unit_id,
        points = profile.points.len(),
        constant = args.constant,
        "simulated instrument ready"
    );
    let service = Arc::new(Simulated {
        profile,
        unit_id,
        constant: args.constant,
        started: Instant::now(),
    });
    let server = Server::new(listener);
    let on_connected = |stream, addr: SocketAddr| {
        let service = Arc::clone(&service);
        tracing::debug!(%addr, "client connected");
        async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(Arc::clone(&service)))) }
    };
    let on_error = |err| tracing::warn!(%err, "connection ended with an error");
    tokio::select! {
        res = server.serve(&on_connected, on_error) => res.context("modbus server failed")?,
        _ = qi_common::shutdown::signal() => {}
    }
    Ok(())
}
