//! The gateway over HTTP: pass-through, streaming, cost, fallbacks, retries, timeouts, circuit
//! breakers and errors, against the fake upstream on loopback.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use triage_mock::Fault;

fn price(usage: &Value, input: f64, output: f64) -> f64 {
    let p = usage["prompt_tokens"].as_f64().unwrap();
    let c = usage["completion_tokens"].as_f64().unwrap();
    (p * input + c * output) / 1e6
}

#[tokio::test]
async fn body_passes_through_with_only_model_rewritten() {
    let h = Harness::start("").await;
    let body = json!({
        "model": "local/small",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
        ]}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "none",
        "response_format": {"type": "json_object"},
        "n": 2,
        "logprobs": true,
        "top_logprobs": 2,
        "some_future_field": {"nested": [1, 2, 3]},
        "temperature": 0.3
    });
    let response = h.chat(&body).await;
    assert_eq!(response.status(), 200);
    let calls = h.upstream_calls("small-model");
    assert_eq!(calls.len(), 1);
    let mut expected = body.clone();
    expected["model"] = json!("small-model");
    assert_eq!(calls[0].body, expected, "only `model` may change");
    let sent_keys: Vec<_> = calls[0].body.as_object().unwrap().keys().cloned().collect();
    let client_keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
    assert_eq!(sent_keys, client_keys, "field order is kept");
    assert_eq!(
        calls[0].headers.get("authorization").map(String::as_str),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str()),
        "the upstream key is attached"
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["choices"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn non_streaming_answer_is_priced_and_explained() {
    let h = Harness::start("").await;
    let response = h.chat(&hello("local/small")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-triage-model"), Some("local/small"));
    assert!(
        header(&response, "x-triage-request-id")
            .unwrap()
            .starts_with("req_")
    );
    assert!(header(&response, "x-triage-fallbacks").is_none());
    let cost_header: f64 = header(&response, "x-triage-cost-usd")
        .unwrap()
        .parse()
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Mock answer from small-model: hello there"
    );
    let expected = price(&answer["usage"], 0.15, 0.60);
    assert!(expected > 0.0);
    assert!((answer["usage"]["cost"].as_f64().unwrap() - expected).abs() < 1e-15);
    assert!((cost_header - expected).abs() < 1e-9);
}

#[tokio::test]
async fn cached_tokens_are_charged_at_the_cached_price() {
    let h = Harness::start("").await;
    let mut body = hello("local/small");
    body["mock"] = json!({"usage": {"prompt_tokens": 1000, "completion_tokens": 100,
        "total_tokens": 1100, "prompt_tokens_details": {"cached_tokens": 800}}});
    let answer: Value = h.chat(&body).await.json().await.unwrap();
    let expected = (200.0 * 0.15 + 800.0 * 0.075 + 100.0 * 0.60) / 1e6;
    assert!((answer["usage"]["cost"].as_f64().unwrap() - expected).abs() < 1e-15);
}

#[tokio::test]
async fn stream_with_include_usage_ends_with_priced_usage() {
    let h = Harness::start("").await;
    let mut body = hello("local/small");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = h.chat(&body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), Some("text/event-stream"));
    assert_eq!(header(&response, "x-triage-model"), Some("local/small"));
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Mock answer from small-model: hello there");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    let expected = price(&last["usage"], 0.15, 0.60);
    assert!((last["usage"]["cost"].as_f64().unwrap() - expected).abs() < 1e-15);
}

#[tokio::test]
async fn stream_without_include_usage_hides_usage_but_still_accounts_it() {
    let h = Harness::start("").await;
    let mut body = hello("local/small");
    body["stream"] = json!(true);
    let response = h.chat(&body).await;
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        assert!(chunk.get("usage").is_none(), "usage leaked: {chunk}");
        assert!(!chunk["choices"].as_array().unwrap().is_empty());
    }
    let upstream = &h.upstream_calls("small-model")[0].body;
    assert_eq!(
        upstream["stream_options"]["include_usage"], true,
        "triage asks for usage"
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"triage_tokens_total{model="local/small",key="key-"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn streamed_tool_call_arguments_arrive_as_deltas() {
    let h = Harness::start("").await;
    let body = json!({
        "model": "local/small", "stream": true,
        "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    });
    let events = sse_data(&h.chat(&body).await.text().await.unwrap());
    let mut arguments = String::new();
    let mut finish = None;
    for event in events.iter().filter(|e| *e != "[DONE]") {
        let chunk: Value = serde_json::from_str(event).unwrap();
        let choice = &chunk["choices"][0];
        if let Some(args) = choice["delta"]["tool_calls"][0]["function"]["arguments"].as_str() {
            arguments.push_str(args);
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = Some(reason.to_string());
        }
    }
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"city": "test"})
    );
    assert_eq!(finish.as_deref(), Some("tool_calls"));
}

