//! What the uplink reports about itself (for `/health`, `STATUS=` and the web
//! page) and how a stream ends.

use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Connecting,
    Connected,
    Disconnected,
}

#[derive(Debug, Clone, Serialize)]
pub struct UplinkStatus {
    pub hub_url: String,
    pub state: LinkState,
    pub last_error: Option<String>,
    /// Highest sequence the hub has acknowledged on this run.
    pub last_ack_seq: Option<u64>,
    /// Unix milliseconds of the last ack.
    pub last_ack_ms: Option<i64>,
    pub connects: u64,
    pub batches_sent: u64,
    pub readings_sent: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("invalid hub url: {0}")]
    Url(String),
    /// The whole cause chain: tonic's own message is only "transport error".
    #[error("cannot connect to hub: {0}")]
    Connect(String),
    #[error("{0}")]
    Certificate(String),
    #[error("hub refused the stream: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("hub closed the stream")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("no ack for {0:?} with batches in flight; stream presumed stalled")]
    Stalled(Duration),
    #[error("buffer: {0}")]
    Buffer(#[from] crate::buffer::BufferError),
}
