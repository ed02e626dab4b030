//! Where the outcome log lives: SQLite (embedded default) or PostgreSQL (several router
//! instances). Both take the same SQL for writes and reads (`$n` parameters, `ON CONFLICT`);
//! only the schema's types differ. Nothing here knows about HTTP or queues.
//!
//! SQLite runs in WAL mode with `synchronous = NORMAL`: a committed transaction survives a
//! crash of the process (kill -9), not necessarily a power loss or kernel crash (the last
//! commits may roll back then). PostgreSQL commits are as durable as the server's settings.

use std::path::Path;
use std::time::Duration;

use rusqlite::{OpenFlags, OptionalExtension};

use super::migrations;
use super::{Feedback, FeedbackError, Outcome, PairResult, Preference};

const INSERT_OUTCOME: &str = "INSERT INTO outcomes (id, ts_ms, endpoint, key_id, requested,
    route, profile, difficulty, skills, tool_need, candidates, model, fallbacks, prompt_tokens,
    completion_tokens, cached_tokens, cache_write_tokens, cost_usd, ttft_ms, latency_ms, status,
    stream, prompt, answer, signals)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
    $20, $21, $22, $23, $24, $25)
    ON CONFLICT (id) DO NOTHING";
const KNOWN_ID: &str = "SELECT 1 FROM outcomes WHERE id = $1";
const INSERT_FEEDBACK: &str = "INSERT INTO feedback (request_id, ts_ms, score, thumbs, comment)
    VALUES ($1, $2, $3, $4, $5)";
/// A logged request's prompt, for checking that a preference compares answers to one prompt.
const PROMPT_OF: &str = "SELECT prompt FROM outcomes WHERE id = $1";
const INSERT_PREFERENCE: &str = "INSERT INTO preferences (request_id, opponent_id, ts_ms, result,
    comment) VALUES ($1, $2, $3, $4, $5)";
const PRUNE_PREFERENCES: &str = "DELETE FROM preferences
    WHERE request_id IN (SELECT id FROM outcomes WHERE ts_ms < $1)
    OR opponent_id IN (SELECT id FROM outcomes WHERE ts_ms < $1)";
const PRUNE_FEEDBACK: &str =
    "DELETE FROM feedback WHERE request_id IN (SELECT id FROM outcomes WHERE ts_ms < $1)";
const PRUNE_LABELS: &str =
    "DELETE FROM labels WHERE request_id IN (SELECT id FROM outcomes WHERE ts_ms < $1)";
const PRUNE: &str = "DELETE FROM outcomes WHERE ts_ms < $1";
/// Answered requests with text and neither feedback nor a grade by judge `$2`: their ids and
/// text sizes (the texts are read in batches while grading).
const UNLABELLED: &str = "SELECT o.id, CAST(LENGTH(o.prompt) + LENGTH(o.answer) AS BIGINT)
    FROM outcomes o
    WHERE o.ts_ms >= $1 AND o.status = 200 AND o.model IS NOT NULL
    AND o.prompt IS NOT NULL AND o.answer IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM feedback f WHERE f.request_id = o.id)
    AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.request_id = o.id AND l.judge = $2)
    ORDER BY o.ts_ms, o.id";
const ANSWER: &str = "SELECT id, model, prompt, answer FROM outcomes WHERE id = $1";
const INSERT_LABEL: &str = "INSERT INTO labels (request_id, judge, ts_ms, rating, score, cost_usd)
    VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (request_id, judge) DO NOTHING";
/// Preferences between two answered requests with text, each side's model, oldest first.
const PAIRED: &str = "SELECT p.request_id, a.model, a.prompt, p.opponent_id, b.model, p.result
    FROM preferences p JOIN outcomes a ON a.id = p.request_id JOIN outcomes b ON b.id = p.opponent_id
    WHERE a.ts_ms >= $1 AND a.status = 200 AND b.status = 200 AND a.model IS NOT NULL
    AND b.model IS NOT NULL AND a.prompt IS NOT NULL ORDER BY p.seq";
/// Prompts of answered requests, with the route they took.
const PROMPTS: &str = "SELECT route, prompt FROM outcomes
    WHERE ts_ms >= $1 AND status = 200 AND prompt IS NOT NULL ORDER BY ts_ms, id";
/// Answered requests with text, and every verdict on them.
const LABELLED: &str = "SELECT o.id, o.model, o.prompt, o.signals,
    (SELECT AVG(f.score) FROM feedback f WHERE f.request_id = o.id),
    (SELECT AVG(l.score) FROM labels l WHERE l.request_id = o.id)
    FROM outcomes o WHERE o.ts_ms >= $1 AND o.status = 200 AND o.model IS NOT NULL
    AND o.prompt IS NOT NULL ORDER BY o.ts_ms, o.id";
const SCAN: &str = "SELECT model, key_id, profile, status, prompt_tokens, completion_tokens,
    cached_tokens, cache_write_tokens, cost_usd, candidates, signals,
    CAST(CASE WHEN EXISTS (SELECT 1 FROM feedback f WHERE f.request_id = outcomes.id)
        THEN 1 ELSE 0 END AS BIGINT),
    CAST(CASE WHEN EXISTS (SELECT 1 FROM labels l WHERE l.request_id = outcomes.id)
        THEN 1 ELSE 0 END AS BIGINT),
    ts_ms, latency_ms, ttft_ms, difficulty, skills,
    CAST(CASE WHEN EXISTS (SELECT 1 FROM preferences p
        WHERE p.request_id = outcomes.id OR p.opponent_id = outcomes.id)
        THEN 1 ELSE 0 END AS BIGINT)
    FROM outcomes WHERE ts_ms >= $1";
