//! Multi-model mode: every held-out prompt routed among all compared models, reported as
//! cost-quality points, RouterBench's AIQ and the cost saved at 95% of the best single model's
//! quality.
//!
//! - triage and kNN: the cheapest model whose predicted quality reaches a floor, else the one
//!   predicted best (`auto:q<floor>` in `policy`); the floors 0, 0.01 … 1 and "best" trace each
//!   curve. The profiles are the policy's: `auto:cheap` and `auto` take the cheapest model
//!   predicted within a share of the best prediction for the prompt (0.80 and 0.95 by default,
//!   `policy::Targets`), `auto:best` the predicted best. "Cheapest" is
//!   by expected cost: the price estimate for this prompt, or, where the data records costs, the
//!   model's mean cost on the calibration prompts (the recorded cost of one answer knows its
//!   length, which a router cannot).
//! - triage:wtp: the model maximising predicted quality − λ·expected cost (a willingness to pay
//!   1/λ per unit of quality, RouterBench's rule for its routers), for λ from 0 to ∞. Beside the
//!   target rule it shows what the policy leaves on the table.
//! - oracle: the same rule knowing every outcome and cost; that traces the best frontier any
//!   router could reach.
//! - random: prompt-blind mixtures of the single models (RouterBench's zero router), whose
//!   frontier is the hull of the single models' points.
//!
//! `saving_at_95` is `1 − cost / cost of the best model` at the least cost where the router's
//! hull reaches 95% of the best single model's quality; absent when it never does.

use std::fmt;

use indexmap::IndexMap;
use serde::Serialize;

use super::data::Dataset;
use super::metrics::{self, CostPoint};
use super::prices::{Prices, estimated_cost};
use super::{
    Ability, AbilitySource, EvalArgs, EvalError, Prepared, Scorer, model_indexes, or_dash,
    predicted_quality, prepare, score_rows,
};

/// Share of the best single model's quality that `saving_at_95` asks for.
const QUALITY_SHARE: f64 = 0.95;
/// Quality targets of the triage and kNN sweeps: 0, 0.01 … 1.
const SWEEP_STEPS: u32 = 100;

/// A single model used for every prompt.
#[derive(Debug, Clone, Serialize)]
pub struct ModelPoint {
    /// Mean US$ per prompt.
    pub cost: f64,
    /// Mean normalised score, 0–1.
    pub quality: f64,
    pub cost_source: CostSource,
    pub ability: Ability,
}

/// Where a model's costs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CostSource {
    /// The data's `cost` column.
    Data,
    /// `--prices` or the catalog, with the token estimate.
    Prices,
}

/// One triage profile's operating point.
#[derive(Debug, Clone, Serialize)]
pub struct ProfilePoint {
    /// The share of the prompt's best predicted quality a choice must reach; absent for
    /// `auto:best`.
    pub share_of_best: Option<f64>,
    pub cost: f64,
    pub quality: f64,
    /// `1 − cost / cost of the best single model`.
    pub saving: Option<f64>,
    /// Share of calls per model (models that got none are left out).
    pub calls: IndexMap<String, f64>,
}

