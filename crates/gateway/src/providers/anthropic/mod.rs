//! The Anthropic Messages wire format (`POST {base_url}/messages`, `x-api-key`,
//! `anthropic-version`).
//!
//! Three directions live here, all of them translation of this one format:
//! - [`request`]: an OpenAI chat body → a Messages body, for an Anthropic upstream;
//! - [`response`]: a Messages answer (whole or streamed) → OpenAI's shapes, read through the
//!   typed answer and stream events of [`wire`];
//! - [`ingress`]: the mirror image for `/v1/messages` clients whose request goes to another
//!   kind: a Messages body → an OpenAI chat body, and the OpenAI answer → Messages shapes.
//!
//! An Anthropic request for an Anthropic upstream is not translated at all: [`native_request`]
//! rewrites `model` and forwards the client's `anthropic-version` and `anthropic-beta` headers.
//! Not for HTTP serving (`server`) or for choosing between upstreams (`dispatch`).

pub mod ingress;
mod request;
mod response;
pub mod wire;

use reqwest::StatusCode;
use serde_json::{Map, Value, json};

use super::{ErrorDetails, EventTranslator, ProviderError, parse_event, str_field};
use triage_core::catalog::{Model, Provider, Usage};

pub(super) use request::request;
pub(super) use response::{ChunkTranslator, to_completion};

/// The API version triage speaks, sent unless a `/v1/messages` client sent its own.
pub const VERSION: &str = "2023-06-01";

/// `max_tokens` for a request that sets none, to a model whose catalog entry has no
/// `max_output`: Anthropic requires a limit, and this one suits a chat answer.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// A `/v1/messages` client's own request: its body and the `anthropic-*` headers that shape it.
#[derive(Debug, Clone, Copy)]
pub struct Native<'a> {
    pub body: &'a Map<String, Value>,
    pub version: Option<&'a str>,
    pub beta: Option<&'a str>,
}

/// Anthropic's Messages API: translated from a chat body, or a `/v1/messages` request passed
/// through as it came (and its answer back as it came).
pub(super) struct Anthropic;

impl super::Adapter for Anthropic {
    fn request(
        &self,
        client: &reqwest::Client,
        provider: &Provider,
        model: &Model,
        body: super::Body<'_>,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        match body {
            super::Body::Messages { native, .. } => {
                Ok(native_request(client, provider, model, native))
            }
            body => request(client, provider, model, body.chat()?, stream),
        }
    }

    fn answer_format(&self, body: super::Body<'_>) -> super::Format {
        match body {
            super::Body::Messages { .. } => super::Format::Messages,
            super::Body::Chat(_) => super::Format::Chat,
        }
    }

    fn completion(&self, answer: Value) -> Result<Value, ProviderError> {
        to_completion(&answer)
    }

    fn chunks(&self, response: reqwest::Response) -> super::ChunkStream {
        super::translate_sse(response, ChunkTranslator::default())
    }

    fn error_details(&self, body: &Value) -> ErrorDetails {
        error_details(body)
    }
}

/// The client's own request, with only `model` rewritten.
pub(super) fn native_request(
    client: &reqwest::Client,
    provider: &Provider,
    model: &Model,
    native: Native<'_>,
) -> reqwest::RequestBuilder {
    let mut body = native.body.clone();
    body.insert("model".into(), Value::String(model.upstream.clone()));
    post(client, provider, &body, native.version, native.beta)
}

fn post(
    client: &reqwest::Client,
    provider: &Provider,
    body: &impl serde::Serialize,
    version: Option<&str>,
    beta: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut request = client
        .post(format!("{}/messages", provider.base_url))
        .header("anthropic-version", version.unwrap_or(VERSION))
        .json(body);
    if let Some(beta) = beta {
        request = request.header("anthropic-beta", beta);
    }
    if let Some(key) = &provider.api_key {
        request = request.header("x-api-key", key.expose());
    }
    request
}

/// Anthropic's error body: `{"type": "error", "error": {"type", "message"}}`.
pub(super) fn error_details(body: &Value) -> ErrorDetails {
    let error = body.get("error");
    ErrorDetails {
        message: error
            .and_then(|e| str_field(e, "message"))
            .map(String::from),
        code: error.and_then(|e| str_field(e, "type")).map(String::from),
        ..ErrorDetails::default()
    }
}

/// The HTTP status Anthropic uses for an error `type`, for errors that arrive in a stream.
fn error_status(kind: &str) -> Option<StatusCode> {
    let code = match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "api_error" => 500,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => return None,
    };
    StatusCode::from_u16(code).ok()
}

