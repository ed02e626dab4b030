//! A BERT encoder for training: the same computation as candle-transformers' `BertModel`, with
//! the same tensor names, but every layer norm built from differentiable ops
//! (`candle_nn::ops::layer_norm_slow`). candle's fused layer norm has no backward pass, so the
//! stock model trains only what sits above it; the weights this one learns load unchanged into
//! the stock model, which the classifier uses at inference.
//!
//! Not for: inference (the classifier uses the stock, faster model).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear};
use rand::rngs::StdRng;
use serde::Serialize;

use super::TrainError;
use super::params::Params;

/// A `config.json` that candle-transformers' `bert::Config` reads.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct BertShape {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub hidden_dropout_prob: f64,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub initializer_range: f64,
    pub layer_norm_eps: f64,
    pub pad_token_id: usize,
    #[serde(default = "bert")]
    pub model_type: String,
}

fn bert() -> String {
    "bert".into()
}

/// The trainable encoder: embeddings and layers, each weight a `Var` in a [`Params`] table.
pub struct TrainEncoder {
    pub shape: BertShape,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: Norm,
    layers: Vec<Layer>,
}

struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

impl TrainEncoder {
    /// Creates the encoder's variables in `params`: linear and embedding weights N(0, 0.02)
    /// (BERT's initialiser; candle's default std 1 trains badly), biases 0, norms 1 and 0.
    pub fn new(
        shape: &BertShape,
        params: &mut Params,
        rng: &mut StdRng,
    ) -> Result<TrainEncoder, TrainError> {
        let std = shape.initializer_range as f32;
        let mut make =
            |name: &str, dims: &[usize], rng: &mut StdRng| -> Result<Tensor, TrainError> {
                let init = match name.rsplit('.').next() {
                    Some("bias") => Init::Zeros,
                    _ if name.contains("LayerNorm") => Init::Ones,
                    _ => Init::Normal(std),
                };
                params.create(name, dims, init, rng)
            };
        TrainEncoder::build(shape, &mut make, rng)
    }

    /// Creates the encoder's variables from a pretrained model's safetensors (fine-tuning).
    pub fn from_pretrained(
        shape: &BertShape,
        weights: &Path,
        params: &mut Params,
        rng: &mut StdRng,
    ) -> Result<TrainEncoder, TrainError> {
        let tensors: HashMap<String, Tensor> =
            candle_core::safetensors::load(weights, &Device::Cpu)?;
        let mut take = |name: &str, dims: &[usize], _: &mut StdRng| -> Result<Tensor, TrainError> {
            let tensor = tensors
                .get(name)
                .or_else(|| tensors.get(&format!("bert.{name}")))
                .ok_or_else(|| {
                    TrainError::Invalid(format!("{}: no tensor {name}", weights.display()))
                })?;
            if tensor.dims() != dims {
                return Err(TrainError::Invalid(format!(
                    "{}: {name} has shape {:?}, the config says {dims:?}",
                    weights.display(),
                    tensor.dims()
                )));
            }
            params.insert(name, tensor.to_dtype(DType::F32)?)
        };
        TrainEncoder::build(shape, &mut take, rng)
    }

