//! What the classifier reads: the conversation rendered to one text, the last user turn at the
//! end (truncation keeps the end), earlier turns and the system prompt before it, shortened.

use serde_json::{Map, Value};

/// Earlier turns kept before the last one.
const EARLIER_TURNS: usize = 4;
/// Characters kept of the system prompt and of each earlier turn.
const CONTEXT_CHARS: usize = 400;

/// One prompt as the classifier sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifierInput {
    pub text: String,
    /// The request offered tools (the policy filters on it; the text does not carry it).
    pub tools_offered: bool,
}

impl ClassifierInput {
    pub fn from_text(text: impl Into<String>) -> ClassifierInput {
        ClassifierInput {
            text: text.into(),
            tools_offered: false,
        }
    }

    /// From a chat-completions body.
    pub fn from_chat(body: &Map<String, Value>) -> ClassifierInput {
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let tools_offered = body
            .get("tools")
            .and_then(Value::as_array)
            .is_some_and(|t| !t.is_empty());
        ClassifierInput {
            text: render_conversation(messages),
            tools_offered,
        }
    }
}

/// A single user turn renders as its bare text, exactly as training prompts do; a longer
/// conversation puts shortened `role: text` lines before the last user turn.
pub fn render_conversation(messages: &[Value]) -> String {
    let last_user = messages
        .iter()
        .rposition(|m| m.get("role").and_then(Value::as_str) == Some("user"));
    let Some(last_user) = last_user else {
        return messages
            .iter()
            .map(message_text)
            .collect::<Vec<_>>()
            .join("\n");
    };
    let mut lines = Vec::new();
    if let Some(system) = messages
        .iter()
        .take(last_user)
        .find(|m| is_role(m, &["system", "developer"]))
    {
        lines.push(format!(
            "system: {}",
            head_chars(&message_text(system), CONTEXT_CHARS)
        ));
    }
    let earlier = messages[..last_user]
        .iter()
        .filter(|m| !is_role(m, &["system", "developer"]));
    let earlier: Vec<&Value> = earlier.collect();
    for message in &earlier[earlier.len().saturating_sub(EARLIER_TURNS)..] {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("user");
        lines.push(format!(
            "{role}: {}",
            head_chars(&message_text(message), CONTEXT_CHARS)
        ));
    }
    lines.push(message_text(&messages[last_user]));
    lines.join("\n")
}

fn is_role(message: &Value, roles: &[&str]) -> bool {
    message
        .get("role")
        .and_then(Value::as_str)
        .is_some_and(|r| roles.contains(&r))
}

/// The text of a message: its string content, or its text parts joined.
fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn head_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn single_turn_is_the_bare_text() {
        let messages = [json!({"role": "user", "content": "What is 2+2?"})];
        assert_eq!(render_conversation(&messages), "What is 2+2?");
    }

    #[test]
    fn conversation_ends_with_the_last_user_turn() {
        let messages = [
            json!({"role": "system", "content": "You are terse."}),
            json!({"role": "user", "content": "Write a sort in Rust"}),
            json!({"role": "assistant", "content": "fn sort() {}"}),
            json!({"role": "user", "content": [{"type": "text", "text": "Now make it stable"}]}),
            json!({"role": "assistant", "content": null, "tool_calls": []}),
        ];
        let text = render_conversation(&messages);
        assert_eq!(
            text,
            "system: You are terse.\nuser: Write a sort in Rust\nassistant: fn sort() {}\nNow make it stable"
        );
    }

    #[test]
    fn tools_are_noticed() {
        let body = json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]});
        let input = ClassifierInput::from_chat(body.as_object().unwrap());
        assert!(input.tools_offered);
        assert_eq!(input.text, "hi");
    }
}
