//! Native Anthropic and Gemini upstreams, and the Anthropic Messages endpoint, over HTTP against
//! the fake upstream on loopback: translation both ways (plain, streamed, tools), native
//! pass-through, a fallback across kinds, and Anthropic-shaped errors.

mod common;

use common::*;
use serde_json::{Value, json};
use triage_mock::Fault;

/// An Anthropic-kind and a Gemini-kind provider on the mock, beside the standard `local` one.
const NATIVE: &str = r#"
[[providers]]
name = "claude"
kind = "anthropic"
base_url = "MOCK_URL"
api_key_env = "LOCAL_API_KEY"
first_byte_timeout_ms = 2000
total_timeout_ms = 5000
[[providers]]
name = "gem"
kind = "gemini"
base_url = "MOCK_GEMINI_URL"
api_key_env = "LOCAL_API_KEY"
first_byte_timeout_ms = 2000
total_timeout_ms = 5000
[[models]]
id = "claude/sonnet"
provider = "claude"
upstream = "claude-model"
input_per_mtok = 3.0
output_per_mtok = 15.0
cached_input_per_mtok = 0.3
cache_write_per_mtok = 3.75
context = 200000
max_output = 64000
tools = true
fallbacks = ["local/solo"]
[[models]]
id = "gem/flash"
provider = "gem"
upstream = "gemini-model"
input_per_mtok = 0.5
output_per_mtok = 3.0
cached_input_per_mtok = 0.05
context = 1000000
tools = true
"#;

async fn harness() -> Harness {
    Harness::start(NATIVE).await
}

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Forecast",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

fn cost_header(response: &reqwest::Response) -> f64 {
    header(response, "x-triage-cost-usd")
        .unwrap()
        .parse()
        .unwrap()
}

/// The JSON payloads of an SSE body (OpenAI's `[DONE]` left out).
fn sse_json(body: &str) -> Vec<Value> {
    sse_data(body)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Folds OpenAI chunks: content, tool calls (by index), finish reason and usage.
fn fold_chunks(chunks: &[Value]) -> (String, Vec<Value>, Option<String>, Value) {
    let mut content = String::new();
    let mut calls: Vec<Value> = Vec::new();
    let mut finish = None;
    let mut usage = Value::Null;
    for chunk in chunks {
        if !chunk["usage"].is_null() {
            usage = chunk["usage"].clone();
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        content.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                calls.push(
                    json!({"id": call["id"], "name": call["function"]["name"], "arguments": ""}),
                );
            }
            let arguments = calls[index]["arguments"].as_str().unwrap().to_string()
                + call["function"]["arguments"].as_str().unwrap_or_default();
            calls[index]["arguments"] = json!(arguments);
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = Some(reason.to_string());
        }
    }
    (content, calls, finish, usage)
}

