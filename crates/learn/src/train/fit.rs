//! The joint fit: an encoder (trained, or a fixed table of pooled embeddings), the three heads
//! and the ability table θ, trained together on
//!
//! - outcome rows: binary cross-entropy of σ(⟨θ_m, g'(x)⟩ − b(x)) against the score, one forward
//!   per prompt and the loss averaged over that prompt's rows, prompts weighted by their file;
//!   g'(x) is `Prediction::skill_mix` (the tool-need folded into `tool_use`, with the tool-need
//!   held fixed so that only tool labels train the tool head);
//! - weak skill labels: cross-entropy on the skill head;
//! - tool-need labels: binary cross-entropy on the tool head;
//! - a small L2 on θ, which pins the shift that θ and b could otherwise trade.
//!
//! With `ensemble = N` there are N head sets ([`Member`]), each with its own loss on the same
//! batch against the one θ; predictions average them as the classifier does.
//!
//! Not for: reading data or writing the model directory.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::Linear;
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use super::TrainError;
use super::data::{Dataset, PromptRecord};
use super::distill::Targets;
use super::encoder::{Dropout, Init, TrainEncoder};
use super::metrics::{self, OutcomeRows, OutcomeSummary};
use super::params::Params;
use super::progress::Progress;
use super::recipe::Recipe;
use crate::eval::battles::{mean_ability, winner_credit};
use triage_core::classifier::context::{self as ctx, ContextLayer};
use triage_core::classifier::{
    ATTENTION_QUERIES, CONTEXT_PREFIX, HIDDEN_LAYER, LENGTH_WEIGHT, StaticEmbedding, TOOL_LAYER,
    fold_tool_need, length_feature, mean_pool, member_prefix, pad_batch,
};

/// Name of the ability table among the variables (kept out of the safetensors).
pub const THETA: &str = "theta";
/// Prompts per forward when evaluating.
const EVAL_BATCH: usize = 64;

/// Where pooled prompt vectors come from. One value per training run, so the size difference
/// between the variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Encoder {
    Trainable(TrainEncoder),
    /// Pooled outputs of a fixed encoder, one row per prompt (index = prompt index).
    Frozen(Tensor),
}

pub struct Model {
    pub params: Params,
    pub encoder: Encoder,
    /// The head sets (`ensemble`), each trained on its own loss against the shared θ.
    members: Vec<Member>,
    theta: Tensor,
    /// Per model, the weight of its θ spread penalty ([`spread_weights`]): the recipe's for
    /// every model unless a retrain from the outcome log fades it.
    pub spread: Vec<f32>,
    tool_index: Option<usize>,
    num_skills: usize,
    pad: u32,
    /// Each prompt's length feature, when the difficulty head reads it (`length_input`).
    lengths: Option<Vec<f32>>,
    /// The static table that attention pooling reads (`attention_queries`).
    attention_table: Option<StaticEmbedding>,
    /// The contextual layer between the table and attention pooling (`context_dims`), shared
    /// by the members.
    context: Option<ContextLayer>,
    /// The teacher's predictions, when the recipe distils.
    pub distill: Option<Targets>,
    /// Per skill class, and for the negative and positive tool and level labels: weights that
    /// balance the classes over the training prompts (rare chat labels count as much as the
    /// thousands of exam ones).
    balance: Balance,
}

/// One head set: what turns a prompt's token vectors into b(x), g(x) and tool need.
struct Member {
    /// Attention pooling's learned queries (`attention_queries`).
    queries: Option<Tensor>,
    /// The optional shared ReLU layer under the heads (`head_hidden`).
    shared: Option<Linear>,
    difficulty: Linear,
    skills: Linear,
    tool: Linear,
    /// The tool head's own layer (`tool_hidden`), on the detached pooled vector.
    tool_branch: Option<Linear>,
    /// The difficulty head's weight on the length feature (`length_input`).
    length: Option<Tensor>,
}

#[derive(Debug, Clone)]
struct Balance {
    skill: Vec<f32>,
    tool: [f32; 2],
    level: [f32; 2],
}

impl Balance {
    fn none(k: usize) -> Balance {
        Balance {
            skill: vec![1.0; k],
            tool: [1.0; 2],
            level: [1.0; 2],
        }
    }

    /// n / (classes · n_class) per class present, capped at 10.
    fn of(data: &Dataset, k: usize) -> Balance {
        let train = || data.prompts.iter().filter(|p| !p.dev);
        let weights = |counts: &[usize]| -> Vec<f32> {
            let total: usize = counts.iter().sum();
            let present = counts.iter().filter(|&&c| c > 0).count().max(1);
            counts
                .iter()
                .map(|&c| {
                    if c == 0 {
                        1.0
                    } else {
                        (total as f32 / (present * c) as f32).min(10.0)
                    }
                })
                .collect()
        };
        let mut skill = vec![0usize; k];
        let (mut tool, mut level) = ([0usize; 2], [0usize; 2]);
        for p in train() {
            if let Some(s) = p.skill {
                skill[s] += 1;
            }
            if let Some(t) = p.tool {
                tool[usize::from(t >= 0.5)] += 1;
            }
            if let Some(l) = p.level {
                level[usize::from(l >= 0.5)] += 1;
            }
        }
        let two = |w: Vec<f32>| [w[0], w[1]];
        Balance {
            skill: weights(&skill),
            tool: two(weights(&tool)),
            level: two(weights(&level)),
        }
    }
}

/// Outputs for a batch of prompts.
struct Outputs {
    difficulty: Tensor,
    skill_logits: Tensor,
    tool_logits: Tensor,
    /// g'(x): the skill mix with the tool need folded in.
    mix: Tensor,
}

