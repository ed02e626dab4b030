//! `triage train`: fits the classifier and the ability table from routing-outcome data and
//! writes a model directory that `Classifier::load_dir` reads.
//!
//! A recipe (`training/*.toml`) names the data and the encoder. The run reads the data
//! (`data`: overlaps with held-out sets removed, a dev split by prompt), builds a tokenizer
//! (`vocab`, for an encoder trained from scratch) or takes the pretrained one, fits encoder,
//! heads and θ jointly (`fit`, over `encoder` for trainable encoders or `frozen` embeddings),
//! and writes `config.json`, `*.safetensors`, `tokenizer.json` and `triage.json`.
//!
//! Not for: inference (`classifier`) or measuring routing quality (`eval`).

pub mod data;
mod distill;
pub mod encoder;
mod fit;
pub mod from_log;
mod frozen;
pub mod judge;
pub mod metrics;
pub mod params;
mod progress;
pub mod recipe;
pub mod replay;
pub mod static_distill;
mod static_tune;
pub mod vocab;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use serde_json::json;
use tokenizers::Tokenizer;

use data::{DataReport, Dataset};
use encoder::{BertShape, TrainEncoder};
pub use fit::{DevMetrics, EpochMetrics, GradientCoverage, PromptPrediction, quality};
use fit::{Encoder, Model, Warm};
use metrics::OutcomeSummary;
use params::Params;
use recipe::{AbilityMapSpec, EncoderChoice, Recipe};
use triage_core::classifier::{
    self, AbilityMap, CONFIG_FILE, ClassifierError, HEADS_FILE, HEADS_PREFIX, METADATA_FILE,
    Metadata, TOKENIZER_FILE,
};

/// Version of the model directory layout written here (`Metadata::format_version`).
pub const FORMAT_VERSION: u32 = 1;
/// Dev prompts whose predictions are kept in the summary (to check a written directory).
const SAMPLES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("recipe {path}: {message}")]
    Recipe { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}:{line}: {message}")]
    Data {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("training: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Classifier(#[from] ClassifierError),
    #[error("{0}")]
    Invalid(String),
}

/// `triage train` options.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Recipe: data files, weights and caps, encoder, optimiser. Default: with `--init`, the
    /// recipe that directory was trained with (its `triage.json` names it), else
    /// `training/default.toml`.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Directory holding the files the recipe names.
    #[arg(long, default_value = "../shared/datasets")]
    pub data_dir: PathBuf,
    /// Model directory to write (created; its old `*.safetensors` are replaced).
    #[arg(long, default_value = "models/default")]
    pub out: PathBuf,
    /// Override the recipe's number of epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override the recipe's θ learning rate (a retrain on a small log wants a higher one).
    #[arg(long)]
    pub theta_lr: Option<f64>,
    /// Cap every recipe file at this many prompts (a stable-hash sample): a quick retrain that
    /// still mixes in the public data.
    #[arg(long)]
    pub max_prompts: Option<usize>,
    /// Override the recipe's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where embeddings of a frozen encoder are cached between runs.
    #[arg(long, default_value = "target/train-cache")]
    pub cache_dir: PathBuf,
    /// No progress bars and no per-epoch lines.
    #[arg(long)]
    pub quiet: bool,
    /// Also learn from the outcome log (an SQLite file or a `postgres://` URL): answers with
    /// client feedback, a judge's grade or an implicit failure, mixed with the recipe's files.
    #[arg(long)]
    pub from_log: Option<String>,
    /// Weight of each logged prompt in the outcome loss (the recipe's files say theirs).
    #[arg(long, default_value_t = 3.0)]
    pub log_weight: f64,
    /// Only logged requests from this date on (`2026-11-25` UTC, or RFC 3339).
    #[arg(long)]
    pub log_since: Option<String>,
    /// Fit the recipe's ability maps again on the θ stored in `--out` and rewrite only its
    /// `triage.json`.
    #[arg(long)]
    pub refit_ability_maps: bool,
    /// Write only `training_prompts.bin` (the prompts the recipe's data gives, for `eval` to
    /// leave out) into `--out`, for a model directory trained before that file existed.
    #[arg(long)]
    pub prompt_list_only: bool,
    /// Fine-tune this model directory (its tokenizer, encoder, heads and θ; `builtin`: the
    /// model compiled in) instead of building the recipe's encoder: the way to retrain on new
    /// traffic without starting over.
    #[arg(long)]
    pub init: Option<PathBuf>,
}

impl TrainArgs {
    /// The defaults of the command line, for `out`.
    pub fn new(recipe: PathBuf, data_dir: PathBuf, out: PathBuf) -> TrainArgs {
        TrainArgs {
            recipe: Some(recipe),
            data_dir,
            out,
            epochs: None,
            theta_lr: None,
            max_prompts: None,
            seed: None,
            cache_dir: PathBuf::from("target/train-cache"),
            quiet: false,
            from_log: None,
            log_weight: 3.0,
            log_since: None,
            init: None,
            prompt_list_only: false,
            refit_ability_maps: false,
        }
    }

