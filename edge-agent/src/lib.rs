//! edge-agent: the site gateway daemon.
//!
//! Data path: `sources` (one poller task per instrument) -> `buffer` (sled,
//! durable, assigns sequence numbers) -> `uplink` (gRPC stream to the hub,
//! deletes on ack). `status` serves what each of them reports.

pub mod app;
pub mod buffer;
pub mod config;
pub mod sources;
pub mod status;
pub mod uplink;
