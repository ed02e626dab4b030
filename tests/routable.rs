//! Every model routable, never a dead end: θ for every catalog and config model with its source,
//! `auto` only among models that can answer (a key, a closed circuit, `[routing] models`), a
//! clear 503 when none can, the README's mock set-up, `GET /v1/models`' `triage` field, and
//! exploration. Through the real server, the shipped classifier and the fake provider; no test
//! depends on the classifier's θ values.

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};
use triage_core::catalog::Catalog;
use triage_core::config::Config;

const SOURCES: [&str; 5] = [
    "learned",
    "config",
    "mapped:gpqa",
    "mapped:mmlu_pro",
    "prior",
];

fn chosen(route: &Value) -> String {
    route["chosen"]["model"]
        .as_str()
        .unwrap_or_else(|| panic!("nothing chosen: {route}"))
        .to_string()
}

/// Only `var` is set, to the fake provider's key.
fn only(var: &'static str) -> impl Fn(&str) -> Option<String> {
    move |name| (name == var).then(|| UPSTREAM_KEY.to_string())
}

#[tokio::test]
async fn every_model_has_a_quality_and_says_where_its_abilities_come_from() {
    let h = Harness::start_adaptive("").await;
    let route = h.route(&ask("auto", "hello there")).await;
    let candidates = route["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), h.state.catalog.models.len());
    for c in candidates {
        assert!(c["quality"].is_f64(), "{c}");
        let source = c["ability_source"].as_str().unwrap_or_default();
        assert!(SOURCES.contains(&source), "{c}");
        assert_ne!(c["excluded"], "no ability estimate");
    }
    // Config models without scores, and built-in models without public scores, get the prior.
    for id in ["local/small", "local/big", "anthropic/claude-opus-5-5"] {
        assert_eq!(candidate(&route, id)["ability_source"], "prior", "{id}");
    }
    assert!(
        candidate(&route, "openai/gpt-4.1")["ability_source"]
            .as_str()
            .unwrap()
            .starts_with("mapped:"),
        "a public GPQA score is mapped"
    );
    assert!(chosen(&route).starts_with("local/"), "{route}");
    assert!(
        route["chosen"]["ability_source"].is_string(),
        "chosen and fallbacks carry the source too"
    );
}

#[tokio::test]
async fn config_models_without_scores_answer_auto_from_the_first_request() {
    let h = Harness::start_adaptive("").await;
    for profile in ["auto", "auto:cheap", "auto:best", "auto:q0.5"] {
        let calls_before = h.mock.requests().len();
        let response = h.chat(&ask(profile, "Write a haiku about routers.")).await;
        assert_eq!(response.status(), 200, "{profile}");
        let model = header(&response, "x-triage-model").unwrap().to_string();
        assert!(model.starts_with("local/"), "{profile} → {model}");
        let calls = h.mock.requests();
        assert_eq!(
            calls.len(),
            calls_before + 1,
            "{profile}: one upstream call"
        );
        let upstream = &h.state.catalog.model(&model).unwrap().upstream;
        assert_eq!(calls.last().unwrap().body["model"], upstream.as_str());
    }
}

#[tokio::test]
async fn models_without_a_key_are_left_out_with_the_variable_to_set() {
    let h = Harness::start_env(
        &format!("{CONFIG}\n[[providers]]\nname = \"openai\"\nbase_url = \"MOCK_URL\"\n"),
        Some(&default_model_dir()),
        Some(UPSTREAM_KEY),
        only("OPENAI_API_KEY"),
    )
    .await;
    for (profile, text) in [
        ("auto", "hello there"),
        ("auto:best", "Prove that there are infinitely many primes."),
        (
            "auto:cheap",
            "Write a Python function that reverses a list.",
        ),
    ] {
        let route = h.route(&ask(profile, text)).await;
        assert!(chosen(&route).starts_with("openai/"), "{profile}: {route}");
        for fallback in route["fallbacks"].as_array().unwrap() {
            assert!(fallback["model"].as_str().unwrap().starts_with("openai/"));
        }
        assert_eq!(
            candidate(&route, "anthropic/claude-sonnet-5-5")["excluded"],
            "no API key: set ANTHROPIC_API_KEY"
        );
        assert_eq!(
            candidate(&route, "local/small")["excluded"],
            "no API key: set LOCAL_API_KEY"
        );
        let response = h.chat(&ask(profile, text)).await;
        assert_eq!(response.status(), 200, "{profile}");
        let model = header(&response, "x-triage-model").unwrap().to_string();
        assert!(
            model.starts_with("openai/"),
            "{profile} answered by {model}"
        );
        assert!(header(&response, "x-triage-fallbacks").is_none());
    }
}

#[tokio::test]
async fn the_readme_mock_set_up_answers_auto_and_explicit_requests_without_variables() {
    let example = include_str!("../triage.example.toml");
    let config = example
        .replace("http://127.0.0.1:9000/v1", "MOCK_URL")
        .replace(
            "keys = [\"sk-triage-local\"]",
            "keys = [\"sk-triage-test\"]",
        )
        .replace("enabled = true", "enabled = false");
    assert!(config.contains("MOCK_URL") && config.contains("enabled = false"));
    // No variable is set at all, and the mock, like `triage mock-upstream`, wants no key.
    let h = Harness::start_env(&config, Some(&default_model_dir()), None, |_| None).await;
    let response = h.chat(&ask("local/small", "hi")).await;
    assert_eq!(response.status(), 200);
    for profile in ["auto", "auto:best", "auto:cheap"] {
        let response = h
            .chat(&ask(profile, "What is the capital of France?"))
            .await;
        assert_eq!(response.status(), 200, "{profile}");
        let model = header(&response, "x-triage-model").unwrap();
        assert!(["local/small", "local/big"].contains(&model), "{model}");
    }
    let route = h.route(&ask("auto", "hello")).await;
    assert_eq!(
        candidate(&route, "openai/gpt-4o")["excluded"],
        "no API key: set OPENAI_API_KEY"
    );
}

#[tokio::test]
async fn nothing_routable_is_a_503_naming_the_missing_keys_and_models() {
    let h = Harness::start_env(
        CONFIG,
        Some(&default_model_dir()),
        Some(UPSTREAM_KEY),
        |_| None,
    )
    .await;
    for send in [true, false] {
        let response = if send {
            h.chat(&ask("auto", "hello")).await
        } else {
            h.client
                .post(format!("{}/v1/route", h.url))
                .bearer_auth(ROUTER_KEY)
                .json(&ask("auto", "hello"))
                .send()
                .await
                .unwrap()
        };
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "no_routable_model", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        for needle in [
            "no API key: set LOCAL_API_KEY (local/small, local/big, local/solo)",
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
        ] {
            assert!(message.contains(needle), "{needle} not in {message}");
        }
    }
    assert!(h.mock.requests().is_empty(), "no provider was called");
}

#[tokio::test]
async fn open_circuits_take_models_out_of_auto_until_none_is_left() {
    // A long cooldown: the circuits must stay open while the test classifies prompts.
    let config = CONFIG.replace("breaker_cooldown_ms = 400", "breaker_cooldown_ms = 60000");
    let config = format!("{config}\n[routing]\nmodels = [\"local/small\", \"local/big\"]\n");
    let h = Harness::start_full(&config, Some(&default_model_dir())).await;
    // Two failed calls a request (one retry), breaker_failures = 3: two requests open it.
    h.fail("small-model", vec![status(500); 4]);
    for _ in 0..2 {
        let response = h.chat(&ask("local/small", "hi")).await;
        assert_eq!(header(&response, "x-triage-model"), Some("local/big"));
    }
    let route = h.route(&ask("auto", "hello")).await;
    assert_eq!(candidate(&route, "local/small")["excluded"], "circuit open");
    assert_eq!(chosen(&route), "local/big");
    let response = h.chat(&ask("auto", "hello")).await;
    assert_eq!(header(&response, "x-triage-model"), Some("local/big"));
    let models: Value = h.get("/v1/models").await.json().await.unwrap();
    let small = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "local/small")
        .unwrap();
    assert_eq!(small["triage"]["circuit"], "open");

    h.fail("big-model", vec![status(500); 6]);
    for _ in 0..2 {
        h.chat(&ask("local/big", "hi")).await;
    }
    let response = h.chat(&ask("auto", "hello")).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_routable_model");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("circuit open (local/small, local/big)"),
        "{message}"
    );
    assert!(message.contains("not in [routing] models"), "{message}");
}

