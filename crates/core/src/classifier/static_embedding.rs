//! Static token embeddings: one pretrained vector per vocabulary token, distilled from a
//! sentence encoder (the Model2Vec method, `train::static_distill`). A prompt's vector is the
//! mean of its tokens' vectors, scaled to a fixed norm: a table lookup, so the cost is the
//! tokenizer's and the representation still carries the encoder's knowledge of words.
//!
//! Not for: distilling the table (that is `train`), or the heads on top (`classifier`).

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::context::ContextLayer;

/// `model_type` in `config.json` of a static-embedding model directory.
pub const MODEL_TYPE: &str = "static";
/// Name of the table in `model.safetensors`.
pub const TABLE: &str = "embeddings.weight";

/// `config.json` of a static-embedding model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StaticConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// What the table was distilled from and how, in words.
    #[serde(default)]
    pub source: String,
}

/// The loaded table, and the token ids that carry no meaning of their own.
pub struct StaticEmbedding {
    table: Tensor,
    skip: Vec<u32>,
    hidden: usize,
}

impl StaticConfig {
    /// Whether a `config.json` text describes a static model (else it is a BERT one).
    pub fn is_static(config_text: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(config_text)
            .ok()
            .and_then(|v| v.get("model_type")?.as_str().map(|t| t == MODEL_TYPE))
            .unwrap_or(false)
    }
}

impl StaticEmbedding {
    /// The table from `vb` (stored in any float type; computed in f32). `skip`: the special
    /// tokens (`[CLS]`, `[SEP]`, `[PAD]`), left out of the mean.
    pub fn load(
        vb: VarBuilder,
        config: &StaticConfig,
        skip: Vec<u32>,
    ) -> candle_core::Result<StaticEmbedding> {
        let table = vb
            .get((config.vocab_size, config.hidden_size), TABLE)?
            .to_dtype(DType::F32)?;
        Ok(StaticEmbedding::new(table, skip))
    }

    pub fn new(table: Tensor, skip: Vec<u32>) -> StaticEmbedding {
        let hidden = table.dims().last().copied().unwrap_or(0);
        StaticEmbedding {
            table,
            skip,
            hidden,
        }
    }

    /// `[batch, hidden]`: per token list, the mean of its tokens' vectors scaled to norm
    /// √hidden (so features are of unit scale for the heads); zero for a list with no token.
    pub fn pool(&self, ids: &[Vec<u32>], device: &Device) -> candle_core::Result<Tensor> {
        let rows = ids
            .iter()
            .map(|row| self.pool_one(row))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::stack(&rows, 0)?.to_device(device)
    }

    /// The ids that carry meaning: `ids` without the special tokens.
    fn kept(&self, ids: &[u32]) -> Vec<u32> {
        ids.iter()
            .copied()
            .filter(|id| !self.skip.contains(id))
            .collect()
    }

    fn pool_one(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let kept = self.kept(ids);
        if kept.is_empty() {
            return Tensor::zeros(self.hidden, DType::F32, self.table.device());
        }
        let n = kept.len();
        let index = Tensor::from_vec(kept, n, self.table.device())?;
        let mean = self.table.index_select(&index, 0)?.mean(0)?;
        let norm = mean.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
        let scale = (self.hidden as f32).sqrt() / norm.max(1e-12);
        mean.affine(scale as f64, 0.0)
    }
}

impl StaticEmbedding {
    /// `[batch, queries × hidden]`: attention pooling over each token list's vectors, one
    /// softmax-weighted mean per learned query (`queries`: `[queries, hidden]`), each scaled to
    /// norm √hidden like [`Self::pool`]. A query learns which words to look at ("prove",
    /// "weather", a code keyword) where the plain mean weighs every word alike. With `context`,
    /// the queries read the token vectors after that layer (`context`). Differentiable in
    /// `queries` and the layer (training calls it with variables); zero for a list with no
    /// token.
    pub fn attend(
        &self,
        ids: &[Vec<u32>],
        queries: &Tensor,
        context: Option<&ContextLayer>,
    ) -> candle_core::Result<Tensor> {
        let device = queries.device();
        let (batch, heads) = (ids.len(), queries.dim(0)?);
        let kept: Vec<Vec<u32>> = ids.iter().map(|row| self.kept(row)).collect();
        let rows: Vec<&[u32]> = kept.iter().map(Vec::as_slice).collect();
        let (vectors, keep) = gather_padded(&self.table, &rows)?;
        let (vectors, keep) = (vectors.to_device(device)?, keep.to_device(device)?);
        let vectors = match context {
            Some(layer) => layer.forward(&vectors, &keep)?,
            None => vectors,
        };
        // [batch, len, queries]: scores, then weights over the tokens (dimension 1); padding
        // scores far below any real one.
        let scores = vectors
            .broadcast_matmul(&queries.t()?)?
            .affine(1.0 / (self.hidden as f64).sqrt(), 0.0)?
            .broadcast_add(&keep.affine(1e9, -1e9)?)?;
        let weights = candle_nn::ops::softmax(&scores, 1)?;
        let pooled = weights.transpose(1, 2)?.contiguous()?.matmul(&vectors)?;
        to_root_norm(&pooled)?.reshape((batch, heads * self.hidden))
    }
}

