//! MQTT over WebSocket, for browser HMIs (`mqtt.ws_listen`, path `/mqtt`,
//! subprotocol `mqtt`). Each WebSocket is bridged to the front door through an
//! in-memory pipe, so logins, topic rules and durable PUBACKs are exactly
//! those of the TCP listener. Plain `ws://`: put a TLS-terminating proxy in
//! front for `wss://`.

use super::proxy::FrontDoor;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use qi_common::shutdown::Stop;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone)]
struct Ws {
    door: Arc<FrontDoor>,
    open: Arc<AtomicUsize>,
    max: usize,
}

/// Serves the WebSocket listener until `stop`.
pub fn spawn(
    listener: tokio::net::TcpListener,
    door: Arc<FrontDoor>,
    open: Arc<AtomicUsize>,
    max: usize,
    mut stop: Stop,
) {
    let app = axum::Router::new()
        .route("/mqtt", axum::routing::get(upgrade))
        .with_state(Ws { door, open, max });
    tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.wait().await })
        .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "MQTT WebSocket listener failed");
        }
    });
}

async fn upgrade(
    ws: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(st): State<Ws>,
) -> Response {
    if st.open.load(Ordering::SeqCst) >= st.max {
        metrics::counter!("edge_mqtt_connections_total", "result" => "too_many").increment(1);
        tracing::warn!(%peer, max = st.max, "MQTT WebSocket refused: mqtt.max_connections reached");
        return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let max_message = st.door.cfg.max_payload_bytes + 64 * 1024;
    ws.protocols(["mqtt"])
        .max_message_size(max_message)
        .on_upgrade(move |socket| bridge(socket, peer, st))
}

/// Pumps WebSocket binary messages into the front door and its bytes back
/// out as binary messages, until either side closes.
async fn bridge(socket: WebSocket, peer: SocketAddr, st: Ws) {
    st.open.fetch_add(1, Ordering::SeqCst);
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let door = Arc::clone(&st.door);
    let session = tokio::spawn(async move { door.serve(theirs, peer, None).await });
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
                    metrics::counter!("edge_mqtt_rejected_total", "reason" => "websocket_text")
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
    st.open.fetch_sub(1, Ordering::SeqCst);
}
