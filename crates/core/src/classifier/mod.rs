//! The prompt classifier: a small BERT-family encoder run with candle, and three heads that
//! predict a prompt's difficulty b(x), its skill mix g(x) over named skills, and whether answering
//! it needs a tool. A model may hold several such head sets (an ensemble), whose predictions are
//! averaged.
//!
//! A model is a directory: `config.json` (BERT config), `*.safetensors` (encoder and heads),
//! `tokenizer.json`, and `triage.json` (skill names, version, training summary, the fitted
//! abilities). The default one is compiled into the binary (`builtin`); others load from a local
//! path, or from a Hugging Face repo id through `hf-hub`.
//! This module predicts; choosing a model from the predictions is `policy`'s job, and fitting
//! the weights is `train`'s.

pub mod builtin;
pub mod context;
mod input;
pub mod static_embedding;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

pub use context::ContextLayer;
pub use input::{ClassifierInput, render_conversation};
pub use static_embedding::{StaticConfig, StaticEmbedding};

/// Files that make a model directory.
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const METADATA_FILE: &str = "triage.json";
/// Prefix of the head tensors in the safetensors files.
pub const HEADS_PREFIX: &str = "heads";
/// The heads' own weights file, beside the encoder's `model.safetensors` in static-table models.
pub const HEADS_FILE: &str = "heads.safetensors";
/// The source name of the model compiled into the binary, used when the config names none.
pub const BUILTIN_MODEL: &str = "builtin";

/// Where member `i` of an ensemble of `members` head sets keeps its tensors: `heads` for a single
/// set (every model before ensembles), `heads.{i}` otherwise.
pub fn member_prefix(members: usize, i: usize) -> String {
    if members <= 1 {
        HEADS_PREFIX.to_owned()
    } else {
        format!("{HEADS_PREFIX}.{i}")
    }
}

/// How many head sets a model has, given whether it holds a tensor of a name: members
/// `heads.0.…`, `heads.1.…`, or one.
pub fn count_members(has: impl Fn(&str) -> bool) -> usize {
    (0..)
        .take_while(|&i| has(&format!("{HEADS_PREFIX}.{i}.difficulty.weight")))
        .count()
        .max(1)
}

#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error("classifier model {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("cannot fetch classifier model `{repo}` from the Hugging Face hub: {message}")]
    Hub { repo: String, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("inference: {0}")]
    Candle(#[from] candle_core::Error),
}

/// `triage.json`: what the heads mean and how the model was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metadata {
    /// Bumped when the directory layout or the heads' meaning changes.
    pub format_version: u32,
    /// Names of the skill dimensions, in head order.
    pub skills: Vec<String>,
    /// Token budget per prompt; longer inputs keep their end.
    pub max_tokens: usize,
    /// Which encoder this is, in words (e.g. "scratch 2x128" or "all-MiniLM-L6-v2 frozen").
    pub encoder: String,
    /// Abilities θ fitted during training, per model name as written in the training data.
    #[serde(default)]
    pub abilities: BTreeMap<String, Vec<f32>>,
    /// The fitted map from a public benchmark score to abilities, for catalog models that were
    /// not in the training data.
    #[serde(default)]
    pub ability_map: Option<AbilityMap>,
    /// More maps, for models without `ability_map`'s benchmark score (tried in order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ability_maps: Vec<AbilityMap>,
    /// Data used, sizes, dev metrics, git revision: free-form, shown by `classify --info`.
    #[serde(default)]
    pub training: serde_json::Value,
}

/// θ_k = intercept_k + slope_k · logit(score on `benchmark`), fitted on the training models
/// whose public score is known.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AbilityMap {
    /// `gpqa` or `mmlu_pro`: the catalog field it reads.
    pub benchmark: String,
    pub intercept: Vec<f32>,
    pub slope: Vec<f32>,
    /// How it was fitted: models used, fit quality.
    #[serde(default)]
    pub fit: serde_json::Value,
}

