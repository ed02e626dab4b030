//! The Messages format as spoken *to* triage, for `/v1/messages` clients whose request goes to
//! an OpenAI-compatible or Gemini upstream: the Messages request → an OpenAI chat body, and the
//! OpenAI answer → a Messages `message` or stream events.
//!
//! What has no OpenAI equivalent is dropped when it only tunes the answer (`top_k`, `thinking`,
//! `cache_control`, thinking blocks of earlier turns) and refused when dropping it would change
//! the conversation (server tools, images inside tool results, documents by URL): the reason
//! goes to the dispatcher, which skips to an Anthropic sibling if there is one. Not for
//! requests that go to Anthropic upstreams: those pass through untranslated.

use serde_json::{Map, Value, json};

use super::super::str_field;
use super::{stop_reason, usage_json};
use triage_core::catalog::Usage;

/// Why a Messages request has no OpenAI translation.
pub type Untranslatable = String;

/// The OpenAI chat body for a Messages body.
pub fn chat_body(body: &Map<String, Value>) -> Result<Map<String, Value>, Untranslatable> {
    for key in ["mcp_servers", "container"] {
        if body.get(key).is_some_and(|v| !v.is_null()) {
            return Err(format!("`{key}` needs an Anthropic upstream"));
        }
    }
    let mut out = Map::new();
    if let Some(model) = body.get("model") {
        out.insert("model".into(), model.clone());
    }
    let mut messages = Vec::new();
    if let Some(system) = system_text(body.get("system")) {
        messages.push(json!({"role": "system", "content": system}));
    }
    let turns = body.get("messages").and_then(Value::as_array);
    for (i, turn) in turns.into_iter().flatten().enumerate() {
        convert_turn(turn, &format!("messages[{i}]"), &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    copy_parameters(body, &mut out);
    add_tools(body, &mut out)?;
    Ok(out)
}

/// `system` as one string: its text blocks joined by blank lines.
fn system_text(system: Option<&Value>) -> Option<String> {
    match system? {
        Value::String(text) => Some(text.clone()),
        Value::Array(blocks) => {
            let texts: Vec<&str> = blocks.iter().filter_map(|b| str_field(b, "text")).collect();
            (!texts.is_empty()).then(|| texts.join("\n\n"))
        }
        _ => None,
    }
}

fn copy_parameters(body: &Map<String, Value>, out: &mut Map<String, Value>) {
    for (from, to) in [
        ("max_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("stop_sequences", "stop"),
        ("stream", "stream"),
    ] {
        if let Some(value) = body.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), value.clone());
        }
    }
    if let Some(user) = body.get("metadata").and_then(|m| str_field(m, "user_id")) {
        out.insert("user".into(), json!(user));
    }
    let format = body
        .get("output_config")
        .and_then(|c| c.get("format"))
        .or_else(|| body.get("output_format"));
    if let Some(schema) = format
        .filter(|f| str_field(f, "type") == Some("json_schema"))
        .and_then(|f| f.get("schema"))
    {
        out.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}}),
        );
    }
}

