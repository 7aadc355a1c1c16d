//! Writing an export as an HTTP body while its rows are read: a task reads
//! a page, writes it in the asked format into a buffer, and hands the
//! buffer on through a small channel (the client's pace holds the reader
//! back). A failure after the first byte cannot change the status any more:
//! the body is cut off (the client sees an incomplete transfer, never a
//! file that looks whole), logged and counted.

use super::columns::{Column, Shape, TableSpec};
use super::run::ReadingsPager;
use super::xlsx::Workbook;
use super::{Cell, ExportError, Format};
use crate::metric_names::{HUB_EXPORT_ROWS_TOTAL, HUB_EXPORTS_TOTAL};
use serde_json::Value;
use sqlx::PgPool;
use std::io;
use tokio::sync::mpsc;

/// Bytes handed to the connection at a time.
const CHUNK: usize = 64 * 1024;

/// Where a table's rows come from.
pub enum Rows {
    /// Read already (small tables). A `Fields` table has one row.
    Ready(Vec<Vec<Cell>>),
    /// Read page by page while writing.
    Readings(Box<ReadingsPager>),
}

impl Rows {
    async fn next(&mut self, pool: &PgPool) -> Result<Option<Vec<Vec<Cell>>>, sqlx::Error> {
        match self {
            Rows::Ready(v) if v.is_empty() => Ok(None),
            Rows::Ready(v) => Ok(Some(std::mem::take(v))),
            Rows::Readings(p) => p.next_page(pool).await,
        }
    }
}

pub struct Table {
    pub spec: &'static TableSpec,
    pub rows: Rows,
}

/// One export: its tables in file order and, in JSON only, whole objects
/// before them (the run's full evaluation).
pub struct Export {
    /// The JSON document's `format` tag.
    pub format: &'static str,
    /// The file name without extension.
    pub stem: String,
    pub extra: Vec<(&'static str, Value)>,
    pub tables: Vec<Table>,
}

impl Export {
    /// Only the table named (CSV holds one table); None: the default,
    /// `default`.
    pub fn only(mut self, name: Option<&str>, default: &str) -> Result<Export, ExportError> {
        let want = name.unwrap_or(default);
        let names: Vec<&str> = self.tables.iter().map(|t| t.spec.name).collect();
        let Some(i) = names.iter().position(|n| *n == want) else {
            return Err(ExportError::Invalid(format!(
                "`table` must be one of {}; got {want:?}",
                names.join(", ")
            )));
        };
        let t = self.tables.swap_remove(i);
        self.tables = vec![t];
        Ok(self)
    }

    /// Refuses before the first byte when a sheet would hold more than
    /// `cap` rows (Excel's own limit at most): the caller is told to take
    /// CSV or JSON, which have no cap. Never a silently shortened file.
    pub async fn check_rows(&self, pool: &PgPool, cap: u64) -> Result<(), ExportError> {
        for t in &self.tables {
            let n = match &t.rows {
                Rows::Ready(v) if t.spec.shape == Shape::Fields => {
                    t.spec.columns.len() as u64 * v.len() as u64
                }
                Rows::Ready(v) => v.len() as u64,
                Rows::Readings(p) => p.count(pool).await?,
            };
            if n > cap {
                return Err(ExportError::TooLarge(format!(
                    "the {} table has {n} rows, more than an xlsx sheet holds here ({cap}, `exports.max_xlsx_rows`); export it as CSV or JSON, which stream without a cap",
                    t.spec.name
                )));
            }
        }
        Ok(())
    }
}

/// Buffers output and hands full chunks to the body.
struct Sink {
    tx: mpsc::Sender<Result<Vec<u8>, io::Error>>,
    buf: Vec<u8>,
    format: &'static str,
}

impl Sink {
    async fn flush(&mut self, all: bool) -> Result<(), ExportError> {
        if self.buf.is_empty() || (!all && self.buf.len() < CHUNK) {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + CHUNK / 4));
        self.tx.send(Ok(chunk)).await.map_err(|_| {
            ExportError::Write(io::Error::new(io::ErrorKind::BrokenPipe, "the client left"))
        })
    }

    fn rows(&self, n: usize) {
        metrics::counter!(HUB_EXPORT_ROWS_TOTAL, "format" => self.format).increment(n as u64);
    }
}

/// Starts writing `export`; the receiver is the body. `kind` labels the
/// metrics (run, service_request).
pub fn spawn(
    export: Export,
    format: Format,
    pool: PgPool,
    kind: &'static str,
) -> mpsc::Receiver<Result<Vec<u8>, io::Error>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let stem = export.stem.clone();
        let mut sink = Sink {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK + CHUNK / 4),
            format: format.as_str(),
        };
        let res = match format {
            Format::Csv => csv(export, &pool, &mut sink).await,
            Format::Json => json(export, &pool, &mut sink).await,
            Format::Xlsx => xlsx(export, &pool, &mut sink).await,
        };
        let res = match res {
            Ok(()) => sink.flush(true).await,
            e => e,
        };
        let outcome = match res {
            Ok(()) => "complete",
            Err(ExportError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                tracing::info!(export = %stem, "export abandoned by the client");
                "abandoned"
            }
            Err(e) => {
                tracing::error!(export = %stem, format = format.as_str(), error = %e, "export failed after it started; the body is cut off");
                let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                "failed"
            }
        };
        metrics::counter!(HUB_EXPORTS_TOTAL, "kind" => kind, "format" => format.as_str(), "outcome" => outcome)
            .increment(1);
    });
    rx
}