/// Per-prompt predictions, as the classifier will make them.
#[derive(Debug, Clone, Serialize)]
pub struct PromptPrediction {
    pub difficulty: f32,
    pub skills: Vec<f32>,
    pub tool_need: f32,
    pub mix: Vec<f32>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DevMetrics {
    /// Same components and weights as the training loss.
    pub loss: f64,
    pub outcome: OutcomeSummary,
    pub tool_auc: Option<f64>,
    pub skill_accuracy: Option<f64>,
    /// Share of decided dev battles (no ties) whose winner has the higher predicted quality.
    #[serde(default)]
    pub pair_accuracy: Option<f64>,
    /// The same battles' share won by the model of higher mean ability (θ alone, the prompt
    /// unread): what reading the prompt has to beat.
    #[serde(default)]
    pub pair_accuracy_model_only: Option<f64>,
    pub per_source: std::collections::BTreeMap<String, OutcomeSummary>,
}

impl DevMetrics {
    /// What `keep_best` minimises: the outcome log-loss (routing rests on it), or the total
    /// loss when there are no dev outcome rows.
    pub fn selection_loss(&self) -> f64 {
        self.outcome.log_loss.unwrap_or(self.loss)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub dev: DevMetrics,
    /// Prompts per second in the training steps (dev evaluation not counted).
    pub prompts_per_second: f64,
    pub seconds: f64,
}

/// Variables that got a non-zero gradient on the first step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GradientCoverage {
    pub with_gradient: usize,
    pub total: usize,
    pub without_gradient: Vec<String>,
}

/// The variable `name`: `warm`'s tensor of that name when fine-tuning and its shape is `dims`,
/// else a new one drawn from `init`.
fn warm_or_new(
    params: &mut Params,
    warm: Option<&Warm>,
    name: &str,
    dims: &[usize],
    init: Init,
    rng: &mut StdRng,
) -> Result<Tensor, TrainError> {
    match warm.and_then(|w| w.heads.get(name)) {
        Some(t) if t.dims() == dims => params.insert(name, t.clone()),
        _ => params.create(name, dims, init, rng),
    }
}

/// The contextual layer's variables under `heads.context` (from `warm`'s tensors when their
/// shapes match). The output projection starts small, so training starts close to the model
/// without context and the layer adds what the losses ask of it (not at zero: then nothing
/// under it would get a gradient on the first step).
fn new_context(
    params: &mut Params,
    hidden: usize,
    recipe: &Recipe,
    warm: Option<&Warm>,
    rng: &mut StdRng,
) -> Result<ContextLayer, TrainError> {
    let (dims, window) = (recipe.context_dims, recipe.context_window);
    let projection = Init::Normal((1.0 / hidden as f32).sqrt());
    let mut make = |name: &str, shape: &[usize], init: Init| {
        warm_or_new(
            params,
            warm,
            &format!("{CONTEXT_PREFIX}.{name}"),
            shape,
            init,
            rng,
        )
    };
    let query = make(ctx::QUERY, &[dims, hidden], projection)?;
    let key = make(ctx::KEY, &[dims, hidden], projection)?;
    let value = make(ctx::VALUE, &[dims, hidden], projection)?;
    let output = make(ctx::OUTPUT, &[hidden, dims], Init::Normal(0.01))?;
    let query_positions = make(ctx::QUERY_POSITIONS, &[window, dims], Init::Normal(0.02))?;
    let key_positions = make(ctx::KEY_POSITIONS, &[window, dims], Init::Normal(0.02))?;
    Ok(ContextLayer::new(
        query,
        key,
        value,
        output,
        query_positions,
        key_positions,
    )?)
}

impl Member {
    /// Creates one head set's variables under `prefix` (from `warm`'s tensors of the same name
    /// and shape when fine-tuning). `input` is the width of the pooled vector the heads read,
    /// `hidden` the static table's width.
    #[allow(clippy::too_many_arguments)]
    fn new(
        params: &mut Params,
        prefix: &str,
        input: usize,
        queries: usize,
        hidden: usize,
        recipe: &Recipe,
        warm: Option<&Warm>,
        rng: &mut StdRng,
    ) -> Result<Member, TrainError> {
        let mut make = |name: String, dims: &[usize], init: Init, rng: &mut StdRng| {
            warm_or_new(params, warm, &name, dims, init, rng)
        };
        let queries = (queries > 0)
            .then(|| {
                make(
                    format!("{prefix}.{ATTENTION_QUERIES}"),
                    &[queries, hidden],
                    Init::Normal(0.02),
                    rng,
                )
            })
            .transpose()?;
        let mut linear =
            |name: &str, outputs: usize, inputs: usize, init: Init, rng: &mut StdRng| {
                let weight = make(
                    format!("{prefix}.{name}.weight"),
                    &[outputs, inputs],
                    init,
                    rng,
                )?;
                let bias = make(
                    format!("{prefix}.{name}.bias"),
                    &[outputs],
                    Init::Zeros,
                    rng,
                )?;
                Ok::<_, TrainError>(Linear::new(weight, Some(bias)))
            };
        // He initialisation for the ReLU layers.
        let he = Init::Normal((2.0 / input as f32).sqrt());
        let shared = (recipe.head_hidden > 0)
            .then(|| linear(HIDDEN_LAYER, recipe.head_hidden, input, he, rng))
            .transpose()?;
        let width = if recipe.head_hidden > 0 {
            recipe.head_hidden
        } else {
            input
        };
        let difficulty = linear("difficulty", 1, width, Init::Normal(0.02), rng)?;
        let skills = linear(
            "skills",
            recipe.skills.len(),
            width,
            Init::Normal(0.02),
            rng,
        )?;
        let tool_branch = (recipe.tool_hidden > 0)
            .then(|| linear(TOOL_LAYER, recipe.tool_hidden, input, he, rng))
            .transpose()?;
        let tool_width = if recipe.tool_hidden > 0 {
            recipe.tool_hidden
        } else {
            width
        };
        let tool = linear("tool", 1, tool_width, Init::Normal(0.02), rng)?;
        let length = recipe
            .length_input
            .then(|| make(format!("{prefix}.{LENGTH_WEIGHT}"), &[1], Init::Zeros, rng))
            .transpose()?;
        Ok(Member {
            queries,
            shared,
            difficulty,
            skills,
            tool,
            tool_branch,
            length,
        })
    }

