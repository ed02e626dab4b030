//! The cost-quality policy: from the classifier's view of a prompt, the catalog and the
//! request's needs, a ranked list of models. Pure functions, no I/O, so every decision can be
//! tested and explained.
//!
//! Predicted quality is σ(⟨θ_m, g(x)⟩ − b(x)); cost is catalog prices × prompt tokens and an
//! expected output length. Hard filters go first (capabilities, context, health, allowed
//! models), then the cheapest candidate whose quality meets the profile's target wins, else the
//! best; the others, ranked, are the fallbacks.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::catalog::Model;
pub use crate::profile::{Profile, Targets};

/// What the request needs from a model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Needs {
    pub tools: bool,
    pub vision: bool,
    pub json: bool,
    pub prompt_tokens: u64,
    /// Output tokens the request allows (`max_tokens`), if it says.
    pub max_output_tokens: Option<u64>,
}

/// The request's own narrowing (`"triage": {...}` in the body), and the models this deployment
/// rules out whatever the request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Constraints {
    pub min_quality: Option<f32>,
    pub max_cost_usd: Option<f64>,
    /// Only these model ids (request's list).
    pub models: Option<Vec<String>>,
    /// Models that cannot be chosen here, with why: no API key for their provider, or outside
    /// `[routing] models`. Set by the server from its configuration, never by the client.
    pub unavailable: HashMap<String, String>,
}

/// One model as the policy sees it.
pub struct ModelView<'a> {
    pub model: &'a Model,
    /// θ in the classifier's skill order; `None` when the model has no abilities.
    pub abilities: Option<&'a [f32]>,
    /// False when its circuit breaker is open.
    pub healthy: bool,
}

/// The classifier's view of the prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptView {
    pub difficulty: f32,
    /// g(x) with tool need folded in, in the same order as the abilities.
    pub skill_mix: Vec<f32>,
}

/// A model considered, with its prediction and why it was left out, if it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub model: String,
    pub quality: Option<f32>,
    pub cost_usd: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub profile: String,
    /// The quality the choice had to reach.
    pub target: f32,
    pub chosen: Option<Candidate>,
    pub fallbacks: Vec<Candidate>,
    /// Every model considered, excluded ones included.
    pub candidates: Vec<Candidate>,
    pub reason: String,
}

/// Fallbacks kept after the choice.
const MAX_FALLBACKS: usize = 3;
/// The exclusion of a model whose circuit breaker is open.
pub const CIRCUIT_OPEN: &str = "circuit open";
/// Expected output tokens when the request does not cap them lower.
pub const DEFAULT_EXPECTED_OUTPUT: u64 = 350;

/// σ(⟨θ, g⟩ − b): `quality::quality`, the one function serve, eval and train share.
pub fn predicted_quality(abilities: &[f32], prompt: &PromptView) -> f32 {
    crate::quality::quality(abilities, &prompt.skill_mix, prompt.difficulty) as f32
}

/// Expected US$ for this request on `model`.
pub fn expected_cost(model: &Model, needs: &Needs) -> f64 {
    let output = needs
        .max_output_tokens
        .unwrap_or(DEFAULT_EXPECTED_OUTPUT)
        .min(DEFAULT_EXPECTED_OUTPUT);
    (needs.prompt_tokens as f64 * model.input_per_mtok + output as f64 * model.output_per_mtok)
        / 1e6
}

/// Why `option` cannot take this request, if it cannot.
fn exclusion(
    option: &ModelView,
    needs: &Needs,
    constraints: &Constraints,
    cost: f64,
) -> Option<String> {
    let model = option.model;
    let needed_context = needs.prompt_tokens + needs.max_output_tokens.unwrap_or(0);
    let reason = if constraints
        .models
        .as_ref()
        .is_some_and(|allowed| !allowed.contains(&model.id))
    {
        "not in the request's models".to_string()
    } else if let Some(reason) = constraints.unavailable.get(&model.id) {
        reason.clone()
    } else if option.abilities.is_none() {
        "no ability estimate".into()
    } else if needs.tools && !model.tools {
        "no tool calling".into()
    } else if needs.vision && !model.vision {
        "no image input".into()
    } else if needs.json && !model.json {
        "no JSON mode".into()
    } else if needed_context > u64::from(model.context) {
        format!("context {} < {needed_context} tokens needed", model.context)
    } else if !option.healthy {
        CIRCUIT_OPEN.into()
    } else if constraints.max_cost_usd.is_some_and(|max| cost > max) {
        "over max_cost_usd".into()
    } else {
        return None;
    };
    Some(reason)
}

