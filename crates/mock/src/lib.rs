//! A fake upstream: a real HTTP server on loopback that speaks OpenAI's `/v1/chat/completions`,
//! Anthropic's `/v1/messages` and Gemini's `/v1beta/models/{model}:generateContent` (and
//! `:streamGenerateContent?alt=sse`), answers deterministically and can be scripted to fail,
//! stall or drop. It also takes OTLP/HTTP trace exports at `/v1/traces` and discards them.
//!
//! It is for the integration tests, the benchmarks, `triage mock-upstream` and the `triage-mock`
//! binary: anything that
//! needs an upstream whose answers, token counts and failures are known in advance.
//! It is not a model, not a provider adapter, and not part of the request path of the router.
//!
//! Behaviour is chosen per request by a [`Fault`]: either carried inline in the request body
//! under `"mock"`, or taken from a FIFO queue filled with [`MockUpstream::script`] or
//! `POST /_mock/script`. An empty queue means a normal, successful answer, or the answer of
//! the first standing [`Rule`] the request matches (`POST /_mock/rules`). Each API has its own
//! module (request checks, answer and error shapes, streams); what they share, deciding what to
//! answer, lives here.

mod anthropic;
mod gemini;
mod openai;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use axum::response::IntoResponse;
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
    /// requests must carry it the way each API expects (`Authorization: Bearer`, `x-api-key`,
    /// `x-goog-api-key`) or get that API's authentication error.
    pub async fn start(api_key: Option<String>) -> io::Result<MockUpstream> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Shared::default();
        let app = router(Arc::clone(&state), api_key);
        tokio::spawn(async move {
            if let Err(err) = axum::serve(no_delay(listener), app).await {
                tracing::warn!(%err, "mock upstream stopped");
            }
        });
        Ok(MockUpstream { addr, state })
    }

    /// `http://127.0.0.1:PORT/v1`: the base URL for OpenAI and Anthropic providers.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1beta`: the base URL for Gemini providers.
    pub fn gemini_base_url(&self) -> String {
        format!("http://{}/v1beta", self.addr)
    }

    /// Queues scripted behaviours for `model` (`None`: any model), like `POST /_mock/script`.
    pub fn script(&self, model: Option<&str>, steps: Vec<Fault>) {
        lock(&self.state).enqueue(model.map(str::to_owned), steps);
    }

    /// Adds a standing rule: requests it matches get its answer unless a fault is queued or
    /// inline, like `POST /_mock/rules`. Rules are tried in the order they were added.
    pub fn rule(&self, rule: Rule) {
        lock(&self.state).rules.push(rule);
    }

    /// Every API request received so far (headers lower-cased, body as JSON), in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }
}

/// Serves on an already-bound listener until the process ends (the `mock-upstream` command).
pub async fn serve(listener: TcpListener, api_key: Option<String>) -> io::Result<()> {
    axum::serve(no_delay(listener), router(Shared::default(), api_key)).await
}

/// Where `triage mock-upstream` (and the `triage-mock` binary) listens, and the key it asks for.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Require this bearer key from callers.
    #[arg(long)]
    pub api_key: Option<String>,
}

/// Binds `options.listen` and serves until the process ends.
pub async fn run(options: Options) -> anyhow::Result<()> {
    use anyhow::Context;
    let listen = options.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!("mock upstream listening on http://{listen}/v1");
    serve(listener, options.api_key).await?;
    Ok(())
}

/// One scripted behaviour. Every field is optional; the default is a normal answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fault {
    /// Only for the inline `"mock"` field: the fault applies when the request names this model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Respond with this HTTP status (>= 400) and the API's own error body.
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
    /// Replace the whole usage object (`usage`, or Gemini's `usageMetadata`), in the API's shape.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    /// End the answer with this reason, in the API's own words (OpenAI `content_filter`,
    /// Anthropic `refusal`, Gemini `SAFETY`). Anthropic's `refusal` and Gemini's safety
    /// reasons also leave the answer without content, as those APIs do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Streaming (OpenAI): after this many events, send an error event (with `message`) and
    /// close the stream cleanly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_error_after: Option<usize>,
    /// Streaming: after this many events, close the stream cleanly, without its end marker
    /// (`[DONE]`): a truncation that looks like a normal end on the wire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_after_chunks: Option<usize>,
    /// With `close_after_chunks`: send the first half of the next event before closing.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub close_mid_event: bool,
}

