//! OpenTelemetry traces (`[telemetry] otlp_endpoint`): one span per model request with the
//! GenAI semantic conventions and triage's own attributes, a child span for classification and
//! one per upstream attempt (so retries and fallbacks show), and W3C `traceparent` taken from
//! the client and passed on to the upstream.
//!
//! Nothing here can slow a request: finished spans go into a bounded queue (a full queue drops
//! the span and counts it in `triage_trace_spans_dropped_total`), and one exporter thread sends
//! them in OTLP/HTTP protobuf batches on its own small runtime; a failed or timed-out export
//! drops its batch, counted the same way.
//!
//! Handlers put the request's trace in a task-local (`within`), so that the router and the
//! dispatcher open child spans (`child`) and the provider adds `traceparent` (`traceparent`)
//! without every signature in between carrying it.

use std::future::Future;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor,
};
use prometheus_client::metrics::counter::Counter;
use triage_core::catalog::{Model, Provider};
use triage_core::config::{ProviderKind, TelemetryConfig};

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry: cannot build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("telemetry: cannot start the exporter thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The tracer of a running server; `None` in `AppState` when no endpoint is configured.
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Telemetry {
    /// Starts the exporter thread when `[telemetry] otlp_endpoint` is set.
    pub fn start(
        config: &TelemetryConfig,
        dropped: Counter,
    ) -> Result<Option<Telemetry>, TelemetryError> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(None);
        };
        let timeout = Duration::from_millis(config.export_timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_http_client(ReqwestClient(client))
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(timeout)
            .with_headers(config.headers.clone().into_iter().collect())
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        exporter.set_resource(&resource);
        let processor = QueueProcessor::start(exporter, config, dropped)?;
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("triage");
        tracing::info!(endpoint = %endpoint, "exporting traces over OTLP/HTTP");
        Ok(Some(Telemetry { provider, tracer }))
    }

    /// A request's span, child of the client's `traceparent` if it sent one.
    pub fn request(&self, headers: &HeaderMap, endpoint: &'static str) -> RequestTrace {
        let parent =
            TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
        let span = self
            .tracer
            .span_builder("chat")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("gen_ai.operation.name", "chat"),
                KeyValue::new("triage.endpoint", endpoint),
            ])
            .start_with_context(&self.tracer, &parent);
        RequestTrace {
            cx: parent.with_span(span),
            tracer: self.tracer.clone(),
        }
    }

    /// Sends what is queued (tests, and shutdown).
    pub fn flush(&self) {
        if let Err(error) = self.provider.force_flush() {
            tracing::warn!("telemetry: flush failed: {error}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// A request's span and the tracer for its children.
#[derive(Clone)]
pub struct RequestTrace {
    cx: Context,
    tracer: SdkTracer,
}

tokio::task_local! {
    /// The span that a child opened in this task belongs under.
    static CURRENT: RequestTrace;
}

/// Runs `work` with `trace` as the current request (a no-op without one).
pub async fn within<F: Future>(trace: Option<RequestTrace>, work: F) -> F::Output {
    match trace {
        Some(trace) => CURRENT.scope(trace, work).await,
        None => work.await,
    }
}

/// A child span of the current request, live until [`Child::end`]; `None` when not tracing.
pub fn child(name: String, kind: SpanKind, attributes: Vec<KeyValue>) -> Option<Child> {
    CURRENT
        .try_with(|current| {
            let span = current
                .tracer
                .span_builder(name)
                .with_kind(kind)
                .with_attributes(attributes)
                .start_with_context(&current.tracer, &current.cx);
            Child(RequestTrace {
                cx: current.cx.with_span(span),
                tracer: current.tracer.clone(),
            })
        })
        .ok()
}

/// The span of one upstream attempt: GenAI client attributes for `model` on `provider`.
pub fn attempt(model: &Model, provider: &Provider, attempt: u32) -> Option<Child> {
    child(
        format!("chat {}", model.upstream),
        SpanKind::Client,
        vec![
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.request.model", model.upstream.clone()),
            KeyValue::new("gen_ai.provider.name", provider_name(provider)),
            KeyValue::new("server.address", host(&provider.base_url)),
            KeyValue::new("triage.model", model.id.clone()),
            KeyValue::new("triage.attempt", i64::from(attempt)),
        ],
    )
}

/// `traceparent` for a call made now: the current span's context, W3C format.
pub fn traceparent() -> Option<String> {
    CURRENT
        .try_with(|current| {
            let span = current.cx.span();
            let context = span.span_context();
            context.is_valid().then(|| {
                format!(
                    "00-{}-{}-{:02x}",
                    context.trace_id(),
                    context.span_id(),
                    context.trace_flags().to_u8()
                )
            })
        })
        .ok()
        .flatten()
}

/// A live child span.
pub struct Child(RequestTrace);

impl Child {
    /// Runs `work` with this span current, so calls made in it carry its `traceparent`.
    pub async fn scope<F: Future>(&self, work: F) -> F::Output {
        CURRENT.scope(self.0.clone(), work).await
    }

    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        self.0.cx.span().set_attribute(KeyValue::new(key, value));
    }

    /// Marks the span failed with `error_type` (`error.type` in the conventions).
    pub fn fail(&self, error_type: &str, message: String) {
        let span = self.0.cx.span();
        span.set_attribute(KeyValue::new("error.type", error_type.to_string()));
        span.set_status(Status::error(message));
    }

    pub fn end(self) {
        self.0.cx.span().end();
    }
}

/// What a finished request's span records.
pub struct Finish<'a> {
    pub request_id: &'a str,
    pub requested: &'a str,
    pub status: u16,
    /// The model that answered (or failed last), and its provider.
    pub model: Option<(&'a Model, Option<&'a Provider>)>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    pub fallbacks: &'a str,
    pub key_id: &'a str,
    pub stream: bool,
    /// For `auto`: profile, difficulty, top skill, tool need, the chosen model's predicted
    /// quality.
    pub auto: Option<AutoAttributes<'a>>,
}

pub struct AutoAttributes<'a> {
    pub profile: &'a str,
    pub difficulty: f64,
    pub top_skill: Option<&'a str>,
    pub tool_need: f64,
    pub predicted_quality: Option<f64>,
}