#[tokio::test]
async fn configured_fallback_answers_when_the_first_model_fails() {
    let h = Harness::start("").await;
    h.fail("small-model", vec![status(503), status(503)]);
    let response = h.chat(&hello("local/small")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-triage-model"), Some("local/big"));
    assert_eq!(
        header(&response, "x-triage-fallbacks"),
        Some("local/small (503)")
    );
    let cost: f64 = header(&response, "x-triage-cost-usd")
        .unwrap()
        .parse()
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("big-model")
    );
    assert!(
        (cost - price(&answer["usage"], 2.5, 10.0)).abs() < 1e-9,
        "priced as the model that answered"
    );
    assert_eq!(
        h.upstream_calls("small-model").len(),
        2,
        "one try and one retry"
    );
    assert!(
        h.metrics()
            .await
            .contains(r#"triage_fallbacks_total{model="local/small"} 1"#)
    );
}

#[tokio::test]
async fn request_level_models_list_is_tried_in_order_and_not_forwarded() {
    let h = Harness::start("").await;
    h.fail("solo-model", vec![status(500), status(500)]);
    let body = json!({"models": ["local/solo", "local/big"],
        "messages": [{"role": "user", "content": "hi"}]});
    let response = h.chat(&body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-triage-model"), Some("local/big"));
    let forwarded = &h.upstream_calls("big-model")[0].body;
    assert!(
        forwarded.get("models").is_none(),
        "triage's own field stays home"
    );
}

#[tokio::test]
async fn retry_honours_retry_after_and_stays_on_the_model() {
    let h = Harness::start("").await;
    let limited = Fault {
        status: Some(429),
        retry_after: Some("0.2".into()),
        ..Fault::default()
    };
    h.fail("small-model", vec![limited]);
    let started = std::time::Instant::now();
    let response = h.chat(&hello("local/small")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-triage-model"), Some("local/small"));
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "waited as told"
    );
    assert_eq!(h.upstream_calls("small-model").len(), 2);
}

#[tokio::test]
async fn retry_after_beyond_the_limit_moves_on_at_once() {
    let h = Harness::start("").await;
    let limited = Fault {
        status: Some(429),
        retry_after: Some("30".into()),
        ..Fault::default()
    };
    h.fail("small-model", vec![limited]);
    let response = h.chat(&hello("local/small")).await;
    assert_eq!(header(&response, "x-triage-model"), Some("local/big"));
    assert_eq!(
        h.upstream_calls("small-model").len(),
        1,
        "no retry into a long wait"
    );
}

#[tokio::test]
async fn rate_limit_on_every_model_is_a_429_with_retry_after() {
    let h = Harness::start("").await;
    let limited = Fault {
        status: Some(429),
        retry_after: Some("7".into()),
        ..Fault::default()
    };
    h.fail("solo-model", vec![limited.clone(), limited]);
    let response = h.chat(&hello("local/solo")).await;
    assert_eq!(response.status(), 429);
    assert!(header(&response, "x-triage-request-id").is_some());
    assert_eq!(
        header(&response, "x-triage-fallbacks"),
        Some("local/solo (429)")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn upstream_client_errors_go_back_without_fallback() {
    let h = Harness::start("").await;
    h.fail(
        "small-model",
        vec![Fault {
            status: Some(400),
            message: Some("max_tokens is too large".into()),
            ..Fault::default()
        }],
    );
    let response = h.chat(&hello("local/small")).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], "max_tokens is too large");
    assert!(h.upstream_calls("big-model").is_empty());
}

#[tokio::test]
async fn every_model_failing_maps_to_gateway_statuses() {
    let h = Harness::start("").await;
    h.fail("solo-model", vec![status(500), status(500)]);
    let response = h.chat(&hello("local/solo")).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("local/solo")
    );

    h.fail("solo-model", vec![status(503), status(503)]);
    assert_eq!(h.chat(&hello("local/solo")).await.status(), 503);
}

#[tokio::test]
async fn first_byte_timeout_falls_back_and_ends_in_504_when_alone() {
    let slow = r#"
[[models]]
id = "local/small"
first_byte_timeout_ms = 150
[[models]]
id = "local/solo"
first_byte_timeout_ms = 150
"#;
    let h = Harness::start(slow).await;
    let stall = Fault {
        delay_ms: Some(1000),
        ..Fault::default()
    };
    h.fail("small-model", vec![stall.clone(), stall.clone()]);
    let response = h.chat(&hello("local/small")).await;
    assert_eq!(header(&response, "x-triage-model"), Some("local/big"));
    assert_eq!(
        header(&response, "x-triage-fallbacks"),
        Some("local/small (first_byte_timeout)")
    );
    h.fail("solo-model", vec![stall.clone(), stall]);
    let response = h.chat(&hello("local/solo")).await;
    assert_eq!(response.status(), 504);
}

#[tokio::test]
async fn connect_errors_fall_back_to_another_provider() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let extra = format!(
        r#"
[[providers]]
name = "dead"
kind = "openai"
base_url = "{dead_url}"
connect_timeout_ms = 500
[[models]]
id = "dead/model"
provider = "dead"
input_per_mtok = 1
output_per_mtok = 1
context = 1000
fallbacks = ["local/big"]
"#
    );
    let h = Harness::start(&extra).await;
    let response = h.chat(&hello("dead/model")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-triage-fallbacks"),
        Some("dead/model (connect)")
    );
}