/// What the classifier says about one prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// b(x): higher is harder.
    pub difficulty: f32,
    /// g(x): a weight per skill, summing to 1 (tool use included, see [`Prediction::skill_mix`]).
    pub skills: Vec<f32>,
    /// Probability that answering needs a tool call.
    pub tool_need: f32,
    /// Tokens the encoder saw.
    pub tokens: usize,
    /// Mean-pooled, L2-normalised encoder output (for kNN baselines and similarity).
    #[serde(skip)]
    pub embedding: Vec<f32>,
}

/// The loaded model.
pub struct Classifier {
    encoder: Encoder,
    /// One head set, or an ensemble whose predictions are averaged (b, g and tool need alike:
    /// with one θ, averaging b and g averages the members' logits of q).
    members: Vec<Heads>,
    /// Every member's attention queries, stacked, so the tokens are gathered once.
    queries: Option<Tensor>,
    /// The contextual layer the queries read through, in models trained with `context_dims`
    /// (one for all members).
    context: Option<ContextLayer>,
    tokenizer: Tokenizer,
    special: SpecialTokens,
    pub metadata: Metadata,
    pub source: String,
    device: Device,
}

/// What turns token ids into one vector per prompt.
enum Encoder {
    /// A BERT-family transformer, mean-pooled.
    Bert(Box<BertModel>),
    /// Pretrained static token vectors, averaged (`static_embedding`).
    Static(StaticEmbedding),
}

/// A model's files, read from a directory or from the binary.
struct Parts<'a> {
    config: String,
    metadata: String,
    tokenizer: Tokenizer,
    vb: VarBuilder<'a>,
}

struct Heads {
    /// A shared ReLU layer under the three heads, in models trained with `head_hidden`.
    hidden: Option<Linear>,
    difficulty: Linear,
    skills: Linear,
    tool: Linear,
    /// The tool head's own ReLU layer on the pooled vector, in models trained with
    /// `tool_hidden` (else the tool head reads the shared layer).
    tool_hidden: Option<Linear>,
    /// Weight of [`length_feature`] in b(x), in models trained with `length_input`.
    length: Option<Tensor>,
    /// `[queries, hidden]`: attention pooling's learned queries, in static models trained with
    /// `attention_queries` (their pooled vectors go to the heads beside the mean).
    attention: Option<Tensor>,
}

/// The ids of the tokens triage adds itself (`train` tokenizes through the same path).
#[derive(Debug, Clone, Copy)]
pub struct SpecialTokens {
    pub cls: u32,
    pub sep: u32,
    pub pad: u32,
}

/// The device inference runs on: CPU, or the GPU when built with `cuda`/`metal`.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(device) = Device::cuda_if_available(0) {
        return device;
    }
    #[cfg(feature = "metal")]
    if let Ok(device) = Device::new_metal(0) {
        return device;
    }
    Device::Cpu
}

impl Classifier {
    /// Loads the built-in model ([`BUILTIN_MODEL`]), a local directory, or, when `source` is
    /// neither, a Hugging Face repo id (the local hub cache first, then the network).
    pub fn load(source: &str) -> Result<Classifier, ClassifierError> {
        Classifier::load_from(source, &hf_hub::Cache::from_env())
    }

    /// [`Classifier::load`] with an explicit hub cache (`HF_HOME`'s by default).
    pub fn load_from(source: &str, cache: &hf_hub::Cache) -> Result<Classifier, ClassifierError> {
        if source == BUILTIN_MODEL {
            return Classifier::load_builtin(&default_device());
        }
        let path = Path::new(source);
        let dir = if path.is_dir() {
            path.to_path_buf()
        } else {
            fetch_from_hub(source, cache)?
        };
        let mut classifier = Classifier::load_dir(&dir, &default_device())?;
        classifier.source = source.to_string();
        Ok(classifier)
    }

