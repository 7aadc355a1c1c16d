//! Evaluation, and the explanation a lab reads next to a verdict.

use super::{BinOp, CmpOp, Expr, Func};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Number(f64),
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("`{0}` has no value (nothing recorded, no parameter of that name)")]
    Unknown(String),
    #[error("division by zero in `{0}`")]
    DivisionByZero(String),
    /// Infinite or NaN: a recorded value out of range, never a verdict.
    #[error("`{0}` is not a finite number")]
    NonFinite(String),
    #[error("`{expr}` {message}")]
    Type { expr: String, message: String },
}

fn number(e: &Expr, values: &BTreeMap<String, f64>) -> Result<f64, EvalError> {
    match evaluate(e, values)? {
        Value::Number(n) => Ok(n),
        Value::Bool(_) => Err(EvalError::Type {
            expr: e.to_string(),
            message: "is a condition where a number is needed".into(),
        }),
    }
}

fn boolean(e: &Expr, values: &BTreeMap<String, f64>) -> Result<bool, EvalError> {
    match evaluate(e, values)? {
        Value::Bool(b) => Ok(b),
        Value::Number(_) => Err(EvalError::Type {
            expr: e.to_string(),
            message: "is a number where a condition is needed".into(),
        }),
    }
}

fn finite(e: &Expr, n: f64) -> Result<Value, EvalError> {
    if n.is_finite() {
        Ok(Value::Number(n))
    } else {
        Err(EvalError::NonFinite(e.to_string()))
    }
}

/// Evaluates `expr` over named values. Both sides of `and` / `or` are always
/// evaluated, so a criterion whose inputs are missing is refused, never
/// passed by a short cut.
pub fn evaluate(expr: &Expr, values: &BTreeMap<String, f64>) -> Result<Value, EvalError> {
    match expr {
        Expr::Num(n) => finite(expr, *n),
        Expr::Name(n) => match values.get(n) {
            Some(v) => finite(expr, *v),
            None => Err(EvalError::Unknown(n.clone())),
        },
        Expr::Neg(a) => finite(expr, -number(a, values)?),
        Expr::Bin(op, a, b) => {
            let (x, y) = (number(a, values)?, number(b, values)?);
            let r = match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => {
                    if y == 0.0 {
                        return Err(EvalError::DivisionByZero(expr.to_string()));
                    }
                    x / y
                }
            };
            finite(expr, r)
        }
        Expr::Cmp(op, a, b) => {
            let (x, y) = (number(a, values)?, number(b, values)?);
            Ok(Value::Bool(compare(*op, x, y)))
        }
        Expr::And(a, b) => {
            let (x, y) = (boolean(a, values)?, boolean(b, values)?);
            Ok(Value::Bool(x && y))
        }
        Expr::Or(a, b) => {
            let (x, y) = (boolean(a, values)?, boolean(b, values)?);
            Ok(Value::Bool(x || y))
        }
        Expr::Call(f, args) => {
            let xs = args
                .iter()
                .map(|a| number(a, values))
                .collect::<Result<Vec<_>, _>>()?;
            let r = match f {
                Func::Abs => xs[0].abs(),
                Func::Min => xs.iter().copied().fold(f64::INFINITY, f64::min),
                Func::Max => xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            };
            finite(expr, r)
        }
    }
}

fn compare(op: CmpOp, x: f64, y: f64) -> bool {
    match op {
        CmpOp::Le => x <= y,
        CmpOp::Lt => x < y,
        CmpOp::Ge => x >= y,
        CmpOp::Gt => x > y,
        CmpOp::Eq => x == y,
    }
}

/// One comparison of a criterion: the computed left side against its limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub computed: String,
    pub value: f64,
    pub op: CmpOp,
    pub limit_expr: String,
    pub limit: f64,
    pub holds: bool,
}

/// Why a condition came out as it did: the inputs it read, each comparison
/// with its computed value and limit, and the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub inputs: Vec<(String, f64)>,
    pub checks: Vec<Check>,
    pub verdict: bool,
}

