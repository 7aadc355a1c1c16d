//! Test protocol templates: a PV module test sequence (STC power, insulation,
//! TC200, DH1000, HF10, PID96, ...) as data. A template is a TOML file in
//! `protocols/` (format in `protocols/README.md`): parameters with units and
//! limits, the steps, what is recorded, and the pass/fail criteria as
//! expressions, so a lab corrects a limit by editing a file, not by a release.
//! This crate parses and validates templates and evaluates their criteria;
//! running the steps is the agent's business.

pub mod expr;
mod model;
mod summary;
pub mod units;
mod validate;

pub use model::{
    Criterion, FORMAT_VERSION, IV_METRICS, Info, MeasurePoint, OfflinePolicy, Parameter, Protocol,
    Quantity, RECORD_AGGREGATES, Record, RestartPolicy, SafeSetpoint, SafeState, SampleSource,
    SampleValue, Step, ValueSource,
};
pub use validate::{MAX_IV_POINTS, MAX_REPEAT_COUNT, MAX_REPEAT_DEPTH, Problem};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a template could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("cannot read protocol {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax, type or unknown key; the message carries the line and column.
    #[error("protocol {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// Parsed, but not a usable protocol: every problem found.
    #[error("protocol {path}: {}", Problems(.problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if self.0.len() > 1 {
                f.write_str("\n  ")?;
            } else if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", p.place, p.message)?;
        }
        Ok(())
    }
}

/// A criterion's outcome on one run's values.
#[derive(Debug, Clone)]
pub struct CriterionResult {
    pub id: String,
    pub unit: String,
    pub approval_required: bool,
    /// An evaluation error (a value missing, a division by zero) is no verdict.
    pub outcome: Result<expr::Explanation, expr::EvalError>,
}

impl fmt::Display for CriterionResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Ok(x) => write!(f, "{} [{}]: {x}", self.id, self.unit)?,
            Err(e) => write!(f, "{} [{}]: NO VERDICT: {e}", self.id, self.unit)?,
        }
        if self.approval_required {
            f.write_str(" (provisional until approved)")?;
        }
        Ok(())
    }
}

impl Protocol {
    /// Reads, parses and validates a template file.
    pub fn load(path: &Path) -> Result<Protocol, ProtocolError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProtocolError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Protocol::parse(&text, path)
    }

    /// Parses and validates template text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Protocol, ProtocolError> {
        let mut p: Protocol = toml::from_str(text).map_err(|e| ProtocolError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let problems = validate::validate(&mut p, text);
        if !problems.is_empty() {
            return Err(ProtocolError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        Ok(p)
    }

    /// The `<label>.<name>` values the steps record (measures and IV
    /// sweeps, nested steps included), in step order, each once.
    pub fn recorded_values(&self) -> Vec<String> {
        fn walk(steps: &[Step], out: &mut Vec<String>) {
            for s in steps {
                match s {
                    Step::Measure { label, points, .. } => {
                        out.extend(points.iter().map(|p| format!("{label}.{}", p.name)));
                    }
                    Step::IvSweep { label, .. } => {
                        out.extend(IV_METRICS.iter().map(|(m, _)| format!("{label}.{m}")));
                    }
                    Step::Repeat { steps, .. } => walk(steps, out),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.steps, &mut out);
        let mut seen = std::collections::HashSet::new();
        out.retain(|n| seen.insert(n.clone()));
        out
    }

    /// Evaluates every criterion over a run's values (recorded metrics,
    /// `before.*` / `after.*`, parameters); parameters missing from `values`
    /// take their defaults.
    pub fn evaluate_criteria(&self, values: &BTreeMap<String, f64>) -> Vec<CriterionResult> {
        let mut all: BTreeMap<String, f64> = self
            .parameters
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.default?)))
            .collect();
        all.extend(values.iter().map(|(k, v)| (k.clone(), *v)));
        self.criteria
            .iter()
            .map(|c| CriterionResult {
                id: c.id.clone(),
                unit: c.unit.clone(),
                approval_required: c.approval_required,
                outcome: match &c.parsed {
                    Some(e) => expr::explain(e, &all),
                    // Only a Protocol built without `parse` lacks it.
                    None => expr::parse(c.expression.get_ref())
                        .map_err(|e| expr::EvalError::Type {
                            expr: c.expression.get_ref().clone(),
                            message: e.to_string(),
                        })
                        .and_then(|e| expr::explain(&e, &all)),
                },
            })
            .collect()
    }
}
