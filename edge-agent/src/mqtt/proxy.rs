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

use super::MqttConfig;
use super::auth::{User, verify_password};
use super::broker::BusPublisher;
use super::frame::{self, Frame, FrameError};
use super::payload;
use crate::buffer::{Buffer, BufferError, Lane, NewReading};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

pub struct FrontDoor {
    pub cfg: MqttConfig,
    pub site: String,
    pub users: HashMap<String, User>,
    pub buffer: Arc<Buffer>,
    pub broker: SocketAddr,
    pub bus: BusPublisher,
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("no CONNECT within 10 s")]
    NoConnect,
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
    /// QoS 2 telemetry the agent answered with PUBREC, waiting for PUBREL.
    owned_qos2: HashSet<u16>,
}

impl FrontDoor {
    fn reject(&self, reason: &'static str, topic: &str, error: &str) {
        metrics::counter!("edge_mqtt_rejected_total", "reason" => reason).increment(1);
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
    pub async fn serve<S>(self: Arc<Self>, stream: S, peer: SocketAddr, cert_user: Option<String>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        metrics::gauge!("edge_mqtt_clients").increment(1.0);
        let result = self.serve_inner(stream, cert_user).await;
        metrics::gauge!("edge_mqtt_clients").decrement(1.0);
        match result {
            Ok(()) => tracing::debug!(%peer, "MQTT client left"),
            Err(ConnError::Frame(e)) => {
                metrics::counter!("edge_mqtt_rejected_total", "reason" => "bad_packet")
                    .increment(1);
                tracing::warn!(%peer, error = %e, "MQTT connection closed: malformed or oversized packet");
            }
            Err(e) => tracing::info!(%peer, error = %e, "MQTT connection closed"),
        }
    }

    async fn serve_inner<S>(&self, stream: S, cert_user: Option<String>) -> Result<(), ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // Packets up to this size are read and refused one by one when their
        // payload is over `max_payload_bytes` (counted as too_big); only a
        // larger one closes the connection.
        let max = (self.cfg.max_payload_bytes * 4).max(1 << 20);
        let (mut crd, mut cwr) = tokio::io::split(stream);
        let mut inbuf = BytesMut::with_capacity(16 * 1024);
        let connect = tokio::time::timeout(Duration::from_secs(10), async {
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
                metrics::counter!("edge_mqtt_connections_total", "result" => "bad_protocol")
                    .increment(1);
                return Err(FrameError::Protocol(level).into());
            }
            Err(e) => return Err(e.into()),
        };
        let user = match self.authenticate(&c, cert_user).await {
            Ok(u) => u,
            Err((code, why)) => {
                let _ = cwr.write_all(&frame::connack(code)).await;
                metrics::counter!("edge_mqtt_connections_total", "result" => why).increment(1);
                tracing::warn!(client_id = %c.client_id, user = ?c.username, reason = why, "MQTT connection refused");
                return Err(ConnError::Refused(why));
            }
        };
        metrics::counter!("edge_mqtt_connections_total", "result" => "accepted").increment(1);
        tracing::debug!(client_id = %c.client_id, user = ?user.as_ref().map(|u| &u.name), "MQTT client connected");
        let upstream = tokio::net::TcpStream::connect(self.broker).await?;
        upstream.set_nodelay(true)?;
        let (mut urd, mut uwr) = upstream.into_split();
        uwr.write_all(&connect.bytes).await?;

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
        let from_broker = {
            let to_client = to_client.clone();
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
            })
        };
        let mut session = Session {
            user,
            client_id: c.client_id,
            owned_qos2: HashSet::new(),
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
                            metrics::counter!("edge_mqtt_denied_total", "what" => "subscribe")
                                .increment(1);
                            tracing::warn!(client_id = %s.client_id, filters = ?sub.filters, "subscription refused by topic rules");
                            acks.extend_from_slice(&frame::suback(
                                sub.pkid,
                                &vec![0x80; sub.filters.len()],
                            ));
                        }
                    }
                    frame::PUBREL
                        if frame::pubrel_pkid(&f).is_some_and(|id| s.owned_qos2.remove(&id)) =>
                    {
                        acks.extend_from_slice(&frame::pubcomp(
                            frame::pubrel_pkid(&f).unwrap_or(0),
                        ));
                    }
                    frame::CONNECT => return Err(ConnError::Refused("second CONNECT")),
                    _ => forward.extend_from_slice(&f.bytes),
                }
            }
            if !readings.is_empty() {
                let n = readings.len() as u64;
                // Durable before acknowledged. A full buffer (reject_newest)
                // closes the connection unacknowledged: the client sends again later.
                self.buffer.append_to(Lane::Normal, &readings).await?;
                metrics::counter!("edge_mqtt_readings_total").increment(n);
                readings.clear();
            }
            if !forward.is_empty() {
                uwr.write_all(&forward.split()).await?;
            }
            if !acks.is_empty() && to_client.send(acks.split().freeze()).await.is_err() {
                return Ok(());
            }
            inbuf.reserve(16 * 1024);
            if crd.read_buf(inbuf).await? == 0 {
                return Ok(());
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
        metrics::counter!("edge_mqtt_messages_total").increment(1);
        let ack = |acks: &mut BytesMut, owned: &mut HashSet<u16>| match p.qos {
            1 => acks.extend_from_slice(&frame::puback(p.pkid)),
            2 => {
                owned.insert(p.pkid);
                acks.extend_from_slice(&frame::pubrec(p.pkid));
            }
            _ => {}
        };
        if !self.may_publish(s, &p.topic) {
            // MQTT 3.1.1 has no negative PUBACK: like Mosquitto, acknowledge
            // and drop, so the client does not resend forever; counted and logged.
            metrics::counter!("edge_mqtt_denied_total", "what" => "publish").increment(1);
            tracing::warn!(client_id = %s.client_id, topic = %p.topic, "publish refused by topic rules");
            ack(acks, &mut s.owned_qos2);
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
                    "device id {:?} must be 1-128 of [A-Za-z0-9_.:-]",
                    t.device_id
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
        ack(acks, &mut s.owned_qos2);
        Ok(())
    }
}
