//! The bounded fuzzing harness the fuzz tests share (tests only): real-looking JSON seeds
//! mutated at random (subtrees replaced by other types, keys dropped, strings truncated), and a
//! loop that reports the seed of a panic. The targets live beside what they test:
//! `providers::fuzz` (translators, `Retry-After`, key scrubbing) and `server::request` (the chat
//! request parser). The property: nothing panics, whatever arrives.
//!
//! `TRIAGE_FUZZ_ITERS` (default 3,000 per target) and `TRIAGE_FUZZ_SEED` make a longer or a
//! different run; a failure prints the seed and the input.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

pub(crate) fn iterations() -> usize {
    std::env::var("TRIAGE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

pub(crate) fn rng() -> (StdRng, u64) {
    let seed = std::env::var("TRIAGE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    (StdRng::seed_from_u64(seed), seed)
}

/// A small random JSON value of any type.
pub(crate) fn random_value(rng: &mut StdRng, depth: u32) -> Value {
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
pub(crate) fn mutate(rng: &mut StdRng, value: &mut Value) {
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
pub(crate) fn mutated(rng: &mut StdRng, seeds: &[Value]) -> Value {
    let mut value = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(0..4) {
        mutate(rng, &mut value);
    }
    value
}

/// Runs `target` on many inputs; reports the seed and input of a panic.
pub(crate) fn fuzz(name: &str, mut target: impl FnMut(&mut StdRng)) {
    let (mut rng, seed) = rng();
    for i in 0..iterations() {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&mut rng)));
        assert!(
            outcome.is_ok(),
            "{name} panicked at iteration {i}, TRIAGE_FUZZ_SEED={seed}"
        );
    }
}

pub(crate) fn chat_seeds() -> Vec<Value> {
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
