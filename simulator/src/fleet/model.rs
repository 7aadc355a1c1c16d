//! What a fleet device says: four device types with plausible values, each
//! device in an OK / WARN / ALERT state (85 / 12 / 3 % of the fleet at any
//! time) that shows in its values, not only in its `state` reading.
//!
//! Values come from a hash of (device, time), not from stored state, so a
//! device costs no memory here and two runs with the same seed agree.

/// The device types of the SRE seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceType {
    Turbine,
    ThermalEngine,
    Rotor,
    Meter,
}

pub const ALL_TYPES: [DeviceType; 4] = [
    DeviceType::Turbine,
    DeviceType::ThermalEngine,
    DeviceType::Rotor,
    DeviceType::Meter,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ok = 0,
    Warn = 1,
    Alert = 2,
}

/// A state lasts this long before the device draws again, so states are
/// episodes (as in a plant), not noise from one message to the next.
const EPISODE_S: u64 = 60;

impl DeviceType {
    pub fn name(self) -> &'static str {
        match self {
            DeviceType::Turbine => "turbine",
            DeviceType::ThermalEngine => "thermal-engine",
            DeviceType::Rotor => "rotor",
            DeviceType::Meter => "meter",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceType> {
        ALL_TYPES.into_iter().find(|t| t.name() == s)
    }

    /// (metric, unit, value) for one message; `x` in [0, 1) varies per device
    /// and per second, `severity` 0 / 1 / 2 pushes the telling metric out of
    /// its normal band.
    fn metrics(self, x: f64, severity: f64, t_s: f64) -> [(&'static str, &'static str, f64); 3] {
        match self {
            // A 2.5 MW wind turbine: power follows wind; the nacelle warms when something is wrong.
            DeviceType::Turbine => {
                let wind = 4.0 + 12.0 * x;
                [
                    ("wind_speed", "m/s", wind),
                    ("power", "kW", (wind / 16.0).powi(3).min(1.0) * 2500.0),
                    ("nacelle_temp", "Cel", 45.0 + 5.0 * x + 15.0 * severity),
                ]
            }
            // A gas engine / genset: exhaust temperature is the telling value.
            DeviceType::ThermalEngine => [
                ("power", "kW", 800.0 + 400.0 * x),
                ("exhaust_temp", "Cel", 470.0 + 20.0 * x + 40.0 * severity),
                ("oil_pressure", "bar", 5.0 + 0.5 * x - 1.2 * severity),
            ],
            // A motor-driven pump or fan: vibration in ISO 10816 zones (A/B ok, C warn, D alert).
            DeviceType::Rotor => [
                ("speed", "rpm", 1480.0 + 10.0 * x),
                ("vibration", "mm/s", 1.5 + 2.0 * x + 2.8 * severity),
                ("bearing_temp", "Cel", 55.0 + 5.0 * x + 12.0 * severity),
            ],
            // A three-phase energy meter: energy only grows.
            DeviceType::Meter => [
                ("voltage", "V", 230.0 + 4.0 * (x - 0.5) - 12.0 * severity),
                ("current", "A", 40.0 + 20.0 * x),
                ("energy", "kWh", 1.0e5 + t_s * 0.012),
            ],
        }
    }
}

/// SplitMix64: a good 64-bit mix, enough to draw per (device, time).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The state of `device` at Unix second `t_s`: 85 % OK, 12 % WARN, 3 % ALERT.
pub fn state(seed: u64, device: u32, t_s: u64) -> State {
    let r = mix(seed ^ (u64::from(device) << 32) ^ (t_s / EPISODE_S)) % 100;
    match r {
        0..85 => State::Ok,
        85..97 => State::Warn,
        _ => State::Alert,
    }
}

/// Appends one telemetry payload (a JSON array the agent's MQTT ingestion
/// accepts: metric, value, unit, ts in Unix ms) to `out`.
pub fn payload(out: &mut Vec<u8>, seed: u64, device: u32, ty: DeviceType, ts_ms: u64) {
    use std::io::Write;
    let t_s = ts_ms / 1000;
    let st = state(seed, device, t_s);
    let x = unit(mix(seed ^ u64::from(device).rotate_left(17) ^ t_s));
    let [a, b, c] = ty.metrics(x, st as u8 as f64, t_s as f64);
    out.push(b'[');
    for (metric, unit, value) in [a, b, c] {
        let _ = write!(
            out,
            r#"{{"metric":"{metric}","value":{value:.3},"unit":"{unit}","ts":{ts_ms}}},"#
        );
    }
    let _ = write!(
        out,
        r#"{{"metric":"state","value":{},"ts":{ts_ms}}}]"#,
        st as u8
    );
}

/// Readings in every message (three metrics and the state).
pub const READINGS_PER_MESSAGE: u64 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_come_in_the_seed_proportions() {
        let mut n = [0u32; 3];
        for d in 0..100_000 {
            n[state(7, d, 1_800_000_000) as usize] += 1;
        }
        let pct = |i: usize| f64::from(n[i]) / 1000.0;
        assert!((84.0..86.0).contains(&pct(0)), "{n:?}");
        assert!((11.0..13.0).contains(&pct(1)), "{n:?}");
        assert!((2.5..3.5).contains(&pct(2)), "{n:?}");
    }

    #[test]
    fn payloads_are_json_arrays_of_readings() {
        for ty in ALL_TYPES {
            let mut out = Vec::new();
            payload(&mut out, 1, 42, ty, 1_800_000_000_123);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let a = v.as_array().unwrap();
            assert_eq!(a.len() as u64, READINGS_PER_MESSAGE);
            assert!(a.iter().all(|r| r["ts"] == 1_800_000_000_123u64));
            assert!(a.iter().all(|r| r["value"].is_number()));
        }
    }

    #[test]
    fn an_alert_shows_in_the_values() {
        let ok = DeviceType::Rotor.metrics(0.5, 0.0, 0.0)[1].2;
        let alert = DeviceType::Rotor.metrics(0.5, 2.0, 0.0)[1].2;
        assert!(ok < 4.5 && alert > 7.1, "{ok} {alert}");
    }
}
