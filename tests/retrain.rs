//! Learning from traffic, end to end: serve → traffic in two domains → client feedback and a
//! judge's grades (a fake judge model whose grades follow a rule) → `train --from-log`
//! fine-tuning the shipped classifier → `/admin/reload` → routing decisions for the retrained
//! domain move the expected way, measured on prompts that were not in the traffic.
//!
//! The rule: the cheap model's answers to Python questions are bad, everything else is good.
//! Before, the two models look alike to the router (close public scores), so `auto` sends both
//! domains to the cheap one. After, Python questions should go to the expensive model and
//! capital-city questions should stay cheap.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::json;
use triage_core::catalog::Catalog;
use triage_core::config::Config;
use triage_learn::calibrate::CalibrateArgs;
use triage_learn::train::judge::{self, LabelArgs};
use triage_learn::train::{self, TrainArgs};
use triage_mock::Rule;

const ADMIN_KEY: &str = "sk-admin-test";

const TASKS: [&str; 12] = [
    "reverses a linked list",
    "parses a CSV file into dictionaries",
    "merges two sorted arrays",
    "computes the Levenshtein distance of two strings",
    "finds all prime numbers below n with a sieve",
    "flattens a nested list",
    "checks whether a string is a palindrome",
    "counts word frequencies in a text file",
    "implements binary search on a sorted list",
    "serialises a binary tree to JSON",
    "validates an email address with a regular expression",
    "computes the nth Fibonacci number with memoisation",
];
const HELD_OUT_TASKS: [&str; 6] = [
    "rotates a matrix by 90 degrees",
    "deduplicates a list while keeping order",
    "converts Roman numerals to integers",
    "groups anagrams from a list of words",
    "computes a moving average over a list",
    "finds the longest common prefix of strings",
];
const COUNTRIES: [&str; 12] = [
    "France", "Japan", "Kenya", "Peru", "Norway", "Egypt", "Canada", "Vietnam", "Chile", "Poland",
    "Morocco", "Nepal",
];
const HELD_OUT_COUNTRIES: [&str; 6] = ["Italy", "Ghana", "Mexico", "Finland", "Thailand", "Cuba"];

fn code(task: &str) -> String {
    format!("Write a Python function that {task}.")
}

fn capital(country: &str) -> String {
    format!("What is the capital of {country}?")
}

fn config(dir: &Path) -> String {
    let base = CONFIG.replace(
        "keys = [\"sk-triage-test\"]",
        &format!("keys = [\"sk-triage-test\"]\nadmin_keys = [\"{ADMIN_KEY}\"]"),
    );
    format!(
        r#"{base}
[[models]]
id = "local/small"
mmlu_pro = 0.60
[[models]]
id = "local/big"
mmlu_pro = 0.62
[[models]]
id = "local/judge"
provider = "local"
upstream = "judge"
input_per_mtok = 1.0
output_per_mtok = 4.0
context = 128000
[classifier]
model = "{model}"
[log]
path = "{db}"
"#,
        model = dir.join("model").display(),
        db = dir.join("triage.db").display()
    )
}

/// The shipped classifier, copied so the retrain can overwrite it.
fn copy_default_model(into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default");
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), into.join(entry.file_name())).unwrap();
    }
}

/// A small public file, so the retrain mixes the log with data it must not forget.
fn write_public(dir: &Path) -> PathBuf {
    let mut rows = String::new();
    for i in 0..20 {
        for (model, score) in [("public/a", (i % 2) as f64), ("public/b", 1.0)] {
            let row = json!({"source": "public", "prompt": format!("Explain topic number {i} of the physics syllabus."),
                "model": model, "label": "correct", "score": score});
            rows.push_str(&format!("{row}\n"));
        }
    }
    let path = dir.join("public.jsonl");
    std::fs::write(&path, rows).unwrap();
    path
}