/// One Messages turn as one or more chat messages: a user turn's `tool_result` blocks become
/// `tool` messages, placed first as OpenAI wants them right after the assistant's calls.
fn convert_turn(turn: &Value, at: &str, out: &mut Vec<Value>) -> Result<(), Untranslatable> {
    let role = str_field(turn, "role").unwrap_or_default();
    let blocks = match turn.get("content") {
        Some(Value::String(text)) => {
            out.push(json!({"role": role, "content": text}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(format!(
                "{at}.content must be a string or an array of blocks"
            ));
        }
    };
    match role {
        "user" => convert_user(blocks, at, out),
        "assistant" => {
            out.push(convert_assistant(blocks, at)?);
            Ok(())
        }
        other => Err(format!("{at}: role `{other}` is not user or assistant")),
    }
}

fn convert_user(blocks: &[Value], at: &str, out: &mut Vec<Value>) -> Result<(), Untranslatable> {
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        match str_field(block, "type") {
            Some("tool_result") => out.push(tool_message(block, &at)?),
            _ => parts.push(content_part(block, &at)?),
        }
    }
    match parts.as_slice() {
        [] => {}
        [only] if only["type"] == "text" => {
            out.push(json!({"role": "user", "content": only["text"]}));
        }
        _ => out.push(json!({"role": "user", "content": parts})),
    }
    Ok(())
}

/// A user block as an OpenAI content part.
fn content_part(block: &Value, at: &str) -> Result<Value, Untranslatable> {
    let source = &block["source"];
    match (str_field(block, "type"), str_field(source, "type")) {
        (Some("text"), _) => Ok(json!({"type": "text", "text": block["text"]})),
        (Some("image"), Some("base64")) => {
            Ok(json!({"type": "image_url", "image_url": {"url": data_url(source)}}))
        }
        (Some("image"), Some("url")) => {
            Ok(json!({"type": "image_url", "image_url": {"url": source["url"]}}))
        }
        (Some("document"), Some("base64")) => Ok(json!({"type": "file",
            "file": {"filename": "document.pdf", "file_data": data_url(source)}})),
        (Some("document"), Some("text")) => Ok(json!({"type": "text", "text": source["data"]})),
        (kind, source) => Err(format!(
            "{at}: a `{}` block{} has no OpenAI equivalent",
            kind.unwrap_or("(untyped)"),
            source
                .map(|s| format!(" with a `{s}` source"))
                .unwrap_or_default()
        )),
    }
}

fn data_url(source: &Value) -> String {
    format!(
        "data:{};base64,{}",
        str_field(source, "media_type").unwrap_or("application/octet-stream"),
        str_field(source, "data").unwrap_or_default()
    )
}

/// A `tool_result` block as a `tool` message; its text blocks joined.
fn tool_message(block: &Value, at: &str) -> Result<Value, Untranslatable> {
    let content = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for part in parts {
                match str_field(part, "type") {
                    Some("text") => texts.push(str_field(part, "text").unwrap_or_default()),
                    other => {
                        return Err(format!(
                            "{at}: a `{}` block in a tool result has no OpenAI equivalent",
                            other.unwrap_or("(untyped)")
                        ));
                    }
                }
            }
            texts.join("\n")
        }
        Some(_) => return Err(format!("{at}.content must be a string or an array")),
    };
    Ok(json!({"role": "tool", "tool_call_id": block["tool_use_id"], "content": content}))
}

/// An assistant turn: text joined, `tool_use` as `tool_calls`, thinking dropped.
fn convert_assistant(blocks: &[Value], at: &str) -> Result<Value, Untranslatable> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        match str_field(block, "type") {
            Some("text") => text.push_str(str_field(block, "text").unwrap_or_default()),
            Some("tool_use") => calls.push(json!({
                "id": block["id"],
                "type": "function",
                "function": {"name": block["name"], "arguments": block["input"].to_string()},
            })),
            Some("thinking" | "redacted_thinking") => {}
            other => {
                return Err(format!(
                    "{at}.content[{j}]: a `{}` block has no OpenAI equivalent",
                    other.unwrap_or("(untyped)")
                ));
            }
        }
    }
    let mut message = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        if text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = Value::Array(calls);
    }
    Ok(message)
}

/// `tools` (client tools only) and `tool_choice`.
fn add_tools(
    body: &Map<String, Value>,
    out: &mut Map<String, Value>,
) -> Result<(), Untranslatable> {
    let Some(tools) = body
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    else {
        return Ok(());
    };
    let mut functions = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        if str_field(tool, "type").is_some_and(|t| t != "custom") {
            return Err(format!(
                "tools[{i}]: server tool `{}` needs an Anthropic upstream",
                str_field(tool, "type").unwrap_or_default()
            ));
        }
        let mut function = json!({"name": tool["name"], "parameters": tool["input_schema"]});
        if let Some(description) = str_field(tool, "description") {
            function["description"] = json!(description);
        }
        if tool.get("strict") == Some(&Value::Bool(true)) {
            function["strict"] = Value::Bool(true);
        }
        functions.push(json!({"type": "function", "function": function}));
    }
    out.insert("tools".into(), Value::Array(functions));
    let Some(choice) = body.get("tool_choice").filter(|c| !c.is_null()) else {
        return Ok(());
    };
    let mapped = match str_field(choice, "type") {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => json!({"type": "function", "function": {"name": choice["name"]}}),
        other => {
            return Err(format!(
                "tool_choice `{}` is unknown",
                other.unwrap_or_default()
            ));
        }
    };
    out.insert("tool_choice".into(), mapped);
    if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
        out.insert("parallel_tool_calls".into(), Value::Bool(false));
    }
    Ok(())
}

