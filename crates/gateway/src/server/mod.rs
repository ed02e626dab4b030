//! The HTTP face of triage: axum routes, authentication, error mapping, SSE, `/v1/models`,
//! `/health` and `/metrics`.
//!
//! Handlers parse and check the request, ask `router` for the chain of models, hand it to
//! `dispatch`, and shape the answer: pricing, `x-triage-*` headers, metrics and logs.

mod admin;
mod error;
mod keys;
mod listen;
mod messages;
mod parse_errors;
mod request;
mod routing;
mod stream;
mod ui;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use admin::reload_classifier;
pub use error::ApiError;
pub use listen::serve;
pub use request::ChatRequest;

use crate::dispatch::{Answer, DispatchError, Dispatched, Dispatcher, Failure};
use crate::keys::{Key, KeyRing, Refusal};
use crate::metrics::{Metrics, ModelLabels, RequestLabels};
use crate::outcomes::signals::Signals;
use crate::outcomes::{LogError, Outcome, OutcomeLog};
use crate::router::{self, AdaptiveRouter, AutoDecision};
use crate::telemetry::{self, RequestTrace, Telemetry, TelemetryError};
use triage_core::catalog::{Catalog, Model, Usage};
use triage_core::config::Config;
use triage_core::config::{Limits, RoutingConfig};

/// Everything the handlers share; built once at start-up.
pub struct AppState {
    pub catalog: Arc<Catalog>,
    pub dispatcher: Dispatcher,
    pub metrics: Arc<Metrics>,
    /// The classifier and abilities for `auto`; `None` when no classifier model is loaded.
    /// Swapped whole by a reload; a request keeps the one it loaded.
    pub adaptive: ArcSwapOption<AdaptiveRouter>,
    /// The outcome log; `None` when `[log] enabled = false`.
    pub outcomes: Option<OutcomeLog>,
    /// SHA-256 of each accepted router key → the short id used in metrics and logs.
    router_keys: HashMap<[u8; 32], String>,
    /// The same for `[auth] admin_keys`.
    admin_keys: HashMap<[u8; 32], String>,
    /// The same for `[auth] metrics_keys`.
    metrics_keys: HashMap<[u8; 32], String>,
    /// The same for `[auth] viewer_keys`.
    viewer_keys: HashMap<[u8; 32], String>,
    /// Whether `/metrics` answers without a key.
    public_metrics: bool,
    /// Where a reload reads the classifier from.
    classifier_source: String,
    /// `[routing]`: targets, the models `auto` may choose, the exploration share.
    routing: RoutingConfig,
    /// `[limits]`: body size, timeouts, shutdown grace, concurrency.
    limits: Limits,
    /// One permit per model request in flight (`max_concurrent_requests`).
    in_flight: Arc<tokio::sync::Semaphore>,
    /// One permit per prompt being classified (`classify_concurrency`).
    classify_slots: tokio::sync::Semaphore,
    /// Virtual keys (`/admin/keys`), kept in the outcome log's database; `None` without a log.
    pub keys: Option<Arc<KeyRing>>,
    /// OpenTelemetry traces; `None` without `[telemetry] otlp_endpoint`.
    pub telemetry: Option<Telemetry>,
}

/// Why the shared state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("cannot read the virtual keys: {0}")]
    Keys(String),
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
}

/// `[limits] classify_concurrency`, 0 meaning one per CPU core.
fn classify_concurrency(limits: &Limits) -> usize {
    match limits.classify_concurrency {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// SHA-256 of the key a request presents, as `Authorization: Bearer <key>` or `x-api-key`.
fn presented_key(headers: &HeaderMap) -> Option<[u8; 32]> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))?;
    Some(Sha256::digest(presented.trim().as_bytes()).into())
}

/// SHA-256 of each key → `key-xxxxxxxx`, the id that metrics and logs show.
fn key_ids(keys: &[String], prefix: &str) -> HashMap<[u8; 32], String> {
    keys.iter()
        .map(|key| {
            let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            let id = format!(
                "{prefix}-{:02x}{:02x}{:02x}{:02x}",
                digest[0], digest[1], digest[2], digest[3]
            );
            (digest, id)
        })
        .collect()
}

impl AppState {
    pub fn new(
        config: &Config,
        catalog: Catalog,
        router_keys: &[String],
        adaptive: Option<AdaptiveRouter>,
    ) -> Result<Arc<AppState>, StateError> {
        let clock = Arc::new(crate::dispatch::SystemClock);
        AppState::with_clock(config, catalog, router_keys, adaptive, clock)
    }

