//! Bounded fuzzing of everything the providers parse from a client or an upstream: the request
//! translators (OpenAI → Anthropic, Gemini; Anthropic → OpenAI at the ingress), every stream and
//! response translator, `Retry-After` parsing and key scrubbing, on the shared harness
//! (`crate::fuzzing`). The property: nothing panics, whatever arrives.

use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Map, Value, json};

use super::{EventTranslator, anthropic, gemini, openai};
use crate::fuzzing::{chat_seeds, fuzz, mutated};
use triage_core::catalog::Catalog;
use triage_core::config::Config;

fn openai_events() -> Vec<Value> {
    vec![
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": null}]}),
        json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t",
               "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}]}, "finish_reason": null}]}),
        json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
        json!({"error": {"message": "boom", "type": "server_error"}}),
    ]
}

fn anthropic_events() -> Vec<Value> {
    vec![
        json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant",
               "model": "claude", "content": [], "usage": {"input_tokens": 3, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}),
        json!({"type": "message_stop"}),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
    ]
}

fn gemini_events() -> Vec<Value> {
    vec![
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"},
               {"functionCall": {"name": "f", "args": {"a": 1}}}]}, "finishReason": "STOP", "index": 0}],
               "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2}, "modelVersion": "g"}),
        json!({"candidates": [{"content": {"parts": [{"text": " there"}]}}]}),
        json!({"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}),
    ]
}

/// A stream of mutated events (and now and then raw garbage) through `translator`.
fn stream_through<T: EventTranslator>(rng: &mut StdRng, mut translator: T, seeds: &[Value]) {
    for _ in 0..rng.random_range(1..8) {
        let data = match rng.random_range(0..10) {
            0 => "[DONE]".to_string(),
            1 => String::from_utf8_lossy(&rng.random::<[u8; 12]>()).into_owned(),
            _ => mutated(rng, seeds).to_string(),
        };
        if translator.event(&data).is_err() || translator.finished() {
            break;
        }
    }
    let _ = translator.end();
}

#[test]
fn the_request_translators_never_panic() {
    let config = Config::default();
    let catalog = Catalog::build(&config, std::path::Path::new("fuzz"), |_| Some("k".into()))
        .expect("the built-in catalog");
    let pick = |provider: &str| {
        let model = catalog
            .models
            .values()
            .find(|m| m.provider == provider)
            .expect("a built-in model of each kind")
            .clone();
        (catalog.providers[provider].clone(), model)
    };
    let ((claude_provider, claude), (gemini_provider, gemini_model)) =
        (pick("anthropic"), pick("google"));
    let client = reqwest::Client::new();
    let chats = chat_seeds();
    let messages_seed = json!({"model": "x", "max_tokens": 10, "system": [{"type": "text", "text": "s"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
        {"type": "tool_result", "tool_use_id": "t", "content": "1"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}], "stream": true});
    fuzz("request translators", |rng| {
        let chat = match mutated(rng, &chats) {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let stream = rng.random::<bool>();
        let _ = anthropic::request(&client, &claude_provider, &claude, &chat, stream);
        let _ = gemini::request(&client, &gemini_provider, &gemini_model, &chat, stream);
        if let Value::Object(messages) = mutated(rng, std::slice::from_ref(&messages_seed)) {
            let _ = anthropic::ingress::chat_body(&messages);
        }
    });
}

#[test]
fn the_stream_and_response_translators_never_panic() {
    let (openai_seeds, anthropic_seeds, gemini_seeds) =
        (openai_events(), anthropic_events(), gemini_events());
    fuzz("stream translators", |rng| {
        stream_through(rng, openai::Chunks::default(), &openai_seeds);
        stream_through(rng, anthropic::ChunkTranslator::default(), &anthropic_seeds);
        stream_through(rng, anthropic::NativeEvents::default(), &anthropic_seeds);
        stream_through(rng, gemini::ChunkTranslator::default(), &gemini_seeds);
        // The ingress writer turns OpenAI chunks into Anthropic events for /v1/messages.
        let mut writer = anthropic::ingress::EventWriter::default();
        for _ in 0..rng.random_range(1..6) {
            let _ = writer.chunk(&mutated(rng, &openai_seeds));
        }
        let _ = writer.finish();
        let _ = writer.usage();
    });
    let completion = json!({"id": "c", "object": "chat.completion", "model": "m", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": "hi", "tool_calls": [{"id": "t", "type": "function",
        "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1}});
    let message = json!({"id": "m", "type": "message", "role": "assistant", "model": "c",
        "content": [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "t", "name": "f", "input": {}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 2}});
    let (completions, messages) = ([completion], [message]);
    fuzz("response translators", |rng| {
        let _ = openai::check_completion(mutated(rng, &completions));
        let _ = anthropic::ingress::message(&mutated(rng, &completions));
        let _ = anthropic::to_completion(&mutated(rng, &messages));
        let _ = anthropic::check_native(mutated(rng, &messages));
        let _ = gemini::to_completion(&mutated(rng, &gemini_seeds));
        let _ = openai::error_details(&mutated(rng, &completions));
        let _ = anthropic::error_details(&mutated(rng, &messages));
        let _ = gemini::error_details(&mutated(rng, &gemini_seeds));
    });
}

/// Header values as upstreams send them, and as they should not: numbers of every size and
/// sign, HTTP dates, garbage.
fn retry_after_value(rng: &mut StdRng) -> String {
    match rng.random_range(0..6) {
        0 => rng.random_range(0u64..100_000).to_string(),
        1 => format!(
            "{:e}",
            rng.random::<f64>() * 10f64.powi(rng.random_range(0..400))
        ),
        2 => format!("-{}", rng.random::<f32>()),
        3 => "Wed, 21 Oct 2015 07:28:00 GMT".to_string(),
        4 => ["inf", "NaN", "1e400", " 5 ", "", "99999999999999999999999"][rng.random_range(0..6)]
            .to_string(),
        _ => String::from_utf8_lossy(&rng.random::<[u8; 8]>()).into_owned(),
    }
}

#[test]
fn retry_after_parsing_and_key_scrubbing_never_panic() {
    let catalog = Catalog::build(&Config::default(), std::path::Path::new("fuzz"), |_| {
        Some("sk-Zq8XvT3kLw9RpN2b".into())
    })
    .expect("the built-in catalog");
    let provider = catalog.providers["openai"].clone();
    fuzz("Retry-After and scrub", |rng| {
        let _ = super::parse_retry_after(&retry_after_value(rng));
        let text = format!(
            "{} sk-Zq8XvT3kLw9RpN2b {}é",
            retry_after_value(rng),
            &"sk-Zq8XvT3kLw9RpN2b"[rng.random_range(0..10)..]
        );
        let clean = super::scrub(&text, &provider);
        assert!(!clean.contains("Zq8XvT3k"), "{clean}");
    });
}
