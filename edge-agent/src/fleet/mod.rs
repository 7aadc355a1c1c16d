//! The set of running device pollers, replaceable as a whole when the
//! configuration is reloaded. Its owner is the agent; the local API, the MQTT
//! health publisher and the uplink only ever see a [`FleetView`] snapshot. The fleet builds the
//! pollers itself ([`factory`]), so starting and replacing them is one job in
//! one place.

mod factory;

use crate::buffer::Buffer;
use crate::config::Config;
use crate::sources::command::DeviceHandle;
use crate::sources::health::DeviceHealth;
pub use factory::load_profiles;
use factory::start_devices;
use qi_common::shutdown::{Stop, StopTrigger};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

/// What the rest of the agent sees of the devices: cheap to clone.
#[derive(Clone, Default)]
pub struct FleetView {
    pub handles: Arc<HashMap<String, DeviceHandle>>,
    pub health: Arc<Vec<watch::Receiver<DeviceHealth>>>,
    /// Each running device's id and firmware profile, in configuration order
    /// (what the uplink tells the hub in its Hello).
    pub models: Arc<Vec<(String, Arc<device_profile::Profile>)>>,
}

impl FleetView {
    /// Every device's current health, in configuration order.
    pub fn snapshot(&self) -> Vec<DeviceHealth> {
        self.health.iter().map(|rx| rx.borrow().clone()).collect()
    }
}

struct Running {
    config: Config,
    stop: StopTrigger,
    tasks: Vec<JoinHandle<()>>,
}

pub struct Fleet {
    view: RwLock<FleetView>,
    running: Mutex<Option<Running>>,
    buffer: Arc<Buffer>,
    /// Where `reload` reads the configuration from.
    config_path: Option<PathBuf>,
}

impl Fleet {
    pub fn start(config: Config, config_path: Option<PathBuf>, buffer: Arc<Buffer>) -> Arc<Fleet> {
        let fleet = Arc::new(Fleet {
            view: RwLock::new(FleetView::default()),
            running: Mutex::new(None),
            buffer,
            config_path,
        });
        let running = fleet.launch(config);
        if let Ok(mut r) = fleet.running.try_lock() {
            *r = Some(running);
        }
        fleet
    }

    fn launch(&self, config: Config) -> Running {
        let (stop, devices_stop): (StopTrigger, Stop) = qi_common::shutdown::channel();
        let devices = start_devices(&config, &self.buffer, &devices_stop);
        if let Ok(mut v) = self.view.write() {
            *v = FleetView {
                handles: Arc::new(devices.handles),
                health: Arc::new(devices.health),
                models: Arc::new(devices.models),
            };
        }
        Running {
            config,
            stop,
            tasks: devices.tasks,
        }
    }

    /// Whether the pollers run: `None` while a reload or the shutdown holds
    /// them, else the devices whose poller task has ended (a panic; a
    /// disabled device never had one).
    pub fn ended_pollers(&self) -> Option<usize> {
        let running = self.running.try_lock().ok()?;
        let r = running.as_ref()?;
        Some(r.tasks.iter().filter(|t| t.is_finished()).count())
    }

    pub fn view(&self) -> FleetView {
        self.view.read().map(|v| v.clone()).unwrap_or_default()
    }

    /// Stops every poller and waits for them.
    pub async fn stop(&self) {
        if let Some(r) = self.running.lock().await.take() {
            r.stop.fire();
            for t in r.tasks {
                let _ = t.await;
            }
        }
    }

    /// Re-reads the configuration file and restarts the pollers with its
    /// devices. A file that does not load leaves everything as it was.
    /// Settings outside `devices` and `profiles_dir` need a restart; the
    /// result says which changed.
    pub async fn reload(&self) -> Result<String, String> {
        let Some(path) = &self.config_path else {
            return Err("this agent was not started from a configuration file".into());
        };
        let new = Config::load(path).map_err(|e| format!("configuration not reloaded: {e}"))?;
        let mut running = self.running.lock().await;
        let Some(old) = running.take() else {
            return Err("the agent is shutting down".into());
        };
        let mut needs_restart = Vec::new();
        if new.gateway_id != old.config.gateway_id {
            needs_restart.push("gateway_id");
        }
        if format!("{:?}", new.uplink) != format!("{:?}", old.config.uplink) {
            needs_restart.push("uplink");
        }
        if format!("{:?}", new.buffer) != format!("{:?}", old.config.buffer) {
            needs_restart.push("buffer");
        }
        if format!("{:?}", new.http) != format!("{:?}", old.config.http) {
            needs_restart.push("http");
        }
        if format!("{:?}", new.mqtt) != format!("{:?}", old.config.mqtt) {
            needs_restart.push("mqtt");
        }
        if format!("{:?}", new.log) != format!("{:?}", old.config.log) {
            needs_restart.push("log");
        }
        if !needs_restart.is_empty() {
            tracing::warn!(
                sections = %needs_restart.join(", "),
                "configuration reloaded, but these sections changed and take effect only after a restart"
            );
        }
        old.stop.fire();
        for t in old.tasks {
            let _ = t.await;
        }
        let n = new.devices.len();
        *running = Some(self.launch(new));
        tracing::info!(devices = n, "configuration reloaded");
        metrics::counter!(crate::metric_names::EDGE_CONFIG_RELOADS_TOTAL).increment(1);
        Ok(if needs_restart.is_empty() {
            format!("reloaded: {n} devices")
        } else {
            format!(
                "reloaded: {n} devices; changes to {} take effect after a restart",
                needs_restart.join(", ")
            )
        })
    }
}
