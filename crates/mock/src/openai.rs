//! The OpenAI side of the mock: `POST /v1/chat/completions` and `GET /v1/models`, OpenAI's
//! error bodies, and `chat.completion` answers, whole or as `chat.completion.chunk` events.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{
    ARGUMENT_FRAGMENTS, Answer, App, Fault, Prompt, Tool, ToolChoice, delay, fault_status,
    fragments, json_body, sse_body, with_retry_after, word_pieces,
};

pub(super) async fn chat_completions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response<Body> {
    let parsed = app.record(&headers, &uri, &body);
    answer_chat(&app, &headers, parsed)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn answer_chat(
    app: &App,
    headers: &HeaderMap,
    parsed: serde_json::Result<Value>,
) -> Result<Response<Body>, ApiError> {
    check_auth(app, headers)?;
    let body = parsed.map_err(|_| ApiError::invalid_json())?;
    let request = ChatRequest::parse(&body)?;
    let bearer = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let fault = app
        .take_fault(&request.prompt.model, &body)
        .map_err(|message| ApiError::invalid_param("mock", message))?
        .echo_key(bearer);
    delay(&fault).await;
    let response = match fault_status(&fault) {
        Some(status) => ApiError::for_status(status, fault.message.clone(), &request.prompt.model)
            .into_response(),
        None => {
            let completion = Completion::build(app, &request, &fault);
            if request.stream {
                let mut events = fault.cut(completion.sse_events(request.include_usage));
                if let Some(keep) = fault.stream_error_after {
                    events.truncate(keep);
                    events.push(stream_error_event(fault.message.as_deref()));
                }
                sse_body(events, &fault)
            } else {
                json_body(&completion.to_json(), &fault)
            }
        }
    };
    Ok(with_retry_after(response, &fault))
}

/// An error in the middle of a stream, as OpenAI sends one: a `data:` event with an `error`.
fn stream_error_event(message: Option<&str>) -> Bytes {
    let message = message.unwrap_or("The server had an error while processing your request.");
    let error = json!({"error": {"message": message, "type": "server_error", "code": null}});
    Bytes::from(format!("data: {error}\n\n"))
}

fn check_auth(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    if app.key_ok(given.and_then(|v| v.strip_prefix("Bearer "))) {
        Ok(())
    } else {
        Err(ApiError::for_status(StatusCode::UNAUTHORIZED, None, ""))
    }
}

pub(super) async fn list_models(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response<Body>, ApiError> {
    check_auth(&app, &headers)?;
    let models = json!({
        "object": "list",
        "data": [{"id": "mock", "object": "model", "created": 0, "owned_by": "triage-mock"}],
    });
    Ok(Json(models).into_response())
}

pub(super) fn unknown_route(method: Method, uri: Uri) -> Response<Body> {
    let mut error = ApiError::for_status(
        StatusCode::NOT_FOUND,
        Some(format!("Invalid URL ({method} {uri})")),
        "",
    );
    error.code = None;
    error.into_response()
}

/// The parts of a chat request the mock looks at.
struct ChatRequest {
    prompt: Prompt,
    stream: bool,
    include_usage: bool,
    n: usize,
}

impl ChatRequest {
    fn parse(body: &Value) -> Result<Self, ApiError> {
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty());
        let model = model.ok_or_else(|| ApiError::missing_param("model"))?;
        let messages = body.get("messages").and_then(Value::as_array);
        let messages = messages.ok_or_else(|| ApiError::missing_param("messages"))?;
        let n = match body.get("n") {
            None | Some(Value::Null) => 1,
            Some(n) => n
                .as_u64()
                .filter(|n| (1..=128).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "n",
                        format!("Invalid value for 'n': {n}. Expected 1 to 128."),
                    )
                })?,
        };
        Ok(ChatRequest {
            prompt: prompt(model, messages, body),
            stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
            include_usage: body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true),
            n: usize::try_from(n).unwrap_or(1),
        })
    }
}

