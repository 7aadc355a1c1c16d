//! The rig's shared physical state, advanced in simulated time: chamber air,
//! module temperature, the supplies and the insulation tester, the stresses
//! the module has seen and the degradation they cost it.

use super::Device;
use super::chamber::{Chamber, lag};
use super::config::RigConfig;
use super::module_model::{Diode, ModelError, Module};
use super::stress::Stress;
use serde::Serialize;
use thiserror::Error;

/// Longest integration step (simulated s): ramps and stress thresholds are
/// resolved to this, whatever the time scale.
const MAX_STEP_S: f64 = 1.0;
/// Supplies and the hipot settle to a new setpoint with this time constant (s).
const SOURCE_TAU_S: f64 = 1.0;
/// The hipot measures resistance only above this test voltage (V).
const MIN_TEST_V: f64 = 50.0;
/// Humidity at which the insulation is dry, and at which it is fully wet (%).
const DRY_WET_HUMIDITY: (f64, f64) = (40.0, 85.0);
/// The DC supply's voltage limit at start: it works as a current source up to it (V).
const SUPPLY_COMPLIANCE_V: f64 = 80.0;

#[derive(Debug, Error, PartialEq)]
pub enum WriteError {
    #[error("{device} has no writable point {point}")]
    NotWritable { device: &'static str, point: String },
    #[error("{value} is outside {device}.{point}'s range {min}..{max}")]
    OutOfRange {
        device: &'static str,
        point: String,
        value: f64,
        min: f64,
        max: f64,
    },
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Supply {
    pub current_setpoint: f64,
    pub voltage_setpoint: f64,
    pub current: f64,
    pub voltage: f64,
    pub open_circuit: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Bias {
    pub voltage_setpoint: f64,
    pub voltage: f64,
    /// Leakage current through the module's insulation (A).
    pub current: f64,
    /// The bias supply's current limit: kept and read back, never reached.
    pub current_setpoint: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Hipot {
    pub test_voltage_setpoint: f64,
    pub test_voltage: f64,
    /// The last insulation resistance measured under test voltage (MOhm); held after.
    pub resistance: f64,
    pub breakdown: f64,
    /// uA.
    pub leakage_current: f64,
    /// The tester tripped on a breakdown: no voltage until the next test starts.
    #[serde(skip)]
    tripped: bool,
}

pub struct Physics {
    cfg: RigConfig,
    /// Simulated seconds since start.
    pub t: f64,
    pub chamber: Chamber,
    pub module_temperature: f64,
    /// The module is immersed for a wet leakage test (control port `wet on`).
    pub wet: bool,
    pub supply: Supply,
    pub bias: Bias,
    pub hipot: Hipot,
    pub stress: Stress,
    new_module: Module,
    /// The degraded module for the loss it was computed at.
    cached: (f64, Module),
}

impl Physics {
    pub fn new(cfg: RigConfig) -> Result<Physics, ModelError> {
        let module = Module::new(cfg.module_spec())?;
        let supply = Supply {
            voltage_setpoint: SUPPLY_COMPLIANCE_V,
            ..Supply::default()
        };
        Ok(Physics {
            t: 0.0,
            chamber: Chamber::new(cfg.ambient, cfg.chamber_tau_s, cfg.chamber_max_ramp_per_min),
            module_temperature: cfg.ambient,
            wet: false,
            supply,
            bias: Bias::default(),
            hipot: Hipot {
                resistance: 0.0,
                ..Hipot::default()
            },
            stress: Stress::default(),
            cached: (0.0, module.clone()),
            new_module: module,
            cfg,
        })
    }

    pub fn irradiance(&self) -> f64 {
        self.cfg.irradiance
    }

    /// Advances to simulated time `t` in steps of at most `MAX_STEP_S`.
    pub fn advance_to(&mut self, t: f64) {
        while self.t < t {
            let dt = (t - self.t).min(MAX_STEP_S);
            self.step(dt);
            self.t += dt;
        }
    }

    fn step(&mut self, dt: f64) {
        self.chamber.step(dt);
        let open = self.open_circuit();
        // Joule heating from the current the supply pushes through the module.
        let injected = if open {
            0.0
        } else {
            self.supply.current_setpoint
        };
        let target = self.chamber.temperature + self.cfg.joule_heating_per_a * injected;
        self.module_temperature = lag(
            self.module_temperature,
            target,
            self.cfg.module_tau_s,
            f64::INFINITY,
            dt,
        );
        self.bias.voltage = lag(
            self.bias.voltage,
            self.bias.voltage_setpoint,
            SOURCE_TAU_S,
            f64::INFINITY,
            dt,
        );
        let r = self.r_iso_mohm();
        self.bias.current = self.bias.voltage / (r * 1e6);
        self.step_hipot(dt, r);
        self.stress.update(
            self.module_temperature,
            self.chamber.humidity,
            self.bias.voltage,
            dt,
        );
    }

    fn step_hipot(&mut self, dt: f64, r: f64) {
        let h = &mut self.hipot;
        let target = if h.tripped {
            0.0
        } else {
            h.test_voltage_setpoint
        };
        h.test_voltage = lag(h.test_voltage, target, SOURCE_TAU_S, f64::INFINITY, dt);
        if let Some(bv) = self.cfg.breakdown_above_v
            && h.test_voltage.abs() > bv
            && !h.tripped
        {
            h.tripped = true;
            h.breakdown = 1.0;
            h.resistance = 0.0;
            h.test_voltage = 0.0;
            tracing::info!(voltage = bv, "insulation broke down");
        }
        if h.tripped {
            h.leakage_current = 0.0;
        } else {
            h.leakage_current = h.test_voltage / r;
            if h.test_voltage.abs() >= MIN_TEST_V {
                h.resistance = r;
            }
        }
    }

    /// The module's insulation now: between dry and wet with the humidity, wet when immersed.
    pub fn r_iso_mohm(&self) -> f64 {
        let (dry_h, wet_h) = DRY_WET_HUMIDITY;
        let wet = if self.wet {
            1.0
        } else {
            ((self.chamber.humidity - dry_h) / (wet_h - dry_h)).clamp(0.0, 1.0)
        };
        self.cfg.r_iso_mohm + (self.cfg.wet_r_iso_mohm - self.cfg.r_iso_mohm) * wet
    }

    pub fn open_circuit(&self) -> bool {
        self.cfg
            .open_circuit_after_cycles
            .is_some_and(|n| self.stress.thermal_cycles >= n)
    }

    /// Pmax lost so far, as a fraction of the new module's.
    pub fn loss(&self) -> f64 {
        let s = &self.stress;
        let c = &self.cfg;
        let pct = f64::from(s.thermal_cycles) * c.degradation_per_thermal_cycle_pct
            + s.damp_heat_hours / 1000.0 * c.degradation_per_1000h_damp_heat_pct
            + f64::from(s.humidity_freeze_cycles) * c.degradation_per_humidity_freeze_cycle_pct
            + s.pid_bias_hours / 100.0 * c.degradation_per_100h_pid_pct;
        pct / 100.0
    }

    pub fn module(&mut self) -> &Module {
        let loss = self.loss();
        if (loss - self.cached.0).abs() > 1e-9 {
            self.cached = (loss, self.new_module.degraded(loss));
        }
        &self.cached.1
    }

    /// The module as the SMU sees it now; `None` when its circuit is open.
    pub fn diode_now(&mut self, irradiance: f64) -> Option<Diode> {
        if self.open_circuit() {
            return None;
        }
        let t = self.module_temperature;
        Some(self.module().at(irradiance, t))
    }

    /// The supply's readings: a current source up to its voltage limit.
    pub fn refresh_supply(&mut self) {
        let (set, limit) = (self.supply.current_setpoint, self.supply.voltage_setpoint);
        let (i, v, open) = if set <= 0.0 {
            (0.0, 0.0, false)
        } else if self.open_circuit() {
            (0.0, limit, true)
        } else {
            let t = self.module_temperature;
            let dark = self.module().at(0.0, t);
            let v = dark.voltage_at(-set);
            if v <= limit {
                (set, v, false)
            } else {
                (-dark.current(limit), limit, false)
            }
        };
        self.supply.current = i;
        self.supply.voltage = v;
        self.supply.open_circuit = if open { 1.0 } else { 0.0 };
    }

    /// A Modbus device's point by its profile name.
    pub fn read(&mut self, device: Device, point: &str) -> Option<f64> {
        if device == Device::Supply {
            self.refresh_supply();
        }
        Some(match (device, point) {
            (Device::Chamber, "temperature") => self.chamber.temperature,
            (Device::Chamber, "temperature_setpoint") => self.chamber.temperature_setpoint,
            (Device::Chamber, "humidity") => self.chamber.humidity,
            (Device::Chamber, "humidity_setpoint") => self.chamber.humidity_setpoint,
            (Device::Daq, "module_temperature") => self.module_temperature,
            (Device::Daq, "irradiance") => self.irradiance(),
            (Device::Supply, "current_setpoint") => self.supply.current_setpoint,
            (Device::Supply, "voltage_setpoint") => self.supply.voltage_setpoint,
            (Device::Supply, "current") => self.supply.current,
            (Device::Supply, "voltage") => self.supply.voltage,
            (Device::Supply, "open_circuit") => self.supply.open_circuit,
            (Device::Bias, "voltage_setpoint") => self.bias.voltage_setpoint,
            (Device::Bias, "voltage") => self.bias.voltage,
            (Device::Bias, "current") => self.bias.current,
            (Device::Bias, "open_circuit") => 0.0,
            (Device::Bias, "current_setpoint") => self.bias.current_setpoint,
            (Device::Hipot, "test_voltage_setpoint") => self.hipot.test_voltage_setpoint,
            (Device::Hipot, "test_voltage") => self.hipot.test_voltage,
            (Device::Hipot, "resistance") => self.hipot.resistance,
            (Device::Hipot, "breakdown") => self.hipot.breakdown,
            (Device::Hipot, "leakage_current") => self.hipot.leakage_current,
            _ => return None,
        })
    }

    /// A write to a setpoint, refused outside what the real device accepts.
    pub fn write(&mut self, device: Device, point: &str, value: f64) -> Result<(), WriteError> {
        let range = match (device, point) {
            (Device::Chamber, "temperature_setpoint") => (-70.0, 180.0),
            (Device::Chamber, "humidity_setpoint") => (0.0, 98.0),
            (Device::Supply, "current_setpoint") => (0.0, 20.0),
            (Device::Supply, "voltage_setpoint") => (0.0, 100.0),
            (Device::Bias, "voltage_setpoint") => (-1500.0, 1500.0),
            (Device::Bias, "current_setpoint") => (0.0, 0.1),
            (Device::Hipot, "test_voltage_setpoint") => (0.0, 6000.0),
            _ => {
                return Err(WriteError::NotWritable {
                    device: device.name(),
                    point: point.into(),
                });
            }
        };
        if !(value >= range.0 && value <= range.1) {
            return Err(WriteError::OutOfRange {
                device: device.name(),
                point: point.into(),
                value,
                min: range.0,
                max: range.1,
            });
        }
        match (device, point) {
            (Device::Chamber, "temperature_setpoint") => self.chamber.temperature_setpoint = value,
            (Device::Chamber, "humidity_setpoint") => self.chamber.humidity_setpoint = value,
            (Device::Supply, "current_setpoint") => self.supply.current_setpoint = value,
            (Device::Supply, "voltage_setpoint") => self.supply.voltage_setpoint = value,
            (Device::Bias, "voltage_setpoint") => self.bias.voltage_setpoint = value,
            (Device::Bias, "current_setpoint") => self.bias.current_setpoint = value,
            (Device::Hipot, "test_voltage_setpoint") => {
                // A new test starts when the voltage is set from 0: its result replaces the last.
                if self.hipot.test_voltage_setpoint == 0.0 && value != 0.0 {
                    self.hipot.tripped = false;
                    self.hipot.breakdown = 0.0;
                }
                self.hipot.test_voltage_setpoint = value;
            }
            _ => {}
        }
        tracing::info!(device = device.name(), point, value, "setpoint written");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rig::config::defaults;

    fn run(p: &mut Physics, seconds: f64) {
        let t = p.t + seconds;
        p.advance_to(t);
    }

    #[test]
    fn the_module_lags_the_chamber_and_heats_with_current() {
        let mut p = Physics::new(defaults()).expect("physics");
        p.write(Device::Chamber, "temperature_setpoint", 85.0)
            .expect("write");
        run(&mut p, 600.0);
        // 10 min at the 3 Cel/min ramp limit; the module 400 s behind.
        assert!((p.chamber.temperature - 55.0).abs() < 1e-6);
        assert!(p.module_temperature < p.chamber.temperature - 5.0);
        assert!(p.module_temperature > 25.0);
        run(&mut p, 20_000.0);
        assert!((p.module_temperature - 85.0).abs() < 0.05);
        p.write(Device::Supply, "current_setpoint", 10.0)
            .expect("write");
        run(&mut p, 5000.0);
        assert!(
            (p.module_temperature - 88.0).abs() < 0.05,
            "{}",
            p.module_temperature
        );
        assert_eq!(p.read(Device::Supply, "current"), Some(10.0));
        let v = p.read(Device::Supply, "voltage").expect("voltage");
        assert!(v > 30.0 && v < SUPPLY_COMPLIANCE_V, "forward voltage {v}");
    }

    #[test]
    fn thermal_cycles_degrade_pmax_by_the_configured_rate() {
        let mut cfg = defaults();
        cfg.degradation_per_thermal_cycle_pct = 1.5;
        cfg.open_circuit_after_cycles = Some(3);
        let mut p = Physics::new(cfg).expect("physics");
        let new = p.module().pmax_stc();
        for n in 1..=3u32 {
            for sp in [-45.0, 90.0] {
                p.write(Device::Chamber, "temperature_setpoint", sp)
                    .expect("write");
                run(&mut p, 6000.0);
            }
            assert_eq!(p.stress.thermal_cycles, n);
            let want = new * (1.0 - 0.015 * f64::from(n));
            let got = p.module().pmax_stc();
            assert!((got - want).abs() / want < 0.001, "{got} vs {want}");
            // What an STC sweep measures is what the state reports.
            let swept = p.module().at(1000.0, 25.0).pmax();
            assert!((swept - got).abs() / got < 0.005);
        }
        assert!(p.open_circuit());
        assert!(p.diode_now(1000.0).is_none());
        p.write(Device::Supply, "current_setpoint", 9.0)
            .expect("write");
        assert_eq!(p.read(Device::Supply, "open_circuit"), Some(1.0));
        assert_eq!(p.read(Device::Supply, "current"), Some(0.0));
    }

    #[test]
    fn damp_heat_and_pid_count_hours_and_cost_pmax() {
        let mut p = Physics::new(defaults()).expect("physics");
        p.write(Device::Chamber, "temperature_setpoint", 85.0)
            .expect("write");
        p.write(Device::Chamber, "humidity_setpoint", 85.0)
            .expect("write");
        run(&mut p, 10.0 * 3600.0);
        let dh = p.stress.damp_heat_hours;
        assert!(dh > 8.0 && dh < 10.0, "damp heat hours {dh}");
        p.write(Device::Bias, "voltage_setpoint", -1000.0)
            .expect("write");
        run(&mut p, 3600.0);
        assert!((p.stress.pid_bias_hours - 1.0).abs() < 0.01);
        let leak = p.read(Device::Bias, "current").expect("current");
        assert!((leak + 1000.0 / 800e6).abs() < 1e-9, "leakage {leak}");
        let want_pct = (dh + 1.0) / 1000.0 * 2.0 + 1.0 / 100.0 * 1.0;
        assert!((p.loss() * 100.0 - want_pct).abs() < 0.001);
    }

    #[test]
    fn the_hipot_holds_its_last_result_and_trips_on_breakdown() {
        let mut cfg = defaults();
        cfg.breakdown_above_v = Some(2500.0);
        let mut p = Physics::new(cfg).expect("physics");
        p.write(Device::Hipot, "test_voltage_setpoint", 1000.0)
            .expect("write");
        run(&mut p, 60.0);
        assert_eq!(p.read(Device::Hipot, "resistance"), Some(2000.0));
        assert!((p.hipot.leakage_current - 0.5).abs() < 1e-6);
        p.write(Device::Hipot, "test_voltage_setpoint", 0.0)
            .expect("write");
        run(&mut p, 60.0);
        assert_eq!(p.read(Device::Hipot, "resistance"), Some(2000.0));
        p.write(Device::Hipot, "test_voltage_setpoint", 3000.0)
            .expect("write");
        run(&mut p, 60.0);
        assert_eq!(p.read(Device::Hipot, "breakdown"), Some(1.0));
        assert_eq!(p.read(Device::Hipot, "test_voltage"), Some(0.0));
        assert_eq!(p.read(Device::Hipot, "resistance"), Some(0.0));
        p.write(Device::Hipot, "test_voltage_setpoint", 0.0)
            .expect("write");
        p.wet = true;
        p.write(Device::Hipot, "test_voltage_setpoint", 1000.0)
            .expect("write");
        run(&mut p, 60.0);
        assert_eq!(p.read(Device::Hipot, "breakdown"), Some(0.0));
        assert_eq!(p.read(Device::Hipot, "resistance"), Some(800.0));
    }

    #[test]
    fn writes_outside_the_device_range_are_refused() {
        let mut p = Physics::new(defaults()).expect("physics");
        assert!(matches!(
            p.write(Device::Chamber, "temperature_setpoint", 500.0),
            Err(WriteError::OutOfRange { .. })
        ));
        assert!(matches!(
            p.write(Device::Chamber, "temperature_setpoint", f64::NAN),
            Err(WriteError::OutOfRange { .. })
        ));
        assert!(matches!(
            p.write(Device::Daq, "irradiance", 5.0),
            Err(WriteError::NotWritable { .. })
        ));
        assert_eq!(p.chamber.temperature_setpoint, 25.0);
    }
}
