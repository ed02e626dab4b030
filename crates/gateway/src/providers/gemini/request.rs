//! An OpenAI chat-completions body → a Gemini `GenerateContentRequest`.
//!
//! Roles become `user` / `model`, system and developer messages `systemInstruction`; tool
//! results become `functionResponse` parts, named after the call they answer (Gemini matches
//! by name, OpenAI by id). Tool and response schemas go as JSON Schema
//! (`parametersJsonSchema`, `responseJsonSchema`), which Gemini accepts unconverted.
//! Parameters without a Gemini equivalent (`logit_bias`, `logprobs`, `user`…) are dropped;
//! file ids and unknown part types are refused as untranslatable.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::super::{ProviderError, parse_data_url, str_field, untranslatable};
use super::wire::{
    Blob, FileData, FunctionCallingConfig, FunctionDeclaration, GenerationConfig, Mode, PartData,
    Request, RequestPart, Role, SystemInstruction, Tool, ToolConfig, Turn,
};
use super::{model_path, signature_of};
use triage_core::catalog::{Model, Provider};

/// Sent for a replayed function call that has no thought signature (history from another
/// model, or from a client that rebuilt ids): Google's documented way to let Gemini 3 accept it.
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

pub(in crate::providers) fn request(
    client: &reqwest::Client,
    provider: &Provider,
    model: &Model,
    chat: &Map<String, Value>,
    stream: bool,
) -> Result<reqwest::RequestBuilder, ProviderError> {
    let body = to_gemini_body(chat)?;
    let action = if stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    let url = format!(
        "{}/models/{}:{action}",
        provider.base_url,
        model_path(&model.upstream)
    );
    let mut request = client.post(url).json(&body);
    if let Some(key) = &provider.api_key {
        request = request.header("x-goog-api-key", key.expose());
    }
    Ok(request)
}

/// The Gemini body for an OpenAI chat body.
pub(super) fn to_gemini_body(chat: &Map<String, Value>) -> Result<Request, ProviderError> {
    let messages = chat
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| untranslatable("`messages` must be an array"))?;
    let (system, contents) = convert_messages(messages)?;
    let (tools, tool_config) = tools(chat)?;
    Ok(Request {
        contents,
        system_instruction: (!system.is_empty()).then_some(SystemInstruction { parts: system }),
        tools,
        tool_config,
        generation_config: generation_config(chat),
    })
}

/// System parts, and contents with consecutive same-role turns merged (the responses to a
/// turn of parallel calls must come back in one turn).
fn convert_messages(messages: &[Value]) -> Result<(Vec<RequestPart>, Vec<Turn>), ProviderError> {
    let mut system = Vec::new();
    let mut contents: Vec<Turn> = Vec::new();
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        match str_field(message, "role").unwrap_or_default() {
            "system" | "developer" => system.extend(parts(message.get("content"), &at)?),
            "user" => push(
                &mut contents,
                Role::User,
                parts(message.get("content"), &at)?,
            ),
            "assistant" => {
                let model_parts = assistant_parts(message, &at, &mut call_names)?;
                push(&mut contents, Role::Model, model_parts);
            }
            "tool" => push(
                &mut contents,
                Role::User,
                vec![function_response(message, &at, &call_names)?],
            ),
            other => {
                return Err(untranslatable(format!(
                    "{at}: role `{other}` has no Gemini equivalent"
                )));
            }
        }
    }
    Ok((system, contents))
}

fn push(contents: &mut Vec<Turn>, role: Role, parts: Vec<RequestPart>) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some(last) if last.role == role => last.parts.extend(parts),
        _ => contents.push(Turn { role, parts }),
    }
}

fn parts(content: Option<&Value>, at: &str) -> Result<Vec<RequestPart>, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![PartData::Text(text.clone()).into()]),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(j, part)| part_of(part, &format!("{at}.content[{j}]")))
            .collect(),
        Some(_) => Err(untranslatable(format!(
            "{at}.content must be a string or an array"
        ))),
    }
}

