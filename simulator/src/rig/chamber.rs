//! The climatic chamber's air: a first-order lag to the setpoint whose rate
//! is capped by the compressor's and heater's ramp limit, and humidity that
//! is only controlled in the band where the humidifier works.

/// Humidity is controlled only while the air is in this band (Cel); outside
/// it the humidifier is off and the air dries toward `DRY_HUMIDITY`.
pub const HUMIDITY_BAND: (f64, f64) = (10.0, 95.0);
pub const DRY_HUMIDITY: f64 = 10.0;
/// Fastest change of relative humidity (%/min).
pub const HUMIDITY_MAX_RAMP_PER_MIN: f64 = 10.0;

#[derive(Clone, Debug)]
pub struct Chamber {
    pub temperature: f64,
    pub temperature_setpoint: f64,
    pub humidity: f64,
    pub humidity_setpoint: f64,
    pub tau_s: f64,
    pub max_ramp_per_min: f64,
}

/// One step of a rate-limited first-order lag: the exact exponential step,
/// clipped to what the ramp limit allows in `dt`.
pub fn lag(value: f64, target: f64, tau_s: f64, max_rate_per_s: f64, dt: f64) -> f64 {
    let step = (target - value) * (1.0 - (-dt / tau_s).exp());
    let limit = max_rate_per_s * dt;
    value + step.clamp(-limit, limit)
}

impl Chamber {
    pub fn new(ambient: f64, tau_s: f64, max_ramp_per_min: f64) -> Chamber {
        Chamber {
            temperature: ambient,
            temperature_setpoint: ambient,
            humidity: 40.0,
            humidity_setpoint: 40.0,
            tau_s,
            max_ramp_per_min,
        }
    }

    pub fn step(&mut self, dt: f64) {
        self.temperature = lag(
            self.temperature,
            self.temperature_setpoint,
            self.tau_s,
            self.max_ramp_per_min / 60.0,
            dt,
        );
        let (lo, hi) = HUMIDITY_BAND;
        let target = if (lo..=hi).contains(&self.temperature) {
            self.humidity_setpoint
        } else {
            DRY_HUMIDITY
        };
        self.humidity = lag(
            self.humidity,
            target,
            self.tau_s,
            HUMIDITY_MAX_RAMP_PER_MIN / 60.0,
            dt,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ramp_limit_caps_a_big_step_and_the_lag_ends_it() {
        let mut c = Chamber::new(25.0, 300.0, 3.0);
        c.temperature_setpoint = 85.0;
        let mut prev = c.temperature;
        for _ in 0..600 {
            c.step(1.0);
            let rate = (c.temperature - prev) * 60.0;
            assert!(rate <= 3.0 + 1e-9, "ramp {rate} Cel/min");
            assert!(c.temperature <= 85.0);
            prev = c.temperature;
        }
        // Far from the setpoint the ramp limit is what moves it: 10 min at 3 Cel/min.
        assert!((c.temperature - 55.0).abs() < 1e-6, "{}", c.temperature);
        for _ in 0..20_000 {
            c.step(1.0);
        }
        assert!((c.temperature - 85.0).abs() < 0.01);
        // Near the setpoint the lag is slower than the ramp: exponential approach.
        c.temperature_setpoint = 84.0;
        c.step(1.0);
        let moved = 85.0 - c.temperature;
        assert!((moved - (1.0 - (-1.0f64 / 300.0).exp())).abs() < 1e-9);
    }

    #[test]
    fn humidity_is_controlled_only_inside_its_band() {
        let mut c = Chamber::new(25.0, 300.0, 3.0);
        c.humidity_setpoint = 85.0;
        for _ in 0..5000 {
            c.step(1.0);
        }
        assert!((c.humidity - 85.0).abs() < 0.1, "{}", c.humidity);
        c.temperature_setpoint = -40.0;
        for _ in 0..20_000 {
            c.step(1.0);
        }
        assert!((c.humidity - DRY_HUMIDITY).abs() < 0.1, "{}", c.humidity);
    }
}
