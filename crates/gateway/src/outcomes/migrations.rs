//! The outcome log's schema, as numbered migrations written once for both backends and recorded
//! in `schema_migrations`. A log opened by a newer triage gets the migrations it lacks, in
//! order, each in its own transaction.
//!
//! The SQL is shared: `BIGINT` and `DOUBLE PRECISION` mean the same to SQLite (by type
//! affinity) and PostgreSQL; the one difference, an auto-numbered key, is the `{serial_key}`
//! placeholder. Hand-written because no migration crate serves both: refinery supports
//! rusqlite up to 0.41 (triage uses 0.43) and rusqlite_migration is SQLite-only.
//!
//! Logs written before migrations were recorded have no `schema_migrations` table: what they
//! already hold is detected (`already_there`) and recorded, and the rest runs.

use super::store::{Store, StoreError};

/// One schema change.
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
    /// For a log from before `schema_migrations`: whether this change is already in it.
    already_there: fn(&mut Store) -> Result<bool, StoreError>,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "outcomes and feedback",
        sql: "
CREATE TABLE IF NOT EXISTS outcomes (
    id TEXT PRIMARY KEY,
    ts_ms BIGINT NOT NULL,
    endpoint TEXT NOT NULL,
    key_id TEXT NOT NULL,
    requested TEXT NOT NULL,
    route TEXT NOT NULL,
    profile TEXT,
    difficulty DOUBLE PRECISION,
    skills TEXT,
    tool_need DOUBLE PRECISION,
    candidates TEXT,
    model TEXT,
    fallbacks TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    ttft_ms DOUBLE PRECISION,
    latency_ms DOUBLE PRECISION NOT NULL,
    status BIGINT NOT NULL,
    stream BIGINT NOT NULL,
    prompt TEXT,
    answer TEXT
);
CREATE INDEX IF NOT EXISTS outcomes_ts ON outcomes (ts_ms);
CREATE TABLE IF NOT EXISTS feedback (
    seq {serial_key},
    request_id TEXT NOT NULL REFERENCES outcomes (id) ON DELETE CASCADE,
    ts_ms BIGINT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    thumbs TEXT,
    comment TEXT
);
CREATE INDEX IF NOT EXISTS feedback_request ON feedback (request_id);
",
        already_there: |store| store.has_table("outcomes"),
    },
    Migration {
        version: 2,
        name: "implicit signals",
        sql: "ALTER TABLE outcomes ADD COLUMN signals TEXT;",
        already_there: |store| store.has_column("outcomes", "signals"),
    },
    Migration {
        version: 3,
        name: "judge labels",
        sql: "
CREATE TABLE IF NOT EXISTS labels (
    request_id TEXT NOT NULL REFERENCES outcomes (id) ON DELETE CASCADE,
    judge TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    rating DOUBLE PRECISION NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (request_id, judge)
);
",
        already_there: |store| store.has_table("labels"),
    },
    Migration {
        version: 4,
        name: "virtual keys and their spend",
        sql: "
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    budget_usd DOUBLE PRECISION,
    budget_period TEXT NOT NULL,
    rpm BIGINT,
    models TEXT,
    expires_ms BIGINT,
    metadata TEXT,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
CREATE TABLE IF NOT EXISTS key_spend (
    key_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key_id, day)
);
",
        already_there: |store| store.has_table("keys"),
    },
    Migration {
        version: 5,
        name: "tokens per minute for virtual keys",
        sql: "ALTER TABLE keys ADD COLUMN tpm BIGINT;",
        already_there: |store| store.has_column("keys", "tpm"),
    },
    Migration {
        version: 6,
        name: "pairwise preferences",
        sql: "
CREATE TABLE IF NOT EXISTS preferences (
    seq {serial_key},
    request_id TEXT NOT NULL REFERENCES outcomes (id) ON DELETE CASCADE,
    opponent_id TEXT NOT NULL REFERENCES outcomes (id) ON DELETE CASCADE,
    ts_ms BIGINT NOT NULL,
    result TEXT NOT NULL,
    comment TEXT
);
CREATE INDEX IF NOT EXISTS preferences_request ON preferences (request_id);
CREATE INDEX IF NOT EXISTS preferences_opponent ON preferences (opponent_id);
",
        already_there: |store| store.has_table("preferences"),
    },
];

/// The version a log is at once every migration has run.
pub const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_ms BIGINT NOT NULL
)";
const RECORD: &str =
    "INSERT INTO schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)";

/// Brings the log up to [`LATEST`]; returns the versions it ran (not those only recorded).
pub fn run(store: &mut Store) -> Result<Vec<i64>, StoreError> {
    let tracked = store.has_table("schema_migrations")?;
    let untracked_log = !tracked && store.has_table("outcomes")?;
    store.execute_batch(CREATE_TABLE)?;
    let applied = store.migration_versions()?;
    let mut ran = Vec::new();
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        let present = untracked_log && (migration.already_there)(store)?;
        let sql = if present {
            String::new()
        } else {
            store.dialect(migration.sql)
        };
        store.apply(&sql, RECORD, migration.version, migration.name)?;
        if !present {
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "outcome log: migrated"
            );
            ran.push(migration.version);
        }
    }
    Ok(ran)
}

/// Whether the log is at [`LATEST`] (read-only handles check before reading).
pub fn is_current(store: &mut Store) -> Result<bool, StoreError> {
    if !store.has_table("schema_migrations")? {
        return Ok(false);
    }
    Ok(store.migration_versions()?.contains(&LATEST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_numbered_one_by_one() {
        for (i, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, i as i64 + 1, "{}", migration.name);
        }
    }
}
