//! Wires the agent together and owns its lifecycle; what each part does
//! lives in that part (`fleet`, `mqtt`, `local_api`, `uplink`, `buffer`).

use crate::buffer::{Buffer, BufferOptions};
use crate::config::Config;
use crate::fleet::Fleet;
use crate::local_api::{self, AllowedHosts, ApiState, AuthState};
use crate::uplink::Uplink;
use anyhow::{Context, Result};
use axum::serve::ListenerExt;
use std::sync::Arc;

/// Runs the agent until `shutdown` resolves; then stops polling, drains the
/// uplink briefly and flushes the buffer.
pub async fn run(
    cfg: Config,
    config_path: Option<std::path::PathBuf>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    // Before any part records: every family then has its # HELP line, and
    // counters of events that have not happened yet read 0, not absent.
    crate::metric_names::describe();
    let buffer = Arc::new(
        Buffer::open(&cfg.buffer.path, BufferOptions::from(&cfg.buffer))
            .with_context(|| format!("cannot open buffer at {}", cfg.buffer.path.display()))?,
    );
    let stats = buffer.stats();
    tracing::info!(gateway = %cfg.gateway_id, path = %cfg.buffer.path.display(),
        backlog = stats.backlog, last_seq = stats.last_seq, "buffer open");

    let calibrations =
        crate::calibration::Calibrations::load(Arc::clone(&buffer), cfg.runs.require_calibration)
            .context("cannot read the kept calibration status")?;
    let verdicts = crate::verdicts::HubVerdicts::load(Arc::clone(&buffer))
        .context("cannot read the kept hub verdicts")?;
    let (uplink, uplink_status) = Uplink::new(
        cfg.gateway_id.clone(),
        cfg.uplink.clone(),
        Arc::clone(&buffer),
    )
    .context("cannot set up the uplink")?;
    let (stop_trigger, stop) = qi_common::shutdown::channel();
    let fleet = Fleet::start(cfg.clone(), config_path, Arc::clone(&buffer));
    let benches = crate::benches::resolve(&cfg.benches, &bench_models(&cfg, &fleet))
        .context("a bench contradicts a device's profile")?;
    for b in benches.iter().filter(|b| b.unavailable.is_some()) {
        tracing::warn!(bench = %b.id, reason = b.unavailable.as_deref().unwrap_or(""),
            "bench unavailable: runs on it are refused");
    }
    let bench_infos = benches.iter().map(|b| b.to_proto()).collect();
    let uplink = uplink
        .with_fleet(Arc::clone(&fleet))
        .with_benches(bench_infos)
        .with_calibrations(Arc::clone(&calibrations))
        .with_verdicts(Arc::clone(&verdicts));
    let uplink_task = tokio::spawn(uplink.run(stop.clone()));
    let templates = crate::runs::load_templates(&cfg.runs.protocols_dir);
    tracing::info!(dir = %cfg.runs.protocols_dir.display(), templates = templates.len(),
        benches = benches.len(), time_scale = cfg.runs.time_scale, "run engine ready");
    let runs = crate::runs::RunEngine::new(
        Arc::clone(&buffer),
        Arc::clone(&fleet),
        benches,
        templates,
        cfg.runs.time_scale,
        calibrations,
        stop.clone(),
    );
    runs.recover().await;

    if let Some(mqtt_cfg) = cfg.mqtt.clone() {
        let types = cfg
            .devices
            .iter()
            .map(|d| (d.id.clone(), d.profile.clone()))
            .collect();
        let publish_polled = mqtt_cfg.publish_polled;
        let bus = crate::mqtt::start(
            mqtt_cfg,
            &cfg.gateway_id,
            types,
            Arc::clone(&buffer),
            stop.clone(),
        )
        .await
        .context("cannot start the MQTT bus")?;
        if publish_polled {
            buffer.set_tap(crate::mqtt::publish::polled_tap(bus.clone()));
        }
        let devices = Arc::clone(&fleet);
        tokio::spawn(crate::mqtt::publish::publish_health(
            bus,
            move || devices.view().snapshot(),
            stop.clone(),
        ));
    }

    let allowed_hosts = AllowedHosts::new(&cfg.http.allowed_hosts).context("http.allowed_hosts")?;
    let tls = match (&cfg.http.tls_cert, &cfg.http.tls_key) {
        (Some(cert), Some(key)) => Some(
            local_api::tls::acceptor(cert, key).context("cannot set up HTTPS for the local API")?,
        ),
        _ => None,
    };
    let users_file = cfg.auth.users_path(&cfg.buffer.path);
    let auth = Arc::new(AuthState::new(&cfg.auth, users_file.clone(), tls.is_some()));
    if auth.users.current().is_empty() {
        tracing::warn!(users_file = %users_file.display(),
            "no local users: every protected route of the local API refuses; add one with \
             `edge-agent --config FILE user add NAME --role operator` (password on stdin)");
    }
    let status = {
        let (buffer, uplink, fleet) = (
            Arc::clone(&buffer),
            uplink_status.clone(),
            Arc::clone(&fleet),
        );
        move || service_status(&buffer, &uplink.borrow(), &fleet)
    };
    let api = ApiState {
        gateway_id: cfg.gateway_id.clone(),
        buffer: Arc::clone(&buffer),
        uplink: uplink_status,
        stop: stop.clone(),
        fleet: Arc::clone(&fleet),
        metrics,
        auth,
        runs: Arc::clone(&runs),
        verdicts,
        web: Arc::new(local_api::Web::new(&cfg.http)),
        mqtt_enabled: cfg.mqtt.is_some(),
    };
    let web_task = local_api::web::start(api.clone(), stop.clone());
    let app = local_api::router(api, allowed_hosts)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("cannot listen on http.listen = {}", cfg.http.listen))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(listen = %listener.local_addr()?, scheme, users_file = %users_file.display(),
        "local API on /health, /metrics, /api/v1/login and /api/v1/devices; the web page on /");
    let mut http_stop = stop.clone();
    let graceful = async move { http_stop.wait().await };
    let http = match tls {
        Some(acceptor) => {
            // tap_io: the wrapper through which axum hands the peer address
            // of a custom listener to ConnectInfo<SocketAddr>.
            let listener =
                local_api::tls::TlsListener::new(listener, acceptor, stop.clone())?.tap_io(|_| {});
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(graceful)
                    .await
            })
        }
        None => {
            let listener = listener.tap_io(|_| {});
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(graceful)
                    .await
            })
        }
    };

    // Ready only now: buffer open, pollers and uplink started, MQTT and the
    // local API bound (a bind failure above exits before this).
    let service = qi_common::service::Service::from_env();
    service.ready(&status());
    tokio::spawn(service.clone().supervise(status, stop.clone()));
    tokio::spawn(reload_on_hangup(Arc::clone(&fleet), stop.clone()));

    shutdown.await;
    service.stopping();
    stop_trigger.fire();
    runs.stopped().await;
    fleet.stop().await;
    let _ = uplink_task.await;
    let _ = web_task.await;
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