/// The neutral view of a chat request.
fn prompt(model: &str, messages: &[Value], body: &Value) -> Prompt {
    let role = |m: &Value| m.get("role").and_then(Value::as_str).map(str::to_owned);
    let last_role = messages.last().and_then(role);
    let last_user = messages
        .iter()
        .rev()
        .find(|m| role(m).as_deref() == Some("user"));
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| Tool {
            name: t
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            schema: t.pointer("/function/parameters").cloned(),
        })
        .collect();
    let tool_choice = match body.get("tool_choice") {
        Some(Value::String(mode)) if mode == "none" => ToolChoice::None,
        Some(Value::String(mode)) if mode == "required" => ToolChoice::Required,
        Some(choice) => match choice.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => ToolChoice::Named(name.to_owned()),
            None => ToolChoice::Auto,
        },
        None => ToolChoice::Auto,
    };
    Prompt {
        model: model.to_owned(),
        message_texts: messages.iter().map(message_text).collect(),
        last_user_text: last_user.map(message_text).unwrap_or_default(),
        tool_result: (last_role.as_deref() == Some("tool"))
            .then(|| messages.last().map(message_text).unwrap_or_default()),
        tools,
        tool_choice,
    }
}

/// The text of a message: string content, or its `text` parts concatenated.
fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text"))
            .filter_map(Value::as_str)
            .collect(),
        _ => String::new(),
    }
}

fn finish_reason(answer: &Answer) -> &'static str {
    match answer {
        Answer::Text(_) => "stop",
        Answer::ToolCall { .. } => "tool_calls",
    }
}

fn message(answer: &Answer) -> Value {
    match answer {
        Answer::Text(text) => json!({"role": "assistant", "content": text, "refusal": null}),
        Answer::ToolCall {
            id,
            name,
            arguments,
        } => json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}],
            "refusal": null,
        }),
    }
}

/// The stream deltas, before the final empty one.
fn deltas(answer: &Answer) -> Vec<Value> {
    match answer {
        Answer::Text(text) => {
            let first = json!({"role": "assistant", "content": ""});
            let words = word_pieces(text).into_iter().map(|w| json!({"content": w}));
            std::iter::once(first).chain(words).collect()
        }
        Answer::ToolCall {
            id,
            name,
            arguments,
        } => {
            let first = json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}],
            });
            let fragments = fragments(arguments, ARGUMENT_FRAGMENTS)
                .into_iter()
                .map(|f| json!({"tool_calls": [{"index": 0, "function": {"arguments": f}}]}));
            std::iter::once(first).chain(fragments).collect()
        }
    }
}

/// A finished answer to one request, rendered either as one JSON body or as SSE events.
struct Completion {
    id: String,
    created: u64,
    model: String,
    choices: Vec<Answer>,
    /// The fault's finish reason, for every choice.
    finish: Option<String>,
    usage: Value,
}

impl Completion {
    fn build(app: &App, request: &ChatRequest, fault: &Fault) -> Completion {
        let prompt = &request.prompt;
        let choices: Vec<Answer> = (0..request.n)
            .map(|_| prompt.answer(fault, || format!("call_{}", app.next_call_number())))
            .collect();
        let completion = choices.iter().map(Answer::word_count).sum();
        Completion {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: prompt.model.clone(),
            choices,
            finish: fault.finish_reason.clone(),
            usage: fault
                .usage
                .clone()
                .unwrap_or_else(|| usage(prompt.prompt_tokens(), completion)),
        }
    }