/// One OpenAI content part as a Gemini part.
fn part_of(part: &Value, at: &str) -> Result<RequestPart, ProviderError> {
    let text = |key: &str| PartData::Text(str_field(part, key).unwrap_or_default().to_string());
    let data = match str_field(part, "type") {
        Some("text") => text("text"),
        Some("refusal") => text("refusal"),
        Some("image_url") => {
            let url = part
                .get("image_url")
                .and_then(|i| i.get("url").or(Some(i)))
                .and_then(Value::as_str)
                .ok_or_else(|| untranslatable(format!("{at}: `image_url.url` is missing")))?;
            media_part(url, at)?
        }
        Some("input_audio") => {
            let audio = &part["input_audio"];
            let format = str_field(audio, "format").unwrap_or("wav");
            PartData::InlineData(Blob {
                mime_type: format!("audio/{format}"),
                data: str_field(audio, "data").unwrap_or_default().to_string(),
            })
        }
        Some("file") => {
            let data = part
                .get("file")
                .and_then(|f| str_field(f, "file_data"))
                .ok_or_else(|| {
                    untranslatable(format!(
                        "{at}: file ids cannot go to Gemini, only inline `file_data`"
                    ))
                })?;
            match parse_data_url(data) {
                Some(_) => media_part(data, at)?,
                None => PartData::InlineData(Blob {
                    mime_type: "application/pdf".into(),
                    data: data.to_string(),
                }),
            }
        }
        other => {
            return Err(untranslatable(format!(
                "{at}: content part `{}` has no Gemini equivalent",
                other.unwrap_or("(untyped)")
            )));
        }
    };
    Ok(data.into())
}

/// `inlineData` for a data URL, `fileData` for a URL (its type guessed from the extension).
fn media_part(url: &str, at: &str) -> Result<PartData, ProviderError> {
    if url.starts_with("data:") {
        let (mime, data) = parse_data_url(url)
            .ok_or_else(|| untranslatable(format!("{at}: only base64 data URLs are supported")))?;
        return Ok(PartData::InlineData(Blob {
            mime_type: mime.to_string(),
            data: data.to_string(),
        }));
    }
    Ok(PartData::FileData(FileData {
        mime_type: mime_from_url(url).to_string(),
        file_uri: url.to_string(),
    }))
}

fn mime_from_url(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    let extension = path.rsplit('.').next().unwrap_or_default();
    match extension {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "pdf" => "application/pdf",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        _ => "image/jpeg",
    }
}

/// An assistant message: text and `functionCall` parts. Each call's thought signature comes
/// back from its id; a turn of calls with none gets the skip marker on its first call.
fn assistant_parts(
    message: &Value,
    at: &str,
    call_names: &mut HashMap<String, String>,
) -> Result<Vec<RequestPart>, ProviderError> {
    let mut out: Vec<RequestPart> = parts(message.get("content"), at)?
        .into_iter()
        .filter(|p| !matches!(&p.data, PartData::Text(text) if text.is_empty()))
        .collect();
    let calls = message.get("tool_calls").and_then(Value::as_array);
    let mut signed = false;
    let first_call = out.len();
    for (j, call) in calls.into_iter().flatten().enumerate() {
        let function = call.get("function").unwrap_or(&Value::Null);
        let name = str_field(function, "name").unwrap_or_default();
        let arguments = str_field(function, "arguments").unwrap_or_default();
        let args: Value = if arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(arguments).map_err(|e| {
                untranslatable(format!(
                    "{at}.tool_calls[{j}]: `arguments` is not JSON ({e})"
                ))
            })?
        };
        let id = str_field(call, "id").unwrap_or_default();
        call_names.insert(id.to_string(), name.to_string());
        let signature = signature_of(id);
        signed |= signature.is_some();
        out.push(RequestPart {
            data: PartData::FunctionCall {
                name: name.to_string(),
                args,
            },
            thought_signature: signature,
        });
    }
    if !signed && out.len() > first_call {
        out[first_call].thought_signature = Some(SKIP_SIGNATURE.to_string());
    }
    Ok(out)
}