    /// Loads a model directory.
    pub fn load_dir(dir: &Path, device: &Device) -> Result<Classifier, ClassifierError> {
        let load_error = |message: String| ClassifierError::Load {
            path: dir.to_path_buf(),
            message,
        };
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| load_error(format!("{name}: {e}")))
        };
        let tokenizer = load_tokenizer(&dir.join(TOKENIZER_FILE))?;
        let weights = safetensors_files(dir).map_err(load_error)?;
        // SAFETY: the files are mapped read-only and not modified while the model lives.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&weights, DType::F32, device) }
            .map_err(|e| load_error(format!("weights: {e}")))?;
        let parts = Parts {
            config: read(CONFIG_FILE)?,
            metadata: read(METADATA_FILE)?,
            tokenizer,
            vb,
        };
        Classifier::from_parts(parts, dir, device)
    }

    /// The model compiled into the binary (`models/default` when it was built).
    pub fn load_builtin(device: &Device) -> Result<Classifier, ClassifierError> {
        let label = Path::new(BUILTIN_MODEL);
        let load_error = |message: String| ClassifierError::Load {
            path: label.to_path_buf(),
            message,
        };
        let utf8 =
            |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(|e| load_error(e.to_string()));
        let tokenizer = Tokenizer::from_bytes(builtin::file(TOKENIZER_FILE))
            .map_err(|e| ClassifierError::Tokenizer(e.to_string()))?;
        let mut tensors = std::collections::HashMap::new();
        for bytes in builtin::weights() {
            let file = candle_core::safetensors::load_buffer(bytes, device)
                .map_err(|e| load_error(format!("weights: {e}")))?;
            tensors.extend(file);
        }
        let parts = Parts {
            config: utf8(builtin::file(CONFIG_FILE))?,
            metadata: utf8(builtin::file(METADATA_FILE))?,
            tokenizer: configure_tokenizer(tokenizer)?,
            vb: VarBuilder::from_tensors(tensors, DType::F32, device),
        };
        Classifier::from_parts(parts, label, device)
    }

    /// Builds the encoder and heads from a model's files, wherever they came from.
    fn from_parts(
        parts: Parts,
        label: &Path,
        device: &Device,
    ) -> Result<Classifier, ClassifierError> {
        let load_error = |message: String| ClassifierError::Load {
            path: label.to_path_buf(),
            message,
        };
        let Parts {
            config: config_text,
            metadata,
            tokenizer,
            vb,
        } = parts;
        let metadata: Metadata = serde_json::from_str(&metadata)
            .map_err(|e| load_error(format!("{METADATA_FILE}: {e}")))?;
        let special = special_tokens(&tokenizer).map_err(load_error)?;
        let (encoder, hidden) = if StaticConfig::is_static(&config_text) {
            let config: StaticConfig = serde_json::from_str(&config_text)
                .map_err(|e| load_error(format!("{CONFIG_FILE}: {e}")))?;
            let skip = vec![special.cls, special.sep, special.pad];
            let table = StaticEmbedding::load(vb.clone(), &config, skip)
                .map_err(|e| load_error(format!("static embeddings: {e}")))?;
            (Encoder::Static(table), config.hidden_size)
        } else {
            let config: BertConfig = serde_json::from_str(&config_text)
                .map_err(|e| load_error(format!("{CONFIG_FILE}: {e}")))?;
            let bert = BertModel::load(vb.clone(), &config)
                .map_err(|e| load_error(format!("encoder weights: {e}")))?;
            (Encoder::Bert(Box::new(bert)), config.hidden_size)
        };
        let count = count_members(|name| vb.contains_tensor(name));
        let members = (0..count)
            .map(|i| {
                Heads::load(
                    vb.pp(member_prefix(count, i)),
                    hidden,
                    metadata.skills.len(),
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(|e| load_error(format!("head weights: {e}")))?;
        let query_counts: Vec<usize> = members
            .iter()
            .map(|m| m.attention.as_ref().map_or(0, |q| q.dims()[0]))
            .collect();
        if query_counts.iter().any(|&q| q != query_counts[0]) {
            return Err(load_error(format!(
                "ensemble members pool with different numbers of attention queries: {query_counts:?}"
            )));
        }
        let queries = if query_counts[0] > 0 {
            let each: Vec<&Tensor> = members
                .iter()
                .filter_map(|m| m.attention.as_ref())
                .collect();
            Some(Tensor::cat(&each, 0).map_err(|e| load_error(format!("head weights: {e}")))?)
        } else {
            None
        };
        let context = ContextLayer::load(&vb.pp(CONTEXT_PREFIX), hidden)
            .map_err(|e| load_error(format!("context layer: {e}")))?;
        if context.is_some() && queries.is_none() {
            return Err(load_error(
                "a context layer without attention pooling queries: nothing would read it".into(),
            ));
        }
        if queries.is_some() && !matches!(encoder, Encoder::Static(_)) {
            return Err(load_error(
                "attention pooling queries on a transformer encoder: only static models pool by attention".into(),
            ));
        }
        Ok(Classifier {
            encoder,
            members,
            queries,
            context,
            tokenizer,
            special,
            metadata,
            source: label.display().to_string(),
            device: device.clone(),
        })
    }

    pub fn skills(&self) -> &[String] {
        &self.metadata.skills
    }

    /// Predictions for a batch of inputs, in order.
    pub fn predict(&self, inputs: &[ClassifierInput]) -> Result<Vec<Prediction>, ClassifierError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let ids = inputs
            .iter()
            .map(|input| self.token_ids(&input.text))
            .collect::<Result<Vec<_>, _>>()?;
        let (pooled, lengths) = self.embed_ids(&ids)?;
        let attended = match (&self.encoder, &self.queries) {
            (Encoder::Static(table), Some(queries)) => {
                Some(table.attend(&ids, queries, self.context.as_ref())?)
            }
            _ => None,
        };
        // Every member is trained with the same recipe: they all read the length, or none does.
        let characters = if self.members[0].length.is_some() {
            let values: Vec<f32> = inputs.iter().map(|i| length_feature(&i.text)).collect();
            Some(Tensor::from_vec(values, inputs.len(), &self.device)?)
        } else {
            None
        };
        let count = self.members.len();
        let mut sums: Option<(Tensor, Tensor, Tensor)> = None;
        for (i, member) in self.members.iter().enumerate() {
            let inputs_to_heads = match &attended {
                Some(all) => {
                    let width = all.dim(1)? / count;
                    Tensor::cat(&[&pooled, &all.narrow(1, i * width, width)?], 1)?
                }
                None => pooled.clone(),
            };
            let (b, g, t) = member.forward(&inputs_to_heads, characters.as_ref())?;
            sums = Some(match sums {
                None => (b, g, t),
                Some((sb, sg, st)) => ((sb + b)?, (sg + g)?, (st + t)?),
            });
        }
        let (difficulty, skills, tool) = sums.expect("a classifier has at least one head set");
        let scale = 1.0 / count as f64;
        let (difficulty, skills, tool) = (
            difficulty.affine(scale, 0.0)?,
            skills.affine(scale, 0.0)?,
            tool.affine(scale, 0.0)?,
        );
        let normalised = pooled.broadcast_div(
            &pooled
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-12, f32::MAX)?,
        )?;
        let difficulty = difficulty.to_vec1::<f32>()?;
        let skills = skills.to_vec2::<f32>()?;
        let tool = tool.to_vec1::<f32>()?;
        let embeddings = normalised.to_vec2::<f32>()?;
        Ok((0..inputs.len())
            .map(|i| Prediction {
                difficulty: difficulty[i],
                skills: skills[i].clone(),
                tool_need: tool[i],
                tokens: lengths[i],
                embedding: embeddings[i].clone(),
            })
            .collect())
    }

    pub fn predict_one(&self, input: &ClassifierInput) -> Result<Prediction, ClassifierError> {
        Ok(self.predict(std::slice::from_ref(input))?.remove(0))
    }

    /// Token ids for one text: `[CLS] … [SEP]`, keeping the *end* of the text when it is over
    /// the budget (the last user turn matters most).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, ClassifierError> {
        token_ids(
            &self.tokenizer,
            self.special,
            text,
            self.metadata.max_tokens,
        )
    }

    /// Mean-pooled encoder output for a batch of token-id lists, padded to the longest.
    fn embed_ids(&self, ids: &[Vec<u32>]) -> Result<(Tensor, Vec<usize>), ClassifierError> {
        let pooled = match &self.encoder {
            Encoder::Bert(bert) => {
                let (input_ids, mask) = pad_batch(ids, self.special.pad, &self.device)?;
                let token_types = input_ids.zeros_like()?;
                let hidden = bert.forward(&input_ids, &token_types, Some(&mask))?;
                mean_pool(&hidden, &mask)?
            }
            Encoder::Static(table) => table.pool(ids, &self.device)?,
        };
        Ok((pooled, ids.iter().map(Vec::len).collect()))
    }
}

