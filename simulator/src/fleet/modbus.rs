//! The fleet's Modbus side: many Modbus TCP devices (every unit id in a set,
//! behind each of many consecutive ports) serving one firmware profile's
//! registers, each answer after a set delay (a real device's response time).
//!
//! Requests on one connection are answered one at a time (most devices and
//! gateways), or, with `concurrent`, each after its own delay, answers
//! matched by transaction id: the device that accepts pipelined requests.

use crate::register_map::RegisterMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_modbus::{ExceptionCode, Request, Response};

pub struct Options {
    pub listen: IpAddr,
    pub first_port: u16,
    pub ports: u16,
    pub unit_ids: Vec<u8>,
    pub delay: Duration,
    pub concurrent: bool,
    /// Every value of unit `u` is offset by `u * unit_step`.
    pub unit_step: f64,
}

/// Requests answered (all ports), for the progress log.
pub static REQUESTS: AtomicU64 = AtomicU64::new(0);

struct Device {
    map: RegisterMap,
    opts: Options,
    started: Instant,
}

/// Binds every port, then serves until the process is stopped.
pub async fn serve(map: RegisterMap, opts: Options) -> std::io::Result<()> {
    let mut listeners = Vec::new();
    for p in 0..opts.ports {
        let addr = SocketAddr::new(opts.listen, opts.first_port + p);
        listeners.push(
            TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?,
        );
    }
    tracing::info!(
        first_port = opts.first_port,
        ports = opts.ports,
        unit_ids = opts.unit_ids.len(),
        delay_ms = opts.delay.as_millis() as u64,
        concurrent = opts.concurrent,
        "fleet modbus devices ready"
    );
    let dev = Arc::new(Device {
        map,
        opts,
        started: Instant::now(),
    });
    for l in listeners {
        let dev = Arc::clone(&dev);
        tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        let _ = s.set_nodelay(true);
                        tokio::spawn(connection(Arc::clone(&dev), s));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    std::future::pending().await
}

async fn connection(dev: Arc<Device>, s: TcpStream) {
    let (mut rd, mut wr) = s.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                return;
            }
        }
    });
    let mut header = [0u8; 7];
    loop {
        if rd.read_exact(&mut header).await.is_err() {
            break;
        }
        let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
        if !(2..=254).contains(&len) {
            break;
        }
        let mut pdu = vec![0u8; len - 1];
        if rd.read_exact(&mut pdu).await.is_err() {
            break;
        }
        let answer = dev.answer(&header, &pdu);
        if dev.opts.concurrent {
            let (tx, delay) = (tx.clone(), dev.opts.delay);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = tx.send(answer).await;
            });
        } else {
            tokio::time::sleep(dev.opts.delay).await;
            if tx.send(answer).await.is_err() {
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

impl Device {
    fn value(&self, i: usize, unit: u8) -> f64 {
        let s = &self.map.profile.points[i].sim;
        let t = self.started.elapsed().as_secs_f64();
        s.base
            + s.amplitude * (2.0 * std::f64::consts::PI * t / s.period_s).sin()
            + s.rate_per_s * t
            + f64::from(unit) * self.opts.unit_step
    }

    /// The whole response frame (MBAP header + PDU) to one request.
    fn answer(&self, header: &[u8; 7], pdu: &[u8]) -> Vec<u8> {
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        let function = pdu.first().copied().unwrap_or(0);
        let body = if !self.opts.unit_ids.contains(&header[6]) {
            Err(ExceptionCode::GatewayTargetDevice)
        } else {
            self.read(pdu, header[6])
        };
        let body = match body {
            Ok(b) => b,
            Err(code) => vec![function | 0x80, u8::from(code)],
        };
        let mut out = Vec::with_capacity(7 + body.len());
        out.extend_from_slice(&header[..4]);
        out.extend_from_slice(&(body.len() as u16 + 1).to_be_bytes());
        out.push(header[6]);
        out.extend_from_slice(&body);
        out
    }

    /// Reads only (functions 1-4): the fleet is for polling.
    fn read(&self, pdu: &[u8], unit: u8) -> Result<Vec<u8>, ExceptionCode> {
        let [f, a0, a1, q0, q1] = pdu else {
            return Err(ExceptionCode::IllegalFunction);
        };
        let (addr, qty) = (
            u16::from_be_bytes([*a0, *a1]),
            u16::from_be_bytes([*q0, *q1]),
        );
        let req = match f {
            1 => Request::ReadCoils(addr, qty),
            2 => Request::ReadDiscreteInputs(addr, qty),
            3 => Request::ReadHoldingRegisters(addr, qty),
            4 => Request::ReadInputRegisters(addr, qty),
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        let resp = self
            .map
            .serve(req, &mut |i| self.value(i, unit), &mut |_, _| {
                Err(ExceptionCode::IllegalFunction)
            })?;
        let mut out = vec![*f];
        match resp {
            Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w) => {
                out.push((w.len() * 2) as u8);
                for x in w {
                    out.extend_from_slice(&x.to_be_bytes());
                }
            }
            Response::ReadCoils(bits) | Response::ReadDiscreteInputs(bits) => {
                let bits = &bits[..bits.len().min(usize::from(qty))];
                out.push(bits.len().div_ceil(8) as u8);
                for chunk in bits.chunks(8) {
                    out.push(
                        chunk
                            .iter()
                            .enumerate()
                            .fold(0u8, |b, (i, on)| b | (u8::from(*on) << i)),
                    );
                }
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        }
        Ok(out)
    }
}
