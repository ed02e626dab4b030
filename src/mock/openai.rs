//! A fake OpenAI-compatible upstream: a real HTTP server on loopback that answers
//! `/v1/chat/completions` deterministically and can be scripted to fail, stall or drop.
//!
//! It is for the integration tests, the benchmarks and `triage mock-upstream`: anything that
//! needs an upstream whose answers, token counts and failures are known in advance.
//! It is not a model, not a provider adapter, and not part of the request path of the router.
//!
//! Behaviour is chosen per request by a [`Fault`]: either carried inline in the request body
//! under `"mock"`, or taken from a FIFO queue filled with [`MockUpstream::script`] or
//! `POST /_mock/script`. An empty queue means a normal, successful answer.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

/// Longest echo of the user's message in an answer, in characters.
const ECHO_LIMIT: usize = 200;
/// Most tool-call argument fragments in a stream.
const ARGUMENT_FRAGMENTS: usize = 3;

/// Handle to a running mock. The server task runs until the tokio runtime ends.
#[derive(Clone, Debug)]
pub struct MockUpstream {
    pub addr: SocketAddr,
    state: Shared,
}

impl MockUpstream {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime. `api_key`: when `Some`,
    /// `/v1` requests must carry `Authorization: Bearer <key>` or get OpenAI's 401.
    pub async fn start(api_key: Option<String>) -> io::Result<MockUpstream> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Shared::default();
        let app = router(Arc::clone(&state), api_key);
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::warn!(%err, "mock upstream stopped");
            }
        });
        Ok(MockUpstream { addr, state })
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues scripted behaviours for `model` (`None`: any model), like `POST /_mock/script`.
    pub fn script(&self, model: Option<&str>, steps: Vec<Fault>) {
        lock(&self.state).enqueue(model.map(str::to_owned), steps);
    }

    /// Every chat request received so far (headers lower-cased, body as JSON), in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }
}

/// Serves on an already-bound listener until the process ends (the `mock-upstream` command).
pub async fn serve(listener: TcpListener, api_key: Option<String>) -> io::Result<()> {
    axum::serve(listener, router(Shared::default(), api_key)).await
}

/// One scripted behaviour. Every field is optional; the default is a normal answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fault {
    /// Only for the inline `"mock"` field: the fault applies when the request names this model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Respond with this HTTP status (>= 400) and OpenAI's error body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Error message; the default depends on the status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Sets the `Retry-After` header verbatim (seconds or an HTTP date).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// Wait this long before sending response headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Streaming: wait this long between SSE events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_delay_ms: Option<u64>,
    /// Streaming: abort the connection after this many SSE events.
    /// Non-streaming: send half of the body, then abort.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_after_chunks: Option<usize>,
    /// Answer with this text (and never with a tool call).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Replace the whole `usage` object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
}

/// A chat request as the mock received it. A body that is not JSON is kept as a JSON string.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub headers: BTreeMap<String, String>,
    pub body: Value,
}

type Shared = Arc<Mutex<MockState>>;

#[derive(Debug, Default)]
struct MockState {
    any_model: VecDeque<Fault>,
    by_model: HashMap<String, VecDeque<Fault>>,
    requests: Vec<RecordedRequest>,
    tool_calls: u64,
}

impl MockState {
    fn enqueue(&mut self, model: Option<String>, steps: Vec<Fault>) {
        match model {
            Some(model) => self.by_model.entry(model).or_default().extend(steps),
            None => self.any_model.extend(steps),
        }
    }

    fn next_fault(&mut self, model: &str) -> Option<Fault> {
        let own = self.by_model.get_mut(model).and_then(VecDeque::pop_front);
        own.or_else(|| self.any_model.pop_front())
    }

    fn next_call_id(&mut self) -> String {
        self.tool_calls += 1;
        format!("call_{}", self.tool_calls)
    }
}

fn lock(state: &Mutex<MockState>) -> MutexGuard<'_, MockState> {
    // A panicking test thread must not take every later request down with it.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

struct App {
    state: Shared,
    api_key: Option<String>,
}

