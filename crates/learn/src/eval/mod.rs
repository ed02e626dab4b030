//! `triage eval`: how well a router routes, measured on held-out prompts with known outcomes and
//! reported the way the field reports it: RouteLLM's APGR and CPT for two models, RouterBench's
//! AIQ and the cost saved at 95% of the best model's quality for many; pairwise battles
//! (`battles`, `--battles`) by the share won by the model predicted better.
//!
//! The flow: read the outcome table ([`data`]); keep the prompts with outcomes for every
//! compared model; split them, seeded and by prompt_id, into calibration and held-out prompts;
//! ask the [`Scorer`] for features; fit the abilities of models it does not know on the
//! calibration prompts ([`abilities`]); route the held-out prompts with triage and the baselines
//! (random, oracle, [`knn`]) and measure ([`metrics`]); optionally draw the curves ([`plot`]).
//!
//! Not for: training (`train`) or serving. Nothing here does network I/O.

pub mod abilities;
pub(crate) mod battles;
pub mod classifier;
pub mod data;
pub mod knn;
pub mod metrics;
mod multi;
mod pair;
pub mod plot;
pub mod prices;
pub mod probes;
pub mod scorer;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub use battles::BattleResults;
pub use data::{Dataset, Filter};
pub use multi::{CostSource, ModelPoint, MultiResults, MultiRouter, ProfilePoint};
pub use pair::{PairResults, PairRouter, PairSide};
pub use prices::{Price, Prices};
pub use scorer::{PromptFeatures, Scorer, predicted_quality, prompt_hash};

/// Default share of prompts used to calibrate (fit unknown abilities, index the kNN baseline).
pub const DEFAULT_CALIBRATE: f64 = 0.2;
/// `auto:cheap`: the cheapest model predicted within this share of the best (`policy::Targets`).
pub const DEFAULT_CHEAP_TARGET: f64 = 0.80;
/// `auto`: the cheapest model predicted within this share of the best (`policy::Targets`).
pub const DEFAULT_BALANCED_TARGET: f64 = 0.95;

/// Prompts per call to [`Scorer::features`].
const FEATURE_BATCH: usize = 1024;
/// Below this many held-out prompts the report warns that its numbers are noisy.
const FEW_PROMPTS: usize = 100;

/// Everything `triage eval` takes.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Outcome file in the shared long format (JSON lines, gzip or plain).
    #[arg(long)]
    pub data: PathBuf,
    /// A prompt_id → prompt file for outcome rows without prompt text (mmlu_pro_prompts).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Keep only rows whose FIELD is one of the values; repeat for several fields
    /// (e.g. --filter source=routellm_gsm8k).
    #[arg(long = "filter", value_name = "FIELD=VALUE[,VALUE…]", value_parser = parse_filter)]
    pub filters: Vec<Filter>,
    /// Two-model mode: the strong model (with --weak).
    #[arg(long, requires = "weak")]
    pub strong: Option<String>,
    /// Two-model mode: the weak model (with --strong).
    #[arg(long, requires = "strong")]
    pub weak: Option<String>,
    /// Multi-model mode: the models to compare (default: every model in the data).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["strong", "weak"])]
    pub models: Vec<String>,
    /// Battle mode, for pairwise outcomes (rows with an `opponent`, such as the Chatbot Arena
    /// battles): the share of decided battles won by the model triage predicts better.
    #[arg(long, conflicts_with_all = ["strong", "weak", "models", "plot"])]
    pub battles: bool,
    /// Share of prompts used for calibration; the rest are held out and measured.
    #[arg(long, default_value_t = DEFAULT_CALIBRATE)]
    pub calibrate: f64,
    /// Seed of the calibration split and of the random router.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Neighbours of the kNN baseline.
    #[arg(long, default_value_t = knn::DEFAULT_K)]
    pub knn_k: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write the chart to this .svg or .png file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Prices (JSON or TOML: model → {input_per_mtok, output_per_mtok}) for data without `cost`.
    #[arg(long)]
    pub prices: Option<PathBuf>,
    /// Answer tokens assumed per call when costs are estimated from prices.
    #[arg(long, default_value_t = prices::DEFAULT_OUTPUT_TOKENS)]
    pub output_tokens: u32,
    /// auto:cheap takes the cheapest model predicted within this share of the best.
    #[arg(long, default_value_t = DEFAULT_CHEAP_TARGET)]
    pub cheap_target: f64,
    /// auto takes the cheapest model predicted within this share of the best.
    #[arg(long, default_value_t = DEFAULT_BALANCED_TARGET)]
    pub balanced_target: f64,
    /// Measure held-out prompts the scorer was trained on too (they are left out by default).
    #[arg(long)]
    pub keep_seen: bool,
    /// Prices to fall back on after the data's `cost` and `--prices` (the catalog's).
    #[arg(skip)]
    pub catalog_prices: Prices,
}