/// The newest requests before `$1` whose id, models, key or prompt contain `$2` (a lower-case
/// `LIKE` pattern; empty: all), at most `$3`.
const RECENT: &str = "SELECT id, ts_ms, key_id, requested, model, status, cost_usd, latency_ms,
    ttft_ms, difficulty, skills, fallbacks, stream, prompt_tokens, completion_tokens, signals,
    (SELECT AVG(f.score) FROM feedback f WHERE f.request_id = o.id)
    FROM outcomes o WHERE o.ts_ms < $1 AND ($2 = '' OR LOWER(o.id || ' ' || o.requested || ' '
        || COALESCE(o.model, '') || ' ' || o.key_id || ' ' || COALESCE(o.prompt, ''))
        LIKE $2 ESCAPE '\\')
    ORDER BY o.ts_ms DESC, o.id DESC LIMIT $3";
/// Every column of one request.
const REQUEST: &str = "SELECT id, ts_ms, endpoint, key_id, requested, route, profile,
    difficulty, skills, tool_need, candidates, model, fallbacks, prompt_tokens,
    completion_tokens, cached_tokens, cache_write_tokens, cost_usd, ttft_ms, latency_ms, status,
    stream, prompt, answer, signals FROM outcomes WHERE id = $1";
const REQUEST_FEEDBACK: &str =
    "SELECT ts_ms, score, thumbs, comment FROM feedback WHERE request_id = $1 ORDER BY seq";
/// The preferences a request takes part in, on either side.
const REQUEST_PREFERENCES: &str =
    "SELECT p.ts_ms, p.request_id, p.opponent_id, p.result, p.comment,
    a.model, b.model FROM preferences p JOIN outcomes a ON a.id = p.request_id
    JOIN outcomes b ON b.id = p.opponent_id
    WHERE p.request_id = $1 OR p.opponent_id = $1 ORDER BY p.seq";
/// Other answered requests with the same prompt text as `$1`, logged within a day of it (the
/// window keeps the lookup on the time index; an A/B test asks both models at once), newest
/// first, at most 20.
const SAME_PROMPT: &str = "SELECT o.id, o.model, o.ts_ms FROM outcomes o, outcomes r
    WHERE r.id = $1 AND o.ts_ms BETWEEN r.ts_ms - 86400000 AND r.ts_ms + 86400000
    AND o.prompt = r.prompt AND o.id <> r.id AND o.status = 200 AND o.model IS NOT NULL
    ORDER BY o.ts_ms DESC, o.id LIMIT 20";
const REQUEST_LABELS: &str =
    "SELECT judge, ts_ms, rating, score FROM labels WHERE request_id = $1 ORDER BY ts_ms, judge";

const KEY_COLUMNS: &str = "id, name, hash, budget_usd, budget_period, rpm, models, expires_ms,
    metadata, created_ms, revoked_ms, tpm";
/// Parameters in the order they appear: SQLite binds `$n` by position of first appearance.
const UPDATE_KEY: &str = "UPDATE keys SET name = $1, budget_usd = $2, budget_period = $3,
    rpm = $4, models = $5, expires_ms = $6, metadata = $7, revoked_ms = $8, tpm = $9
    WHERE id = $10";
const KEY_SPEND: &str = "SELECT key_id, day, cost_usd FROM key_spend WHERE day >= $1";
/// A request's cost added to its key's day: the store of record for budgets, shared by every
/// instance on the same log.
const ADD_SPEND: &str = "INSERT INTO key_spend (key_id, day, cost_usd) VALUES ($1, $2, $3)
    ON CONFLICT (key_id, day) DO UPDATE SET cost_usd = key_spend.cost_usd + excluded.cost_usd";
const DAY_MS: i64 = 86_400_000;

/// A virtual key as stored: the secret only as its SHA-256 (hex); `models` a JSON array.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub hash: String,
    pub budget_usd: Option<f64>,
    /// `day`, `month` or `total`.
    pub budget_period: String,
    pub rpm: Option<i64>,
    pub models: Option<String>,
    pub expires_ms: Option<i64>,
    pub metadata: Option<String>,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
    /// Tokens (prompt + completion) per minute.
    pub tpm: Option<i64>,
}

/// One logged request, as the report reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoggedRow {
    pub model: Option<String>,
    pub key_id: String,
    /// The `auto…` profile; `None` for explicit requests.
    pub profile: Option<String>,
    pub status: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_usd: f64,
    pub candidates: Option<String>,
    /// Implicit signals, comma-separated.
    pub signals: Option<String>,
    /// A client gave feedback on it.
    pub has_feedback: bool,
    /// A judge graded it.
    pub judged: bool,
    /// When it arrived (Unix ms), how long it took, and its time to first token.
    pub ts_ms: i64,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    /// The classifier's view of an adaptive request: difficulty and skills (JSON text).
    pub difficulty: Option<f64>,
    pub skills: Option<String>,
    /// A client compared its answer with another (a preference, on either side).
    pub compared: bool,
}

/// One line of the request list: what happened, without the texts.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RequestLine {
    pub id: String,
    pub ts_ms: i64,
    pub key_id: String,
    pub requested: String,
    pub model: Option<String>,
    pub status: i64,
    pub cost_usd: f64,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub difficulty: Option<f64>,
    /// `{"code": 0.4, …}` as logged.
    #[serde(skip)]
    pub skills: Option<String>,
    pub fallbacks: String,
    pub stream: bool,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub signals: Option<String>,
    /// Mean client feedback score, if any.
    pub feedback: Option<f64>,
}

/// Every logged column of one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoggedRequest {
    pub id: String,
    pub ts_ms: i64,
    pub endpoint: String,
    pub key_id: String,
    pub requested: String,
    pub route: String,
    pub profile: Option<String>,
    pub difficulty: Option<f64>,
    pub skills: Option<String>,
    pub tool_need: Option<f64>,
    pub candidates: Option<String>,
    pub model: Option<String>,
    pub fallbacks: String,
    /// Prompt, completion, cached and cache-write tokens.
    pub tokens: [i64; 4],
    pub cost_usd: f64,
    pub ttft_ms: Option<f64>,
    pub latency_ms: f64,
    pub status: i64,
    pub stream: bool,
    pub prompt: Option<String>,
    pub answer: Option<String>,
    pub signals: Option<String>,
}