    /// The heads' outputs on `pooled` (the mean and this member's attention-pooled vectors).
    fn outputs(
        &self,
        pooled: &Tensor,
        lengths: Option<&Tensor>,
        tool_index: Option<usize>,
        num_skills: usize,
    ) -> candle_core::Result<Outputs> {
        // Tool labels reach only the tool branch: its input is cut from the graph.
        let tool_features = match &self.tool_branch {
            Some(layer) => Some(layer.forward(&pooled.detach())?.relu()?),
            None => None,
        };
        let features = match &self.shared {
            Some(layer) => layer.forward(pooled)?.relu()?,
            None => pooled.clone(),
        };
        let mut difficulty = self.difficulty.forward(&features)?.squeeze(1)?;
        if let (Some(weight), Some(lengths)) = (&self.length, lengths) {
            difficulty = (difficulty + lengths.broadcast_mul(weight)?)?;
        }
        let skill_logits = self.skills.forward(&features)?;
        let tool_logits = self
            .tool
            .forward(tool_features.as_ref().unwrap_or(&features))?
            .squeeze(1)?;
        let weights = candle_nn::ops::softmax(&skill_logits, D::Minus1)?;
        let mix = match tool_index {
            None => weights,
            Some(t) => {
                let need = candle_nn::ops::sigmoid(&tool_logits)?
                    .detach()
                    .unsqueeze(1)?;
                let mut one_hot = vec![0f32; num_skills];
                one_hot[t] = 1.0;
                let one_hot = Tensor::from_vec(one_hot, (1, num_skills), need.device())?;
                (weights.broadcast_mul(&need.affine(-1.0, 1.0)?)?
                    + need.broadcast_mul(&one_hot)?)?
            }
        };
        Ok(Outputs {
            difficulty,
            skill_logits,
            tool_logits,
            mix,
        })
    }
}

impl Model {
    /// Heads and θ on top of `encoder`, all created in `params` from `rng`. θ starts at each
    /// model's logit of its mean training score, so that b(x) starts near 0.
    ///
    /// With `warm` (fine-tuning a trained directory) the heads start from its weights and the
    /// models it knows from its θ; a model it does not know starts at the known models' mean
    /// θ, shifted by how much better or worse its mean training score is.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mut params: Params,
        encoder: Encoder,
        hidden: usize,
        recipe: &Recipe,
        data: &Dataset,
        pad: u32,
        warm: Option<&Warm>,
        attention_table: Option<StaticEmbedding>,
        rng: &mut StdRng,
    ) -> Result<Model, TrainError> {
        let k = recipe.skills.len();
        let queries = if attention_table.is_some() {
            recipe.attention_queries
        } else {
            0
        };
        let input = hidden * (1 + queries);
        let members = (0..recipe.ensemble)
            .map(|i| {
                let prefix = member_prefix(recipe.ensemble, i);
                Member::new(
                    &mut params,
                    &prefix,
                    input,
                    queries,
                    hidden,
                    recipe,
                    warm,
                    rng,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let context = (queries > 0 && recipe.context_dims > 0)
            .then(|| new_context(&mut params, hidden, recipe, warm, rng))
            .transpose()?;
        let lengths = recipe.length_input.then(|| {
            data.prompts
                .iter()
                .map(|p| length_feature(&p.text))
                .collect()
        });
        let theta_values = initial_theta(data, k, warm);
        let theta = params.insert(
            THETA,
            Tensor::from_vec(theta_values, (data.models.len(), k), &Device::Cpu)?,
        )?;
        Ok(Model {
            params,
            encoder,
            members,
            theta,
            spread: spread_weights(recipe.loss.theta_spread, &data.models, &BTreeMap::new()),
            tool_index: recipe.skills.iter().position(|s| s == "tool_use"),
            num_skills: k,
            pad,
            lengths,
            attention_table: attention_table.filter(|_| queries > 0),
            context,
            distill: None,
            balance: if recipe.loss.balance_classes {
                Balance::of(data, k)
            } else {
                Balance::none(k)
            },
        })
    }

    pub fn theta(&self) -> Result<Vec<Vec<f32>>, TrainError> {
        Ok(self.theta.to_vec2::<f32>()?)
    }

    /// Mean-pooled encoder output for the prompts `batch` (indices into `tokens`).
    fn pooled(
        &self,
        batch: &[usize],
        tokens: &[Vec<u32>],
        dropout: &mut Dropout,
    ) -> candle_core::Result<Tensor> {
        match &self.encoder {
            Encoder::Trainable(encoder) => {
                let ids: Vec<Vec<u32>> = batch.iter().map(|&i| tokens[i].clone()).collect();
                let (ids, mask) = pad_batch(&ids, self.pad, self.params.device())?;
                mean_pool(&encoder.forward_train(&ids, &mask, dropout)?, &mask)
            }
            Encoder::Frozen(table) => {
                let index: Vec<u32> = batch.iter().map(|&i| i as u32).collect();
                table.index_select(&Tensor::new(index, table.device())?, 0)
            }
        }
    }

    /// Each member's outputs for a batch of prompts.
    fn outputs(
        &self,
        batch: &[usize],
        tokens: &[Vec<u32>],
        dropout: &mut Dropout,
    ) -> candle_core::Result<Vec<Outputs>> {
        let mean = self.pooled(batch, tokens, dropout)?;
        // Every member's queries at once, so the batch's tokens are gathered once.
        let attended = match &self.attention_table {
            Some(table) => {
                let queries: Vec<&Tensor> = self
                    .members
                    .iter()
                    .filter_map(|m| m.queries.as_ref())
                    .collect();
                let ids: Vec<Vec<u32>> = batch.iter().map(|&i| tokens[i].clone()).collect();
                Some(table.attend(&ids, &Tensor::cat(&queries, 0)?, self.context.as_ref())?)
            }
            None => None,
        };
        let lengths = match &self.lengths {
            Some(features) => {
                let values: Vec<f32> = batch.iter().map(|&i| features[i]).collect();
                Some(Tensor::from_vec(values, batch.len(), mean.device())?)
            }
            None => None,
        };
        let count = self.members.len();
        self.members
            .iter()
            .enumerate()
            .map(|(i, member)| {
                let pooled = match &attended {
                    Some(all) => {
                        let width = all.dim(1)? / count;
                        Tensor::cat(&[&mean, &all.narrow(1, i * width, width)?], 1)?
                    }
                    None => mean.clone(),
                };
                member.outputs(&pooled, lengths.as_ref(), self.tool_index, self.num_skills)
            })
            .collect()
    }

    /// The training loss of a batch: θ's penalties, and the members' losses averaged.
    fn loss(
        &self,
        batch: &[usize],
        prompts: &[PromptRecord],
        tokens: &[Vec<u32>],
        recipe: &Recipe,
        rng: &mut StdRng,
    ) -> candle_core::Result<Tensor> {
        let mut dropout = Dropout::On {
            rate: recipe.optim.dropout as f32,
            rng,
        };
        let outputs = self.outputs(batch, tokens, &mut dropout)?;
        let mut total = (self.theta.sqr()?.mean_all()? * recipe.loss.theta_l2)?;
        if self.spread.iter().any(|&w| w > 0.0) {
            // Each model's per-skill deviation from its own mean ability, weighted per model.
            let weights = Tensor::from_slice(&self.spread, (self.spread.len(), 1), &Device::Cpu)?;
            let spread = self
                .theta
                .broadcast_sub(&self.theta.mean_keepdim(1)?)?
                .sqr()?
                .broadcast_mul(&weights)?
                .mean_all()?;
            total = (total + spread)?;
        }
        let share = 1.0 / outputs.len() as f64;
        for out in &outputs {
            total = (total + (self.member_loss(out, batch, prompts, recipe)? * share)?)?;
        }
        Ok(total)
    }

    /// One member's loss on a batch: outcomes, battles, levels, distillation, skill and tool
    /// labels.
    fn member_loss(
        &self,
        out: &Outputs,
        batch: &[usize],
        prompts: &[PromptRecord],
        recipe: &Recipe,
    ) -> candle_core::Result<Tensor> {
        let device = self.params.device();
        let mut total = Tensor::new(0f32, device)?;

        let (mut at, mut model, mut score, mut weight) = (vec![], vec![], vec![], vec![]);
        for (position, &p) in batch.iter().enumerate() {
            let prompt = &prompts[p];
            for &(m, s) in &prompt.outcomes {
                at.push(position as u32);
                model.push(m);
                score.push(s);
                weight.push(prompt.weight / prompt.outcomes.len() as f32);
            }
        }
        if !at.is_empty() {
            let at = Tensor::new(at, device)?;
            let theta = self.theta.index_select(&Tensor::new(model, device)?, 0)?;
            let logits = (theta * out.mix.index_select(&at, 0)?)?
                .sum(1)?
                .sub(&out.difficulty.index_select(&at, 0)?)?;
            let weight = Tensor::new(weight, device)?;
            let bce = bce_with_logits(&logits, &Tensor::new(score, device)?)?;
            total = (total
                + ((bce * &weight)?.sum_all()? / weight.sum_all()?.to_scalar::<f32>()? as f64)?)?;
        }

        if recipe.loss.pairwise > 0.0 {
            total =
                (total + (self.pairwise_loss(batch, prompts, &out.mix)? * recipe.loss.pairwise)?)?;
        }

        let level = |p: &PromptRecord| p.level;
        if recipe.loss.level > 0.0
            && let Some(bce) =
                self.balanced_bce(batch, prompts, &out.difficulty, level, self.balance.level)?
        {
            total = (total + (bce * recipe.loss.level)?)?;
        }

        if let Some(teacher) = &self.distill {
            let rows = Tensor::new(batch.iter().map(|&p| p as u32).collect::<Vec<_>>(), device)?;
            let q = teacher.q.index_select(&rows, 0)?;
            let known = teacher.known.index_select(&rows, 0)?;
            // [batch, models]: the student's logit of every model on every prompt of the batch.
            let logits = out
                .mix
                .matmul(&self.theta.t()?)?
                .broadcast_sub(&out.difficulty.unsqueeze(1)?)?;
            let bce = (bce_with_logits(&logits, &q)? * &known)?.sum_all()?;
            let count = known.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
            total = (total + ((bce / count)? * teacher.weight)?)?;
        }

        let labelled: Vec<(u32, usize, f32)> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, &p)| {
                let prompt = &prompts[p];
                prompt
                    .skill
                    .map(|s| (i as u32, s, self.balance.skill[s] * prompt.label_weight))
            })
            .collect();
        if !labelled.is_empty() && recipe.loss.skill > 0.0 {
            let n = labelled.len();
            let mut one_hot = vec![0f32; n * self.num_skills];
            for (row, &(_, label, weight)) in labelled.iter().enumerate() {
                one_hot[row * self.num_skills + label] = weight;
            }
            let weight_sum: f32 = labelled.iter().map(|l| l.2).sum();
            let one_hot = Tensor::from_vec(one_hot, (n, self.num_skills), device)?;
            let at: Vec<u32> = labelled.iter().map(|l| l.0).collect();
            let log_p = candle_nn::ops::log_softmax(
                &out.skill_logits
                    .index_select(&Tensor::new(at, device)?, 0)?,
                D::Minus1,
            )?;
            let ce = ((log_p * one_hot)?.sum_all()? / -(weight_sum as f64))?;
            total = (total + (ce * recipe.loss.skill)?)?;
        }

        let tool = |p: &PromptRecord| p.tool;
        if recipe.loss.tool > 0.0
            && let Some(bce) =
                self.balanced_bce(batch, prompts, &out.tool_logits, tool, self.balance.tool)?
        {
            total = (total + (bce * recipe.loss.tool)?)?;
        }
        Ok(total)
    }

    /// Binary cross-entropy of `logits` (one per batch row) on the 0/1 label that `label`
    /// reads, each row weighted by its class's balance and its prompt's label weight; `None`
    /// when no prompt of the batch has the label.
    fn balanced_bce(
        &self,
        batch: &[usize],
        prompts: &[PromptRecord],
        logits: &Tensor,
        label: impl Fn(&PromptRecord) -> Option<f32>,
        balance: [f32; 2],
    ) -> candle_core::Result<Option<Tensor>> {
        let device = self.params.device();
        let (mut at, mut targets, mut weights) = (vec![], vec![], vec![]);
        for (i, &p) in batch.iter().enumerate() {
            if let Some(y) = label(&prompts[p]) {
                at.push(i as u32);
                targets.push(y);
                weights.push(balance[usize::from(y >= 0.5)] * prompts[p].label_weight);
            }
        }
        if at.is_empty() {
            return Ok(None);
        }
        let sum: f32 = weights.iter().sum();
        let logits = logits.index_select(&Tensor::new(at, device)?, 0)?;
        let bce = bce_with_logits(&logits, &Tensor::new(targets, device)?)?;
        let weighted = (bce * Tensor::new(weights, device)?)?.sum_all()?;
        Ok(Some((weighted / sum as f64)?))
    }

    /// Bradley–Terry on the batch's pairwise outcomes: P(a beats b | x) = σ(logit q_a − logit
    /// q_b) = σ(⟨θ_a − θ_b, g'(x)⟩) (the difficulty cancels), a tie being ½; each prompt's
    /// pairs share its weight. Zero when the batch has none.
    fn pairwise_loss(
        &self,
        batch: &[usize],
        prompts: &[PromptRecord],
        mix: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let device = self.params.device();
        let (mut at, mut a, mut b, mut target, mut weight) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (position, &p) in batch.iter().enumerate() {
            let prompt = &prompts[p];
            for &(x, y, t) in &prompt.pairs {
                at.push(position as u32);
                a.push(x);
                b.push(y);
                target.push(t);
                weight.push(prompt.weight / prompt.pairs.len() as f32);
            }
        }
        if at.is_empty() {
            return Tensor::new(0f32, device);
        }
        let theta_a = self.theta.index_select(&Tensor::new(a, device)?, 0)?;
        let theta_b = self.theta.index_select(&Tensor::new(b, device)?, 0)?;
        let logits =
            ((theta_a - theta_b)? * mix.index_select(&Tensor::new(at, device)?, 0)?)?.sum(1)?;
        let weight = Tensor::new(weight, device)?;
        let bce = bce_with_logits(&logits, &Tensor::new(target, device)?)?;
        (bce * &weight)?.sum_all()? / weight.sum_all()?.to_scalar::<f32>()? as f64
    }

    /// Predictions for `batch`, computed in chunks, as the classifier makes them: the members'
    /// b(x), g(x) and tool need averaged, the tool need then folded into the mix.
    pub fn predict(
        &self,
        batch: &[usize],
        tokens: &[Vec<u32>],
    ) -> candle_core::Result<Vec<PromptPrediction>> {
        let mut out = Vec::with_capacity(batch.len());
        let share = 1.0 / self.members.len() as f64;
        for chunk in batch.chunks(EVAL_BATCH) {
            let outputs = self.outputs(chunk, tokens, &mut Dropout::Off)?;
            let (mut difficulty, mut skills, mut tool) = (None, None, None);
            for o in &outputs {
                let add = |sum: Option<Tensor>, x: Tensor| match sum {
                    None => Ok::<_, candle_core::Error>(x),
                    Some(s) => s + x,
                };
                difficulty = Some(add(difficulty, o.difficulty.clone())?);
                skills = Some(add(
                    skills,
                    candle_nn::ops::softmax(&o.skill_logits, D::Minus1)?,
                )?);
                tool = Some(add(tool, candle_nn::ops::sigmoid(&o.tool_logits)?)?);
            }
            let mean = |sum: Option<Tensor>| sum.expect("at least one member").affine(share, 0.0);
            let difficulty = mean(difficulty)?.to_vec1::<f32>()?;
            let skills = mean(skills)?.to_vec2::<f32>()?;
            let tool = mean(tool)?.to_vec1::<f32>()?;
            for i in 0..chunk.len() {
                let mix = fold_tool_need(&skills[i], tool[i], self.tool_index);
                out.push(PromptPrediction {
                    difficulty: difficulty[i],
                    skills: skills[i].clone(),
                    tool_need: tool[i],
                    mix,
                });
            }
        }
        Ok(out)
    }

    /// Dev metrics over the prompts `dev`, with the same loss components as training.
    pub fn evaluate(
        &self,
        dev: &[usize],
        prompts: &[PromptRecord],
        tokens: &[Vec<u32>],
        recipe: &Recipe,
    ) -> Result<DevMetrics, TrainError> {
        let mut order = dev.to_vec();
        order.sort_by_key(|&i| tokens[i].len());
        let predictions = self.predict(&order, tokens)?;
        let theta = self.theta()?;
        let mut rows = OutcomeRows::default();
        let mut by_source = Vec::new();
        let (mut outcome_loss, mut outcome_weight) = (0.0, 0.0);
        let (mut skill_loss, mut skill_hits, mut skill_n) = (0.0, 0usize, 0usize);
        let (mut tool_scores, mut tool_labels, mut tool_loss) = (vec![], vec![], 0.0);
        let (mut pair_hits, mut blind_hits, mut pair_n) = (0.0, 0.0, 0usize);
        let mean_abilities: Vec<f64> = theta.iter().map(|t| mean_ability(t)).collect();
        for (&p, pred) in order.iter().zip(&predictions) {
            let prompt = &prompts[p];
            let mut prompt_loss = 0.0;
            for &(m, s) in &prompt.outcomes {
                let q = quality(&theta[m as usize], &pred.mix, pred.difficulty);
                rows.push(m, q, s as f64);
                by_source.push((prompt.source.clone(), m, q, s as f64));
                prompt_loss += metrics::log_loss(q, s as f64);
            }
            if !prompt.outcomes.is_empty() {
                outcome_loss += prompt.weight as f64 * prompt_loss / prompt.outcomes.len() as f64;
                outcome_weight += prompt.weight as f64;
            }
            if let Some(label) = prompt.skill {
                skill_loss -= (pred.skills[label].max(1e-7) as f64).ln();
                skill_n += 1;
                let best = pred
                    .skills
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, _)| i);
                skill_hits += usize::from(best == Some(label));
            }
            for &(a, b, t) in prompt.pairs.iter().filter(|pair| pair.2 != 0.5) {
                // Winner first, credited as `eval --battles` credits it (a predicted tie ½).
                let (w, l) = if t > 0.5 { (a, b) } else { (b, a) };
                let q = |m: u32| quality(&theta[m as usize], &pred.mix, pred.difficulty);
                let ability = |m: u32| mean_abilities[m as usize];
                pair_n += 1;
                pair_hits += winner_credit(q(w), q(l));
                blind_hits += winner_credit(ability(w), ability(l));
            }
            if let Some(t) = prompt.tool {
                tool_scores.push(pred.tool_need as f64);
                tool_labels.push(t >= 0.5);
                tool_loss += metrics::log_loss(pred.tool_need as f64, t as f64);
            }
        }
        let theta_l2 = theta.iter().flatten().map(|t| (t * t) as f64).sum::<f64>()
            / theta.iter().flatten().count().max(1) as f64;
        let mean = |sum: f64, n: f64| if n > 0.0 { sum / n } else { 0.0 };
        let loss = mean(outcome_loss, outcome_weight)
            + recipe.loss.skill * mean(skill_loss, skill_n as f64)
            + recipe.loss.tool * mean(tool_loss, tool_labels.len() as f64)
            + recipe.loss.theta_l2 * theta_l2
            + theta_spread(&theta, &self.spread);
        Ok(DevMetrics {
            loss,
            outcome: rows.summary(),
            tool_auc: crate::eval::metrics::roc_auc(&tool_scores, &tool_labels),
            skill_accuracy: (skill_n > 0).then(|| skill_hits as f64 / skill_n as f64),
            pair_accuracy: (pair_n > 0).then(|| pair_hits / pair_n as f64),
            pair_accuracy_model_only: (pair_n > 0).then(|| blind_hits / pair_n as f64),
            per_source: metrics::by_key(&by_source),
        })
    }
}

