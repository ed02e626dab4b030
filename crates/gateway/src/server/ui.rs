//! The dashboard: the page at `GET /ui` (HTML, script and style compiled into the binary) and
//! the JSON endpoints under `/v1/dashboard/` that it draws from, which scripts may call too.
//!
//! Reading needs an admin or a viewer key (`[auth] admin_keys`, `viewer_keys`); with no keys
//! configured at all, as for the other endpoints, anyone may. Writing (feedback) goes through
//! `POST /v1/feedback`, which takes an admin key.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, presented_key};
use crate::outcomes::dashboard::{
    DAY_MS, HOUR_MS, ListedRequest, MAX_BUCKETS, Overview, RequestView, Routing,
};
use crate::outcomes::store::Store;
use crate::outcomes::{StoreError, now_ms, parse_date};

const INDEX_HTML: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const STYLE_CSS: &str = include_str!("../../ui/style.css");
/// The page loads nothing from elsewhere and runs no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";
/// Requests listed per page at most.
const MAX_LIST: i64 = 500;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/ui",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/v1/dashboard/session", get(session))
        .route("/v1/dashboard/overview", get(overview))
        .route("/v1/dashboard/routing", get(routing))
        .route("/v1/dashboard/requests", get(requests))
        .route("/v1/dashboard/requests/{id}", get(request))
        .route("/v1/dashboard/models", get(models))
        .route("/v1/dashboard/keys", get(keys))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// What a dashboard reader may do.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Admin,
    Viewer,
}

impl AppState {
    /// The dashboard reader's role, or 401.
    fn dashboard_role(&self, headers: &HeaderMap) -> Result<Role, ApiError> {
        let open = self.router_keys.is_empty()
            && self.admin_keys.is_empty()
            && self.viewer_keys.is_empty()
            && self.keys.as_deref().is_none_or(|ring| ring.is_empty());
        if open {
            return Ok(Role::Admin);
        }
        let digest = presented_key(headers);
        match digest {
            Some(d) if self.admin_keys.contains_key(&d) => Ok(Role::Admin),
            Some(d) if self.viewer_keys.contains_key(&d) => Ok(Role::Viewer),
            _ => Err(ApiError::unauthorized(
                "The dashboard needs an admin or viewer key ([auth] admin_keys, viewer_keys).",
            )),
        }
    }
}

/// Runs `read` on the outcome log off the async workers, after what is queued is committed.
async fn read_log<T: Send + 'static>(
    state: &AppState,
    read: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let log = state.outcomes.as_ref().ok_or_else(ApiError::log_disabled)?;
    log.flush().await;
    let target = log.target.clone();
    tokio::task::spawn_blocking(move || read(&mut target.open_read()?))
        .await
        .map_err(|e| ApiError::internal(format!("dashboard task failed: {e}")))?
        .map_err(|e| ApiError::internal(format!("cannot read the outcome log: {e}")))
}

fn reply<T: serde::Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `GET /v1/dashboard/session`: who the key is to the dashboard, and what the server logs.
async fn session(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    reply(state.dashboard_role(&headers).map(|role| {
        json!({
            "role": if role == Role::Admin { "admin" } else { "viewer" },
            "can_give_feedback": role == Role::Admin,
            "log": state.outcomes.is_some(),
            "store_text": state.stores_text(),
            "classifier": state.adaptive.load().is_some(),
        })
    }))
}

#[derive(Debug, Deserialize)]
struct WindowQuery {
    since: Option<String>,
    bucket: Option<String>,
}

/// `since`: a date (`2026-11-25`) or a span back from now (`24h`, `7d`); `default_ms` back
/// when absent.
fn since_ms(since: Option<&str>, now: i64, default_ms: i64) -> Result<i64, ApiError> {
    let Some(text) = since else {
        return Ok(now - default_ms);
    };
    let span = |unit: char, ms: i64| {
        text.strip_suffix(unit)
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n > 0)
            .map(|n| now - n.saturating_mul(ms))
    };
    span('h', HOUR_MS)
        .or_else(|| span('d', DAY_MS))
        .or_else(|| parse_date(text))
        .ok_or_else(|| {
            ApiError::invalid_request(
                "since: a date like 2026-11-25 or a span like 24h or 7d",
                Some("since"),
            )
        })
}

