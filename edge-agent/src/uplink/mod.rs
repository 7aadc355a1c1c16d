//! The uplink: streams buffered readings to the hub and deletes them once acknowledged.
//!
//! One task owns the connection. On every (re)connect it starts again from
//! everything still in the buffer, so a record is deleted only after the hub
//! has committed it: at-least-once on the wire, exactly-once at the hub thanks
//! to its (gateway, seq) dedupe. The hub answers every batch with one ack, in
//! order, so the oldest batch in flight is the one an ack is for.

mod cert;
pub mod hello;
mod hubs;
mod queue;
mod status;

pub use cert::check_client_certificate;
pub use status::{LinkState, UplinkError, UplinkStatus};

use crate::buffer::{Adoption, Buffer, RecordId};
use crate::config::UplinkConfig;
use crate::fleet::Fleet;
use crate::sources::backoff::Backoff;
use crate::sources::command::WriteError;
use qi_common::progress::Beat;
use qi_common::shutdown::Stop;
use qi_proto::v1::uplink_client::UplinkClient;
use qi_proto::v1::{
    Command, CommandResult, EdgeMessage, Hello, HubMessage, ReadingBatch, command, edge_message,
    hub_message,
};
use queue::SendQueue;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

pub struct Uplink {
    gateway_id: String,
    /// The devices commands from the hub act on.
    fleet: Option<Arc<Fleet>>,
    /// The benches the Hello describes.
    benches: Vec<qi_proto::v1::BenchInfo>,
    /// Where the hub's word on calibration goes (None: not asked for).
    calibrations: Option<Arc<crate::calibration::Calibrations>>,
    /// Where the hub's verdicts of this gateway's runs go (None: not asked for).
    verdicts: Option<Arc<crate::verdicts::HubVerdicts>>,
    tls: Option<tonic::transport::ClientTlsConfig>,
    hubs: hubs::Hubs,
    /// `Bearer <token>` header value, when the hub wants tokens.
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    cfg: UplinkConfig,
    buffer: Arc<Buffer>,
    status: watch::Sender<UplinkStatus>,
}

/// How a session (one stream) ended.
enum SessionEnd {
    Stopped,
    Failed(UplinkError),
}

impl Uplink {
    /// Builds the uplink; reads certificates and the token file now, so a
    /// missing or unreadable one is a clear start-up error.
    pub fn new(
        gateway_id: String,
        cfg: UplinkConfig,
        buffer: Arc<Buffer>,
    ) -> Result<(Uplink, watch::Receiver<UplinkStatus>), UplinkError> {
        let read = |p: &std::path::PathBuf, key: &str| {
            std::fs::read(p)
                .map_err(|e| UplinkError::Url(format!("uplink.{key} {}: {e}", p.display())))
        };
        check_client_certificate(&cfg)?;
        let hubs = hubs::Hubs::new(cfg.hub_endpoints());
        let tls = if hubs.current().starts_with("https://") {
            let mut t = tonic::transport::ClientTlsConfig::new();
            if let Some(ca) = &cfg.ca_cert {
                t = t.ca_certificate(tonic::transport::Certificate::from_pem(read(
                    ca, "ca_cert",
                )?));
            }
            if let (Some(c), Some(k)) = (&cfg.client_cert, &cfg.client_key) {
                t = t.identity(tonic::transport::Identity::from_pem(
                    read(c, "client_cert")?,
                    read(k, "client_key")?,
                ));
            }
            if let Some(d) = &cfg.tls_domain {
                t = t.domain_name(d.clone());
            }
            Some(t)
        } else {
            None
        };
        let token = match &cfg.token_file {
            Some(p) => {
                let raw = read(p, "token_file")?;
                let t = String::from_utf8_lossy(&raw).trim().to_string();
                Some(format!("Bearer {t}").parse().map_err(|_| {
                    UplinkError::Url("uplink.token_file: token is not printable ASCII".into())
                })?)
            }
            None => None,
        };
        let (tx, rx) = watch::channel(UplinkStatus {
            hub_url: hubs.current().to_string(),
            state: LinkState::Connecting,
            last_error: None,
            last_ack_seq: None,
            last_ack_ms: None,
            connects: 0,
            batches_sent: 0,
            readings_sent: 0,
        });
        Ok((
            Uplink {
                gateway_id,
                fleet: None,
                benches: Vec::new(),
                calibrations: None,
                verdicts: None,
                tls,
                hubs,
                token,
                cfg,
                buffer,
                status: tx,
            },
            rx,
        ))
    }