/// A client's feedback on a request, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredFeedback {
    pub ts_ms: i64,
    pub score: f64,
    pub thumbs: Option<String>,
    pub comment: Option<String>,
}

/// A preference a request takes part in, as stored, seen from that request's side.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredPreference {
    pub ts_ms: i64,
    /// The other request.
    pub opponent: String,
    pub opponent_model: Option<String>,
    /// `win`, `loss`, `tie` or `both_bad`: how this request's answer fared.
    pub result: String,
    pub comment: Option<String>,
}

/// Another answer to the same prompt, which a preference may compare this one with.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SamePrompt {
    pub id: String,
    pub model: String,
    pub ts_ms: i64,
}

/// A preference between two logged answers, for training: both sides' models and the prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    pub request_id: String,
    pub model: String,
    /// `{"system"?, "messages"}` as the client sent them.
    pub prompt: String,
    pub opponent_id: String,
    pub opponent_model: String,
    /// How `request_id`'s answer fared; `None` for a result this triage does not know.
    pub result: Option<PairResult>,
}

/// A judge's grade of a request, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredLabel {
    pub judge: String,
    pub ts_ms: i64,
    pub rating: f64,
    pub score: f64,
}

/// One request with every verdict on it, for the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestVerdicts {
    pub request: LoggedRequest,
    pub feedback: Vec<StoredFeedback>,
    pub preferences: Vec<StoredPreference>,
    pub labels: Vec<StoredLabel>,
    /// Other answers to the same prompt, logged within a day of it.
    pub same_prompt: Vec<SamePrompt>,
}

/// A logged answer waiting for a judge's grade.
#[derive(Debug, Clone, PartialEq)]
pub struct Unlabelled {
    pub id: String,
    pub model: String,
    /// `{"system"?, "messages"}` as the client sent them.
    pub prompt: String,
    pub answer: String,
}

/// A judge's grade of one logged answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub request_id: String,
    pub judge: String,
    pub ts_ms: i64,
    /// The judge's 1–10 rating.
    pub rating: f64,
    /// The rating mapped to 0…1.
    pub score: f64,
    /// What asking the judge cost.
    pub cost_usd: f64,
}

/// A logged answer with what is known of its quality, for training.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdicts {
    pub id: String,
    pub model: String,
    pub prompt: String,
    /// Implicit signals, comma-separated.
    pub signals: String,
    /// Mean client feedback score.
    pub feedback: Option<f64>,
    /// Mean judge score over judges.
    pub judged: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
    #[error("the outcome writer stopped")]
    Closed,
}

