//! The outcome log: one row per request that went through the router (what was asked, what
//! the classifier and policy thought, who answered, tokens, cost, latency, status, and the
//! text unless `[log] store_text = false`), and the feedback that joins it by request id: a
//! grade of one answer, or a preference between two answers to the same prompt.
//!
//! Logging is off the request path: handlers hand an [`Outcome`] to a bounded queue and move
//! on; one writer thread commits what is queued (up to [`MAX_BATCH`] rows) in one transaction.
//! A full queue drops the outcome and counts it in `triage_log_dropped_total`; the request
//! still succeeds. Feedback goes through the same queue, so an outcome queued before it is
//! committed before it is checked, and a feedback is acknowledged only after its commit.
//!
//! This module is not the place for routing decisions or HTTP; `server` fills the rows in and
//! `report` reads them back.

pub mod dashboard;
pub mod migrations;
pub mod report;
pub mod signals;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

pub use store::{Store, StoreError};
use triage_core::config::LogConfig;

/// Rows committed in one transaction at most.
pub const MAX_BATCH: usize = 256;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// One finished request, as logged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub id: String,
    /// When the request arrived, in Unix milliseconds.
    pub ts_ms: i64,
    /// `chat` or `messages`.
    pub endpoint: &'static str,
    pub key_id: String,
    /// The `model` the client sent: an id or an `auto…` profile.
    pub requested: String,
    /// The classifier's and policy's view, for adaptive requests.
    pub auto: Option<AutoColumns>,
    /// The model that answered (or failed last); `None` when nothing was dispatched.
    pub model: Option<String>,
    /// `model-a (503), …`: the models that failed before the answering one.
    pub fallbacks: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_usd: f64,
    pub ttft_ms: Option<f64>,
    pub latency_ms: f64,
    pub status: u16,
    pub stream: bool,
    pub prompt: Option<String>,
    pub answer: Option<String>,
    /// Implicit signals, comma-separated (see [`signals`]).
    pub signals: String,
}

impl Outcome {
    pub fn route(&self) -> &'static str {
        if self.auto.is_some() {
            "auto"
        } else {
            "explicit"
        }
    }
}

/// An adaptive decision, flattened into columns; skills and candidates as JSON text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AutoColumns {
    pub profile: String,
    pub difficulty: f64,
    pub tool_need: f64,
    /// `{"code": 0.4, …}`
    pub skills: String,
    /// `[{"model": …, "quality": …, "cost_usd": …, "excluded"?: …}, …]`: every model the policy
    /// considered, with its predicted quality and expected cost.
    pub candidates: String,
}

/// A client's verdict on one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    pub request_id: String,
    pub ts_ms: i64,
    /// 0 (bad) … 1 (good); thumbs up is 1, down 0.
    pub score: f64,
    pub thumbs: Option<String>,
    pub comment: Option<String>,
}

/// A client's choice between two logged answers to the same prompt (an A/B test, an arena):
/// the shape of Chatbot Arena's battles, which training reads through its Bradley–Terry loss.
#[derive(Debug, Clone, PartialEq)]
pub struct Preference {
    pub request_id: String,
    /// The other answer's request.
    pub opponent_id: String,
    pub ts_ms: i64,
    /// How `request_id`'s answer fared against the opponent's.
    pub result: PairResult,
    pub comment: Option<String>,
}

/// How one answer fared against another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairResult {
    Win,
    Loss,
    Tie,
    /// A tie where both answers are bad: says nothing about which model is better.
    BothBad,
}

impl PairResult {
    const ALL: [PairResult; 4] = [
        PairResult::Win,
        PairResult::Loss,
        PairResult::Tie,
        PairResult::BothBad,
    ];

