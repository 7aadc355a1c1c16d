//! What the module has been through, counted the way the IEC 61215 sequences
//! define their stresses; degradation is charged per counted stress.

use serde::Serialize;

/// Below this the module counts as cold for thermal and humidity-freeze cycles (Cel).
pub const COLD: f64 = -35.0;
/// Above this it counts as hot for a thermal cycle (Cel).
pub const HOT: f64 = 80.0;
/// Damp heat: module at or above `DAMP_HEAT_TEMPERATURE` with humidity at or above `DAMP_HEAT_HUMIDITY`.
pub const DAMP_HEAT_TEMPERATURE: f64 = 80.0;
pub const DAMP_HEAT_HUMIDITY: f64 = 80.0;
/// PID stress: |bias| at or above `PID_BIAS_V` with the module at or above `PID_TEMPERATURE`.
pub const PID_BIAS_V: f64 = 500.0;
pub const PID_TEMPERATURE: f64 = 55.0;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Stress {
    pub thermal_cycles: u32,
    pub damp_heat_hours: f64,
    pub humidity_freeze_cycles: u32,
    pub pid_bias_hours: f64,
    /// Extremes reached since the last counted thermal cycle: a cycle counts
    /// when the module has been at both, in either order (a TC profile
    /// starting at 25 C goes hot first, then cold: that is one cycle).
    #[serde(skip)]
    cold_seen: bool,
    #[serde(skip)]
    hot_seen: bool,
    /// Where the module was at the last update (-1 cold, 0 between, 1
    /// hot): an extreme counts when the module enters it, not while it stays.
    #[serde(skip)]
    zone: i8,
    /// Damp heat reached since the last counted humidity-freeze cycle: the next cold counts one.
    #[serde(skip)]
    damp_seen: bool,
}

impl Stress {
    /// Accounts `dt` seconds in these conditions.
    pub fn update(&mut self, module_c: f64, humidity: f64, bias_v: f64, dt: f64) {
        let zone = if module_c < COLD {
            -1
        } else if module_c > HOT {
            1
        } else {
            0
        };
        if zone != self.zone {
            self.cold_seen |= zone == -1;
            self.hot_seen |= zone == 1;
            self.zone = zone;
        }
        if self.cold_seen && self.hot_seen {
            self.thermal_cycles += 1;
            self.cold_seen = false;
            self.hot_seen = false;
        }
        if module_c >= DAMP_HEAT_TEMPERATURE && humidity >= DAMP_HEAT_HUMIDITY {
            self.damp_heat_hours += dt / 3600.0;
            self.damp_seen = true;
        } else if module_c <= COLD && self.damp_seen {
            self.humidity_freeze_cycles += 1;
            self.damp_seen = false;
        }
        if bias_v.abs() >= PID_BIAS_V && module_c >= PID_TEMPERATURE {
            self.pid_bias_hours += dt / 3600.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thermal_cycle_counts_both_extremes_once() {
        let mut s = Stress::default();
        for t in [25.0, 60.0, 85.0, 25.0] {
            s.update(t, 40.0, 0.0, 1.0);
        }
        assert_eq!(s.thermal_cycles, 0, "hot alone is no cycle");
        for t in [-40.0, -41.0, 0.0, 85.0, 86.0, 84.0, 85.0] {
            s.update(t, 40.0, 0.0, 1.0);
        }
        assert_eq!(
            s.thermal_cycles, 1,
            "hot then cold: one; staying hot after it: none yet"
        );
        for t in [-30.0, 85.0] {
            s.update(t, 40.0, 0.0, 1.0);
        }
        assert_eq!(s.thermal_cycles, 1, "-30 is not cold enough");
        for _ in 0..3 {
            s.update(-40.0, 10.0, 0.0, 1.0);
            s.update(85.0, 10.0, 0.0, 1.0);
        }
        assert_eq!(s.thermal_cycles, 4);

        // tc200's shape from 25 C: up, down, up, down, back to 25: two cycles.
        let mut s = Stress::default();
        for t in [25.0, 85.0, -40.0, 85.0, -40.0, 25.0] {
            s.update(t, 40.0, 0.0, 1.0);
        }
        assert_eq!(s.thermal_cycles, 2);
    }

    #[test]
    fn damp_heat_and_humidity_freeze() {
        let mut s = Stress::default();
        s.update(85.0, 85.0, 0.0, 7200.0);
        s.update(85.0, 70.0, 0.0, 3600.0);
        s.update(70.0, 85.0, 0.0, 3600.0);
        assert!((s.damp_heat_hours - 2.0).abs() < 1e-12);
        assert_eq!(s.humidity_freeze_cycles, 0);
        s.update(-40.0, 10.0, 0.0, 1.0);
        s.update(-41.0, 10.0, 0.0, 1.0);
        assert_eq!(s.humidity_freeze_cycles, 1);
        s.update(-40.0, 10.0, 0.0, 1.0);
        assert_eq!(s.humidity_freeze_cycles, 1, "cold again without damp heat");
    }

    #[test]
    fn pid_hours_need_bias_and_heat() {
        let mut s = Stress::default();
        s.update(60.0, 85.0, -1000.0, 3600.0);
        s.update(40.0, 85.0, -1000.0, 3600.0);
        s.update(60.0, 85.0, 400.0, 3600.0);
        s.update(60.0, 85.0, 500.0, 1800.0);
        assert!((s.pid_bias_hours - 1.5).abs() < 1e-12);
    }
}
