//! Virtual keys: router keys as data, in the outcome log's database, each with an optional
//! budget (per day, month or in total), a requests-per-minute limit, an allow-list of models and
//! an expiry. Created and revoked over HTTP (`/admin/keys`) without a restart.
//!
//! The server checks them against a [`KeyRing`] held in memory and refreshed from the database
//! every `[log] key_refresh_ms`, so a request costs no database round trip. Spend is counted in
//! the database by the outcome writer (`key_spend`, one row per key and day, in the same
//! transaction as the request's log row) and locally between refreshes. What that gives:
//! - a key revoked, changed or created on one instance holds on every instance within one
//!   refresh interval (on the instance that changed it, at once);
//! - a budget can be overshot by the cost of the requests in flight when it runs out, plus, on
//!   several instances, what the others spent since their last refresh;
//! - `rpm` is counted per instance: behind a load balancer over N instances a key gets up to
//!   N × rpm.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::outcomes::store::KeyRow;
use triage_core::config::glob_matches;

const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;

/// What a budget resets with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
    Total,
}

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
            Period::Total => "total",
        }
    }

    /// A stored `budget_period`; anything unknown is the default, a month.
    pub fn parse(text: &str) -> Period {
        match text {
            "day" => Period::Day,
            "total" => Period::Total,
            _ => Period::Month,
        }
    }

    /// The first day (since the epoch, UTC) of the period holding `now_ms`.
    pub fn start_day(self, now_ms: i64) -> i64 {
        let today = now_ms.div_euclid(DAY_MS);
        match self {
            Period::Day => today,
            Period::Month => month_start(today),
            Period::Total => i64::MIN,
        }
    }
}

/// The first day of the month holding `day` (days since 1970-01-01, proleptic Gregorian).
fn month_start(day: i64) -> i64 {
    // Howard Hinnant's civil_from_days: only the day of the month is needed.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day_of_month = doy - (153 * mp + 2) / 5 + 1;
    day - (day_of_month - 1)
}

/// `POST /admin/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    pub budget_usd: Option<f64>,
    pub budget_period: Option<Period>,
    pub rpm: Option<u32>,
    /// Tokens (prompt + completion) per minute, counted when each answer ends.
    pub tpm: Option<u32>,
    /// Model ids, globs (`openai/*`) and profiles (`auto`, `auto:*`) the key may ask for.
    pub models: Option<Vec<String>>,
    /// A date (`2027-01-31`) or date and time, UTC.
    pub expires_at: Option<String>,
    pub metadata: Option<Value>,
}

/// A key's field that cannot be stored, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidKey {
    pub message: String,
    pub param: &'static str,
}

fn invalid(message: &str, param: &'static str) -> InvalidKey {
    InvalidKey {
        message: message.into(),
        param,
    }
}

impl NewKey {
    /// The row to store and the secret to show once.
    pub fn into_row(self, now_ms: i64) -> Result<(KeyRow, String), InvalidKey> {
        let (id, secret) = new_secret();
        let row = KeyRow {
            id,
            name: self.name,
            hash: hash_hex(&secret),
            budget_usd: self.budget_usd,
            budget_period: self.budget_period.unwrap_or(Period::Month).name().into(),
            rpm: self.rpm.map(i64::from),
            tpm: self.tpm.map(i64::from),
            models: self.models.as_ref().map(|m| json!(m).to_string()),
            expires_ms: self.expires_at.as_deref().map(expiry).transpose()?,
            metadata: self.metadata.map(|m| m.to_string()),
            created_ms: now_ms,
            revoked_ms: None,
        };
        check(&row, self.models.as_deref())?;
        Ok((row, secret))
    }
}

