//! Parsing and validating an OpenAI chat-completions request body. Only what triage itself
//! needs is checked; everything else passes through to the upstream untouched.

use serde_json::{Map, Value};

use super::error::ApiError;
use triage_core::policy::Constraints;

/// A validated request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The body to forward: the client's, minus triage's own fields (`models`).
    pub body: Map<String, Value>,
    /// `model` followed by the OpenRouter-style `models` list.
    pub requested: Vec<String>,
    pub stream: bool,
    /// The client asked for usage in the stream (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The request's `"triage": {...}` narrowing for adaptive routing (never forwarded).
    pub constraints: Constraints,
}

const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

impl ChatRequest {
    pub fn parse(bytes: &[u8]) -> Result<ChatRequest, ApiError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ApiError::invalid_json(&e.to_string()))?;
        let Value::Object(mut body) = value else {
            return Err(ApiError::invalid_request(
                "The request body must be a JSON object.",
                None,
            ));
        };
        let mut requested = Vec::new();
        match body.get("model") {
            None | Some(Value::Null) => {}
            Some(Value::String(m)) if !m.is_empty() => requested.push(m.clone()),
            Some(_) => return Err(invalid("`model` must be a non-empty string.", "model")),
        }
        if let Some(models) = body.remove("models") {
            requested.extend(string_list(&models)?);
        }
        if requested.is_empty() {
            return Err(invalid("You must provide a `model` parameter.", "model"));
        }
        let constraints = match body.remove("triage") {
            None | Some(Value::Null) => Constraints::default(),
            Some(value) => constraints(&value)?,
        };
        check_messages(body.get("messages"))?;
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid("`stream` must be a boolean.", "stream")),
        };
        let include_usage = stream
            && body
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
        Ok(ChatRequest {
            body,
            requested,
            stream,
            include_usage,
            constraints,
        })
    }
}

/// `"triage": {"min_quality": 0.8, "max_cost_usd": 0.01, "models": [...]}`.
fn constraints(value: &Value) -> Result<Constraints, ApiError> {
    let Some(object) = value.as_object() else {
        return Err(invalid("`triage` must be an object.", "triage"));
    };
    let number = |key: &str, max: f64| -> Result<Option<f64>, ApiError> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if (0.0..=max).contains(&x) => Ok(Some(x)),
                _ => Err(invalid(
                    &format!("`triage.{key}` must be a number between 0 and {max}."),
                    &format!("triage.{key}"),
                )),
            },
        }
    };
    if let Some(key) = object
        .keys()
        .find(|k| !["min_quality", "max_cost_usd", "models"].contains(&k.as_str()))
    {
        return Err(invalid(
            &format!("Unknown field `triage.{key}`: use min_quality, max_cost_usd or models."),
            &format!("triage.{key}"),
        ));
    }
    let models = match object.get("models") {
        None | Some(Value::Null) => None,
        Some(list) => Some(string_list(list).map_err(|_| {
            invalid(
                "`triage.models` must be an array of model ids.",
                "triage.models",
            )
        })?),
    };
    Ok(Constraints {
        min_quality: number("min_quality", 1.0)?.map(|q| q as f32),
        max_cost_usd: number("max_cost_usd", f64::MAX)?,
        models,
        unavailable: Default::default(),
    })
}

fn invalid(message: &str, param: &str) -> ApiError {
    ApiError::invalid_request(message, Some(param))
}

fn string_list(value: &Value) -> Result<Vec<String>, ApiError> {
    let error = || invalid("`models` must be an array of model ids.", "models");
    value
        .as_array()
        .ok_or_else(error)?
        .iter()
        .map(|m| m.as_str().map(String::from).ok_or_else(error))
        .collect()
}

