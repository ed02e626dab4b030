//! `triage distill-static`: static token embeddings from a pretrained sentence encoder, the
//! Model2Vec method, in candle. Every vocabulary token goes through the encoder alone
//! (`[CLS] token [SEP]`, mean-pooled); PCA keeps the main `dims` directions (centred, which
//! also removes the direction every token shares); each vector is then weighted by
//! a / (a + p(token)) (SIF), with p the token's frequency in a corpus of prompts, so frequent
//! function words count little in a mean. No labelled data is needed.
//!
//! With `--sentences N` the table is then tuned on the encoder's own sentence vectors of N
//! corpus prompts (`static_tune`, the Tokenlearn method). The corpus is read as given: name
//! training sources only, never an evaluation set.
//!
//! The output is a static-embedding model directory (`classifier::static_embedding`):
//! `config.json`, `model.safetensors` (the table, f16) and the encoder's `tokenizer.json`.
//!
//! Not for: training heads on the table (`triage train` with `encoder = "static:<dir>"`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use nalgebra::{DMatrix, SymmetricEigen};
use serde_json::json;

use super::TrainError;
use super::data::{for_each_row, stable_hash};
use super::frozen;
use super::progress::Progress;
use super::static_tune::{TuneInput, TuneSummary, tune};
use crate::eval::data::prompt_text;
use triage_core::classifier::static_embedding::{MODEL_TYPE, StaticConfig, TABLE};
use triage_core::classifier::{
    CONFIG_FILE, TOKENIZER_FILE, load_tokenizer, mean_pool, pad_batch, token_ids,
};

/// Tokens per encoder batch.
const BATCH: usize = 256;
/// SIF's `a`: a token as frequent as this fraction of all tokens gets half weight.
const SIF_A: f64 = 1e-3;

/// `triage distill-static` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DistillArgs {
    /// A BERT-family sentence encoder directory (`config.json`, `model.safetensors`,
    /// `tokenizer.json`), e.g. all-MiniLM-L6-v2 (`bash scripts/fetch-minilm.sh` prints one).
    #[arg(long)]
    pub teacher: PathBuf,
    /// Directory to write.
    #[arg(long, default_value = "target/static-minilm")]
    pub out: PathBuf,
    /// Dimensions kept by the PCA.
    #[arg(long, default_value_t = 256)]
    pub dims: usize,
    /// JSON-lines files (plain or gzip) whose `prompt` fields give the token frequencies.
    #[arg(long, num_args = 1..)]
    pub corpus: Vec<PathBuf>,
    /// Read at most this many prompts per corpus file.
    #[arg(long, default_value_t = 20_000)]
    pub max_prompts: usize,
    /// Then tune the table on the teacher's sentence vectors of this many corpus prompts (a
    /// stable-hash sample; 0: no tuning), the Tokenlearn method (`static_tune`).
    #[arg(long, default_value_t = 0)]
    pub sentences: usize,
    /// Token budget of each tuning prompt (its end is kept, as the classifier does).
    #[arg(long, default_value_t = 256)]
    pub sentence_tokens: usize,
    /// Passes over the tuning prompts; the epoch with the best held-out cosine is kept.
    #[arg(long, default_value_t = 4)]
    pub tune_epochs: usize,
    /// AdamW learning rate of the table and the map while tuning.
    #[arg(long, default_value_t = 1e-3)]
    pub tune_lr: f64,
    /// Where the teacher's sentence vectors are cached (shared with `train`'s frozen encoders).
    #[arg(long, default_value = "target/train-cache")]
    pub cache_dir: PathBuf,
    #[arg(long)]
    pub quiet: bool,
}

/// What a run did, also written to `distill.json` beside the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DistillSummary {
    pub vocab: usize,
    pub teacher_hidden: usize,
    pub dims: usize,
    /// Share of the teacher vectors' variance the kept directions explain.
    pub explained_variance: f64,
    pub corpus_prompts: usize,
    pub corpus_tokens: u64,
    pub seconds: f64,
    pub tuning: Option<TuneSummary>,
}