impl Heads {
    /// b(x), g(x) (softmax) and the tool need for a batch of pooled vectors; `characters` is
    /// each prompt's [`length_feature`], when this head set reads it.
    fn forward(
        &self,
        inputs: &Tensor,
        characters: Option<&Tensor>,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let tool_features = match &self.tool_hidden {
            Some(layer) => Some(layer.forward(inputs)?.relu()?),
            None => None,
        };
        let features = match &self.hidden {
            Some(layer) => layer.forward(inputs)?.relu()?,
            None => inputs.clone(),
        };
        let mut difficulty = self.difficulty.forward(&features)?.squeeze(1)?;
        if let (Some(weight), Some(characters)) = (&self.length, characters) {
            difficulty = (difficulty + characters.broadcast_mul(weight)?)?;
        }
        let skills = candle_nn::ops::softmax(&self.skills.forward(&features)?, D::Minus1)?;
        let tool_logits = self
            .tool
            .forward(tool_features.as_ref().unwrap_or(&features))?;
        let tool = candle_nn::ops::sigmoid(&tool_logits.squeeze(1)?)?;
        Ok((difficulty, skills, tool))
    }

    fn load(vb: VarBuilder, hidden: usize, skills: usize) -> candle_core::Result<Heads> {
        let attention = if vb.contains_tensor(ATTENTION_QUERIES) {
            let queries = vb.get_unchecked(ATTENTION_QUERIES)?.dim(0)?;
            Some(vb.get((queries, hidden), ATTENTION_QUERIES)?)
        } else {
            None
        };
        // The heads read the mean and each query's pooled vector side by side.
        let pooled = hidden * (1 + attention.as_ref().map_or(0, |q| q.dims()[0]));
        let shared = optional_layer(&vb, HIDDEN_LAYER, pooled)?;
        let width = shared.as_ref().map_or(pooled, |(_, width)| *width);
        let tool_hidden = optional_layer(&vb, TOOL_LAYER, pooled)?;
        let tool_width = tool_hidden.as_ref().map_or(width, |(_, width)| *width);
        Ok(Heads {
            hidden: shared.map(|(layer, _)| layer),
            difficulty: candle_nn::linear(width, 1, vb.pp("difficulty"))?,
            skills: candle_nn::linear(width, skills, vb.pp("skills"))?,
            tool: candle_nn::linear(tool_width, 1, vb.pp("tool"))?,
            tool_hidden: tool_hidden.map(|(layer, _)| layer),
            length: if vb.contains_tensor(LENGTH_WEIGHT) {
                Some(vb.get(1, LENGTH_WEIGHT)?)
            } else {
                None
            },
            attention,
        })
    }
}

