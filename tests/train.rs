//! `triage train` end to end on tiny synthetic data: determinism, gradients, that it learns what
//! the outcomes say, that the written directory loads and reproduces training-time predictions,
//! and clear errors on malformed rows. Each run trains a one-layer encoder for a few seconds.

use std::path::{Path, PathBuf};

use candle_core::Device;
use triage_core::classifier::{Classifier, ClassifierInput};
use triage_learn::train::{self, TrainArgs, TrainError, TrainSummary};

const WEAK: &str = "weak-model";
const STRONG: &str = "strong-model";

fn hard_prompt(i: usize) -> String {
    format!(
        "Prove the theorem on prime gaps with analytic number theory and bound the error term, case {i}."
    )
}

fn easy_prompt(i: usize) -> String {
    format!("hi there, say hello back to me please {i}")
}

/// Hard prompts: the weak model fails, the strong one passes. Easy prompts: both pass. Plus a
/// tool-need file; one prompt is a two-turn conversation.
fn write_data(dir: &Path) {
    let mut outcomes = String::new();
    for i in 0..40 {
        for (prompt, weak) in [(hard_prompt(i), 0.0), (easy_prompt(i), 1.0)] {
            for (model, score) in [(WEAK, weak), (STRONG, 1.0)] {
                let row = serde_json::json!({"source": "synthetic", "subset": "s", "prompt_id": prompt,
                    "prompt": prompt, "model": model, "label": "correct", "score": score});
                outcomes.push_str(&format!("{row}\n"));
            }
        }
    }
    let turns = serde_json::json!({"source": "synthetic", "prompt": ["hello", "say hello again"],
        "model": STRONG, "label": "correct", "score": 1.0});
    outcomes.push_str(&format!("{turns}\n"));
    std::fs::write(dir.join("outcomes.jsonl"), outcomes).unwrap();
    let mut tools = String::new();
    for i in 0..30 {
        let rows = [
            serde_json::json!({"source": "t", "prompt": format!("what is the weather in city {i} right now"), "needs_tool": 1}),
            serde_json::json!({"source": "t", "prompt": format!("tell me a joke about cats number {i}"), "needs_tool": 0}),
        ];
        for row in rows {
            tools.push_str(&format!("{row}\n"));
        }
    }
    std::fs::write(dir.join("tools.jsonl"), tools).unwrap();
}

fn recipe(encoder: &str, epochs: usize, batch_size: usize) -> String {
    format!(
        r#"
seed = 7
dev_fraction = 0.2
max_tokens = 32
skills = ["math", "chat", "tool_use"]
encoder = "{encoder}"
[scratch]
layers = 1
hidden = 32
attention_heads = 2
intermediate = 64
activation = "relu"
vocab_size = 300
alphabet = 100
[optim]
epochs = {epochs}
batch_size = {batch_size}
lr = 3e-3
theta_lr = 5e-2
[[files]]
path = "outcomes.jsonl"
[[files]]
path = "tools.jsonl"
kind = "tool_need"
extra_negatives = 10
[[skill_rules]]
skill = "math"
contains = ["theorem"]
[[skill_rules]]
skill = "chat"
contains = ["hello"]
"#
    )
}

struct Run {
    _dir: tempfile::TempDir,
    data: PathBuf,
    out: PathBuf,
}

fn train_with(recipe_text: &str, data: Option<&Path>) -> (Run, Result<TrainSummary, TrainError>) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = data.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
    if data.is_none() {
        std::fs::create_dir_all(&data_dir).unwrap();
        write_data(&data_dir);
    }
    let recipe_path = dir.path().join("recipe.toml");
    std::fs::write(&recipe_path, recipe_text).unwrap();
    let out = dir.path().join("model");
    let args = TrainArgs {
        cache_dir: dir.path().join("cache"),
        quiet: true,
        ..TrainArgs::new(recipe_path, data_dir.clone(), out.clone())
    };
    let result = train::run(&args);
    (
        Run {
            _dir: dir,
            data: data_dir,
            out,
        },
        result,
    )
}

fn predict(classifier: &Classifier, texts: &[String]) -> Vec<triage_core::classifier::Prediction> {
    let inputs: Vec<ClassifierInput> = texts
        .iter()
        .map(|t| ClassifierInput::from_text(t.as_str()))
        .collect();
    classifier.predict(&inputs).unwrap()
}