/// One queued write, in the order it arrived.
pub enum Write<'a> {
    Outcome(&'a Outcome),
    Feedback(&'a Feedback),
    Preference(&'a Preference),
}

/// An open outcome log.
pub enum Store {
    Sqlite(rusqlite::Connection),
    Postgres(Box<postgres::Client>),
}

impl Store {
    /// Opens (creating if needed) an SQLite log for writing, migrated to the current schema.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = Store::Sqlite(conn);
        migrations::run(&mut store)?;
        Ok(store)
    }

    /// Opens an existing SQLite log for reading (reports); never creates a file. A log
    /// written by an older triage is migrated first.
    pub fn open_read(path: &Path) -> Result<Store, StoreError> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let mut store = Store::Sqlite(conn);
        if !migrations::is_current(&mut store)? {
            drop(store);
            Store::open(path)?;
            return Store::open_read(path);
        }
        Ok(store)
    }

    /// Connects to PostgreSQL (`postgres://…`) and migrates it to the current schema.
    /// Blocking: call it off the async runtime.
    pub fn connect(url: &str) -> Result<Store, StoreError> {
        let client = postgres::Client::connect(url, postgres::NoTls)?;
        let mut store = Store::Postgres(Box::new(client));
        migrations::run(&mut store)?;
        Ok(store)
    }

    /// Whether the log has this table.
    pub(super) fn has_table(&mut self, table: &str) -> Result<bool, StoreError> {
        Ok(match self {
            Store::Sqlite(conn) => conn
                .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
                .exists([table])?,
            Store::Postgres(client) => client
                .query_opt(
                    "SELECT 1 FROM information_schema.tables
                     WHERE table_schema = current_schema() AND table_name = $1",
                    &[&table],
                )?
                .is_some(),
        })
    }

    /// Whether the log's `table` has this column.
    pub(super) fn has_column(&mut self, table: &str, column: &str) -> Result<bool, StoreError> {
        Ok(match self {
            Store::Sqlite(conn) => conn
                .prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
                .exists([table, column])?,
            Store::Postgres(client) => client
                .query_opt(
                    "SELECT 1 FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1
                     AND column_name = $2",
                    &[&table, &column],
                )?
                .is_some(),
        })
    }

    /// The migrations recorded in `schema_migrations`.
    pub(super) fn migration_versions(&mut self) -> Result<Vec<i64>, StoreError> {
        const VERSIONS: &str = "SELECT version FROM schema_migrations ORDER BY version";
        Ok(match self {
            Store::Sqlite(conn) => conn
                .prepare(VERSIONS)?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?,
            Store::Postgres(client) => client
                .query(VERSIONS, &[])?
                .iter()
                .map(|r| r.get(0))
                .collect(),
        })
    }

    /// Shared migration SQL in this backend's words.
    pub(super) fn dialect(&self, sql: &str) -> String {
        let serial_key = match self {
            Store::Sqlite(_) => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Store::Postgres(_) => "BIGSERIAL PRIMARY KEY",
        };
        sql.replace("{serial_key}", serial_key)
    }

    /// Runs one migration's SQL (may be empty) and records it, in one transaction.
    pub(super) fn apply(
        &mut self,
        sql: &str,
        record: &str,
        version: i64,
        name: &str,
    ) -> Result<(), StoreError> {
        let now = super::now_ms();
        match self {
            Store::Sqlite(conn) => {
                let tx = conn.transaction()?;
                tx.execute_batch(sql)?;
                tx.execute(record, rusqlite::params![version, name, now])?;
                tx.commit()?;
            }
            Store::Postgres(client) => {
                let mut tx = client.transaction()?;
                tx.batch_execute(sql)?;
                tx.execute(record, &[&version, &name, &now])?;
                tx.commit()?;
            }
        }
        Ok(())
    }

    /// Runs SQL with no parameters (tests and maintenance).
    pub fn execute_batch(&mut self, sql: &str) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(conn) => conn.execute_batch(sql)?,
            Store::Postgres(client) => client.batch_execute(sql)?,
        }
        Ok(())
    }

    /// Writes a batch in one transaction. Each feedback gets its own verdict (an unknown
    /// request id is not an error of the batch); the verdicts hold only once this returns Ok.
    pub fn write(
        &mut self,
        batch: &[Write<'_>],
    ) -> Result<Vec<Result<(), FeedbackError>>, StoreError> {
        match self {
            Store::Sqlite(conn) => write_sqlite(conn, batch),
            Store::Postgres(client) => write_postgres(client, batch),
        }
    }

    /// Deletes outcomes (and their feedback) older than `cutoff_ms`; returns the requests
    /// deleted.
    pub fn prune(&mut self, cutoff_ms: i64) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(conn) => {
                let tx = conn.transaction()?;
                tx.execute(PRUNE_FEEDBACK, [cutoff_ms])?;
                tx.execute(PRUNE_PREFERENCES, [cutoff_ms])?;
                tx.execute(PRUNE_LABELS, [cutoff_ms])?;
                let rows = tx.execute(PRUNE, [cutoff_ms])?;
                tx.commit()?;
                Ok(rows as u64)
            }
            Store::Postgres(client) => {
                let mut tx = client.transaction()?;
                tx.execute(PRUNE_FEEDBACK, &[&cutoff_ms])?;
                tx.execute(PRUNE_PREFERENCES, &[&cutoff_ms])?;
                tx.execute(PRUNE_LABELS, &[&cutoff_ms])?;
                let rows = tx.execute(PRUNE, &[&cutoff_ms])?;
                tx.commit()?;
                Ok(rows)
            }
        }
    }

    /// Stores a new virtual key.
    pub fn insert_key(&mut self, key: &KeyRow) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO keys ({KEY_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        self.execute(
            &sql,
            &[
                &key.id,
                &key.name,
                &key.hash,
                &key.budget_usd,
                &key.budget_period,
                &key.rpm,
                &key.models,
                &key.expires_ms,
                &key.metadata,
                &key.created_ms,
                &key.revoked_ms,
                &key.tpm,
            ],
        )?;
        Ok(())
    }

    /// Writes every field of a key but its id, secret and creation time; false when no key
    /// has that id.
    pub fn update_key(&mut self, key: &KeyRow) -> Result<bool, StoreError> {
        let rows = self.execute(
            UPDATE_KEY,
            &[
                &key.name,
                &key.budget_usd,
                &key.budget_period,
                &key.rpm,
                &key.models,
                &key.expires_ms,
                &key.metadata,
                &key.revoked_ms,
                &key.tpm,
                &key.id,
            ],
        )?;
        Ok(rows > 0)
    }

    /// Every virtual key, revoked ones included, oldest first.
    pub fn keys(&mut self) -> Result<Vec<KeyRow>, StoreError> {
        self.all(
            &format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY created_ms, id"),
            &[],
        )
    }

    /// `(key id, day since the epoch, US$)` of every key's spend from `since_day` on.
    pub fn key_spend(&mut self, since_day: i64) -> Result<Vec<(String, i64, f64)>, StoreError> {
        self.all(KEY_SPEND, &[&since_day])
    }

    /// Runs one statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[&(dyn Param + Sync)]) -> Result<u64, StoreError> {
        Ok(match self {
            Store::Sqlite(conn) => {
                conn.prepare_cached(sql)?
                    .execute(sqlite_params(params).as_slice())? as u64
            }
            Store::Postgres(client) => client.execute(sql, &postgres_params(params))?,
        })
    }

    /// Calls `each` on every request logged at or after `since_ms`.
    pub fn scan(&mut self, since_ms: i64, each: impl FnMut(LoggedRow)) -> Result<(), StoreError> {
        self.each(SCAN, &[&since_ms], each)
    }

    /// The newest `limit` requests logged before `before_ms` whose id, models, key or prompt
    /// contain `search` (any case; empty: every request).
    pub fn recent(
        &mut self,
        before_ms: i64,
        search: &str,
        limit: i64,
    ) -> Result<Vec<RequestLine>, StoreError> {
        let pattern = if search.is_empty() {
            String::new()
        } else {
            let escaped = search
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        };
        self.all(RECENT, &[&before_ms, &pattern, &limit])
    }

    /// One request with its feedback, preferences and judge grades; `None` for an unknown id.
    pub fn request(&mut self, id: &str) -> Result<Option<RequestVerdicts>, StoreError> {
        let Some(request) = self.all::<LoggedRequest>(REQUEST, &[&id])?.pop() else {
            return Ok(None);
        };
        let feedback = self.all(REQUEST_FEEDBACK, &[&id])?;
        let preferences = self
            .all::<PreferenceRow>(REQUEST_PREFERENCES, &[&id])?
            .into_iter()
            .map(|row| row.seen_from(id))
            .collect();
        let labels = self.all(REQUEST_LABELS, &[&id])?;
        let same_prompt = self.all(SAME_PROMPT, &[&id])?;
        Ok(Some(RequestVerdicts {
            request,
            feedback,
            preferences,
            labels,
            same_prompt,
        }))
    }

    /// `(id, characters of prompt and answer)` of the answers logged at or after `since_ms`
    /// that have no feedback and no grade by `judge`.
    pub fn unlabelled(
        &mut self,
        since_ms: i64,
        judge: &str,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.all(UNLABELLED, &[&since_ms, &judge])
    }

    /// The logged texts of these requests (those without text are skipped).
    pub fn answers(&mut self, ids: &[String]) -> Result<Vec<Unlabelled>, StoreError> {
        let mut out = Vec::new();
        for id in ids {
            self.each(ANSWER, &[id], |row: AnswerRow| {
                if let (id, Some(model), Some(prompt), Some(answer)) = row {
                    out.push(Unlabelled {
                        id,
                        model,
                        prompt,
                        answer,
                    });
                }
            })?;
        }
        Ok(out)
    }

    /// Stores a judge's grade (a second grade of the same answer by the same judge is ignored).
    pub fn insert_label(&mut self, label: &Label) -> Result<(), StoreError> {
        let l = label;
        let params: [&(dyn Param + Sync); 6] = [
            &l.request_id,
            &l.judge,
            &l.ts_ms,
            &l.rating,
            &l.score,
            &l.cost_usd,
        ];
        match self {
            Store::Sqlite(conn) => {
                conn.execute(INSERT_LABEL, sqlite_params(&params).as_slice())?;
            }
            Store::Postgres(client) => {
                client.execute(INSERT_LABEL, &postgres_params(&params))?;
            }
        }
        Ok(())
    }

    /// Every preference whose requests were both answered, the first with text, logged at or
    /// after `since_ms`.
    pub fn preferences(&mut self, since_ms: i64) -> Result<Vec<Paired>, StoreError> {
        self.all(PAIRED, &[&since_ms])
    }

    /// `(route, prompt)` of every answered request with text logged at or after `since_ms`.
    pub fn prompts(&mut self, since_ms: i64) -> Result<Vec<(String, String)>, StoreError> {
        self.all(PROMPTS, &[&since_ms])
    }

    /// Every answered request with text logged at or after `since_ms`, with its verdicts.
    pub fn verdicts(&mut self, since_ms: i64) -> Result<Vec<Verdicts>, StoreError> {
        self.all(LABELLED, &[&since_ms])
    }

    /// Runs a query on either backend and calls `each` on every row read as a `T`.
    fn each<T: FromRow>(
        &mut self,
        sql: &str,
        params: &[&(dyn Param + Sync)],
        mut each: impl FnMut(T),
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                let mut rows = statement.query(sqlite_params(params).as_slice())?;
                while let Some(row) = rows.next()? {
                    each(T::from_row(row)?);
                }
            }
            Store::Postgres(client) => {
                for row in client.query(sql, &postgres_params(params))? {
                    each(T::from_row(&row)?);
                }
            }
        }
        Ok(())
    }

    /// Every row of a query, as `T`s.
    fn all<T: FromRow>(
        &mut self,
        sql: &str,
        params: &[&(dyn Param + Sync)],
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        self.each(sql, params, |row| out.push(row))?;
        Ok(out)
    }
}