/// q = σ(⟨θ, g'⟩ − b): the serving path's own function.
pub use triage_core::quality::quality;

/// Numerically stable `−[y log σ(x) + (1 − y) log(1 − σ(x))]`, element-wise.
fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let softplus = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (logits.relu()? - (logits * targets)?)? + softplus
}

/// What a fine-tuning run starts from: a trained directory's heads and θ.
#[derive(Debug, Clone, Default)]
pub struct Warm {
    /// `heads.*` tensors by name.
    pub heads: std::collections::HashMap<String, Tensor>,
    pub abilities: std::collections::BTreeMap<String, Vec<f32>>,
}

/// θ rows (models × skills, flattened): each model's logit of its mean training score on every
/// skill, or, when fine-tuning, the warm θ (see [`Model::new`]).
fn initial_theta(data: &Dataset, k: usize, warm: Option<&Warm>) -> Vec<f32> {
    let logits = model_mean_logits(data);
    let known: Vec<(usize, &Vec<f32>)> = data
        .models
        .iter()
        .enumerate()
        .filter_map(|(i, name)| Some((i, warm?.abilities.get(name).filter(|a| a.len() == k)?)))
        .collect();
    let n = known.len() as f32;
    let mean_theta: Vec<f32> = (0..k)
        .map(|j| known.iter().map(|(_, a)| a[j]).sum::<f32>() / n.max(1.0))
        .collect();
    let mean_logit = known.iter().map(|(i, _)| logits[*i]).sum::<f32>() / n.max(1.0);
    (0..data.models.len())
        .flat_map(|i| match known.iter().find(|(m, _)| *m == i) {
            Some((_, a)) => (*a).clone(),
            None if known.is_empty() => vec![logits[i]; k],
            None => mean_theta
                .iter()
                .map(|t| t + logits[i] - mean_logit)
                .collect(),
        })
        .collect()
}

