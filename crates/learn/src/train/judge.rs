//! `triage label --judge MODEL`: grades logged answers that have no client feedback by asking
//! a judge model, through triage's own catalog, credentials, retries and fallbacks, and stores
//! each grade in the log's `labels` table, where `train --from-log` finds it.
//!
//! The rubric ([`RUBRIC`]) is MT-Bench's single-answer grading, tightened for routing: the
//! judge sees the conversation and the answer, explains in at most two sentences and ends with
//! `Rating: [[N]]`, N from 1 to 10; the score stored is (N − 1) / 9. An answer whose grade
//! cannot be read is counted and left ungraded, so a rerun tries it again.
//!
//! A run is resumable: answers already graded by this judge are skipped, and each grade is
//! committed as it arrives. The cost estimate is printed before the first call.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};

use triage_core::catalog::{Catalog, Model, Usage};
use triage_core::config::Config;
use triage_gateway::dispatch::{Answer, Dispatcher};
use triage_gateway::metrics::Metrics;
use triage_gateway::outcomes::store::{Label, Store, StoreError, Unlabelled};
use triage_gateway::outcomes::{Target, now_ms, parse_date};

/// What the judge is asked; `{conversation}` and `{answer}` are filled in.
pub const RUBRIC: &str = "Please act as an impartial judge and evaluate the quality of the \
response an AI assistant gave to the conversation below. Judge helpfulness, correctness, \
relevance and completeness; for code, math and factual questions correctness comes first, and a \
wrong answer rates 3 or lower however well written. Do not let length or style sway you, and do \
not reward refusals of harmless requests. Begin with an explanation of at most two sentences, \
then give your rating from 1 to 10 in exactly this format: \"Rating: [[5]]\".

[The conversation]
{conversation}