/// Evaluates a condition (it must be one) and explains it.
pub fn explain(expr: &Expr, values: &BTreeMap<String, f64>) -> Result<Explanation, EvalError> {
    let verdict = boolean(expr, values)?;
    let inputs = expr
        .names()
        .into_iter()
        .map(|n| {
            values
                .get(n)
                .map(|v| (n.to_string(), *v))
                .ok_or_else(|| EvalError::Unknown(n.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut checks = Vec::new();
    collect_checks(expr, values, &mut checks)?;
    Ok(Explanation {
        inputs,
        checks,
        verdict,
    })
}

fn collect_checks(
    e: &Expr,
    values: &BTreeMap<String, f64>,
    out: &mut Vec<Check>,
) -> Result<(), EvalError> {
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => {
            collect_checks(a, values, out)?;
            collect_checks(b, values, out)
        }
        Expr::Cmp(op, a, b) => {
            let (value, limit) = (number(a, values)?, number(b, values)?);
            out.push(Check {
                computed: a.to_string(),
                value,
                op: *op,
                limit_expr: b.to_string(),
                limit,
                holds: compare(*op, value, limit),
            });
            Ok(())
        }
        _ => Ok(()),
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.verdict { "PASS" } else { "FAIL" })?;
        for c in &self.checks {
            write!(
                f,
                "; {} = {} {} {}",
                c.computed,
                round(c.value),
                c.op,
                round(c.limit)
            )?;
            if c.limit_expr != format!("{}", c.limit) {
                write!(f, " (= {})", c.limit_expr)?;
            }
            f.write_str(if c.holds { " holds" } else { " does not hold" })?;
        }
        f.write_str("; inputs: ")?;
        for (i, (n, v)) in self.inputs.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}={v}")?;
        }
        Ok(())
    }
}

/// Six significant digits: enough to read a verdict, without float noise.
fn round(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::parse;

    fn vals(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn eval(src: &str, v: &BTreeMap<String, f64>) -> Result<Value, EvalError> {
        let e = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        evaluate(&e, v)
    }

    #[test]
    fn arithmetic_comparisons_and_functions() {
        let v = vals(&[("a", 2.0), ("b", 3.0), ("x.y", -4.0)]);
        for (src, want) in [
            ("1 + 2 * 3", Value::Number(7.0)),
            ("(1 + 2) * 3", Value::Number(9.0)),
            ("10 - 4 - 3", Value::Number(3.0)),
            ("12 / 3 / 2", Value::Number(2.0)),
            ("-a * b", Value::Number(-6.0)),
            ("abs(x.y)", Value::Number(4.0)),
            ("min(a, b, x.y)", Value::Number(-4.0)),
            ("max(a, b) + 1", Value::Number(4.0)),
            ("a < b", Value::Bool(true)),
            ("a >= b", Value::Bool(false)),
            ("a == 2", Value::Bool(true)),
            ("a > 5 or b > 2 and a < 3", Value::Bool(true)),
            ("(a > 5 or b > 2) and a > 3", Value::Bool(false)),
        ] {
            assert_eq!(eval(src, &v), Ok(want), "{src}");
        }
    }

    #[test]
    fn refusals() {
        let v = vals(&[("a", 2.0), ("zero", 0.0), ("big", 1e308), ("nan", f64::NAN)]);
        assert_eq!(eval("a + b", &v), Err(EvalError::Unknown("b".into())));
        // Both sides are evaluated: `or` does not hide a missing input.
        assert_eq!(
            eval("a > 1 or b > 1", &v),
            Err(EvalError::Unknown("b".into()))
        );
        assert_eq!(
            eval("a / zero > 1", &v),
            Err(EvalError::DivisionByZero("a / zero".into()))
        );
        assert_eq!(
            eval("big * 10 > 1", &v),
            Err(EvalError::NonFinite("big * 10".into()))
        );
        assert_eq!(eval("nan > 1", &v), Err(EvalError::NonFinite("nan".into())));
        assert!(matches!(
            eval("(a > 1) + 1", &v),
            Err(EvalError::Type { .. })
        ));
        assert!(matches!(
            eval("a and a > 1", &v),
            Err(EvalError::Type { .. })
        ));
    }

    #[test]
    fn explanation_lists_inputs_computed_value_limit_and_verdict() {
        let e = parse("(before.pmax - after.pmax) / before.pmax * 100 <= max_loss_pct")
            .unwrap_or_else(|e| panic!("{e}"));
        let v = vals(&[
            ("before.pmax", 400.0),
            ("after.pmax", 388.0),
            ("max_loss_pct", 5.0),
        ]);
        let x = explain(&e, &v).unwrap_or_else(|e| panic!("{e}"));
        assert!(x.verdict);
        assert_eq!(x.checks.len(), 1);
        assert!((x.checks[0].value - 3.0).abs() < 1e-9);
        assert_eq!(x.checks[0].limit, 5.0);
        assert_eq!(
            x.to_string(),
            "PASS; (before.pmax - after.pmax) / before.pmax * 100 = 3 <= 5 (= max_loss_pct) holds; \
             inputs: before.pmax=400, after.pmax=388, max_loss_pct=5"
        );
    }
}