fn model_mean_logits(data: &Dataset) -> Vec<f32> {
    let mut sums = vec![(0.0f64, 0usize); data.models.len()];
    for prompt in data.prompts.iter().filter(|p| !p.dev) {
        for &(m, s) in &prompt.outcomes {
            sums[m as usize].0 += s as f64;
            sums[m as usize].1 += 1;
        }
    }
    sums.iter()
        .map(|&(sum, n)| {
            let mean = if n == 0 {
                0.5
            } else {
                (sum / n as f64).clamp(0.02, 0.98)
            };
            (mean / (1.0 - mean)).ln() as f32
        })
        .collect()
}

/// Dev outcome numbers of a prompt-blind router: each model's mean training score.
pub fn model_only_baseline(data: &Dataset) -> OutcomeSummary {
    let logits = model_mean_logits(data);
    let mut rows = OutcomeRows::default();
    for prompt in data.prompts.iter().filter(|p| p.dev) {
        for &(m, s) in &prompt.outcomes {
            rows.push(
                m,
                1.0 / (1.0 + (-logits[m as usize] as f64).exp()),
                s as f64,
            );
        }
    }
    rows.summary()
}

/// Batches for one epoch: shuffled, then sorted by length within windows of 16 batches so that
/// a batch pads little, then the batches shuffled.
fn epoch_batches(
    train: &[usize],
    tokens: &[Vec<u32>],
    recipe: &Recipe,
    rng: &mut StdRng,
) -> Vec<Vec<usize>> {
    let size = recipe.optim.batch_size;
    let mut order = train.to_vec();
    order.shuffle(rng);
    if recipe.optim.max_prompts_per_epoch > 0 {
        order.truncate(recipe.optim.max_prompts_per_epoch);
    }
    for window in order.chunks_mut(size * 16) {
        window.sort_by_key(|&i| tokens[i].len());
    }
    let mut batches: Vec<Vec<usize>> = order.chunks(size).map(<[usize]>::to_vec).collect();
    batches.shuffle(rng);
    batches
}

