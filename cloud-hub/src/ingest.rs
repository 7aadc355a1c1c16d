//! gRPC ingest: one task per gateway stream; commit each batch, then ack it.

use crate::auth::{Authenticator, Credential};
use crate::live::health::HealthTracker;
use crate::storage::Store;
use futures::StreamExt;
use qi_proto::v1::uplink_server::Uplink;
use qi_proto::v1::{
    Ack, Command, EdgeMessage, HubMessage, Reading, ReloadConfig, Welcome, WritePoint, command,
    edge_message, hub_message,
};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use qi_proto::limits::{MAX_ID_LEN, valid_id, valid_unit};

pub struct IngestService {
    store: Store,
    live: Arc<crate::live::Fanout>,
    health: Arc<HealthTracker>,
    auth: Arc<Authenticator>,
    /// `grpc.max_future_skew_s`, in microseconds.
    max_future_us: i64,
}

impl IngestService {
    pub fn new(
        store: Store,
        live: Arc<crate::live::Fanout>,
        health: Arc<HealthTracker>,
        auth: Arc<Authenticator>,
        max_future_skew_s: i64,
    ) -> IngestService {
        IngestService {
            store,
            live,
            health,
            auth,
            max_future_us: max_future_skew_s.saturating_mul(1_000_000),
        }
    }
}

fn rejected(reason: &'static str, message: String) -> Status {
    metrics::counter!(crate::metric_names::HUB_INGEST_REJECTED_TOTAL, "reason" => reason)
        .increment(1);
    tracing::warn!(reason, %message, "rejecting uplink stream");
    Status::invalid_argument(message)
}

/// Checks a batch before anything is written: a bad batch is refused as a
/// whole, so nothing half-valid is stored.
pub fn validate_batch(readings: &[Reading]) -> Result<(), String> {
    let skew = qi_proto::limits::MAX_FUTURE_SKEW_S * 1_000_000;
    validate_batch_at(readings, chrono::Utc::now().timestamp_micros(), skew)
}

/// `validate_batch` with the hub's clock (`now_us`, Unix microseconds) and
/// how far ahead of it a reading may be stamped (`max_future_us`).
pub fn validate_batch_at(
    readings: &[Reading],
    now_us: i64,
    max_future_us: i64,
) -> Result<(), String> {
    if readings.is_empty() {
        return Err("empty batch".into());
    }
    if readings.len() > qi_proto::limits::MAX_BATCH_READINGS {
        return Err(format!(
            "{} readings in one batch; at most {}",
            readings.len(),
            qi_proto::limits::MAX_BATCH_READINGS
        ));
    }
    let latest_us = now_us.saturating_add(max_future_us);
    let mut prev = 0u64;
    for (i, r) in readings.iter().enumerate() {
        if r.seq == 0 || r.seq > qi_proto::limits::SEQ_MAX {
            return Err(format!(
                "reading {i}: seq {} out of range 1..=2^63-1",
                r.seq
            ));
        }
        if r.seq <= prev {
            return Err(format!(
                "reading {i}: seq {} not above the previous {prev}",
                r.seq
            ));
        }
        prev = r.seq;
        if !valid_id(&r.device_id) {
            return Err(format!("reading {i} (seq {}): invalid device_id", r.seq));
        }
        if !valid_id(&r.metric) {
            return Err(format!("reading {i} (seq {}): invalid metric", r.seq));
        }
        if !valid_unit(&r.unit) {
            return Err(format!("reading {i} (seq {}): invalid unit", r.seq));
        }
        if !r.value.is_finite() {
            return Err(format!("reading {i} (seq {}): value is not finite", r.seq));
        }
        if chrono::DateTime::from_timestamp_micros(r.timestamp_us).is_none() {
            return Err(format!(
                "reading {i} (seq {}): timestamp out of range",
                r.seq
            ));
        }
        if r.timestamp_us > latest_us {
            return Err(format!(
                "reading {i} (seq {}): timestamp more than {} s ahead of the hub's clock (grpc.max_future_skew_s)",
                r.seq,
                max_future_us / 1_000_000
            ));
        }
        if !(0..=3).contains(&r.quality) {
            return Err(format!(
                "reading {i} (seq {}): unknown quality {}",
                r.seq, r.quality
            ));
        }
    }
    Ok(())
}

