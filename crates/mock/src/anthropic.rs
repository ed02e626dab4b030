//! The Anthropic side of the mock: `POST /v1/messages`, checked as strictly as Anthropic checks
//! it (the `anthropic-version` header, `max_tokens`, roles, unknown fields, empty text blocks,
//! tool results that answer the previous turn's calls), Anthropic's error bodies (529
//! `overloaded_error` included), and `message` answers, whole or as the documented event
//! sequence.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Response, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{
    ARGUMENT_FRAGMENTS, Answer, App, Fault, Prompt, Tool, ToolChoice, delay, fault_status,
    fragments, json_body, sse_body, with_retry_after, word_pieces,
};

/// The top-level fields Anthropic accepts (and the mock's own `mock`).
const KNOWN_FIELDS: [&str; 26] = [
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "output_config",
    "output_format",
    "context_management",
    "cache_control",
    "diagnostics",
    "inference_geo",
    "speed",
    "user_profile_id",
    "workspace_id",
    "mock",
];

pub(super) async fn messages(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response<Body> {
    let parsed = app.record(&headers, &uri, &body);
    answer(&app, &headers, parsed)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn answer(
    app: &App,
    headers: &HeaderMap,
    parsed: serde_json::Result<Value>,
) -> Result<Response<Body>, Error> {
    let given = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if !app.key_ok(given) {
        return Err(Error::new(StatusCode::UNAUTHORIZED, "invalid x-api-key"));
    }
    if !headers.contains_key("anthropic-version") {
        return Err(Error::invalid("anthropic-version: header is required"));
    }
    let body =
        parsed.map_err(|e| Error::invalid(&format!("There was an error parsing the body: {e}")))?;
    let request = Request::parse(&body)?;
    let fault = app
        .take_fault(&request.prompt.model, &body)
        .map_err(|message| Error::invalid(&message))?;
    delay(&fault).await;
    let response = match fault_status(&fault) {
        Some(status) => Error::for_fault(status, &fault, &request.prompt.model).into_response(),
        None => {
            let message = Message::build(app, &request, &fault);
            if request.stream {
                sse_body(message.events(), &fault)
            } else {
                json_body(&message.to_json(), &fault)
            }
        }
    };
    Ok(with_retry_after(response, &fault))
}

/// What the mock reads from a Messages request.
struct Request {
    prompt: Prompt,
    stream: bool,
    max_tokens: u64,
}

impl Request {
    fn parse(body: &Value) -> Result<Request, Error> {
        let object = body
            .as_object()
            .ok_or_else(|| Error::invalid("The request body must be a JSON object"))?;
        if let Some(key) = object.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
            return Err(Error::invalid(&format!(
                "{key}: Extra inputs are not permitted"
            )));
        }
        let model = body["model"]
            .as_str()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| Error::invalid("model: Field required"))?;
        let max_tokens = body["max_tokens"]
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| Error::invalid("max_tokens: Field required"))?;
        let messages = body["messages"]
            .as_array()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| Error::invalid("messages: Field required"))?;
        check_turns(messages)?;
        Ok(Request {
            prompt: prompt(model, messages, body),
            stream: body["stream"].as_bool().unwrap_or(false),
            max_tokens,
        })
    }
}

/// Anthropic's structural rules: user/assistant roles, non-empty text blocks, and every
/// `tool_use` answered by a `tool_result` in the very next turn (and only those).
fn check_turns(messages: &[Value]) -> Result<(), Error> {
    let mut open_calls: HashSet<String> = HashSet::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        if !matches!(role, "user" | "assistant") {
            return Err(Error::invalid(&format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            )));
        }
        let blocks = blocks(message);
        if blocks
            .iter()
            .any(|b| b["type"] == "text" && b["text"].as_str().is_none_or(str::is_empty))
        {
            return Err(Error::invalid(
                "messages: text content blocks must be non-empty",
            ));
        }
        let results: HashSet<String> = ids(&blocks, "tool_result", "tool_use_id");
        if results != open_calls {
            return Err(Error::invalid(&format!(
                "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after, \
                 or `tool_result` blocks answer no `tool_use` of the previous message"
            )));
        }
        open_calls = ids(&blocks, "tool_use", "id");
    }
    Ok(())
}

