//! `[exports]`: bounds of the data exports (`crate::exports`).

use serde::Deserialize;

/// Excel's rows per sheet less the header row (the same number as
/// `crate::exports::EXCEL_MAX_DATA_ROWS`, which `config` may not import).
pub const MAX_XLSX_ROWS_LIMIT: u64 = 1_048_575;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportsConfig {
    /// Most rows one xlsx sheet may get; a larger export is refused (409)
    /// before the first byte, pointing at CSV or JSON.
    #[serde(default = "default_max_xlsx_rows")]
    pub max_xlsx_rows: u64,
}

fn default_max_xlsx_rows() -> u64 {
    MAX_XLSX_ROWS_LIMIT
}

impl Default for ExportsConfig {
    fn default() -> Self {
        ExportsConfig {
            max_xlsx_rows: default_max_xlsx_rows(),
        }
    }
}

impl ExportsConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.max_xlsx_rows == 0 || self.max_xlsx_rows > MAX_XLSX_ROWS_LIMIT {
            return Err((
                "exports.max_xlsx_rows".into(),
                format!(
                    "must be 1..={MAX_XLSX_ROWS_LIMIT} (Excel's rows per sheet less the header)"
                ),
            ));
        }
        Ok(())
    }
}
