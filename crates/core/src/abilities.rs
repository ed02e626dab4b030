//! θ, the ability vector, for every catalog model, and where each one came from.
//!
//! In order of trust: **learned** (the model directory's `abilities`, fitted on this
//! deployment's judged traffic and keyed by catalog id), **config** (explicit `abilities` in the
//! config), **mapped** (a public benchmark score through the model directory's fitted maps,
//! `mapped:mmlu_pro` or `mapped:gpqa`), and the **prior** for everything else, so that no model
//! is left out of `auto` for want of an estimate.
//!
//! The prior uses what the catalog knows of every model: its price and its family.
//! 1. Anchors: the models with a measured θ (any source above) and an output price above 0.
//! 2. Per skill k, least squares on the anchors: θ_k = θ̄_k + s_k · (ln p − mean ln p), p the
//!    output price per 1M tokens. A negative slope is set to 0 (a pricier model is never
//!    predicted worse); with fewer than two anchors, or one price, the slope is 0. The fit and
//!    its r² are in [`PriorFit`] (`triage models --json`).
//! 3. A model without a price (a local server at 0) takes the per-skill median of the other
//!    priors, or θ̄ when there are none.
//! 4. Family floor: per skill, a priced model starts at least at the θ of every model of its
//!    family that costs the same or less (a pricier sibling is assumed no weaker).
//!
//! With no anchor at all θ is 0 on every skill. The prior is a starting point, not a
//! measurement: exploration (`[routing] explore_share`) sends a little traffic to prior models
//! so that `train --from-log` can replace it with a learned θ.
//!
//! This module only resolves θ; predicting quality from it is `policy`'s job, fitting it from
//! outcomes is `train`'s.

use std::collections::HashMap;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::catalog::{Catalog, Model};
use crate::classifier::{AbilityMap, Metadata};

/// Where a model's θ came from, most trusted first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbilitySource {
    /// Fitted on this deployment's judged traffic (`train --from-log`).
    Learned,
    /// Explicit `abilities` in the config.
    Config,
    /// A public score on this benchmark (`gpqa`, `mmlu_pro`) through a fitted map.
    Mapped(String),
    /// Nothing measured: the price and family prior.
    Prior,
}

impl fmt::Display for AbilitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbilitySource::Learned => f.write_str("learned"),
            AbilitySource::Config => f.write_str("config"),
            AbilitySource::Mapped(benchmark) => write!(f, "mapped:{benchmark}"),
            AbilitySource::Prior => f.write_str("prior"),
        }
    }
}

impl Serialize for AbilitySource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One model's θ in the classifier's skill order, and its source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ability {
    pub theta: Vec<f32>,
    pub source: AbilitySource,
}

/// The prior's least-squares fit of θ on the log of the output price, per skill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriorFit {
    /// The models it was fitted on.
    pub anchors: Vec<String>,
    /// Mean ln(output US$ per 1M tokens) of the anchors.
    pub mean_log_price: f32,
    /// θ̄ per skill.
    pub mean: Vec<f32>,
    /// Slope per skill on ln price, clamped at 0.
    pub slope: Vec<f32>,
    /// Share of the anchors' θ variance the line explains, per skill (0 where clamped).
    pub r2: Vec<f32>,
}

impl PriorFit {
    /// Fits the line on `(output price, θ)` pairs; prices must be above 0.
    pub fn fit(anchors: &[(&Model, &[f32])], skills: usize) -> PriorFit {
        let n = anchors.len() as f32;
        let x: Vec<f32> = anchors
            .iter()
            .map(|(m, _)| (m.output_per_mtok as f32).ln())
            .collect();
        let mean_x = if anchors.is_empty() {
            0.0
        } else {
            x.iter().sum::<f32>() / n
        };
        let sxx: f32 = x.iter().map(|xi| (xi - mean_x).powi(2)).sum();
        let mut fit = PriorFit {
            anchors: anchors.iter().map(|(m, _)| m.id.clone()).collect(),
            mean_log_price: mean_x,
            mean: vec![0.0; skills],
            slope: vec![0.0; skills],
            r2: vec![0.0; skills],
        };
        if anchors.is_empty() {
            return fit;
        }
        for k in 0..skills {
            let y: Vec<f32> = anchors.iter().map(|(_, theta)| theta[k]).collect();
            let mean_y = y.iter().sum::<f32>() / n;
            fit.mean[k] = mean_y;
            if sxx <= f32::EPSILON {
                continue;
            }
            let sxy: f32 = x
                .iter()
                .zip(&y)
                .map(|(xi, yi)| (xi - mean_x) * (yi - mean_y))
                .sum();
            let slope = sxy / sxx;
            if slope <= 0.0 {
                continue;
            }
            let syy: f32 = y.iter().map(|yi| (yi - mean_y).powi(2)).sum();
            fit.slope[k] = slope;
            fit.r2[k] = if syy > f32::EPSILON {
                slope * sxy / syy
            } else {
                0.0
            };
        }
        fit
    }