/// Checks a new or changed key's fields.
pub fn check(row: &KeyRow, models: Option<&[String]>) -> Result<(), InvalidKey> {
    if row.name.trim().is_empty() {
        return Err(invalid("`name` must not be empty.", "name"));
    }
    if row.budget_usd.is_some_and(|b| !(b >= 0.0 && b.is_finite())) {
        return Err(invalid("`budget_usd` must be a number ≥ 0.", "budget_usd"));
    }
    if row.rpm.is_some_and(|r| r <= 0) {
        return Err(invalid("`rpm` must be above 0.", "rpm"));
    }
    if row.tpm.is_some_and(|t| t <= 0) {
        return Err(invalid("`tpm` must be above 0.", "tpm"));
    }
    if models.is_some_and(|m| m.is_empty() || m.iter().any(|p| p.trim().is_empty())) {
        return Err(invalid(
            "`models` must list model ids, globs or profiles.",
            "models",
        ));
    }
    Ok(())
}

/// `expires_at`: a date or date and time, UTC.
pub fn expiry(text: &str) -> Result<i64, InvalidKey> {
    crate::outcomes::parse_date(text).ok_or_else(|| {
        invalid(
            "`expires_at` must be a date like 2027-01-31 or 2027-01-31T12:00:00Z.",
            "expires_at",
        )
    })
}

/// Why a key's request is refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    Expired,
    Revoked,
    ModelNotAllowed(String),
    OverBudget {
        spent: f64,
        budget: f64,
        period: Period,
    },
    RateLimited {
        rpm: u32,
        retry_after_ms: i64,
    },
    TokenLimited {
        tpm: u32,
        retry_after_ms: i64,
    },
}

/// A key's request-per-minute state, for OpenAI's `x-ratelimit-*-requests` headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateState {
    pub limit: u32,
    pub remaining: u32,
    /// Until the oldest request in the window leaves it.
    pub reset_ms: i64,
}

/// One key as the server holds it.
#[derive(Debug)]
pub struct Key {
    pub row: KeyRow,
    pub models: Option<Vec<String>>,
    pub period: Period,
    /// Spend in the current period: the database's at the last refresh plus what this
    /// instance charged since.
    spent: Mutex<f64>,
    /// Start times of the requests of the last minute (this instance).
    window: Mutex<VecDeque<i64>>,
    /// End times and token counts of the answers of the last minute (this instance).
    tokens: Mutex<VecDeque<(i64, u64)>>,
}

