//! Provider adapters: one file per wire format, translating triage's OpenAI-shaped request to the
//! provider's API and its answers (whole or streamed) back to OpenAI's shapes. An Anthropic
//! request from `/v1/messages` goes to an Anthropic upstream as it is, and its answer comes back
//! as it is.
//!
//! Adapters do HTTP and translation only. Retries, timeouts, fallbacks and accounting belong to
//! `dispatch`; choosing a model belongs to `router`.

pub mod anthropic;
#[cfg(test)]
mod fuzz;
pub mod gemini;
pub mod openai;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use serde_json::{Map, Value};

use triage_core::catalog::{Model, Provider, ProviderKind};

/// OpenAI-shaped `chat.completion.chunk` objects (or, for an answer in [`Format::Messages`],
/// Anthropic's stream events), ending when the upstream stream ends.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Value, ProviderError>> + Send>>;

/// The wire format of a request, and of the answer handed back for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI Chat Completions: `chat.completion` and `chat.completion.chunk` objects.
    Chat,
    /// Anthropic Messages: a `message` object, or the stream's events, untranslated.
    Messages,
}

/// A client's request body in the format it arrived in, triage's own fields removed.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// An OpenAI chat-completions body (from `/v1/chat/completions`).
    Chat(&'a Map<String, Value>),
    /// An Anthropic Messages request (from `/v1/messages`). `native` goes to Anthropic
    /// upstreams with only `model` rewritten; `chat` is its OpenAI translation for every other
    /// kind, or the reason it has none.
    Messages {
        native: anthropic::Native<'a>,
        chat: Result<&'a Map<String, Value>, &'a str>,
    },
}

impl<'a> Body<'a> {
    /// The OpenAI chat body to translate from.
    fn chat(&self) -> Result<&'a Map<String, Value>, ProviderError> {
        match *self {
            Body::Chat(body) | Body::Messages { chat: Ok(body), .. } => Ok(body),
            Body::Messages { chat: Err(why), .. } => {
                Err(ProviderError::Untranslatable(why.to_string()))
            }
        }
    }
}

/// Why one call to one model did not produce an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("upstream returned HTTP {status}: {message}")]
    Status {
        status: StatusCode,
        message: String,
        /// The upstream's error `code` (Anthropic: its error `type`; Gemini: its `status`).
        code: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error("could not connect to the upstream: {0}")]
    Connect(String),
    #[error("the upstream connection failed: {0}")]
    Transport(String),
    #[error("no answer from the upstream within {0:?}")]
    FirstByteTimeout(Duration),
    #[error("the upstream did not finish within {0:?}")]
    TotalTimeout(Duration),
    #[error("the upstream sent an invalid response: {0}")]
    Protocol(String),
    #[error("the upstream reported an error mid-stream: {0}")]
    MidStream(String),
    /// The stream closed before its end marker, mid-answer: what the client got is incomplete.
    #[error("the upstream stream ended before the answer was complete")]
    Truncated,
    #[error("provider `{provider}` has no API key: set the environment variable {env}")]
    MissingKey { provider: String, env: String },
    #[error("the circuit breaker is open after repeated failures")]
    CircuitOpen,
    /// The provider's `max_concurrent` calls are in flight: no call was made.
    #[error("provider `{0}` is at its limit of calls in flight")]
    Busy(String),
    /// The request uses something this provider's API cannot express (another kind may).
    #[error("the request cannot be expressed in this provider's API: {0}")]
    Untranslatable(String),
}

impl ProviderError {
    /// The same error with the provider's key masked in every upstream-supplied text.
    pub fn scrubbed(self, provider: &Provider) -> ProviderError {
        let clean = |text: String| scrub(&text, provider);
        match self {
            ProviderError::Status {
                status,
                message,
                code,
                retry_after,
            } => ProviderError::Status {
                status,
                message: clean(message),
                code: code.map(clean),
                retry_after,
            },
            ProviderError::Connect(m) => ProviderError::Connect(clean(m)),
            ProviderError::Transport(m) => ProviderError::Transport(clean(m)),
            ProviderError::Protocol(m) => ProviderError::Protocol(clean(m)),
            ProviderError::MidStream(m) => ProviderError::MidStream(clean(m)),
            ProviderError::Untranslatable(m) => ProviderError::Untranslatable(clean(m)),
            other => other,
        }
    }

