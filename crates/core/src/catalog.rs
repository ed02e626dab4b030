//! The models triage can route to: who serves them, what they cost, what they can do.
//!
//! The built-in catalog is a data file (`catalog.toml`) compiled into the binary; the config file
//! adds providers and models or overrides any of their fields. The result is validated once and
//! then read-only. This module knows prices and capabilities; it does no I/O besides reading the
//! API key environment variables named by providers.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{self, Config, ConfigError, glob_matches};
pub use crate::config::{ModelEntry, ProviderEntry, ProviderKind};

/// The built-in catalog, as shipped.
pub const BUILTIN: &str = include_str!("../../../catalog.toml");

/// The shape of `catalog.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    providers: Vec<ProviderEntry>,
    #[serde(default)]
    models: Vec<ModelEntry>,
}

/// An upstream API key. Its `Debug` never shows the value, so it cannot leak through a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Connect, first-byte and total time limits for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Until the response headers (non-streaming) or the first SSE event (streaming).
    pub first_byte: Duration,
    pub total: Duration,
}

/// A resolved provider.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_key_env: Option<String>,
    /// The key read from `api_key_env` at start-up, if the variable was set.
    pub api_key: Option<ApiKey>,
    pub timeouts: Timeouts,
    /// `max_concurrent`: calls in flight at once, if bounded.
    pub max_concurrent: Option<usize>,
}

/// A resolved model: everything the router needs to pick, call and price it.
#[derive(Debug, Clone)]
pub struct Model {
    pub id: String,
    pub provider: String,
    pub upstream: String,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    pub cached_input_per_mtok: Option<f64>,
    pub cache_write_per_mtok: Option<f64>,
    pub context: u32,
    pub max_output: Option<u32>,
    pub tools: bool,
    pub vision: bool,
    pub json: bool,
    pub fallbacks: Vec<String>,
    pub price_date: Option<String>,
    pub price_source: Option<String>,
    /// The provider's timeouts with this model's overrides applied.
    pub timeouts: Timeouts,
    pub mmlu_pro: Option<f32>,
    pub mmlu_pro_source: Option<String>,
    pub gpqa: Option<f32>,
    pub gpqa_source: Option<String>,
    pub abilities: Option<IndexMap<String, f32>>,
    pub ability_source: Option<String>,
    /// The family the ability prior groups siblings by (default: the provider's name).
    pub family: String,
}

/// Token counts of one answer, as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All input tokens, cached ones included (OpenAI's convention).
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The part of `prompt_tokens` served from the provider's prompt cache.
    pub cached_tokens: u64,
    /// The part of `prompt_tokens` written to the provider's prompt cache.
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Reads an OpenAI `usage` object; `None` when it is absent or null.
    pub fn from_openai(usage: &Value) -> Option<Usage> {
        let obj = usage.as_object()?;
        let count = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
        let details = obj.get("prompt_tokens_details");
        Some(Usage {
            prompt_tokens: count(obj.get("prompt_tokens")),
            completion_tokens: count(obj.get("completion_tokens")),
            cached_tokens: count(details.and_then(|d| d.get("cached_tokens"))),
            cache_write_tokens: count(details.and_then(|d| d.get("cache_write_tokens"))),
        })
    }

    /// The OpenAI `usage` object for these counts. Cache reads and writes go in
    /// `prompt_tokens_details` (`cached_tokens`, and OpenRouter's `cache_write_tokens`).
    pub fn to_openai(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {
                "cached_tokens": self.cached_tokens,
                "cache_write_tokens": self.cache_write_tokens,
            },
        })
    }
}