/// Linear warm-up, then cosine decay to a tenth of the peak.
fn learning_rate_factor(step: usize, total: usize, warmup: f64) -> f64 {
    let warmup_steps = ((total as f64) * warmup).ceil().max(1.0);
    let step = step as f64;
    if step < warmup_steps {
        return (step + 1.0) / warmup_steps;
    }
    let progress = ((step - warmup_steps) / (total as f64 - warmup_steps).max(1.0)).min(1.0);
    0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// What [`train`] did.
pub struct Fitted {
    pub epochs: Vec<EpochMetrics>,
    /// The epoch whose weights the model ends with: the lowest dev outcome log-loss with
    /// `keep_best`.
    pub selected_epoch: usize,
    pub gradient: GradientCoverage,
}

/// Runs the epochs; with `keep_best`, ends with the weights of the epoch of lowest dev outcome
/// log-loss.
pub fn train(
    model: &Model,
    data: &Dataset,
    tokens: &[Vec<u32>],
    recipe: &Recipe,
    rng: &mut StdRng,
    quiet: bool,
) -> Result<Fitted, TrainError> {
    let train: Vec<usize> = (0..data.prompts.len())
        .filter(|&i| !data.prompts[i].dev)
        .collect();
    let dev: Vec<usize> = (0..data.prompts.len())
        .filter(|&i| data.prompts[i].dev)
        .collect();
    let optim = &recipe.optim;
    let adam = |vars, lr, weight_decay| {
        AdamW::new(
            vars,
            ParamsAdamW {
                lr,
                weight_decay,
                ..Default::default()
            },
        )
    };
    let encoder_vars = model
        .params
        .entries()
        .iter()
        .filter(|(n, _)| n != THETA && !n.starts_with("heads."))
        .map(|(_, v)| v.clone())
        .collect();
    let encoder_lr = optim.encoder_lr.unwrap_or(optim.lr);
    let mut encoder_opt = adam(encoder_vars, encoder_lr, optim.weight_decay)?;
    // The length weight is one number on the data's scale, like θ: it learns at θ's rate.
    let length = |n: &str| n.starts_with("heads.") && n.ends_with(LENGTH_WEIGHT);
    let heads_vars = model
        .params
        .vars_where(|n| n.starts_with("heads.") && !length(n));
    let mut heads_opt = adam(heads_vars, optim.lr, optim.weight_decay)?;
    let theta_vars = model.params.vars_where(|n| n == THETA || length(n));
    let mut theta_opt = adam(theta_vars, optim.theta_lr, 0.0)?;

    let per_epoch = train.len().min(if optim.max_prompts_per_epoch > 0 {
        optim.max_prompts_per_epoch
    } else {
        usize::MAX
    });
    let steps_per_epoch = per_epoch.div_ceil(optim.batch_size);
    let total_steps = steps_per_epoch * optim.epochs;
    let mut bar = Progress::new(total_steps as u64, "training", "steps", quiet);
    let mut coverage = GradientCoverage::default();
    let mut history = Vec::new();
    let mut best: Option<(f64, usize, Vec<Tensor>)> = None;
    let mut step = 0;
    for epoch in 1..=optim.epochs {
        let started = Instant::now();
        bar.set_label(format!("epoch {epoch}/{}", optim.epochs));
        let (mut loss_sum, mut batches_done, mut prompts_done) = (0.0, 0usize, 0usize);
        for batch in epoch_batches(&train, tokens, recipe, rng) {
            let factor = learning_rate_factor(step, total_steps, optim.warmup);
            encoder_opt.set_learning_rate(encoder_lr * factor);
            heads_opt.set_learning_rate(optim.lr * factor);
            theta_opt.set_learning_rate(optim.theta_lr * factor);
            let loss = model.loss(&batch, &data.prompts, tokens, recipe, rng)?;
            let grads = loss.backward()?;
            if step == 0 {
                coverage = gradient_coverage(&model.params, &grads)?;
            }
            encoder_opt.step(&grads)?;
            heads_opt.step(&grads)?;
            theta_opt.step(&grads)?;
            let value = loss.to_scalar::<f32>()? as f64;
            if !value.is_finite() {
                return Err(TrainError::Invalid(format!(
                    "loss became {value} at epoch {epoch}, step {step}"
                )));
            }
            loss_sum += value;
            batches_done += 1;
            prompts_done += batch.len();
            step += 1;
            bar.set_message(format!("loss {:.4}", loss_sum / batches_done as f64));
            bar.inc(1);
        }
        let prompts_per_second = prompts_done as f64 / started.elapsed().as_secs_f64();
        let dev_metrics = model.evaluate(&dev, &data.prompts, tokens, recipe)?;
        let metrics = EpochMetrics {
            epoch,
            train_loss: loss_sum / batches_done.max(1) as f64,
            dev: dev_metrics,
            prompts_per_second,
            seconds: started.elapsed().as_secs_f64(),
        };
        bar.println(&epoch_line(&metrics, optim.epochs));
        let criterion = metrics.dev.selection_loss();
        if optim.keep_best
            && !dev.is_empty()
            && best.as_ref().is_none_or(|(loss, _, _)| criterion < *loss)
        {
            best = Some((criterion, epoch, model.params.snapshot()?));
        }
        history.push(metrics);
    }
    bar.finish();
    let selected = match best {
        Some((_, epoch, values)) => {
            model.params.restore(&values)?;
            epoch
        }
        None => optim.epochs,
    };
    Ok(Fitted {
        epochs: history,
        selected_epoch: selected,
        gradient: coverage,
    })
}

fn gradient_coverage(
    params: &Params,
    grads: &candle_core::backprop::GradStore,
) -> Result<GradientCoverage, TrainError> {
    let mut coverage = GradientCoverage {
        total: params.entries().len(),
        ..Default::default()
    };
    for (name, var) in params.entries() {
        let nonzero = match grads.get(var.as_tensor()) {
            Some(g) => {
                g.abs()?
                    .sum_all()?
                    .to_dtype(DType::F32)?
                    .to_scalar::<f32>()?
                    > 0.0
            }
            None => false,
        };
        if nonzero {
            coverage.with_gradient += 1;
        } else {
            coverage.without_gradient.push(name.clone());
        }
    }
    Ok(coverage)
}

pub fn epoch_line(m: &EpochMetrics, epochs: usize) -> String {
    let f = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.4}"));
    format!(
        "epoch {}/{epochs}: train loss {:.4}, dev loss {:.4}, dev outcome AUC {} (per model {}), log-loss {}, tool AUC {}, skill acc {}, battles won by the predicted winner {} (θ alone {}) ({:.0} s, {:.0} prompts/s)",
        m.epoch,
        m.train_loss,
        m.dev.loss,
        f(m.dev.outcome.auc),
        f(m.dev.outcome.per_model_auc),
        f(m.dev.outcome.log_loss),
        f(m.dev.tool_auc),
        f(m.dev.skill_accuracy),
        f(m.dev.pair_accuracy),
        f(m.dev.pair_accuracy_model_only),
        m.seconds,
        m.prompts_per_second
    )
}