    fn finish_reason<'a>(&'a self, answer: &Answer) -> &'a str {
        self.finish
            .as_deref()
            .unwrap_or_else(|| finish_reason(answer))
    }

    fn to_json(&self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .enumerate()
            .map(|(index, answer)| {
                json!({"index": index, "message": message(answer), "logprobs": null, "finish_reason": self.finish_reason(answer)})
            })
            .collect();
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_mock",
            "choices": choices,
            "usage": self.usage,
        })
    }

    fn chunk(&self, choices: Value, include_usage: bool) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_mock",
            "choices": choices,
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    fn choice_chunk(
        &self,
        index: usize,
        delta: Value,
        finish: Option<&str>,
        include_usage: bool,
    ) -> Value {
        let choice =
            json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": finish});
        self.chunk(json!([choice]), include_usage)
    }

    /// Every SSE event of the stream, choices one after another, ending with `[DONE]`.
    fn sse_events(&self, include_usage: bool) -> Vec<Bytes> {
        let mut events = Vec::new();
        for (index, answer) in self.choices.iter().enumerate() {
            for delta in deltas(answer) {
                events.push(sse(&self.choice_chunk(index, delta, None, include_usage)));
            }
            let last = self.choice_chunk(
                index,
                json!({}),
                Some(self.finish_reason(answer)),
                include_usage,
            );
            events.push(sse(&last));
        }
        if include_usage {
            let mut last = self.chunk(json!([]), false);
            last["usage"] = self.usage.clone();
            events.push(sse(&last));
        }
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        events
    }
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    })
}

fn sse(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// An error in OpenAI's wire shape.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    /// The error OpenAI sends for `status`; `model` fills the default 404 message.
    fn for_status(status: StatusCode, message: Option<String>, model: &str) -> ApiError {
        let (kind, code) = error_shape(status.as_u16());
        ApiError {
            status,
            kind,
            message: message.unwrap_or_else(|| default_message(status.as_u16(), model)),
            param: None,
            code,
        }
    }

    fn invalid_param(param: &'static str, message: String) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message,
            param: Some(param),
            code: None,
        }
    }

    fn missing_param(param: &'static str) -> ApiError {
        let mut error =
            ApiError::invalid_param(param, format!("Missing required parameter: '{param}'."));
        error.code = Some("missing_required_parameter");
        error
    }

    fn invalid_json() -> ApiError {
        let message = "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.";
        ApiError::for_status(StatusCode::BAD_REQUEST, Some(message.to_owned()), "")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response<Body> {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        (self.status, Json(body)).into_response()
    }
}

/// OpenAI's error `type` and `code` for a status.
fn error_shape(status: u16) -> (&'static str, Option<&'static str>) {
    match status {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("permission_error", None),
        404 => ("invalid_request_error", Some("model_not_found")),
        429 => ("requests", Some("rate_limit_exceeded")),
        529 => ("overloaded_error", None),
        500..=599 => ("server_error", None),
        _ => ("invalid_request_error", None),
    }
}

