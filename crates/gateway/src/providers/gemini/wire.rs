//! The Gemini API wire format, typed, as <https://ai.google.dev/api/generate-content> defines
//! it: the `GenerateContentRequest` triage sends ([`Request`], built by the request translator)
//! and the `GenerateContentResponse` that comes back, whole or as one event of
//! `streamGenerateContent?alt=sse` (each event a partial response of the same shape).
//!
//! Answers are read leniently where the API grows: fields this adapter does not use (safety ratings, citation and
//! grounding metadata, `totalTokenCount`) are ignored and every field may be absent. A field of
//! the wrong type is an error: the upstream is not speaking this format.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use triage_core::catalog::Usage;

/// A `GenerateContentRequest`. Values passed through as the client wrote them (sampling
/// numbers, stop lists, JSON Schemas, call arguments) stay JSON values.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub contents: Vec<Turn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<SystemInstruction>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    pub generation_config: GenerationConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Model,
}

/// One turn of `contents`.
#[derive(Debug, Serialize)]
pub struct Turn {
    pub role: Role,
    pub parts: Vec<RequestPart>,
}

#[derive(Debug, Serialize)]
pub struct SystemInstruction {
    pub parts: Vec<RequestPart>,
}

/// One part of a request turn, with the thought signature a replayed function call carries.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestPart {
    #[serde(flatten)]
    pub data: PartData,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<String>,
}

impl From<PartData> for RequestPart {
    fn from(data: PartData) -> Self {
        RequestPart {
            data,
            thought_signature: None,
        }
    }
}

/// What a part holds: exactly one of these keys.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PartData {
    Text(String),
    InlineData(Blob),
    FileData(FileData),
    FunctionCall { name: String, args: Value },
    FunctionResponse { name: String, response: Value },
}

/// Inline bytes, base64.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    pub mime_type: String,
    pub data: String,
}

/// A file by URI.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileData {
    pub mime_type: String,
    pub file_uri: String,
}

/// One tool holding every function declaration.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    pub function_declarations: Vec<FunctionDeclaration>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration {
    pub name: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema as the client wrote it (Gemini accepts it unconverted under this name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters_json_schema: Option<Value>,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    pub function_calling_config: FunctionCallingConfig,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig {
    pub mode: Mode,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_function_names: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Mode {
    Auto,
    Any,
    None,
}

/// Sampling and output settings; left out of the request when none is set.
#[derive(Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_json_schema: Option<Value>,
}

impl GenerationConfig {
    pub fn is_empty(&self) -> bool {
        *self == GenerationConfig::default()
    }
}

/// A `GenerateContentResponse`. `candidates` is absent when the prompt itself was blocked
/// (then `promptFeedback.blockReason` says why) and in usage-only stream events.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Response {
    pub candidates: Option<Vec<Candidate>>,
    pub prompt_feedback: Option<PromptFeedback>,
    pub usage_metadata: Option<UsageMetadata>,
    pub model_version: Option<String>,
    pub response_id: Option<String>,
}

impl Response {
    /// The prompt itself was blocked: a `promptFeedback.blockReason`.
    pub fn blocked(&self) -> bool {
        self.prompt_feedback
            .as_ref()
            .is_some_and(|f| f.block_reason.is_some())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PromptFeedback {
    /// `SAFETY`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `OTHER`, …
    pub block_reason: Option<String>,
}

/// One answer. Gemini numbers candidates with `index` (absent for the first in some versions).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Candidate {
    pub content: Content,
    /// `STOP`, `MAX_TOKENS`, `SAFETY`, `RECITATION`, `MALFORMED_FUNCTION_CALL`, …; in a stream,
    /// only on a candidate's last event.
    pub finish_reason: Option<String>,
    pub index: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Content {
    pub parts: Vec<Part>,
}

/// One part of a candidate: text (a thought when `thought` is set) or a function call.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Part {
    pub text: Option<String>,
    pub thought: bool,
    pub function_call: Option<FunctionCall>,
    /// Gemini 3's signature of the reasoning behind this part, which must come back with a
    /// function call in the next turn.
    pub thought_signature: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FunctionCall {
    pub name: Option<String>,
    /// The arguments, an object; absent for a call without arguments.
    pub args: Option<Value>,
}

/// Token counts.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct UsageMetadata {
    /// Includes cached content.
    pub prompt_token_count: u64,
    /// The results of server-side tools (code execution, search) fed back as input.
    pub tool_use_prompt_token_count: u64,
    pub candidates_token_count: u64,
    /// Billed as output.
    pub thoughts_token_count: u64,
    pub cached_content_token_count: u64,
}

impl UsageMetadata {
    /// triage's counts: thinking tokens are billed as output, so they count as completion
    /// tokens; the prompt count already includes the cached content.
    pub fn tokens(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_token_count + self.tool_use_prompt_token_count,
            completion_tokens: self.candidates_token_count + self.thoughts_token_count,
            cached_tokens: self.cached_content_token_count,
            cache_write_tokens: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_prompt_has_no_candidates_and_unknown_fields_are_ignored() {
        let response: Response = serde_json::from_str(
            r#"{"promptFeedback":{"blockReason":"SAFETY","safetyRatings":[]},
                "usageMetadata":{"promptTokenCount":5,"totalTokenCount":5}}"#,
        )
        .unwrap();
        assert!(response.blocked() && response.candidates.is_none());
        assert_eq!(response.usage_metadata.unwrap().tokens().prompt_tokens, 5);
        let wrong = serde_json::from_str::<Response>(
            r#"{"candidates":[{"content":{"parts":[{"text":7}]}}]}"#,
        );
        assert!(wrong.is_err());
    }
}
