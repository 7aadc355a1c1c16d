//! Protocol runs at the hub (issue #14): what a gateway's run engine reports
//! (events and run-tagged readings on the uplink, benches in its Hello), the
//! hub's evaluation of each completed run from the stored data with the
//! template the run used, and the engineers' approval of provisional
//! verdicts. docs/runs.md, "At the hub", is the user's side of it.
//!
//! Rooms: `validate` (what the ingest refuses before writing), `benches`
//! (Hello.benches into bench twins), `inputs` (a run's values, aggregates,
//! sample values and parameters from the database), `evaluation` (verdicts,
//! stored and compared), `approval` (four eyes on provisional verdicts),
//! `query` (the API's reads), `triggers` (which acknowledged batch starts
//! which evaluation), `outbox` (the webhook events and non-conformances an
//! evaluation or a decision writes in its transaction), `verdicts` (what
//! each gateway is told of its runs' verdicts and certificates). Storing the events in the batch's transaction
//! is `crate::storage::run_events`; the schema is migration 0011.

pub mod approval;
pub mod benches;
pub mod evaluation;
mod inputs;
mod outbox;
pub mod query;
mod triggers;
pub mod validate;
pub mod verdicts;

pub use evaluation::{evaluate, on_completed, reevaluate_sample};
pub use triggers::EvaluationTriggers;

use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    NotFound(String),
    /// The run is not in a state the operation needs.
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this to this run (four eyes).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    /// A stored template no longer parses (a hub whose template rules
    /// changed since the run): the run cannot be evaluated.
    #[error("the run's template does not parse: {0}")]
    Template(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

/// One run as stored (the template text is read only to evaluate).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunRow {
    pub run_id: String,
    pub gateway_id: String,
    pub bench_id: Option<String>,
    pub sample_id: Option<String>,
    pub protocol_id: Option<String>,
    pub protocol_version: Option<String>,
    pub template_sha256: Option<String>,
    pub parameters: serde_json::Value,
    pub operator: Option<String>,
    pub time_scale: Option<f64>,
    pub bindings: serde_json::Value,
    pub state: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub current_step: Option<String>,
    pub last_message: Option<String>,
    pub last_seq: i64,
    /// Whether its STARTED event arrived (readings may come first).
    pub start_received: bool,
    pub first_seen: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip)]
    pub template_toml: Option<String>,
}

/// The columns of [`RunRow`], for every query that reads one; the template
/// (up to 256 KiB) only where it is evaluated.
pub(crate) fn run_columns(with_template: bool) -> String {
    format!(
        "run_id::text AS run_id, gateway_id, bench_id, sample_id, protocol_id, protocol_version, \
         template_sha256, parameters, operator, time_scale, bindings, state, started_at, ended_at, \
         current_step, last_message, last_seq, started_seq IS NOT NULL AS start_received, \
         first_seen, updated_at, {} AS template_toml",
        if with_template {
            "template_toml"
        } else {
            "NULL::text"
        }
    )
}
