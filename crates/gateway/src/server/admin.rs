//! The endpoints around the outcome log and the model: `POST /v1/feedback` (a grade of one
//! answer, or a preference between two answers to the same prompt), `GET /v1/usage`
//! (the report as JSON) and `POST /admin/reload` (a new classifier, swapped in atomically).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, body_rejection};
use crate::outcomes::report::{Report, ReportOptions};
use crate::outcomes::{
    Feedback, FeedbackError, OutcomeLog, PairResult, Preference, now_ms, parse_date,
};
use crate::router::AdaptiveRouter;
use triage_core::classifier::Classifier;

/// Longest accepted feedback comment, in bytes.
const MAX_COMMENT: usize = 10_000;

fn outcome_log(state: &AppState) -> Result<&OutcomeLog, ApiError> {
    state.outcomes.as_ref().ok_or_else(ApiError::log_disabled)
}

/// `POST /v1/feedback`: a score for one logged request, or with `opponent` a preference
/// between two; 200 once it is committed.
pub(super) async fn feedback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match store_feedback(&state, &headers, body).await {
        Ok(value) => Json(value).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn store_feedback(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, ApiError> {
    // An admin key may give feedback too: the dashboard's feedback buttons use it.
    if state.admin_key(headers).is_none() {
        state.authenticate(headers)?;
    }
    let body = body.map_err(|rejection| body_rejection(&rejection, &state.limits))?;
    let verdict = parse_feedback(&body)?;
    let log = outcome_log(state)?;
    let (stored, acknowledgement) = match verdict {
        Verdict::Graded(feedback) => {
            let ack = json!({"object": "feedback", "id": feedback.request_id,
                "score": feedback.score, "stored": true});
            (log.feedback(feedback).await, ack)
        }
        Verdict::Pairwise(preference) => {
            let ack = json!({"object": "feedback", "id": preference.request_id,
                "opponent": preference.opponent_id, "result": preference.result.as_str(),
                "stored": true});
            (log.preference(preference).await, ack)
        }
    };
    stored.map_err(|error| match error {
        FeedbackError::UnknownId(id) => ApiError::request_not_found(&id),
        FeedbackError::DifferentPrompts(..) => {
            ApiError::invalid_request(error.to_string(), Some("opponent"))
        }
        FeedbackError::Store(message) => ApiError::internal(message),
    })?;
    Ok(acknowledgement)
}

/// What a client said: a grade of one answer, or how it compares with another.
#[derive(Debug)]
enum Verdict {
    Graded(Feedback),
    Pairwise(Preference),
}

fn parse_feedback(body: &[u8]) -> Result<Verdict, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid_json(&e.to_string()))?;
    let bad = |message: &str, param: &str| ApiError::invalid_request(message, Some(param));
    let Value::Object(fields) = value else {
        return Err(ApiError::invalid_request(
            "The request body must be a JSON object.",
            None,
        ));
    };
    if let Some(key) = fields.keys().find(|k| {
        !matches!(
            k.as_str(),
            "id" | "score" | "thumbs" | "comment" | "opponent" | "result"
        )
    }) {
        return Err(bad(&format!("Unknown field `{key}`."), key));
    }
    let request_id = match fields.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => {
            return Err(bad(
                "id: the x-triage-request-id of the request, a string",
                "id",
            ));
        }
    };
    let score = match fields.get("score") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(s) if (0.0..=1.0).contains(&s) => Some(s),
            _ => return Err(bad("score: a number between 0 and 1", "score")),
        },
    };
    let thumbs = match fields.get("thumbs") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if t == "up" || t == "down" => Some(t.clone()),
        Some(_) => return Err(bad("thumbs: \"up\" or \"down\"", "thumbs")),
    };
    let comment = match fields.get("comment") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if c.len() <= MAX_COMMENT => Some(c.clone()),
        Some(_) => {
            return Err(bad(
                &format!("comment: a string of at most {MAX_COMMENT} bytes"),
                "comment",
            ));
        }
    };
    if let Some(preference) = parse_preference(&fields, &request_id, comment.clone())? {
        if score.is_some() || thumbs.is_some() {
            return Err(bad(
                "A preference takes `result`, not `score` or `thumbs`.",
                "result",
            ));
        }
        return Ok(Verdict::Pairwise(preference));
    }
    let score = match (score, thumbs.as_deref()) {
        (Some(_), Some(_)) => return Err(bad("Send `score` or `thumbs`, not both.", "score")),
        (Some(s), None) => s,
        (None, Some("up")) => 1.0,
        (None, Some(_)) => 0.0,
        (None, None) => {
            return Err(bad(
                "Send a `score` (0..1), `thumbs` (up/down), or an `opponent` and `result`.",
                "score",
            ));
        }
    };
    Ok(Verdict::Graded(Feedback {
        request_id,
        ts_ms: now_ms(),
        score,
        thumbs,
        comment,
    }))
}