fn check_messages(messages: Option<&Value>) -> Result<(), ApiError> {
    let messages = match messages {
        None => {
            return Err(invalid(
                "Missing required parameter: `messages`.",
                "messages",
            ));
        }
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(_) => {
            return Err(invalid(
                "`messages` must be a non-empty array of messages.",
                "messages",
            ));
        }
    };
    for (i, message) in messages.iter().enumerate() {
        let Some(message) = message.as_object() else {
            return Err(invalid(
                &format!("`messages[{i}]` must be an object."),
                &format!("messages[{i}]"),
            ));
        };
        let role = message.get("role").and_then(Value::as_str);
        if !role.is_some_and(|r| ROLES.contains(&r)) {
            return Err(invalid(
                &format!("`messages[{i}].role` must be one of {}.", ROLES.join(", ")),
                &format!("messages[{i}].role"),
            ));
        }
        match message.get("content") {
            None | Some(Value::Null) if matches!(role, Some("assistant" | "function")) => {}
            Some(Value::String(_) | Value::Array(_)) => {}
            _ => {
                return Err(invalid(
                    &format!("`messages[{i}].content` must be a string or an array of parts."),
                    &format!("messages[{i}].content"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(body: &str) -> Option<String> {
        ChatRequest::parse(body.as_bytes())
            .unwrap_err()
            .param()
            .map(String::from)
    }

    #[test]
    fn accepts_a_plain_request_and_strips_models() {
        let r = ChatRequest::parse(
            br#"{"model":"a/b","models":["c/d"],"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"x":1}"#,
        )
        .unwrap();
        assert_eq!(r.requested, ["a/b", "c/d"]);
        assert!(r.stream && r.include_usage);
        assert!(!r.body.contains_key("models"));
        assert_eq!(r.body["x"], 1, "unknown fields are kept");
    }

    #[test]
    fn models_alone_is_enough() {
        let r = ChatRequest::parse(
            br#"{"models":["c/d"],"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert_eq!(r.requested, ["c/d"]);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            param_of(r#"{"messages":[{"role":"user","content":"hi"}]}"#).as_deref(),
            Some("model")
        );
        assert_eq!(param_of(r#"{"model":"a"}"#).as_deref(), Some("messages"));
        assert_eq!(
            param_of(r#"{"model":"a","messages":[]}"#).as_deref(),
            Some("messages")
        );
        assert_eq!(
            param_of(r#"{"model":"a","messages":[{"role":"user","content":"x"},{"role":"robot","content":"x"}]}"#).as_deref(),
            Some("messages[1].role")
        );
        assert_eq!(
            param_of(r#"{"model":"a","messages":[{"role":"user"}]}"#).as_deref(),
            Some("messages[0].content")
        );
        assert_eq!(
            param_of(r#"{"model":"a","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#)
                .as_deref(),
            Some("stream")
        );
        assert_eq!(
            param_of(r#"{"model":"a","models":"b","messages":[]}"#).as_deref(),
            Some("models")
        );
    }

    #[test]
    fn assistant_tool_call_messages_may_have_null_content() {
        let body = br#"{"model":"a","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"tool_calls":[]},{"role":"tool","tool_call_id":"1","content":"r"}]}"#;
        assert!(ChatRequest::parse(body).is_ok());
    }

    #[test]
    fn triage_constraints_are_parsed_and_never_forwarded() {
        let r = ChatRequest::parse(
            br#"{"model":"auto","messages":[{"role":"user","content":"x"}],"triage":{"min_quality":0.8,"max_cost_usd":0.01,"models":["a/b"]}}"#,
        )
        .unwrap();
        assert!(!r.body.contains_key("triage"));
        assert_eq!(r.constraints.min_quality, Some(0.8));
        assert_eq!(r.constraints.max_cost_usd, Some(0.01));
        assert_eq!(
            r.constraints.models.as_deref(),
            Some(&["a/b".to_string()][..])
        );
        let bad = |t: &str| {
            let body = format!(
                r#"{{"model":"auto","messages":[{{"role":"user","content":"x"}}],"triage":{t}}}"#
            );
            ChatRequest::parse(body.as_bytes())
                .unwrap_err()
                .param()
                .map(String::from)
        };
        assert_eq!(
            bad(r#"{"min_quality":2}"#).as_deref(),
            Some("triage.min_quality")
        );
        assert_eq!(bad(r#"{"budget":1}"#).as_deref(), Some("triage.budget"));
        assert_eq!(bad(r#"{"models":[1]}"#).as_deref(), Some("triage.models"));
        assert_eq!(bad("[]").as_deref(), Some("triage"));
    }

    #[test]
    fn invalid_json_is_reported() {
        let err = ChatRequest::parse(b"{\"model\": ").unwrap_err();
        assert_eq!(err.status(), 400);
        assert_eq!(err.code(), Some("invalid_json"));
        assert!(ChatRequest::parse(b"[1]").is_err());
    }

    /// Bounded fuzzing (`crate::fuzzing`): mutated and truncated requests never panic the parser.
    #[test]
    fn the_chat_request_parser_never_panics() {
        use crate::fuzzing::{chat_seeds, fuzz, mutated};
        use rand::Rng;
        let seeds = chat_seeds();
        fuzz("ChatRequest::parse", |rng| {
            let body = mutated(rng, &seeds).to_string();
            let _ = ChatRequest::parse(body.as_bytes());
            let mut bytes = body.into_bytes();
            if !bytes.is_empty() {
                let cut = rng.random_range(0..bytes.len());
                bytes.truncate(cut);
            }
            let _ = ChatRequest::parse(&bytes);
        });
    }
}
