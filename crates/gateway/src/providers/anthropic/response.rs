//! An Anthropic Messages answer → OpenAI's shapes: a `message` → a `chat.completion`, and the
//! stream's events → `chat.completion.chunk`s.
//!
//! Text blocks join into `content`, `tool_use` blocks become `tool_calls` (arguments as a JSON
//! string), thinking becomes `reasoning_content`; usage counts cache reads and writes as prompt
//! tokens. In a stream, the usage comes in a last chunk without choices, as OpenAI's
//! `include_usage` gives it, so the server prices and hides it the same way for every kind.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::super::{ChunkMeta, EventTranslator, ProviderError, now_secs, parse_event};
use super::wire::{self, Block, Delta, Event};
use super::{check_native, cut_short, finish_reason, stream_error};
use triage_core::catalog::Usage;

/// The `chat.completion` for a whole Messages answer.
pub(in crate::providers) fn to_completion(message: &Value) -> Result<Value, ProviderError> {
    let message = check_native(message.clone())?;
    let message = wire::Message::deserialize(&message)
        .map_err(|e| ProviderError::Protocol(format!("answer is not a Messages `message`: {e}")))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in &message.content {
        match block {
            Block::Text { text: more } => text.push_str(more),
            Block::Thinking { thinking } => reasoning.push_str(thinking),
            Block::ToolUse { id, name, input } => tool_calls.push(json!({
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": input.to_string()},
            })),
            Block::Other => {}
        }
    }
    let mut reply = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) },
        "refusal": null,
    });
    if !tool_calls.is_empty() {
        reply["tool_calls"] = Value::Array(tool_calls);
    }
    if !reasoning.is_empty() {
        reply["reasoning_content"] = json!(reasoning);
    }
    let finish = finish_reason(message.stop_reason.as_deref());
    Ok(json!({
        "id": message.id,
        "object": "chat.completion",
        "created": now_secs(),
        "model": message.model,
        "choices": [{"index": 0, "message": reply, "logprobs": null, "finish_reason": finish}],
        "usage": message.usage.tokens().to_openai(),
    }))
}

/// A tool-use block of the stream: its OpenAI tool-call index, and whether any argument text
/// went out for it yet.
struct ToolBlock {
    index: usize,
    sent_arguments: bool,
}

/// Anthropic's stream events → OpenAI chunks.
#[derive(Default)]
pub(in crate::providers) struct ChunkTranslator {
    meta: ChunkMeta,
    /// Anthropic's running totals: `message_start` has the input side, `message_delta` the
    /// output (and, in newer API versions, updated input counts too).
    usage: wire::Usage,
    tools: HashMap<u64, ToolBlock>,
    stopped: bool,
}

impl ChunkTranslator {
    fn delta(&self, delta: Value) -> Vec<Value> {
        vec![self.meta.chunk(0, delta, None)]
    }

    fn message_start(&mut self, message: wire::Message) -> Vec<Value> {
        self.meta = ChunkMeta {
            id: message.id.unwrap_or_default(),
            created: now_secs(),
            model: message.model.unwrap_or_default(),
        };
        self.usage = message.usage;
        self.delta(json!({"role": "assistant", "content": ""}))
    }

    fn block_start(&mut self, index: u64, block: Block) -> Vec<Value> {
        match block {
            Block::Text { text } if !text.is_empty() => self.delta(json!({"content": text})),
            Block::Thinking { thinking } if !thinking.is_empty() => {
                self.delta(json!({"reasoning_content": thinking}))
            }
            Block::ToolUse { id, name, .. } => {
                let tool = self.tools.len();
                self.tools.insert(
                    index,
                    ToolBlock {
                        index: tool,
                        sent_arguments: false,
                    },
                );
                self.delta(json!({"tool_calls": [{
                    "index": tool, "id": id, "type": "function",
                    "function": {"name": name, "arguments": ""},
                }]}))
            }
            _ => Vec::new(),
        }
    }

    fn block_delta(&mut self, index: u64, delta: Delta) -> Vec<Value> {
        match delta {
            Delta::TextDelta { text } => self.delta(json!({"content": text})),
            Delta::ThinkingDelta { thinking } => self.delta(json!({"reasoning_content": thinking})),
            Delta::InputJsonDelta { partial_json } => match self.tools.get_mut(&index) {
                Some(tool) if !partial_json.is_empty() => {
                    tool.sent_arguments = true;
                    let index = tool.index;
                    self.delta(json!({"tool_calls": [
                        {"index": index, "function": {"arguments": partial_json}}]}))
                }
                _ => Vec::new(),
            },
            Delta::Other => Vec::new(),
        }
    }

    /// A tool call whose input was empty sent no argument text: it gets `{}`, as the
    /// non-streaming answer would.
    fn block_stop(&mut self, index: u64) -> Vec<Value> {
        match self.tools.get_mut(&index) {
            Some(tool) if !tool.sent_arguments => {
                tool.sent_arguments = true;
                let index = tool.index;
                self.delta(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": "{}"}}]}),
                )
            }
            _ => Vec::new(),
        }
    }

    fn message_delta(&mut self, stop_reason: Option<String>, usage: &wire::Usage) -> Vec<Value> {
        self.usage.update(usage);
        match stop_reason {
            Some(reason) => vec![
                self.meta
                    .chunk(0, json!({}), Some(finish_reason(Some(&reason)))),
            ],
            None => Vec::new(),
        }
    }