impl EvalArgs {
    /// The defaults of every option, for `data`.
    pub fn new(data: impl Into<PathBuf>) -> Self {
        EvalArgs {
            data: data.into(),
            prompts: None,
            filters: Vec::new(),
            strong: None,
            weak: None,
            models: Vec::new(),
            battles: false,
            calibrate: DEFAULT_CALIBRATE,
            seed: 0,
            knn_k: knn::DEFAULT_K,
            json: false,
            plot: None,
            prices: None,
            output_tokens: prices::DEFAULT_OUTPUT_TOKENS,
            cheap_target: DEFAULT_CHEAP_TARGET,
            balanced_target: DEFAULT_BALANCED_TARGET,
            keep_seen: false,
            catalog_prices: Prices::default(),
        }
    }

    fn validate(&self) -> Result<(), EvalError> {
        if !(self.calibrate > 0.0 && self.calibrate < 1.0) {
            return Err(EvalError::Args(format!(
                "--calibrate must lie strictly between 0 and 1, not {}",
                self.calibrate
            )));
        }
        if self.knn_k == 0 {
            return Err(EvalError::Args("--knn-k must be at least 1".into()));
        }
        for (name, target) in [
            ("--cheap-target", self.cheap_target),
            ("--balanced-target", self.balanced_target),
        ] {
            if !(0.0..=1.0).contains(&target) {
                return Err(EvalError::Args(format!(
                    "{name} must lie in [0, 1], not {target}"
                )));
            }
        }
        if self.strong.is_some() != self.weak.is_some() {
            return Err(EvalError::Args("--strong and --weak go together".into()));
        }
        if self.strong.is_some() && !self.models.is_empty() {
            return Err(EvalError::Args(
                "use either --strong/--weak or --models".into(),
            ));
        }
        if self.strong.is_some() && self.strong == self.weak {
            return Err(EvalError::Args(
                "--strong and --weak name the same model".into(),
            ));
        }
        Ok(())
    }
}

fn parse_filter(text: &str) -> Result<Filter, String> {
    Filter::parse(text).map_err(|e| e.to_string())
}

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}, line {line}: {message}")]
    Row {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Data(String),
    #[error("{0}")]
    Args(String),
    #[error("model {model:?} is not in the data; it has: {}", .available.join(", "))]
    UnknownModel {
        model: String,
        available: Vec<String>,
    },
    #[error(
        "no cost for {}: the data does not record a `cost` for each of their prompts and no price was given for them (--prices FILE)",
        .0.join(", ")
    )]
    MissingPrices(Vec<String>),
    #[error("scorer: {0}")]
    Scorer(String),
    #[error("plot {path}: {message}")]
    Plot { path: String, message: String },
}

/// The result of `triage eval`: `Display` is the human table, `Serialize` the `--json` object.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scorer: String,
    pub data: DataSummary,
    #[serde(flatten)]
    pub results: Results,
    pub warnings: Vec<String>,
}

/// Two-model, multi-model or battle results; `mode` in JSON says which.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Results {
    TwoModel(PairResults),
    MultiModel(MultiResults),
    Battles(BattleResults),
}