#[tokio::test]
async fn stream_that_dies_before_its_first_event_falls_back() {
    let h = Harness::start("").await;
    let drop_now = Fault {
        drop_after_chunks: Some(0),
        ..Fault::default()
    };
    h.fail("small-model", vec![drop_now.clone(), drop_now]);
    let mut body = hello("local/small");
    body["stream"] = json!(true);
    let response = h.chat(&body).await;
    assert_eq!(header(&response, "x-triage-model"), Some("local/big"));
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn stream_that_dies_midway_ends_with_an_openai_error_event() {
    let h = Harness::start("").await;
    h.fail(
        "small-model",
        vec![Fault {
            drop_after_chunks: Some(3),
            ..Fault::default()
        }],
    );
    let mut body = hello("local/small");
    body["stream"] = json!(true);
    let response = h.chat(&body).await;
    assert_eq!(response.status(), 200, "the answer had started");
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.len(), 4, "three chunks, then the error: {events:?}");
    let error: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "upstream_stream_error");
    assert!(error["error"]["message"].is_string() && error["error"]["type"].is_string());
    assert!(
        h.upstream_calls("big-model").is_empty(),
        "no fallback after the first byte"
    );
    let metrics = h.metrics().await;
    assert!(
        metrics
            .contains(r#"triage_upstream_errors_total{model="local/small",reason="transport"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn total_timeout_mid_stream_ends_the_stream_with_an_error() {
    let h = Harness::start("[[models]]\nid = \"local/solo\"\ntotal_timeout_ms = 300\n").await;
    h.fail(
        "solo-model",
        vec![Fault {
            chunk_delay_ms: Some(100),
            ..Fault::default()
        }],
    );
    let mut body = hello("local/solo");
    body["stream"] = json!(true);
    let events = sse_data(&h.chat(&body).await.text().await.unwrap());
    let error: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not finish"),
        "{error}"
    );
}