/// `opponent` and `result`, when the body has either: a preference between `id`'s answer and
/// the opponent's.
fn parse_preference(
    fields: &serde_json::Map<String, Value>,
    request_id: &str,
    comment: Option<String>,
) -> Result<Option<Preference>, ApiError> {
    let bad = |message: &str, param: &str| ApiError::invalid_request(message, Some(param));
    let opponent = fields.get("opponent").filter(|v| !v.is_null());
    let result = fields.get("result").filter(|v| !v.is_null());
    if opponent.is_none() && result.is_none() {
        return Ok(None);
    }
    let opponent_id = match opponent {
        Some(Value::String(id)) if !id.is_empty() && id != request_id => id.clone(),
        _ => {
            return Err(bad(
                "opponent: the x-triage-request-id of another answer to the same prompt",
                "opponent",
            ));
        }
    };
    let result = result
        .and_then(Value::as_str)
        .and_then(PairResult::parse)
        .ok_or_else(|| {
            bad(
                "result: how `id`'s answer fared against the opponent's: \"win\", \"loss\", \
                 \"tie\" or \"both_bad\"",
                "result",
            )
        })?;
    Ok(Some(Preference {
        request_id: request_id.to_string(),
        opponent_id,
        ts_ms: now_ms(),
        result,
        comment,
    }))
}

#[derive(Debug, Deserialize)]
pub(super) struct UsageQuery {
    since: Option<String>,
    baseline: Option<String>,
}

