//! The PV module under test: a single-diode model calibrated so that a new
//! module delivers exactly its rated Pmax at STC, translated to other
//! irradiances and temperatures by the datasheet coefficients, and degraded
//! by raising the series resistance and lowering the photocurrent.

use thiserror::Error;

/// Boltzmann constant over the elementary charge, V/K.
const K_OVER_Q: f64 = 8.617_333_262e-5;
const KELVIN: f64 = 273.15;
pub const STC_IRRADIANCE: f64 = 1000.0;
pub const STC_TEMPERATURE: f64 = 25.0;
/// Degradation is capped here: beyond it there is no module left to model.
pub const MAX_LOSS: f64 = 0.9;

/// The module's datasheet.
#[derive(Clone, Debug)]
pub struct ModuleSpec {
    pub rated_pmax_w: f64,
    pub voc_v: f64,
    pub isc_a: f64,
    pub cells: u32,
    pub ideality: f64,
    pub r_shunt_ohm: f64,
    /// Relative Isc change per kelvin (+0.0005 = +0.05 %/K).
    pub alpha_isc_per_k: f64,
    /// Relative Voc change per kelvin (-0.003 = -0.3 %/K).
    pub beta_voc_per_k: f64,
}

#[derive(Debug, Error, PartialEq)]
pub enum ModelError {
    #[error("{0} must be positive and finite")]
    NotPositive(&'static str),
    #[error(
        "rated Pmax {pmax} W cannot be reached with Voc {voc} V and Isc {isc} A \
         (fill factor {ff:.3}; this model reaches {lo:.3}..{hi:.3})"
    )]
    Unreachable {
        pmax: f64,
        voc: f64,
        isc: f64,
        ff: f64,
        lo: f64,
        hi: f64,
    },
}

/// Single-diode parameters for one irradiance and temperature:
/// `I = Iph - I0 (exp((V + I Rs) / a) - 1) - (V + I Rs) / Rsh`.
#[derive(Clone, Debug)]
pub struct Diode {
    iph: f64,
    i0: f64,
    rs: f64,
    rsh: f64,
    /// n Ns k T / q.
    a: f64,
}

impl Diode {
    /// Parameters with the given Isc, Voc and series resistance at STC.
    fn from_terminal(isc: f64, voc: f64, rs: f64, rsh: f64, a: f64) -> Diode {
        let iph = isc * (1.0 + rs / rsh);
        let i0 = (iph - voc / rsh) / ((voc / a).exp() - 1.0);
        Diode {
            iph,
            i0,
            rs,
            rsh,
            a,
        }
    }

    fn residual(&self, v: f64, i: f64) -> (f64, f64) {
        let vd = v + i * self.rs;
        let e = (vd / self.a).exp();
        let f = self.iph - self.i0 * (e - 1.0) - vd / self.rsh - i;
        let df = -self.i0 * self.rs / self.a * e - self.rs / self.rsh - 1.0;
        (f, df)
    }

    /// Terminal current at voltage `v`, positive while generating, negative
    /// when a supply pushes current into the module.
    pub fn current(&self, v: f64) -> f64 {
        // The residual falls with I: bracket the root, then Newton kept
        // inside the bracket (plain Newton overshoots into exp overflow).
        let (mut lo, mut hi) = (self.iph - 1.0, self.iph + 1.0);
        let mut step = 1.0;
        while self.residual(v, lo).0 <= 0.0 && step < 1e9 {
            hi = lo;
            lo -= step;
            step *= 2.0;
        }
        step = 1.0;
        while self.residual(v, hi).0 >= 0.0 && step < 1e9 {
            lo = hi;
            hi += step;
            step *= 2.0;
        }
        let mut i = 0.5 * (lo + hi);
        for _ in 0..200 {
            let (f, df) = self.residual(v, i);
            if f > 0.0 {
                lo = i;
            } else {
                hi = i;
            }
            let mut next = i - f / df;
            if !(next > lo && next < hi) {
                next = 0.5 * (lo + hi);
            }
            if (next - i).abs() < 1e-13 * (1.0 + i.abs()) {
                return next;
            }
            i = next;
        }
        i
    }

