//! Calls a ranked chain of models until one answers: timeouts, retries with jittered backoff
//! (honouring `Retry-After`), then the next sibling; a circuit breaker per model.
//!
//! A model counts as having answered once its first byte is in (the first SSE event when
//! streaming); from then on the client has the stream and nothing falls back. Pricing and
//! response shaping are the server's job.

mod breaker;
mod clock;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout_at};

use crate::metrics::{ErrorLabels, Metrics, ModelLabels};
use crate::providers::{Body, ChunkStream, Format, ProviderError, Upstream};
pub use breaker::{Breakers, State as BreakerState};
pub use clock::{Clock, ShiftedClock, SystemClock};
use triage_core::catalog::{Catalog, Model};
use triage_core::config::DispatchConfig;

/// A stream keeps its provider slot until the stream is dropped; a full answer is done.
fn hold_until_done(answer: Answer, slot: Option<OwnedSemaphorePermit>) -> Answer {
    match (answer, slot) {
        (Answer::Stream(mut streamed), Some(slot)) => {
            streamed.rest = Box::pin(streamed.rest.map(move |chunk| {
                let _held = &slot;
                chunk
            }));
            Answer::Stream(streamed)
        }
        (answer, _) => answer,
    }
}

/// One model given up on, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    pub model: String,
    pub error: ProviderError,
}

/// A stream whose first chunk has arrived.
pub struct Streamed {
    pub first: Value,
    pub rest: ChunkStream,
    /// When the model's total timeout runs out.
    pub deadline: Instant,
    pub total: Duration,
}

pub enum Answer {
    Full(Value),
    Stream(Streamed),
}

/// The model that answered, and those tried before it.
pub struct Dispatched {
    pub model: Arc<Model>,
    pub failures: Vec<Failure>,
    pub answer: Answer,
}

/// Every model failed, or the request was rejected as the client's fault; the last failure
/// decides the status the client sees.
#[derive(Debug)]
pub struct DispatchError {
    pub failures: Vec<Failure>,
}

pub struct Dispatcher {
    upstreams: HashMap<String, Upstream>,
    /// A permit per call in flight, for providers with `max_concurrent`.
    slots: HashMap<String, Arc<Semaphore>>,
    settings: DispatchConfig,
    breakers: Breakers,
    metrics: Arc<Metrics>,
    /// The time the breakers go by.
    clock: Arc<dyn Clock>,
}

