//! Logs and traces: the `tracing` subscriber (pretty or JSON lines on
//! stderr, colours only on a terminal) and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, OpenTelemetry export of the spans
//! over OTLP/HTTP (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the
//! default, or `http/json`). The SDK reads the other standard variables
//! itself: `OTEL_TRACES_SAMPLER`/`_ARG`, `OTEL_BSP_SCHEDULE_DELAY`, …
//!
//! Also the trace context as it travels inside committed records (a W3C
//! `traceparent`): [`traceparent`] of a span, and [`follow`] on the
//! instance that receives it, so one edit is one trace across instances.
//! Without export both are no-ops (no context, nothing added to records).
//!
//! Owns: [`Telemetry`], [`init`], [`traceparent`], [`follow`]. The only
//! module touching `opentelemetry`. Must not import: axum, sqlx, redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Whether spans are exported: when not, the edit path makes none.
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// What [`init`] set up; [`Telemetry::shutdown`] flushes spans at exit.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Export what is still buffered (at shutdown).
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
    }

    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

/// The OTLP exporter, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces
/// one) is set; `Err` says why it could not be built.
fn provider(instance: &str) -> Result<Option<SdkTracerProvider>, String> {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(None);
    }
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
        Ok("http/json") => Protocol::HttpJson,
        Ok("http/protobuf") | Err(_) => Protocol::HttpBinary,
        Ok(other) => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported (http/protobuf or http/json)"
            ))
        }
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()
        .map_err(|e| format!("OTLP exporter: {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "tandem".to_owned());
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance.to_owned()),
        ])
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

/// Install the subscriber: `filter` (EnvFilter syntax), `json` lines or
/// pretty text, coloured only when stderr is a terminal; spans exported
/// when OTLP is configured. Span fields (`trace_id` on the edit's spans)
/// appear in JSON lines.
pub fn init(filter: &str, json: bool, instance: &str) -> Telemetry {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // RUST_LOG filters the log lines only; exported spans are Tandem's own
    // at info, whatever is logged.
    let fmt = if json {
        fmt.json()
            .with_current_span(true)
            .with_filter(filter)
            .boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let spans =
        tracing_subscriber::filter::Targets::new().with_target("tandem", tracing::Level::INFO);
    let (provider, error) = match provider(instance) {
        Ok(p) => (p, None),
        Err(e) => (None, Some(e)),
    };
    let otel = provider.as_ref().map(|p| {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("tandem"))
            .with_filter(spans)
    });
    tracing_subscriber::registry().with(fmt).with(otel).init();
    if let Some(e) = error {
        tracing::error!(error = %e, "trace export is off");
    } else if provider.is_some() {
        tracing::info!("exporting traces over OTLP");
    }
    Telemetry { provider }
}

/// `span`'s context as a W3C `traceparent`, when it is being traced.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Make `span` a child of the remote context `traceparent` (from another
/// instance, or a REST request), and note its trace id in its
/// `trace_id` field. Nothing when export is off or the header is invalid.
pub fn follow(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), tp.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
    note_ids(span);
}

/// Record the span's trace and span ids in its `trace_id`/`span_id`
/// fields (when it declares them and is traced), so log lines in it lead
/// to the trace.
pub fn note_ids(span: &tracing::Span) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
        span.record("span_id", tracing::field::display(sc.span_id()));
    }
}

/// The root span of an op received on a socket: its trace starts here
/// (sampling is decided once, now). None when not exporting.
pub fn receipt_span(doc: &str, seq: u64) -> tracing::Span {
    if !exporting() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(parent: None, "op.receive", doc = %doc, seq,
        trace_id = tracing::field::Empty, span_id = tracing::field::Empty);
    note_ids(&span);
    span
}

/// The span a REST edit continues: the request's (see the web layer's
/// trace layer). None when not exporting.
pub fn edit_span() -> tracing::Span {
    if exporting() {
        tracing::Span::current()
    } else {
        tracing::Span::none()
    }
}

/// The span of fanning a committed record out to this instance's sockets,
/// in the trace of the edit that made it (on every instance). None when
/// the record is not traced.
pub fn fanout_span(version: u64, traceparent: Option<&str>) -> tracing::Span {
    if traceparent.is_none() || !exporting() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(parent: None, "op.fanout", version,
        trace_id = tracing::field::Empty, span_id = tracing::field::Empty);
    follow(&span, traceparent);
    span
}