impl RequestTrace {
    /// Names the span for what was asked (`chat auto`, `chat openai/gpt-4o`), records the
    /// answer and ends it.
    pub fn finish(&self, f: Finish<'_>) {
        let span = self.cx.span();
        span.update_name(format!("chat {}", f.requested));
        let mut attributes = vec![
            KeyValue::new("gen_ai.request.model", f.requested.to_string()),
            KeyValue::new("http.response.status_code", i64::from(f.status)),
            KeyValue::new("triage.request_id", f.request_id.to_string()),
            KeyValue::new("triage.key_id", f.key_id.to_string()),
            KeyValue::new("triage.stream", f.stream),
        ];
        if let Some((model, provider)) = f.model {
            attributes.push(KeyValue::new(
                "gen_ai.response.model",
                model.upstream.clone(),
            ));
            attributes.push(KeyValue::new("triage.model", model.id.clone()));
            if let Some(provider) = provider {
                attributes.push(KeyValue::new(
                    "gen_ai.provider.name",
                    provider_name(provider),
                ));
            }
        }
        for (key, value) in [
            ("gen_ai.usage.input_tokens", f.input_tokens),
            ("gen_ai.usage.output_tokens", f.output_tokens),
        ] {
            if let Some(value) = value {
                attributes.push(KeyValue::new(key, value as i64));
            }
        }
        if let Some(cost) = f.cost_usd {
            attributes.push(KeyValue::new("triage.cost_usd", cost));
        }
        if !f.fallbacks.is_empty() {
            attributes.push(KeyValue::new("triage.fallbacks", f.fallbacks.to_string()));
        }
        if let Some(auto) = f.auto {
            attributes.push(KeyValue::new("triage.profile", auto.profile.to_string()));
            attributes.push(KeyValue::new("triage.difficulty", auto.difficulty));
            attributes.push(KeyValue::new("triage.tool_need", auto.tool_need));
            if let Some(skill) = auto.top_skill {
                attributes.push(KeyValue::new("triage.top_skill", skill.to_string()));
            }
            if let Some(quality) = auto.predicted_quality {
                attributes.push(KeyValue::new("triage.predicted_quality", quality));
            }
        }
        span.set_attributes(attributes);
        if f.status >= 500 || f.status == 499 {
            span.set_attribute(KeyValue::new("error.type", f.status.to_string()));
            span.set_status(Status::error(format!("status {}", f.status)));
        }
        span.end();
    }
}

/// `gen_ai.provider.name`: the conventions' name for the wire format's owner, or for an
/// OpenAI-compatible provider its configured name (`groq`, `deepseek`, a local `vllm`).
fn provider_name(provider: &Provider) -> String {
    match (provider.kind, provider.name.as_str()) {
        (ProviderKind::Anthropic, _) => "anthropic".into(),
        (ProviderKind::Gemini, _) => "gcp.gemini".into(),
        (ProviderKind::Openai, "mistral") => "mistral_ai".into(),
        (ProviderKind::Openai, "xai") => "x_ai".into(),
        (ProviderKind::Openai, name) => name.to_string(),
    }
}