    /// [`AppState::new`] with the dispatcher's breakers on `clock` (tests move it ahead).
    pub fn with_clock(
        config: &Config,
        catalog: Catalog,
        router_keys: &[String],
        adaptive: Option<AdaptiveRouter>,
        clock: Arc<dyn crate::dispatch::Clock>,
    ) -> Result<Arc<AppState>, StateError> {
        let metrics = Arc::new(Metrics::new());
        let dispatcher =
            Dispatcher::with_clock(&catalog, config.dispatch.clone(), metrics.clone(), clock)?;
        let outcomes = if config.log.enabled {
            Some(OutcomeLog::start(&config.log, metrics.log_dropped.clone())?)
        } else {
            None
        };
        let keys = match &outcomes {
            Some(log) => Some(keys::start(
                log.target.clone(),
                Duration::from_millis(config.log.key_refresh_ms.max(1)),
            )?),
            None => None,
        };
        let telemetry = Telemetry::start(&config.telemetry, metrics.trace_dropped.clone())?;
        Ok(Arc::new(AppState {
            catalog: Arc::new(catalog),
            dispatcher,
            metrics,
            adaptive: ArcSwapOption::from(adaptive.map(Arc::new)),
            outcomes,
            router_keys: key_ids(router_keys, "key"),
            admin_keys: key_ids(&config.auth.admin_keys, "admin"),
            metrics_keys: key_ids(&config.auth.metrics_keys, "metrics"),
            viewer_keys: key_ids(&config.auth.viewer_keys, "viewer"),
            public_metrics: config.auth.public_metrics
                || (router_keys.is_empty() && config.auth.admin_keys.is_empty()),
            classifier_source: config.classifier.model.clone(),
            routing: config.routing.clone(),
            limits: config.limits.clone(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                config.limits.max_concurrent_requests,
            )),
            classify_slots: tokio::sync::Semaphore::new(classify_concurrency(&config.limits)),
            keys,
            telemetry,
        }))
    }

    /// Queues the outcome of a finished request, unless logging is off.
    fn log_outcome(&self, finished: &Finished, model_id: Option<&str>) {
        let Some(log) = &self.outcomes else {
            return;
        };
        // A caller without a valid key gets no row: otherwise anyone who can reach the port
        // could grow the database.
        if finished.key_id.is_empty() {
            return;
        }
        let usage = finished.usage.map(|(u, _)| u).unwrap_or_default();
        let elapsed = finished.started.elapsed();
        log.submit(Outcome {
            id: finished.request_id.clone(),
            ts_ms: crate::outcomes::now_ms() - elapsed.as_millis() as i64,
            endpoint: finished.endpoint,
            key_id: finished.key_id.clone(),
            requested: finished.requested.clone(),
            auto: finished.auto.as_deref().map(AutoDecision::log_columns),
            model: model_id.map(String::from),
            fallbacks: finished.fallbacks.clone(),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens,
            cache_write_tokens: usage.cache_write_tokens,
            cost_usd: finished.usage.map_or(0.0, |(_, c)| c),
            ttft_ms: finished.ttft.map(|t| t.as_secs_f64() * 1e3),
            latency_ms: elapsed.as_secs_f64() * 1e3,
            status: finished.status,
            stream: finished.stream,
            prompt: finished.prompt.clone(),
            answer: finished.answer.clone(),
            signals: finished
                .signals
                .list(!finished.fallbacks.is_empty() || finished.status >= 500),
        });
    }

    /// Whether prompt and answer text go into the log.
    fn stores_text(&self) -> bool {
        self.outcomes.as_ref().is_some_and(|log| log.store_text)
    }

    /// The caller's key id, or 401. With no keys configured (in the config or as data)
    /// every caller is `anonymous`.
    fn authenticate(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        self.caller(headers).map(|(id, _)| id)
    }

    /// The caller's key id and, for a virtual key, the key itself (its limits apply).
    fn caller(&self, headers: &HeaderMap) -> Result<(String, Option<Arc<Key>>), ApiError> {
        let ring = self.keys.as_deref().filter(|ring| !ring.is_empty());
        if self.router_keys.is_empty() && ring.is_none() {
            return Ok(("anonymous".into(), None));
        }
        let Some(digest) = presented_key(headers) else {
            return Err(ApiError::unauthorized(
                "Missing API key: send it as `Authorization: Bearer <key>`.",
            ));
        };
        if let Some(id) = self.router_keys.get(&digest) {
            return Ok((id.clone(), None));
        }
        let hash = crate::keys::digest_hex(&digest);
        let Some(key) = ring.and_then(|ring| ring.by_hash(&hash)) else {
            return Err(ApiError::unauthorized("Incorrect API key provided."));
        };
        match key.check_valid(crate::outcomes::now_ms()) {
            Ok(()) => Ok((key.row.id.clone(), Some(key))),
            Err(Refusal::Revoked) => Err(ApiError::unauthorized("This key has been revoked.")),
            Err(_) => Err(ApiError::unauthorized("This key has expired.")),
        }
    }

    /// `/metrics` shows every key's traffic and spend: with authentication on it needs an
    /// admin or metrics key, unless `[auth] public_metrics`.
    fn authorize_metrics(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.public_metrics {
            return Ok(());
        }
        let allowed = presented_key(headers).is_some_and(|d| {
            self.admin_keys.contains_key(&d) || self.metrics_keys.contains_key(&d)
        });
        if allowed {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "/metrics needs an admin or metrics key ([auth] admin_keys, metrics_keys).",
            ))
        }
    }

    /// Metrics, the outcome log, the trace and a log line for a finished request.
    fn record(&self, finished: &Finished, model: Option<&Model>) {
        self.log_outcome(finished, model.map(|m| m.id.as_str()));
        if let Some(trace) = &finished.trace {
            self.finish_trace(trace, finished, model);
        }
        let model_id = model.map_or(finished.requested.as_str(), |m| m.id.as_str());
        let elapsed = finished.started.elapsed();
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                model: model_id.to_string(),
                key: finished.key_id.clone(),
                status: finished.status,
            })
            .inc();
        let labels = ModelLabels {
            model: model_id.to_string(),
        };
        self.metrics
            .latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(ttft) = finished.ttft {
            self.metrics
                .ttft
                .get_or_create(&labels)
                .observe(ttft.as_secs_f64());
        }
        if let Some((usage, cost)) = &finished.usage {
            self.metrics
                .record_usage(model_id, &finished.key_id, usage, *cost);
            if let Some(ring) = &self.keys {
                let tokens = usage.prompt_tokens + usage.completion_tokens;
                ring.charge(&finished.key_id, *cost, tokens, crate::outcomes::now_ms());
            }
        }
        tracing::info!(
            request_id = %finished.request_id,
            key = %finished.key_id,
            model = %model_id,
            status = finished.status,
            fallbacks = %finished.fallbacks,
            cost_usd = finished.usage.map(|(_, c)| c),
            latency_ms = elapsed.as_secs_f64() * 1e3,
            "request finished"
        );
    }

    /// Ends a request's span with what became of it.
    fn finish_trace(&self, trace: &RequestTrace, finished: &Finished, model: Option<&Model>) {
        let auto = finished.auto.as_deref().map(|auto| {
            let chosen = model.and_then(|m| {
                auto.decision
                    .candidates
                    .iter()
                    .find(|c| c.model == m.id)
                    .and_then(|c| c.quality)
            });
            telemetry::AutoAttributes {
                profile: &auto.decision.profile,
                difficulty: f64::from(auto.prediction.difficulty),
                top_skill: auto
                    .skills
                    .iter()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(name, _)| name.as_str()),
                tool_need: f64::from(auto.prediction.tool_need),
                predicted_quality: chosen.map(f64::from),
            }
        });
        trace.finish(telemetry::Finish {
            request_id: &finished.request_id,
            requested: &finished.requested,
            status: finished.status,
            model: model.map(|m| (m, self.catalog.provider(&m.provider).map(Arc::as_ref))),
            input_tokens: finished.usage.map(|(u, _)| u.prompt_tokens),
            output_tokens: finished.usage.map(|(u, _)| u.completion_tokens),
            cost_usd: finished.usage.map(|(_, c)| c),
            fallbacks: &finished.fallbacks,
            key_id: &finished.key_id,
            stream: finished.stream,
            auto,
        });
    }
}

