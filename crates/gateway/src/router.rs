//! Turns a request into the ordered chain of models to try; the one place where explicit and
//! adaptive routing meet.
//!
//! Explicit routing resolves the ids a client named (`model`, then OpenRouter-style `models`)
//! through the catalog and appends their configured fallbacks. Adaptive routing (`auto…`) asks
//! the classifier about the prompt and the policy for a ranked list.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::outcomes::AutoColumns;
use triage_core::abilities::{Abilities, AbilitySource};
use triage_core::catalog::{Catalog, Model};
use triage_core::classifier::{Classifier, ClassifierError, ClassifierInput, Prediction};
use triage_core::config::RoutingConfig;
use triage_core::policy::{
    self, Constraints, Decision, ModelView, Needs, Profile, PromptView, Targets,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("no model requested")]
    NoModel,
    #[error("unknown model `{0}`")]
    UnknownModel(String),
}

/// The requested models in order, then the configured fallbacks of each, breadth first, each
/// model once.
pub fn explicit_chain(
    catalog: &Catalog,
    requested: &[String],
) -> Result<Vec<Arc<Model>>, RouteError> {
    if requested.is_empty() {
        return Err(RouteError::NoModel);
    }
    let mut chain: Vec<Arc<Model>> = Vec::new();
    for id in requested {
        let model = catalog
            .model(id)
            .ok_or_else(|| RouteError::UnknownModel(id.clone()))?;
        push_unique(&mut chain, model);
    }
    let mut next = 0;
    while next < chain.len() {
        for fallback in chain[next].fallbacks.clone() {
            if let Some(model) = catalog.model(&fallback) {
                push_unique(&mut chain, model);
            }
        }
        next += 1;
    }
    Ok(chain)
}

fn push_unique(chain: &mut Vec<Arc<Model>>, model: &Arc<Model>) {
    if !chain.iter().any(|m| m.id == model.id) {
        chain.push(model.clone());
    }
}

/// The classifier and every catalog model's abilities in its skill order.
pub struct AdaptiveRouter {
    pub classifier: Classifier,
    abilities: Abilities,
    targets: Targets,
}

/// What adaptive routing decided for one request, and why.
#[derive(Debug, Clone, Serialize)]
pub struct AutoDecision {
    pub prediction: Prediction,
    /// Skill name → weight (g(x) with tool need folded in).
    pub skills: Vec<(String, f32)>,
    pub top_skill: String,
    pub decision: Decision,
}

/// Appended to the decision's profile when the request explores: the outcome log's `profile`
/// column then tells exploration traffic apart (`auto explore`).
const EXPLORE_MARK: &str = " explore";

impl AutoDecision {
    /// Whether this request was sent to a prior model to learn its abilities.
    pub fn explored(&self) -> bool {
        self.decision.profile.ends_with(EXPLORE_MARK)
    }
}

impl AdaptiveRouter {
    pub fn new(classifier: Classifier, catalog: &Catalog, targets: Targets) -> AdaptiveRouter {
        let abilities = Abilities::resolve(catalog, &classifier.metadata);
        AdaptiveRouter {
            classifier,
            abilities,
            targets,
        }
    }

    /// Models with abilities: every model of the catalog, measured or prior.
    pub fn routable(&self) -> usize {
        self.abilities.len()
    }

    /// θ and its source for every catalog model.
    pub fn abilities(&self) -> &Abilities {
        &self.abilities
    }

    /// Classifies the prompt and ranks the catalog's models. CPU-bound: call it off the async
    /// runtime.
    pub fn decide(
        &self,
        catalog: &Catalog,
        body: &Map<String, Value>,
        profile: Profile,
        constraints: &Constraints,
        healthy: impl Fn(&str) -> bool,
    ) -> Result<AutoDecision, ClassifierError> {
        let input = ClassifierInput::from_chat(body);
        let prediction = self.classifier.predict_one(&input)?;
        let names = self.classifier.skills();
        let mix = prediction.skill_mix(names);
        let view = PromptView {
            difficulty: prediction.difficulty,
            skill_mix: mix.clone(),
        };
        let needs = needs_of(body, &input, prediction.tokens);
        let options: Vec<ModelView> = catalog
            .models
            .values()
            .map(|model| ModelView {
                model,
                abilities: self.abilities.theta(&model.id),
                healthy: healthy(&model.id),
            })
            .collect();
        let decision = policy::decide(&options, &view, &needs, profile, constraints, self.targets);
        Ok(AutoDecision {
            top_skill: prediction.top_skill(names).to_string(),
            skills: names.iter().cloned().zip(mix).collect(),
            prediction,
            decision,
        })
    }