fn default_message(status: u16, model: &str) -> String {
    let message = match status {
        400 => "Invalid request.",
        401 => "Incorrect API key provided.",
        403 => "You are not allowed to sample from this model.",
        404 => {
            return format!("The model `{model}` does not exist or you do not have access to it.");
        }
        429 => "Rate limit reached for requests. Please try again later.",
        500 => "The server had an error while processing your request. Sorry about that!",
        502 => "Bad gateway.",
        503 => "The server is overloaded or not ready yet.",
        504 => "Gateway timeout.",
        529 => "Overloaded.",
        _ => return format!("Mock upstream error {status}."),
    };
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fault, MockUpstream, RecordedRequest};
    use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
    use futures_util::StreamExt;
    use std::time::Duration;

    fn chat_url(mock: &MockUpstream) -> String {
        format!("{}/chat/completions", mock.base_url())
    }

    async fn post_chat(mock: &MockUpstream, body: Value) -> reqwest::Response {
        let client = reqwest::Client::new();
        client
            .post(chat_url(mock))
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    async fn json_of(response: reqwest::Response) -> Value {
        response.json().await.expect("JSON body")
    }

    fn hello(model: &str) -> Value {
        json!({
            "model": model,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hello there"}, {"type": "text", "text": " mock"}]},
            ],
        })
    }

    /// The `data:` payloads of an SSE body.
    fn sse_payloads(text: &str) -> Vec<&str> {
        let events = text.split("\n\n").filter(|e| !e.is_empty());
        events
            .map(|e| e.strip_prefix("data: ").expect("a data event"))
            .collect()
    }

    fn weather_tools() -> Value {
        json!([
            {"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}},
            {"type": "function", "function": {"name": "get_weather", "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "metric": {"type": "boolean"},
                    "hours": {"type": ["number", "null"]},
                    "tags": {"type": "array"},
                    "note": {"type": "string"},
                },
                "required": ["city", "days", "metric", "hours", "tags"],
            }}},
        ])
    }

    #[tokio::test]
    async fn answers_in_openai_shape_with_deterministic_usage() {
        let mock = MockUpstream::start(None).await.unwrap();
        let response = post_chat(&mock, hello("m1")).await;
        assert_eq!(response.status(), 200);
        let body = json_of(response).await;
        assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "m1");
        assert_eq!(body["system_fingerprint"], "fp_mock");
        let choice = &body["choices"][0];
        assert_eq!(
            choice["message"]["content"],
            "Mock answer from m1: Hello there mock"
        );
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(choice["finish_reason"], "stop");
        // Prompt: (3 + 2) + (3 + 3); completion: seven words.
        let expected = json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
            "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}});
        assert_eq!(body["usage"], expected);

        let mut two = hello("m1");
        two["n"] = json!(2);
        let body = json_of(post_chat(&mock, two).await).await;
        let indexes: Vec<&Value> = body["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["index"])
            .collect();
        assert_eq!(indexes, [&json!(0), &json!(1)]);
        assert_eq!(body["usage"]["completion_tokens"], 14);
        assert_eq!(mock.requests().len(), 2);
    }

    #[tokio::test]
    async fn rejects_bad_bodies_with_openai_errors() {
        let mock = MockUpstream::start(None).await.unwrap();
        let client = reqwest::Client::new();
        let response = client
            .post(chat_url(&mock))
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(
            json_of(response).await["error"]["type"],
            "invalid_request_error"
        );
        let response = post_chat(&mock, json!({"model": "m1"})).await;
        assert_eq!(response.status(), 400);
        assert_eq!(json_of(response).await["error"]["param"], "messages");
        let recorded = mock.requests();
        assert_eq!(recorded[0].body, json!("{not json"));
        assert_eq!(recorded[1].body, json!({"model": "m1"}));
    }

    #[tokio::test]
    async fn streams_chunks_with_usage_last() {
        let mock = MockUpstream::start(None).await.unwrap();
        let mut request = hello("m1");
        request["stream"] = json!(true);
        request["stream_options"] = json!({"include_usage": true});
        let response = post_chat(&mock, request).await;
        assert_eq!(response.headers()[CONTENT_TYPE], "text/event-stream");
        let text = response.text().await.unwrap();
        let payloads = sse_payloads(&text);
        assert_eq!(payloads.last(), Some(&"[DONE]"));
        let chunks: Vec<Value> = payloads[..payloads.len() - 1]
            .iter()
            .map(|p| serde_json::from_str(p).unwrap())
            .collect();
        let (usage_chunk, choice_chunks) = chunks.split_last().unwrap();
        assert_eq!(usage_chunk["choices"], json!([]));
        assert_eq!(usage_chunk["usage"]["total_tokens"], 18);
        assert_eq!(
            choice_chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        let content: String = choice_chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Mock answer from m1: Hello there mock");
        assert_eq!(choice_chunks.len(), 1 + 7 + 1);
        for chunk in choice_chunks {
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["usage"], Value::Null);
            assert!(chunk.as_object().unwrap().contains_key("usage"));
        }
        let last = &choice_chunks.last().unwrap()["choices"][0];
        assert_eq!(
            (&last["delta"], &last["finish_reason"]),
            (&json!({}), &json!("stop"))
        );

        let mut plain = hello("m1");
        plain["stream"] = json!(true);
        let text = post_chat(&mock, plain).await.text().await.unwrap();
        assert!(
            !text.contains("usage"),
            "no usage key without include_usage"
        );
    }

    #[tokio::test]
    async fn scripted_faults_run_in_order_per_model() {
        let mock = MockUpstream::start(None).await.unwrap();
        let unavailable = Fault {
            status: Some(503),
            retry_after: Some("2".into()),
            delay_ms: Some(30),
            ..Fault::default()
        };
        mock.script(Some("m1"), vec![unavailable]);

        assert_eq!(post_chat(&mock, hello("m2")).await.status(), 200);
        let started = std::time::Instant::now();
        let response = post_chat(&mock, hello("m1")).await;
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[RETRY_AFTER], "2");
        let error = json_of(response).await["error"].clone();
        assert_eq!(
            (&error["type"], &error["code"]),
            (&json!("server_error"), &Value::Null)
        );
        assert_eq!(post_chat(&mock, hello("m1")).await.status(), 200);

        let client = reqwest::Client::new();
        let script = json!({"steps": [{"status": 429}]});
        let url = format!("http://{}/_mock/script", mock.addr);
        assert!(
            client
                .post(url)
                .json(&script)
                .send()
                .await
                .unwrap()
                .status()
                .is_success()
        );
        let response = post_chat(&mock, hello("m3")).await;
        assert_eq!(response.status(), 429);
        assert_eq!(
            json_of(response).await["error"]["code"],
            "rate_limit_exceeded"
        );

        let recorded: Vec<RecordedRequest> = client
            .get(format!("http://{}/_mock/requests", mock.addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(recorded.len(), 4);
        client
            .post(format!("http://{}/_mock/reset", mock.addr))
            .send()
            .await
            .unwrap();
        assert!(mock.requests().is_empty());
    }

    #[tokio::test]
    async fn inline_fault_applies_only_to_its_model() {
        let mock = MockUpstream::start(None).await.unwrap();
        mock.script(
            None,
            vec![Fault {
                status: Some(500),
                ..Fault::default()
            }],
        );
        let fault = json!({"model": "m2", "status": 404});
        let mut other = hello("m1");
        other["mock"] = fault.clone();
        // The queued 500 still applies to m1: the inline fault is for m2 only.
        assert_eq!(post_chat(&mock, other.clone()).await.status(), 500);
        assert_eq!(post_chat(&mock, other).await.status(), 200);

        let mut named = hello("m2");
        named["mock"] = fault;
        let response = post_chat(&mock, named).await;
        assert_eq!(response.status(), 404);
        assert_eq!(json_of(response).await["error"]["code"], "model_not_found");

        let mut content = hello("m1");
        content["mock"] = json!({"content": "fixed", "usage": {"prompt_tokens": 1}});
        let body = json_of(post_chat(&mock, content).await).await;
        assert_eq!(body["choices"][0]["message"]["content"], "fixed");
        assert_eq!(body["usage"], json!({"prompt_tokens": 1}));
    }

    #[tokio::test]
    async fn standing_rules_answer_by_model_and_text_after_queued_faults() {
        let mock = MockUpstream::start(None).await.unwrap();
        mock.rule(crate::Rule {
            model: Some("judge".into()),
            contains: vec!["Hello".into(), "mock".into()],
            content: "Rating: [[2]]".into(),
        });
        mock.rule(crate::Rule {
            model: Some("judge".into()),
            contains: vec![],
            content: "Rating: [[9]]".into(),
        });
        let content = |body: Value| body["choices"][0]["message"]["content"].clone();
        assert_eq!(
            content(json_of(post_chat(&mock, hello("judge")).await).await),
            "Rating: [[2]]"
        );
        let mut other = hello("judge");
        other["messages"][1]["content"] = json!("Goodbye");
        assert_eq!(
            content(json_of(post_chat(&mock, other).await).await),
            "Rating: [[9]]"
        );
        // Other models answer as usual; a queued fault comes before any rule.
        assert_eq!(
            content(json_of(post_chat(&mock, hello("m1")).await).await),
            "Mock answer from m1: Hello there mock"
        );
        mock.script(
            Some("judge"),
            vec![Fault {
                status: Some(503),
                ..Fault::default()
            }],
        );
        assert_eq!(post_chat(&mock, hello("judge")).await.status(), 503);
    }

    #[tokio::test]
    async fn dropped_connections_break_the_body() {
        let mock = MockUpstream::start(None).await.unwrap();
        let mut request = hello("m1");
        request["stream"] = json!(true);
        request["mock"] = json!({"drop_after_chunks": 2, "chunk_delay_ms": 5});
        let response = post_chat(&mock, request).await;
        assert_eq!(response.status(), 200);
        let mut body = response.bytes_stream();
        let mut received = Vec::new();
        let error = loop {
            match body.next().await {
                Some(Ok(bytes)) => received.extend_from_slice(&bytes),
                Some(Err(err)) => break err,
                None => panic!("the stream ended cleanly"),
            }
        };
        assert!(error.is_body() || error.is_decode(), "{error:?}");
        let received = String::from_utf8(received).unwrap();
        assert_eq!(sse_payloads(&received).len(), 2);

        let mut request = hello("m1");
        request["mock"] = json!({"drop_after_chunks": 0});
        let response = post_chat(&mock, request).await;
        assert_eq!(response.status(), 200);
        assert!(response.text().await.is_err());
    }

    #[tokio::test]
    async fn tool_calls_fill_required_arguments() {
        let mock = MockUpstream::start(None).await.unwrap();
        let mut request = hello("m1");
        request["tools"] = weather_tools();
        request["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
        let body = json_of(post_chat(&mock, request.clone()).await).await;
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        let call = &choice["message"]["tool_calls"][0];
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(call["function"]["name"], "get_weather");
        let arguments = call["function"]["arguments"].as_str().unwrap();
        let expected = r#"{"city":"test","days":1,"metric":true,"hours":1,"tags":null}"#;
        assert_eq!(arguments, expected);

        request["stream"] = json!(true);
        let text = post_chat(&mock, request.clone())
            .await
            .text()
            .await
            .unwrap();
        let payloads = sse_payloads(&text);
        let deltas: Vec<Value> = payloads[..payloads.len() - 1]
            .iter()
            .map(|p| serde_json::from_str::<Value>(p).unwrap()["choices"][0]["delta"].clone())
            .collect();
        assert_eq!(
            deltas[0]["tool_calls"][0]["function"]["name"],
            "get_weather"
        );
        let fragments: Vec<&str> = deltas[1..]
            .iter()
            .filter_map(|d| d["tool_calls"][0]["function"]["arguments"].as_str())
            .collect();
        assert!((2..=3).contains(&fragments.len()));
        assert_eq!(fragments.concat(), expected);

        request["stream"] = json!(false);
        request["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"}));
        let body = json_of(post_chat(&mock, request).await).await;
        assert_eq!(
            body["choices"][0]["message"]["content"],
            "Tool result: sunny"
        );
    }

    #[tokio::test]
    async fn wrong_api_key_gets_401() {
        let mock = MockUpstream::start(Some("sk-test".into())).await.unwrap();
        let client = reqwest::Client::new();
        let response = client
            .post(chat_url(&mock))
            .json(&hello("m1"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let error = json_of(response).await["error"].clone();
        assert_eq!(error["code"], "invalid_api_key");
        assert_eq!(error["message"], "Incorrect API key provided.");
        let wrong = client
            .post(chat_url(&mock))
            .bearer_auth("sk-nope")
            .json(&hello("m1"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
        let right = client
            .post(chat_url(&mock))
            .bearer_auth("sk-test")
            .json(&hello("m1"))
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 200);
        let recorded = mock.requests();
        assert_eq!(recorded.len(), 3);
        assert_eq!(recorded[2].headers["authorization"], "Bearer sk-test");
    }
}
