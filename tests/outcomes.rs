//! The outcome log end to end: requests through the router land in a real SQLite file with the
//! right fields; feedback, `/v1/usage` and the report read it back; a full queue drops and
//! counts; SIGTERM drains; kill -9 loses no acknowledged feedback; reload swaps the classifier.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rusqlite::Connection;
use serde_json::{Value, json};
use triage_gateway::outcomes::report::{Report, ReportOptions};
use triage_gateway::outcomes::store::Label;
use triage_gateway::outcomes::{AutoColumns, Outcome, Store};

const ADMIN_KEY: &str = "sk-admin-test";

/// The standard config with the log in `dir`, plus `extra` lines in `[log]`.
fn log_config(dir: &Path, extra: &str) -> String {
    format!(
        "{CONFIG}\n[log]\npath = \"{}\"\n{extra}\n",
        dir.join("triage.db").display()
    )
}

async fn flush(h: &Harness) {
    h.state.outcomes.as_ref().unwrap().flush().await;
}

fn db(dir: &Path) -> Connection {
    Connection::open(dir.join("triage.db")).unwrap()
}

/// One row of the log as JSON, by request id.
fn row(dir: &Path, id: &str) -> Option<Value> {
    let conn = db(dir);
    let mut statement = conn
        .prepare("SELECT * FROM outcomes WHERE id = ?1")
        .unwrap();
    let names: Vec<String> = statement.column_names().map(String::from).collect();
    let mut rows = statement.query([id]).unwrap();
    let row = rows.next().unwrap()?;
    let mut object = serde_json::Map::new();
    for (i, name) in names.iter().enumerate() {
        let value = match row.get_ref(i).unwrap() {
            rusqlite::types::ValueRef::Null => Value::Null,
            rusqlite::types::ValueRef::Integer(n) => json!(n),
            rusqlite::types::ValueRef::Real(x) => json!(x),
            rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
            rusqlite::types::ValueRef::Blob(_) => Value::Null,
        };
        object.insert(name.clone(), value);
    }
    Some(Value::Object(object))
}

fn request_id(response: &reqwest::Response) -> String {
    header(response, "x-triage-request-id").unwrap().to_string()
}

