//! Every table of every export, its columns, their types and units:
//! defined once here, written by all three formats, and listed on
//! docs/exports.md (the test below holds the page to this).

/// A column's type in every format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Number,
    Integer,
    Boolean,
    /// RFC 3339 UTC in CSV/JSON, an Excel date (number formatted
    /// `yyyy-mm-dd hh:mm:ss.000`, UTC) in xlsx.
    Time,
    /// JSON: the value itself; CSV/xlsx: its compact JSON text.
    Json,
    /// Depends on the field (key/value tables).
    Any,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Number => "number",
            Kind::Integer => "integer",
            Kind::Boolean => "boolean",
            Kind::Time => "time",
            Kind::Json => "json",
            Kind::Any => "any",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    /// The unit when the column has one (xlsx headers show it).
    pub unit: Option<&'static str>,
    /// Width in xlsx, in characters.
    pub width: u8,
}

const fn col(name: &'static str, kind: Kind, width: u8) -> Column {
    Column {
        name,
        kind,
        unit: None,
        width,
    }
}

const fn unit(name: &'static str, kind: Kind, unit: &'static str, width: u8) -> Column {
    Column {
        name,
        kind,
        unit: Some(unit),
        width,
    }
}

/// How a table is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One row per item; JSON: an array of objects keyed by column.
    Rows,
    /// One thing described field by field: CSV/xlsx have the two columns
    /// `field`, `value` and a row per field; JSON: one object.
    Fields,
}

#[derive(Debug)]
pub struct TableSpec {
    /// `run` or `service_request`.
    pub export: &'static str,
    pub name: &'static str,
    pub shape: Shape,
    /// The columns (Rows) or the fields (Fields), in order.
    pub columns: &'static [Column],
}

impl TableSpec {
    /// The header of CSV and xlsx: the column names, or `field`, `value`.
    pub fn header(&self) -> Vec<Column> {
        match self.shape {
            Shape::Rows => self.columns.to_vec(),
            Shape::Fields => vec![col("field", Kind::Text, 22), col("value", Kind::Any, 66)],
        }
    }
}

use Kind::*;

/// Widths: times 24, ids 38, free text 40-60.
pub const RUN: TableSpec = TableSpec {
    export: "run",
    name: "run",
    shape: Shape::Fields,
    columns: &[
        col("run_id", Text, 38),
        col("protocol_id", Text, 16),
        col("protocol_version", Text, 10),
        col("template_sha256", Text, 66),
        col("sample_id", Text, 24),
        col("bench_id", Text, 16),
        col("gateway_id", Text, 16),
        col("operator", Text, 16),
        col("state", Text, 12),
        col("started_at", Time, 24),
        col("ended_at", Time, 24),
        unit("time_scale", Number, "x real time", 10),
        col("simulated", Boolean, 10),
        col("parameters", Json, 40),
        col("evaluation_id", Integer, 10),
        col("evaluated_at", Time, 24),
        col("verdict", Text, 12),
        col("computed_verdict", Text, 12),
        col("final_verdict", Text, 12),
        col("approval_decision", Text, 10),
        col("approved_by", Text, 16),
        col("approved_at", Time, 24),
        col("approval_comment", Text, 40),
        col("exported_at", Time, 24),
    ],
};

pub const CRITERIA: TableSpec = TableSpec {
    export: "run",
    name: "criteria",
    shape: Shape::Rows,
    columns: &[
        col("criterion", Text, 20),
        col("description", Text, 40),
        col("verdict", Text, 12),
        col("approval_required", Boolean, 10),
        col("unit", Text, 8),
        col("value", Number, 14),
        col("op", Text, 4),
        col("limit", Number, 14),
        col("explanation", Text, 80),
    ],
};

pub const READINGS: TableSpec = TableSpec {
    export: "run",
    name: "readings",
    shape: Shape::Rows,
    columns: &[
        unit("time", Time, "UTC", 24),
        col("run_series", Text, 28),
        col("device", Text, 16),
        col("metric", Text, 16),
        col("unit", Text, 8),
        unit("value", Number, "see unit", 14),
        col("quality", Integer, 8),
        col("seq", Integer, 12),
        col("step", Text, 8),
    ],
};

pub const REQUEST: TableSpec = TableSpec {
    export: "service_request",
    name: "request",
    shape: Shape::Fields,
    columns: &[
        col("request_id", Text, 12),
        col("external_ref", Text, 20),
        col("customer", Text, 30),
        col("module_type", Text, 20),
        col("protocols", Text, 30),
        col("state", Text, 12),
        col("notes", Text, 40),
        col("created_by", Text, 16),
        col("created_at", Time, 24),
        col("updated_at", Time, 24),
        col("version", Integer, 8),
        col("exported_at", Time, 24),
    ],
};