/// A request's bookkeeping, filled in as it goes.
pub struct Finished {
    request_id: String,
    key_id: String,
    requested: String,
    started: Instant,
    status: u16,
    ttft: Option<Duration>,
    usage: Option<(Usage, f64)>,
    fallbacks: String,
    /// For the outcome log: `chat` or `messages`, whether streamed, the adaptive decision,
    /// and the text when `[log] store_text` is on.
    endpoint: &'static str,
    stream: bool,
    auto: Option<Arc<AutoDecision>>,
    prompt: Option<String>,
    answer: Option<String>,
    signals: Signals,
    /// A rate-limited virtual key's windows after this request, for its headers.
    rate: Option<keys::Limits>,
    /// The request's span, when tracing; ended by `record`.
    trace: Option<RequestTrace>,
}

impl Finished {
    /// The bookkeeping of a request that has just arrived at `endpoint`.
    fn start(endpoint: &'static str) -> Finished {
        Finished {
            request_id: request_id(),
            key_id: String::new(),
            requested: String::new(),
            started: Instant::now(),
            status: 200,
            ttft: None,
            usage: None,
            fallbacks: String::new(),
            endpoint,
            stream: false,
            auto: None,
            prompt: None,
            answer: None,
            signals: Signals::default(),
            rate: None,
            trace: None,
        }
    }