#[tokio::test]
async fn every_request_is_logged_with_its_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Harness::start_with(&log_config(tmp.path(), "")).await;

    let response = h.chat(&hello("local/small")).await;
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    let cost: f64 = header(&response, "x-triage-cost-usd")
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = response.json().await.unwrap();

    let messages = h
        .messages(&json!({"model": "local/big", "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi from anthropic"}]}))
        .await;
    assert_eq!(messages.status(), 200);
    let messages_id = request_id(&messages);

    let unknown = h.chat(&hello("nope/none")).await;
    assert_eq!(unknown.status(), 404);
    let unknown_id = request_id(&unknown);
    flush(&h).await;

    let r = row(tmp.path(), &id).expect("the chat request is logged");
    assert_eq!(r["endpoint"], "chat");
    assert!(r["key_id"].as_str().unwrap().starts_with("key-"));
    assert_eq!(r["requested"], "local/small");
    assert_eq!(r["route"], "explicit");
    assert_eq!(r["model"], "local/small");
    assert_eq!(r["status"], 200);
    assert_eq!(r["stream"], 0);
    assert_eq!(r["fallbacks"], "");
    assert_eq!(r["prompt_tokens"], body["usage"]["prompt_tokens"]);
    assert_eq!(r["completion_tokens"], body["usage"]["completion_tokens"]);
    assert!((r["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-9);
    assert!(r["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(r["profile"].is_null() && r["candidates"].is_null() && r["difficulty"].is_null());
    assert!(r["prompt"].as_str().unwrap().contains("hello there"));
    assert_eq!(r["answer"], body["choices"][0]["message"]["content"]);
    let now = triage_gateway::outcomes::now_ms();
    assert!((now - r["ts_ms"].as_i64().unwrap()).abs() < 60_000);

    let m = row(tmp.path(), &messages_id).expect("the messages request is logged");
    assert_eq!(m["endpoint"], "messages");
    assert_eq!(m["model"], "local/big");
    assert!(m["prompt"].as_str().unwrap().contains("hi from anthropic"));
    assert!(!m["answer"].as_str().unwrap().is_empty());

    let u = row(tmp.path(), &unknown_id).expect("failed requests are logged too");
    assert_eq!(u["status"], 404);
    assert!(u["model"].is_null());
    assert_eq!(u["cost_usd"], 0.0);
}

#[tokio::test]
async fn fallbacks_are_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Harness::start_with(&log_config(tmp.path(), "")).await;
    h.fail("small-model", vec![status(503), status(503)]);
    let response = h.chat(&hello("local/small")).await;
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    flush(&h).await;
    let r = row(tmp.path(), &id).unwrap();
    assert_eq!(r["model"], "local/big");
    assert_eq!(r["fallbacks"], "local/small (503)");
    assert_eq!(r["signals"], "upstream_error");
}

#[tokio::test]
async fn truncated_answers_are_flagged_whole_and_streamed() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Harness::start_with(&log_config(tmp.path(), "")).await;
    let fine = request_id(&h.chat(&hello("local/small")).await);
    let mut cut = hello("local/small");
    cut["mock"] = json!({"finish_reason": "length"});
    let whole = request_id(&h.chat(&cut).await);
    cut["stream"] = json!(true);
    let response = h.chat(&cut).await;
    let streamed = request_id(&response);
    response.text().await.unwrap();
    flush(&h).await;
    assert_eq!(row(tmp.path(), &fine).unwrap()["signals"], Value::Null);
    assert_eq!(row(tmp.path(), &whole).unwrap()["signals"], "truncated");
    let r = wait_for_row(&h, tmp.path(), &streamed).await;
    assert_eq!(r["signals"], "truncated", "{r}");
}

#[tokio::test]
async fn streamed_answers_are_captured_and_text_can_be_left_out() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Harness::start_with(&log_config(tmp.path(), "")).await;
    let mut body = hello("local/small");
    body["stream"] = json!(true);
    let response = h.chat(&body).await;
    let id = request_id(&response);
    let text = response.text().await.unwrap();
    let streamed: String = sse_data(&text)
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect();
    assert!(!streamed.is_empty());
    flush(&h).await;
    // The stream task records when the stream ends, which may trail the client's last byte.
    let r = wait_for_row(&h, tmp.path(), &id).await;
    assert_eq!(r["stream"], 1);
    assert_eq!(r["answer"], json!(streamed));
    assert!(r["ttft_ms"].as_f64().unwrap() >= 0.0);
    assert!(r["completion_tokens"].as_i64().unwrap() > 0);

    let quiet = tempfile::tempdir().unwrap();
    let h = Harness::start_with(&log_config(quiet.path(), "store_text = false")).await;
    let plain = h.chat(&hello("local/small")).await;
    let plain_id = request_id(&plain);
    let streamed = h.chat(&body).await;
    let streamed_id = request_id(&streamed);
    streamed.text().await.unwrap();
    for id in [plain_id, streamed_id] {
        let r = wait_for_row(&h, quiet.path(), &id).await;
        assert!(r["prompt"].is_null() && r["answer"].is_null(), "{r}");
        assert!(r["prompt_tokens"].as_i64().unwrap() > 0);
    }
}

async fn wait_for_row(h: &Harness, dir: &Path, id: &str) -> Value {
    for _ in 0..100 {
        flush(h).await;
        if let Some(r) = row(dir, id) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("request {id} was never logged");
}

#[tokio::test]
async fn old_rows_are_pruned_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let day = 24 * 3600 * 1000;
    let now = triage_gateway::outcomes::now_ms();
    {
        drop(Store::open(&tmp.path().join("triage.db")).unwrap());
        let conn = db(tmp.path());
        for (id, age) in [("req_old", 3 * day), ("req_recent", day / 2)] {
            conn.execute(
                "INSERT INTO outcomes (id, ts_ms, endpoint, key_id, requested, route, fallbacks,
                     prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, cost_usd,
                     latency_ms, status, stream) VALUES (?1, ?2, 'chat', 'k', 'm', 'explicit', '',
                     0, 0, 0, 0, 0, 1, 200, 0)",
                rusqlite::params![id, now - age],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO feedback (request_id, ts_ms, score) VALUES ('req_old', ?1, 1)",
            [now],
        )
        .unwrap();
        // A preference whose opponent is the old request goes with it too.
        conn.execute(
            "INSERT INTO preferences (request_id, opponent_id, ts_ms, result)
             VALUES ('req_recent', 'req_old', ?1, 'win')",
            [now],
        )
        .unwrap();
    }
    let h = Harness::start_with(&log_config(tmp.path(), "retention_days = 2")).await;
    flush(&h).await;
    assert!(row(tmp.path(), "req_old").is_none());
    assert!(row(tmp.path(), "req_recent").is_some());
    let orphans: i64 = db(tmp.path())
        .query_row("SELECT COUNT(*) FROM feedback", [], |r| r.get(0))
        .unwrap();
    assert_eq!(orphans, 0, "feedback goes with its request");
    let orphans: i64 = db(tmp.path())
        .query_row("SELECT COUNT(*) FROM preferences", [], |r| r.get(0))
        .unwrap();
    assert_eq!(orphans, 0, "a preference goes with either of its requests");
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_while_requests_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Harness::start_with(&log_config(tmp.path(), "queue_capacity = 1")).await;
    // Another connection holds the write lock: the writer blocks and the queue fills.
    let blocker = db(tmp.path());
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let mut ids = Vec::new();
    for _ in 0..8 {
        let response = h.chat(&hello("local/small")).await;
        assert_eq!(response.status(), 200, "logging never fails a request");
        ids.push(request_id(&response));
    }
    let metrics = h.metrics().await;
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("triage_log_dropped_total "))
        .expect("the counter is exported")
        .parse()
        .unwrap();
    assert!(dropped >= 6.0, "dropped {dropped}\n{metrics}");
    blocker.execute_batch("COMMIT").unwrap();
    flush(&h).await;
    let logged = ids
        .iter()
        .filter(|id| row(tmp.path(), id).is_some())
        .count();
    assert_eq!(logged as f64 + dropped, 8.0);
}

