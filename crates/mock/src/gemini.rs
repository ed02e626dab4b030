//! The Gemini side of the mock: `POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent` (SSE with `alt=sse`, a JSON array without), checked as Gemini checks
//! requests (unknown fields, roles, one response per call of the previous turn, and Gemini 3's
//! rule that replayed function calls carry their thought signature), Gemini's error bodies, and
//! `GenerateContentResponse` answers.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Response, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};

use super::{
    Answer, App, Fault, Prompt, Tool, ToolChoice, delay, fault_status, json_body, sse_body,
    with_retry_after, word_pieces,
};

const KNOWN_FIELDS: [&str; 9] = [
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "safetySettings",
    "cachedContent",
    "labels",
    "mock",
];

const KNOWN_CONFIG: [&str; 19] = [
    "temperature",
    "topP",
    "topK",
    "maxOutputTokens",
    "stopSequences",
    "candidateCount",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "thinkingConfig",
    "responseLogprobs",
    "logprobs",
    "responseModalities",
    "mediaResolution",
    "speechConfig",
    "enableEnhancedCivicAnswers",
];

/// The part fields that carry data; a part has exactly one.
const PART_DATA: [&str; 7] = [
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
];

pub(super) async fn generate(
    State(app): State<Arc<App>>,
    Path(call): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response<Body> {
    let parsed = app.record(&headers, &uri, &body);
    answer(&app, &call, &headers, &uri, parsed)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn answer(
    app: &App,
    call: &str,
    headers: &HeaderMap,
    uri: &Uri,
    parsed: serde_json::Result<Value>,
) -> Result<Response<Body>, Error> {
    let query = uri.query().unwrap_or_default();
    check_key(app, headers, query)?;
    let (model, method) = call
        .split_once(':')
        .ok_or_else(|| Error::new(StatusCode::NOT_FOUND, &format!("Method not found: {call}")))?;
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        other => {
            return Err(Error::new(
                StatusCode::NOT_FOUND,
                &format!("Method not found: {other}"),
            ));
        }
    };
    let sse = query.split('&').any(|p| p == "alt=sse");
    let body =
        parsed.map_err(|e| Error::invalid(&format!("Invalid JSON payload received. {e}")))?;
    let request = Request::parse(model, &body)?;
    let fault = app
        .take_fault(model, &body)
        .map_err(|message| Error::invalid(&message))?;
    delay(&fault).await;
    let response = match fault_status(&fault) {
        Some(status) => Error::for_fault(status, &fault, model).into_response(),
        None => {
            let reply = Reply::build(app, &request, &fault);
            match (stream, sse) {
                (false, _) => json_body(&reply.to_json(), &fault),
                (true, true) => sse_body(reply.events().iter().map(sse_event).collect(), &fault),
                (true, false) => json_body(&Value::Array(reply.events()), &fault),
            }
        }
    };
    Ok(with_retry_after(response, &fault))
}

/// Gemini's key checks: a missing key is 403 `PERMISSION_DENIED`; a wrong one is 400
/// `INVALID_ARGUMENT` with reason `API_KEY_INVALID`.
fn check_key(app: &App, headers: &HeaderMap, query: &str) -> Result<(), Error> {
    let given = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| query.split('&').find_map(|p| p.strip_prefix("key=")));
    if app.key_ok(given) {
        return Ok(());
    }
    match given {
        None => Err(Error::new(
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        )),
        Some(_) => Err(Error {
            status: StatusCode::BAD_REQUEST,
            message: "API key not valid. Please pass a valid API key.".into(),
            details: vec![json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID", "domain": "googleapis.com"})],
        }),
    }
}

struct Request {
    prompt: Prompt,
    candidates: usize,
    max_tokens: Option<u64>,
}

impl Request {
    fn parse(model: &str, body: &Value) -> Result<Request, Error> {
        let object = body
            .as_object()
            .ok_or_else(|| Error::invalid("Invalid JSON payload received. Expected an object."))?;
        unknown_field(object, &KNOWN_FIELDS, "")?;
        let config = body.get("generationConfig").and_then(Value::as_object);
        if let Some(config) = config {
            unknown_field(config, &KNOWN_CONFIG, "generation_config.")?;
        }
        let contents = body["contents"]
            .as_array()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                Error::invalid("* GenerateContentRequest.contents: contents is not specified")
            })?;
        check_contents(contents)?;
        let config = &body["generationConfig"];
        Ok(Request {
            prompt: prompt(model, contents, body),
            candidates: config["candidateCount"].as_u64().unwrap_or(1).clamp(1, 8) as usize,
            max_tokens: config["maxOutputTokens"].as_u64(),
        })
    }
}

fn unknown_field(object: &Map<String, Value>, known: &[&str], prefix: &str) -> Result<(), Error> {
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(Error::invalid(&format!(
            "Invalid JSON payload received. Unknown name \"{key}\" at '{prefix}': Cannot find field."
        ))),
        None => Ok(()),
    }
}

