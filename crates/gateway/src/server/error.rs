//! The one place where a failure becomes an HTTP status and an error body: OpenAI's
//! `{"error":{"message","type","param","code"}}`, or on `/v1/messages` Anthropic's
//! `{"type":"error","error":{"type","message"}}`.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header::RETRY_AFTER};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::dispatch::DispatchError;
use crate::providers::ProviderError;

/// An error as the client sees it. Built only by the named constructors below, so that each
/// kind of failure has one status, one `type` and one `code` wherever it is raised.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<String>,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    fn with_code(mut self, code: &str) -> ApiError {
        self.code = Some(code.to_string());
        self
    }

    pub fn invalid_request(message: impl Into<String>, param: Option<&str>) -> ApiError {
        let mut error = ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
        error.param = param.map(String::from);
        error
    }

    /// A request hyper refused before the application saw it (`parse_errors`).
    pub fn at_http_layer(status: StatusCode, code: &str, message: &str) -> ApiError {
        ApiError::new(status, "invalid_request_error", message).with_code(code)
    }

    /// A query string that does not parse into the endpoint's parameters.
    pub fn bad_query(rejection: &axum::extract::rejection::QueryRejection) -> ApiError {
        ApiError::invalid_request(rejection.body_text(), None)
    }

    pub fn invalid_json(detail: &str) -> ApiError {
        ApiError::invalid_request(
            format!("The request body is not valid JSON: {detail}"),
            None,
        )
        .with_code("invalid_json")
    }

    pub fn unauthorized(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
            .with_code("invalid_api_key")
    }

    pub fn model_not_found(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "The model `{id}` does not exist on this router. List the available models \
                 with GET /v1/models."
            ),
        )
        .with_code("model_not_found")
        .with_param("model")
    }

    pub fn not_found(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Unknown path {path}. triage serves /v1/chat/completions and /v1/models."),
        )
        .with_code("unknown_url")
    }

    pub fn payload_too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("The request body is larger than this router's limit of {limit} bytes."),
        )
        .with_code("request_too_large")
    }

    /// The client stopped sending its body for longer than `[limits] body_timeout_ms`.
    pub fn body_timeout(timeout_ms: u64) -> ApiError {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!("The request body did not arrive: nothing was received for {timeout_ms} ms."),
        )
        .with_code("request_timeout")
    }

    /// The instance is at its `[limits] max_concurrent_requests`: try again in a moment (or
    /// another instance behind the load balancer).
    pub fn overloaded(limit: usize) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            format!("This router is at its limit of {limit} requests in flight; retry shortly."),
        )
        .with_code("overloaded");
        error.retry_after = Some(Duration::from_secs(1));
        error
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "Method not allowed on this path.",
        )
        .with_code("method_not_allowed")
    }

    /// `auto` was asked for and no classifier model is loaded.
    pub fn classifier_unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
            .with_code("classifier_unavailable")
    }

    /// Only this router's set-up (keys, `[routing] models`) stands between `auto` and a model.
    pub fn no_routable_model(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
            .with_code("no_routable_model")
    }

    /// The request's own constraints leave no model; 503 when open circuits are part of why.
    pub fn no_eligible_model(message: impl Into<String>, circuits_open: bool) -> ApiError {
        let status = if circuits_open {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, "invalid_request_error", message)
            .with_code("no_eligible_model")
            .with_param("model")
    }

    /// An upstream failed after the answer had started: the stream's closing error event. A
    /// rate limit or overload keeps its status (Anthropic's error `type` follows it).
    pub fn failed_mid_answer(error: &ProviderError) -> ApiError {
        let status = match error {
            ProviderError::Status { status, .. } if matches!(status.as_u16(), 429 | 529) => *status,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let code = match error {
            ProviderError::Truncated => "truncated_upstream",
            _ => "upstream_stream_error",
        };
        ApiError::new(
            status,
            "upstream_error",
            format!("The upstream failed after the answer had started: {error}"),
        )
        .with_code(code)
    }

    pub fn log_disabled() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "The outcome log is disabled ([log] enabled = false).",
        )
        .with_code("log_disabled")
    }

    /// Feedback for a request id the log does not hold.
    pub fn request_not_found(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("No logged request has id `{id}`."),
        )
        .with_code("request_not_found")
        .with_param("id")
    }

    /// An admin endpoint on a router with no admin keys.
    pub fn admin_disabled() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            "No admin keys are configured ([auth] admin_keys).",
        )
        .with_code("admin_disabled")
    }

    pub fn reload_failed(message: impl Into<String>) -> ApiError {
        ApiError::internal(message).with_code("reload_failed")
    }

    /// A virtual key asked for a model outside its allow-list.
    pub fn model_not_allowed(model: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            format!("This key may not use the model `{model}`."),
        )
        .with_code("model_not_allowed")
        .with_param("model")
    }

    /// A virtual key's budget is spent. 402, not 429: SDKs retry a 429, and a budget does not
    /// come back in seconds.
    pub fn budget_exceeded(spent: f64, budget: f64, period: &str) -> ApiError {
        let per = if period == "total" {
            String::new()
        } else {
            format!(" this {period}")
        };
        ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_quota",
            format!("This key has spent ${spent:.6} of its ${budget:.6} budget{per}."),
        )
        .with_code("budget_exceeded")
    }

    /// A virtual key is over its requests per minute.
    pub fn key_rate_limited(rpm: u32, retry_after: Duration) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!("This key is limited to {rpm} requests per minute."),
        )
        .with_code("rate_limit_exceeded");
        error.retry_after = Some(retry_after);
        error
    }

    /// A virtual key's answers of the last minute used its tokens per minute.
    pub fn key_token_limited(tpm: u32, retry_after: Duration) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!("This key is limited to {tpm} tokens per minute."),
        )
        .with_code("rate_limit_exceeded");
        error.retry_after = Some(retry_after);
        error
    }

    /// An admin lookup of a virtual key that does not exist.
    pub fn key_not_found(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("No key has id `{id}`."),
        )
        .with_code("key_not_found")
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The machine-readable `code`, if the error has one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The request field at fault, if one is.
    pub fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    fn with_param(mut self, param: &str) -> ApiError {
        self.param = Some(param.to_string());
        self
    }

    /// The status and message for a request no model could answer. The last failure decides
    /// the status (the last one that is not a model unable to express the request, unless
    /// that is all there was); the message lists every model tried.
    pub fn from_dispatch(error: &DispatchError) -> ApiError {
        let last = error
            .failures
            .iter()
            .rev()
            .find(|f| !matches!(f.error, ProviderError::Untranslatable(_)))
            .or(error.failures.last());
        let Some(last) = last else {
            return ApiError::internal("no model was tried");
        };
        if last.error.is_client_error() {
            return upstream_rejection(&last.error);
        }
        let tried = error
            .failures
            .iter()
            .map(|f| format!("{}: {}", f.model, f.error))
            .collect::<Vec<_>>()
            .join("; ");
        let message = format!("No model could answer. Tried {tried}");
        let (status, kind, code) = match &last.error {
            ProviderError::Status { status, .. } if status.as_u16() == 429 => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded",
            ),
            ProviderError::Status { status, .. } if matches!(status.as_u16(), 503 | 529) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_error",
                "upstream_unavailable",
            ),
            ProviderError::FirstByteTimeout(_) | ProviderError::TotalTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_timeout",
            ),
            ProviderError::CircuitOpen => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_error",
                "circuit_open",
            ),
            ProviderError::Busy(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_error",
                "upstream_busy",
            ),
            ProviderError::MissingKey { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_error",
                "provider_not_configured",
            ),
            ProviderError::Untranslatable(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "unsupported_by_model",
            ),
            _ => (StatusCode::BAD_GATEWAY, "upstream_error", "upstream_error"),
        };
        let mut api = ApiError::new(status, kind, message).with_code(code);
        match &last.error {
            ProviderError::Status { retry_after, .. } => api.retry_after = *retry_after,
            ProviderError::Busy(_) => api.retry_after = Some(Duration::from_secs(1)),
            _ => {}
        }
        api
    }

    /// Anthropic's error `type` for this error's status.
    pub fn anthropic_type(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            504 => "timeout_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        }
    }

    /// The body in Anthropic's shape, also used as the data of an SSE `error` event.
    pub fn anthropic_body(&self) -> Value {
        json!({"type": "error", "error": {"type": self.anthropic_type(), "message": self.message}})
    }

    /// The response for an Anthropic client (`/v1/messages`).
    pub fn into_anthropic_response(self) -> Response {
        let response = (self.status, Json(self.anthropic_body())).into_response();
        with_retry_after(response, self.retry_after)
    }

    /// The body, also used as the data of an SSE error event.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// An upstream that rejected the request itself (400/413/422): its status and message go back.