/// A `tool` message as a `functionResponse`; a JSON-object result goes as it is, anything else
/// under `content`.
fn function_response(
    message: &Value,
    at: &str,
    call_names: &HashMap<String, String>,
) -> Result<RequestPart, ProviderError> {
    let id = str_field(message, "tool_call_id").unwrap_or_default();
    let name = call_names
        .get(id)
        .map(String::as_str)
        .or_else(|| str_field(message, "name"))
        .ok_or_else(|| {
            untranslatable(format!(
                "{at}: no earlier assistant tool call has id `{id}`, and Gemini needs the function's name"
            ))
        })?;
    let text = match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(list)) => list.iter().filter_map(|p| str_field(p, "text")).collect(),
        _ => String::new(),
    };
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(object @ Value::Object(_)) => object,
        _ => json!({"content": text}),
    };
    Ok(PartData::FunctionResponse {
        name: name.to_string(),
        response,
    }
    .into())
}

/// `tools` as one `functionDeclarations` tool, and `tool_choice` as `toolConfig`.
fn tools(chat: &Map<String, Value>) -> Result<(Vec<Tool>, Option<ToolConfig>), ProviderError> {
    let Some(tools) = chat
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    else {
        return Ok((Vec::new(), None));
    };
    let mut declarations = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        if str_field(tool, "type").is_some_and(|t| t != "function") {
            return Err(untranslatable(format!(
                "tools[{i}]: only `function` tools can go to Gemini"
            )));
        }
        let function = &tool["function"];
        declarations.push(FunctionDeclaration {
            name: function["name"].clone(),
            description: str_field(function, "description").map(String::from),
            parameters_json_schema: function.get("parameters").filter(|p| !p.is_null()).cloned(),
        });
    }
    let tools = vec![Tool {
        function_declarations: declarations,
    }];
    let calling = |mode, allowed_function_names| {
        Some(ToolConfig {
            function_calling_config: FunctionCallingConfig {
                mode,
                allowed_function_names,
            },
        })
    };
    let config = match chat.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => calling(Mode::Auto, Vec::new()),
            "none" => calling(Mode::None, Vec::new()),
            "required" => calling(Mode::Any, Vec::new()),
            other => return Err(untranslatable(format!("tool_choice `{other}` is unknown"))),
        },
        Some(named) => {
            let name = named
                .get("function")
                .and_then(|f| str_field(f, "name"))
                .ok_or_else(|| untranslatable("tool_choice must name a function"))?;
            calling(Mode::Any, vec![name.to_string()])
        }
    };
    Ok((tools, config))
}

