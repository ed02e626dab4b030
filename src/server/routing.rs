//! From a parsed request to the chain of models, for the chat endpoint and `POST /v1/route`:
//! explicit ids straight through the catalog, `auto…` through the classifier (off the async
//! runtime) and the policy. Also the `x-triage-*` headers that explain an adaptive choice.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{ApiError, AppState, ChatRequest, body_rejection, set_header};
use crate::catalog::Model;
use crate::metrics::ModelLabels;
use crate::policy::{Constraints, Profile};
use crate::router::{self, AutoDecision, RouteError};

/// The models to try, and the adaptive decision when there was one.
pub struct Routed {
    pub chain: Vec<Arc<Model>>,
    pub auto: Option<Arc<AutoDecision>>,
}

/// Resolves the request's `model` (and `models`) to a chain.
pub async fn resolve(state: &Arc<AppState>, request: &mut ChatRequest) -> Result<Routed, ApiError> {
    resolve_body(
        state,
        &request.requested,
        &request.constraints,
        &mut request.body,
    )
    .await
}

/// [`resolve`] for any endpoint: `requested` is `model` then `models`; `chat_body` is the
/// request as a chat-completions body (what the classifier reads), lent to the classifier
/// thread and put back.
pub async fn resolve_body(
    state: &Arc<AppState>,
    requested: &[String],
    constraints: &Constraints,
    chat_body: &mut Map<String, Value>,
) -> Result<Routed, ApiError> {
    let Some(profile) = Profile::parse(&requested[0]) else {
        let chain = router::explicit_chain(&state.catalog, requested).map_err(|e| match e {
            RouteError::UnknownModel(id) => ApiError::model_not_found(&id),
            RouteError::NoModel => ApiError::invalid_request("No model requested.", Some("model")),
        })?;
        return Ok(Routed { chain, auto: None });
    };
    let profile = profile.map_err(|message| ApiError::invalid_request(message, Some("model")))?;
    let mut constraints = constraints.clone();
    if requested.len() > 1 {
        // `"models": [...]` beside `auto` narrows the choice like `triage.models`.
        constraints.models = Some(requested[1..].to_vec());
    }
    let auto = decide(state, chat_body, constraints, profile).await?;
    let chain = auto_chain(state, &auto)?;
    Ok(Routed {
        chain,
        auto: Some(Arc::new(auto)),
    })
}

/// Runs the classifier and the policy on a blocking thread: inference is CPU work that must
/// not stall the async workers.
async fn decide(
    state: &Arc<AppState>,
    chat_body: &mut Map<String, Value>,
    constraints: Constraints,
    profile: Profile,
) -> Result<AutoDecision, ApiError> {
    let Some(adaptive) = state.adaptive.load_full() else {
        let mut error = ApiError::internal(
            "Adaptive routing is unavailable: no classifier model is loaded. Name a model \
             explicitly, or set [classifier] model in the config.",
        );
        error.status = StatusCode::SERVICE_UNAVAILABLE;
        error.code = Some("classifier_unavailable".into());
        return Err(error);
    };
    let body = std::mem::take(chat_body);
    let state_for_task = state.clone();
    let started = Instant::now();
    let (result, body) = tokio::task::spawn_blocking(move || {
        let healthy = |id: &str| state_for_task.dispatcher.is_healthy(id);
        let result = adaptive.decide(
            &state_for_task.catalog,
            &body,
            profile,
            &constraints,
            healthy,
        );
        (result, body)
    })
    .await
    .map_err(|e| ApiError::internal(format!("classifier task failed: {e}")))?;
    *chat_body = body;
    state
        .metrics
        .classify
        .get_or_create(&ModelLabels {
            model: profile.name(),
        })
        .observe(started.elapsed().as_secs_f64());
    result.map_err(|e| ApiError::internal(format!("classifier failed: {e}")))
}

/// The chosen model then the ranked fallbacks, or why nothing can serve the request.
fn auto_chain(state: &AppState, auto: &AutoDecision) -> Result<Vec<Arc<Model>>, ApiError> {
    let decision = &auto.decision;
    let chain: Vec<Arc<Model>> = decision
        .chosen
        .iter()
        .chain(&decision.fallbacks)
        .filter_map(|c| state.catalog.model(&c.model).cloned())
        .collect();
    if !chain.is_empty() {
        return Ok(chain);
    }
    let reasons = decision
        .candidates
        .iter()
        .map(|c| format!("{}: {}", c.model, c.excluded.as_deref().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join("; ");
    let all_down = decision
        .candidates
        .iter()
        .any(|c| c.excluded.as_deref() == Some("circuit open"));
    let mut error = ApiError::invalid_request(
        format!(
            "No model can serve this request under {}: {reasons}",
            decision.profile
        ),
        Some("model"),
    );
    error.code = Some("no_eligible_model".into());
    if all_down {
        error.status = StatusCode::SERVICE_UNAVAILABLE;
    }
    Err(error)
}

/// The headers that explain an adaptive choice; `answered` is the model that answered (the
/// choice, or a fallback).
pub fn explain(response: &mut Response, auto: &AutoDecision, answered: &str) {
    let prediction = &auto.prediction;
    set_header(
        response,
        "x-triage-difficulty",
        &format!("{:.3}", prediction.difficulty),
    );
    set_header(response, "x-triage-skill", &auto.top_skill);
    set_header(
        response,
        "x-triage-tool-need",
        &format!("{:.3}", prediction.tool_need),
    );
    let quality = auto
        .decision
        .candidates
        .iter()
        .find(|c| c.model == answered)
        .and_then(|c| c.quality);
    if let Some(q) = quality {
        set_header(response, "x-triage-quality", &format!("{q:.3}"));
    }
    let reason = format!("{}: {}", auto.decision.profile, auto.decision.reason);
    set_header(
        response,
        "x-triage-reason",
        &reason.replace(|c: char| !c.is_ascii() || c.is_ascii_control(), " "),
    );
}

/// `POST /v1/route`: the decision for a chat-completions body, without calling a provider.
pub async fn route_handler(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match dry_run(&state, &headers, body).await {
        Ok(value) => Json(value).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn dry_run(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, ApiError> {
    state.authenticate(headers)?;
    let body = body.map_err(|rejection| body_rejection(&rejection, state.max_body_bytes))?;
    let mut request = ChatRequest::parse(&body)?;
    let routed = resolve(state, &mut request).await?;
    let chain: Vec<&str> = routed.chain.iter().map(|m| m.id.as_str()).collect();
    let Some(auto) = routed.auto else {
        return Ok(json!({"route": "explicit", "chain": chain}));
    };
    let skills: Map<String, Value> = auto
        .skills
        .iter()
        .map(|(name, weight)| (name.clone(), json!(weight)))
        .collect();
    let prediction = &auto.prediction;
    Ok(json!({
        "route": "auto",
        "profile": auto.decision.profile,
        "classifier": {
            "difficulty": prediction.difficulty,
            "skills": skills,
            "top_skill": auto.top_skill,
            "tool_need": prediction.tool_need,
            "tokens": prediction.tokens,
        },
        "target_quality": auto.decision.target,
        "chosen": auto.decision.chosen,
        "fallbacks": auto.decision.fallbacks,
        "candidates": auto.decision.candidates,
        "reason": auto.decision.reason,
        "chain": chain,
    }))
}
