//! `POST /v1/messages`: Anthropic's Messages API in front of every provider, for the
//! `anthropic` SDKs and Claude-style agents.
//!
//! The request is checked as Anthropic checks it, routed like a chat request, and dispatched
//! with both its native body and its OpenAI translation: an Anthropic upstream gets the client's
//! body untouched but for `model`, and its answer comes back as it is; any other upstream gets
//! the translation, and its answer (whole or streamed) is translated back. Errors use
//! Anthropic's error shape. Headers, pricing, metrics and logs are the chat endpoint's.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::routing;
use super::stream::{self, Shape, StreamContext};
use super::{
    ApiError, AppState, Finished, HandlerFailure, Pending, body_rejection, describe_failures,
    format_usd, respond, set_header,
};
use crate::dispatch::{Answer, Dispatched, Streamed};
use crate::providers::anthropic::{self, Native, ingress};
use crate::providers::{Body, Format, ProviderError};
use triage_core::catalog::{Model, Usage};
use triage_core::policy::Constraints;

pub(super) async fn messages(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut pending = Pending::new(&state, "messages", &headers);
    let trace = pending.finished().trace.clone();
    let result =
        crate::telemetry::within(trace, handle(&state, &headers, body, pending.finished())).await;
    respond(
        &state,
        pending.done(),
        result,
        ApiError::into_anthropic_response,
    )
}

