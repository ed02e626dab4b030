//! A Gemini `GenerateContentResponse` → OpenAI's shapes: candidates → choices, `functionCall`
//! parts → `tool_calls` (whole, also when streamed), thought parts → `reasoning_content`,
//! `finishReason` → `finish_reason` (safety blocks → `content_filter`), `usageMetadata` →
//! usage (cached content tokens as cached, thinking tokens as completion tokens).

use serde::Deserialize;
use serde_json::{Value, json};

use super::super::{ChunkMeta, EventTranslator, ProviderError, now_secs, parse_event};
use super::wire::{self, Candidate};
use super::{call_id, stream_error};
use triage_core::catalog::Usage;

/// The typed response in `value`; an `error` object in its place is the upstream's error.
fn read(value: &Value) -> Result<wire::Response, ProviderError> {
    if let Some(error) = value.get("error") {
        return Err(stream_error(error));
    }
    wire::Response::deserialize(value).map_err(|e| {
        ProviderError::Protocol(format!("answer is not a `GenerateContentResponse`: {e}"))
    })
}

/// The `chat.completion` for a whole answer.
pub(in crate::providers) fn to_completion(response: &Value) -> Result<Value, ProviderError> {
    let response = read(response)?;
    let choices = match &response.candidates {
        Some(candidates) if !candidates.is_empty() => candidates
            .iter()
            .enumerate()
            .map(|(i, candidate)| choice(candidate, i))
            .collect(),
        _ if response.blocked() => vec![json!({"index": 0,
            "message": {"role": "assistant", "content": null, "refusal": null},
            "logprobs": null, "finish_reason": "content_filter"})],
        _ => return Err(ProviderError::Protocol("answer has no `candidates`".into())),
    };
    Ok(json!({
        "id": response_id(&response),
        "object": "chat.completion",
        "created": now_secs(),
        "model": response.model_version,
        "choices": choices,
        "usage": usage_of(&response).to_openai(),
    }))
}

fn response_id(response: &wire::Response) -> String {
    match &response.response_id {
        Some(id) => format!("chatcmpl-{id}"),
        None => format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
    }
}

fn usage_of(response: &wire::Response) -> Usage {
    response
        .usage_metadata
        .as_ref()
        .map(wire::UsageMetadata::tokens)
        .unwrap_or_default()
}

fn candidate_index(candidate: &Candidate, position: usize) -> u64 {
    candidate.index.unwrap_or(position as u64)
}

/// What a candidate's parts say: its text, its thoughts and its calls.
#[derive(Default)]
struct Said {
    text: String,
    reasoning: String,
    calls: Vec<Value>,
}

fn read_parts(candidate: &Candidate, first_call_index: usize) -> Said {
    let mut said = Said::default();
    for part in &candidate.content.parts {
        if let Some(call) = &part.function_call {
            let arguments = call
                .args
                .as_ref()
                .map_or_else(|| "{}".to_string(), Value::to_string);
            said.calls.push(json!({
                "index": first_call_index + said.calls.len(),
                "id": call_id(part.thought_signature.as_deref()),
                "type": "function",
                "function": {"name": call.name, "arguments": arguments},
            }));
        } else if let Some(text) = &part.text {
            if part.thought {
                said.reasoning.push_str(text);
            } else {
                said.text.push_str(text);
            }
        }
    }
    said
}

fn choice(candidate: &Candidate, position: usize) -> Value {
    let said = read_parts(candidate, 0);
    let has_calls = !said.calls.is_empty();
    let mut message = json!({
        "role": "assistant",
        "content": if said.text.is_empty() && (has_calls || filtered(candidate)) { Value::Null } else { json!(said.text) },
        "refusal": null,
    });
    if has_calls {
        let calls: Vec<Value> = said
            .calls
            .into_iter()
            .map(|mut call| {
                call.as_object_mut().map(|c| c.remove("index"));
                call
            })
            .collect();
        message["tool_calls"] = Value::Array(calls);
    }
    if !said.reasoning.is_empty() {
        message["reasoning_content"] = json!(said.reasoning);
    }
    json!({
        "index": candidate_index(candidate, position),
        "message": message,
        "logprobs": null,
        "finish_reason": finish_reason(candidate.finish_reason.as_deref(), has_calls),
    })
}

fn filtered(candidate: &Candidate) -> bool {
    finish_reason(candidate.finish_reason.as_deref(), false) == "content_filter"
}

/// OpenAI's `finish_reason` for a Gemini `finishReason`.
fn finish_reason(reason: Option<&str>, has_calls: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
            | "LANGUAGE",
        ) => "content_filter",
        _ if has_calls => "tool_calls",
        // STOP, OTHER, MALFORMED_FUNCTION_CALL and reasons newer than this adapter.
        _ => "stop",
    }
}