/// A router's curve and RouterBench's numbers for it.
#[derive(Debug, Clone, Serialize)]
pub struct MultiRouter {
    pub aiq: Option<f64>,
    pub saving_at_95: Option<f64>,
    /// Every operating point, by cost.
    pub curve: Vec<CostPoint>,
    /// The non-decreasing convex hull of the curve.
    pub hull: Vec<CostPoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MultiResults {
    pub models: IndexMap<String, ModelPoint>,
    pub best_model: String,
    /// 95% of the best single model's quality.
    pub quality_at_95: f64,
    /// Answer tokens assumed where costs are estimated from prices.
    pub output_tokens: Option<u32>,
    /// `auto:cheap`, `auto`, `auto:best` (triage).
    pub profiles: IndexMap<String, ProfilePoint>,
    /// `triage`, `triage:wtp`, `knn` (when the scorer gives embeddings), `random`, `oracle`.
    pub routers: IndexMap<String, MultiRouter>,
}

/// Per held-out prompt and model: what a call costs, and what a router expects it to cost.
struct Costs {
    actual: Vec<Vec<f64>>,
    expected: Vec<Vec<f64>>,
    sources: Vec<CostSource>,
}

pub(super) fn evaluate(
    args: &EvalArgs,
    data: &Dataset,
    scorer: &dyn Scorer,
) -> Result<(MultiResults, Prepared), EvalError> {
    let names = if args.models.is_empty() {
        data.models.clone()
    } else {
        args.models.clone()
    };
    if names.len() < 2 {
        return Err(EvalError::Args(format!(
            "multi-model mode needs at least two models; the data has {}",
            names.join(", ")
        )));
    }
    let models = model_indexes(data, &names)?;
    let mut prepared = prepare(args, data, scorer, &models)?;
    let costs = costs(args, data, &models, &prepared)?;
    if costs.sources.contains(&CostSource::Data) && costs.sources.contains(&CostSource::Prices) {
        prepared.warnings.push(
            "some costs come from the data and some from prices: they may not compare".into(),
        );
    }
    let held_out = &prepared.held_out;
    let scores = score_rows(data, held_out, &models);
    let point = |choices: &[usize]| -> CostPoint {
        let n = choices.len() as f64;
        let (cost, quality) = choices
            .iter()
            .enumerate()
            .fold((0.0, 0.0), |(c, q), (i, &m)| {
                (c + costs.actual[i][m], q + scores[i][m])
            });
        CostPoint {
            cost: cost / n,
            quality: quality / n,
        }
    };

    let mut model_points = IndexMap::new();
    for (j, name) in names.iter().enumerate() {
        let p = point(&vec![j; held_out.len()]);
        model_points.insert(
            name.clone(),
            ModelPoint {
                cost: p.cost,
                quality: p.quality,
                cost_source: costs.sources[j],
                ability: prepared.abilities[j].clone(),
            },
        );
    }
    let (best_model, best) = model_points
        .iter()
        .max_by(|a, b| {
            a.1.quality
                .total_cmp(&b.1.quality)
                .then(b.1.cost.total_cmp(&a.1.cost))
        })
        .map(|(name, point)| (name.clone(), point.clone()))
        .expect("at least two models");
    let quality_at_95 = QUALITY_SHARE * best.quality;
    let saving = |cost: f64| (best.cost > 0.0).then(|| 1.0 - cost / best.cost);

    let predicted: Vec<Vec<f64>> = prepared
        .held_out_features
        .iter()
        .map(|f| {
            prepared
                .abilities
                .iter()
                .map(|a| predicted_quality(&a.theta, f))
                .collect()
        })
        .collect();
    let sweep = |predicted: &[Vec<f64>]| -> Vec<CostPoint> {
        targets()
            .map(|rule| point(&choose_all(predicted, &costs.expected, rule)))
            .collect()
    };

    let mut profiles = IndexMap::new();
    for (profile, share_of_best) in [
        ("auto:cheap", Some(args.cheap_target)),
        ("auto", Some(args.balanced_target)),
        ("auto:best", None),
    ] {
        let rule = share_of_best.map_or(Rule::Best, Rule::ShareOfBest);
        let choices = choose_all(&predicted, &costs.expected, rule);
        let p = point(&choices);
        let mut calls = IndexMap::new();
        for (j, name) in names.iter().enumerate() {
            let share = choices.iter().filter(|&&c| c == j).count() as f64 / choices.len() as f64;
            if share > 0.0 {
                calls.insert(name.clone(), share);
            }
        }
        profiles.insert(
            profile.to_owned(),
            ProfilePoint {
                share_of_best,
                cost: p.cost,
                quality: p.quality,
                saving: saving(p.cost),
                calls,
            },
        );
    }

    let mut curves: IndexMap<String, Vec<CostPoint>> = IndexMap::new();
    curves.insert("triage".into(), sweep(&predicted));
    curves.insert(
        "triage:wtp".into(),
        lambdas(&costs.expected)
            .map(|l| point(&best_value_choices(&predicted, &costs.expected, l)))
            .collect(),
    );
    if let Some(neighbours) = prepared.knn_predictions(data, &models, args.knn_k) {
        curves.insert("knn".into(), sweep(&neighbours));
    }
    curves.insert(
        "random".into(),
        model_points
            .values()
            .map(|m| CostPoint {
                cost: m.cost,
                quality: m.quality,
            })
            .collect(),
    );
    curves.insert(
        "oracle".into(),
        lambdas(&costs.actual)
            .map(|l| point(&best_value_choices(&scores, &costs.actual, l)))
            .collect(),
    );

    let hulls: Vec<Vec<CostPoint>> = curves
        .values()
        .map(|c| metrics::non_decreasing_hull(c))
        .collect();
    let aiqs = metrics::aiq(&hulls);
    let routers = curves
        .into_iter()
        .zip(hulls.into_iter().zip(aiqs))
        .map(|((name, mut curve), (hull, aiq))| {
            curve.sort_by(|a, b| {
                a.cost
                    .total_cmp(&b.cost)
                    .then(a.quality.total_cmp(&b.quality))
            });
            curve.dedup();
            let saving_at_95 = metrics::cost_at_quality(&hull, quality_at_95).and_then(saving);
            (
                name,
                MultiRouter {
                    aiq,
                    saving_at_95,
                    curve,
                    hull,
                },
            )
        })
        .collect();

    let output_tokens = costs
        .sources
        .contains(&CostSource::Prices)
        .then_some(args.output_tokens);
    let results = MultiResults {
        models: model_points,
        best_model,
        quality_at_95,
        output_tokens,
        profiles,
        routers,
    };
    Ok((results, prepared))
}

/// How a prompt's model is chosen from predicted qualities, as `policy` does.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    /// The cheapest model predicted at or above this quality, else the predicted best.
    Floor(f64),
    /// The cheapest model predicted within this share of the best prediction.
    ShareOfBest(f64),
    /// The predicted best.
    Best,
}

