//! From a parsed request to the chain of models, for the chat endpoint and `POST /v1/route`:
//! explicit ids straight through the catalog, `auto…` through the classifier (off the async
//! runtime) and the policy. Also the `x-triage-*` headers that explain an adaptive choice.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{ApiError, AppState, ChatRequest, body_rejection, set_header};
use crate::keys::Key;
use crate::metrics::ModelLabels;
use crate::router::{self, AdaptiveRouter, AutoDecision, RouteError};
use triage_core::abilities::Abilities;
use triage_core::catalog::Model;
use triage_core::policy::{CIRCUIT_OPEN, Candidate, Constraints, Profile};

/// The models to try, and the adaptive decision when there was one.
pub struct Routed {
    pub chain: Vec<Arc<Model>>,
    pub auto: Option<Arc<AutoDecision>>,
}

/// Resolves the request's `model` (and `models`) to a chain, for a request about to be answered.
pub async fn resolve(
    state: &Arc<AppState>,
    request: &mut ChatRequest,
    key: Option<&Key>,
) -> Result<Routed, ApiError> {
    resolve_body(
        state,
        &request.requested,
        &request.constraints,
        &mut request.body,
        true,
        key,
    )
    .await
}

/// [`resolve`] for any endpoint: `requested` is `model` then `models`; `chat_body` is the
/// request as a chat-completions body (what the classifier reads), lent to the classifier
/// thread and put back. `answered`: the request will be sent upstream, so it may explore
/// (`POST /v1/route` shows the policy's own decision).
pub async fn resolve_body(
    state: &Arc<AppState>,
    requested: &[String],
    constraints: &Constraints,
    chat_body: &mut Map<String, Value>,
    answered: bool,
    key: Option<&Key>,
) -> Result<Routed, ApiError> {
    let Some(profile) = Profile::parse(&requested[0]) else {
        let mut chain = router::explicit_chain(&state.catalog, requested).map_err(|e| match e {
            RouteError::UnknownModel(id) => ApiError::model_not_found(&id),
            RouteError::NoModel => ApiError::invalid_request("No model requested.", Some("model")),
        })?;
        // A key's allow-list holds for the configured fallbacks too.
        if let Some(key) = key {
            chain.retain(|model| key.allows(&model.id));
        }
        return Ok(Routed { chain, auto: None });
    };
    let profile = profile.map_err(|message| ApiError::invalid_request(message, Some("model")))?;
    let mut constraints = constraints.clone();
    if requested.len() > 1 {
        // `"models": [...]` beside `auto` narrows the choice like `triage.models`.
        constraints.models = Some(requested[1..].to_vec());
    }
    constraints.unavailable = router::unavailable(&state.catalog, &state.routing, profile);
    // A key's allow-list narrows what `auto` may choose.
    if let Some(key) = key {
        for id in state.catalog.models.keys() {
            if !key.allows(id) {
                constraints
                    .unavailable
                    .entry(id.clone())
                    .or_insert_with(|| "not allowed for this key".into());
            }
        }
    }
    let (mut auto, adaptive) = decide(state, chat_body, constraints.clone(), profile).await?;
    // `explore_share` of answered `auto` requests try a prior model; none when it is 0.
    let share = state.routing.explore_share;
    if answered && share > 0.0 && rand::random::<f64>() < share {
        adaptive.explore(&mut auto, &constraints, rand::random::<f64>());
    }
    let chain = auto_chain(state, &auto, &constraints)?;
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
) -> Result<(AutoDecision, Arc<AdaptiveRouter>), ApiError> {
    let Some(adaptive) = state.adaptive.load_full() else {
        return Err(ApiError::classifier_unavailable(
            "Adaptive routing is unavailable: no classifier model is loaded. Name a model \
             explicitly, or set [classifier] model in the config.",
        ));
    };
    let body = std::mem::take(chat_body);
    let state_for_task = state.clone();
    let started = Instant::now();
    let span = crate::telemetry::child(
        "classify".into(),
        opentelemetry::trace::SpanKind::Internal,
        vec![opentelemetry::KeyValue::new(
            "triage.profile",
            profile.name(),
        )],
    );
    let router = adaptive.clone();
    // A bounded number of classifications at once: a burst queues here, on the async side,
    // instead of piling up blocking threads that share the same cores.
    let _slot = state
        .classify_slots
        .acquire()
        .await
        .map_err(|_| ApiError::internal("the classifier pool is closed"))?;
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
    if let Some(span) = span {
        match &result {
            Ok(auto) => {
                span.set("triage.difficulty", f64::from(auto.prediction.difficulty));
                span.set("triage.tool_need", f64::from(auto.prediction.tool_need));
                if let Some(chosen) = &auto.decision.chosen {
                    span.set("triage.chosen", chosen.model.clone());
                }
            }
            Err(error) => span.fail("classifier_error", error.to_string()),
        }
        span.end();
    }
    let auto = result.map_err(|e| ApiError::internal(format!("classifier failed: {e}")))?;
    Ok((auto, router))
}

