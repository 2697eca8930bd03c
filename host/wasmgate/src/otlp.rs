//! The gateway's spans, exported over OTLP/HTTP (JSON) by the OpenTelemetry SDK's batch
//! processor: one server span per routed request, in the caller's trace (or the one the
//! gateway started), with the span id the backend was told as its parent.

use anyhow::{Context, Result};
use opentelemetry::KeyValue;
use opentelemetry::trace::{
    Span, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
    TracerProvider,
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider};
use std::time::Duration;
use wasmgate_proxy::access_log::{RequestSpan, SpanSink};

pub struct OtlpSpans {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
}

impl OtlpSpans {
    /// Spans go to `endpoint` (`http://collector:4318/v1/traces`), in batches at least every
    /// `flush`.
    pub fn new(endpoint: &str, flush: Duration) -> Result<OtlpSpans> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(endpoint)
            .build()
            .with_context(|| format!("gateway.otlp.endpoint `{endpoint}`"))?;
        let batches = BatchConfigBuilder::default().with_scheduled_delay(flush).build();
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batches).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(Resource::builder().with_service_name("wasmgate").build())
            .build();
        Ok(OtlpSpans { tracer: provider.tracer("wasmgate"), provider })
    }

    /// Send what is waiting (at shutdown).
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }
}

impl SpanSink for OtlpSpans {
    fn record(&self, s: RequestSpan<'_>) {
        let flags = if s.trace.flags & 1 == 1 { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let trace_id = TraceId::from(s.trace.trace_id);
        let parent = match s.trace.parent_id {
            Some(parent) => {
                let remote =
                    SpanContext::new(trace_id, SpanId::from(parent), flags, true, TraceState::default());
                opentelemetry::Context::new().with_remote_span_context(remote)
            }
            None => opentelemetry::Context::new(),
        };
        let mut builder = self
            .tracer
            .span_builder(format!("{} {}", s.method, s.api))
            .with_kind(SpanKind::Server)
            .with_start_time(s.start)
            .with_attributes([
                KeyValue::new("http.request.method", s.method.to_string()),
                KeyValue::new("url.path", s.path.to_string()),
                KeyValue::new("http.response.status_code", i64::from(s.status)),
                KeyValue::new("wasmgate.api", s.api.to_string()),
                KeyValue::new("wasmgate.environment", s.environment.to_string()),
            ]);
        // The ids the backend was told: its span's parent is this one.
        builder.trace_id = Some(trace_id);
        builder.span_id = Some(SpanId::from(s.trace.span_id));
        let mut span = builder.start_with_context(&self.tracer, &parent);
        if s.status >= 500 {
            span.set_status(Status::error(s.error_code.to_string()));
        }
        span.end_with_timestamp(s.end);
    }
}
