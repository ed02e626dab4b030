//! A bounded chaos soak through the release story's parts: the `triage` binary in front of the
//! binary's own `mock-upstream`, a primary model that fails in every way an upstream fails
//! before its first byte (500, 503, 429, a dropped connection, a first byte too slow, an
//! error that quotes the key), a healthy sibling, concurrent plain and streamed requests, and
//! a stream of malformed requests beside them. Then SIGTERM.
//!
//! It asserts what the README promises: no request lost when a healthy sibling exists, no 5xx
//! for bad input, no upstream key in any response or log line, memory bounded, and one log row
//! per authenticated request that reached a handler.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ROUTER_KEY: &str = "sk-triage-chaos";
const UPSTREAM_KEY: &str = "sk-Zq8XvT3kLw9RpN2bYc7HmQ4d";
/// Concurrent clients sending well-formed requests, and requests each.
const WORKERS: usize = 6;
const REQUESTS_PER_WORKER: usize = 250;
/// Resident memory the router may reach during the soak.
const RSS_LIMIT_KIB: u64 = 400 * 1024;

/// Kills the process when the test ends, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(args: &[&str], log: &Path, env: &[(&str, &str)]) -> Running {
    let log = std::fs::File::create(log).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_triage"));
    command
        .args(args)
        .env_remove("TRIAGE_KEYS")
        .env_remove("TRIAGE_CONFIG")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (name, value) in env {
        command.env(name, value);
    }
    Running(command.spawn().unwrap())
}

async fn wait_for(client: &reqwest::Client, url: &str) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if client.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered");
}

/// Every way the primary fails before its first byte, and two good answers, in a cycle.
fn faults() -> Vec<Value> {
    let cycle = [
        json!({"status": 500}),
        json!({"status": 503, "message": "overloaded, key {key} ({key_partial})"}),
        json!({"status": 429, "retry_after": "0"}),
        json!({"drop_after_chunks": 0}),
        json!({"delay_ms": 1500}),
        json!({"status": 502, "message": "upstream auth Bearer {key}"}),
        json!({}),
        json!({}),
    ];
    cycle.iter().cycle().take(1_600).cloned().collect()
}

fn config(mock_port: u16, port: u16, log: &Path, breaker_failures: u32) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"
[auth]
keys = ["{ROUTER_KEY}"]
[dispatch]
max_retries = 1
backoff_base_ms = 1
backoff_max_ms = 5
breaker_failures = {breaker_failures}
breaker_cooldown_ms = 200
[log]
path = "{log}"
[routing]
models = ["chaos/*"]
[[providers]]
name = "chaos"
kind = "openai"
base_url = "http://127.0.0.1:{mock_port}/v1"
api_key_env = "CHAOS_UPSTREAM_KEY"
first_byte_timeout_ms = 400
total_timeout_ms = 5000
[[models]]
id = "chaos/primary"
provider = "chaos"
upstream = "primary"
input_per_mtok = 0.1
output_per_mtok = 0.4
context = 32000
fallbacks = ["chaos/sibling"]
[[models]]
id = "chaos/sibling"
provider = "chaos"
upstream = "sibling"
input_per_mtok = 1.0
output_per_mtok = 4.0
context = 32000
"#,
        log = log.display()
    )
}

/// No whole key, and no 8-character run of it, in `text`.
fn assert_no_key(text: &str, what: &str) {
    for start in 0..=UPSTREAM_KEY.len() - 8 {
        let fragment = &UPSTREAM_KEY[start..start + 8];
        assert!(
            !text.contains(fragment),
            "{what} holds `{fragment}`: {text}"
        );
    }
}

/// One well-formed request; panics unless it was answered in full.
async fn well_formed(client: &reqwest::Client, url: &str, i: usize) {
    let stream = i % 2 == 1;
    let body = json!({"model": "chaos/primary", "stream": stream,
        "messages": [{"role": "user", "content": format!("request {i}: say hello")}]});
    let response = client
        .post(url)
        .bearer_auth(ROUTER_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = format!("{:?}", response.headers());
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "request {i} was lost: {text}");
    assert_no_key(&headers, "headers");
    assert_no_key(&text, "an answer");
    if stream {
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    } else {
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert!(
            answer["choices"][0]["message"]["content"].is_string(),
            "{answer}"
        );
    }
}