/// A `message` id for an OpenAI completion id.
fn message_id(id: Option<&str>) -> String {
    let id = id.unwrap_or_default();
    format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id))
}

/// The Messages `message` for an OpenAI `chat.completion` (its first choice).
pub fn message(completion: &Value) -> Value {
    let choice = &completion["choices"][0];
    let reply = &choice["message"];
    let mut content = Vec::new();
    let refusal = str_field(reply, "refusal").filter(|r| !r.is_empty());
    if let Some(text) = str_field(reply, "content")
        .filter(|t| !t.is_empty())
        .or(refusal)
    {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in reply["tool_calls"].as_array().into_iter().flatten() {
        content.push(json!({
            "type": "tool_use",
            "id": call["id"],
            "name": call["function"]["name"],
            "input": tool_input(str_field(&call["function"], "arguments")),
        }));
    }
    let stop = match refusal {
        Some(_) => "refusal",
        None => stop_reason(str_field(choice, "finish_reason")),
    };
    let usage = Usage::from_openai(&completion["usage"]).unwrap_or_default();
    json!({
        "id": message_id(str_field(completion, "id")),
        "type": "message",
        "role": "assistant",
        "model": completion["model"],
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage_json(&usage),
    })
}

/// Tool arguments as the object Anthropic's `input` must be. Arguments that are not a JSON
/// object (a model's malformed output) are kept under `_raw` rather than lost.
fn tool_input(arguments: Option<&str>) -> Value {
    let arguments = arguments.unwrap_or_default();
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(object @ Value::Object(_)) => object,
        _ => json!({"_raw": arguments}),
    }
}

/// The block being streamed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Open {
    Text,
    /// A tool call, by its OpenAI index.
    Tool(u64),
}

/// OpenAI chunks → Messages stream events, as `(event type, data)` values. The events follow
/// Anthropic's order: `message_start`, then each block's start, deltas and stop, then
/// `message_delta` (stop reason and the full usage, which OpenAI only gives at the end) and
/// `message_stop`.
#[derive(Debug, Default)]
pub struct EventWriter {
    started: bool,
    open: Option<Open>,
    /// The index of the next content block.
    blocks: u64,
    /// OpenAI tool-call indexes already given a block.
    tools_seen: Vec<u64>,
    finish_reason: Option<String>,
    refused: bool,
    usage: Option<Usage>,
}