    fn build(
        shape: &BertShape,
        make: &mut MakeTensor,
        rng: &mut StdRng,
    ) -> Result<TrainEncoder, TrainError> {
        let h = shape.hidden_size;
        let eps = shape.layer_norm_eps as f32;
        let word = make(
            "embeddings.word_embeddings.weight",
            &[shape.vocab_size, h],
            rng,
        )?;
        let position = make(
            "embeddings.position_embeddings.weight",
            &[shape.max_position_embeddings, h],
            rng,
        )?;
        let token_type = make(
            "embeddings.token_type_embeddings.weight",
            &[shape.type_vocab_size, h],
            rng,
        )?;
        let norm = Norm::new(make, "embeddings.LayerNorm", h, eps, rng)?;
        let mut layers = Vec::with_capacity(shape.num_hidden_layers);
        for i in 0..shape.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let ffn = shape.intermediate_size;
            layers.push(Layer {
                query: linear(make, &format!("{p}.attention.self.query"), h, h, rng)?,
                key: linear(make, &format!("{p}.attention.self.key"), h, h, rng)?,
                value: linear(make, &format!("{p}.attention.self.value"), h, h, rng)?,
                attention_out: linear(make, &format!("{p}.attention.output.dense"), h, h, rng)?,
                attention_norm: Norm::new(
                    make,
                    &format!("{p}.attention.output.LayerNorm"),
                    h,
                    eps,
                    rng,
                )?,
                intermediate: linear(make, &format!("{p}.intermediate.dense"), h, ffn, rng)?,
                output: linear(make, &format!("{p}.output.dense"), ffn, h, rng)?,
                output_norm: Norm::new(make, &format!("{p}.output.LayerNorm"), h, eps, rng)?,
            });
        }
        Ok(TrainEncoder {
            shape: shape.clone(),
            word: Embedding::new(word, h),
            position: Embedding::new(position, h),
            token_type: Embedding::new(token_type, h),
            norm,
            layers,
        })
    }

    /// Last hidden state `[batch, len, hidden]` for `input_ids` and a 0/1 `mask`, both
    /// `[batch, len]` u32, as `BertModel::forward` computes it with token types all 0.
    pub fn forward(&self, input_ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_train(input_ids, mask, &mut Dropout::Off)
    }

    /// [`TrainEncoder::forward`] with BERT's hidden dropout (after the embeddings and after each
    /// block's output projection, before the residual add).
    pub fn forward_train(
        &self,
        input_ids: &Tensor,
        mask: &Tensor,
        dropout: &mut Dropout,
    ) -> candle_core::Result<Tensor> {
        let (_, len) = input_ids.dims2()?;
        let token_types = input_ids.zeros_like()?;
        let positions = Tensor::arange(0u32, len as u32, input_ids.device())?;
        let embedded = self
            .word
            .forward(input_ids)?
            .add(&self.token_type.forward(&token_types)?)?
            .broadcast_add(&self.position.forward(&positions)?)?;
        let mut hidden = dropout.apply(&self.norm.forward(&embedded)?)?;
        // BertModel's additive mask: 0 where attended, f32::MIN where padded; built in f32.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(1)?.unsqueeze(1)?;
        let additive = (mask.ones_like()? - &mask)?.affine(f32::MIN as f64, 0.0)?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &additive, &self.shape, dropout)?;
        }
        Ok(hidden)
    }
}

/// Inverted dropout whose masks come from the run's seeded generator (candle's own dropout
/// draws from an unseeded one, and a fixed seed must give the same model twice).
pub enum Dropout<'a> {
    Off,
    On { rate: f32, rng: &'a mut StdRng },
}

impl Dropout<'_> {
    pub fn apply(&mut self, x: &Tensor) -> candle_core::Result<Tensor> {
        use rand::Rng;
        match self {
            Dropout::On { rate, rng } if *rate > 0.0 => {
                let scale = 1.0 / (1.0 - *rate);
                let mask: Vec<f32> = (0..x.elem_count())
                    .map(|_| {
                        if rng.random::<f32>() < *rate {
                            0.0
                        } else {
                            scale
                        }
                    })
                    .collect();
                x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?)
            }
            _ => Ok(x.clone()),
        }
    }
}

/// Makes (or loads) the variable `name` of shape `dims`.
type MakeTensor<'a> = dyn FnMut(&str, &[usize], &mut StdRng) -> Result<Tensor, TrainError> + 'a;

fn linear(
    make: &mut MakeTensor,
    name: &str,
    inputs: usize,
    outputs: usize,
    rng: &mut StdRng,
) -> Result<Linear, TrainError> {
    let weight = make(&format!("{name}.weight"), &[outputs, inputs], rng)?;
    let bias = make(&format!("{name}.bias"), &[outputs], rng)?;
    Ok(Linear::new(weight, Some(bias)))
}