    /// The recipe file named, or the default one.
    pub fn recipe_file(&self) -> &Path {
        self.recipe.as_deref().unwrap_or(Path::new(DEFAULT_RECIPE))
    }
}

/// The recipe a run reads when none is named and no `--init` directory names one.
pub const DEFAULT_RECIPE: &str = "training/default.toml";

/// The recipe a run reads: `--recipe`; else, with `--init`, the one that directory was trained
/// with, so that a retrain on new traffic keeps its base's data (a model the base held back
/// stays held back); else the default.
fn recipe_path(args: &TrainArgs, init: Option<&Path>) -> Result<PathBuf, TrainError> {
    if let Some(path) = &args.recipe {
        return Ok(path.clone());
    }
    let Some(dir) = init else {
        return Ok(PathBuf::from(DEFAULT_RECIPE));
    };
    let metadata = classifier::load_metadata(dir)?;
    match metadata
        .training
        .get("recipe_file")
        .and_then(|v| v.as_str())
    {
        Some(file) if Path::new(file).is_file() => Ok(PathBuf::from(file)),
        Some(file) => Err(TrainError::Invalid(format!(
            "--init {}: it was trained with the recipe {file}, which is not here; name one with --recipe",
            dir.display()
        ))),
        // Trained before `triage.json` recorded its recipe.
        None => Ok(PathBuf::from(DEFAULT_RECIPE)),
    }
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub out: PathBuf,
    pub data: DataReport,
    pub epochs: Vec<EpochMetrics>,
    /// The epoch whose weights were written (lowest dev outcome log-loss, with `keep_best`).
    pub selected_epoch: usize,
    /// Dev outcome numbers of a prompt-blind router (each model's mean training score).
    pub baseline: OutcomeSummary,
    pub gradient: GradientCoverage,
    /// What `--from-log` took from the outcome log.
    pub log: Option<from_log::LogExport>,
    /// Training-time predictions for a few dev prompts.
    pub samples: Vec<SamplePrediction>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SamplePrediction {
    pub text: String,
    pub prediction: PromptPrediction,
}

/// `--prompt-list-only`: reads the recipe's data and writes `training_prompts.bin` into
/// `--out`; returns how many prompts it lists.
pub fn list_prompts(args: &TrainArgs) -> Result<usize, TrainError> {
    let recipe = Recipe::load(args.recipe_file())?;
    let data = Dataset::load(&recipe, &args.data_dir)?;
    write_training_prompts(&args.out, &data)
}

pub fn run(args: &TrainArgs) -> Result<TrainSummary, TrainError> {
    let started = Instant::now();
    let init = args.init.as_deref().map(materialise_builtin).transpose()?;
    let inherited = args.recipe.is_none() && init.is_some();
    let args = &TrainArgs {
        recipe: Some(recipe_path(args, init.as_deref())?),
        ..args.clone()
    };
    let mut recipe = Recipe::load(args.recipe_file())?;
    if let Some(epochs) = args.epochs {
        recipe.optim.epochs = epochs.max(1);
    }
    if let Some(seed) = args.seed {
        recipe.seed = seed;
    }
    if let Some(lr) = args.theta_lr {
        recipe.optim.theta_lr = lr;
    }
    if let Some(cap) = args.max_prompts {
        for file in &mut recipe.files {
            file.max_prompts = Some(file.max_prompts.map_or(cap, |m| m.min(cap)));
        }
    }
    let mut choice = recipe
        .encoder_choice()
        .map_err(|message| TrainError::Recipe {
            path: args.recipe_file().to_path_buf(),
            message,
        })?;
    let say = |line: String| {
        if !args.quiet {
            eprintln!("{line}");
        }
    };
    if inherited {
        say(format!(
            "recipe: {}, the one --init was trained with",
            args.recipe_file().display()
        ));
    }
    let log = match &args.from_log {
        Some(log) => Some(add_log_file(args, log, &mut recipe)?),
        None => None,
    };
    if let Some(export) = &log {
        say(format!(
            "outcome log: {} answered requests with text, {} graded rows {:?} over {} models",
            export.answered,
            export.rows(),
            export.by_label,
            export.models.len()
        ));
        if export.same_model_preferences > 0 {
            say(format!(
                "outcome log: {} preferences between two answers of one model left out (they say nothing about routing)",
                export.same_model_preferences
            ));
        }
    }
    let warm = match &init {
        Some(dir) => {
            let warm = warm_start(dir, &recipe)?;
            // The directory's shape wins over the recipe's: its heads sit on its shared layer,
            // and each of its ensemble's members is fine-tuned.
            recipe.ensemble = classifier::count_members(|name| warm.heads.contains_key(name));
            let first = classifier::member_prefix(recipe.ensemble, 0);
            let hidden = format!("{first}.{}.weight", classifier::HIDDEN_LAYER);
            recipe.head_hidden = warm.heads.get(&hidden).map_or(0, |w| w.dims()[0]);
            let tool = format!("{first}.{}.weight", classifier::TOOL_LAYER);
            recipe.tool_hidden = warm.heads.get(&tool).map_or(0, |w| w.dims()[0]);
            let queries = format!("{first}.{}", classifier::ATTENTION_QUERIES);
            recipe.attention_queries = warm.heads.get(&queries).map_or(0, |q| q.dims()[0]);
            let positions = format!(
                "{}.{}",
                classifier::CONTEXT_PREFIX,
                classifier::context::QUERY_POSITIONS
            );
            (recipe.context_window, recipe.context_dims) = warm
                .heads
                .get(&positions)
                .map_or((recipe.context_window, 0), |p| (p.dims()[0], p.dims()[1]));
            choice = if is_static_dir(dir) {
                EncoderChoice::Static(dir.clone())
            } else {
                EncoderChoice::Finetune(dir.clone())
            };
            Some(warm)
        }
        None => None,
    };
    let data = Dataset::load(&recipe, &args.data_dir)?;
    if let Some(export) = &log {
        // Read once; the export is this run's alone (`from_log::export`).
        let _ = std::fs::remove_file(&export.path);
    }
    say(data_lines(&data));
    let spread_evidence = match &log {
        Some(export) if recipe.loss.theta_spread > 0.0 => {
            let (evidence, line) = spread_evidence(export, &data);
            say(line);
            Some(evidence)
        }
        _ => None,
    };

    let mut rng = StdRng::seed_from_u64(recipe.seed);
    let (tokenizer, shape) = tokenizer_and_shape(&recipe, &choice, &data)?;
    if recipe.max_tokens > shape.max_position_embeddings {
        return Err(TrainError::Invalid(format!(
            "max_tokens {} exceeds the encoder's {} positions",
            recipe.max_tokens, shape.max_position_embeddings
        )));
    }
    let special = classifier::special_tokens(&tokenizer).map_err(TrainError::Tokenizer)?;
    let tokens = data
        .prompts
        .iter()
        .map(|p| classifier::token_ids(&tokenizer, special, &p.text, recipe.max_tokens))
        .collect::<Result<Vec<_>, _>>()?;

    // The GPU when built with `cuda` (or `metal`) and one is present, else the CPU.
    let mut params = Params::on(classifier::default_device());
    say(format!("training on {:?}", params.device()));
    if recipe.attention_queries > 0 && !matches!(choice, EncoderChoice::Static(_)) {
        return Err(TrainError::Invalid(
            "attention_queries needs a static encoder (encoder = \"static:DIR\")".into(),
        ));
    }
    if recipe.context_dims > 0 && recipe.attention_queries == 0 {
        return Err(TrainError::Invalid(
            "context_dims needs attention_queries: only attention pooling reads the context layer"
                .into(),
        ));
    }
    if recipe.context_dims > 0
        && (recipe.context_dims % classifier::context::HEAD_DIMS != 0 || recipe.context_window == 0)
    {
        return Err(TrainError::Invalid(format!(
            "context_dims must be a multiple of {} and context_window at least 1",
            classifier::context::HEAD_DIMS
        )));
    }
    let mut attention_table = None;
    let encoder = match &choice {
        EncoderChoice::Scratch => {
            Encoder::Trainable(TrainEncoder::new(&shape, &mut params, &mut rng)?)
        }
        EncoderChoice::Finetune(dir) => Encoder::Trainable(TrainEncoder::from_pretrained(
            &shape,
            &dir.join("model.safetensors"),
            &mut params,
            &mut rng,
        )?),
        EncoderChoice::Frozen(dir) => {
            let keys: Vec<String> = data.prompts.iter().map(|p| p.text.clone()).collect();
            Encoder::Frozen(frozen::embed(
                dir,
                &tokens,
                &keys,
                special.pad,
                &args.cache_dir,
                args.quiet,
                params.device(),
            )?)
        }
        EncoderChoice::Static(dir) => {
            let table = load_static(dir, special)?;
            let pooled = table.pool(&tokens, params.device())?;
            attention_table = (recipe.attention_queries > 0).then_some(table);
            Encoder::Frozen(pooled)
        }
    };
    let mut model = Model::new(
        params,
        encoder,
        shape.hidden_size,
        &recipe,
        &data,
        special.pad,
        warm.as_ref(),
        attention_table,
        &mut rng,
    )?;
    if let Some(evidence) = &spread_evidence {
        model.spread = fit::spread_weights(recipe.loss.theta_spread, &data.models, evidence);
    }
    if let Some(spec) = &recipe.distill {
        let targets = distill::teacher_targets(
            spec,
            &data,
            &recipe.skills,
            model.params.device(),
            args.quiet,
        )?;
        say(format!(
            "distilling {} (weight {}): θ for {} of {} models",
            spec.teacher,
            spec.weight,
            targets.models_known,
            data.models.len()
        ));
        model.distill = Some(targets);
    }
    let baseline = fit::model_only_baseline(&data);
    let fitted = fit::train(&model, &data, &tokens, &recipe, &mut rng, args.quiet)?;
    let gradient = fitted.gradient;
    if !gradient.without_gradient.is_empty() {
        say(format!(
            "warning: {} of {} variables got no gradient on the first step: {}",
            gradient.without_gradient.len(),
            gradient.total,
            gradient.without_gradient.join(", ")
        ));
    }

    let sample_ids: Vec<usize> = (0..data.prompts.len())
        .filter(|&i| data.prompts[i].dev)
        .chain((0..data.prompts.len()).filter(|&i| !data.prompts[i].dev))
        .take(SAMPLES)
        .collect();
    let samples = model
        .predict(&sample_ids, &tokens)?
        .into_iter()
        .zip(&sample_ids)
        .map(|(prediction, &i)| SamplePrediction {
            text: data.prompts[i].text.clone(),
            prediction,
        })
        .collect();
    let mut summary = TrainSummary {
        out: args.out.clone(),
        data: data.report.clone(),
        epochs: fitted.epochs,
        selected_epoch: fitted.selected_epoch,
        baseline,
        gradient,
        log,
        samples,
        seconds: 0.0,
    };
    summary.seconds = started.elapsed().as_secs_f64();
    let metadata = metadata(args, &recipe, &choice, &shape, &data, &model, &summary)?;
    write_model_dir(&args.out, &choice, &shape, &tokenizer, &model, &metadata)?;
    write_training_prompts(&args.out, &data)?;
    say(format!(
        "wrote {} ({:.1} MB) in {:.0} s; dev baseline (model only): AUC {}",
        args.out.display(),
        dir_size(&args.out) as f64 / 1e6,
        summary.seconds,
        summary
            .baseline
            .auc
            .map_or("-".into(), |a| format!("{a:.4}"))
    ));
    Ok(summary)
}

/// The evidence that fades the recipe's θ spread penalty in the retrain on `export`
/// ([`fit::spread_weights`]): the log's graded answers per model, or none, and a line that
/// says which.
///
/// The penalty stands in for data the public sets lack. For the models the log grades it fades
/// with their graded answers: the log is the deployment's own evidence on them (20% of RouteLLM
/// MMLU replayed, 2,833 answers of each of two models: APGR 0.592 faded, 0.574 with K = 1000,
/// 0.597 released for every model). Released outright on a few hundred answers, a model's
/// skills overfit them (200 of Yi-34B's RouterBench answers: `auto` sent Yi 86% of calls at
/// quality 0.812, below its 0.845 target; faded, 12% at 0.886, near the full data's 18% at
/// 0.885; 10% of AlpacaEval replayed: gpt-3.5/alpaca-7b APGR 0.445 released, 0.589 faded).
/// The models the log does not grade keep it: nothing new moves them. Preferences constrain
/// only the difference between two models along the prompt's mix, with no difficulty to
/// absorb the rest; released, the skills drifted apart on them (Chatbot Arena battles, 40%
/// replayed: the predicted winner won 63.9% instead of 71.1%), so a log that holds preferences
/// keeps it for every model.
fn spread_evidence(
    export: &from_log::LogExport,
    data: &Dataset,
) -> (BTreeMap<String, usize>, String) {
    if export.by_label.contains_key("preference") {
        let line =
            "outcome log: θ's skills held together for every model (the log holds preferences)";
        return (BTreeMap::new(), line.into());
    }
    let graded: Vec<String> = data
        .log_graded
        .iter()
        .map(|(model, n)| format!("{model} ({n})"))
        .collect();
    let line = format!(
        "outcome log: θ's spread penalty fades with graded answers (K/(K+n), K = {}) for {}; the other models keep the recipe's",
        fit::SPREAD_RELEASE_ROWS,
        graded.join(", ")
    );
    (data.log_graded.clone(), line)
}

/// Exports the log's graded answers and adds them to the recipe as one more outcome file.
fn add_log_file(
    args: &TrainArgs,
    log: &str,
    recipe: &mut Recipe,
) -> Result<from_log::LogExport, TrainError> {
    let since_ms = match &args.log_since {
        Some(text) => triage_gateway::outcomes::parse_date(text).ok_or_else(|| {
            TrainError::Invalid(format!(
                "--log-since {text}: expected a date like 2026-11-25"
            ))
        })?,
        None => 0,
    };
    let export = from_log::export(log, since_ms, &args.cache_dir)?;
    if export.rows() == 0 {
        return Err(TrainError::Invalid(format!(
            "the outcome log has no graded answers ({} answered requests with text): give              feedback, run `triage label --judge MODEL`, or log with [log] store_text = true",
            export.answered
        )));
    }
    let absolute = std::path::absolute(&export.path).map_err(|e| TrainError::File {
        path: export.path.clone(),
        message: e.to_string(),
    })?;
    recipe.files.push(recipe::FileSpec {
        path: absolute.display().to_string(),
        kind: recipe::FileKind::Outcomes,
        prompts: None,
        weight: args.log_weight,
        max_prompts: None,
        keep_held_out: true,
        extra_negatives: 0,
        negative_sources: Vec::new(),
        level: None,
        label_weight: 1.0,
        sources: Vec::new(),
        strip_greetings: false,
        positive_contains: Vec::new(),
    });
    Ok(export)
}

/// `--init builtin` (when no directory has that name): the model compiled into the binary,
/// written out to a temporary directory so that a binary installed alone can retrain.
fn materialise_builtin(init: &Path) -> Result<PathBuf, TrainError> {
    if init != Path::new(classifier::BUILTIN_MODEL) || init.is_dir() {
        return Ok(init.to_path_buf());
    }
    let dir = std::env::temp_dir().join(format!("triage-builtin-{}", std::process::id()));
    classifier::builtin::write_to(&dir).map_err(|e| TrainError::File {
        path: dir.clone(),
        message: e.to_string(),
    })?;
    Ok(dir)
}

/// The heads and θ of a trained directory, checked against the recipe's skills.
fn warm_start(dir: &Path, recipe: &Recipe) -> Result<Warm, TrainError> {
    let metadata = classifier::load_metadata(dir)?;
    if metadata.skills != recipe.skills {
        return Err(TrainError::Invalid(format!(
            "--init {}: its skills {:?} differ from the recipe's {:?}",
            dir.display(),
            metadata.skills,
            recipe.skills
        )));
    }
    let mut heads = std::collections::HashMap::new();
    let prefix = format!("{HEADS_PREFIX}.");
    for name in ["model.safetensors", HEADS_FILE] {
        let path = dir.join(name);
        if path.exists() {
            let tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
            heads.extend(tensors.into_iter().filter(|(n, _)| n.starts_with(&prefix)));
        }
    }
    Ok(Warm {
        heads,
        abilities: metadata.abilities,
    })
}

fn tokenizer_and_shape(
    recipe: &Recipe,
    choice: &EncoderChoice,
    data: &Dataset,
) -> Result<(Tokenizer, BertShape), TrainError> {
    match choice {
        EncoderChoice::Scratch => {
            let texts = data
                .prompts
                .iter()
                .filter(|p| !p.dev)
                .map(|p| p.text.as_str());
            let s = &recipe.scratch;
            let tokenizer = vocab::train_tokenizer(texts, s.vocab_size, s.alphabet)?;
            let shape = BertShape {
                vocab_size: tokenizer.get_vocab_size(true),
                hidden_size: s.hidden,
                num_hidden_layers: s.layers,
                num_attention_heads: s.attention_heads,
                intermediate_size: s.intermediate,
                hidden_act: s.activation.clone(),
                hidden_dropout_prob: 0.0,
                max_position_embeddings: recipe.max_tokens,
                type_vocab_size: 2,
                initializer_range: 0.02,
                layer_norm_eps: 1e-12,
                pad_token_id: 0,
                model_type: "bert".into(),
            };
            Ok((tokenizer, shape))
        }
        EncoderChoice::Static(dir) => {
            let tokenizer = classifier::load_tokenizer(&dir.join(TOKENIZER_FILE))?;
            let config = static_config(dir)?;
            let shape = BertShape {
                vocab_size: config.vocab_size,
                hidden_size: config.hidden_size,
                num_hidden_layers: 0,
                num_attention_heads: 0,
                intermediate_size: 0,
                hidden_act: String::new(),
                hidden_dropout_prob: 0.0,
                // A table lookup has no position limit; the recipe's max_tokens bounds the cost.
                max_position_embeddings: usize::MAX,
                type_vocab_size: 0,
                initializer_range: 0.0,
                layer_norm_eps: 0.0,
                pad_token_id: 0,
                model_type: classifier::static_embedding::MODEL_TYPE.into(),
            };
            Ok((tokenizer, shape))
        }
        EncoderChoice::Frozen(dir) | EncoderChoice::Finetune(dir) => {
            let tokenizer = classifier::load_tokenizer(&dir.join(TOKENIZER_FILE))?;
            let path = dir.join(CONFIG_FILE);
            let text = std::fs::read_to_string(&path).map_err(|e| TrainError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let shape = serde_json::from_str(&text).map_err(|e| TrainError::File {
                path,
                message: e.to_string(),
            })?;
            Ok((tokenizer, shape))
        }
    }
}

fn encoder_description(choice: &EncoderChoice, shape: &BertShape) -> String {
    let name = |dir: &Path| {
        let name = dir.display().to_string();
        if name.contains("minilm") {
            "all-MiniLM-L6-v2".to_string()
        } else {
            name
        }
    };
    match choice {
        EncoderChoice::Scratch => format!(
            "scratch {}x{} ({} heads, ffn {}, {}, vocab {})",
            shape.num_hidden_layers,
            shape.hidden_size,
            shape.num_attention_heads,
            shape.intermediate_size,
            shape.hidden_act,
            shape.vocab_size
        ),
        EncoderChoice::Frozen(dir) => format!("{} frozen", name(dir)),
        EncoderChoice::Static(dir) => static_config(dir)
            .map(|c| c.source)
            .unwrap_or_else(|_| format!("static embeddings from {}", dir.display())),
        EncoderChoice::Finetune(dir) => format!("{} fine-tuned", name(dir)),
    }
}

fn metadata(
    args: &TrainArgs,
    recipe: &Recipe,
    choice: &EncoderChoice,
    shape: &BertShape,
    data: &Dataset,
    model: &Model,
    summary: &TrainSummary,
) -> Result<Metadata, TrainError> {
    let abilities: BTreeMap<String, Vec<f32>> =
        data.models.iter().cloned().zip(model.theta()?).collect();
    let (ability_map, ability_maps) = fit_ability_maps(recipe, data, &abilities)?;
    let parameters: usize = model
        .params
        .entries()
        .iter()
        .filter(|(n, _)| n != fit::THETA)
        .map(|(_, v)| v.elem_count())
        .sum();
    let training = json!({
        "recipe_file": args.recipe_file(),
        "recipe": recipe,
        "data_dir": args.data_dir,
        "data": summary.data,
        "models": data.models.len(),
        "trained_parameters": parameters,
        "epochs": summary.epochs,
        "selected_epoch": summary.selected_epoch,
        "dev_baseline_model_only": summary.baseline,
        "from_log": summary.log,
        "init": args.init,
        "gradient_coverage": summary.gradient,
        "seed": recipe.seed,
        "git_revision": git_revision(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "seconds": summary.seconds.round(),
    });
    Ok(Metadata {
        format_version: FORMAT_VERSION,
        skills: recipe.skills.clone(),
        max_tokens: recipe.max_tokens,
        encoder: encoder_description(choice, shape),
        abilities,
        ability_map,
        ability_maps,
        training,
    })
}

/// The recipe's maps (`ability_map`, then `ability_maps`), fitted on `abilities`.
fn fit_ability_maps(
    recipe: &Recipe,
    data: &Dataset,
    abilities: &BTreeMap<String, Vec<f32>>,
) -> Result<(Option<AbilityMap>, Vec<AbilityMap>), TrainError> {
    let fit = |spec: &AbilityMapSpec| -> Result<AbilityMap, TrainError> {
        let accuracies = map_accuracies(spec, data)?;
        Ok(fit_ability_map(spec, &accuracies, recipe, abilities))
    };
    let first = recipe.ability_map.as_ref().map(fit).transpose()?;
    let rest = recipe
        .ability_maps
        .iter()
        .map(fit)
        .collect::<Result<_, _>>()?;
    Ok((first, rest))
}

/// Each model's accuracy on the map's benchmark: its mean score over the outcome file, or its
/// published number from the scores file.
fn map_accuracies(
    spec: &AbilityMapSpec,
    data: &Dataset,
) -> Result<BTreeMap<String, f64>, TrainError> {
    if let Some(file) = &spec.file {
        return Ok(data.model_means.get(file).cloned().unwrap_or_default());
    }
    // `Recipe::load` made it relative to the recipe's folder already.
    let path = PathBuf::from(spec.scores.as_deref().unwrap_or_default());
    let file_error = |message: String| TrainError::File {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| file_error(e.to_string()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
    let models = table.get("models").and_then(toml::Value::as_array);
    Ok(models
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let name = m.get("name")?.as_str()?;
            let score = m.get(&spec.benchmark)?.as_float()?;
            Some((name.to_string(), score))
        })
        .collect())
}

/// `--refit-ability-maps`: fits the recipe's maps again on the θ stored in `--out` and rewrites
/// its `triage.json` (weights untouched); for a new public score file or a new map.
pub fn refit_ability_maps(args: &TrainArgs) -> Result<Metadata, TrainError> {
    let recipe = Recipe::load(args.recipe_file())?;
    let data = Dataset::load(&recipe, &args.data_dir)?;
    let mut metadata = classifier::load_metadata(&args.out)?;
    let (first, rest) = fit_ability_maps(&recipe, &data, &metadata.abilities)?;
    metadata.ability_map = first;
    metadata.ability_maps = rest;
    if let Some(training) = metadata.training.as_object_mut() {
        training.insert(
            "ability_maps_refit".into(),
            json!({
                "recipe_file": args.recipe_file(),
                "command": std::env::args().collect::<Vec<_>>().join(" "),
                "git_revision": git_revision(),
            }),
        );
    }
    let text = serde_json::to_string_pretty(&metadata).expect("metadata serialises");
    let path = args.out.join(METADATA_FILE);
    std::fs::write(&path, text + "\n").map_err(|e| TrainError::File {
        path,
        message: e.to_string(),
    })?;
    Ok(metadata)
}

/// Least squares, per skill, of θ_k on logit(accuracy) over the models with both.
fn fit_ability_map(
    spec: &AbilityMapSpec,
    accuracies: &BTreeMap<String, f64>,
    recipe: &Recipe,
    abilities: &BTreeMap<String, Vec<f32>>,
) -> AbilityMap {
    let points: Vec<(f64, &Vec<f32>, &String)> = accuracies
        .iter()
        .filter_map(|(name, &accuracy)| {
            let theta = abilities.get(recipe.aliases.get(name).unwrap_or(name))?;
            let p = accuracy.clamp(0.01, 0.99);
            Some(((p / (1.0 - p)).ln(), theta, name))
        })
        .collect();
    let k = recipe.skills.len();
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n.max(1.0);
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let (mut intercept, mut slope, mut r2) = (vec![0f32; k], vec![0f32; k], vec![0f64; k]);
    for skill in 0..k {
        let mean_y = points.iter().map(|p| p.1[skill] as f64).sum::<f64>() / n.max(1.0);
        let sxy: f64 = points
            .iter()
            .map(|p| (p.0 - mean_x) * (p.1[skill] as f64 - mean_y))
            .sum();
        let syy: f64 = points
            .iter()
            .map(|p| (p.1[skill] as f64 - mean_y).powi(2))
            .sum();
        let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        slope[skill] = b as f32;
        intercept[skill] = (mean_y - b * mean_x) as f32;
        r2[skill] = if sxx > 0.0 && syy > 0.0 {
            sxy * sxy / (sxx * syy)
        } else {
            0.0
        };
    }
    AbilityMap {
        benchmark: spec.benchmark.clone(),
        intercept,
        slope,
        fit: json!({
            "file": spec.file,
            "scores": spec.scores,
            "x": if spec.file.is_some() {
                "logit of each model's mean score over all rows of the file (the benchmark as the source ran it)"
            } else {
                "logit of each model's published score in the scores file (sources there)"
            },
            "models": points.iter().map(|p| json!({"model": p.2, "logit_accuracy": p.0})).collect::<Vec<_>>(),
            "r2_per_skill": r2,
        }),
    }
}

/// Writes the model directory. A frozen encoder's own files are copied beside the heads.
fn write_model_dir(
    out: &Path,
    choice: &EncoderChoice,
    shape: &BertShape,
    tokenizer: &Tokenizer,
    model: &Model,
    metadata: &Metadata,
) -> Result<(), TrainError> {
    let io = |path: &Path, e: std::io::Error| TrainError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    // Read before the clean-up below: `--init` may name the output directory itself.
    let static_files = match choice {
        EncoderChoice::Static(dir) => Some(
            STATIC_FILES
                .map(|name| std::fs::read(dir.join(name)).map_err(|e| io(&dir.join(name), e))),
        ),
        _ => None,
    };
    // Every *.safetensors in the directory is loaded: stale ones must go.
    for entry in std::fs::read_dir(out).map_err(|e| io(out, e))?.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
        }
    }
    let heads_prefix = format!("{HEADS_PREFIX}.");
    match choice {
        EncoderChoice::Static(_) => {
            for (name, bytes) in STATIC_FILES.iter().zip(static_files.expect("read above")) {
                std::fs::write(out.join(name), bytes?).map_err(|e| io(&out.join(name), e))?;
            }
            model
                .params
                .save_where(&out.join(HEADS_FILE), |n| n.starts_with(&heads_prefix))?;
        }
        EncoderChoice::Frozen(dir) => {
            for name in [CONFIG_FILE, TOKENIZER_FILE] {
                std::fs::copy(dir.join(name), out.join(name))
                    .map_err(|e| io(&dir.join(name), e))?;
            }
            // The encoder's weights, less any heads it had: these heads replace them.
            let mut weights =
                candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?;
            weights.retain(|name, _| !name.starts_with(&heads_prefix));
            candle_core::safetensors::save(&weights, out.join("model.safetensors"))?;
            model
                .params
                .save_where(&out.join(HEADS_FILE), |n| n.starts_with(&heads_prefix))?;
        }
        EncoderChoice::Scratch | EncoderChoice::Finetune(_) => {
            let config = serde_json::to_string_pretty(shape).expect("a config serialises");
            std::fs::write(out.join(CONFIG_FILE), config + "\n")
                .map_err(|e| io(&out.join(CONFIG_FILE), e))?;
            tokenizer
                .save(out.join(TOKENIZER_FILE), false)
                .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
            model
                .params
                .save_where(&out.join("model.safetensors"), |n| n != fit::THETA)?;
        }
    }
    let text = serde_json::to_string_pretty(metadata).expect("metadata serialises");
    std::fs::write(out.join(METADATA_FILE), text + "\n")
        .map_err(|e| io(&out.join(METADATA_FILE), e))?;
    Ok(())
}

/// A static-embedding directory's own files, copied into every model trained on it.
const STATIC_FILES: [&str; 3] = [CONFIG_FILE, TOKENIZER_FILE, "model.safetensors"];

fn is_static_dir(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(CONFIG_FILE))
        .is_ok_and(|text| classifier::StaticConfig::is_static(&text))
}

