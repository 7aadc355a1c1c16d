//! `instrument-sim`: a simulated instrument on a real Modbus TCP socket.
//!
//! It serves the registers a firmware profile describes, with values that move
//! as the profile's `sim` tables say (or stay at `sim.base` with `--constant`,
//! which tests use to check values end to end).

use anyhow::{Context, Result};
use clap::Parser;
use device_profile::{
    DataType, Decoded, ModbusDefaults, Profile, Protocol, RegisterKind, encode, encode_text,
};
use qi_common::logging::{self, LogFormat};
use std::collections::HashMap;
use std::future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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
    profile: Profile,
    defaults: ModbusDefaults,
    unit_ids: Vec<u8>,
    constant: bool,
    started: Instant,
    /// point index -> 10^(its scale-factor point's value), SunSpec style.
    sf_scale: HashMap<usize, f64>,
    /// Per register kind: (first address, last address, point index), sorted.
    spans: HashMap<RegisterKind, Vec<(u32, u32, usize)>>,
    /// Values written by clients to writable points; they stay until overwritten.
    written: Mutex<HashMap<usize, f64>>,
}

impl Simulated {
    fn new(profile: Profile, unit_ids: Vec<u8>, constant: bool) -> Simulated {
        let sf_scale = profile
            .points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let sf = p.scale_factor.as_ref()?;
                let sfp = profile.points.iter().find(|q| &q.name == sf)?;
                Some((i, 10f64.powi(sfp.sim.base as i32)))
            })
            .collect();
        let mut spans: HashMap<RegisterKind, Vec<(u32, u32, usize)>> = HashMap::new();
        for (i, p) in profile.points.iter().enumerate() {
            if let Some(l) = p.modbus() {
                spans.entry(l.register).or_default().push((
                    u32::from(l.address),
                    l.end_address(),
                    i,
                ));
            }
        }
        for v in spans.values_mut() {
            v.sort();
        }
        Simulated {
            defaults: profile.modbus_defaults(),
            profile,
            unit_ids,
            constant,
            sf_scale,
            started: Instant::now(),
            spans,
            written: Mutex::new(HashMap::new()),
        }
    }

    fn value(&self, i: usize) -> f64 {
        if let Some(v) = self.written.lock().ok().and_then(|w| w.get(&i).copied()) {
            return v;
        }
        let s = &self.profile.points[i].sim;
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

    /// Points of `kind` overlapping `[start, end)`.
    fn overlapping(
        &self,
        kind: RegisterKind,
        start: u32,
        end: u32,
    ) -> impl Iterator<Item = &(u32, u32, usize)> {
        let spans = self.spans.get(&kind).map(Vec::as_slice).unwrap_or(&[]);
        // Points are at most 125 registers long: start the scan a little before `start`.
        let from = spans.partition_point(|s| s.0 + 125 < start);
        spans[from..]
            .iter()
            .take_while(move |s| s.0 < end)
            .filter(move |s| s.1 >= start)
    }

    /// Registers `[addr, addr+qty)`. Gaps inside the mapped area read as 0 (as
    /// on most real meters); a range touching no point is an illegal address.
    fn read_registers(
        &self,
        kind: RegisterKind,
        addr: u16,
        qty: u16,
    ) -> Result<Vec<u16>, ExceptionCode> {
        if qty == 0 || qty > 125 {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let start = u32::from(addr);
        let end = start + u32::from(qty);
        let mut out = vec![0u16; usize::from(qty)];
        let mut touched = false;
        for &(ps, _, i) in self.overlapping(kind, start, end) {
            touched = true;
            let p = &self.profile.points[i];
            let d = &self.defaults;
            let regs = match p.data_type {
                Some(DataType::String) => {
                    encode_text(&p.sim.text, p.length.unwrap_or(1), p.byte_order(d))
                }
                Some(DataType::Bit) => {
                    let on = self.value(i) != 0.0;
                    vec![if on { 1u16 << p.bit.unwrap_or(0) } else { 0 }]
                }
                Some(t) => {
                    let scale = p.scale * self.sf_scale.get(&i).copied().unwrap_or(1.0);
                    encode(
                        self.value(i),
                        t,
                        p.byte_order(d),
                        p.word_order(d),
                        scale,
                        p.offset,
                    )
                }
                None => continue,
            };
            for (k, r) in regs.iter().enumerate() {
                let a = ps + k as u32;
                if a >= start && a < end {
                    // OR, so several bit points of one register combine.
                    out[(a - start) as usize] |= *r;
                }
            }
        }
        if touched {
            Ok(out)
        } else {
            Err(ExceptionCode::IllegalDataAddress)
        }
    }

    fn read_bits(
        &self,
        kind: RegisterKind,
        addr: u16,
        qty: u16,
    ) -> Result<Vec<bool>, ExceptionCode> {
        if qty == 0 || qty > 2000 {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let start = u32::from(addr);
        let end = start + u32::from(qty);
        let mut out = vec![false; usize::from(qty)];
        let mut touched = false;
        for &(ps, _, i) in self.overlapping(kind, start, end) {
            touched = true;
            out[(ps - start) as usize] = self.value(i) != 0.0;
        }
        if touched {
            Ok(out)
        } else {
            Err(ExceptionCode::IllegalDataAddress)
        }
    }

    /// A write must hit exactly one writable point, whole.
    fn write_registers(&self, addr: u16, words: &[u16]) -> Result<(), ExceptionCode> {
        let start = u32::from(addr);
        let Some(&(_, _, i)) = self
            .overlapping(RegisterKind::Holding, start, start + words.len() as u32)
            .find(|s| s.0 == start && (s.1 - s.0 + 1) as usize == words.len())
        else {
            return Err(ExceptionCode::IllegalDataAddress);
        };
        let p = &self.profile.points[i];
        if !p.writable {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let v = device_profile::decode_point(p, &self.defaults, words, None)
            .map_err(|_| ExceptionCode::IllegalDataValue)?;
        match v {
            Decoded::Number(v) => {
                if let Ok(mut w) = self.written.lock() {
                    w.insert(i, v);
                }
                tracing::info!(point = %p.name, value = v, "point written");
                Ok(())
            }
            Decoded::Text(_) => Err(ExceptionCode::IllegalDataValue),
        }
    }

    fn write_coil(&self, addr: u16, on: bool) -> Result<(), ExceptionCode> {
        let start = u32::from(addr);
        let Some(&(_, _, i)) = self
            .overlapping(RegisterKind::Coil, start, start + 1)
            .next()
        else {
            return Err(ExceptionCode::IllegalDataAddress);
        };
        if !self.profile.points[i].writable {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        if let Ok(mut w) = self.written.lock() {
            w.insert(i, if on { 1.0 } else { 0.0 });
        }
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
        use RegisterKind::*;
        let res = match req.request {
            Request::ReadInputRegisters(a, q) => self
                .read_registers(Input, a, q)
                .map(Response::ReadInputRegisters),
            Request::ReadHoldingRegisters(a, q) => self
                .read_registers(Holding, a, q)
                .map(Response::ReadHoldingRegisters),
            Request::ReadCoils(a, q) => self.read_bits(Coil, a, q).map(Response::ReadCoils),
            Request::ReadDiscreteInputs(a, q) => self
                .read_bits(Discrete, a, q)
                .map(Response::ReadDiscreteInputs),
            Request::WriteSingleRegister(a, w) => self
                .write_registers(a, &[w])
                .map(|()| Response::WriteSingleRegister(a, w)),
            Request::WriteMultipleRegisters(a, ws) => self
                .write_registers(a, &ws)
                .map(|()| Response::WriteMultipleRegisters(a, ws.len() as u16)),
            Request::WriteSingleCoil(a, on) => self
                .write_coil(a, on)
                .map(|()| Response::WriteSingleCoil(a, on)),
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
    let service = Arc::new(Simulated::new(profile, unit_ids, args.constant));
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
