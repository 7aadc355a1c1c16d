//! The lab's work flow around protocol runs: a customer's service request
//! brings samples (twins of kind `sample`), each is inspected at intake and
//! after its stresses, runs on the benches produce verdicts (`crate::runs`),
//! and the request moves through explicit states, each change audited.
//!
//! Rooms: `requests` (service requests, their states and samples),
//! `inspections` (findings, which become sample observations the criteria
//! read), `photos` (pictures of an inspection, checked and bounded), `plan`
//! (each sample's requested protocols matched to its runs: what is due).
//! The schema is migration 0012; docs/lab.md is the user's guide.

pub mod inspections;
pub mod photos;
pub mod plan;
pub mod requests;

use crate::audit::AuditError;
use crate::twins::TwinError;

/// Why a lab operation was refused or failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The request itself breaks a rule (422).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The state of things forbids it now (409).
    #[error("{0}")]
    Conflict(String),
    #[error(
        "service request {id} is at version {current}; the request was for version {expected}: read it again and retry"
    )]
    Stale {
        id: String,
        current: i64,
        expected: i64,
    },
    /// A photo over the size limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// A photo that is not a JPEG or PNG (415).
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Twin(#[from] TwinError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl LabError {
    /// The label of `qi_hub_lab_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            LabError::Invalid(_) => "invalid",
            LabError::NotFound(_) => "not_found",
            LabError::Conflict(_) => "conflict",
            LabError::Stale { .. } => "stale",
            LabError::TooLarge(_) => "too_large",
            LabError::Unsupported(_) => "unsupported",
            LabError::Twin(_) => "twin",
            LabError::Db(_) | LabError::Audit(_) => "storage",
        }
    }
}

/// Most characters of a free-text field (customer, notes, findings).
pub const MAX_TEXT_LEN: usize = 2000;
/// Most protocols one service request asks for.
pub const MAX_PROTOCOLS: usize = 32;
/// Most findings in one inspection.
pub const MAX_FINDINGS: usize = 200;

/// Free text: at most `MAX_TEXT_LEN` characters; line breaks and tabs are
/// allowed (notes), other control characters are not.
pub fn check_text(what: &str, s: &str, required: bool) -> Result<(), LabError> {
    if required && s.trim().is_empty() {
        return Err(LabError::Invalid(format!("`{what}` must not be empty")));
    }
    if s.chars().count() > MAX_TEXT_LEN
        || s.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(LabError::Invalid(format!(
            "`{what}` must be at most {MAX_TEXT_LEN} characters with no control characters but line breaks and tabs"
        )));
    }
    Ok(())
}

/// The twin id of the sample with this serial number.
pub fn sample_twin_id(serial: &str) -> String {
    format!("sample:{serial}")
}