/// The ReLU layer `name` over `input` features with its width, when the model has one.
fn optional_layer(
    vb: &VarBuilder,
    name: &str,
    input: usize,
) -> candle_core::Result<Option<(Linear, usize)>> {
    let weight = format!("{name}.weight");
    if !vb.contains_tensor(&weight) {
        return Ok(None);
    }
    let width = vb.get_unchecked(&weight)?.dim(0)?;
    Ok(Some((candle_nn::linear(input, width, vb.pp(name))?, width)))
}

/// Name, under `heads.`, of the optional shared layer under the heads.
pub const HIDDEN_LAYER: &str = "hidden";

/// Name, under `heads.`, of the tool head's own optional layer.
pub const TOOL_LAYER: &str = "tool_hidden";

/// Name, under `heads.`, of attention pooling's queries (static encoders only).
pub const ATTENTION_QUERIES: &str = "attention.queries";

/// Where the optional contextual layer keeps its tensors (`context`): shared by all members.
pub const CONTEXT_PREFIX: &str = "heads.context";

/// Name, under `heads.`, of the difficulty head's length weight.
pub const LENGTH_WEIGHT: &str = "length.weight";

/// The difficulty head's length input: ln(1 + characters of the rendered prompt, before the
/// token budget cuts it). Mean pooling over at most `max_tokens` tokens cannot tell how long a
/// prompt was.
pub fn length_feature(text: &str) -> f32 {
    (1.0 + text.chars().count() as f32).ln()
}

