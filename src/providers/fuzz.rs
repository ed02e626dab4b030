//! Bounded fuzzing of everything that parses what a client or an upstream sends: the chat
//! request parser, the request translators (OpenAI → Anthropic, Gemini; Anthropic → OpenAI at
//! the ingress), and every stream and response translator. Inputs are real-looking bodies and
//! events, mutated at random (subtrees replaced by other types, keys dropped, strings
//! truncated), and random bytes. The property: nothing panics, whatever arrives.
//!
//! `TRIAGE_FUZZ_ITERS` (default 3,000 per target) and `TRIAGE_FUZZ_SEED` make a longer or a
//! different run; a failure prints the seed and the input.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use super::{EventTranslator, anthropic, gemini, openai};
use crate::catalog::Catalog;
use crate::config::Config;

fn iterations() -> usize {
    std::env::var("TRIAGE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

fn rng() -> (StdRng, u64) {
    let seed = std::env::var("TRIAGE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    (StdRng::seed_from_u64(seed), seed)
}

/// A small random JSON value of any type.
fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random_range(-5i64..100_000)),
        3 => json!(rng.random::<f64>() * 1e6 - 10.0),
        4 => {
            let words = [
                "",
                "user",
                "assistant",
                "tool",
                "text",
                "\u{0}",
                "[DONE]",
                "é✓",
                "{",
            ];
            json!(words[rng.random_range(0..words.len())])
        }
        5 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "type", "role", "content", "text", "delta", "index", "id", "args",
            ];
            Value::Object(
                (0..rng.random_range(0..4))
                    .map(|_| {
                        let key = keys[rng.random_range(0..keys.len())].to_string();
                        (key, random_value(rng, depth - 1))
                    })
                    .collect(),
            )
        }
    }
}

/// One random change somewhere inside `value`: down a random path, then a key dropped, a
/// string cut short, or a subtree replaced by a random value.
fn mutate(rng: &mut StdRng, value: &mut Value) {
    let descend = rng.random_bool(0.7);
    match value {
        Value::Object(map) if descend && !map.is_empty() => {
            let i = rng.random_range(0..map.len());
            let key = map.keys().nth(i).cloned().unwrap_or_default();
            if rng.random_bool(0.15) {
                map.remove(&key);
            } else if let Some(child) = map.get_mut(&key) {
                mutate(rng, child);
            }
            return;
        }
        Value::Array(items) if descend && !items.is_empty() => {
            let i = rng.random_range(0..items.len());
            mutate(rng, &mut items[i]);
            return;
        }
        _ => {}
    }
    *value = match value {
        Value::String(s) if rng.random_bool(0.5) => {
            let boundaries: Vec<usize> = (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect();
            let cut = boundaries[rng.random_range(0..boundaries.len())];
            json!(s[..cut].to_string())
        }
        _ => random_value(rng, 2),
    };
}

/// A few rounds of mutation, sometimes none.
fn mutated(rng: &mut StdRng, seeds: &[Value]) -> Value {
    let mut value = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(0..4) {
        mutate(rng, &mut value);
    }
    value
}

/// Runs `target` on many inputs; reports the seed and input of a panic.
fn fuzz(name: &str, mut target: impl FnMut(&mut StdRng)) {
    let (mut rng, seed) = rng();
    for i in 0..iterations() {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&mut rng)));
        assert!(
            outcome.is_ok(),
            "{name} panicked at iteration {i}, TRIAGE_FUZZ_SEED={seed}"
        );
    }
}

fn chat_seeds() -> Vec<Value> {
    vec![
        json!({"model": "a/b", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "system", "content": "be brief"},
                            {"role": "user", "content": [{"type": "text", "text": "hi"},
                             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1",
                             "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]},
                            {"role": "tool", "tool_call_id": "c1", "content": "42"}],
               "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
               "tool_choice": "auto", "response_format": {"type": "json_object"}, "max_tokens": 10,
               "triage": {"min_quality": 0.5, "models": ["a/b"]}, "models": ["c/d"]}),
        json!({"model": "auto", "messages": [{"role": "user", "content": "hello"}]}),
    ]
}

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
fn the_chat_request_parser_never_panics() {
    let seeds = chat_seeds();
    fuzz("ChatRequest::parse", |rng| {
        let body = mutated(rng, &seeds).to_string();
        let _ = crate::server::ChatRequest::parse(body.as_bytes());
        let mut bytes = body.into_bytes();
        if !bytes.is_empty() {
            let cut = rng.random_range(0..bytes.len());
            bytes.truncate(cut);
        }
        let _ = crate::server::ChatRequest::parse(&bytes);
    });
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
