//! Process plumbing shared by `edge-agent`, `cloud-hub` and `instrument-sim`.

pub mod config;
pub mod daemon;
pub mod logging;
pub mod metric_names;
pub mod shutdown;

/// Installs the Prometheus metrics recorder for this process and returns the
/// handle that renders `/metrics`.
pub fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot install metrics recorder: {e}"))
}