#[tokio::test]
async fn circuit_opens_after_repeated_failures_then_probes() {
    let h = Harness::start("").await;
    // breaker_failures = 3, max_retries = 1: two requests fail twice each.
    h.fail("solo-model", vec![status(500); 4]);
    for _ in 0..2 {
        assert_eq!(h.chat(&hello("local/solo")).await.status(), 502);
    }
    assert_eq!(
        h.upstream_calls("solo-model").len(),
        3,
        "the third failure opened it"
    );
    let response = h.chat(&hello("local/solo")).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "circuit_open");
    assert_eq!(
        h.upstream_calls("solo-model").len(),
        3,
        "an open circuit makes no call"
    );
    assert!(
        h.metrics()
            .await
            .contains(r#"triage_circuit_state{model="local/solo"} 1"#)
    );

    h.clock.advance(Duration::from_millis(450));
    h.mock.script(Some("solo-model"), vec![]);
    let probe = h.chat(&hello("local/solo")).await;
    // The scripted queue still holds one 500: the probe fails and the circuit reopens.
    assert_eq!(probe.status(), 502);
    assert_eq!(h.chat(&hello("local/solo")).await.status(), 503);
    h.clock.advance(Duration::from_millis(450));
    assert_eq!(
        h.chat(&hello("local/solo")).await.status(),
        200,
        "a good probe closes it"
    );
    assert!(
        h.metrics()
            .await
            .contains(r#"triage_circuit_state{model="local/solo"} 0"#)
    );
}

#[tokio::test]
async fn open_circuit_skips_straight_to_the_sibling() {
    let h = Harness::start("").await;
    h.fail("small-model", vec![status(500); 3]);
    for _ in 0..2 {
        h.chat(&hello("local/small")).await;
    }
    let before = h.upstream_calls("small-model").len();
    let response = h.chat(&hello("local/small")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-triage-fallbacks"),
        Some("local/small (circuit_open)")
    );
    assert_eq!(h.upstream_calls("small-model").len(), before);
}

#[tokio::test]
async fn auth_errors_are_401_in_openai_shape() {
    let h = Harness::start("").await;
    let url = format!("{}/v1/chat/completions", h.url);
    let missing = h
        .client
        .post(&url)
        .json(&hello("local/small"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let wrong = h
        .client
        .post(&url)
        .bearer_auth("sk-wrong")
        .json(&hello("local/small"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(h.mock.requests().is_empty());
    let models = h
        .client
        .get(format!("{}/v1/models", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 401);
}

#[tokio::test]
async fn bad_requests_name_the_problem() {
    let h = Harness::start("").await;
    let url = format!("{}/v1/chat/completions", h.url);
    let send = |body: String| {
        h.client
            .post(&url)
            .bearer_auth(ROUTER_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let response = send("{not json".into()).await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let response = send(r#"{"model":"local/small"}"#.into()).await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "messages");

    let response = h.chat(&hello("nope/model")).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("GET /v1/models")
    );

    let huge = format!(
        r#"{{"model":"local/small","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(70_000)
    );
    let response = send(huge).await.unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_too_large");

    let response = h.get("/v1/nothing").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string());
    assert!(
        h.mock.requests().is_empty(),
        "nothing bad reached the upstream"
    );
}

#[tokio::test]
async fn malformed_bodies_never_break_the_server() {
    let h = Harness::start("").await;
    let url = format!("{}/v1/chat/completions", h.url);
    let bodies = [
        "",
        "null",
        "[]",
        "42",
        "\"str\"",
        "{}",
        r#"{"model":null}"#,
        r#"{"model":7}"#,
        r#"{"model":"local/small","messages":{}}"#,
        r#"{"model":"local/small","messages":[1]}"#,
        r#"{"model":"local/small","messages":[{"role":7}]}"#,
        r#"{"models":[1,2]}"#,
        r#"{"model":"local/small","messages":[{"role":"user","content":"x"}],"stream":1}"#,
        "\u{0}\u{1}\u{2}",
        "{\"model\":\"\u{1F600}\"",
        &"[".repeat(10_000),
    ];
    for body in bodies {
        let response = h
            .client
            .post(&url)
            .bearer_auth(ROUTER_KEY)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_client_error(),
            "{body:?} gave {}",
            response.status()
        );
        let error: Value = response.json().await.unwrap();
        assert!(error["error"]["message"].is_string(), "{body:?}");
    }
    assert_eq!(
        h.chat(&hello("local/small")).await.status(),
        200,
        "still serving"
    );
}

#[tokio::test]
async fn upstream_keys_never_reach_the_client_or_the_metrics() {
    let h = Harness::start("").await;
    let leaky = Fault {
        status: Some(401),
        message: Some(format!("Incorrect API key provided: {UPSTREAM_KEY}")),
        ..Fault::default()
    };
    let echo = Fault {
        status: Some(500),
        message: Some(format!("internal error for key {UPSTREAM_KEY}")),
        ..Fault::default()
    };
    h.fail("solo-model", vec![leaky]);
    let response = h.chat(&hello("local/solo")).await;
    assert_eq!(response.status(), 502);
    let headers = format!("{:?}", response.headers());
    let body = response.text().await.unwrap();
    assert!(
        !body.contains(UPSTREAM_KEY) && !body.contains("0123456789"),
        "{body}"
    );
    assert!(body.contains("rejected triage's credentials"), "{body}");
    assert!(!headers.contains(UPSTREAM_KEY));

    h.fail("solo-model", vec![echo.clone(), echo]);
    let body = h.chat(&hello("local/solo")).await.text().await.unwrap();
    assert!(!body.contains(UPSTREAM_KEY), "{body}");
    assert!(body.contains("internal error for key ***"), "{body}");
    assert!(!h.metrics().await.contains(UPSTREAM_KEY));
    assert!(!h.metrics().await.contains(ROUTER_KEY));
}

#[tokio::test]
async fn missing_upstream_key_is_a_clear_503() {
    let extra = r#"
[[providers]]
name = "keyless"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "TRIAGE_TEST_UNSET_VARIABLE"
[[models]]
id = "keyless/m"
provider = "keyless"
input_per_mtok = 1
output_per_mtok = 1
context = 1000
"#;
    let h = Harness::start(extra).await;
    let response = h.chat(&hello("keyless/m")).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "provider_not_configured");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TRIAGE_TEST_UNSET_VARIABLE")
    );
}

#[tokio::test]
async fn models_endpoint_lists_prices_context_and_capabilities() {
    let h = Harness::start("").await;
    let list: Value = h.get("/v1/models").await.json().await.unwrap();
    assert_eq!(list["object"], "list");
    let data = list["data"].as_array().unwrap();
    let small = data.iter().find(|m| m["id"] == "local/small").unwrap();
    assert_eq!(small["object"], "model");
    assert_eq!(small["pricing"]["prompt"], "0.00000015");
    assert_eq!(small["pricing"]["completion"], "0.0000006");
    assert_eq!(small["pricing"]["input_cache_read"], "0.000000075");
    assert_eq!(small["context_length"], 128000);
    assert_eq!(small["capabilities"]["tools"], true);
    assert!(
        data.iter().any(|m| m["id"] == "openai/gpt-4o-mini"),
        "built-in catalog too"
    );
}

#[tokio::test]
async fn health_and_metrics_report() {
    let h = Harness::start("").await;
    let health: Value = h.get("/health").await.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    h.chat(&hello("local/small")).await;
    let mut body = hello("local/small");
    body["stream"] = json!(true);
    h.chat(&body).await.text().await.unwrap();
    h.chat(&hello("nope/nope")).await;
    let metrics = h.metrics().await;
    for needle in [
        r#"triage_requests_total{model="local/small",key="key-"#,
        r#"status="200"} 2"#,
        r#"triage_requests_total{model="nope/nope""#,
        r#"triage_request_duration_seconds_bucket{le="#,
        r#"triage_ttft_seconds_count{model="local/small"} 1"#,
        r#"direction="output"}"#,
        r#"triage_cost_usd_total{model="local/small""#,
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
}

#[tokio::test]
async fn every_endpoint_names_a_request_id_and_is_counted_by_route() {
    let h = Harness::start("").await;
    let route = h
        .client
        .post(format!("{}/v1/route", h.url))
        .bearer_auth(ROUTER_KEY)
        .json(&hello("local/small"))
        .send()
        .await
        .unwrap();
    let unknown = h.get("/v1/nothing-here").await;
    let models = h.get("/v1/models").await;
    let health = h.get("/health").await;
    for response in [&route, &unknown, &models, &health] {
        let id = header(response, "x-triage-request-id").unwrap_or_default();
        assert!(id.starts_with("req_"), "{:?}: {id}", response.url());
    }
    let metrics = h.metrics().await;
    for series in [
        r#"triage_http_requests_total{endpoint="/v1/route",method="POST",status="200"} 1"#,
        r#"triage_http_requests_total{endpoint="/v1/models",method="GET",status="200"} 1"#,
        r#"triage_http_requests_total{endpoint="unmatched",method="GET",status="404"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} in:\n{metrics}");
    }
}
