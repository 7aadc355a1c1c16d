//! One JSON object per line, with the fields of the event and of every span
//! it happens in as top-level keys. tracing-subscriber's own JSON format
//! nests span fields under `span` / `spans`, where `jq 'select(.gateway ==
//! "gw-7")'`, Loki's `| json` and journald exports cannot filter on them
//! without knowing the span's name.

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// The fmt layer writing flat JSON lines to `writer`; `fixed` fields go on
/// every line (the agent's `gateway`: its pollers and uplink run in tasks
/// of their own, outside any span that could carry it).
pub fn layer<S, W>(
    writer: W,
    fixed: Vec<(&'static str, String)>,
) -> tracing_subscriber::fmt::Layer<S, JsonFields, FlatJson, W>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(FlatJson { fixed })
        .with_ansi(false)
        .with_writer(writer)
}

/// Keys every line has; a field of the same name in a span or event is
/// written as `field.<name>` so it cannot overwrite them.
const RESERVED: [&str; 6] = [
    "timestamp",
    "level",
    "target",
    "span",
    "trace_id",
    "span_id",
];

pub struct FlatJson {
    fixed: Vec<(&'static str, String)>,
}

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        line.insert("timestamp".into(), Value::String(time));
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_string()));
        let mut innermost_id = None;
        let mut fields: Map<String, Value> = self
            .fixed
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect();
        if let Some(scope) = ctx.event_scope() {
            let mut innermost = None;
            // Outermost first, so an inner span's field wins over an outer one's.
            for span in scope.from_root() {
                innermost = Some(span.name());
                innermost_id = Some(span.id());
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<JsonFields>>()
                    && let Ok(Value::Object(m)) = serde_json::from_str::<Value>(f.as_str())
                {
                    fields.extend(m);
                }
            }
            if let Some(name) = innermost {
                line.insert("span".into(), Value::String(name.into()));
            }
        }
        // With traces on, the line names its trace and span, so a log
        // search leads to the trace (Grafana: Loki's derived field to Tempo).
        // No extension borrow is held here, as get_otel_context requires.
        if let Some(id) = innermost_id {
            tracing::dispatcher::get_default(|d| {
                use opentelemetry::trace::TraceContextExt;
                if let Some(cx) = tracing_opentelemetry::get_otel_context(&id, d) {
                    let span = cx.span();
                    let sc = span.span_context();
                    if sc.is_valid() {
                        line.insert("trace_id".into(), sc.trace_id().to_string().into());
                        line.insert("span_id".into(), sc.span_id().to_string().into());
                    }
                }
            });
        }
        event.record(&mut Visitor(&mut fields));
        for (k, v) in fields {
            // OpenTelemetry's control fields (`otel.name`, `otel.kind`) are for the exporter.
            if k.starts_with("otel.") {
                continue;
            }
            if RESERVED.contains(&k.as_str()) {
                line.insert(format!("field.{k}"), v);
            } else {
                line.insert(k, v);
            }
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

struct Visitor<'a>(&'a mut Map<String, Value>);

impl Visit for Visitor<'_> {
    fn record_f64(&mut self, f: &Field, v: f64) {
        let v = serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number);
        self.0.insert(f.name().into(), v);
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_error(&mut self, f: &Field, v: &(dyn std::error::Error + 'static)) {
        self.0.insert(f.name().into(), crate::error_chain(v).into());
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        self.0.insert(f.name().into(), format!("{v:?}").into());
    }
}

#[cfg(test)]
mod tests {
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
    fn span_fields_are_top_level_keys_and_the_innermost_wins() {
        let sink = Sink::default();
        let w = sink.clone();
        let subscriber = tracing_subscriber::registry().with(super::layer(
            move || w.clone(),
            vec![("site", "s-1".into())],
        ));
        tracing::subscriber::with_default(subscriber, || {
            let stream = tracing::info_span!("grpc_stream", gateway = "gw-1", request_id = "r-1");
            let _s = stream.enter();
            let batch = tracing::info_span!("ingest_batch", request_id = "r-2", level = "x");
            let _b = batch.enter();
            tracing::info!(device = "pm-1", readings = 3u64, "stored");
        });
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["gateway"], "gw-1");
        assert_eq!(v["request_id"], "r-2");
        assert_eq!(v["device"], "pm-1");
        assert_eq!(v["readings"], 3);
        assert_eq!(v["message"], "stored");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["field.level"], "x");
        assert_eq!(v["span"], "ingest_batch");
        assert_eq!(v["site"], "s-1");
    }
}