    /// Sends the request to an eligible model whose θ is still a prior, so that its judged
    /// answer can teach the router about it; see [`explore`].
    pub fn explore(
        &self,
        auto: &mut AutoDecision,
        constraints: &Constraints,
        pick: f64,
    ) -> Option<String> {
        let is_prior = |id: &str| {
            self.abilities
                .get(id)
                .is_some_and(|a| a.source == AbilitySource::Prior)
        };
        explore(auto, constraints, is_prior, pick)
    }
}

/// Sends the request to an eligible model whose θ is a prior (`is_prior`); the policy's own
/// choice becomes the first fallback. Only models the policy left eligible (the request's
/// models, capabilities, context, health, `max_cost_usd`) and predicted at or above the
/// request's `min_quality` qualify; `pick` in [0, 1) chooses among them uniformly. Returns the
/// model explored, if any.
pub fn explore(
    auto: &mut AutoDecision,
    constraints: &Constraints,
    is_prior: impl Fn(&str) -> bool,
    pick: f64,
) -> Option<String> {
    let floor = constraints.min_quality.unwrap_or(0.0);
    let unmeasured: Vec<&str> = auto
        .decision
        .candidates
        .iter()
        .filter(|c| c.excluded.is_none() && c.quality.unwrap_or(0.0) >= floor)
        .map(|c| c.model.as_str())
        .filter(|id| is_prior(id))
        .collect();
    if unmeasured.is_empty() {
        return None;
    }
    let index = ((pick * unmeasured.len() as f64) as usize).min(unmeasured.len() - 1);
    let model = unmeasured[index].to_string();
    let usual = auto.decision.chosen.as_ref().map(|c| c.model.clone());
    if !policy::promote(&mut auto.decision, &model) {
        return None;
    }
    auto.decision.profile.push_str(EXPLORE_MARK);
    auto.decision.reason = match usual {
        Some(usual) if usual != model => format!(
            "exploring {model}, whose abilities are still a prior; the usual choice {usual} is \
             the first fallback"
        ),
        _ => format!("exploring {model}, whose abilities are still a prior"),
    };
    Some(model)
}

/// Exclusion reasons set by [`unavailable`].
pub const NOT_IN_ROUTING_MODELS: &str = "not in [routing] models";
pub const NO_API_KEY: &str = "no API key: set ";

/// The models `auto` cannot choose under `profile` whatever the request, with why: outside
/// `[routing] models` (or the profile's list), or their provider needs an API key that is not
/// set. A provider that names no key variable (a local server) needs none.
pub fn unavailable(
    catalog: &Catalog,
    routing: &RoutingConfig,
    profile: Profile,
) -> HashMap<String, String> {
    catalog
        .models
        .values()
        .filter_map(|model| {
            let reason = if !routing.allows(profile, &model.id) {
                NOT_IN_ROUTING_MODELS.to_string()
            } else {
                format!("{NO_API_KEY}{}", catalog.missing_key(model)?)
            };
            Some((model.id.clone(), reason))
        })
        .collect()
}

/// The catalog entry of `model` as `auto` sees it: θ per skill and its source, family, whether
/// its provider's key is present, and whether `[routing] models` admits it for `auto`. The
/// `triage` field of `GET /v1/models` and of each model in `triage models --json`.
pub fn describe(
    catalog: &Catalog,
    model: &Model,
    abilities: Option<&Abilities>,
    routing: &RoutingConfig,
) -> Value {
    let ability = abilities.and_then(|a| Some((a, a.get(&model.id)?)));
    let theta = ability.map(|(a, ability)| {
        a.skills
            .iter()
            .zip(&ability.theta)
            .map(|(skill, theta)| (skill.clone(), json!(theta)))
            .collect::<Map<String, Value>>()
    });
    let provider = catalog.provider(&model.provider);
    json!({
        "family": model.family,
        "abilities": theta,
        "ability_source": ability.map(|(_, a)| a.source.to_string()),
        "api_key_env": provider.and_then(|p| p.api_key_env.clone()),
        "key_present": catalog.missing_key(model).is_none(),
        "in_routing_models": routing.allows(Profile::Balanced, &model.id),
    })
}