/// The chosen model then the ranked fallbacks, or why nothing can serve the request.
fn auto_chain(
    state: &AppState,
    auto: &AutoDecision,
    constraints: &Constraints,
) -> Result<Vec<Arc<Model>>, ApiError> {
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
    let reasons = grouped_reasons(&decision.candidates);
    if blocked_by_deployment(&decision.candidates, constraints) {
        return Err(ApiError::no_routable_model(format!(
            "No model can answer {} on this router: {reasons}. Set a provider key, widen \
             [routing] models, or name a model explicitly.",
            decision.profile
        )));
    }
    let any_down = decision
        .candidates
        .iter()
        .any(|c| c.excluded.as_deref() == Some(CIRCUIT_OPEN));
    Err(ApiError::no_eligible_model(
        format!(
            "No model can serve this request under {}: {reasons}",
            decision.profile
        ),
        any_down,
    ))
}

/// Whether only this router's set-up (missing keys, `[routing] models`, open circuits) stands
/// between the request and an answer: every model the request itself allows is unavailable
/// or down. Then the fix is the operator's, not the client's.
fn blocked_by_deployment(candidates: &[Candidate], constraints: &Constraints) -> bool {
    let requested = |c: &&Candidate| {
        constraints
            .models
            .as_ref()
            .is_none_or(|allowed| allowed.contains(&c.model))
    };
    candidates.iter().filter(requested).all(|c| {
        constraints.unavailable.contains_key(&c.model)
            || c.excluded.as_deref() == Some(CIRCUIT_OPEN)
    })
}

/// Exclusion reasons with the models each applies to, one group per reason:
/// `no API key: set OPENAI_API_KEY (openai/gpt-4.1, openai/gpt-4o); circuit open (local/big)`.
fn grouped_reasons(candidates: &[Candidate]) -> String {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for c in candidates {
        let reason = c.excluded.as_deref().unwrap_or("?");
        match groups.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, models)) => models.push(&c.model),
            None => groups.push((reason, vec![&c.model])),
        }
    }
    groups
        .iter()
        .map(|(reason, models)| format!("{reason} ({})", models.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
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
    if auto.explored() {
        set_header(response, "x-triage-explore", "1");
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
    // A virtual key's route shows what that key would get (its allow-list applies).
    let (_, key) = state.caller(headers)?;
    let body = body.map_err(|rejection| body_rejection(&rejection, &state.limits))?;
    let mut request = ChatRequest::parse(&body)?;
    let routed = resolve_body(
        state,
        &request.requested,
        &request.constraints,
        &mut request.body,
        false,
        key.as_deref(),
    )
    .await?;
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
    let adaptive = state.adaptive.load_full();
    let abilities = adaptive.as_deref().map(AdaptiveRouter::abilities);
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
        "chosen": auto.decision.chosen.as_ref().map(|c| with_source(c, abilities)),
        "fallbacks": auto.decision.fallbacks.iter().map(|c| with_source(c, abilities)).collect::<Vec<_>>(),
        "candidates": auto.decision.candidates.iter().map(|c| with_source(c, abilities)).collect::<Vec<_>>(),
        "reason": auto.decision.reason,
        "chain": chain,
    }))
}

/// A candidate as `/v1/route` shows it: the policy's fields plus where its θ came from.
fn with_source(candidate: &Candidate, abilities: Option<&Abilities>) -> Value {
    let mut value = json!(candidate);
    let source = abilities.and_then(|a| a.get(&candidate.model));
    value["ability_source"] = json!(source.map(|a| a.source.to_string()));
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(model: &str, excluded: Option<&str>) -> Candidate {
        Candidate {
            model: model.into(),
            quality: Some(0.5),
            cost_usd: 0.0,
            excluded: excluded.map(String::from),
        }
    }

    #[test]
    fn only_deployment_reasons_make_a_request_unroutable() {
        let constraints = Constraints {
            unavailable: [("a".to_string(), "no API key: set A_KEY".to_string())].into(),
            ..Constraints::default()
        };
        let keyless_and_down = [
            candidate("a", Some("no API key: set A_KEY")),
            candidate("b", Some(CIRCUIT_OPEN)),
        ];
        assert!(blocked_by_deployment(&keyless_and_down, &constraints));
        let no_tools = [
            candidate("a", Some("no API key: set A_KEY")),
            candidate("b", Some("no tool calling")),
        ];
        assert!(
            !blocked_by_deployment(&no_tools, &constraints),
            "the request asks too much"
        );
        let narrowed = Constraints {
            models: Some(vec!["a".into()]),
            ..constraints.clone()
        };
        let others = [
            candidate("a", Some("no API key: set A_KEY")),
            candidate("b", Some("not in the request's models")),
        ];
        assert!(blocked_by_deployment(&others, &narrowed));
    }

    #[test]
    fn reasons_are_grouped_with_their_models() {
        let text = grouped_reasons(&[
            candidate("o/a", Some("no API key: set O_KEY")),
            candidate("l/b", Some(CIRCUIT_OPEN)),
            candidate("o/c", Some("no API key: set O_KEY")),
        ]);
        assert_eq!(text, "no API key: set O_KEY (o/a, o/c); circuit open (l/b)");
    }
}
