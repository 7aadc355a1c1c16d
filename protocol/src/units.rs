//! A small unit check: units are products of named atoms with integer powers
//! (`MOhm.m2`, `Cel/h`, `W`), compared as written. There is no conversion
//! (`MOhm` and `Ohm` are different atoms): the check catches a criterion that
//! compares a resistance with a resistance-area, not a lab's choice of prefix.
//! `%` and `1` are dimensionless, so a ratio times 100 is comparable with `%`.

use crate::expr::{BinOp, Expr, Func};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unit(BTreeMap<String, i32>);

impl Unit {
    pub fn dimensionless() -> Unit {
        Unit::default()
    }

    /// `W`, `MOhm.m2`, `Cel/h`, `m2`, `s-1`, `%`, `1`.
    pub fn parse(s: &str) -> Result<Unit, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("a unit is required (`1` or `%` for none)".into());
        }
        let mut u = Unit::default();
        for (i, part) in s.split('/').enumerate() {
            if i > 1 {
                return Err(format!("`{s}`: at most one `/`"));
            }
            let sign = if i == 0 { 1 } else { -1 };
            for factor in part.split('.') {
                let atom: String = factor
                    .chars()
                    .take_while(|c| c.is_alphabetic() || *c == '%')
                    .collect();
                let rest = &factor[atom.len()..];
                if atom.is_empty() {
                    if factor == "1" {
                        continue;
                    }
                    return Err(format!("`{s}`: `{factor}` is not a unit"));
                }
                let power: i32 = if rest.is_empty() {
                    1
                } else {
                    rest.parse()
                        .map_err(|_| format!("`{s}`: `{rest}` is not a power"))?
                };
                if atom == "%" {
                    continue;
                }
                *u.0.entry(atom).or_default() += sign * power;
            }
        }
        u.0.retain(|_, p| *p != 0);
        Ok(u)
    }

    pub fn is_dimensionless(&self) -> bool {
        self.0.is_empty()
    }

    fn combine(&self, other: &Unit, sign: i32) -> Unit {
        let mut u = self.clone();
        for (a, p) in &other.0 {
            *u.0.entry(a.clone()).or_default() += sign * p;
        }
        u.0.retain(|_, p| *p != 0);
        u
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("1");
        }
        let mut first = true;
        for (a, p) in &self.0 {
            if !first {
                f.write_str(".")?;
            }
            first = false;
            if *p == 1 {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}{p}")?;
            }
        }
        Ok(())
    }
}

/// What an expression yields, statically.
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    Bool,
    /// A number; `None` when made of literals only, which take the unit of
    /// whatever they meet (`t_high - 2`, `x * 100`).
    Number(Option<Unit>),
}

/// One comparison found while typing: its text and the unit of its sides.
pub struct Compared {
    pub text: String,
    pub unit: Option<Unit>,
}

/// Types `e`, checking units; `unit_of` gives each name's unit (`None`: the
/// name is unknown, reported by the caller first).
pub fn check(
    e: &Expr,
    unit_of: &dyn Fn(&str) -> Option<Unit>,
    compared: &mut Vec<Compared>,
) -> Result<Ty, String> {
    let num = |e: &Expr, compared: &mut Vec<Compared>| match check(e, unit_of, compared)? {
        Ty::Number(u) => Ok(u),
        Ty::Bool => Err(format!("`{e}` is a condition where a number is needed")),
    };
    let same = |a: Option<Unit>, b: Option<Unit>, what: &Expr| match (a, b) {
        (Some(x), Some(y)) if x != y => Err(format!("unit mismatch in `{what}`: {x} against {y}")),
        (Some(x), _) | (None, Some(x)) => Ok(Some(x)),
        (None, None) => Ok(None),
    };
    match e {
        Expr::Num(_) => Ok(Ty::Number(None)),
        Expr::Name(n) => Ok(Ty::Number(unit_of(n))),
        Expr::Neg(a) => Ok(Ty::Number(num(a, compared)?)),
        Expr::Bin(op, a, b) => {
            let (x, y) = (num(a, compared)?, num(b, compared)?);
            Ok(Ty::Number(match op {
                BinOp::Add | BinOp::Sub => same(x, y, e)?,
                BinOp::Mul => match (x, y) {
                    (Some(x), Some(y)) => Some(x.combine(&y, 1)),
                    (x, y) => x.or(y),
                },
                BinOp::Div => match (x, y) {
                    (Some(x), Some(y)) => Some(x.combine(&y, -1)),
                    (Some(x), None) => Some(x),
                    (None, Some(y)) => Some(Unit::dimensionless().combine(&y, -1)),
                    (None, None) => None,
                },
            }))
        }
        Expr::Cmp(_, a, b) => {
            let (x, y) = (num(a, compared)?, num(b, compared)?);
            let unit = same(x, y, e)?;
            compared.push(Compared {
                text: e.to_string(),
                unit,
            });
            Ok(Ty::Bool)
        }
        Expr::And(a, b) | Expr::Or(a, b) => {
            for side in [a, b] {
                if check(side, unit_of, compared)? != Ty::Bool {
                    return Err(format!("`{side}` is a number where a condition is needed"));
                }
            }
            Ok(Ty::Bool)
        }
        Expr::Call(f, args) => {
            let mut u = None;
            for a in args {
                let x = num(a, compared)?;
                u = match f {
                    Func::Abs => x,
                    Func::Min | Func::Max => same(u, x, e)?,
                };
            }
            Ok(Ty::Number(u))
        }
    }
}

