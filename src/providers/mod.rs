//! Provider adapters: one file per wire format, translating triage's OpenAI-shaped request to the
//! provider's API and its answers (whole or streamed) back to OpenAI's shapes.
//!
//! Adapters do HTTP and translation only. Retries, timeouts, fallbacks and accounting belong to
//! `dispatch`; choosing a model belongs to `router`.

pub mod openai;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use reqwest::StatusCode;
use serde_json::{Map, Value};

use crate::catalog::{Model, Provider, ProviderKind};

/// OpenAI-shaped `chat.completion.chunk` objects, ending when the upstream stream ends.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Value, ProviderError>> + Send>>;

/// Why one call to one model did not produce an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("upstream returned HTTP {status}: {message}")]
    Status {
        status: StatusCode,
        message: String,
        /// The upstream's error `code`, when it gave one.
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
    #[error("provider `{provider}` has no API key: set the environment variable {env}")]
    MissingKey { provider: String, env: String },
    #[error("the circuit breaker is open after repeated failures")]
    CircuitOpen,
    #[error("provider kind {0:?} is not implemented")]
    Unsupported(ProviderKind),
}

impl ProviderError {
    /// Worth trying the same model again after a pause.
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
                ProviderError::CircuitOpen | ProviderError::MissingKey { .. }
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
            ProviderError::MissingKey { .. } => "missing_key".into(),
            ProviderError::CircuitOpen => "circuit_open".into(),
            ProviderError::Unsupported(_) => "unsupported".into(),
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

/// One provider's HTTP client and settings.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub provider: Arc<Provider>,
    client: reqwest::Client,
}

impl Upstream {
    pub fn new(provider: Arc<Provider>) -> Result<Upstream, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(provider.timeouts.connect)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(Upstream { provider, client })
    }

    /// Sends the request and returns once the response headers are in and say success.
    /// `body` is the client's OpenAI-shaped request, triage's own fields already removed.
    pub async fn send(
        &self,
        model: &Model,
        body: &Map<String, Value>,
        stream: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        if let (Some(env), None) = (&self.provider.api_key_env, &self.provider.api_key) {
            return Err(ProviderError::MissingKey {
                provider: self.provider.name.clone(),
                env: env.clone(),
            });
        }
        match self.provider.kind {
            ProviderKind::Openai => {
                openai::send(&self.client, &self.provider, model, body, stream).await
            }
            kind => Err(ProviderError::Unsupported(kind)),
        }
    }

    /// Reads a whole (non-streaming) answer as an OpenAI `chat.completion`.
    pub async fn read_full(&self, response: reqwest::Response) -> Result<Value, ProviderError> {
        match self.provider.kind {
            ProviderKind::Openai => openai::read_full(response).await,
            kind => Err(ProviderError::Unsupported(kind)),
        }
    }

    /// Turns a streaming answer into OpenAI chunks.
    pub fn into_chunks(&self, response: reqwest::Response) -> ChunkStream {
        match self.provider.kind {
            ProviderKind::Openai => openai::into_chunks(response),
            kind => Box::pin(futures_util::stream::once(async move {
                Err(ProviderError::Unsupported(kind))
            })),
        }
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Replaces every occurrence of the provider's key in upstream text, so an upstream that echoes
/// a key cannot leak it through an error message.
pub fn scrub(text: &str, provider: &Provider) -> String {
    match &provider.api_key {
        Some(key) if !key.expose().is_empty() => text.replace(key.expose(), "***"),
        _ => text.to_string(),
    }
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
    }
}