    /// Worth trying the same model again after a pause (Anthropic's 529 `overloaded_error`
    /// included).
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Status { status, .. } => {
                matches!(status.as_u16(), 408 | 409 | 425 | 429 | 500..=599)
            }
            ProviderError::Connect(_)
            | ProviderError::Transport(_)
            | ProviderError::FirstByteTimeout(_) => true,
            _ => false,
        }
    }

    /// The request itself is at fault: another model would reject it too, so the error goes
    /// straight back to the client.
    pub fn is_client_error(&self) -> bool {
        matches!(self, ProviderError::Status { status, .. }
            if matches!(status.as_u16(), 400 | 413 | 422))
    }

    /// Counts against the model's circuit breaker.
    pub fn counts_as_failure(&self) -> bool {
        !self.is_client_error()
            && !matches!(
                self,
                ProviderError::CircuitOpen
                    | ProviderError::Busy(_)
                    | ProviderError::MissingKey { .. }
                    | ProviderError::Untranslatable(_)
            )
    }

    /// A short label for metrics and the `x-triage-fallbacks` reasons.
    pub fn label(&self) -> String {
        match self {
            ProviderError::Status { status, .. } => status.as_u16().to_string(),
            ProviderError::Connect(_) => "connect".into(),
            ProviderError::Transport(_) => "transport".into(),
            ProviderError::FirstByteTimeout(_) => "first_byte_timeout".into(),
            ProviderError::TotalTimeout(_) => "total_timeout".into(),
            ProviderError::Protocol(_) => "protocol".into(),
            ProviderError::MidStream(_) => "mid_stream".into(),
            ProviderError::Truncated => "truncated_upstream".into(),
            ProviderError::MissingKey { .. } => "missing_key".into(),
            ProviderError::CircuitOpen => "circuit_open".into(),
            ProviderError::Busy(_) => "provider_busy".into(),
            ProviderError::Untranslatable(_) => "untranslatable".into(),
        }
    }

    /// Maps a reqwest failure, dropping the URL (it may carry a query-string key).
    fn from_reqwest(err: reqwest::Error) -> ProviderError {
        let connect = err.is_connect();
        let text = err.without_url().to_string();
        if connect {
            ProviderError::Connect(text)
        } else {
            ProviderError::Transport(text)
        }
    }
}

/// What differs between provider kinds, one implementation per wire format (`openai.rs`,
/// `anthropic/`, `gemini/`): the request, the whole answer, the stream and the error body.
/// What is the same for all (keys, scrubbing, the SSE framing, timeouts) stays out of it.
trait Adapter: Send + Sync {
    /// The HTTP request for `body`, with the provider's credentials.
    fn request(
        &self,
        client: &reqwest::Client,
        provider: &Provider,
        model: &Model,
        body: Body<'_>,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError>;
    /// The format the answer to `body` comes back in: OpenAI's, unless the adapter passes a
    /// client's request in its own format through untouched.
    fn answer_format(&self, _body: Body<'_>) -> Format {
        Format::Chat
    }
    /// A whole answer, as an OpenAI `chat.completion`.
    fn completion(&self, answer: Value) -> Result<Value, ProviderError>;
    /// A streamed answer, as OpenAI chunks.
    fn chunks(&self, response: reqwest::Response) -> ChunkStream;
    /// What an error body says.
    fn error_details(&self, body: &Value) -> ErrorDetails;
}

/// The adapter of a provider kind.
fn adapter(kind: ProviderKind) -> &'static dyn Adapter {
    match kind {
        ProviderKind::Openai => &openai::OpenAi,
        ProviderKind::Anthropic => &anthropic::Anthropic,
        ProviderKind::Gemini => &gemini::Gemini,
    }
}