/// `([batch, len, hidden], [batch, len, 1])`: each token list's rows of `table`, padded to the
/// longest list with zero vectors, and the mask that is 1 on real tokens and 0 on padding (a
/// list with no token is one padding position). Differentiable in `table`.
pub fn gather_padded(table: &Tensor, rows: &[&[u32]]) -> candle_core::Result<(Tensor, Tensor)> {
    let batch = rows.len();
    let len = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
    let (mut flat, mut keep) = (Vec::with_capacity(batch * len), Vec::new());
    for row in rows {
        for j in 0..len {
            flat.push(row.get(j).copied().unwrap_or(0));
            keep.push(if j < row.len() { 1f32 } else { 0.0 });
        }
    }
    let device = table.device();
    let index = Tensor::from_vec(flat, batch * len, device)?;
    let keep = Tensor::from_vec(keep, (batch, len, 1), device)?;
    let vectors = table
        .index_select(&index, 0)?
        .reshape((batch, len, table.dim(1)?))?
        .broadcast_mul(&keep)?;
    Ok((vectors, keep))
}

/// `vectors` scaled along their last dimension to norm √(its size), the scale the heads read
/// (zero stays zero).
pub fn to_root_norm(vectors: &Tensor) -> candle_core::Result<Tensor> {
    let hidden = vectors.dim(D::Minus1)?;
    let norm = vectors
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f32::MAX)?;
    vectors
        .broadcast_div(&norm)?
        .affine((hidden as f64).sqrt(), 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_averages_tokens_skips_special_ones_and_scales_to_root_hidden() {
        let table = Tensor::new(
            &[[0f32, 0.], [3., 0.], [0., 4.], [100., 100.]],
            &Device::Cpu,
        )
        .unwrap();
        let embedding = StaticEmbedding::new(table, vec![3]);
        let pooled = embedding
            .pool(&[vec![3, 1, 2, 3], vec![3, 1], vec![3]], &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // mean of (3,0) and (0,4) is (1.5, 2), norm 2.5, scaled to √2.
        let s = 2f32.sqrt() / 2.5;
        assert!((pooled[0][0] - 1.5 * s).abs() < 1e-5 && (pooled[0][1] - 2.0 * s).abs() < 1e-5);
        assert!((pooled[1][0] - 2f32.sqrt()).abs() < 1e-5 && pooled[1][1].abs() < 1e-6);
        assert_eq!(pooled[2], [0.0, 0.0]);
    }

    #[test]
    fn attention_pools_towards_the_tokens_a_query_points_at() {
        let table = Tensor::new(
            &[[0f32, 0.], [3., 0.], [0., 4.], [100., 100.]],
            &Device::Cpu,
        )
        .unwrap();
        let embedding = StaticEmbedding::new(table, vec![3]);
        // A query along the second axis, and one that looks nowhere in particular.
        let queries = Tensor::new(&[[0f32, 50.], [0., 0.]], &Device::Cpu).unwrap();
        let pooled = embedding
            .attend(&[vec![3, 1, 2, 3], vec![3]], &queries, None)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let root = 2f32.sqrt();
        // First query: almost all weight on token 2 = (0, 4), scaled to √2.
        assert!(pooled[0][0].abs() < 1e-3 && (pooled[0][1] - root).abs() < 1e-3);
        // Second query: the plain mean (1.5, 2) scaled to √2, as `pool` gives.
        let s = root / 2.5;
        assert!((pooled[0][2] - 1.5 * s).abs() < 1e-4 && (pooled[0][3] - 2.0 * s).abs() < 1e-4);
        // A list with only special tokens: zero, and no NaN.
        assert_eq!(pooled[1], [0.0; 4]);
    }

    #[test]
    fn a_static_config_is_told_from_a_bert_one() {
        assert!(StaticConfig::is_static(
            r#"{"model_type":"static","vocab_size":3,"hidden_size":2}"#
        ));
        assert!(!StaticConfig::is_static(r#"{"model_type":"bert"}"#));
        assert!(!StaticConfig::is_static("not json"));
    }
}