#[tokio::test]
async fn routing_models_limit_auto_per_profile_but_not_explicit_requests() {
    let extra = "[routing]\nmodels = [\"local/s*\"]\n[routing.profile_models]\n\"auto:best\" = [\"local/big\"]\n";
    let h = Harness::start_adaptive(extra).await;
    for text in [
        "hello",
        "Prove Fermat's little theorem.",
        "Sort a list in Rust.",
    ] {
        let route = h.route(&ask("auto", text)).await;
        assert!(["local/small", "local/solo"].contains(&chosen(&route).as_str()));
        assert_eq!(
            candidate(&route, "local/big")["excluded"],
            "not in [routing] models"
        );
        assert_eq!(chosen(&h.route(&ask("auto:best", text)).await), "local/big");
    }
    let response = h.chat(&ask("local/big", "hi")).await;
    assert_eq!(response.status(), 200, "explicit ids are not limited");

    let typo = format!("{CONFIG}\n[routing]\nmodels = [\"local/*\", \"local/smal\"]\n")
        .replace("MOCK_URL", &h.mock.base_url());
    let config = Config::parse(&typo, Path::new("t.toml")).unwrap();
    let error = Catalog::build(&config, Path::new("t.toml"), |_| None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("routing.models[1]") && error.contains("local/smal"),
        "{error}"
    );
}

