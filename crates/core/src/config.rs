//! `triage.toml`: the server's settings, its keys, and the providers and models it adds to or
//! changes in the built-in catalog.
//!
//! Configuration is data with defaults. It is parsed and validated once at start-up, and every
//! error names the file, the key and what is wrong. Resolving providers and models against the
//! built-in catalog happens in `catalog`; this module only reads and checks the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::profile::{Profile, Targets};

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI Chat Completions: OpenAI, xAI, DeepSeek, Mistral, Groq, Together, vLLM, Ollama…
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini `generateContent`.
    Gemini,
}

/// A provider as written in `catalog.toml` or the config: every field but the name optional, so
/// that a config entry can override single fields of a built-in provider.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    pub name: String,
    pub kind: Option<ProviderKind>,
    pub base_url: Option<String>,
    /// Environment variable holding the provider's API key; absent for keyless local servers.
    pub api_key_env: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub first_byte_timeout_ms: Option<u64>,
    pub total_timeout_ms: Option<u64>,
    /// Calls in flight to this provider at once (streams until their end); past it a request
    /// moves on to its next model at once. None: no bound.
    pub max_concurrent: Option<usize>,
}

/// A model as written in `catalog.toml` or the config (see [`ProviderEntry`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub id: String,
    pub provider: Option<String>,
    pub upstream: Option<String>,
    pub input_per_mtok: Option<f64>,
    pub output_per_mtok: Option<f64>,
    pub cached_input_per_mtok: Option<f64>,
    /// Price of input tokens written to the prompt cache (Anthropic bills cache writes above the
    /// input price); the input price when absent.
    pub cache_write_per_mtok: Option<f64>,
    pub context: Option<u32>,
    pub max_output: Option<u32>,
    pub tools: Option<bool>,
    pub vision: Option<bool>,
    pub json: Option<bool>,
    pub fallbacks: Option<Vec<String>>,
    pub price_date: Option<String>,
    pub price_source: Option<String>,
    pub first_byte_timeout_ms: Option<u64>,
    pub total_timeout_ms: Option<u64>,
    /// Public MMLU-Pro accuracy (0–1): mapped onto the classifier's ability scale for `auto`.
    pub mmlu_pro: Option<f32>,
    pub mmlu_pro_source: Option<String>,
    /// Public GPQA Diamond accuracy (0–1), the other benchmark mapped onto abilities.
    pub gpqa: Option<f32>,
    pub gpqa_source: Option<String>,
    /// Explicit abilities per skill name, overriding the mapping from public scores.
    pub abilities: Option<IndexMap<String, f32>>,
    pub ability_source: Option<String>,
    /// The model family (`claude`, `gpt-oss`, …) for the ability prior: a pricier model of a
    /// family starts at least at the level of its cheaper siblings. Default: the provider.
    pub family: Option<String>,
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the server listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub dispatch: DispatchConfig,
    #[serde(default)]
    pub classifier: ClassifierConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    /// The outcome log (`outcomes`): where requests and feedback are stored.
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Providers added to the built-in ones, or replacing fields of one with the same name.
    #[serde(default)]
    pub providers: Vec<ProviderEntry>,
    /// Models added to the built-in catalog, or overriding fields of one with the same id.
    #[serde(default)]
    pub models: Vec<ModelEntry>,
}

/// Who may call the router.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer keys accepted. Empty (and no `TRIAGE_KEYS`) means no authentication.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Keys for `/admin/*` (reload) and, like router keys, `GET /v1/usage`.
    #[serde(default)]
    pub admin_keys: Vec<String>,
    /// Keys that may read `/metrics` (admin keys may too): for a Prometheus scraper, which
    /// then sees per-key spend but can call nothing else.
    #[serde(default)]
    pub metrics_keys: Vec<String>,
    /// Keys that may read the dashboard (`/ui` and `/v1/dashboard/*`) but change nothing:
    /// no feedback, no keys, no reload. Admin keys may read it too.
    #[serde(default)]
    pub viewer_keys: Vec<String>,
    /// Serve `/metrics` to anyone, as when no keys are configured at all. Off by default:
    /// with authentication on, `/metrics` needs an admin or metrics key, because its series
    /// show every key's requests, tokens and spend.
    #[serde(default)]
    pub public_metrics: bool,
}