/// Sampling and output settings under Gemini's names; `max_completion_tokens` wins over the
/// older `max_tokens`.
fn generation_config(chat: &Map<String, Value>) -> GenerationConfig {
    let pass = |key: &str| chat.get(key).filter(|v| !v.is_null()).cloned();
    let stop_sequences = match chat.get("stop") {
        Some(Value::String(stop)) => vec![json!(stop)],
        Some(Value::Array(stops)) => stops.clone(),
        _ => Vec::new(),
    };
    let format = chat.get("response_format");
    let (response_mime_type, response_json_schema) = match format.and_then(|f| str_field(f, "type"))
    {
        Some("json_object") => (Some("application/json".to_string()), None),
        Some("json_schema") => (
            Some("application/json".to_string()),
            format
                .and_then(|f| f.pointer("/json_schema/schema"))
                .cloned(),
        ),
        _ => (None, None),
    };
    GenerationConfig {
        temperature: pass("temperature"),
        top_p: pass("top_p"),
        top_k: pass("top_k"),
        max_output_tokens: pass("max_completion_tokens").or_else(|| pass("max_tokens")),
        candidate_count: pass("n"),
        seed: pass("seed"),
        presence_penalty: pass("presence_penalty"),
        frequency_penalty: pass("frequency_penalty"),
        stop_sequences,
        response_mime_type,
        response_json_schema,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::gemini::call_id;

    fn translate(chat: Value) -> Value {
        serde_json::to_value(to_gemini_body(chat.as_object().unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn contents_system_and_generation_config() {
        let out = translate(json!({
            "model": "google/gemini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR="}},
                    {"type": "image_url", "image_url": {"url": "https://x/photo.webp?size=2"}},
                ]},
                {"role": "assistant", "content": "A photo."},
                {"role": "user", "content": "Sure?"},
            ],
            "temperature": 0.3, "top_p": 0.8, "max_tokens": 200, "stop": ["END"], "n": 2,
            "seed": 1, "response_format": {"type": "json_object"}, "user": "u", "logit_bias": {},
        }));
        assert_eq!(
            out,
            json!({
                "contents": [
                    {"role": "user", "parts": [
                        {"text": "What is this?"},
                        {"inlineData": {"mimeType": "image/png", "data": "iVBOR="}},
                        {"fileData": {"mimeType": "image/webp", "fileUri": "https://x/photo.webp?size=2"}},
                    ]},
                    {"role": "model", "parts": [{"text": "A photo."}]},
                    {"role": "user", "parts": [{"text": "Sure?"}]},
                ],
                "systemInstruction": {"parts": [{"text": "Be brief."}]},
                "generationConfig": {"temperature": 0.3, "topP": 0.8, "maxOutputTokens": 200,
                    "candidateCount": 2, "seed": 1, "stopSequences": ["END"],
                    "responseMimeType": "application/json"},
            })
        );
    }

    #[test]
    fn json_schema_goes_as_json_schema() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false});
        let out = translate(json!({"messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}}));
        assert_eq!(
            out["generationConfig"],
            json!({"responseMimeType": "application/json", "responseJsonSchema": schema})
        );
    }

    #[test]
    fn multi_turn_parallel_tool_use_keeps_names_and_signatures() {
        let signed = call_id(Some("c2lnbmF0dXJl"));
        let out = translate(json!({
            "messages": [
                {"role": "user", "content": "Paris and Rome?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": signed, "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": "{}"}},
                ]},
                {"role": "tool", "tool_call_id": signed, "content": "{\"sky\":\"clear\"}"},
                {"role": "tool", "tool_call_id": "call_b", "content": "noon"},
            ],
            "tools": [
                {"type": "function", "function": {"name": "weather", "description": "Forecast",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                {"type": "function", "function": {"name": "time"}},
            ],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
        }));
        assert_eq!(
            out["contents"],
            json!([
                {"role": "user", "parts": [{"text": "Paris and Rome?"}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnbmF0dXJl"},
                    {"functionCall": {"name": "time", "args": {}}},
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "weather", "response": {"sky": "clear"}}},
                    {"functionResponse": {"name": "time", "response": {"content": "noon"}}},
                ]},
            ])
        );
        assert_eq!(
            out["tools"],
            json!([{"functionDeclarations": [
                {"name": "weather", "description": "Forecast",
                    "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "time"},
            ]}])
        );
        assert_eq!(
            out["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}})
        );
    }

    #[test]
    fn unsigned_calls_get_the_skip_marker_once_per_turn() {
        let out = translate(json!({"messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "Let me see.", "tool_calls": [
                {"id": "toolu_1", "function": {"name": "f", "arguments": ""}},
                {"id": "toolu_2", "function": {"name": "f", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "a"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "b"},
        ]}));
        let parts = &out["contents"][1]["parts"];
        assert_eq!(parts[0], json!({"text": "Let me see."}));
        assert_eq!(parts[1]["thoughtSignature"], SKIP_SIGNATURE);
        assert!(parts[2].get("thoughtSignature").is_none());
    }

    #[test]
    fn tool_choice_modes() {
        let mode = |choice: &str| {
            translate(json!({"messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": choice}))
                ["toolConfig"]["functionCallingConfig"]["mode"]
                .clone()
        };
        assert_eq!(mode("auto"), "AUTO");
        assert_eq!(mode("none"), "NONE");
        assert_eq!(mode("required"), "ANY");
    }

    #[test]
    fn untranslatable_requests_are_refused() {
        let refuse = |chat: Value| to_gemini_body(chat.as_object().unwrap()).unwrap_err();
        assert!(matches!(
            refuse(json!({"messages": [{"role": "tool", "tool_call_id": "nobody", "content": "x"}]})),
            ProviderError::Untranslatable(m) if m.contains("nobody")
        ));
        assert!(matches!(
            refuse(
                json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]})
            ),
            ProviderError::Untranslatable(_)
        ));
    }
}
