//! Polls one Modbus device: plan the reads of each poll group, read them over
//! the device's bus, isolate addresses the device refuses, decode, apply
//! dead-bands, append to the buffer, and serve writes between polls.

use super::Link;
use super::bus::Bus;
use super::faults::{Faults, uncovered};
use super::plan::{PlanLimits, ReadBlock, plan_reads};
use crate::buffer::Buffer;
use crate::config::DeviceConfig;
use crate::sources::command::{DeviceCommand, WriteError};
use crate::sources::core::{Cycle, PollerCore};
use crate::sources::driver::{PollFailure, Poller, drive};
use crate::sources::health::DeviceHealth;
use device_profile::{Decoded, ModbusDefaults, Profile, RegisterKind};
use qi_common::shutdown::Stop;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_modbus::ExceptionCode;
use tokio_modbus::client::Reader;

mod pipelined;
mod write;

/// Why one request failed.
#[derive(Debug)]
enum Fail {
    /// The device answered with a Modbus exception: the connection is fine.
    Exception(ExceptionCode),
    Timeout(Duration),
    /// Connect, I/O or framing error: the connection is suspect.
    Transport(String),
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Exception(e) => write!(f, "Modbus exception: {e}"),
            Fail::Timeout(d) => write!(f, "no response within {} ms", d.as_millis()),
            Fail::Transport(e) => f.write_str(e),
        }
    }
}

enum Data {
    Registers(Vec<u16>),
    Bit(bool),
}

const NO_RTT: u64 = u64::MAX;

/// Metric handles resolved once: a labelled `metrics::counter!` per request
/// would hash and look up its key every time.
struct ModbusMetrics {
    request_seconds: metrics::Histogram,
    decode_errors: metrics::Counter,
}

impl ModbusMetrics {
    fn new(device: &str) -> ModbusMetrics {
        let d = device.to_string();
        ModbusMetrics {
            request_seconds: metrics::histogram!(crate::metric_names::EDGE_MODBUS_REQUEST_SECONDS, "device" => d.clone()),
            decode_errors: metrics::counter!(crate::metric_names::EDGE_MODBUS_DECODE_ERRORS_TOTAL, "device" => d),
        }
    }
}

pub struct ModbusPoller {
    core: PollerCore,
    m: ModbusMetrics,
    /// Round trip of the latest request (ms), published with the cycle's health.
    /// (f64 bits; NO_RTT when none yet.)
    rtt: std::sync::atomic::AtomicU64,
    defaults: ModbusDefaults,
    unit: u8,
    timeout: Duration,
    inter_request: Duration,
    limits: PlanLimits,
    /// point index -> index of its scale-factor point
    scale_factors: HashMap<usize, usize>,
    link: Link,
    /// End of this device's latest request on a pipelined link, for
    /// `inter_request_delay_ms` (the serial bus paces itself).
    last_io: std::sync::Mutex<Option<Instant>>,
    /// Cached read plan per group, with the `faults.generation` it was made for.
    plans: Vec<Option<(u64, Vec<ReadBlock>)>>,
    faults: Faults,
}

