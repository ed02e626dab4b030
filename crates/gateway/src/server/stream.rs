//! Forwarding an upstream stream to the client as SSE: usage priced and remembered, and a
//! failure after the first byte turned into an SSE error event (it is too late to fall back).
//!
//! The loop (timeouts, client disconnects, metrics) is shared; a [`Shape`] decides what the
//! client sees. Here: OpenAI chunks, with the usage chunk hidden unless the client asked for
//! it. The Anthropic shapes of `/v1/messages` live with that endpoint.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::timeout_at;

use super::error::ApiError;
use super::{AppState, Finished};
use crate::dispatch::Streamed;
use crate::providers::ProviderError;
use triage_core::catalog::{Model, Usage};

/// What the forwarding task needs to know about the request.
pub struct StreamContext {
    pub state: Arc<AppState>,
    pub model: Arc<Model>,
    pub finished: Finished,
    pub include_usage: bool,
}

/// Turns the items of an upstream stream into the client's SSE events.
pub(super) trait Shape: Send + 'static {
    /// The events for one item (`None` to send nothing), or why the stream cannot go on.
    fn item(&mut self, item: Value) -> Result<Option<Bytes>, ProviderError>;
    /// The events after the last item.
    fn end(&mut self) -> Option<Bytes>;
    /// The event that reports a failure after the first byte.
    fn error(&self, error: &ProviderError) -> Bytes;
    /// The priced usage, once the stream has reported it.
    fn usage(&self) -> Option<(Usage, f64)>;
}

/// Starts forwarding OpenAI chunks and returns the SSE response at once.
pub fn respond(context: StreamContext, streamed: Streamed) -> Response {
    let shaper = Shaper {
        model: context.model.clone(),
        include_usage: context.include_usage,
        usage: None,
    };
    respond_with(context, streamed, shaper)
}

/// Starts forwarding through `shape` and returns the SSE response at once.
pub(super) fn respond_with(
    context: StreamContext,
    streamed: Streamed,
    shape: impl Shape,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(forward(context, streamed, shape, tx));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

async fn forward(
    context: StreamContext,
    streamed: Streamed,
    mut shape: impl Shape,
    tx: mpsc::Sender<Bytes>,
) {
    let Streamed {
        first,
        mut rest,
        deadline,
        total,
    } = streamed;
    let mut finished = context.finished;
    // The answer text for the outcome log, gathered as the items pass.
    let mut answer = context.state.stores_text().then(String::new);
    let mut next = Some(Ok(first));
    loop {
        let item = match next.take() {
            Some(item) => Some(item),
            None => match timeout_at(deadline, rest.next()).await {
                Ok(item) => item,
                Err(_) => Some(Err(ProviderError::TotalTimeout(total))),
            },
        };
        let shaped = match item {
            Some(Ok(chunk)) => {
                finished.signals.observe(&chunk);
                if let (Some(text), Some(delta)) =
                    (answer.as_mut(), crate::outcomes::delta_text(&chunk))
                {
                    text.push_str(delta);
                }
                shape.item(chunk)
            }
            Some(Err(error)) => Err(error),
            None => {
                context
                    .state
                    .dispatcher
                    .record_stream_success(&context.model);
                if let Some(bytes) = shape.end() {
                    let _ = tx.send(bytes).await;
                }
                break;
            }
        };
        let bytes = match shaped {
            Ok(Some(bytes)) => bytes,
            Ok(None) => continue,
            Err(error) => {
                context
                    .state
                    .dispatcher
                    .record_stream_failure(&context.model, &error);
                if matches!(error, ProviderError::Truncated) {
                    finished.signals.cut_upstream();
                }
                finished.status = 502;
                let _ = tx.send(shape.error(&error)).await;
                break;
            }
        };
        finished.first_chunk();
        if tx.send(bytes).await.is_err() {
            // The client went away; dropping `rest` closes the upstream connection.
            finished.status = 499;
            break;
        }
    }
    finished.usage = shape.usage();
    finished.answer = answer;
    context.state.record(&finished, Some(&context.model));
}

/// Rewrites OpenAI chunks for the client and remembers the usage.
struct Shaper {
    model: Arc<Model>,
    include_usage: bool,
    usage: Option<(Usage, f64)>,
}

impl Shape for Shaper {
    fn item(&mut self, chunk: Value) -> Result<Option<Bytes>, ProviderError> {
        Ok(self.shape(chunk))
    }

    fn end(&mut self) -> Option<Bytes> {
        Some(Bytes::from_static(b"data: [DONE]\n\n"))
    }

    fn error(&self, error: &ProviderError) -> Bytes {
        error_event(error)
    }

    fn usage(&self) -> Option<(Usage, f64)> {
        self.usage
    }
}

impl Shaper {
    /// The SSE event for a chunk, or `None` when the client should not see it.
    fn shape(&mut self, mut chunk: Value) -> Option<Bytes> {
        let usage = chunk.get("usage").and_then(Usage::from_openai);
        if let Some(usage) = usage {
            let cost = self.model.cost(&usage);
            chunk["usage"]["cost"] = json!(cost);
            self.usage = Some((usage, cost));
        }
        if !self.include_usage {
            let no_choices = chunk
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty);
            if usage.is_some() && no_choices {
                return None;
            }
            if let Some(object) = chunk.as_object_mut() {
                object.remove("usage");
            }
        }
        Some(sse_event(&chunk))
    }
}

fn sse_event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn error_event(error: &ProviderError) -> Bytes {
    sse_event(&ApiError::failed_mid_answer(error).body())
}