fn upstream_rejection(error: &ProviderError) -> ApiError {
    match error {
        ProviderError::Status {
            status,
            message,
            code,
            ..
        } => {
            let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_REQUEST);
            let mut api = ApiError::new(status, "invalid_request_error", message.clone());
            api.code = code.clone();
            api
        }
        other => ApiError::invalid_request(other.to_string(), None),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let response = (self.status, Json(self.body())).into_response();
        with_retry_after(response, self.retry_after)
    }
}

fn with_retry_after(mut response: Response, wait: Option<Duration>) -> Response {
    if let Some(wait) = wait {
        let secs = wait.as_secs_f64().ceil() as u64;
        if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untranslatable_is_a_400_only_when_no_model_failed_otherwise() {
        use crate::dispatch::Failure;
        let failure = |model: &str, error: ProviderError| Failure {
            model: model.into(),
            error,
        };
        let untranslatable = || ProviderError::Untranslatable("n > 1".into());
        let only = DispatchError {
            failures: vec![failure("a", untranslatable())],
        };
        assert_eq!(
            ApiError::from_dispatch(&only).status,
            StatusCode::BAD_REQUEST
        );
        let mixed = DispatchError {
            failures: vec![
                failure("a", ProviderError::Connect("refused".into())),
                failure("b", untranslatable()),
            ],
        };
        let error = ApiError::from_dispatch(&mixed);
        assert_eq!(error.status, StatusCode::BAD_GATEWAY);
        assert!(error.message.contains("n > 1"), "{}", error.message);
    }

    #[test]
    fn anthropic_types_follow_the_status() {
        let cases = [
            (ApiError::unauthorized("x"), "authentication_error"),
            (ApiError::model_not_found("m"), "not_found_error"),
            (
                ApiError::invalid_request("x", None),
                "invalid_request_error",
            ),
            (ApiError::payload_too_large(1), "request_too_large"),
            (ApiError::internal("x"), "api_error"),
        ];
        for (error, kind) in cases {
            assert_eq!(error.anthropic_body()["error"]["type"], kind);
            assert_eq!(error.anthropic_body()["type"], "error");
        }
    }
}
