//! Data exports of a run and of a service request (issue #15): CSV and
//! Excel (xlsx) for people and spreadsheets, JSON for machines, every file,
//! sheet and column documented in docs/exports.md (a test holds the page to
//! [`TABLES`]).
//!
//! Rooms: `cell` (a typed value and how each format writes it, with the
//! CSV-injection defence), `columns` (the tables and their columns, defined
//! once), `run` and `request` (what is read from the database), `zip` and
//! `xlsx` (a streaming OOXML writer: no spreadsheet crate, no C),
//! `stream` (the HTTP body: rows read in pages and written as they come, so
//! a run of millions of readings never sits in memory).

pub mod cell;
pub mod columns;
pub mod request;
pub mod run;
pub mod stream;
pub mod xlsx;
mod zip;

pub use cell::Cell;
pub use columns::{Column, Kind, Shape, TABLES, TableSpec};

/// Excel's rows per sheet (1,048,576) less the header row: the most
/// `exports.max_xlsx_rows` may be.
pub const EXCEL_MAX_DATA_ROWS: u64 = 1_048_575;
/// Readings read from the database per query while streaming.
pub const PAGE_ROWS: i64 = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Xlsx,
    Json,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
            Format::Json => "json",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            // No BOM (docs/exports.md): RFC 4180 tools read it as data.
            Format::Csv => "text/csv; charset=utf-8; header=present",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Format::Json => "application/json",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    NotFound(String),
    /// The request names something the export does not have (422).
    #[error("{0}")]
    Invalid(String),
    /// Too large for the format asked for (xlsx row cap): 409 with advice.
    #[error("{0}")]
    TooLarge(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("writing the file: {0}")]
    Write(#[from] std::io::Error),
}

impl ExportError {
    /// The label of `hub_exports_total{outcome}` for a refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            ExportError::NotFound(_) => "not_found",
            ExportError::Invalid(_) => "invalid",
            ExportError::TooLarge(_) => "too_large",
            ExportError::Db(_) => "storage",
            ExportError::Write(_) => "write",
        }
    }
}

/// A file name safe in `Content-Disposition` (ids are checked, but a
/// service request id is free text): ASCII letters, digits, `.`, `_`, `-`.
pub fn safe_filename(stem: &str, ext: &str) -> String {
    let s: String = stem
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.');
    format!("{}.{ext}", if s.is_empty() { "export" } else { s })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_no_quotes_paths_or_header_breaks() {
        assert_eq!(safe_filename("SR-000001", "csv"), "SR-000001.csv");
        assert_eq!(safe_filename("a\"b\r\nc/../d", "xlsx"), "a_b__c_.._d.xlsx");
        assert_eq!(safe_filename("..", "json"), "export.json");
    }
}
