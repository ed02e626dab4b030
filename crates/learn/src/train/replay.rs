//! `triage replay`: writes rows of an outcome file (the shared format) into an outcome log as if
//! they were traffic: each (prompt, model) row becomes an answered request, its score the
//! client's feedback; a battle (a row with an `opponent`) becomes the two answers and the
//! client's preference between them, as an A/B test or an arena would log it. It lets
//! `train --from-log` and `calibrate` be tried and measured on public data before a deployment
//! has traffic of its own. `--fraction` picks prompts by a stable hash of their id; `eval` on
//! the same file leaves the replayed prompts out once a model was trained on them
//! (`training_prompts.bin`), so the rest of the file is the held-out measurement.

use std::collections::HashSet;
use std::path::PathBuf;

use serde_json::{Map, Value, json};

use super::data::{for_each_row, score_range, stable_hash};
use crate::eval::data::prompt_text;
use triage_gateway::outcomes::store::Write;
use triage_gateway::outcomes::{Feedback, Outcome, PairResult, Preference, Target, now_ms};

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

/// What a replay wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Graded rows: one request with its feedback each.
    pub graded: usize,
    /// Battles: two requests and a preference each.
    pub battles: usize,
}

impl Replayed {
    /// Requests written to the log.
    pub fn requests(&self) -> usize {
        self.graded + 2 * self.battles
    }
}

/// One chosen row of the file.
struct Row {
    line: usize,
    id: String,
    text: String,
    model: String,
    score: f64,
    /// For a battle: the opponent, the battle's key, and the result for `model`.
    battle: Option<(String, String, PairResult)>,
}

/// Writes the chosen rows.
pub fn run(args: &ReplayArgs) -> Result<Replayed, ReplayError> {
    if !(args.fraction > 0.0 && args.fraction <= 1.0) {
        return Err(ReplayError::Fraction(args.fraction));
    }
    let threshold = (args.fraction * u64::MAX as f64) as u64;
    let mut rows = Vec::new();
    // A battle is often in the file twice, once from each side: it is replayed once.
    let mut battles_seen = HashSet::new();
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
        let battle = battle_of(row, &id, model, score)?;
        if let Some((_, key, _)) = &battle
            && !battles_seen.insert(key.clone())
        {
            return Ok(());
        }
        rows.push(Row {
            line,
            id,
            text,
            model: model.to_string(),
            score,
            battle,
        });
        Ok(())
    })?;
    // Scores become feedback in [0, 1], mapped as training maps a file's scores.
    let (lo, hi) = score_range(rows.iter().filter(|r| r.battle.is_none()).map(|r| r.score));
    let target = Target::parse(&args.log);
    let log_error = |e: triage_gateway::outcomes::StoreError| ReplayError::Log {
        target: target.describe(),
        message: e.to_string(),
    };
    let mut store = target.open().map_err(log_error)?;
    let ts_ms = now_ms();
    let comment = Some(format!("replayed from {}", args.data.display()));
    let answered = |id: String, model: &str, text: &str| Outcome {
        id,
        ts_ms,
        endpoint: "chat",
        key_id: "replay".into(),
        requested: model.to_string(),
        model: Some(model.to_string()),
        status: 200,
        prompt: Some(json!({"messages": [{"role": "user", "content": text}]}).to_string()),
        answer: Some(String::new()),
        ..Outcome::default()
    };
    let mut replayed = Replayed::default();
    for chunk in rows.chunks(BATCH) {
        let mut outcomes = Vec::new();
        let mut feedback = Vec::new();
        let mut preferences = Vec::new();
        for row in chunk {
            match &row.battle {
                None => {
                    let request_id = format!(
                        "replay-{}-{:016x}",
                        row.line,
                        stable_hash(&row.model, &row.id)
                    );
                    outcomes.push(answered(request_id.clone(), &row.model, &row.text));
                    feedback.push(Feedback {
                        request_id,
                        ts_ms,
                        score: (row.score - lo) / (hi - lo),
                        thumbs: None,
                        comment: comment.clone(),
                    });
                    replayed.graded += 1;
                }
                Some((opponent, key, result)) => {
                    let side = |model: &str| format!("replay-{:016x}", stable_hash(key, model));
                    let (mine, theirs) = (side(&row.model), side(opponent));
                    outcomes.push(answered(mine.clone(), &row.model, &row.text));
                    outcomes.push(answered(theirs.clone(), opponent, &row.text));
                    preferences.push(Preference {
                        request_id: mine,
                        opponent_id: theirs,
                        ts_ms,
                        result: *result,
                        comment: comment.clone(),
                    });
                    replayed.battles += 1;
                }
            }
        }
        // Outcomes first: a verdict is checked against the requests it names.
        let writes: Vec<Write<'_>> = (outcomes.iter().map(Write::Outcome))
            .chain(feedback.iter().map(Write::Feedback))
            .chain(preferences.iter().map(Write::Preference))
            .collect();
        store.write(&writes).map_err(log_error)?;
    }
    Ok(replayed)
}

/// A battle row's opponent, key (its `battle_id`, else the prompt and the two models) and
/// result for `model`; `None` for a graded row.
fn battle_of(
    row: &Map<String, Value>,
    prompt_id: &str,
    model: &str,
    score: f64,
) -> Result<Option<(String, String, PairResult)>, String> {
    let Some(opponent) = row.get("opponent").and_then(Value::as_str) else {
        return Ok(None);
    };
    let result = PairResult::from_score(score).ok_or_else(|| {
        format!("a battle's score is 1 (win), 0.5 (tie), 0.25 (both bad) or 0 (loss), not {score}")
    })?;
    let key = match row.get("battle_id").and_then(Value::as_str) {
        Some(id) => id.to_string(),
        None => {
            let (a, b) = if model < opponent {
                (model, opponent)
            } else {
                (opponent, model)
            };
            format!("{prompt_id}\u{1f}{a}\u{1f}{b}")
        }
    };
    Ok(Some((opponent.to_string(), key, result)))
}
