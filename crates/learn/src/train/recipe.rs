//! The training recipe: a TOML file that says which data to read, how to weigh and cap it, which
//! encoder to fit and with what optimiser settings. `training/default.toml` rebuilds the shipped
//! model; every field is documented there.
//!
//! Not for: reading the data itself (`data`) or running the fit (`fit`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TrainError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Seeds initialisation, shuffling and the sampling of extra tool-need negatives.
    pub seed: u64,
    /// Share of prompts (by a stable hash of the prompt's stem) kept for dev metrics.
    #[serde(default = "default_dev_fraction")]
    pub dev_fraction: f64,
    /// Token budget per prompt, `[CLS]`/`[SEP]` included.
    pub max_tokens: usize,
    /// Skill names, in head order.
    pub skills: Vec<String>,
    /// `scratch`, `frozen:<dir>` (heads over a fixed pretrained BERT) or `finetune:<dir>`.
    pub encoder: String,
    /// Give the difficulty head the prompt's length too (`classifier::length_feature`).
    #[serde(default)]
    pub length_input: bool,
    /// Attention pooling beside the mean, with this many learned queries (static encoders
    /// only; 0: the mean alone). See `StaticEmbedding::attend`.
    #[serde(default)]
    pub attention_queries: usize,
    /// Width of a contextual self-attention layer over the static token vectors, under the
    /// attention pooling (0: none; a multiple of `classifier::context::HEAD_DIMS`). See
    /// `classifier::context`.
    #[serde(default)]
    pub context_dims: usize,
    /// Tokens per window of the contextual layer: a token attends only within its window.
    #[serde(default = "default_context_window")]
    pub context_window: usize,
    /// Head sets trained side by side on one θ, each from its own initialisation, and averaged
    /// when predicting (1: a single set). They share the batch order, so averaging steadies
    /// what the initialisation decides, not what the order does (training/README.md).
    #[serde(default = "single")]
    pub ensemble: usize,
    /// Width of a shared ReLU layer between the pooled vector and the heads (0: none, the
    /// heads read the pooled vector directly).
    #[serde(default)]
    pub head_hidden: usize,
    /// Width of a ReLU layer of the tool head's own, on the pooled vector (0: the tool head
    /// reads the shared layer like the others). Its input is detached, so tool labels shape
    /// this branch alone, not the features that difficulty and the skills read.
    #[serde(default)]
    pub tool_hidden: usize,
    /// Give every prompt that needs a tool the `tool_use` skill label (unless a rule or the
    /// file labels it otherwise). Off, the tool head alone carries tool need into g(x).
    #[serde(default = "yes")]
    pub tool_positives_skill: bool,
    /// Outcome rows of these models (as the data names them) are left out, and so are battles
    /// they fought: a model held back as "new" (the new-model experiment). The outcome log's
    /// rows (`train --from-log`) are kept: they are what a retrain learns the model from.
    #[serde(default)]
    pub exclude_models: Vec<String>,
    #[serde(default)]
    pub scratch: ScratchShape,
    #[serde(default)]
    pub optim: Optim,
    #[serde(default)]
    pub loss: LossWeights,
    /// Training files, relative to `--data-dir`.
    pub files: Vec<FileSpec>,
    /// Files never trained on; training prompts whose stem appears in them are removed.
    #[serde(default)]
    pub held_out: Vec<String>,
    /// Model names merged under one ability vector: `"name in data" = "name in triage.json"`.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// Weak skill labels, first match wins.
    #[serde(default)]
    pub skill_rules: Vec<SkillRule>,
    /// Fit θ against a public benchmark score, for catalog models without outcome data.
    pub ability_map: Option<AbilityMapSpec>,
    /// More maps, for catalog models without the first map's score (tried in order).
    #[serde(default)]
    pub ability_maps: Vec<AbilityMapSpec>,
    /// Also fit a trained model's predictions (distillation from a bigger encoder).
    pub distill: Option<DistillSpec>,
}

/// A teacher whose predicted q_m(x), for every prompt and every model it knows, the student
/// fits as soft targets beside the outcome rows (`train::distill`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillSpec {
    /// The teacher's model directory, as `triage train` writes it (relative to the working
    /// directory, like the encoder's).
    pub teacher: String,
    /// Weight of the distillation loss, relative to the outcome loss (weight 1).
    #[serde(default = "default_distill_weight")]
    pub weight: f64,
}

