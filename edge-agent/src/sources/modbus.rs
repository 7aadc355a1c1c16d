//! Polls one Modbus TCP device on its own task: connect, read the planned
//! blocks, decode, append to the buffer; on failure, drop the connection and
//! retry with backoff. A slow or dead device only ever delays its own task.

use super::backoff::Backoff;
use super::health::{DeviceHealth, DeviceState};
use super::plan::{ReadBlock, plan_reads};
use crate::buffer::{Buffer, NewReading};
use crate::config::{DeviceConfig, Transport};
use device_profile::{Profile, RegisterKind};
use qi_common::shutdown::Stop;
use qi_proto::v1::Quality;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::lookup_host;
use tokio::sync::watch;
use tokio_modbus::Slave;
use tokio_modbus::client::{Client, Context, Reader, tcp};
use tokio_modbus::prelude::SlaveContext;

/// Why one poll cycle could not complete.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("modbus transport error: {0}")]
    Transport(#[from] tokio_modbus::Error),
}

pub struct ModbusPoller {
    cfg: DeviceConfig,
    profile: Profile,
    blocks: Vec<ReadBlock>,
    unit_id: u8,
    timeout: Duration,
    buffer: Arc<Buffer>,
    health: watch::Sender<DeviceHealth>,
}

impl ModbusPoller {
    pub fn new(
        cfg: DeviceConfig,
        profile: Profile,
        buffer: Arc<Buffer>,
    ) -> (ModbusPoller, watch::Receiver<DeviceHealth>) {
        let Transport::Tcp(endpoint) = &cfg.transport;
        let (tx, rx) = watch::channel(DeviceHealth::new(&cfg.id, &profile.model.id, endpoint));
        let blocks = plan_reads(&profile.points, profile.modbus.max_registers_per_read, 0);
        let poller = ModbusPoller {
            unit_id: cfg.unit_id.unwrap_or(profile.modbus.unit_id),
            timeout: Duration::from_millis(cfg.timeout_ms.unwrap_or(profile.modbus.timeout_ms)),
            cfg,
            profile,
            blocks,
            buffer,
            health: tx,
        };
        (poller, rx)
    }

    fn endpoint(&self) -> &str {
        let Transport::Tcp(e) = &self.cfg.transport;
        e
    }

