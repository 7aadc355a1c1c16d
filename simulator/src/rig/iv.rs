//! IV sweeps as the SMU runs them, numbers as the 2450 prints them, and the
//! figures of a curve (what the agent computes at the edge, used here to
//! check the simulator against itself).

use super::module_model::Diode;

/// Most points one sweep may have.
pub const MAX_POINTS: usize = 10_000;

/// `%.6E` as C prints it: `-1.040000E+01`.
pub fn format_e(x: f64) -> String {
    let s = format!("{x:.6E}");
    match s.split_once('E') {
        Some((mantissa, exp)) => {
            let e: i32 = exp.parse().unwrap_or(0);
            let sign = if e < 0 { '-' } else { '+' };
            format!("{mantissa}E{sign}{:02}", e.abs())
        }
        None => s,
    }
}

/// The sweep's source voltages: `points` evenly from `start` to `stop`.
pub fn voltages(start: f64, stop: f64, points: usize) -> Vec<f64> {
    match points {
        0 => Vec::new(),
        1 => vec![start],
        n => (0..n)
            .map(|k| start + (stop - start) * k as f64 / (n - 1) as f64)
            .collect(),
    }
}

/// One reading per source voltage, with the 2450's sign: current into the
/// instrument's HI terminal, so negative while the module generates. An open
/// module (`None`) carries no current. `noise` draws a measurement error for
/// a current.
pub fn sweep(
    diode: Option<&Diode>,
    volts: &[f64],
    noise: &mut dyn FnMut(f64) -> f64,
) -> Vec<(f64, f64)> {
    volts
        .iter()
        .map(|&v| {
            let i = diode.map_or(0.0, |d| -d.current(v));
            (v, i + noise(i))
        })
        .collect()
}

/// Isc, Voc, Pmax of a curve in the generating convention (current positive
/// while generating): Isc and Voc interpolated at V = 0 and I = 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    pub isc: f64,
    pub voc: f64,
    pub pmax: f64,
}

pub fn figures(points: &[(f64, f64)]) -> Option<Figures> {
    let interpolate = |x0: f64, y0: f64, x1: f64, y1: f64, x: f64| {
        if x1 == x0 {
            y0
        } else {
            y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        }
    };
    let mut isc = None;
    let mut voc = None;
    for w in points.windows(2) {
        let ((v0, i0), (v1, i1)) = (w[0], w[1]);
        if isc.is_none() && v0 <= 0.0 && v1 >= 0.0 {
            isc = Some(interpolate(v0, i0, v1, i1, 0.0));
        }
        if voc.is_none() && i0 >= 0.0 && i1 <= 0.0 {
            voc = Some(interpolate(i0, v0, i1, v1, 0.0));
        }
    }
    let pmax = points.iter().map(|(v, i)| v * i).fold(f64::MIN, f64::max);
    Some(Figures {
        isc: isc?,
        voc: voc?,
        pmax,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rig::module_model::{Module, ModuleSpec};

    #[test]
    fn numbers_print_like_the_2450() {
        assert_eq!(format_e(-10.4), "-1.040000E+01");
        assert_eq!(format_e(0.0), "0.000000E+00");
        assert_eq!(format_e(1.25e-6), "1.250000E-06");
        assert_eq!(format_e(49.0), "4.900000E+01");
        assert_eq!(format_e(1e100), "1.000000E+100");
    }

    #[test]
    fn a_swept_curve_gives_the_model_s_figures() {
        let m = Module::new(ModuleSpec {
            rated_pmax_w: 400.0,
            voc_v: 49.0,
            isc_a: 10.4,
            cells: 72,
            ideality: 1.1,
            r_shunt_ohm: 400.0,
            alpha_isc_per_k: 0.0005,
            beta_voc_per_k: -0.003,
        })
        .expect("model");
        let d = m.at(1000.0, 25.0);
        let curve = sweep(Some(&d), &voltages(-0.5, 60.0, 200), &mut |_| 0.0);
        assert_eq!(curve.len(), 200);
        assert!(curve[0].1 < 0.0, "generating reads negative");
        let gen_: Vec<(f64, f64)> = curve.iter().map(|(v, i)| (*v, -i)).collect();
        let f = figures(&gen_).expect("figures");
        assert!((f.isc - 10.4).abs() < 0.01, "{f:?}");
        assert!((f.voc - 49.0).abs() < 0.05, "{f:?}");
        assert!((f.pmax - 400.0).abs() / 400.0 < 0.005, "{f:?}");
        let open = sweep(None, &voltages(0.0, 50.0, 3), &mut |_| 0.0);
        assert!(open.iter().all(|(_, i)| *i == 0.0));
    }
}
