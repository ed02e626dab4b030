//! Adaptive routing end to end: the shipped classifier's real weights, the policy, `auto`
//! requests reaching the fake upstream, `/v1/route`, and the explaining headers.

mod common;

use std::path::Path;

use candle_core::Device;
use common::*;
use serde_json::{Value, json};
use triage_core::classifier::{Classifier, ClassifierInput};

/// Three mock models with explicit abilities, so the test does not depend on the catalog's
/// public scores: a cheap weak one, a mid one without tools, an expensive strong one.
const MODELS: &str = r#"
[[models]]
id = "local/small"
abilities = { code = -1.0, math = -1.0, reasoning = -1.0, knowledge = -1.0, writing = -1.0, extraction = -1.0, chat = -1.0, tool_use = -1.0 }
[[models]]
id = "local/solo"
tools = false
abilities = { code = 1.0, math = 1.0, reasoning = 1.0, knowledge = 1.0, writing = 1.0, extraction = 1.0, chat = 1.0, tool_use = 1.0 }
[[models]]
id = "local/big"
tools = true
context = 128000
abilities = { code = 4.0, math = 4.0, reasoning = 4.0, knowledge = 4.0, writing = 4.0, extraction = 4.0, chat = 4.0, tool_use = 4.0 }
"#;

/// Only the three mock models may be chosen.
fn mock_only(mut body: Value) -> Value {
    body["triage"] = json!({"models": ["local/small", "local/solo", "local/big"]});
    body
}

#[test]
fn shipped_model_loads_and_is_deterministic() {
    let a = Classifier::load_dir(&default_model_dir(), &Device::Cpu).unwrap();
    let b = Classifier::load_dir(&default_model_dir(), &Device::Cpu).unwrap();
    assert_eq!(a.skills().len(), 8);
    assert!(
        std::fs::metadata(default_model_dir().join("model.safetensors"))
            .unwrap()
            .len()
            <= 20 << 20
    );
    let inputs = [
        ClassifierInput::from_text("hi!"),
        ClassifierInput::from_text(
            "Prove that there are infinitely many primes p such that p+2 is also prime.",
        ),
    ];
    let first = a.predict(&inputs).unwrap();
    assert_eq!(
        first,
        b.predict(&inputs).unwrap(),
        "same weights, same outputs"
    );
    assert_eq!(first, a.predict(&inputs).unwrap(), "no state between calls");
    for p in &first {
        assert!(p.difficulty.is_finite());
        assert!((p.skills.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        assert!((0.0..=1.0).contains(&p.tool_need));
    }
    let one = a.predict_one(&inputs[1]).unwrap();
    assert!(
        (one.difficulty - first[1].difficulty).abs() < 1e-4,
        "batching does not change results"
    );
}

#[tokio::test]
async fn auto_request_reaches_exactly_the_model_route_named() {
    let h = Harness::start_adaptive(MODELS).await;
    for (profile, text) in [
        ("auto", "hello, how are you?"),
        ("auto:best", "hello, how are you?"),
        (
            "auto:cheap",
            "Prove that the square root of two is irrational, step by step.",
        ),
        (
            "auto:q0.5",
            "Write a Python function that merges two sorted lists.",
        ),
    ] {
        let body = mock_only(ask(profile, text));
        let calls_before = h.mock.requests().len();
        let route = h.route(&body).await;
        assert_eq!(route["route"], "auto");
        let chosen = route["chosen"]["model"].as_str().unwrap().to_string();
        assert_eq!(
            h.mock.requests().len(),
            calls_before,
            "/v1/route calls no provider"
        );

        let response = h.chat(&body).await;
        assert_eq!(response.status(), 200, "{profile}");
        assert_eq!(
            header(&response, "x-triage-model"),
            Some(chosen.as_str()),
            "{profile}"
        );
        for name in [
            "x-triage-difficulty",
            "x-triage-skill",
            "x-triage-tool-need",
            "x-triage-quality",
            "x-triage-reason",
        ] {
            assert!(header(&response, name).is_some(), "{profile}: no {name}");
        }
        let quality: f64 = header(&response, "x-triage-quality")
            .unwrap()
            .parse()
            .unwrap();
        assert!((quality - route["chosen"]["quality"].as_f64().unwrap()).abs() < 1e-3);
        let upstream = h.mock.requests().last().unwrap().body.clone();
        let expected_upstream = h.state.catalog.model(&chosen).unwrap().upstream.clone();
        assert_eq!(upstream["model"], expected_upstream.as_str(), "{profile}");
        assert!(
            upstream.get("triage").is_none(),
            "triage's field is not forwarded"
        );
    }
}

#[tokio::test]
async fn profiles_order_cost_and_quality() {
    let h = Harness::start_adaptive(MODELS).await;
    let ask_about_tcp =
        |profile| mock_only(ask(profile, "Explain how TCP congestion control works."));
    let best = h.route(&ask_about_tcp("auto:best")).await;
    assert_eq!(
        best["chosen"]["model"], "local/big",
        "the strongest model has the best quality"
    );
    let cheap = h.route(&ask_about_tcp("auto:cheap")).await;
    let balanced = h.route(&ask_about_tcp("auto")).await;
    let cost = |v: &Value| v["chosen"]["cost_usd"].as_f64().unwrap();
    let quality = |v: &Value| v["chosen"]["quality"].as_f64().unwrap();
    assert!(cost(&cheap) <= cost(&balanced) && cost(&balanced) <= cost(&best));
    assert!(quality(&cheap) <= quality(&balanced) && quality(&balanced) <= quality(&best));
    assert_eq!(
        best["candidates"].as_array().unwrap().len(),
        h.state.catalog.models.len()
    );
    let skills = best["classifier"]["skills"].as_object().unwrap();
    assert_eq!(skills.len(), 8);
}

#[tokio::test]
async fn tools_filter_is_never_bypassed() {
    let h = Harness::start_adaptive(MODELS).await;
    let mut body = mock_only(ask("auto:best", "What's the weather in Paris right now?"));
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let route = h.route(&body).await;
    assert_eq!(
        candidate(&route, "local/solo")["excluded"],
        "no tool calling"
    );
    let chain: Vec<&str> = route["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(!chain.contains(&"local/solo"));
    let response = h.chat(&body).await;
    assert_eq!(response.status(), 200);
    assert_ne!(header(&response, "x-triage-model"), Some("local/solo"));
}

#[tokio::test]
async fn auto_errors_are_clear() {
    let h = Harness::start_adaptive(MODELS).await;
    let response = h.chat(&ask("auto:fastest", "hi")).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "model");

    let mut impossible = ask("auto", "hi");
    impossible["triage"] = json!({"models": ["local/solo"]});
    impossible["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
    let response = h.chat(&impossible).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_eligible_model");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no tool calling")
    );

    let without = Harness::start("").await;
    let response = without.chat(&ask("auto", "hi")).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "classifier_unavailable");
}