/// What was read and what was measured.
#[derive(Debug, Clone, Serialize)]
pub struct DataSummary {
    pub file: String,
    /// Rows read after filters.
    pub rows: usize,
    pub prompts: usize,
    pub models: usize,
    /// Prompts with outcomes for every compared model.
    pub compared_prompts: usize,
    pub calibration_prompts: usize,
    /// Prompts measured.
    pub held_out_prompts: usize,
    /// The (lo, hi) that scores were normalised with.
    pub score_range: (f64, f64),
    /// Compared prompts the scorer was trained on; absent when it does not say.
    pub seen_in_training: Option<SeenInTraining>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeenInTraining {
    pub calibration: usize,
    pub held_out: usize,
    /// Whether the held-out ones were left out of the measurement.
    pub excluded: bool,
}

/// Where a model's θ came from.
#[derive(Debug, Clone, Serialize)]
pub struct Ability {
    /// `scorer` (known to the classifier) or `fitted` (on the calibration prompts).
    pub source: AbilitySource,
    pub theta: Vec<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AbilitySource {
    Scorer,
    Fitted,
}

/// Runs an evaluation: reads `args.data`, measures, writes `args.plot` if asked. Printing is the
/// caller's (`Display` or JSON by `args.json`).
pub fn run(args: &EvalArgs, scorer: &dyn Scorer) -> Result<Report, EvalError> {
    args.validate()?;
    if args.battles {
        let (results, summary, warnings) = battles::evaluate(args, scorer)?;
        return Ok(Report {
            scorer: scorer.name().to_owned(),
            data: summary,
            results: Results::Battles(results),
            warnings,
        });
    }
    let data = Dataset::load(&args.data, args.prompts.as_deref(), &args.filters)?;
    let (results, prepared) = match (&args.strong, &args.weak) {
        (Some(strong), Some(weak)) => {
            let (results, prepared) = pair::evaluate(args, &data, scorer, strong, weak)?;
            (Results::TwoModel(results), prepared)
        }
        _ => {
            let (results, prepared) = multi::evaluate(args, &data, scorer)?;
            (Results::MultiModel(results), prepared)
        }
    };
    if let Some(path) = &args.plot {
        plot::write(path, &results, scorer.name())?;
    }
    let mut warnings = data.warnings.clone();
    warnings.extend(prepared.warnings);
    Ok(Report {
        scorer: scorer.name().to_owned(),
        data: prepared.summary,
        results,
        warnings,
    })
}

/// The part both modes share: the compared prompts, the split, features and abilities.
struct Prepared {
    calibration: Vec<usize>,
    held_out: Vec<usize>,
    calibration_features: Vec<PromptFeatures>,
    held_out_features: Vec<PromptFeatures>,
    /// One per compared model.
    abilities: Vec<Ability>,
    has_embeddings: bool,
    summary: DataSummary,
    warnings: Vec<String>,
}

/// Each of `prompts`' scores for each of `models` (complete prompts only).
fn score_rows(data: &Dataset, prompts: &[usize], models: &[usize]) -> Vec<Vec<f64>> {
    prompts
        .iter()
        .map(|&p| {
            models
                .iter()
                .map(|&m| data.cell(p, m).expect("complete").score)
                .collect()
        })
        .collect()
}

fn embedding_slices(features: &[PromptFeatures]) -> Vec<&[f32]> {
    features.iter().map(|f| f.embedding.as_slice()).collect()
}

impl Prepared {
    /// The kNN baseline's predicted score of each of `models` on each held-out prompt: the mean
    /// of its `k` nearest calibration prompts' scores (None without embeddings).
    fn knn_predictions(&self, data: &Dataset, models: &[usize], k: usize) -> Option<Vec<Vec<f64>>> {
        if !self.has_embeddings {
            return None;
        }
        Some(knn::knn_predict(
            &embedding_slices(&self.calibration_features),
            &score_rows(data, &self.calibration, models),
            &embedding_slices(&self.held_out_features),
            k,
        ))
    }
}

/// The dataset index of each named model, or the error that names what the data has.
fn model_indexes(data: &Dataset, names: &[String]) -> Result<Vec<usize>, EvalError> {
    names
        .iter()
        .map(|name| {
            data.model_index(name)
                .ok_or_else(|| EvalError::UnknownModel {
                    model: name.clone(),
                    available: data.models.clone(),
                })
        })
        .collect()
}

fn prepare(
    args: &EvalArgs,
    data: &Dataset,
    scorer: &dyn Scorer,
    models: &[usize],
) -> Result<Prepared, EvalError> {
    let mut warnings = Vec::new();
    let compared = data.complete_prompts(models);
    if compared.len() < 2 {
        let per_model = data.prompts_per_model();
        let counts: Vec<String> = models
            .iter()
            .map(|&m| format!("{} {}", per_model[m].0, per_model[m].1))
            .collect();
        return Err(EvalError::Data(format!(
            "{} prompts have outcomes for every compared model (prompts per model: {}); compare fewer models with --models",
            compared.len(),
            counts.join(", ")
        )));
    }
    let ids: Vec<&str> = compared
        .iter()
        .map(|&p| data.prompts[p].id.as_str())
        .collect();
    let in_calibration = data::calibration_split(&ids, args.calibrate, args.seed);
    let (mut calibration, mut held_out) = (Vec::new(), Vec::new());
    for (&p, &c) in compared.iter().zip(&in_calibration) {
        if c {
            calibration.push(p)
        } else {
            held_out.push(p)
        }
    }

    let seen_in_training = scorer.training_prompts().map(|seen| {
        let is_seen = |p: &usize| seen.contains(&prompt_hash(&data.prompts[*p].text));
        let counts = SeenInTraining {
            calibration: calibration.iter().filter(|p| is_seen(p)).count(),
            held_out: held_out.iter().filter(|p| is_seen(p)).count(),
            excluded: !args.keep_seen,
        };
        if counts.held_out > 0 {
            warnings.push(format!(
                "{} of {} held-out prompts were seen in training; {}",
                counts.held_out,
                held_out.len(),
                if args.keep_seen {
                    "they are measured (--keep-seen)"
                } else {
                    "they are left out"
                }
            ));
            if !args.keep_seen {
                held_out.retain(|p| !is_seen(p));
            }
        }
        counts
    });
    if held_out.len() < FEW_PROMPTS {
        warnings.push(format!(
            "only {} held-out prompts: the numbers are noisy",
            held_out.len()
        ));
    }
    if held_out.is_empty() || calibration.is_empty() {
        return Err(EvalError::Data(format!(
            "{} calibration and {} held-out prompts: both need at least one",
            calibration.len(),
            held_out.len()
        )));
    }

    let calibration_features = features_of(scorer, data, &calibration)?;
    let held_out_features = features_of(scorer, data, &held_out)?;
    let skills = calibration_features[0].skills.len();
    let dims = calibration_features[0].embedding.len();
    for f in calibration_features.iter().chain(&held_out_features) {
        if f.skills.len() != skills || f.embedding.len() != dims {
            return Err(EvalError::Scorer(format!(
                "features disagree in size: {} skills and {} embedding values, then {} and {}",
                skills,
                dims,
                f.skills.len(),
                f.embedding.len()
            )));
        }
        if !f.difficulty.is_finite() || f.skills.iter().chain(&f.embedding).any(|v| !v.is_finite())
        {
            return Err(EvalError::Scorer(
                "features contain a value that is not finite".into(),
            ));
        }
    }
    if skills == 0 {
        return Err(EvalError::Scorer("features have no skills".into()));
    }
    if dims == 0 {
        warnings.push("the scorer gives no embeddings: no kNN baseline".into());
    }

    let abilities = abilities_of(
        data,
        scorer,
        models,
        &calibration,
        &calibration_features,
        skills,
    )?;
    let summary = DataSummary {
        file: args.data.display().to_string(),
        rows: data.rows,
        prompts: data.prompts.len(),
        models: data.models.len(),
        compared_prompts: compared.len(),
        calibration_prompts: calibration.len(),
        held_out_prompts: held_out.len(),
        score_range: data.score_range,
        seen_in_training,
    };
    Ok(Prepared {
        calibration,
        held_out,
        calibration_features,
        held_out_features,
        abilities,
        has_embeddings: dims > 0,
        summary,
        warnings,
    })
}

fn features_of(
    scorer: &dyn Scorer,
    data: &Dataset,
    prompts: &[usize],
) -> Result<Vec<PromptFeatures>, EvalError> {
    let mut features = Vec::with_capacity(prompts.len());
    for batch in prompts.chunks(FEATURE_BATCH) {
        let texts: Vec<String> = batch
            .iter()
            .map(|&p| data.prompts[p].text.clone())
            .collect();
        let got = scorer.features(&texts);
        if got.len() != texts.len() {
            return Err(EvalError::Scorer(format!(
                "{} features for {} prompts",
                got.len(),
                texts.len()
            )));
        }
        features.extend(got);
    }
    Ok(features)
}

/// θ of each compared model: the scorer's where it knows the model, otherwise fitted on the
/// calibration prompts with a prior centred on the mean of the abilities the scorer knows.
fn abilities_of(
    data: &Dataset,
    scorer: &dyn Scorer,
    models: &[usize],
    calibration: &[usize],
    calibration_features: &[PromptFeatures],
    skills: usize,
) -> Result<Vec<Ability>, EvalError> {
    let known = scorer.known_abilities();
    let mut prior = vec![0.0; skills];
    let usable: Vec<&Vec<f32>> = known.values().filter(|t| t.len() == skills).collect();
    if !usable.is_empty() {
        for theta in &usable {
            for (p, t) in prior.iter_mut().zip(theta.iter()) {
                *p += f64::from(*t) / usable.len() as f64;
            }
        }
    }
    let features: Vec<&PromptFeatures> = calibration_features.iter().collect();
    models
        .iter()
        .map(|&m| match known.get(&data.models[m]) {
            Some(theta) if theta.len() == skills => Ok(Ability {
                source: AbilitySource::Scorer,
                theta: theta.clone(),
            }),
            Some(theta) => Err(EvalError::Scorer(format!(
                "θ of {} has {} values but features have {skills} skills",
                data.models[m],
                theta.len()
            ))),
            None => {
                let targets: Vec<f64> = calibration
                    .iter()
                    .map(|&p| {
                        data.cell(p, m)
                            .expect("calibration prompts are complete")
                            .score
                    })
                    .collect();
                Ok(Ability {
                    source: AbilitySource::Fitted,
                    theta: abilities::fit_ability(
                        &features,
                        &targets,
                        &prior,
                        abilities::PRIOR_PRECISION,
                        abilities::SPREAD_PRECISION,
                    ),
                })
            }
        })
        .collect()
}

/// Scores of `model` on `prompts`.
fn scores(data: &Dataset, prompts: &[usize], model: usize) -> Vec<f64> {
    prompts
        .iter()
        .map(|&p| {
            data.cell(p, model)
                .expect("compared prompts are complete")
                .score
        })
        .collect()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.data;
        writeln!(f, "triage eval · {} · scorer {}", d.file, self.scorer)?;
        writeln!(
            f,
            "{} rows, {} prompts, {} models; {} prompts compared: {} calibration, {} held out",
            d.rows,
            d.prompts,
            d.models,
            d.compared_prompts,
            d.calibration_prompts,
            d.held_out_prompts
        )?;
        if let Some(seen) = &d.seen_in_training {
            writeln!(
                f,
                "seen in training: {} held out ({}), {} calibration",
                seen.held_out,
                if seen.excluded {
                    "left out"
                } else {
                    "measured"
                },
                seen.calibration
            )?;
        }
        writeln!(f)?;
        match &self.results {
            Results::TwoModel(results) => write!(f, "{results}")?,
            Results::MultiModel(results) => write!(f, "{results}")?,
            Results::Battles(results) => write!(f, "{results}")?,
        }
        if !self.warnings.is_empty() {
            writeln!(f, "\nwarnings:")?;
            for warning in &self.warnings {
                writeln!(f, "  - {warning}")?;
            }
        }
        Ok(())
    }
}

/// Formats an optional number, `–` when absent.
fn or_dash(value: Option<f64>, format: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "–".to_owned(), format)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        eval: EvalArgs,
    }

    #[test]
    fn arguments_parse_with_their_defaults() {
        Cli::command().debug_assert();
        let cli = Cli::parse_from([
            "eval",
            "--data",
            "d.jsonl.gz",
            "--strong",
            "a",
            "--weak",
            "b",
            "--filter",
            "source=x,y",
        ]);
        let args = cli.eval;
        assert_eq!(args.filters[0].values, ["x", "y"]);
        assert_eq!(
            (args.calibrate, args.knn_k, args.output_tokens),
            (0.2, 10, 300)
        );
        assert!(Cli::try_parse_from(["eval", "--data", "d", "--strong", "a"]).is_err());
        assert!(
            Cli::try_parse_from([
                "eval", "--data", "d", "--models", "a,b", "--strong", "a", "--weak", "b"
            ])
            .is_err()
        );
        let defaults = EvalArgs::new("d.jsonl.gz");
        assert_eq!(defaults.calibrate, 0.2);
    }

    #[test]
    fn profiles_default_to_the_policy_targets() {
        let policy = triage_core::policy::Targets::default();
        let defaults = EvalArgs::new("d.jsonl.gz");
        assert_eq!(defaults.cheap_target as f32, policy.cheap);
        assert_eq!(defaults.balanced_target as f32, policy.balanced);
    }
}