/// The weak model's mean predicted quality on `texts`, by the model directory `dir`.
fn weak_quality(dir: &Path, texts: &[String]) -> f64 {
    let classifier = Classifier::load_dir(dir, &Device::Cpu).unwrap();
    let skills = classifier.skills().to_vec();
    let weak = &classifier.metadata.abilities[WEAK];
    let predictions = predict(&classifier, texts);
    predictions
        .iter()
        .map(|p| train::quality(weak, &p.skill_mix(&skills), p.difficulty))
        .sum::<f64>()
        / predictions.len() as f64
}

#[test]
fn a_fixed_seed_gives_the_same_model_twice() {
    let (a, first) = train_with(&recipe("scratch", 2, 16), None);
    let (b, second) = train_with(&recipe("scratch", 2, 16), None);
    first.unwrap();
    second.unwrap();
    for file in ["model.safetensors", "tokenizer.json", "config.json"] {
        let x = std::fs::read(a.out.join(file)).unwrap();
        let y = std::fs::read(b.out.join(file)).unwrap();
        assert!(x == y, "{file} differs between two runs with the same seed");
    }
}

#[test]
fn gradients_reach_every_variable() {
    // One batch holds every prompt: outcome rows, skill labels and tool labels all take part.
    let (_run, summary) = train_with(&recipe("scratch", 1, 1000), None);
    let coverage = summary.unwrap().gradient;
    // Embeddings 3 + their norm 2, one layer 16, heads 6, θ 1.
    assert_eq!(coverage.total, 28);
    assert_eq!(
        coverage.with_gradient, coverage.total,
        "no gradient: {:?}",
        coverage.without_gradient
    );
}

#[test]
fn learns_that_hard_prompts_are_hard_and_the_directory_reproduces_training() {
    let (run, summary) = train_with(&recipe("scratch", 25, 16), None);
    let summary = summary.unwrap();
    let classifier = Classifier::load_dir(&run.out, &Device::Cpu).unwrap();

    // The written directory gives the training-time predictions.
    assert!(!summary.samples.is_empty());
    for sample in &summary.samples {
        let got = classifier
            .predict_one(&ClassifierInput::from_text(sample.text.as_str()))
            .unwrap();
        let want = &sample.prediction;
        assert!(
            (got.difficulty - want.difficulty).abs() < 1e-4,
            "{}: {} vs {}",
            sample.text,
            got.difficulty,
            want.difficulty
        );
        assert!((got.tool_need - want.tool_need).abs() < 1e-4);
        for (g, w) in got.skills.iter().zip(&want.skills) {
            assert!((g - w).abs() < 1e-4);
        }
    }

    // Hard prompts: higher difficulty and lower predicted quality for the weak model.
    let skills = classifier.skills().to_vec();
    let weak = &classifier.metadata.abilities[WEAK];
    let hard = predict(
        &classifier,
        &(100..110).map(hard_prompt).collect::<Vec<_>>(),
    );
    let easy = predict(
        &classifier,
        &(100..110).map(easy_prompt).collect::<Vec<_>>(),
    );
    let mean = |xs: Vec<f64>| xs.iter().sum::<f64>() / xs.len() as f64;
    let difficulty = |ps: &[triage_core::classifier::Prediction]| {
        mean(ps.iter().map(|p| p.difficulty as f64).collect())
    };
    let weak_quality = |ps: &[triage_core::classifier::Prediction]| {
        mean(
            ps.iter()
                .map(|p| train::quality(weak, &p.skill_mix(&skills), p.difficulty))
                .collect(),
        )
    };
    let (hard_b, easy_b) = (difficulty(&hard), difficulty(&easy));
    let (hard_q, easy_q) = (weak_quality(&hard), weak_quality(&easy));
    eprintln!(
        "difficulty hard {hard_b:.3} easy {easy_b:.3}; weak-model quality hard {hard_q:.3} easy {easy_q:.3}"
    );
    assert!(
        hard_b > easy_b + 0.5,
        "difficulty hard {hard_b} vs easy {easy_b}"
    );
    assert!(
        hard_q < 0.3 && easy_q > 0.7,
        "weak-model quality hard {hard_q} vs easy {easy_q}"
    );

    // Tool need and skills mean what their labels said.
    let weather = predict(
        &classifier,
        &["what is the weather in city 77 right now".to_string()],
    );
    let joke = predict(
        &classifier,
        &["tell me a joke about cats number 77".to_string()],
    );
    assert!(weather[0].tool_need > 0.8 && joke[0].tool_need < 0.2);
    assert_eq!(hard[0].top_skill(&skills), "math");
    assert_eq!(easy[0].top_skill(&skills), "chat");

    let last = summary.epochs.last().unwrap();
    assert!(
        last.dev.outcome.auc.unwrap() > 0.9,
        "dev AUC {:?}",
        last.dev.outcome.auc
    );
    assert_eq!(summary.data.files[0].rows, 161);
    let metadata = &classifier.metadata;
    assert_eq!(metadata.format_version, train::FORMAT_VERSION);
    assert!(metadata.training["git_revision"].is_string());
    assert_eq!(metadata.training["epochs"].as_array().unwrap().len(), 25);
}

