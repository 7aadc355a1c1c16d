//! The part of `main` every daemon shares: logging, metrics, runtime, exit code.

use crate::logging::{self, LogFormat};
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::process::ExitCode;

/// Prints the whole error chain (`name: error: outer: inner`) and maps the result to an exit code.
pub fn exit_code(name: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Starts logging and the metrics recorder, then runs `body` on a
/// multi-threaded runtime until it returns. Metrics that cannot be installed
/// are logged and skipped: they must never keep a daemon from running.
pub fn run<F, Fut>(format: LogFormat, default_filter: &str, body: F) -> anyhow::Result<()>
where
    F: FnOnce(Option<PrometheusHandle>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    logging::init(format, default_filter);
    let metrics = crate::install_metrics()
        .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
        .ok();
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    rt.block_on(body(metrics))
}
