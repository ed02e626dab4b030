//! Misbehaving upstreams found by the fault campaign: an upstream that echoes its key in a
//! stream's error event or in a 400 body, a stream closed cleanly mid-answer (no `[DONE]`),
//! and a model that always dies after its first byte. Each through the real server and the
//! fake upstream's fault scripting.

mod common;

use common::*;
use serde_json::{Value, json};
use triage_mock::Fault;

/// What the fake upstream quotes of its key in the tests below (OpenAI's partial form).
const KEY_HEAD: &str = "sk-upstr";

fn streaming(model: &str) -> Value {
    let mut body = hello(model);
    body["stream"] = json!(true);
    body
}

fn echoing_stream_error(after: usize) -> Fault {
    Fault {
        stream_error_after: Some(after),
        message: Some("bad auth header Bearer {key} ({key_partial})".into()),
        ..Fault::default()
    }
}

fn assert_no_key(text: &str) {
    assert!(!text.contains(UPSTREAM_KEY), "{text}");
    assert!(!text.contains(KEY_HEAD), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
}

#[tokio::test]
async fn a_streamed_error_event_never_carries_the_upstream_key() {
    let h = Harness::start("").await;
    // After two chunks: the client gets an error event, scrubbed.
    h.fail("solo-model", vec![echoing_stream_error(2)]);
    let response = h.chat(&streaming("local/solo")).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert_no_key(&text);
    let events = sse_data(&text);
    let error: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bad auth header"),
        "{error}"
    );

    // Before the first byte, with no sibling: the final error message, scrubbed too.
    h.fail("solo-model", vec![echoing_stream_error(0); 2]);
    let response = h.chat(&streaming("local/solo")).await;
    assert_eq!(response.status(), 502);
    assert_no_key(&response.text().await.unwrap());
    assert_no_key(&h.metrics().await);
}

#[tokio::test]
async fn a_partial_key_in_an_error_body_is_masked() {
    let h = Harness::start("").await;
    let quoting = Fault {
        status: Some(400),
        message: Some("Invalid request for key {key_partial}".into()),
        ..Fault::default()
    };
    h.fail("solo-model", vec![quoting]);
    let response = h.chat(&hello("local/solo")).await;
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert_no_key(&body);
    assert!(body.contains("Invalid request for key ***"), "{body}");
}

#[tokio::test]
async fn a_stream_closed_mid_answer_ends_with_an_error_and_is_logged_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[log]\npath = \"{}\"\n",
        dir.path().join("triage.db").display()
    );
    let h = Harness::start(&config).await;
    let clean_close = Fault {
        close_after_chunks: Some(3),
        ..Fault::default()
    };
    let mid_event = Fault {
        close_mid_event: true,
        ..clean_close.clone()
    };
    for fault in [clean_close, mid_event] {
        h.fail("solo-model", vec![fault.clone()]);
        let response = h.chat(&streaming("local/solo")).await;
        assert_eq!(response.status(), 200, "the answer had started");
        let events = sse_data(&response.text().await.unwrap());
        assert!(
            !events.iter().any(|e| e == "[DONE]"),
            "{fault:?}: {events:?}"
        );
        let error: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert_eq!(error["error"]["code"], "truncated_upstream", "{fault:?}");
    }

    // The same cut under /v1/messages: an Anthropic error event, no invented end_turn.
    h.fail(
        "solo-model",
        vec![Fault {
            close_after_chunks: Some(3),
            ..Fault::default()
        }],
    );
    let response = h
        .messages(
            &json!({"model": "local/solo", "max_tokens": 100, "stream": true,
            "messages": [{"role": "user", "content": "hello there"}]}),
        )
        .await;
    let text = response.text().await.unwrap();
    assert!(text.contains("event: error"), "{text}");
    assert!(
        !text.contains("message_stop") && !text.contains("end_turn"),
        "{text}"
    );

    h.state.outcomes.as_ref().unwrap().flush().await;
    let db = rusqlite::Connection::open(dir.path().join("triage.db")).unwrap();
    let mut rows = db
        .prepare("SELECT status, signals FROM outcomes")
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect::<Vec<_>>();
    rows.sort();
    assert_eq!(rows.len(), 3);
    for (status, signals) in rows {
        assert_eq!(status, 502);
        assert!(signals.contains("truncated_upstream"), "{signals}");
    }
}

#[tokio::test]
async fn a_model_that_always_dies_mid_stream_opens_its_circuit() {
    let h = Harness::start("").await;
    // breaker_failures = 3: three streams that start and then die.
    let dies = Fault {
        drop_after_chunks: Some(2),
        ..Fault::default()
    };
    h.fail("solo-model", vec![dies; 3]);
    for _ in 0..3 {
        let response = h.chat(&streaming("local/solo")).await;
        assert_eq!(response.status(), 200);
        let _ = response.text().await;
    }
    let response = h.chat(&streaming("local/solo")).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "circuit_open", "{body}");
    assert_eq!(h.upstream_calls("solo-model").len(), 3);
}

#[tokio::test]
async fn streams_that_end_well_keep_the_circuit_closed() {
    let h = Harness::start("").await;
    for _ in 0..5 {
        let response = h.chat(&streaming("local/solo")).await;
        let events = sse_data(&response.text().await.unwrap());
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    }
    assert!(
        h.metrics()
            .await
            .contains(r#"triage_circuit_state{model="local/solo"} 0"#)
    );
}