/// A skill mix with tool need `t` folded into the skill at `tool_index`: each weight scaled by
/// 1 − t, and t added to `tool_use` (the mix unchanged when there is no such skill).
pub fn fold_tool_need(skills: &[f32], t: f32, tool_index: Option<usize>) -> Vec<f32> {
    let Some(tool_index) = tool_index else {
        return skills.to_vec();
    };
    skills
        .iter()
        .enumerate()
        .map(|(i, w)| w * (1.0 - t) + if i == tool_index { t } else { 0.0 })
        .collect()
}

impl Prediction {
    /// g(x) with the tool-need head folded in: a prompt that needs a tool leans on the
    /// `tool_use` skill in proportion to that need.
    pub fn skill_mix(&self, skill_names: &[String]) -> Vec<f32> {
        let tool_index = skill_names.iter().position(|s| s == "tool_use");
        fold_tool_need(&self.skills, self.tool_need, tool_index)
    }

    /// The heaviest skill's name.
    pub fn top_skill<'a>(&self, skill_names: &'a [String]) -> &'a str {
        self.skills
            .iter()
            .zip(skill_names)
            .max_by(|a, b| a.0.total_cmp(b.0))
            .map_or("", |(_, name)| name.as_str())
    }
}

impl Metadata {
    /// Every fitted map, the first one first.
    pub fn maps(&self) -> Vec<&AbilityMap> {
        self.ability_map.iter().chain(&self.ability_maps).collect()
    }
}

/// A model directory's `triage.json`.
pub fn load_metadata(dir: &Path) -> Result<Metadata, ClassifierError> {
    let path = dir.join(METADATA_FILE);
    let load_error = |message: String| ClassifierError::Load {
        path: dir.to_path_buf(),
        message: format!("{METADATA_FILE}: {message}"),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| load_error(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| load_error(e.to_string()))
}

/// Loads a `tokenizer.json` with padding and truncation off: triage pads and truncates itself
/// (sentence-transformers files pad to a fixed 128).
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, ClassifierError> {
    let tokenizer = Tokenizer::from_file(path)
        .map_err(|e| ClassifierError::Tokenizer(format!("{}: {e}", path.display())))?;
    configure_tokenizer(tokenizer)
}

fn configure_tokenizer(mut tokenizer: Tokenizer) -> Result<Tokenizer, ClassifierError> {
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| ClassifierError::Tokenizer(e.to_string()))?;
    Ok(tokenizer)
}

pub fn special_tokens(tokenizer: &Tokenizer) -> Result<SpecialTokens, String> {
    let id = |token: &str| {
        tokenizer
            .token_to_id(token)
            .ok_or_else(|| format!("{TOKENIZER_FILE} has no {token} token"))
    };
    Ok(SpecialTokens {
        cls: id("[CLS]")?,
        sep: id("[SEP]")?,
        pad: id("[PAD]")?,
    })
}

