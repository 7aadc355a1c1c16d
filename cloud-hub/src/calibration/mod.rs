//! Instrument calibration (issue #15): what a calibration of an instrument
//! twin found, when it is due again, and what follows from that: the
//! instrument's status (valid, due soon, expired, none) shown with the
//! twin, a listing of calibrations and certificates due within N days,
//! alarms raised on them, and the gateways told the status of their
//! devices so they refuse runs on an expired instrument while offline.
//! docs/calibration.md is the user's side of it.
//!
//! Rooms: `records` (recording, reading, status at a time), `due` (the due
//! listing), `watch` (the background look that raises and clears alarms),
//! `push` (what a gateway is told). The schema is migration 0015. The
//! calibration certificate (a signed document for our own calibration) is
//! `crate::certificates::calibration`: certificates read these records,
//! this module never imports them.

pub mod due;
pub mod push;
pub mod records;
pub mod watch;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Most measured values (or conditions) one calibration records.
pub const MAX_VALUES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("{0}")]
    NotFound(String),
    /// Breaks a limit of a field (what the API's schema also says).
    #[error("{0}")]
    Invalid(String),
    /// Well-formed but not possible: dates out of order, a twin that is
    /// not an instrument, an external calibration without its certificate.
    #[error("{0}")]
    Refused(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

impl CalibrationError {
    /// The refusal counter's label.
    pub fn reason(&self) -> &'static str {
        match self {
            CalibrationError::NotFound(_) => "not_found",
            CalibrationError::Invalid(_) => "invalid",
            CalibrationError::Refused(_) => "refused",
            CalibrationError::Db(_) | CalibrationError::Audit(_) => "storage",
        }
    }
}

/// An instrument's calibration status: the one rule, used by the twin's
/// state, the due listing, the alarms and test certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Due after the warning window.
    Valid,
    /// Due within `[calibration] warn_days`.
    DueSoon,
    /// Due date reached or past.
    Expired,
    /// No calibration recorded.
    None,
}

impl Status {
    /// Of a calibration due at `due`, looked at `now`.
    pub fn of(due: DateTime<Utc>, now: DateTime<Utc>, warn_days: u32) -> Status {
        if due <= now {
            Status::Expired
        } else if due <= now + chrono::Duration::days(i64::from(warn_days)) {
            Status::DueSoon
        } else {
            Status::Valid
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Valid => "valid",
            Status::DueSoon => "due_soon",
            Status::Expired => "expired",
            Status::None => "none",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_expired_at_the_due_date_and_due_soon_within_the_window() {
        let now = Utc::now();
        let d = chrono::Duration::days;
        assert_eq!(Status::of(now, now, 30), Status::Expired);
        assert_eq!(Status::of(now - d(1), now, 30), Status::Expired);
        assert_eq!(Status::of(now + d(30), now, 30), Status::DueSoon);
        assert_eq!(Status::of(now + d(31), now, 30), Status::Valid);
        assert_eq!(Status::of(now + d(1), now, 0), Status::Valid);
    }
}