/// A query parameter both backends can bind.
trait Param: rusqlite::ToSql + postgres::types::ToSql {}
impl<T: rusqlite::ToSql + postgres::types::ToSql> Param for T {}

fn sqlite_params<'a>(params: &[&'a (dyn Param + Sync)]) -> Vec<&'a dyn rusqlite::ToSql> {
    params.iter().map(|&p| p as &dyn rusqlite::ToSql).collect()
}

fn postgres_params<'a>(
    params: &[&'a (dyn Param + Sync)],
) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|&p| p as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

/// A column type both backends can read.
trait Cell: rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a> {}
impl<T: rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a>> Cell for T {}

/// A result row of either backend.
trait Cells {
    fn cell<T: Cell>(&self, index: usize) -> Result<T, StoreError>;
}

impl Cells for rusqlite::Row<'_> {
    fn cell<T: Cell>(&self, index: usize) -> Result<T, StoreError> {
        Ok(self.get(index)?)
    }
}

impl Cells for postgres::Row {
    fn cell<T: Cell>(&self, index: usize) -> Result<T, StoreError> {
        Ok(self.try_get(index)?)
    }
}

/// A value read from one result row, column by column in the query's order.
trait FromRow: Sized {
    fn from_row(row: &impl Cells) -> Result<Self, StoreError>;
}

impl<A: Cell, B: Cell, C: Cell> FromRow for (A, B, C) {
    fn from_row(row: &impl Cells) -> Result<Self, StoreError> {
        Ok((row.cell(0)?, row.cell(1)?, row.cell(2)?))
    }
}

impl<A: Cell, B: Cell> FromRow for (A, B) {
    fn from_row(row: &impl Cells) -> Result<Self, StoreError> {
        Ok((row.cell(0)?, row.cell(1)?))
    }
}

/// `ANSWER`'s columns: id, then model, prompt and answer where logged.
type AnswerRow = (String, Option<String>, Option<String>, Option<String>);

impl FromRow for AnswerRow {
    fn from_row(row: &impl Cells) -> Result<Self, StoreError> {
        Ok((row.cell(0)?, row.cell(1)?, row.cell(2)?, row.cell(3)?))
    }
}

