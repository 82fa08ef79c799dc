//! Logs and traces: the `tracing` subscriber (text or JSON lines on stderr, filtered by
//! `--log-level` or `RUST_LOG`, coloured only on a terminal and never with `NO_COLOR`) and, with `--otlp-endpoint`, OpenTelemetry export of the
//! RPC spans over OTLP/gRPC with W3C trace-context propagation.
//!
//! What is never logged: passwords and tokens are not span or event fields anywhere; the
//! `authorization` metadata is read only by [`crate::auth`], and store URLs are logged
//! with their password masked.

use http::HeaderMap;
use opentelemetry::{propagation::Extractor, trace::TracerProvider as _};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    filter::Targets, layer::SubscriberExt as _, util::SubscriberInitExt as _, EnvFilter, Layer,
};

use crate::config::{LogFormat, ServeConfig};

/// Keeps the span exporter alive; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered (at shutdown).
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "flushing OpenTelemetry spans failed");
            }
        }
    }
}

/// Installs the process-wide subscriber. Must run inside the tokio runtime when
/// `--otlp-endpoint` is set (the OTLP client lives on it).
pub fn init(config: &ServeConfig) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let ansi = colour(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR"),
    );
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match config.log_format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    }
    .with_filter(filter);
    let mut provider = None;
    let otel = match &config.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig as _;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
            let p = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name("activity-hub").build())
                .build();
            let layer = otel_layer(&p);
            provider = Some(p);
            Some(layer)
        }
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| format!("installing the log subscriber: {e}"))?;
    Ok(Telemetry { provider })
}

/// Whether log lines carry ANSI colours: only when stderr is a terminal (a log file or a
/// pipe to a collector gets plain text), and never when `NO_COLOR` is set to anything but
/// the empty string (<https://no-color.org>).
fn colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The layer that turns the hub's spans (RPC spans included) into OpenTelemetry spans of
/// `provider`, independent of the log filter; also installs the W3C trace-context
/// propagator read by [`set_parent_from`].
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("activity-hub"))
        .with_filter(
            Targets::new()
                .with_target("activity_hub::rpc", tracing::Level::DEBUG)
                .with_target("activity_hub", tracing::Level::INFO),
        )
}

/// Makes the remote span in a W3C `traceparent` (and `tracestate`) of `headers` the
/// parent of `span`.
pub fn set_parent_from(span: &Span, headers: &HeaderMap) {
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    let _ = span.set_parent(cx);
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR is unset");
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None), "a file or pipe gets no escapes");
        assert!(!colour(false, Some("1".into())));
    }
}
