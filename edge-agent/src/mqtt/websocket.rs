//! MQTT over WebSocket, for browser HMIs (`mqtt.ws_listen`, path `/mqtt`,
//! subprotocol `mqtt`). Each WebSocket is bridged to the front door through an
//! in-memory pipe, so logins, topic rules and durable PUBACKs are exactly
//! those of the TCP listener. Plain `ws://`: put a TLS-terminating proxy in
//! front for `wss://`.

use super::admission::{Admission, Ticket};
use super::proxy::FrontDoor;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use qi_common::shutdown::Stop;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

#[derive(Clone)]
struct Ws {
    door: Arc<FrontDoor>,
}

/// Serves the WebSocket listener until `stop`.
pub fn spawn(
    listener: tokio::net::TcpListener,
    door: Arc<FrontDoor>,
    admission: Arc<Admission>,
    mut stop: Stop,
) {
    let timeout = std::time::Duration::from_millis(door.cfg.connect_timeout_ms);
    let app = axum::Router::new()
        .route("/mqtt", axum::routing::get(upgrade))
        .with_state(Ws { door });
    let listener = Admitting {
        inner: listener,
        admission,
        timeout,
    };
    tokio::spawn(async move {
        let served = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(async move { stop.wait().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "MQTT WebSocket listener failed");
        }
    });
}

/// The WebSocket listener's sockets pass the same budgets as the TCP ones,
/// and must complete their upgrade request and CONNECT before the deadline.
struct Admitting {
    inner: tokio::net::TcpListener,
    admission: Arc<Admission>,
    timeout: std::time::Duration,
}

/// What the handler learns about its connection: the address, the budget
/// ticket (taken by the upgrade) and the deadline (disarmed by it).
#[derive(Clone)]
pub(super) struct Peer {
    addr: SocketAddr,
    ticket: Arc<Mutex<Option<Ticket>>>,
    deadline: Instant,
    upgraded: Arc<AtomicBool>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

impl axum::serve::Listener for Admitting {
    type Io = Deadline;
    type Addr = Peer;

    async fn accept(&mut self) -> (Deadline, Peer) {
        let mut backoff = std::time::Duration::from_millis(10);
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    metrics::counter!(crate::metric_names::EDGE_MQTT_ACCEPT_ERRORS_TOTAL)
                        .increment(1);
                    tracing::warn!(error = %e, retry_in = ?backoff, "MQTT WebSocket accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                    continue;
                }
            };
            backoff = std::time::Duration::from_millis(10);
            let ticket = match self.admission.arrive(addr.ip()) {
                Ok(t) => t,
                Err(r) => {
                    super::refused(addr, r);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let deadline = Instant::now() + self.timeout;
            let upgraded = Arc::new(AtomicBool::new(false));
            let peer = Peer {
                addr,
                ticket: Arc::new(Mutex::new(Some(ticket))),
                deadline,
                upgraded: Arc::clone(&upgraded),
            };
            let io = Deadline {
                inner: stream,
                sleep: Box::pin(tokio::time::sleep_until(deadline)),
                upgraded,
                addr,
            };
            return (io, peer);
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer {
            addr: self.inner.local_addr()?,
            ticket: Arc::new(Mutex::new(None)),
            deadline: Instant::now(),
            upgraded: Arc::new(AtomicBool::new(true)),
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Admitting>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Admitting>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A socket whose reads fail once the deadline passes, until the MQTT
/// upgrade has been accepted (then the front door's own deadline and
/// keep-alive take over). Holds slow or silent HTTP clients to the deadline.
struct Deadline {
    inner: tokio::net::TcpStream,
    sleep: Pin<Box<Sleep>>,
    upgraded: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl AsyncRead for Deadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.upgraded.load(Ordering::Acquire) && self.sleep.as_mut().poll(cx).is_ready() {
            metrics::counter!(crate::metric_names::EDGE_MQTT_TIMEOUTS_TOTAL, "phase" => "websocket_upgrade")
                .increment(1);
            tracing::info!(peer = %self.addr, "MQTT WebSocket upgrade timed out (mqtt.connect_timeout_ms)");
            return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Deadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn upgrade(
    ws: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<Peer>,
    State(st): State<Ws>,
) -> Response {
    let ticket = peer.ticket.lock().ok().and_then(|mut t| t.take());
    let Some(ticket) = ticket else {
        // A second upgrade request on the same kept-alive HTTP connection.
        return axum::http::StatusCode::BAD_REQUEST.into_response();
    };
    peer.upgraded.store(true, Ordering::Release);
    let max_message = st.door.cfg.max_payload_bytes + 64 * 1024;
    let (addr, deadline) = (peer.addr, peer.deadline);
    ws.protocols(["mqtt"])
        .max_message_size(max_message)
        .on_upgrade(move |socket| bridge(socket, addr, st, ticket, deadline))
}

/// Pumps WebSocket binary messages into the front door and its bytes back
/// out as binary messages, until either side closes.
async fn bridge(socket: WebSocket, peer: SocketAddr, st: Ws, ticket: Ticket, deadline: Instant) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let door = Arc::clone(&st.door);
    let session =
        tokio::spawn(async move { door.serve(theirs, peer, None, ticket, deadline).await });
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (mut from_door, mut to_door) = tokio::io::split(ours);
    let inbound = async {
        while let Some(Ok(msg)) = ws_rx.next().await {
            match msg {
                // MQTT packets may span messages or share one: it is a byte stream.
                Message::Binary(b) => {
                    let written = to_door.write_all(&b).await;
                    if written.is_err() {
                        break;
                    }
                }
                Message::Close(_) => break,
                // Text frames are not MQTT; pings are answered by axum.
                Message::Text(_) => {
                    metrics::counter!(crate::metric_names::EDGE_MQTT_REJECTED_TOTAL, "reason" => "websocket_text")
                        .increment(1);
                    tracing::warn!(%peer, "MQTT WebSocket sent a text frame; closing");
                    break;
                }
                _ => {}
            }
        }
        let _ = to_door.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from_door.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let frame = Message::Binary(bytes::Bytes::copy_from_slice(&buf[..n]));
                    if ws_tx.send(frame).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.close().await;
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
    // The front door sees its pipe close and ends the session.
    drop(to_door);
    drop(from_door);
    let _ = session.await;
}
