//! edge-agent: the site gateway daemon.
//!
//! Data path: `sources` (one poller task per instrument) -> `buffer` (sled,
//! durable, assigns sequence numbers) -> `uplink` (gRPC stream to the hub,
//! deletes on ack). `fleet` owns the pollers; `local_api` serves what each
//! part reports; `mqtt` is the site bus; `app` only wires them together.

pub mod app;
pub mod benches;
pub mod buffer;
pub mod calibration;
pub mod config;
pub mod fleet;
pub mod identity;
pub mod local_api;
pub mod metric_names;
pub mod mqtt;
pub mod runs;
pub mod sources;
pub mod uplink;
pub mod verdicts;

use device_profile::{Profile, Protocol};

/// One line about a profile: model, points and what a poll cycle costs.
pub fn profile_summary(p: &Profile) -> String {
    match p.protocol {
        Protocol::Modbus => {
            let (with, without) = sources::modbus::plan::requests_per_cycle(p);
            format!(
                "{} {} ({}), {} points, {} Modbus requests per full cycle ({} without coalescing)",
                p.model.manufacturer,
                p.model.name,
                p.model.id,
                p.points.len(),
                with,
                without
            )
        }
        Protocol::Scpi => {
            // Points sharing a query within a poll group are asked once.
            let distinct: std::collections::BTreeSet<(Option<&str>, Option<&str>)> = p
                .points
                .iter()
                .map(|q| (q.poll_group.as_deref(), q.query.as_deref()))
                .collect();
            format!(
                "{} {} ({}), {} points, {} queries per full cycle ({} without sharing replies)",
                p.model.manufacturer,
                p.model.name,
                p.model.id,
                p.points.len(),
                distinct.len(),
                p.points.len()
            )
        }
    }
}