/// OpenTelemetry traces: one span per model request, exported over OTLP/HTTP (protobuf).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`); spans go to
    /// `{otlp_endpoint}/v1/traces`. Unset: no tracing at all.
    pub otlp_endpoint: Option<String>,
    /// Extra headers on every export (a vendor's API key, say).
    pub headers: std::collections::BTreeMap<String, String>,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Finished spans waiting for the exporter; when it is full new ones are dropped and
    /// counted in `triage_trace_spans_dropped_total`, and requests never wait.
    pub queue_capacity: usize,
    /// Spans per export request at most, and how long a span waits for its batch.
    pub batch_size: usize,
    pub export_interval_ms: u64,
    /// One export's time limit; a failed or timed-out export drops its spans (counted).
    pub export_timeout_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            headers: Default::default(),
            service_name: "triage".into(),
            queue_capacity: 4096,
            batch_size: 512,
            export_interval_ms: 1_000,
            export_timeout_ms: 5_000,
        }
    }
}

/// The outcome log: one row per request, feedback joined by request id.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Log requests at all.
    pub enabled: bool,
    /// SQLite file (WAL mode), created if missing.
    pub path: PathBuf,
    /// `postgres://user:password@host/db`: log to PostgreSQL instead of `path` (no TLS; for
    /// several router instances sharing one log).
    pub url: Option<String>,
    /// Keep prompt and answer text; `false` stores only numbers and ids.
    pub store_text: bool,
    /// Rows older than this are deleted at start-up and daily; 0 keeps everything.
    pub retention_days: u32,
    /// Outcomes waiting for the writer; when it is full new ones are dropped and counted in
    /// `triage_log_dropped_total`, and requests still succeed.
    pub queue_capacity: usize,
    /// How often virtual keys and their spend are read back from the log's database: the
    /// bound on how long a key changed on another instance takes to hold here.
    pub key_refresh_ms: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            enabled: true,
            path: PathBuf::from("triage.db"),
            url: None,
            store_text: true,
            retention_days: 90,
            queue_capacity: 10_000,
            key_refresh_ms: 1_000,
        }
    }
}

/// Limits on what a client may send, and how long it may take to send it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted request body; larger ones get 413 (at once when `Content-Length` says
    /// so, before any of the body is read).
    pub max_body_bytes: usize,
    /// Longest wait for a request's headers, and for the next request on an idle keep-alive
    /// connection (HTTP/1.1: hyper has one timer for both); the connection is then closed.
    pub header_timeout_ms: u64,
    /// Longest gap between two pieces of a request body; the request then gets 408.
    pub body_timeout_ms: u64,
    /// On SIGTERM or Ctrl-C, how long requests in flight may take to finish before the
    /// server closes what is left and exits (the outcome log is written either way).
    pub shutdown_grace_ms: u64,
    /// Model requests (chat, messages, route) in flight at once, streams until their last
    /// byte; one more gets 503 `overloaded` with `Retry-After` at once instead of a queue.
    pub max_concurrent_requests: usize,
    /// Prompts classified at once (CPU work, one blocking thread each); others wait their
    /// turn. 0: the number of CPU cores.
    pub classify_concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: default_max_body_bytes(),
            header_timeout_ms: 30_000,
            body_timeout_ms: 30_000,
            shutdown_grace_ms: 30_000,
            max_concurrent_requests: 2_048,
            classify_concurrency: 0,
        }
    }
}

/// Retries, backoff and circuit breakers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Retries on the same model after a retryable failure, before moving to the next sibling.
    pub max_retries: u32,
    /// First backoff; it doubles each retry, with full jitter.
    pub backoff_base_ms: u64,
    /// Cap on one backoff.
    pub backoff_max_ms: u64,
    /// A `Retry-After` longer than this moves on to the next sibling instead of waiting.
    pub max_retry_after_ms: u64,
    /// Consecutive failures that open a model's circuit.
    pub breaker_failures: u32,
    /// How long an open circuit stays open before one probe request is let through.
    pub breaker_cooldown_ms: u64,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            max_retries: 2,
            backoff_base_ms: 100,
            backoff_max_ms: 2_000,
            max_retry_after_ms: 10_000,
            breaker_failures: 5,
            breaker_cooldown_ms: 30_000,
        }
    }
}

