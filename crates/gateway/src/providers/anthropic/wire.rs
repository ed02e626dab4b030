//! The Anthropic Messages wire format, typed, as <https://docs.anthropic.com/en/api/messages>
//! and `messages-streaming` define it: the request body triage sends ([`Request`], built by the
//! request translator) and what comes back, a whole `message` and the events of its stream
//! (read by the response translator).
//!
//! Answers are read leniently where the API grows: fields this adapter does not use are ignored, a field that
//! one API version leaves out takes its default, and a block, delta or event type newer than
//! this adapter is `Other` (skipped, as the stream documentation asks). A field of the wrong
//! type is an error: the upstream is not speaking this format.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use triage_core::catalog::Usage as Tokens;

/// A whole answer (`"type": "message"`), also the `message` of `message_start`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Message {
    pub id: Option<String>,
    pub model: Option<String>,
    pub content: Vec<Block>,
    /// `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, `pause_turn`, `refusal`, …
    pub stop_reason: Option<String>,
    pub usage: Usage,
}

/// One block of an answer's `content`, or the block that `content_block_start` opens.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        #[serde(default)]
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    ToolUse {
        #[serde(default)]
        id: String,
        #[serde(default)]
        name: String,
        /// The call's arguments, an object (`{}` at the start of a streamed call).
        #[serde(default)]
        input: Value,
    },
    /// `redacted_thinking`, server tool blocks and types newer than this adapter.
    #[serde(other)]
    Other,
}

/// Token counts. Every field is optional because `message_delta` carries only the counts that
/// changed (older API versions: `output_tokens` alone).
#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// Input tokens after the last cache breakpoint: neither read from nor written to a cache.
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
}

impl Usage {
    /// The counts of `newer` where it has them, these elsewhere: a stream's running totals.
    pub fn update(&mut self, newer: &Usage) {
        self.input_tokens = newer.input_tokens.or(self.input_tokens);
        self.output_tokens = newer.output_tokens.or(self.output_tokens);
        self.cache_read_input_tokens = newer
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
        self.cache_creation_input_tokens = newer
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
    }

    /// triage's counts: Anthropic's `input_tokens` excludes cache reads and writes, triage's
    /// `prompt_tokens` includes both, as OpenAI's does.
    pub fn tokens(&self) -> Tokens {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let written = self.cache_creation_input_tokens.unwrap_or(0);
        Tokens {
            prompt_tokens: self.input_tokens.unwrap_or(0) + cached + written,
            completion_tokens: self.output_tokens.unwrap_or(0),
            cached_tokens: cached,
            cache_write_tokens: written,
        }
    }
}

/// One event of a Messages stream (the SSE `data`, whose `type` repeats the event name).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    MessageStart {
        #[serde(default)]
        message: Message,
    },
    ContentBlockStart {
        #[serde(default)]
        index: u64,
        content_block: Block,
    },
    ContentBlockDelta {
        #[serde(default)]
        index: u64,
        delta: Delta,
    },
    ContentBlockStop {
        #[serde(default)]
        index: u64,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDelta,
        #[serde(default)]
        usage: Usage,
    },
    MessageStop,
    /// `{"type": "error", "error": {"type", "message"}}`: read by `stream_error`, which also
    /// accepts an error object of any shape.
    Error,
    /// `ping`, and event types newer than this adapter.
    #[serde(other)]
    Other,
}

/// What a `content_block_delta` adds to its block.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Delta {
    TextDelta {
        #[serde(default)]
        text: String,
    },
    ThinkingDelta {
        #[serde(default)]
        thinking: String,
    },
    /// A piece of a tool call's arguments; the pieces concatenate to its JSON `input`.
    InputJsonDelta {
        #[serde(default)]
        partial_json: String,
    },
    /// `signature_delta`, `citations_delta` and types newer than this adapter.
    #[serde(other)]
    Other,
}

/// The top-level change a `message_delta` makes.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MessageDelta {
    pub stop_reason: Option<String>,
}

/// A Messages request body. Parameters passed through as the client wrote them (sampling,
/// `thinking`, `cache_control`, schemas) stay JSON values: their shapes are Anthropic's own.
#[derive(Debug, Serialize)]
pub struct Request {
    pub model: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub system: Vec<RequestBlock>,
    pub messages: Vec<Turn>,
    pub max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_config: Option<OutputConfig>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One turn; Anthropic requires the roles to alternate.
#[derive(Debug, Serialize)]
pub struct Turn {
    pub role: Role,
    pub content: Vec<RequestBlock>,
}

/// A content block of a request, with the client's `cache_control` breakpoint when it set one.
#[derive(Debug, Serialize)]
pub struct RequestBlock {
    #[serde(flatten)]
    pub kind: BlockKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Value>,
}

impl From<BlockKind> for RequestBlock {
    fn from(kind: BlockKind) -> Self {
        RequestBlock {
            kind,
            cache_control: None,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockKind {
    Text {
        text: String,
    },
    Image {
        source: Source,
    },
    Document {
        source: Source,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: ToolResultContent,
    },
}

/// Where an image or a document comes from.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Source {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

/// A tool result: a plain string, or blocks.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ToolResultContent {
    Text(String),
    Blocks(Vec<RequestBlock>),
}

#[derive(Debug, Serialize)]
pub struct Metadata {
    pub user_id: String,
}

/// A client tool: its name, JSON Schema and description.
#[derive(Debug, Serialize)]
pub struct Tool {
    pub name: String,
    pub input_schema: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Value>,
}

/// `{"type": "auto" | "any" | "none" | "tool", "name"?, "disable_parallel_tool_use"?}`.
#[derive(Debug, PartialEq, Serialize)]
pub struct ToolChoice {
    #[serde(rename = "type")]
    pub kind: ToolChoiceKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub disable_parallel_tool_use: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolChoiceKind {
    Auto,
    Any,
    None,
    Tool,
}

/// Structured output: `{"format": {"type": "json_schema", "schema": …}}`.
#[derive(Debug, Serialize)]
pub struct OutputConfig {
    pub format: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_block_and_event_types_are_other_and_wrong_types_are_errors() {
        let block: Block = serde_json::from_str(r#"{"type":"server_tool_use","id":"x"}"#).unwrap();
        assert!(matches!(block, Block::Other));
        let event: Event = serde_json::from_str(r#"{"type":"ping"}"#).unwrap();
        assert!(matches!(event, Event::Other));
        let event: Event =
            serde_json::from_str(r#"{"type":"error","error":{"type":"x"}}"#).unwrap();
        assert!(matches!(event, Event::Error));
        let bad = serde_json::from_str::<Event>(
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":5}}"#,
        );
        assert!(bad.is_err());
    }

    #[test]
    fn a_message_delta_updates_only_the_counts_it_carries() {
        let mut totals: Usage = serde_json::from_str(
            r#"{"input_tokens":20,"output_tokens":1,"cache_read_input_tokens":100}"#,
        )
        .unwrap();
        totals.update(&serde_json::from_str(r#"{"output_tokens":30}"#).unwrap());
        let tokens = totals.tokens();
        assert_eq!((tokens.prompt_tokens, tokens.completion_tokens), (120, 30));
        assert_eq!((tokens.cached_tokens, tokens.cache_write_tokens), (100, 0));
    }
}