[The assistant's answer]
{answer}";

/// Output tokens the estimate assumes per grade (two sentences and the rating).
const EXPECTED_OUTPUT_TOKENS: u64 = 120;
/// Cap on the judge's answer.
const MAX_OUTPUT_TOKENS: u64 = 400;
/// Characters of conversation and of answer shown to the judge; longer ones keep their end.
const MAX_CHARS: usize = 24_000;
/// Logged answers read from the log at a time.
const READ_BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    #[error("--judge {0}: not a model of the catalog")]
    UnknownJudge(String),
    #[error("--since {0}: expected a date like 2026-11-25")]
    Since(String),
    #[error("cannot open the outcome log ({target}): {source}")]
    Log { target: String, source: StoreError },
    #[error("cannot build the providers: {0}")]
    Http(#[from] reqwest::Error),
}

/// `triage label` options.
#[derive(Debug, Clone, clap::Args)]
pub struct LabelArgs {
    /// The catalog model that grades (`provider/model`).
    #[arg(long)]
    pub judge: String,
    /// Config file: providers, keys and the log (default: built-in defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The outcome log: an SQLite file or a `postgres://` URL (default: the config's log).
    #[arg(long)]
    pub log: Option<String>,
    /// Grade at most N answers (a stable sample of those waiting).
    #[arg(long)]
    pub sample: Option<usize>,
    /// Only answers logged from this date on (`2026-11-25` UTC, or RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Judge calls in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Print the plan and the cost estimate, grade nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LabelSummary {
    /// Answers without feedback nor a grade by this judge.
    pub waiting: usize,
    /// Of those, the ones this run set out to grade.
    pub selected: usize,
    pub estimated_cost_usd: f64,
    pub graded: usize,
    /// The judge answered without a readable rating.
    pub unreadable: usize,
    /// The judge could not be reached (after retries and fallbacks).
    pub failed: usize,
    pub cost_usd: f64,
    pub mean_score: Option<f64>,
}

/// Runs `triage label` with an already loaded config and catalog. Blocking store calls run on
/// their own thread, so this may be called from inside a tokio runtime.
pub async fn run(
    args: &LabelArgs,
    config: &Config,
    catalog: &Catalog,
) -> Result<LabelSummary, JudgeError> {
    let judge = catalog
        .model(&args.judge)
        .ok_or_else(|| JudgeError::UnknownJudge(args.judge.clone()))?
        .clone();
    let since_ms = match &args.since {
        Some(text) => parse_date(text).ok_or_else(|| JudgeError::Since(text.clone()))?,
        None => 0,
    };
    let target = Target::from_arg(args.log.as_deref(), &config.log);
    let log_error = |source| JudgeError::Log {
        target: target.describe(),
        source,
    };
    let (store, reader, waiting) = {
        let (target, judge_id) = (target.clone(), judge.id.clone());
        tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let mut store = target.open()?;
            let waiting = store.unlabelled(since_ms, &judge_id)?;
            Ok((store, target.open_read()?, waiting))
        })
        .await
        .expect("the log reader does not panic")
        .map_err(log_error)?
    };
    let mut summary = LabelSummary {
        waiting: waiting.len(),
        ..LabelSummary::default()
    };
    let selected = sample(waiting, args.sample);
    summary.selected = selected.len();
    let chars: i64 = selected.iter().map(|(_, chars)| chars).sum();
    summary.estimated_cost_usd = estimate_cost(&judge, chars as u64, selected.len());
    eprintln!(
        "{} answers wait for a grade by {}; grading {} at about US${:.4} (judge prices: ${}/${} per Mtok in/out)",
        summary.waiting,
        judge.id,
        summary.selected,
        summary.estimated_cost_usd,
        judge.input_per_mtok,
        judge.output_per_mtok
    );
    if args.dry_run || selected.is_empty() {
        return Ok(summary);
    }

    let metrics = Arc::new(Metrics::new());
    let dispatcher = Dispatcher::new(catalog, config.dispatch.clone(), metrics)?;
    let chain = triage_gateway::router::explicit_chain(catalog, std::slice::from_ref(&judge.id))
        .expect("the judge is in the catalog");
    let writer = Writer::start(store, judge.id.clone());
    let progress = progress_bar(selected.len(), args.quiet);
    let started = Instant::now();
    let mut scores = Vec::new();
    let mut reader = Some(reader);
    // Texts are read a batch at a time, so a large log is never held in memory at once.
    for batch in selected.chunks(READ_BATCH) {
        let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
        let mut store = reader.take().expect("the reader is back");
        let (store, items) = tokio::task::spawn_blocking(move || {
            let items = store.answers(&ids);
            (store, items)
        })
        .await
        .expect("the log reader does not panic");
        reader = Some(store);
        let items = items.map_err(log_error)?;
        let mut grades = futures_util::stream::iter(&items)
            .map(|item| {
                let (dispatcher, chain) = (&dispatcher, &chain);
                async move { (item, grade(dispatcher, chain, judge_prompt(item)).await) }
            })
            .buffer_unordered(args.concurrency.max(1));
        while let Some((item, result)) = grades.next().await {
            progress.inc(1);
            match result {
                Ok((Some(rating), cost)) => {
                    summary.graded += 1;
                    summary.cost_usd += cost;
                    let score = (rating - 1.0) / 9.0;
                    scores.push(score);
                    writer.send(&item.id, rating, score, cost);
                }
                Ok((None, cost)) => {
                    summary.unreadable += 1;
                    summary.cost_usd += cost;
                }
                Err(error) => {
                    summary.failed += 1;
                    tracing::warn!(request = %item.id, "the judge failed: {error}");
                }
            }
        }
    }
    progress.finish_and_clear();
    writer.finish().map_err(log_error)?;
    summary.mean_score =
        (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64);
    eprintln!(
        "graded {} ({} unreadable, {} failed) in {:.0} s for US${:.4}",
        summary.graded,
        summary.unreadable,
        summary.failed,
        started.elapsed().as_secs_f64(),
        summary.cost_usd
    );
    Ok(summary)
}

/// At most `n` of the waiting answers, chosen by a stable hash of their id (so a sample does
/// not favour the oldest traffic, and a rerun picks the same ones).
fn sample(mut waiting: Vec<(String, i64)>, n: Option<usize>) -> Vec<(String, i64)> {
    if let Some(n) = n.filter(|&n| n < waiting.len()) {
        waiting.sort_by_key(|(id, _)| super::data::stable_hash("judge-sample", id));
        waiting.truncate(n);
    }
    waiting
}

/// The rubric filled in with one logged conversation and answer.
pub fn judge_prompt(item: &Unlabelled) -> String {
    let conversation = triage_gateway::outcomes::logged_messages(&item.prompt)
        .map(|messages| render(&messages))
        .unwrap_or_else(|| item.prompt.clone());
    RUBRIC
        .replace("{conversation}", tail(&conversation, MAX_CHARS))
        .replace("{answer}", tail(&item.answer, MAX_CHARS))
}