/// A message's content as blocks (a string is one text block).
fn blocks(message: &Value) -> Vec<Value> {
    match &message["content"] {
        Value::String(text) => vec![json!({"type": "text", "text": text})],
        Value::Array(blocks) => blocks.clone(),
        _ => Vec::new(),
    }
}

fn ids(blocks: &[Value], kind: &str, key: &str) -> HashSet<String> {
    blocks
        .iter()
        .filter(|b| b["type"] == kind)
        .filter_map(|b| b[key].as_str().map(str::to_owned))
        .collect()
}

/// The text of a block list: text blocks and tool results.
fn text_of(blocks: &[Value]) -> String {
    let mut text = String::new();
    for block in blocks {
        match (&block["type"], &block["content"]) {
            (t, _) if t == "text" => text.push_str(block["text"].as_str().unwrap_or_default()),
            (t, Value::String(result)) if t == "tool_result" => text.push_str(result),
            (t, Value::Array(inner)) if t == "tool_result" => text.push_str(&text_of(inner)),
            _ => {}
        }
    }
    text
}

fn prompt(model: &str, messages: &[Value], body: &Value) -> Prompt {
    let system = match &body["system"] {
        Value::String(text) => Some(text.clone()),
        Value::Array(blocks) => Some(text_of(blocks)),
        _ => None,
    };
    let texts: Vec<String> = messages.iter().map(|m| text_of(&blocks(m))).collect();
    let last = messages.last().map(blocks).unwrap_or_default();
    let ends_with_result = last.iter().any(|b| b["type"] == "tool_result");
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user" && !blocks(m).iter().any(|b| b["type"] == "tool_result"));
    let tools = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| Tool {
            name: t["name"].as_str().unwrap_or_default().to_owned(),
            schema: t.get("input_schema").cloned(),
        })
        .collect();
    let tool_choice = match body["tool_choice"]["type"].as_str() {
        Some("none") => ToolChoice::None,
        Some("any") => ToolChoice::Required,
        Some("tool") => ToolChoice::Named(
            body["tool_choice"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ),
        _ => ToolChoice::Auto,
    };
    Prompt {
        model: model.to_owned(),
        message_texts: system.into_iter().chain(texts).collect(),
        last_user_text: last_user.map(|m| text_of(&blocks(m))).unwrap_or_default(),
        tool_result: ends_with_result.then(|| text_of(&last)),
        tools,
        tool_choice,
    }
}

/// An answer, rendered as a `message` or as its stream events.
struct Message {
    id: String,
    model: String,
    answer: Answer,
    stop_reason: String,
    usage: Value,
}

impl Message {
    fn build(app: &App, request: &Request, fault: &Fault) -> Message {
        let prompt = &request.prompt;
        let mut answer = prompt.answer(fault, || format!("toolu_{:024}", app.next_call_number()));
        let cut = answer.truncate(Some(request.max_tokens));
        let stop_reason = match (&fault.finish_reason, &answer) {
            (Some(reason), _) => reason.clone(),
            _ if cut => "max_tokens".into(),
            (None, Answer::ToolCall { .. }) => "tool_use".into(),
            (None, Answer::Text(_)) => "end_turn".into(),
        };
        if stop_reason == "refusal" {
            answer = Answer::Text(String::new());
        }
        let usage = fault.usage.clone().unwrap_or_else(|| {
            json!({"input_tokens": prompt.prompt_tokens(), "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "output_tokens": answer.word_count()})
        });
        Message {
            id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            model: prompt.model.clone(),
            answer,
            stop_reason,
            usage,
        }
    }

    fn content(&self) -> Vec<Value> {
        match &self.answer {
            Answer::Text(text) if text.is_empty() => Vec::new(),
            Answer::Text(text) => vec![json!({"type": "text", "text": text})],
            Answer::ToolCall {
                id,
                name,
                arguments,
            } => {
                let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                vec![json!({"type": "tool_use", "id": id, "name": name, "input": input})]
            }
        }
    }

    fn envelope(&self, content: Vec<Value>, stop_reason: Value, usage: Value) -> Value {
        json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": null, "usage": usage,
        })
    }