    /// The voltage at which the terminal current is `i` (negative `i`:
    /// injected current, the module as a forward-biased diode).
    pub fn voltage_at(&self, i: f64) -> f64 {
        let (mut lo, mut hi) = (-1.0, 1.0);
        while self.current(lo) < i && lo > -1e6 {
            lo *= 2.0;
        }
        while self.current(hi) > i && hi < 1e6 {
            hi *= 2.0;
        }
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if self.current(mid) > i {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }

    pub fn isc(&self) -> f64 {
        self.current(0.0)
    }

    pub fn voc(&self) -> f64 {
        if self.iph <= 0.0 {
            return 0.0;
        }
        self.voltage_at(0.0)
    }

    /// The maximum power point (V, I, P), by golden section on P(V) (unimodal on 0..Voc).
    pub fn mpp(&self) -> (f64, f64, f64) {
        let voc = self.voc();
        if voc <= 0.0 {
            return (0.0, 0.0, 0.0);
        }
        let g = (5f64.sqrt() - 1.0) / 2.0;
        let p = |v: f64| v * self.current(v);
        let (mut a, mut b) = (0.0, voc);
        let mut c = b - g * (b - a);
        let mut d = a + g * (b - a);
        let (mut pc, mut pd) = (p(c), p(d));
        for _ in 0..80 {
            if pc > pd {
                b = d;
                d = c;
                pd = pc;
                c = b - g * (b - a);
                pc = p(c);
            } else {
                a = c;
                c = d;
                pc = pd;
                d = a + g * (b - a);
                pd = p(d);
            }
        }
        let v = 0.5 * (a + b);
        let i = self.current(v);
        (v, i, v * i)
    }

    pub fn pmax(&self) -> f64 {
        self.mpp().2
    }
}

/// The module at STC, as built or after degradation, with what it takes to
/// translate it to other conditions.
#[derive(Clone, Debug)]
pub struct Module {
    spec: ModuleSpec,
    stc: Diode,
    voc_stc: f64,
    /// Pmax of the new module at STC (equals `spec.rated_pmax_w` to 1e-6).
    pmax_new: f64,
}

fn thermal_voltage(spec: &ModuleSpec, t_c: f64) -> f64 {
    spec.ideality * f64::from(spec.cells) * K_OVER_Q * (t_c + KELVIN)
}

/// The series resistance in `[lo, hi]` at which `make(rs)` delivers `target`
/// W at STC (Pmax falls as Rs grows).
fn solve_rs(lo: f64, hi: f64, target: f64, make: impl Fn(f64) -> Diode) -> f64 {
    let (mut lo, mut hi) = (lo, hi);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if make(mid).pmax() > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

impl Module {
    pub fn new(spec: ModuleSpec) -> Result<Module, ModelError> {
        for (name, v) in [
            ("rated Pmax", spec.rated_pmax_w),
            ("Voc", spec.voc_v),
            ("Isc", spec.isc_a),
            ("ideality", spec.ideality),
            ("shunt resistance", spec.r_shunt_ohm),
            ("cells", f64::from(spec.cells)),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ModelError::NotPositive(name));
            }
        }
        let a = thermal_voltage(&spec, STC_TEMPERATURE);
        let (voc, isc, rsh) = (spec.voc_v, spec.isc_a, spec.r_shunt_ohm);
        let make = |rs: f64| Diode::from_terminal(isc, voc, rs, rsh, a);
        let rs_max = voc / isc;
        let (p_hi, p_lo) = (make(0.0).pmax(), make(rs_max).pmax());
        let target = spec.rated_pmax_w;
        if !(target < p_hi && target > p_lo) {
            return Err(ModelError::Unreachable {
                pmax: target,
                voc,
                isc,
                ff: target / (voc * isc),
                lo: p_lo / (voc * isc),
                hi: p_hi / (voc * isc),
            });
        }
        let stc = make(solve_rs(0.0, rs_max, target, make));
        let pmax_new = stc.pmax();
        Ok(Module {
            voc_stc: stc.voc(),
            spec,
            stc,
            pmax_new,
        })
    }

    /// The same module after losing `loss` (0..1) of its STC Pmax: half of
    /// the loss from photocurrent (Isc), the rest from series resistance
    /// (fill factor), as aged modules show.
    pub fn degraded(&self, loss: f64) -> Module {
        let loss = loss.clamp(0.0, MAX_LOSS);
        if loss == 0.0 {
            return self.clone();
        }
        let base = Diode {
            iph: self.stc.iph * (1.0 - loss / 2.0),
            ..self.stc.clone()
        };
        let make = |rs: f64| Diode { rs, ..base.clone() };
        let rs = solve_rs(
            self.stc.rs,
            100.0 * self.spec.voc_v / self.spec.isc_a,
            self.pmax_new * (1.0 - loss),
            make,
        );
        let stc = make(rs);
        Module {
            voc_stc: stc.voc(),
            spec: self.spec.clone(),
            stc,
            pmax_new: self.pmax_new,
        }
    }

    pub fn pmax_stc(&self) -> f64 {
        self.stc.pmax()
    }

