//! IV curves from a source-measure unit: the reply parsed, the current's
//! sign put the way PV people read it (positive while the module delivers
//! power), and the figures of merit computed. Pure functions, so each is
//! tested alone.

/// Why a sweep's reply is not a curve.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IvError {
    #[error("sweep reply is empty")]
    Empty,
    #[error("sweep reply has {0} numbers; expected voltage,current pairs")]
    Odd(usize),
    #[error("sweep reply field {index} is not a finite number: {text:?}")]
    NotANumber { index: usize, text: String },
    #[error("sweep has {0} points; at least 2 are needed")]
    TooFew(usize),
    #[error("sweep has {got} points; {asked} were asked for")]
    WrongCount { got: usize, asked: usize },
}

/// Parses `v1,i1,v2,i2,...` into (voltage, current) points as measured.
pub fn parse_reply(reply: &str, expected_points: usize) -> Result<Vec<(f64, f64)>, IvError> {
    let reply = reply.trim();
    if reply.is_empty() {
        return Err(IvError::Empty);
    }
    let nums = reply
        .split(',')
        .enumerate()
        .map(|(index, t)| match t.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(IvError::NotANumber {
                index,
                text: t.chars().take(40).collect(),
            }),
        })
        .collect::<Result<Vec<f64>, IvError>>()?;
    if nums.len() % 2 != 0 {
        return Err(IvError::Odd(nums.len()));
    }
    let pts: Vec<(f64, f64)> = nums.chunks(2).map(|c| (c[0], c[1])).collect();
    if pts.len() < 2 {
        return Err(IvError::TooFew(pts.len()));
    }
    if pts.len() != expected_points {
        return Err(IvError::WrongCount {
            got: pts.len(),
            asked: expected_points,
        });
    }
    Ok(pts)
}

/// The SMU measures current into its terminal: negative while the module
/// delivers power. When the current at the lowest voltage is negative the
/// whole curve is flipped, so Isc comes out positive.
pub fn orient(mut pts: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    if pts.first().is_some_and(|p| p.1 < 0.0) {
        for p in &mut pts {
            p.1 = -p.1;
        }
    }
    pts
}

/// The figures of an IV curve (current positive while delivering power).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IvFigures {
    pub isc: f64,
    pub voc: f64,
    pub imp: f64,
    pub vmp: f64,
    pub pmax: f64,
    /// Fill factor, %.
    pub ff: f64,
}

impl IvFigures {
    /// In the order and with the names of `qi_protocol::IV_METRICS`.
    pub fn named(&self) -> [(&'static str, f64); 6] {
        [
            ("isc", self.isc),
            ("voc", self.voc),
            ("imp", self.imp),
            ("vmp", self.vmp),
            ("pmax", self.pmax),
            ("ff", self.ff),
        ]
    }
}

/// Linear interpolation of `y` where `x` crosses `at`, over consecutive points.
fn crossing(
    pts: &[(f64, f64)],
    x: impl Fn(&(f64, f64)) -> f64,
    y: impl Fn(&(f64, f64)) -> f64,
    at: f64,
) -> Option<f64> {
    pts.windows(2).find_map(|w| {
        let (x0, x1) = (x(&w[0]) - at, x(&w[1]) - at);
        if x0 == 0.0 {
            return Some(y(&w[0]));
        }
        if x0.signum() != x1.signum() || x1 == 0.0 {
            let t = x0 / (x0 - x1);
            return Some(y(&w[0]) + t * (y(&w[1]) - y(&w[0])));
        }
        None
    })
}

/// Isc at V = 0 and Voc at I = 0 (interpolated), Pmax at the best measured
/// point; None when the curve does not cross both axes (a sweep that does
/// not start below 0 V or end beyond Voc).
pub fn figures(pts: &[(f64, f64)]) -> Option<IvFigures> {
    let isc = crossing(pts, |p| p.0, |p| p.1, 0.0)?;
    let voc = crossing(pts, |p| p.1, |p| p.0, 0.0)?;
    let (vmp, imp) = pts
        .iter()
        .filter(|p| p.0 >= 0.0 && p.1 >= 0.0)
        .copied()
        .max_by(|a, b| (a.0 * a.1).total_cmp(&(b.0 * b.1)))?;
    let pmax = vmp * imp;
    if !(isc > 0.0 && voc > 0.0 && pmax > 0.0) {
        return None;
    }
    Some(IvFigures {
        isc,
        voc,
        imp,
        vmp,
        pmax,
        ff: pmax / (isc * voc) * 100.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ideal-ish module: I = 10 A until 30 V, then falling linearly to 0 at 40 V.
    fn module(points: usize) -> Vec<(f64, f64)> {
        (0..points)
            .map(|k| {
                let v = -1.0 + 42.0 * k as f64 / (points - 1) as f64;
                let i = if v <= 30.0 {
                    10.0
                } else {
                    10.0 * (40.0 - v) / 10.0
                };
                (v, -i) // as the SMU measures: negative while delivering
            })
            .collect()
    }

    fn reply(pts: &[(f64, f64)]) -> String {
        pts.iter()
            .map(|(v, i)| format!("{v:.6E},{i:.6E}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn a_curve_round_trips_through_the_reply_and_gives_its_figures() {
        let pts = parse_reply(&reply(&module(421)), 421).expect("parses");
        let f = figures(&orient(pts)).expect("figures");
        assert!((f.isc - 10.0).abs() < 1e-6, "{f:?}");
        assert!((f.voc - 40.0).abs() < 1e-6, "{f:?}");
        assert!(
            (f.vmp - 30.0).abs() < 0.11 && (f.pmax - 300.0).abs() < 1.0,
            "{f:?}"
        );
        assert!((f.ff - 75.0).abs() < 0.5, "{f:?}");
        assert_eq!(f.named()[4], ("pmax", f.pmax));
    }

    #[test]
    fn the_sign_is_flipped_only_when_the_curve_starts_negative() {
        let measured = vec![(0.5, 3.0), (-0.5, 3.1)];
        assert_eq!(orient(measured), vec![(-0.5, 3.1), (0.5, 3.0)]);
        assert_eq!(
            orient(vec![(-1.0, -2.0), (1.0, -1.0)]),
            vec![(-1.0, 2.0), (1.0, 1.0)]
        );
    }

    #[test]
    fn garbage_is_a_clear_error() {
        assert_eq!(parse_reply("", 2), Err(IvError::Empty));
        assert_eq!(parse_reply("1,2,3", 2), Err(IvError::Odd(3)));
        assert!(matches!(
            parse_reply("1,2,x,4", 2),
            Err(IvError::NotANumber { index: 2, .. })
        ));
        assert!(matches!(
            parse_reply("1,NaN,2,3", 2),
            Err(IvError::NotANumber { index: 1, .. })
        ));
        assert_eq!(parse_reply("1,2", 1), Err(IvError::TooFew(1)));
        assert_eq!(
            parse_reply("1,2,3,4,5,6", 2),
            Err(IvError::WrongCount { got: 3, asked: 2 })
        );
        // A sweep that never reaches Voc has no figures, not wrong ones.
        assert_eq!(figures(&[(-1.0, 5.0), (0.0, 5.0), (10.0, 4.0)]), None);
    }
}