/// One provider's HTTP client and settings.
#[derive(Clone)]
pub struct Upstream {
    pub provider: Arc<Provider>,
    client: reqwest::Client,
    adapter: &'static dyn Adapter,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    pub fn new(provider: Arc<Provider>) -> Result<Upstream, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(provider.timeouts.connect)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        let adapter = adapter(provider.kind);
        Ok(Upstream {
            provider,
            client,
            adapter,
        })
    }

    /// The format this upstream's answer to `body` comes back in: Anthropic's own for an
    /// Anthropic request to an Anthropic upstream, OpenAI's for everything else.
    pub fn answer_format(&self, body: Body<'_>) -> Format {
        self.adapter.answer_format(body)
    }

    /// Sends the request and returns once the response headers are in and say success.
    pub async fn send(
        &self,
        model: &Model,
        body: Body<'_>,
        stream: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        if let (Some(env), None) = (&self.provider.api_key_env, &self.provider.api_key) {
            return Err(ProviderError::MissingKey {
                provider: self.provider.name.clone(),
                env: env.clone(),
            });
        }
        let provider = self.provider.as_ref();
        let mut request = self
            .adapter
            .request(&self.client, provider, model, body, stream)?;
        // W3C trace context: the upstream's spans join the attempt's trace.
        if let Some(traceparent) = crate::telemetry::traceparent() {
            request = request.header("traceparent", traceparent);
        }
        let response = request.send().await.map_err(ProviderError::from_reqwest)?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(error_from_response(response, provider, self.adapter).await)
        }
    }

    /// Reads a whole (non-streaming) answer: an OpenAI `chat.completion`, or for
    /// [`Format::Messages`] Anthropic's `message` as it came.
    pub async fn read_full(
        &self,
        response: reqwest::Response,
        format: Format,
    ) -> Result<Value, ProviderError> {
        let value = read_json(response).await?;
        match format {
            Format::Messages => anthropic::check_native(value),
            Format::Chat => self.adapter.completion(value),
        }
    }

    /// Turns a streaming answer into OpenAI chunks, or for [`Format::Messages`] into
    /// Anthropic's events as they came.
    pub fn into_chunks(&self, response: reqwest::Response, format: Format) -> ChunkStream {
        let provider = self.provider.clone();
        let chunks = self.translate(response, format);
        // Stream errors quote upstream text too: the key comes out before anyone sees them.
        Box::pin(chunks.map(move |item| item.map_err(|e| e.scrubbed(&provider))))
    }

    fn translate(&self, response: reqwest::Response, format: Format) -> ChunkStream {
        match format {
            Format::Messages => translate_sse(response, anthropic::NativeEvents::default()),
            Format::Chat => self.adapter.chunks(response),
        }
    }
}

/// Error bodies longer than this are cut before they are parsed or shown.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// What an adapter reads from an upstream error body.
#[derive(Debug, Default)]
struct ErrorDetails {
    message: Option<String>,
    code: Option<String>,
    /// A status that says more than the HTTP one (Gemini answers a bad key with 400).
    status: Option<StatusCode>,
    retry_after: Option<Duration>,
}

/// Builds a [`ProviderError::Status`] from an upstream error response.
async fn error_from_response(
    response: reqwest::Response,
    provider: &Provider,
    adapter: &dyn Adapter,
) -> ProviderError {
    let status = response.status();
    let header_wait = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let bytes = response.bytes().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ERROR_BODY)]).into_owned();
    let details = serde_json::from_str::<Value>(&text)
        .map(|body| adapter.error_details(&body))
        .unwrap_or_default();
    let status = details.status.unwrap_or(status);
    let message = if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        // Upstream auth messages often quote part of the key: never pass them on.
        format!(
            "provider `{}` rejected triage's credentials for it",
            provider.name
        )
    } else {
        scrub(&details.message.unwrap_or(text), provider)
    };
    ProviderError::Status {
        status,
        message,
        code: details.code,
        retry_after: header_wait.or(details.retry_after),
    }
}

/// The whole body of a successful answer, as JSON.
async fn read_json(response: reqwest::Response) -> Result<Value, ProviderError> {
    let bytes = response
        .bytes()
        .await
        .map_err(ProviderError::from_reqwest)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ProviderError::Protocol(format!("answer is not JSON: {e}")))
}

/// Turns one provider's SSE `data:` payloads into the items of a [`ChunkStream`].
trait EventTranslator: Send + 'static {
    /// What one event yields: chunks to pass on (none to skip it), or the error it reports.
    fn event(&mut self, data: &str) -> Result<Vec<Value>, ProviderError>;
    /// What follows the last event: closing chunks, or an error when the stream was cut short.
    fn end(&mut self) -> Result<Vec<Value>, ProviderError>;
    /// The translator has seen the stream's own end marker; later bytes are ignored.
    fn finished(&self) -> bool {
        false
    }
}