impl App {
    fn check_auth(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.api_key else {
            return Ok(());
        };
        let given = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        match given.and_then(|v| v.strip_prefix("Bearer ")) {
            Some(token) if token == key => Ok(()),
            _ => Err(ApiError::for_status(StatusCode::UNAUTHORIZED, None, "")),
        }
    }

    fn record(&self, headers: &HeaderMap, body: Value) {
        let headers = recorded_headers(headers);
        lock(&self.state)
            .requests
            .push(RecordedRequest { headers, body });
    }

    /// The inline fault when it names this model (or none), else the next queued one.
    fn take_fault(&self, model: &str, body: &Value) -> Result<Fault, ApiError> {
        let inline =
            match body.get("mock") {
                None | Some(Value::Null) => None,
                Some(value) => Some(serde_json::from_value::<Fault>(value.clone()).map_err(
                    |err| ApiError::invalid_param("mock", format!("Invalid mock fault: {err}")),
                )?),
            };
        let inline = inline.filter(|f| f.model.as_deref().is_none_or(|m| m == model));
        Ok(inline
            .or_else(|| lock(&self.state).next_fault(model))
            .unwrap_or_default())
    }
}

fn recorded_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_owned())
            .and_modify(|v: &mut String| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

fn router(state: Shared, api_key: Option<String>) -> Router {
    let app = Arc::new(App { state, api_key });
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .route("/_mock/script", post(script_steps))
        .route("/_mock/requests", get(recorded_requests))
        .route("/_mock/reset", post(reset))
        .fallback(unknown_route)
        .with_state(app)
}

async fn chat_completions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body);
    let recorded = match &parsed {
        Ok(value) => value.clone(),
        Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
    };
    app.record(&headers, recorded);
    answer_chat(&app, &headers, parsed)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn answer_chat(
    app: &App,
    headers: &HeaderMap,
    parsed: serde_json::Result<Value>,
) -> Result<Response, ApiError> {
    app.check_auth(headers)?;
    let body = parsed.map_err(|_| ApiError::invalid_json())?;
    let request = ChatRequest::parse(&body)?;
    let fault = app.take_fault(&request.model, &body)?;
    if let Some(ms) = fault.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut response = match fault.status.filter(|s| *s >= 400) {
        Some(status) => fault_error(status, &fault, &request.model).into_response(),
        None => {
            let completion = Completion::build(app, &request, &fault);
            if request.stream {
                stream_response(&completion, &request, &fault)
            } else {
                json_response(&completion, &fault)
            }
        }
    };
    if let Some(value) = fault
        .retry_after
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    Ok(response)
}

fn fault_error(status: u16, fault: &Fault, model: &str) -> ApiError {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    ApiError::for_status(status, fault.message.clone(), model)
}

async fn list_models(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.check_auth(&headers)?;
    let models = json!({
        "object": "list",
        "data": [{"id": "mock", "object": "model", "created": 0, "owned_by": "triage-mock"}],
    });
    Ok(Json(models).into_response())
}

#[derive(Deserialize)]
struct ScriptRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    steps: Vec<Fault>,
}

async fn script_steps(
    State(app): State<Arc<App>>,
    Json(script): Json<ScriptRequest>,
) -> StatusCode {
    lock(&app.state).enqueue(script.model, script.steps);
    StatusCode::NO_CONTENT
}

async fn recorded_requests(State(app): State<Arc<App>>) -> Json<Vec<RecordedRequest>> {
    Json(lock(&app.state).requests.clone())
}

async fn reset(State(app): State<Arc<App>>) -> StatusCode {
    *lock(&app.state) = MockState::default();
    StatusCode::NO_CONTENT
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    let mut error = ApiError::for_status(
        StatusCode::NOT_FOUND,
        Some(format!("Invalid URL ({method} {uri})")),
        "",
    );
    error.code = None;
    error
}