impl FromRow for LoggedRow {
    fn from_row(r: &impl Cells) -> Result<Self, StoreError> {
        Ok(LoggedRow {
            model: r.cell(0)?,
            key_id: r.cell(1)?,
            profile: r.cell(2)?,
            status: r.cell(3)?,
            prompt_tokens: r.cell(4)?,
            completion_tokens: r.cell(5)?,
            cached_tokens: r.cell(6)?,
            cache_write_tokens: r.cell(7)?,
            cost_usd: r.cell(8)?,
            candidates: r.cell(9)?,
            signals: r.cell(10)?,
            has_feedback: r.cell::<i64>(11)? == 1,
            judged: r.cell::<i64>(12)? == 1,
            ts_ms: r.cell(13)?,
            latency_ms: r.cell(14)?,
            ttft_ms: r.cell(15)?,
            difficulty: r.cell(16)?,
            skills: r.cell(17)?,
            compared: r.cell::<i64>(18)? == 1,
        })
    }
}

impl FromRow for RequestLine {
    fn from_row(r: &impl Cells) -> Result<Self, StoreError> {
        Ok(RequestLine {
            id: r.cell(0)?,
            ts_ms: r.cell(1)?,
            key_id: r.cell(2)?,
            requested: r.cell(3)?,
            model: r.cell(4)?,
            status: r.cell(5)?,
            cost_usd: r.cell(6)?,
            latency_ms: r.cell(7)?,
            ttft_ms: r.cell(8)?,
            difficulty: r.cell(9)?,
            skills: r.cell(10)?,
            fallbacks: r.cell(11)?,
            stream: r.cell::<i64>(12)? != 0,
            prompt_tokens: r.cell(13)?,
            completion_tokens: r.cell(14)?,
            signals: r.cell(15)?,
            feedback: r.cell(16)?,
        })
    }
}

impl FromRow for LoggedRequest {
    fn from_row(r: &impl Cells) -> Result<Self, StoreError> {
        Ok(LoggedRequest {
            id: r.cell(0)?,
            ts_ms: r.cell(1)?,
            endpoint: r.cell(2)?,
            key_id: r.cell(3)?,
            requested: r.cell(4)?,
            route: r.cell(5)?,
            profile: r.cell(6)?,
            difficulty: r.cell(7)?,
            skills: r.cell(8)?,
            tool_need: r.cell(9)?,
            candidates: r.cell(10)?,
            model: r.cell(11)?,
            fallbacks: r.cell(12)?,
            tokens: [r.cell(13)?, r.cell(14)?, r.cell(15)?, r.cell(16)?],
            cost_usd: r.cell(17)?,
            ttft_ms: r.cell(18)?,
            latency_ms: r.cell(19)?,
            status: r.cell(20)?,
            stream: r.cell::<i64>(21)? != 0,
            prompt: r.cell(22)?,
            answer: r.cell(23)?,
            signals: r.cell(24)?,
        })
    }
}

impl FromRow for StoredFeedback {
    fn from_row(r: &impl Cells) -> Result<Self, StoreError> {
        Ok(StoredFeedback {
            ts_ms: r.cell(0)?,
            score: r.cell(1)?,
            thumbs: r.cell(2)?,
            comment: r.cell(3)?,
        })
    }
}

/// `REQUEST_PREFERENCES`' columns, before they are turned to one request's side.
struct PreferenceRow {
    ts_ms: i64,
    request_id: String,
    opponent_id: String,
    result: String,
    comment: Option<String>,
    models: (Option<String>, Option<String>),
}

impl PreferenceRow {
    fn seen_from(self, id: &str) -> StoredPreference {
        let mine = self.request_id == id;
        let result = match PairResult::parse(&self.result) {
            Some(result) if !mine => result.mirrored().as_str().to_string(),
            _ => self.result,
        };
        let (opponent, opponent_model) = if mine {
            (self.opponent_id, self.models.1)
        } else {
            (self.request_id, self.models.0)
        };
        StoredPreference {
            ts_ms: self.ts_ms,
            opponent,
            opponent_model,
            result,
            comment: self.comment,
        }
    }
}

impl FromRow for PreferenceRow {
    fn from_row(r: &impl Cells) -> Result<Self, StoreError> {
        Ok(PreferenceRow {
            ts_ms: r.cell(0)?,
            request_id: r.cell(1)?,
            opponent_id: r.cell(2)?,
            result: r.cell(3)?,
            comment: r.cell(4)?,
            models: (r.cell(5)?, r.cell(6)?),
        })
    }
}

impl FromRow for SamePrompt {
    fn from_row(r: &impl Cells) -> Result<Self, StoreError> {
        Ok(SamePrompt {
            id: r.cell(0)?,
            model: r.cell(1)?,
            ts_ms: r.cell(2)?,
        })
    }
}

impl FromRow for Paired {
    fn from_row(r: &impl Cells) -> Result<Self, StoreError> {
        Ok(Paired {
            request_id: r.cell(0)?,
            model: r.cell(1)?,
            prompt: r.cell(2)?,
            opponent_id: r.cell(3)?,
            opponent_model: r.cell(4)?,
            result: PairResult::parse(&r.cell::<String>(5)?),
        })
    }
}

impl FromRow for StoredLabel {
    fn from_row(r: &impl Cells) -> Result<Self, StoreError> {
        Ok(StoredLabel {
            judge: r.cell(0)?,
            ts_ms: r.cell(1)?,
            rating: r.cell(2)?,
            score: r.cell(3)?,
        })
    }
}

impl FromRow for KeyRow {
    fn from_row(r: &impl Cells) -> Result<Self, StoreError> {
        Ok(KeyRow {
            id: r.cell(0)?,
            name: r.cell(1)?,
            hash: r.cell(2)?,
            budget_usd: r.cell(3)?,
            budget_period: r.cell(4)?,
            rpm: r.cell(5)?,
            models: r.cell(6)?,
            expires_ms: r.cell(7)?,
            metadata: r.cell(8)?,
            created_ms: r.cell(9)?,
            revoked_ms: r.cell(10)?,
            tpm: r.cell(11)?,
        })
    }
}