    /// The benches to describe in the Hello (at most `MAX_HELLO_BENCHES`).
    pub fn with_benches(mut self, mut benches: Vec<qi_proto::v1::BenchInfo>) -> Uplink {
        let max = qi_proto::limits::MAX_HELLO_BENCHES;
        if benches.len() > max {
            tracing::warn!(
                max,
                "more benches than a Hello may describe; the rest are not sent"
            );
            benches.truncate(max);
        }
        self.benches = benches;
        self
    }

    /// Asks the hub for its instruments' calibration status and keeps it there.
    pub fn with_calibrations(mut self, c: Arc<crate::calibration::Calibrations>) -> Uplink {
        self.calibrations = Some(c);
        self
    }

    /// Takes the hub's calibration list; a bad one is counted and logged,
    /// and what was kept stays.
    async fn calibrations(&self, msg: qi_proto::v1::CalibrationStatus) {
        let Some(c) = &self.calibrations else {
            return;
        };
        let result = match c.apply(msg).await {
            Ok(n) => {
                tracing::info!(instruments = n, "calibration status from the hub stored");
                "stored"
            }
            Err(crate::calibration::ApplyError::Invalid(m)) => {
                tracing::warn!(error = %m, "calibration status from the hub refused; the kept one stays");
                "invalid"
            }
            Err(e) => {
                tracing::error!(error = %e, "calibration status from the hub not stored; the kept one stays");
                "storage"
            }
        };
        metrics::counter!(crate::metric_names::EDGE_CALIBRATION_UPDATES_TOTAL, "result" => result)
            .increment(1);
    }

    /// Asks the hub for its verdicts of this gateway's runs and keeps them there.
    pub fn with_verdicts(mut self, v: Arc<crate::verdicts::HubVerdicts>) -> Uplink {
        self.verdicts = Some(v);
        self
    }

    /// Takes the hub's run verdicts; a bad list is counted and logged, and
    /// what was kept stays.
    async fn verdicts(&self, msg: qi_proto::v1::RunVerdicts) {
        let Some(v) = &self.verdicts else {
            return;
        };
        let n = msg.runs.len();
        let result = match v.apply(msg).await {
            Ok(known) => {
                tracing::info!(runs = n, known, "run verdicts from the hub stored");
                "stored"
            }
            Err(crate::verdicts::ApplyError::Invalid(m)) => {
                tracing::warn!(error = %m, "run verdicts from the hub refused whole; the kept ones stay");
                "invalid"
            }
            Err(e) => {
                tracing::error!(error = %e, "run verdicts from the hub not stored; the kept ones stay");
                "storage"
            }
        };
        metrics::counter!(crate::metric_names::EDGE_HUB_VERDICT_UPDATES_TOTAL, "result" => result)
            .increment(1);
    }

    /// Lets hub commands reach these devices (and reload them).
    pub fn with_fleet(mut self, fleet: Arc<Fleet>) -> Uplink {
        self.fleet = Some(fleet);
        self
    }

    /// Runs a hub command on its own task (a write can take a device timeout)
    /// and sends the result back on the stream. A command past its deadline is
    /// refused without touching the device.
    fn execute(&self, cmd: Command, tx: mpsc::Sender<EdgeMessage>) {
        let fleet = self.fleet.clone();
        tokio::spawn(async move {
            let id = cmd.id;
            let late = chrono::Utc::now().timestamp_millis() > cmd.deadline_unix_ms;
            let handles = fleet.as_ref().map(|f| f.view().handles).unwrap_or_default();
            let (ok, message) = match cmd.action {
                _ if late => (
                    false,
                    "deadline passed before the command could run".to_string(),
                ),
                Some(command::Action::ReloadConfig(_)) => match &fleet {
                    Some(f) => match f.reload().await {
                        Ok(m) => (true, m),
                        Err(m) => (false, m),
                    },
                    None => (false, "no devices to reload".to_string()),
                },
                Some(command::Action::WritePoint(w)) => match handles.get(&w.device_id) {
                    None => (
                        false,
                        WriteError::UnknownDevice(w.device_id.clone()).to_string(),
                    ),
                    Some(h) => match h.write(&w.point, w.value).await {
                        Ok(()) => (true, format!("{}.{} = {}", w.device_id, w.point, w.value)),
                        Err(e) => (false, e.to_string()),
                    },
                },
                None => (false, "unknown command (newer hub?)".to_string()),
            };
            tracing::info!(command = id, ok, %message, "hub command done");
            metrics::counter!(crate::metric_names::EDGE_COMMANDS_TOTAL, "ok" => if ok { "true" } else { "false" })
                .increment(1);
            let result = EdgeMessage {
                kind: Some(edge_message::Kind::CommandResult(CommandResult {
                    id,
                    ok,
                    message,
                })),
            };
            // If the stream is gone, the hub sends the command again after reconnecting.
            let _ = tx.send(result).await;
        });
    }

