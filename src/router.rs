//! Turns a request into the ordered chain of models to try; the one place where explicit and
//! adaptive routing meet.
//!
//! Explicit routing resolves the ids a client named (`model`, then OpenRouter-style `models`)
//! through the catalog and appends their configured fallbacks. Adaptive routing (`auto…`) asks
//! the classifier about the prompt and the policy for a ranked list.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::catalog::{Catalog, Model};
use crate::classifier::{AbilityMap, Classifier, ClassifierError, ClassifierInput, Prediction};
use crate::policy::{self, Constraints, Decision, ModelView, Needs, Profile, PromptView, Targets};

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
    abilities: HashMap<String, Vec<f32>>,
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

fn logit(p: f32) -> f32 {
    let p = p.clamp(0.01, 0.99);
    (p / (1.0 - p)).ln()
}

impl AdaptiveRouter {
    pub fn new(classifier: Classifier, catalog: &Catalog, targets: Targets) -> AdaptiveRouter {
        let skills = classifier.skills().to_vec();
        let maps = classifier.metadata.maps();
        let abilities = catalog
            .models
            .values()
            .filter_map(|m| {
                let trained = classifier.metadata.abilities.get(&m.id);
                abilities_of(m, &skills, trained, &maps).map(|a| (m.id.clone(), a))
            })
            .collect();
        AdaptiveRouter {
            classifier,
            abilities,
            targets,
        }
    }

    /// Models with abilities: only these can be chosen by `auto`.
    pub fn routable(&self) -> usize {
        self.abilities.len()
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
                abilities: self.abilities.get(&model.id).map(Vec::as_slice),
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
}

/// θ for a model in the classifier's skill order: explicit abilities (missing skills take the
/// mean of those given), else the θ the model directory learned for this model id (from the
/// outcome log: `train --from-log`), else its public benchmark score through the first of the
/// model directory's fitted maps it has a score for, else none.
///
/// Without a fitted map for the model's benchmark, a documented placeholder applies: θ_k = logit(score) + 1 for every
/// skill, from GPQA Diamond where known, else MMLU-Pro — it ranks models by one public number
/// and puts a 50%-scoring model at 50% predicted quality on a prompt of difficulty 1.
fn abilities_of(
    model: &Model,
    skills: &[String],
    trained: Option<&Vec<f32>>,
    maps: &[&AbilityMap],
) -> Option<Vec<f32>> {
    if let Some(given) = model.abilities.as_ref().filter(|a| !a.is_empty()) {
        let mean = given.values().sum::<f32>() / given.len() as f32;
        return Some(
            skills
                .iter()
                .map(|s| *given.get(s).unwrap_or(&mean))
                .collect(),
        );
    }
    if let Some(theta) = trained.filter(|t| t.len() == skills.len()) {
        return Some(theta.clone());
    }
    // The first map whose benchmark the model has a score for.
    let mapped = maps.iter().find_map(|map| {
        let score = match map.benchmark.as_str() {
            "gpqa" => model.gpqa,
            "mmlu_pro" => model.mmlu_pro,
            _ => None,
        }?;
        let x = logit(score);
        Some(
            map.intercept
                .iter()
                .zip(&map.slope)
                .map(|(a, b)| a + b * x)
                .collect(),
        )
    });
    // A model without any fitted map's benchmark falls back to the placeholder.
    mapped.or_else(|| {
        let value = logit(model.gpqa.or(model.mmlu_pro)?) + 1.0;
        Some(vec![value; skills.len()])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

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
    fn abilities_come_from_explicit_values_then_learned_then_the_fitted_map_then_the_placeholder() {
        let c = catalog();
        let skills: Vec<String> = ["code", "math"].map(String::from).to_vec();
        let map = AbilityMap {
            benchmark: "mmlu_pro".into(),
            intercept: vec![1.0, 2.0],
            slope: vec![1.0, 0.0],
            fit: serde_json::Value::Null,
        };
        let mut model = (**c.model("p/a").unwrap()).clone();
        assert_eq!(
            abilities_of(&model, &skills, None, &[&map]),
            None,
            "no score, no abilities"
        );
        model.gpqa = Some(0.5);
        assert_eq!(
            abilities_of(&model, &skills, None, &[&map]),
            Some(vec![1.0, 1.0]),
            "placeholder"
        );
        model.mmlu_pro = Some(0.5);
        assert_eq!(
            abilities_of(&model, &skills, None, &[&map]),
            Some(vec![1.0, 2.0]),
            "fitted map"
        );
        let gpqa_map = AbilityMap {
            benchmark: "gpqa".into(),
            intercept: vec![0.0, 0.0],
            slope: vec![2.0, 2.0],
            fit: serde_json::Value::Null,
        };
        let mut gpqa_only = model.clone();
        gpqa_only.mmlu_pro = None;
        assert_eq!(
            abilities_of(&gpqa_only, &skills, None, &[&map, &gpqa_map]),
            Some(vec![0.0, 0.0]),
            "the first map it has a score for"
        );
        assert_eq!(
            abilities_of(&model, &skills, None, &[&map, &gpqa_map]),
            Some(vec![1.0, 2.0]),
            "maps in order"
        );
        let learned = vec![0.5, -0.5];
        assert_eq!(
            abilities_of(&model, &skills, Some(&learned), &[&map]),
            Some(learned.clone()),
            "learned from the log for this id"
        );
        model.abilities = Some([("code".to_string(), 3.0)].into_iter().collect());
        assert_eq!(
            abilities_of(&model, &skills, None, &[&map]),
            Some(vec![3.0, 3.0]),
            "explicit"
        );
        assert_eq!(
            abilities_of(&model, &skills, Some(&learned), &[&map]),
            Some(vec![3.0, 3.0]),
            "explicit beats learned"
        );
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
}
