//! Process plumbing shared by `edge-agent`, `cloud-hub` and `instrument-sim`.

pub mod config;
pub mod daemon;
pub mod json_fields;
pub mod logging;
pub mod metric_names;
pub mod notify;
pub mod progress;
pub mod request_id;
pub mod role;
pub mod service;
pub mod shutdown;
pub mod telemetry;

/// An error with its causes on one line, each said once: wrappers such as
/// tonic's "transport error" keep the reason in their sources, and many
/// errors repeat their source's text in their own.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

/// Installs the Prometheus metrics recorder for this process and returns the
/// handle that renders `/metrics`.
pub fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot install metrics recorder: {e}"))
}