/// `GET /v1/usage?since=2026-11-01&baseline=openai/gpt-4o`: the report as JSON, for any
/// router key or admin key.
pub(super) async fn usage(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match usage_report(&state, &headers, query).await {
        Ok(report) => Json(report).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn usage_report(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Report, ApiError> {
    if state.admin_key(headers).is_none() {
        state.authenticate(headers)?;
    }
    let Query(query) = query.map_err(|e| ApiError::bad_query(&e))?;
    let since_ms = match query.since.as_deref() {
        None => None,
        Some(text) => Some(parse_date(text).ok_or_else(|| {
            ApiError::invalid_request("since: a date like 2026-11-25", Some("since"))
        })?),
    };
    let options = ReportOptions {
        since_ms,
        baseline: query.baseline,
    };
    let log = outcome_log(state)?;
    log.flush().await;
    let target = log.target.clone();
    let catalog = state.catalog.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = target.open_read()?;
        Report::compute(&mut store, &catalog, &options)
    })
    .await
    .map_err(|e| ApiError::internal(format!("report task failed: {e}")))?
    .map_err(|e| ApiError::internal(format!("cannot read the outcome log: {e}")))
}

/// `POST /admin/reload`: loads the classifier directory again and swaps it in.
pub(super) async fn reload(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if state.admin_keys.is_empty() {
        return ApiError::admin_disabled().into_response();
    }
    if state.admin_key(&headers).is_none() {
        return ApiError::unauthorized("This endpoint needs an admin key.").into_response();
    }
    match reload_classifier(&state).await {
        Ok(info) => Json(info).into_response(),
        Err(message) => ApiError::reload_failed(message).into_response(),
    }
}

impl AppState {
    /// The admin key id presented, if any.
    pub(super) fn admin_key(&self, headers: &HeaderMap) -> Option<&str> {
        let digest = super::presented_key(headers)?;
        self.admin_keys.get(&digest).map(String::as_str)
    }
}

/// Loads the configured classifier off the async runtime and swaps it in; requests already
/// routing keep the one they hold. On error the old model stays and the error is returned.
pub async fn reload_classifier(state: &Arc<AppState>) -> Result<Value, String> {
    let source = state.classifier_source.clone();
    let catalog = state.catalog.clone();
    let targets = state.routing.targets();
    let started = std::time::Instant::now();
    let router = tokio::task::spawn_blocking(move || {
        Classifier::load(&source).map(|c| AdaptiveRouter::new(c, &catalog, targets))
    })
    .await
    .map_err(|e| format!("the reload task failed: {e}"))?
    .map_err(|e| {
        let message = format!("reload failed, the previous model stays: {e}");
        tracing::error!("{message}");
        message
    })?;
    let routable = router.routable();
    state.adaptive.store(Some(Arc::new(router)));
    let load_ms = started.elapsed().as_millis() as u64;
    tracing::info!(model = %state.classifier_source, routable, load_ms, "classifier reloaded");
    Ok(json!({
        "reloaded": state.classifier_source,
        "routable_models": routable,
        "load_ms": load_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(body: &str) -> ApiError {
        parse_feedback(body.as_bytes()).unwrap_err()
    }

    fn graded(body: &str) -> Feedback {
        match parse_feedback(body.as_bytes()).unwrap() {
            Verdict::Graded(f) => f,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn feedback_fields_are_checked() {
        let f = graded(r#"{"id":"req_1","thumbs":"down","comment":"meh"}"#);
        assert_eq!((f.score, f.thumbs.as_deref()), (0.0, Some("down")));
        assert_eq!(graded(r#"{"id":"r","score":0.25}"#).score, 0.25);
        assert_eq!(error_of(r#"{"id":"r","score":1.5}"#).param(), Some("score"));
        assert_eq!(
            error_of(r#"{"id":"r","thumbs":"left"}"#).param(),
            Some("thumbs")
        );
        assert_eq!(error_of(r#"{"score":1}"#).param(), Some("id"));
        assert_eq!(error_of(r#"{"id":"r"}"#).param(), Some("score"));
        assert_eq!(
            error_of(r#"{"id":"r","score":1,"thumbs":"up"}"#).status(),
            400
        );
        assert_eq!(
            error_of(r#"{"id":"r","score":1,"extra":1}"#).param(),
            Some("extra")
        );
    }

    #[test]
    fn a_preference_names_an_opponent_and_a_result() {
        let Verdict::Pairwise(p) = parse_feedback(
            br#"{"id":"a","opponent":"b","result":"both_bad","comment":"neither ran"}"#,
        )
        .unwrap() else {
            panic!("not a preference");
        };
        assert_eq!(
            (p.request_id.as_str(), p.opponent_id.as_str(), p.result),
            ("a", "b", PairResult::BothBad)
        );
        assert_eq!(p.comment.as_deref(), Some("neither ran"));
        for (body, param) in [
            (r#"{"id":"a","opponent":"b"}"#, "result"),
            (r#"{"id":"a","opponent":"b","result":"draw"}"#, "result"),
            (r#"{"id":"a","result":"win"}"#, "opponent"),
            (r#"{"id":"a","opponent":"a","result":"win"}"#, "opponent"),
            (r#"{"id":"a","opponent":7,"result":"win"}"#, "opponent"),
            (
                r#"{"id":"a","opponent":"b","result":"win","thumbs":"up"}"#,
                "result",
            ),
        ] {
            let error = error_of(body);
            assert_eq!(
                (error.status(), error.param()),
                (axum::http::StatusCode::BAD_REQUEST, Some(param)),
                "{body}"
            );
        }
    }
}
