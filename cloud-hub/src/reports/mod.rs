//! Human-readable PDF reports produced by the hub itself (issue #15): one
//! per certificate and one per run, with tables, the IV curve and chamber
//! profile as vector charts, the verdicts' explanations and, for a
//! certificate, the QR code of its verification URL. docs/reports.md is
//! the user's side of it.
//!
//! Rooms: `pdf` (our own PDF 1.7 writer: standard fonts, WinAnsi, paths),
//! `layout` (pages, tables, page breaks, footers), `chart` (axes, ticks,
//! downsampling), `qr` (the QR code as vector squares and SVG), `data`
//! (a run's curve, profile and events from the database), `figures` (the
//! two charts), `certificate` and `run` (the two reports). Rendering is
//! pure (no SQL): the bench and unit tests call it directly.

pub mod certificate;
pub mod chart;
pub mod data;
mod figures;
pub mod layout;
pub mod pdf;
pub mod qr;
pub mod run;

use crate::metric_names::{HUB_REPORT_RENDER_SECONDS, HUB_REPORTS_RENDERED_TOTAL};
use crate::runs::RunRow;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::time::Instant;

/// A report stops at this many pages and says so on its last one.
pub const MAX_PAGES: usize = 60;
/// Readings read per chart series (an IV curve reads twice this: V and I).
pub const MAX_SERIES_READINGS: usize = 200_000;
/// Events listed in a run's timeline.
pub const MAX_EVENTS: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    NotFound(String),
    /// Stored data the report cannot show (a document that does not parse).
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Cert(#[from] crate::certificates::CertError),
}

fn observe(kind: &'static str, started: Instant, bytes: usize) {
    metrics::counter!(HUB_REPORTS_RENDERED_TOTAL, "kind" => kind).increment(1);
    metrics::histogram!(HUB_REPORT_RENDER_SECONDS, "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    tracing::debug!(kind, bytes, "report rendered");
}

/// The signed JSON mirror of a stored certificate, and its state.
pub async fn stored_certificate(
    pool: &PgPool,
    id: &str,
) -> Result<(crate::certificates::document::Certificate, String), ReportError> {
    let row: Option<(Vec<u8>, String)> =
        sqlx::query_as("SELECT document_json, state FROM certificates WHERE certificate_id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    let (json, state) = row.ok_or_else(|| ReportError::NotFound(format!("no certificate {id}")))?;
    let c = serde_json::from_slice(&json)
        .map_err(|e| ReportError::Invalid(format!("certificate {id}'s JSON mirror: {e}")))?;
    Ok((c, state))
}

/// The certificate's PDF, from its signed JSON mirror and its runs' data.
pub async fn certificate_pdf(pool: &PgPool, id: &str) -> Result<Vec<u8>, ReportError> {
    let (cert, state) = stored_certificate(pool, id).await?;
    let mut charts = BTreeMap::new();
    for r in &cert.runs {
        let Some(run) = crate::runs::query::run(pool, &r.run_id).await? else {
            continue;
        };
        let (events, _) = data::events(pool, &r.run_id).await?;
        charts.insert(
            r.run_id.clone(),
            data::run_charts(pool, &run, &events).await?,
        );
    }
    let pdf = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let pdf = certificate::render(&cert, &state, &charts);
        if let Ok(p) = &pdf {
            observe("certificate", started, p.len());
        }
        pdf
    })
    .await
    .map_err(|e| ReportError::Invalid(format!("rendering stopped: {e}")))??;
    Ok(pdf)
}

/// The run's PDF (the caller has checked the run is visible to them).
pub async fn run_pdf(pool: &PgPool, run: RunRow) -> Result<Vec<u8>, ReportError> {
    let steps = crate::runs::query::steps(pool, &run.run_id).await?;
    let evaluation = crate::runs::query::latest_evaluation(pool, &run.run_id).await?;
    let (events, events_truncated) = data::events(pool, &run.run_id).await?;
    let charts = data::run_charts(pool, &run, &events).await?;
    let report = run::RunReport {
        run,
        steps,
        events,
        events_truncated,
        evaluation,
        charts,
    };
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let pdf = run::render(&report);
        observe("run", started, pdf.len());
        pdf
    })
    .await
    .map_err(|e| ReportError::Invalid(format!("rendering stopped: {e}")))
}

#[cfg(test)]
mod tests;