/// Per-candidate progress of a stream.
#[derive(Default, Clone)]
struct CandidateState {
    started: bool,
    calls: usize,
    finished: bool,
}

/// Gemini's stream events (each a partial `GenerateContentResponse`) → OpenAI chunks.
#[derive(Default)]
pub(in crate::providers) struct ChunkTranslator {
    meta: Option<ChunkMeta>,
    candidates: Vec<CandidateState>,
    usage: Usage,
}

impl ChunkTranslator {
    fn meta(&mut self, response: &wire::Response) -> ChunkMeta {
        self.meta
            .get_or_insert_with(|| ChunkMeta {
                id: response_id(response),
                created: now_secs(),
                model: response.model_version.clone().unwrap_or_default(),
            })
            .clone()
    }

    fn state(&mut self, index: usize) -> &mut CandidateState {
        if self.candidates.len() <= index {
            self.candidates.resize(index + 1, CandidateState::default());
        }
        &mut self.candidates[index]
    }

    fn candidate_chunks(
        &mut self,
        meta: &ChunkMeta,
        candidate: &Candidate,
        position: usize,
    ) -> Vec<Value> {
        let index = candidate_index(candidate, position);
        let state = self.state(index as usize);
        let said = read_parts(candidate, state.calls);
        state.calls += said.calls.len();
        let mut delta = serde_json::Map::new();
        if !state.started {
            state.started = true;
            delta.insert("role".into(), json!("assistant"));
            delta.insert("content".into(), json!(""));
        }
        if !said.text.is_empty() {
            delta.insert("content".into(), json!(said.text));
        }
        if !said.reasoning.is_empty() {
            delta.insert("reasoning_content".into(), json!(said.reasoning));
        }
        if !said.calls.is_empty() {
            delta.insert("tool_calls".into(), Value::Array(said.calls));
        }
        let mut chunks = Vec::new();
        if !delta.is_empty() {
            chunks.push(meta.chunk(index, Value::Object(delta), None));
        }
        if let Some(reason) = candidate.finish_reason.as_deref() {
            let has_calls = state.calls > 0;
            state.finished = true;
            chunks.push(meta.chunk(
                index,
                json!({}),
                Some(finish_reason(Some(reason), has_calls)),
            ));
        }
        chunks
    }
}

impl EventTranslator for ChunkTranslator {
    fn event(&mut self, data: &str) -> Result<Vec<Value>, ProviderError> {
        let response = read(&parse_event(data)?)?;
        let meta = self.meta(&response);
        if response.usage_metadata.is_some() {
            self.usage = usage_of(&response);
        }
        let mut chunks = Vec::new();
        match &response.candidates {
            Some(candidates) => {
                for (position, candidate) in candidates.iter().enumerate() {
                    chunks.extend(self.candidate_chunks(&meta, candidate, position));
                }
            }
            None if response.blocked() => {
                let state = self.state(0);
                state.started = true;
                state.finished = true;
                chunks.push(meta.chunk(
                    0,
                    json!({"role": "assistant", "content": null}),
                    Some("content_filter"),
                ));
            }
            None => {}
        }
        Ok(chunks)
    }