/// Longest text field of a gateway audit event, and longest before/after JSON.
const MAX_EVENT_FIELD: usize = 512;
const MAX_EVENT_JSON: usize = 4096;

/// Checks a batch's audit events (see `AuditEvent` in uplink.proto): each
/// seq in range, strictly increasing, none shared with a reading; bounded
/// printable text; before/after valid JSON; a plausible time. Like readings,
/// one bad event refuses the whole batch, before anything is written.
pub fn validate_events(
    batch: &qi_proto::v1::ReadingBatch,
    now_us: i64,
    max_future_us: i64,
) -> Result<(), String> {
    let events = &batch.events;
    if batch.readings.len() + events.len() > qi_proto::limits::MAX_BATCH_READINGS {
        return Err(format!(
            "{} readings and events in one batch; at most {}",
            batch.readings.len() + events.len(),
            qi_proto::limits::MAX_BATCH_READINGS
        ));
    }
    let readings: std::collections::HashSet<u64> = batch.readings.iter().map(|r| r.seq).collect();
    let printable = |s: &str| s.len() <= MAX_EVENT_FIELD && !s.chars().any(char::is_control);
    let json_ok = |s: &str| {
        s.is_empty()
            || (s.len() <= MAX_EVENT_JSON && serde_json::from_str::<serde_json::Value>(s).is_ok())
    };
    let mut prev = 0u64;
    for (i, e) in events.iter().enumerate() {
        let at = format!("event {i} (seq {})", e.seq);
        if e.seq == 0 || e.seq > qi_proto::limits::SEQ_MAX {
            return Err(format!("{at}: seq out of range 1..=2^63-1"));
        }
        if e.seq <= prev {
            return Err(format!("{at}: seq not above the previous {prev}"));
        }
        prev = e.seq;
        if readings.contains(&e.seq) {
            return Err(format!("{at}: seq also used by a reading"));
        }
        let action_ok = !e.action.is_empty()
            && e.action.len() <= 64
            && e.action
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_');
        if !action_ok {
            return Err(format!("{at}: action must be 1..=64 of a-z and _"));
        }
        for (name, v) in [
            ("actor", &e.actor),
            ("target", &e.target),
            ("outcome", &e.outcome),
            ("source_address", &e.source_address),
            ("user_agent", &e.user_agent),
        ] {
            if !printable(v) {
                return Err(format!(
                    "{at}: {name} longer than {MAX_EVENT_FIELD} bytes or not printable"
                ));
            }
        }
        if !json_ok(&e.before_json) || !json_ok(&e.after_json) {
            return Err(format!(
                "{at}: before/after must be JSON of at most {MAX_EVENT_JSON} bytes"
            ));
        }
        if chrono::DateTime::from_timestamp_micros(e.timestamp_us).is_none()
            || e.timestamp_us > now_us.saturating_add(max_future_us)
        {
            return Err(format!(
                "{at}: timestamp out of range or ahead of the hub's clock"
            ));
        }
    }
    Ok(())
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
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<HubMessage, Status>>(16);
        let store = self.store.clone();
        let live = Arc::clone(&self.live);
        let health = Arc::clone(&self.health);
        let auth = Arc::clone(&self.auth);
        let max_future_us = self.max_future_us;
        tokio::spawn(async move {
            let ends = Ends {
                live: &live,
                health: &health,
                max_future_us,
            };
            if let Err(status) =
                serve_stream(&store, ends, &auth, &credential, &mut inbound, &tx).await
            {
                let _ = tx.send(Err(status)).await;
            }
            tracing::debug!(?peer, "uplink stream ended");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Where a stream's results go besides the database: the live fan-out and
/// the gateways' health; and the clock limit of its batches.
#[derive(Clone, Copy)]
struct Ends<'a> {
    live: &'a Arc<crate::live::Fanout>,
    health: &'a Arc<HealthTracker>,
    max_future_us: i64,
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
    // Before anything is written: a bad description refuses the stream whole.
    crate::models::validate(&hello.devices)
        .map_err(|m| rejected("bad_device_info", format!("gateway {gw}: Hello: {m}")))?;
    let highest = store
        .gateway_connected(&gw, &hello.agent_version)
        .await
        .map_err(|e| unavailable(&gw, e))?;
    record_models(store, live, &gw, &hello.devices).await?;
    // Before the first command tick, so re-sent values go out with it.
    crate::desired::reconcile_on_connect(store, live, &gw).await;
    tracing::info!(gateway = %gw, agent_version = %hello.agent_version, highest_seq = highest, "gateway connected");
    metrics::gauge!(crate::metric_names::HUB_GATEWAYS_CONNECTED).increment(1.0);
    let _connected = ConnectedGuard;
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

    // Commands for this gateway are polled while its stream is open.
    let mut command_tick = tokio::time::interval(std::time::Duration::from_millis(500));
    command_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Up to PIPELINE batches are written at once (each in its own
    // transaction on its own connection, so PostgreSQL works on one while
    // the next arrives); acks still go out one per batch, in arrival order.
    let mut writing: futures::stream::FuturesOrdered<tokio::task::JoinHandle<BatchWritten>> =
        futures::stream::FuturesOrdered::new();
    let mut open = true;
    while open || !writing.is_empty() {
        let msg = tokio::select! {
            m = inbound.message(), if open && writing.len() < PIPELINE => match m? {
                Some(m) => m,
                None => {
                    open = false;
                    continue;
                }
            },
            Some(done) = writing.next(), if !writing.is_empty() => {
                let (last, n, inserted, started): (u64, u64, u64, std::time::Instant) = done
                    .map_err(|e| Status::internal(format!("batch writer failed: {e}")))??;
                acknowledge(tx, &gw, last, n, inserted, started).await?;
                continue;
            }
            _ = command_tick.tick() => {
                send_commands(store, &gw, tx).await?;
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
        let now_us = chrono::Utc::now().timestamp_micros();
        // An events-only batch (a gateway's local audit) has no readings.
        let events_only = batch.readings.is_empty() && !batch.events.is_empty();
        if !events_only {
            validate_batch_at(&batch.readings, now_us, max_future_us)
                .map_err(|m| rejected("invalid_batch", format!("gateway {gw}: {m}")))?;
        }
        validate_events(&batch, now_us, max_future_us)
            .map_err(|m| rejected("invalid_batch", format!("gateway {gw}: {m}")))?;
        let last = batch
            .readings
            .last()
            .map(|r| r.seq)
            .max(batch.events.last().map(|e| e.seq))
            .unwrap_or(0);
        let (store, gw2, live) = (store.clone(), gw.clone(), Arc::clone(live));
        // A task of its own: a write holding a pooled connection must make
        // progress while this loop awaits something else (commands also need
        // a connection; with the pool exhausted, a write parked inside an
        // unpolled future would never give its connection back).
        writing.push_back(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let stored = store
                .insert_batch_with_events(&gw2, &batch.readings, &batch.events)
                .await
                .map_err(|e| unavailable(&gw2, e))?;
            if stored.events > 0 {
                tracing::info!(gateway = %gw2, events = stored.events, "gateway audit events appended to the audit trail");
            }
            // A redelivered batch was seen live the first time.
            if stored.readings > 0 {
                live.publish_batch(&gw2, &batch.readings, &stored.series_ids);
            }
            Ok::<_, Status>((last, batch.readings.len() as u64, stored.readings, started))
        }));
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

/// A batch's write: (last seq, readings, newly stored, when the write began).
type BatchWritten = Result<(u64, u64, u64, std::time::Instant), Status>;

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

struct ConnectedGuard;
impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        metrics::gauge!(crate::metric_names::HUB_GATEWAYS_CONNECTED).decrement(1.0);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn r(seq: u64) -> Reading {
        Reading {
            seq,
            device_id: "d".into(),
            metric: "m".into(),
            timestamp_us: 1_700_000_000_000_000,
            value: 1.0,
            unit: "V".into(),
            quality: 1,
        }
    }

    #[test]
    fn accepts_good_and_refuses_bad_batches() {
        assert!(validate_batch(&[r(1), r(2)]).is_ok());
        assert!(validate_batch(&[]).is_err());
        assert!(
            validate_batch(&[r(2), r(2)])
                .unwrap_err()
                .contains("not above")
        );
        assert!(validate_batch(&[r(0)]).is_err());
        let mut nan = r(1);
        nan.value = f64::NAN;
        assert!(validate_batch(&[nan]).unwrap_err().contains("finite"));
        let mut empty = r(1);
        empty.device_id.clear();
        assert!(validate_batch(&[empty]).is_err());
        let mut q = r(1);
        q.quality = 9;
        assert!(validate_batch(&[q]).is_err());
        assert!(validate_batch(&[r(qi_proto::limits::SEQ_MAX)]).is_ok());
        assert!(validate_batch(&[r(qi_proto::limits::SEQ_MAX + 1)]).is_err());
    }

    fn ev(seq: u64) -> qi_proto::v1::AuditEvent {
        qi_proto::v1::AuditEvent {
            seq,
            timestamp_us: 1_700_000_000_000_000,
            actor: "ann".into(),
            action: "device_write".into(),
            target: "device:d/point:p".into(),
            outcome: "ok".into(),
            after_json: "1.5".into(),
            ..Default::default()
        }
    }

    #[test]
    fn audit_events_are_checked_like_readings() {
        use qi_proto::v1::ReadingBatch;
        let now = 1_700_000_000_000_000 + 1;
        let day = 86_400_000_000;
        let ok = |readings: Vec<Reading>, events| {
            validate_events(&ReadingBatch { readings, events }, now, day)
        };
        assert!(ok(vec![r(1)], vec![ev(2), ev(3)]).is_ok());
        assert!(ok(vec![], vec![ev(5)]).is_ok());
        assert!(ok(vec![r(2)], vec![ev(2)]).unwrap_err().contains("reading"));
        assert!(
            ok(vec![], vec![ev(3), ev(3)])
                .unwrap_err()
                .contains("not above")
        );
        let mut bad = ev(1);
        bad.action = "DROP TABLE".into();
        assert!(ok(vec![], vec![bad]).is_err());
        let mut bad = ev(1);
        bad.after_json = "{not json".into();
        assert!(ok(vec![], vec![bad]).is_err());
        let mut bad = ev(1);
        bad.actor = "a\nb".into();
        assert!(ok(vec![], vec![bad]).is_err());
        let mut bad = ev(1);
        bad.timestamp_us = now + 2 * day;
        assert!(ok(vec![], vec![bad]).is_err());
    }

    #[test]
    fn readings_from_the_far_future_are_refused() {
        let now = 1_700_000_000_000_000;
        let day = qi_proto::limits::MAX_FUTURE_SKEW_S * 1_000_000;
        let mut soon = r(1);
        soon.timestamp_us = now + day;
        assert!(validate_batch_at(&[soon], now, day).is_ok());
        let mut later = r(2);
        later.timestamp_us = now + day + 1;
        let e = validate_batch_at(&[r(1), later.clone()], now, day).unwrap_err();
        assert!(validate_batch_at(&[r(1), later], now, 2 * day).is_ok());
        assert!(e.contains("ahead of the hub's clock"), "{e}");
    }
}