    fn usage(&self) -> Usage {
        self.usage.tokens()
    }
}

impl EventTranslator for ChunkTranslator {
    fn event(&mut self, data: &str) -> Result<Vec<Value>, ProviderError> {
        let value = parse_event(data)?;
        let event = Event::deserialize(&value).map_err(|e| {
            ProviderError::Protocol(format!("malformed Messages stream event: {e}"))
        })?;
        Ok(match event {
            Event::MessageStart { message } => self.message_start(message),
            Event::ContentBlockStart {
                index,
                content_block,
            } => self.block_start(index, content_block),
            Event::ContentBlockDelta { index, delta } => self.block_delta(index, delta),
            Event::ContentBlockStop { index } => self.block_stop(index),
            Event::MessageDelta { delta, usage } => self.message_delta(delta.stop_reason, &usage),
            Event::MessageStop => {
                self.stopped = true;
                vec![self.meta.usage_chunk(&self.usage())]
            }
            Event::Error => return Err(stream_error(&value)),
            Event::Other => Vec::new(),
        })
    }

    fn end(&mut self) -> Result<Vec<Value>, ProviderError> {
        if self.stopped {
            Ok(Vec::new())
        } else {
            Err(cut_short())
        }
    }

    fn finished(&self) -> bool {
        self.stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{reassemble, replay};

    fn tool_answer() -> Value {
        json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [
                {"type": "thinking", "thinking": "Two cities.", "signature": "sig"},
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 20, "output_tokens": 30,
                "cache_read_input_tokens": 100, "cache_creation_input_tokens": 10},
        })
    }

    /// The stream Anthropic sends for [`tool_answer`].
    fn tool_stream() -> Vec<&'static str> {
        vec![
            r#"{"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-test","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":20,"output_tokens":1,"cache_read_input_tokens":100,"cache_creation_input_tokens":10}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Two cities."}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Checking "}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"both."}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"weather","input":{}}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}"#,
            r#"{"type":"content_block_stop","index":2}"#,
            r#"{"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_2","name":"weather","input":{}}}"#,
            r#"{"type":"content_block_stop","index":3}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":30}}"#,
            r#"{"type":"message_stop"}"#,
        ]
    }

    #[test]
    fn whole_answer_with_tools_thinking_and_cache_usage() {
        let completion = to_completion(&tool_answer()).unwrap();
        let choice = &completion["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(
            choice["message"],
            json!({
                "role": "assistant",
                "content": "Checking both.",
                "refusal": null,
                "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": "{}"}},
                ],
                "reasoning_content": "Two cities.",
            })
        );
        assert_eq!(
            completion["usage"],
            json!({"prompt_tokens": 130, "completion_tokens": 30, "total_tokens": 160,
                "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 10}})
        );
        assert_eq!(
            (&completion["id"], &completion["model"]),
            (&json!("msg_01"), &json!("claude-test"))
        );
    }

    #[test]
    fn cost_of_cache_usage_uses_each_price() {
        let completion = to_completion(&tool_answer()).unwrap();
        let usage = Usage::from_openai(&completion["usage"]).unwrap();
        let model = crate::providers::test_model("claude-test");
        // 20 plain at 1.0, 100 cached at 0.1, 10 written at 1.25, 30 out at 2.0.
        let expected = (20.0 * 1.0 + 100.0 * 0.1 + 10.0 * 1.25 + 30.0 * 2.0) / 1e6;
        assert!((model.cost(&usage) - expected).abs() < 1e-15);
    }

    #[test]
    fn stop_reasons_become_finish_reasons() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("max_tokens", "length"),
            ("stop_sequence", "stop"),
        ] {
            let mut answer = tool_answer();
            answer["stop_reason"] = json!(stop);
            answer["content"] = json!([{"type": "text", "text": "x"}]);
            let completion = to_completion(&answer).unwrap();
            assert_eq!(completion["choices"][0]["finish_reason"], finish);
            assert_eq!(completion["choices"][0]["message"]["content"], "x");
        }
        assert!(matches!(
            to_completion(&json!({"type": "error"})),
            Err(ProviderError::Protocol(_))
        ));
    }

    #[test]
    fn stream_reassembles_to_the_whole_answer() {
        let chunks: Vec<Value> = replay(&mut ChunkTranslator::default(), &tool_stream())
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(
            chunks.last().unwrap()["choices"],
            json!([]),
            "usage comes last, alone"
        );
        let whole = to_completion(&tool_answer()).unwrap();
        let message = &whole["choices"][0]["message"];
        let streamed = reassemble(&chunks);
        assert_eq!(streamed["content"], message["content"]);
        assert_eq!(streamed["reasoning"], message["reasoning_content"]);
        assert_eq!(streamed["tool_calls"], message["tool_calls"]);
        assert_eq!(
            streamed["finish_reason"],
            whole["choices"][0]["finish_reason"]
        );
        assert_eq!(streamed["usage"], whole["usage"]);
        for chunk in &chunks {
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["id"], "msg_01");
        }
    }

    #[test]
    fn stream_errors_and_truncation() {
        let events = [
            tool_stream()[0],
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ];
        let out = replay(&mut ChunkTranslator::default(), &events);
        assert!(out[0].is_ok());
        assert!(matches!(&out[1], Err(e) if e.is_retryable()));
        let cut = replay(&mut ChunkTranslator::default(), &tool_stream()[..9]);
        assert!(matches!(cut.last(), Some(Err(ProviderError::Protocol(_)))));
    }
}