impl Key {
    fn new(row: KeyRow, spent: f64, window: VecDeque<i64>) -> Key {
        let models = row
            .models
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok());
        let period = Period::parse(&row.budget_period);
        Key {
            row,
            models,
            period,
            spent: Mutex::new(spent),
            window: Mutex::new(window),
            tokens: Mutex::default(),
        }
    }

    /// Revoked or expired keys are refused as if unknown, with the reason.
    pub fn check_valid(&self, now_ms: i64) -> Result<(), Refusal> {
        if self.row.revoked_ms.is_some() {
            return Err(Refusal::Revoked);
        }
        if self.row.expires_ms.is_some_and(|at| now_ms >= at) {
            return Err(Refusal::Expired);
        }
        Ok(())
    }

    /// Whether the key may ask for `model` (an id or a profile such as `auto:cheap`).
    pub fn allows(&self, model: &str) -> bool {
        match &self.models {
            None => true,
            Some(list) => list.iter().any(|pattern| glob_matches(pattern, model)),
        }
    }

    pub fn spent(&self) -> f64 {
        *lock(&self.spent)
    }

    /// Refuses a key whose budget is spent.
    pub fn check_budget(&self) -> Result<(), Refusal> {
        let Some(budget) = self.row.budget_usd else {
            return Ok(());
        };
        let spent = self.spent();
        if spent >= budget {
            return Err(Refusal::OverBudget {
                spent,
                budget,
                period: self.period,
            });
        }
        Ok(())
    }

    /// Counts a request against `rpm`, or refuses it; `None` for a key without a limit.
    pub fn take_request(&self, now_ms: i64) -> Result<Option<RateState>, Refusal> {
        let Some(rpm) = self.row.rpm.and_then(|r| u32::try_from(r).ok()) else {
            return Ok(None);
        };
        let mut window = lock(&self.window);
        while window.front().is_some_and(|&t| t <= now_ms - MINUTE_MS) {
            window.pop_front();
        }
        let reset_ms = window.front().map_or(0, |&t| t + MINUTE_MS - now_ms);
        if window.len() >= rpm as usize {
            return Err(Refusal::RateLimited {
                rpm,
                retry_after_ms: reset_ms.max(1),
            });
        }
        window.push_back(now_ms);
        Ok(Some(RateState {
            limit: rpm,
            remaining: rpm - window.len() as u32,
            reset_ms: window.front().map_or(0, |&t| t + MINUTE_MS - now_ms),
        }))
    }

    /// Refuses a key whose answers of the last minute used its `tpm`; its token window
    /// otherwise (`None` without a limit). The request's own tokens count when it ends.
    pub fn check_tokens(&self, now_ms: i64) -> Result<Option<RateState>, Refusal> {
        let Some(tpm) = self.row.tpm.and_then(|t| u32::try_from(t).ok()) else {
            return Ok(None);
        };
        let mut tokens = lock(&self.tokens);
        while tokens
            .front()
            .is_some_and(|&(t, _)| t <= now_ms - MINUTE_MS)
        {
            tokens.pop_front();
        }
        let used: u64 = tokens.iter().map(|&(_, n)| n).sum();
        let reset_ms = tokens.front().map_or(0, |&(t, _)| t + MINUTE_MS - now_ms);
        if used >= u64::from(tpm) {
            return Err(Refusal::TokenLimited {
                tpm,
                retry_after_ms: reset_ms.max(1),
            });
        }
        Ok(Some(RateState {
            limit: tpm,
            remaining: tpm - used as u32,
            reset_ms,
        }))
    }

    /// An answer's tokens, for `tpm`.
    pub fn count_tokens(&self, now_ms: i64, tokens: u64) {
        if self.row.tpm.is_some() && tokens > 0 {
            lock(&self.tokens).push_back((now_ms, tokens));
        }
    }

    /// The key as the admin API shows it: never the secret.
    pub fn describe(&self) -> Value {
        let row = &self.row;
        let spent = self.spent();
        json!({
            "id": row.id,
            "name": row.name,
            "budget_usd": row.budget_usd,
            "budget_period": self.period.name(),
            "spent_usd": spent,
            "remaining_usd": row.budget_usd.map(|b| (b - spent).max(0.0)),
            "rpm": row.rpm,
            "tpm": row.tpm,
            "models": self.models,
            "expires_ms": row.expires_ms,
            "metadata": row.metadata.as_deref().and_then(|m| serde_json::from_str::<Value>(m).ok()),
            "created_ms": row.created_ms,
            "revoked_ms": row.revoked_ms,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SHA-256 of a secret, as stored.
pub fn hash_hex(secret: &str) -> String {
    digest_hex(&Sha256::digest(secret.as_bytes()).into())
}

/// A SHA-256 digest as stored (lower-case hex).
pub fn digest_hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new key's id and secret: `vk_` + 12 hex, `sk-triage-` + 40 hex.
pub fn new_secret() -> (String, String) {
    let id: u64 = rand::random();
    let secret: u128 = rand::random();
    let more: u32 = rand::random();
    (
        format!("vk_{:012x}", id & 0xffff_ffff_ffff),
        format!("sk-triage-{secret:032x}{more:08x}"),
    )
}

/// Every virtual key, by the SHA-256 of its secret and by id.
#[derive(Default)]
pub struct KeyRing {
    keys: RwLock<HashMap<String, Arc<Key>>>,
    ids: RwLock<HashMap<String, String>>,
}

impl KeyRing {
    /// Replaces the keys with `rows` and their spend `(key id, day, US$)`; a key keeps its
    /// rate window across refreshes.
    pub fn load(&self, rows: Vec<KeyRow>, spend: &[(String, i64, f64)], now_ms: i64) {
        let old = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut keys = HashMap::new();
        let mut ids = HashMap::new();
        for row in rows {
            let period = Period::parse(&row.budget_period);
            let since = period.start_day(now_ms);
            let spent: f64 = spend
                .iter()
                .filter(|(id, day, _)| *id == row.id && *day >= since)
                .map(|(_, _, cost)| cost)
                .sum();
            let previous = old.get(&row.hash);
            let window = previous
                .map(|k| lock(&k.window).clone())
                .unwrap_or_default();
            let tokens = previous
                .map(|k| lock(&k.tokens).clone())
                .unwrap_or_default();
            ids.insert(row.id.clone(), row.hash.clone());
            let key = Key::new(row, spent, window);
            *lock(&key.tokens) = tokens;
            keys.insert(key.row.hash.clone(), Arc::new(key));
        }
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        *self.ids.write().unwrap_or_else(|e| e.into_inner()) = ids;
    }

    pub fn is_empty(&self) -> bool {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The key whose secret hashes to `hash`.
    pub fn by_hash(&self, hash: &str) -> Option<Arc<Key>> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(hash)
            .cloned()
    }

    pub fn by_id(&self, id: &str) -> Option<Arc<Key>> {
        let hash = self
            .ids
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()?;
        self.by_hash(&hash)
    }

    /// Every key, oldest first.
    pub fn all(&self) -> Vec<Arc<Key>> {
        let mut keys: Vec<Arc<Key>> = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        keys.sort_by(|a, b| (a.row.created_ms, &a.row.id).cmp(&(b.row.created_ms, &b.row.id)));
        keys
    }

    /// Adds a finished request's cost to its key, until the next refresh reads it back from
    /// the database, and its tokens to the key's minute.
    pub fn charge(&self, key_id: &str, cost: f64, tokens: u64, now_ms: i64) {
        let Some(key) = self.by_id(key_id) else {
            return;
        };
        if cost > 0.0 {
            *lock(&key.spent) += cost;
        }
        key.count_tokens(now_ms, tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rpm: Option<i64>, budget: Option<f64>, models: Option<&str>) -> Key {
        let row = KeyRow {
            id: "vk_1".into(),
            hash: hash_hex("s"),
            budget_usd: budget,
            budget_period: "month".into(),
            rpm,
            models: models.map(String::from),
            ..KeyRow::default()
        };
        Key::new(row, 0.0, VecDeque::new())
    }

    #[test]
    fn months_start_on_their_first_day() {
        // 2026-12-05 is day 20,792; 2026-12-01 is 20,788; 2024-02-29 is 19,782.
        assert_eq!(month_start(20_792), 20_788);
        assert_eq!(month_start(20_788), 20_788);
        assert_eq!(month_start(19_782), 19_754);
        assert_eq!(Period::Day.start_day(20_792 * DAY_MS + 5), 20_792);
    }

    #[test]
    fn rpm_counts_a_sliding_minute() {
        let k = key(Some(2), None, None);
        assert_eq!(k.take_request(0).unwrap().unwrap().remaining, 1);
        assert_eq!(k.take_request(10_000).unwrap().unwrap().remaining, 0);
        assert_eq!(
            k.take_request(20_000),
            Err(Refusal::RateLimited {
                rpm: 2,
                retry_after_ms: 40_000
            })
        );
        // The first request leaves the window at 60 s.
        assert!(k.take_request(60_001).is_ok());
    }

    #[test]
    fn budgets_and_allow_lists() {
        let k = key(None, Some(1.0), Some(r#"["auto", "openai/*"]"#));
        assert!(k.allows("auto") && k.allows("openai/gpt-4.1") && !k.allows("anthropic/x"));
        assert!(
            !k.allows("auto:cheap"),
            "profiles are listed one by one or as auto:*"
        );
        assert!(k.check_budget().is_ok());
        let ring = KeyRing::default();
        ring.load(
            vec![k.row.clone()],
            &[("vk_1".into(), 20_792, 0.6)],
            20_792 * DAY_MS,
        );
        ring.charge("vk_1", 0.5, 10, 20_792 * DAY_MS);
        let loaded = ring.by_id("vk_1").unwrap();
        assert!(matches!(
            loaded.check_budget(),
            Err(Refusal::OverBudget { .. })
        ));
        // Spend from before this month does not count.
        ring.load(
            vec![k.row.clone()],
            &[("vk_1".into(), 20_700, 5.0)],
            20_792 * DAY_MS,
        );
        assert!(ring.by_id("vk_1").unwrap().check_budget().is_ok());
    }
}