/// Which classifier model adaptive routing (`auto`) uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// `builtin` (the model compiled into the binary, the default), a model directory, or a
    /// Hugging Face repo id (fetched through the hub cache).
    #[serde(default = "default_classifier_model")]
    pub model: String,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            model: default_classifier_model(),
        }
    }
}

fn default_classifier_model() -> String {
    crate::classifier::BUILTIN_MODEL.to_string()
}

/// How `auto` chooses: the quality targets of the profiles, as fractions of the best predicted
/// quality among the eligible models (`auto:best` takes the best; `auto:q0.8` sets its own
/// floor), which models it may choose, and how much traffic explores models not yet measured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    pub balanced_target: f32,
    pub cheap_target: f32,
    /// Model ids or globs (`local/*`) `auto` may choose; empty: every model. Lets a team keep
    /// `auto` among the models it pays for; explicit requests are not limited by it.
    pub models: Vec<String>,
    /// A list per profile (`"auto:best" = ["openai/*"]`), replacing `models` for that profile.
    pub profile_models: BTreeMap<String, Vec<String>>,
    /// The share of `auto` requests sent to a model whose abilities are still a prior, so that
    /// judged answers can turn the prior into a learned θ. 0 turns exploration off.
    pub explore_share: f64,
}

/// A small share: about one request in fifty pays for learning a new model.
pub const DEFAULT_EXPLORE_SHARE: f64 = 0.02;

impl Default for RoutingConfig {
    fn default() -> Self {
        let targets = Targets::default();
        RoutingConfig {
            balanced_target: targets.balanced,
            cheap_target: targets.cheap,
            models: Vec::new(),
            profile_models: BTreeMap::new(),
            explore_share: DEFAULT_EXPLORE_SHARE,
        }
    }
}

impl RoutingConfig {
    pub fn targets(&self) -> Targets {
        Targets {
            balanced: self.balanced_target,
            cheap: self.cheap_target,
        }
    }

    /// The patterns limiting `profile`: its own list, else `models`; empty means no limit.
    pub fn patterns(&self, profile: Profile) -> &[String] {
        self.profile_models
            .iter()
            .find(|(name, _)| Profile::parse(name) == Some(Ok(profile)))
            .map_or(&self.models, |(_, list)| list)
    }

    /// Whether `auto` under `profile` may choose the model `id`.
    pub fn allows(&self, profile: Profile, id: &str) -> bool {
        let patterns = self.patterns(profile);
        patterns.is_empty() || patterns.iter().any(|p| glob_matches(p, id))
    }

    /// Every pattern with its config key, for the start-up check that each names a model.
    pub fn keyed_patterns(&self) -> Vec<(String, &str)> {
        let global = self
            .models
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("routing.models[{i}]"), p.as_str()));
        let per_profile = self.profile_models.iter().flat_map(|(name, list)| {
            list.iter()
                .enumerate()
                .map(move |(i, p)| (format!("routing.profile_models.{name}[{i}]"), p.as_str()))
        });
        global.chain(per_profile).collect()
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (`/`
/// included) and everything else for itself.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or("");
    for part in parts {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            auth: AuthConfig::default(),
            limits: Limits::default(),
            dispatch: DispatchConfig::default(),
            classifier: ClassifierConfig::default(),
            routing: RoutingConfig::default(),
            log: LogConfig::default(),
            telemetry: TelemetryConfig::default(),
            providers: Vec::new(),
            models: Vec::new(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_string()
}

fn default_max_body_bytes() -> usize {
    10 * 1024 * 1024
}

/// A configuration error; its message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {file}: key `{key}`: {message}")]
    Invalid {
        file: PathBuf,
        key: String,
        message: String,
    },
}

/// The file `triage.toml` looked for in the working directory.
pub const DEFAULT_FILE: &str = "triage.toml";

/// Which config file to read: `--config`, else `TRIAGE_CONFIG`, else `./triage.toml` when it
/// exists; `None` means the built-in defaults. The second part says which rule found it.
pub fn discover(
    flag: Option<&Path>,
    env: Option<std::ffi::OsString>,
) -> Option<(PathBuf, &'static str)> {
    if let Some(path) = flag {
        return Some((path.to_path_buf(), "--config"));
    }
    if let Some(path) = env.filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(path), "TRIAGE_CONFIG"));
    }
    let local = Path::new(DEFAULT_FILE);
    local
        .is_file()
        .then(|| (local.to_path_buf(), "./triage.toml"))
}

