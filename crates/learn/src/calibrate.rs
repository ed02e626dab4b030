//! `triage calibrate`: sets a relative profile's quality target from the user's own traffic so
//! that the routing it produces has the share or the cost asked for.
//!
//! Every answered request with text in the outcome log is classified again with the current
//! classifier and catalog (so the thresholds fit the model that will serve), which prices and
//! predicts every routable model for it once. Re-choosing at another target needs no new
//! classification ([`policy::choose_at`]), so the targets 0.500…1.000 are all tried, and the one
//! whose realised share (or cost per 1,000 requests) is closest to what was asked is printed,
//! with the `[routing]` line to put in the config.
//!
//! Not logged, so not seen here: whether a request offered tools or images (a request that
//! needs them can only go to models that have them, whatever the target).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use triage_core::catalog::Catalog;
use triage_core::config::Config;
use triage_core::policy::{self, Candidate, Constraints, Profile};
use triage_gateway::outcomes::{Target, parse_date};
use triage_gateway::router::AdaptiveRouter;

/// Targets tried: 0.500, 0.501, …, 1.000.
const STEPS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error("give --target-share MODEL=SHARE or --budget-usd-per-1k US$")]
    NoGoal,
    #[error("--target-share {0}: expected MODEL=SHARE with SHARE in [0, 1]")]
    Share(String),
    #[error("--target-share: `{0}` is not a model of the catalog")]
    UnknownModel(String),
    #[error("--profile {0}: only `auto` and `auto:cheap` have a relative target")]
    Profile(String),
    #[error("--since {0}: expected a date like 2026-11-25")]
    Since(String),
    #[error("cannot read the outcome log ({target}): {message}")]
    Log { target: String, message: String },
    #[error("the outcome log has no answered requests with text to calibrate on")]
    Empty,
    #[error("classifying a logged prompt: {0}")]
    Classifier(#[from] triage_core::classifier::ClassifierError),
}

/// `triage calibrate` options.
#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// Config file: catalog, classifier and log (default: built-in defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The outcome log: an SQLite file or a `postgres://` URL (default: the config's log).
    #[arg(long)]
    pub log: Option<String>,
    /// Send this share of requests to MODEL, e.g. `openai/gpt-4.1=0.3`.
    #[arg(long, value_name = "MODEL=SHARE")]
    pub target_share: Option<String>,
    /// Spend at most this many US$ per 1,000 requests (expected cost, as the policy prices it).
    #[arg(long)]
    pub budget_usd_per_1k: Option<f64>,
    /// The profile whose target is set: `auto` (balanced_target) or `auto:cheap` (cheap_target).
    #[arg(long, default_value = "auto")]
    pub profile: String,
    /// Only requests logged from this date on.
    #[arg(long)]
    pub since: Option<String>,
    /// Only requests that asked for an `auto` profile (default: all logged traffic).
    #[arg(long)]
    pub only_auto: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What routing looks like at one target.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    pub target: f32,
    /// Model id → share of requests.
    pub shares: BTreeMap<String, f64>,
    pub usd_per_1k: f64,
    /// Mean predicted quality of the chosen models, relative to each prompt's best.
    pub quality_kept: f64,
}

/// The answer: the target to configure and what it does, beside today's.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub requests: usize,
    /// `balanced_target` or `cheap_target`.
    pub setting: &'static str,
    pub current: Point,
    pub recommended: Point,
    /// The goal, in words.
    pub goal: String,
}

enum Goal {
    Share(String, f64),
    Budget(f64),
}