#[tokio::test]
async fn explicit_models_bypass_the_classifier() {
    let h = Harness::start_adaptive(MODELS).await;
    let response = h.chat(&ask("local/small", "hi")).await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "x-triage-difficulty").is_none());
    assert!(
        !h.metrics().await.contains("triage_classify_seconds_count"),
        "no classification for a pinned model"
    );
}

#[tokio::test]
async fn messages_endpoint_routes_auto_through_the_same_path() {
    let h = Harness::start_adaptive(MODELS).await;
    let body = json!({"model": "auto:fastest", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    let response = h
        .client
        .post(format!("{}/v1/messages", h.url))
        .header("x-api-key", ROUTER_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("routing profile"),
        "{error}"
    );
}

/// `/admin/reload` swaps the model while `auto` requests are in flight: none of them fails or
/// waits for the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_requests_keep_succeeding_through_reloads() {
    const ADMIN_KEY: &str = "sk-admin-test";
    let config = CONFIG.replace(
        "keys = [\"sk-triage-test\"]",
        &format!("keys = [\"sk-triage-test\"]\nadmin_keys = [\"{ADMIN_KEY}\"]"),
    );
    let config = format!(
        "{config}\n{MODELS}\n[classifier]\nmodel = {:?}\n",
        default_model_dir().display().to_string()
    );
    let h = Harness::start_full(&config, Some(&default_model_dir())).await;
    let before = h.state.adaptive.load_full().expect("loaded");

    let senders: Vec<_> = (0..4)
        .map(|worker| {
            let (client, url) = (h.client.clone(), h.url.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..25 {
                    let body =
                        mock_only(ask("auto", &format!("question {worker}-{i}: what is 2+2?")));
                    let response = client
                        .post(format!("{url}/v1/chat/completions"))
                        .bearer_auth(ROUTER_KEY)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    statuses.push(response.status().as_u16());
                }
                statuses
            })
        })
        .collect();
    let mut reloads = 0;
    for _ in 0..8 {
        assert_eq!(h.reload(ADMIN_KEY).await.status(), 200);
        reloads += 1;
    }
    let mut statuses = Vec::new();
    for sender in senders {
        statuses.extend(sender.await.unwrap());
    }
    assert_eq!(reloads, 8);
    assert_eq!(statuses.len(), 100);
    assert!(
        statuses.iter().all(|&s| s == 200),
        "every request answered: {statuses:?}"
    );
    let after = h.state.adaptive.load_full().expect("loaded");
    assert!(
        !std::sync::Arc::ptr_eq(&before, &after),
        "the model in use was replaced"
    );
}

