//! Fleet mode: many simulated devices in one process, for scale tests.
//!
//! - [`mqtt`]: N devices across S sites and T types publishing telemetry
//!   over MQTT (QoS 1) to one agent per site, many devices per connection,
//!   counting what each agent acknowledged;
//! - [`modbus`]: many Modbus TCP devices (unit ids behind ports) answering
//!   after a set delay, for the polling side.
//!
//! No task per device: a device is an index into counters; its id, topic
//! and values are derived from the index when a message is due.

pub mod codec;
pub mod latency;
pub mod modbus;
pub mod model;
pub mod mqtt;

use model::DeviceType;

/// One site: its name (the agent's `mqtt.site`) and its agent's MQTT address.
#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    pub addr: String,
}

/// Which devices exist and where they publish.
#[derive(Debug, Clone)]
pub struct Plan {
    pub sites: Vec<Site>,
    pub devices: u32,
    pub types: Vec<DeviceType>,
    pub per_connection: u32,
}

impl Plan {
    /// Device `i` lives at site `i mod S` and has type `(i / S) mod T`, so
    /// every site gets every type in equal shares.
    pub fn site_of(&self, device: u32) -> usize {
        device as usize % self.sites.len()
    }

    pub fn type_of(&self, device: u32) -> DeviceType {
        self.types[(device as usize / self.sites.len()) % self.types.len()]
    }

    /// The device's id (unique in the fleet, valid as an MQTT topic level and
    /// as the agent's device id).
    pub fn device_id(&self, device: u32) -> String {
        format!("{}-{device:06}", self.type_of(device).name())
    }

    pub fn topic(&self, device: u32) -> String {
        format!(
            "site/{}/{}/{}/telemetry",
            self.sites[self.site_of(device)].name,
            self.type_of(device).name(),
            self.device_id(device)
        )
    }

    /// Devices grouped into connections: (site index, devices), at most
    /// `per_connection` devices each, never mixing sites.
    pub fn connections(&self) -> Vec<(usize, Vec<u32>)> {
        let mut per_site: Vec<Vec<u32>> = vec![Vec::new(); self.sites.len()];
        for d in 0..self.devices {
            per_site[self.site_of(d)].push(d);
        }
        let chunk = self.per_connection.max(1) as usize;
        per_site
            .into_iter()
            .enumerate()
            .flat_map(|(s, ds)| {
                ds.chunks(chunk)
                    .map(|c| (s, c.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// This process's resident set size now and at its peak, in KiB (/proc).
pub fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_split_sites_and_cap_devices() {
        let plan = Plan {
            sites: (0..3)
                .map(|i| Site {
                    name: format!("s{i}"),
                    addr: String::new(),
                })
                .collect(),
            devices: 10,
            types: model::ALL_TYPES.to_vec(),
            per_connection: 2,
        };
        let conns = plan.connections();
        // Site 0 holds 0,3,6,9; sites 1 and 2 three devices each.
        assert_eq!(conns.len(), 2 + 2 + 2);
        assert!(
            conns
                .iter()
                .all(|(s, ds)| ds.len() <= 2 && ds.iter().all(|d| plan.site_of(*d) == *s))
        );
        assert_eq!(plan.topic(1), "site/s1/turbine/turbine-000001/telemetry");
        assert_eq!(plan.device_id(3), "thermal-engine-000003");
    }
}
