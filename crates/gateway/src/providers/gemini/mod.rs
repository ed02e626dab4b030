//! The Gemini API wire format: `POST {base_url}/models/{model}:generateContent`, and
//! `:streamGenerateContent?alt=sse` (each SSE event a whole `GenerateContentResponse`), with the
//! key in `x-goog-api-key`.
//!
//! [`request`] turns an OpenAI chat body into `contents` / `systemInstruction` / `tools` /
//! `toolConfig` / `generationConfig`; [`response`] turns answers, whole or streamed, back into
//! OpenAI's shapes, read through the typed `GenerateContentResponse` of [`wire`]. Gemini 3's
//! thought signatures, which must come back with a function call in the next turn, travel
//! inside the OpenAI tool-call id ([`call_id`], [`signature_of`]), so that plain OpenAI clients
//! carry them without knowing. Not for anything but translation.

mod request;
mod response;
pub mod wire;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::{ErrorDetails, ProviderError, str_field};
use triage_core::catalog::{Model, Provider};

pub(super) use request::request;
pub(super) use response::{ChunkTranslator, to_completion};

/// The model part of a Gemini URL: the upstream name without a `models/` prefix.
fn model_path(upstream: &str) -> &str {
    upstream.strip_prefix("models/").unwrap_or(upstream)
}

/// Google's `generateContent` / `streamGenerateContent`, translated both ways.
pub(super) struct Gemini;

impl super::Adapter for Gemini {
    fn request(
        &self,
        client: &reqwest::Client,
        provider: &Provider,
        model: &Model,
        body: super::Body<'_>,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        request(client, provider, model, body.chat()?, stream)
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

/// Gemini's error body: `{"error": {"code", "message", "status", "details"}}`. A bad API key
/// comes as 400 `INVALID_ARGUMENT` with reason `API_KEY_INVALID`: it is triage's credentials,
/// not the client's request, so it is reported as 401. A `RetryInfo` detail gives the wait.
pub(super) fn error_details(body: &Value) -> ErrorDetails {
    let error = body.get("error");
    let details = error
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array);
    let details = details.map(Vec::as_slice).unwrap_or_default();
    let bad_key = details
        .iter()
        .any(|d| str_field(d, "reason") == Some("API_KEY_INVALID"));
    let retry_after = details
        .iter()
        .filter(|d| str_field(d, "@type").is_some_and(|t| t.ends_with("google.rpc.RetryInfo")))
        .find_map(|d| str_field(d, "retryDelay"))
        .and_then(parse_duration);
    ErrorDetails {
        message: error
            .and_then(|e| str_field(e, "message"))
            .map(String::from),
        code: error.and_then(|e| str_field(e, "status")).map(String::from),
        status: bad_key.then_some(StatusCode::UNAUTHORIZED),
        retry_after,
    }
}

/// A protobuf JSON duration: `"30s"`, `"1.5s"`.
fn parse_duration(text: &str) -> Option<Duration> {
    let seconds: f64 = text.strip_suffix('s')?.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// An error object inside a stream or a 200 body.
fn stream_error(error: &Value) -> ProviderError {
    let message = str_field(error, "message").map_or_else(|| error.to_string(), String::from);
    let status = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .and_then(|c| StatusCode::from_u16(c).ok());
    match status {
        Some(status) if status.as_u16() >= 400 => ProviderError::Status {
            status,
            message,
            code: str_field(error, "status").map(String::from),
            retry_after: None,
        },
        _ => ProviderError::MidStream(message),
    }
}

/// Marks where a thought signature starts inside a tool-call id.
const SIGNATURE_MARK: &str = "_ts_";

/// The OpenAI tool-call id for a function call: a fresh `call_…` id, with the call's thought
/// signature appended (base64url, so the id stays within `[A-Za-z0-9_-]`, which Anthropic
/// requires of ids it is sent back).
fn call_id(signature: Option<&str>) -> String {
    let id = format!("call_{}", &uuid::Uuid::new_v4().simple().to_string()[..24]);
    match signature {
        Some(signature) => format!("{id}{SIGNATURE_MARK}{}", to_base64url(signature)),
        None => id,
    }
}

/// The thought signature carried in a tool-call id made by [`call_id`].
fn signature_of(id: &str) -> Option<String> {
    let rest = id.strip_prefix("call_")?;
    let (prefix, signature) = rest.split_at_checked(24)?;
    if !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let signature = signature.strip_prefix(SIGNATURE_MARK)?;
    (!signature.is_empty()).then(|| from_base64url(signature))
}

fn to_base64url(standard: &str) -> String {
    standard
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect()
}

fn from_base64url(url: &str) -> String {
    let mut standard: String = url
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !standard.len().is_multiple_of(4) {
        standard.push('=');
    }
    standard
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signatures_round_trip_through_call_ids() {
        let signature = "CiQB+/x9Ab==";
        let id = call_id(Some(signature));
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{id}"
        );
        assert_eq!(signature_of(&id).as_deref(), Some(signature));
        assert_eq!(signature_of(&call_id(None)), None);
        assert_eq!(signature_of("toolu_01abc"), None);
        assert_eq!(signature_of("call_1"), None);
    }

    #[test]
    fn error_bodies() {
        let bad_key = error_details(
            &json!({"error": {"code": 400, "message": "API key not valid.",
            "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID"}]}}),
        );
        assert_eq!(bad_key.status, Some(StatusCode::UNAUTHORIZED));
        let limited = error_details(&json!({"error": {"code": 429, "message": "Quota exceeded",
            "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": "1.5s"}]}}));
        assert_eq!(limited.retry_after, Some(Duration::from_millis(1500)));
        assert_eq!(limited.code.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(limited.message.as_deref(), Some("Quota exceeded"));
        assert_eq!(limited.status, None);
    }

    #[test]
    fn model_paths() {
        assert_eq!(model_path("models/gemini-x"), "gemini-x");
        assert_eq!(model_path("gemini-x"), "gemini-x");
    }
}