impl Fault {
    /// An upstream that echoes credentials: `{key}` in `message` becomes the caller's bearer
    /// key, `{key_partial}` the key as OpenAI quotes it (first 8 characters, `...`, last 4).
    pub(crate) fn echo_key(mut self, bearer: Option<&str>) -> Fault {
        let key = bearer.unwrap_or("").trim_start_matches("Bearer ");
        let partial = match (
            key.get(..8),
            key.len().checked_sub(4).and_then(|i| key.get(i..)),
        ) {
            (Some(head), Some(tail)) => format!("{head}...{tail}"),
            _ => key.to_string(),
        };
        if let Some(message) = &mut self.message {
            *message = message
                .replace("{key_partial}", &partial)
                .replace("{key}", key);
        }
        self
    }

    /// The stream's events cut as `close_after_chunks` says, or as they are.
    pub(crate) fn cut(&self, mut events: Vec<Bytes>) -> Vec<Bytes> {
        let Some(keep) = self.close_after_chunks else {
            return events;
        };
        let half = events
            .get(keep)
            .filter(|_| self.close_mid_event)
            .map(|next| next.slice(..next.len() / 2));
        events.truncate(keep);
        events.extend(half);
        events
    }
}

/// A standing answer: for requests to `model` (any model when `None`) whose last user message
/// contains every string of `contains`, answer `content`. It lets a test script a model that
/// follows a rule, such as a judge grading answers by what they say, whatever the call order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rule {
    pub model: Option<String>,
    pub contains: Vec<String>,
    pub content: String,
}

impl Rule {
    fn matches(&self, model: &str, text: &str) -> bool {
        self.model.as_deref().is_none_or(|m| m == model)
            && self.contains.iter().all(|c| text.contains(c.as_str()))
    }
}

/// A request as the mock received it. A body that is not JSON is kept as a JSON string.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    /// The path and query, e.g. `/v1/messages` or `/v1beta/models/m:generateContent`.
    #[serde(default)]
    pub path: String,
}

type Shared = Arc<Mutex<MockState>>;

#[derive(Debug, Default)]
struct MockState {
    any_model: VecDeque<Fault>,
    by_model: HashMap<String, VecDeque<Fault>>,
    requests: Vec<RecordedRequest>,
    tool_calls: u64,
    rules: Vec<Rule>,
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

    fn next_call_number(&mut self) -> u64 {
        self.tool_calls += 1;
        self.tool_calls
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
    /// Whether `given` is acceptable: any key when the mock has none.
    fn key_ok(&self, given: Option<&str>) -> bool {
        self.api_key.as_deref().is_none_or(|key| given == Some(key))
    }

    /// Records the request; returns the body parsed, or why it is not JSON.
    fn record(&self, headers: &HeaderMap, uri: &Uri, body: &Bytes) -> serde_json::Result<Value> {
        let parsed = serde_json::from_slice::<Value>(body);
        let recorded = match &parsed {
            Ok(value) => value.clone(),
            Err(_) => Value::String(String::from_utf8_lossy(body).into_owned()),
        };
        let path = uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
        lock(&self.state).requests.push(RecordedRequest {
            headers: recorded_headers(headers),
            body: recorded,
            path,
        });
        parsed
    }

    /// The inline fault when it names this model (or none), else the next queued one. An
    /// invalid inline fault is the error message.
    fn take_fault(&self, model: &str, body: &Value) -> Result<Fault, String> {
        let inline = match body.get("mock") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                serde_json::from_value::<Fault>(value.clone())
                    .map_err(|err| format!("Invalid mock fault: {err}"))?,
            ),
        };
        let inline = inline.filter(|f| f.model.as_deref().is_none_or(|m| m == model));
        if let Some(fault) = inline.or_else(|| lock(&self.state).next_fault(model)) {
            return Ok(fault);
        }
        let text = last_user_text(body);
        let state = lock(&self.state);
        let rule = state.rules.iter().find(|r| r.matches(model, &text));
        Ok(Fault {
            content: rule.map(|r| r.content.clone()),
            ..Fault::default()
        })
    }

    fn next_call_number(&self) -> u64 {
        lock(&self.state).next_call_number()
    }
}

