//! The site's MQTT bus: an embedded rumqttd broker behind the agent's own
//! front door (authentication, topic rules, durable telemetry), plus the
//! agent's own publications (polled readings, retained device health).

pub mod admission;
pub mod auth;
pub mod broker;
pub mod frame;
pub mod payload;
mod proxy;
pub mod publish;
pub mod sessions;
mod websocket;

use crate::buffer::Buffer;
use anyhow::{Context, Result, bail};
use auth::User;
use broker::BusPublisher;
use bytes::Bytes;
use qi_common::shutdown::Stop;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// `[mqtt]`: see docs/configuration.md for every key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Plain MQTT listener. Loopback by default: open it up deliberately.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// MQTT over TLS listener (needs `tls_cert` and `tls_key`).
    pub tls_listen: Option<SocketAddr>,
    /// MQTT over WebSocket listener (`ws://HOST:PORT/mqtt`), for browsers.
    pub ws_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// CA for client certificates on the TLS listener; the certificate's
    /// common name is the user name.
    pub client_ca: Option<PathBuf>,
    /// `{site}` of the topic scheme; default: the gateway id.
    pub site: Option<String>,
    /// Clients without credentials get the rules of the user named `anonymous` (if any).
    #[serde(default)]
    pub allow_anonymous: bool,
    #[serde(default)]
    pub users: Vec<User>,
    /// Device ids allowed to publish telemetry.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Accept telemetry from any device id (not only `devices`).
    #[serde(default)]
    pub accept_unknown_devices: bool,
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    #[serde(default = "default_max_readings")]
    pub max_readings_per_message: usize,
    /// Publish each rejected telemetry message's reason on `.../errors`.
    #[serde(default = "yes")]
    pub error_topic: bool,
    /// Publish what the agent polls (Modbus, serial) on the bus too.
    #[serde(default = "yes")]
    pub publish_polled: bool,
    /// Logged-in clients at once, all listeners together.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections not yet logged in (TLS handshake, WebSocket upgrade,
    /// CONNECT) at once: a budget of their own, so silent sockets cannot
    /// lock logged-in clients out.
    #[serde(default = "default_max_pending")]
    pub max_pending_connections: usize,
    /// Connections (pending or logged in) from one source address.
    #[serde(default = "default_per_address")]
    pub max_connections_per_address: usize,
    /// Time from accepting a socket to a complete CONNECT, handshakes included.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Keep-alive granted at most (and to clients asking for none); a client
    /// silent for 1.5x its keep-alive is disconnected.
    #[serde(default = "default_max_keep_alive_s")]
    pub max_keep_alive_s: u64,
    /// Broker memory per topic: `segment_kib x segments` of message log.
    #[serde(default = "default_segment_kib")]
    pub segment_kib: usize,
    #[serde(default = "default_segments")]
    pub segments: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}
fn default_max_payload() -> usize {
    65_536
}
fn default_max_readings() -> usize {
    1000
}
fn default_max_connections() -> usize {
    1000
}
fn default_max_pending() -> usize {
    128
}
fn default_per_address() -> usize {
    64
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_max_keep_alive_s() -> u64 {
    3600
}
fn default_segment_kib() -> usize {
    256
}
fn default_segments() -> usize {
    2
}
fn yes() -> bool {
    true
}

impl MqttConfig {
    /// Checks what serde cannot: hashes, TLS pairs, duplicate users, sizes.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for u in &self.users {
            if !names.insert(&u.name) {
                return Err(format!("mqtt.users: user {:?} appears twice", u.name));
            }
            if let Some(h) = &u.password_hash {
                auth::check_hash(h).map_err(|e| format!("mqtt.users {:?}: {e}", u.name))?;
            }
        }
        if self.tls_listen.is_some() && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return Err("mqtt.tls_listen needs mqtt.tls_cert and mqtt.tls_key".into());
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > 16 << 20 {
            return Err("mqtt.max_payload_bytes must be 1..=16777216".into());
        }
        if self.segment_kib * 1024 < self.max_payload_bytes + 1024 {
            return Err(
                "mqtt.segment_kib must hold at least one message of max_payload_bytes".into(),
            );
        }
        if self.segments == 0 {
            return Err("mqtt.segments must be > 0".into());
        }
        if self.max_readings_per_message == 0 {
            return Err(
                "mqtt.max_readings_per_message must be > 0 (0 refuses every message)".into(),
            );
        }
        for (key, v) in [
            ("max_connections", self.max_connections as u64),
            (
                "max_pending_connections",
                self.max_pending_connections as u64,
            ),
            (
                "max_connections_per_address",
                self.max_connections_per_address as u64,
            ),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("max_keep_alive_s", self.max_keep_alive_s),
        ] {
            if v == 0 {
                return Err(format!("mqtt.{key} must be > 0 (0 can never work)"));
            }
        }
        if self.max_keep_alive_s > 65_535 {
            return Err(
                "mqtt.max_keep_alive_s must be <= 65535 (MQTT's largest keep-alive)".into(),
            );
        }
        Ok(())
    }
}

