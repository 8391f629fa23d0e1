//! Optional OpenTelemetry trace export over OTLP/HTTP (`tracing:` in the config).
//!
//! When enabled, every request gets a server span that continues the client's W3C
//! `traceparent` (or starts a trace), carries the request ID, route, pool, backend
//! and status, and has one child span per upstream attempt. The backend receives a
//! `traceparent` naming Fulcrum's span as its parent. When disabled, nothing of this
//! runs and `traceparent` passes through untouched.

use crate::config::{OtlpProtocol, TracingConfig};
use http::HeaderValue;
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags,
    TraceId, TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, Span,
};
use std::time::{Duration, Instant, SystemTime};

pub struct Otlp {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    pub config: TracingConfig,
}

/// What one request records for its spans.
pub struct RequestTrace {
    pub span: Span,
    start_system: SystemTime,
    start_instant: Instant,
    pub attempts: Vec<Attempt>,
}

pub struct Attempt {
    pub backend: String,
    pub start: Instant,
    pub end: Instant,
    pub outcome: String,
}

impl RequestTrace {
    fn at(&self, t: Instant) -> SystemTime {
        self.start_system + t.saturating_duration_since(self.start_instant)
    }
}

/// Parses `00-<32 hex>-<16 hex>-<2 hex>`.
fn parse_traceparent(v: &HeaderValue) -> Option<SpanContext> {
    let s = v.to_str().ok()?;
    let mut parts = s.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    let trace_id = TraceId::from_hex(trace)
        .ok()
        .filter(|t| *t != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(span)
        .ok()
        .filter(|s| *s != SpanId::INVALID)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

impl Otlp {
    pub fn start(config: &TracingConfig) -> Result<Otlp, String> {
        let endpoint = format!("{}/v1/traces", config.otlp_endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_protocol(match config.protocol {
                OtlpProtocol::Protobuf => Protocol::HttpBinary,
                OtlpProtocol::Json => Protocol::HttpJson,
            })
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
        let exporter = OnTokio {
            inner: std::sync::Arc::new(exporter),
            handle: tokio::runtime::Handle::try_current()
                .map_err(|e| format!("no async runtime: {e}"))?,
        };
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(Duration::from_millis(500))
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("fulcrum");
        Ok(Otlp {
            provider,
            tracer,
            config: config.clone(),
        })
    }

    /// Starts the server span of a request; returns it and the `traceparent` to
    /// send upstream.
    pub fn start_request(
        &self,
        name: String,
        incoming: Option<&HeaderValue>,
    ) -> (RequestTrace, Option<HeaderValue>) {
        let parent = match incoming.and_then(parse_traceparent) {
            Some(sc) => Context::new().with_remote_span_context(sc),
            None => Context::new(),
        };
        let start_system = SystemTime::now();
        let span = self.tracer.build_with_context(
            SpanBuilder::from_name(name)
                .with_kind(SpanKind::Server)
                .with_start_time(start_system),
            &parent,
        );
        let sc = span.span_context().clone();
        let header = HeaderValue::from_str(&format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        ))
        .ok();
        (
            RequestTrace {
                span,
                start_system,
                start_instant: Instant::now(),
                attempts: Vec::new(),
            },
            header,
        )
    }

    /// Ends a request's spans (attempts as children of the server span).
    pub fn finish(&self, mut t: RequestTrace, attrs: Vec<KeyValue>, status: u16) {
        let parent = Context::new().with_remote_span_context(t.span.span_context().clone());
        for a in std::mem::take(&mut t.attempts) {
            let mut child = self.tracer.build_with_context(
                SpanBuilder::from_name(format!("upstream {}", a.backend))
                    .with_kind(SpanKind::Client)
                    .with_start_time(t.at(a.start))
                    .with_attributes(vec![
                        KeyValue::new("server.address", a.backend.clone()),
                        KeyValue::new("fulcrum.outcome", a.outcome.clone()),
                    ]),
                &parent,
            );
            if a.outcome != "ok" {
                child.set_status(Status::error(a.outcome.clone()));
            }
            child.end_with_timestamp(t.at(a.end));
        }
        t.span.set_attributes(attrs);
        if status >= 500 {
            t.span.set_status(Status::error(format!("status {status}")));
        }
        let end = t.at(Instant::now());
        t.span.end_with_timestamp(end);
    }
}

/// Runs each export on the Tokio runtime: the batch processor calls exporters from
/// its own thread, but the OTLP/HTTP client needs a Tokio reactor.
#[derive(Debug)]
struct OnTokio {
    inner: std::sync::Arc<opentelemetry_otlp::SpanExporter>,
    handle: tokio::runtime::Handle,
}

impl opentelemetry_sdk::trace::SpanExporter for OnTokio {
    fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send {
        let inner = self.inner.clone();
        let task = self.handle.spawn(async move { inner.export(batch).await });
        async move {
            match task.await {
                Ok(r) => r,
                Err(e) => Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    e.to_string(),
                )),
            }
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        if let Some(inner) = std::sync::Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

impl Drop for Otlp {
    fn drop(&mut self) {
        // Flushing blocks: do it off the async threads.
        let provider = self.provider.clone();
        std::thread::spawn(move || {
            let _ = provider.shutdown_with_timeout(Duration::from_secs(5));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing() {
        let ok =
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let sc = parse_traceparent(&ok).unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(sc.is_sampled());
        for bad in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "garbage",
        ] {
            assert!(
                parse_traceparent(&HeaderValue::from_static(bad)).is_none(),
                "{bad}"
            );
        }
    }
}
