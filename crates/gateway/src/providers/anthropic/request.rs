//! An OpenAI chat-completions body → an Anthropic Messages body.
//!
//! System and developer messages become `system`; `tool` messages become `tool_result` blocks in
//! a user turn; consecutive turns of one role merge, as Anthropic requires alternation.
//! Parameters without an Anthropic equivalent (penalties, `seed`, `logprobs`, `logit_bias`,
//! `reasoning_effort`, JSON mode without a schema…) are dropped; Anthropic's own `thinking` and
//! `top_k` are accepted as they are. Requests whose meaning would change (`n` > 1, audio, file
//! ids) are refused as untranslatable, so that the dispatcher can try a sibling of another kind.

use serde_json::{Map, Value, json};

use super::super::{ProviderError, parse_data_url, str_field, untranslatable};
use super::wire::{
    BlockKind, Metadata, OutputConfig, Request, RequestBlock, Role, Source, Tool, ToolChoice,
    ToolChoiceKind, ToolResultContent, Turn,
};
use super::{DEFAULT_MAX_TOKENS, post};
use triage_core::catalog::{Model, Provider};

pub(in crate::providers) fn request(
    client: &reqwest::Client,
    provider: &Provider,
    model: &Model,
    chat: &Map<String, Value>,
    stream: bool,
) -> Result<reqwest::RequestBuilder, ProviderError> {
    let body = to_messages_body(chat, model, stream)?;
    Ok(post(client, provider, &body, None, None))
}

/// The Messages body for an OpenAI chat body.
pub(super) fn to_messages_body(
    chat: &Map<String, Value>,
    model: &Model,
    stream: bool,
) -> Result<Request, ProviderError> {
    if chat.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(untranslatable(
            "Anthropic returns one choice per request; `n` > 1 is not available",
        ));
    }
    let messages = chat
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| untranslatable("`messages` must be an array"))?;
    let (system, messages) = convert_messages(messages)?;
    let (tools, tool_choice) = tools(chat)?;
    // Sampling parameters both APIs share; `top_k` and `thinking` are Anthropic's own names,
    // accepted from OpenAI-format clients that know their upstream.
    let pass = |key: &str| chat.get(key).filter(|v| !v.is_null()).cloned();
    Ok(Request {
        model: model.upstream.clone(),
        system,
        messages,
        max_tokens: max_tokens(chat, model),
        temperature: pass("temperature"),
        top_p: pass("top_p"),
        top_k: pass("top_k"),
        thinking: pass("thinking"),
        stop_sequences: stop_sequences(chat.get("stop")),
        metadata: ["user", "safety_identifier"]
            .iter()
            .find_map(|key| chat.get(*key).and_then(Value::as_str))
            .map(|user| Metadata {
                user_id: user.to_string(),
            }),
        tools,
        tool_choice,
        output_config: output_format(chat.get("response_format"))
            .map(|format| OutputConfig { format }),
        stream,
    })
}

/// The request's limit, else the model's catalog `max_output`, else [`DEFAULT_MAX_TOKENS`].
fn max_tokens(chat: &Map<String, Value>, model: &Model) -> u64 {
    ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|key| chat.get(*key).and_then(Value::as_u64))
        .or(model.max_output.map(u64::from))
        .unwrap_or(DEFAULT_MAX_TOKENS)
}

/// OpenAI's `stop`, a string or a list, as `stop_sequences`.
fn stop_sequences(stop: Option<&Value>) -> Vec<Value> {
    match stop {
        Some(Value::String(s)) => vec![json!(s)],
        Some(Value::Array(list)) => list.clone(),
        _ => Vec::new(),
    }
}

/// The `system` blocks and the alternating turns of a chat `messages` array.
fn convert_messages(messages: &[Value]) -> Result<(Vec<RequestBlock>, Vec<Turn>), ProviderError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        match str_field(message, "role").unwrap_or_default() {
            "system" | "developer" => system.extend(content_blocks(message.get("content"), &at)?),
            "user" => push(
                &mut turns,
                Role::User,
                content_blocks(message.get("content"), &at)?,
            ),
            "assistant" => push(&mut turns, Role::Assistant, assistant_blocks(message, &at)?),
            "tool" => push(&mut turns, Role::User, vec![tool_result(message, &at)?]),
            other => {
                return Err(untranslatable(format!(
                    "{at}: role `{other}` has no Anthropic equivalent"
                )));
            }
        }
    }
    Ok((system, turns))
}