    /// `win`, `loss`, `tie` or `both_bad`, as the API and the log write it.
    pub fn parse(text: &str) -> Option<PairResult> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PairResult::Win => "win",
            PairResult::Loss => "loss",
            PairResult::Tie => "tie",
            PairResult::BothBad => "both_bad",
        }
    }

    /// The result a battle row's score stands for (the inverse of [`PairResult::score`]).
    pub fn from_score(score: f64) -> Option<PairResult> {
        Self::ALL.into_iter().find(|r| r.score() == score)
    }

    /// The same battle seen from the opponent's side.
    pub fn mirrored(self) -> PairResult {
        match self {
            PairResult::Win => PairResult::Loss,
            PairResult::Loss => PairResult::Win,
            other => other,
        }
    }

    /// The score a battle row of the shared outcome format gives it (Chatbot Arena's: win 1,
    /// tie 0.5, both bad 0.25, loss 0).
    pub fn score(self) -> f64 {
        match self {
            PairResult::Win => 1.0,
            PairResult::Loss => 0.0,
            PairResult::Tie => 0.5,
            PairResult::BothBad => 0.25,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum FeedbackError {
    #[error("no logged request has id `{0}`")]
    UnknownId(String),
    #[error(
        "requests `{0}` and `{1}` have different prompts: a preference compares two answers to \
         the same prompt"
    )]
    DifferentPrompts(String, String),
    #[error("the outcome log could not store the feedback: {0}")]
    Store(String),
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open the outcome log ({target}): {source}")]
    Open { target: String, source: StoreError },
}

/// Where the log is: an SQLite file, or a PostgreSQL URL.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Target {
    pub fn of(config: &LogConfig) -> Target {
        match &config.url {
            Some(url) => Target::Postgres(url.clone()),
            None => Target::Sqlite(config.path.clone()),
        }
    }

    /// The log a command names (`--log`), else the config's.
    pub fn from_arg(log: Option<&str>, config: &LogConfig) -> Target {
        log.map_or_else(|| Target::of(config), Target::parse)
    }

    /// A command-line log: a `postgres://` (or `postgresql://`) URL, else an SQLite file.
    pub fn parse(text: &str) -> Target {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Target::Postgres(text.to_string())
        } else {
            Target::Sqlite(PathBuf::from(text))
        }
    }

    /// Opens the log for writing, creating the tables if needed. Blocking.
    pub fn open(&self) -> Result<Store, StoreError> {
        match self {
            Target::Sqlite(path) => Store::open(path),
            Target::Postgres(url) => Store::connect(url),
        }
    }

    /// Opens the log for reading. Blocking.
    pub fn open_read(&self) -> Result<Store, StoreError> {
        match self {
            Target::Sqlite(path) => Store::open_read(path),
            Target::Postgres(url) => Store::connect(url),
        }
    }

    /// For messages: the file, or `PostgreSQL` (a URL may hold a password).
    pub fn describe(&self) -> String {
        match self {
            Target::Sqlite(path) => path.display().to_string(),
            Target::Postgres(_) => "PostgreSQL at [log] url".into(),
        }
    }
}

enum Command {
    Outcome(Box<Outcome>),
    Feedback(Feedback, oneshot::Sender<Result<(), FeedbackError>>),
    Preference(Preference, oneshot::Sender<Result<(), FeedbackError>>),
    Flush(oneshot::Sender<()>),
    Prune,
}

/// The handle the server holds: cheap to share, never blocks a request.
pub struct OutcomeLog {
    tx: mpsc::Sender<Command>,
    dropped: Counter,
    pub target: Target,
    pub store_text: bool,
}