/// Characters kept before tokenizing: tokenizing a whole long prompt only to drop most of it
/// wastes milliseconds, so cut by characters first, generously.
const CHARS_PER_TOKEN_BUDGET: usize = 8;

/// `[CLS] … [SEP]` ids for one text, keeping its end; shared by inference and training.
pub fn token_ids(
    tokenizer: &Tokenizer,
    special: SpecialTokens,
    text: &str,
    max_tokens: usize,
) -> Result<Vec<u32>, ClassifierError> {
    let text = tail_chars(text, max_tokens * CHARS_PER_TOKEN_BUDGET);
    let encoding = tokenizer
        .encode(text, false)
        .map_err(|e| ClassifierError::Tokenizer(e.to_string()))?;
    let body = encoding.get_ids();
    let keep = max_tokens.saturating_sub(2).min(body.len());
    let mut ids = Vec::with_capacity(keep + 2);
    ids.push(special.cls);
    ids.extend_from_slice(&body[body.len() - keep..]);
    ids.push(special.sep);
    Ok(ids)
}

/// The last `max` characters of `text`, cut at a char boundary.
fn tail_chars(text: &str, max: usize) -> &str {
    match text.char_indices().rev().nth(max.saturating_sub(1)) {
        Some((start, _)) if max > 0 => &text[start..],
        _ => text,
    }
}

/// Right-pads token lists into `[batch, len]` ids and a 0/1 attention mask (in u32; BERT builds
/// its additive mask in f32, never in half precision).
pub fn pad_batch(
    ids: &[Vec<u32>],
    pad: u32,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let len = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut flat = Vec::with_capacity(ids.len() * len);
    let mut mask = Vec::with_capacity(ids.len() * len);
    for row in ids {
        flat.extend_from_slice(row);
        flat.extend(std::iter::repeat_n(pad, len - row.len()));
        mask.extend(std::iter::repeat_n(1u32, row.len()));
        mask.extend(std::iter::repeat_n(0u32, len - row.len()));
    }
    Ok((
        Tensor::from_vec(flat, (ids.len(), len), device)?,
        Tensor::from_vec(mask, (ids.len(), len), device)?,
    ))
}

/// Mean of the hidden states over real (unmasked) tokens: `[batch, hidden]`.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1.0, f64::MAX)?;
    summed.broadcast_div(&counts)
}

/// Every `*.safetensors` file in a model directory (encoder and heads may be separate).
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err("no .safetensors file".into());
    }
    Ok(files)
}

/// Turns a directory holding only a BERT encoder (`config.json`, `model.safetensors`,
/// `tokenizer.json`, e.g. all-MiniLM-L6-v2) into a loadable model directory by adding zero heads
/// and metadata. For latency measurements and loading tests only: it predicts nothing.
pub fn add_untrained_heads(dir: &Path, skills: &[String]) -> Result<(), ClassifierError> {
    let load_error = |message: String| ClassifierError::Load {
        path: dir.to_path_buf(),
        message,
    };
    let config: BertConfig = serde_json::from_str(
        &std::fs::read_to_string(dir.join(CONFIG_FILE)).map_err(|e| load_error(e.to_string()))?,
    )
    .map_err(|e| load_error(e.to_string()))?;
    let h = config.hidden_size;
    let zeros = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &Device::Cpu);
    let heads = std::collections::HashMap::from([
        (format!("{HEADS_PREFIX}.difficulty.weight"), zeros(&[1, h])?),
        (format!("{HEADS_PREFIX}.difficulty.bias"), zeros(&[1])?),
        (
            format!("{HEADS_PREFIX}.skills.weight"),
            zeros(&[skills.len(), h])?,
        ),
        (
            format!("{HEADS_PREFIX}.skills.bias"),
            zeros(&[skills.len()])?,
        ),
        (format!("{HEADS_PREFIX}.tool.weight"), zeros(&[1, h])?),
        (format!("{HEADS_PREFIX}.tool.bias"), zeros(&[1])?),
    ]);
    candle_core::safetensors::save(&heads, dir.join(HEADS_FILE))?;
    let metadata = Metadata {
        format_version: 1,
        skills: skills.to_vec(),
        max_tokens: config.max_position_embeddings.min(512),
        encoder: "untrained heads (latency and loading checks only)".into(),
        abilities: BTreeMap::new(),
        ability_map: None,
        ability_maps: Vec::new(),
        training: serde_json::Value::Null,
    };
    let text = serde_json::to_string_pretty(&metadata).map_err(|e| load_error(e.to_string()))?;
    std::fs::write(dir.join(METADATA_FILE), text).map_err(|e| load_error(e.to_string()))
}