/// Folds Anthropic stream events into the `message` they describe.
fn fold_events(body: &str) -> Value {
    let mut message = Value::Null;
    let mut partial = String::new();
    for event in body.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let name = event
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap();
        let data: Value = serde_json::from_str(
            event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(data["type"], name, "the event name is the data's type");
        match name {
            "message_start" => message = data["message"].clone(),
            "content_block_start" => message["content"]
                .as_array_mut()
                .unwrap()
                .push(data["content_block"].clone()),
            "content_block_delta" => {
                let block = &mut message["content"][data["index"].as_u64().unwrap() as usize];
                match data["delta"]["type"].as_str().unwrap() {
                    "text_delta" => {
                        let text = block["text"].as_str().unwrap().to_string()
                            + data["delta"]["text"].as_str().unwrap();
                        block["text"] = json!(text);
                    }
                    "input_json_delta" => {
                        partial.push_str(data["delta"]["partial_json"].as_str().unwrap())
                    }
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                let block = &mut message["content"][data["index"].as_u64().unwrap() as usize];
                if !partial.is_empty() {
                    block["input"] = serde_json::from_str(&partial).unwrap();
                    partial.clear();
                }
            }
            "message_delta" => {
                message["stop_reason"] = data["delta"]["stop_reason"].clone();
                for (key, value) in data["usage"].as_object().unwrap() {
                    message["usage"][key] = value.clone();
                }
            }
            "message_stop" | "ping" => {}
            other => panic!("unexpected event {other}"),
        }
    }
    message
}

// ---- OpenAI-format clients → an Anthropic upstream ----

#[tokio::test]
async fn chat_to_anthropic_is_translated_and_priced() {
    let h = harness().await;
    let body = json!({"model": "claude/sonnet", "max_tokens": 50, "temperature": 0.2,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]});
    let response = h.chat(&body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-triage-model"), Some("claude/sonnet"));
    let cost = cost_header(&response);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    let choice = &answer["choices"][0];
    assert_eq!(
        choice["message"]["content"],
        "Mock answer from claude-model: hello there"
    );
    assert_eq!(choice["finish_reason"], "stop");
    // (3 + 2) system + (3 + 2) user in; six words out.
    assert_eq!(answer["usage"]["prompt_tokens"], 10);
    assert_eq!(answer["usage"]["completion_tokens"], 6);
    let expected = (10.0 * 3.0 + 6.0 * 15.0) / 1e6;
    assert!((answer["usage"]["cost"].as_f64().unwrap() - expected).abs() < 1e-15);
    assert!((cost - expected).abs() < 1e-9);

    let call = &h.upstream_calls("claude-model")[0];
    assert_eq!(call.path, "/v1/messages");
    assert_eq!(call.headers["x-api-key"], UPSTREAM_KEY);
    assert_eq!(call.headers["anthropic-version"], "2023-06-01");
    assert!(!call.headers.contains_key("authorization"));
    assert_eq!(
        call.body,
        json!({"model": "claude-model", "system": [{"type": "text", "text": "Be brief."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
            "max_tokens": 50, "temperature": 0.2})
    );
}

#[tokio::test]
async fn chat_to_anthropic_without_a_limit_uses_the_catalog_max_output() {
    let h = harness().await;
    assert_eq!(h.chat(&hello("claude/sonnet")).await.status(), 200);
    assert_eq!(
        h.upstream_calls("claude-model")[0].body["max_tokens"],
        64000
    );
}

#[tokio::test]
async fn chat_to_anthropic_streams_the_same_answer() {
    let h = harness().await;
    let whole: Value = h.chat(&hello("claude/sonnet")).await.json().await.unwrap();
    let mut body = hello("claude/sonnet");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = h.chat(&body).await;
    assert_eq!(header(&response, "content-type"), Some("text/event-stream"));
    let text = response.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let chunks = sse_json(&text);
    let (content, calls, finish, usage) = fold_chunks(&chunks);
    assert_eq!(
        content,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert!(calls.is_empty());
    assert_eq!(finish.as_deref(), Some("stop"));
    assert_eq!(usage["prompt_tokens"], whole["usage"]["prompt_tokens"]);
    assert_eq!(usage["cost"], whole["usage"]["cost"]);
    assert_eq!(h.upstream_calls("claude-model")[1].body["stream"], true);
}

#[tokio::test]
async fn chat_to_anthropic_with_tools_round_trips() {
    let h = harness().await;
    let mut body = json!({"model": "claude/sonnet", "tools": weather_tools(), "tool_choice": "required",
        "messages": [{"role": "user", "content": "weather in Paris?"}]});
    let answer: Value = h.chat(&body).await.json().await.unwrap();
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"city":"test"}"#);
    let sent = &h.upstream_calls("claude-model")[0].body;
    assert_eq!(sent["tool_choice"], json!({"type": "any"}));
    assert_eq!(
        sent["tools"][0]["input_schema"]["required"],
        json!(["city"])
    );

    body["stream"] = json!(true);
    let chunks = sse_json(&h.chat(&body).await.text().await.unwrap());
    let (_, calls, finish, _) = fold_chunks(&chunks);
    assert_eq!(calls[0]["arguments"], r#"{"city":"test"}"#);
    assert_eq!(finish.as_deref(), Some("tool_calls"));

    // The next turn: the call and its result go back as tool_use and tool_result blocks, which
    // the mock checks pair up, as Anthropic does.
    body["stream"] = json!(false);
    let messages = body["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "sunny"}));
    let response = h.chat(&body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Tool result: sunny"
    );
}

#[tokio::test]
async fn anthropic_cache_tokens_are_priced_at_their_own_rates() {
    let h = harness().await;
    h.fail(
        "claude-model",
        vec![Fault {
            usage: Some(json!({"input_tokens": 100, "output_tokens": 10,
                "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 200})),
            ..Fault::default()
        }],
    );
    let answer: Value = h.chat(&hello("claude/sonnet")).await.json().await.unwrap();
    let usage = &answer["usage"];
    assert_eq!(usage["prompt_tokens"], 1300);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 1000);
    assert_eq!(usage["prompt_tokens_details"]["cache_write_tokens"], 200);
    let expected = (100.0 * 3.0 + 1000.0 * 0.3 + 200.0 * 3.75 + 10.0 * 15.0) / 1e6;
    assert!((usage["cost"].as_f64().unwrap() - expected).abs() < 1e-15);
}

#[tokio::test]
async fn anthropic_overload_falls_back_to_an_openai_sibling_with_the_same_answer() {
    let h = harness().await;
    let direct: Value = h.chat(&hello("local/solo")).await.json().await.unwrap();
    h.fail("claude-model", vec![status(529), status(529)]);
    let response = h.chat(&hello("claude/sonnet")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-triage-model"), Some("local/solo"));
    assert_eq!(
        header(&response, "x-triage-fallbacks"),
        Some("claude/sonnet (529)")
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"],
        direct["choices"][0]["message"]
    );
    assert_eq!(answer["usage"], direct["usage"]);
    assert_eq!(
        h.upstream_calls("claude-model").len(),
        2,
        "retried once, then moved on"
    );
}

#[tokio::test]
async fn anthropic_client_errors_come_back_with_anthropics_message() {
    let h = harness().await;
    h.fail(
        "claude-model",
        vec![Fault {
            status: Some(400),
            message: Some("messages.0.content: too long".into()),
            ..Fault::default()
        }],
    );
    let response = h.chat(&hello("claude/sonnet")).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], "messages.0.content: too long");
    assert!(
        h.upstream_calls("solo-model").is_empty(),
        "no fallback for the client's fault"
    );
}

#[tokio::test]
async fn untranslatable_requests_skip_to_a_sibling_that_can_take_them() {
    let h = harness().await;
    let mut body = hello("claude/sonnet");
    body["n"] = json!(2);
    let response = h.chat(&body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-triage-model"), Some("local/solo"));
    assert_eq!(
        header(&response, "x-triage-fallbacks"),
        Some("claude/sonnet (untranslatable)")
    );
    assert!(
        h.upstream_calls("claude-model").is_empty(),
        "nothing was sent"
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["choices"].as_array().unwrap().len(), 2);
}

// ---- OpenAI-format clients → a Gemini upstream ----

#[tokio::test]
async fn chat_to_gemini_is_translated_and_priced() {
    let h = harness().await;
    let body = json!({"model": "gem/flash", "max_tokens": 50, "stop": "END",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]});
    let response = h.chat(&body).await;
    assert_eq!(response.status(), 200);
    let cost = cost_header(&response);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Mock answer from gemini-model: hello there"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["model"], "gemini-model");
    let expected = (10.0 * 0.5 + 6.0 * 3.0) / 1e6;
    assert!((cost - expected).abs() < 1e-9);
    let call = &h.gemini_calls("gemini-model")[0];
    assert_eq!(call.path, "/v1beta/models/gemini-model:generateContent");
    assert_eq!(call.headers["x-goog-api-key"], UPSTREAM_KEY);
    assert_eq!(
        call.body,
        json!({"contents": [{"role": "user", "parts": [{"text": "hello there"}]}],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"maxOutputTokens": 50, "stopSequences": ["END"]}})
    );
}

#[tokio::test]
async fn chat_to_gemini_streams_the_same_answer() {
    let h = harness().await;
    let whole: Value = h.chat(&hello("gem/flash")).await.json().await.unwrap();
    let mut body = hello("gem/flash");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let text = h.chat(&body).await.text().await.unwrap();
    let (content, _, finish, usage) = fold_chunks(&sse_json(&text));
    assert_eq!(
        content,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(finish.as_deref(), Some("stop"));
    assert_eq!(usage["total_tokens"], whole["usage"]["total_tokens"]);
    assert_eq!(usage["cost"], whole["usage"]["cost"]);
    let call = &h.gemini_calls("gemini-model")[1];
    assert_eq!(
        call.path,
        "/v1beta/models/gemini-model:streamGenerateContent?alt=sse"
    );
}

#[tokio::test]
async fn chat_to_gemini_tools_round_trip_with_thought_signatures() {
    let h = harness().await;
    let mut body = json!({"model": "gem/flash", "tools": weather_tools(),
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "messages": [{"role": "user", "content": "weather in Paris?"}]});
    body["stream"] = json!(true);
    let (_, calls, finish, _) = fold_chunks(&sse_json(&h.chat(&body).await.text().await.unwrap()));
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert_eq!(calls[0]["arguments"], r#"{"city":"test"}"#);
    body["stream"] = json!(false);
    let answer: Value = h.chat(&body).await.json().await.unwrap();
    let call = answer["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "get_weather");
    let sent = &h.gemini_calls("gemini-model")[1].body;
    assert_eq!(
        sent["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
    );
    // The mock, like Gemini 3, rejects a replayed call without its signature: the signature
    // must have come back inside the tool-call id.
    let messages = body["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "sunny"}));
    let response = h.chat(&body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Tool result: sunny"
    );
    let replayed = &h.gemini_calls("gemini-model")[2].body["contents"][1]["parts"][0];
    assert!(
        replayed["thoughtSignature"]
            .as_str()
            .unwrap()
            .ends_with("Ag=="),
        "{replayed}"
    );
    assert_eq!(
        h.gemini_calls("gemini-model")[2].body["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "get_weather", "response": {"content": "sunny"}})
    );
}

#[tokio::test]
async fn gemini_safety_blocks_are_content_filtered() {
    let h = harness().await;
    h.fail(
        "gemini-model",
        vec![Fault {
            finish_reason: Some("SAFETY".into()),
            ..Fault::default()
        }],
    );
    let answer: Value = h.chat(&hello("gem/flash")).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(answer["choices"][0]["message"]["content"], Value::Null);
}

#[tokio::test]
async fn gemini_rate_limits_are_retried_after_their_retry_info() {
    let h = harness().await;
    let limited = Fault {
        status: Some(429),
        ..Fault::default()
    };
    h.fail("gemini-model", vec![limited]);
    let response = h.chat(&hello("gem/flash")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(h.gemini_calls("gemini-model").len(), 2);
}

// ---- Anthropic clients on /v1/messages ----

fn messages_body(model: &str) -> Value {
    json!({"model": model, "max_tokens": 100, "system": "Be brief.",
        "messages": [{"role": "user", "content": "hello there"}]})
}

#[tokio::test]
async fn messages_pass_through_to_anthropic_untouched_but_for_the_model() {
    let h = harness().await;
    let body = json!({
        "model": "claude/sonnet",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "top_k": 5,
        "metadata": {"user_id": "u-1"},
    });
    let response = h
        .client
        .post(format!("{}/v1/messages", h.url))
        .header("x-api-key", ROUTER_KEY)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-triage-model"), Some("claude/sonnet"));
    assert!(header(&response, "x-triage-request-id").is_some());
    let cost = cost_header(&response);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["type"], "message");
    assert!(answer["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        answer["content"][0]["text"],
        "Mock answer from claude-model: hello there"
    );
    assert!((cost - (10.0 * 3.0 + 6.0 * 15.0) / 1e6).abs() < 1e-9);

    let call = &h.upstream_calls("claude-model")[0];
    let mut expected = body.clone();
    expected["model"] = json!("claude-model");
    assert_eq!(call.body, expected, "only `model` may change");
    let sent: Vec<_> = call.body.as_object().unwrap().keys().collect();
    let given: Vec<_> = body.as_object().unwrap().keys().collect();
    assert_eq!(sent, given, "field order is kept");
    assert_eq!(
        call.headers["anthropic-beta"],
        "interleaved-thinking-2025-05-14"
    );
    assert_eq!(
        call.headers["x-api-key"], UPSTREAM_KEY,
        "the router key stays home"
    );
}

#[tokio::test]
async fn messages_stream_passes_anthropic_events_through() {
    let h = harness().await;
    let mut body = messages_body("claude/sonnet");
    body["stream"] = json!(true);
    let response = h.messages(&body).await;
    assert_eq!(header(&response, "content-type"), Some("text/event-stream"));
    let text = response.text().await.unwrap();
    assert!(
        text.contains("event: ping"),
        "native events, pings included"
    );
    let message = fold_events(&text);
    assert_eq!(
        message["content"][0]["text"],
        "Mock answer from claude-model: hello there"
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["usage"]["output_tokens"], 6);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"triage_tokens_total{model="claude/sonnet",key="key-"#),
        "{metrics}"
    );
    // The running totals of message_start and message_delta are what is counted.
    for (direction, count) in [("input", "10"), ("output", "6")] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with(r#"triage_tokens_total{model="claude/sonnet""#)
                    && l.contains(&format!(r#"direction="{direction}""#))
            })
            .unwrap_or_else(|| panic!("no {direction} tokens in {metrics}"));
        assert!(line.ends_with(&format!(" {count}")), "{line}");
    }
}

#[tokio::test]
async fn messages_to_an_openai_upstream_are_translated_both_ways() {
    let h = harness().await;
    let response = h.messages(&messages_body("local/solo")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-triage-model"), Some("local/solo"));
    let cost = cost_header(&response);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["role"], "assistant");
    assert_eq!(
        answer["content"],
        json!([{"type": "text", "text": "Mock answer from solo-model: hello there"}])
    );
    assert_eq!(answer["stop_reason"], "end_turn");
    assert_eq!(answer["usage"]["input_tokens"], 10);
    assert_eq!(answer["usage"]["output_tokens"], 6);
    assert!((cost - (10.0 * 1.0 + 6.0 * 2.0) / 1e6).abs() < 1e-9);
    let call = &h.upstream_calls("solo-model")[0];
    assert_eq!(call.path, "/v1/chat/completions");
    assert_eq!(
        call.body,
        json!({"model": "solo-model", "messages": [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello there"}], "max_tokens": 100})
    );
}

#[tokio::test]
async fn messages_stream_from_an_openai_upstream_becomes_anthropic_events() {
    let h = harness().await;
    let whole: Value = h
        .messages(&messages_body("local/solo"))
        .await
        .json()
        .await
        .unwrap();
    let mut body = messages_body("local/solo");
    body["stream"] = json!(true);
    let text = h.messages(&body).await.text().await.unwrap();
    let message = fold_events(&text);
    assert_eq!(message["content"], whole["content"]);
    assert_eq!(message["stop_reason"], whole["stop_reason"]);
    assert_eq!(message["usage"], whole["usage"]);
    let sent = &h.upstream_calls("solo-model")[1].body;
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn messages_tools_through_an_openai_upstream() {
    let h = harness().await;
    let tools = json!([{"name": "get_weather", "description": "Forecast",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let mut body = json!({"model": "local/small", "max_tokens": 100, "tools": tools,
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "messages": [{"role": "user", "content": "weather in Paris?"}]});
    let answer: Value = h.messages(&body).await.json().await.unwrap();
    assert_eq!(answer["stop_reason"], "tool_use");
    let call = answer["content"][0].clone();
    assert_eq!(call["type"], "tool_use");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["input"], json!({"city": "test"}));
    let sent = &h.upstream_calls("small-model")[0].body;
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );

    body["stream"] = json!(true);
    let streamed = fold_events(&h.messages(&body).await.text().await.unwrap());
    assert_eq!(streamed["content"][0]["input"], json!({"city": "test"}));
    assert_eq!(streamed["stop_reason"], "tool_use");

    body["stream"] = json!(false);
    let messages = body["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "assistant", "content": [call]}));
    messages.push(json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call["id"], "content": "sunny"}]}));
    let answer: Value = h.messages(&body).await.json().await.unwrap();
    assert_eq!(answer["content"][0]["text"], "Tool result: sunny");
}

#[tokio::test]
async fn messages_to_gemini_are_translated_both_ways() {
    let h = harness().await;
    let answer: Value = h
        .messages(&messages_body("gem/flash"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["content"][0]["text"],
        "Mock answer from gemini-model: hello there"
    );
    let mut body = messages_body("gem/flash");
    body["stream"] = json!(true);
    let streamed = fold_events(&h.messages(&body).await.text().await.unwrap());
    assert_eq!(streamed["content"], answer["content"]);
    assert_eq!(streamed["usage"], answer["usage"]);
}

#[tokio::test]
async fn messages_fall_back_from_anthropic_529_to_an_openai_sibling() {
    let h = harness().await;
    h.fail("claude-model", vec![status(529), status(529)]);
    let response = h.messages(&messages_body("claude/sonnet")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-triage-model"), Some("local/solo"));
    assert_eq!(
        header(&response, "x-triage-fallbacks"),
        Some("claude/sonnet (529)")
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["type"], "message");
    assert_eq!(
        answer["content"][0]["text"],
        "Mock answer from solo-model: hello there"
    );

    h.fail("claude-model", vec![status(529), status(529)]);
    let mut body = messages_body("claude/sonnet");
    body["stream"] = json!(true);
    let streamed = fold_events(&h.messages(&body).await.text().await.unwrap());
    assert_eq!(streamed["content"], answer["content"]);
}

#[tokio::test]
async fn messages_errors_have_anthropics_shape() {
    let h = harness().await;
    let error = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["type"], "error");
        (
            status,
            body["error"]["type"].as_str().unwrap().to_string(),
            body["error"]["message"].as_str().unwrap().to_string(),
        )
    };
    let no_key = h
        .client
        .post(format!("{}/v1/messages", h.url))
        .json(&messages_body("claude/sonnet"))
        .send()
        .await
        .unwrap();
    assert_eq!(error(no_key).await.1, "authentication_error");
    let wrong_key = h
        .client
        .post(format!("{}/v1/messages", h.url))
        .header("x-api-key", "sk-wrong")
        .json(&messages_body("claude/sonnet"))
        .send()
        .await
        .unwrap();
    assert_eq!(error(wrong_key).await.0, 401);

    let (status, kind, message) = error(h.messages(&messages_body("nope/nothing")).await).await;
    assert_eq!((status, kind.as_str()), (404, "not_found_error"));
    assert!(message.contains("nope/nothing"));

    let mut no_limit = messages_body("claude/sonnet");
    no_limit.as_object_mut().unwrap().remove("max_tokens");
    let (status, kind, message) = error(h.messages(&no_limit).await).await;
    assert_eq!(
        (status, kind.as_str(), message.as_str()),
        (400, "invalid_request_error", "max_tokens: Field required")
    );

    h.fail(
        "claude-model",
        vec![Fault {
            status: Some(400),
            message: Some("messages: text content blocks must be non-empty".into()),
            ..Fault::default()
        }],
    );
    let (status, kind, message) = error(h.messages(&messages_body("claude/sonnet")).await).await;
    assert_eq!(status, 400);
    assert_eq!(kind, "invalid_request_error");
    assert_eq!(message, "messages: text content blocks must be non-empty");

    let mut server_tool = messages_body("local/solo");
    server_tool["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}]);
    let (status, kind, message) = error(h.messages(&server_tool).await).await;
    assert_eq!((status, kind.as_str()), (400, "invalid_request_error"));
    assert!(message.contains("web_search_20250305"), "{message}");
}

#[tokio::test]
async fn messages_overloaded_everywhere_is_an_overloaded_error() {
    let h = harness().await;
    h.fail("claude-model", vec![status(529), status(529)]);
    h.fail("solo-model", vec![status(503), status(503)]);
    let response = h.messages(&messages_body("claude/sonnet")).await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        header(&response, "x-triage-fallbacks"),
        Some("claude/sonnet (529), local/solo (503)")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");
}