fn csv_row(cells: &[Cell], out: &mut Vec<u8>) {
    let mut line = String::new();
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        c.csv_field(&mut line);
    }
    line.push_str("\r\n");
    out.extend_from_slice(line.as_bytes());
}

/// Cells of a `Fields` table's one row as (field, value) rows.
fn field_rows(spec: &TableSpec, row: Vec<Cell>) -> Vec<Vec<Cell>> {
    spec.columns
        .iter()
        .zip(row)
        .map(|(c, v)| vec![Cell::text(c.name), v])
        .collect()
}

fn header(cols: &[Column]) -> Vec<Cell> {
    cols.iter().map(|c| Cell::text(c.name)).collect()
}

/// RFC 4180: one table, header row, CRLF, no BOM.
async fn csv(mut export: Export, pool: &PgPool, sink: &mut Sink) -> Result<(), ExportError> {
    for t in &mut export.tables {
        csv_row(&header(&t.spec.header()), &mut sink.buf);
        while let Some(rows) = t.rows.next(pool).await? {
            let rows = match t.spec.shape {
                Shape::Fields => rows
                    .into_iter()
                    .flat_map(|r| field_rows(t.spec, r))
                    .collect(),
                Shape::Rows => rows,
            };
            for r in &rows {
                csv_row(r, &mut sink.buf);
            }
            sink.rows(rows.len());
            sink.flush(false).await?;
        }
    }
    Ok(())
}

fn json_object(cols: &[Column], row: &[Cell], out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (c, v)) in cols.iter().zip(row).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(c.name.as_bytes());
        out.extend_from_slice(b"\":");
        // A Value always serializes.
        out.extend_from_slice(
            &serde_json::to_vec(&v.to_json()).unwrap_or_else(|_| b"null".to_vec()),
        );
    }
    out.push(b'}');
}

/// One document: `format`, the extras, then each table by name (`Fields`
/// tables an object, others an array of objects keyed by column).
async fn json(mut export: Export, pool: &PgPool, sink: &mut Sink) -> Result<(), ExportError> {
    sink.buf.extend_from_slice(b"{\"format\":");
    sink.buf
        .extend_from_slice(&serde_json::to_vec(export.format).unwrap_or_default());
    for (k, v) in &export.extra {
        sink.buf.extend_from_slice(format!(",\"{k}\":").as_bytes());
        sink.buf
            .extend_from_slice(&serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec()));
    }
    for t in &mut export.tables {
        sink.buf
            .extend_from_slice(format!(",\"{}\":", t.spec.name).as_bytes());
        match t.spec.shape {
            Shape::Fields => {
                let row = t.rows.next(pool).await?.and_then(|mut r| r.pop());
                match row {
                    Some(r) => json_object(t.spec.columns, &r, &mut sink.buf),
                    None => sink.buf.extend_from_slice(b"null"),
                }
                sink.rows(1);
            }
            Shape::Rows => {
                sink.buf.push(b'[');
                let mut first = true;
                while let Some(rows) = t.rows.next(pool).await? {
                    for r in &rows {
                        if !first {
                            sink.buf.push(b',');
                        }
                        first = false;
                        json_object(t.spec.columns, r, &mut sink.buf);
                    }
                    sink.rows(rows.len());
                    sink.flush(false).await?;
                }
                sink.buf.push(b']');
            }
        }
    }
    sink.buf.extend_from_slice(b"}\n");
    Ok(())
}

/// A workbook with a sheet per table, named as the table.
async fn xlsx(mut export: Export, pool: &PgPool, sink: &mut Sink) -> Result<(), ExportError> {
    let names: Vec<&str> = export.tables.iter().map(|t| t.spec.name).collect();
    let mut wb = Workbook::begin(&names, &mut sink.buf)?;
    for t in &mut export.tables {
        wb.start_sheet(&t.spec.header(), &mut sink.buf)?;
        while let Some(rows) = t.rows.next(pool).await? {
            let rows = match t.spec.shape {
                Shape::Fields => rows
                    .into_iter()
                    .flat_map(|r| field_rows(t.spec, r))
                    .collect(),
                Shape::Rows => rows,
            };
            for r in &rows {
                wb.row(r, &mut sink.buf)?;
            }
            sink.rows(rows.len());
            sink.flush(false).await?;
        }
        wb.end_sheet(&mut sink.buf)?;
    }
    wb.finish(&mut sink.buf)?;
    Ok(())
}