/// What the rest of the agent uses to put its own messages on the bus.
#[derive(Clone)]
pub struct Bus {
    publisher: BusPublisher,
    site: String,
    /// Device id -> device type (the profile name) for topics.
    types: Arc<HashMap<String, String>>,
}

impl Bus {
    pub fn topic(&self, device: &str, leaf: &str) -> String {
        let t = self.types.get(device).map_or("device", String::as_str);
        format!("site/{}/{t}/{device}/{leaf}", self.site)
    }
    pub fn publish(&self, topic: String, payload: Bytes, retain: bool) {
        self.publisher.publish(topic, payload, retain);
    }
}

fn load_tls(cfg: &MqttConfig) -> Result<Option<tokio_rustls::TlsAcceptor>> {
    use tokio_rustls::rustls;
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else {
        return Ok(None);
    };
    let read = |p: &PathBuf, key: &str| {
        std::fs::read(p).with_context(|| format!("mqtt.{key} {}", p.display()))
    };
    let certs: Vec<_> = rustls_pemfile::certs(&mut &read(cert, "tls_cert")?[..])
        .collect::<std::result::Result<_, _>>()
        .context("mqtt.tls_cert: not PEM certificates")?;
    let key = rustls_pemfile::private_key(&mut &read(key, "tls_key")?[..])
        .context("mqtt.tls_key: not a PEM key")?
        .context("mqtt.tls_key: no private key in the file")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &cfg.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut &read(ca, "client_ca")?[..]) {
                roots
                    .add(c.context("mqtt.client_ca: not PEM")?)
                    .context("mqtt.client_ca: unusable certificate")?;
            }
            // Password users may still come in over TLS without a certificate.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .context("mqtt.client_ca")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .context("mqtt.tls_cert / tls_key do not match")?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()
        .map(str::to_string)
}

/// MQTT clients connected now (past the front door's login).
pub fn connected_clients() -> u64 {
    proxy::CLIENTS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Starts the broker, the front door's listeners and the agent's publisher.
pub async fn start(
    cfg: MqttConfig,
    gateway_id: &str,
    device_types: HashMap<String, String>,
    buffer: Arc<Buffer>,
    stop: Stop,
) -> Result<Bus> {
    let site = cfg.site.clone().unwrap_or_else(|| gateway_id.to_string());
    let tls = load_tls(&cfg)?;
    let limits = connection_limits(&cfg);
    let addr = broker::start(broker::BrokerLimits {
        max_connections: limits.max_connections,
        max_payload_bytes: cfg.max_payload_bytes,
        segment_bytes: cfg.segment_kib * 1024,
        segments: cfg.segments,
    })
    .await?;
    let publisher = broker::publisher(addr);
    let plain = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on mqtt.listen = {}", cfg.listen))?;
    let tls_listener = bind_optional(cfg.tls_listen, "mqtt.tls_listen").await?;
    let ws_listener = bind_optional(cfg.ws_listen, "mqtt.ws_listen").await?;
    tracing::info!(listen = %cfg.listen, tls_listen = ?cfg.tls_listen, ws_listen = ?cfg.ws_listen, %site, users = cfg.users.len(),
        anonymous = cfg.allow_anonymous, "MQTT bus listening");
    if cfg.users.is_empty() && !cfg.allow_anonymous {
        tracing::warn!("mqtt: no users and anonymous access off: nobody can connect");
    }
    let users = cfg
        .users
        .iter()
        .map(|u| (u.name.clone(), u.clone()))
        .collect();
    let door = Arc::new(proxy::FrontDoor {
        cfg,
        site: site.clone(),
        users,
        buffer,
        broker: addr,
        bus: publisher.clone(),
        sessions: Arc::new(sessions::Sessions::default()),
    });
    let admission = admission::Admission::new(limits);
    spawn_accept(
        plain,
        None,
        Arc::clone(&door),
        Arc::clone(&admission),
        stop.clone(),
    );
    if let Some(l) = ws_listener {
        websocket::spawn(l, Arc::clone(&door), Arc::clone(&admission), stop.clone());
    }
    if let Some(l) = tls_listener {
        spawn_accept(l, tls, door, admission, stop);
    }
    Ok(Bus {
        publisher,
        site,
        types: Arc::new(device_types),
    })
}

async fn bind_optional(
    addr: Option<SocketAddr>,
    key: &str,
) -> Result<Option<tokio::net::TcpListener>> {
    let Some(a) = addr else { return Ok(None) };
    let l = tokio::net::TcpListener::bind(a)
        .await
        .with_context(|| format!("cannot listen on {key} = {a}"))?;
    Ok(Some(l))
}

/// The configured budgets, fitted to the open-file limit this process has
/// (raised to its hard limit first): see `admission::fit_to_fd_limit`.
fn connection_limits(cfg: &MqttConfig) -> admission::Limits {
    let wanted = admission::Limits {
        max_connections: cfg.max_connections,
        max_pending: cfg.max_pending_connections,
        per_address: cfg.max_connections_per_address,
    };
    let fd_limit = match admission::raise_fd_limit() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit; assuming 1024");
            1024
        }
    };
    let fitted = admission::fit_to_fd_limit(wanted, fd_limit);
    if fitted != wanted {
        tracing::warn!(
            fd_limit,
            max_connections = fitted.max_connections,
            max_pending_connections = fitted.max_pending,
            "mqtt: connection budgets lowered to fit the open-file limit ({} per client, 1 per pending connection, {} kept for the rest); raise LimitNOFILE to allow more",
            admission::FDS_PER_CLIENT,
            admission::FDS_RESERVED,
        );
    }
    metrics::gauge!(crate::metric_names::EDGE_MQTT_MAX_CONNECTIONS)
        .set(fitted.max_connections as f64);
    fitted
}

