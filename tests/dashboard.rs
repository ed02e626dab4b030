//! The dashboard's JSON endpoints (`/v1/dashboard/*`) against a real outcome log: the numbers
//! each page draws, checked against values computed by hand from known rows; the request list's
//! search and paging on SQLite and PostgreSQL alike; who may read; bad input. The page itself
//! is tested in Chromium by tests/conformance/test_dashboard.py.

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};
use triage_gateway::outcomes::store::{Label, Write};
use triage_gateway::outcomes::{AutoColumns, Outcome, Store, now_ms};

const ADMIN_KEY: &str = "sk-admin-test";
const VIEWER_KEY: &str = "sk-viewer-test";
const HOUR: i64 = 3_600_000;

fn config(dir: &Path) -> String {
    let auth = format!(
        "metrics_keys = [\"{METRICS_KEY}\"]\nadmin_keys = [\"{ADMIN_KEY}\"]\n\
         viewer_keys = [\"{VIEWER_KEY}\"]"
    );
    format!(
        "{}\n[log]\npath = \"{}\"\n",
        CONFIG.replace(&format!("metrics_keys = [\"{METRICS_KEY}\"]"), &auth),
        dir.join("triage.db").display()
    )
}

async fn get(h: &Harness, path: &str, key: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", h.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Equal to within float noise (predicted qualities are logged as f32).
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// The start of the hour two hours before now: rows go in it and the next one.
fn base() -> i64 {
    (now_ms() / HOUR - 2) * HOUR
}

fn explicit(id: &str, ts_ms: i64, model: &str, status: u16, cost: f64, latency: f64) -> Outcome {
    Outcome {
        id: id.into(),
        ts_ms,
        endpoint: "chat",
        key_id: "key-a".into(),
        requested: model.into(),
        model: Some(model.into()),
        cost_usd: cost,
        latency_ms: latency,
        ttft_ms: (status < 400).then_some(latency / 5.0),
        status,
        prompt: Some(json!({"messages": [{"role": "user", "content": id}]}).to_string()),
        answer: (status < 400).then(|| format!("answer to {id}")),
        ..Outcome::default()
    }
}

/// An adaptive request whose candidates are local/small (quality `q.0`, US$0.001) and
/// local/big (`q.1`, US$0.01).
fn adaptive(
    id: &str,
    ts_ms: i64,
    model: &str,
    difficulty: f64,
    skill: &str,
    q: (f64, f64),
) -> Outcome {
    let candidates = json!([
        {"model": "local/small", "quality": q.0, "cost_usd": 0.001},
        {"model": "local/big", "quality": q.1, "cost_usd": 0.01},
    ]);
    Outcome {
        auto: Some(AutoColumns {
            profile: "auto".into(),
            difficulty,
            tool_need: 0.05,
            skills: json!({skill: 0.8, "writing": 0.2}).to_string(),
            candidates: candidates.to_string(),
        }),
        requested: "auto".into(),
        prompt_tokens: 1000,
        completion_tokens: 100,
        ..explicit(
            id,
            ts_ms,
            model,
            200,
            if model == "local/big" { 0.02 } else { 0.001 },
            50.0,
        )
    }
}

/// Five requests over two hours: two explicit (one failed) in the first, three adaptive in
/// the second. a3's prompt holds `50%_off`, a2's a text that only a `LIKE` wildcard matches.
fn rows(base: i64) -> Vec<Outcome> {
    let minute = 60_000;
    let mut a2 = adaptive(
        "a2",
        base + HOUR + 6 * minute,
        "local/big",
        0.6,
        "math",
        (0.5, 0.8),
    );
    a2.prompt =
        Some(json!({"messages": [{"role": "user", "content": "50 percent xoff"}]}).to_string());
    let mut a3 = adaptive(
        "a3",
        base + HOUR + 7 * minute,
        "local/small",
        0.7,
        "math",
        (0.6, 0.9),
    );
    a3.prompt =
        Some(json!({"messages": [{"role": "user", "content": "Is 50%_off a deal?"}]}).to_string());
    vec![
        explicit("e1", base + 10 * minute, "local/big", 200, 0.01, 100.0),
        explicit("e2", base + 20 * minute, "local/solo", 502, 0.0, 300.0),
        adaptive(
            "a1",
            base + HOUR + 5 * minute,
            "local/small",
            -1.1,
            "chat",
            (0.6, 0.9),
        ),
        a2,
        a3,
    ]
}

/// The request list's search, order and paging, on either backend.
fn check_listing(store: &mut Store, base: i64) {
    let ids = |lines: Vec<triage_gateway::outcomes::store::RequestLine>| -> Vec<String> {
        lines.into_iter().map(|l| l.id).collect()
    };
    assert_eq!(
        ids(store.recent(i64::MAX, "", 50).unwrap()),
        ["a3", "a2", "a1", "e2", "e1"],
        "newest first"
    );
    // `%` and `_` are literal: a2's "50 percent xoff" would match them as wildcards.
    assert_eq!(ids(store.recent(i64::MAX, "50%_off", 50).unwrap()), ["a3"]);
    // Any case, over models and the requested name.
    assert_eq!(
        ids(store.recent(i64::MAX, "LOCAL/BIG", 50).unwrap()),
        ["a2", "e1"]
    );
    assert_eq!(ids(store.recent(i64::MAX, "", 2).unwrap()), ["a3", "a2"]);
    let before_a1 = base + HOUR + 5 * 60_000;
    assert_eq!(ids(store.recent(before_a1, "", 50).unwrap()), ["e2", "e1"]);
    let found = store.request("a1").unwrap().unwrap();
    let request = found.request;
    assert_eq!(
        (request.route.as_str(), request.difficulty),
        ("auto", Some(-1.1))
    );
    assert_eq!(request.tokens, [1000, 100, 0, 0]);
    assert!(found.feedback.is_empty() && found.labels.is_empty() && found.preferences.is_empty());
    assert!(store.request("nope").unwrap().is_none());
}

#[tokio::test]
async fn the_dashboard_endpoints_give_hand_computed_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Harness::start_with(&config(tmp.path())).await;
    let base = base();
    for row in rows(base) {
        h.state.outcomes.as_ref().unwrap().submit(row);
    }
    h.state.outcomes.as_ref().unwrap().flush().await;
    check_listing(
        &mut Store::open_read(&tmp.path().join("triage.db")).unwrap(),
        base,
    );

    // Overview, in hour buckets: the first hour holds e1 and e2, the second a1–a3.
    let (status, o) = get(
        &h,
        "/v1/dashboard/overview?since=3h&bucket=hour",
        VIEWER_KEY,
    )
    .await;
    assert_eq!(status, 200, "{o}");
    assert_eq!(
        (o["requests"].as_u64(), o["errors"].as_u64()),
        (Some(5), Some(1))
    );
    assert!(close(
        o["cost_usd"].as_f64().unwrap(),
        0.01 + 0.001 + 0.02 + 0.001
    ));
    let bucket = |start: i64| {
        o["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["start_ms"] == start)
            .unwrap_or_else(|| panic!("no bucket at {start}: {o}"))
            .clone()
    };
    let first = bucket(base);
    assert_eq!(
        (first["requests"].as_u64(), first["errors"].as_u64()),
        (Some(2), Some(1))
    );
    // Nearest rank: p50 of [100, 300] is 100, p95 is 300; TTFT only from the answered one.
    assert_eq!(first["latency"]["p50_ms"], 100.0);
    assert_eq!(first["latency"]["p95_ms"], 300.0);
    assert_eq!(first["latency"]["ttft_p50_ms"], 20.0);
    let second = bucket(base + HOUR);
    assert_eq!(second["requests"], 3);
    // Each adaptive request against local/big (the strongest candidate) at 2.5/10 per Mtok
    // for 1000 + 100 tokens: US$0.0035; actual 0.001 + 0.02 + 0.001.
    assert!(close(
        second["baseline_cost_usd"].as_f64().unwrap(),
        3.0 * 0.0035
    ));
    assert!(close(
        second["saved_usd"].as_f64().unwrap(),
        3.0 * 0.0035 - 0.022
    ));
    assert!(close(
        second["quality_kept"].as_f64().unwrap(),
        (0.6 + 0.8 + 0.6) / (0.9 + 0.8 + 0.9)
    ));
    // The window's savings are the report's.
    let usage: Value = h
        .get("/v1/usage?since=1970-01-01")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(o["savings"], usage["savings"]);
    let by_model: Vec<(&str, u64)> = o["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["name"].as_str().unwrap(), g["requests"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        by_model,
        [("local/big", 2), ("local/small", 2), ("local/solo", 1)]
    );

    // Routing: skills, the difficulty map, the curve.
    let (_, r) = get(&h, "/v1/dashboard/routing?since=1d", ADMIN_KEY).await;
    assert_eq!(r["requests"], 3);
    assert_eq!(r["by_profile"], json!({"auto": 3}));
    assert_eq!(r["by_skill"][0]["name"], "math");
    assert_eq!(
        r["by_skill"][0]["models"],
        json!({"local/big": 1, "local/small": 1})
    );
    assert_eq!(r["by_skill"][1]["name"], "chat");
    // Difficulties −1.1, 0.6, 0.7: bands of 0.25 from −1.25 to 0.75.
    let bands = r["difficulty"].as_array().unwrap();
    assert_eq!(bands.len(), 8);
    assert_eq!(
        (bands[0]["from"].as_f64(), bands[0]["requests"].as_u64()),
        (Some(-1.25), Some(1))
    );
    assert_eq!(
        (bands[7]["from"].as_f64(), bands[7]["requests"].as_u64()),
        (Some(0.5), Some(2))
    );
    let at = |target: f64| {
        r["curve"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| close(p["target"].as_f64().unwrap(), target))
            .unwrap()
            .clone()
    };
    // At 0.6 of the best every request takes local/small; at 0.95 (auto) every one local/big.
    assert_eq!(at(0.6)["models"], json!({"local/small": 3}));
    assert!(close(at(0.6)["quality_kept"].as_f64().unwrap(), 1.7 / 2.6));
    assert!(close(at(0.6)["cost_share"].as_f64().unwrap(), 0.1));
    assert_eq!(at(0.95)["models"], json!({"local/big": 3}));
    assert_eq!(at(0.95)["profile"], "auto");
    assert_eq!(at(0.8)["profile"], "auto:cheap");

    // The request list and one request, with feedback and a judge's grade.
    let (_, list) = get(&h, "/v1/dashboard/requests?q=50%25_off", VIEWER_KEY).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["id"], "a3");
    assert_eq!(list["data"][0]["top_skill"], "math");
    let feedback = reqwest::Client::new()
        .post(format!("{}/v1/feedback", h.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"id": "a1", "thumbs": "down", "comment": "too terse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(feedback.status(), 200);
    let label = Label {
        request_id: "a1".into(),
        judge: "judge-x".into(),
        ts_ms: 1,
        rating: 4.0,
        score: 3.0 / 9.0,
        cost_usd: 0.0,
    };
    Store::open(&tmp.path().join("triage.db"))
        .unwrap()
        .insert_label(&label)
        .unwrap();
    let (_, a1) = get(&h, "/v1/dashboard/requests/a1", VIEWER_KEY).await;
    assert_eq!(a1["classifier"]["difficulty"], -1.1);
    assert_eq!(a1["classifier"]["skills"]["chat"], 0.8);
    assert_eq!(a1["candidates"].as_array().unwrap().len(), 2);
    assert_eq!(a1["prompt"]["messages"][0]["content"], "a1");
    assert_eq!(a1["answer"], "answer to a1");
    assert_eq!(a1["feedback"][0]["score"], 0.0);
    assert_eq!(a1["feedback"][0]["comment"], "too terse");
    assert_eq!(a1["labels"][0]["judge"], "judge-x");
    let (status, missing) = get(&h, "/v1/dashboard/requests/nope", VIEWER_KEY).await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (404, Some("request_not_found"))
    );
}

#[tokio::test]
async fn the_dashboard_needs_an_admin_or_viewer_key_and_checks_its_input() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Harness::start_with(&config(tmp.path())).await;
    for path in [
        "/v1/dashboard/session",
        "/v1/dashboard/overview",
        "/v1/dashboard/routing",
        "/v1/dashboard/requests",
        "/v1/dashboard/models",
        "/v1/dashboard/keys",
    ] {
        let (status, body) = get(&h, path, ROUTER_KEY).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("invalid_api_key")),
            "{path}"
        );
        assert_eq!(get(&h, path, VIEWER_KEY).await.0, 200, "{path}");
    }
    let (_, viewer) = get(&h, "/v1/dashboard/session", VIEWER_KEY).await;
    assert_eq!(
        (
            viewer["role"].as_str(),
            viewer["can_give_feedback"].as_bool()
        ),
        (Some("viewer"), Some(false))
    );
    let (_, admin) = get(&h, "/v1/dashboard/session", ADMIN_KEY).await;
    assert_eq!(admin["role"], "admin");
    // A viewer may not write feedback.
    let refused = reqwest::Client::new()
        .post(format!("{}/v1/feedback", h.url))
        .bearer_auth(VIEWER_KEY)
        .json(&json!({"id": "x", "thumbs": "up"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    for (path, param) in [
        ("/v1/dashboard/overview?bucket=week", "bucket"),
        ("/v1/dashboard/overview?since=soon", "since"),
        ("/v1/dashboard/overview?since=400d&bucket=hour", "since"),
        ("/v1/dashboard/requests?limit=0", "limit"),
        ("/v1/dashboard/requests?limit=501", "limit"),
    ] {
        let (status, body) = get(&h, path, ADMIN_KEY).await;
        assert_eq!(
            (status, body["error"]["param"].as_str()),
            (400, Some(param)),
            "{path}: {body}"
        );
    }
    let (status, _) = get(&h, "/v1/dashboard/requests?limit=ten", ADMIN_KEY).await;
    assert_eq!(status, 400);
    // The models page lists what /v1/models does.
    let (_, models) = get(&h, "/v1/dashboard/models", VIEWER_KEY).await;
    let listed: Value = h.get("/v1/models").await.json().await.unwrap();
    assert_eq!(models["data"], listed["data"]);

    // The page: compiled in, no inline script allowed, no caching of a stale build.
    let page = reqwest::get(format!("{}/ui", h.url)).await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = header(&page, "content-security-policy")
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert!(
        header(&page, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("/ui/app.js"));
    let script = reqwest::get(format!("{}/ui/app.js", h.url)).await.unwrap();
    assert!(
        header(&script, "content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(
        script
            .text()
            .await
            .unwrap()
            .contains("/v1/dashboard/overview")
    );
}

#[tokio::test]
async fn an_open_router_opens_its_dashboard_and_a_disabled_log_says_so() {
    let config = CONFIG.replace(
        "keys = [\"sk-triage-test\"]\nmetrics_keys = [\"sk-triage-metrics\"]",
        "",
    ) + "\n[log]\nenabled = false\n";
    let h = Harness::start_with(&config).await;
    let (status, session) = get(&h, "/v1/dashboard/session", "anything").await;
    assert_eq!(status, 200);
    assert_eq!(
        (session["role"].as_str(), session["log"].as_bool()),
        (Some("admin"), Some(false))
    );
    let (status, body) = get(&h, "/v1/dashboard/overview", "anything").await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (503, Some("server_error"))
    );
}

#[tokio::test]
async fn postgres_lists_and_searches_requests_like_sqlite() {
    let Some(url) = postgres_url() else { return };
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client.batch_execute(DROP_LOG_TABLES).unwrap();
        let mut store = Store::connect(&url).unwrap();
        let base = base();
        let rows = rows(base);
        let writes: Vec<Write> = rows.iter().map(Write::Outcome).collect();
        store.write(&writes).unwrap();
        check_listing(&mut store, base);
        client.batch_execute(DROP_LOG_TABLES).unwrap();
    })
    .await
    .unwrap();
}