/// Consecutive messages of one role land in the same turn.
fn push(turns: &mut Vec<Turn>, role: Role, content: Vec<RequestBlock>) {
    if content.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => last.content.extend(content),
        _ => turns.push(Turn { role, content }),
    }
}

/// Blocks for string or array content.
fn content_blocks(content: Option<&Value>, at: &str) -> Result<Vec<RequestBlock>, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![BlockKind::Text { text: text.clone() }.into()]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| part_block(part, &format!("{at}.content[{j}]")))
            .collect(),
        Some(_) => Err(untranslatable(format!(
            "{at}.content must be a string or an array"
        ))),
    }
}

/// One OpenAI content part as an Anthropic block; a `cache_control` on the part is kept.
fn part_block(part: &Value, at: &str) -> Result<RequestBlock, ProviderError> {
    let text = |key: &str| BlockKind::Text {
        text: str_field(part, key).unwrap_or_default().to_string(),
    };
    let kind = match str_field(part, "type") {
        Some("text") => text("text"),
        Some("refusal") => text("refusal"),
        Some("image_url") => {
            let url = part
                .get("image_url")
                .and_then(|i| i.get("url").or(Some(i)))
                .and_then(Value::as_str)
                .ok_or_else(|| untranslatable(format!("{at}: `image_url.url` is missing")))?;
            BlockKind::Image {
                source: source(url, at)?,
            }
        }
        Some("file") => BlockKind::Document {
            source: file_source(part, at)?,
        },
        other => {
            return Err(untranslatable(format!(
                "{at}: content part `{}` has no Anthropic equivalent",
                other.unwrap_or("(untyped)")
            )));
        }
    };
    Ok(RequestBlock {
        kind,
        cache_control: part.get("cache_control").cloned(),
    })
}

/// A base64 source for a data URL, a URL source for anything else.
fn source(url: &str, at: &str) -> Result<Source, ProviderError> {
    if url.starts_with("data:") {
        let (media_type, data) = parse_data_url(url)
            .ok_or_else(|| untranslatable(format!("{at}: only base64 data URLs are supported")))?;
        return Ok(Source::Base64 {
            media_type: media_type.to_string(),
            data: data.to_string(),
        });
    }
    Ok(Source::Url {
        url: url.to_string(),
    })
}

/// A `file` part with inline `file_data` (a PDF, typically) as a document source.
fn file_source(part: &Value, at: &str) -> Result<Source, ProviderError> {
    let data = part
        .get("file")
        .and_then(|f| str_field(f, "file_data"))
        .ok_or_else(|| {
            untranslatable(format!(
                "{at}: only files with inline `file_data` can go to Anthropic, not file ids"
            ))
        })?;
    if data.starts_with("data:") {
        return source(data, at);
    }
    Ok(Source::Base64 {
        media_type: "application/pdf".into(),
        data: data.to_string(),
    })
}

/// An assistant message: its text (empty text dropped) and its tool calls as `tool_use`.
fn assistant_blocks(message: &Value, at: &str) -> Result<Vec<RequestBlock>, ProviderError> {
    if message.get("function_call").is_some_and(|f| !f.is_null()) {
        return Err(untranslatable(format!(
            "{at}: legacy `function_call` messages carry no call id; use `tool_calls`"
        )));
    }
    let mut blocks: Vec<RequestBlock> = content_blocks(message.get("content"), at)?
        .into_iter()
        .filter(|b| !matches!(&b.kind, BlockKind::Text { text } if text.is_empty()))
        .collect();
    let calls = message.get("tool_calls").and_then(Value::as_array);
    for (j, call) in calls.into_iter().flatten().enumerate() {
        blocks.push(tool_use(call, &format!("{at}.tool_calls[{j}]"))?);
    }
    Ok(blocks)
}