/// The parts of a chat request the mock looks at.
struct ChatRequest {
    model: String,
    messages: Vec<Value>,
    stream: bool,
    include_usage: bool,
    n: usize,
    tools: Vec<Value>,
    tool_choice: Value,
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
            model: model.to_owned(),
            messages: messages.clone(),
            stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
            include_usage: body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true),
            n: usize::try_from(n).unwrap_or(1),
            tools: body
                .get("tools")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            tool_choice: body.get("tool_choice").cloned().unwrap_or(Value::Null),
        })
    }

    fn last_role(&self) -> Option<&str> {
        self.messages
            .last()
            .and_then(|m| m.get("role"))
            .and_then(Value::as_str)
    }

    /// The text answer: an echo of the last user message, or of a tool result.
    fn answer_text(&self) -> String {
        if self.last_role() == Some("tool") {
            let result = self.messages.last().map(message_text).unwrap_or_default();
            return format!("Tool result: {result}");
        }
        let user = self
            .messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
        let echo: String = user
            .map(message_text)
            .unwrap_or_default()
            .chars()
            .take(ECHO_LIMIT)
            .collect();
        format!("Mock answer from {}: {echo}", self.model)
    }

    /// The tool to call (name, JSON arguments), when the request asks for one.
    fn tool_call(&self) -> Option<(String, String)> {
        if self.tools.is_empty() || self.tool_choice == "none" || self.last_role() == Some("tool") {
            return None;
        }
        let named = self
            .tool_choice
            .pointer("/function/name")
            .and_then(Value::as_str);
        let tool = match named {
            Some(name) => self
                .tools
                .iter()
                .find(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name)),
            None => self.tools.first(),
        };
        let name = named
            .or_else(|| {
                tool.and_then(|t| t.pointer("/function/name"))
                    .and_then(Value::as_str)
            })
            .unwrap_or_default();
        let schema = tool.and_then(|t| t.pointer("/function/parameters"));
        Some((name.to_owned(), placeholder_arguments(schema)))
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

fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Deterministic prompt tokens: 3 per message plus its words.
fn prompt_tokens(messages: &[Value]) -> u64 {
    messages
        .iter()
        .map(|m| 3 + word_count(&message_text(m)))
        .sum()
}

/// A JSON object with one placeholder per required property of a JSON schema.
fn placeholder_arguments(schema: Option<&Value>) -> String {
    let properties = schema.and_then(|s| s.get("properties"));
    let required = schema
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array);
    let mut arguments = Map::new();
    for name in required.into_iter().flatten().filter_map(Value::as_str) {
        let kind = properties
            .and_then(|p| p.get(name))
            .and_then(|p| p.get("type"));
        arguments.insert(name.to_owned(), placeholder_value(kind));
    }
    Value::Object(arguments).to_string()
}

fn placeholder_value(kind: Option<&Value>) -> Value {
    // `"type": ["string", "null"]` means a nullable string.
    let kind = match kind {
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null"),
        Some(kind) => kind.as_str(),
        None => None,
    };
    match kind {
        Some("string") => json!("test"),
        Some("integer" | "number") => json!(1),
        Some("boolean") => json!(true),
        _ => Value::Null,
    }
}

/// What one choice says.
enum Answer {
    Text(String),
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
}

impl Answer {
    fn word_count(&self) -> u64 {
        match self {
            Answer::Text(text) => word_count(text),
            Answer::ToolCall { arguments, .. } => word_count(arguments),
        }
    }

