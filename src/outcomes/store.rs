//! The SQLite side of the outcome log: schema, batched inserts, feedback, pruning.
//!
//! WAL mode with `synchronous = NORMAL`: a committed transaction survives a crash of the
//! process (kill -9), not necessarily a power loss or kernel crash (the last commits may roll
//! back then). Nothing here knows about HTTP or queues.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{Feedback, FeedbackError, Outcome};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outcomes (
    id TEXT PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    key_id TEXT NOT NULL,
    requested TEXT NOT NULL,
    route TEXT NOT NULL,
    profile TEXT,
    difficulty REAL,
    skills TEXT,
    tool_need REAL,
    candidates TEXT,
    model TEXT,
    fallbacks TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    ttft_ms REAL,
    latency_ms REAL NOT NULL,
    status INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    prompt TEXT,
    answer TEXT
);
CREATE INDEX IF NOT EXISTS outcomes_ts ON outcomes (ts_ms);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL REFERENCES outcomes (id) ON DELETE CASCADE,
    ts_ms INTEGER NOT NULL,
    score REAL NOT NULL,
    thumbs TEXT,
    comment TEXT
);
CREATE INDEX IF NOT EXISTS feedback_request ON feedback (request_id);
";

/// One queued write, in the order it arrived.
pub(super) enum Write<'a> {
    Outcome(&'a Outcome),
    Feedback(&'a Feedback),
}

/// An open SQLite outcome log.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the log for writing.
    pub fn open(path: &Path) -> rusqlite::Result<Store> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn })
    }

    /// Opens an existing log for reading (reports); never creates a file.
    pub fn open_read(path: &Path) -> rusqlite::Result<Store> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(Store { conn })
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Writes a batch in one transaction. Each feedback gets its own verdict (an unknown
    /// request id is not an error of the batch); the verdicts hold only once this returns Ok.
    pub(super) fn write(
        &mut self,
        batch: &[Write<'_>],
    ) -> rusqlite::Result<Vec<Result<(), FeedbackError>>> {
        let tx = self.conn.transaction()?;
        let mut verdicts = Vec::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO outcomes (id, ts_ms, endpoint, key_id, requested, route,
                 profile, difficulty, skills, tool_need, candidates, model, fallbacks,
                 prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, cost_usd,
                 ttft_ms, latency_ms, status, stream, prompt, answer)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)",
            )?;
            for write in batch {
                match write {
                    Write::Outcome(o) => {
                        insert.execute(params![
                            o.id,
                            o.ts_ms,
                            o.endpoint,
                            o.key_id,
                            o.requested,
                            o.route(),
                            o.auto.as_ref().map(|a| &a.profile),
                            o.auto.as_ref().map(|a| a.difficulty),
                            o.auto.as_ref().map(|a| &a.skills),
                            o.auto.as_ref().map(|a| a.tool_need),
                            o.auto.as_ref().map(|a| &a.candidates),
                            o.model,
                            o.fallbacks,
                            o.prompt_tokens as i64,
                            o.completion_tokens as i64,
                            o.cached_tokens as i64,
                            o.cache_write_tokens as i64,
                            o.cost_usd,
                            o.ttft_ms,
                            o.latency_ms,
                            o.status,
                            o.stream,
                            o.prompt,
                            o.answer,
                        ])?;
                    }
                    Write::Feedback(f) => verdicts.push(insert_feedback(&tx, f)?),
                }
            }
        }
        tx.commit()?;
        Ok(verdicts)
    }

    /// Deletes outcomes (and their feedback) older than `cutoff_ms`; returns the rows deleted.
    pub fn prune(&self, cutoff_ms: i64) -> rusqlite::Result<usize> {
        self.conn
            .execute("DELETE FROM outcomes WHERE ts_ms < ?1", [cutoff_ms])
    }
}

fn insert_feedback(
    tx: &rusqlite::Transaction<'_>,
    f: &Feedback,
) -> rusqlite::Result<Result<(), FeedbackError>> {
    let known: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM outcomes WHERE id = ?1",
            [&f.request_id],
            |r| r.get(0),
        )
        .optional()?;
    if known.is_none() {
        return Ok(Err(FeedbackError::UnknownId(f.request_id.clone())));
    }
    tx.prepare_cached(
        "INSERT INTO feedback (request_id, ts_ms, score, thumbs, comment)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![f.request_id, f.ts_ms, f.score, f.thumbs, f.comment])?;
    Ok(Ok(()))
}
