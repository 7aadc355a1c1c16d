//! The expression language of wait conditions and pass/fail criteria.
//!
//! Plain numbers, names (`before.pmax`, `insulation.r_iso`, `area_m2`),
//! `+ - * /`, parentheses, comparisons `<= < >= > ==`, `and`, `or`, and the
//! functions `abs`, `min`, `max`. Hand-written so that every refusal can say
//! where in the text it happened, and so a lab can read the whole grammar here.

mod eval;
mod parse;

pub use eval::{Check, EvalError, Explanation, Value, evaluate, explain};
pub use parse::{ParseError, parse};

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Le,
    Lt,
    Ge,
    Gt,
    Eq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Abs,
    Min,
    Max,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Num(f64),
    Name(String),
    Neg(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
}

impl Expr {
    /// Every name the expression reads, once each, in order of appearance.
    pub fn names(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        self.visit_names(&mut |n| {
            if !out.contains(&n) {
                out.push(n);
            }
        });
        out
    }

    fn visit_names<'a>(&'a self, f: &mut impl FnMut(&'a str)) {
        match self {
            Expr::Num(_) => {}
            Expr::Name(n) => f(n),
            Expr::Neg(a) => a.visit_names(f),
            Expr::Bin(_, a, b) | Expr::Cmp(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                a.visit_names(f);
                b.visit_names(f);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.visit_names(f)),
        }
    }

    /// Binding strength, for printing without redundant parentheses.
    fn precedence(&self) -> u8 {
        match self {
            Expr::Or(..) => 1,
            Expr::And(..) => 2,
            Expr::Cmp(..) => 3,
            Expr::Bin(BinOp::Add | BinOp::Sub, ..) => 4,
            Expr::Bin(BinOp::Mul | BinOp::Div, ..) => 5,
            Expr::Neg(_) => 6,
            Expr::Num(_) | Expr::Name(_) | Expr::Call(..) => 7,
        }
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmpOp::Le => "<=",
            CmpOp::Lt => "<",
            CmpOp::Ge => ">=",
            CmpOp::Gt => ">",
            CmpOp::Eq => "==",
        })
    }
}

impl fmt::Display for Func {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Func::Abs => "abs",
            Func::Min => "min",
            Func::Max => "max",
        })
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `right_strict`: the right operand of - and / needs parentheses at equal
        // precedence too, since those operators do not associate.
        let sub = |f: &mut fmt::Formatter<'_>, e: &Expr, min: u8| {
            if e.precedence() < min {
                write!(f, "({e})")
            } else {
                write!(f, "{e}")
            }
        };
        match self {
            Expr::Num(n) => write!(f, "{n}"),
            Expr::Name(n) => f.write_str(n),
            Expr::Neg(a) => {
                f.write_str("-")?;
                sub(f, a, 6)
            }
            Expr::Bin(op, a, b) => {
                let (p, s, right_strict) = match op {
                    BinOp::Add => (4, " + ", false),
                    BinOp::Sub => (4, " - ", true),
                    BinOp::Mul => (5, " * ", false),
                    BinOp::Div => (5, " / ", true),
                };
                sub(f, a, p)?;
                f.write_str(s)?;
                sub(f, b, if right_strict { p + 1 } else { p })
            }
            Expr::Cmp(op, a, b) => {
                sub(f, a, 4)?;
                write!(f, " {op} ")?;
                sub(f, b, 4)
            }
            Expr::And(a, b) => {
                sub(f, a, 2)?;
                f.write_str(" and ")?;
                sub(f, b, 3)
            }
            Expr::Or(a, b) => {
                sub(f, a, 1)?;
                f.write_str(" or ")?;
                sub(f, b, 2)
            }
            Expr::Call(func, args) => {
                write!(f, "{func}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
        }
    }
}