    fn first_chunk(&mut self) {
        if self.ttft.is_none() {
            self.ttft = Some(self.started.elapsed());
        }
    }
}

/// A request id from the thread's fast random generator (no system call per request).
fn request_id() -> String {
    format!("req_{:032x}", rand::random::<u128>())
}

/// The axum application.
pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.limits.max_body_bytes;
    let body_timeout = Duration::from_millis(state.limits.body_timeout_ms);
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route(
            "/v1/messages",
            post(messages::messages)
                .fallback(|| async { ApiError::method_not_allowed().into_anthropic_response() }),
        )
        .route("/v1/models", get(list_models))
        .route("/v1/route", post(routing::route_handler))
        .route("/v1/feedback", post(admin::feedback))
        .route("/v1/usage", get(admin::usage))
        .route("/admin/reload", post(admin::reload))
        .route("/admin/keys", post(keys::create).get(keys::list))
        .route(
            "/admin/keys/{id}",
            get(keys::show).patch(keys::update).delete(keys::revoke),
        )
        .route("/health", get(health))
        .merge(ui::routes())
        .route("/metrics", get(metrics))
        .fallback(unknown_path)
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_oversized,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            shed_overload,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .with_state(state)
}

/// Every response, whatever the endpoint, names a request id (the model endpoints set their
/// own, the one in the outcome log) and is counted in `triage_http_requests_total`.
async fn observe(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let endpoint = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_string();
    let method = request.method().as_str().to_string();
    let mut response = next.run(request).await;
    if !response.headers().contains_key("x-triage-request-id") {
        set_header(&mut response, "x-triage-request-id", &request_id());
    }
    state
        .metrics
        .http_requests
        .get_or_create(&crate::metrics::HttpLabels {
            endpoint,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// Past `max_concurrent_requests` model requests in flight, one more gets 503 at once. The
/// permit lives as long as the response body, so a stream holds it to its last byte.
async fn shed_overload(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    if !matches!(path, "/v1/chat/completions" | "/v1/messages" | "/v1/route") {
        return next.run(request).await;
    }
    let Ok(permit) = state.in_flight.clone().try_acquire_owned() else {
        state.metrics.shed.inc();
        let error = ApiError::overloaded(state.limits.max_concurrent_requests);
        return if path == "/v1/messages" {
            error.into_anthropic_response()
        } else {
            error.into_response()
        };
    };
    let response = next.run(request).await;
    response.map(|body| {
        axum::body::Body::new(http_body_util::BodyExt::map_err(body, move |error| {
            let _held_until_the_body_ends = &permit;
            error
        }))
    })
}

/// A body that `Content-Length` says is over the limit gets 413 before a byte of it is read.
async fn refuse_oversized(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let limit = state.limits.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        let error = ApiError::payload_too_large(limit);
        return if request.uri().path() == "/v1/messages" {
            error.into_anthropic_response()
        } else {
            error.into_response()
        };
    }
    next.run(request).await
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut pending = Pending::new(&state, "chat", &headers);
    let trace = pending.finished().trace.clone();
    let result = telemetry::within(trace, chat(&state, &headers, body, pending.finished())).await;
    respond(&state, pending.done(), result, IntoResponse::into_response)
}

/// A request's bookkeeping while its handler runs. When the client goes away, hyper drops the
/// handler mid-await and nothing after that point runs: the guard then logs the request as
/// 499 (the upstream may still bill for it), so no outcome is lost to a disconnect.
pub(crate) struct Pending {
    state: Arc<AppState>,
    finished: Option<Finished>,
}

impl Pending {
    /// A request's bookkeeping, and its span when tracing (a child of the client's
    /// `traceparent` header).
    pub(crate) fn new(
        state: &Arc<AppState>,
        endpoint: &'static str,
        headers: &HeaderMap,
    ) -> Pending {
        let mut finished = Finished::start(endpoint);
        finished.trace = state
            .telemetry
            .as_ref()
            .map(|t| t.request(headers, endpoint));
        Pending {
            state: state.clone(),
            finished: Some(finished),
        }
    }

    pub(crate) fn finished(&mut self) -> &mut Finished {
        self.finished.as_mut().expect("taken only by done")
    }

    /// The handler returned: from here on `respond` (or the stream task) records it.
    pub(crate) fn done(mut self) -> Finished {
        self.finished.take().expect("taken only once")
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut finished) = self.finished.take() {
            finished.status = 499;
            self.state.record(&finished, None);
        }
    }
}

/// A request that failed, and the model it failed on (if it got that far).
type HandlerFailure = (ApiError, Option<Arc<Model>>);

/// A handler's response: a failure is logged and rendered by `render` (OpenAI's or
/// Anthropic's error shape, with the fallbacks tried); every response names its request id.
fn respond(
    state: &AppState,
    mut finished: Finished,
    result: Result<Response, HandlerFailure>,
    render: fn(ApiError) -> Response,
) -> Response {
    let mut response = match result {
        Ok(response) => response,
        Err((error, model)) => {
            finished.status = error.status().as_u16();
            state.record(&finished, model.as_deref());
            let mut response = render(error);
            set_header(&mut response, "x-triage-fallbacks", &finished.fallbacks);
            response
        }
    };
    set_header(&mut response, "x-triage-request-id", &finished.request_id);
    if let Some(rate) = &finished.rate {
        keys::rate_headers(&mut response, rate);
    }
    response
}

async fn chat(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    finished: &mut Finished,
) -> Result<Response, HandlerFailure> {
    let (key_id, key) = state.caller(headers).map_err(|e| (e, None))?;
    finished.key_id = key_id;
    let body = body.map_err(|rejection| (body_rejection(&rejection, &state.limits), None))?;
    let mut request = ChatRequest::parse(&body).map_err(|e| (e, None))?;
    if let Some(key) = &key {
        finished.rate = Some(keys::admit(key, &request.requested).map_err(|e| (e, None))?);
    }
    finished.requested = request.requested[0].clone();
    finished.stream = request.stream;
    if state.stores_text() {
        finished.prompt = Some(crate::outcomes::prompt_text(&request.body));
    }
    let routing::Routed { chain, auto } = routing::resolve(state, &mut request, key.as_deref())
        .await
        .map_err(|e| (e, None))?;
    finished.auto = auto.clone();
    let dispatched = state
        .dispatcher
        .dispatch(&chain, &request.body, request.stream)
        .await
        .map_err(|e: DispatchError| {
            finished.fallbacks = describe_failures(&e.failures);
            (ApiError::from_dispatch(&e), chain.first().cloned())
        })?;
    let Dispatched {
        model,
        failures,
        answer,
    } = dispatched;
    finished.fallbacks = describe_failures(&failures);
    let mut response = match answer {
        Answer::Full(value) => full_response(state, value, &model, finished),
        Answer::Stream(streamed) => {
            let context = stream::StreamContext {
                state: state.clone(),
                model: model.clone(),
                finished: std::mem::replace(finished, finished.copy_ids()),
                include_usage: request.include_usage,
            };
            stream::respond(context, streamed)
        }
    };
    set_header(&mut response, "x-triage-model", &model.id);
    set_header(&mut response, "x-triage-fallbacks", &finished.fallbacks);
    if let Some(auto) = &auto {
        routing::explain(&mut response, auto, &model.id);
    }
    Ok(response)
}

impl Finished {
    /// What the handler still needs once the stream task owns the original.
    fn copy_ids(&self) -> Finished {
        Finished {
            request_id: self.request_id.clone(),
            key_id: self.key_id.clone(),
            requested: self.requested.clone(),
            started: self.started,
            status: self.status,
            ttft: None,
            usage: None,
            fallbacks: self.fallbacks.clone(),
            endpoint: self.endpoint,
            stream: self.stream,
            auto: None,
            prompt: None,
            answer: None,
            signals: Signals::default(),
            rate: self.rate,
            // The stream task owns the span and ends it.
            trace: None,
        }
    }
}

/// A whole answer: price it, record it, add the cost header.
fn full_response(
    state: &AppState,
    mut value: Value,
    model: &Arc<Model>,
    finished: &mut Finished,
) -> Response {
    let usage = value.get("usage").and_then(Usage::from_openai);
    if let Some(usage) = usage {
        let cost = model.cost(&usage);
        value["usage"]["cost"] = json!(cost);
        finished.usage = Some((usage, cost));
    }
    if state.stores_text() {
        finished.answer = crate::outcomes::answer_text(&value);
    }
    finished.signals = Signals::of_answer(&value);
    state.record(finished, Some(model));
    let mut response = Json(value).into_response();
    if let Some((_, cost)) = finished.usage {
        set_header(&mut response, "x-triage-cost-usd", &format_usd(cost));
    }
    response
}

/// `model-a (503), model-b (connect)`: the models that failed before the answering one.
fn describe_failures(failures: &[Failure]) -> String {
    failures
        .iter()
        .map(|f| format!("{} ({})", f.model, f.error.label()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Dollars as a plain decimal (no exponent), to the nano-dollar.
fn format_usd(cost: f64) -> String {
    let text = format!("{cost:.9}");
    let text = text.trim_end_matches('0');
    text.strip_suffix('.').unwrap_or(text).to_string()
}

pub(crate) fn set_header(response: &mut Response, name: &'static str, value: &str) {
    if value.is_empty() {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(value) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
}

pub(crate) fn body_rejection(rejection: &BytesRejection, limits: &Limits) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::payload_too_large(limits.max_body_bytes)
    } else if is_body_timeout(rejection) {
        ApiError::body_timeout(limits.body_timeout_ms)
    } else {
        ApiError::invalid_request(
            format!("Could not read the request body: {}", rejection.body_text()),
            None,
        )
    }
}

/// Whether the body stopped arriving (`tower_http`'s body timeout, somewhere in the chain).
fn is_body_timeout(rejection: &BytesRejection) -> bool {
    let mut error: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(e) = error {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        error = e.source();
    }
    false
}

async fn list_models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(error) = state.authenticate(&headers) {
        return error.into_response();
    }
    Json(json!({"object": "list", "data": model_entries(&state)})).into_response()
}

/// `/v1/models`' entries: every catalog model with how `auto` sees it, then the profiles.
fn model_entries(state: &AppState) -> Vec<Value> {
    let adaptive = state.adaptive.load_full();
    let abilities = adaptive.as_deref().map(AdaptiveRouter::abilities);
    let mut data: Vec<Value> = state
        .catalog
        .models
        .values()
        .map(|m| {
            let mut entry = m.to_openai_json();
            let mut triage = router::describe(&state.catalog, m, abilities, &state.routing);
            let circuit = if state.dispatcher.is_healthy(&m.id) {
                "closed"
            } else {
                "open"
            };
            triage["circuit"] = json!(circuit);
            entry["triage"] = triage;
            entry
        })
        .collect();
    if adaptive.is_some() {
        data.extend(ROUTING_PROFILES.iter().map(|(id, description)| {
            json!({"id": id, "object": "model", "created": 0, "owned_by": "triage",
                   "description": description})
        }));
    }
    data
}

/// The adaptive profiles listed by `/v1/models` when a classifier is loaded.
const ROUTING_PROFILES: [(&str, &str); 3] = [
    (
        "auto",
        "the cheapest model within 95% of the best predicted quality",
    ),
    (
        "auto:cheap",
        "the cheapest model within 80% of the best predicted quality",
    ),
    ("auto:best", "the model with the best predicted quality"),
];

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(error) = state.authorize_metrics(&headers) {
        return error.into_response();
    }
    if let Some(ring) = &state.keys {
        let info = &state.metrics.key_info;
        info.clear();
        for key in ring.all() {
            let labels = crate::metrics::KeyInfoLabels {
                key: key.row.id.clone(),
                name: key.row.name.clone(),
            };
            info.get_or_create(&labels).set(1);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn unknown_path(uri: Uri) -> ApiError {
    ApiError::not_found(uri.path())
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::internal("Internal error while handling the request.").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_is_a_plain_decimal() {
        assert_eq!(format_usd(0.000_012_5), "0.0000125");
        assert_eq!(format_usd(1.5), "1.5");
        assert_eq!(format_usd(0.0), "0");
        assert_eq!(format_usd(3e-10), "0");
    }
}
