//! Metric names in one place per daemon. Each daemon lists its metrics once
//! with [`metric_names!`](crate::metric_names!): a `pub const` per name for
//! the `metrics::counter!`/`gauge!`/`histogram!` calls, and an `ALL` table
//! that registers the help text (so `/metrics` carries `# HELP` lines) and
//! that the docs test compares with docs/metrics.md. A name typed twice can
//! drift; a name written once cannot.

/// The instrument type, as `docs/metrics.md` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric a daemon exposes.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    /// Label keys; empty for a single series.
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

/// Metrics of this crate, exposed by every daemon that uses its logging.
pub const LOG_LINES_SUPPRESSED_TOTAL: &str = "log_lines_suppressed_total";
/// Main loops (or work in flight) that missed their beat (`crate::service`).
pub const STALLED_LOOPS: &str = "stalled_loops";
/// `WATCHDOG=1` pings sent to systemd.
pub const WATCHDOG_PINGS_TOTAL: &str = "watchdog_pings_total";
/// Spans the OTLP exporter delivered (`crate::telemetry`).
pub const OTEL_SPANS_EXPORTED_TOTAL: &str = "otel_spans_exported_total";
/// Spans the OTLP exporter could not deliver (collector down, timeout).
pub const OTEL_SPANS_FAILED_TOTAL: &str = "otel_spans_failed_total";

/// The table for this crate's own metrics (see [`LOG_LINES_SUPPRESSED_TOTAL`]).
pub const COMMON: &[Metric] = &[
    Metric {
        name: LOG_LINES_SUPPRESSED_TOTAL,
        kind: Kind::Counter,
        labels: &[],
        help: "Log lines dropped because one log statement repeated too fast.",
    },
    Metric {
        name: STALLED_LOOPS,
        kind: Kind::Gauge,
        labels: &[],
        help: "Main loops or work in flight that missed their beat; while above 0 no systemd watchdog ping is sent.",
    },
    Metric {
        name: WATCHDOG_PINGS_TOTAL,
        kind: Kind::Counter,
        labels: &[],
        help: "WATCHDOG=1 pings sent to systemd (only while every main loop makes progress).",
    },
    Metric {
        name: OTEL_SPANS_EXPORTED_TOTAL,
        kind: Kind::Counter,
        labels: &[],
        help: "Trace spans delivered to the OTLP collector ([telemetry]); stays 0 with traces off.",
    },
    Metric {
        name: OTEL_SPANS_FAILED_TOTAL,
        kind: Kind::Counter,
        labels: &[],
        help: "Trace spans the OTLP exporter could not deliver (collector down or slow); they are dropped.",
    },
];

/// Registers every metric's help text with the installed recorder, and
/// creates each unlabelled counter at zero: a counter that appears only on
/// its first increment makes "never happened" look like "not measured", and
/// `rate()` misses the first event. Gauges and labelled series are left to
/// the code that knows their values (a zero gauge or an invented label value
/// would be a false reading). Without a recorder this does nothing.
pub fn describe(all: &[Metric]) {
    for m in all {
        match m.kind {
            Kind::Counter => {
                metrics::describe_counter!(m.name, m.help);
                if m.labels.is_empty() {
                    metrics::counter!(m.name).increment(0);
                }
            }
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// Declares a daemon's metrics: `NAME = kind "name" [labels] "help";` per
/// metric gives `pub const NAME: &str` (documented with its help) and
/// `pub const ALL: &[Metric]`, so the constant and the table cannot diverge.
#[macro_export]
macro_rules! metric_names {
    ($($konst:ident = $kind:ident $name:literal [$($label:literal),* $(,)?] $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $konst: &str = $name;
        )*
        /// Every metric this daemon exposes, in docs/metrics.md order.
        pub const ALL: &[$crate::metric_names::Metric] = &[$(
            $crate::metric_names::Metric {
                name: $konst,
                kind: $crate::metric_names::Kind::$kind,
                labels: &[$($label),*],
                help: $help,
            },
        )*];
    };
}