/// Roles, one data field per part, as many responses as the previous turn made calls, and a
/// thought signature on the first call of each model turn.
fn check_contents(contents: &[Value]) -> Result<(), Error> {
    let mut calls = 0;
    for (i, content) in contents.iter().enumerate() {
        let role = content["role"].as_str().unwrap_or("user");
        if !matches!(role, "user" | "model") {
            return Err(Error::invalid(&format!(
                "Please use a valid role: user, model. (contents[{i}].role = {role})"
            )));
        }
        let parts = content["parts"]
            .as_array()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::invalid(&format!("contents[{i}].parts must not be empty")))?;
        for part in parts {
            let fields = PART_DATA.iter().filter(|f| part.get(**f).is_some()).count();
            if fields != 1 {
                return Err(Error::invalid(&format!(
                    "contents[{i}]: a part must have exactly one data field"
                )));
            }
        }
        let count = |key: &str| parts.iter().filter(|p| p.get(key).is_some()).count();
        let responses = count("functionResponse");
        if responses > 0 && responses != calls {
            return Err(Error::invalid(
                "Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn.",
            ));
        }
        calls = count("functionCall");
        let first_call = parts.iter().find(|p| p.get("functionCall").is_some());
        if first_call.is_some_and(|p| p.get("thoughtSignature").is_none()) {
            return Err(Error::invalid(&format!(
                "Function call is missing a thought_signature in functionCall parts. (contents[{i}])"
            )));
        }
    }
    Ok(())
}

