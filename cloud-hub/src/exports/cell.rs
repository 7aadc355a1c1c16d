//! One value of an export and how each format writes it. Numbers stay
//! numbers in every format; text that a spreadsheet would take for a
//! formula is defused (OWASP "CSV injection").

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Empty,
    Text(String),
    Number(f64),
    Int(i64),
    Bool(bool),
    /// An instant (UTC): RFC 3339 in CSV and JSON, an Excel date in xlsx.
    Time(DateTime<Utc>),
    /// Structured data: itself in JSON, its compact JSON text elsewhere.
    Json(Value),
}

impl Cell {
    pub fn text(s: impl Into<String>) -> Cell {
        Cell::Text(s.into())
    }

    pub fn opt_text(s: Option<impl Into<String>>) -> Cell {
        s.map_or(Cell::Empty, |s| Cell::Text(s.into()))
    }

    pub fn opt_time(t: Option<DateTime<Utc>>) -> Cell {
        t.map_or(Cell::Empty, Cell::Time)
    }

    pub fn opt_number(x: Option<f64>) -> Cell {
        x.map_or(Cell::Empty, Cell::Number)
    }

    /// The cell in a JSON document.
    pub fn to_json(&self) -> Value {
        match self {
            Cell::Empty => Value::Null,
            Cell::Text(s) => Value::String(s.clone()),
            // Non-finite numbers have no JSON form.
            Cell::Number(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
            Cell::Int(n) => Value::from(*n),
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Time(t) => Value::String(rfc3339(t)),
            Cell::Json(v) => v.clone(),
        }
    }

    /// The cell's text where it is text (CSV, and xlsx strings).
    pub fn plain(&self) -> String {
        match self {
            Cell::Empty => String::new(),
            Cell::Text(s) => s.clone(),
            Cell::Number(x) => number(*x),
            Cell::Int(n) => n.to_string(),
            Cell::Bool(b) => b.to_string(),
            Cell::Time(t) => rfc3339(t),
            Cell::Json(v) => v.to_string(),
        }
    }

    /// Whether a spreadsheet would read this text cell as a formula (or,
    /// with a leading tab or carriage return, be tricked into one).
    pub fn is_hostile_text(&self) -> bool {
        match self {
            Cell::Text(_) | Cell::Json(_) => {
                self.plain().starts_with(['=', '+', '-', '@', '\t', '\r'])
            }
            _ => false,
        }
    }

    /// The cell as one RFC 4180 field: quoted when it holds a comma, quote
    /// or line break; hostile text prefixed with `'` (OWASP) so no
    /// spreadsheet evaluates it. Numbers, times and booleans are never
    /// prefixed: `-1.5` stays a number.
    pub fn csv_field(&self, out: &mut String) {
        let mut s = self.plain();
        if self.is_hostile_text() {
            s.insert(0, '\'');
        }
        if s.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&s.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&s);
        }
    }
}

/// RFC 3339 in UTC with `Z` and as many fraction digits as the instant
/// has (what the JSON API prints, so the two compare as text).
pub fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The shortest text that reads back as the same f64.
fn number(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else if x.is_nan() {
        "NaN".into()
    } else if x > 0.0 {
        "Infinity".into()
    } else {
        "-Infinity".into()
    }
}

/// An instant as Excel's serial date: days since 1899-12-30 (the 1900 date
/// system, UTC), fraction for the time of day.
pub fn excel_serial(t: &DateTime<Utc>) -> f64 {
    let micros = t.timestamp_micros() as f64;
    micros / 86_400_000_000.0 + 25_569.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(c: Cell) -> String {
        let mut s = String::new();
        c.csv_field(&mut s);
        s
    }

    #[test]
    fn formulas_are_defused_and_numbers_stay_numbers() {
        assert_eq!(
            field(Cell::text("=HYPERLINK(\"http://x\",\"y\")")),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\""
        );
        for bad in ["+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert!(
                field(Cell::text(bad)).trim_matches('"').starts_with('\''),
                "{bad:?}"
            );
        }
        assert_eq!(field(Cell::Number(-1.5)), "-1.5");
        assert_eq!(field(Cell::Int(-3)), "-3");
        assert_eq!(field(Cell::Number(1001.0)), "1001");
        assert_eq!(field(Cell::text("a,b")), "\"a,b\"");
        assert_eq!(field(Cell::text("plain")), "plain");
    }

    #[test]
    fn times_are_rfc3339_utc_and_excel_serials() {
        let t = DateTime::parse_from_rfc3339("1970-01-02T12:00:00.5Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        assert_eq!(field(Cell::Time(t)), "1970-01-02T12:00:00.500Z");
        assert!((excel_serial(&t) - (25_570.5 + 0.5 / 86_400.0)).abs() < 1e-9);
    }
}