pub fn run(args: &DistillArgs) -> Result<DistillSummary, TrainError> {
    let started = Instant::now();
    let config_path = args.teacher.join(CONFIG_FILE);
    let config_text =
        std::fs::read_to_string(&config_path).map_err(|e| file_error(&config_path, e))?;
    let config: Config = serde_json::from_str(&config_text).map_err(|e| TrainError::File {
        path: config_path.clone(),
        message: e.to_string(),
    })?;
    let hidden = config.hidden_size;
    if args.dims == 0 || args.dims > hidden {
        return Err(TrainError::Invalid(format!(
            "--dims {} must be between 1 and the teacher's {hidden}",
            args.dims
        )));
    }
    let tokenizer = load_tokenizer(&args.teacher.join(TOKENIZER_FILE))?;
    let vocab = tokenizer.get_vocab_size(true);
    let special =
        triage_core::classifier::special_tokens(&tokenizer).map_err(TrainError::Tokenizer)?;

    let vectors = token_vectors(&args.teacher, &config, vocab, special, args.quiet)?;
    let (projected, explained_variance) = pca(&vectors, vocab, hidden, args.dims);
    let texts = corpus_texts(&args.corpus, args.max_prompts)?;
    let counts = token_counts(&tokenizer, &texts)?;
    let corpus_tokens: u64 = counts.values().sum();
    let mut table = sif_weighted(projected, args.dims, &counts, corpus_tokens);
    let mut tuning = None;
    if args.sentences > 0 {
        let (tuned, summary) = tune_on_sentences(args, &tokenizer, special, &texts, table)?;
        table = tuned;
        tuning = Some(summary);
    }

    write_dir(args, &table, vocab, tuning.as_ref())?;
    let summary = DistillSummary {
        vocab,
        teacher_hidden: hidden,
        dims: args.dims,
        explained_variance,
        corpus_prompts: texts.len(),
        corpus_tokens,
        seconds: started.elapsed().as_secs_f64(),
        tuning,
    };
    let path = args.out.join("distill.json");
    let text = serde_json::to_string_pretty(&json!({
        "teacher": args.teacher,
        "corpus": args.corpus,
        "sif_a": SIF_A,
        "summary": summary,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    }))
    .expect("a summary serialises");
    std::fs::write(&path, text + "\n").map_err(|e| file_error(&path, e))?;
    Ok(summary)
}