/// The `STATUS=` line systemd shows: "uplink connected, backlog 0, 12/12 devices online".
fn service_status(buffer: &Buffer, uplink: &crate::uplink::UplinkStatus, fleet: &Fleet) -> String {
    let devices = fleet.view().snapshot();
    let online = devices
        .iter()
        .filter(|d| d.state == crate::sources::health::DeviceState::Online)
        .count();
    let link = match uplink.state {
        crate::uplink::LinkState::Connected => "connected",
        crate::uplink::LinkState::Connecting => "connecting",
        crate::uplink::LinkState::Disconnected => "down",
    };
    format!(
        "uplink {link}, backlog {}, {online}/{} devices online",
        buffer.stats().backlog,
        devices.len()
    )
}

/// `systemctl reload` (ExecReload sends SIGHUP): re-read the devices from the
/// configuration file, as the hub's `reload` command does. A file that does
/// not load leaves the running pollers as they were.
async fn reload_on_hangup(fleet: Arc<Fleet>, mut stop: qi_common::shutdown::Stop) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with the hub's command");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {}
            _ = stop.wait() => return,
        }
        match fleet.reload().await {
            Ok(msg) => tracing::info!(result = %msg, "SIGHUP: configuration reloaded"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: configuration not reloaded"),
        }
    }
}

/// Each polled device's profile and poll interval, for resolving benches.
pub fn bench_models(
    cfg: &Config,
    fleet: &Fleet,
) -> std::collections::BTreeMap<String, (Arc<device_profile::Profile>, u64)> {
    let view = fleet.view();
    view.models
        .iter()
        .filter_map(|(id, p)| {
            let d = cfg.devices.iter().find(|d| &d.id == id)?;
            Some((id.clone(), (Arc::clone(p), d.poll_interval_ms)))
        })
        .collect()
}
