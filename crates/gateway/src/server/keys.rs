//! Virtual keys over HTTP: `/admin/keys` to create, list, change and revoke them (admin key
//! required), the refresh that keeps every instance's [`KeyRing`] in step with the database,
//! and the gate a key's request passes: its allow-list, its budget, its requests per minute.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{ApiError, AppState, StateError};
use crate::keys::{InvalidKey, Key, KeyRing, NewKey, Period, RateState, Refusal, check, expiry};
use crate::outcomes::store::{KeyRow, StoreError};
use crate::outcomes::{Target, now_ms};

/// Loads the keys once (start-up waits for it) and refreshes them every `every` in the
/// background, off the async workers (PostgreSQL's client blocks).
pub(super) fn start(target: Target, every: Duration) -> Result<Arc<KeyRing>, StateError> {
    let ring = Arc::new(KeyRing::default());
    let (first_target, first_ring) = (target.clone(), ring.clone());
    std::thread::spawn(move || load(&first_target, &first_ring))
        .join()
        .map_err(|_| StateError::Keys("the key loader panicked".into()))?
        .map_err(|e| StateError::Keys(e.to_string()))?;
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let weak = Arc::downgrade(&ring);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                // The server is gone: stop.
                let Some(ring) = weak.upgrade() else { break };
                let target = target.clone();
                let loaded = tokio::task::spawn_blocking(move || load(&target, &ring)).await;
                if let Ok(Err(error)) = loaded {
                    tracing::warn!("virtual keys: refresh failed, keeping the last ones: {error}");
                }
            }
        });
    }
    Ok(ring)
}

/// Reads every key and this period's spend into the ring. Blocking.
fn load(target: &Target, ring: &KeyRing) -> Result<(), StoreError> {
    let mut store = target.open_read()?;
    let rows = store.keys()?;
    let now = now_ms();
    // The earliest day any key's period needs.
    let since = rows
        .iter()
        .map(|r| Period::parse(&r.budget_period).start_day(now))
        .min()
        .unwrap_or(i64::MAX);
    let spend = if rows.is_empty() {
        Vec::new()
    } else {
        store.key_spend(since)?
    };
    ring.load(rows, &spend, now);
    Ok(())
}

/// A virtual key's request: refused when it asks for a model outside its allow-list, when
/// its budget is spent or when it is over its requests per minute. Counts the request.
pub(super) fn admit(key: &Key, requested: &[String]) -> Result<Limits, ApiError> {
    if let Some(model) = requested.iter().find(|m| !key.allows(m)) {
        return Err(ApiError::model_not_allowed(model));
    }
    if let Err(Refusal::OverBudget {
        spent,
        budget,
        period,
    }) = key.check_budget()
    {
        return Err(ApiError::budget_exceeded(spent, budget, period.name()));
    }
    let now = now_ms();
    let tokens = match key.check_tokens(now) {
        Ok(tokens) => tokens,
        Err(Refusal::TokenLimited {
            tpm,
            retry_after_ms,
        }) => {
            return Err(ApiError::key_token_limited(
                tpm,
                Duration::from_millis(retry_after_ms.max(0) as u64),
            ));
        }
        Err(_) => None,
    };
    let requests = match key.take_request(now) {
        Ok(rate) => rate,
        Err(Refusal::RateLimited {
            rpm,
            retry_after_ms,
        }) => {
            return Err(ApiError::key_rate_limited(
                rpm,
                Duration::from_millis(retry_after_ms.max(0) as u64),
            ));
        }
        Err(_) => None,
    };
    Ok(Limits { requests, tokens })
}

/// A limited key's windows after admitting a request, for its headers.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Limits {
    requests: Option<RateState>,
    tokens: Option<RateState>,
}