fn recipe(public: &Path) -> String {
    let default = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("training/default.toml"),
    )
    .unwrap();
    let recipe: toml::Table = toml::from_str(&default).unwrap();
    format!(
        r#"
seed = 11
dev_fraction = 0.1
max_tokens = 128
skills = {skills}
encoder = "scratch"
[optim]
epochs = 12
batch_size = 8
lr = 5e-4
# θ of the two new models starts from their mean scores; a small log needs a quick θ.
theta_lr = 0.2
keep_best = false
[[files]]
path = "{public}"
"#,
        skills = recipe["skills"],
        public = public.display()
    )
}

/// One prompt to both models, explicitly: the request ids of the small and the big model's answers.
async fn both(h: &Harness, prompt: &str) -> [String; 2] {
    let mut ids = Vec::new();
    for model in ["local/small", "local/big"] {
        let response = h
            .chat(&json!({"model": model, "messages": [{"role": "user", "content": prompt}]}))
            .await;
        assert_eq!(response.status(), 200);
        ids.push(
            header(&response, "x-triage-request-id")
                .unwrap()
                .to_string(),
        );
    }
    [ids[0].clone(), ids[1].clone()]
}

/// `train --from-log` fine-tuning the serving model directory in place, then `/admin/reload`.
async fn retrain_and_reload(h: &Harness, dir: &Path) -> triage_learn::train::from_log::LogExport {
    h.state.outcomes.as_ref().unwrap().flush().await;
    let public = write_public(dir);
    let recipe_path = dir.join("recipe.toml");
    std::fs::write(&recipe_path, recipe(&public)).unwrap();
    let model_dir = dir.join("model");
    let summary = tokio::task::spawn_blocking({
        let args = TrainArgs {
            cache_dir: dir.join("cache"),
            quiet: true,
            from_log: Some(dir.join("triage.db").display().to_string()),
            init: Some(model_dir.clone()),
            ..TrainArgs::new(recipe_path, dir.to_path_buf(), model_dir.clone())
        };
        move || train::run(&args)
    })
    .await
    .unwrap()
    .unwrap();
    let response = h.reload(ADMIN_KEY).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    summary.log.unwrap()
}

type Routes = Vec<(String, f64)>;

/// Routes of the held-out Python questions and capital-city questions.
async fn held_out_routes(h: &Harness) -> (Routes, Routes) {
    let held_code: Vec<String> = HELD_OUT_TASKS.iter().map(|t| code(t)).collect();
    let held_chat: Vec<String> = HELD_OUT_COUNTRIES.iter().map(|c| capital(c)).collect();
    (routes(h, &held_code).await, routes(h, &held_chat).await)
}

/// The retrained domain (Python) moves from the cheap model to the big one, its quality gap
/// widening by more than 0.1 and ending more than 0.1 above the other domain's, which stays on
/// the cheap model.
fn only_python_moved_to_big(before: &(Routes, Routes), after: &(Routes, Routes)) {
    let ((code_before, chat_before), (code_after, chat_after)) = (before, after);
    let figures = format!(
        "Python: big share {:.2} → {:.2}, gap {:.3} → {:.3}; capitals: big share {:.2} → {:.2}, gap {:.3} → {:.3}",
        share_to_big(code_before),
        share_to_big(code_after),
        mean_gap(code_before),
        mean_gap(code_after),
        share_to_big(chat_before),
        share_to_big(chat_after),
        mean_gap(chat_before),
        mean_gap(chat_after),
    );
    eprintln!("{figures}");
    assert!(share_to_big(code_before) < 0.5, "{figures}");
    assert!(share_to_big(code_after) > 0.5, "{figures}");
    assert!(
        mean_gap(code_after) - mean_gap(code_before) > 0.1,
        "the retrained domain's quality gap widened: {figures}"
    );
    assert!(
        mean_gap(code_after) > mean_gap(chat_after) + 0.1,
        "and more than the other domain's: {figures}"
    );
    assert!(
        share_to_big(chat_after) <= 0.5,
        "the other domain stays on the cheap model: {figures}"
    );
}

