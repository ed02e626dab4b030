//! Forwarding an upstream stream to the client as OpenAI SSE: usage priced into the last chunk,
//! the usage chunk hidden unless the client asked for it, and a failure after the first byte
//! turned into an SSE error event (it is too late to fall back).

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
use crate::catalog::{Model, Usage};
use crate::dispatch::Streamed;
use crate::providers::ProviderError;

/// What the forwarding task needs to know about the request.
pub struct StreamContext {
    pub state: Arc<AppState>,
    pub model: Arc<Model>,
    pub finished: Finished,
    pub include_usage: bool,
}

/// Starts forwarding and returns the SSE response at once.
pub fn respond(context: StreamContext, streamed: Streamed) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(forward(context, streamed, tx));
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

async fn forward(context: StreamContext, streamed: Streamed, tx: mpsc::Sender<Bytes>) {
    let Streamed {
        first,
        mut rest,
        deadline,
        total,
    } = streamed;
    let mut shaper = Shaper {
        model: &context.model,
        include_usage: context.include_usage,
        usage: None,
    };
    let mut finished = context.finished;
    let mut next = Some(Ok(first));
    loop {
        let item = match next.take() {
            Some(item) => Some(item),
            None => match timeout_at(deadline, rest.next()).await {
                Ok(item) => item,
                Err(_) => Some(Err(ProviderError::TotalTimeout(total))),
            },
        };
        let bytes = match item {
            Some(Ok(chunk)) => match shaper.shape(chunk) {
                Some(bytes) => bytes,
                None => continue,
            },
            Some(Err(error)) => {
                context
                    .state
                    .dispatcher
                    .record_stream_failure(&context.model, &error);
                finished.status = 502;
                let _ = tx.send(error_event(&error)).await;
                break;
            }
            None => {
                let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
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
    finished.usage = shaper.usage;
    context.state.record(&finished, Some(&context.model));
}

/// Rewrites chunks for the client and remembers the usage.
struct Shaper<'a> {
    model: &'a Model,
    include_usage: bool,
    usage: Option<(Usage, f64)>,
}

impl Shaper<'_> {
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
    let mut api = ApiError::internal(format!(
        "The upstream failed after the answer had started: {error}"
    ));
    api.kind = "upstream_error";
    api.code = Some("upstream_stream_error".into());
    sse_event(&api.body())
}
