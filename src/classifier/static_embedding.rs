//! Static token embeddings: one pretrained vector per vocabulary token, distilled from a
//! sentence encoder (the Model2Vec method, `train::static_distill`). A prompt's vector is the
//! mean of its tokens' vectors, scaled to a fixed norm: a table lookup, so the cost is the
//! tokenizer's and the representation still carries the encoder's knowledge of words.
//!
//! Not for: distilling the table (that is `train`), or the heads on top (`classifier`).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

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

    fn pool_one(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let kept: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|id| !self.skip.contains(id))
            .collect();
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
    fn a_static_config_is_told_from_a_bert_one() {
        assert!(StaticConfig::is_static(
            r#"{"model_type":"static","vocab_size":3,"hidden_size":2}"#
        ));
        assert!(!StaticConfig::is_static(r#"{"model_type":"bert"}"#));
        assert!(!StaticConfig::is_static("not json"));
    }
}