/// For each prompt: (chosen model, predicted quality of big minus small), choosing between the
/// two mock models only (the built-in catalog's models are routable too).
async fn routes(h: &Harness, prompts: &[String]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for prompt in prompts {
        let route = h
            .route(
                &json!({"model": "auto", "models": ["local/small", "local/big"],
                "messages": [{"role": "user", "content": prompt}]}),
            )
            .await;
        let quality = |id: &str| {
            candidate(&route, id)["quality"]
                .as_f64()
                .unwrap_or_else(|| panic!("{id} has a quality: {route}"))
        };
        let chosen = route["chosen"]["model"].as_str().unwrap().to_string();
        out.push((chosen, quality("local/big") - quality("local/small")));
    }
    out
}

fn share_to_big(routes: &[(String, f64)]) -> f64 {
    routes.iter().filter(|(m, _)| m == "local/big").count() as f64 / routes.len() as f64
}

fn mean_gap(routes: &[(String, f64)]) -> f64 {
    routes.iter().map(|(_, gap)| gap).sum::<f64>() / routes.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_and_judge_grades_retrain_the_router_for_that_domain() {
    let tmp = tempfile::tempdir().unwrap();
    copy_default_model(&tmp.path().join("model"));
    let config_text = config(tmp.path());
    let h = Harness::start_full(&config_text, Some(&tmp.path().join("model"))).await;
    h.mock.rule(Rule {
        model: Some("judge".into()),
        contains: vec!["Mock answer from small-model".into(), "Python".into()],
        content: "The function is missing. Rating: [[2]]".into(),
    });
    h.mock.rule(Rule {
        model: Some("judge".into()),
        contains: vec![],
        content: "Correct and complete. Rating: [[9]]".into(),
    });
    let before = held_out_routes(&h).await;

    // Traffic: every prompt to both models, explicitly. Clients give feedback on a third.
    let prompts: Vec<(String, bool)> = TASKS
        .iter()
        .map(|t| (code(t), true))
        .chain(COUNTRIES.iter().map(|c| (capital(c), false)))
        .collect();
    let mut feedback = 0;
    for (i, (prompt, is_code)) in prompts.iter().enumerate() {
        for (model, id) in ["local/small", "local/big"]
            .into_iter()
            .zip(both(&h, prompt).await)
        {
            if i % 3 == 0 {
                h.state.outcomes.as_ref().unwrap().flush().await;
                let bad = *is_code && model == "local/small";
                let thumbs = if bad { "down" } else { "up" };
                let response = h
                    .client
                    .post(format!("{}/v1/feedback", h.url))
                    .bearer_auth(ROUTER_KEY)
                    .json(&json!({"id": id, "thumbs": thumbs}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                feedback += 1;
            }
        }
    }
    h.state.outcomes.as_ref().unwrap().flush().await;

    // The judge grades the rest, through the router's own providers.
    let config = Config::parse(
        &config_text.replace("MOCK_URL", &h.mock.base_url()),
        Path::new("t.toml"),
    )
    .unwrap();
    let catalog = Catalog::build(&config, Path::new("t.toml"), |var| {
        (var == "LOCAL_API_KEY").then(|| UPSTREAM_KEY.to_string())
    })
    .unwrap();
    let args = LabelArgs {
        judge: "local/judge".into(),
        config: None,
        log: None,
        sample: None,
        since: None,
        concurrency: 4,
        dry_run: false,
        quiet: true,
    };
    let labelled = judge::run(&args, &config, &catalog).await.unwrap();
    let traffic = prompts.len() * 2;
    assert_eq!(labelled.waiting, traffic - feedback);
    assert_eq!(labelled.graded, traffic - feedback);
    assert!(labelled.estimated_cost_usd > 0.0 && labelled.cost_usd > 0.0);
    // A second run finds nothing left to grade: it resumes, it does not repeat.
    let again = judge::run(&args, &config, &catalog).await.unwrap();
    assert_eq!((again.waiting, again.graded), (0, 0));
    // The report shows how much of the log is labelled.
    let mut store =
        triage_gateway::outcomes::Store::open_read(&tmp.path().join("triage.db")).unwrap();
    let report = triage_gateway::outcomes::report::Report::compute(
        &mut store,
        &catalog,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(
        (report.labels.feedback, report.labels.judged),
        (feedback as u64, (traffic - feedback) as u64)
    );
    // Code answers of the small model were graded 2 (score 1/9), the rest 9 (8/9).
    let bad_share = 8.0 / 32.0; // small × Python among the graded answers
    let expected_mean = bad_share / 9.0 + (1.0 - bad_share) * 8.0 / 9.0;
    assert!(
        (labelled.mean_score.unwrap() - expected_mean).abs() < 0.03,
        "{labelled:?}"
    );

    // Retrain from the log, fine-tuning the serving model directory in place, then reload.
    let log = retrain_and_reload(&h, tmp.path()).await;
    assert_eq!(log.rows(), traffic);
    assert_eq!(log.by_label["feedback"], feedback);
    assert_eq!(log.by_label["judge"], traffic - feedback);
    let metadata = triage_core::classifier::load_metadata(&tmp.path().join("model")).unwrap();
    assert!(
        metadata.abilities.contains_key("local/small"),
        "θ learned for a catalog id"
    );

    only_python_moved_to_big(&before, &held_out_routes(&h).await);

    // Calibration on the same traffic with the retrained model: a quarter of the requests to
    // the expensive model, then a budget.
    let router = h.state.adaptive.load_full().unwrap();
    let mut calibrate = CalibrateArgs {
        config: None,
        log: None,
        target_share: Some("local/big=0.25".into()),
        budget_usd_per_1k: None,
        profile: "auto".into(),
        since: None,
        only_auto: false,
        json: false,
    };
    let quarter = triage_learn::calibrate::run(&calibrate, &config, &catalog, &router).unwrap();
    eprintln!("{quarter}");
    assert_eq!(quarter.requests, traffic);
    let realised = quarter
        .recommended
        .shares
        .get("local/big")
        .copied()
        .unwrap_or(0.0);
    assert!((realised - 0.25).abs() <= 0.1, "{quarter}");
    calibrate.target_share = None;
    calibrate.budget_usd_per_1k = Some(quarter.current.usd_per_1k / 2.0);
    let budget = triage_learn::calibrate::run(&calibrate, &config, &catalog, &router).unwrap();
    assert!(
        budget.recommended.usd_per_1k <= quarter.current.usd_per_1k / 2.0,
        "{budget}"
    );
    assert!(
        budget.recommended.target < quarter.current.target,
        "{budget}"
    );
}

/// The same loop with a client that only compares answers (an A/B test): on Python questions
/// the big model's answer wins, on capitals the two tie. The preferences train through the
/// Bradley–Terry loss alone, with no grade in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferences_alone_retrain_the_router_for_that_domain() {
    let tmp = tempfile::tempdir().unwrap();
    copy_default_model(&tmp.path().join("model"));
    let h = Harness::start_full(&config(tmp.path()), Some(&tmp.path().join("model"))).await;
    let before = held_out_routes(&h).await;

    let prompts = (TASKS.iter().map(|t| (code(t), "win")))
        .chain(COUNTRIES.iter().map(|c| (capital(c), "tie")));
    for (prompt, big_fares) in prompts {
        let [small, big] = both(&h, &prompt).await;
        let response = h
            .client
            .post(format!("{}/v1/feedback", h.url))
            .bearer_auth(ROUTER_KEY)
            .json(&json!({"id": big, "opponent": small, "result": big_fares}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    let log = retrain_and_reload(&h, tmp.path()).await;
    let pairs = TASKS.len() + COUNTRIES.len();
    assert_eq!(log.by_label.get("preference"), Some(&(2 * pairs)));
    assert_eq!(log.rows(), 2 * pairs, "no grades: preferences only");
    only_python_moved_to_big(&before, &held_out_routes(&h).await);
}
