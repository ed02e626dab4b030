//! Clients that misbehave, found by the fault campaign: half-sent headers, idle keep-alive
//! connections, stalled bodies, bodies over the limit, callers without a key, a scrape of
//! `/metrics`, wrong methods, and SIGTERM while a client holds half a request. Each through
//! the real server over raw TCP where an HTTP client would hide the misbehaviour.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use triage_mock::Fault;

/// The standard config with header and body timeouts of 300 ms.
async fn short_timeouts() -> Harness {
    let config = CONFIG.replace(
        "max_body_bytes = 65536",
        "max_body_bytes = 65536\nheader_timeout_ms = 300\nbody_timeout_ms = 300",
    );
    Harness::start_with(&config).await
}

async fn connect(h: &Harness) -> TcpStream {
    TcpStream::connect(h.url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Everything the server sends until it closes the connection, and how long that took; fails
/// if it is still open after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        // A reset counts as closed too.
        let _ = stream.read_to_end(&mut received).await;
    })
    .await;
    assert!(
        read.is_ok(),
        "the connection was still open after {limit:?}"
    );
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

/// The JSON body of a raw HTTP/1.1 response.
fn json_body(response: &str) -> Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

#[tokio::test]
async fn half_sent_headers_are_cut_off_after_the_header_timeout() {
    let h = short_timeouts().await;
    let mut stream = connect(&h).await;
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: triage\r\n")
        .await
        .unwrap();
    let (_, waited) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(waited >= Duration::from_millis(250), "{waited:?}");

    // A connection that sends nothing at all is cut off the same way.
    let mut silent = connect(&h).await;
    read_until_closed(&mut silent, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let h = short_timeouts().await;
    let mut stream = connect(&h).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: triage\r\n\r\n")
        .await
        .unwrap();
    let (received, waited) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
}

#[tokio::test]
async fn a_stalled_body_gets_408_in_the_openai_shape() {
    let h = short_timeouts().await;
    let mut stream = connect(&h).await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: triage\r\nAuthorization: Bearer {ROUTER_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (received, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(received.starts_with("HTTP/1.1 408"), "{received}");
    assert_eq!(json_body(&received)["error"]["code"], "request_timeout");
}

#[tokio::test]
async fn a_body_declared_over_the_limit_is_refused_before_it_is_sent() {
    // Default body timeout (30 s): an answer within 5 s means the body was never waited for.
    let h = Harness::start("").await;
    for (path, shape) in [
        ("/v1/chat/completions", "openai"),
        ("/v1/messages", "anthropic"),
    ] {
        let mut stream = connect(&h).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: triage\r\nAuthorization: Bearer {ROUTER_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let (received, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(received.starts_with("HTTP/1.1 413"), "{received}");
        let body = json_body(&received);
        if shape == "openai" {
            assert_eq!(body["error"]["code"], "request_too_large", "{body}");
        } else {
            assert_eq!(body["type"], "error", "{body}");
            assert_eq!(body["error"]["type"], "request_too_large", "{body}");
        }
    }
}

#[tokio::test]
async fn requests_hyper_cannot_parse_get_an_error_body_too() {
    let h = Harness::start("").await;
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: triage\r\n\r\n",
        "a".repeat(70_000)
    );
    let huge_header = format!(
        "GET /health HTTP/1.1\r\nHost: triage\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1_000_000)
    );
    let cases: [(&[u8], &str, &str); 4] = [
        (
            b"GET /health HTTP/1.1\r\nHost: triage\r\nX-Bad: a\0b\r\n\r\n",
            "400",
            "bad_request",
        ),
        (b"NOT AN HTTP REQUEST\r\n\r\n", "400", "bad_request"),
        (long_uri.as_bytes(), "414", "uri_too_long"),
        (huge_header.as_bytes(), "431", "header_too_large"),
    ];
    for (request, status, code) in cases {
        let mut stream = connect(&h).await;
        // The server may answer and close before a large request is all sent.
        let _ = stream.write_all(request).await;
        let (received, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(
            received.starts_with(&format!("HTTP/1.1 {status} ")),
            "{received}"
        );
        assert!(
            received.contains("content-type: application/json\r\n"),
            "{received}"
        );
        let body = json_body(&received);
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }
    // The server still answers well-formed requests.
    let ok = reqwest::get(format!("{}/health", h.url)).await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn callers_without_a_valid_key_write_no_log_rows() {
    let dir = tempfile::tempdir().unwrap();
    let log = format!(
        "[log]\npath = \"{}\"\n",
        dir.path().join("triage.db").display()
    );
    let h = Harness::start(&log).await;
    let url = format!("{}/v1/chat/completions", h.url);
    let body = hello("local/small");
    let anonymous = h.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = h
        .client
        .post(&url)
        .bearer_auth("sk-wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(h.chat(&body).await.status(), 200);

    h.state.outcomes.as_ref().unwrap().flush().await;
    let db = rusqlite::Connection::open(dir.path().join("triage.db")).unwrap();
    let rows: i64 = db
        .query_row("SELECT count(*) FROM outcomes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1, "only the authenticated request is logged");
}

#[tokio::test]
async fn metrics_need_a_metrics_or_admin_key_when_authentication_is_on() {
    let h = Harness::start("").await;
    assert_eq!(h.chat(&hello("local/small")).await.status(), 200);
    let url = format!("{}/metrics", h.url);
    let anonymous = h.client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    // A router key calls models; it does not read everyone's spend.
    let router = h.get("/metrics").await;
    assert_eq!(router.status(), 401);
    assert!(h.metrics().await.contains("triage_requests_total"));

    let open = CONFIG.replace(
        r#"metrics_keys = ["sk-triage-metrics"]"#,
        "public_metrics = true",
    );
    let h = Harness::start_with(&open).await;
    assert_eq!(
        h.client
            .get(format!("{}/metrics", h.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_wrong_method_gets_405_in_the_endpoint_error_shape() {
    let h = Harness::start("").await;
    let messages = h.get("/v1/messages").await;
    assert_eq!(messages.status(), 405);
    let body: Value = messages.json().await.unwrap();
    assert_eq!(body["type"], "error", "Anthropic's shape: {body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");

    let chat = h.get("/v1/chat/completions").await;
    assert_eq!(chat.status(), 405);
    let body: Value = chat.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
}

/// Kills the process when the test ends, pass or fail.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sigterm_exits_within_the_grace_period_while_a_client_holds_half_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("triage.toml");
    // A header timeout far longer than the grace period: the grace period must end it.
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[limits]\nheader_timeout_ms = 600000\n\
             shutdown_grace_ms = 500\n[log]\npath = \"triage.db\"\n"
        ),
    )
    .unwrap();
    let mut serve = Running(
        Command::new(env!("CARGO_BIN_EXE_triage"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env_remove("TRIAGE_KEYS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let address = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let mut stream = loop {
        if let Ok(stream) = TcpStream::connect(&address).await {
            break stream;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "serve never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: triage\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let kill = Command::new("kill")
        .args(["-TERM", &serve.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = serve.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    assert!(signalled.elapsed() < Duration::from_secs(5));
    // The log was opened beside the config and closed cleanly.
    assert!(dir.path().join("triage.db").is_file());
}

#[tokio::test]
async fn past_max_concurrent_requests_one_more_is_shed_at_once_with_retry_after() {
    let config = CONFIG.replace(
        "max_body_bytes = 65536",
        "max_body_bytes = 65536\nmax_concurrent_requests = 2",
    );
    let h = std::sync::Arc::new(Harness::start_with(&config).await);
    // Two streams that take 600 ms hold both permits until their last byte.
    let slow = Fault {
        chunk_delay_ms: Some(150),
        ..Fault::default()
    };
    h.fail("solo-model", vec![slow.clone(), slow]);
    let mut body = hello("local/solo");
    body["stream"] = serde_json::json!(true);
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let (h, body) = (h.clone(), body.clone());
            tokio::spawn(async move { h.chat(&body).await.text().await.unwrap() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let shed = h.chat(&hello("local/small")).await;
    assert_eq!(shed.status(), 503);
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "shed at once"
    );
    assert_eq!(header(&shed, "retry-after"), Some("1"));
    let error: Value = shed.json().await.unwrap();
    assert_eq!(error["error"]["code"], "overloaded", "{error}");
    // /v1/messages is refused in Anthropic's shape; /health still answers.
    let messages = h
        .messages(
            &serde_json::json!({"model": "local/small", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(messages.status(), 503);
    let error: Value = messages.json().await.unwrap();
    assert_eq!(error["error"]["type"], "overloaded_error", "{error}");
    assert_eq!(h.get("/health").await.status(), 200);

    for holder in holders {
        let text = holder.await.unwrap();
        assert!(text.contains("[DONE]"), "the held streams finish: {text}");
    }
    assert_eq!(h.chat(&hello("local/small")).await.status(), 200);
    assert!(h.metrics().await.contains("triage_shed_total 2"));
}

#[tokio::test]
async fn a_provider_at_max_concurrent_sends_requests_to_their_next_model_at_once() {
    let config = r#"
[auth]
keys = ["sk-triage-test"]
metrics_keys = ["sk-triage-metrics"]
[[providers]]
name = "local"
kind = "openai"
base_url = "MOCK_URL"
api_key_env = "LOCAL_API_KEY"
max_concurrent = 1
[[providers]]
name = "spare"
kind = "openai"
base_url = "MOCK_URL"
api_key_env = "LOCAL_API_KEY"
[[models]]
id = "local/a"
provider = "local"
upstream = "a-model"
input_per_mtok = 1.0
output_per_mtok = 2.0
context = 8000
fallbacks = ["spare/b"]
[[models]]
id = "local/c"
provider = "local"
upstream = "c-model"
input_per_mtok = 1.0
output_per_mtok = 2.0
context = 8000
[[models]]
id = "spare/b"
provider = "spare"
upstream = "b-model"
input_per_mtok = 1.0
output_per_mtok = 2.0
context = 8000
"#;
    let h = std::sync::Arc::new(Harness::start_with(config).await);
    h.fail(
        "a-model",
        vec![Fault {
            chunk_delay_ms: Some(150),
            ..Fault::default()
        }],
    );
    let mut body = hello("local/a");
    body["stream"] = serde_json::json!(true);
    let holder = {
        let h = h.clone();
        tokio::spawn(async move { h.chat(&body).await.text().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The one slot is taken: local/a moves on to spare/b without calling local.
    let moved = h.chat(&hello("local/a")).await;
    assert_eq!(moved.status(), 200);
    assert_eq!(header(&moved, "x-triage-model"), Some("spare/b"));
    assert_eq!(
        header(&moved, "x-triage-fallbacks"),
        Some("local/a (provider_busy)")
    );
    // A model with nowhere to go gets 503 at once.
    let busy = h.chat(&hello("local/c")).await;
    assert_eq!(busy.status(), 503);
    assert_eq!(header(&busy, "retry-after"), Some("1"));
    let error: Value = busy.json().await.unwrap();
    assert_eq!(error["error"]["code"], "upstream_busy", "{error}");
    assert!(h.upstream_calls("c-model").is_empty());

    assert!(holder.await.unwrap().contains("[DONE]"));
    assert_eq!(h.chat(&hello("local/c")).await.status(), 200);
}

#[tokio::test]
async fn a_client_that_leaves_mid_request_is_still_logged() {
    let dir = tempfile::tempdir().unwrap();
    let log = format!(
        "[log]\npath = \"{}\"\n",
        dir.path().join("triage.db").display()
    );
    let h = Harness::start(&log).await;
    h.fail(
        "solo-model",
        vec![Fault {
            delay_ms: Some(1_500),
            ..Fault::default()
        }],
    );
    // The client gives up after 200 ms, while triage waits for the upstream.
    let gave_up = h
        .client
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(ROUTER_KEY)
        .timeout(Duration::from_millis(200))
        .json(&hello("local/solo"))
        .send()
        .await;
    assert!(gave_up.is_err());
    let db = dir.path().join("triage.db");
    let started = Instant::now();
    let rows = loop {
        h.state.outcomes.as_ref().unwrap().flush().await;
        let rows: Vec<(i64, String)> = rusqlite::Connection::open(&db)
            .unwrap()
            .prepare("SELECT status, requested FROM outcomes")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        if !rows.is_empty() || started.elapsed() > Duration::from_secs(3) {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rows, vec![(499, "local/solo".to_string())]);
}
