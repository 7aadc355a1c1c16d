//! `instrument-sim`: a simulated instrument on a real Modbus TCP socket.
//!
//! It serves the registers a firmware profile describes, with values that move
//! as the profile's `sim` tables say (or stay at `sim.base` with `--constant`,
//! which tests use to check values end to end).

use anyhow::{Context, Result};
use clap::Parser;
use device_profile::{Profile, Protocol};
use instrument_sim::register_map::RegisterMap;
use qi_common::logging::{self, LogFormat};
use std::collections::HashMap;
use std::future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Response, SlaveRequest};

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
    /// Unit ids to answer to, comma-separated; each serves the same map
    /// (default: the profile's `modbus.unit_id`).
    #[arg(long, value_delimiter = ',')]
    unit_id: Vec<u8>,
    /// Serve every point at exactly its `sim.base` value.
    #[arg(long)]
    constant: bool,
    /// Log format: human or json.
    #[arg(long, default_value = "human")]
    log_format: LogFormat,
}

struct Simulated {
    map: RegisterMap,
    unit_ids: Vec<u8>,
    constant: bool,
    started: Instant,
    /// Values written by clients to writable points; they stay until overwritten.
    written: Mutex<HashMap<usize, f64>>,
}

impl Simulated {
    fn value(&self, i: usize) -> f64 {
        if let Some(v) = self.written.lock().ok().and_then(|w| w.get(&i).copied()) {
            return v;
        }
        let s = &self.map.profile.points[i].sim;
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

    fn write(&self, i: usize, v: f64) -> Result<(), ExceptionCode> {
        if let Ok(mut w) = self.written.lock() {
            w.insert(i, v);
        }
        tracing::info!(point = %self.map.profile.points[i].name, value = v, "point written");
        Ok(())
    }
}

impl tokio_modbus::server::Service for Simulated {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        if !self.unit_ids.contains(&req.slave) {
            return future::ready(Err(ExceptionCode::GatewayTargetDevice));
        }
        future::ready(
            self.map
                .serve(req.request, &mut |i| self.value(i), &mut |i, v| {
                    self.write(i, v)
                }),
        )
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    logging::init(args.log_format, "info", None, Vec::new());
    let profile = Profile::load(&args.profile)?;
    if profile.protocol != Protocol::Modbus {
        anyhow::bail!("{} is not a Modbus profile", args.profile.display());
    }
    let unit_ids = if args.unit_id.is_empty() {
        vec![profile.modbus_defaults().unit_id]
    } else {
        args.unit_id.clone()
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(
        profile = %profile.model.id,
        listen = %listener.local_addr()?,
        ?unit_ids,
        points = profile.points.len(),
        constant = args.constant,
        "simulated instrument ready"
    );
    let service = Arc::new(Simulated {
        map: RegisterMap::new(profile),
        unit_ids,
        constant: args.constant,
        started: Instant::now(),
        written: Mutex::new(HashMap::new()),
    });
    let server = Server::new(listener);
    let on_connected = |stream, addr: SocketAddr| {
        let service = Arc::clone(&service);
        tracing::info!(%addr, "client connected");
        async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(Arc::clone(&service)))) }
    };
    let on_error = |err| tracing::warn!(%err, "connection ended with an error");
    tokio::select! {
        res = server.serve(&on_connected, on_error) => res.context("modbus server failed")?,
        _ = qi_common::shutdown::signal() => {}
    }
    Ok(())
}
