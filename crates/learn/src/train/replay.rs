//! `triage replay`: writes rows of an outcome file (the shared format) into an outcome log as if
//! they were traffic: each (prompt, model) row becomes an answered request, its score the
//! client's feedback. It lets `train --from-log` and `calibrate` be tried and measured on public
//! data before a deployment has traffic of its own. `--fraction` picks prompts by a stable hash
//! of their id; `eval` on the same file leaves the replayed prompts out once a model was trained
//! on them (`training_prompts.bin`), so the rest of the file is the held-out measurement.

use std::path::PathBuf;

use serde_json::json;

use super::data::{for_each_row, score_range, stable_hash};
use crate::eval::data::prompt_text;
use triage_gateway::outcomes::store::Write;
use triage_gateway::outcomes::{Feedback, Outcome, Target, now_ms};

/// Rows written per transaction.
const BATCH: usize = 512;

/// `triage replay` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Outcome file in the shared format (gzip or plain).
    #[arg(long)]
    pub data: PathBuf,
    /// The outcome log to write: an SQLite file (created) or a `postgres://` URL.
    #[arg(long)]
    pub log: String,
    /// Only rows whose `source` is this.
    #[arg(long)]
    pub source: Option<String>,
    /// Only rows of this model (as the file names it): a model's outcomes arriving as traffic.
    #[arg(long)]
    pub model: Option<String>,
    /// Share of the file's prompts to replay, chosen by a stable hash of the prompt id.
    #[arg(long, default_value_t = 1.0)]
    pub fraction: f64,
    /// Salt of the hash, for a different draw of the same share.
    #[arg(long, default_value = "replay")]
    pub salt: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Data(#[from] super::TrainError),
    #[error("cannot write the outcome log ({target}): {message}")]
    Log { target: String, message: String },
    #[error("--fraction {0} is not in (0, 1]")]
    Fraction(f64),
}

/// Writes the chosen rows; returns how many requests were logged.
pub fn run(args: &ReplayArgs) -> Result<usize, ReplayError> {
    if !(args.fraction > 0.0 && args.fraction <= 1.0) {
        return Err(ReplayError::Fraction(args.fraction));
    }
    let threshold = (args.fraction * u64::MAX as f64) as u64;
    let mut rows = Vec::new();
    for_each_row(&args.data, |line, row| {
        let source = row.get("source").and_then(|v| v.as_str()).unwrap_or("");
        if args.source.as_deref().is_some_and(|s| s != source) {
            return Ok(());
        }
        let (Some(model), Some(score)) = (
            row.get("model").and_then(|v| v.as_str()),
            row.get("score").and_then(|v| v.as_f64()),
        ) else {
            return Ok(());
        };
        if args.model.as_deref().is_some_and(|m| m != model) {
            return Ok(());
        }
        let Some(text) = prompt_text(row)? else {
            return Ok(());
        };
        let id = match row.get("prompt_id") {
            Some(serde_json::Value::String(id)) => id.clone(),
            Some(other) => other.to_string(),
            None => text.clone(),
        };
        if stable_hash(&args.salt, &id) > threshold {
            return Ok(());
        }
        rows.push((line, id, text, model.to_string(), score));
        Ok(())
    })?;
    // Scores become feedback in [0, 1], mapped as training maps a file's scores.
    let (lo, hi) = score_range(rows.iter().map(|r| r.4));
    let target = Target::parse(&args.log);
    let log_error = |e: triage_gateway::outcomes::StoreError| ReplayError::Log {
        target: target.describe(),
        message: e.to_string(),
    };
    let mut store = target.open().map_err(log_error)?;
    let ts_ms = now_ms();
    for chunk in rows.chunks(BATCH) {
        let entries: Vec<(Outcome, Feedback)> = chunk
            .iter()
            .map(|(line, id, text, model, score)| {
                let request_id = format!("replay-{line}-{:016x}", stable_hash(model, id));
                let outcome = Outcome {
                    id: request_id.clone(),
                    ts_ms,
                    endpoint: "chat",
                    key_id: "replay".into(),
                    requested: model.clone(),
                    model: Some(model.clone()),
                    status: 200,
                    prompt: Some(
                        json!({"messages": [{"role": "user", "content": text}]}).to_string(),
                    ),
                    answer: Some(String::new()),
                    ..Outcome::default()
                };
                let feedback = Feedback {
                    request_id,
                    ts_ms,
                    score: (score - lo) / (hi - lo),
                    thumbs: None,
                    comment: Some(format!("replayed from {}", args.data.display())),
                };
                (outcome, feedback)
            })
            .collect();
        let writes: Vec<Write<'_>> = entries
            .iter()
            .flat_map(|(o, f)| [Write::Outcome(o), Write::Feedback(f)])
            .collect();
        store.write(&writes).map_err(log_error)?;
    }
    Ok(rows.len())
}