/// Turns a refused connection into a counter and a (rate-limited) log line.
pub(crate) fn refused(peer: SocketAddr, r: admission::Refused) {
    metrics::counter!(crate::metric_names::EDGE_MQTT_CONNECTIONS_TOTAL, "result" => r.label())
        .increment(1);
    tracing::warn!(%peer, reason = r.label(), "MQTT connection refused: connection budget reached");
}

fn spawn_accept(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    door: Arc<proxy::FrontDoor>,
    admission: Arc<admission::Admission>,
    mut stop: Stop,
) {
    tokio::spawn(async move {
        let mut backoff = std::time::Duration::from_millis(10);
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors (or memory): wait before trying
                        // again instead of spinning on the same error.
                        metrics::counter!(crate::metric_names::EDGE_MQTT_ACCEPT_ERRORS_TOTAL).increment(1);
                        tracing::warn!(error = %e, retry_in = ?backoff, "MQTT accept failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                        continue;
                    }
                },
                _ = stop.wait() => return,
            };
            backoff = std::time::Duration::from_millis(10);
            let ticket = match admission.arrive(peer.ip()) {
                Ok(t) => t,
                Err(r) => {
                    refused(peer, r);
                    continue;
                }
            };
            let deadline = tokio::time::Instant::now()
                + std::time::Duration::from_millis(door.cfg.connect_timeout_ms);
            let _ = stream.set_nodelay(true);
            let door = Arc::clone(&door);
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => door.serve(stream, peer, None, ticket, deadline).await,
                    Some(acceptor) => {
                        match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => {
                                let cn = s
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .and_then(|c| common_name(c));
                                door.serve(s, peer, cn, ticket, deadline).await
                            }
                            Ok(Err(e)) => {
                                metrics::counter!(crate::metric_names::EDGE_MQTT_CONNECTIONS_TOTAL, "result" => "tls_failed").increment(1);
                                tracing::warn!(%peer, error = %e, "MQTT TLS handshake failed");
                            }
                            Err(_) => {
                                metrics::counter!(crate::metric_names::EDGE_MQTT_TIMEOUTS_TOTAL, "phase" => "tls_handshake").increment(1);
                                tracing::info!(%peer, "MQTT TLS handshake timed out (mqtt.connect_timeout_ms)");
                            }
                        }
                    }
                }
            });
        }
    });
}

/// Validates `[mqtt]` or fails with the reason (used by the config loader).
pub fn check(cfg: &MqttConfig) -> Result<()> {
    if let Err(e) = cfg.validate() {
        bail!(e);
    }
    Ok(())
}