/// An `error` event: a status error when its type names one (so that an overloaded upstream
/// that fails before its first token is retried and falls back like a 529), else mid-stream.
fn stream_error(event: &Value) -> ProviderError {
    let error = event.get("error").unwrap_or(event);
    let message = str_field(error, "message").map_or_else(|| error.to_string(), String::from);
    let kind = str_field(error, "type").unwrap_or_default();
    match error_status(kind) {
        Some(status) => ProviderError::Status {
            status,
            message,
            code: Some(kind.to_string()),
            retry_after: None,
        },
        None => ProviderError::MidStream(message),
    }
}

/// A whole native answer must be a `message`.
pub(super) fn check_native(value: Value) -> Result<Value, ProviderError> {
    if str_field(&value, "type") != Some("message") || !value["content"].is_array() {
        return Err(ProviderError::Protocol(
            "answer is not a Messages `message` with `content`".into(),
        ));
    }
    Ok(value)
}

/// Passes a native stream's events on as they are; checks that it ends with `message_stop`.
#[derive(Default)]
pub(super) struct NativeEvents {
    stopped: bool,
}

impl EventTranslator for NativeEvents {
    fn event(&mut self, data: &str) -> Result<Vec<Value>, ProviderError> {
        let event = parse_event(data)?;
        match str_field(&event, "type") {
            Some("error") => Err(stream_error(&event)),
            Some("message_stop") => {
                self.stopped = true;
                Ok(vec![event])
            }
            _ => Ok(vec![event]),
        }
    }

    fn end(&mut self) -> Result<Vec<Value>, ProviderError> {
        if self.stopped {
            Ok(Vec::new())
        } else {
            Err(cut_short())
        }
    }

    fn finished(&self) -> bool {
        self.stopped
    }
}

fn cut_short() -> ProviderError {
    ProviderError::Protocol("the stream ended before `message_stop`".into())
}

/// Token counts of an Anthropic `usage` object (see [`wire::Usage::tokens`]); none when it is
/// not one.
pub fn usage_of(usage: &Value) -> Usage {
    use serde::Deserialize;
    wire::Usage::deserialize(usage).unwrap_or_default().tokens()
}

/// The Anthropic `usage` object for these counts.
pub fn usage_json(usage: &Usage) -> Value {
    let cached = usage.cached_tokens.min(usage.prompt_tokens);
    let written = usage.cache_write_tokens.min(usage.prompt_tokens - cached);
    json!({
        "input_tokens": usage.prompt_tokens - cached - written,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "output_tokens": usage.completion_tokens,
    })
}

/// OpenAI's `finish_reason` for an Anthropic `stop_reason`.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn (a server tool paused the turn), or none given.
        _ => "stop",
    }
}

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_cache_reads_and_writes_as_prompt_tokens() {
        let usage = usage_of(&json!({"input_tokens": 10, "output_tokens": 5,
            "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}));
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 130,
                completion_tokens: 5,
                cached_tokens: 100,
                cache_write_tokens: 20
            }
        );
        assert_eq!(
            usage_json(&usage),
            json!({"input_tokens": 10, "cache_creation_input_tokens": 20,
                "cache_read_input_tokens": 100, "output_tokens": 5})
        );
    }

    #[test]
    fn stop_reasons_map_both_ways() {
        for (anthropic, openai) in [
            ("end_turn", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ] {
            assert_eq!(finish_reason(Some(anthropic)), openai);
            assert_eq!(stop_reason(Some(openai)), anthropic);
        }
        assert_eq!(finish_reason(Some("stop_sequence")), "stop");
        assert_eq!(finish_reason(Some("pause_turn")), "stop");
    }

    #[test]
    fn stream_errors_keep_their_status() {
        let overloaded = json!({"type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"}});
        let error = stream_error(&overloaded);
        assert!(error.is_retryable(), "{error:?}");
        assert_eq!(error.label(), "529");
        let odd = json!({"type": "error", "error": {"type": "brand_new_error", "message": "?"}});
        assert!(matches!(stream_error(&odd), ProviderError::MidStream(m) if m == "?"));
    }

    #[test]
    fn native_events_pass_through_and_must_end_with_message_stop() {
        let mut events = NativeEvents::default();
        let out = crate::providers::replay(
            &mut events,
            &[
                r#"{"type":"message_start","message":{}}"#,
                r#"{"type":"ping"}"#,
            ],
        );
        assert_eq!(out.len(), 3);
        assert!(matches!(out[2], Err(ProviderError::Protocol(_))));
        let mut events = NativeEvents::default();
        let out = crate::providers::replay(&mut events, &[r#"{"type":"message_stop"}"#]);
        assert_eq!(out.len(), 1);
        assert!(out[0].is_ok());
    }

    #[test]
    fn error_bodies_give_message_and_type() {
        let details = error_details(&json!({"type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"}}));
        assert_eq!(details.message.as_deref(), Some("Overloaded"));
        assert_eq!(details.code.as_deref(), Some("overloaded_error"));
    }
}