impl Model {
    /// The US$ cost of an answer with this usage, at catalog prices. Cached input tokens are
    /// charged at the cached price and cache writes at the cache-write price, where the model
    /// has them.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let written = usage.cache_write_tokens.min(usage.prompt_tokens - cached);
        let plain = usage.prompt_tokens - cached - written;
        let cached_price = self.cached_input_per_mtok.unwrap_or(self.input_per_mtok);
        let write_price = self.cache_write_per_mtok.unwrap_or(self.input_per_mtok);
        let input = plain as f64 * self.input_per_mtok
            + cached as f64 * cached_price
            + written as f64 * write_price;
        (input + usage.completion_tokens as f64 * self.output_per_mtok) / 1e6
    }

    /// The entry of this model in `GET /v1/models`: OpenAI's list shape plus OpenRouter-style
    /// per-token `pricing` strings, `context_length` and capabilities.
    pub fn to_openai_json(&self) -> Value {
        let mut pricing = json!({
            "prompt": per_token(self.input_per_mtok),
            "completion": per_token(self.output_per_mtok),
        });
        if let Some(cached) = self.cached_input_per_mtok {
            pricing["input_cache_read"] = json!(per_token(cached));
        }
        if let Some(write) = self.cache_write_per_mtok {
            pricing["input_cache_write"] = json!(per_token(write));
        }
        json!({
            "id": self.id,
            "object": "model",
            "created": 0,
            "owned_by": self.provider,
            "context_length": self.context,
            "max_output_tokens": self.max_output,
            "pricing": pricing,
            "capabilities": {"tools": self.tools, "vision": self.vision, "json": self.json},
            "price_date": self.price_date,
            "price_source": self.price_source,
        })
    }
}

/// US$ per 1M tokens as an exact per-token decimal string ("0.15" → "0.00000015"), shifting the
/// decimal point in text so no float rounding noise appears.
fn per_token(per_mtok: f64) -> String {
    let text = format!("{per_mtok}");
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let digits = format!("{int}{frac}");
    let point = int.len() as i64 - 6;
    let shifted = if point > 0 {
        format!(
            "{}.{}",
            &digits[..point as usize],
            &digits[point as usize..]
        )
    } else {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    };
    let trimmed = shifted.trim_end_matches('0').trim_end_matches('.');
    let trimmed = trimmed.trim_start_matches('0');
    match trimmed {
        "" => "0".to_string(),
        t if t.starts_with('.') => format!("0{t}"),
        t => t.to_string(),
    }
}

/// The resolved, validated set of providers and models.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub providers: IndexMap<String, Arc<Provider>>,
    pub models: IndexMap<String, Arc<Model>>,
}

/// Where an entry came from, for error messages.
struct Origin<'a> {
    file: PathBuf,
    section: &'a str,
    index: usize,
}

impl Origin<'_> {
    fn error(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            key: format!("{}[{}].{field}", self.section, self.index),
            message: message.into(),
        }
    }
}

/// The config file (`--config`, `TRIAGE_CONFIG`, `./triage.toml`, or the built-in defaults)
/// and its catalog, API keys from the environment: where every command that reads the config
/// starts.
pub fn load_configured(flag: Option<&Path>) -> Result<(Config, Catalog), ConfigError> {
    let (config, file) = match config::discover(flag, std::env::var_os("TRIAGE_CONFIG")) {
        Some((path, how)) => {
            tracing::info!(file = %path.display(), found_by = how, "configuration");
            (Config::load(&path)?, path)
        }
        None => {
            tracing::info!(
                "configuration: built-in defaults (no --config, TRIAGE_CONFIG or ./triage.toml)"
            );
            (Config::default(), PathBuf::from("(built-in defaults)"))
        }
    };
    let catalog = Catalog::build(&config, &file, |var| std::env::var(var).ok())?;
    Ok((config, catalog))
}