/// What the request demands of a model: tools, images, JSON mode, room in the context.
pub fn needs_of(
    body: &Map<String, Value>,
    input: &ClassifierInput,
    classifier_tokens: usize,
) -> Needs {
    let has_images = body
        .get("messages")
        .and_then(Value::as_array)
        .is_some_and(|messages| {
            messages.iter().any(|m| {
                m.get("content")
                    .and_then(Value::as_array)
                    .is_some_and(|parts| {
                        parts
                            .iter()
                            .any(|p| p.get("type").and_then(Value::as_str) == Some("image_url"))
                    })
            })
        });
    let json = body
        .get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t != "text");
    let max_output_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64));
    Needs {
        tools: input.tools_offered,
        vision: has_images,
        json,
        prompt_tokens: estimate_prompt_tokens(body).max(classifier_tokens as u64),
        max_output_tokens,
    }
}

/// A provider-independent estimate of prompt tokens: about four characters a token.
fn estimate_prompt_tokens(body: &Map<String, Value>) -> u64 {
    let chars = body
        .get("messages")
        .map_or(0, |m| m.to_string().chars().count());
    (chars / 4) as u64
}

impl AutoDecision {
    /// The decision as the outcome log stores it.
    pub fn log_columns(&self) -> AutoColumns {
        let auto = self;
        let skills: Map<String, Value> = auto
            .skills
            .iter()
            .map(|(name, weight)| (name.clone(), json!(weight)))
            .collect();
        AutoColumns {
            profile: auto.decision.profile.clone(),
            difficulty: f64::from(auto.prediction.difficulty),
            tool_need: f64::from(auto.prediction.tool_need),
            skills: Value::Object(skills).to_string(),
            candidates: serde_json::to_string(&auto.decision.candidates).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use triage_core::config::Config;
    use triage_core::policy::Candidate;

    fn catalog() -> Catalog {
        let text = r#"
            [[providers]]
            name = "p"
            kind = "openai"
            base_url = "http://127.0.0.1:1/v1"
            [[models]]
            id = "p/a"
            input_per_mtok = 1
            output_per_mtok = 1
            context = 100
            provider = "p"
            fallbacks = ["p/b"]
            [[models]]
            id = "p/b"
            input_per_mtok = 1
            output_per_mtok = 1
            context = 100
            provider = "p"
            fallbacks = ["p/c", "p/a"]
            [[models]]
            id = "p/c"
            input_per_mtok = 1
            output_per_mtok = 1
            context = 100
            provider = "p"
        "#;
        let config = Config::parse(text, Path::new("t.toml")).unwrap();
        Catalog::build(&config, Path::new("t.toml"), |_| None).unwrap()
    }

    fn ids(chain: &[Arc<Model>]) -> Vec<&str> {
        chain.iter().map(|m| m.id.as_str()).collect()
    }

    #[test]
    fn fallbacks_follow_transitively_without_repeats() {
        let c = catalog();
        assert_eq!(
            ids(&explicit_chain(&c, &["p/a".into()]).unwrap()),
            ["p/a", "p/b", "p/c"]
        );
    }

    #[test]
    fn requested_models_come_before_configured_fallbacks() {
        let c = catalog();
        let chain = explicit_chain(&c, &["p/c".into(), "p/a".into()]).unwrap();
        assert_eq!(ids(&chain), ["p/c", "p/a", "p/b"]);
    }

    #[test]
    fn unavailable_models_name_the_missing_key_or_the_routing_list() {
        let c = catalog();
        let all = unavailable(&c, &RoutingConfig::default(), Profile::Balanced);
        assert!(
            !all.contains_key("p/a"),
            "a provider without a key variable needs none"
        );
        assert_eq!(all["openai/gpt-4o-mini"], "no API key: set OPENAI_API_KEY");
        assert_eq!(
            all["anthropic/claude-haiku-4-5"],
            "no API key: set ANTHROPIC_API_KEY"
        );
        let routing = RoutingConfig {
            models: vec!["p/*".into()],
            profile_models: [("auto:best".to_string(), vec!["p/a".to_string()])].into(),
            ..RoutingConfig::default()
        };
        let balanced = unavailable(&c, &routing, Profile::Balanced);
        assert!(!balanced.contains_key("p/b"));
        assert_eq!(balanced["openai/gpt-4o-mini"], "not in [routing] models");
        let best = unavailable(&c, &routing, Profile::Best);
        assert_eq!(
            best["p/b"], "not in [routing] models",
            "the profile's own list"
        );
        assert!(!best.contains_key("p/a"));
    }

    fn candidate(model: &str, quality: f32, excluded: Option<&str>) -> Candidate {
        Candidate {
            model: model.into(),
            quality: Some(quality),
            cost_usd: 0.001,
            excluded: excluded.map(String::from),
        }
    }

    fn auto_decision(candidates: Vec<Candidate>, chosen: &str) -> AutoDecision {
        let chosen = candidates.iter().find(|c| c.model == chosen).cloned();
        AutoDecision {
            prediction: Prediction {
                difficulty: 0.0,
                skills: vec![1.0],
                tool_need: 0.0,
                tokens: 3,
                embedding: vec![],
            },
            skills: vec![("code".into(), 1.0)],
            top_skill: "code".into(),
            decision: Decision {
                profile: "auto".into(),
                target: 0.5,
                chosen,
                fallbacks: vec![],
                candidates,
                reason: "cheapest".into(),
            },
        }
    }

    #[test]
    fn exploration_picks_an_eligible_prior_model_and_keeps_the_usual_choice_as_fallback() {
        let candidates = vec![
            candidate("measured", 0.9, None),
            candidate("prior-a", 0.6, None),
            candidate("prior-b", 0.4, None),
            candidate("prior-dear", 0.9, Some("over max_cost_usd")),
        ];
        let is_prior = |id: &str| id.starts_with("prior");
        let none = Constraints::default();
        let mut auto = auto_decision(candidates.clone(), "measured");
        assert_eq!(
            explore(&mut auto, &none, is_prior, 0.0).as_deref(),
            Some("prior-a")
        );
        assert!(auto.explored());
        assert_eq!(auto.decision.profile, "auto explore");
        assert_eq!(auto.decision.chosen.as_ref().unwrap().model, "prior-a");
        assert_eq!(auto.decision.fallbacks[0].model, "measured");
        assert!(
            auto.decision.reason.contains("exploring prior-a"),
            "{}",
            auto.decision.reason
        );

        let mut auto = auto_decision(candidates.clone(), "measured");
        assert_eq!(
            explore(&mut auto, &none, is_prior, 0.99).as_deref(),
            Some("prior-b"),
            "never the excluded prior-dear"
        );
        let demanding = Constraints {
            min_quality: Some(0.5),
            ..Constraints::default()
        };
        let mut auto = auto_decision(candidates.clone(), "measured");
        assert_eq!(
            explore(&mut auto, &demanding, is_prior, 0.99).as_deref(),
            Some("prior-a"),
            "only models predicted at or above min_quality"
        );
        let mut auto = auto_decision(candidates[..1].to_vec(), "measured");
        assert_eq!(
            explore(&mut auto, &none, is_prior, 0.5),
            None,
            "nothing to explore"
        );
        assert!(!auto.explored());
        assert_eq!(auto.decision.chosen.as_ref().unwrap().model, "measured");
    }

    #[test]
    fn unknown_models_are_errors() {
        let c = catalog();
        assert_eq!(
            explicit_chain(&c, &["p/a".into(), "x/y".into()]).unwrap_err(),
            RouteError::UnknownModel("x/y".into())
        );
        assert_eq!(explicit_chain(&c, &[]).unwrap_err(), RouteError::NoModel);
    }

    #[test]
    fn an_adaptive_decision_becomes_columns() {
        let candidate = |model: &str, quality, cost_usd| Candidate {
            model: model.into(),
            quality: Some(quality),
            cost_usd,
            excluded: None,
        };
        let auto = AutoDecision {
            prediction: Prediction {
                difficulty: 0.5,
                skills: vec![0.75, 0.25],
                tool_need: 0.125,
                tokens: 7,
                embedding: Vec::new(),
            },
            skills: vec![("code".into(), 0.75), ("math".into(), 0.25)],
            top_skill: "code".into(),
            decision: Decision {
                profile: "auto".into(),
                target: 0.5,
                chosen: Some(candidate("a/cheap", 0.5, 0.001)),
                fallbacks: vec![candidate("a/strong", 0.75, 0.01)],
                candidates: vec![
                    candidate("a/cheap", 0.5, 0.001),
                    candidate("a/strong", 0.75, 0.01),
                ],
                reason: "cheapest above target".into(),
            },
        };
        let columns = auto.log_columns();
        assert_eq!(columns.profile, "auto");
        assert_eq!(columns.difficulty, 0.5);
        assert_eq!(columns.tool_need, 0.125);
        let skills: Value = serde_json::from_str(&columns.skills).unwrap();
        assert_eq!(skills, json!({"code": 0.75, "math": 0.25}));
        let candidates: Value = serde_json::from_str(&columns.candidates).unwrap();
        assert_eq!(candidates[1]["model"], "a/strong");
        assert_eq!(candidates[1]["quality"], 0.75);
        assert_eq!(candidates[0]["cost_usd"], 0.001);
        let outcome = crate::outcomes::Outcome {
            auto: Some(columns),
            ..crate::outcomes::Outcome::default()
        };
        assert_eq!(outcome.route(), "auto");
        assert_eq!(crate::outcomes::Outcome::default().route(), "explicit");
    }
}