/// The rules of a sweep: floors 0, 0.01 … 1, then the predicted best.
fn targets() -> impl Iterator<Item = Rule> {
    (0..=SWEEP_STEPS)
        .map(|i| Rule::Floor(f64::from(i) / f64::from(SWEEP_STEPS)))
        .chain([Rule::Best])
}

/// For each prompt, the model `rule` picks, by the serving policy's rule (`quality::choose`):
/// among models that reach the target the cheapest wins, ties to the better, then the first;
/// with none, the predicted best, ties to the cheaper.
fn choose_all(predicted: &[Vec<f64>], expected_cost: &[Vec<f64>], rule: Rule) -> Vec<usize> {
    predicted
        .iter()
        .zip(expected_cost)
        .map(|(q, c)| {
            let target = match rule {
                Rule::Floor(floor) => floor,
                Rule::ShareOfBest(share) => share * q.iter().copied().fold(0.0, f64::max),
                Rule::Best => f64::INFINITY,
            };
            triage_core::quality::choose(q, c, target).expect("at least two models")
        })
        .collect()
}

/// λ of the oracle's sweep: 0, a geometric grid around 1 / mean cost, and ∞.
fn lambdas(actual: &[Vec<f64>]) -> impl Iterator<Item = f64> + use<> {
    let (sum, n) = actual
        .iter()
        .flatten()
        .fold((0.0, 0usize), |(s, n), c| (s + c, n + 1));
    let mean = sum / n.max(1) as f64;
    let grid: Vec<f64> = if mean > 0.0 {
        (-40..=40)
            .map(|k| 10f64.powf(f64::from(k) / 10.0) / mean)
            .collect()
    } else {
        Vec::new()
    };
    std::iter::once(0.0).chain(grid).chain([f64::INFINITY])
}

/// For each prompt, the model maximising `quality − λ·cost`; ties to the cheaper model (at
/// λ = ∞ the cheapest, ties to the better). With outcomes and actual costs it is the oracle; with
/// predictions and expected costs, triage's willingness-to-pay rule.
fn best_value_choices(quality: &[Vec<f64>], cost: &[Vec<f64>], lambda: f64) -> Vec<usize> {
    quality
        .iter()
        .zip(cost)
        .map(|(s, c)| {
            (0..s.len())
                .max_by(|&a, &b| {
                    let value = |m: usize| {
                        if lambda.is_infinite() {
                            -c[m]
                        } else {
                            s[m] - lambda * c[m]
                        }
                    };
                    value(a)
                        .total_cmp(&value(b))
                        .then(c[b].total_cmp(&c[a]))
                        .then(s[a].total_cmp(&s[b]))
                        .then(b.cmp(&a))
                })
                .expect("at least two models")
        })
        .collect()
}