impl Catalog {
    /// The built-in catalog overlaid with the config's providers and models. `config_file`
    /// names the config in error messages; `env` looks up API key variables.
    pub fn build(
        config: &Config,
        config_file: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Catalog, ConfigError> {
        let builtin_file = Path::new("catalog.toml (built-in)");
        let builtin: CatalogFile = parse_catalog(BUILTIN, builtin_file)?;
        let mut providers: IndexMap<String, (ProviderEntry, Origin)> = IndexMap::new();
        let mut models: IndexMap<String, (ModelEntry, Origin)> = IndexMap::new();
        let layers = [
            (builtin_file, &builtin.providers, &builtin.models),
            (config_file, &config.providers, &config.models),
        ];
        for (file, provider_entries, model_entries) in layers {
            for (index, entry) in provider_entries.iter().enumerate() {
                let origin = Origin {
                    file: file.to_path_buf(),
                    section: "providers",
                    index,
                };
                overlay(
                    &mut providers,
                    entry.name.clone(),
                    entry,
                    origin,
                    merge_provider,
                );
            }
            for (index, entry) in model_entries.iter().enumerate() {
                let origin = Origin {
                    file: file.to_path_buf(),
                    section: "models",
                    index,
                };
                overlay(&mut models, entry.id.clone(), entry, origin, merge_model);
            }
        }
        let providers = providers
            .into_iter()
            .map(|(name, (entry, origin))| {
                Ok((name, Arc::new(resolve_provider(entry, &origin, &env)?)))
            })
            .collect::<Result<IndexMap<_, _>, ConfigError>>()?;
        let mut resolved = IndexMap::new();
        for (id, (entry, origin)) in &models {
            let model = resolve_model(entry.clone(), origin, &providers)?;
            resolved.insert(id.clone(), Arc::new(model));
        }
        for (entry, origin) in models.values() {
            for fallback in entry.fallbacks.iter().flatten() {
                if !resolved.contains_key(fallback) {
                    return Err(
                        origin.error("fallbacks", format!("`{fallback}` is not a known model id"))
                    );
                }
            }
        }
        check_routing_patterns(config, config_file, &resolved)?;
        Ok(Catalog {
            providers,
            models: resolved,
        })
    }

    pub fn model(&self, id: &str) -> Option<&Arc<Model>> {
        self.models.get(id)
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.get(name)
    }

    /// The environment variable to set when `model`'s provider needs a key and has none; `None`
    /// when it can be called (a key is set, or the provider needs none, like a local server).
    pub fn missing_key(&self, model: &Model) -> Option<&str> {
        let provider = self.provider(&model.provider)?;
        match (&provider.api_key_env, &provider.api_key) {
            (Some(env), None) => Some(env),
            _ => None,
        }
    }
}

/// Each `[routing]` pattern must name at least one model: a typo would otherwise silently
/// leave `auto` with fewer models, or none.
fn check_routing_patterns(
    config: &Config,
    config_file: &Path,
    models: &IndexMap<String, Arc<Model>>,
) -> Result<(), ConfigError> {
    for (key, pattern) in config.routing.keyed_patterns() {
        if !models.keys().any(|id| glob_matches(pattern, id)) {
            return Err(ConfigError::Invalid {
                file: config_file.to_path_buf(),
                key,
                message: format!("`{pattern}` matches no model id of the catalog"),
            });
        }
    }
    Ok(())
}

fn parse_catalog(text: &str, file: &Path) -> Result<CatalogFile, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Invalid {
        file: file.to_path_buf(),
        key: "(file)".into(),
        message: e.to_string(),
    })
}

/// Inserts `entry` under `key`, or merges it into an earlier entry with the same key; the later
/// origin is kept so errors point at the config that changed the entry.
fn overlay<'a, E: Clone>(
    map: &mut IndexMap<String, (E, Origin<'a>)>,
    key: String,
    entry: &E,
    origin: Origin<'a>,
    merge: fn(&mut E, &E),
) {
    match map.get_mut(&key) {
        Some((existing, old_origin)) => {
            merge(existing, entry);
            *old_origin = origin;
        }
        None => {
            map.insert(key, (entry.clone(), origin));
        }
    }
}

/// Copies every field that `over` sets onto `base`.
macro_rules! take_set_fields {
    ($base:ident, $over:ident, $($field:ident),+) => {
        $( if $over.$field.is_some() { $base.$field = $over.$field.clone(); } )+
    };
}

fn merge_provider(base: &mut ProviderEntry, over: &ProviderEntry) {
    take_set_fields!(
        base,
        over,
        kind,
        base_url,
        api_key_env,
        connect_timeout_ms,
        first_byte_timeout_ms,
        total_timeout_ms,
        max_concurrent
    );
}

fn merge_model(base: &mut ModelEntry, over: &ModelEntry) {
    take_set_fields!(
        base,
        over,
        provider,
        upstream,
        input_per_mtok,
        output_per_mtok,
        cached_input_per_mtok,
        cache_write_per_mtok,
        context,
        max_output,
        tools,
        vision,
        json,
        fallbacks,
        price_date,
        price_source,
        first_byte_timeout_ms,
        total_timeout_ms,
        mmlu_pro,
        mmlu_pro_source,
        gpqa,
        gpqa_source,
        abilities,
        ability_source,
        family
    );
}

const DEFAULT_CONNECT_MS: u64 = 5_000;
const DEFAULT_FIRST_BYTE_MS: u64 = 120_000;
const DEFAULT_TOTAL_MS: u64 = 600_000;