impl EventWriter {
    /// The events for one chunk; an error when the chunks cannot be expressed as Anthropic
    /// events (a tool call's arguments after the next call had started).
    pub fn chunk(&mut self, chunk: &Value) -> Result<Vec<Value>, String> {
        let mut events = Vec::new();
        if !self.started {
            self.started = true;
            events.push(json!({"type": "message_start", "message": {
                "id": message_id(str_field(chunk, "id")),
                "type": "message", "role": "assistant", "model": chunk["model"],
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}));
        }
        if let Some(usage) = Usage::from_openai(&chunk["usage"]) {
            self.usage = Some(usage);
        }
        let Some(choice) = chunk["choices"].get(0) else {
            return Ok(events);
        };
        let delta = &choice["delta"];
        let refusal = str_field(delta, "refusal").filter(|t| !t.is_empty());
        self.refused |= refusal.is_some();
        if let Some(text) = str_field(delta, "content")
            .filter(|t| !t.is_empty())
            .or(refusal)
        {
            self.switch_to(Open::Text, json!({"type": "text", "text": ""}), &mut events);
            events.push(self.block_delta(json!({"type": "text_delta", "text": text})));
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            self.tool_call(call, &mut events)?;
        }
        if let Some(reason) = str_field(choice, "finish_reason") {
            self.finish_reason = Some(reason.to_string());
        }
        Ok(events)
    }

    fn tool_call(&mut self, call: &Value, events: &mut Vec<Value>) -> Result<(), String> {
        let index = call["index"].as_u64().unwrap_or_default();
        if !self.tools_seen.contains(&index) {
            self.tools_seen.push(index);
            let block = json!({"type": "tool_use", "id": call["id"],
                "name": call["function"]["name"], "input": {}});
            self.switch_to(Open::Tool(index), block, events);
        } else if self.open != Some(Open::Tool(index)) {
            return Err(format!(
                "the upstream interleaved tool calls (arguments for call {index} after the next \
                 call began), which Anthropic's stream format cannot express"
            ));
        }
        if let Some(arguments) = str_field(&call["function"], "arguments").filter(|a| !a.is_empty())
        {
            events.push(
                self.block_delta(json!({"type": "input_json_delta", "partial_json": arguments})),
            );
        }
        Ok(())
    }

    /// Closes the open block unless it is `open`, and starts `block` as `open`.
    fn switch_to(&mut self, open: Open, block: Value, events: &mut Vec<Value>) {
        if self.open == Some(open) {
            return;
        }
        self.close(events);
        events.push(
            json!({"type": "content_block_start", "index": self.blocks, "content_block": block}),
        );
        self.open = Some(open);
    }

    fn close(&mut self, events: &mut Vec<Value>) {
        if self.open.take().is_some() {
            events.push(json!({"type": "content_block_stop", "index": self.blocks}));
            self.blocks += 1;
        }
    }

    fn block_delta(&self, delta: Value) -> Value {
        json!({"type": "content_block_delta", "index": self.blocks, "delta": delta})
    }

    /// The closing events, once the chunks have ended.
    pub fn finish(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        self.close(&mut events);
        let stop = if self.refused {
            "refusal"
        } else {
            stop_reason(self.finish_reason.as_deref())
        };
        events.push(json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": usage_json(&self.usage.unwrap_or_default()),
        }));
        events.push(json!({"type": "message_stop"}));
        events
    }

    /// The usage seen so far.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Value {
        Value::Object(chat_body(body.as_object().unwrap()).unwrap())
    }

    #[test]
    fn request_with_system_images_and_parameters() {
        let out = chat(json!({
            "model": "anthropic/claude", "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Use French."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR="}},
                    {"type": "image", "source": {"type": "url", "url": "https://x/cat.jpg"}},
                ]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "A cat."}]},
                {"role": "user", "content": "Sure?"},
            ],
            "stop_sequences": ["END"], "temperature": 0.5, "top_k": 5,
            "metadata": {"user_id": "u-1"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
            "stream": true,
        }));
        assert_eq!(
            out,
            json!({
                "model": "anthropic/claude",
                "messages": [
                    {"role": "system", "content": "Be brief.\n\nUse French."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR="}},
                        {"type": "image_url", "image_url": {"url": "https://x/cat.jpg"}},
                    ]},
                    {"role": "assistant", "content": "A cat."},
                    {"role": "user", "content": "Sure?"},
                ],
                "max_tokens": 100, "temperature": 0.5, "stop": ["END"], "stream": true,
                "user": "u-1",
            })
        );
    }

    #[test]
    fn request_with_multi_turn_parallel_tool_use() {
        let out = chat(json!({
            "model": "m", "max_tokens": 10,
            "tools": [{"name": "weather", "description": "Forecast",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "Paris and Rome?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "rain"}]},
                    {"type": "text", "text": "Thanks"},
                ]},
            ],
        }));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": "Paris and Rome?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "rain"},
                {"role": "user", "content": "Thanks"},
            ])
        );
        assert_eq!(
            out["tools"],
            json!([{"type": "function", "function": {"name": "weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "description": "Forecast"}}])
        );
        assert_eq!(out["tool_choice"], "required");
        assert_eq!(out["parallel_tool_calls"], false);
    }

    #[test]
    fn untranslatable_requests_say_why() {
        let refuse = |body: Value| chat_body(body.as_object().unwrap()).unwrap_err();
        let user = json!({"role": "user", "content": "x"});
        assert!(refuse(json!({"messages": [user], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}))
            .contains("web_search_20250305"));
        assert!(
            refuse(
                json!({"messages": [{"role": "user", "content": [{"type": "tool_result",
            "tool_use_id": "t", "content": [{"type": "image", "source": {}}]}]}]})
            )
            .contains("tool result")
        );
        assert!(
            refuse(
                json!({"messages": [{"role": "user", "content": [{"type": "document",
            "source": {"type": "url", "url": "https://x/a.pdf"}}]}]})
            )
            .contains("document")
        );
    }

    fn completion(message: Value, finish: &str) -> Value {
        json!({"id": "chatcmpl-abc", "object": "chat.completion", "model": "gpt-x",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 7, "total_tokens": 127,
                "prompt_tokens_details": {"cached_tokens": 100}}})
    }

    #[test]
    fn answer_with_text_and_tools() {
        let answer = message(&completion(
            json!({"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "not json"}},
            ]}),
            "tool_calls",
        ));
        assert_eq!(
            answer,
            json!({
                "id": "msg_abc", "type": "message", "role": "assistant", "model": "gpt-x",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"_raw": "not json"}},
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 20, "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 100, "output_tokens": 7},
            })
        );
        let cut = message(&completion(
            json!({"role": "assistant", "content": "Lo"}),
            "length",
        ));
        assert_eq!(cut["stop_reason"], "max_tokens");
    }

    /// Folds Messages events the way an Anthropic client does.
    fn accumulate(events: &[Value]) -> Value {
        let mut message = Value::Null;
        let mut partial = String::new();
        for event in events {
            match event["type"].as_str().unwrap() {
                "message_start" => message = event["message"].clone(),
                "content_block_start" => {
                    let blocks = message["content"].as_array_mut().unwrap();
                    assert_eq!(event["index"], blocks.len(), "blocks in order");
                    blocks.push(event["content_block"].clone());
                }
                "content_block_delta" => {
                    let index = event["index"].as_u64().unwrap() as usize;
                    let block = &mut message["content"][index];
                    let delta = &event["delta"];
                    match delta["type"].as_str().unwrap() {
                        "text_delta" => {
                            let text = block["text"].as_str().unwrap().to_string()
                                + delta["text"].as_str().unwrap();
                            block["text"] = json!(text);
                        }
                        "input_json_delta" => {
                            partial.push_str(delta["partial_json"].as_str().unwrap())
                        }
                        other => panic!("unexpected delta {other}"),
                    }
                }
                "content_block_stop" => {
                    let index = event["index"].as_u64().unwrap() as usize;
                    let block = &mut message["content"][index];
                    if block["type"] == "tool_use" && !partial.is_empty() {
                        block["input"] = serde_json::from_str(&partial).unwrap();
                    }
                    partial.clear();
                }
                "message_delta" => {
                    message["stop_reason"] = event["delta"]["stop_reason"].clone();
                    message["stop_sequence"] = event["delta"]["stop_sequence"].clone();
                    message["usage"] = event["usage"].clone();
                }
                "message_stop" => {}
                other => panic!("unexpected event {other}"),
            }
        }
        message
    }

    #[test]
    fn streamed_answer_accumulates_to_the_whole_answer() {
        let meta = |choices: Value| json!({"id": "chatcmpl-abc", "object": "chat.completion.chunk", "model": "gpt-x", "choices": choices});
        let delta = |d: Value| meta(json!([{"index": 0, "delta": d, "finish_reason": null}]));
        let chunks = vec![
            delta(json!({"role": "assistant", "content": ""})),
            delta(json!({"content": "Check"})),
            delta(json!({"content": "ing."})),
            delta(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}]}),
            ),
            delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]})),
            delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]})),
            delta(
                json!({"tool_calls": [{"index": 1, "id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}]}),
            ),
            meta(json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])),
            {
                let mut last = meta(json!([]));
                last["usage"] = json!({"prompt_tokens": 120, "completion_tokens": 7, "total_tokens": 127,
                    "prompt_tokens_details": {"cached_tokens": 100}});
                last
            },
        ];
        let mut writer = EventWriter::default();
        let mut events = Vec::new();
        for chunk in &chunks {
            events.extend(writer.chunk(chunk).unwrap());
        }
        events.extend(writer.finish());
        let whole = message(&completion(
            json!({"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}},
            ]}),
            "tool_calls",
        ));
        assert_eq!(accumulate(&events), whole);
        assert_eq!(writer.usage().unwrap().cached_tokens, 100);
    }

    #[test]
    fn interleaved_tool_calls_are_an_error() {
        let chunk = |calls: Value| json!({"id": "x", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": calls}}]});
        let mut writer = EventWriter::default();
        writer
            .chunk(&chunk(
                json!([{"index": 0, "id": "a", "function": {"name": "f", "arguments": ""}}]),
            ))
            .unwrap();
        writer
            .chunk(&chunk(
                json!([{"index": 1, "id": "b", "function": {"name": "g", "arguments": ""}}]),
            ))
            .unwrap();
        assert!(
            writer
                .chunk(&chunk(
                    json!([{"index": 0, "function": {"arguments": "{}"}}])
                ))
                .is_err()
        );
    }
}