/// Mean squared deviation of each model's per-skill abilities from that model's mean ability,
/// each model's weighted by its `weights` entry (the penalty [`Model::loss`] adds).
fn theta_spread(theta: &[Vec<f32>], weights: &[f32]) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for (row, &weight) in theta.iter().zip(weights) {
        let mean = row.iter().map(|&t| f64::from(t)).sum::<f64>() / row.len().max(1) as f64;
        sum += f64::from(weight)
            * row
                .iter()
                .map(|&t| (f64::from(t) - mean).powi(2))
                .sum::<f64>();
        n += row.len();
    }
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Graded answers of a model in the outcome log at which its θ spread penalty is halved
/// (chosen against 1,000 and 0: `spread_evidence` in `train`).
pub const SPREAD_RELEASE_ROWS: f64 = 100.0;

/// Per model, the weight of the penalty on its skills' spread around its mean ability: the
/// recipe's `theta_spread`, faded for a model with n answers of evidence in `evidence` to
/// K / (K + n) of it, K = [`SPREAD_RELEASE_ROWS`]: the outcome log is the deployment's own
/// evidence on it, and the penalty gives way as that evidence grows. Models without evidence
/// keep it, so a retrain does not part the skills of models it has nothing new on.
pub fn spread_weights(
    recipe: f64,
    models: &[String],
    evidence: &BTreeMap<String, usize>,
) -> Vec<f32> {
    models
        .iter()
        .map(|m| {
            let n = evidence.get(m).copied().unwrap_or(0) as f64;
            (recipe * SPREAD_RELEASE_ROWS / (SPREAD_RELEASE_ROWS + n)) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rate_warms_up_then_decays() {
        assert!(learning_rate_factor(0, 100, 0.1) < 0.2);
        assert_eq!(learning_rate_factor(9, 100, 0.1), 1.0);
        assert!((learning_rate_factor(99, 100, 0.1) - 0.1).abs() < 0.01);
    }

    #[test]
    fn bce_matches_the_formula() {
        let x = Tensor::new(&[-3f32, 0.0, 2.0], &Device::Cpu).unwrap();
        let y = Tensor::new(&[0f32, 1.0, 0.25], &Device::Cpu).unwrap();
        let got = bce_with_logits(&x, &y).unwrap().to_vec1::<f32>().unwrap();
        for (i, (&x, &y)) in [-3f64, 0.0, 2.0].iter().zip(&[0f64, 1.0, 0.25]).enumerate() {
            let p = 1.0 / (1.0 + (-x).exp());
            assert!((got[i] as f64 - metrics::log_loss(p, y)).abs() < 1e-5);
        }
    }

    #[test]
    fn theta_spread_measures_skills_around_each_models_mean() {
        assert_eq!(
            theta_spread(&[vec![1.0, 1.0], vec![-2.0, -2.0]], &[1.0, 1.0]),
            0.0
        );
        // Deviations ±1 and ±0.5 around means 1 and 0.
        let spread = theta_spread(&[vec![0.0, 2.0], vec![-0.5, 0.5]], &[1.0, 1.0]);
        assert!((spread - (1.0 + 1.0 + 0.25 + 0.25) / 4.0).abs() < 1e-12);
        // Each model's share is weighted by its own entry.
        let spread = theta_spread(&[vec![0.0, 2.0], vec![-0.5, 0.5]], &[0.0, 2.0]);
        assert!((spread - 2.0 * (0.25 + 0.25) / 4.0).abs() < 1e-12);
    }

    #[test]
    fn the_spread_penalty_fades_only_for_the_models_the_log_grades() {
        let models = ["graded".to_string(), "public".to_string()];
        let evidence = [("graded".to_string(), SPREAD_RELEASE_ROWS as usize)].into();
        // K graded answers halve it; no evidence keeps it whole.
        assert_eq!(spread_weights(1.0, &models, &evidence), vec![0.5, 1.0]);
        assert_eq!(
            spread_weights(2.0, &models, &BTreeMap::new()),
            vec![2.0, 2.0]
        );
    }
}