/// Classifies the logged prompts and finds the target. `router` is the serving classifier.
pub fn run(
    args: &CalibrateArgs,
    config: &Config,
    catalog: &Catalog,
    router: &AdaptiveRouter,
) -> Result<Calibration, CalibrateError> {
    let goal = goal(args, catalog)?;
    let (setting, current) = match Profile::parse(&args.profile) {
        Some(Ok(Profile::Balanced)) => ("balanced_target", config.routing.balanced_target),
        Some(Ok(Profile::Cheap)) => ("cheap_target", config.routing.cheap_target),
        _ => return Err(CalibrateError::Profile(args.profile.clone())),
    };
    let since_ms = match &args.since {
        Some(text) => parse_date(text).ok_or_else(|| CalibrateError::Since(text.clone()))?,
        None => 0,
    };
    let target = Target::from_arg(args.log.as_deref(), &config.log);
    let prompts = target
        .open_read()
        .and_then(|mut store| store.prompts(since_ms))
        .map_err(|e| CalibrateError::Log {
            target: target.describe(),
            message: e.to_string(),
        })?;
    let mut rows = Vec::new();
    for (route, prompt) in prompts {
        if args.only_auto && route != "auto" {
            continue;
        }
        let Some(body) = chat_body(&prompt) else {
            continue;
        };
        let decision = router.decide(
            catalog,
            &body,
            Profile::Balanced,
            &Constraints::default(),
            |_| true,
        )?;
        rows.push(decision.decision.candidates);
    }
    if rows.is_empty() {
        return Err(CalibrateError::Empty);
    }
    let points: Vec<Point> = (0..=STEPS)
        .map(|i| point(&rows, 0.5 + 0.5 * i as f32 / STEPS as f32))
        .collect();
    let recommended = best_point(&points, &goal).clone();
    let goal = match goal {
        Goal::Share(model, share) => format!("{:.1}% of requests to {model}", share * 100.0),
        Goal::Budget(usd) => format!("at most US${usd} per 1,000 requests"),
    };
    Ok(Calibration {
        requests: rows.len(),
        setting,
        current: point(&rows, current),
        recommended,
        goal,
    })
}

fn goal(args: &CalibrateArgs, catalog: &Catalog) -> Result<Goal, CalibrateError> {
    match (&args.target_share, args.budget_usd_per_1k) {
        (Some(text), _) => {
            let (model, share) = text
                .rsplit_once('=')
                .ok_or_else(|| CalibrateError::Share(text.clone()))?;
            let share: f64 = share
                .parse()
                .ok()
                .filter(|s| (0.0..=1.0).contains(s))
                .ok_or_else(|| CalibrateError::Share(text.clone()))?;
            if catalog.model(model).is_none() {
                return Err(CalibrateError::UnknownModel(model.to_string()));
            }
            Ok(Goal::Share(model.to_string(), share))
        }
        (None, Some(usd)) => Ok(Goal::Budget(usd)),
        (None, None) => Err(CalibrateError::NoGoal),
    }
}

/// A logged `{"system"?, "messages"}` as a chat body (a top-level system prompt first).
fn chat_body(prompt: &str) -> Option<Map<String, Value>> {
    let messages = triage_gateway::outcomes::logged_messages(prompt)?;
    Some(Map::from_iter([(
        "messages".to_string(),
        Value::Array(messages),
    )]))
}

/// Routing over all `rows` at quality target `fraction`.
pub fn point(rows: &[Vec<Candidate>], fraction: f32) -> Point {
    let mut shares: BTreeMap<String, f64> = BTreeMap::new();
    let (mut cost, mut kept) = (0.0, 0.0);
    for candidates in rows {
        let Some(chosen) = policy::choose_at(candidates, fraction) else {
            continue;
        };
        *shares.entry(chosen.model.clone()).or_default() += 1.0;
        cost += chosen.cost_usd;
        let best = candidates
            .iter()
            .filter(|c| c.excluded.is_none())
            .filter_map(|c| c.quality)
            .fold(0.0f32, f32::max);
        if best > 0.0 {
            kept += f64::from(chosen.quality.unwrap_or(0.0) / best);
        }
    }
    let n = rows.len() as f64;
    shares.values_mut().for_each(|s| *s /= n);
    Point {
        target: (fraction * 1000.0).round() / 1000.0,
        shares,
        usd_per_1k: cost / n * 1000.0,
        quality_kept: kept / n,
    }
}