/// `role: text` lines.
fn render(messages: &[Value]) -> String {
    messages
        .iter()
        .map(|m| {
            let role = m["role"].as_str().unwrap_or("user");
            format!(
                "{role}: {}",
                triage_gateway::outcomes::content_text(&m["content"])
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn tail(text: &str, max_chars: usize) -> &str {
    let skip = text.chars().count().saturating_sub(max_chars);
    match text.char_indices().nth(skip) {
        Some((at, _)) if skip > 0 => &text[at..],
        _ => text,
    }
}

/// About four characters a token in (the logged texts and the rubric),
/// [`EXPECTED_OUTPUT_TOKENS`] out, at the judge's prices.
fn estimate_cost(judge: &Model, chars: u64, answers: usize) -> f64 {
    let input = (chars + (RUBRIC.len() * answers) as u64) / 4;
    let output = EXPECTED_OUTPUT_TOKENS * answers as u64;
    (input as f64 * judge.input_per_mtok + output as f64 * judge.output_per_mtok) / 1e6
}

/// Asks the judge once; the rating (None when unreadable) and what it cost.
async fn grade(
    dispatcher: &Dispatcher,
    chain: &[Arc<Model>],
    prompt: String,
) -> Result<(Option<f64>, f64), String> {
    let body = json!({
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": MAX_OUTPUT_TOKENS,
    });
    let body = body.as_object().expect("an object").clone();
    let dispatched = dispatcher
        .dispatch(chain, &body, false)
        .await
        .map_err(|e| {
            e.failures
                .last()
                .map_or("no model".into(), |f| f.error.to_string())
        })?;
    let Answer::Full(answer) = dispatched.answer else {
        return Err("the judge streamed".into());
    };
    let cost = Usage::from_openai(&answer["usage"]).map_or(0.0, |u| dispatched.model.cost(&u));
    let text = triage_gateway::outcomes::answer_text(&answer).unwrap_or_default();
    Ok((parse_rating(&text), cost))
}

/// The last `[[N]]` (or, failing that, `Rating: N`) in the judge's answer, if within 1–10.
pub fn parse_rating(text: &str) -> Option<f64> {
    let bracketed = text.rmatch_indices("[[").find_map(|(at, _)| {
        let rest = &text[at + 2..];
        rest[..rest.find("]]")?].trim().parse::<f64>().ok()
    });
    let rating = bracketed.or_else(|| {
        let at = text.to_lowercase().rfind("rating:")?;
        let number: String = text[at + 7..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        number.parse().ok()
    })?;
    (1.0..=10.0).contains(&rating).then_some(rating)
}

fn progress_bar(total: usize, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "grading {bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}]",
        )
        .expect("a valid template"),
    );
    bar
}

/// Commits grades on its own thread (the PostgreSQL client blocks).
struct Writer {
    tx: std::sync::mpsc::Sender<Label>,
    thread: std::thread::JoinHandle<Result<(), StoreError>>,
    judge: String,
}

impl Writer {
    fn start(mut store: Store, judge: String) -> Writer {
        let (tx, rx) = std::sync::mpsc::channel::<Label>();
        let thread = std::thread::spawn(move || {
            for label in rx {
                store.insert_label(&label)?;
            }
            Ok(())
        });
        Writer { tx, thread, judge }
    }

    fn send(&self, request_id: &str, rating: f64, score: f64, cost_usd: f64) {
        let _ = self.tx.send(Label {
            request_id: request_id.to_string(),
            judge: self.judge.clone(),
            ts_ms: now_ms(),
            rating,
            score,
            cost_usd,
        });
    }

    fn finish(self) -> Result<(), StoreError> {
        drop(self.tx);
        self.thread.join().unwrap_or(Err(StoreError::Closed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratings_are_read_from_the_last_marker() {
        assert_eq!(parse_rating("Good. Rating: [[8]]"), Some(8.0));
        assert_eq!(parse_rating("[[2]] no, wait: Rating: [[9.5]]"), Some(9.5));
        assert_eq!(parse_rating("Solid answer.\nRating: 7"), Some(7.0));
        assert_eq!(parse_rating("Rating: [[11]]"), None);
        assert_eq!(parse_rating("I cannot grade this."), None);
    }

    #[test]
    fn the_judge_sees_the_whole_conversation_and_the_answer() {
        let item = Unlabelled {
            id: "r1".into(),
            model: "m".into(),
            prompt: json!({"system": "Be brief.", "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": [{"type": "text", "text": "Sum 2+2"}]}
            ]})
            .to_string(),
            answer: "4".into(),
        };
        let prompt = judge_prompt(&item);
        assert!(prompt.contains(
            "[The conversation]\nsystem: Be brief.\nuser: Hi\nassistant: Hello!\nuser: Sum 2+2\n\n[The assistant's answer]\n4"
        ));
        assert!(prompt.starts_with("Please act as an impartial judge"));
    }

    #[test]
    fn samples_are_stable_and_capped() {
        let items: Vec<(String, i64)> = (0..10).map(|i| (format!("r{i}"), 10)).collect();
        let a = sample(items.clone(), Some(3));
        assert_eq!(a.len(), 3);
        assert_eq!(a, sample(items.clone(), Some(3)));
        assert_eq!(sample(items, None).len(), 10);
        assert_eq!(tail("abcdef", 3), "def");
    }
}
