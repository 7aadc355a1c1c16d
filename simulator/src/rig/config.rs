//! The rig's flags: listeners, time scale, the module's datasheet, how fast
//! it degrades under each stress, and its insulation.

use super::module_model::ModuleSpec;
use clap::Args;
use std::net::SocketAddr;

#[derive(Args, Debug, Clone)]
pub struct RigConfig {
    /// Modbus TCP listener: unit 1 chamber, 2 daq, 3 supply, 4 bias, 5 hipot (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:5021")]
    pub modbus: SocketAddr,
    /// SCPI raw-socket listener of the SMU (Keithley 2450, like its LXI port 5025).
    #[arg(long, default_value = "127.0.0.1:5025")]
    pub scpi: SocketAddr,
    /// Line-based control port: `state`, `silence <device>`, `answer <device>`.
    #[arg(long, default_value = "127.0.0.1:5030")]
    pub control: SocketAddr,
    /// Simulated time runs this many times faster than wall time (lags, ramps, stress hours).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,

    /// Chamber air and module temperature, chamber setpoint at start (Cel).
    #[arg(long, default_value_t = 25.0)]
    pub ambient: f64,
    /// Time constant of the chamber air's first-order lag to its setpoint (s).
    #[arg(long, default_value_t = 300.0)]
    pub chamber_tau_s: f64,
    /// Fastest the chamber air changes (Cel/min), whatever the setpoint.
    #[arg(long, default_value_t = 3.0)]
    pub chamber_max_ramp_per_min: f64,
    /// Time constant of the module's lag to the chamber air (s).
    #[arg(long, default_value_t = 400.0)]
    pub module_tau_s: f64,
    /// Module heating per ampere injected by the supply (Cel/A).
    #[arg(long, default_value_t = 0.3)]
    pub joule_heating_per_a: f64,
    /// The light source's irradiance on the module and the reference cell (W/m2).
    #[arg(long, default_value_t = 1000.0)]
    pub irradiance: f64,

    /// The module's rated Pmax at STC (W); the model is calibrated to it.
    #[arg(long, default_value_t = 400.0)]
    pub rated_pmax_w: f64,
    /// Open-circuit voltage at STC (V).
    #[arg(long, default_value_t = 49.0)]
    pub voc_v: f64,
    /// Short-circuit current at STC (A).
    #[arg(long, default_value_t = 10.4)]
    pub isc_a: f64,
    /// Cells in series.
    #[arg(long, default_value_t = 72)]
    pub cells: u32,

    /// Pmax loss per counted thermal cycle (% of the new module's Pmax).
    #[arg(long, default_value_t = 0.005)]
    pub degradation_per_thermal_cycle_pct: f64,
    /// Pmax loss per 1000 h of damp heat (module >= 80 Cel, humidity >= 80 %).
    #[arg(long = "degradation-per-1000h-damp-heat-pct", default_value_t = 2.0)]
    pub degradation_per_1000h_damp_heat_pct: f64,
    /// Pmax loss per counted humidity-freeze cycle (%).
    #[arg(long, default_value_t = 0.1)]
    pub degradation_per_humidity_freeze_cycle_pct: f64,
    /// Pmax loss per 100 h under PID bias (|bias| >= 500 V, module >= 55 Cel) (%).
    #[arg(long = "degradation-per-100h-pid-pct", default_value_t = 1.0)]
    pub degradation_per_100h_pid_pct: f64,

    /// Dry insulation resistance of the module (MOhm).
    #[arg(long, default_value_t = 2000.0)]
    pub r_iso_mohm: f64,
    /// Wet insulation resistance (MOhm): applies in proportion as humidity goes from 40 % to 85 %.
    #[arg(long, default_value_t = 800.0)]
    pub wet_r_iso_mohm: f64,
    /// The insulation breaks down above this test voltage (V); default: never.
    #[arg(long)]
    pub breakdown_above_v: Option<f64>,
    /// The module's circuit opens after this many counted thermal cycles; default: never.
    #[arg(long)]
    pub open_circuit_after_cycles: Option<u32>,
}

impl RigConfig {
    /// The module's datasheet; the diode's ideality, shunt resistance and
    /// temperature coefficients are those of a typical mono c-Si module.
    pub fn module_spec(&self) -> ModuleSpec {
        ModuleSpec {
            rated_pmax_w: self.rated_pmax_w,
            voc_v: self.voc_v,
            isc_a: self.isc_a,
            cells: self.cells,
            ideality: 1.1,
            r_shunt_ohm: 400.0,
            alpha_isc_per_k: 0.0005,
            beta_voc_per_k: -0.003,
        }
    }

    /// Refuses values the physics cannot run with.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("--time-scale", self.time_scale),
            ("--chamber-tau-s", self.chamber_tau_s),
            ("--chamber-max-ramp-per-min", self.chamber_max_ramp_per_min),
            ("--module-tau-s", self.module_tau_s),
            ("--r-iso-mohm", self.r_iso_mohm),
            ("--wet-r-iso-mohm", self.wet_r_iso_mohm),
        ];
        for (flag, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{flag} must be a positive number, not {v}"));
            }
        }
        let non_negative = [
            ("--irradiance", self.irradiance),
            ("--joule-heating-per-a", self.joule_heating_per_a),
            (
                "--degradation-per-thermal-cycle-pct",
                self.degradation_per_thermal_cycle_pct,
            ),
            (
                "--degradation-per-1000h-damp-heat-pct",
                self.degradation_per_1000h_damp_heat_pct,
            ),
            (
                "--degradation-per-humidity-freeze-cycle-pct",
                self.degradation_per_humidity_freeze_cycle_pct,
            ),
            (
                "--degradation-per-100h-pid-pct",
                self.degradation_per_100h_pid_pct,
            ),
        ];
        for (flag, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{flag} must be a number >= 0, not {v}"));
            }
        }
        if !self.ambient.is_finite() {
            return Err("--ambient must be a number".into());
        }
        if let Some(v) = self.breakdown_above_v
            && !(v.is_finite() && v > 0.0)
        {
            return Err(format!("--breakdown-above-v must be positive, not {v}"));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) fn defaults() -> RigConfig {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        rig: RigConfig,
    }
    Cli::parse_from(["pv-rig-sim"]).rig
}