/// The point closest to the goal: for a share, the smallest distance (ties: the higher
/// target); for a budget, the highest target within it (else the cheapest point).
fn best_point<'a>(points: &'a [Point], goal: &Goal) -> &'a Point {
    match goal {
        Goal::Share(model, share) => {
            let distance = |p: &Point| (p.shares.get(model).copied().unwrap_or(0.0) - share).abs();
            points
                .iter()
                .rev()
                .min_by(|a, b| distance(a).total_cmp(&distance(b)))
                .expect("points is not empty")
        }
        Goal::Budget(usd) => points
            .iter()
            .rev()
            .find(|p| p.usd_per_1k <= *usd)
            .unwrap_or_else(|| {
                points
                    .iter()
                    .min_by(|a, b| a.usd_per_1k.total_cmp(&b.usd_per_1k))
                    .expect("points is not empty")
            }),
    }
}

impl std::fmt::Display for Calibration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} logged requests; goal: {}", self.requests, self.goal)?;
        for (name, p) in [
            ("current", &self.current),
            ("recommended", &self.recommended),
        ] {
            let shares: Vec<String> = p
                .shares
                .iter()
                .map(|(m, s)| format!("{m} {:.1}%", s * 100.0))
                .collect();
            writeln!(
                f,
                "  {name:<11} target {:.3}: US${:.4} per 1k requests, quality kept {:.3}; {}",
                p.target,
                p.usd_per_1k,
                p.quality_kept,
                shares.join(", ")
            )?;
        }
        writeln!(
            f,
            "\n[routing]\n{} = {:.3}",
            self.setting, self.recommended.target
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn candidate(model: &str, quality: f32, cost_usd: f64) -> Candidate {
        Candidate {
            model: model.into(),
            quality: Some(quality),
            cost_usd,
            excluded: None,
        }
    }

    /// Prompt i: the cheap model reaches i/10 of the top model's quality.
    fn rows() -> Vec<Vec<Candidate>> {
        (0..10)
            .map(|i| {
                vec![
                    candidate("cheap", 0.09 * i as f32 + 0.05, 0.001),
                    candidate("top", 0.95, 0.01),
                ]
            })
            .collect()
    }

    #[test]
    fn a_share_goal_finds_the_target_that_realises_it() {
        let points: Vec<Point> = (0..=STEPS)
            .map(|i| point(&rows(), 0.5 + 0.5 * i as f32 / STEPS as f32))
            .collect();
        let p = best_point(&points, &Goal::Share("top".into(), 0.7));
        assert!((p.shares["top"] - 0.7).abs() < 1e-9, "{p:?}");
        // Cheap reaches 0.05, 0.14, …, 0.86 of 0.95: seven prompts below the target.
        let q6 = 0.09 * 6.0 + 0.05;
        let q7 = 0.09 * 7.0 + 0.05;
        assert!(
            p.target > q6 / 0.95 && p.target <= q7 / 0.95 + 1e-3,
            "{}",
            p.target
        );
    }

    #[test]
    fn a_budget_goal_takes_the_highest_target_within_it() {
        let points: Vec<Point> = (0..=STEPS)
            .map(|i| point(&rows(), 0.5 + 0.5 * i as f32 / STEPS as f32))
            .collect();
        let p = best_point(&points, &Goal::Budget(6.0));
        assert!(p.usd_per_1k <= 6.0, "{p:?}");
        let higher = points.iter().find(|q| q.target > p.target).unwrap();
        assert!(higher.usd_per_1k > 6.0);
        // A budget below the cheapest routing gives the cheapest point.
        let p = best_point(&points, &Goal::Budget(0.1));
        assert_eq!(p.usd_per_1k, points[0].usd_per_1k);
    }

    #[test]
    fn logged_prompts_become_chat_bodies() {
        let body = chat_body(r#"{"system": "S", "messages": [{"role": "user", "content": "Q"}]}"#)
            .unwrap();
        assert_eq!(
            Value::Object(body),
            json!({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]})
        );
        assert!(chat_body("[]").is_none());
    }
}
