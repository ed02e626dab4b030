//! Tunes a distilled static table on the teacher's sentence vectors (the Tokenlearn method).
//! A Model2Vec vector comes from `[CLS] token [SEP]`: it knows the word alone. Fitting the table
//! so that a prompt's pooled vector, through one linear map, points where the teacher's
//! contextual sentence vector of that prompt does, teaches it how much each word counts and what
//! it means in the prompts a router sees. No labels are read.
//!
//! Not for: the first distillation (`static_distill`), or heads on the table (`fit`).

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use nalgebra::DMatrix;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::TrainError;
use super::progress::Progress;
use triage_core::classifier::static_embedding::{gather_padded, to_root_norm};

/// Prompts per step.
const BATCH: usize = 256;
/// Every this many prompts (by position) one is held out to measure the fit.
const HOLD_OUT_EVERY: usize = 10;
/// Ridge term of the least-squares map that starts the fit.
const RIDGE: f64 = 1e-3;

/// How the tuning went, also written to `distill.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TuneSummary {
    pub sentences: usize,
    pub held_out: usize,
    pub epochs: usize,
    pub lr: f64,
    /// Mean cosine between the mapped pooled vector and the teacher's (centred), on the held-out
    /// prompts: with the distilled table and the best linear map, then after tuning.
    pub cosine_before: f64,
    pub cosine_after: f64,
    /// The epoch whose table was kept (0: none improved on the distilled table).
    pub best_epoch: usize,
}

/// What to fit: the distilled `table` (`[vocab × dims]`, row-major), each prompt's token ids
/// and the teacher's sentence vectors (`targets`, `[prompts, hidden]`).
pub struct TuneInput<'a> {
    pub table: Vec<f32>,
    pub dims: usize,
    pub tokens: &'a [Vec<u32>],
    pub targets: Tensor,
    /// Special tokens, left out of the mean as the classifier does.
    pub skip: &'a [u32],
}