async fn post_feedback(h: &Harness, body: &Value) -> reqwest::Response {
    h.client
        .post(format!("{}/v1/feedback", h.url))
        .bearer_auth(ROUTER_KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn feedback_joins_its_request_and_rejects_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Harness::start_with(&log_config(tmp.path(), "")).await;
    for round in 0..20 {
        // Straight after the answer, with no flush: the outcome may still be queued.
        let id = request_id(&h.chat(&hello("local/small")).await);
        let body = if round % 2 == 0 {
            json!({"id": id, "thumbs": "up", "comment": "good"})
        } else {
            json!({"id": id, "score": 0.25})
        };
        let response = post_feedback(&h, &body).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        let stored: f64 = db(tmp.path())
            .query_row(
                "SELECT score FROM feedback WHERE request_id = ?1",
                [&id],
                |r| r.get(0),
            )
            .expect("acknowledged feedback is committed");
        assert_eq!(stored, if round % 2 == 0 { 1.0 } else { 0.25 });
    }

    let unknown = post_feedback(&h, &json!({"id": "req_nope", "score": 1})).await;
    assert_eq!(unknown.status(), 404);
    let error: Value = unknown.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(error["error"]["param"], "id");

    let id = request_id(&h.chat(&hello("local/small")).await);
    for bad in [
        json!({"id": id, "score": 2}),
        json!({"id": id, "thumbs": "sideways"}),
        json!({"id": id}),
        json!({"score": 1}),
        json!({"id": id, "score": 1, "thumbs": "up"}),
    ] {
        let response = post_feedback(&h, &bad).await;
        assert_eq!(response.status(), 400, "{bad}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"]["message"].is_string());
    }
    let anonymous = h
        .client
        .post(format!("{}/v1/feedback", h.url))
        .json(&json!({"id": id, "score": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// Posts a preference between two logged answers; its status and body.
async fn prefer(h: &Harness, id: &str, opponent: &str, result: &str) -> (u16, Value) {
    let body = json!({"id": id, "opponent": opponent, "result": result, "comment": "A/B"});
    let response = post_feedback(h, &body).await;
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_preference_between_two_answers_to_one_prompt_is_stored_and_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Harness::start_with(&log_config(tmp.path(), "")).await;
    // One prompt to two models (an A/B test), and a third request with another prompt.
    let small = request_id(&h.chat(&hello("local/small")).await);
    let big = request_id(&h.chat(&hello("local/big")).await);
    let other = request_id(&h.chat(&ask("local/big", "something else")).await);
    // Straight after the answers: the preference waits for their commit.
    let (status, body) = prefer(&h, &small, &big, "loss").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["id"], &body["opponent"], &body["result"]),
        (&json!(small), &json!(big), &json!("loss"))
    );
    let stored: (String, String, String) = db(tmp.path())
        .query_row(
            "SELECT request_id, opponent_id, result FROM preferences",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("an acknowledged preference is committed");
    assert_eq!(stored, (small.clone(), big.clone(), "loss".into()));

    // Another prompt, an unknown request, and bad fields are refused, and nothing is stored.
    let (status, body) = prefer(&h, &small, &other, "win").await;
    assert_eq!((status, &body["error"]["param"]), (400, &json!("opponent")));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("different prompts"),
        "{body}"
    );
    let (status, body) = prefer(&h, &small, "req_nope", "win").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("request_not_found"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("req_nope")
    );
    let (status, _) = prefer(&h, &small, &big, "draw").await;
    assert_eq!(status, 400);
    let count: i64 = db(tmp.path())
        .query_row("SELECT COUNT(*) FROM preferences", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1);

    // What training reads: both models and the prompt; the dashboard shows it from each side.
    let paired = Store::open_read(&tmp.path().join("triage.db"))
        .unwrap()
        .preferences(0)
        .unwrap();
    assert_eq!(paired.len(), 1);
    assert_eq!(
        (paired[0].model.as_str(), paired[0].opponent_model.as_str()),
        ("local/small", "local/big")
    );
    assert!(paired[0].prompt.contains("hello there"));
    let found = |id: &str| {
        Store::open_read(&tmp.path().join("triage.db"))
            .unwrap()
            .request(id)
            .unwrap()
            .unwrap()
    };
    let seen = |id: &str| found(id).preferences;
    let from_big = seen(&big);
    assert_eq!(
        (
            from_big[0].result.as_str(),
            from_big[0].opponent.as_str(),
            from_big[0].opponent_model.as_deref()
        ),
        ("win", small.as_str(), Some("local/small"))
    );
    assert_eq!(seen(&small)[0].result, "loss");
    assert!(seen(&other).is_empty());
    // The dashboard offers the other answers to the same prompt to compare with.
    let same: Vec<(String, String)> = found(&small)
        .same_prompt
        .into_iter()
        .map(|o| (o.id, o.model))
        .collect();
    assert_eq!(same, [(big.clone(), "local/big".to_string())]);
    assert!(found(&other).same_prompt.is_empty());
    let usage: Value = h.get("/v1/usage").await.json().await.unwrap();
    assert_eq!(usage["labels"]["compared"], 2, "{usage}");
}

/// An adaptive outcome, as the server would log it, with two candidates.
fn auto_outcome(id: &str, model: &str, tokens: (u64, u64), cost: f64, q: (f64, f64)) -> Outcome {
    let candidates = json!([
        {"model": "local/small", "quality": q.0, "cost_usd": 0.0},
        {"model": "local/big", "quality": q.1, "cost_usd": 0.0},
        {"model": "local/solo", "quality": 0.99, "cost_usd": 0.0, "excluded": "no tools"},
    ]);
    Outcome {
        id: id.into(),
        ts_ms: triage_gateway::outcomes::now_ms(),
        endpoint: "chat",
        key_id: "key-a".into(),
        requested: "auto".into(),
        auto: Some(AutoColumns {
            profile: "auto".into(),
            difficulty: 0.3,
            tool_need: 0.1,
            skills: json!({"code": 1.0}).to_string(),
            candidates: candidates.to_string(),
        }),
        model: Some(model.into()),
        prompt_tokens: tokens.0,
        completion_tokens: tokens.1,
        cost_usd: cost,
        latency_ms: 10.0,
        status: 200,
        ..Outcome::default()
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[tokio::test]
async fn report_arithmetic_matches_hand_computed_values() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Harness::start_with(&log_config(tmp.path(), "")).await;
    let log = h.state.outcomes.as_ref().unwrap();
    // local/small: 0.15 in, 0.60 out; local/big: 2.5 in, 10 out (US$ per 1M tokens).
    log.submit(auto_outcome(
        "a1",
        "local/small",
        (1000, 500),
        0.00045,
        (0.6, 0.9),
    ));
    log.submit(auto_outcome(
        "a2",
        "local/big",
        (2000, 1000),
        0.015,
        (0.5, 0.8),
    ));
    log.submit(Outcome {
        id: "e1".into(),
        ts_ms: triage_gateway::outcomes::now_ms(),
        endpoint: "chat",
        key_id: "key-b".into(),
        requested: "local/solo".into(),
        model: Some("local/solo".into()),
        prompt_tokens: 100,
        completion_tokens: 50,
        cost_usd: 0.001,
        status: 200,
        ..Outcome::default()
    });
    flush(&h).await;

    let usage: Value = h.get("/v1/usage").await.json().await.unwrap();
    let mut store = Store::open_read(&tmp.path().join("triage.db")).unwrap();
    let report = Report::compute(&mut store, &h.state.catalog, &ReportOptions::default()).unwrap();
    assert_eq!(
        usage,
        serde_json::to_value(&report).unwrap(),
        "one computation for both"
    );
    assert_eq!(report.total.requests, 3);
    assert!(close(report.total.cost_usd, 0.01645));
    let s = &report.savings;
    assert_eq!(s.baseline, "strongest candidate");
    assert_eq!((s.requests, s.unpriced), (2, 0));
    // Baseline local/big (the excluded local/solo does not count): 0.0075 + 0.015.
    assert!(close(s.actual_cost_usd, 0.01545));
    assert!(close(s.baseline_cost_usd, 0.0225));
    assert!(close(s.saved_usd, 0.00705));
    assert!(close(s.saved_pct, 100.0 * 0.00705 / 0.0225));
    assert!(close(s.mean_quality.unwrap(), 0.7));
    assert!(close(s.mean_baseline_quality.unwrap(), 0.85));
    assert!(close(s.quality_kept.unwrap(), 0.7 / 0.85));
    let by_model: Vec<(&str, u64)> = report
        .by_model
        .iter()
        .map(|g| (g.name.as_str(), g.requests))
        .collect();
    assert_eq!(
        by_model,
        [("local/big", 1), ("local/solo", 1), ("local/small", 1)]
    );
    let profiles: Vec<(&str, u64)> = report
        .by_profile
        .iter()
        .map(|g| (g.name.as_str(), g.requests))
        .collect();
    assert_eq!(profiles, [("auto", 2), ("explicit", 1)]);
    assert_eq!(report.routing_mix.len(), 2);
    assert!(close(report.routing_mix[0].share, 0.5));

    // A fixed baseline: local/small costs 0.00045 + 0.0009.
    let usage: Value = h
        .get("/v1/usage?baseline=local/small")
        .await
        .json()
        .await
        .unwrap();
    assert!(close(
        usage["savings"]["baseline_cost_usd"].as_f64().unwrap(),
        0.00135
    ));
    assert!(close(
        usage["savings"]["saved_usd"].as_f64().unwrap(),
        0.00135 - 0.01545
    ));
    let future: Value = h
        .get("/v1/usage?since=2999-01-01")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(future["total"]["requests"], 0);
    assert_eq!(h.get("/v1/usage?since=soon").await.status(), 400);
}

/// MiniLM's files plus untrained heads for `skills`: a loadable model directory.
fn assemble(into: &Path, minilm: &Path, skills: &[&str]) {
    std::fs::create_dir_all(into).unwrap();
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(minilm.join(name), into.join(name)).unwrap();
    }
    let skills: Vec<String> = skills.iter().map(|s| s.to_string()).collect();
    triage_core::classifier::add_untrained_heads(into, &skills).unwrap();
}

#[tokio::test]
async fn reload_swaps_the_classifier_and_keeps_it_on_error() {
    let Some(minilm) = minilm_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    assemble(&model, &minilm, &["code", "math", "chat"]);
    let config = format!(
        "{}\n[classifier]\nmodel = \"{}\"\n",
        CONFIG.replace(
            "keys = [\"sk-triage-test\"]",
            &format!("keys = [\"sk-triage-test\"]\nadmin_keys = [\"{ADMIN_KEY}\"]")
        ),
        model.display()
    );
    let h = Harness::start_with(&config).await;
    assert!(h.state.adaptive.load().is_none());
    assert_eq!(
        h.reload(ROUTER_KEY).await.status(),
        401,
        "a router key is not an admin key"
    );

    let response = h.reload(ADMIN_KEY).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let first = h.state.adaptive.load_full().expect("loaded");
    assert_eq!(first.classifier.skills().len(), 3);

    // A retrain writes a new model into the directory; reload picks it up, and a request
    // that loaded the old one still holds it.
    std::fs::remove_dir_all(&model).unwrap();
    assemble(&model, &minilm, &["code", "chat"]);
    assert_eq!(h.reload(ADMIN_KEY).await.status(), 200);
    let second = h.state.adaptive.load_full().unwrap();
    assert_eq!(second.classifier.skills().len(), 2);
    assert_eq!(
        first.classifier.skills().len(),
        3,
        "the old model lives while it is held"
    );

    // A broken directory: the reload fails and the current model stays.
    std::fs::write(model.join("model.safetensors"), b"not safetensors").unwrap();
    let failed = h.reload(ADMIN_KEY).await;
    assert_eq!(failed.status(), 500);
    let error: Value = failed.json().await.unwrap();
    assert_eq!(error["error"]["code"], "reload_failed");
    assert!(std::sync::Arc::ptr_eq(
        &second,
        &h.state.adaptive.load_full().unwrap()
    ));
}

#[tokio::test]
async fn reload_needs_admin_keys_configured() {
    let h = Harness::start("").await;
    assert_eq!(h.reload(ROUTER_KEY).await.status(), 403);
}

/// The real binary, serving the standard config with its log in `dir`.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    async fn start(dir: &Path, mock_url: &str) -> Server {
        let empty = dir.join("no-model");
        std::fs::create_dir_all(&empty).unwrap();
        let config = format!(
            "{}\n[classifier]\nmodel = \"{}\"\n",
            log_config(dir, "").replace("MOCK_URL", mock_url),
            empty.display()
        );
        let path = dir.join("triage.toml");
        std::fs::write(&path, config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_triage"))
            .args(["serve", "--config", path.to_str().unwrap(), "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("LOCAL_API_KEY", UPSTREAM_KEY)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let started = Instant::now();
        while client.get(format!("{url}/health")).send().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Server { child, url }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn wait(&mut self) -> std::process::ExitStatus {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child.kill().unwrap();
        panic!("the server did not exit");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests from several tasks until `stop`; the request ids each answer acknowledged.
async fn load(url: &str, feedback: bool, stop: Duration) -> Vec<String> {
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut acknowledged = Vec::new();
                let until = Instant::now() + stop;
                while Instant::now() < until {
                    let Ok(response) = client
                        .post(format!("{url}/v1/chat/completions"))
                        .bearer_auth(ROUTER_KEY)
                        .json(&hello("local/small"))
                        .send()
                        .await
                    else {
                        break;
                    };
                    if response.status() != 200 {
                        break;
                    }
                    let id = request_id(&response);
                    if !feedback {
                        acknowledged.push(id);
                        continue;
                    }
                    let sent = client
                        .post(format!("{url}/v1/feedback"))
                        .bearer_auth(ROUTER_KEY)
                        .json(&json!({"id": id, "score": 0.5}))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 200 => acknowledged.push(id),
                        _ => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

#[tokio::test]
async fn sigterm_drains_every_acknowledged_request_into_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let mock = triage_mock::MockUpstream::start(Some(UPSTREAM_KEY.into()))
        .await
        .unwrap();
    let mut server = Server::start(tmp.path(), &mock.base_url()).await;
    let url = server.url.clone();
    let traffic = tokio::spawn(async move { load(&url, false, Duration::from_secs(3)).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    // SIGHUP reloads the classifier (here a failing load that keeps the old state) and must
    // neither stop the server nor fail a request.
    server.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "SIGHUP stopped the server"
    );
    server.signal("-TERM");
    let acknowledged = traffic.await.unwrap();
    assert!(server.wait().await.success());
    assert!(
        acknowledged.len() > 10,
        "only {} requests",
        acknowledged.len()
    );
    eprintln!(
        "{} acknowledged requests before SIGTERM",
        acknowledged.len()
    );
    let conn = db(tmp.path());
    for id in &acknowledged {
        let found: i64 = conn
            .query_row("SELECT COUNT(*) FROM outcomes WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(found, 1, "request {id} was answered but not logged");
    }
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_feedback() {
    let tmp = tempfile::tempdir().unwrap();
    let mock = triage_mock::MockUpstream::start(Some(UPSTREAM_KEY.into()))
        .await
        .unwrap();
    let server = Server::start(tmp.path(), &mock.base_url()).await;
    let url = server.url.clone();
    let traffic = tokio::spawn(async move { load(&url, true, Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.signal("-KILL");
    let acknowledged = traffic.await.unwrap();
    drop(server);
    assert!(
        acknowledged.len() > 10,
        "only {} feedbacks",
        acknowledged.len()
    );
    eprintln!(
        "{} acknowledged feedbacks before kill -9",
        acknowledged.len()
    );
    // Restart on the same log: it opens (recovering the WAL) and every feedback is there.
    let server = Server::start(tmp.path(), &mock.base_url()).await;
    let conn = db(tmp.path());
    for id in &acknowledged {
        let found: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM feedback WHERE request_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(found, 1, "feedback for {id} was acknowledged but lost");
    }
    drop(server);
}

#[tokio::test]
async fn postgres_logs_feedback_and_reports_like_sqlite() {
    let Some(url) = postgres_url() else { return };
    let fresh = url.clone();
    tokio::task::spawn_blocking(move || {
        // A log written by the release before migrations were recorded is migrated in place:
        // its migrations recorded, its rows kept.
        let mut client = postgres::Client::connect(&fresh, postgres::NoTls).unwrap();
        client.batch_execute(DROP_LOG_TABLES).unwrap();
        client
            .batch_execute(include_str!("fixtures/outcome_log_release_postgres.sql"))
            .unwrap();
        client
            .batch_execute(
                "INSERT INTO outcomes (id, ts_ms, endpoint, key_id, requested, route, fallbacks,
                 prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, cost_usd,
                 latency_ms, status, stream) VALUES ('old', 1, 'chat', 'k', 'm', 'explicit', '',
                 1, 2, 0, 0, 0.5, 3.0, 200, 0)",
            )
            .unwrap();
        drop(Store::connect(&fresh).unwrap());
        let versions: Vec<i64> = client
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            versions,
            (1..=triage_gateway::outcomes::migrations::LATEST).collect::<Vec<_>>()
        );
        let kept: i64 = client
            .query_one("SELECT count(*) FROM outcomes WHERE id = 'old'", &[])
            .unwrap()
            .get(0);
        assert_eq!(kept, 1);
        // Then a fresh log for the rest of the test.
        client.batch_execute(DROP_LOG_TABLES).unwrap();
    })
    .await
    .unwrap();
    let h = Harness::start_with(&format!("{CONFIG}\n[log]\nurl = \"{url}\"\n")).await;
    let mut ids = Vec::new();
    for model in ["local/small", "local/big", "local/small"] {
        let response = h.chat(&hello(model)).await;
        assert_eq!(response.status(), 200);
        let id = request_id(&response);
        // Straight after the answer: the feedback waits for the outcome's commit.
        let feedback = post_feedback(&h, &json!({"id": id, "thumbs": "up"})).await;
        assert_eq!(feedback.status(), 200, "{}", feedback.text().await.unwrap());
        ids.push(id);
    }
    let unknown = post_feedback(&h, &json!({"id": "req_nope", "score": 1})).await;
    assert_eq!(unknown.status(), 404);
    let (status, body) = prefer(&h, &ids[1], &ids[0], "win").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = prefer(&h, &ids[1], "req_nope", "win").await;
    assert_eq!(status, 404);
    let log = h.state.outcomes.as_ref().unwrap();
    log.submit(auto_outcome(
        "pg-auto",
        "local/small",
        (1000, 500),
        0.00045,
        (0.6, 0.9),
    ));
    flush(&h).await;

    let usage: Value = h.get("/v1/usage").await.json().await.unwrap();
    assert_eq!(usage["total"]["requests"], 4);
    let by_model: Vec<(&str, u64)> = usage["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["name"].as_str().unwrap(), g["requests"].as_u64().unwrap()))
        .collect();
    // local/small also carries the priced adaptive row, so it costs the most.
    assert_eq!(by_model, [("local/small", 3), ("local/big", 1)]);
    assert!(close(
        usage["savings"]["baseline_cost_usd"].as_f64().unwrap(),
        0.0075
    ));
    assert!(close(
        usage["savings"]["actual_cost_usd"].as_f64().unwrap(),
        0.00045
    ));

    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        for id in &ids {
            let row = client
                .query_one(
                    "SELECT o.model, o.status, o.prompt, f.score FROM outcomes o
                     JOIN feedback f ON f.request_id = o.id WHERE o.id = $1",
                    &[id],
                )
                .unwrap();
            assert_eq!(row.get::<_, i64>(1), 200);
            assert!(
                row.get::<_, Option<String>>(2)
                    .unwrap()
                    .contains("hello there")
            );
            assert_eq!(row.get::<_, f64>(3), 1.0);
        }
        // What `label`, `train --from-log` and `calibrate` read, and a judge's grade.
        let mut store = Store::connect(&url).unwrap();
        assert!(
            store.unlabelled(0, "judge").unwrap().is_empty(),
            "all have feedback"
        );
        let label = Label {
            request_id: ids[1].clone(),
            judge: "judge".into(),
            ts_ms: 1,
            rating: 7.0,
            score: 6.0 / 9.0,
            cost_usd: 0.001,
        };
        store.insert_label(&label).unwrap();
        store.insert_label(&label).unwrap(); // a repeat is ignored
        let verdicts = store.verdicts(0).unwrap();
        assert_eq!(verdicts.len(), 3, "the three answered requests with text");
        let judged: Vec<Option<f64>> = verdicts.iter().map(|v| v.judged).collect();
        assert_eq!(judged.iter().filter(|j| j.is_some()).count(), 1);
        assert!(verdicts.iter().all(|v| v.feedback == Some(1.0)));
        assert_eq!(store.prompts(0).unwrap().len(), 3);
        let answers = store.answers(&[ids[0].clone(), "req_nope".into()]).unwrap();
        assert_eq!(answers.len(), 1);
        assert!(answers[0].prompt.contains("hello there"));
        let paired = store.preferences(0).unwrap();
        assert_eq!(paired.len(), 1);
        assert_eq!(
            (paired[0].model.as_str(), paired[0].opponent_model.as_str()),
            ("local/big", "local/small")
        );
        let seen = store.request(&ids[0]).unwrap().unwrap().preferences;
        assert_eq!((seen.len(), seen[0].result.as_str()), (1, "loss"));
    })
    .await
    .unwrap();
}

#[test]
fn replay_logs_a_share_of_an_outcome_file_as_traffic_with_feedback() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("outcomes.jsonl");
    let mut rows = String::new();
    for i in 0..200 {
        for (model, score) in [("weak", (i % 2) as f64 * 10.0), ("strong", 10.0)] {
            let row = json!({"source": if i < 150 { "a" } else { "b" }, "prompt_id": i,
                "prompt": format!("question {i}"), "model": model, "score": score});
            rows.push_str(&format!("{row}\n"));
        }
    }
    std::fs::write(&data, rows).unwrap();
    let log = dir.path().join("replayed.db");
    let args = triage_learn::train::replay::ReplayArgs {
        data,
        log: log.display().to_string(),
        source: Some("a".into()),
        model: None,
        fraction: 0.5,
        salt: "replay".into(),
    };
    let strong_only = triage_learn::train::replay::ReplayArgs {
        log: dir.path().join("strong.db").display().to_string(),
        model: Some("strong".into()),
        ..args.clone()
    };
    let logged = triage_learn::train::replay::run(&args).unwrap().graded;
    assert_eq!(
        triage_learn::train::replay::run(&strong_only)
            .unwrap()
            .graded
            * 2,
        logged,
        "--model keeps one model's rows of the same prompts"
    );
    // Half of 150 prompts by a stable hash, both models each: about 150 requests.
    assert!((110..=190).contains(&logged), "{logged}");
    assert_eq!(logged % 2, 0, "a prompt comes with both its rows");
    let verdicts = Store::open_read(&log).unwrap().verdicts(0).unwrap();
    assert_eq!(verdicts.len(), logged);
    // 1–10 grades become feedback in [0, 1]; every replayed prompt is from source `a`.
    for v in &verdicts {
        let i: usize = triage_learn::train::from_log::classifier_text(&v.prompt).unwrap()
            ["question ".len()..]
            .parse()
            .unwrap();
        assert!(i < 150);
        let expected = if v.model == "weak" && i.is_multiple_of(2) {
            0.0
        } else {
            1.0
        };
        assert_eq!(v.feedback, Some(expected), "{v:?}");
    }
    // The same draw again: the same requests, not new ones.
    assert_eq!(
        triage_learn::train::replay::run(&args).unwrap().requests(),
        logged
    );
    assert_eq!(
        Store::open_read(&log).unwrap().verdicts(0).unwrap().len(),
        logged
    );
}

#[test]
fn replayed_battles_become_two_answers_and_a_preference_that_train_as_battles() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("battles.jsonl");
    let mut rows = String::new();
    // Each battle from both sides, as the Chatbot Arena file has it; one without a battle_id.
    for (i, (winner, loser, score)) in [("a", "b", 1.0), ("b", "c", 0.5), ("a", "c", 0.25)]
        .into_iter()
        .enumerate()
    {
        let mirrored = if score == 1.0 { 0.0 } else { score };
        for (model, opponent, s) in [(winner, loser, score), (loser, winner, mirrored)] {
            let mut row = json!({"source": "arena", "prompt_id": format!("p{i}"),
                "prompt": format!("battle prompt {i}"), "model": model, "opponent": opponent,
                "score": s});
            if i < 2 {
                row["battle_id"] = json!(format!("battle{i}"));
            }
            rows.push_str(&format!("{row}\n"));
        }
    }
    // A graded row in the same file stays a graded answer.
    rows.push_str(&format!(
        "{}\n",
        json!({"source": "arena", "prompt_id": "g", "prompt": "graded prompt", "model": "a",
            "score": 1.0})
    ));
    std::fs::write(&data, rows).unwrap();
    let log = dir.path().join("replayed.db");
    let args = triage_learn::train::replay::ReplayArgs {
        data: data.clone(),
        log: log.display().to_string(),
        source: None,
        model: None,
        fraction: 1.0,
        salt: "replay".into(),
    };
    let replayed = triage_learn::train::replay::run(&args).unwrap();
    assert_eq!((replayed.graded, replayed.battles), (1, 3));
    let mut store = Store::open_read(&log).unwrap();
    let mut paired: Vec<(String, String, String)> = store
        .preferences(0)
        .unwrap()
        .into_iter()
        .map(|p| (p.model, p.opponent_model, p.result.unwrap().as_str().into()))
        .collect();
    paired.sort();
    assert_eq!(
        paired,
        [
            ("a".into(), "b".into(), "win".into()),
            ("a".into(), "c".into(), "both_bad".into()),
            ("b".into(), "c".into(), "tie".into())
        ]
    );
    assert_eq!(
        store.verdicts(0).unwrap().len(),
        7,
        "six answers and one graded"
    );

    // `train --from-log`'s export: each preference as one battle from both sides.
    let export =
        triage_learn::train::from_log::export(&log.display().to_string(), 0, dir.path()).unwrap();
    assert_eq!(export.by_label["preference"], 6);
    assert_eq!(export.by_label["feedback"], 1);
    let text = std::fs::read_to_string(&export.path).unwrap();
    let battles: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|row| row.get("opponent").is_some())
        .collect();
    assert_eq!(battles.len(), 6);
    let a_vs_b: Vec<f64> = battles
        .iter()
        .filter(|r| r["model"] == "a" && r["opponent"] == "b")
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert_eq!(a_vs_b, [1.0]);
    assert!(
        battles
            .iter()
            .all(|r| r["prompt"].as_str().unwrap().starts_with("battle prompt"))
    );

    // A battle score that is no win, tie or loss is an error that names the file's line.
    std::fs::write(
        &data,
        format!(
            "{}\n",
            json!({"source": "arena", "prompt_id": "x", "prompt": "p", "model": "a",
                "opponent": "b", "score": 0.7})
        ),
    )
    .unwrap();
    let error = triage_learn::train::replay::run(&args)
        .unwrap_err()
        .to_string();
    assert!(error.contains("0.7") && error.contains("battle"), "{error}");
}