/// Eval measures what serves: for each prompt, the model eval's scorer and choice rule pick
/// (classifier features through `eval::Scorer`, `eval::predicted_quality`, `quality::choose`
/// at the profiles' targets) is the model `/v1/route` chooses, and the qualities agree.
#[tokio::test]
async fn eval_chooses_what_route_chooses() {
    use triage_learn::eval::Scorer;
    let h = Harness::start_adaptive(MODELS).await;
    let classifier = Classifier::load_dir(&default_model_dir(), &Device::Cpu).unwrap();
    let scorer = triage_learn::eval::classifier::ClassifierScorer::new(&classifier, None);
    let prompts = [
        "hi, how are you?",
        "Prove that there are infinitely many primes of the form 4k+3.",
        "Rewrite this sentence to sound more formal: gonna be late, sorry",
        "Implement a lock-free multi-producer multi-consumer queue in C++.",
    ];
    let models = ["local/small", "local/solo", "local/big"];
    let mut choices = std::collections::BTreeSet::new();
    let profiles = [
        ("auto", triage_learn::eval::DEFAULT_BALANCED_TARGET),
        ("auto:cheap", triage_learn::eval::DEFAULT_CHEAP_TARGET),
    ];
    for (prompt, (profile, share)) in prompts
        .iter()
        .flat_map(|p| profiles.iter().map(move |profile| (*p, *profile)))
    {
        let route = h.route(&mock_only(ask(profile, prompt))).await;
        let features = &scorer.features(&[prompt.to_string()])[0];
        let mut quality = Vec::new();
        let mut cost = Vec::new();
        for id in models {
            let router = h.state.adaptive.load_full().unwrap();
            let theta = router.abilities().theta(id).unwrap().to_vec();
            let q = triage_learn::eval::predicted_quality(&theta, features);
            let served = candidate(&route, id)["quality"].as_f64().unwrap();
            assert!(
                (q - served).abs() < 1e-4,
                "{prompt}: {id} eval {q} served {served}"
            );
            quality.push(q);
            cost.push(candidate(&route, id)["cost_usd"].as_f64().unwrap());
        }
        let best = quality.iter().copied().fold(0.0, f64::max);
        let target = share * best;
        let eval_choice = models[triage_core::quality::choose(&quality, &cost, target).unwrap()];
        assert_eq!(route["chosen"]["model"], eval_choice, "{profile} {prompt}");
        choices.insert(eval_choice);
    }
    assert!(
        choices.len() >= 2,
        "the prompts exercise more than one choice: {choices:?}"
    );
}

/// The shipped classifier on the hand-labelled chat probes (`tests/fixtures`, never trained on):
/// the figures the README reports, with a margin, so a retrain that reads chat worse fails here.
#[test]
fn shipped_model_reads_the_chat_probes() {
    let classifier = Classifier::load_dir(&default_model_dir(), &Device::Cpu).unwrap();
    let probes = triage_learn::eval::probes::read_probes(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_probes.jsonl"),
    )
    .unwrap();
    let report = triage_learn::eval::probes::measure(&classifier, &probes).unwrap();
    eprint!("{report}");
    assert!(report.skill_accuracy >= 0.45, "{report}");
    assert!(report.tool_auc.unwrap() >= 0.80, "{report}");
    assert!(report.concordance.unwrap() >= 0.75, "{report}");
    let view = |text: &str| {
        classifier
            .predict_one(&ClassifierInput::from_text(text))
            .unwrap()
    };
    let proof = view("Prove that there are infinitely many primes of the form 4k+3.");
    assert_eq!(proof.top_skill(classifier.skills()), "math");
    let hello = view("hi, how are you?");
    assert!(proof.difficulty > hello.difficulty + 1.0);
    assert_eq!(hello.top_skill(classifier.skills()), "chat");
    assert!(
        hello.tool_need < 0.5,
        "a greeting needs no tool: {}",
        hello.tool_need
    );
    let weather = view("What's the weather in Paris right now?");
    assert!(weather.tool_need > 0.9 && view("write a poem about autumn").tool_need < 0.2);
}