/// Ranks `options` for a prompt.
pub fn decide(
    options: &[ModelView],
    prompt: &PromptView,
    needs: &Needs,
    profile: Profile,
    constraints: &Constraints,
    targets: Targets,
) -> Decision {
    let candidates: Vec<Candidate> = options
        .iter()
        .map(|option| {
            let cost_usd = expected_cost(option.model, needs);
            Candidate {
                model: option.model.id.clone(),
                quality: option.abilities.map(|a| predicted_quality(a, prompt)),
                cost_usd,
                excluded: exclusion(option, needs, constraints, cost_usd),
            }
        })
        .collect();
    let eligible: Vec<&Candidate> = candidates.iter().filter(|c| c.excluded.is_none()).collect();
    let best_quality = eligible
        .iter()
        .filter_map(|c| c.quality)
        .fold(0.0f32, f32::max);
    let target = match profile {
        Profile::Balanced => best_quality * targets.balanced,
        Profile::Cheap => best_quality * targets.cheap,
        Profile::Best => best_quality,
        Profile::Floor(q) => q,
    }
    .max(constraints.min_quality.unwrap_or(0.0));
    let ranked = rank(&eligible, target);
    let reason = explain(
        ranked.first().copied(),
        target,
        best_quality,
        eligible.len(),
        candidates.len(),
    );
    Decision {
        profile: profile.name(),
        target,
        chosen: ranked.first().map(|c| (*c).clone()),
        fallbacks: ranked
            .iter()
            .skip(1)
            .take(MAX_FALLBACKS)
            .map(|c| (*c).clone())
            .collect(),
        candidates,
        reason,
    }
}

/// The model a relative profile with quality target `fraction` (of the best eligible
/// predicted quality) picks among already priced and filtered candidates: what `decide` would
/// choose at another target, without classifying the prompt again.
pub fn choose_at(candidates: &[Candidate], fraction: f32) -> Option<&Candidate> {
    let eligible: Vec<&Candidate> = candidates.iter().filter(|c| c.excluded.is_none()).collect();
    let best = eligible
        .iter()
        .filter_map(|c| c.quality)
        .fold(0.0f32, f32::max);
    rank(&eligible, best * fraction).first().copied()
}

/// Makes the eligible candidate `model` the choice, with the policy's own choice first among the
/// fallbacks: exploration sends a request to a model it wants to learn about while the usual
/// answer stays one failure away. False (and nothing changed) if `model` is not eligible.
pub fn promote(decision: &mut Decision, model: &str) -> bool {
    let Some(candidate) = decision
        .candidates
        .iter()
        .find(|c| c.model == model && c.excluded.is_none())
        .cloned()
    else {
        return false;
    };
    let previous = decision.chosen.replace(candidate);
    decision.fallbacks.retain(|c| c.model != model);
    if let Some(previous) = previous.filter(|p| p.model != model) {
        decision.fallbacks.insert(0, previous);
    }
    decision.fallbacks.truncate(MAX_FALLBACKS);
    true
}

/// Those meeting the target, cheapest first (ties: better quality), then the rest, best first.
/// The eligible candidates in the order of `quality::preference` at `target` (the choice
/// first), ties by model id.
fn rank<'a>(eligible: &[&'a Candidate], target: f32) -> Vec<&'a Candidate> {
    let option = |c: &Candidate| (f64::from(c.quality.unwrap_or(0.0)), c.cost_usd);
    let mut ranked = eligible.to_vec();
    ranked.sort_by(|a, b| {
        crate::quality::preference(option(a), option(b), f64::from(target))
            .then(a.model.cmp(&b.model))
    });
    ranked
}