/// `GET /v1/dashboard/overview?since=24h&bucket=hour`: totals, a time series, by model and key.
async fn overview(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<WindowQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        state.dashboard_role(&headers)?;
        let Query(query) = query.map_err(|e| ApiError::bad_query(&e))?;
        let (bucket_ms, default_ms) = match query.bucket.as_deref().unwrap_or("hour") {
            "hour" => (HOUR_MS, DAY_MS),
            "day" => (DAY_MS, 30 * DAY_MS),
            _ => {
                return Err(ApiError::invalid_request(
                    "bucket: hour or day",
                    Some("bucket"),
                ));
            }
        };
        let now = now_ms();
        let since = since_ms(query.since.as_deref(), now, default_ms)?;
        if (now - since) / bucket_ms >= MAX_BUCKETS {
            return Err(ApiError::invalid_request(
                format!("since: at most {MAX_BUCKETS} buckets; use bucket=day or a later since"),
                Some("since"),
            ));
        }
        let catalog = state.catalog.clone();
        read_log(&state, move |store| {
            Overview::compute(store, &catalog, since, now, bucket_ms)
        })
        .await
    };
    reply(result.await)
}

/// `GET /v1/dashboard/routing?since=7d`: what `auto` chose, the difficulty map, the curve.
async fn routing(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<WindowQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        state.dashboard_role(&headers)?;
        let Query(query) = query.map_err(|e| ApiError::bad_query(&e))?;
        let since = since_ms(query.since.as_deref(), now_ms(), 7 * DAY_MS)?;
        let targets = state.routing.targets();
        read_log(&state, move |store| Routing::compute(store, since, targets)).await
    };
    reply(result.await)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    q: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
}

/// `GET /v1/dashboard/requests?q=gpt&limit=50&before=<ts_ms>`: the newest requests first.
async fn requests(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        state.dashboard_role(&headers)?;
        let Query(query) = query.map_err(|e| ApiError::bad_query(&e))?;
        let limit = query.limit.unwrap_or(50);
        if !(1..=MAX_LIST).contains(&limit) {
            return Err(ApiError::invalid_request(
                format!("limit: 1 to {MAX_LIST}"),
                Some("limit"),
            ));
        }
        let search = query.q.unwrap_or_default();
        let before = query.before.unwrap_or(i64::MAX);
        let lines = read_log(&state, move |store| store.recent(before, &search, limit)).await?;
        let data: Vec<ListedRequest> = lines.into_iter().map(ListedRequest::of).collect();
        Ok(json!({"object": "list", "data": data}))
    };
    reply(result.await)
}

/// `GET /v1/dashboard/requests/{id}`: one request in full.
async fn request(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.dashboard_role(&headers)?;
        let wanted = id.clone();
        let found = read_log(&state, move |store| store.request(&wanted)).await?;
        let found = found.ok_or_else(|| ApiError::request_not_found(&id))?;
        Ok(RequestView::of(found))
    };
    reply(result.await)
}

/// `GET /v1/dashboard/models`: the catalog as `auto` sees it (`/v1/models`' entries).
async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    reply(
        state
            .dashboard_role(&headers)
            .map(|_| json!({"object": "list", "data": super::model_entries(&state)})),
    )
}

/// `GET /v1/dashboard/keys`: the virtual keys with their spend against budget.
async fn keys(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let result = async {
        state.dashboard_role(&headers)?;
        let data: Vec<Value> = if state.keys.is_some() {
            super::keys::described(&state).await?
        } else {
            Vec::new()
        };
        Ok(json!({"object": "list", "data": data}))
    };
    reply(result.await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_dates_and_spans() {
        let now = 10 * DAY_MS;
        assert_eq!(since_ms(None, now, DAY_MS).unwrap(), 9 * DAY_MS);
        assert_eq!(since_ms(Some("24h"), now, 0).unwrap(), 9 * DAY_MS);
        assert_eq!(since_ms(Some("3d"), now, 0).unwrap(), 7 * DAY_MS);
        assert_eq!(since_ms(Some("1970-01-02"), now, 0).unwrap(), DAY_MS);
        for bad in ["0h", "-2d", "yesterday", "h"] {
            assert_eq!(since_ms(Some(bad), now, 0).unwrap_err().status(), 400);
        }
    }
}
