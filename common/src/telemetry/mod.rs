//! Traces over OTLP (`[telemetry]`, off by default): the daemons' `tracing`
//! spans exported to an OpenTelemetry collector (Tempo, Jaeger, the
//! OpenTelemetry Collector) over OTLP/gRPC, and the W3C trace context that
//! carries a gateway's trace into the hub (`ReadingBatch.traceparent`).
//!
//! Off, nothing is built: no exporter, no thread, no connection, and spans
//! cost what they cost for the logs.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;

/// `[telemetry]` of both daemons.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC endpoint of a collector (`http://tempo:4317`); none: no traces.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

/// A W3C `traceparent` is 55 characters; anything much longer is not one.
const MAX_TRACEPARENT: usize = 128;
/// How long one export may take before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

impl TelemetryConfig {
    /// `Err((key, why))` for `common::config::load_toml_validated`.
    pub fn validate(&self, prefix: &str) -> Result<(), (String, String)> {
        if let Some(e) = &self.otlp_endpoint {
            let rest = e.strip_prefix("http://").ok_or_else(|| {
                (
                    format!("{prefix}.otlp_endpoint"),
                    format!("{e:?}: give http://HOST:PORT of an OTLP/gRPC receiver (TLS to the collector is not supported: run it on the host or a trusted network)"),
                )
            })?;
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err((format!("{prefix}.otlp_endpoint"), format!("{e:?}: no host")));
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the OTLP exporter to {endpoint}: {message}")]
    Exporter { endpoint: String, message: String },
}

/// The layer that hands `tracing` spans to OpenTelemetry ([`crate::logging::init`]).
pub type Layer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The running exporter; dropping it flushes the spans still queued (give
/// it the runtime it was built on: drop it before the runtime).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown_with_timeout(EXPORT_TIMEOUT);
        }
    }
}

/// Builds the exporter when `cfg` names an endpoint. Must run inside a tokio
/// runtime (the gRPC channel's worker is a task); it connects lazily, so a
/// collector that is down costs failed exports (counted), never the start.
pub fn start(
    cfg: &TelemetryConfig,
    service: &'static str,
) -> Result<(Telemetry, Option<Layer>), TelemetryError> {
    let Some(endpoint) = &cfg.otlp_endpoint else {
        return Ok((Telemetry { provider: None }, None));
    };
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .with_compression(opentelemetry_otlp::Compression::Gzip)
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: endpoint.clone(),
            message: e.to_string(),
        })?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(Counted(exporter))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer(service);
    let layer: Layer = Box::new(tracing_opentelemetry::layer().with_tracer(tracer));
    Ok((
        Telemetry {
            provider: Some(provider),
        },
        Some(layer),
    ))
}

/// The exporter, counting what it sends and what fails (`otel_spans_*`).
#[derive(Debug)]
struct Counted(opentelemetry_otlp::SpanExporter);

impl SpanExporter for Counted {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let r = self.0.export(batch).await;
        let name = match r {
            Ok(()) => crate::metric_names::OTEL_SPANS_EXPORTED_TOTAL,
            Err(_) => crate::metric_names::OTEL_SPANS_FAILED_TOTAL,
        };
        metrics::counter!(name).increment(n);
        r
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource)
    }
}

/// The W3C `traceparent` of `span`, to send along with the work it covers;
/// empty when traces are off (the span has no OpenTelemetry context).
pub fn traceparent(span: &tracing::Span) -> String {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent").unwrap_or_default()
}

/// Makes `span` continue the trace `traceparent` names (from a peer), or
/// start a trace of its own: without this a span inside a long-lived one
/// (a batch inside a gateway's stream of hours) would make one endless
/// trace. An empty, oversized or malformed value counts as none: the
/// context is only a hint for tracing, never a reason to refuse work.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut parent = opentelemetry::Context::new();
    if !traceparent.is_empty() && traceparent.len() <= MAX_TRACEPARENT {
        let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
        let cx = TraceContextPropagator::new().extract(&carrier);
        if cx.span().span_context().is_valid() {
            parent = cx;
        }
    }
    // Err only when traces are off (no OpenTelemetry layer): nothing to do.
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_endpoints_with_a_host_are_accepted() {
        let c = |e: &str| TelemetryConfig {
            otlp_endpoint: Some(e.into()),
        };
        assert!(c("http://127.0.0.1:4317").validate("telemetry").is_ok());
        assert!(TelemetryConfig::default().validate("telemetry").is_ok());
        for bad in ["https://tempo:4317", "tempo:4317", "http://", "http://a b"] {
            let (key, _) = c(bad).validate("telemetry").unwrap_err();
            assert_eq!(key, "telemetry.otlp_endpoint");
        }
    }

    #[test]
    fn without_an_exporter_a_span_has_no_traceparent() {
        let span = tracing::info_span!("x");
        assert_eq!(traceparent(&span), "");
        // And a garbage context is ignored, not a panic.
        continue_trace(&span, "00-zz");
    }
}