/// The text of the last user turn of any API's body (`messages` or Gemini's `contents`).
fn last_user_text(body: &Value) -> String {
    let turns = body
        .get("messages")
        .or_else(|| body.get("contents"))
        .and_then(Value::as_array);
    let Some(turn) = turns
        .into_iter()
        .flatten()
        .rev()
        .find(|t| t.get("role").and_then(Value::as_str) == Some("user"))
    else {
        return String::new();
    };
    match turn.get("content").or_else(|| turn.get("parts")) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
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

/// `POST /v1/traces`: an OTLP/HTTP trace sink that accepts and discards every export (an empty
/// protobuf `ExportTraceServiceResponse`), so a router tracing to the mock pays the full cost
/// of exporting (`triage bench-overhead --trace`).
async fn otlp_sink(_body: Bytes) -> axum::response::Response {
    ([(CONTENT_TYPE, "application/x-protobuf")], Bytes::new()).into_response()
}

fn router(state: Shared, api_key: Option<String>) -> Router {
    let app = Arc::new(App { state, api_key });
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1beta/models/{call}", post(gemini::generate))
        .route("/v1/traces", post(otlp_sink))
        .route("/_mock/script", post(script_steps))
        .route("/_mock/rules", post(add_rules))
        .route("/_mock/requests", get(recorded_requests))
        .route("/_mock/reset", post(reset))
        .fallback(unknown_route)
        .with_state(app)
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

async fn add_rules(State(app): State<Arc<App>>, Json(rules): Json<Vec<Rule>>) -> StatusCode {
    lock(&app.state).rules.extend(rules);
    StatusCode::NO_CONTENT
}

async fn recorded_requests(State(app): State<Arc<App>>) -> Json<Vec<RecordedRequest>> {
    Json(lock(&app.state).requests.clone())
}

async fn reset(State(app): State<Arc<App>>) -> StatusCode {
    *lock(&app.state) = MockState::default();
    StatusCode::NO_CONTENT
}

async fn unknown_route(method: Method, uri: Uri) -> Response<Body> {
    openai::unknown_route(method, uri)
}

/// A tool offered to the model, in any API's terms.
#[derive(Debug, Clone)]
struct Tool {
    name: String,
    schema: Option<Value>,
}

/// How the request constrains tool use.
#[derive(Debug, Clone, PartialEq)]
enum ToolChoice {
    Auto,
    None,
    Required,
    Named(String),
}

/// What the mock understands of a request, whatever its wire format.
#[derive(Debug, Clone)]
struct Prompt {
    model: String,
    /// The text of each message (system included), for the token count.
    message_texts: Vec<String>,
    /// The text of the last user message.
    last_user_text: String,
    /// The conversation ends with a tool result: its text.
    tool_result: Option<String>,
    tools: Vec<Tool>,
    tool_choice: ToolChoice,
}

impl Prompt {
    /// The text answer: an echo of the last user message, or of a tool result.
    fn answer_text(&self) -> String {
        if let Some(result) = &self.tool_result {
            return format!("Tool result: {result}");
        }
        let echo: String = self.last_user_text.chars().take(ECHO_LIMIT).collect();
        format!("Mock answer from {}: {echo}", self.model)
    }

    /// The tool to call (name, JSON arguments), when the request asks for one.
    fn tool_call(&self) -> Option<(String, String)> {
        if self.tools.is_empty()
            || self.tool_choice == ToolChoice::None
            || self.tool_result.is_some()
        {
            return None;
        }
        let tool = match &self.tool_choice {
            ToolChoice::Named(name) => self.tools.iter().find(|t| &t.name == name),
            _ => self.tools.first(),
        };
        let name = match &self.tool_choice {
            ToolChoice::Named(name) => name.clone(),
            _ => tool.map(|t| t.name.clone()).unwrap_or_default(),
        };
        let schema = tool.and_then(|t| t.schema.as_ref());
        Some((name, placeholder_arguments(schema)))
    }

    /// Deterministic prompt tokens: 3 per message plus its words.
    fn prompt_tokens(&self) -> u64 {
        self.message_texts.iter().map(|t| 3 + word_count(t)).sum()
    }

    /// The answer the fault and the request call for: a tool call when tools are offered (and
    /// the fault sets no content), else text.
    fn answer(&self, fault: &Fault, call_id: impl FnOnce() -> String) -> Answer {
        let tool = if fault.content.is_none() {
            self.tool_call()
        } else {
            None
        };
        match tool {
            Some((name, arguments)) => Answer::ToolCall {
                id: call_id(),
                name,
                arguments,
            },
            None => Answer::Text(fault.content.clone().unwrap_or_else(|| self.answer_text())),
        }
    }
}

fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
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
#[derive(Debug, Clone)]
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

    /// Cuts a text answer to `limit` words; true when it was cut.
    fn truncate(&mut self, limit: Option<u64>) -> bool {
        let (Answer::Text(text), Some(limit)) = (&mut *self, limit) else {
            return false;
        };
        let pieces = word_pieces(text);
        if pieces.len() as u64 <= limit {
            return false;
        }
        let kept: String = pieces[..limit as usize].concat();
        *text = kept.trim_end().to_owned();
        true
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

/// The fault's status, when it asks for an error.
fn fault_status(fault: &Fault) -> Option<StatusCode> {
    fault
        .status
        .filter(|s| *s >= 400)
        .map(|s| StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
}

/// Waits as the fault says before answering.
async fn delay(fault: &Fault) {
    if let Some(ms) = fault.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Adds the fault's `Retry-After` header.
fn with_retry_after(mut response: Response<Body>, fault: &Fault) -> Response<Body> {
    if let Some(value) = fault
        .retry_after
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    response
}

/// A whole JSON answer, or (with `drop_after_chunks`) half of it and a broken connection.
fn json_body(body: &Value, fault: &Fault) -> Response<Body> {
    let body = Bytes::from(body.to_string());
    let body = match fault.drop_after_chunks {
        None => Body::from(body),
        Some(_) => event_body(vec![body.slice(..body.len() / 2)], Duration::ZERO, Some(1)),
    };
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}

/// An SSE answer paced and broken as the fault says.
fn sse_body(events: Vec<Bytes>, fault: &Fault) -> Response<Body> {
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

/// The listener with `TCP_NODELAY` on every accepted connection: SSE answers go out as many
/// small writes, and Nagle's algorithm with delayed ACKs would hold each back up to 40 ms.
fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {error}");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_splits_into_pieces_that_rebuild_it() {
        assert_eq!(word_pieces("a b  c\n"), ["a ", "b  ", "c\n"]);
        assert_eq!(word_pieces(" a"), [" a"]);
        assert!(word_pieces("").is_empty());
        assert_eq!(fragments("{}", 3), ["{", "}"]);
        assert_eq!(fragments("abcdefg", 3).concat(), "abcdefg");
        assert_eq!(fragments("abcdefg", 3).len(), 3);
    }

    #[test]
    fn answers_are_cut_at_the_limit() {
        let mut answer = Answer::Text("one two three".into());
        assert!(!answer.truncate(Some(3)));
        assert!(answer.truncate(Some(2)));
        assert!(matches!(answer, Answer::Text(t) if t == "one two"));
    }
}
