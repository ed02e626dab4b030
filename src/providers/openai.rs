//! The OpenAI Chat Completions wire format, spoken by OpenAI and by every OpenAI-compatible host
//! (xAI, DeepSeek, Mistral, Groq, Together, OpenRouter, vLLM, Ollama…).
//!
//! The client's body passes through faithfully: only `model` is rewritten to the upstream's name,
//! and streaming requests always ask for usage so that triage can price them.

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, RETRY_AFTER};
use serde_json::{Map, Value, json};

use super::{ChunkStream, ProviderError, parse_retry_after, scrub};
use crate::catalog::{Model, Provider};

/// Error bodies longer than this are cut before they are parsed or shown.
const MAX_ERROR_BODY: usize = 16 * 1024;

pub(super) async fn send(
    client: &reqwest::Client,
    provider: &Provider,
    model: &Model,
    body: &Map<String, Value>,
    stream: bool,
) -> Result<reqwest::Response, ProviderError> {
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
    let response = request.send().await.map_err(ProviderError::from_reqwest)?;
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(error_from_response(response, provider).await)
    }
}

/// Builds a [`ProviderError::Status`] from an upstream error response.
async fn error_from_response(response: reqwest::Response, provider: &Provider) -> ProviderError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let bytes = response.bytes().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ERROR_BODY)]).into_owned();
    let parsed: Option<Value> = serde_json::from_str(&text).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let code = error
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .map(String::from);
    let message = if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        // Upstream auth messages often quote part of the key: never pass them on.
        format!(
            "provider `{}` rejected triage's credentials for it",
            provider.name
        )
    } else {
        let message = error
            .and_then(|e| e.get("message").or(Some(e)))
            .map(|m| m.as_str().map_or_else(|| m.to_string(), String::from))
            .unwrap_or(text);
        scrub(&message, provider)
    };
    ProviderError::Status {
        status,
        message,
        code,
        retry_after,
    }
}

pub(super) async fn read_full(response: reqwest::Response) -> Result<Value, ProviderError> {
    let bytes = response
        .bytes()
        .await
        .map_err(ProviderError::from_reqwest)?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ProviderError::Protocol(format!("answer is not JSON: {e}")))?;
    if value.get("choices").is_none_or(|c| !c.is_array()) {
        return Err(ProviderError::Protocol(
            "answer has no `choices` array".into(),
        ));
    }
    Ok(value)
}

pub(super) fn into_chunks(response: reqwest::Response) -> ChunkStream {
    let events = response
        .bytes_stream()
        .eventsource()
        .take_while(|event| {
            let done = matches!(event, Ok(e) if e.data.trim() == "[DONE]");
            std::future::ready(!done)
        })
        .filter(|event| std::future::ready(!matches!(event, Ok(e) if e.data.trim().is_empty())))
        .map(|event| match event {
            Ok(event) => parse_chunk(&event.data),
            Err(eventsource_stream::EventStreamError::Transport(e)) => {
                Err(ProviderError::from_reqwest(e))
            }
            Err(e) => Err(ProviderError::Protocol(e.to_string())),
        });
    Box::pin(events)
}

/// One SSE `data:` payload: a chunk, or an error object that ends the stream.
fn parse_chunk(data: &str) -> Result<Value, ProviderError> {
    let value: Value = serde_json::from_str(data)
        .map_err(|e| ProviderError::Protocol(format!("stream event is not JSON: {e}")))?;
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
}
