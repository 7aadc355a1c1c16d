//! gRPC ingest: one task per gateway stream; commit each batch, then ack it.
//! What a batch must satisfy before anything is written: `validate`.

mod validate;

pub use validate::{validate_batch, validate_batch_at, validate_events};

use crate::auth::{Authenticator, Credential};
use crate::live::health::HealthTracker;
use crate::push::Sent;
use crate::storage::Store;
use futures::StreamExt;
use qi_common::progress::Progress;
use qi_proto::v1::uplink_server::Uplink;
use qi_proto::v1::{
    Ack, Command, EdgeMessage, HubMessage, ReloadConfig, Welcome, WritePoint, command,
    edge_message, hub_message,
};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use qi_proto::limits::{MAX_ID_LEN, valid_id};

pub struct IngestService {
    store: Store,
    live: Arc<crate::live::Fanout>,
    health: Arc<HealthTracker>,
    auth: Arc<Authenticator>,
    /// `grpc.max_future_skew_s`, in microseconds.
    max_future_us: i64,
    /// Makes the certificate links in `HubMessage.run_verdicts`.
    issuer: Arc<crate::certificates::Issuer>,
}

impl IngestService {
    pub fn new(
        store: Store,
        live: Arc<crate::live::Fanout>,
        health: Arc<HealthTracker>,
        auth: Arc<Authenticator>,
        max_future_skew_s: i64,
        issuer: Arc<crate::certificates::Issuer>,
    ) -> IngestService {
        IngestService {
            store,
            live,
            health,
            auth,
            max_future_us: max_future_skew_s.saturating_mul(1_000_000),
            issuer,
        }
    }
}

fn rejected(reason: &'static str, message: String) -> Status {
    metrics::counter!(crate::metric_names::HUB_INGEST_REJECTED_TOTAL, "reason" => reason)
        .increment(1);
    tracing::warn!(reason, %message, "rejecting uplink stream");
    Status::invalid_argument(message)
}

type HubStream = Pin<Box<dyn Stream<Item = Result<HubMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Uplink for IngestService {
    type StreamStream = HubStream;

    async fn stream(
        &self,
        request: Request<Streaming<EdgeMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let peer = request.remote_addr();
        let credential = self.auth.credential(&request);
        // Every log line of this stream carries its request id (and, after
        // Hello, its gateway): the id the gateway sent or a new one.
        let request_id = qi_common::request_id::accept_or_new(
            request
                .metadata()
                .get(qi_common::request_id::HEADER)
                .and_then(|v| v.to_str().ok()),
        );
        let span = tracing::info_span!(
            "grpc_stream",
            request_id = %request_id,
            gateway = tracing::field::Empty,
            otel.name = "uplink stream",
            otel.kind = "server",
        );
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<HubMessage, Status>>(16);
        let store = self.store.clone();
        let live = Arc::clone(&self.live);
        let health = Arc::clone(&self.health);
        let auth = Arc::clone(&self.auth);
        let max_future_us = self.max_future_us;
        let issuer = Arc::clone(&self.issuer);
        tokio::spawn(
            async move {
                let ends = Ends {
                    live: &live,
                    health: &health,
                    max_future_us,
                    issuer: &issuer,
                };
                if let Err(status) =
                    serve_stream(&store, ends, &auth, &credential, &mut inbound, &tx).await
                {
                    let _ = tx.send(Err(status)).await;
                }
                tracing::debug!(?peer, "uplink stream ended");
            }
            .instrument(span),
        );
        let mut response = Response::new(Box::pin(ReceiverStream::new(rx)) as HubStream);
        if let Ok(v) = request_id.parse() {
            response
                .metadata_mut()
                .insert(qi_common::request_id::HEADER, v);
        }
        Ok(response)
    }
}

/// Where a stream's results go besides the database: the live fan-out and
/// the gateways' health; the clock limit of its batches; the issuer whose
/// links the run verdicts carry.
#[derive(Clone, Copy)]
struct Ends<'a> {
    live: &'a Arc<crate::live::Fanout>,
    health: &'a Arc<HealthTracker>,
    max_future_us: i64,
    issuer: &'a crate::certificates::Issuer,
}

