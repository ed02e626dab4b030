//! Two-model mode (`--strong`, `--weak`): RouteLLM's quality curve over the share of calls sent
//! to the strong model, with APGR, CPT(50%) and CPT(80%), for triage, kNN, a prompt-length
//! router, a task-kind keyword rule, random and the oracle.
//!
//! Triage's curve is the serving policy's swept over its quality target: a relative profile
//! takes the strong model when the weak one's predicted quality falls below the target share of
//! the strong one's, so prompts go to the strong model in order of `quality::upgrade_score`.
//! kNN ranks by the difference of its neighbours' mean scores.

use std::fmt;

use indexmap::IndexMap;
use serde::Serialize;

use super::data::Dataset;
use super::metrics::{self, SharePoint};
use super::{
    Ability, AbilitySource, EvalArgs, EvalError, Prepared, Scorer, model_indexes, or_dash,
    predicted_quality, prepare, scores,
};

/// One of the two models.
#[derive(Debug, Clone, Serialize)]
pub struct PairSide {
    pub model: String,
    /// Mean normalised score on the held-out prompts, 0–1.
    pub quality: f64,
    pub ability: Ability,
}

/// A router's curve and RouteLLM's numbers for it.
#[derive(Debug, Clone, Serialize)]
pub struct PairRouter {
    /// Average performance gap recovered, 0 = the weak model, 1 = the strong one.
    pub apgr: Option<f64>,
    /// Percent of calls to the strong model needed for 50% of the gap; absent when the two
    /// models score alike.
    pub cpt50: Option<f64>,
    /// Percent of calls to the strong model needed for 80% of the gap.
    pub cpt80: Option<f64>,
    /// Area under the curve (share as a fraction, quality 0–1).
    pub auc: f64,
    pub curve: Vec<SharePoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairResults {
    pub strong: PairSide,
    pub weak: PairSide,
    /// `triage`, `knn` (when the scorer gives embeddings), `length` (longer prompts to the
    /// strong model), `keyword` (code and maths requests first), `random`, `oracle`.
    pub routers: IndexMap<String, PairRouter>,
}

pub(super) fn evaluate(
    args: &EvalArgs,
    data: &Dataset,
    scorer: &dyn Scorer,
    strong: &str,
    weak: &str,
) -> Result<(PairResults, Prepared), EvalError> {
    let models = model_indexes(data, &[strong.to_owned(), weak.to_owned()])?;
    let prepared = prepare(args, data, scorer, &models)?;
    let held_out = &prepared.held_out;
    let (strong_scores, weak_scores) = (
        scores(data, held_out, models[0]),
        scores(data, held_out, models[1]),
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (strong_quality, weak_quality) = (mean(&strong_scores), mean(&weak_scores));
    let gap = (strong_quality - weak_quality).abs() > 1e-12;
    let measure = |curve: Vec<SharePoint>| PairRouter {
        apgr: metrics::apgr(&curve, strong_quality, weak_quality),
        cpt50: gap.then(|| metrics::cpt(&curve, strong_quality, weak_quality, 0.5)),
        cpt80: gap.then(|| metrics::cpt(&curve, strong_quality, weak_quality, 0.8)),
        auc: metrics::auc(&curve),
        curve,
    };

    let (strong_theta, weak_theta) = (&prepared.abilities[0].theta, &prepared.abilities[1].theta);
    let triage: Vec<f64> = prepared
        .held_out_features
        .iter()
        .map(|f| {
            let (strong, weak) = (
                predicted_quality(strong_theta, f),
                predicted_quality(weak_theta, f),
            );
            triage_core::quality::upgrade_score(weak, strong)
        })
        .collect();
    let mut routers = IndexMap::new();
    let bins = metrics::THRESHOLD_BINS;
    routers.insert(
        "triage".to_owned(),
        measure(metrics::threshold_curve(
            &triage,
            &strong_scores,
            &weak_scores,
            bins,
        )),
    );
    if let Some(neighbours) = prepared.knn_predictions(data, &models, args.knn_k) {
        let knn_scores: Vec<f64> = neighbours.iter().map(|means| means[0] - means[1]).collect();
        routers.insert(
            "knn".to_owned(),
            measure(metrics::threshold_curve(
                &knn_scores,
                &strong_scores,
                &weak_scores,
                bins,
            )),
        );
    }
    // The baseline a router has to beat to be worth its classifier: longer prompts to the
    // strong model.
    let lengths: Vec<f64> = held_out
        .iter()
        .map(|&p| triage_core::classifier::length_feature(&data.prompts[p].text).into())
        .collect();
    routers.insert(
        "length".to_owned(),
        measure(metrics::threshold_curve(
            &lengths,
            &strong_scores,
            &weak_scores,
            bins,
        )),
    );
    // The rule a classifier must beat on chat: prompts that name code or maths first (the task
    // kinds that separate strong and weak models), longer before shorter within each group.
    let keyword: Vec<f64> = held_out
        .iter()
        .zip(&lengths)
        .map(|(&p, length)| {
            f64::from(u8::from(names_code_or_maths(&data.prompts[p].text))) * 100.0 + length
        })
        .collect();
    routers.insert(
        "keyword".to_owned(),
        measure(metrics::threshold_curve(
            &keyword,
            &strong_scores,
            &weak_scores,
            bins,
        )),
    );
    routers.insert(
        "random".to_owned(),
        measure(metrics::random_curve(
            &strong_scores,
            &weak_scores,
            metrics::RANDOM_ITERATIONS,
            args.seed,
        )),
    );
    routers.insert(
        "oracle".to_owned(),
        measure(metrics::oracle_curve(&strong_scores, &weak_scores)),
    );

    let mut prepared = prepared;
    if !gap {
        prepared.warnings.push(
            "the two models score alike on the held-out prompts: APGR and CPT are undefined".into(),
        );
    } else if strong_quality < weak_quality {
        prepared.warnings.push(format!(
            "--strong {strong} scores below --weak {weak} on the held-out prompts ({strong_quality:.3} < {weak_quality:.3})"
        ));
    }
    let side = |model: &str, quality, ability: &Ability| PairSide {
        model: model.to_owned(),
        quality,
        ability: ability.clone(),
    };
    let results = PairResults {
        strong: side(strong, strong_quality, &prepared.abilities[0]),
        weak: side(weak, weak_quality, &prepared.abilities[1]),
        routers,
    };
    Ok((results, prepared))
}

/// Words that name a code or maths task: the ten-line keyword router.
const CODE_OR_MATHS_WORDS: &[&str] = &[
    "code",
    "function",
    "python",
    "javascript",
    "java",
    "typescript",
    "sql",
    "program",
    "programming",
    "script",
    "bug",
    "debug",
    "regex",
    "html",
    "css",
    "api",
    "compile",
    "algorithm",
    "class",
    "rust",
    "bash",
    "json",
    "math",
    "prove",
    "proof",
    "solve",
    "equation",
    "calculate",
    "compute",
    "integral",
    "derivative",
    "probability",
    "theorem",
    "sum",
];

/// Whether a prompt names a code or maths task (a word of `CODE_OR_MATHS_WORDS`, a code fence
/// or `c++`).
pub fn names_code_or_maths(text: &str) -> bool {
    let lower = text.to_lowercase();
    lower.contains("```")
        || lower.contains("c++")
        || lower
            .split(|c: char| !c.is_alphanumeric())
            .any(|word| CODE_OR_MATHS_WORDS.contains(&word))
}

fn ability_note(ability: &Ability) -> &'static str {
    match ability.source {
        AbilitySource::Scorer => "θ from the scorer",
        AbilitySource::Fitted => "θ fitted on calibration prompts",
    }
}

impl fmt::Display for PairResults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.strong.model.len().max(self.weak.model.len());
        for (role, side) in [("strong", &self.strong), ("weak", &self.weak)] {
            writeln!(
                f,
                "{role:<7}{:<width$}  quality {:.3}  ({})",
                side.model,
                side.quality,
                ability_note(&side.ability)
            )?;
        }
        writeln!(
            f,
            "\n{:<8}{:>7}{:>10}{:>10}",
            "router", "APGR", "CPT(50%)", "CPT(80%)"
        )?;
        for (name, router) in &self.routers {
            let percent = |p: f64| format!("{p:.1}%");
            writeln!(
                f,
                "{name:<8}{:>7}{:>10}{:>10}",
                or_dash(router.apgr, |a| format!("{a:.3}")),
                or_dash(router.cpt50, percent),
                or_dash(router.cpt80, percent)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keyword_rule_reads_code_and_maths_words_not_parts_of_words() {
        for text in [
            "Write a Python function that merges two lists",
            "Prove that sqrt(2) is irrational",
            "why does this ```fn main() {}``` not compile",
            "Is C++ faster than Go?",
            "Solve x^2 = 4",
        ] {
            assert!(names_code_or_maths(text), "{text}");
        }
        for text in [
            "hi, how are you?",
            "Write a haiku about autumn",
            "Summarize this paragraph",
            // "classic" and "summary" contain "class" and "sum" but are neither.
            "a classic summary of the plot",
        ] {
            assert!(!names_code_or_maths(text), "{text}");
        }
    }
}