#[test]
fn pretrained_encoders_train_frozen_and_fine_tuned() {
    let (base, summary) = train_with(&recipe("scratch", 1, 16), None);
    summary.unwrap();
    for encoder in ["frozen", "finetune"] {
        let choice = format!("{encoder}:{}", base.out.display());
        let (run, summary) = train_with(&recipe(&choice, 2, 16), Some(&base.data));
        let summary = summary.unwrap();
        let classifier = Classifier::load_dir(&run.out, &Device::Cpu).unwrap();
        let sample = &summary.samples[0];
        let got = classifier
            .predict_one(&ClassifierInput::from_text(sample.text.as_str()))
            .unwrap();
        assert!(
            (got.difficulty - sample.prediction.difficulty).abs() < 1e-4,
            "{encoder}"
        );
        assert_eq!(
            summary.gradient.without_gradient,
            Vec::<String>::new(),
            "{encoder}"
        );
    }
}

#[test]
fn malformed_rows_are_reported_with_file_and_line() {
    let cases = [
        (
            "{\"source\": \"s\", \"prompt\": \"p\", \"model\": \"m\", \"score\": 1}\n{not json\n",
            "outcomes.jsonl:2: not JSON",
        ),
        (
            "\n{\"source\": \"s\", \"prompt\": \"p\", \"model\": \"m\"}\n",
            "outcomes.jsonl:2: `score`",
        ),
        (
            "{\"source\": \"s\", \"prompt\": \"p\", \"model\": \"m\", \"label\": \"correct\", \"score\": 3}\n",
            "outcomes.jsonl:1: label correct",
        ),
        (
            "{\"source\": \"s\", \"prompt\": 5, \"model\": \"m\", \"score\": 1}\n",
            "outcomes.jsonl:1: `prompt`",
        ),
        ("[1, 2]\n", "outcomes.jsonl:1: not a JSON object"),
    ];
    for (content, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        write_data(dir.path());
        std::fs::write(dir.path().join("outcomes.jsonl"), content).unwrap();
        let (_run, result) = train_with(&recipe("scratch", 1, 16), Some(dir.path()));
        let Err(error) = result else {
            panic!("malformed data must fail")
        };
        let message = error.to_string();
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
}

#[test]
fn ability_maps_fit_published_scores_and_list_the_training_prompts() {
    let scores_dir = tempfile::tempdir().unwrap();
    let scores = scores_dir.path().join("scores.toml");
    std::fs::write(
        &scores,
        format!(
            "[[models]]\nname = \"{WEAK}\"\ngpqa = 0.3\n[[models]]\nname = \"{STRONG}\"\ngpqa = 0.6\n[[models]]\nname = \"absent\"\ngpqa = 0.9\n"
        ),
    )
    .unwrap();
    let text = format!(
        "{}\n[[ability_maps]]\nbenchmark = \"gpqa\"\nscores = \"{}\"\n",
        recipe("scratch", 3, 16),
        scores.display()
    );
    let (run, result) = train_with(&text, None);
    result.unwrap();
    let metadata = triage_core::classifier::load_metadata(&run.out).unwrap();
    let map = &metadata.ability_maps[0];
    assert_eq!(map.benchmark, "gpqa");
    assert_eq!(
        map.fit["models"].as_array().unwrap().len(),
        2,
        "{}",
        map.fit
    );
    // The strong model has the higher θ on math (the hard prompts) and the higher GPQA.
    assert!(map.slope[0] > 0.0, "{:?}", map.slope);

    // Every prompt the run read is listed for `eval`, conversations as they are rendered.
    let listed = std::fs::read(run.out.join("training_prompts.bin")).unwrap();
    let hashes: std::collections::HashSet<u64> = listed
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert!(hashes.contains(&triage_learn::eval::prompt_hash(&hard_prompt(3))));
    assert!(hashes.contains(&triage_learn::eval::prompt_hash(
        "user: hello\nsay hello again"
    )));
    assert!(!hashes.contains(&triage_learn::eval::prompt_hash("never seen")));
}

#[test]
fn a_retrain_from_a_directory_reads_the_recipe_it_was_trained_with() {
    // The base holds the weak model back; a retrain that names no recipe must keep it out
    // (the default recipe would bring its public outcomes back).
    let text = recipe("scratch", 1, 16).replace(
        "seed = 7",
        &format!("seed = 7\nexclude_models = [\"{WEAK}\"]"),
    );
    let (run, base) = train_with(&text, None);
    base.unwrap();
    let retrain = |out: &Path| {
        let args = TrainArgs {
            recipe: None,
            init: Some(run.out.clone()),
            cache_dir: run.out.join("cache"),
            quiet: true,
            ..TrainArgs::new(PathBuf::new(), run.data.clone(), out.to_path_buf())
        };
        train::run(&args)
    };
    let out = run.out.with_file_name("retrained");
    retrain(&out).unwrap();
    let metadata = triage_core::classifier::load_metadata(&out).unwrap();
    assert!(metadata.abilities.contains_key(STRONG));
    assert!(
        !metadata.abilities.contains_key(WEAK),
        "the held-back model came back: {:?}",
        metadata.abilities.keys()
    );
    let recipe_file = metadata.training["recipe_file"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(recipe_file.ends_with("recipe.toml"), "{recipe_file}");

    // Without its recipe the retrain says which file is missing instead of reading another.
    std::fs::remove_file(&recipe_file).unwrap();
    let message = retrain(&run.out.with_file_name("again"))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(&recipe_file) && message.contains("--recipe"),
        "{message}"
    );
}

/// Rewrites the outcomes so that they say nothing about the prompts: the weak model scores 0.5
/// on every one of them.
fn flatten_weak_scores(data: &Path) {
    let path = data.join("outcomes.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let flat: Vec<String> = text
        .lines()
        .map(|line| {
            let mut row: serde_json::Value = serde_json::from_str(line).unwrap();
            if row["model"] == WEAK {
                row["score"] = serde_json::json!(0.5);
            }
            row.to_string()
        })
        .collect();
    std::fs::write(&path, flat.join("\n") + "\n").unwrap();
}

#[test]
fn a_student_learns_what_the_teacher_predicts() {
    let (teacher_run, teacher) = train_with(&recipe("scratch", 25, 16), None);
    teacher.unwrap();

    // The student's own outcomes are flat; only the teacher knows that hard prompts are hard.
    // (The last epoch is kept: on flat dev outcomes, the epoch that learnt least scores best.)
    let student =
        recipe("scratch", 25, 16).replace("theta_lr = 5e-2", "theta_lr = 5e-2\nkeep_best = false");
    let flat = tempfile::tempdir().unwrap();
    write_data(flat.path());
    flatten_weak_scores(flat.path());
    let gap = |distill: &str| {
        let (run, summary) = train_with(&format!("{student}{distill}"), Some(flat.path()));
        summary.unwrap();
        let texts = |prompt: fn(usize) -> String| (100..110).map(prompt).collect::<Vec<_>>();
        weak_quality(&run.out, &texts(easy_prompt)) - weak_quality(&run.out, &texts(hard_prompt))
    };
    let alone = gap("");
    let taught = gap(&format!(
        "\n[distill]\nteacher = {:?}\nweight = 3.0\n",
        teacher_run.out.display().to_string()
    ));
    eprintln!("weak model's easy − hard quality: alone {alone:.3}, taught {taught:.3}");
    assert!(alone.abs() < 0.15, "flat outcomes alone: gap {alone}");
    assert!(taught > 0.4, "distilled: gap {taught}");

    // A teacher that knows none of the student's models is refused.
    let mut strangers = std::fs::read_to_string(teacher_run.out.join("triage.json")).unwrap();
    strangers = strangers
        .replace(&format!("\"{WEAK}\""), "\"someone\"")
        .replace(&format!("\"{STRONG}\""), "\"someone-else\"");
    std::fs::write(teacher_run.out.join("triage.json"), strangers).unwrap();
    let (_, refused) = train_with(
        &format!(
            "{}\n[distill]\nteacher = {:?}\n",
            recipe("scratch", 1, 16),
            teacher_run.out.display().to_string()
        ),
        Some(flat.path()),
    );
    let Err(error) = refused else {
        panic!("a teacher that knows none of the models was accepted");
    };
    let message = error.to_string();
    assert!(message.contains("knows none"), "{message}");
}

/// The same question, padded in front to a long prompt or not: with a token budget of 8 the
/// encoder sees only the end, which is the same for both.
fn padded_prompt(i: usize, long: bool) -> String {
    let padding = if long {
        "Some background that goes on and on. ".repeat(12)
    } else {
        String::new()
    };
    format!("{padding}question number {i} ends here")
}

#[test]
fn the_length_input_sees_what_the_token_budget_cuts() {
    let data = tempfile::tempdir().unwrap();
    write_data(data.path());
    let mut outcomes = String::new();
    for i in 0..40 {
        for long in [false, true] {
            let prompt = padded_prompt(i, long);
            for (model, score) in [(WEAK, if long { 0.0 } else { 1.0 }), (STRONG, 1.0)] {
                let row = serde_json::json!({"source": "synthetic", "prompt": prompt,
                    "model": model, "label": "correct", "score": score});
                outcomes.push_str(&format!("{row}\n"));
            }
        }
    }
    std::fs::write(data.path().join("outcomes.jsonl"), outcomes).unwrap();

    let gap = |length_input: bool| {
        let text = recipe("scratch", 25, 16)
            .replace("max_tokens = 32", "max_tokens = 8")
            .replace(
                "encoder = ",
                &format!("length_input = {length_input}\nencoder = "),
            );
        let (run, summary) = train_with(&text, Some(data.path()));
        summary.unwrap();
        // The directory as `serve` loads it: the length weight is read back and used.
        let texts = |long: bool| {
            (100..110)
                .map(|i| padded_prompt(i, long))
                .collect::<Vec<_>>()
        };
        weak_quality(&run.out, &texts(false)) - weak_quality(&run.out, &texts(true))
    };
    let blind = gap(false);
    let seeing = gap(true);
    eprintln!("weak model's short − long quality: without length {blind:.3}, with {seeing:.3}");
    assert!(
        blind.abs() < 0.05,
        "the encoder alone cannot see length: {blind}"
    );
    assert!(seeing > 0.2, "with the length input: {seeing}");
}

#[test]
fn tool_positives_can_be_limited_to_those_naming_live_data_or_an_action() {
    let text = recipe("scratch", 1, 16).replace(
        "kind = \"tool_need\"\n",
        "kind = \"tool_need\"\npositive_contains = [\"weather in city 1\"]\n",
    );
    let (_run, summary) = train_with(&text, None);
    let tools = &summary.unwrap().data.files[1];
    // Positives for cities 1 and 10–19 name the cue; the other 19 are dropped, and no negative.
    assert_eq!(tools.filtered, 19);
    assert_eq!(tools.prompts, 30 + 11);
}

#[test]
fn every_recipe_in_training_parses_and_finds_its_own_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for dir in ["training", "training/compare"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            // public_scores.toml holds benchmark scores, not a recipe.
            if path.extension().is_some_and(|e| e == "toml")
                && !path.ends_with("public_scores.toml")
            {
                let recipe = train::recipe::Recipe::load(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                // Files the recipe ships beside itself (`./…`, made absolute by the loader) and
                // its published-scores files must be there; data files live in --data-dir.
                let beside = recipe
                    .files
                    .iter()
                    .map(|f| f.path.clone())
                    .filter(|p| Path::new(p).is_absolute());
                let scores = recipe.ability_maps.iter().filter_map(|m| m.scores.clone());
                for file in beside.chain(scores) {
                    assert!(
                        Path::new(&file).exists(),
                        "{}: {file} does not exist",
                        path.display()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "{checked} recipes");
}

/// The probe set (`tests/fixtures/chat_probes.jsonl`) measures how the shipped model reads chat
/// only while no recipe trains on it: the hand-written seeds share no prompt with it, and no seed
/// shares more than half its words (Jaccard over lowercased words) with any probe.
#[test]
fn the_hand_written_seeds_stay_apart_from_the_probe_set() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let prompts = |file: &str| -> Vec<String> {
        std::fs::read_to_string(root.join(file))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let row: serde_json::Value = serde_json::from_str(l).unwrap();
                row["prompt"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    let words = |text: &str| -> std::collections::HashSet<String> {
        text.to_lowercase()
            .split(|c: char| !(c.is_alphanumeric() || c == '\''))
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (seeds, probes) = (
        prompts("training/skill_seeds.jsonl"),
        prompts("tests/fixtures/chat_probes.jsonl"),
    );
    assert!(seeds.len() >= 200 && probes.len() >= 150);
    let probe_words: Vec<_> = probes.iter().map(|p| words(p)).collect();
    for seed in &seeds {
        let seed_words = words(seed);
        for (probe, probe_words) in probes.iter().zip(&probe_words) {
            assert_ne!(seed.trim().to_lowercase(), probe.trim().to_lowercase());
            let shared = seed_words.intersection(probe_words).count();
            let union = seed_words.union(probe_words).count().max(1);
            assert!(
                shared * 2 <= union,
                "seed {seed:?} shares {shared} of {union} words with probe {probe:?}"
            );
        }
    }
}