impl Config {
    /// Reads and parses a config file. Semantic checks against the catalog come later, in
    /// `catalog::Catalog::build`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text, path)?;
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
        Ok(config)
    }

    /// Relative paths in a file mean "beside the file", wherever the process was started: the
    /// SQLite log, and a classifier directory that exists there (anything else stays a
    /// Hugging Face repo id, or `builtin`).
    fn resolve_paths(&mut self, dir: &Path) {
        if self.log.path.is_relative() {
            self.log.path = dir.join(&self.log.path);
        }
        let model = Path::new(&self.classifier.model);
        if model.is_relative() && dir.join(model).is_dir() {
            self.classifier.model = dir.join(model).display().to_string();
        }
    }

    /// Parses TOML text; `file` is only used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            key,
            message,
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| invalid("(syntax)".into(), e.to_string()))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            invalid(key, e.into_inner().to_string().trim_end().to_string())
        })?;
        config.check(file)?;
        Ok(config)
    }

    /// Checks that need no catalog.
    fn check(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            key: key.to_string(),
            message,
        };
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "listen",
                format!("`{}` is not an address like 127.0.0.1:8080", self.listen),
            ));
        }
        for (key, value) in [
            ("limits.max_body_bytes", self.limits.max_body_bytes as u64),
            ("limits.header_timeout_ms", self.limits.header_timeout_ms),
            ("limits.body_timeout_ms", self.limits.body_timeout_ms),
            ("limits.shutdown_grace_ms", self.limits.shutdown_grace_ms),
            (
                "limits.max_concurrent_requests",
                self.limits.max_concurrent_requests as u64,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be above 0".into()));
            }
        }
        if self.dispatch.breaker_failures == 0 {
            return Err(invalid(
                "dispatch.breaker_failures",
                "must be above 0".into(),
            ));
        }
        for (key, value) in [
            ("routing.balanced_target", self.routing.balanced_target),
            ("routing.cheap_target", self.routing.cheap_target),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(invalid(key, "must be between 0 and 1".into()));
            }
        }
        self.check_routing(file)?;
        if let Some(i) = self.auth.keys.iter().position(|k| k.trim().is_empty()) {
            return Err(invalid(&format!("auth.keys[{i}]"), "empty key".into()));
        }
        for (name, keys) in [
            ("admin_keys", &self.auth.admin_keys),
            ("metrics_keys", &self.auth.metrics_keys),
            ("viewer_keys", &self.auth.viewer_keys),
        ] {
            if let Some(i) = keys.iter().position(|k| k.trim().is_empty()) {
                return Err(invalid(&format!("auth.{name}[{i}]"), "empty key".into()));
            }
        }
        if self.log.queue_capacity == 0 {
            return Err(invalid("log.queue_capacity", "must be above 0".into()));
        }
        let t = &self.telemetry;
        for (key, value) in [
            ("telemetry.queue_capacity", t.queue_capacity as u64),
            ("telemetry.batch_size", t.batch_size as u64),
            ("telemetry.export_interval_ms", t.export_interval_ms),
            ("telemetry.export_timeout_ms", t.export_timeout_ms),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be above 0".into()));
            }
        }
        if let Some(endpoint) = &t.otlp_endpoint
            && url::Url::parse(endpoint).map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
        {
            return Err(invalid(
                "telemetry.otlp_endpoint",
                format!("`{endpoint}` is not an http(s) URL like http://localhost:4318"),
            ));
        }
        if let Some(url) = &self.log.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "log.url",
                "expected a PostgreSQL URL like postgres://user:password@host/db".into(),
            ));
        }
        Ok(())
    }

    /// `[routing]`'s share and lists; that each pattern names a model is checked against the
    /// catalog, in `catalog::Catalog::build`.
    fn check_routing(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, message: &str| ConfigError::Invalid {
            file: file.to_path_buf(),
            key,
            message: message.to_string(),
        };
        let share = self.routing.explore_share;
        if !(0.0..=1.0).contains(&share) {
            return Err(invalid(
                "routing.explore_share".into(),
                "must be between 0 and 1",
            ));
        }
        for name in self.routing.profile_models.keys() {
            if !matches!(Profile::parse(name), Some(Ok(_))) {
                return Err(invalid(
                    format!("routing.profile_models.{name}"),
                    "not a routing profile: use auto, auto:cheap, auto:best or auto:q<quality>",
                ));
            }
        }
        for (key, pattern) in self.routing.keyed_patterns() {
            if pattern.trim().is_empty() {
                return Err(invalid(key, "empty model pattern"));
            }
        }
        Ok(())
    }

    /// The accepted router keys: the file's plus those in `TRIAGE_KEYS` (comma separated).
    pub fn router_keys(&self, env_keys: Option<&str>) -> Vec<String> {
        let mut keys = self.auth.keys.clone();
        if let Some(env) = env_keys {
            keys.extend(
                env.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(String::from),
            );
        }
        keys.dedup();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("triage.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.limits.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(c.dispatch.max_retries, 2);
    }

    #[test]
    fn type_error_names_file_and_key() {
        let err = parse("[[models]]\nid = \"a/b\"\ninput_per_mtok = \"cheap\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("triage.toml"), "{err}");
        assert!(err.contains("models[0].input_per_mtok"), "{err}");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let err = parse("[auth]\nkey = [\"x\"]\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `key`"), "{err}");
    }

    #[test]
    fn bad_listen_address_is_rejected() {
        let err = parse("listen = \"localhost\"\n").unwrap_err().to_string();
        assert!(err.contains("key `listen`"), "{err}");
    }

    #[test]
    fn globs_match_whole_ids() {
        assert!(glob_matches("local/*", "local/small"));
        assert!(glob_matches("*", "openai/gpt-4.1"));
        assert!(glob_matches("openai/gpt-4.1*", "openai/gpt-4.1-mini"));
        assert!(glob_matches("*/gpt-oss-*", "groq/gpt-oss-20b"));
        assert!(glob_matches("openai/gpt-4.1", "openai/gpt-4.1"));
        assert!(!glob_matches("openai/gpt-4.1", "openai/gpt-4.1-mini"));
        assert!(!glob_matches("local/*", "openai/local"));
        assert!(!glob_matches("*-mini", "openai/gpt-4.1-mini-2"));
        assert!(!glob_matches("a*a", "a"), "the two ends may not overlap");
    }

    #[test]
    fn routing_lists_and_share_are_checked() {
        let c = parse(
            "[routing]\nmodels = [\"local/*\"]\n[routing.profile_models]\n\"auto:best\" = [\"openai/*\"]\n",
        )
        .unwrap();
        assert!(c.routing.allows(Profile::Balanced, "local/small"));
        assert!(!c.routing.allows(Profile::Balanced, "openai/gpt-4.1"));
        assert!(c.routing.allows(Profile::Best, "openai/gpt-4.1"));
        assert!(!c.routing.allows(Profile::Best, "local/small"));
        assert!(
            parse("")
                .unwrap()
                .routing
                .allows(Profile::Cheap, "any/model")
        );
        assert_eq!(
            parse("").unwrap().routing.explore_share,
            DEFAULT_EXPLORE_SHARE
        );

        let err = parse("[routing]\nexplore_share = 2\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("routing.explore_share"), "{err}");
        let err = parse("[routing.profile_models]\n\"auto:fast\" = [\"a/b\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("routing.profile_models.auto:fast"), "{err}");
        let err = parse("[routing]\nmodels = [\"a/b\", \" \"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("routing.models[1]"), "{err}");
    }

    #[test]
    fn env_keys_are_added() {
        let c = parse("[auth]\nkeys = [\"a\"]\n").unwrap();
        assert_eq!(c.router_keys(Some(" b, ,c")), vec!["a", "b", "c"]);
    }
}
