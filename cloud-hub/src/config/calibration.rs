//! `[calibration]`: when an instrument's calibration (or a certificate)
//! counts as due soon, and how often the hub looks (`crate::calibration`).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationConfig {
    /// A calibration due (or a certificate expiring) within this many days
    /// is `due_soon` and raises a warning alarm; past its date, a major one.
    #[serde(default = "default_warn_days")]
    pub warn_days: u32,
    /// Seconds between two looks for due calibrations and certificates.
    #[serde(default = "default_check_interval_s")]
    pub check_interval_s: u64,
}

fn default_warn_days() -> u32 {
    30
}
fn default_check_interval_s() -> u64 {
    300
}

/// Most `warn_days` may be (ten years).
pub const MAX_WARN_DAYS: u32 = 3650;

impl Default for CalibrationConfig {
    fn default() -> Self {
        CalibrationConfig {
            warn_days: default_warn_days(),
            check_interval_s: default_check_interval_s(),
        }
    }
}

impl CalibrationConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.warn_days > MAX_WARN_DAYS {
            return Err((
                "calibration.warn_days".into(),
                format!("must be 0..={MAX_WARN_DAYS}"),
            ));
        }
        if self.check_interval_s == 0 || self.check_interval_s > 86_400 {
            return Err((
                "calibration.check_interval_s".into(),
                "must be 1..=86400".into(),
            ));
        }
        Ok(())
    }
}
