//! The part of `main` every daemon shares: logging, traces, metrics, runtime, exit code.

use crate::logging::{self, LogFormat};
use crate::telemetry::{self, TelemetryConfig};
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

/// Starts logging, the trace exporter (when `traces` names one) and the
/// metrics recorder, then runs `body` on a multi-threaded runtime until it
/// returns; queued spans are flushed before the runtime stops. Metrics that
/// cannot be installed are logged and skipped: they must never keep a daemon
/// from running. `log_fields` go on every JSON log line.
pub fn run<F, Fut>(
    service: &'static str,
    format: LogFormat,
    default_filter: &str,
    log_fields: Vec<(&'static str, String)>,
    traces: &TelemetryConfig,
    body: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Option<PrometheusHandle>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    // The exporter's gRPC channel lives on this runtime.
    let (exporter, layer) = {
        let _in_rt = rt.enter();
        telemetry::start(traces, service)?
    };
    logging::init(format, default_filter, layer, log_fields);
    let metrics = crate::install_metrics()
        .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
        .ok();
    if let Some(e) = &traces.otlp_endpoint {
        tracing::info!(endpoint = %e, "exporting traces over OTLP");
    }
    let result = rt.block_on(body(metrics));
    drop(exporter);
    result
}