/// Parses a JSON event payload.
fn parse_event(data: &str) -> Result<Value, ProviderError> {
    serde_json::from_str(data)
        .map_err(|e| ProviderError::Protocol(format!("stream event is not JSON: {e}")))
}

/// The chunks of an SSE response, through `translator`. The stream ends after the first error.
fn translate_sse(response: reqwest::Response, translator: impl EventTranslator) -> ChunkStream {
    let events = response.bytes_stream().eventsource();
    let state = (
        Box::pin(events),
        translator,
        std::collections::VecDeque::new(),
        false,
    );
    let chunks = futures_util::stream::unfold(
        state,
        |(mut events, mut translator, mut pending, mut done)| async move {
            loop {
                if let Some(item) = pending.pop_front() {
                    return Some((item, (events, translator, pending, done)));
                }
                if done {
                    return None;
                }
                let next = if translator.finished() {
                    None
                } else {
                    events.next().await
                };
                let produced = match next {
                    Some(Ok(event)) if event.data.trim().is_empty() => continue,
                    Some(Ok(event)) => translator.event(&event.data),
                    Some(Err(eventsource_stream::EventStreamError::Transport(e))) => {
                        Err(ProviderError::from_reqwest(e))
                    }
                    Some(Err(e)) => Err(ProviderError::Protocol(e.to_string())),
                    None => {
                        done = true;
                        translator.end()
                    }
                };
                match produced {
                    Ok(chunks) => pending.extend(chunks.into_iter().map(Ok)),
                    Err(error) => {
                        pending.push_back(Err(error));
                        done = true;
                    }
                }
            }
        },
    );
    Box::pin(chunks)
}

/// The fields every chunk of one streamed answer repeats.
#[derive(Debug, Clone, Default)]
struct ChunkMeta {
    id: String,
    created: u64,
    model: String,
}

impl ChunkMeta {
    /// A `chat.completion.chunk` with one choice.
    fn chunk(&self, index: u64, delta: Value, finish_reason: Option<&str>) -> Value {
        let choice = serde_json::json!({
            "index": index, "delta": delta, "logprobs": null, "finish_reason": finish_reason,
        });
        self.with_choices(vec![choice])
    }

    /// The last chunk: no choices, only the usage (what `stream_options.include_usage` gives).
    fn usage_chunk(&self, usage: &triage_core::catalog::Usage) -> Value {
        let mut chunk = self.with_choices(Vec::new());
        chunk["usage"] = usage.to_openai();
        chunk
    }

    fn with_choices(&self, choices: Vec<Value>) -> Value {
        serde_json::json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }
}

/// Seconds since the Unix epoch, for `created`.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The media type and base64 payload of a `data:<type>;base64,<data>` URL.
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((media_type, data))
}

fn untranslatable(message: impl Into<String>) -> ProviderError {
    ProviderError::Untranslatable(message.into())
}

/// A string field of a JSON object.
fn str_field<'v>(value: &'v Value, key: &str) -> Option<&'v str> {
    value.get(key).and_then(Value::as_str)
}

/// A model for golden tests: `upstream` as its upstream name, 8192 output tokens at most, and
/// per-million prices of 1 (input), 2 (output), 0.1 (cache reads) and 1.25 (cache writes).
#[cfg(test)]
fn test_model(upstream: &str) -> Model {
    let config = format!(
        "[[providers]]\nname = \"test\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1\"\n\
         [[models]]\nid = \"test/m\"\nprovider = \"test\"\nupstream = \"{upstream}\"\n\
         input_per_mtok = 1.0\noutput_per_mtok = 2.0\ncached_input_per_mtok = 0.1\n\
         cache_write_per_mtok = 1.25\ncontext = 100000\nmax_output = 8192\n"
    );
    let path = std::path::Path::new("test.toml");
    let config = triage_core::config::Config::parse(&config, path).unwrap();
    let catalog = triage_core::catalog::Catalog::build(&config, path, |_| None).unwrap();
    catalog.model("test/m").unwrap().as_ref().clone()
}

