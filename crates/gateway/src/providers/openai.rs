//! The OpenAI Chat Completions wire format, spoken by OpenAI and by every OpenAI-compatible host
//! (xAI, DeepSeek, Mistral, Groq, Together, OpenRouter, vLLM, Ollama…).
//!
//! The client's body passes through faithfully: only `model` is rewritten to the upstream's name,
//! and streaming requests always ask for usage so that triage can price them. A body that triage
//! translated itself (from `/v1/messages`) also gets OpenAI's own name for the token limit when
//! it goes to OpenAI. Not for translation of any other format: that lives with that format.

use reqwest::header::AUTHORIZATION;
use serde_json::{Map, Value, json};

use super::{
    Adapter, Body, ChunkStream, ErrorDetails, EventTranslator, ProviderError, parse_event,
    translate_sse,
};
use triage_core::catalog::{Model, Provider};

/// OpenAI-compatible upstreams: a client's chat body passes through, a translated one gets
/// OpenAI's own names where OpenAI needs them.
pub(super) struct OpenAi;

impl Adapter for OpenAi {
    fn request(
        &self,
        client: &reqwest::Client,
        provider: &Provider,
        model: &Model,
        body: Body<'_>,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        Ok(match body {
            Body::Chat(chat) => request(client, provider, model, chat, stream),
            body => translated_request(client, provider, model, body.chat()?, stream),
        })
    }

    fn completion(&self, answer: Value) -> Result<Value, ProviderError> {
        check_completion(answer)
    }

    fn chunks(&self, response: reqwest::Response) -> ChunkStream {
        translate_sse(response, Chunks::default())
    }

    fn error_details(&self, body: &Value) -> ErrorDetails {
        error_details(body)
    }
}

/// The request for a client's own chat body.
pub(super) fn request(
    client: &reqwest::Client,
    provider: &Provider,
    model: &Model,
    body: &Map<String, Value>,
    stream: bool,
) -> reqwest::RequestBuilder {
    let mut body = body.clone();
    body.insert("model".into(), Value::String(model.upstream.clone()));
    if stream {
        body.insert("stream".into(), Value::Bool(true));
        let options = body.entry("stream_options").or_insert_with(|| json!({}));
        if let Some(options) = options.as_object_mut() {
            options.insert("include_usage".into(), Value::Bool(true));
        }
    }
    let mut request = client
        .post(format!("{}/chat/completions", provider.base_url))
        .json(&body);
    if let Some(key) = &provider.api_key {
        request = request.header(AUTHORIZATION, format!("Bearer {}", key.expose()));
    }
    request
}

/// The request for a chat body triage translated from another format. OpenAI's own API
/// rejects `max_tokens` on its reasoning models, so it gets `max_completion_tokens`; other
/// OpenAI-compatible hosts do not all know that name and keep `max_tokens`.
pub(super) fn translated_request(
    client: &reqwest::Client,
    provider: &Provider,
    model: &Model,
    body: &Map<String, Value>,
    stream: bool,
) -> reqwest::RequestBuilder {
    if !is_openai_itself(&provider.base_url) || !body.contains_key("max_tokens") {
        return request(client, provider, model, body, stream);
    }
    let mut body = body.clone();
    if let Some(limit) = body.remove("max_tokens") {
        body.insert("max_completion_tokens".into(), limit);
    }
    request(client, provider, model, &body, stream)
}

fn is_openai_itself(base_url: &str) -> bool {
    reqwest::Url::parse(base_url).is_ok_and(|url| url.host_str() == Some("api.openai.com"))
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
pub(super) fn error_details(body: &Value) -> ErrorDetails {
    let error = body.get("error");
    ErrorDetails {
        message: error
            .and_then(|e| e.get("message").or(Some(e)))
            .map(|m| m.as_str().map_or_else(|| m.to_string(), String::from)),
        code: error
            .and_then(|e| e.get("code"))
            .and_then(Value::as_str)
            .map(String::from),
        ..ErrorDetails::default()
    }
}

/// A whole answer must at least have its `choices`.
pub(super) fn check_completion(value: Value) -> Result<Value, ProviderError> {
    if value.get("choices").is_none_or(|c| !c.is_array()) {
        return Err(ProviderError::Protocol(
            "answer has no `choices` array".into(),
        ));
    }
    Ok(value)
}

/// Passes chunks on as they are, until `[DONE]` or an error object.
#[derive(Default)]
pub(super) struct Chunks {
    done: bool,
    /// A chunk carried a `finish_reason`: the answer itself is complete.
    finish_seen: bool,
}

impl EventTranslator for Chunks {
    fn event(&mut self, data: &str) -> Result<Vec<Value>, ProviderError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        let chunk = parse_chunk(data)?;
        let finishes = chunk
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(|choices| choices.iter().any(|c| !c["finish_reason"].is_null()));
        self.finish_seen |= finishes;
        Ok(vec![chunk])
    }

    /// A close without `[DONE]` is a cut, unless every answer had already finished (some
    /// OpenAI-compatible servers leave `[DONE]` out).
    fn end(&mut self) -> Result<Vec<Value>, ProviderError> {
        if self.done || self.finish_seen {
            Ok(Vec::new())
        } else {
            Err(ProviderError::Truncated)
        }
    }

    fn finished(&self) -> bool {
        self.done
    }
}

/// One SSE `data:` payload: a chunk, or an error object that ends the stream.
fn parse_chunk(data: &str) -> Result<Value, ProviderError> {
    let value = parse_event(data)?;
    match value.get("error") {
        Some(error) => Err(ProviderError::MidStream(
            error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), String::from),
        )),
        None => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_error_events_end_the_stream() {
        let err = parse_chunk(r#"{"error":{"message":"boom","type":"server_error"}}"#).unwrap_err();
        assert!(matches!(err, ProviderError::MidStream(m) if m == "boom"));
        assert!(parse_chunk("{not json").is_err());
        assert!(parse_chunk(r#"{"choices":[]}"#).is_ok());
    }

    #[test]
    fn a_close_mid_answer_is_a_cut_but_not_after_a_finish_reason() {
        let delta = r#"{"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#;
        let finish = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
        let cut = crate::providers::replay(&mut Chunks::default(), &[delta]);
        assert!(matches!(cut.last(), Some(Err(ProviderError::Truncated))));
        let whole = crate::providers::replay(&mut Chunks::default(), &[delta, "[DONE]"]);
        assert!(whole.iter().all(Result::is_ok));
        let no_done = crate::providers::replay(&mut Chunks::default(), &[delta, finish]);
        assert!(no_done.iter().all(Result::is_ok));
    }

    #[test]
    fn only_openai_itself_gets_max_completion_tokens() {
        assert!(is_openai_itself("https://api.openai.com/v1"));
        assert!(!is_openai_itself("https://api.groq.com/openai/v1"));
        assert!(!is_openai_itself("http://127.0.0.1:9000/v1"));
    }
}
