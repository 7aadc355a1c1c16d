//! The site bus's front door. Every client connection is relayed to the
//! embedded broker through here, packet by packet:
//! - CONNECT: the user is authenticated (password hash or client
//!   certificate) before the broker hears of the client;
//! - PUBLISH: checked against the user's topic rules; telemetry is parsed,
//!   appended to the durable buffer (one append, so one fsync, for all the
//!   packets that arrived together), and only then acknowledged, by the agent
//!   itself; the broker gets a QoS 0 copy for its subscribers. A QoS 1 PUBACK
//!   (or QoS 2 PUBREC) from this gateway therefore means "on disk";
//! - SUBSCRIBE: refused with failure codes unless every filter is allowed;
//! - everything else passes through unchanged, both ways.
//!
//! Each connection is bounded: a deadline for the TLS handshake, WebSocket
//! upgrade and CONNECT together (`connect_timeout_ms`), a pending slot until
//! it logs in (`admission`), a client id bound to its user (`sessions`), and
//! an idle limit of 1.5 x its keep-alive.

use super::MqttConfig;
use super::admission::Ticket;
use super::auth::{User, valid_topic_name, verify_password};
use super::broker::BusPublisher;
use super::frame::{self, Frame, FrameError};
use super::payload;
use super::sessions::{SessionHandle, Sessions};
use crate::buffer::{Buffer, BufferError, NewReading};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;