fn parts_of(content: &Value) -> &[Value] {
    content["parts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The text of parts: text and function responses.
fn text_of(parts: &[Value]) -> String {
    let mut text = String::new();
    for part in parts {
        if let Some(t) = part["text"].as_str() {
            text.push_str(t);
        } else if let Some(response) = part.get("functionResponse") {
            let response = &response["response"];
            match response["content"].as_str() {
                Some(t) => text.push_str(t),
                None => text.push_str(&response.to_string()),
            }
        }
    }
    text
}

fn prompt(model: &str, contents: &[Value], body: &Value) -> Prompt {
    let system = body.get("systemInstruction").map(|s| text_of(parts_of(s)));
    let texts = contents.iter().map(|c| text_of(parts_of(c)));
    let last = contents.last().map(parts_of).unwrap_or_default();
    let ends_with_response = last.iter().any(|p| p.get("functionResponse").is_some());
    let last_user = contents.iter().rev().find(|c| {
        c["role"].as_str().unwrap_or("user") == "user"
            && !parts_of(c)
                .iter()
                .any(|p| p.get("functionResponse").is_some())
    });
    let tools = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["functionDeclarations"].as_array())
        .flatten()
        .map(|d| Tool {
            name: d["name"].as_str().unwrap_or_default().to_owned(),
            schema: d
                .get("parametersJsonSchema")
                .or(d.get("parameters"))
                .cloned(),
        })
        .collect();
    let config = &body["toolConfig"]["functionCallingConfig"];
    let tool_choice = match (
        config["mode"].as_str(),
        config["allowedFunctionNames"][0].as_str(),
    ) {
        (Some("NONE"), _) => ToolChoice::None,
        (Some("ANY"), Some(name)) => ToolChoice::Named(name.to_owned()),
        (Some("ANY"), None) => ToolChoice::Required,
        _ => ToolChoice::Auto,
    };
    Prompt {
        model: model.to_owned(),
        message_texts: system.into_iter().chain(texts).collect(),
        last_user_text: last_user.map(|c| text_of(parts_of(c))).unwrap_or_default(),
        tool_result: ends_with_response.then(|| text_of(last)),
        tools,
        tool_choice,
    }
}

/// One candidate: its answer and how it ended.
struct Candidate {
    answer: Answer,
    finish: String,
}

/// An answer, rendered as one `GenerateContentResponse` or as the stream's events.
struct Reply {
    id: String,
    model: String,
    candidates: Vec<Candidate>,
    usage: Value,
}

impl Reply {
    fn build(app: &App, request: &Request, fault: &Fault) -> Reply {
        let prompt = &request.prompt;
        let candidates: Vec<Candidate> = (0..request.candidates)
            .map(|_| {
                let mut answer = prompt.answer(fault, || signature(app.next_call_number()));
                let cut = answer.truncate(request.max_tokens);
                let finish = match (&fault.finish_reason, cut) {
                    (Some(reason), _) => reason.clone(),
                    (None, true) => "MAX_TOKENS".into(),
                    (None, false) => "STOP".into(),
                };
                Candidate { answer, finish }
            })
            .collect();
        let output: u64 = candidates.iter().map(|c| c.answer.word_count()).sum();
        let input = prompt.prompt_tokens();
        let usage = fault.usage.clone().unwrap_or_else(|| {
            json!({"promptTokenCount": input, "candidatesTokenCount": output, "totalTokenCount": input + output})
        });
        Reply {
            id: uuid::Uuid::new_v4().simple().to_string(),
            model: prompt.model.clone(),
            candidates,
            usage,
        }
    }

    fn response(&self, candidates: Vec<Value>, usage: Option<&Value>) -> Value {
        let mut response =
            json!({"candidates": candidates, "modelVersion": self.model, "responseId": self.id});
        if let Some(usage) = usage {
            response["usageMetadata"] = usage.clone();
        }
        response
    }

    fn to_json(&self) -> Value {
        let candidates = self
            .candidates
            .iter()
            .enumerate()
            .map(|(index, c)| candidate(index, parts(&c.answer, &c.finish), Some(&c.finish)))
            .collect();
        self.response(candidates, Some(&self.usage))
    }

    /// One event per text piece (a call arrives whole), candidates one after another; each
    /// candidate's last event has its finish reason, and the stream's last one the usage.
    fn events(&self) -> Vec<Value> {
        let mut events = Vec::new();
        for (index, c) in self.candidates.iter().enumerate() {
            let pieces: Vec<Vec<Value>> = match &c.answer {
                Answer::Text(text) if !blocks_content(&c.finish) => word_pieces(text)
                    .into_iter()
                    .map(|w| vec![json!({"text": w})])
                    .collect(),
                answer => vec![parts(answer, &c.finish)],
            };
            let last = pieces.len().saturating_sub(1);
            for (i, piece) in pieces.into_iter().enumerate() {
                let finish = (i == last).then_some(c.finish.as_str());
                events.push(self.response(vec![candidate(index, piece, finish)], None));
            }
        }
        if let Some(last) = events.last_mut() {
            last["usageMetadata"] = self.usage.clone();
        }
        events
    }
}

/// A thought signature as Gemini 3 sends them: opaque standard base64, padding included.
fn signature(number: u64) -> String {
    format!("sig+/{number:07}Ag==")
}

/// A safety-style finish leaves the candidate without content.
fn blocks_content(finish: &str) -> bool {
    !matches!(finish, "STOP" | "MAX_TOKENS")
}

fn parts(answer: &Answer, finish: &str) -> Vec<Value> {
    if blocks_content(finish) {
        return Vec::new();
    }
    match answer {
        Answer::Text(text) => vec![json!({"text": text})],
        Answer::ToolCall {
            id,
            name,
            arguments,
        } => {
            let args: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
            vec![json!({"functionCall": {"name": name, "args": args}, "thoughtSignature": id})]
        }
    }
}

fn candidate(index: usize, parts: Vec<Value>, finish: Option<&str>) -> Value {
    let mut candidate = json!({"index": index});
    if !parts.is_empty() {
        candidate["content"] = json!({"role": "model", "parts": parts});
    }
    if let Some(finish) = finish {
        candidate["finishReason"] = json!(finish);
        if blocks_content(finish) && finish != "MAX_TOKENS" {
            candidate["safetyRatings"] = json!([{"category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                "probability": "HIGH", "blocked": true}]);
        }
    }
    candidate
}

fn sse_event(event: &Value) -> Bytes {
    Bytes::from(format!("data: {event}\r\n\r\n"))
}

/// An error in Gemini's shape.
#[derive(Debug)]
struct Error {
    status: StatusCode,
    message: String,
    details: Vec<Value>,
}

impl Error {
    fn new(status: StatusCode, message: &str) -> Error {
        Error {
            status,
            message: message.to_owned(),
            details: Vec::new(),
        }
    }

    fn invalid(message: &str) -> Error {
        Error::new(StatusCode::BAD_REQUEST, message)
    }

    fn for_fault(status: StatusCode, fault: &Fault, model: &str) -> Error {
        let message = fault.message.clone().unwrap_or_else(|| match status.as_u16() {
            404 => format!("models/{model} is not found for API version v1beta, or is not supported for generateContent."),
            429 => "Resource has been exhausted (e.g. check quota).".to_owned(),
            503 => "The model is overloaded. Please try again later.".to_owned(),
            500..=599 => "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting".to_owned(),
            _ => "Request contains an invalid argument.".to_owned(),
        });
        let mut details = Vec::new();
        if let Some(seconds) = fault
            .retry_after
            .as_deref()
            .filter(|s| s.parse::<f64>().is_ok())
        {
            details.push(json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{seconds}s")}));
        }
        Error {
            status,
            message,
            details,
        }
    }

    fn status_name(&self) -> &'static str {
        match self.status.as_u16() {
            400 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            409 => "ABORTED",
            429 => "RESOURCE_EXHAUSTED",
            499 => "CANCELLED",
            501 => "UNIMPLEMENTED",
            503 => "UNAVAILABLE",
            504 => "DEADLINE_EXCEEDED",
            500..=599 => "INTERNAL",
            _ => "FAILED_PRECONDITION",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response<Body> {
        let mut error = json!({"code": self.status.as_u16(), "message": self.message, "status": self.status_name()});
        if !self.details.is_empty() {
            error["details"] = Value::Array(self.details);
        }
        (self.status, Json(json!({"error": error}))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MockUpstream;

    async fn post(mock: &MockUpstream, call: &str, body: Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/models/{call}", mock.gemini_base_url()))
            .header("x-goog-api-key", "k")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    fn hello() -> Value {
        json!({"systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [{"role": "user", "parts": [{"text": "Hello there"}]}]})
    }

    #[tokio::test]
    async fn answers_with_candidates_and_usage_metadata() {
        let mock = MockUpstream::start(Some("k".into())).await.unwrap();
        let body: Value = post(&mock, "gem-m:generateContent", hello())
            .await
            .json()
            .await
            .unwrap();
        let candidate = &body["candidates"][0];
        assert_eq!(
            candidate["content"]["parts"][0]["text"],
            "Mock answer from gem-m: Hello there"
        );
        assert_eq!(candidate["finishReason"], "STOP");
        assert_eq!(
            body["usageMetadata"],
            json!({"promptTokenCount": 10, "candidatesTokenCount": 6, "totalTokenCount": 16})
        );
        assert_eq!(
            mock.requests()[0].path,
            "/v1beta/models/gem-m:generateContent"
        );
    }

    #[tokio::test]
    async fn streams_one_response_per_event() {
        let mock = MockUpstream::start(None).await.unwrap();
        let text = post(&mock, "gem-m:streamGenerateContent?alt=sse", hello())
            .await
            .text()
            .await
            .unwrap();
        let events: Vec<Value> = text
            .split("\r\n\r\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let joined: String = events
            .iter()
            .map(|e| {
                e["candidates"][0]["content"]["parts"][0]["text"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(joined, "Mock answer from gem-m: Hello there");
        let last = events.last().unwrap();
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(last["usageMetadata"]["totalTokenCount"], 16);
        assert!(events[0].get("usageMetadata").is_none());
    }

    #[tokio::test]
    async fn calls_functions_and_checks_signatures_on_replay() {
        let mock = MockUpstream::start(None).await.unwrap();
        let mut request = hello();
        request["tools"] = json!([{"functionDeclarations": [{"name": "weather",
            "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}]);
        let body: Value = post(&mock, "gem-m:generateContent", request.clone())
            .await
            .json()
            .await
            .unwrap();
        let part = &body["candidates"][0]["content"]["parts"][0];
        assert_eq!(
            part["functionCall"],
            json!({"name": "weather", "args": {"city": "test"}})
        );
        assert!(
            part["thoughtSignature"]
                .as_str()
                .unwrap()
                .starts_with("sig+/")
        );
        let mut unsigned = request.clone();
        unsigned["contents"] = json!([{"role": "user", "parts": [{"text": "x"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"content": "sunny"}}}]}]);
        let response = post(&mock, "gem-m:generateContent", unsigned.clone()).await;
        assert_eq!(response.status(), 400);
        unsigned["contents"][1]["parts"][0]["thoughtSignature"] = json!("s");
        let body: Value = post(&mock, "gem-m:generateContent", unsigned)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            body["candidates"][0]["content"]["parts"][0]["text"],
            "Tool result: sunny"
        );
    }

    #[tokio::test]
    async fn errors_and_safety_blocks() {
        let mock = MockUpstream::start(Some("k".into())).await.unwrap();
        let wrong = reqwest::Client::new()
            .post(format!(
                "{}/models/gem-m:generateContent",
                mock.gemini_base_url()
            ))
            .header("x-goog-api-key", "nope")
            .json(&hello())
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 400);
        let body: Value = wrong.json().await.unwrap();
        assert_eq!(body["error"]["details"][0]["reason"], "API_KEY_INVALID");
        let mut request = hello();
        request["mock"] = json!({"status": 429, "retry_after": "2"});
        let body: Value = post(&mock, "gem-m:generateContent", request)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(body["error"]["details"][0]["retryDelay"], "2s");
        let mut request = hello();
        request["mock"] = json!({"finish_reason": "SAFETY"});
        let body: Value = post(&mock, "gem-m:generateContent", request)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["candidates"][0]["finishReason"], "SAFETY");
        assert!(body["candidates"][0].get("content").is_none());
        let mut request = hello();
        request["generationConfig"] = json!({"max_tokens": 5});
        let body: Value = post(&mock, "gem-m:generateContent", request)
            .await
            .json()
            .await
            .unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_tokens")
        );
    }
}