pub const TRANSITIONS: TableSpec = TableSpec {
    export: "service_request",
    name: "transitions",
    shape: Shape::Rows,
    columns: &[
        unit("at", Time, "UTC", 24),
        col("from_state", Text, 12),
        col("to_state", Text, 12),
        col("by", Text, 20),
        col("comment", Text, 40),
    ],
};

pub const SAMPLES: TableSpec = TableSpec {
    export: "service_request",
    name: "samples",
    shape: Shape::Rows,
    columns: &[
        col("sample_id", Text, 24),
        col("serial_number", Text, 20),
        col("name", Text, 24),
        unit("added_at", Time, "UTC", 24),
    ],
};

pub const INSPECTIONS: TableSpec = TableSpec {
    export: "service_request",
    name: "inspections",
    shape: Shape::Rows,
    columns: &[
        col("sample_id", Text, 24),
        col("inspection_id", Integer, 10),
        col("stage", Text, 12),
        unit("performed_at", Time, "UTC", 24),
        col("inspector", Text, 16),
        unit("major_defects", Integer, "count", 10),
        unit("minor_defects", Integer, "count", 10),
        col("findings", Json, 50),
        col("notes", Text, 40),
    ],
};

pub const OBSERVATIONS: TableSpec = TableSpec {
    export: "service_request",
    name: "observations",
    shape: Shape::Rows,
    columns: &[
        col("sample_id", Text, 24),
        col("name", Text, 24),
        unit("value", Number, "see unit", 12),
        col("unit", Text, 8),
        unit("observed_at", Time, "UTC", 24),
        col("source", Text, 18),
        col("recorded_by", Text, 16),
    ],
};

pub const RUNS: TableSpec = TableSpec {
    export: "service_request",
    name: "runs",
    shape: Shape::Rows,
    columns: &[
        col("sample_id", Text, 24),
        col("run_id", Text, 38),
        col("protocol_id", Text, 16),
        col("protocol_version", Text, 10),
        col("bench_id", Text, 14),
        col("gateway_id", Text, 14),
        col("state", Text, 12),
        unit("started_at", Time, "UTC", 24),
        unit("ended_at", Time, "UTC", 24),
        col("simulated", Boolean, 10),
        col("verdict", Text, 12),
        col("final_verdict", Text, 12),
    ],
};

pub const CERTIFICATES: TableSpec = TableSpec {
    export: "service_request",
    name: "certificates",
    shape: Shape::Rows,
    columns: &[
        col("certificate_id", Text, 22),
        col("kind", Text, 10),
        col("subject", Text, 24),
        col("state", Text, 12),
        unit("issued_at", Time, "UTC", 24),
        unit("expires_at", Time, "UTC", 24),
        col("simulated", Boolean, 10),
        col("run_ids", Text, 40),
        col("supersedes", Text, 22),
        col("superseded_by", Text, 22),
        col("revocation_reason", Text, 30),
        unit("revoked_at", Time, "UTC", 24),
    ],
};

/// Every table, in the order the files hold them.
pub const TABLES: &[&TableSpec] = &[
    &RUN,
    &CRITERIA,
    &READINGS,
    &REQUEST,
    &TRANSITIONS,
    &SAMPLES,
    &INSPECTIONS,
    &OBSERVATIONS,
    &RUNS,
    &CERTIFICATES,
];

/// The tables of one export, in file order.
pub fn of(export: &str) -> impl Iterator<Item = &'static TableSpec> + '_ {
    TABLES.iter().copied().filter(move |t| t.export == export)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/exports.md has a section per table with a row per column
    /// (`| \`name\` | kind | unit |`), and nothing else.
    #[test]
    fn the_documented_columns_are_these() {
        let doc = include_str!("../../../docs/exports.md");
        for t in TABLES {
            let heading = format!("### `{}` table `{}`", t.export, t.name);
            let at = doc
                .find(&heading)
                .unwrap_or_else(|| panic!("docs/exports.md has no {heading:?}"));
            let section = &doc[at + heading.len()..];
            let section = &section[..section.find("\n### ").unwrap_or(section.len())];
            let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| `")).collect();
            assert_eq!(rows.len(), t.columns.len(), "{heading}: {rows:?}");
            for (c, row) in t.columns.iter().zip(&rows) {
                let want = format!(
                    "| `{}` | {} | {} |",
                    c.name,
                    c.kind.as_str(),
                    c.unit.unwrap_or("")
                );
                assert!(
                    row.starts_with(&want),
                    "{heading}: {row:?} should start {want:?}"
                );
            }
        }
    }

    #[test]
    fn names_are_unique_and_headers_fit() {
        for t in TABLES {
            let mut seen = std::collections::BTreeSet::new();
            for c in t.columns {
                assert!(seen.insert(c.name), "{} has {} twice", t.name, c.name);
                assert!(c.width > 0);
            }
        }
        assert_eq!(of("run").count(), 3);
        assert_eq!(of("service_request").count(), 7);
    }
}