fn host(base_url: &str) -> String {
    url::Url::parse(base_url)
        .ok()
        .and_then(|u| u.host_str().map(String::from))
        .unwrap_or_default()
}

/// The OTLP exporter's HTTP client: triage's reqwest, on the exporter thread's runtime.
#[derive(Debug)]
struct ReqwestClient(reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ReqwestClient {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let request = reqwest::Request::try_from(request)?;
        let response = self.0.execute(request).await?;
        let mut answer = opentelemetry_http::Response::builder().status(response.status());
        if let Some(headers) = answer.headers_mut() {
            *headers = response.headers().clone();
        }
        Ok(answer.body(response.bytes().await?)?)
    }
}

enum Message {
    Span(Box<SpanData>),
    Flush(SyncSender<()>),
    Shutdown(SyncSender<()>),
}

/// A span processor that never blocks: `on_end` puts the span in a bounded queue or drops it
/// (counted); one thread batches the queue and exports.
#[derive(Debug)]
struct QueueProcessor {
    queue: SyncSender<Message>,
    dropped: Counter,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl QueueProcessor {
    fn start(
        exporter: opentelemetry_otlp::SpanExporter,
        config: &TelemetryConfig,
        dropped: Counter,
    ) -> Result<QueueProcessor, TelemetryError> {
        let (queue, receiver) = sync_channel(config.queue_capacity);
        let batch_size = config.batch_size;
        let interval = Duration::from_millis(config.export_interval_ms);
        let counter = dropped.clone();
        let worker = std::thread::Builder::new()
            .name("triage-otlp".into())
            .spawn(move || export_loop(exporter, receiver, batch_size, interval, counter))?;
        Ok(QueueProcessor {
            queue,
            dropped,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Sends `message` and waits for the exporter thread to answer it.
    fn ask(&self, message: fn(SyncSender<()>) -> Message, wait: Duration) -> OTelSdkResult {
        let (done, answered) = sync_channel(1);
        self.queue
            .send(message(done))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        answered
            .recv_timeout(wait)
            .map_err(|_| OTelSdkError::Timeout(wait))
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.queue.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Message::Flush, Duration::from_secs(30))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let Some(worker) = self.worker.lock().ok().and_then(|mut w| w.take()) else {
            return Err(OTelSdkError::AlreadyShutdown);
        };
        let asked = self.ask(Message::Shutdown, timeout);
        if asked.is_ok() {
            let _ = worker.join();
        }
        asked
    }
}

/// The exporter thread: a batch goes out when it is full, when the oldest span has waited
/// `interval`, on a flush and at shutdown.
fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    receiver: Receiver<Message>,
    batch_size: usize,
    interval: Duration,
    dropped: Counter,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("telemetry: no runtime for the exporter, traces are off: {error}");
            return;
        }
    };
    let mut batch: Vec<SpanData> = Vec::new();
    let mut warned = false;
    let mut send = |batch: &mut Vec<SpanData>| {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::take(batch);
        let count = spans.len() as u64;
        if let Err(error) = runtime.block_on(exporter.export(spans)) {
            dropped.inc_by(count);
            // Once per outage, not once per batch.
            if !warned {
                tracing::warn!("telemetry: export failed, dropping spans until it works: {error}");
                warned = true;
            }
        } else {
            warned = false;
        }
    };
    // When the batch's first span arrived: it leaves `interval` later at the latest.
    let mut first_at: Option<Instant> = None;
    loop {
        let wait = first_at.map_or(interval, |t| interval.saturating_sub(t.elapsed()));
        match receiver.recv_timeout(wait) {
            Ok(Message::Span(span)) => {
                first_at.get_or_insert_with(Instant::now);
                batch.push(*span);
                if batch.len() >= batch_size || first_at.is_some_and(|t| t.elapsed() >= interval) {
                    send(&mut batch);
                    first_at = None;
                }
            }
            Ok(Message::Flush(done)) => {
                send(&mut batch);
                first_at = None;
                let _ = done.send(());
            }
            Ok(Message::Shutdown(done)) => {
                send(&mut batch);
                let _ = done.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                send(&mut batch);
                first_at = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                send(&mut batch);
                return;
            }
        }
    }
}