    /// Runs until `stop` fires, then keeps draining for at most
    /// `shutdown_drain_ms` (while connected) before returning.
    pub async fn run(self, stop: Stop) {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.cfg.reconnect_min_ms),
            Duration::from_millis(self.cfg.reconnect_max_ms),
        );
        let mut failures: u32 = 0;
        // The watchdog's view of this loop: it beats every time round, also
        // while waiting out a backoff; a send or an ack wait that hangs stops it.
        let beat = qi_common::progress::Progress::process().register("uplink");
        loop {
            if stop.is_stopped() {
                break;
            }
            beat.beat();
            self.status.send_modify(|s| s.state = LinkState::Connecting);
            match self.session(stop.clone(), &beat).await {
                SessionEnd::Stopped => break,
                SessionEnd::Failed(e) => {
                    let delay = backoff.next_delay();
                    failures += 1;
                    metrics::counter!(crate::metric_names::EDGE_UPLINK_FAILURES_TOTAL).increment(1);
                    if failures == 1 || failures.is_multiple_of(10) {
                        tracing::warn!(error = %e, failures, retry_in_ms = delay.as_millis() as u64,
                            "uplink down; reconnecting with backoff");
                    }
                    let next = self.hubs.advance();
                    if let Some(hub) = next {
                        tracing::warn!(error = %e, %hub, retry_in_ms = delay.as_millis() as u64,
                            "uplink down; trying the next hub");
                    }
                    self.status.send_modify(|s| {
                        s.state = LinkState::Disconnected;
                        s.last_error = Some(e.to_string());
                        s.hub_url = self.hubs.current().to_string();
                    });
                    let mut stop = stop.clone();
                    tokio::select! {
                        _ = beat.sleep(delay) => {}
                        _ = stop.wait() => break,
                    }
                }
            }
            if self.status.borrow().state == LinkState::Connected {
                backoff.reset();
                failures = 0;
            }
        }
        self.status
            .send_modify(|s| s.state = LinkState::Disconnected);
        tracing::info!(backlog = self.buffer.stats().backlog, "uplink stopped");
    }

    async fn session(&self, mut stop: Stop, beat: &Beat) -> SessionEnd {
        match self.session_inner(&mut stop, beat).await {
            Ok(()) => SessionEnd::Stopped,
            Err(e) => SessionEnd::Failed(e),
        }
    }

    async fn session_inner(&self, stop: &mut Stop, beat: &Beat) -> Result<(), UplinkError> {
        let mut endpoint = Endpoint::from_shared(self.hubs.current().to_string())
            .map_err(|e| UplinkError::Url(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10));
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| {
                UplinkError::Certificate(format!("TLS settings: {}", cert::chain(&e)))
            })?;
        }
        let channel = tokio::select! {
            c = endpoint.connect() => c.map_err(|e| UplinkError::Connect(cert::chain(&e)))?,
            _ = stop.wait() => return Ok(()),
        };
        let token = self.token.clone();
        // The stream's id in the hub's logs (its `request_id`), logged here
        // too, so both ends of one connection can be found.
        let request_id = qi_common::request_id::new_id();
        let id_value = tonic::metadata::MetadataValue::try_from(request_id.as_str()).ok();
        let mut client =
            UplinkClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
                if let Some(t) = &token {
                    req.metadata_mut().insert("authorization", t.clone());
                }
                if let Some(v) = &id_value {
                    req.metadata_mut()
                        .insert(qi_common::request_id::HEADER, v.clone());
                }
                Ok(req)
            });
        if let Some(enc) = self.cfg.compression.encoding() {
            // Every batch compressed; the hub accepts gzip and zstd.
            client = client.send_compressed(enc).accept_compressed(enc);
        }
        let (tx, rx) = mpsc::channel::<EdgeMessage>(self.cfg.max_in_flight + 1);
        let hello = EdgeMessage {
            kind: Some(edge_message::Kind::Hello(Hello {
                gateway_id: self.gateway_id.clone(),
                agent_version: env!("CARGO_PKG_VERSION").to_string(),
                devices: self
                    .fleet
                    .as_ref()
                    .map(|f| hello::device_infos(&f.view()))
                    .unwrap_or_default(),
                benches: self.benches.clone(),
                accepts_calibrations: self.calibrations.is_some(),
                accepts_run_verdicts: self.verdicts.is_some(),
            })),
        };
        tx.send(hello).await.map_err(|_| UplinkError::Closed)?;
        let mut inbound = client
            .stream(ReceiverStream::new(rx))
            .await
            .map_err(explain_refusal)?
            .into_inner();
        let welcome = match inbound.message().await.map_err(explain_refusal)? {
            Some(HubMessage {
                kind: Some(hub_message::Kind::Welcome(w)),
            }) => w,
            other => {
                return Err(UplinkError::Protocol(format!(
                    "expected Welcome, got {other:?}"
                )));
            }
        };
        tracing::info!(%request_id, hub_highest = welcome.highest_committed_seq, "uplink stream open");
        match self
            .buffer
            .adopt_hub_seq(welcome.highest_committed_seq)
            .await?
        {
            Adoption::Unchanged => {}
            Adoption::Raised => tracing::warn!(
                hub_highest = welcome.highest_committed_seq,
                "hub holds higher sequence numbers than this buffer (buffer wiped or replaced?); new readings continue above them"
            ),
            // Readings were forged under this gateway's id (or another agent
            // uses it): the hub stores ours anyway, they do not collide
            // (dedupe is on series, time and sequence).
            Adoption::Implausible => {
                metrics::counter!(crate::metric_names::EDGE_UPLINK_IMPLAUSIBLE_HUB_SEQ_TOTAL)
                    .increment(1);
                tracing::error!(
                    hub_highest = welcome.highest_committed_seq,
                    own_last = self.buffer.last_seq(),
                    "the hub reports a sequence number for this gateway beyond any an agent can have sent: readings were forged under this gateway id, or another agent uses it; not adopted (secure the hub's gRPC port with grpc.auth)"
                );
            }
        }
        let start = self.buffer.stats();
        tracing::info!(hub = %self.hubs.current(), backlog = start.backlog,
            hub_highest = welcome.highest_committed_seq, "uplink connected");
        self.status.send_modify(|s| {
            s.state = LinkState::Connected;
            s.last_error = None;
            s.connects += 1;
        });

        // Resend everything not yet acknowledged.
        let mut queue = SendQueue::new(&self.buffer, self.cfg.live_interleave);
        // Batches sent and not yet acknowledged: their records and highest seq.
        // Each batch's span stays open until its ack: its length is the
        // round trip, and the hub's spans for the batch are its children.
        let mut in_flight: VecDeque<(Vec<RecordId>, u64, tracing::Span)> = VecDeque::new();
        let ack_timeout = self.cfg.ack_timeout();
        let mut last_progress = tokio::time::Instant::now();
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        let linger = Duration::from_millis(self.cfg.batch_linger_ms);
        let mut pending_since: Option<tokio::time::Instant> = None;
        loop {
            beat.beat();
            if drain_deadline.is_none() && stop.is_stopped() {
                // Shutting down: give the backlog a short chance to reach the hub.
                drain_deadline = Some(
                    tokio::time::Instant::now() + Duration::from_millis(self.cfg.shutdown_drain_ms),
                );
            }
            if let Some(d) = drain_deadline
                && (tokio::time::Instant::now() >= d
                    || (in_flight.is_empty() && self.buffer.stats().backlog == 0))
            {
                return Ok(());
            }
            if in_flight.len() < self.cfg.max_in_flight {
                let pick = queue.peek(&self.buffer, self.cfg.batch_max)?;
                // Latency bound: a partial batch waits at most `linger` for more readings.
                let lingering = match &pick {
                    None => {
                        pending_since = None;
                        false
                    }
                    Some(p) => {
                        let since = *pending_since.get_or_insert_with(tokio::time::Instant::now);
                        p.len() < self.cfg.batch_max
                            && drain_deadline.is_none()
                            && since.elapsed() < linger
                    }
                };
                if let Some(mut pick) = pick.filter(|_| !lingering) {
                    pending_since = None;
                    queue::cap_run_events(&mut pick);
                    queue.take(&pick);
                    let ids: Vec<RecordId> = pick.records.iter().map(|r| r.id()).collect();
                    let (batch, n, last) = pick.into_wire();
                    let span = tracing::info_span!(
                        "uplink_batch",
                        readings = n,
                        last_seq = last,
                        otel.name = "uplink batch",
                        otel.kind = "producer",
                    );
                    let msg = EdgeMessage {
                        kind: Some(edge_message::Kind::Batch(ReadingBatch {
                            traceparent: qi_common::telemetry::traceparent(&span),
                            ..batch
                        })),
                    };
                    tx.send(msg).await.map_err(|_| UplinkError::Closed)?;
                    if in_flight.is_empty() {
                        last_progress = tokio::time::Instant::now();
                    }
                    in_flight.push_back((ids, last, span));
                    metrics::counter!(crate::metric_names::EDGE_UPLINK_BATCHES_SENT_TOTAL)
                        .increment(1);
                    metrics::counter!(crate::metric_names::EDGE_UPLINK_READINGS_SENT_TOTAL)
                        .increment(n);
                    self.status.send_modify(|s| {
                        s.batches_sent += 1;
                        s.readings_sent += n;
                    });
                    continue;
                }
            }
            let stall_at = last_progress + ack_timeout;
            let linger_until = pending_since.map(|t| t + linger);
            let wait_more = in_flight.len() < self.cfg.max_in_flight && drain_deadline.is_none();
            tokio::select! {
                msg = inbound.message() => {
                    let msg = msg?.ok_or(UplinkError::Closed)?;
                    match msg.kind {
                        Some(hub_message::Kind::Ack(ack)) => {
                            let up_to = ack.committed_up_to;
                            let (ids, expected, _span) = in_flight.pop_front().ok_or_else(|| {
                                UplinkError::Protocol(format!("ack for {up_to} with no batch in flight"))
                            })?;
                            if up_to != expected {
                                return Err(UplinkError::Protocol(format!(
                                    "ack for {up_to}, but the oldest batch in flight ends at {expected}"
                                )));
                            }
                            self.buffer.ack(&ids, up_to)?;
                            last_progress = tokio::time::Instant::now();
                            metrics::counter!(crate::metric_names::EDGE_UPLINK_ACKS_TOTAL).increment(1);
                            self.status.send_modify(|s| {
                                s.last_ack_seq = Some(up_to);
                                s.last_ack_ms = Some(chrono::Utc::now().timestamp_millis());
                            });
                        }
                        Some(hub_message::Kind::Command(cmd)) => self.execute(cmd, tx.clone()),
                        Some(hub_message::Kind::Calibrations(c)) => self.calibrations(c).await,
                        Some(hub_message::Kind::RunVerdicts(v)) => self.verdicts(v).await,
                        other => return Err(UplinkError::Protocol(format!("unexpected message {other:?}"))),
                    }
                }
                _ = self.buffer.appended(), if wait_more => {}
                _ = tokio::time::sleep_until(linger_until.unwrap_or(stall_at)), if linger_until.is_some() => {}
                _ = tokio::time::sleep_until(stall_at), if !in_flight.is_empty() => {
                    metrics::counter!(crate::metric_names::EDGE_UPLINK_STALLS_TOTAL).increment(1);
                    return Err(UplinkError::Stalled(ack_timeout));
                }
                // Re-check the buffer now and then in case a wakeup was consumed elsewhere.
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.wait(), if drain_deadline.is_none() => {}
            }
        }
    }
}

/// TLS 1.3 checks the client certificate after the handshake, so a refused
/// certificate surfaces on the first RPC as a broken pipe, a reset, or (hyper)
/// a cancelled request on a closed connection: say what it means.
fn explain_refusal(s: tonic::Status) -> UplinkError {
    let m = s.message().to_ascii_lowercase();
    let detail = match std::error::Error::source(&s) {
        Some(src) => format!("{}: {}", s.message(), cert::chain(src)),
        None => s.message().to_string(),
    };
    if s.code() == tonic::Code::Unknown
        || m.contains("broken pipe")
        || m.contains("connection reset")
        || (s.code() == tonic::Code::Cancelled && m.contains("cancel"))
    {
        UplinkError::Rpc(tonic::Status::unauthenticated(format!(
            "the hub closed the connection during the TLS exchange (is this gateway's client certificate missing, expired, not signed by the hub's client CA, or without extendedKeyUsage clientAuth? the hub logs the reason as \"TLS handshake failed\"): {}",
            detail
        )))
    } else {
        UplinkError::Rpc(s)
    }
}