fn tool_use(call: &Value, at: &str) -> Result<RequestBlock, ProviderError> {
    let function = call.get("function").unwrap_or(&Value::Null);
    let arguments = str_field(function, "arguments").unwrap_or_default();
    let input: Value = if arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(arguments).map_err(|e| {
            untranslatable(format!(
                "{at}: `arguments` is not JSON ({e}); Anthropic needs an object"
            ))
        })?
    };
    Ok(BlockKind::ToolUse {
        id: str_field(call, "id").unwrap_or_default().to_string(),
        name: str_field(function, "name").unwrap_or_default().to_string(),
        input,
    }
    .into())
}

/// A `tool` message as a `tool_result` block.
fn tool_result(message: &Value, at: &str) -> Result<RequestBlock, ProviderError> {
    let id = str_field(message, "tool_call_id")
        .ok_or_else(|| untranslatable(format!("{at}: `tool_call_id` is missing")))?;
    let content = match message.get("content") {
        Some(Value::String(text)) => ToolResultContent::Text(text.clone()),
        other => ToolResultContent::Blocks(content_blocks(other, at)?),
    };
    Ok(BlockKind::ToolResult {
        tool_use_id: id.to_string(),
        content,
    }
    .into())
}

/// `tools` and `tool_choice` (with `parallel_tool_calls: false` as
/// `disable_parallel_tool_use`). A `tool_choice` without tools is dropped, as Anthropic
/// rejects it.
fn tools(chat: &Map<String, Value>) -> Result<(Vec<Tool>, Option<ToolChoice>), ProviderError> {
    let Some(tools) = chat
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    else {
        return Ok((Vec::new(), None));
    };
    let tools = tools
        .iter()
        .enumerate()
        .map(|(i, tool)| tool_definition(tool, &format!("tools[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let serial = chat.get("parallel_tool_calls") == Some(&Value::Bool(false));
    Ok((tools, tool_choice(chat.get("tool_choice"), serial)?))
}

fn tool_definition(tool: &Value, at: &str) -> Result<Tool, ProviderError> {
    if str_field(tool, "type").is_some_and(|t| t != "function") {
        return Err(untranslatable(format!(
            "{at}: only `function` tools can go to Anthropic"
        )));
    }
    let function = tool
        .get("function")
        .ok_or_else(|| untranslatable(format!("{at}: `function` is missing")))?;
    let input_schema = function
        .get("parameters")
        .filter(|p| !p.is_null())
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    Ok(Tool {
        name: str_field(function, "name").unwrap_or_default().to_string(),
        input_schema,
        description: str_field(function, "description").map(String::from),
        cache_control: tool.get("cache_control").cloned(),
    })
}

fn tool_choice(choice: Option<&Value>, serial: bool) -> Result<Option<ToolChoice>, ProviderError> {
    let choose = |kind, name| ToolChoice {
        kind,
        name,
        disable_parallel_tool_use: serial,
    };
    let mapped = match choice {
        None | Some(Value::Null) if !serial => return Ok(None),
        None | Some(Value::Null) => choose(ToolChoiceKind::Auto, None),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => choose(ToolChoiceKind::Auto, None),
            // `none` takes no `disable_parallel_tool_use`: no call is made at all.
            "none" => ToolChoice {
                kind: ToolChoiceKind::None,
                name: None,
                disable_parallel_tool_use: false,
            },
            "required" => choose(ToolChoiceKind::Any, None),
            other => return Err(untranslatable(format!("tool_choice `{other}` is unknown"))),
        },
        Some(named) => {
            let name = named
                .get("function")
                .and_then(|f| str_field(f, "name"))
                .ok_or_else(|| untranslatable("tool_choice must name a function"))?;
            choose(ToolChoiceKind::Tool, Some(name.to_string()))
        }
    };
    Ok(Some(mapped))
}

/// `response_format: json_schema` as Anthropic's structured output format. JSON mode without a
/// schema (`json_object`) has no Anthropic equivalent and is left to the prompt.
fn output_format(format: Option<&Value>) -> Option<Value> {
    let format = format?;
    if str_field(format, "type") != Some("json_schema") {
        return None;
    }
    let schema = format.get("json_schema")?.get("schema")?;
    Some(json!({"type": "json_schema", "schema": schema}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::test_model;

    fn model() -> triage_core::catalog::Model {
        test_model("claude-test")
    }

    fn translate(chat: Value) -> Value {
        let chat = chat.as_object().unwrap().clone();
        serde_json::to_value(to_messages_body(&chat, &model(), false).unwrap()).unwrap()
    }

    #[test]
    fn system_turns_and_parameters() {
        let out = translate(json!({
            "model": "a/b",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use French.",
                    "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": "Hi"},
                {"role": "user", "content": "there"},
            ],
            "max_completion_tokens": 300, "temperature": 0.2, "top_p": 0.9,
            "stop": "END", "user": "u-1", "seed": 7, "presence_penalty": 0.5,
        }));
        assert_eq!(
            out,
            json!({
                "model": "claude-test",
                "system": [
                    {"type": "text", "text": "Be brief."},
                    {"type": "text", "text": "Use French.", "cache_control": {"type": "ephemeral"}},
                ],
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}],
                "max_tokens": 300, "temperature": 0.2, "top_p": 0.9,
                "stop_sequences": ["END"],
                "metadata": {"user_id": "u-1"},
            })
        );
    }

    #[test]
    fn max_tokens_falls_back_to_the_catalog_then_the_default() {
        let chat = json!({"messages": [{"role": "user", "content": "x"}]});
        assert_eq!(translate(chat.clone())["max_tokens"], 8192);
        let mut bare = model();
        bare.max_output = None;
        let out = to_messages_body(chat.as_object().unwrap(), &bare, true).unwrap();
        let out = serde_json::to_value(out).unwrap();
        assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(out["stream"], true);
    }

    #[test]
    fn images_and_documents() {
        let out = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
        ]}]}));
        assert_eq!(
            out["messages"][0]["content"],
            json!([
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
            ])
        );
    }

    #[test]
    fn multi_turn_parallel_tool_use() {
        let out = translate(json!({
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
                {"role": "user", "content": "Thanks"},
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Forecast",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
        }));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
                    {"type": "text", "text": "Thanks"},
                ]},
            ])
        );
        assert_eq!(
            out["tools"],
            json!([{"name": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                "description": "Forecast"}])
        );
        assert_eq!(
            out["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
    }

    #[test]
    fn tool_choices() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let choice = |c: Value| {
            translate(json!({"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": c}))
                ["tool_choice"]
                .clone()
        };
        assert_eq!(choice(json!("auto")), json!({"type": "auto"}));
        assert_eq!(choice(json!("none")), json!({"type": "none"}));
        assert_eq!(
            choice(json!({"type": "function", "function": {"name": "f"}})),
            json!({"type": "tool", "name": "f"})
        );
        assert_eq!(
            choice(Value::Null),
            Value::Null,
            "left to Anthropic's default"
        );
        let out =
            translate(json!({"messages": [{"role": "user", "content": "x"}], "tools": tools}));
        assert_eq!(
            out["tools"][0]["input_schema"],
            json!({"type": "object", "properties": {}})
        );
        let no_tools = translate(
            json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "none"}),
        );
        assert!(no_tools.get("tool_choice").is_none());
    }

    #[test]
    fn json_schema_becomes_output_config() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let out = translate(json!({"messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}}));
        assert_eq!(
            out["output_config"],
            json!({"format": {"type": "json_schema", "schema": schema}})
        );
    }

    #[test]
    fn untranslatable_requests_are_refused() {
        let refuse =
            |chat: Value| to_messages_body(chat.as_object().unwrap(), &model(), false).unwrap_err();
        let user = json!({"role": "user", "content": "x"});
        for chat in [
            json!({"messages": [user], "n": 2}),
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]}),
            json!({"messages": [user, {"role": "assistant", "tool_calls": [
                {"id": "1", "function": {"name": "f", "arguments": "{oops"}}]}]}),
        ] {
            assert!(matches!(refuse(chat), ProviderError::Untranslatable(_)));
        }
    }
}
