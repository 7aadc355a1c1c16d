//! Structured logs via `tracing`: human-readable on a terminal, JSON lines
//! under systemd (journald) or on request.
//!
//! In JSON every field an SRE filters on is a top-level key of the line:
//! the event's own fields and those of every span it happens in (`gateway`
//! and `request_id` of an ingest stream, `request_id`, `http.route` of a
//! REST request), innermost winning. Field names: docs/operations.md.

mod json;

use serde::Deserialize;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stderr is the journal (systemd's `JOURNAL_STREAM` names
    /// stderr's device and inode), human otherwise.
    #[default]
    Auto,
    Human,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(LogFormat::Auto),
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected auto, human or json)"
            )),
        }
    }
}

impl LogFormat {
    /// `Auto` decided for this process: JSON when systemd connected stderr
    /// to the journal, human otherwise. The others stay as they are.
    pub fn resolve(self) -> LogFormat {
        match self {
            LogFormat::Auto if stderr_is_journal() => LogFormat::Json,
            LogFormat::Auto => LogFormat::Human,
            other => other,
        }
    }
}

/// systemd sets `JOURNAL_STREAM=<device>:<inode>` when it connects stdout or
/// stderr to the journal. The variable is inherited by children whose
/// stderr may go elsewhere (a shell started from the service, a pipe), so
/// it counts only when it names the file stderr really is.
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}

/// Starts logging to stderr. `RUST_LOG` overrides `default_filter`. Each
/// log statement (call site) may print `RateLimit::LINES` lines per
/// `RateLimit::WINDOW`; beyond that its lines are counted, not printed.
/// `traces`: the OpenTelemetry layer when `[telemetry]` exports traces
/// (crate::telemetry); spans reach it through the same filter as logs.
/// `fixed`: fields on every JSON line (the agent's `gateway`).
pub fn init(
    format: LogFormat,
    default_filter: &str,
    traces: Option<crate::telemetry::Layer>,
    fixed: Vec<(&'static str, String)>,
) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The traces layer sits right on the registry (its boxed type names
    // that); the filter and the rate limit still apply to it: both decide
    // for every layer.
    let base = tracing_subscriber::registry()
        .with(traces)
        .with(filter)
        .with(RateLimit::default());
    // try_init: a second call (tests running several entry points in one process) is harmless.
    let _ = match format.resolve() {
        LogFormat::Json => base.with(json::layer(std::io::stderr, fixed)).try_init(),
        _ => base
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

/// Bounds how fast one log statement can write. An error that repeats in a
/// tight loop (an accept loop out of file descriptors logged 175,000 lines a
/// second in a field trial) must not fill the disk or starve the process:
/// past the budget its lines are dropped, counted in
/// `log_lines_suppressed_total`, and summed up in one line when the next
/// window opens.
pub struct RateLimit {
    slots: std::sync::Mutex<std::collections::HashMap<tracing::callsite::Identifier, Slot>>,
}

struct Slot {
    start: std::time::Instant,
    printed: u32,
    suppressed: u64,
}

const SELF_TARGET: &str = "qi_common::logging";

impl RateLimit {
    pub const LINES: u32 = 50;
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            slots: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

enum Say {
    Nothing,
    Starting,
    Suppressed(u64),
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RateLimit {
    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let meta = event.metadata();
        if meta.target() == SELF_TARGET {
            return true;
        }
        let now = std::time::Instant::now();
        let (allowed, say) = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let slot = slots.entry(meta.callsite()).or_insert(Slot {
                start: now,
                printed: 0,
                suppressed: 0,
            });
            let mut say = Say::Nothing;
            if now.duration_since(slot.start) >= Self::WINDOW {
                if slot.suppressed > 0 {
                    say = Say::Suppressed(slot.suppressed);
                }
                *slot = Slot {
                    start: now,
                    printed: 0,
                    suppressed: 0,
                };
            }
            if slot.printed < Self::LINES {
                slot.printed += 1;
                (true, say)
            } else {
                slot.suppressed += 1;
                if slot.suppressed == 1 {
                    say = Say::Starting;
                }
                (false, say)
            }
        };
        // Logged with the lock released: these events come back through here.
        let source = format_args!(
            "{}:{}",
            meta.file().unwrap_or(meta.target()),
            meta.line().unwrap_or(0)
        );
        match say {
            Say::Nothing => {}
            Say::Starting => tracing::warn!(
                target: SELF_TARGET,
                %source,
                "a log statement repeats too fast: its lines are suppressed for the rest of this {:?} window",
                Self::WINDOW
            ),
            Say::Suppressed(n) => {
                tracing::warn!(target: SELF_TARGET, %source, suppressed = n, "repeated log lines were suppressed")
            }
        }
        if !allowed {
            metrics::counter!(crate::metric_names::LOG_LINES_SUPPRESSED_TOTAL).increment(1);
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::prelude::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_log_statement_in_a_tight_loop_prints_only_its_budget() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::registry()
            .with(RateLimit::default())
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || writer.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..10_000 {
                tracing::warn!(i, "accept failed");
            }
            tracing::info!("another statement still prints");
        });
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            out.matches("accept failed").count(),
            RateLimit::LINES as usize
        );
        assert!(out.contains("another statement still prints"));
    }
}