    fn finish_reason(&self) -> &'static str {
        match self {
            Answer::Text(_) => "stop",
            Answer::ToolCall { .. } => "tool_calls",
        }
    }

    fn message(&self) -> Value {
        match self {
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
    fn deltas(&self) -> Vec<Value> {
        match self {
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
}

/// Splits text into words, each keeping the whitespace after it, so the pieces concatenate
/// back to the text.
fn word_pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let (mut start, mut seen_word, mut after_space) = (0, false, false);
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            after_space = true;
            continue;
        }
        if seen_word && after_space {
            pieces.push(&text[start..i]);
            start = i;
        }
        seen_word = true;
        after_space = false;
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// Splits text into at most `parts` non-empty pieces of about equal length.
fn fragments(text: &str, parts: usize) -> Vec<&str> {
    let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let parts = parts.min(bounds.len()).max(1);
    let mut cuts: Vec<usize> = (1..parts)
        .map(|k| bounds[k * bounds.len() / parts])
        .collect();
    cuts.insert(0, 0);
    cuts.push(text.len());
    cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

/// A finished answer to one request, rendered either as one JSON body or as SSE events.
struct Completion {
    id: String,
    created: u64,
    model: String,
    choices: Vec<Answer>,
    usage: Value,
}

impl Completion {
    fn build(app: &App, request: &ChatRequest, fault: &Fault) -> Completion {
        // A content override is a text answer, even when the request offers tools.
        let tool = if fault.content.is_none() {
            request.tool_call()
        } else {
            None
        };
        let text = fault
            .content
            .clone()
            .unwrap_or_else(|| request.answer_text());
        let choices: Vec<Answer> = (0..request.n)
            .map(|_| match &tool {
                Some((name, arguments)) => Answer::ToolCall {
                    id: lock(&app.state).next_call_id(),
                    name: name.clone(),
                    arguments: arguments.clone(),
                },
                None => Answer::Text(text.clone()),
            })
            .collect();
        let prompt = prompt_tokens(&request.messages);
        let completion = choices.iter().map(Answer::word_count).sum();
        Completion {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: request.model.clone(),
            choices,
            usage: fault
                .usage
                .clone()
                .unwrap_or_else(|| usage(prompt, completion)),
        }
    }

    fn to_json(&self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .enumerate()
            .map(|(index, answer)| {
                json!({"index": index, "message": answer.message(), "logprobs": null, "finish_reason": answer.finish_reason()})
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
            for delta in answer.deltas() {
                events.push(sse(&self.choice_chunk(index, delta, None, include_usage)));
            }
            let last = self.choice_chunk(
                index,
                json!({}),
                Some(answer.finish_reason()),
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

fn json_response(completion: &Completion, fault: &Fault) -> Response {
    let body = Bytes::from(completion.to_json().to_string());
    let body = match fault.drop_after_chunks {
        None => Body::from(body),
        Some(_) => event_body(vec![body.slice(..body.len() / 2)], Duration::ZERO, Some(1)),
    };
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}

fn stream_response(completion: &Completion, request: &ChatRequest, fault: &Fault) -> Response {
    let events = completion.sse_events(request.include_usage);
    let delay = Duration::from_millis(fault.chunk_delay_ms.unwrap_or(0));
    let body = event_body(events, delay, fault.drop_after_chunks);
    (
        [
            (CONTENT_TYPE, "text/event-stream"),
            (CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// A body that sends `events` with `delay` between them; with `drop_after`, it sends that many
/// and then fails, so hyper aborts the connection mid-body.
fn event_body(events: Vec<Bytes>, delay: Duration, drop_after: Option<usize>) -> Body {
    let keep = drop_after.unwrap_or(usize::MAX);
    let sent = stream::iter(events.into_iter().take(keep).enumerate()).then(
        move |(i, event)| async move {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok::<_, io::Error>(event)
        },
    );
    let abort = stream::iter(drop_after.map(|_| ())).then(|()| async {
        // Hyper drops its write buffer when a body fails; pausing first lets it flush the
        // headers and the events before, so the client sees a broken body, not a lost response.
        tokio::time::sleep(Duration::from_millis(10)).await;
        Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "mock upstream dropped the connection",
        ))
    });
    Body::from_stream(sent.chain(abort))
}

/// An error in OpenAI's wire shape.
#[derive(Debug)]
struct ApiError {
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
    fn into_response(self) -> Response {
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

    #[test]
    fn text_splits_into_pieces_that_rebuild_it() {
        assert_eq!(word_pieces("a b  c\n"), ["a ", "b  ", "c\n"]);
        assert_eq!(word_pieces(" a"), [" a"]);
        assert!(word_pieces("").is_empty());
        assert_eq!(fragments("{}", 3), ["{", "}"]);
        assert_eq!(fragments("abcdefg", 3).concat(), "abcdefg");
        assert_eq!(fragments("abcdefg", 3).len(), 3);
    }
}