/// Bad input: (body, content type, key, whether a handler logs it). Every one must get a 4xx
/// with an error body. (A body over the limit is refused before it is read, so a client that
/// writes all of it first sees the connection close: `tests/hostile_clients.rs` covers it.)
fn malformed() -> Vec<(Vec<u8>, &'static str, &'static str, bool)> {
    let json = "application/json";
    vec![
        (b"{not json".to_vec(), json, ROUTER_KEY, true),
        (b"[1, 2, 3]".to_vec(), json, ROUTER_KEY, true),
        (br#"{"messages": []}"#.to_vec(), json, ROUTER_KEY, true),
        (
            br#"{"model": 7, "messages": []}"#.to_vec(),
            json,
            ROUTER_KEY,
            true,
        ),
        (
            br#"{"model": "chaos/primary", "messages": "hi"}"#.to_vec(),
            json,
            ROUTER_KEY,
            true,
        ),
        (
            br#"{"model": "nobody/none", "messages": [{"role": "user", "content": "x"}]}"#.to_vec(),
            json,
            ROUTER_KEY,
            true,
        ),
        (
            br#"{"model": "chaos/primary", "stream": "yes", "messages": []}"#.to_vec(),
            json,
            ROUTER_KEY,
            true,
        ),
        (vec![0xff, 0xfe, 0x00, 0x7b], json, ROUTER_KEY, true),
        (
            br#"{"model": "chaos/primary", "messages": [{"role": "user", "content": "x"}]}"#
                .to_vec(),
            json,
            "sk-wrong",
            false,
        ),
    ]
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_with_the_breaker_loses_nothing_and_leaks_nothing() {
    soak(4).await;
}

/// A breaker that never opens: every request meets the primary's faults first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_without_the_breaker_loses_nothing_and_leaks_nothing() {
    soak(1_000_000).await;
}

async fn soak(breaker_failures: u32) {
    let dir = tempfile::tempdir().unwrap();
    let (mock_port, port) = (free_port(), free_port());
    let db = dir.path().join("triage.db");
    let config_path = dir.path().join("triage.toml");
    std::fs::write(&config_path, config(mock_port, port, &db, breaker_failures)).unwrap();
    let mock_listen = format!("127.0.0.1:{mock_port}");
    let _mock = spawn(
        &[
            "mock-upstream",
            "--listen",
            &mock_listen,
            "--api-key",
            UPSTREAM_KEY,
        ],
        &dir.path().join("mock.log"),
        &[],
    );
    let serve_log = dir.path().join("serve.log");
    let mut serve = spawn(
        &["serve", "--config", config_path.to_str().unwrap()],
        &serve_log,
        &[("CHAOS_UPSTREAM_KEY", UPSTREAM_KEY)],
    );
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_for(&client, &format!("http://{mock_listen}/v1/models")).await;
    wait_for(&client, &format!("{base}/health")).await;
    let scripted = client
        .post(format!("http://{mock_listen}/_mock/script"))
        .json(&json!({"model": "primary", "steps": faults()}))
        .send()
        .await
        .unwrap();
    assert!(scripted.status().is_success());

    let url = Arc::new(format!("{base}/v1/chat/completions"));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let pid = serve.0.id();
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (client, url, peak) = (client.clone(), url.clone(), peak_rss.clone());
        workers.push(tokio::spawn(async move {
            for r in 0..REQUESTS_PER_WORKER {
                well_formed(&client, &url, w * REQUESTS_PER_WORKER + r).await;
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
            }
        }));
    }
    let mut logged_malformed = 0;
    for round in 0..6 {
        for (body, content_type, key, logged) in malformed() {
            let response = client
                .post(url.as_str())
                .bearer_auth(key)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let text = response.text().await.unwrap();
            assert!(status.is_client_error(), "round {round}: {status} {text}");
            let error: Value = serde_json::from_str(&text).unwrap();
            assert!(error["error"]["message"].is_string(), "{error}");
            logged_malformed += u64::from(logged);
        }
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let soak = started.elapsed();
    let peak = peak_rss.load(Ordering::Relaxed);
    assert!(peak < RSS_LIMIT_KIB, "RSS reached {peak} KiB");
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_no_key(&metrics, "/metrics");

    // SIGTERM: the process exits by itself and writes every outcome first.
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = serve.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(&serve_log).unwrap();
    assert_no_key(&log, "the server log");
    let db = rusqlite::Connection::open(&db).unwrap();
    let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64;
    let answered = (WORKERS * REQUESTS_PER_WORKER) as u64;
    assert_eq!(
        count("SELECT count(*) FROM outcomes WHERE status = 200"),
        answered
    );
    assert_eq!(
        count("SELECT count(*) FROM outcomes"),
        answered + logged_malformed
    );
    // The faults were really met: answers came from the sibling after a failure.
    let fell_back = count("SELECT count(*) FROM outcomes WHERE fallbacks != ''");
    assert!(fell_back > 0);
    eprintln!(
        "chaos soak (breaker after {breaker_failures} failures): {answered} answered, \
         {fell_back} after a fallback, + {logged_malformed} malformed logged, in {soak:?}; \
         peak RSS {} MiB",
        peak / 1024
    );
}