async fn serve_stream(
    store: &Store,
    ends: Ends<'_>,
    auth: &Authenticator,
    credential: &Credential,
    inbound: &mut Streaming<EdgeMessage>,
    tx: &mpsc::Sender<Result<HubMessage, Status>>,
) -> Result<(), Status> {
    let Ends {
        live,
        health,
        max_future_us,
        issuer,
    } = ends;
    let hello = match inbound.message().await? {
        Some(EdgeMessage {
            kind: Some(edge_message::Kind::Hello(h)),
        }) => h,
        Some(_) => {
            return Err(rejected(
                "no_hello",
                "the first message must be Hello".into(),
            ));
        }
        None => return Ok(()),
    };
    if !valid_id(&hello.gateway_id) {
        return Err(rejected(
            "bad_gateway_id",
            format!("gateway_id must be 1..={MAX_ID_LEN} printable characters"),
        ));
    }
    auth.check(credential, &hello.gateway_id)?;
    let gw = hello.gateway_id;
    tracing::Span::current().record("gateway", gw.as_str());
    // Before anything is written: a bad description refuses the stream whole.
    crate::models::validate(&hello.devices)
        .map_err(|m| rejected("bad_device_info", format!("gateway {gw}: Hello: {m}")))?;
    crate::runs::validate::validate_benches(&hello.benches)
        .map_err(|m| rejected("bad_bench_info", format!("gateway {gw}: Hello: {m}")))?;
    let highest = store
        .gateway_connected(&gw, &hello.agent_version)
        .await
        .map_err(|e| unavailable(&gw, e))?;
    record_models(store, live, &gw, &hello.devices).await?;
    crate::runs::benches::record(store.pool(), &gw, &hello.benches)
        .await
        .map_err(|e| unavailable(&gw, e.into()))?;
    // Before the first command tick, so re-sent values go out with it.
    crate::desired::reconcile_on_connect(store, live, &gw).await;
    tracing::info!(gateway = %gw, agent_version = %hello.agent_version, highest_seq = highest, "gateway connected");
    let _connected = ConnectedGuard::new();
    // Offline again when this function returns, however it returns.
    let _online = health
        .connected(&gw)
        .await
        .map_err(|e| unavailable(&gw, crate::storage::StoreError::Db(e)))?;
    let mut heartbeat = tokio::time::interval(std::time::Duration::from_secs(
        crate::live::health::HEARTBEAT_S,
    ));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    send(
        tx,
        hub_message::Kind::Welcome(Welcome {
            highest_committed_seq: highest,
        }),
    )
    .await?;

    let mut told = Told {
        calibrations: Sent::new(hello.accepts_calibrations),
        verdicts: Sent::new(hello.accepts_run_verdicts),
    };
    told.send_if_changed(store, &gw, issuer, tx).await?;

    // Commands for this gateway are polled while its stream is open.
    let mut command_tick = tokio::time::interval(std::time::Duration::from_millis(500));
    command_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Up to PIPELINE batches are written at once (each in its own
    // transaction on its own connection, so PostgreSQL works on one while
    // the next arrives); acks still go out one per batch, in arrival order.
    let mut writing: futures::stream::FuturesOrdered<tokio::task::JoinHandle<BatchWritten>> =
        futures::stream::FuturesOrdered::new();
    let mut evaluations = crate::runs::EvaluationTriggers::default();
    let mut open = true;
    // This stream's loop goes round at least every command tick.
    let beat = Progress::process().register(format!("ingest stream {gw}"));
    while open || !writing.is_empty() {
        beat.beat();
        let msg = tokio::select! {
            m = inbound.message(), if open && writing.len() < PIPELINE => match m? {
                Some(m) => m,
                None => {
                    open = false;
                    continue;
                }
            },
            Some(done) = writing.next(), if !writing.is_empty() => {
                let w: Written = done
                    .map_err(|e| Status::internal(format!("batch writer failed: {e}")))??;
                // Acks come in arrival order, so every batch before this one
                // is committed too: a run's readings written alongside (in
                // the pipeline) are in before its evaluation reads them.
                let evaluate = evaluations.after_commit(w.runs);
                if !evaluate.is_empty() {
                    // Off the ingest path: the ack does not wait for evaluations.
                    tokio::spawn(crate::runs::on_completed(store.pool().clone(), evaluate));
                }
                let ack = tracing::info_span!(parent: &w.span, "ack", committed_up_to = w.last);
                acknowledge(tx, &gw, w.last, w.n, w.inserted, w.started)
                    .instrument(ack)
                    .await?;
                continue;
            }
            _ = command_tick.tick() => {
                send_commands(store, &gw, tx).await?;
                told.send_if_changed(store, &gw, issuer, tx).await?;
                continue;
            }
            _ = heartbeat.tick() => {
                health
                    .heartbeat(&gw)
                    .await
                    .map_err(|e| unavailable(&gw, crate::storage::StoreError::Db(e)))?;
                continue;
            }
        };
        let batch = match msg.kind {
            Some(edge_message::Kind::Batch(b)) => {
                // Before compression: set against hub_grpc_wire_bytes_received_total.
                metrics::counter!(crate::metric_names::HUB_GRPC_MESSAGE_BYTES_RECEIVED_TOTAL)
                    .increment(prost::Message::encoded_len(&b) as u64);
                b
            }
            Some(edge_message::Kind::CommandResult(r)) => {
                let id = i64::try_from(r.id).unwrap_or(-1);
                let known = store
                    .complete_command(&gw, id, r.ok, &r.message)
                    .await
                    .map_err(|e| unavailable(&gw, e))?;
                metrics::counter!(crate::metric_names::HUB_COMMAND_RESULTS_TOTAL, "ok" => if r.ok { "true" } else { "false" }).increment(1);
                tracing::info!(gateway = %gw, command = r.id, ok = r.ok, message = %r.message, known, "command result");
                if known && let Err(e) = crate::desired::on_command_result(store, live, id).await {
                    tracing::warn!(gateway = %gw, command = r.id, error = %e, "desired state of a command result not announced");
                }
                continue;
            }
            _ => {
                return Err(rejected(
                    "unexpected_message",
                    "expected ReadingBatch or CommandResult".into(),
                ));
            }
        };
        // One span per batch, continuing the gateway's trace when it sent
        // one (`ReadingBatch.traceparent`): its children validate, write
        // and ack it. The log lines inside carry the stream's fields.
        let batch_span = tracing::info_span!(
            "ingest_batch",
            gateway = %gw,
            readings = batch.readings.len(),
            events = batch.events.len() + batch.run_events.len(),
            otel.name = "ingest batch",
            otel.kind = "consumer",
        );
        qi_common::telemetry::continue_trace(&batch_span, &batch.traceparent);
        let last = batch_span.in_scope(|| {
            let _v = tracing::info_span!("validate").entered();
            let now_us = chrono::Utc::now().timestamp_micros();
            // An events-only batch (a gateway's local audit, a run's progress)
            // has no readings.
            let events_only = batch.readings.is_empty()
                && (!batch.events.is_empty() || !batch.run_events.is_empty());
            if !events_only {
                validate_batch_at(&batch.readings, now_us, max_future_us)
                    .map_err(|m| rejected("invalid_batch", format!("gateway {gw}: {m}")))?;
            }
            validate_events(&batch, now_us, max_future_us)
                .map_err(|m| rejected("invalid_batch", format!("gateway {gw}: {m}")))?;
            crate::runs::validate::validate_batch(&batch, now_us, max_future_us)
                .map_err(|m| rejected("invalid_run_events", format!("gateway {gw}: {m}")))?;
            let last = batch
                .readings
                .last()
                .map(|r| r.seq)
                .max(batch.events.last().map(|e| e.seq))
                .max(batch.run_events.last().map(|e| e.seq))
                .unwrap_or(0);
            Ok::<u64, Status>(last)
        })?;
        let (store, gw2, live) = (store.clone(), gw.clone(), Arc::clone(live));
        // A task of its own: a write holding a pooled connection must make
        // progress while this loop awaits something else (commands also need
        // a connection; with the pool exhausted, a write parked inside an
        // unpolled future would never give its connection back).
        let db_write = tracing::info_span!(parent: &batch_span, "db_write", otel.kind = "client");
        writing.push_back(tokio::spawn(async move {
            // A write that never returns (a table locked by a stuck
            // migration, a hung server) is ingest stuck: the watchdog sees it.
            let _writing = Progress::process().register(format!("ingest write {gw2}"));
            let started = std::time::Instant::now();
            let stored = store
                .insert_batch_with_events(&gw2, &batch.readings, &batch.events, &batch.run_events)
                .await
                .map_err(|e| match e {
                    crate::storage::StoreError::Refused(m) => {
                        rejected("run_conflict", format!("gateway {gw2}: {m}"))
                    }
                    e => unavailable(&gw2, e),
                })?;
            if stored.events > 0 {
                tracing::info!(gateway = %gw2, events = stored.events, "gateway audit events appended to the audit trail");
            }
            // A redelivered batch was seen live the first time.
            if stored.readings > 0 {
                live.publish_batch(&gw2, &batch.readings, &stored.series_ids);
            }
            Ok::<_, Status>(Written {
                last,
                n: batch.readings.len() as u64,
                inserted: stored.readings,
                started,
                runs: stored.runs,
                span: batch_span,
            })
        }.instrument(db_write)));
    }
    tracing::info!(gateway = %gw, "gateway disconnected");
    Ok(())
}

/// The models of the gateway's devices (its Hello) become twin types and
/// typed instrument twins (`crate::models`).
async fn record_models(
    store: &Store,
    live: &crate::live::Fanout,
    gw: &str,
    devices: &[qi_proto::v1::DeviceInfo],
) -> Result<(), Status> {
    match crate::models::record(store.pool(), live, gw, devices).await {
        Ok(()) => Ok(()),
        Err(crate::models::ModelError::Invalid(m)) => Err(rejected(
            "bad_device_info",
            format!("gateway {gw}: Hello: {m}"),
        )),
        Err(crate::models::ModelError::Db(e)) => Err(unavailable(gw, e.into())),
    }
}

/// A batch's write.
struct Written {
    /// Its last sequence number.
    last: u64,
    /// Readings it carried.
    n: u64,
    /// Readings new to the hub.
    inserted: u64,
    /// When the write began.
    started: std::time::Instant,
    runs: crate::storage::run_events::RunsStored,
    /// The batch's span (`ingest_batch`), open until the ack is sent.
    span: tracing::Span,
}
type BatchWritten = Result<Written, Status>;

/// Batches of one stream written at the same time.
const PIPELINE: usize = 2;

async fn acknowledge(
    tx: &mpsc::Sender<Result<HubMessage, Status>>,
    gw: &str,
    last: u64,
    n: u64,
    inserted: u64,
    started: std::time::Instant,
) -> Result<(), Status> {
    let dupes = n - inserted;
    metrics::histogram!(crate::metric_names::HUB_INGEST_COMMIT_SECONDS)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(crate::metric_names::HUB_INGEST_READINGS_TOTAL).increment(inserted);
    metrics::counter!(crate::metric_names::HUB_INGEST_DUPLICATES_TOTAL).increment(dupes);
    metrics::counter!(crate::metric_names::HUB_INGEST_BATCHES_TOTAL).increment(1);
    LAST_COMMIT_MS.store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    if dupes > 0 {
        tracing::info!(gateway = %gw, duplicates = dupes, up_to = last, "redelivered readings ignored");
    }
    send(
        tx,
        hub_message::Kind::Ack(Ack {
            committed_up_to: last,
            inserted: inserted as u32,
        }),
    )
    .await
}

/// Sends the gateway its due commands (durable in the database until a result arrives).
async fn send_commands(
    store: &Store,
    gw: &str,
    tx: &mpsc::Sender<Result<HubMessage, Status>>,
) -> Result<(), Status> {
    let rows = store
        .commands_to_send(gw)
        .await
        .map_err(|e| unavailable(gw, e))?;
    for c in rows {
        let action = if let Some(w) = c.action.get("write_point") {
            command::Action::WritePoint(WritePoint {
                device_id: w["device"].as_str().unwrap_or_default().to_string(),
                point: w["point"].as_str().unwrap_or_default().to_string(),
                value: w["value"].as_f64().unwrap_or(f64::NAN),
            })
        } else if c.action.get("reload_config").is_some() {
            command::Action::ReloadConfig(ReloadConfig {})
        } else {
            continue;
        };
        let cmd = Command {
            id: u64::try_from(c.id).unwrap_or(0),
            deadline_unix_ms: c.deadline.timestamp_millis(),
            action: Some(action),
        };
        tracing::info!(gateway = %gw, command = c.id, "sending command");
        metrics::counter!(crate::metric_names::HUB_COMMANDS_SENT_TOTAL).increment(1);
        send(tx, hub_message::Kind::Command(cmd)).await?;
    }
    Ok(())
}

/// What this stream told its gateway (`crate::push`): its instruments'
/// calibration and its runs' verdicts.
struct Told {
    calibrations: Sent<qi_proto::v1::CalibrationStatus>,
    verdicts: Sent<qi_proto::v1::RunVerdicts>,
}

impl Told {
    /// Sends each list the agent accepts when it is new to this stream; a
    /// failed read is logged and tried again at the next tick.
    async fn send_if_changed(
        &mut self,
        store: &Store,
        gw: &str,
        issuer: &crate::certificates::Issuer,
        tx: &mpsc::Sender<Result<HubMessage, Status>>,
    ) -> Result<(), Status> {
        let pool = store.pool();
        let signal = &crate::calibration::push::SIGNAL;
        match (self.calibrations)
            .update(signal, || crate::calibration::push::of_gateway(pool, gw))
            .await
        {
            Ok(Some(list)) => {
                tracing::info!(gateway = %gw, instruments = list.instruments.len(), "sending calibration status");
                metrics::counter!(crate::metric_names::HUB_CALIBRATION_STATUS_SENT_TOTAL)
                    .increment(1);
                send(tx, hub_message::Kind::Calibrations(list)).await?;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(gateway = %gw, error = %e, "calibration status not read; tried again shortly");
            }
        }
        let url = |id: &str| issuer.verification_url(id);
        let signal = &crate::runs::verdicts::SIGNAL;
        match (self.verdicts)
            .update(signal, || crate::runs::verdicts::of_gateway(pool, gw, &url))
            .await
        {
            Ok(Some(list)) => {
                tracing::info!(gateway = %gw, runs = list.runs.len(), "sending run verdicts");
                metrics::counter!(crate::metric_names::HUB_RUN_VERDICTS_SENT_TOTAL).increment(1);
                send(tx, hub_message::Kind::RunVerdicts(list)).await?;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(gateway = %gw, error = %e, "run verdicts not read; tried again shortly");
            }
        }
        Ok(())
    }
}

/// Streams open now, and when the last batch was committed (Unix ms, 0 for
/// never): what the hub's systemd `STATUS=` line says. The metrics carry the
/// same facts, but a recorder cannot be read back.
static CONNECTED: AtomicI64 = AtomicI64::new(0);
static LAST_COMMIT_MS: AtomicI64 = AtomicI64::new(0);

/// "2 gateways connected, last batch committed 0.4 s ago".
pub fn status() -> String {
    let n = CONNECTED.load(Ordering::Relaxed);
    let last = LAST_COMMIT_MS.load(Ordering::Relaxed);
    let batch = if last == 0 {
        "no batch committed yet".to_string()
    } else {
        let ago = (chrono::Utc::now().timestamp_millis() - last).max(0) as f64 / 1000.0;
        format!("last batch committed {ago:.1} s ago")
    };
    format!("{n} gateways connected, {batch}")
}

struct ConnectedGuard;
impl ConnectedGuard {
    fn new() -> ConnectedGuard {
        metrics::gauge!(crate::metric_names::HUB_GATEWAYS_CONNECTED).increment(1.0);
        CONNECTED.fetch_add(1, Ordering::Relaxed);
        ConnectedGuard
    }
}
impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        metrics::gauge!(crate::metric_names::HUB_GATEWAYS_CONNECTED).decrement(1.0);
        CONNECTED.fetch_sub(1, Ordering::Relaxed);
    }
}

fn unavailable(gw: &str, e: crate::storage::StoreError) -> Status {
    metrics::counter!(crate::metric_names::HUB_INGEST_DB_ERRORS_TOTAL).increment(1);
    tracing::error!(gateway = %gw, error = %e, "database write failed; the gateway will resend");
    Status::unavailable("storage unavailable, retry later")
}

async fn send(
    tx: &mpsc::Sender<Result<HubMessage, Status>>,
    kind: hub_message::Kind,
) -> Result<(), Status> {
    tx.send(Ok(HubMessage { kind: Some(kind) }))
        .await
        .map_err(|_| Status::cancelled("gateway went away"))
}