fn static_config(dir: &Path) -> Result<classifier::StaticConfig, TrainError> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::File {
        path: path.clone(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| TrainError::File {
        path,
        message: e.to_string(),
    })
}

/// The table of a static-embedding directory, on the CPU (pooling happens once, up front);
/// `special`: its tokenizer's special tokens, left out of the mean.
fn load_static(
    dir: &Path,
    special: classifier::SpecialTokens,
) -> Result<classifier::StaticEmbedding, TrainError> {
    let config = static_config(dir)?;
    let weights = dir.join("model.safetensors");
    // SAFETY: the file is mapped read-only and not modified while the table is read.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[&weights],
            candle_core::DType::F32,
            &Device::Cpu,
        )
    }?;
    let skip = vec![special.cls, special.sep, special.pad];
    Ok(classifier::StaticEmbedding::load(vb, &config, skip)?)
}

/// `training_prompts.bin`: the hash of every prompt the run read (train and dev split), sorted,
/// so that `eval` can leave prompts seen in training out of its measurements. Returns how many.
fn write_training_prompts(out: &Path, data: &Dataset) -> Result<usize, TrainError> {
    let mut hashes: Vec<u64> = data
        .prompts
        .iter()
        .map(|p| crate::eval::prompt_hash(&p.text))
        .collect();
    hashes.sort_unstable();
    hashes.dedup();
    let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.to_le_bytes()).collect();
    let path = out.join(crate::eval::classifier::TRAINING_PROMPTS_FILE);
    std::fs::create_dir_all(out)
        .and_then(|_| std::fs::write(&path, bytes))
        .map_err(|e| TrainError::File {
            path,
            message: e.to_string(),
        })?;
    Ok(hashes.len())
}