    fn to_json(&self) -> Value {
        self.envelope(self.content(), json!(self.stop_reason), self.usage.clone())
    }

    /// The documented sequence: `message_start`, `ping`, each block's start, deltas and stop,
    /// `message_delta` (stop reason, output tokens), `message_stop`.
    fn events(&self) -> Vec<Bytes> {
        let mut start_usage = self.usage.clone();
        start_usage["output_tokens"] = json!(1);
        let mut events = vec![
            json!({"type": "message_start", "message": self.envelope(Vec::new(), Value::Null, start_usage)}),
            json!({"type": "ping"}),
        ];
        events.extend(self.block_events());
        events.push(json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": self.usage["output_tokens"]}}));
        events.push(json!({"type": "message_stop"}));
        events.iter().map(sse).collect()
    }

    fn block_events(&self) -> Vec<Value> {
        let delta =
            |delta: Value| json!({"type": "content_block_delta", "index": 0, "delta": delta});
        let (start, deltas): (Value, Vec<Value>) = match &self.answer {
            Answer::Text(text) if text.is_empty() => return Vec::new(),
            Answer::Text(text) => (
                json!({"type": "text", "text": ""}),
                word_pieces(text)
                    .into_iter()
                    .map(|w| delta(json!({"type": "text_delta", "text": w})))
                    .collect(),
            ),
            Answer::ToolCall {
                id,
                name,
                arguments,
            } => (
                json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                std::iter::once("")
                    .chain(fragments(arguments, ARGUMENT_FRAGMENTS))
                    .map(|f| delta(json!({"type": "input_json_delta", "partial_json": f})))
                    .collect(),
            ),
        };
        let mut events =
            vec![json!({"type": "content_block_start", "index": 0, "content_block": start})];
        events.extend(deltas);
        events.push(json!({"type": "content_block_stop", "index": 0}));
        events
    }
}

fn sse(event: &Value) -> Bytes {
    let kind = event["type"].as_str().unwrap_or("message");
    Bytes::from(format!("event: {kind}\ndata: {event}\n\n"))
}

/// An error in Anthropic's shape.
#[derive(Debug)]
struct Error {
    status: StatusCode,
    message: String,
}

impl Error {
    fn new(status: StatusCode, message: &str) -> Error {
        Error {
            status,
            message: message.to_owned(),
        }
    }

    fn invalid(message: &str) -> Error {
        Error::new(StatusCode::BAD_REQUEST, message)
    }