/// Folds chunks the way an OpenAI client does.
#[cfg(test)]
fn reassemble(chunks: &[Value]) -> Value {
    use serde_json::json;
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut calls: Vec<Value> = Vec::new();
    let mut finish = Value::Null;
    let mut usage = Value::Null;
    for chunk in chunks {
        if !chunk["usage"].is_null() {
            usage = chunk["usage"].clone();
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        let delta = &choice["delta"];
        content.push_str(delta["content"].as_str().unwrap_or_default());
        reasoning.push_str(delta["reasoning_content"].as_str().unwrap_or_default());
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                calls.push(json!({"id": call["id"], "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""}}));
            }
            let arguments = calls[index]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_string()
                + call["function"]["arguments"].as_str().unwrap_or_default();
            calls[index]["function"]["arguments"] = json!(arguments);
        }
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
    }
    json!({"content": content, "reasoning": reasoning, "tool_calls": calls,
        "finish_reason": finish, "usage": usage})
}

/// Replays SSE payloads through a translator, as [`translate_sse`] would; for golden tests.
#[cfg(test)]
fn replay(
    translator: &mut impl EventTranslator,
    events: &[&str],
) -> Vec<Result<Value, ProviderError>> {
    let mut out = Vec::new();
    for data in events {
        if translator.finished() {
            break;
        }
        match translator.event(data) {
            Ok(chunks) => out.extend(chunks.into_iter().map(Ok)),
            Err(e) => {
                out.push(Err(e));
                return out;
            }
        }
    }
    match translator.end() {
        Ok(chunks) => out.extend(chunks.into_iter().map(Ok)),
        Err(e) => out.push(Err(e)),
    }
    out
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        // `try_`: a value like `1e300` is finite but no Duration (found by the fuzz tests).
        return Duration::try_from_secs_f64(secs).ok();
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Masks the provider's key in upstream text, so an upstream that echoes a key cannot leak it
/// through an error message: the whole key, and any word that shares a run of
/// [`KEY_FRAGMENT`] characters with it (`sk-abc12…xyz`-style partial quotes).
pub fn scrub(text: &str, provider: &Provider) -> String {
    match &provider.api_key {
        Some(key) if !key.expose().is_empty() => mask_key(text, key.expose()),
        _ => text.to_string(),
    }
}

/// The shortest piece of a key that counts as quoting it.
const KEY_FRAGMENT: usize = 8;

fn mask_key(text: &str, key: &str) -> String {
    let text = text.replace(key, "***");
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let quotes_key = |word: &str| {
        word.len() >= KEY_FRAGMENT
            && (0..=word.len() - KEY_FRAGMENT).any(|i| key.contains(&word[i..i + KEY_FRAGMENT]))
    };
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    for c in text.chars().chain(std::iter::once('\0')) {
        if is_key_char(c) {
            word.push(c);
            continue;
        }
        out.push_str(if quotes_key(&word) { "***" } else { &word });
        word.clear();
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        let past = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(parse_retry_after(past), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("1e300"), None, "finite but no Duration");
        assert_eq!(parse_retry_after("NaN"), None);
    }

    #[test]
    fn data_urls_split_into_type_and_payload() {
        assert_eq!(
            parse_data_url("data:image/png;base64,iVBOR="),
            Some(("image/png", "iVBOR="))
        );
        assert_eq!(parse_data_url("data:text/plain,hello"), None);
        assert_eq!(parse_data_url("https://x/y.png"), None);
    }

    #[test]
    fn error_classes() {
        let status = |code: u16| ProviderError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            message: String::new(),
            code: None,
            retry_after: None,
        };
        assert!(status(429).is_retryable() && status(503).is_retryable());
        assert!(!status(401).is_retryable() && !status(400).is_retryable());
        assert!(status(400).is_client_error() && !status(400).counts_as_failure());
        assert!(
            !status(404).is_client_error(),
            "a wrong upstream model name is the provider's problem"
        );
        assert!(ProviderError::Connect("x".into()).is_retryable());
        assert!(!ProviderError::CircuitOpen.counts_as_failure());
        assert!(status(529).is_retryable(), "Anthropic's overloaded_error");
        let untranslatable = ProviderError::Untranslatable("x".into());
        assert!(!untranslatable.is_retryable() && !untranslatable.is_client_error());
        assert!(
            !untranslatable.counts_as_failure(),
            "the model is fine; the next one may take the request"
        );
    }
}
