//! Prometheus metrics: requests, latency, time to first token, upstream errors, tokens, cost and
//! circuit-breaker state, by model and by router key.
//!
//! Labels carry model ids and a short hash of the router key, never a key itself.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub key: String,
    pub status: u16,
}

/// Every HTTP request, by route pattern (not the raw path: bounded cardinality).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub endpoint: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub model: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: String,
    pub key: String,
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CostLabels {
    pub model: String,
    pub key: String,
}

type LatencyFamily = Family<ModelLabels, Histogram, fn() -> Histogram>;

/// Every metric triage exports, registered once at start-up.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: LatencyFamily,
    pub ttft: LatencyFamily,
    /// Classifier + policy time of adaptive requests, by profile (in the `model` label).
    pub classify: LatencyFamily,
    pub upstream_errors: Family<ErrorLabels, Counter>,
    pub fallbacks: Family<ModelLabels, Counter>,
    pub tokens: Family<TokenLabels, Counter>,
    pub cost: Family<CostLabels, Counter<f64, AtomicU64>>,
    /// 0 closed, 1 open, 2 half-open.
    pub circuit_state: Family<ModelLabels, Gauge>,
    /// Outcomes the log could not take (queue full) or failed to write.
    pub log_dropped: Counter,
    /// Requests refused at once because `[limits] max_concurrent_requests` were in flight.
    pub shed: Counter,
    /// Trace spans not exported: the exporter's queue was full or an export failed.
    pub trace_dropped: Counter,
    /// Every HTTP request (model calls, routing, feedback, usage, admin, health, metrics).
    pub http_requests: Family<HttpLabels, Counter>,
    /// 1 for each virtual key: joins its id (the `key` label elsewhere) to its name.
    pub key_info: Family<KeyInfoLabels, Gauge>,
}

/// A virtual key's id and name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyInfoLabels {
    pub key: String,
    pub name: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~131 s
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

fn classify_histogram() -> Histogram {
    // 50 µs … ~100 ms
    Histogram::new(exponential_buckets(0.000_05, 2.0, 12))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("triage");
        let requests = Family::default();
        registry.register(
            "requests",
            "Chat requests answered, by model, key and HTTP status",
            requests.clone(),
        );
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request to the last byte of the answer",
            latency.clone(),
        );
        let ttft: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "ttft_seconds",
            "Time from request to the first streamed chunk",
            ttft.clone(),
        );
        let classify: LatencyFamily = Family::new_with_constructor(classify_histogram);
        registry.register(
            "classify_seconds",
            "Time to classify a prompt and rank the models (adaptive routing)",
            classify.clone(),
        );
        let upstream_errors = Family::default();
        registry.register(
            "upstream_errors",
            "Failed upstream calls, by model and reason (HTTP status, timeout, connect…)",
            upstream_errors.clone(),
        );
        let fallbacks = Family::default();
        registry.register(
            "fallbacks",
            "Requests that moved past a model to a sibling",
            fallbacks.clone(),
        );
        let tokens = Family::default();
        registry.register(
            "tokens",
            "Tokens reported by upstreams, by model, key and direction",
            tokens.clone(),
        );
        let cost = Family::default();
        registry.register("cost_usd", "US$ spent at catalog prices", cost.clone());
        let circuit_state = Family::default();
        registry.register(
            "circuit_state",
            "Circuit breaker per model: 0 closed, 1 open, 2 half-open",
            circuit_state.clone(),
        );
        let log_dropped = Counter::default();
        registry.register(
            "log_dropped",
            "Outcomes not logged: the log's queue was full or a write failed",
            log_dropped.clone(),
        );
        let http_requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP requests by endpoint (route pattern), method and status",
            http_requests.clone(),
        );
        let key_info = Family::default();
        registry.register(
            "key_info",
            "Virtual keys: 1 per key, its id (the key label of other series) and its name",
            key_info.clone(),
        );
        let shed = Counter::default();
        registry.register(
            "shed",
            "Requests refused with 503 because the instance was at max_concurrent_requests",
            shed.clone(),
        );
        let trace_dropped = Counter::default();
        registry.register(
            "trace_spans_dropped",
            "Trace spans not exported: the exporter's queue was full or an export failed",
            trace_dropped.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            ttft,
            classify,
            upstream_errors,
            fallbacks,
            tokens,
            cost,
            circuit_state,
            log_dropped,
            shed,
            trace_dropped,
            http_requests,
            key_info,
        }
    }

    /// The metrics in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn record_usage(
        &self,
        model: &str,
        key: &str,
        usage: &triage_core::catalog::Usage,
        cost: f64,
    ) {
        for (direction, count) in [
            ("input", usage.prompt_tokens),
            ("output", usage.completion_tokens),
        ] {
            self.tokens
                .get_or_create(&TokenLabels {
                    model: model.to_string(),
                    key: key.to_string(),
                    direction,
                })
                .inc_by(count);
        }
        self.cost
            .get_or_create(&CostLabels {
                model: model.to_string(),
                key: key.to_string(),
            })
            .inc_by(cost);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