impl Dispatcher {
    pub fn new(
        catalog: &Catalog,
        settings: DispatchConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Dispatcher, reqwest::Error> {
        Dispatcher::with_clock(catalog, settings, metrics, Arc::new(SystemClock))
    }

    /// [`Dispatcher::new`] with the breakers on `clock`.
    pub fn with_clock(
        catalog: &Catalog,
        settings: DispatchConfig,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Result<Dispatcher, reqwest::Error> {
        let upstreams = catalog
            .providers
            .iter()
            .map(|(name, provider)| Ok((name.clone(), Upstream::new(provider.clone())?)))
            .collect::<Result<_, reqwest::Error>>()?;
        let breakers = Breakers::new(
            settings.breaker_failures,
            Duration::from_millis(settings.breaker_cooldown_ms),
        );
        let slots = catalog
            .providers
            .iter()
            .filter_map(|(name, p)| {
                Some((name.clone(), Arc::new(Semaphore::new(p.max_concurrent?))))
            })
            .collect();
        Ok(Dispatcher {
            upstreams,
            slots,
            settings,
            breakers,
            metrics,
            clock,
        })
    }

    /// Tries `chain` in order. `body` is the OpenAI-shaped request without triage's fields.
    pub async fn dispatch(
        &self,
        chain: &[Arc<Model>],
        body: &Map<String, Value>,
        stream: bool,
    ) -> Result<Dispatched, DispatchError> {
        let (dispatched, _) = self.dispatch_body(chain, Body::Chat(body), stream).await?;
        Ok(dispatched)
    }

    /// Tries `chain` in order with a body in either wire format. The [`Format`] says the shape
    /// of the answer: always [`Format::Chat`] for a chat body; for a Messages body,
    /// [`Format::Messages`] when an Anthropic upstream answered it natively.
    pub async fn dispatch_body(
        &self,
        chain: &[Arc<Model>],
        body: Body<'_>,
        stream: bool,
    ) -> Result<(Dispatched, Format), DispatchError> {
        let mut failures = Vec::new();
        for (index, model) in chain.iter().enumerate() {
            match self.try_model(model, body, stream).await {
                Ok((answer, format)) => {
                    let dispatched = Dispatched {
                        model: model.clone(),
                        failures,
                        answer,
                    };
                    return Ok((dispatched, format));
                }
                Err(error) => {
                    let final_for_client = error.is_client_error();
                    failures.push(Failure {
                        model: model.id.clone(),
                        error,
                    });
                    if final_for_client {
                        break;
                    }
                    if index + 1 < chain.len() {
                        self.metrics.fallbacks.get_or_create(&labels(model)).inc();
                    }
                }
            }
        }
        Err(DispatchError { failures })
    }

    /// One model: its circuit breaker, then the call with retries.
    async fn try_model(
        &self,
        model: &Model,
        body: Body<'_>,
        stream: bool,
    ) -> Result<(Answer, Format), ProviderError> {
        let upstream = self
            .upstreams
            .get(&model.provider)
            .expect("the catalog checked every model's provider");
        let format = upstream.answer_format(body);
        let (allowed, state) = self.breakers.allow(&model.id, self.clock.now());
        self.set_gauge(model, state);
        if !allowed {
            return Err(ProviderError::CircuitOpen);
        }
        // Held across retries, and by a stream until it ends.
        let slot = self.take_slot(model)?;
        let mut attempt = 0;
        loop {
            let span = crate::telemetry::attempt(model, &upstream.provider, attempt);
            let call = self.call(upstream, model, body, format, stream);
            let called = match &span {
                Some(span) => span.scope(call).await,
                None => call.await,
            };
            if let (Some(span), Err(error)) = (&span, &called) {
                if let ProviderError::Status { status, .. } = error {
                    span.set("http.response.status_code", i64::from(status.as_u16()));
                }
                span.fail(&error.label(), error.to_string());
            }
            if let Some(span) = span {
                span.end();
            }
            let error = match called {
                Ok(answer) => {
                    let answer = hold_until_done(answer, slot);
                    // A stream counts as a success when it ends well, not at its first byte:
                    // a model that always dies mid-answer must open its circuit
                    // (`record_stream_success`).
                    if matches!(answer, Answer::Full(_)) {
                        self.set_gauge(model, self.breakers.record_success(&model.id));
                    }
                    return Ok((answer, format));
                }
                Err(error) => error.scrubbed(&upstream.provider),
            };
            self.record_error(model, &error);
            if error.is_client_error() {
                self.set_gauge(model, self.breakers.record_success(&model.id));
                return Err(error);
            }
            if error.counts_as_failure() {
                let state = self.breakers.record_failure(&model.id, self.clock.now());
                self.set_gauge(model, state);
                if !matches!(state, BreakerState::Closed { .. }) {
                    return Err(error);
                }
            }
            match self.pause_before_retry(attempt, &error) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(error),
            }
            attempt += 1;
        }
    }

    /// A call slot of the model's provider, when it has `max_concurrent`; `Busy` when all are
    /// taken, so the request moves on to its next model instead of queueing.
    fn take_slot(&self, model: &Model) -> Result<Option<OwnedSemaphorePermit>, ProviderError> {
        let Some(slots) = self.slots.get(&model.provider) else {
            return Ok(None);
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => {
                let error = ProviderError::Busy(model.provider.clone());
                self.record_error(model, &error);
                Err(error)
            }
        }
    }

    /// One call, bounded by the model's first-byte and total timeouts.
    async fn call(
        &self,
        upstream: &Upstream,
        model: &Model,
        body: Body<'_>,
        format: Format,
        stream: bool,
    ) -> Result<Answer, ProviderError> {
        let t = model.timeouts;
        let start = Instant::now();
        let deadline = start + t.total;
        let (first_byte_deadline, first_byte_error) = if t.first_byte < t.total {
            (
                start + t.first_byte,
                ProviderError::FirstByteTimeout(t.first_byte),
            )
        } else {
            (deadline, ProviderError::TotalTimeout(t.total))
        };
        let response = timeout_at(first_byte_deadline, upstream.send(model, body, stream))
            .await
            .map_err(|_| first_byte_error.clone())??;
        if !stream {
            let full = timeout_at(deadline, upstream.read_full(response, format))
                .await
                .map_err(|_| ProviderError::TotalTimeout(t.total))??;
            return Ok(Answer::Full(full));
        }
        let mut chunks = upstream.into_chunks(response, format);
        match timeout_at(first_byte_deadline, chunks.next()).await {
            Err(_) => Err(first_byte_error),
            Ok(None) => Err(ProviderError::Protocol(
                "the stream ended before its first event".into(),
            )),
            Ok(Some(Err(error))) => Err(error),
            Ok(Some(Ok(first))) => Ok(Answer::Stream(Streamed {
                first,
                rest: chunks,
                deadline,
                total: t.total,
            })),
        }
    }

    /// How long to wait before retrying, or `None` to move on to the next model.
    fn pause_before_retry(&self, attempt: u32, error: &ProviderError) -> Option<Duration> {
        if attempt >= self.settings.max_retries || !error.is_retryable() {
            return None;
        }
        if let ProviderError::Status {
            retry_after: Some(wait),
            ..
        } = error
        {
            let max = Duration::from_millis(self.settings.max_retry_after_ms);
            return (*wait <= max).then_some(*wait);
        }
        let ceiling = self
            .settings
            .backoff_base_ms
            .saturating_mul(1 << attempt.min(20))
            .min(self.settings.backoff_max_ms);
        Some(Duration::from_millis(rand::rng().random_range(0..=ceiling)))
    }

    /// False while the model's circuit is open.
    pub fn is_healthy(&self, model: &str) -> bool {
        !self.breakers.is_open(model, self.clock.now())
    }

    /// A stream that ended with its end marker: the model's success, for its breaker.
    pub fn record_stream_success(&self, model: &Model) {
        self.set_gauge(model, self.breakers.record_success(&model.id));
    }

    /// A stream that failed after its first byte: the client got an error event; the model's
    /// breaker and the error metrics still need to hear of it.
    pub fn record_stream_failure(&self, model: &Model, error: &ProviderError) {
        self.record_error(model, error);
        let state = self.breakers.record_failure(&model.id, self.clock.now());
        self.set_gauge(model, state);
    }

    fn record_error(&self, model: &Model, error: &ProviderError) {
        tracing::warn!(model = %model.id, reason = %error.label(), "upstream call failed: {error}");
        self.metrics
            .upstream_errors
            .get_or_create(&ErrorLabels {
                model: model.id.clone(),
                reason: error.label(),
            })
            .inc();
    }

    fn set_gauge(&self, model: &Model, state: BreakerState) {
        self.metrics
            .circuit_state
            .get_or_create(&labels(model))
            .set(state.gauge());
    }
}

fn labels(model: &Model) -> ModelLabels {
    ModelLabels {
        model: model.id.clone(),
    }
}