/// MQTT clients connected now (what the gauge says, readable in-process for
/// the local web page; one process serves one bus).
pub(super) static CLIENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub struct FrontDoor {
    pub cfg: MqttConfig,
    pub site: String,
    pub users: HashMap<String, User>,
    pub buffer: Arc<Buffer>,
    pub broker: SocketAddr,
    pub bus: BusPublisher,
    pub sessions: Arc<Sessions>,
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("no CONNECT within mqtt.connect_timeout_ms")]
    NoConnect,
    #[error("silent for {0:?} (1.5 x keep-alive)")]
    KeepAlive(Duration),
    #[error("taken over by a new connection with the same client id")]
    TakenOver,
    #[error("first packet was not CONNECT")]
    NotConnect,
    #[error("refused: {0}")]
    Refused(&'static str),
    #[error("buffer: {0}")]
    Buffer(#[from] BufferError),
}

struct Session {
    user: Option<User>,
    client_id: String,
    /// The client id's binding, and the QoS 2 ids the agent answered with
    /// PUBREC (waiting for PUBREL) across reconnects of a persistent session.
    handle: SessionHandle,
    /// QoS 2 ids acknowledged in the current group: recorded in `handle`
    /// only once the group is durable.
    new_qos2: Vec<u16>,
    /// Close after this long without a packet.
    idle: Duration,
    upstream_closed: Arc<tokio::sync::Notify>,
}

impl FrontDoor {
    fn reject(&self, reason: &'static str, topic: &str, error: &str) {
        metrics::counter!(crate::metric_names::EDGE_MQTT_REJECTED_TOTAL, "reason" => reason)
            .increment(1);
        tracing::warn!(%topic, reason, %error, "MQTT message rejected");
        if self.cfg.error_topic
            && let Some(t) = payload::telemetry_topic(topic)
        {
            let body = serde_json::json!({ "topic": topic, "reason": reason, "error": error });
            self.bus.publish(
                format!("site/{}/{}/{}/errors", t.site, t.device_type, t.device_id),
                Bytes::from(body.to_string()),
                false,
            );
        }
    }

    /// Serves one client connection until either side closes.
    /// `deadline` bounds everything before the login (TLS and WebSocket
    /// handshakes count toward it too); `ticket` is the connection's place
    /// in the budgets, held until it ends.
    pub async fn serve<S>(
        self: Arc<Self>,
        stream: S,
        peer: SocketAddr,
        cert_user: Option<String>,
        ticket: Ticket,
        deadline: Instant,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        metrics::gauge!(crate::metric_names::EDGE_MQTT_CLIENTS).increment(1.0);
        CLIENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = self.serve_inner(stream, cert_user, ticket, deadline).await;
        CLIENTS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!(crate::metric_names::EDGE_MQTT_CLIENTS).decrement(1.0);
        match result {
            Ok(()) => tracing::debug!(%peer, "MQTT client left"),
            Err(e @ (ConnError::NoConnect | ConnError::KeepAlive(_))) => {
                metrics::counter!(crate::metric_names::EDGE_MQTT_TIMEOUTS_TOTAL, "phase" => if matches!(e, ConnError::NoConnect) { "connect" } else { "keep_alive" })
                    .increment(1);
                tracing::info!(%peer, error = %e, "MQTT connection closed");
            }
            Err(ConnError::Frame(e)) => {
                metrics::counter!(crate::metric_names::EDGE_MQTT_REJECTED_TOTAL, "reason" => "bad_packet")
                    .increment(1);
                tracing::warn!(%peer, error = %e, "MQTT connection closed: malformed or oversized packet");
            }
            Err(e) => tracing::info!(%peer, error = %e, "MQTT connection closed"),
        }
    }

    async fn serve_inner<S>(
        &self,
        stream: S,
        cert_user: Option<String>,
        mut ticket: Ticket,
        deadline: Instant,
    ) -> Result<(), ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // Packets up to this size are read and refused one by one when their
        // payload is over `max_payload_bytes` (counted as too_big); only a
        // larger one closes the connection.
        let max = (self.cfg.max_payload_bytes * 4).max(1 << 20);
        let (mut crd, mut cwr) = tokio::io::split(stream);
        let mut inbuf = BytesMut::with_capacity(16 * 1024);
        let connect = tokio::time::timeout_at(deadline, async {
            loop {
                if let Some(f) = frame::next_frame(&mut inbuf, max)? {
                    return Ok::<Frame, ConnError>(f);
                }
                if crd.read_buf(&mut inbuf).await? == 0 {
                    return Err(ConnError::NoConnect);
                }
            }
        })
        .await
        .map_err(|_| ConnError::NoConnect)??;
        if connect.kind() != frame::CONNECT {
            return Err(ConnError::NotConnect);
        }
        let c = match frame::parse_connect(&connect) {
            Ok(c) => c,
            Err(FrameError::Protocol(level)) => {
                // 0x01: unacceptable protocol version.
                let _ = cwr.write_all(&frame::connack(1)).await;
                metrics::counter!(crate::metric_names::EDGE_MQTT_CONNECTIONS_TOTAL, "result" => "bad_protocol")
                    .increment(1);
                return Err(FrameError::Protocol(level).into());
            }
            Err(e) => return Err(e.into()),
        };
        let user = match self.authenticate(&c, cert_user).await {
            Ok(u) => u,
            Err((code, why)) => {
                let _ = cwr.write_all(&frame::connack(code)).await;
                metrics::counter!(crate::metric_names::EDGE_MQTT_CONNECTIONS_TOTAL, "result" => why).increment(1);
                tracing::warn!(client_id = %c.client_id, user = ?c.username, reason = why, "MQTT connection refused");
                return Err(ConnError::Refused(why));
            }
        };
        let refuse = |code: u8, why: &'static str| {
            metrics::counter!(crate::metric_names::EDGE_MQTT_CONNECTIONS_TOTAL, "result" => why)
                .increment(1);
            tracing::warn!(client_id = %c.client_id, user = ?c.username, reason = why, "MQTT connection refused");
            (frame::connack(code), ConnError::Refused(why))
        };
        if let Some(w) = &c.will
            && let Err(why) = self.check_will(user.as_ref(), w)
        {
            metrics::counter!(crate::metric_names::EDGE_MQTT_DENIED_TOTAL, "what" => "will")
                .increment(1);
            let (ack, e) = refuse(5, why);
            let _ = cwr.write_all(&ack).await;
            return Err(e);
        }
        if let Err(r) = ticket.authenticate() {
            // 3: server unavailable.
            let (ack, e) = refuse(3, r.label());
            let _ = cwr.write_all(&ack).await;
            return Err(e);
        }
        let user_name = user.as_ref().map_or("", |u| u.name.as_str());
        let Ok(handle) = self
            .sessions
            .claim(&c.client_id, user_name, c.clean_session)
        else {
            // 2: identifier rejected. The id's session belongs to another user.
            let (ack, e) = refuse(2, "client_id_of_another_user");
            let _ = cwr.write_all(&ack).await;
            return Err(e);
        };
        metrics::counter!(crate::metric_names::EDGE_MQTT_CONNECTIONS_TOTAL, "result" => "accepted")
            .increment(1);
        tracing::debug!(client_id = %c.client_id, user = ?user.as_ref().map(|u| &u.name), "MQTT client connected");
        let upstream = tokio::net::TcpStream::connect(self.broker).await?;
        upstream.set_nodelay(true)?;
        let (mut urd, mut uwr) = upstream.into_split();
        // MQTT 3.1.1 3.1.2.10: close after 1.5 x keep-alive without a packet.
        // A client asking for none (0) or more than the maximum gets the
        // maximum. The front door enforces it (and counts it); the broker is
        // told twice that, as a backstop only: with the same value both
        // timers fire together and the one that wins is a coin toss, so a
        // silent client would sometimes leave uncounted. rumqttd refuses 0.
        let max_ka = self.cfg.max_keep_alive_s;
        let ka = match c.keep_alive {
            0 => max_ka,
            k => u64::from(k).min(max_ka),
        };
        let broker_ka = (ka * 2).min(u64::from(u16::MAX)) as u16;
        uwr.write_all(&frame::with_keep_alive(&connect, broker_ka)?)
            .await?;

        // One writer owns the client's socket: broker traffic and the agent's
        // own acks both go through it.
        let (to_client, mut client_q) = mpsc::channel::<Bytes>(1024);
        let writer = tokio::spawn(async move {
            while let Some(b) = client_q.recv().await {
                if cwr.write_all(&b).await.is_err() {
                    break;
                }
            }
            let _ = cwr.shutdown().await;
        });
        // The broker ending the session (takeover, its own checks) ends the
        // client's connection too, at once.
        let upstream_closed = Arc::new(tokio::sync::Notify::new());
        let from_broker = {
            let to_client = to_client.clone();
            let upstream_closed = Arc::clone(&upstream_closed);
            tokio::spawn(async move {
                let mut buf = BytesMut::with_capacity(16 * 1024);
                loop {
                    buf.reserve(16 * 1024);
                    match urd.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if to_client.send(buf.split().freeze()).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                upstream_closed.notify_one();
            })
        };
        let mut session = Session {
            user,
            client_id: c.client_id,
            handle,
            new_qos2: Vec::new(),
            idle: Duration::from_millis(ka * 1500),
            upstream_closed,
        };
        let result = self
            .relay(
                &mut session,
                &mut crd,
                &mut inbuf,
                &mut uwr,
                &to_client,
                max,
            )
            .await;
        from_broker.abort();
        drop(to_client);
        let _ = writer.await;
        result
    }

    async fn authenticate(
        &self,
        c: &frame::Connect,
        cert_user: Option<String>,
    ) -> Result<Option<User>, (u8, &'static str)> {
        if let Some(name) = cert_user {
            return match self.users.get(&name) {
                Some(u) => Ok(Some(u.clone())),
                None => Err((5, "unknown_certificate_user")),
            };
        }
        match (&c.username, &c.password) {
            (Some(name), Some(pw)) => {
                let Some(u) = self.users.get(name) else {
                    return Err((4, "unknown_user"));
                };
                let Some(hash) = u.password_hash.clone() else {
                    return Err((4, "certificate_only_user"));
                };
                let pw = pw.clone();
                // PBKDF2 is deliberately slow: keep it off the async workers.
                let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &pw))
                    .await
                    .unwrap_or(false);
                if ok {
                    Ok(Some(u.clone()))
                } else {
                    Err((4, "bad_password"))
                }
            }
            (None, None) if self.cfg.allow_anonymous => Ok(self.users.get("anonymous").cloned()),
            (None, None) => Err((5, "anonymous_refused")),
            _ => Err((4, "incomplete_credentials")),
        }
    }

    /// A Will is a PUBLISH the broker makes for the client later: the same
    /// rules apply now, at CONNECT. Telemetry cannot come as a Will: it would
    /// reach subscribers without being validated or made durable.
    fn check_will(&self, user: Option<&User>, w: &frame::Will) -> Result<(), &'static str> {
        if !valid_topic_name(&w.topic) {
            return Err("will_bad_topic");
        }
        if payload::telemetry_topic(&w.topic).is_some() {
            return Err("will_on_telemetry");
        }
        let Some(u) = user.filter(|u| u.may_publish(&w.topic)) else {
            return Err("will_denied");
        };
        if w.retain && !u.retain {
            return Err("will_retain_denied");
        }
        Ok(())
    }

    fn may_publish(&self, s: &Session, topic: &str) -> bool {
        s.user.as_ref().is_some_and(|u| u.may_publish(topic))
    }

    async fn relay<R, W>(
        &self,
        s: &mut Session,
        crd: &mut R,
        inbuf: &mut BytesMut,
        uwr: &mut W,
        to_client: &mpsc::Sender<Bytes>,
        max: usize,
    ) -> Result<(), ConnError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut forward = BytesMut::with_capacity(16 * 1024);
        let mut acks = BytesMut::new();
        let mut readings: Vec<NewReading> = Vec::new();
        let mut disconnect = false;
        loop {
            // Everything that arrived together is handled as one group.
            while let Some(f) = frame::next_frame(inbuf, max)? {
                match f.kind() {
                    frame::PUBLISH => {
                        self.on_publish(s, &f, &mut forward, &mut acks, &mut readings)?
                    }
                    frame::SUBSCRIBE => {
                        let sub = frame::parse_subscribe(&f)?;
                        let allowed = sub
                            .filters
                            .iter()
                            .all(|(t, _)| s.user.as_ref().is_some_and(|u| u.may_subscribe(t)));
                        if allowed {
                            forward.extend_from_slice(&f.bytes);
                        } else {
                            metrics::counter!(crate::metric_names::EDGE_MQTT_DENIED_TOTAL, "what" => "subscribe")
                                .increment(1);
                            tracing::warn!(client_id = %s.client_id, filters = ?sub.filters, "subscription refused by topic rules");
                            acks.extend_from_slice(&frame::suback(
                                sub.pkid,
                                &vec![0x80; sub.filters.len()],
                            ));
                        }
                    }
                    frame::PUBREL => match frame::pubrel_pkid(&f) {
                        // One of the agent's own QoS 2 exchanges (it sent the PUBREC).
                        Some(id) if s.handle.qos2_release(id) => {
                            acks.extend_from_slice(&frame::pubcomp(id))
                        }
                        _ => forward.extend_from_slice(&f.bytes),
                    },
                    frame::CONNECT => return Err(ConnError::Refused("second CONNECT")),
                    frame::DISCONNECT => {
                        // The client is done: finish this group, pass the
                        // DISCONNECT on (no Will), then close.
                        forward.extend_from_slice(&f.bytes);
                        disconnect = true;
                        break;
                    }
                    _ => forward.extend_from_slice(&f.bytes),
                }
            }
            if !readings.is_empty() {
                let n = readings.len() as u64;
                // Durable before acknowledged. A full buffer (reject_newest)
                // closes the connection unacknowledged: the client sends again later.
                // All or nothing across the lanes: the client resends what is
                // not acknowledged, so a partial append would be stored twice.
                self.buffer.append_by_priority(&readings).await?;
                metrics::counter!(crate::metric_names::EDGE_MQTT_READINGS_TOTAL).increment(n);
                readings.clear();
            }
            s.handle.qos2_received(&s.new_qos2);
            s.new_qos2.clear();
            if !forward.is_empty() {
                uwr.write_all(&forward.split()).await?;
            }
            if !acks.is_empty() && to_client.send(acks.split().freeze()).await.is_err() {
                return Ok(());
            }
            if disconnect {
                return Ok(());
            }
            inbuf.reserve(16 * 1024);
            let taken_over = s.handle.taken_over();
            tokio::select! {
                r = tokio::time::timeout(s.idle, crd.read_buf(inbuf)) => match r {
                    Err(_) => return Err(ConnError::KeepAlive(s.idle)),
                    Ok(n) => if n? == 0 {
                        return Ok(());
                    },
                },
                _ = taken_over.notified() => return Err(ConnError::TakenOver),
                _ = s.upstream_closed.notified() => return Ok(()),
            }
        }
    }

    fn on_publish(
        &self,
        s: &mut Session,
        f: &Frame,
        forward: &mut BytesMut,
        acks: &mut BytesMut,
        readings: &mut Vec<NewReading>,
    ) -> Result<(), ConnError> {
        let p = frame::parse_publish(f)?;
        metrics::counter!(crate::metric_names::EDGE_MQTT_MESSAGES_TOTAL).increment(1);
        let ack = |acks: &mut BytesMut, new_qos2: &mut Vec<u16>| match p.qos {
            1 => acks.extend_from_slice(&frame::puback(p.pkid)),
            2 => {
                new_qos2.push(p.pkid);
                acks.extend_from_slice(&frame::pubrec(p.pkid));
            }
            _ => {}
        };
        if p.qos == 2 && (s.new_qos2.contains(&p.pkid) || s.handle.qos2_pending(p.pkid)) {
            // A resend of a QoS 2 message the agent has taken already (PUBREC
            // sent, no PUBREL yet): answer again, store nothing (4.3.3).
            metrics::counter!(crate::metric_names::EDGE_MQTT_DUPLICATES_TOTAL).increment(1);
            acks.extend_from_slice(&frame::pubrec(p.pkid));
            return Ok(());
        }
        if !valid_topic_name(&p.topic) {
            // MQTT 3.1.1 4.7.1: no wildcards in a topic name. Refused like a
            // bad payload; acknowledged so the client does not resend it forever.
            metrics::counter!(crate::metric_names::EDGE_MQTT_REJECTED_TOTAL, "reason" => "bad_topic").increment(1);
            tracing::warn!(client_id = %s.client_id, topic = %p.topic, "publish refused: topic name with a wildcard or empty");
            ack(acks, &mut s.new_qos2);
            return Ok(());
        }
        if !self.may_publish(s, &p.topic) {
            // MQTT 3.1.1 has no negative PUBACK: like Mosquitto, acknowledge
            // and drop, so the client does not resend forever; counted and logged.
            metrics::counter!(crate::metric_names::EDGE_MQTT_DENIED_TOTAL, "what" => "publish")
                .increment(1);
            tracing::warn!(client_id = %s.client_id, topic = %p.topic, "publish refused by topic rules");
            ack(acks, &mut s.new_qos2);
            return Ok(());
        }
        if p.retain && !s.user.as_ref().is_some_and(|u| u.retain) {
            metrics::counter!(crate::metric_names::EDGE_MQTT_DENIED_TOTAL, "what" => "retain")
                .increment(1);
            tracing::warn!(client_id = %s.client_id, topic = %p.topic, "retained publish refused: user may not retain");
            ack(acks, &mut s.new_qos2);
            return Ok(());
        }
        let Some(t) = payload::telemetry_topic(&p.topic) else {
            // Not telemetry: the broker routes it (and acknowledges it) as usual.
            forward.extend_from_slice(&f.bytes);
            return Ok(());
        };
        let verdict = if t.site != self.site {
            Err((
                "wrong_site",
                format!(
                    "site {:?} is not this gateway's site {:?}",
                    t.site, self.site
                ),
            ))
        } else if !payload::valid_name(t.device_id) {
            Err((
                "bad_device_id",
                format!(
                    "device id {:?} must be 1-{} of [A-Za-z0-9_.:-]",
                    t.device_id,
                    qi_proto::limits::MAX_ID_LEN
                ),
            ))
        } else if !self.cfg.accept_unknown_devices
            && !self.cfg.devices.iter().any(|d| d == t.device_id)
        {
            Err((
                "unknown_device",
                format!("device {:?} is not in mqtt.devices", t.device_id),
            ))
        } else {
            payload::parse(
                &Arc::from(t.device_id),
                &p.payload,
                chrono::Utc::now().timestamp_micros(),
                self.cfg.max_payload_bytes,
                self.cfg.max_readings_per_message,
            )
            .map_err(|e| {
                let reason = match e {
                    payload::PayloadError::TooBig(..) => "too_big",
                    payload::PayloadError::TooMany(..) => "too_many_readings",
                    payload::PayloadError::Invalid(..) => "invalid_reading",
                    _ => "unparseable",
                };
                (reason, e.to_string())
            })
        };
        match verdict {
            Ok(mut rs) => {
                readings.append(&mut rs);
                forward.extend_from_slice(&frame::publish_qos0(&p));
            }
            Err((reason, error)) => self.reject(reason, &p.topic, &error),
        }
        // Acknowledged once the group's readings are durable (see `relay`).
        ack(acks, &mut s.new_qos2);
        Ok(())
    }
}