    fn for_fault(status: StatusCode, fault: &Fault, model: &str) -> Error {
        let message = fault
            .message
            .clone()
            .unwrap_or_else(|| match status.as_u16() {
                401 => "invalid x-api-key".to_owned(),
                404 => format!("model: {model}"),
                429 => {
                    "Number of request tokens has exceeded your per-minute rate limit".to_owned()
                }
                529 => "Overloaded".to_owned(),
                500..=599 => "Internal server error".to_owned(),
                _ => "Invalid request".to_owned(),
            });
        Error { status, message }
    }

    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            504 => "timeout_error",
            500..=599 => "api_error",
            _ => "invalid_request_error",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response<Body> {
        let body = json!({"type": "error", "error": {"type": self.kind(), "message": self.message},
            "request_id": "req_mock"});
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MockUpstream;

    async fn post(mock: &MockUpstream, body: Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/messages", mock.base_url()))
            .header("x-api-key", "k")
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    fn hello() -> Value {
        json!({"model": "claude-m", "max_tokens": 100, "system": "Be brief.",
            "messages": [{"role": "user", "content": "Hello there"}]})
    }

    #[tokio::test]
    async fn answers_a_message_with_usage() {
        let mock = MockUpstream::start(Some("k".into())).await.unwrap();
        let body: Value = post(&mock, hello()).await.json().await.unwrap();
        assert_eq!(body["type"], "message");
        assert_eq!(
            body["content"],
            json!([{"type": "text", "text": "Mock answer from claude-m: Hello there"}])
        );
        assert_eq!(body["stop_reason"], "end_turn");
        // (3 + 2) + (3 + 2) in, six words out.
        assert_eq!(body["usage"]["input_tokens"], 10);
        assert_eq!(body["usage"]["output_tokens"], 6);
        assert_eq!(mock.requests()[0].path, "/v1/messages");
    }

    #[tokio::test]
    async fn streams_the_documented_event_sequence() {
        let mock = MockUpstream::start(None).await.unwrap();
        let mut request = hello();
        request["stream"] = json!(true);
        request["tools"] = json!([{"name": "weather", "input_schema": {"type": "object",
            "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
        let text = post(&mock, request).await.text().await.unwrap();
        let kinds: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            kinds[..4],
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta"
            ]
        );
        assert_eq!(
            kinds[kinds.len() - 3..],
            ["content_block_stop", "message_delta", "message_stop"]
        );
        assert!(text.contains(r#""stop_reason":"tool_use""#));
        let partial: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|e| e["delta"]["partial_json"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(partial, r#"{"city":"test"}"#);
    }

    #[tokio::test]
    async fn rejects_what_anthropic_rejects() {
        let mock = MockUpstream::start(None).await.unwrap();
        let error = |response: reqwest::Response| async move {
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            (
                status.as_u16(),
                body["error"]["type"].as_str().unwrap().to_owned(),
                body["error"]["message"].as_str().unwrap().to_owned(),
            )
        };
        let mut no_limit = hello();
        no_limit.as_object_mut().unwrap().remove("max_tokens");
        assert_eq!(
            error(post(&mock, no_limit).await).await.2,
            "max_tokens: Field required"
        );
        let mut extra = hello();
        extra["n"] = json!(2);
        assert_eq!(
            error(post(&mock, extra).await).await.2,
            "n: Extra inputs are not permitted"
        );
        let mut dangling = hello();
        dangling["messages"] = json!([{"role": "user", "content": "x"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": "no result"}]);
        assert_eq!(error(post(&mock, dangling).await).await.0, 400);
        let mut overloaded = hello();
        overloaded["mock"] = json!({"status": 529});
        assert_eq!(
            error(post(&mock, overloaded).await).await,
            (529, "overloaded_error".into(), "Overloaded".into())
        );
        let no_version = reqwest::Client::new()
            .post(format!("{}/messages", mock.base_url()))
            .json(&hello())
            .send()
            .await
            .unwrap();
        assert_eq!(
            error(no_version).await.2,
            "anthropic-version: header is required"
        );
    }

    #[tokio::test]
    async fn tool_results_are_answered_and_limits_cut() {
        let mock = MockUpstream::start(None).await.unwrap();
        let mut request = hello();
        request["messages"] = json!([{"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]}]);
        let body: Value = post(&mock, request).await.json().await.unwrap();
        assert_eq!(body["content"][0]["text"], "Tool result: sunny");
        let mut short = hello();
        short["max_tokens"] = json!(2);
        let body: Value = post(&mock, short).await.json().await.unwrap();
        assert_eq!(
            (&body["content"][0]["text"], &body["stop_reason"]),
            (&json!("Mock answer"), &json!("max_tokens"))
        );
    }
}