    pub async fn run(self, mut stop: Stop) {
        let id = self.cfg.id.clone();
        let interval = Duration::from_millis(self.cfg.poll_interval_ms);
        let mut backoff = Backoff::new(
            Duration::from_millis(self.cfg.retry_min_ms),
            Duration::from_millis(self.cfg.retry_max_ms),
        );
        let mut ctx: Option<Context> = None;
        tracing::info!(device = %id, endpoint = self.endpoint(), blocks = self.blocks.len(),
            points = self.profile.points.len(), "polling device");
        let mut next_poll = tokio::time::Instant::now();
        while !stop.is_stopped() {
            let wait = match self.poll_once(&mut ctx).await {
                Ok(()) => {
                    backoff.reset();
                    next_poll += interval;
                    let now = tokio::time::Instant::now();
                    if next_poll < now {
                        // Fell behind (slow device): skip missed ticks rather than burst.
                        next_poll = now;
                    }
                    next_poll - now
                }
                Err(e) => {
                    ctx = None;
                    let delay = backoff.next_delay();
                    metrics::counter!("edge_modbus_poll_failures_total", "device" => id.clone())
                        .increment(1);
                    let failures = self.health.borrow().consecutive_failures + 1;
                    // Log the first failure and then every 10th, so an outage does not flood the log.
                    if failures == 1 || failures.is_multiple_of(10) {
                        tracing::warn!(device = %id, error = %e, failures,
                            retry_in_ms = delay.as_millis() as u64, "device poll failed; retrying with backoff");
                    }
                    self.health.send_modify(|h| {
                        h.state = DeviceState::Offline;
                        h.last_error = Some(e.to_string());
                        h.consecutive_failures = failures;
                        h.polls_failed += 1;
                        h.next_retry_ms = Some(delay.as_millis() as u64);
                    });
                    next_poll = tokio::time::Instant::now() + delay;
                    delay
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait() => break,
            }
        }
        if let Some(mut c) = ctx {
            let _ = tokio::time::timeout(Duration::from_millis(200), c.disconnect()).await;
        }
        tracing::info!(device = %id, "poller stopped");
    }

    async fn connect(&self) -> Result<Context, PollError> {
        let ep = self.endpoint().to_string();
        let addr = tokio::time::timeout(self.timeout, lookup_host(ep.clone()))
            .await
            .map_err(|_| PollError::Timeout(self.timeout))?
            .map_err(|e| PollError::Resolve(ep.clone(), e.to_string()))?
            .next()
            .ok_or_else(|| PollError::Resolve(ep.clone(), "no address".into()))?;
        let ctx = tokio::time::timeout(self.timeout, tcp::connect_slave(addr, Slave(self.unit_id)))
            .await
            .map_err(|_| PollError::Timeout(self.timeout))?
            .map_err(|e| PollError::Connect(ep.clone(), e))?;
        Ok(ctx)
    }

    /// One pass over every block. Transport errors abort the pass (the
    /// connection is suspect); Modbus exceptions only skip their block.
    async fn poll_once(&self, slot: &mut Option<Context>) -> Result<(), PollError> {
        if slot.is_none() {
            let c = self.connect().await?;
            tracing::info!(device = %self.cfg.id, endpoint = self.endpoint(), "connected");
            *slot = Some(c);
        }
        let Some(ctx) = slot.as_mut() else {
            return Ok(());
        };
        ctx.set_slave(Slave(self.unit_id));
        let started = Instant::now();
        let mut readings = Vec::with_capacity(self.profile.points.len());
        let mut exceptions = Vec::new();
        for block in &self.blocks {
            let req = async {
                match block.kind {
                    RegisterKind::Input => ctx.read_input_registers(block.start, block.count).await,
                    RegisterKind::Holding => {
                        ctx.read_holding_registers(block.start, block.count).await
                    }
                }
            };
            let regs = match tokio::time::timeout(self.timeout, req).await {
                Err(_) => return Err(PollError::Timeout(self.timeout)),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(Err(exc))) => {
                    metrics::counter!("edge_modbus_exceptions_total", "device" => self.cfg.id.clone())
                        .increment(1);
                    exceptions.push(format!(
                        "{:?} registers {}..{}: {exc}",
                        block.kind,
                        block.start,
                        u32::from(block.start) + u32::from(block.count)
                    ));
                    continue;
                }
                Ok(Ok(Ok(regs))) => regs,
            };
            let ts = chrono::Utc::now().timestamp_micros();
            self.decode_block(block, &regs, ts, &mut readings);
        }
        let rtt = started.elapsed();
        let n = readings.len() as u64;
        if !readings.is_empty()
            && let Err(e) = self.buffer.append(&readings).await
        {
            // The device is fine; the disk is not. Say so loudly and count it.
            metrics::counter!("edge_buffer_append_errors_total").increment(1);
            tracing::error!(device = %self.cfg.id, error = %e, lost = n, "cannot buffer readings");
        }
        metrics::counter!("edge_modbus_polls_total", "device" => self.cfg.id.clone()).increment(1);
        metrics::counter!("edge_readings_total", "device" => self.cfg.id.clone()).increment(n);
        metrics::histogram!("edge_modbus_poll_seconds", "device" => self.cfg.id.clone())
            .record(rtt.as_secs_f64());
        let degraded = !exceptions.is_empty();
        if degraded && self.health.borrow().state != DeviceState::Degraded {
            tracing::warn!(device = %self.cfg.id, errors = ?exceptions, "device answered with Modbus exceptions");
        }
        let was_offline = self.health.borrow().state == DeviceState::Offline;
        if was_offline {
            tracing::info!(device = %self.cfg.id, "device back online");
        }
        self.health.send_modify(|h| {
            h.state = if degraded {
                DeviceState::Degraded
            } else {
                DeviceState::Online
            };
            h.last_error = exceptions.first().cloned();
            h.consecutive_failures = 0;
            h.polls_ok += 1;
            h.readings += n;
            h.last_success_ms = Some(chrono::Utc::now().timestamp_millis());
            h.last_round_trip_ms = Some(rtt.as_secs_f64() * 1000.0);
            h.next_retry_ms = None;
        });
        Ok(())
    }

    fn decode_block(&self, block: &ReadBlock, regs: &[u16], ts: i64, out: &mut Vec<NewReading>) {
        let d = &self.profile.modbus;
        for &i in &block.points {
            let p = &self.profile.points[i];
            let off = usize::from(p.address - block.start);
            let len = usize::from(p.data_type.registers());
            let Some(words) = regs.get(off..off + len) else {
                // A short response: the device sent fewer registers than asked.
                metrics::counter!("edge_modbus_decode_errors_total", "device" => self.cfg.id.clone())
                    .increment(1);
                continue;
            };
            match device_profile::decode(
                words,
                p.data_type,
                p.byte_order(d),
                p.word_order(d),
                p.scale,
                p.offset,
            ) {
                Ok(value) => out.push(NewReading {
                    device_id: self.cfg.id.clone(),
                    metric: p.name.clone(),
                    timestamp_us: ts,
                    value,
                    unit: p.unit.clone(),
                    quality: Quality::Good as i32,
                }),
                Err(e) => {
                    metrics::counter!("edge_modbus_decode_errors_total", "device" => self.cfg.id.clone())
                        .increment(1);
                    tracing::debug!(device = %self.cfg.id, point = %p.name, error = %e, "value not decodable");
                }
            }
        }
    }
}