impl ModbusPoller {
    pub fn new(
        cfg: &DeviceConfig,
        profile: Arc<Profile>,
        link: Link,
        buffer: Arc<Buffer>,
        commands: mpsc::Receiver<DeviceCommand>,
    ) -> (ModbusPoller, watch::Receiver<DeviceHealth>) {
        let defaults = profile.modbus_defaults();
        let index: HashMap<&str, usize> = profile
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        let scale_factors = profile
            .points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                p.scale_factor
                    .as_deref()
                    .and_then(|n| index.get(n))
                    .map(|&sf| (i, sf))
            })
            .collect();
        let (core, rx) = PollerCore::new(
            cfg,
            Arc::clone(&profile),
            &link.endpoint(),
            buffer,
            commands,
            crate::metric_names::EDGE_MODBUS_POLLS_TOTAL,
        );
        let plans = vec![None; core.schedule.groups.len()];
        let poller = ModbusPoller {
            core,
            m: ModbusMetrics::new(&cfg.id),
            rtt: std::sync::atomic::AtomicU64::new(NO_RTT),
            unit: cfg.unit_id.unwrap_or(defaults.unit_id),
            timeout: Duration::from_millis(cfg.timeout_ms.unwrap_or(defaults.timeout_ms)),
            inter_request: Duration::from_millis(defaults.inter_request_delay_ms),
            limits: PlanLimits {
                max_registers: defaults.max_registers_per_read,
                max_bits: defaults.max_bits_per_read,
                gap_tolerance: defaults.gap_tolerance,
            },
            defaults,
            scale_factors,
            link,
            last_io: std::sync::Mutex::new(None),
            plans,
            faults: Faults::new(&cfg.id, Duration::from_secs(cfg.bad_point_retry_s)),
        };
        (poller, rx)
    }

    pub async fn run(mut self, stop: Stop) {
        tracing::info!(device = %self.core.id, endpoint = %self.link.endpoint(), unit = self.unit,
            points = self.core.profile.points.len(), groups = self.core.schedule.groups.len(), "polling device");
        drive(&mut self, stop).await;
        // A pipelined connection closes when its last poller drops it.
        if let Link::Serial(bus) = &self.link {
            bus.lock().await.reset().await;
        }
        tracing::info!(device = %self.core.id, "poller stopped");
    }

    /// One request, with timeout; transport trouble resets the connection.
    async fn read_block(&self, b: &ReadBlock) -> Result<Vec<Data>, Fail> {
        match &self.link {
            Link::Serial(bus) => self.read_block_serial(bus, b).await,
            Link::Pipelined(p) => self.read_block_pipelined(p, b).await,
        }
    }

    /// Publishes one request's round trip.
    fn record_rtt(&self, started: Instant) {
        let rtt = started.elapsed().as_secs_f64();
        self.rtt.store(
            (rtt * 1000.0).to_bits(),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.m.request_seconds.record(rtt);
    }

    async fn read_block_serial(&self, bus: &Bus, b: &ReadBlock) -> Result<Vec<Data>, Fail> {
        let mut bus = bus.lock().await;
        bus.pace(self.inter_request).await;
        let started = Instant::now();
        let ctx = match bus.context(self.unit, self.timeout).await {
            Ok(c) => c,
            Err(e) => return Err(Fail::Transport(e.to_string())),
        };
        let res = tokio::time::timeout(self.timeout, async {
            match b.kind {
                RegisterKind::Input => ctx
                    .read_input_registers(b.start, b.count)
                    .await
                    .map(|r| r.map(|v| vec![Data::Registers(v)])),
                RegisterKind::Holding => ctx
                    .read_holding_registers(b.start, b.count)
                    .await
                    .map(|r| r.map(|v| vec![Data::Registers(v)])),
                RegisterKind::Coil => ctx
                    .read_coils(b.start, b.count)
                    .await
                    .map(|r| r.map(|v| v.into_iter().map(Data::Bit).collect())),
                RegisterKind::Discrete => ctx
                    .read_discrete_inputs(b.start, b.count)
                    .await
                    .map(|r| r.map(|v| v.into_iter().map(Data::Bit).collect())),
            }
        })
        .await;
        bus.mark_io();
        self.record_rtt(started);
        match res {
            Err(_) => {
                bus.reset().await;
                Err(Fail::Timeout(self.timeout))
            }
            Ok(Err(e)) => {
                bus.reset().await;
                Err(Fail::Transport(format!("Modbus transport error: {e}")))
            }
            Ok(Ok(Err(code))) => Err(Fail::Exception(code)),
            Ok(Ok(Ok(data))) => {
                let expected = if b.kind.is_bits() {
                    usize::from(b.count)
                } else {
                    1
                };
                let got_regs = match data.first() {
                    Some(Data::Registers(r)) => r.len(),
                    _ => usize::from(b.count),
                };
                // tokio-modbus pads coil reads to whole bytes; fewer than asked is a short frame.
                if data.len() < expected || got_regs != usize::from(b.count) {
                    bus.reset().await;
                    return Err(Fail::Transport(format!(
                        "short response: asked {} items at {}, got {}",
                        b.count,
                        b.start,
                        if b.kind.is_bits() {
                            data.len()
                        } else {
                            got_regs
                        }
                    )));
                }
                Ok(data)
            }
        }
    }

    /// Registers currently skipped: a read bridging a gap must not touch them.
    fn avoided(&self, now: Instant) -> Vec<(RegisterKind, u32, u32)> {
        self.faults.avoided(&self.core.profile.points, now)
    }

    fn selected_points(&self, gi: usize, now: Instant) -> Vec<usize> {
        self.core.schedule.groups[gi]
            .points
            .iter()
            .copied()
            .filter(|&i| !self.faults.skips_point(i, now))
            .collect()
    }

    async fn poll_group_inner(&mut self, gi: usize) -> Result<(), Fail> {
        let now = Instant::now();
        let retry_due = self.faults.retry_due(now);
        let blocks = match &self.plans[gi] {
            Some((generation, blocks)) if *generation == self.faults.generation && !retry_due => {
                blocks.clone()
            }
            _ => {
                let selected = self.selected_points(gi, now);
                let blocks = plan_reads(
                    &self.core.profile.points,
                    &selected,
                    self.limits,
                    &self.avoided(now),
                );
                if !retry_due {
                    self.plans[gi] = Some((self.faults.generation, blocks.clone()));
                }
                blocks
            }
        };
        let mut results: Vec<(ReadBlock, Vec<Data>, i64)> = Vec::with_capacity(blocks.len());
        let mut work: Vec<ReadBlock> = blocks.into_iter().rev().collect();
        let mut requests = 0u32;
        while let Some(block) = work.pop() {
            requests += 1;
            match self.read_block(&block).await {
                Ok(items) => {
                    let ts = chrono::Utc::now().timestamp_micros();
                    self.faults.read_ok(
                        &self.core.profile.points,
                        &block.points,
                        block.kind,
                        block.start,
                        block.count,
                    );
                    // A probe of a gap (no points) only tells what the device accepts.
                    if !block.points.is_empty() {
                        results.push((block, items, ts));
                    }
                }
                Err(Fail::Exception(code)) => {
                    metrics::counter!(crate::metric_names::EDGE_MODBUS_EXCEPTIONS_TOTAL, "device" => self.core.id.clone())
                        .increment(1);
                    self.core
                        .health
                        .send_modify(|h| h.errors.device_errors += 1);
                    let error = format!("Modbus exception: {code}");
                    match block.points.len() {
                        0 => self.bisect_probe(&block, error, &mut work),
                        1 => self.faults.mark_point(
                            &self.core.profile.points,
                            block.points[0],
                            error,
                        ),
                        _ => self.bisect_points(&block, now, &mut work),
                    }
                }
                Err(other) => return Err(other),
            }
        }
        self.faults.log_new_registers();
        self.finish_cycle(gi, results, requests).await;
        Ok(())
    }

    /// A read of several points was refused: read each half of its points on
    /// its own, and probe the gaps the read bridged that neither half reads
    /// (the refused address may be no point's at all).
    fn bisect_points(&self, block: &ReadBlock, now: Instant, work: &mut Vec<ReadBlock>) {
        let mid = block.points.len() / 2;
        let (a, b) = block.points.split_at(mid);
        let avoid = self.avoided(now);
        let first = plan_reads(&self.core.profile.points, a, self.limits, &avoid);
        let second = plan_reads(&self.core.profile.points, b, self.limits, &avoid);
        let covered: Vec<(u16, u16)> = first
            .iter()
            .chain(&second)
            .map(|r| (r.start, r.count))
            .collect();
        // Probes go last: the points' own reads come first.
        for (start, count) in uncovered(block.start, block.count, &covered)
            .into_iter()
            .rev()
        {
            work.push(ReadBlock {
                kind: block.kind,
                start,
                count,
                points: Vec::new(),
            });
        }
        work.extend(second.into_iter().rev());
        work.extend(first.into_iter().rev());
    }

    /// A probe of a gap was refused: halve it down to the single addresses.
    fn bisect_probe(&mut self, block: &ReadBlock, error: String, work: &mut Vec<ReadBlock>) {
        if block.count == 1 {
            self.faults.mark_register(block.kind, block.start, error);
            return;
        }
        let half = block.count / 2;
        for (start, count) in [
            (block.start + half, block.count - half),
            (block.start, half),
        ] {
            work.push(ReadBlock {
                kind: block.kind,
                start,
                count,
                points: Vec::new(),
            });
        }
    }

    /// Decodes every point read this cycle straight from its block (no copies),
    /// applies dead-bands, appends what is due, and publishes health.
    async fn finish_cycle(
        &mut self,
        gi: usize,
        results: Vec<(ReadBlock, Vec<Data>, i64)>,
        requests: u32,
    ) {
        let now = Instant::now().into_std();
        let profile = Arc::clone(&self.core.profile);
        // Scale-factor registers first: other points of this cycle need their values.
        let mut sf_values: HashMap<usize, i16> = HashMap::new();
        if !self.scale_factors.is_empty() {
            for (block, items, _) in &results {
                for &i in &block.points {
                    if self.scale_factors.values().any(|&sf| sf == i)
                        && let (Some(Data::Registers(r)), Some(l)) =
                            (items.first(), profile.points[i].modbus())
                        && let Some(w) = r.get(usize::from(l.address - block.start))
                    {
                        sf_values.insert(i, *w as i16);
                    }
                }
            }
        }
        let mut readings = Vec::with_capacity(self.core.schedule.groups[gi].points.len());
        let mut live: Vec<(usize, Decoded, i64)> = Vec::with_capacity(readings.capacity());
        let mut decode_errors = 0u64;
        for (block, items, ts) in &results {
            for &i in &block.points {
                let p = &profile.points[i];
                let Some(l) = p.modbus() else { continue };
                let off = usize::from(l.address - block.start);
                let decoded = match items.first() {
                    Some(Data::Registers(r)) => match r.get(off..off + usize::from(l.size)) {
                        Some(regs) => {
                            let sf = match self.scale_factors.get(&i) {
                                None => Ok(None),
                                Some(sfi) => sf_values
                                    .get(sfi)
                                    .copied()
                                    .map(Some)
                                    .ok_or(device_profile::DecodeError::NotFinite),
                            };
                            sf.and_then(|sf| {
                                device_profile::decode_point(p, &self.defaults, regs, sf)
                            })
                        }
                        None => Err(device_profile::DecodeError::WrongLength {
                            expected: usize::from(l.size),
                            got: r.len().saturating_sub(off),
                        }),
                    },
                    _ => match items.get(off) {
                        Some(Data::Bit(b)) => Ok(Decoded::Number(
                            if *b { 1.0 } else { 0.0 } * p.scale + p.offset,
                        )),
                        _ => Err(device_profile::DecodeError::WrongLength {
                            expected: 1,
                            got: 0,
                        }),
                    },
                };
                match decoded {
                    Ok(Decoded::Number(v)) => {
                        self.core.offer(i, v, *ts, now, &mut readings);
                        live.push((i, Decoded::Number(v), *ts / 1000));
                    }
                    Ok(text) => live.push((i, text, *ts / 1000)),
                    Err(e) => {
                        decode_errors += 1;
                        tracing::debug!(device = %self.core.id, point = %p.name, error = %e, "value not decodable");
                    }
                }
            }
        }
        if decode_errors > 0 {
            self.m.decode_errors.increment(decode_errors);
        }
        let rtt_ms = match self.rtt.swap(NO_RTT, std::sync::atomic::Ordering::Relaxed) {
            NO_RTT => None,
            bits => Some(f64::from_bits(bits)),
        };
        let cycle = Cycle {
            readings,
            live,
            requests,
            bad_points: self.faults.bad_points(&profile.points),
            refused_registers: self.faults.refused_registers(),
            decode_errors,
            rtt_ms,
        };
        self.core.finish_cycle(gi, cycle).await;
    }
}

impl Poller for ModbusPoller {
    fn core(&mut self) -> &mut PollerCore {
        &mut self.core
    }
    async fn poll_group(&mut self, gi: usize) -> Result<(), PollFailure> {
        self.poll_group_inner(gi).await.map_err(|f| PollFailure {
            timeout: matches!(f, Fail::Timeout(_)),
            message: f.to_string(),
        })
    }
    async fn write(&mut self, point: &str, value: f64) -> Result<(), WriteError> {
        self.write_point(point, value).await
    }
}