    /// The line's θ at an output price above 0.
    pub fn at(&self, output_per_mtok: f64) -> Vec<f32> {
        let dx = (output_per_mtok as f32).ln() - self.mean_log_price;
        self.mean
            .iter()
            .zip(&self.slope)
            .map(|(mean, slope)| mean + slope * dx)
            .collect()
    }
}

/// θ for every model of a catalog, for one classifier's skills.
#[derive(Debug, Clone)]
pub struct Abilities {
    pub skills: Vec<String>,
    by_model: HashMap<String, Ability>,
    pub prior: PriorFit,
}

impl Abilities {
    /// Resolves θ for every model of `catalog` from the model directory's `metadata`.
    pub fn resolve(catalog: &Catalog, metadata: &Metadata) -> Abilities {
        let skills = metadata.skills.clone();
        let maps = metadata.maps();
        let models: Vec<&Model> = catalog.models.values().map(|m| m.as_ref()).collect();
        let mut by_model: HashMap<String, Ability> = models
            .iter()
            .filter_map(|m| {
                let learned = metadata.abilities.get(&m.id);
                measured(m, &skills, learned, &maps).map(|a| (m.id.clone(), a))
            })
            .collect();
        let anchors: Vec<(&Model, &[f32])> = models
            .iter()
            .filter(|m| m.output_per_mtok > 0.0)
            .filter_map(|m| Some((*m, by_model.get(&m.id)?.theta.as_slice())))
            .collect();
        let prior = PriorFit::fit(&anchors, skills.len());
        let priors = priors(&models, &by_model, &prior);
        by_model.extend(priors.into_iter().map(|(id, theta)| {
            let source = AbilitySource::Prior;
            (id, Ability { theta, source })
        }));
        Abilities {
            skills,
            by_model,
            prior,
        }
    }

    pub fn get(&self, id: &str) -> Option<&Ability> {
        self.by_model.get(id)
    }

    pub fn theta(&self, id: &str) -> Option<&[f32]> {
        self.get(id).map(|a| a.theta.as_slice())
    }

    /// Models with θ: every model of the catalog it was resolved for.
    pub fn len(&self) -> usize {
        self.by_model.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_model.is_empty()
    }
}

/// The prior θ of every model without a measured one (steps 2–4 of the module comment).
fn priors(
    models: &[&Model],
    measured: &HashMap<String, Ability>,
    fit: &PriorFit,
) -> Vec<(String, Vec<f32>)> {
    let unmeasured: Vec<&Model> = models
        .iter()
        .copied()
        .filter(|m| !measured.contains_key(&m.id))
        .collect();
    let line: HashMap<&str, Vec<f32>> = unmeasured
        .iter()
        .filter(|m| m.output_per_mtok > 0.0)
        .map(|m| (m.id.as_str(), fit.at(m.output_per_mtok)))
        .collect();
    let unpriced = median(line.values(), fit.mean.len()).unwrap_or_else(|| fit.mean.clone());
    // Every model's θ before the family floor: measured, on the line, or the median.
    let base = |m: &Model| -> Vec<f32> {
        measured
            .get(&m.id)
            .map(|a| a.theta.clone())
            .or_else(|| line.get(m.id.as_str()).cloned())
            .unwrap_or_else(|| unpriced.clone())
    };
    unmeasured
        .iter()
        .map(|m| {
            let mut theta = base(m);
            if m.output_per_mtok > 0.0 {
                let siblings = models.iter().filter(|s| {
                    s.id != m.id
                        && s.family == m.family
                        && s.output_per_mtok > 0.0
                        && s.output_per_mtok <= m.output_per_mtok
                });
                for sibling in siblings {
                    for (t, s) in theta.iter_mut().zip(base(sibling)) {
                        *t = t.max(s);
                    }
                }
            }
            (m.id.clone(), theta)
        })
        .collect()
}

/// The per-skill median of some vectors; `None` when there are none.
fn median<'a>(vectors: impl Iterator<Item = &'a Vec<f32>>, skills: usize) -> Option<Vec<f32>> {
    let vectors: Vec<&Vec<f32>> = vectors.collect();
    if vectors.is_empty() {
        return None;
    }
    let per_skill = (0..skills).map(|k| {
        let mut values: Vec<f32> = vectors.iter().map(|v| v[k]).collect();
        values.sort_by(f32::total_cmp);
        let mid = values.len() / 2;
        if values.len().is_multiple_of(2) {
            (values[mid - 1] + values[mid]) / 2.0
        } else {
            values[mid]
        }
    });
    Some(per_skill.collect())
}