#[tokio::test]
async fn models_endpoint_shows_abilities_source_key_and_circuit() {
    let h = Harness::start_adaptive("[[models]]\nid = \"local/big\"\nabilities = { code = 2.0 }\n")
        .await;
    let list: Value = h.get("/v1/models").await.json().await.unwrap();
    let entry = |id: &str| -> Value {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap()["triage"]
            .clone()
    };
    let small = entry("local/small");
    assert_eq!(small["ability_source"], "prior");
    assert_eq!(small["abilities"].as_object().unwrap().len(), 8);
    assert_eq!(small["key_present"], true);
    assert_eq!(small["circuit"], "closed");
    assert_eq!(small["family"], "local");
    let big = entry("local/big");
    assert_eq!(big["ability_source"], "config");
    assert_eq!(big["abilities"]["code"], 2.0);
    let mini = entry("openai/gpt-4o-mini");
    assert_eq!(mini["key_present"], false);
    assert_eq!(mini["api_key_env"], "OPENAI_API_KEY");
    assert_eq!(entry("groq/gpt-oss-20b")["family"], "gpt-oss");
}

#[tokio::test]
async fn exploration_tries_prior_models_within_the_request_constraints() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = format!(
        "[routing]\nexplore_share = 1.0\n[log]\npath = \"{}\"\n\
         [[models]]\nid = \"local/small\"\nabilities = {{ code = 1.0 }}\n",
        tmp.path().join("triage.db").display()
    );
    let h = Harness::start_adaptive(&extra).await;
    let mut body = ask("auto", "hello there");
    body["triage"] = json!({"models": ["local/small", "local/big"]});

    // Dry runs show the policy's own decision: never an exploration.
    let route = h.route(&body).await;
    assert_eq!(route["profile"], "auto");
    assert_eq!(candidate(&route, "local/big")["ability_source"], "prior");

    let response = h.chat(&body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-triage-model"), Some("local/big"));
    assert_eq!(header(&response, "x-triage-explore"), Some("1"));
    assert!(
        header(&response, "x-triage-reason")
            .unwrap()
            .contains("exploring local/big")
    );
    let explored = header(&response, "x-triage-request-id")
        .unwrap()
        .to_string();

    // A cap below local/big's expected cost leaves nothing to explore.
    body["triage"]["max_cost_usd"] = json!(0.001);
    let response = h.chat(&body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-triage-model"), Some("local/small"));
    assert!(header(&response, "x-triage-explore").is_none());
    let usual = header(&response, "x-triage-request-id")
        .unwrap()
        .to_string();

    h.state.outcomes.as_ref().unwrap().flush().await;
    let db = rusqlite::Connection::open(tmp.path().join("triage.db")).unwrap();
    let logged = |id: &str| -> (String, String) {
        db.query_row(
            "SELECT profile, model FROM outcomes WHERE id = ?1",
            [id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap()
    };
    assert_eq!(
        logged(&explored),
        ("auto explore".into(), "local/big".into())
    );
    assert_eq!(logged(&usual), ("auto".into(), "local/small".into()));
}