impl OutcomeLog {
    /// Opens the database and starts the writer thread (and, inside a tokio runtime, the daily
    /// pruning). `dropped` counts outcomes that could not be logged.
    pub fn start(config: &LogConfig, dropped: Counter) -> Result<OutcomeLog, LogError> {
        let target = Target::of(config);
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let retention_ms = i64::from(config.retention_days) * DAY_MS;
        let writer_dropped = dropped.clone();
        // The writer opens the store on its own thread: PostgreSQL's blocking client must not
        // run on an async worker. Start-up waits for the verdict.
        let (opened, open_result) = std::sync::mpsc::channel();
        let writer_target = target.clone();
        std::thread::Builder::new()
            .name("triage-outcomes".into())
            .spawn(move || match writer_target.open() {
                Ok(store) => {
                    let _ = opened.send(Ok(()));
                    write_loop(store, rx, retention_ms, writer_dropped);
                }
                Err(error) => {
                    let _ = opened.send(Err(error));
                }
            })
            .expect("spawning the outcome writer thread");
        let describe = |source| LogError::Open {
            target: target.describe(),
            source,
        };
        open_result
            .recv()
            .unwrap_or_else(|_| Err(StoreError::Closed))
            .map_err(describe)?;
        if retention_ms > 0
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let tx = tx.clone();
            runtime.spawn(async move {
                let mut daily = tokio::time::interval(Duration::from_millis(DAY_MS as u64));
                daily.tick().await; // the writer prunes at start itself
                loop {
                    daily.tick().await;
                    if tx.send(Command::Prune).await.is_err() {
                        break;
                    }
                }
            });
        }
        Ok(OutcomeLog {
            tx,
            dropped,
            target,
            store_text: config.store_text,
        })
    }

    /// Queues an outcome; drops and counts it when the queue is full. Never waits.
    pub fn submit(&self, outcome: Outcome) {
        if self
            .tx
            .try_send(Command::Outcome(Box::new(outcome)))
            .is_err()
        {
            self.dropped.inc();
        }
    }

    /// Stores a feedback after everything queued before it; returns once it is committed.
    pub async fn feedback(&self, feedback: Feedback) -> Result<(), FeedbackError> {
        self.verdict(|reply| Command::Feedback(feedback, reply))
            .await
    }

    /// Stores a preference after everything queued before it; returns once it is committed.
    pub async fn preference(&self, preference: Preference) -> Result<(), FeedbackError> {
        self.verdict(|reply| Command::Preference(preference, reply))
            .await
    }

    async fn verdict(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), FeedbackError>>) -> Command,
    ) -> Result<(), FeedbackError> {
        let (reply, answer) = oneshot::channel();
        let closed = || FeedbackError::Store("the writer has stopped".into());
        self.tx.send(command(reply)).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Waits until everything queued so far is written (or has failed and been counted).
    pub async fn flush(&self) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Command::Flush(reply)).await.is_ok() {
            let _ = done.await;
        }
    }
}