fn file_error(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// `[vocab × hidden]`, row-major: each token's mean-pooled output for `[CLS] token [SEP]`.
fn token_vectors(
    teacher: &Path,
    config: &Config,
    vocab: usize,
    special: triage_core::classifier::SpecialTokens,
    quiet: bool,
) -> Result<Vec<f32>, TrainError> {
    let device = Device::Cpu;
    let weights = teacher.join("model.safetensors");
    // SAFETY: the file is mapped read-only and not modified while the model lives.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }?;
    let model = BertModel::load(vb, config)?;
    let mut out = Vec::with_capacity(vocab * config.hidden_size);
    let mut bar = Progress::new(vocab as u64, "encoding", "tokens", quiet);
    let ids: Vec<u32> = (0..vocab as u32).collect();
    for chunk in ids.chunks(BATCH) {
        let rows: Vec<Vec<u32>> = chunk
            .iter()
            .map(|&id| vec![special.cls, id, special.sep])
            .collect();
        let (input, mask) = pad_batch(&rows, special.pad, &device)?;
        let hidden = model.forward(&input, &input.zeros_like()?, Some(&mask))?;
        out.extend(mean_pool(&hidden, &mask)?.flatten_all()?.to_vec1::<f32>()?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    Ok(out)
}

/// Centres the rows and projects them on the `dims` leading eigenvectors of their covariance.
/// Returns the projected rows (row-major) and the share of variance they keep.
fn pca(vectors: &[f32], rows: usize, cols: usize, dims: usize) -> (Vec<f32>, f64) {
    let data = DMatrix::from_row_slice(rows, cols, vectors).map(f64::from);
    let mean = data.row_mean();
    let centred = DMatrix::from_fn(rows, cols, |r, c| data[(r, c)] - mean[c]);
    let covariance = centred.transpose() * &centred / (rows.max(2) - 1) as f64;
    let eigen = SymmetricEigen::new(covariance);
    let mut order: Vec<usize> = (0..cols).collect();
    order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
    let kept = &order[..dims];
    let total: f64 = eigen.eigenvalues.iter().map(|v| v.max(0.0)).sum();
    let explained: f64 = kept.iter().map(|&i| eigen.eigenvalues[i].max(0.0)).sum();
    let mut basis = DMatrix::from_fn(cols, dims, |r, c| eigen.eigenvectors[(r, kept[c])]);
    orient(&mut basis);
    let projected = centred * basis;
    let mut out = Vec::with_capacity(rows * dims);
    for r in 0..rows {
        out.extend((0..dims).map(|c| projected[(r, c)] as f32));
    }
    (out, if total > 0.0 { explained / total } else { 0.0 })
}

/// The prompts of each corpus file, at most `max_prompts` of each, in file order.
fn corpus_texts(corpus: &[PathBuf], max_prompts: usize) -> Result<Vec<String>, TrainError> {
    let mut all = Vec::new();
    for path in corpus {
        let mut texts = Vec::new();
        for_each_row(path, |_, row| {
            if texts.len() < max_prompts
                && let Some(text) = prompt_text(row)?
            {
                texts.push(text);
            }
            Ok(())
        })?;
        all.extend(texts);
    }
    Ok(all)
}

/// How often each token id occurs in the corpus prompts.
fn token_counts(
    tokenizer: &tokenizers::Tokenizer,
    texts: &[String],
) -> Result<HashMap<u32, u64>, TrainError> {
    let mut counts = HashMap::new();
    for text in texts {
        let encoding = tokenizer
            .encode(text.as_str(), false)
            .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
        for &id in encoding.get_ids() {
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

/// Tunes `table` on the teacher's sentence vectors of a stable-hash sample of the distinct
/// corpus prompts (computed once and cached, as `train` does for frozen encoders).
fn tune_on_sentences(
    args: &DistillArgs,
    tokenizer: &tokenizers::Tokenizer,
    special: triage_core::classifier::SpecialTokens,
    texts: &[String],
    table: Vec<f32>,
) -> Result<(Vec<f32>, TuneSummary), TrainError> {
    let mut sample: Vec<&String> = texts.iter().collect();
    sample.sort_by_cached_key(|t| stable_hash("static-tune", t));
    sample.dedup();
    sample.truncate(args.sentences);
    let tokens = sample
        .iter()
        .map(|t| token_ids(tokenizer, special, t, args.sentence_tokens))
        .collect::<Result<Vec<_>, _>>()?;
    let keys: Vec<String> = sample.iter().map(|t| t.to_string()).collect();
    let targets = frozen::embed(
        &args.teacher,
        &tokens,
        &keys,
        special.pad,
        &args.cache_dir,
        args.quiet,
        &Device::Cpu,
    )?;
    let input = TuneInput {
        table,
        dims: args.dims,
        tokens: &tokens,
        targets,
        skip: &[special.cls, special.sep, special.pad],
    };
    tune(input, args.tune_epochs, args.tune_lr, 0, args.quiet)
}

/// Scales each row by a / (a + p(token)); a token never seen in the corpus keeps weight 1.
fn sif_weighted(
    mut rows: Vec<f32>,
    dims: usize,
    counts: &HashMap<u32, u64>,
    total: u64,
) -> Vec<f32> {
    for (id, row) in rows.chunks_mut(dims).enumerate() {
        let p = counts.get(&(id as u32)).copied().unwrap_or(0) as f64 / total.max(1) as f64;
        let weight = (SIF_A / (SIF_A + p)) as f32;
        row.iter_mut().for_each(|x| *x *= weight);
    }
    rows
}

fn write_dir(
    args: &DistillArgs,
    table: &[f32],
    vocab: usize,
    tuning: Option<&TuneSummary>,
) -> Result<(), TrainError> {
    let out = &args.out;
    std::fs::create_dir_all(out).map_err(|e| file_error(out, e))?;
    let config = StaticConfig {
        model_type: MODEL_TYPE.into(),
        vocab_size: vocab,
        hidden_size: args.dims,
        source: format!(
            "static token embeddings distilled from {} (Model2Vec method: PCA {}, SIF a={SIF_A}){}",
            teacher_name(&args.teacher),
            args.dims,
            // The prompts the tuning read, which a small corpus can make fewer than asked for.
            match tuning {
                Some(t) => format!(
                    ", tuned on its sentence vectors of {} prompts (Tokenlearn)",
                    t.sentences + t.held_out
                ),
                None => String::new(),
            }
        ),
    };
    let path = out.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(&config).expect("a config serialises");
    std::fs::write(&path, text + "\n").map_err(|e| file_error(&path, e))?;
    let from = args.teacher.join(TOKENIZER_FILE);
    std::fs::copy(&from, out.join(TOKENIZER_FILE)).map_err(|e| file_error(&from, e))?;
    // f16 halves the file; the classifier computes in f32.
    let tensor =
        Tensor::from_slice(table, (vocab, args.dims), &Device::Cpu)?.to_dtype(DType::F16)?;
    candle_core::safetensors::save(
        &HashMap::from([(TABLE.to_string(), tensor)]),
        out.join("model.safetensors"),
    )?;
    Ok(())
}

fn teacher_name(dir: &Path) -> String {
    let name = dir.display().to_string();
    if name.to_lowercase().contains("minilm") {
        "all-MiniLM-L6-v2".into()
    } else {
        name
    }
}

/// Gives each direction (column) the sign that makes its largest entry positive. An
/// eigenvector's sign is arbitrary, and the decomposition picks it from float noise: a rebuild
/// of the table shipped on 2026-12-06 flipped 5 of its 256 columns, and the same recipe and seed
/// then trained a different model.
fn orient(basis: &mut DMatrix<f64>) {
    for mut column in basis.column_iter_mut() {
        let largest = column
            .iter()
            .copied()
            .max_by(|a, b| a.abs().total_cmp(&b.abs()))
            .unwrap_or(0.0);
        if largest < 0.0 {
            column.neg_mut();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_keeps_the_direction_of_most_variance() {
        // Points along (1, 1) with a little noise along (1, -1).
        let rows: Vec<f32> = (0..20)
            .flat_map(|i| {
                let t = i as f32 - 10.0;
                let e = if i % 2 == 0 { 0.1 } else { -0.1 };
                [t + e, t - e]
            })
            .collect();
        let (projected, explained) = pca(&rows, 20, 2, 1);
        assert!(explained > 0.99, "explained {explained}");
        // The direction is (1, 1)/√2, oriented positive: the projection is (t − mean t)·√2,
        // with mean t −0.5, so the first point (t = −10) projects to −9.5·√2.
        let first = projected[0];
        assert!((first + 9.5 * 2f32.sqrt()).abs() < 0.2, "{first}");
        assert!(projected.iter().sum::<f32>().abs() < 1e-3);
    }

    #[test]
    fn each_direction_is_oriented_by_its_largest_entry() {
        let mut basis = DMatrix::from_row_slice(3, 2, &[0.2, 0.1, -0.9, 0.3, 0.4, -0.95]);
        orient(&mut basis);
        assert_eq!(basis.column(0).as_slice(), &[-0.2, 0.9, -0.4]);
        assert_eq!(basis.column(1).as_slice(), &[-0.1, -0.3, 0.95]);
        let before = basis.clone();
        orient(&mut basis);
        assert_eq!(basis, before, "an oriented basis stays as it is");
    }

    #[test]
    fn frequent_tokens_are_down_weighted() {
        let rows = vec![1.0f32, 1.0, 1.0, 1.0];
        let counts = HashMap::from([(0u32, 999u64), (1, 1)]);
        let weighted = sif_weighted(rows, 2, &counts, 1000);
        assert!(weighted[0] < 0.01, "frequent token weight {}", weighted[0]);
        assert!(
            (weighted[2] - 0.5).abs() < 1e-6,
            "rare token weight {}",
            weighted[2]
        );
    }
}
