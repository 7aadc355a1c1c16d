//! Wires the agent together and owns its lifecycle.

use crate::buffer::Buffer;
use crate::config::Config;
use crate::sources::modbus::ModbusPoller;
use crate::status::{self, StatusSources};
use crate::uplink::Uplink;
use anyhow::{Context, Result};
use device_profile::Profile;
use std::sync::Arc;

/// Loads every device's profile; any error names the device and the file.
pub fn load_profiles(cfg: &Config) -> Result<Vec<Profile>> {
    cfg.devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Profile::load_by_id(&cfg.profiles_dir, &d.profile)
                .with_context(|| format!("devices[{i}] ({}): profile {:?}", d.id, d.profile))
        })
        .collect()
}

/// Runs the agent until `shutdown` resolves; then stops polling, drains the
/// uplink briefly and flushes the buffer.
pub async fn run(
    cfg: Config,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let profiles = load_profiles(&cfg)?;
    let buffer = Arc::new(
        Buffer::open(&cfg.buffer.path, cfg.buffer.cache_mib * 1024 * 1024)
            .with_context(|| format!("cannot open buffer at {}", cfg.buffer.path.display()))?,
    );
    let stats = buffer.stats();
    tracing::info!(gateway = %cfg.gateway_id, path = %cfg.buffer.path.display(),
        backlog = stats.backlog, last_seq = stats.last_seq, "buffer open");

    let (stop_trigger, stop) = qi_common::shutdown::channel();
    let mut pollers = Vec::new();
    let mut device_health = Vec::new();
    for (dcfg, profile) in cfg.devices.iter().cloned().zip(profiles) {
        let (poller, health) = ModbusPoller::new(dcfg, profile, Arc::clone(&buffer));
        device_health.push(health);
        pollers.push(tokio::spawn(poller.run(stop.clone())));
    }

    let (uplink, uplink_status) = Uplink::new(
        cfg.gateway_id.clone(),
        cfg.uplink.clone(),
        Arc::clone(&buffer),
    );
    let uplink_task = tokio::spawn(uplink.run(stop.clone()));

    let app = status::router(StatusSources {
        gateway_id: cfg.gateway_id.clone(),
        buffer: Arc::clone(&buffer),
        uplink: uplink_status,
        devices: device_health,
        metrics,
    });
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("cannot listen on http.listen = {}", cfg.http.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "status server on /health and /metrics");
    let mut http_stop = stop.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_stop.wait().await })
            .await
    });

    shutdown.await;
    stop_trigger.fire();
    for p in pollers {
        let _ = p.await;
    }
    let _ = uplink_task.await;
    buffer.flush().await.context("final buffer flush failed")?;
    let _ = http.await;
    let s = buffer.stats();
    tracing::info!(
        last_seq = s.last_seq,
        backlog = s.backlog,
        "edge-agent stopped; buffer flushed"
    );
    Ok(())
}