fn resolve_provider(
    entry: ProviderEntry,
    origin: &Origin,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Provider, ConfigError> {
    let kind = entry
        .kind
        .ok_or_else(|| origin.error("kind", "missing: one of openai, anthropic, gemini"))?;
    let base_url = entry
        .base_url
        .ok_or_else(|| origin.error("base_url", "missing"))?;
    let url = url::Url::parse(&base_url)
        .map_err(|e| origin.error("base_url", format!("`{base_url}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(origin.error("base_url", "must start with http:// or https://"));
    }
    if entry.max_concurrent == Some(0) {
        return Err(origin.error("max_concurrent", "must be above 0"));
    }
    let api_key = entry
        .api_key_env
        .as_deref()
        .and_then(env)
        .filter(|k| !k.is_empty())
        .map(ApiKey);
    let ms = Duration::from_millis;
    let timeouts = Timeouts {
        connect: ms(entry.connect_timeout_ms.unwrap_or(DEFAULT_CONNECT_MS)),
        first_byte: ms(entry.first_byte_timeout_ms.unwrap_or(DEFAULT_FIRST_BYTE_MS)),
        total: ms(entry.total_timeout_ms.unwrap_or(DEFAULT_TOTAL_MS)),
    };
    Ok(Provider {
        name: entry.name,
        kind,
        base_url: base_url.trim_end_matches('/').to_string(),
        api_key_env: entry.api_key_env,
        api_key,
        timeouts,
        max_concurrent: entry.max_concurrent,
    })
}

fn resolve_model(
    entry: ModelEntry,
    origin: &Origin,
    providers: &IndexMap<String, Arc<Provider>>,
) -> Result<Model, ConfigError> {
    let required = " (required for a model that is not in the built-in catalog)";
    let provider_name = entry
        .provider
        .ok_or_else(|| origin.error("provider", format!("missing{required}")))?;
    let provider = providers.get(&provider_name).ok_or_else(|| {
        origin.error(
            "provider",
            format!("`{provider_name}` is not a configured provider"),
        )
    })?;
    let price = |value: Option<f64>, field: &str| match value {
        None => Err(origin.error(field, format!("missing{required}"))),
        Some(p) if !p.is_finite() || p < 0.0 => {
            Err(origin.error(field, "must be a non-negative number"))
        }
        Some(p) => Ok(p),
    };
    let input_per_mtok = price(entry.input_per_mtok, "input_per_mtok")?;
    let output_per_mtok = price(entry.output_per_mtok, "output_per_mtok")?;
    let cached_input_per_mtok = entry
        .cached_input_per_mtok
        .map(|p| price(Some(p), "cached_input_per_mtok"))
        .transpose()?;
    let cache_write_per_mtok = entry
        .cache_write_per_mtok
        .map(|p| price(Some(p), "cache_write_per_mtok"))
        .transpose()?;
    let context = entry
        .context
        .ok_or_else(|| origin.error("context", format!("missing{required}")))?;
    if context == 0 {
        return Err(origin.error("context", "must be above 0"));
    }
    let upstream = match entry.upstream {
        Some(u) => u,
        None => entry
            .id
            .split_once('/')
            .map(|(_, name)| name.to_string())
            .ok_or_else(|| origin.error("upstream", format!("missing{required}")))?,
    };
    for (field, score) in [("mmlu_pro", entry.mmlu_pro), ("gpqa", entry.gpqa)] {
        if score.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
            return Err(origin.error(field, "must be an accuracy between 0 and 1"));
        }
    }
    let ms = Duration::from_millis;
    let timeouts = Timeouts {
        first_byte: entry
            .first_byte_timeout_ms
            .map_or(provider.timeouts.first_byte, ms),
        total: entry.total_timeout_ms.map_or(provider.timeouts.total, ms),
        ..provider.timeouts
    };
    Ok(Model {
        id: entry.id,
        provider: provider_name.clone(),
        upstream,
        input_per_mtok,
        output_per_mtok,
        cached_input_per_mtok,
        cache_write_per_mtok,
        context,
        max_output: entry.max_output,
        tools: entry.tools.unwrap_or(false),
        vision: entry.vision.unwrap_or(false),
        json: entry.json.unwrap_or(false),
        fallbacks: entry.fallbacks.unwrap_or_default(),
        price_date: entry.price_date,
        price_source: entry.price_source,
        timeouts,
        mmlu_pro: entry.mmlu_pro,
        mmlu_pro_source: entry.mmlu_pro_source,
        gpqa: entry.gpqa,
        gpqa_source: entry.gpqa_source,
        abilities: entry.abilities,
        ability_source: entry.ability_source,
        family: entry.family.unwrap_or_else(|| provider_name.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(config: &str) -> Result<Catalog, ConfigError> {
        let config = Config::parse(config, Path::new("t.toml")).unwrap();
        Catalog::build(&config, Path::new("t.toml"), |var| {
            (var == "LOCAL_KEY").then(|| "secret".to_string())
        })
    }

    const LOCAL: &str = r#"
        [[providers]]
        name = "local"
        kind = "openai"
        base_url = "http://127.0.0.1:9000/v1/"
        api_key_env = "LOCAL_KEY"
        first_byte_timeout_ms = 1000
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
        total_timeout_ms = 2000
        [[models]]
        id = "local/big"
        provider = "local"
        input_per_mtok = 2.5
        output_per_mtok = 10
        context = 128000
    "#;

    #[test]
    fn builtin_catalog_is_valid_and_covers_the_main_providers() {
        let catalog = build("").unwrap();
        for provider in [
            "openai",
            "anthropic",
            "google",
            "xai",
            "deepseek",
            "mistral",
            "qwen",
        ] {
            assert!(
                catalog.models.values().any(|m| m.provider == provider),
                "no model of {provider}"
            );
        }
        for model in catalog.models.values() {
            assert!(
                model.price_source.is_some(),
                "{} has no price source",
                model.id
            );
            assert!(model.price_date.is_some(), "{} has no price date", model.id);
            assert!(model.output_per_mtok >= model.input_per_mtok || model.input_per_mtok == 0.0);
        }
    }

    #[test]
    fn example_config_is_valid() {
        let catalog = build(include_str!("../../../triage.example.toml")).unwrap();
        assert_eq!(
            catalog.model("local/small").unwrap().fallbacks,
            ["local/big"]
        );
        let mini = catalog.model("openai/gpt-4o-mini").unwrap();
        assert_eq!(mini.fallbacks, ["local/small"], "one field overridden");
        assert!(mini.vision, "the rest kept");
    }

    #[test]
    fn config_adds_models_and_applies_overrides() {
        let catalog = build(LOCAL).unwrap();
        let small = catalog.model("local/small").unwrap();
        assert_eq!(small.upstream, "small-model");
        assert_eq!(small.timeouts.first_byte, Duration::from_millis(1000));
        assert_eq!(small.timeouts.total, Duration::from_millis(2000));
        let big = catalog.model("local/big").unwrap();
        assert_eq!(
            big.upstream, "big",
            "upstream defaults to the id's model part"
        );
        let provider = catalog.provider("local").unwrap();
        assert_eq!(provider.base_url, "http://127.0.0.1:9000/v1");
        assert_eq!(provider.api_key.as_ref().unwrap().expose(), "secret");
        assert!(!format!("{provider:?}").contains("secret"));
    }

    #[test]
    fn config_overrides_one_field_of_a_builtin_model() {
        let builtin = build("").unwrap();
        let (id, original) = builtin.models.first().unwrap();
        let catalog = build(&format!(
            "[[models]]\nid = \"{id}\"\ninput_per_mtok = 99.0\n"
        ))
        .unwrap();
        let changed = catalog.model(id).unwrap();
        assert_eq!(changed.input_per_mtok, 99.0);
        assert_eq!(changed.output_per_mtok, original.output_per_mtok);
        assert_eq!(changed.upstream, original.upstream);
    }

    #[test]
    fn errors_name_the_key() {
        let unknown_provider = "[[models]]\nid = \"x/y\"\nprovider = \"nope\"\ninput_per_mtok = 1\noutput_per_mtok = 1\ncontext = 10\n";
        let err = build(unknown_provider).unwrap_err().to_string();
        assert!(
            err.contains("t.toml") && err.contains("models[0].provider"),
            "{err}"
        );

        let bad_fallback = LOCAL.replace("[\"local/big\"]", "[\"local/nope\"]");
        let err = build(&bad_fallback).unwrap_err().to_string();
        assert!(
            err.contains("models[0].fallbacks") && err.contains("local/nope"),
            "{err}"
        );

        let missing_price = "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://x\"\n[[models]]\nid = \"p/m\"\nprovider = \"p\"\noutput_per_mtok = 1\ncontext = 10\n";
        let err = build(missing_price).unwrap_err().to_string();
        assert!(
            err.contains("models[0].input_per_mtok") && err.contains("missing"),
            "{err}"
        );

        let bad_url = "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"ftp://x\"\n";
        let err = build(bad_url).unwrap_err().to_string();
        assert!(err.contains("providers[0].base_url"), "{err}");
    }

    #[test]
    fn routing_patterns_must_name_a_model() {
        let ok = format!("{LOCAL}\n[routing]\nmodels = [\"local/*\", \"openai/gpt-4o-mini\"]\n");
        assert!(build(&ok).is_ok());
        let typo = format!("{LOCAL}\n[routing]\nmodels = [\"local/*\", \"openai/gpt-4o-mimi\"]\n");
        let err = build(&typo).unwrap_err().to_string();
        assert!(
            err.contains("routing.models[1]") && err.contains("openai/gpt-4o-mimi"),
            "{err}"
        );
        let per_profile =
            format!("{LOCAL}\n[routing.profile_models]\n\"auto:best\" = [\"nope/*\"]\n");
        let err = build(&per_profile).unwrap_err().to_string();
        assert!(err.contains("routing.profile_models.auto:best[0]"), "{err}");
    }

    #[test]
    fn missing_keys_name_the_variable_and_keyless_providers_need_none() {
        let keyless = LOCAL.replace("api_key_env = \"LOCAL_KEY\"\n", "");
        let catalog = build(&keyless).unwrap();
        assert_eq!(
            catalog.missing_key(catalog.model("local/small").unwrap()),
            None
        );
        let mini = catalog.model("openai/gpt-4o-mini").unwrap();
        assert_eq!(catalog.missing_key(mini), Some("OPENAI_API_KEY"));
        let keyed = build(LOCAL).unwrap();
        assert_eq!(keyed.missing_key(keyed.model("local/small").unwrap()), None);
        assert_eq!(
            keyed.model("local/small").unwrap().family,
            "local",
            "family defaults to the provider"
        );
    }

    #[test]
    fn cost_charges_cached_tokens_at_the_cached_price() {
        let catalog = build(LOCAL).unwrap();
        let small = catalog.model("local/small").unwrap();
        let usage = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 1_000_000,
            cached_tokens: 400_000,
            cache_write_tokens: 0,
        };
        let expected = 0.6 * 0.15 + 0.4 * 0.075 + 0.60;
        assert!((small.cost(&usage) - expected).abs() < 1e-12);
        let big = catalog.model("local/big").unwrap();
        assert!(
            (big.cost(&usage) - (2.5 + 10.0)).abs() < 1e-12,
            "no cached price: full input price"
        );
    }

    #[test]
    fn cost_charges_cache_writes_at_the_cache_write_price() {
        let with_price = LOCAL.replace(
            "cached_input_per_mtok = 0.075",
            "cached_input_per_mtok = 0.075\ncache_write_per_mtok = 0.1875",
        );
        let catalog = build(&with_price).unwrap();
        let usage = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 0,
            cached_tokens: 400_000,
            cache_write_tokens: 100_000,
        };
        let small = catalog.model("local/small").unwrap();
        let expected = 0.5 * 0.15 + 0.4 * 0.075 + 0.1 * 0.1875;
        assert!((small.cost(&usage) - expected).abs() < 1e-12);
        assert_eq!(
            small.to_openai_json()["pricing"]["input_cache_write"],
            "0.0000001875"
        );
        let big = catalog.model("local/big").unwrap();
        assert!(
            (big.cost(&usage) - 2.5).abs() < 1e-12,
            "no cache prices: everything at the input price"
        );
        let round_trip = Usage::from_openai(&usage.to_openai()).unwrap();
        assert_eq!(round_trip, usage);
    }

    #[test]
    fn usage_reads_openai_shape() {
        let u = Usage::from_openai(&json!({"prompt_tokens": 10, "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 4}}))
        .unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
            (10, 5, 4)
        );
        assert!(Usage::from_openai(&Value::Null).is_none());
    }

    #[test]
    fn per_token_prices_are_exact_decimals() {
        assert_eq!(per_token(0.15), "0.00000015");
        assert_eq!(per_token(2.5), "0.0000025");
        assert_eq!(per_token(10.0), "0.00001");
        assert_eq!(per_token(0.0), "0");
        assert_eq!(per_token(1234567.0), "1.234567");
        assert_eq!(per_token(75.0), "0.000075");
    }
}
