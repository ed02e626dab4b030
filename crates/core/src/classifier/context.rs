//! A contextual layer over static token vectors: one multi-head self-attention layer, inside
//! fixed windows of tokens, added back to each token's vector (a residual). A static table gives
//! "search" the same vector in "search the web for …" and in "no need to search the web"; after
//! this layer a token's vector also carries the words around it, so attention pooling can read
//! a phrase rather than a word.
//!
//! Cost stays bounded for long prompts: a token attends only within its window (`window`
//! tokens, the last one shorter), so the work grows linearly with the prompt, not with its
//! square. Learned positions within the window (added to the queries and keys) let it read
//! word order.
//!
//! Not for: the table itself (`static_embedding`), or training it (`train`, which builds this
//! layer from variables).

use candle_core::{D, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

/// Width of one attention head: the layer's width divided by this is its number of heads.
pub const HEAD_DIMS: usize = 16;

/// Names of the layer's tensors, under its prefix (`heads.context` in a model directory).
pub const QUERY: &str = "query.weight";
pub const KEY: &str = "key.weight";
pub const VALUE: &str = "value.weight";
pub const OUTPUT: &str = "output.weight";
pub const QUERY_POSITIONS: &str = "query_positions";
pub const KEY_POSITIONS: &str = "key_positions";

/// The layer's weights: projections from the table's width `hidden` to the layer's width `dims`
/// (`[dims, hidden]`), the output back (`[hidden, dims]`), and a position vector per place in
/// the window for the queries and keys (`[window, dims]`).
pub struct ContextLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    query_positions: Tensor,
    key_positions: Tensor,
    heads: usize,
    window: usize,
}

impl ContextLayer {
    /// From tensors (training passes its variables, so the layer is differentiable in them).
    pub fn new(
        query: Tensor,
        key: Tensor,
        value: Tensor,
        output: Tensor,
        query_positions: Tensor,
        key_positions: Tensor,
    ) -> candle_core::Result<ContextLayer> {
        let (window, dims) = query_positions.dims2()?;
        if dims % HEAD_DIMS != 0 || dims == 0 {
            candle_core::bail!("context layer width {dims} is not a multiple of {HEAD_DIMS}");
        }
        Ok(ContextLayer {
            query: Linear::new(query, None),
            key: Linear::new(key, None),
            value: Linear::new(value, None),
            output: Linear::new(output, None),
            query_positions,
            key_positions,
            heads: dims / HEAD_DIMS,
            window,
        })
    }

    /// The layer under `vb`, when the model has one (its width and window read from the
    /// position tensors' shape).
    pub fn load(vb: &VarBuilder, hidden: usize) -> candle_core::Result<Option<ContextLayer>> {
        if !vb.contains_tensor(QUERY_POSITIONS) {
            return Ok(None);
        }
        let (window, dims) = vb.get_unchecked(QUERY_POSITIONS)?.dims2()?;
        ContextLayer::new(
            vb.get((dims, hidden), QUERY)?,
            vb.get((dims, hidden), KEY)?,
            vb.get((dims, hidden), VALUE)?,
            vb.get((hidden, dims), OUTPUT)?,
            vb.get((window, dims), QUERY_POSITIONS)?,
            vb.get((window, dims), KEY_POSITIONS)?,
        )
        .map(Some)
    }