/// The tuned table (row-major, the shape of `input.table`) and how it went. The table of the
/// epoch with the best held-out cosine is returned; epoch 0 is the distilled one.
pub fn tune(
    input: TuneInput,
    epochs: usize,
    lr: f64,
    seed: u64,
    quiet: bool,
) -> Result<(Vec<f32>, TuneSummary), TrainError> {
    let device = Device::Cpu;
    let dims = input.dims;
    let vocab = input.table.len() / dims;
    let rows: Vec<Vec<u32>> = input
        .tokens
        .iter()
        .map(|ids| {
            ids.iter()
                .copied()
                .filter(|id| !input.skip.contains(id))
                .collect()
        })
        .collect();
    let usable: Vec<usize> = (0..rows.len()).filter(|&i| !rows[i].is_empty()).collect();
    let (held, mut train): (Vec<usize>, Vec<usize>) =
        usable.iter().partition(|&&i| i % HOLD_OUT_EVERY == 0);
    if train.is_empty() || held.is_empty() {
        return Err(TrainError::Invalid(format!(
            "tuning the static table needs prompts to fit and to hold out; {} have tokens",
            usable.len()
        )));
    }
    // Centred on the fitted prompts: the direction every sentence shares says nothing.
    let targets = input.targets.to_dtype(DType::F32)?;
    let mean = targets
        .index_select(&index(&train, &device)?, 0)?
        .mean_keepdim(0)?;
    let targets = targets.broadcast_sub(&mean)?;

    let table = Var::from_tensor(&Tensor::from_vec(input.table, (vocab, dims), &device)?)?;
    let start = least_squares_map(&table, &rows, &train, &targets)?;
    let map = Var::from_tensor(&start)?;
    let cosine_before = held_out_cosine(&table, &map, &rows, &held, &targets)?;
    let mut best = (cosine_before, 0, table.as_tensor().copy()?);
    say(
        quiet,
        format!(
            "tuning on {} prompts ({} held out); held-out cosine with the distilled table {cosine_before:.4}",
            train.len(),
            held.len()
        ),
    );

    // No weight decay: it would shrink every row each step, also those of tokens never seen.
    let mut optim = AdamW::new(
        vec![table.clone(), map.clone()],
        ParamsAdamW {
            lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut rng = StdRng::seed_from_u64(seed);
    for epoch in 1..=epochs {
        train.shuffle(&mut rng);
        let mut bar = Progress::new(train.len() as u64, "tuning", "prompts", quiet);
        for batch in train.chunks(BATCH) {
            let predicted = pooled(table.as_tensor(), &rows, batch)?.matmul(map.as_tensor())?;
            let wanted = targets.index_select(&index(batch, &device)?, 0)?;
            let loss = cosine(&predicted, &wanted)?.mean_all()?.neg()?;
            optim.backward_step(&loss)?;
            bar.inc(batch.len() as u64);
        }
        bar.finish();
        let cos = held_out_cosine(&table, &map, &rows, &held, &targets)?;
        say(quiet, format!("epoch {epoch}: held-out cosine {cos:.4}"));
        if cos > best.0 {
            best = (cos, epoch, table.as_tensor().copy()?);
        }
    }
    let summary = TuneSummary {
        sentences: train.len(),
        held_out: held.len(),
        epochs,
        lr,
        cosine_before,
        cosine_after: best.0,
        best_epoch: best.1,
    };
    Ok((best.2.flatten_all()?.to_vec1::<f32>()?, summary))
}

fn say(quiet: bool, line: String) {
    if !quiet {
        eprintln!("{line}");
    }
}

fn index(rows: &[usize], device: &Device) -> candle_core::Result<Tensor> {
    let ids: Vec<u32> = rows.iter().map(|&i| i as u32).collect();
    Tensor::from_vec(ids, rows.len(), device)
}

/// `[batch, dims]`: for each chosen prompt, the mean of its token vectors scaled to norm √dims,
/// as `StaticEmbedding::pool` computes it, but differentiable in `table`.
fn pooled(table: &Tensor, rows: &[Vec<u32>], chosen: &[usize]) -> candle_core::Result<Tensor> {
    let chosen: Vec<&[u32]> = chosen.iter().map(|&i| rows[i].as_slice()).collect();
    // The mean's scale drops out in the normalisation: the sum will do.
    to_root_norm(&gather_padded(table, &chosen)?.0.sum(1)?)
}

/// `[batch]`: the cosine between matching rows of `a` and `b`.
fn cosine(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let dot = (a * b)?.sum(D::Minus1)?;
    let norms = (a.sqr()?.sum(D::Minus1)?.sqrt()? * b.sqr()?.sum(D::Minus1)?.sqrt()?)?;
    dot / norms.clamp(1e-12, f32::MAX)?
}

fn held_out_cosine(
    table: &Var,
    map: &Var,
    rows: &[Vec<u32>],
    held: &[usize],
    targets: &Tensor,
) -> Result<f64, TrainError> {
    let mut total = 0.0;
    for batch in held.chunks(BATCH) {
        let predicted = pooled(table.as_tensor(), rows, batch)?.matmul(map.as_tensor())?;
        let wanted = targets.index_select(&index(batch, table.device())?, 0)?;
        total += f64::from(cosine(&predicted, &wanted)?.sum_all()?.to_scalar::<f32>()?);
    }
    Ok(total / held.len() as f64)
}

/// `[dims, hidden]`: the ridge least-squares map from the pooled vectors of the fitted prompts
/// to their targets, so that tuning starts from the best the distilled table can do and the
/// table is not bent to fit a random map.
fn least_squares_map(
    table: &Var,
    rows: &[Vec<u32>],
    train: &[usize],
    targets: &Tensor,
) -> Result<Tensor, TrainError> {
    let dims = table.dim(1)?;
    let hidden = targets.dim(1)?;
    let mut xtx = DMatrix::<f64>::zeros(dims, dims);
    let mut xty = DMatrix::<f64>::zeros(dims, hidden);
    for batch in train.chunks(BATCH) {
        let x = pooled(table.as_tensor(), rows, batch)?.to_vec2::<f32>()?;
        let y = targets
            .index_select(&index(batch, table.device())?, 0)?
            .to_vec2::<f32>()?;
        let x = DMatrix::from_fn(batch.len(), dims, |r, c| f64::from(x[r][c]));
        let y = DMatrix::from_fn(batch.len(), hidden, |r, c| f64::from(y[r][c]));
        xtx += x.transpose() * &x;
        xty += x.transpose() * y;
    }
    let scale = xtx.trace() / dims as f64;
    for i in 0..dims {
        xtx[(i, i)] += RIDGE * scale;
    }
    let solved = xtx.cholesky().map(|c| c.solve(&xty)).ok_or_else(|| {
        TrainError::Invalid("the pooled vectors' covariance is not positive definite".into())
    })?;
    let values: Vec<f32> = (0..dims)
        .flat_map(|r| (0..hidden).map(move |c| (r, c)))
        .map(|(r, c)| solved[(r, c)] as f32)
        .collect();
    Ok(Tensor::from_vec(values, (dims, hidden), table.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four words, two of which decide the target direction; the distilled table has them all
    /// alike, so only tuning can separate the sentences.
    #[test]
    fn tuning_moves_pooled_vectors_towards_the_teacher() {
        let dims = 4;
        let table: Vec<f32> = (0..6)
            .flat_map(|t| (0..dims).map(move |d| if d == t % dims { 1.0 } else { 0.3 }))
            .collect();
        // Sentences over tokens 1..=4 (0 is special); the target is +e0 when token 1 occurs
        // before token 2 is ever seen, else −e0: a direction the start table cannot express
        // linearly as well as a tuned one.
        let mut tokens = Vec::new();
        let mut targets = Vec::new();
        for i in 0..400u32 {
            let a = 1 + i % 4;
            let b = 1 + (i / 4) % 4;
            let c = 1 + (i / 16) % 4;
            tokens.push(vec![0, a, b, c, 0]);
            let sign = if [a, b, c].contains(&1) && ![a, b, c].contains(&2) {
                1.0
            } else {
                -1.0
            };
            targets.extend([sign, 0.5 * sign, 0.1, 0.0f32]);
        }
        let targets = Tensor::from_vec(targets, (400, 4), &Device::Cpu).unwrap();
        let input = TuneInput {
            table,
            dims,
            tokens: &tokens,
            targets,
            skip: &[0],
        };
        let (tuned, summary) = tune(input, 30, 0.05, 1, true).unwrap();
        assert_eq!(tuned.len(), 6 * dims);
        assert!(
            summary.cosine_after > summary.cosine_before + 0.05,
            "{summary:?}"
        );
        assert!(summary.best_epoch > 0);
        // The special token's row is never read, so it stays as it was.
        assert_eq!(&tuned[..dims], &[1.0, 0.3, 0.3, 0.3]);
    }
}