fn logit(p: f32) -> f32 {
    let p = p.clamp(0.01, 0.99);
    (p / (1.0 - p)).ln()
}

/// A measured θ in the classifier's skill order: learned for this model id, else explicit
/// abilities (missing skills take the mean of those given), else its public benchmark score
/// through the first of the fitted maps it has a score for, else none.
///
/// A model with a score but no fitted map for it (a model directory without maps) gets a
/// documented placeholder, still marked as mapped: θ_k = logit(score) + 1 for every skill, from
/// GPQA Diamond where known, else MMLU-Pro. It ranks models by one public number and puts a
/// 50%-scoring model at 50% predicted quality on a prompt of difficulty 1.
pub fn measured(
    model: &Model,
    skills: &[String],
    learned: Option<&Vec<f32>>,
    maps: &[&AbilityMap],
) -> Option<Ability> {
    let ability = |theta: Vec<f32>, source| Some(Ability { theta, source });
    if let Some(theta) = learned.filter(|t| t.len() == skills.len()) {
        return ability(theta.clone(), AbilitySource::Learned);
    }
    if let Some(given) = model.abilities.as_ref().filter(|a| !a.is_empty()) {
        let mean = given.values().sum::<f32>() / given.len() as f32;
        let theta = skills
            .iter()
            .map(|s| *given.get(s).unwrap_or(&mean))
            .collect();
        return ability(theta, AbilitySource::Config);
    }
    let score_on = |benchmark: &str| match benchmark {
        "gpqa" => model.gpqa,
        "mmlu_pro" => model.mmlu_pro,
        _ => None,
    };
    let mapped = maps.iter().find_map(|map| {
        let x = logit(score_on(&map.benchmark)?);
        let theta = map
            .intercept
            .iter()
            .zip(&map.slope)
            .map(|(a, b)| a + b * x)
            .collect();
        Some(Ability {
            theta,
            source: AbilitySource::Mapped(map.benchmark.clone()),
        })
    });
    mapped.or_else(|| {
        let (benchmark, score) = match (model.gpqa, model.mmlu_pro) {
            (Some(score), _) => ("gpqa", score),
            (None, Some(score)) => ("mmlu_pro", score),
            (None, None) => return None,
        };
        ability(
            vec![logit(score) + 1.0; skills.len()],
            AbilitySource::Mapped(benchmark.into()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn catalog(models: &str) -> Catalog {
        let text = format!(
            "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n{models}"
        );
        let config = Config::parse(&text, Path::new("t.toml")).unwrap();
        let mut catalog = Catalog::build(&config, Path::new("t.toml"), |_| None).unwrap();
        // Only the test's models: the built-in ones would be anchors too.
        catalog
            .models
            .retain(|id, _| id.starts_with("p/") || id.starts_with("q/"));
        catalog
    }

    /// A model of provider `p` at `output` US$ per 1M output tokens, with extra TOML lines.
    fn model(id: &str, output: f64, extra: &str) -> String {
        format!(
            "[[models]]\nid = \"{id}\"\nprovider = \"p\"\ninput_per_mtok = 0\noutput_per_mtok = {output}\ncontext = 1000\n{extra}\n"
        )
    }

    fn metadata(skills: &[&str]) -> Metadata {
        serde_json::from_value(serde_json::json!({
            "format_version": 1,
            "skills": skills,
            "max_tokens": 128,
            "encoder": "test",
        }))
        .unwrap()
    }

    fn map(benchmark: &str, intercept: Vec<f32>, slope: Vec<f32>) -> AbilityMap {
        AbilityMap {
            benchmark: benchmark.into(),
            intercept,
            slope,
            fit: serde_json::Value::Null,
        }
    }

    #[test]
    fn measured_abilities_come_learned_then_config_then_mapped_then_placeholder() {
        let c = catalog(&model("p/a", 1.0, ""));
        let skills: Vec<String> = ["code", "math"].map(String::from).to_vec();
        let mmlu = map("mmlu_pro", vec![1.0, 2.0], vec![1.0, 0.0]);
        let gpqa = map("gpqa", vec![0.0, 0.0], vec![2.0, 2.0]);
        let mut m = (**c.model("p/a").unwrap()).clone();
        let of = |m: &Model, learned: Option<&Vec<f32>>, maps: &[&AbilityMap]| {
            measured(m, &skills, learned, maps).map(|a| (a.theta, a.source.to_string()))
        };
        assert_eq!(of(&m, None, &[&mmlu]), None, "no score: no measurement");
        m.gpqa = Some(0.5);
        assert_eq!(
            of(&m, None, &[&mmlu]),
            Some((vec![1.0, 1.0], "mapped:gpqa".into())),
            "placeholder without a map for its score"
        );
        m.mmlu_pro = Some(0.5);
        assert_eq!(
            of(&m, None, &[&mmlu, &gpqa]),
            Some((vec![1.0, 2.0], "mapped:mmlu_pro".into())),
            "maps in order"
        );
        let mut gpqa_only = m.clone();
        gpqa_only.mmlu_pro = None;
        assert_eq!(
            of(&gpqa_only, None, &[&mmlu, &gpqa]),
            Some((vec![0.0, 0.0], "mapped:gpqa".into())),
            "the first map it has a score for"
        );
        m.abilities = Some([("code".to_string(), 3.0)].into_iter().collect());
        assert_eq!(
            of(&m, None, &[&mmlu]),
            Some((vec![3.0, 3.0], "config".into())),
            "explicit beats mapped; missing skills take the mean"
        );
        let learned = vec![0.5, -0.5];
        assert_eq!(
            of(&m, Some(&learned), &[&mmlu]),
            Some((learned.clone(), "learned".into())),
            "learned on this deployment's traffic beats everything"
        );
        assert_eq!(
            of(&m, Some(&vec![1.0]), &[&mmlu]).unwrap().1,
            "config",
            "a learned θ of another skill count is ignored"
        );
    }

    #[test]
    fn the_prior_follows_price_on_the_anchors_and_reports_its_fit() {
        // Two anchors on a line: θ = 1 + 1·(ln p − ln 1) at p = 1 and p = e² → θ = 1 and 3.
        let e2 = std::f64::consts::E.powi(2);
        let c = catalog(&format!(
            "{}{}{}{}",
            model("p/cheap", 1.0, "abilities = { code = 1.0 }"),
            model("p/dear", e2, "abilities = { code = 3.0 }"),
            model("q/new", std::f64::consts::E, "family = \"q\""),
            model("q/local", 0.0, "family = \"q\""),
        ));
        let a = Abilities::resolve(&c, &metadata(&["code"]));
        assert_eq!(a.len(), 4, "every model has θ");
        assert_eq!(a.prior.anchors, ["p/cheap", "p/dear"]);
        assert!((a.prior.slope[0] - 1.0).abs() < 1e-5);
        assert!((a.prior.r2[0] - 1.0).abs() < 1e-5, "a perfect line");
        let new = a.get("q/new").unwrap();
        assert_eq!(new.source, AbilitySource::Prior);
        assert!(
            (new.theta[0] - 2.0).abs() < 1e-5,
            "{new:?}: on the line at ln p = 1"
        );
        let local = a.get("q/local").unwrap();
        assert!(
            (local.theta[0] - 2.0).abs() < 1e-5,
            "no price: the median of the other priors, {local:?}"
        );
        assert_eq!(a.get("p/dear").unwrap().source, AbilitySource::Config);
    }

    #[test]
    fn a_pricier_sibling_starts_at_least_at_its_cheaper_siblings_level() {
        // The anchors put price against ability (negative slope, clamped to 0): θ̄ = 1.
        let c = catalog(&format!(
            "{}{}{}{}",
            model("p/strong-cheap", 1.0, "abilities = { code = 2.0 }"),
            model("p/weak-dear", 10.0, "abilities = { code = 0.0 }"),
            model("p/next", 5.0, ""),
            model("p/budget", 0.5, ""),
        ));
        let a = Abilities::resolve(&c, &metadata(&["code"]));
        assert_eq!(a.prior.slope, [0.0], "never pricier-is-worse");
        assert_eq!(a.prior.r2, [0.0]);
        assert_eq!(
            a.theta("p/next"),
            Some(&[2.0][..]),
            "floored at its cheaper sibling p/strong-cheap"
        );
        assert_eq!(
            a.theta("p/budget"),
            Some(&[1.0][..]),
            "cheaper than every sibling: the line (θ̄)"
        );
    }

    #[test]
    fn without_anchors_the_prior_is_zero() {
        let c = catalog(&format!(
            "{}{}",
            model("p/a", 1.0, ""),
            model("p/b", 0.0, "")
        ));
        let a = Abilities::resolve(&c, &metadata(&["code", "math"]));
        assert_eq!(a.theta("p/a"), Some(&[0.0, 0.0][..]));
        assert_eq!(a.theta("p/b"), Some(&[0.0, 0.0][..]));
        assert!(a.prior.anchors.is_empty());
    }

    #[test]
    fn sources_serialize_as_documented() {
        let names: Vec<String> = [
            AbilitySource::Learned,
            AbilitySource::Config,
            AbilitySource::Mapped("gpqa".into()),
            AbilitySource::Prior,
        ]
        .iter()
        .map(|s| {
            serde_json::to_value(s)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
        assert_eq!(names, ["learned", "config", "mapped:gpqa", "prior"]);
    }
}