impl FromRow for Verdicts {
    fn from_row(r: &impl Cells) -> Result<Self, StoreError> {
        Ok(Verdicts {
            id: r.cell(0)?,
            model: r.cell(1)?,
            prompt: r.cell(2)?,
            signals: r.cell::<Option<String>>(3)?.unwrap_or_default(),
            feedback: r.cell(4)?,
            judged: r.cell(5)?,
        })
    }
}

/// An outcome's 25 column values, in `INSERT_OUTCOME`'s order.
struct Columns<'a> {
    o: &'a Outcome,
    route: &'static str,
    profile: Option<&'a str>,
    difficulty: Option<f64>,
    skills: Option<&'a str>,
    tool_need: Option<f64>,
    candidates: Option<&'a str>,
    signals: Option<&'a str>,
    numbers: [i64; 6],
}

impl<'a> Columns<'a> {
    fn of(o: &'a Outcome) -> Columns<'a> {
        let auto = o.auto.as_ref();
        Columns {
            o,
            route: o.route(),
            profile: auto.map(|a| a.profile.as_str()),
            difficulty: auto.map(|a| a.difficulty),
            skills: auto.map(|a| a.skills.as_str()),
            tool_need: auto.map(|a| a.tool_need),
            candidates: auto.map(|a| a.candidates.as_str()),
            signals: Some(o.signals.as_str()).filter(|s| !s.is_empty()),
            numbers: [
                o.prompt_tokens as i64,
                o.completion_tokens as i64,
                o.cached_tokens as i64,
                o.cache_write_tokens as i64,
                i64::from(o.status),
                i64::from(o.stream),
            ],
        }
    }
}

/// The 25 parameters of `INSERT_OUTCOME`, as `&$t` (each backend's `ToSql` trait object).
macro_rules! outcome_params {
    ($c:expr, $t:ty) => {{
        let c = $c;
        let o = c.o;
        [
            &o.id as &$t,
            &o.ts_ms as &$t,
            &o.endpoint as &$t,
            &o.key_id as &$t,
            &o.requested as &$t,
            &c.route as &$t,
            &c.profile as &$t,
            &c.difficulty as &$t,
            &c.skills as &$t,
            &c.tool_need as &$t,
            &c.candidates as &$t,
            &o.model as &$t,
            &o.fallbacks as &$t,
            &c.numbers[0] as &$t,
            &c.numbers[1] as &$t,
            &c.numbers[2] as &$t,
            &c.numbers[3] as &$t,
            &o.cost_usd as &$t,
            &o.ttft_ms as &$t,
            &o.latency_ms as &$t,
            &c.numbers[4] as &$t,
            &c.numbers[5] as &$t,
            &o.prompt as &$t,
            &o.answer as &$t,
            &c.signals as &$t,
        ]
    }};
}

fn write_sqlite(
    conn: &mut rusqlite::Connection,
    batch: &[Write<'_>],
) -> Result<Vec<Result<(), FeedbackError>>, StoreError> {
    let tx = conn.transaction()?;
    let mut verdicts = Vec::new();
    for write in batch {
        match write {
            Write::Outcome(o) => {
                let columns = Columns::of(o);
                let params = outcome_params!(&columns, dyn rusqlite::ToSql);
                let inserted = tx.prepare_cached(INSERT_OUTCOME)?.execute(&params[..])?;
                if inserted > 0 && o.cost_usd > 0.0 {
                    tx.prepare_cached(ADD_SPEND)?.execute(rusqlite::params![
                        o.key_id,
                        o.ts_ms.div_euclid(DAY_MS),
                        o.cost_usd
                    ])?;
                }
            }
            Write::Feedback(f) => {
                let known: Option<i64> = tx
                    .query_row(KNOWN_ID, [&f.request_id], |r| r.get(0))
                    .optional()?;
                if known.is_none() {
                    verdicts.push(Err(FeedbackError::UnknownId(f.request_id.clone())));
                    continue;
                }
                tx.prepare_cached(INSERT_FEEDBACK)?
                    .execute(rusqlite::params![
                        f.request_id,
                        f.ts_ms,
                        f.score,
                        f.thumbs,
                        f.comment
                    ])?;
                verdicts.push(Ok(()));
            }
            Write::Preference(p) => {
                let prompt = |id: &str| -> Result<Option<Option<String>>, StoreError> {
                    Ok(tx.query_row(PROMPT_OF, [id], |r| r.get(0)).optional()?)
                };
                let prompts = (prompt(&p.request_id)?, prompt(&p.opponent_id)?);
                let verdict = comparable(p, prompts);
                if verdict.is_ok() {
                    tx.prepare_cached(INSERT_PREFERENCE)?
                        .execute(rusqlite::params![
                            p.request_id,
                            p.opponent_id,
                            p.ts_ms,
                            p.result.as_str(),
                            p.comment
                        ])?;
                }
                verdicts.push(verdict);
            }
        }
    }
    tx.commit()?;
    Ok(verdicts)
}

fn write_postgres(
    client: &mut postgres::Client,
    batch: &[Write<'_>],
) -> Result<Vec<Result<(), FeedbackError>>, StoreError> {
    let mut tx = client.transaction()?;
    let insert = tx.prepare(INSERT_OUTCOME)?;
    let mut verdicts = Vec::new();
    for write in batch {
        match write {
            Write::Outcome(o) => {
                let columns = Columns::of(o);
                let params = outcome_params!(&columns, dyn postgres::types::ToSql + Sync);
                let inserted = tx.execute(&insert, &params[..])?;
                if inserted > 0 && o.cost_usd > 0.0 {
                    let day = o.ts_ms.div_euclid(DAY_MS);
                    tx.execute(ADD_SPEND, &[&o.key_id, &day, &o.cost_usd])?;
                }
            }
            Write::Feedback(f) => {
                if tx.query_opt(KNOWN_ID, &[&f.request_id])?.is_none() {
                    verdicts.push(Err(FeedbackError::UnknownId(f.request_id.clone())));
                    continue;
                }
                tx.execute(
                    INSERT_FEEDBACK,
                    &[&f.request_id, &f.ts_ms, &f.score, &f.thumbs, &f.comment],
                )?;
                verdicts.push(Ok(()));
            }
            Write::Preference(p) => {
                let mut prompt = |id: &String| -> Result<Option<Option<String>>, StoreError> {
                    Ok(tx.query_opt(PROMPT_OF, &[id])?.map(|row| row.get(0)))
                };
                let prompts = (prompt(&p.request_id)?, prompt(&p.opponent_id)?);
                let verdict = comparable(p, prompts);
                if verdict.is_ok() {
                    tx.execute(
                        INSERT_PREFERENCE,
                        &[
                            &p.request_id,
                            &p.opponent_id,
                            &p.ts_ms,
                            &p.result.as_str(),
                            &p.comment,
                        ],
                    )?;
                }
                verdicts.push(verdict);
            }
        }
    }
    tx.commit()?;
    Ok(verdicts)
}

/// Whether a preference can be stored, given its two requests' logged prompts (outer `None`:
/// no such request; inner `None`: text not stored). Prompts are compared as JSON values, so
/// the same messages with keys in another order are the same prompt; without stored text
/// there is nothing to compare.
fn comparable(
    p: &Preference,
    prompts: (Option<Option<String>>, Option<Option<String>>),
) -> Result<(), FeedbackError> {
    let (Some(mine), Some(theirs)) = prompts else {
        let unknown = if prompts.0.is_none() {
            &p.request_id
        } else {
            &p.opponent_id
        };
        return Err(FeedbackError::UnknownId(unknown.clone()));
    };
    let parsed = |text: &str| serde_json::from_str::<serde_json::Value>(text).ok();
    if let (Some(a), Some(b)) = (mine, theirs)
        && parsed(&a) != parsed(&b)
    {
        return Err(FeedbackError::DifferentPrompts(
            p.request_id.clone(),
            p.opponent_id.clone(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema today's release writes, before migrations were recorded.
    const RELEASE_SCHEMA: &str =
        include_str!("../../../../tests/fixtures/outcome_log_release_sqlite.sql");

    fn outcome(id: &str) -> Outcome {
        Outcome {
            id: id.into(),
            endpoint: "chat",
            model: Some("m".into()),
            status: 200,
            prompt: Some(r#"{"messages": []}"#.into()),
            answer: Some("a".into()),
            signals: "truncated".into(),
            ..Outcome::default()
        }
    }

    fn versions(path: &Path) -> Vec<i64> {
        rusqlite::Connection::open(path)
            .unwrap()
            .prepare("SELECT version FROM schema_migrations ORDER BY version")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_log_written_by_the_release_before_migrations_is_recorded_not_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("release.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(RELEASE_SCHEMA).unwrap();
        conn.execute(
            "INSERT INTO outcomes (id, ts_ms, endpoint, key_id, requested, route, fallbacks,
             prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, cost_usd,
             latency_ms, status, stream, signals) VALUES ('old', 1, 'chat', 'k', 'm', 'explicit',
             '', 1, 2, 0, 0, 0.5, 3.0, 200, 0, 'regenerated')",
            [],
        )
        .unwrap();
        drop(conn);
        let mut store = Store::open(&path).unwrap();
        assert_eq!(
            versions(&path),
            (1..=migrations::LATEST).collect::<Vec<_>>()
        );
        // Its rows are kept, and it takes new ones.
        store.write(&[Write::Outcome(&outcome("new"))]).unwrap();
        drop(store);
        let ids: Vec<String> = rusqlite::Connection::open(&path)
            .unwrap()
            .prepare("SELECT id FROM outcomes ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(ids, ["new", "old"]);
        // Opening it again runs nothing.
        let mut again = Store::open(&path).unwrap();
        assert!(migrations::run(&mut again).unwrap().is_empty());
    }

    #[test]
    fn a_log_from_before_signals_and_labels_gets_the_migrations_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        // An older release: no `signals` column, no `labels` table.
        let old_schema =
            RELEASE_SCHEMA.replace("    answer TEXT,\n    signals TEXT\n", "    answer TEXT\n");
        let old_schema = &old_schema[..old_schema
            .find("CREATE TABLE IF NOT EXISTS labels")
            .unwrap()];
        assert!(!old_schema.contains("signals"));
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(old_schema)
            .unwrap();
        // Reading an old log brings it up to date (the report reads `signals` and `labels`).
        let mut reader = Store::open_read(&path).unwrap();
        reader.scan(0, |_| {}).unwrap();
        drop(reader);
        assert_eq!(
            versions(&path),
            (1..=migrations::LATEST).collect::<Vec<_>>()
        );
        let mut store = Store::open(&path).unwrap();
        store.write(&[Write::Outcome(&outcome("r1"))]).unwrap();
        assert_eq!(store.verdicts(0).unwrap()[0].signals, "truncated");
    }

    #[test]
    fn a_new_log_runs_every_migration() {
        let dir = tempfile::tempdir().unwrap();
        let mut store =
            Store::Sqlite(rusqlite::Connection::open(dir.path().join("new.db")).unwrap());
        let ran = migrations::run(&mut store).unwrap();
        assert_eq!(ran, (1..=migrations::LATEST).collect::<Vec<_>>());
        assert!(store.has_column("outcomes", "signals").unwrap());
        assert!(store.has_table("labels").unwrap());
    }
}
