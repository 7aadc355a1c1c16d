//! The embedded rumqttd broker: routing, subscriptions and retained messages
//! for the site bus. It listens only on a loopback port of its own; clients
//! reach it through the agent's front door (`proxy`), which authenticates,
//! enforces topic rules and makes telemetry durable first.

use super::frame;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("no free loopback port for the embedded broker: {0}")]
    Port(std::io::Error),
    #[error("the embedded broker did not start listening on {0}")]
    NotListening(SocketAddr),
    #[error("cannot start the broker thread: {0}")]
    Thread(std::io::Error),
}

/// Memory and connection bounds of the router.
#[derive(Debug, Clone, Copy)]
pub struct BrokerLimits {
    pub max_connections: usize,
    pub max_payload_bytes: usize,
    /// Each topic filter keeps an in-memory log of `segment_bytes x segments`.
    pub segment_bytes: usize,
    pub segments: usize,
}

/// Starts rumqttd on its own thread; returns its loopback address once it accepts connections.
pub async fn start(limits: BrokerLimits) -> Result<SocketAddr, BrokerError> {
    // rumqttd cannot report a port bound as 0, so take one and hand it over.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(BrokerError::Port)?;
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: limits.max_payload_bytes + 1024,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        // Every topic a client may use gets a filter on first use; the
        // front door has already checked the client may use it.
        dynamic_filters: true,
    };
    let mut v4 = HashMap::new();
    v4.insert(
        "internal".to_string(),
        rumqttd::ServerSettings {
            name: "internal".into(),
            listen: addr,
            tls: None,
            next_connection_delay_ms: 0,
            connections,
        },
    );
    let config = rumqttd::Config {
        id: 0,
        // Every field set: RouterConfig::default() refuses all connections.
        router: rumqttd::RouterConfig {
            max_connections: limits.max_connections + 16,
            max_outgoing_packet_count: 200,
            max_segment_size: limits.segment_bytes,
            max_segment_count: limits.segments,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(v4),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(BrokerError::Thread)?;
    // Wait for the listener without connecting to it: rumqttd logs a probe
    // that never sends CONNECT as an error.
    for _ in 0..250 {
        if listening(addr.port()) {
            return Ok(addr);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(BrokerError::NotListening(addr))
}

/// Whether something listens on this loopback TCP port (Linux /proc).
fn listening(port: u16) -> bool {
    let needle = format!(":{port:04X} 00000000:0000 0A");
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|t| t.lines().any(|l| l.contains(&needle)))
}

/// A message the agent itself puts on the bus.
#[derive(Debug)]
pub struct BusMessage {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
}

/// Publishes the agent's own messages (polled telemetry, device health) over
/// one plain MQTT connection to the broker, QoS 0. A full queue drops rather
/// than slow the pollers down (counted).
#[derive(Clone)]
pub struct BusPublisher {
    tx: mpsc::Sender<BusMessage>,
}

impl BusPublisher {
    pub fn publish(&self, topic: String, payload: Bytes, retain: bool) {
        if self
            .tx
            .try_send(BusMessage {
                topic,
                payload,
                retain,
            })
            .is_err()
        {
            metrics::counter!(crate::metric_names::EDGE_MQTT_BUS_DROPPED_TOTAL).increment(1);
        }
    }
}

const KEEP_ALIVE_S: u16 = 60;

fn connect_frame(client_id: &str) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u16(4);
    body.put_slice(b"MQTT");
    body.put_u8(4);
    body.put_u8(0x02); // clean session
    body.put_u16(KEEP_ALIVE_S); // rumqttd refuses 0
    body.put_u16(client_id.len() as u16);
    body.put_slice(client_id.as_bytes());
    let mut b = BytesMut::new();
    b.put_u8(0x10);
    b.put_u8(body.len() as u8);
    b.put_slice(&body);
    b.freeze()
}

/// Starts the agent's publisher connection (reconnecting if the broker drops it).
pub fn publisher(addr: SocketAddr) -> BusPublisher {
    let (tx, mut rx) = mpsc::channel::<BusMessage>(10_000);
    tokio::spawn(async move {
        loop {
            let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let _ = conn.set_nodelay(true);
            if conn.write_all(&connect_frame("edge-agent")).await.is_err() {
                continue;
            }
            let mut connack = [0u8; 4];
            if conn.read_exact(&mut connack).await.is_err() || connack[3] != 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            let (mut rd, mut wr) = conn.into_split();
            // Nothing is expected back; read so the socket never stalls.
            let drain = tokio::spawn(async move {
                let mut sink = [0u8; 1024];
                while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
            });
            let mut buf = BytesMut::new();
            let mut ping = tokio::time::interval(Duration::from_secs(u64::from(KEEP_ALIVE_S) / 2));
            loop {
                let m = tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => m,
                        None => break,
                    },
                    _ = ping.tick() => {
                        if wr.write_all(&[0xC0, 0x00]).await.is_err() {
                            break;
                        }
                        continue;
                    }
                };
                buf.clear();
                let p = frame::Publish {
                    dup: false,
                    qos: 0,
                    retain: m.retain,
                    topic: m.topic,
                    pkid: 0,
                    payload: m.payload,
                };
                buf.put_slice(&frame::publish_qos0(&p));
                // Take whatever else is queued into the same write.
                while let Ok(m) = rx.try_recv() {
                    let p = frame::Publish {
                        dup: false,
                        qos: 0,
                        retain: m.retain,
                        topic: m.topic,
                        pkid: 0,
                        payload: m.payload,
                    };
                    buf.put_slice(&frame::publish_qos0(&p));
                    if buf.len() > 256 * 1024 {
                        break;
                    }
                }
                if wr.write_all(&buf).await.is_err() {
                    break;
                }
            }
            drain.abort();
            if rx.is_closed() {
                return;
            }
        }
    });
    BusPublisher { tx }
}