    /// `[batch, len, hidden]` token vectors in context, for `vectors` (`[batch, len, hidden]`)
    /// and `keep` (`[batch, len, 1]`, 1 on real tokens, 0 on padding). Padding neither attends
    /// nor is attended to, and stays zero.
    pub fn forward(&self, vectors: &Tensor, keep: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, len, hidden) = vectors.dims3()?;
        // A prompt shorter than the window is one window of its own length.
        let window = self.window.min(len);
        let windows = len.div_ceil(window);
        let padded = windows * window;
        let (x, mask) = if padded > len {
            let pad = |t: &Tensor| t.pad_with_zeros(1, 0, padded - len);
            (pad(vectors)?, pad(keep)?)
        } else {
            (vectors.clone(), keep.clone())
        };
        let groups = batch * windows;
        let x = x.reshape((groups, window, hidden))?;
        let dims = self.heads * HEAD_DIMS;
        // [groups, heads, window, HEAD_DIMS]
        let split = |t: Tensor| {
            t.reshape((groups, window, self.heads, HEAD_DIMS))?
                .transpose(1, 2)?
                .contiguous()
        };
        let positions = |p: &Tensor| p.narrow(0, 0, window);
        let q = split(
            self.query
                .forward(&x)?
                .broadcast_add(&positions(&self.query_positions)?)?,
        )?;
        let k = split(
            self.key
                .forward(&x)?
                .broadcast_add(&positions(&self.key_positions)?)?,
        )?;
        let v = split(self.value.forward(&x)?)?;
        // Keys on padding score far below any real one.
        let key_mask = mask.reshape((groups, 1, 1, window))?.affine(1e9, -1e9)?;
        let scores = q
            .matmul(&k.t()?.contiguous()?)?
            .affine(1.0 / (HEAD_DIMS as f64).sqrt(), 0.0)?
            .broadcast_add(&key_mask)?;
        let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let attended = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((groups, window, dims))?;
        let context = self
            .output
            .forward(&attended)?
            .reshape((batch, padded, hidden))?
            .narrow(1, 0, len)?;
        (vectors + context)?.broadcast_mul(keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn layer(window: usize, seed: f32) -> ContextLayer {
        let device = Device::Cpu;
        // Deterministic, distinct values without a random generator.
        let t = |rows: usize, cols: usize, salt: f32| {
            let values: Vec<f32> = (0..rows * cols)
                .map(|i| ((i as f32 * 0.37 + salt + seed).sin()) * 0.5)
                .collect();
            Tensor::from_vec(values, (rows, cols), &device).unwrap()
        };
        ContextLayer::new(
            t(16, 4, 0.1),
            t(16, 4, 0.2),
            t(16, 4, 0.3),
            t(4, 16, 0.4),
            t(window, 16, 0.5),
            t(window, 16, 0.6),
        )
        .unwrap()
    }

    fn tokens(rows: &[&[[f32; 4]]]) -> (Tensor, Tensor) {
        let len = rows.iter().map(|r| r.len()).max().unwrap();
        let (mut flat, mut keep) = (Vec::new(), Vec::new());
        for row in rows {
            for j in 0..len {
                flat.extend(row.get(j).copied().unwrap_or([0.0; 4]));
                keep.push(if j < row.len() { 1f32 } else { 0.0 });
            }
        }
        let device = Device::Cpu;
        (
            Tensor::from_vec(flat, (rows.len(), len, 4), &device).unwrap(),
            Tensor::from_vec(keep, (rows.len(), len, 1), &device).unwrap(),
        )
    }

    #[test]
    fn a_token_reads_its_window_and_padding_changes_nothing() {
        let (a, b, c) = (
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
        );
        let layer = layer(2, 0.0);
        // Windows of two: [a b] [c], and [a c] [c].
        let (x, keep) = tokens(&[&[a, b, c], &[a, c, c], &[a], &[]]);
        let out = layer.forward(&x, &keep).unwrap().to_vec3::<f32>().unwrap();
        // The same token in a different window differs: "a" beside "b" is not "a" beside "c".
        assert!(out[0][0] != out[1][0], "context did not change the vector");
        // A window holding the same tokens gives the same result whatever else the prompt holds.
        assert_eq!(out[0][2], out[1][2]);
        // Padding stays zero, and a prompt padded in a batch reads as it does alone.
        assert_eq!(out[2][1], [0.0; 4]);
        assert_eq!(
            out[3],
            vec![vec![0.0; 4]; 3],
            "a prompt with no token stays zero"
        );
        let (alone, keep_alone) = tokens(&[&[a]]);
        let single = layer
            .forward(&alone, &keep_alone)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        for (x, y) in single[0][0].iter().zip(&out[2][0]) {
            assert!((x - y).abs() < 1e-6);
        }
    }

    #[test]
    fn word_order_inside_a_window_matters() {
        let (a, b) = ([1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]);
        let layer = layer(4, 1.0);
        let (x, keep) = tokens(&[&[a, b], &[b, a]]);
        let out = layer.forward(&x, &keep).unwrap().to_vec3::<f32>().unwrap();
        // "a b" and "b a": the same words, read in a different order.
        assert!(out[0][0] != out[1][1]);
    }
}