/// Costs of each compared model: the data's where every compared prompt records one, otherwise
/// `--prices`, then the catalog's prices, with the token estimate.
fn costs(
    args: &EvalArgs,
    data: &Dataset,
    models: &[usize],
    prepared: &Prepared,
) -> Result<Costs, EvalError> {
    let file_prices = match &args.prices {
        Some(path) => Prices::load(path)?,
        None => Prices::default(),
    };
    let mut sources = Vec::new();
    let mut missing = Vec::new();
    let mut mean_calibration_cost = Vec::new();
    for &m in models {
        let recorded = |p: &usize| data.cell(*p, m).and_then(|c| c.cost);
        let all = prepared.calibration.iter().chain(&prepared.held_out);
        if all.clone().all(|p| recorded(p).is_some()) {
            sources.push(CostSource::Data);
            let total: f64 = prepared.calibration.iter().filter_map(recorded).sum();
            mean_calibration_cost.push(total / prepared.calibration.len() as f64);
        } else {
            let name = &data.models[m];
            if file_prices
                .get(name)
                .or_else(|| args.catalog_prices.get(name))
                .is_none()
            {
                missing.push(name.clone());
            }
            sources.push(CostSource::Prices);
            mean_calibration_cost.push(0.0);
        }
    }
    if !missing.is_empty() {
        return Err(EvalError::MissingPrices(missing));
    }
    let mut actual = Vec::with_capacity(prepared.held_out.len());
    let mut expected = Vec::with_capacity(prepared.held_out.len());
    for &p in &prepared.held_out {
        let (mut a, mut e) = (
            Vec::with_capacity(models.len()),
            Vec::with_capacity(models.len()),
        );
        for (j, &m) in models.iter().enumerate() {
            match sources[j] {
                CostSource::Data => {
                    a.push(data.cell(p, m).and_then(|c| c.cost).expect("checked above"));
                    e.push(mean_calibration_cost[j]);
                }
                CostSource::Prices => {
                    let name = &data.models[m];
                    let price = file_prices
                        .get(name)
                        .or_else(|| args.catalog_prices.get(name))
                        .expect("checked above");
                    let cost = estimated_cost(price, &data.prompts[p].text, args.output_tokens);
                    a.push(cost);
                    e.push(cost);
                }
            }
        }
        actual.push(a);
        expected.push(e);
    }
    Ok(Costs {
        actual,
        expected,
        sources,
    })
}

impl fmt::Display for MultiResults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .models
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(5)
            .max(10);
        writeln!(
            f,
            "{:<width$}  {:>12}  {:>7}  costs, θ",
            "model", "$/1k prompts", "quality"
        )?;
        for (name, m) in &self.models {
            let cost_note = match m.cost_source {
                CostSource::Data => "recorded",
                CostSource::Prices => "priced",
            };
            let theta_note = match m.ability.source {
                AbilitySource::Scorer => "scorer",
                AbilitySource::Fitted => "fitted",
            };
            writeln!(
                f,
                "{name:<width$}  {:>12.4}  {:>7.3}  {cost_note}, {theta_note}",
                m.cost * 1000.0,
                m.quality
            )?;
        }
        if let Some(tokens) = self.output_tokens {
            writeln!(
                f,
                "(priced costs assume {tokens} answer tokens and 4 characters per prompt token)"
            )?;
        }
        writeln!(
            f,
            "best single model: {}; 95% of its quality: {:.3}\n",
            self.best_model, self.quality_at_95
        )?;
        writeln!(
            f,
            "{:<11}{:>7}  {:>12}  {:>7}  {:>7}",
            "profile", "of best", "$/1k prompts", "quality", "saving"
        )?;
        for (name, p) in &self.profiles {
            writeln!(
                f,
                "{name:<11}{:>7}  {:>12.4}  {:>7.3}  {:>7}",
                or_dash(p.share_of_best, |t| format!("{t:.2}")),
                p.cost * 1000.0,
                p.quality,
                or_dash(p.saving, |s| format!("{:.1}%", s * 100.0))
            )?;
        }
        writeln!(f, "\n{:<11}{:>7}  {:>11}", "router", "AIQ", "saving@95%")?;
        for (name, r) in &self.routers {
            writeln!(
                f,
                "{name:<11}{:>7}  {:>11}",
                or_dash(r.aiq, |a| format!("{a:.3}")),
                or_dash(r.saving_at_95, |s| format!("{:.1}%", s * 100.0))
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_takes_the_cheapest_model_that_reaches_the_target() {
        let predicted = vec![vec![0.5, 0.7, 0.9]];
        let cost = vec![vec![1.0, 2.0, 3.0]];
        let choose = |rule| choose_all(&predicted, &cost, rule);
        assert_eq!(choose(Rule::Floor(0.6)), vec![1]);
        assert_eq!(choose(Rule::Floor(0.95)), vec![2]);
        assert_eq!(choose(Rule::Floor(0.0)), vec![0]);
        assert_eq!(choose(Rule::Best), vec![2]);
        // Within 0.75 of the best 0.9 is 0.675: the second model.
        assert_eq!(choose(Rule::ShareOfBest(0.75)), vec![1]);
        assert_eq!(choose(Rule::ShareOfBest(0.5)), vec![0]);
    }

    #[test]
    fn oracle_trades_score_for_cost_by_lambda() {
        let scores = vec![vec![0.0, 1.0]];
        let cost = vec![vec![1.0, 3.0]];
        assert_eq!(best_value_choices(&scores, &cost, 0.0), vec![1]);
        assert_eq!(best_value_choices(&scores, &cost, 1.0), vec![0]);
        assert_eq!(best_value_choices(&scores, &cost, f64::INFINITY), vec![0]);
    }
}
