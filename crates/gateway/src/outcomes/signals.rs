//! Implicit quality signals: what an answer says about itself without anyone grading it. They
//! are cheap to read off the wire as the answer passes, and `train --from-log` turns them into
//! negative labels where no feedback or judge grade exists.
//!
//! - `truncated`: the answer stopped at the token limit (`finish_reason: "length"`, Anthropic's
//!   `stop_reason: "max_tokens"`, Gemini translated to either).
//! - `invalid_tool_json`: a tool call's arguments are not a JSON object.
//! - `upstream_error`: a model failed before the one that answered, or the answer failed.
//! - `truncated_upstream`: the upstream closed a stream mid-answer, without its end marker.

use std::collections::BTreeMap;

use serde_json::Value;

pub const TRUNCATED: &str = "truncated";
pub const INVALID_TOOL_JSON: &str = "invalid_tool_json";
pub const UPSTREAM_ERROR: &str = "upstream_error";
pub const TRUNCATED_UPSTREAM: &str = "truncated_upstream";

/// Signals gathered from one answer, whole or streamed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    truncated: bool,
    invalid_tool_json: bool,
    truncated_upstream: bool,
    /// Streamed tool-call arguments by index, checked at the end.
    arguments: BTreeMap<u64, String>,
}

impl Signals {
    /// From a whole answer: an OpenAI chat completion or an Anthropic message.
    pub fn of_answer(answer: &Value) -> Signals {
        let mut signals = Signals::default();
        if let Some(choice) = answer.pointer("/choices/0") {
            signals.truncated = choice["finish_reason"] == "length";
            let calls = choice
                .pointer("/message/tool_calls")
                .and_then(Value::as_array);
            signals.invalid_tool_json = calls.into_iter().flatten().any(|call| {
                let arguments = call.pointer("/function/arguments").and_then(Value::as_str);
                !arguments.is_some_and(is_json_object)
            });
        } else {
            signals.truncated = answer["stop_reason"] == "max_tokens";
        }
        signals
    }

    /// Takes in one streamed item: an OpenAI chunk or an Anthropic event.
    pub fn observe(&mut self, item: &Value) {
        if let Some(choice) = item.pointer("/choices/0") {
            if choice["finish_reason"] == "length" {
                self.truncated = true;
            }
            let calls = choice
                .pointer("/delta/tool_calls")
                .and_then(Value::as_array);
            for call in calls.into_iter().flatten() {
                let index = call["index"].as_u64().unwrap_or(0);
                let part = call.pointer("/function/arguments").and_then(Value::as_str);
                self.arguments
                    .entry(index)
                    .or_default()
                    .push_str(part.unwrap_or(""));
            }
            return;
        }
        match item["type"].as_str() {
            Some("message_delta")
                if item.pointer("/delta/stop_reason") == Some(&"max_tokens".into()) =>
            {
                self.truncated = true;
            }
            Some("content_block_start")
                if item.pointer("/content_block/type") == Some(&"tool_use".into()) =>
            {
                let index = item["index"].as_u64().unwrap_or(0);
                self.arguments.entry(index).or_default();
            }
            Some("content_block_delta")
                if item.pointer("/delta/type") == Some(&"input_json_delta".into()) =>
            {
                let index = item["index"].as_u64().unwrap_or(0);
                let part = item.pointer("/delta/partial_json").and_then(Value::as_str);
                self.arguments
                    .entry(index)
                    .or_default()
                    .push_str(part.unwrap_or(""));
            }
            _ => {}
        }
    }

    /// The upstream cut the stream before its end marker.
    pub fn cut_upstream(&mut self) {
        self.truncated_upstream = true;
    }

    /// The signals as a comma-separated list (empty when there are none). `failed`: a model
    /// failed on the way (fallbacks, or an error status).
    pub fn list(&self, failed: bool) -> String {
        // Anthropic streams a tool call without arguments as no `input_json_delta` at all.
        let invalid_stream = self
            .arguments
            .values()
            .any(|a| !a.is_empty() && !is_json_object(a));
        let mut names = Vec::new();
        if self.truncated {
            names.push(TRUNCATED);
        }
        if self.invalid_tool_json || invalid_stream {
            names.push(INVALID_TOOL_JSON);
        }
        if self.truncated_upstream {
            names.push(TRUNCATED_UPSTREAM);
        }
        if failed {
            names.push(UPSTREAM_ERROR);
        }
        names.join(",")
    }
}

fn is_json_object(text: &str) -> bool {
    serde_json::from_str::<Value>(text).is_ok_and(|v| v.is_object())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_answers_show_truncation_and_broken_tool_arguments() {
        let openai = json!({"choices": [{"finish_reason": "length", "message": {"tool_calls": [
            {"function": {"name": "f", "arguments": "{\"city\": \"Par"}}
        ]}}]});
        assert_eq!(
            Signals::of_answer(&openai).list(false),
            "truncated,invalid_tool_json"
        );
        let fine = json!({"choices": [{"finish_reason": "tool_calls", "message": {"tool_calls": [
            {"function": {"name": "f", "arguments": "{\"city\": \"Paris\"}"}}
        ]}}]});
        assert_eq!(Signals::of_answer(&fine).list(false), "");
        let anthropic = json!({"type": "message", "stop_reason": "max_tokens", "content": []});
        assert_eq!(
            Signals::of_answer(&anthropic).list(true),
            "truncated,upstream_error"
        );
    }

    #[test]
    fn streams_join_argument_fragments_before_checking_them() {
        let mut good = Signals::default();
        for part in ["{\"ci", "ty\": \"Paris\"}"] {
            good.observe(&json!({"choices": [{"delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": part}}
            ]}}]}));
        }
        assert_eq!(good.list(false), "");

        let mut broken = Signals::default();
        broken.observe(&json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}));
        broken.observe(&json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}));
        broken.observe(&json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}}));
        assert_eq!(broken.list(false), "truncated,invalid_tool_json");
    }
}