/// Downloads (or finds in the local cache) a model directory from the Hugging Face hub.
fn fetch_from_hub(repo: &str, cache: &hf_hub::Cache) -> Result<PathBuf, ClassifierError> {
    let hub_error = |message: String| ClassifierError::Hub {
        repo: repo.to_string(),
        message,
    };
    let names = [
        CONFIG_FILE,
        TOKENIZER_FILE,
        METADATA_FILE,
        "model.safetensors",
    ];
    let cache_root = cache.clone();
    let cache = cache.model(repo.to_string());
    let cached: Option<Vec<PathBuf>> = names.iter().map(|n| cache.get(n)).collect();
    let paths = match cached {
        Some(paths) => paths,
        None => {
            let api = hf_hub::api::sync::ApiBuilder::from_cache(cache_root.clone())
                .build()
                .map_err(|e| hub_error(e.to_string()))?;
            let model = api.model(repo.to_string());
            let paths = names
                .iter()
                .map(|n| model.get(n).map_err(|e| hub_error(format!("{n}: {e}"))))
                .collect::<Result<_, _>>()?;
            // Static-table models keep their heads in a second file; BERT ones in the first.
            if let Err(e) = model.get(HEADS_FILE) {
                tracing::debug!(repo, "no {HEADS_FILE} on the hub: {e}");
            }
            paths
        }
    };
    Ok(paths[0]
        .parent()
        .expect("a hub file lives in a snapshot directory")
        .to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_at_char_boundaries() {
        assert_eq!(tail_chars("hello", 3), "llo");
        assert_eq!(tail_chars("héllo wörld", 4), "örld");
        assert_eq!(tail_chars("ab", 10), "ab");
    }

    #[test]
    fn padding_and_mean_pooling_ignore_pad_tokens() {
        let device = Device::Cpu;
        let (ids, mask) = pad_batch(&[vec![5, 6, 7], vec![8]], 0, &device).unwrap();
        assert_eq!(ids.to_vec2::<u32>().unwrap(), [[5, 6, 7], [8, 0, 0]]);
        assert_eq!(mask.to_vec2::<u32>().unwrap(), [[1, 1, 1], [1, 0, 0]]);
        let hidden = Tensor::new(
            &[
                [[1f32, 2.], [3., 4.], [5., 6.]],
                [[7., 8.], [100., 100.], [100., 100.]],
            ],
            &device,
        )
        .unwrap();
        let pooled = mean_pool(&hidden, &mask).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(pooled, [[3.0, 4.0], [7.0, 8.0]]);
    }

    #[test]
    fn skill_mix_folds_in_tool_need() {
        let names: Vec<String> = ["code", "chat", "tool_use"].map(String::from).to_vec();
        let p = Prediction {
            difficulty: 0.0,
            skills: vec![0.75, 0.25, 0.0],
            tool_need: 0.5,
            tokens: 3,
            embedding: vec![],
        };
        assert_eq!(p.skill_mix(&names), [0.375, 0.125, 0.5]);
        assert_eq!(p.top_skill(&names), "code");
    }
}
