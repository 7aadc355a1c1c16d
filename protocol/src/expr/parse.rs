//! Tokenizer and recursive-descent parser. Precedence, loosest first:
//! `or`, `and`, comparisons (not chained: `a < b < c` is refused), `+ -`,
//! `* /`, unary `-`, then numbers, names, calls and parentheses.

use super::{BinOp, CmpOp, Expr, Func};

/// Where (1-based column in the expression text) and why parsing failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("at column {column}: {message}")]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Name(String),
    Plus,
    Minus,
    Star,
    Slash,
    LParen,
    RParen,
    Comma,
    Cmp(CmpOp),
    And,
    Or,
    End,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(n) => format!("number {n}"),
        Tok::Name(n) => format!("name `{n}`"),
        Tok::Plus => "`+`".into(),
        Tok::Minus => "`-`".into(),
        Tok::Star => "`*`".into(),
        Tok::Slash => "`/`".into(),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::Comma => "`,`".into(),
        Tok::Cmp(op) => format!("`{op}`"),
        Tok::And => "`and`".into(),
        Tok::Or => "`or`".into(),
        Tok::End => "the end of the expression".into(),
    }
}

fn err(column: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        column,
        message: message.into(),
    }
}

/// Tokens with their 1-based columns.
fn lex(text: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            // Exponent: 1e6, 2.5E-3.
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let s: String = chars[start..i].iter().collect();
            let n: f64 = s
                .parse()
                .map_err(|_| err(col, format!("`{s}` is not a number")))?;
            if i < chars.len() && (chars[i].is_alphabetic() || chars[i] == '_') {
                return Err(err(
                    i + 1,
                    "a number cannot carry a unit or run into a name; units belong in the criterion's `unit`",
                ));
            }
            out.push((Tok::Num(n), col));
            continue;
        }
        if c.is_ascii_lowercase() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_lowercase()
                    || chars[i].is_ascii_digit()
                    || chars[i] == '_'
                    || chars[i] == '.')
            {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            if s.ends_with('.') || s.contains("..") {
                return Err(err(col, format!("`{s}` is not a name")));
            }
            out.push((
                match s.as_str() {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    _ => Tok::Name(s),
                },
                col,
            ));
            continue;
        }
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let (tok, len) = match (c, two.as_str()) {
            (_, "<=") => (Tok::Cmp(CmpOp::Le), 2),
            (_, ">=") => (Tok::Cmp(CmpOp::Ge), 2),
            (_, "==") => (Tok::Cmp(CmpOp::Eq), 2),
            ('<', _) => (Tok::Cmp(CmpOp::Lt), 1),
            ('>', _) => (Tok::Cmp(CmpOp::Gt), 1),
            ('+', _) => (Tok::Plus, 1),
            ('-', _) => (Tok::Minus, 1),
            ('*', _) => (Tok::Star, 1),
            ('/', _) => (Tok::Slash, 1),
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            (',', _) => (Tok::Comma, 1),
            ('=', _) => return Err(err(col, "`=` is not an operator; compare with `==`")),
            _ if c.is_uppercase() => {
                return Err(err(col, "names are lower case (a-z, 0-9, _ and .)"));
            }
            _ => return Err(err(col, format!("unexpected character `{c}`"))),
        };
        out.push((tok, col));
        i += len;
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }
    fn column(&self) -> usize {
        self.toks[self.pos].1
    }
    fn next(&mut self) -> Tok {
        let t = self.toks[self.pos].0.clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn expect(&mut self, want: &Tok) -> Result<(), ParseError> {
        if self.peek() == want {
            self.next();
            Ok(())
        } else {
            Err(err(
                self.column(),
                format!(
                    "expected {}, found {}",
                    describe(want),
                    describe(self.peek())
                ),
            ))
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.and()?;
        while *self.peek() == Tok::Or {
            self.next();
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.comparison()?;
        while *self.peek() == Tok::And {
            self.next();
            left = Expr::And(Box::new(left), Box::new(self.comparison()?));
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let left = self.sum()?;
        if let Tok::Cmp(op) = *self.peek() {
            self.next();
            let right = self.sum()?;
            if let Tok::Cmp(_) = self.peek() {
                return Err(err(
                    self.column(),
                    "comparisons do not chain; write `a < b and b < c`",
                ));
            }
            return Ok(Expr::Cmp(op, Box::new(left), Box::new(right)));
        }
        Ok(left)
    }

    fn sum(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.product()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => BinOp::Add,
                Tok::Minus => BinOp::Sub,
                _ => return Ok(left),
            };
            self.next();
            left = Expr::Bin(op, Box::new(left), Box::new(self.product()?));
        }
    }

    fn product(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Star => BinOp::Mul,
                Tok::Slash => BinOp::Div,
                _ => return Ok(left),
            };
            self.next();
            left = Expr::Bin(op, Box::new(left), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if *self.peek() == Tok::Minus {
            self.next();
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let col = self.column();
        match self.next() {
            Tok::Num(n) => Ok(Expr::Num(n)),
            Tok::LParen => {
                let e = self.or()?;
                self.expect(&Tok::RParen)?;
                Ok(e)
            }
            Tok::Name(name) if *self.peek() == Tok::LParen => {
                let func = match name.as_str() {
                    "abs" => Func::Abs,
                    "min" => Func::Min,
                    "max" => Func::Max,
                    _ => {
                        return Err(err(
                            col,
                            format!("unknown function `{name}` (known: abs, min, max)"),
                        ));
                    }
                };
                self.next();
                let mut args = vec![self.or()?];
                while *self.peek() == Tok::Comma {
                    self.next();
                    args.push(self.or()?);
                }
                self.expect(&Tok::RParen)?;
                let ok = match func {
                    Func::Abs => args.len() == 1,
                    Func::Min | Func::Max => args.len() >= 2,
                };
                if !ok {
                    return Err(err(
                        col,
                        format!(
                            "{func} takes {}, got {}",
                            if func == Func::Abs {
                                "one argument"
                            } else {
                                "two or more arguments"
                            },
                            args.len()
                        ),
                    ));
                }
                Ok(Expr::Call(func, args))
            }
            Tok::Name(name) => Ok(Expr::Name(name)),
            t => Err(err(
                col,
                format!("expected a number, a name or `(`, found {}", describe(&t)),
            )),
        }
    }
}

/// Parses one expression; the whole text must be used.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let mut p = Parser {
        toks: lex(text)?,
        pos: 0,
    };
    let e = p.or()?;
    if *p.peek() != Tok::End {
        return Err(err(
            p.column(),
            format!(
                "unexpected {} after a complete expression",
                describe(p.peek())
            ),
        ));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(s: &str) -> String {
        match parse(s) {
            Ok(e) => format!("{e:?}"),
            Err(e) => format!("ERR {e}"),
        }
    }

    #[test]
    fn precedence_and_associativity() {
        // Printing round-trips with only the parentheses precedence needs.
        for (src, printed) in [
            ("1 + 2 * 3", "1 + 2 * 3"),
            ("(1 + 2) * 3", "(1 + 2) * 3"),
            ("a - b - c", "a - b - c"),
            ("a - (b - c)", "a - (b - c)"),
            ("a / b / c", "a / b / c"),
            ("a / (b * c)", "a / (b * c)"),
            ("-a * b", "-a * b"),
            ("-(a + b)", "-(a + b)"),
            (
                "(before.pmax - after.pmax) / before.pmax * 100 <= 5",
                "(before.pmax - after.pmax) / before.pmax * 100 <= 5",
            ),
            ("a < 1 or b > 2 and c == 3", "a < 1 or b > 2 and c == 3"),
            ("(a < 1 or b > 2) and c == 3", "(a < 1 or b > 2) and c == 3"),
            ("max(a, b + 1, 2) >= abs(-c)", "max(a, b + 1, 2) >= abs(-c)"),
            ("1.5e3 > 2E-1", "1500 > 0.2"),
        ] {
            let e = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(e.to_string(), printed, "{src}");
            assert_eq!(parse(&e.to_string()).ok(), Some(e), "{src} round trip");
        }
        let e = parse("1 + 2 * 3").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            e,
            Expr::Bin(
                BinOp::Add,
                Box::new(Expr::Num(1.0)),
                Box::new(Expr::Bin(
                    BinOp::Mul,
                    Box::new(Expr::Num(2.0)),
                    Box::new(Expr::Num(3.0))
                ))
            )
        );
    }

    #[test]
    fn refusals_name_the_column() {
        for (src, want) in [
            ("a <= ", "ERR at column 6: expected a number, a name or `(`"),
            ("a < b < c", "ERR at column 7: comparisons do not chain"),
            ("(a + b", "ERR at column 7: expected `)`"),
            ("a = 1", "ERR at column 3: `=` is not an operator"),
            ("5% <= 3", "ERR at column 2: unexpected character `%`"),
            ("10V > a", "ERR at column 3: a number cannot carry a unit"),
            ("sqrt(a) > 1", "ERR at column 1: unknown function `sqrt`"),
            (
                "abs(a, b) > 1",
                "ERR at column 1: abs takes one argument, got 2",
            ),
            (
                "min(a) > 1",
                "ERR at column 1: min takes two or more arguments",
            ),
            ("a b", "ERR at column 3: unexpected name `b`"),
            ("Pmax > 1", "ERR at column 1: names are lower case"),
            ("a. > 1", "ERR at column 1: `a.` is not a name"),
            ("", "ERR at column 1: expected a number"),
        ] {
            let got = show(src);
            assert!(got.starts_with(want), "{src:?}: {got}");
        }
    }
}