/// OpenAI's `x-ratelimit-*-requests` and `-tokens` headers, on every response to a limited
/// key.
pub(super) fn rate_headers(response: &mut Response, limits: &Limits) {
    let windows = [
        (
            limits.requests,
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
        ),
        (
            limits.tokens,
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
        ),
    ];
    for (rate, [limit, remaining, reset]) in windows {
        let Some(rate) = rate else { continue };
        super::set_header(response, limit, &rate.limit.to_string());
        super::set_header(response, remaining, &rate.remaining.to_string());
        super::set_header(response, reset, &format!("{}ms", rate.reset_ms.max(0)));
    }
}

/// The ring, or 503 when there is no log to keep keys in.
fn ring(state: &AppState) -> Result<&Arc<KeyRing>, ApiError> {
    state.keys.as_ref().ok_or_else(ApiError::log_disabled)
}

/// 403/401 unless the caller presents an admin key.
fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.admin_keys.is_empty() {
        return Err(ApiError::admin_disabled());
    }
    if state.admin_key(headers).is_none() {
        return Err(ApiError::unauthorized("This endpoint needs an admin key."));
    }
    Ok(())
}

/// Runs a store operation off the async workers, then reloads the ring so this instance sees
/// the change at once.
async fn write<T: Send + 'static>(
    state: &AppState,
    change: impl FnOnce(&mut crate::outcomes::store::Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let log = state.outcomes.as_ref().ok_or_else(ApiError::log_disabled)?;
    let (target, ring) = (log.target.clone(), ring(state)?.clone());
    tokio::task::spawn_blocking(move || {
        let mut store = target.open()?;
        let out = change(&mut store)?;
        drop(store);
        load(&target, &ring)?;
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::internal(format!("key task failed: {e}")))?
    .map_err(|e: StoreError| ApiError::internal(format!("cannot write the key store: {e}")))
}

/// Re-reads the keys (spend included) before an admin read.
async fn refreshed(state: &AppState) -> Result<Arc<KeyRing>, ApiError> {
    let log = state.outcomes.as_ref().ok_or_else(ApiError::log_disabled)?;
    let (target, ring) = (log.target.clone(), ring(state)?.clone());
    let reloaded = ring.clone();
    tokio::task::spawn_blocking(move || load(&target, &reloaded))
        .await
        .map_err(|e| ApiError::internal(format!("key task failed: {e}")))?
        .map_err(|e| ApiError::internal(format!("cannot read the key store: {e}")))?;
    Ok(ring)
}

fn invalid(message: &str, param: &str) -> ApiError {
    ApiError::invalid_request(message, Some(param))
}

fn rejected(error: InvalidKey) -> ApiError {
    invalid(&error.message, error.param)
}

/// `POST /admin/keys`: 201 with the key's id and its secret, shown this once.
pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match create_key(&state, &headers, &body).await {
        Ok(created) => (StatusCode::CREATED, Json(created)).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn create_key(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    require_admin(state, headers)?;
    let new: NewKey =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid_json(&e.to_string()))?;
    let (row, secret) = new.into_row(now_ms()).map_err(rejected)?;
    let id = row.id.clone();
    let stored = row.clone();
    write(state, move |store| store.insert_key(&stored)).await?;
    let key = ring(state)?
        .by_id(&id)
        .ok_or_else(|| ApiError::internal("the new key did not load"))?;
    let mut shown = key.describe();
    shown["key"] = json!(secret);
    Ok(shown)
}

/// `GET /admin/keys`: every key with its spend this period.
pub(super) async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let listed = async {
        require_admin(&state, &headers)?;
        let data = described(&state).await?;
        Ok::<_, ApiError>(json!({"object": "list", "data": data}))
    };
    match listed.await {
        Ok(list) => Json(list).into_response(),
        Err(error) => error.into_response(),
    }
}

/// Every key as `GET /admin/keys` shows it, spend read afresh.
pub(super) async fn described(state: &AppState) -> Result<Vec<Value>, ApiError> {
    let ring = refreshed(state).await?;
    Ok(ring.all().iter().map(|k| k.describe()).collect())
}