/// A duration as written in a template: `"10 min"`, `"1000 h"`, `"30 s"`,
/// `"2 d"`, or a parameter name.
#[derive(Debug, Clone, PartialEq)]
pub enum DurationSpec {
    Seconds(f64),
    Parameter(String),
}

/// Seconds per time unit, for the units a duration or a time parameter may use.
pub fn seconds_per(unit: &str) -> Option<f64> {
    match unit {
        "s" => Some(1.0),
        "min" => Some(60.0),
        "h" => Some(3600.0),
        "d" => Some(86400.0),
        _ => None,
    }
}

pub fn parse_duration(s: &str) -> Result<DurationSpec, String> {
    let s = s.trim();
    if s.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '-') {
        let (n, unit) = s
            .split_once(' ')
            .ok_or_else(|| format!("`{s}`: write a number and a unit, e.g. \"10 min\""))?;
        let n: f64 = n
            .parse()
            .map_err(|_| format!("`{s}`: `{n}` is not a number"))?;
        let per = seconds_per(unit.trim())
            .ok_or_else(|| format!("`{s}`: time unit must be s, min, h or d"))?;
        if !(n > 0.0 && n.is_finite()) {
            return Err(format!("`{s}`: a duration must be positive"));
        }
        Ok(DurationSpec::Seconds(n * per))
    } else {
        Ok(DurationSpec::Parameter(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::parse;

    fn u(s: &str) -> Unit {
        Unit::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn unit_strings() {
        assert_eq!(u("MOhm.m2").to_string(), "MOhm.m2");
        assert_eq!(u("m2.MOhm"), u("MOhm.m2"));
        assert_eq!(u("Cel/h").to_string(), "Cel.h-1");
        assert!(u("%").is_dimensionless());
        assert!(u("W/W").is_dimensionless());
        assert!(Unit::parse("").is_err());
        assert!(Unit::parse("W/m/s").is_err());
        assert!(Unit::parse("3W").is_err());
    }

    fn ty(src: &str) -> Result<Vec<Option<String>>, String> {
        let units: BTreeMap<&str, Unit> = [
            ("before.pmax", u("W")),
            ("after.pmax", u("W")),
            ("r_iso", u("MOhm")),
            ("area_m2", u("m2")),
            ("tol_pct", u("%")),
        ]
        .into_iter()
        .collect();
        let e = parse(src).map_err(|e| e.to_string())?;
        let mut c = Vec::new();
        check(&e, &|n| units.get(n).cloned(), &mut c)?;
        Ok(c.into_iter()
            .map(|c| c.unit.map(|u| u.to_string()))
            .collect())
    }

    #[test]
    fn unit_inference() {
        assert_eq!(
            ty("(before.pmax - after.pmax) / before.pmax * 100 <= 5"),
            Ok(vec![Some("1".into())])
        );
        assert_eq!(
            ty("r_iso * area_m2 >= 40"),
            Ok(vec![Some("MOhm.m2".into())])
        );
        assert_eq!(
            ty("after.pmax >= before.pmax * (1 - tol_pct / 100)"),
            Ok(vec![Some("W".into())])
        );
        assert!(ty("before.pmax - r_iso > 1").is_err_and(|e| e.contains("W against MOhm")));
        assert!(ty("r_iso * area_m2 >= r_iso").is_err_and(|e| e.contains("unit mismatch")));
        assert!(ty("max(r_iso, area_m2) > 1").is_err());
        assert!(ty("r_iso > 1 and 2").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10 min"), Ok(DurationSpec::Seconds(600.0)));
        assert_eq!(parse_duration("1000 h"), Ok(DurationSpec::Seconds(3.6e6)));
        assert_eq!(
            parse_duration("dwell"),
            Ok(DurationSpec::Parameter("dwell".into()))
        );
        assert!(parse_duration("0 s").is_err());
        assert!(parse_duration("-5 min").is_err());
        assert!(parse_duration("10 weeks").is_err());
        assert!(parse_duration("10min").is_err());
    }
}
