//! OpenTelemetry traces against a real OTLP/HTTP receiver (the `mock-collector` crate, which
//! decodes the protobuf export requests as a collector would): the spans of a request with a
//! retry and a fallback, of an `auto` request, the client's `traceparent` carried in and on to
//! the upstream, and an exporter that is down costing requests nothing but counted drops.

mod common;

use std::time::Duration;

use common::*;
use mock_collector::{MockServer, Protocol, ServerHandle};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;

/// A client's trace: its id and the span that made the call.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

async fn collector() -> ServerHandle {
    MockServer::builder()
        .protocol(Protocol::HttpBinary)
        .port(0)
        .start()
        .await
        .unwrap()
}

fn telemetry(endpoint: &str, extra: &str) -> String {
    format!("\n[telemetry]\notlp_endpoint = \"{endpoint}\"\nexport_interval_ms = 20\n{extra}\n")
}

/// Waits for the exporter thread to send what it holds (off the runtime, which the collector
/// needs to answer meanwhile).
async fn flush(h: &Harness) {
    let state = h.state.clone();
    tokio::task::spawn_blocking(move || state.telemetry.as_ref().unwrap().flush())
        .await
        .unwrap();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span attribute as text (strings as they are, numbers and booleans printed).
fn attr(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?;
    Some(match value.value.as_ref()? {
        Any::StringValue(s) => s.clone(),
        Any::IntValue(i) => i.to_string(),
        Any::DoubleValue(d) => d.to_string(),
        Any::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

/// Every span the collector holds, once at least `count` arrived.
async fn spans(h: &Harness, collector: &ServerHandle, count: usize) -> Vec<Span> {
    flush(h).await;
    collector
        .wait_for_spans(count, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("fewer than {count} spans arrived: {e}"));
    collector
        .with_collector(|c| c.spans().iter().map(|s| s.span().clone()).collect())
        .await
}

#[tokio::test]
async fn a_request_with_a_retry_and_a_fallback_is_one_trace_under_the_clients() {
    let collector = collector().await;
    let endpoint = format!("http://{}", collector.addr());
    let h = Harness::start(&telemetry(&endpoint, "")).await;
    // local/small fails twice (the call and its one retry), then local/big answers.
    h.fail("small-model", vec![status(503), status(503)]);
    let response = h
        .client
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(ROUTER_KEY)
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&hello("local/small"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = header(&response, "x-triage-request-id")
        .unwrap()
        .to_string();
    let answer: serde_json::Value = response.json().await.unwrap();

    let spans = spans(&h, &collector, 4).await;
    assert_eq!(spans.len(), 4, "one request span and three attempts");
    let request = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("the request's span");
    // Under the client's trace, as a child of its span.
    assert_eq!(hex(&request.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN);
    assert_eq!(request.name, "chat local/small");
    let expect = |key: &str, value: &str| {
        assert_eq!(attr(request, key).as_deref(), Some(value), "{key}");
    };
    expect("gen_ai.operation.name", "chat");
    expect("gen_ai.request.model", "local/small");
    expect("gen_ai.response.model", "big-model");
    expect("gen_ai.provider.name", "local");
    expect("triage.model", "local/big");
    expect("triage.request_id", &request_id);
    expect("http.response.status_code", "200");
    let usage = &answer["usage"];
    expect(
        "gen_ai.usage.input_tokens",
        &usage["prompt_tokens"].to_string(),
    );
    expect(
        "gen_ai.usage.output_tokens",
        &usage["completion_tokens"].to_string(),
    );
    assert!(
        attr(request, "triage.fallbacks")
            .unwrap()
            .contains("local/small (503)")
    );
    assert!(attr(request, "triage.cost_usd").is_some());

    // The attempts: children of the request, in order, the failed ones marked.
    let mut attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    let names: Vec<&str> = attempts.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["chat small-model", "chat small-model", "chat big-model"]
    );
    for (attempt, expected) in attempts.iter().zip([Some("503"), Some("503"), None]) {
        assert_eq!(attempt.parent_span_id, request.span_id);
        assert_eq!(attempt.trace_id, request.trace_id);
        assert_eq!(attr(attempt, "error.type").as_deref(), expected);
        assert_eq!(
            attr(attempt, "gen_ai.provider.name").as_deref(),
            Some("local")
        );
        assert!(attempt.start_time_unix_nano >= request.start_time_unix_nano);
        assert!(attempt.end_time_unix_nano <= request.end_time_unix_nano);
    }
    assert_eq!(attr(attempts[1], "triage.attempt").as_deref(), Some("1"));
    assert_eq!(
        attr(attempts[0], "http.response.status_code").as_deref(),
        Some("503")
    );

    // The upstream that answered got the answering attempt's context.
    let calls = h.upstream_calls("big-model");
    let traceparent = calls.last().unwrap().headers.get("traceparent").unwrap();
    assert_eq!(
        traceparent,
        &format!("00-{CLIENT_TRACE}-{}-01", hex(&attempts[2].span_id))
    );
}

#[tokio::test]
async fn an_auto_request_has_a_classification_span_and_triages_attributes() {
    let collector = collector().await;
    let endpoint = format!("http://{}", collector.addr());
    let h = Harness::start_adaptive(&telemetry(&endpoint, "")).await;
    let response = h
        .chat(&json!({"model": "auto", "messages": [{"role": "user", "content": "Prove that 2 + 2 = 4."}]}))
        .await;
    assert_eq!(response.status(), 200);
    let model = header(&response, "x-triage-model").unwrap().to_string();

    let spans = spans(&h, &collector, 3).await;
    let request = spans.iter().find(|s| s.name == "chat auto").unwrap();
    // No client trace: a root span.
    assert!(request.parent_span_id.is_empty());
    assert_eq!(attr(request, "triage.profile").as_deref(), Some("auto"));
    assert_eq!(attr(request, "triage.model"), Some(model));
    for key in [
        "triage.difficulty",
        "triage.top_skill",
        "triage.tool_need",
        "triage.predicted_quality",
    ] {
        assert!(attr(request, key).is_some(), "{key}");
    }
    let classify = spans.iter().find(|s| s.name == "classify").unwrap();
    assert_eq!(classify.parent_span_id, request.span_id);
    assert_eq!(
        attr(classify, "triage.difficulty"),
        attr(request, "triage.difficulty")
    );
    // Classification comes before the upstream call.
    let attempt = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    assert!(classify.end_time_unix_nano <= attempt.start_time_unix_nano);
}

#[tokio::test]
async fn an_exporter_that_is_down_drops_spans_counts_them_and_blocks_nothing() {
    // A port that was free a moment ago: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = telemetry(
        &format!("http://{closed}"),
        "queue_capacity = 4\nbatch_size = 2\nexport_timeout_ms = 200",
    );
    let h = Harness::start(&config).await;
    for _ in 0..20 {
        assert_eq!(h.chat(&hello("local/small")).await.status(), 200);
    }
    flush(&h).await;
    let metrics = h.metrics().await;
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("triage_trace_spans_dropped_total "))
        .expect("the drop counter")
        .parse()
        .unwrap();
    // 40 spans (a request and its attempt each), none delivered: every one counted, whether
    // the queue was full or its export failed.
    assert_eq!(dropped, 40.0, "{metrics}");
}

#[tokio::test]
async fn a_bad_endpoint_is_a_config_error() {
    let error = triage_core::config::Config::parse(
        &format!("{CONFIG}\n[telemetry]\notlp_endpoint = \"localhost:4318\"\n"),
        std::path::Path::new("t.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("telemetry.otlp_endpoint"), "{error}");
}