fn default_distill_weight() -> f64 {
    1.0
}

/// θ_k ≈ intercept_k + slope_k · logit(accuracy), fitted over the training models whose
/// accuracy is known: from `file` (each model's mean score over all its rows) or from
/// `scores` (published numbers).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbilityMapSpec {
    /// The catalog field the map reads (`mmlu_pro` or `gpqa`).
    pub benchmark: String,
    /// An outcome file of the recipe whose rows are that benchmark.
    #[serde(default)]
    pub file: Option<String>,
    /// A TOML file (relative to the recipe) of `[[models]]` with `name` and a `<benchmark>`
    /// accuracy, such as `public_scores.toml`, relative to the recipe that names it.
    #[serde(default)]
    pub scores: Option<String>,
}

/// Shape of an encoder trained from scratch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScratchShape {
    pub layers: usize,
    pub hidden: usize,
    pub attention_heads: usize,
    pub intermediate: usize,
    /// `relu` or `gelu`.
    pub activation: String,
    /// WordPiece vocabulary size, special tokens included.
    pub vocab_size: usize,
    /// Characters kept in the WordPiece alphabet (the most frequent).
    pub alphabet: usize,
}

impl Default for ScratchShape {
    fn default() -> Self {
        ScratchShape {
            layers: 2,
            hidden: 128,
            attention_heads: 4,
            intermediate: 256,
            activation: "relu".into(),
            vocab_size: 8000,
            alphabet: 600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Optim {
    pub epochs: usize,
    /// Prompts per step.
    pub batch_size: usize,
    /// Peak learning rate of the encoder and heads (AdamW, linear warm-up, cosine decay).
    pub lr: f64,
    /// Learning rate of a pretrained encoder being fine-tuned (`lr` when unset).
    pub encoder_lr: Option<f64>,
    /// Learning rate of the ability table θ.
    pub theta_lr: f64,
    pub weight_decay: f64,
    /// Share of all steps spent warming up.
    pub warmup: f64,
    /// Stop after this many prompts per epoch (0: all); for smoke runs and CPU fine-tuning.
    pub max_prompts_per_epoch: usize,
    /// BERT's hidden dropout while training a trainable encoder.
    pub dropout: f64,
    /// End with the weights of the epoch with the lowest dev outcome log-loss (else the last).
    pub keep_best: bool,
}

impl Default for Optim {
    fn default() -> Self {
        Optim {
            epochs: 4,
            batch_size: 32,
            lr: 1e-3,
            encoder_lr: None,
            theta_lr: 1e-2,
            weight_decay: 0.01,
            warmup: 0.05,
            max_prompts_per_epoch: 0,
            dropout: 0.1,
            keep_best: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossWeights {
    /// Weight of the auxiliary cross-entropy on weak skill labels.
    pub skill: f64,
    /// Weight of the tool-need binary cross-entropy.
    pub tool: f64,
    /// L2 penalty on θ (pins the shift shared by θ and b).
    pub theta_l2: f64,
    /// L2 penalty on each model's per-skill deviation from its own mean ability: a model seen
    /// on one kind of prompt only keeps its skills near its general ability instead of drifting
    /// where no data holds them.
    #[serde(default)]
    pub theta_spread: f64,
    /// Binary cross-entropy of σ(b(x)) on easy (0) / hard (1) labels.
    #[serde(default)]
    pub level: f64,
    /// Bradley–Terry loss on pairwise outcomes (rows with an `opponent`), relative to the
    /// graded outcome loss.
    #[serde(default = "one")]
    pub pairwise: f64,
    /// Weight skill, tool-need and level labels so that each class counts alike over the
    /// training prompts (the chat classes are rare next to the exam ones).
    #[serde(default)]
    pub balance_classes: bool,
}

impl Default for LossWeights {
    fn default() -> Self {
        LossWeights {
            skill: 0.3,
            tool: 0.5,
            theta_l2: 1e-3,
            theta_spread: 0.0,
            level: 0.0,
            pairwise: 1.0,
            balance_classes: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// `source, subset, prompt_id, prompt, model, label, score` rows.
    #[default]
    Outcomes,
    /// `source, prompt, needs_tool` rows.
    ToolNeed,
    /// Prompts with labels but no outcomes: `prompt`, and any of `topic` (matched by skill
    /// rules as the subset), `skills` (the first is the prompt's skill label), `tool_need`
    /// (0/1) and `level` (`easy`/`hard`). E.g. Arena-Hard's topics, the hand-written seeds.
    Labels,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub path: String,
    #[serde(default)]
    pub kind: FileKind,
    /// `prompt_id → prompt` file for outcome rows without prompt text.
    pub prompts: Option<String>,
    /// Weight of each of this file's prompts in the outcome loss.
    #[serde(default = "one")]
    pub weight: f64,
    /// Keep at most this many prompts (chosen by a stable hash, after overlap removal).
    pub max_prompts: Option<usize>,
    /// tool_need only: this many prompts of the outcome files are added as "needs no tool".
    #[serde(default)]
    pub extra_negatives: usize,
    /// Keep prompts that are also in a held-out file. Set for the outcome log (`--from-log`):
    /// held-out removal keeps public training data off the public benchmarks, and the user's
    /// own traffic is not public data; `eval` still leaves any prompt seen in training out
    /// (`training_prompts.bin`).
    #[serde(default)]
    pub keep_held_out: bool,
    /// tool_need only: draw the extra negatives from these sources (all outcome prompts when
    /// empty). Short questions make the negatives that teach "a question is not a tool call".
    #[serde(default)]
    pub negative_sources: Vec<String>,
    /// labels only: the level of rows that name none (`easy` or `hard`).
    pub level: Option<String>,
    /// Weight of this file's prompts in the skill, tool-need and level losses.
    #[serde(default = "one")]
    pub label_weight: f64,
    /// tool_need only: read only rows of these sources (all when empty).
    #[serde(default)]
    pub sources: Vec<String>,
    /// tool_need only: cut a leading greeting ("Hey chatbot! …") from prompts that need a tool,
    /// so that the greeting is not what the tool head learns.
    #[serde(default)]
    pub strip_greetings: bool,
    /// tool_need only: keep a positive only when its lowercased text contains one of these
    /// (words of live data, the user's own records or an action). MetaTool labels a request
    /// positive when some plugin could serve it ("tell me a joke", "what is a stock?"), which is
    /// not "cannot be answered without a tool". Empty: every positive. In a recipe file a string
    /// names a list of its `[word_lists]` instead (`Recipe::parse_in`).
    #[serde(default)]
    pub positive_contains: Vec<String>,
}

/// A weak skill label: a prompt matching every given condition gets `skill`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkillRule {
    pub skill: String,
    /// The row's `source` equals this.
    pub source: Option<String>,
    /// The row's `subset` starts with one of these.
    #[serde(default)]
    pub subset: Vec<String>,
    /// The row's `subset` (a labelled file's lowercased `topic`) contains one of these.
    #[serde(default)]
    pub subset_contains: Vec<String>,
    /// The lowercased prompt contains one of these.
    #[serde(default)]
    pub contains: Vec<String>,
    /// The lowercased prompt starts with one of these.
    #[serde(default)]
    pub starts_with: Vec<String>,
    /// The prompt has at least this many characters.
    pub min_chars: Option<usize>,
    /// The prompt has at most this many characters.
    pub max_chars: Option<usize>,
    /// `easy` or `hard`: the level a matching prompt takes when its file and row name none.
    /// On chat the task kind says most of what separates a strong model from a weak one (code,
    /// maths and puzzles do; rewrites and chit-chat do not), so a rule can say it.
    pub level: Option<String>,
}

fn default_dev_fraction() -> f64 {
    0.1
}

fn default_context_window() -> usize {
    32
}

fn yes() -> bool {
    true
}

fn single() -> usize {
    1
}

fn one() -> f64 {
    1.0
}

/// Which encoder a recipe asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum EncoderChoice {
    Scratch,
    Frozen(PathBuf),
    Finetune(PathBuf),
    /// Static token embeddings (`triage distill-static`), fixed; only the heads and θ train.
    Static(PathBuf),
}

impl Recipe {
    pub fn load(path: &Path) -> Result<Recipe, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Recipe {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Recipe::parse_in(&text, dir).map_err(|message| TrainError::Recipe {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses a recipe; `base = "other.toml"` (relative to `dir`) starts from another recipe,
    /// whose tables this one's keys override (arrays, such as `files`, are replaced whole).
    /// Then `drop_files` removes entries of the merged `files`, and a `positive_contains` that
    /// is a string names a list of `[word_lists]`: so a variant of a recipe states what it
    /// changes instead of repeating the rest.
    pub fn parse_in(text: &str, dir: &Path) -> Result<Recipe, String> {
        let mut value = merged_value(text, dir, 0)?;
        drop_files(&mut value)?;
        expand_word_lists(&mut value)?;
        let recipe: Recipe = value
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        recipe.validate()?;
        Ok(recipe)
    }

    pub fn parse(text: &str) -> Result<Recipe, String> {
        Recipe::parse_in(text, Path::new("."))
    }

    pub fn encoder_choice(&self) -> Result<EncoderChoice, String> {
        match self.encoder.split_once(':') {
            None if self.encoder == "scratch" => Ok(EncoderChoice::Scratch),
            Some(("frozen", dir)) if !dir.is_empty() => Ok(EncoderChoice::Frozen(dir.into())),
            Some(("finetune", dir)) if !dir.is_empty() => Ok(EncoderChoice::Finetune(dir.into())),
            Some(("static", dir)) if !dir.is_empty() => Ok(EncoderChoice::Static(dir.into())),
            _ => Err(format!(
                "encoder {:?} is not `scratch`, `frozen:<dir>`, `finetune:<dir>` or `static:<dir>`",
                self.encoder
            )),
        }
    }

    fn validate(&self) -> Result<(), String> {
        self.encoder_choice()?;
        if self.skills.is_empty() {
            return Err("skills is empty".into());
        }
        if !(0.0..1.0).contains(&self.dev_fraction) {
            return Err(format!(
                "dev_fraction {} is not in [0, 1)",
                self.dev_fraction
            ));
        }
        if self.max_tokens < 3 {
            return Err("max_tokens must be at least 3".into());
        }
        if self.files.is_empty() {
            return Err("no [[files]]".into());
        }
        if !(1..=16).contains(&self.ensemble) {
            return Err(format!("ensemble {} is not in 1..=16", self.ensemble));
        }
        if self.optim.batch_size == 0 || self.optim.epochs == 0 {
            return Err("optim.batch_size and optim.epochs must be positive".into());
        }
        let shape = &self.scratch;
        if shape.attention_heads == 0 || !shape.hidden.is_multiple_of(shape.attention_heads) {
            return Err(format!(
                "scratch.hidden {} is not a multiple of scratch.attention_heads {}",
                shape.hidden, shape.attention_heads
            ));
        }
        if !["relu", "gelu"].contains(&shape.activation.as_str()) {
            return Err(format!(
                "scratch.activation {:?} is not relu or gelu",
                shape.activation
            ));
        }
        for map in self.ability_map.iter().chain(&self.ability_maps) {
            match (&map.file, &map.scores) {
                (Some(file), None) => {
                    if !self
                        .files
                        .iter()
                        .any(|f| &f.path == file && f.kind == FileKind::Outcomes)
                    {
                        return Err(format!(
                            "ability map file {file:?} is not an outcome file of the recipe"
                        ));
                    }
                }
                (None, Some(_)) => {}
                _ => {
                    return Err(format!(
                        "ability map {:?}: give exactly one of `file` and `scores`",
                        map.benchmark
                    ));
                }
            }
        }
        for rule in &self.skill_rules {
            if !self.skills.contains(&rule.skill) {
                return Err(format!("skill rule names unknown skill {:?}", rule.skill));
            }
            if let Some(level) = rule.level.as_deref() {
                level_value(level)
                    .map_err(|message| format!("skill rule for {:?}: {message}", rule.skill))?;
            }
        }
        Ok(())
    }
}

/// An easy/hard label as the level loss reads it: `easy` 0, `hard` 1.
pub fn level_value(text: &str) -> Result<f32, String> {
    match text {
        "easy" => Ok(0.0),
        "hard" => Ok(1.0),
        other => Err(format!("level {other:?} is not `easy` or `hard`")),
    }
}

fn merged_value(text: &str, dir: &Path, depth: usize) -> Result<toml::Table, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    resolve_scores_paths(&mut table, dir);
    let Some(base) = table.remove("base") else {
        return Ok(table);
    };
    let name = base.as_str().ok_or("base must be a file name")?;
    if depth > 4 {
        return Err("recipes `base` each other too deeply".into());
    }
    let path = dir.join(name);
    let base_text =
        std::fs::read_to_string(&path).map_err(|e| format!("base {}: {e}", path.display()))?;
    let mut merged = merged_value(&base_text, path.parent().unwrap_or(dir), depth + 1)?;
    overlay(&mut merged, table);
    Ok(merged)
}

/// Removes the `files` entries whose `path` is one of `drop_files` (every entry of that path),
/// refusing a name that matches none, which would be a typo that silently changes nothing.
fn drop_files(table: &mut toml::Table) -> Result<(), String> {
    let Some(drop) = table.remove("drop_files") else {
        return Ok(());
    };
    let drop: Vec<String> = drop
        .try_into()
        .map_err(|_| "drop_files must be a list of file paths".to_string())?;
    let Some(toml::Value::Array(files)) = table.get_mut("files") else {
        return Err("drop_files: the recipe has no [[files]]".into());
    };
    let path_of = |file: &toml::Value| {
        file.get("path")
            .and_then(toml::Value::as_str)
            .map(str::to_owned)
    };
    for name in &drop {
        if !files
            .iter()
            .any(|file| path_of(file).as_ref() == Some(name))
        {
            return Err(format!("drop_files: no [[files]] entry has path {name:?}"));
        }
    }
    files.retain(|file| path_of(file).is_none_or(|path| !drop.contains(&path)));
    Ok(())
}

/// Replaces each `[[files]] positive_contains = "name"` with the words of `[word_lists] name`,
/// so one cue list serves every entry (and every recipe built on this one) that filters by it.
/// The lists are consumed: the parsed recipe holds the words themselves.
fn expand_word_lists(table: &mut toml::Table) -> Result<(), String> {
    let lists = match table.remove("word_lists") {
        None => toml::Table::new(),
        Some(toml::Value::Table(lists)) => lists,
        Some(_) => return Err("word_lists must be a table of lists of words".into()),
    };
    let Some(toml::Value::Array(files)) = table.get_mut("files") else {
        return Ok(());
    };
    for file in files.iter_mut().filter_map(toml::Value::as_table_mut) {
        let Some(toml::Value::String(name)) = file.get("positive_contains") else {
            continue;
        };
        let words = lists
            .get(name)
            .filter(|words| words.is_array())
            .ok_or_else(|| {
                format!("positive_contains names {name:?}, which is not a list of [word_lists]")
            })?
            .clone();
        file.insert("positive_contains".into(), words);
    }
    Ok(())
}

/// Makes each `[[ability_maps]] scores` file relative to the recipe that names it, so a recipe
/// built on a `base` in another folder still finds the base's scores file.
///
/// Likewise a `[[files]] path` that starts with `./`: a file shipped beside the recipe (the
/// hand-written seeds) rather than one in the data directory.
fn resolve_scores_paths(table: &mut toml::Table, dir: &Path) {
    if let Some(toml::Value::Array(files)) = table.get_mut("files") {
        for file in files.iter_mut().filter_map(toml::Value::as_table_mut) {
            if let Some(toml::Value::String(name)) = file.get_mut("path")
                && let Some(rest) = name.strip_prefix("./")
            {
                let joined = dir.join(rest);
                *name = std::path::absolute(&joined)
                    .unwrap_or(joined)
                    .to_string_lossy()
                    .into_owned();
            }
        }
    }
    let Some(toml::Value::Array(maps)) = table.get_mut("ability_maps") else {
        return;
    };
    for map in maps.iter_mut().filter_map(toml::Value::as_table_mut) {
        if let Some(toml::Value::String(name)) = map.get_mut("scores") {
            *name = dir.join(&*name).to_string_lossy().into_owned();
        }
    }
}

fn overlay(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => overlay(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
seed = 1
max_tokens = 64
skills = ["code", "math", "tool_use"]
encoder = "scratch"
[[files]]
path = "a.jsonl"
[[skill_rules]]
skill = "code"
contains = ["def "]
"#;

    #[test]
    fn minimal_recipe_gets_defaults() {
        let recipe = Recipe::parse(MINIMAL).unwrap();
        assert_eq!(recipe.scratch.hidden, 128);
        assert_eq!(recipe.files[0].kind, FileKind::Outcomes);
        assert_eq!(recipe.files[0].weight, 1.0);
        assert_eq!(recipe.encoder_choice().unwrap(), EncoderChoice::Scratch);
        assert_eq!(
            recipe.ensemble, 1,
            "one head set unless the recipe asks for more"
        );
    }

    #[test]
    fn a_recipe_can_start_from_a_base() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.toml"), MINIMAL).unwrap();
        let text = "base = \"base.toml\"\nencoder = \"frozen:x\"\n[optim]\nepochs = 9\n";
        let recipe = Recipe::parse_in(text, dir.path()).unwrap();
        assert_eq!(
            recipe.encoder_choice().unwrap(),
            EncoderChoice::Frozen("x".into())
        );
        assert_eq!(recipe.optim.epochs, 9);
        assert_eq!(recipe.optim.batch_size, 32);
        assert_eq!(recipe.skill_rules.len(), 1);
    }

    const WITH_CUES: &str = r#"
seed = 1
max_tokens = 64
skills = ["code", "tool_use"]
encoder = "scratch"
[word_lists]
cues = ["weather", "my "]
[[files]]
path = "a.jsonl"
[[files]]
path = "tools.jsonl"
kind = "tool_need"
positive_contains = "cues"
[[files]]
path = "b.jsonl"
"#;

    #[test]
    fn a_file_entry_can_name_a_word_list() {
        let recipe = Recipe::parse(WITH_CUES).unwrap();
        assert_eq!(recipe.files[1].positive_contains, ["weather", "my "]);
        let missing = WITH_CUES.replace("\"cues\"\n[[files]]", "\"clues\"\n[[files]]");
        assert!(Recipe::parse(&missing).unwrap_err().contains("clues"));
    }

    #[test]
    fn a_variant_drops_files_and_replaces_a_word_list() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.toml"), WITH_CUES).unwrap();
        let text = "base = \"base.toml\"\ndrop_files = [\"a.jsonl\"]\n[word_lists]\ncues = []\n";
        let recipe = Recipe::parse_in(text, dir.path()).unwrap();
        let paths: Vec<&str> = recipe.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["tools.jsonl", "b.jsonl"],
            "the base's order is kept"
        );
        assert!(recipe.files[0].positive_contains.is_empty());
        let typo = "base = \"base.toml\"\ndrop_files = [\"c.jsonl\"]\n";
        assert!(
            Recipe::parse_in(typo, dir.path())
                .unwrap_err()
                .contains("c.jsonl")
        );
    }

    #[test]
    fn a_scores_file_is_found_beside_the_recipe_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let base =
            format!("{MINIMAL}\n[[ability_maps]]\nbenchmark = \"gpqa\"\nscores = \"s.toml\"\n");
        std::fs::write(dir.path().join("base.toml"), base).unwrap();
        let sub = dir.path().join("compare");
        std::fs::create_dir(&sub).unwrap();
        let recipe = Recipe::parse_in("base = \"../base.toml\"\n", &sub).unwrap();
        let scores = PathBuf::from(recipe.ability_maps[0].scores.as_deref().unwrap());
        std::fs::write(dir.path().join("s.toml"), "").unwrap();
        assert_eq!(
            scores.canonicalize().unwrap(),
            dir.path().join("s.toml").canonicalize().unwrap()
        );
    }

    #[test]
    fn bad_recipes_are_refused() {
        let unknown_skill = MINIMAL.replace("skill = \"code\"", "skill = \"poetry\"");
        assert!(
            Recipe::parse(&unknown_skill)
                .unwrap_err()
                .contains("poetry")
        );
        let bad_encoder = MINIMAL.replace("\"scratch\"", "\"frozen:\"");
        assert!(Recipe::parse(&bad_encoder).is_err());
        let typo = format!("{MINIMAL}\n[optim]\nepoch = 3\n");
        assert!(Recipe::parse(&typo).is_err());
        let no_heads = MINIMAL.replace("seed = 1", "seed = 1\nensemble = 0");
        assert!(Recipe::parse(&no_heads).unwrap_err().contains("ensemble 0"));
    }
}