/// `GET /admin/keys/{id}`.
pub(super) async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let shown = async {
        require_admin(&state, &headers)?;
        let ring = refreshed(&state).await?;
        let key = ring
            .by_id(&id)
            .ok_or_else(|| ApiError::key_not_found(&id))?;
        Ok::<_, ApiError>(key.describe())
    };
    match shown.await {
        Ok(key) => Json(key).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `PATCH /admin/keys/{id}`: the fields given replace the key's; `null` clears one.
pub(super) async fn update(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let updated = async {
        require_admin(&state, &headers)?;
        let patch: Map<String, Value> =
            serde_json::from_slice(&body).map_err(|e| ApiError::invalid_json(&e.to_string()))?;
        let ring = refreshed(&state).await?;
        let key = ring
            .by_id(&id)
            .ok_or_else(|| ApiError::key_not_found(&id))?;
        let mut row = key.row.clone();
        let mut models = key.models.clone();
        apply_patch(&mut row, &mut models, &patch)?;
        check(&row, models.as_deref()).map_err(rejected)?;
        let stored = row.clone();
        write(&state, move |store| store.update_key(&stored)).await?;
        let key = ring
            .by_id(&id)
            .ok_or_else(|| ApiError::key_not_found(&id))?;
        Ok::<_, ApiError>(key.describe())
    };
    match updated.await {
        Ok(key) => Json(key).into_response(),
        Err(error) => error.into_response(),
    }
}

fn apply_patch(
    row: &mut KeyRow,
    models: &mut Option<Vec<String>>,
    patch: &Map<String, Value>,
) -> Result<(), ApiError> {
    for (field, value) in patch {
        let bad = || invalid(&format!("`{field}` has the wrong type."), field);
        match field.as_str() {
            "name" => row.name = value.as_str().ok_or_else(bad)?.to_string(),
            "budget_usd" => {
                row.budget_usd = if value.is_null() {
                    None
                } else {
                    Some(value.as_f64().ok_or_else(bad)?)
                }
            }
            "budget_period" => {
                let period: Period = serde_json::from_value(value.clone()).map_err(|_| bad())?;
                row.budget_period = period.name().into();
            }
            "rpm" => {
                row.rpm = if value.is_null() {
                    None
                } else {
                    Some(value.as_i64().ok_or_else(bad)?)
                }
            }
            "tpm" => {
                row.tpm = if value.is_null() {
                    None
                } else {
                    Some(value.as_i64().ok_or_else(bad)?)
                }
            }
            "models" => {
                *models = if value.is_null() {
                    None
                } else {
                    Some(serde_json::from_value(value.clone()).map_err(|_| bad())?)
                };
                row.models = models.as_ref().map(|m| json!(m).to_string());
            }
            "expires_at" => {
                row.expires_ms = match value.as_str() {
                    None if value.is_null() => None,
                    None => return Err(bad()),
                    Some(text) => Some(expiry(text).map_err(rejected)?),
                }
            }
            "metadata" => row.metadata = (!value.is_null()).then(|| value.to_string()),
            _ => {
                return Err(invalid(
                    &format!(
                        "Unknown field `{field}`: use name, budget_usd, budget_period, rpm, \
                         tpm, models, expires_at or metadata."
                    ),
                    field,
                ));
            }
        }
    }
    Ok(())
}

/// `DELETE /admin/keys/{id}`: revoked from the next request on (on other instances within
/// one refresh).
pub(super) async fn revoke(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let revoked = async {
        require_admin(&state, &headers)?;
        let ring = refreshed(&state).await?;
        let key = ring
            .by_id(&id)
            .ok_or_else(|| ApiError::key_not_found(&id))?;
        let mut row = key.row.clone();
        row.revoked_ms.get_or_insert_with(now_ms);
        write(&state, move |store| store.update_key(&row)).await?;
        Ok::<_, ApiError>(json!({"id": id, "object": "key", "revoked": true}))
    };
    match revoked.await {
        Ok(done) => Json(done).into_response(),
        Err(error) => error.into_response(),
    }
}