    /// The usage chunk; a stream that ended before any candidate finished was cut short.
    fn end(&mut self) -> Result<Vec<Value>, ProviderError> {
        let finished =
            !self.candidates.is_empty() && self.candidates.iter().all(|c| c.finished || !c.started);
        match &self.meta {
            Some(meta) if finished => Ok(vec![meta.usage_chunk(&self.usage)]),
            _ => Err(ProviderError::Protocol(
                "the stream ended before a finish reason".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::gemini::signature_of;
    use crate::providers::{reassemble, replay};

    fn tool_answer() -> Value {
        json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "Weighing it.", "thought": true},
                    {"text": "Checking both."},
                    {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
                    {"functionCall": {"name": "weather", "args": {"city": "Rome"}}},
                ]},
                "finishReason": "STOP", "index": 0,
            }],
            "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 20,
                "thoughtsTokenCount": 10, "cachedContentTokenCount": 100, "totalTokenCount": 150},
            "modelVersion": "gemini-test", "responseId": "r1",
        })
    }

    #[test]
    fn whole_answer_with_calls_thoughts_and_cached_usage() {
        let completion = to_completion(&tool_answer()).unwrap();
        assert_eq!(completion["id"], "chatcmpl-r1");
        assert_eq!(completion["model"], "gemini-test");
        let choice = &completion["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        let message = &choice["message"];
        assert_eq!(message["content"], "Checking both.");
        assert_eq!(message["reasoning_content"], "Weighing it.");
        let calls = message["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            calls[0]["function"],
            json!({"name": "weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert_eq!(
            signature_of(calls[0]["id"].as_str().unwrap()).as_deref(),
            Some("c2ln")
        );
        assert_eq!(signature_of(calls[1]["id"].as_str().unwrap()), None);
        assert_ne!(calls[0]["id"], calls[1]["id"]);
        assert_eq!(
            completion["usage"],
            json!({"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
                "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 0}})
        );
    }

    #[test]
    fn finish_reasons_and_safety_blocks() {
        let with = |reason: &str| {
            to_completion(&json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]}))
                .unwrap()["choices"][0]["finish_reason"]
                .clone()
        };
        assert_eq!(with("STOP"), "stop");
        assert_eq!(with("MAX_TOKENS"), "length");
        assert_eq!(with("RECITATION"), "content_filter");
        let safety = to_completion(&json!({"candidates": [{"finishReason": "SAFETY", "index": 0,
            "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": true}]}]}))
            .unwrap();
        assert_eq!(safety["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(safety["choices"][0]["message"]["content"], Value::Null);
        let prompt_blocked = to_completion(&json!({"promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}}))
        .unwrap();
        assert_eq!(
            prompt_blocked["choices"][0]["finish_reason"],
            "content_filter"
        );
        assert_eq!(prompt_blocked["usage"]["prompt_tokens"], 5);
        assert!(to_completion(&json!({})).is_err());
    }

    #[test]
    fn several_candidates_become_several_choices() {
        let completion = to_completion(&json!({"candidates": [
            {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0},
            {"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP", "index": 1},
        ]}))
        .unwrap();
        let texts: Vec<&Value> = completion["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["message"]["content"])
            .collect();
        assert_eq!(texts, [&json!("a"), &json!("b")]);
    }

    fn stream() -> Vec<String> {
        let usage = json!({"promptTokenCount": 120, "candidatesTokenCount": 20, "thoughtsTokenCount": 10,
            "cachedContentTokenCount": 100, "totalTokenCount": 150});
        vec![
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Weighing it.", "thought": true}]}, "index": 0}],
                "modelVersion": "gemini-test", "responseId": "r1"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Checking "}]}, "index": 0}],
                "modelVersion": "gemini-test", "responseId": "r1"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "both."}]}, "index": 0}],
                "modelVersion": "gemini-test", "responseId": "r1"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [
                    {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
                    {"functionCall": {"name": "weather", "args": {"city": "Rome"}}}]},
                "finishReason": "STOP", "index": 0}],
                "usageMetadata": usage, "modelVersion": "gemini-test", "responseId": "r1"}),
        ]
        .into_iter()
        .map(|v| v.to_string())
        .collect()
    }

    #[test]
    fn stream_reassembles_to_the_whole_answer() {
        let events = stream();
        let events: Vec<&str> = events.iter().map(String::as_str).collect();
        let chunks: Vec<Value> = replay(&mut ChunkTranslator::default(), &events)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let streamed = reassemble(&chunks);
        let whole = to_completion(&tool_answer()).unwrap();
        let message = &whole["choices"][0]["message"];
        assert_eq!(streamed["content"], message["content"]);
        assert_eq!(streamed["reasoning"], message["reasoning_content"]);
        assert_eq!(streamed["finish_reason"], "tool_calls");
        assert_eq!(streamed["usage"], whole["usage"]);
        let calls = streamed["tool_calls"].as_array().unwrap();
        let expected = message["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), expected.len());
        for (call, expected) in calls.iter().zip(expected) {
            assert_eq!(
                call["function"], expected["function"],
                "ids are fresh per answer"
            );
        }
        assert_eq!(
            signature_of(calls[0]["id"].as_str().unwrap()).as_deref(),
            Some("c2ln")
        );
    }

    #[test]
    fn stream_errors_safety_and_truncation() {
        let out = replay(
            &mut ChunkTranslator::default(),
            &[
                r#"{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}"#,
            ],
        );
        assert!(matches!(&out[0], Err(e) if e.is_retryable()));
        let out = replay(
            &mut ChunkTranslator::default(),
            &[
                r#"{"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}"#,
            ],
        );
        let chunks: Vec<Value> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(reassemble(&chunks)["finish_reason"], "content_filter");
        let events = stream();
        let cut = replay(&mut ChunkTranslator::default(), &[events[0].as_str()]);
        assert!(matches!(cut.last(), Some(Err(ProviderError::Protocol(_)))));
    }
}