fn write_loop(
    mut store: Store,
    mut rx: mpsc::Receiver<Command>,
    retention_ms: i64,
    dropped: Counter,
) {
    let prune = |store: &mut Store| {
        if retention_ms > 0 {
            match store.prune(now_ms() - retention_ms) {
                Ok(0) => {}
                Ok(rows) => tracing::info!(rows, "outcome log: pruned old requests"),
                Err(error) => tracing::warn!("outcome log: pruning failed: {error}"),
            }
        }
    };
    prune(&mut store);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        let writes: Vec<store::Write<'_>> = batch
            .iter()
            .filter_map(|command| match command {
                Command::Outcome(o) => Some(store::Write::Outcome(o)),
                Command::Feedback(f, _) => Some(store::Write::Feedback(f)),
                Command::Preference(p, _) => Some(store::Write::Preference(p)),
                _ => None,
            })
            .collect();
        let result = if writes.is_empty() {
            Ok(Vec::new())
        } else {
            store.write(&writes)
        };
        drop(writes);
        let mut verdicts = match result {
            Ok(verdicts) => verdicts.into_iter(),
            Err(error) => {
                tracing::error!("outcome log: a write failed: {error}");
                let lost = batch
                    .iter()
                    .filter(|c| matches!(c, Command::Outcome(_)))
                    .count();
                dropped.inc_by(lost as u64);
                let failed = Err(FeedbackError::Store(error.to_string()));
                batch
                    .iter()
                    .filter(|c| matches!(c, Command::Feedback(..) | Command::Preference(..)))
                    .map(|_| failed.clone())
                    .collect::<Vec<_>>()
                    .into_iter()
            }
        };
        for command in batch.drain(..) {
            match command {
                Command::Outcome(_) => {}
                Command::Feedback(_, reply) | Command::Preference(_, reply) => {
                    let verdict = verdicts
                        .next()
                        .unwrap_or_else(|| Err(FeedbackError::Store("no verdict".into())));
                    let _ = reply.send(verdict);
                }
                Command::Flush(reply) => {
                    let _ = reply.send(());
                }
                Command::Prune => prune(&mut store),
            }
        }
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The prompt as logged: the `system` (Anthropic) and `messages` of a request body, as JSON.
pub fn prompt_text(body: &Map<String, Value>) -> String {
    let mut prompt = Map::new();
    for key in ["system", "messages"] {
        if let Some(value) = body.get(key) {
            prompt.insert(key.into(), value.clone());
        }
    }
    Value::Object(prompt).to_string()
}

/// A logged prompt (what [`prompt_text`] wrote) back as chat messages, a top-level (Anthropic)
/// system prompt first as a system message. `None` when it is not such a prompt.
pub fn logged_messages(prompt: &str) -> Option<Vec<Value>> {
    let prompt: Map<String, Value> = serde_json::from_str(prompt).ok()?;
    let mut messages = Vec::new();
    if let Some(system) = prompt.get("system") {
        messages.push(json!({"role": "system", "content": content_text(system)}));
    }
    messages.extend(prompt.get("messages")?.as_array()?.iter().cloned());
    Some(messages)
}

/// A message content as text: a string, or the `text` of its parts (OpenAI and Anthropic
/// alike) one per line.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The text of a whole answer: an OpenAI chat completion or an Anthropic message.
pub fn answer_text(answer: &Value) -> Option<String> {
    if let Some(content) = answer.pointer("/choices/0/message/content") {
        return content.as_str().map(String::from);
    }
    let blocks = answer.get("content")?.as_array()?;
    Some(
        blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
    )
}

/// The text a streamed item adds: an OpenAI chunk's delta or an Anthropic `text_delta`.
pub fn delta_text(item: &Value) -> Option<&str> {
    if let Some(text) = item.pointer("/choices/0/delta/content") {
        return text.as_str();
    }
    if item.get("type").and_then(Value::as_str) == Some("content_block_delta") {
        return item.pointer("/delta/text").and_then(Value::as_str);
    }
    None
}

/// `2026-11-25` or `2026-11-25T10:00:00Z` (UTC) → Unix milliseconds.
pub fn parse_date(text: &str) -> Option<i64> {
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t.trim_end_matches('Z'))),
        None => (text, None),
    };
    let mut parts = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut seconds = days_from_civil(y, m, d) * 86_400;
    if let Some(time) = time {
        let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
        seconds += hms.next()?? * 3600 + hms.next().flatten().unwrap_or(0) * 60;
        seconds += hms.next().flatten().unwrap_or(0);
    }
    Some(seconds * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The log handle as the server shares it.
pub type SharedLog = Arc<OutcomeLog>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_to_unix_ms() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2026-11-25"), Some(1_795_564_800_000));
        assert_eq!(parse_date("2000-03-01T01:02:03Z"), Some(951_872_523_000));
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("yesterday"), None);
    }

    #[test]
    fn answer_and_delta_text_read_both_wire_formats() {
        let chat = json!({"choices": [{"message": {"content": "hi"}}]});
        assert_eq!(answer_text(&chat).as_deref(), Some("hi"));
        let message =
            json!({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]});
        assert_eq!(answer_text(&message).as_deref(), Some("ab"));
        assert_eq!(
            delta_text(&json!({"choices": [{"delta": {"content": "x"}}]})),
            Some("x")
        );
        let event =
            json!({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "y"}});
        assert_eq!(delta_text(&event), Some("y"));
        assert_eq!(delta_text(&json!({"type": "ping"})), None);
    }
}