fn explain(
    chosen: Option<&Candidate>,
    target: f32,
    best: f32,
    eligible: usize,
    total: usize,
) -> String {
    match chosen {
        None => format!("no eligible model: all {total} were excluded"),
        Some(c) if c.quality.unwrap_or(0.0) >= target => format!(
            "cheapest of {eligible} eligible models predicted at or above quality {target:.2} \
             (best {best:.2})"
        ),
        Some(_) => format!(
            "no eligible model reaches quality {target:.2}: the best predicted one was chosen"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Timeouts;
    use proptest::prelude::*;
    use std::time::Duration;

    fn model(id: &str, input: f64, output: f64) -> Model {
        Model {
            id: id.into(),
            provider: "p".into(),
            upstream: id.into(),
            input_per_mtok: input,
            output_per_mtok: output,
            cached_input_per_mtok: None,
            cache_write_per_mtok: None,
            context: 100_000,
            max_output: None,
            tools: true,
            vision: false,
            json: true,
            fallbacks: vec![],
            price_date: None,
            price_source: None,
            timeouts: Timeouts {
                connect: Duration::from_secs(1),
                first_byte: Duration::from_secs(1),
                total: Duration::from_secs(1),
            },
            mmlu_pro: None,
            mmlu_pro_source: None,
            gpqa: None,
            gpqa_source: None,
            abilities: None,
            ability_source: None,
            family: "p".into(),
        }
    }

    fn prompt(difficulty: f32) -> PromptView {
        PromptView {
            difficulty,
            skill_mix: vec![1.0, 0.0],
        }
    }

    fn needs() -> Needs {
        Needs {
            prompt_tokens: 1000,
            ..Needs::default()
        }
    }

    struct Table {
        models: Vec<Model>,
        abilities: Vec<Vec<f32>>,
    }

    impl Table {
        fn three() -> Table {
            Table {
                models: vec![
                    model("cheap", 0.1, 0.4),
                    model("mid", 1.0, 4.0),
                    model("top", 10.0, 40.0),
                ],
                abilities: vec![vec![0.0, 0.0], vec![2.0, 0.0], vec![4.0, 0.0]],
            }
        }

        /// `decide` over the table for a prompt of `difficulty`, default needs and targets.
        fn decide(&self, difficulty: f32, profile: Profile, constraints: &Constraints) -> Decision {
            decide(
                &self.options(),
                &prompt(difficulty),
                &needs(),
                profile,
                constraints,
                Targets::default(),
            )
        }

        fn options(&self) -> Vec<ModelView<'_>> {
            self.models
                .iter()
                .zip(&self.abilities)
                .map(|(model, a)| ModelView {
                    model,
                    abilities: Some(a),
                    healthy: true,
                })
                .collect()
        }
    }

    fn chosen(d: &Decision) -> &str {
        &d.chosen.as_ref().unwrap().model
    }

    #[test]
    fn profiles_parse() {
        assert_eq!(Profile::parse("auto"), Some(Ok(Profile::Balanced)));
        assert_eq!(Profile::parse("auto:cheap"), Some(Ok(Profile::Cheap)));
        assert_eq!(Profile::parse("auto:best"), Some(Ok(Profile::Best)));
        assert_eq!(Profile::parse("auto:q0.8"), Some(Ok(Profile::Floor(0.8))));
        assert!(Profile::parse("auto:q7").unwrap().is_err());
        assert!(Profile::parse("auto:fast").unwrap().is_err());
        assert_eq!(Profile::parse("openai/gpt-4o"), None);
    }

    #[test]
    fn easy_prompts_go_cheap_and_hard_ones_up() {
        let t = Table::three();
        let easy = t.decide(-6.0, Profile::Balanced, &Constraints::default());
        assert_eq!(chosen(&easy), "cheap");
        let hard = t.decide(3.0, Profile::Balanced, &Constraints::default());
        assert_eq!(chosen(&hard), "top");
        let best = t.decide(-6.0, Profile::Best, &Constraints::default());
        assert_eq!(chosen(&best), "top");
        assert_eq!(best.fallbacks.len(), 2);
    }

    #[test]
    fn choosing_again_at_another_target_matches_deciding_at_it() {
        let t = Table::three();
        let options = t.options();
        for difficulty in [-6.0, -1.0, 0.5, 1.5, 3.0] {
            for fraction in [0.5, 0.8, 0.95, 1.0] {
                let targets = Targets {
                    balanced: fraction,
                    cheap: 0.8,
                };
                let decided = decide(
                    &options,
                    &prompt(difficulty),
                    &needs(),
                    Profile::Balanced,
                    &Constraints::default(),
                    targets,
                );
                let again = choose_at(&decided.candidates, fraction);
                assert_eq!(
                    again,
                    decided.chosen.as_ref(),
                    "b={difficulty} t={fraction}"
                );
            }
        }
    }

    #[test]
    fn floor_falls_back_to_the_best_when_nothing_reaches_it() {
        let t = Table::three();
        let d = t.decide(10.0, Profile::Floor(0.9), &Constraints::default());
        assert_eq!(chosen(&d), "top");
        assert!(d.reason.contains("best predicted"));
    }

    #[test]
    fn filters_are_reported_and_respected() {
        let mut t = Table::three();
        t.models[2].tools = false;
        t.models[1].context = 500;
        let mut options = t.options();
        options[0].healthy = false;
        let needs = Needs {
            tools: true,
            prompt_tokens: 1000,
            ..Needs::default()
        };
        let d = decide(
            &options,
            &prompt(0.0),
            &needs,
            Profile::Best,
            &Constraints::default(),
            Targets::default(),
        );
        assert!(d.chosen.is_none());
        let reasons: Vec<_> = d
            .candidates
            .iter()
            .map(|c| c.excluded.clone().unwrap())
            .collect();
        assert_eq!(
            reasons,
            [
                "circuit open",
                "context 500 < 1000 tokens needed",
                "no tool calling"
            ]
        );
    }

    #[test]
    fn request_constraints_narrow_the_choice() {
        let t = Table::three();
        let constraints = Constraints {
            models: Some(vec!["cheap".into(), "mid".into()]),
            ..Constraints::default()
        };
        let d = t.decide(3.0, Profile::Best, &constraints);
        assert_eq!(chosen(&d), "mid");
        let capped = Constraints {
            max_cost_usd: Some(0.001),
            ..Constraints::default()
        };
        let d = t.decide(3.0, Profile::Best, &capped);
        assert_eq!(
            chosen(&d),
            "cheap",
            "only the cheap model fits a tenth of a cent"
        );
        let demanding = Constraints {
            min_quality: Some(0.99),
            ..Constraints::default()
        };
        let d = t.decide(-6.0, Profile::Cheap, &demanding);
        assert_eq!(d.target, 0.99);
    }

    #[test]
    fn unavailable_models_are_excluded_with_their_reason() {
        let t = Table::three();
        let constraints = Constraints {
            unavailable: [("top".to_string(), "no API key: set TOP_KEY".to_string())].into(),
            ..Constraints::default()
        };
        let d = t.decide(3.0, Profile::Best, &constraints);
        assert_eq!(chosen(&d), "mid", "the best model cannot be called");
        let top = d.candidates.iter().find(|c| c.model == "top").unwrap();
        assert_eq!(top.excluded.as_deref(), Some("no API key: set TOP_KEY"));
        assert!(top.quality.is_some(), "its quality is still reported");
        assert!(d.fallbacks.iter().all(|c| c.model != "top"));
    }

    #[test]
    fn promoting_keeps_the_policy_choice_as_first_fallback() {
        let t = Table::three();
        let mut d = t.decide(-6.0, Profile::Balanced, &Constraints::default());
        assert_eq!(chosen(&d), "cheap");
        assert!(promote(&mut d, "top"));
        assert_eq!(chosen(&d), "top");
        let fallbacks: Vec<&str> = d.fallbacks.iter().map(|c| c.model.as_str()).collect();
        assert_eq!(fallbacks, ["cheap", "mid"]);

        let mut capped = t.decide(
            -6.0,
            Profile::Balanced,
            &Constraints {
                max_cost_usd: Some(0.001),
                ..Constraints::default()
            },
        );
        let before = capped.clone();
        assert!(
            !promote(&mut capped, "top"),
            "an excluded model is never promoted"
        );
        assert_eq!(capped, before);
    }

    /// One random situation: up to six models (price, tools, context, abilities, health),
    /// a prompt, whether it needs tools, and a profile.
    #[derive(Debug, Clone)]
    struct Situation {
        models: Vec<(f64, f64, bool, bool, [f32; 2], bool)>,
        difficulty: f32,
        skill: f32,
        needs_tools: bool,
        profile: Profile,
    }

    fn situation() -> impl Strategy<Value = Situation> {
        let model = (
            0.0f64..20.0,
            0.0f64..60.0,
            prop::bool::weighted(0.7),
            prop::bool::weighted(0.8),
            [-2.0f32..4.0, -2.0f32..4.0],
            prop::bool::weighted(0.8),
        );
        let profile = prop_oneof![
            Just(Profile::Balanced),
            Just(Profile::Cheap),
            Just(Profile::Best),
            (0.0f32..1.0).prop_map(Profile::Floor),
        ];
        (
            prop::collection::vec(model, 2..7),
            -3.0f32..3.0,
            0.0f32..1.0,
            any::<bool>(),
            profile,
        )
            .prop_map(
                |(models, difficulty, skill, needs_tools, profile)| Situation {
                    models,
                    difficulty,
                    skill,
                    needs_tools,
                    profile,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the models and the prompt: the choice and its fallbacks pass every filter;
        /// when the choice meets the target no eligible model that also meets it is cheaper;
        /// when it does not, no eligible model has higher quality.
        #[test]
        fn property_cheaper_model_meeting_the_target_always_wins_and_filters_hold(
            s in situation()
        ) {
            let models: Vec<Model> = s
                .models
                .iter()
                .enumerate()
                .map(|(i, &(input, output, tools, big, _, _))| {
                    let mut m = model(&format!("m{i}"), input, output);
                    m.tools = tools;
                    m.context = if big { 200_000 } else { 800 };
                    m
                })
                .collect();
            let options: Vec<ModelView> = models
                .iter()
                .zip(&s.models)
                .map(|(model, (_, _, _, _, abilities, healthy))| ModelView {
                    model,
                    abilities: Some(&abilities[..]),
                    healthy: *healthy,
                })
                .collect();
            let view = PromptView {
                difficulty: s.difficulty,
                skill_mix: vec![s.skill, 1.0],
            };
            let needs = Needs {
                tools: s.needs_tools,
                prompt_tokens: 1000,
                ..Needs::default()
            };
            let d = decide(
                &options,
                &view,
                &needs,
                s.profile,
                &Constraints::default(),
                Targets::default(),
            );
            let eligible = |c: &Candidate| c.excluded.is_none();
            for c in d.chosen.iter().chain(&d.fallbacks) {
                let option = options.iter().find(|o| o.model.id == c.model).unwrap();
                prop_assert!(
                    option.healthy
                        && (!needs.tools || option.model.tools)
                        && option.model.context >= 1000,
                    "{c:?} passed a filter it fails"
                );
            }
            let Some(choice) = &d.chosen else {
                prop_assert!(d.candidates.iter().all(|c| !eligible(c)));
                return Ok(());
            };
            let q = choice.quality.unwrap();
            for other in d.candidates.iter().filter(|c| eligible(c)) {
                let other_q = other.quality.unwrap();
                if q >= d.target {
                    prop_assert!(
                        other_q < d.target || other.cost_usd >= choice.cost_usd,
                        "{other:?} is cheaper than {choice:?} and meets {}",
                        d.target
                    );
                } else {
                    prop_assert!(other_q <= q, "{other:?} beats {choice:?} below the target");
                }
            }
        }
    }
}