async fn handle(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    finished: &mut Finished,
) -> Result<Response, HandlerFailure> {
    let (key_id, key) = state.caller(headers).map_err(|e| (e, None))?;
    finished.key_id = key_id;
    let body = body.map_err(|rejection| (body_rejection(&rejection, &state.limits), None))?;
    let request = MessagesRequest::parse(&body).map_err(|e| (e, None))?;
    if let Some(key) = &key {
        finished.rate = Some(super::keys::admit(key, &request.requested).map_err(|e| (e, None))?);
    }
    finished.requested = request.requested[0].clone();
    finished.stream = request.stream;
    if state.stores_text() {
        finished.prompt = Some(crate::outcomes::prompt_text(&request.body));
    }
    let chat = ingress::chat_body(&request.body);
    let mut routing_body = chat.clone().unwrap_or_default();
    let routing::Routed { chain, auto } = routing::resolve_body(
        state,
        &request.requested,
        &Constraints::default(),
        &mut routing_body,
        true,
        key.as_deref(),
    )
    .await
    .map_err(|e| (e, None))?;
    finished.auto = auto.clone();
    let native = Native {
        body: &request.body,
        version: header_text(headers, "anthropic-version"),
        beta: header_text(headers, "anthropic-beta"),
    };
    let body = Body::Messages {
        native,
        chat: chat.as_ref().map_err(String::as_str),
    };
    let (dispatched, format) = state
        .dispatcher
        .dispatch_body(&chain, body, request.stream)
        .await
        .map_err(|e| {
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
        Answer::Full(value) => full_response(state, value, format, &model, finished),
        Answer::Stream(streamed) => stream_response(state, streamed, format, &model, finished),
    };
    set_header(&mut response, "x-triage-model", &model.id);
    set_header(&mut response, "x-triage-fallbacks", &finished.fallbacks);
    if let Some(auto) = &auto {
        routing::explain(&mut response, auto, &model.id);
    }
    Ok(response)
}

fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A whole answer as a Messages `message`, priced, with the cost header.
fn full_response(
    state: &AppState,
    value: Value,
    format: Format,
    model: &Arc<Model>,
    finished: &mut Finished,
) -> Response {
    let (message, usage) = match format {
        Format::Messages => {
            let usage = anthropic::usage_of(&value["usage"]);
            (value, usage)
        }
        Format::Chat => {
            let usage = Usage::from_openai(&value["usage"]).unwrap_or_default();
            (ingress::message(&value), usage)
        }
    };
    let cost = model.cost(&usage);
    finished.usage = Some((usage, cost));
    if state.stores_text() {
        finished.answer = crate::outcomes::answer_text(&message);
    }
    finished.signals = crate::outcomes::signals::Signals::of_answer(&message);
    state.record(finished, Some(model));
    let mut response = Json(message).into_response();
    set_header(&mut response, "x-triage-cost-usd", &format_usd(cost));
    response
}

fn stream_response(
    state: &Arc<AppState>,
    streamed: Streamed,
    format: Format,
    model: &Arc<Model>,
    finished: &mut Finished,
) -> Response {
    let context = StreamContext {
        state: state.clone(),
        model: model.clone(),
        finished: std::mem::replace(finished, finished.copy_ids()),
        include_usage: false,
    };
    match format {
        Format::Messages => {
            let shape = NativeEvents {
                model: model.clone(),
                usage: None,
            };
            stream::respond_with(context, streamed, shape)
        }
        Format::Chat => {
            let shape = TranslatedEvents {
                model: model.clone(),
                writer: ingress::EventWriter::default(),
            };
            stream::respond_with(context, streamed, shape)
        }
    }
}

/// One SSE event in Anthropic's framing: `event:` names the data's `type`.
fn sse_event(event: &Value) -> String {
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    format!("event: {kind}\ndata: {event}\n\n")
}

fn events_bytes(events: &[Value]) -> Option<Bytes> {
    let text: String = events.iter().map(sse_event).collect();
    (!text.is_empty()).then(|| Bytes::from(text))
}

/// The `error` event for a failure after the answer had started.
fn error_event(error: &ProviderError) -> Bytes {
    let api = ApiError::failed_mid_answer(error);
    Bytes::from(sse_event(&api.anthropic_body()))
}

/// An Anthropic upstream's own events, passed on; usage read from `message_start` and
/// `message_delta`.
struct NativeEvents {
    model: Arc<Model>,
    /// The running totals, as the response translator keeps them; `None` until an event
    /// carries a count.
    usage: Option<anthropic::wire::Usage>,
}

impl Shape for NativeEvents {
    fn item(&mut self, event: Value) -> Result<Option<Bytes>, ProviderError> {
        let usage = match event.get("type").and_then(Value::as_str) {
            Some("message_start") => event.pointer("/message/usage"),
            Some("message_delta") => event.get("usage"),
            _ => None,
        };
        let counts = usage.and_then(|u| anthropic::wire::Usage::deserialize(u).ok());
        if let Some(counts) = counts.filter(|c| *c != anthropic::wire::Usage::default()) {
            self.usage.get_or_insert_default().update(&counts);
        }
        Ok(Some(Bytes::from(sse_event(&event))))
    }

    fn end(&mut self) -> Option<Bytes> {
        None
    }

    fn error(&self, error: &ProviderError) -> Bytes {
        error_event(error)
    }

    fn usage(&self) -> Option<(Usage, f64)> {
        let usage = self.usage?.tokens();
        Some((usage, self.model.cost(&usage)))
    }
}

/// OpenAI chunks from another kind of upstream, as Anthropic events.
struct TranslatedEvents {
    model: Arc<Model>,
    writer: ingress::EventWriter,
}

impl Shape for TranslatedEvents {
    fn item(&mut self, chunk: Value) -> Result<Option<Bytes>, ProviderError> {
        let events = self.writer.chunk(&chunk).map_err(ProviderError::Protocol)?;
        Ok(events_bytes(&events))
    }

    fn end(&mut self) -> Option<Bytes> {
        events_bytes(&self.writer.finish())
    }

    fn error(&self, error: &ProviderError) -> Bytes {
        error_event(error)
    }

    fn usage(&self) -> Option<(Usage, f64)> {
        self.writer
            .usage()
            .map(|usage| (usage, self.model.cost(&usage)))
    }
}

/// A Messages request, checked as Anthropic checks it before anything is forwarded.
#[derive(Debug)]
struct MessagesRequest {
    /// The body to forward: the client's, minus triage's own `models`.
    body: Map<String, Value>,
    /// `model`, then the OpenRouter-style `models` list.
    requested: Vec<String>,
    stream: bool,
}

impl MessagesRequest {
    fn parse(bytes: &[u8]) -> Result<MessagesRequest, ApiError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ApiError::invalid_json(&e.to_string()))?;
        let Value::Object(mut body) = value else {
            return Err(invalid("The request body must be a JSON object."));
        };
        let mut requested = Vec::new();
        match body.get("model") {
            None | Some(Value::Null) => {}
            Some(Value::String(m)) if !m.is_empty() => requested.push(m.clone()),
            Some(_) => return Err(invalid("model: Input should be a non-empty string")),
        }
        if let Some(models) = body.remove("models") {
            let list = models
                .as_array()
                .ok_or_else(|| invalid("models: Input should be a list of model ids"))?;
            for model in list {
                let id = model
                    .as_str()
                    .ok_or_else(|| invalid("models: Input should be a list of model ids"))?;
                requested.push(id.to_string());
            }
        }
        if requested.is_empty() {
            return Err(invalid("model: Field required"));
        }
        match body.get("max_tokens") {
            None => return Err(invalid("max_tokens: Field required")),
            Some(v) if v.as_u64().is_none_or(|n| n == 0) => {
                return Err(invalid("max_tokens: Input should be a positive integer"));
            }
            Some(_) => {}
        }
        check_messages(body.get("messages"))?;
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid("stream: Input should be a valid boolean")),
        };
        Ok(MessagesRequest {
            body,
            requested,
            stream,
        })
    }
}

