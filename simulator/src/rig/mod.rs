//! The simulated PV test rig: one module in a climatic chamber, with its
//! DAQ, a DC supply, a bias supply, an insulation tester and an SMU, all
//! sharing one physical state that runs in simulated time.
//!
//! Served as the real instruments are: the Modbus devices behind one Modbus
//! TCP gateway (a unit id each, registers from their firmware profiles), the
//! SMU on a raw SCPI socket, plus a control port for tests and the demo.

pub mod chamber;
pub mod config;
pub mod control;
pub mod iv;
pub mod modbus;
pub mod module_model;
pub mod physics;
pub mod scpi;
pub mod stress;

use config::RigConfig;
use physics::Physics;
use scpi::Smu;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;
use thiserror::Error;

/// The rig's devices, by the names the bench and the control port use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Chamber,
    Daq,
    Supply,
    Bias,
    Hipot,
    Smu,
}

impl Device {
    pub const ALL: [Device; 6] = [
        Device::Chamber,
        Device::Daq,
        Device::Supply,
        Device::Bias,
        Device::Hipot,
        Device::Smu,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Device::Chamber => "chamber",
            Device::Daq => "daq",
            Device::Supply => "supply",
            Device::Bias => "bias",
            Device::Hipot => "hipot",
            Device::Smu => "smu",
        }
    }

    pub fn from_name(name: &str) -> Option<Device> {
        Device::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The Modbus unit id; none for the SMU (SCPI).
    pub fn unit_id(self) -> Option<u8> {
        match self {
            Device::Chamber => Some(1),
            Device::Daq => Some(2),
            Device::Supply => Some(3),
            Device::Bias => Some(4),
            Device::Hipot => Some(5),
            Device::Smu => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Error)]
pub enum RigError {
    #[error("invalid option: {0}")]
    Config(String),
    #[error("module model: {0}")]
    Model(#[from] module_model::ModelError),
    #[error("firmware profile {file}: {source}")]
    Profile {
        file: &'static str,
        source: device_profile::ProfileError,
    },
}

/// How much the rig has served: the simulator's metrics, shown in `state`.
#[derive(Default, Serialize)]
pub struct Counters {
    pub modbus_requests: AtomicU64,
    /// Requests to a silenced unit, left without a response.
    pub modbus_unanswered: AtomicU64,
    /// Requests answered with a Modbus exception (bad address, refused write).
    pub modbus_exceptions: AtomicU64,
    pub scpi_lines: AtomicU64,
    /// Entries pushed to the SMU's error queue (unknown or malformed commands).
    pub scpi_errors: AtomicU64,
    pub control_commands: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

struct Inner {
    physics: Physics,
    smu: Smu,
}

pub struct Rig {
    inner: Mutex<Inner>,
    started: Instant,
    time_scale: f64,
    silenced: [AtomicBool; 6],
    pub counters: Counters,
}

impl Rig {
    pub fn new(cfg: RigConfig) -> Result<Rig, RigError> {
        cfg.check().map_err(RigError::Config)?;
        let time_scale = cfg.time_scale;
        Ok(Rig {
            inner: Mutex::new(Inner {
                physics: Physics::new(cfg)?,
                smu: Smu::default(),
            }),
            started: Instant::now(),
            time_scale,
            silenced: Default::default(),
            counters: Counters::default(),
        })
    }

    /// Simulated seconds since start.
    pub fn sim_time(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * self.time_scale
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere leaves plain numbers behind, still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the physics up to now; the ticker calls it so stresses are
    /// counted while nobody asks.
    pub fn tick(&self) {
        let now = self.sim_time();
        self.lock().physics.advance_to(now);
    }

    /// Runs `f` on the physics as of now.
    pub fn physics<R>(&self, f: impl FnOnce(&mut Physics) -> R) -> R {
        let now = self.sim_time();
        let mut inner = self.lock();
        inner.physics.advance_to(now);
        f(&mut inner.physics)
    }

    /// Runs `f` on the SMU and the physics as of now.
    pub fn smu<R>(&self, f: impl FnOnce(&mut Smu, &mut Physics) -> R) -> R {
        let now = self.sim_time();
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.physics.advance_to(now);
        f(&mut inner.smu, &mut inner.physics)
    }

    pub fn is_silenced(&self, d: Device) -> bool {
        self.silenced[d.index()].load(Ordering::Relaxed)
    }

    pub fn set_silenced(&self, d: Device, silent: bool) {
        self.silenced[d.index()].store(silent, Ordering::Relaxed);
        tracing::info!(device = d.name(), silent, "device silence changed");
    }

    /// The whole state as one line of JSON (the control port's `state`).
    pub fn state_json(&self) -> String {
        let silenced: Vec<&str> = Device::ALL
            .into_iter()
            .filter(|d| self.is_silenced(*d))
            .map(Device::name)
            .collect();
        let value = self.physics(|p| {
            p.refresh_supply();
            let pmax = p.module().pmax_stc();
            serde_json::json!({
                "sim_time_s": p.t,
                "time_scale": self.time_scale,
                "chamber": {
                    "temperature": p.chamber.temperature,
                    "temperature_setpoint": p.chamber.temperature_setpoint,
                    "humidity": p.chamber.humidity,
                    "humidity_setpoint": p.chamber.humidity_setpoint,
                },
                "module": {
                    "temperature": p.module_temperature,
                    "pmax_stc_w": pmax,
                    "degradation_pct": p.loss() * 100.0,
                    "open_circuit": p.open_circuit(),
                    "wet": p.wet,
                    "r_iso_mohm": p.r_iso_mohm(),
                },
                "irradiance": p.irradiance(),
                "supply": p.supply,
                "bias": p.bias,
                "hipot": p.hipot,
                "stress": p.stress,
            })
        });
        let mut value = value;
        value["silenced"] = serde_json::json!(silenced);
        value["counters"] = serde_json::to_value(&self.counters).unwrap_or_default();
        value.to_string()
    }
}