fn data_lines(data: &Dataset) -> String {
    let mut lines = Vec::new();
    for f in &data.report.files {
        let removed: usize = f.removed_overlap.values().sum();
        lines.push(format!(
            "  {}: {} rows ({} without score), {} prompts, {} repeats, {} overlapping held-out sets removed, {} merged with earlier files, {} capped, {} filtered out, {} kept",
            f.file,
            f.rows,
            f.missing_scores,
            f.prompts,
            f.repeated_prompts,
            removed,
            f.merged_with_earlier_file,
            f.capped,
            f.filtered,
            f.kept
        ));
    }
    let r = &data.report;
    lines.push(format!(
        "  {} models; train {} prompts / {} outcome rows, dev {} prompts / {} rows; {} extra tool-need negatives; skill labels {:?}",
        data.models.len(),
        r.train_prompts,
        r.train_outcome_rows,
        r.dev_prompts,
        r.dev_outcome_rows,
        r.extra_tool_negatives,
        r.skill_labels
    ));
    format!("data:\n{}", lines.join("\n"))
}

fn git_revision() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(rev) if run(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty()) => {
            format!("{rev}+dirty")
        }
        Some(rev) => rev,
        None => "unknown".into(),
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_with_preferences_keeps_the_theta_spread_and_a_graded_one_frees_its_models() {
        let data = Dataset {
            prompts: Vec::new(),
            models: vec!["graded".into(), "public".into()],
            model_means: Default::default(),
            log_graded: [("graded".to_string(), 40)].into(),
            report: Default::default(),
        };
        let mut export = from_log::LogExport::default();
        export.by_label.insert("feedback", 40);
        let (evidence, _) = spread_evidence(&export, &data);
        let faded = fit::SPREAD_RELEASE_ROWS / (fit::SPREAD_RELEASE_ROWS + 40.0);
        assert_eq!(
            fit::spread_weights(1.0, &data.models, &evidence),
            vec![faded as f32, 1.0]
        );
        export.by_label.insert("preference", 2);
        let (evidence, line) = spread_evidence(&export, &data);
        assert_eq!(
            fit::spread_weights(1.0, &data.models, &evidence),
            vec![1.0, 1.0]
        );
        assert!(line.contains("preferences"), "{line}");
    }
}