    /// The diode at `irradiance` W/m2 and `t_c` Cel: photocurrent scales with
    /// irradiance and alpha; the saturation current is set so that Voc at
    /// 1000 W/m2 follows beta exactly.
    pub fn at(&self, irradiance: f64, t_c: f64) -> Diode {
        let dt = t_c - STC_TEMPERATURE;
        let a = self.stc.a * (t_c + KELVIN) / (STC_TEMPERATURE + KELVIN);
        let iph_full = self.stc.iph * (1.0 + self.spec.alpha_isc_per_k * dt);
        let voc = (self.voc_stc * (1.0 + self.spec.beta_voc_per_k * dt)).max(1e-3);
        let i0 = ((iph_full - voc / self.stc.rsh) / ((voc / a).exp() - 1.0)).max(1e-30);
        Diode {
            iph: iph_full * (irradiance / STC_IRRADIANCE).max(0.0),
            i0,
            a,
            ..self.stc.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> ModuleSpec {
        ModuleSpec {
            rated_pmax_w: 400.0,
            voc_v: 49.0,
            isc_a: 10.4,
            cells: 72,
            ideality: 1.1,
            r_shunt_ohm: 400.0,
            alpha_isc_per_k: 0.0005,
            beta_voc_per_k: -0.003,
        }
    }

    #[test]
    fn new_module_delivers_rated_pmax_at_stc() {
        let m = Module::new(spec()).expect("model");
        let d = m.at(STC_IRRADIANCE, STC_TEMPERATURE);
        let p = d.pmax();
        assert!((p - 400.0).abs() / 400.0 < 0.005, "Pmax {p}");
        assert!((d.voc() - 49.0).abs() < 0.05, "Voc {}", d.voc());
        assert!((d.isc() - 10.4).abs() < 0.01, "Isc {}", d.isc());
        let ff = p / (d.voc() * d.isc());
        assert!((0.7..=0.85).contains(&ff), "FF {ff}");
        let (vmp, imp, _) = d.mpp();
        assert!(vmp > 0.7 * 49.0 && vmp < 49.0 && imp > 0.85 * 10.4 && imp < 10.4);
    }

    #[test]
    fn temperature_coefficients_have_their_signs() {
        let m = Module::new(spec()).expect("model");
        let (cold, hot) = (m.at(1000.0, 25.0), m.at(1000.0, 65.0));
        assert!(hot.isc() > cold.isc(), "Isc rises with temperature");
        assert!(hot.voc() < cold.voc(), "Voc falls with temperature");
        assert!(hot.pmax() < cold.pmax(), "Pmax falls with temperature");
        // beta -0.3 %/K over 40 K: Voc 12 % lower.
        let rel = hot.voc() / cold.voc() - 1.0;
        assert!((rel + 0.12).abs() < 0.002, "Voc change {rel}");
        let rel = hot.isc() / cold.isc() - 1.0;
        assert!((rel - 0.02).abs() < 0.001, "Isc change {rel}");
    }

    #[test]
    fn irradiance_scales_the_current() {
        let m = Module::new(spec()).expect("model");
        let half = m.at(500.0, 25.0);
        assert!((half.isc() / 10.4 - 0.5).abs() < 0.005);
        assert!(half.voc() < 49.0 && half.voc() > 45.0);
        assert_eq!(m.at(0.0, 25.0).voc(), 0.0);
    }

    #[test]
    fn degradation_lowers_pmax_by_the_loss() {
        let m = Module::new(spec()).expect("model");
        for loss in [0.0001, 0.02, 0.1, 0.5] {
            let d = m.degraded(loss);
            let p = d.at(STC_IRRADIANCE, STC_TEMPERATURE).pmax();
            let want = 400.0 * (1.0 - loss);
            assert!(
                (p - want).abs() / want < 0.001,
                "loss {loss}: {p} vs {want}"
            );
            assert!((d.pmax_stc() - p).abs() / p < 1e-6);
            assert!(d.at(1000.0, 25.0).isc() < 10.4);
        }
    }

    #[test]
    fn injected_current_gives_a_forward_voltage() {
        let m = Module::new(spec()).expect("model");
        let dark = m.at(0.0, 25.0);
        let v = dark.voltage_at(-9.0);
        assert!(v > 40.0 && v < 70.0, "forward voltage {v}");
        assert!((dark.current(v) + 9.0).abs() < 1e-6);
    }

    #[test]
    fn impossible_datasheets_are_refused() {
        let too_much = ModuleSpec {
            rated_pmax_w: 500.0,
            ..spec()
        };
        assert!(matches!(
            Module::new(too_much),
            Err(ModelError::Unreachable { .. })
        ));
        let zero = ModuleSpec {
            isc_a: 0.0,
            ..spec()
        };
        assert_eq!(
            Module::new(zero).err(),
            Some(ModelError::NotPositive("Isc"))
        );
    }
}