impl Norm {
    fn new(
        make: &mut MakeTensor,
        name: &str,
        size: usize,
        eps: f32,
        rng: &mut StdRng,
    ) -> Result<Norm, TrainError> {
        Ok(Norm {
            weight: make(&format!("{name}.weight"), &[size], rng)?,
            bias: make(&format!("{name}.bias"), &[size], rng)?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, self.eps)
    }
}

impl Layer {
    fn forward(
        &self,
        hidden: &Tensor,
        additive_mask: &Tensor,
        shape: &BertShape,
        dropout: &mut Dropout,
    ) -> candle_core::Result<Tensor> {
        let heads = shape.num_attention_heads;
        let head_size = shape.hidden_size / heads;
        let split = |x: Tensor| -> candle_core::Result<Tensor> {
            let (b, l, _) = x.dims3()?;
            x.reshape((b, l, heads, head_size))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.query.forward(hidden)?)?;
        let k = split(self.key.forward(hidden)?)?;
        let v = split(self.value.forward(hidden)?)?;
        let scores =
            (q.matmul(&k.t()?)? / (head_size as f64).sqrt())?.broadcast_add(additive_mask)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .flatten_from(D::Minus2)?;
        let attended = self
            .attention_norm
            .forward(&(dropout.apply(&self.attention_out.forward(&context)?)? + hidden)?)?;
        let inner = self.intermediate.forward(&attended)?;
        let inner = match shape.hidden_act.as_str() {
            "relu" => inner.relu()?,
            "gelu_approximate" => inner.gelu()?,
            _ => inner.gelu_erf()?,
        };
        self.output_norm
            .forward(&(dropout.apply(&self.output.forward(&inner)?)? + attended)?)
    }
}

/// How a new variable starts.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Zeros,
    Ones,
    Normal(f32),
}

impl Init {
    pub fn values(self, count: usize, rng: &mut StdRng) -> Vec<f32> {
        match self {
            Init::Zeros => vec![0.0; count],
            Init::Ones => vec![1.0; count],
            Init::Normal(std) => normal(count, std, rng),
        }
    }
}

/// `count` draws from N(0, std²) (Box–Muller over the seeded generator: the same on every
/// platform, unlike a library sampler whose algorithm may change).
pub fn normal(count: usize, std: f32, rng: &mut StdRng) -> Vec<f32> {
    use rand::Rng;
    let mut out = Vec::with_capacity(count + 1);
    while out.len() < count {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        out.push((r * angle.cos()) as f32 * std);
        out.push((r * angle.sin()) as f32 * std);
    }
    out.truncate(count);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarBuilder;
    use candle_transformers::models::bert::{BertModel, Config};
    use rand::SeedableRng;

    fn tiny_shape(act: &str) -> BertShape {
        BertShape {
            vocab_size: 50,
            hidden_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 24,
            hidden_act: act.into(),
            hidden_dropout_prob: 0.0,
            max_position_embeddings: 32,
            type_vocab_size: 2,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            model_type: "bert".into(),
        }
    }

    #[test]
    fn matches_the_stock_bert_model_on_its_saved_weights() {
        for act in ["relu", "gelu"] {
            let shape = tiny_shape(act);
            let mut params = Params::default();
            let mut rng = StdRng::seed_from_u64(3);
            // Larger weights than BERT's 0.02 so that every part of the network matters.
            let mut shape_big = shape.clone();
            shape_big.initializer_range = 0.5;
            let encoder = TrainEncoder::new(&shape_big, &mut params, &mut rng).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("model.safetensors");
            params.save(&file).unwrap();
            let config: Config =
                serde_json::from_value(serde_json::to_value(&shape).unwrap()).unwrap();
            let vb =
                unsafe { VarBuilder::from_mmaped_safetensors(&[&file], DType::F32, &Device::Cpu) }
                    .unwrap();
            let stock = BertModel::load(vb, &config).unwrap();
            let ids = Tensor::new(&[[2u32, 7, 9, 11, 3], [2, 5, 3, 0, 0]], &Device::Cpu).unwrap();
            let mask = Tensor::new(&[[1u32, 1, 1, 1, 1], [1, 1, 1, 0, 0]], &Device::Cpu).unwrap();
            let ours = encoder.forward(&ids, &mask).unwrap();
            let theirs = stock
                .forward(&ids, &ids.zeros_like().unwrap(), Some(&mask))
                .unwrap();
            let diff = (ours - theirs)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "{act}: max difference {diff}");
        }
    }

    #[test]
    fn normal_draws_have_the_asked_spread() {
        let mut rng = StdRng::seed_from_u64(1);
        let xs = normal(20_000, 0.02, &mut rng);
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / xs.len() as f32;
        assert!(mean.abs() < 1e-3 && (var.sqrt() - 0.02).abs() < 1e-3);
    }
}