fn invalid(message: &str) -> ApiError {
    ApiError::invalid_request(message, None)
}

fn check_messages(messages: Option<&Value>) -> Result<(), ApiError> {
    let messages = match messages {
        None => return Err(invalid("messages: Field required")),
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(_) => return Err(invalid("messages: Input should be a non-empty list")),
    };
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        if !matches!(role, Some("user" | "assistant")) {
            return Err(invalid(&format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            )));
        }
        if !matches!(
            message.get("content"),
            Some(Value::String(_) | Value::Array(_))
        ) {
            return Err(invalid(&format!(
                "messages.{i}.content: Input should be a string or a list of content blocks"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_of(body: &str) -> String {
        MessagesRequest::parse(body.as_bytes())
            .unwrap_err()
            .message()
            .to_string()
    }

    #[test]
    fn parses_and_strips_models() {
        let r = MessagesRequest::parse(
            br#"{"model":"a/b","models":["c/d"],"max_tokens":10,"messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        )
        .unwrap();
        assert_eq!(r.requested, ["a/b", "c/d"]);
        assert!(r.stream);
        assert!(!r.body.contains_key("models"));
    }

    #[test]
    fn errors_read_like_anthropic_ones() {
        let user = r#"[{"role":"user","content":"hi"}]"#;
        assert_eq!(
            message_of(&format!(r#"{{"max_tokens":1,"messages":{user}}}"#)),
            "model: Field required"
        );
        assert_eq!(
            message_of(&format!(r#"{{"model":"m","messages":{user}}}"#)),
            "max_tokens: Field required"
        );
        assert_eq!(
            message_of(r#"{"model":"m","max_tokens":1}"#),
            "messages: Field required"
        );
        assert!(
            message_of(
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"x"}]}"#
            )
            .starts_with("messages.0.role")
        );
        assert!(
            message_of(r#"{"model":"m","max_tokens":1,"messages":[{"role":"user"}]}"#)
                .starts_with("messages.0.content")
        );
        assert!(
            MessagesRequest::parse(b"{")
                .unwrap_err()
                .message()
                .contains("JSON")
        );
    }

    #[test]
    fn events_are_framed_with_their_type() {
        assert_eq!(
            sse_event(&serde_json::json!({"type": "ping"})),
            "event: ping\ndata: {\"type\":\"ping\"}\n\n"
        );
    }
}
