//! Classification latency (32, 128, 512 and 2,048 tokens, batch 1 and 8) and policy decision time.
//!
//! `cargo bench --bench classify`. Models: the shipped default (`models/default`), and
//! all-MiniLM-L6-v2 when `TRIAGE_MINILM_DIR` points at its files (`scripts/fetch-minilm.sh`),
//! timed with zero heads (latency only: the heads are a handful of multiply-adds), and any model
//! directory `TRIAGE_BENCH_MODEL` names (a recipe variant, to compare with the default).
//! Threads follow `RAYON_NUM_THREADS` (the server uses 1 per request; set it to compare).

use std::hint::black_box;
use std::path::{Path, PathBuf};

use candle_core::Device;
use criterion::{Criterion, criterion_group, criterion_main};
use triage_core::catalog::Catalog;
use triage_core::classifier::{Classifier, ClassifierInput, add_untrained_heads};
use triage_core::config::Config;
use triage_core::policy::{self, Constraints, ModelView, Needs, Profile, PromptView, Targets};

/// A text of about `tokens` tokens for this classifier's tokenizer.
fn text_of(classifier: &Classifier, tokens: usize) -> String {
    let words = "the quick brown fox explains how a binary search tree keeps its keys sorted while \
                 inserting and deleting nodes in logarithmic time on average";
    // The classifier keeps at most `max_tokens` of a text, so past that budget count words
    // (each is at least one token) instead of the tokens it keeps.
    let budget = classifier.metadata.max_tokens;
    let mut text = String::new();
    loop {
        let kept = classifier.token_ids(&text).map_or(0, |ids| ids.len());
        let long_enough = if tokens <= budget {
            kept >= tokens
        } else {
            text.split_whitespace().count() >= tokens
        };
        if long_enough {
            return text;
        }
        text.push_str(words);
        text.push(' ');
    }
}

fn models() -> Vec<(String, Classifier)> {
    let mut models = Vec::new();
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default");
    if let Ok(c) = Classifier::load_dir(&default, &Device::Cpu) {
        models.push(("default".to_string(), c));
    }
    if let Some(dir) = std::env::var_os("TRIAGE_BENCH_MODEL").map(PathBuf::from) {
        match Classifier::load_dir(&dir, &Device::Cpu) {
            Ok(c) => models.push((dir.display().to_string().replace('/', "_"), c)),
            Err(e) => eprintln!("TRIAGE_BENCH_MODEL not benchmarked: {e}"),
        }
    }
    if let Some(dir) = std::env::var_os("TRIAGE_MINILM_DIR").map(PathBuf::from) {
        match minilm_with_zero_heads(&dir) {
            Ok(c) => models.push(("minilm-l6".to_string(), c)),
            Err(e) => eprintln!("MiniLM not benchmarked: {e}"),
        }
    }
    models
}

/// MiniLM's own files plus zero heads and metadata in a temp dir, for timing only.
fn minilm_with_zero_heads(dir: &Path) -> anyhow::Result<Classifier> {
    let tmp = std::env::temp_dir().join("triage-bench-minilm");
    std::fs::create_dir_all(&tmp)?;
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(dir.join(name), tmp.join(name))?;
    }
    let skills: Vec<String> = [
        "code",
        "math",
        "reasoning",
        "knowledge",
        "writing",
        "extraction",
        "chat",
        "tool_use",
    ]
    .map(String::from)
    .to_vec();
    add_untrained_heads(&tmp, &skills)?;
    Ok(Classifier::load_dir(&tmp, &Device::Cpu)?)
}

fn classification(c: &mut Criterion) {
    for (name, classifier) in models() {
        let mut group = c.benchmark_group(format!("classify/{name}"));
        for tokens in [32, 128, 512, 2048] {
            let text = text_of(&classifier, tokens);
            for batch in [1, 8] {
                let inputs = vec![ClassifierInput::from_text(text.clone()); batch];
                let seen = classifier.token_ids(&text).unwrap().len();
                group.bench_function(format!("{tokens}tok(seen {seen})/batch{batch}"), |b| {
                    b.iter(|| classifier.predict(black_box(&inputs)).unwrap())
                });
            }
        }
        group.finish();
    }
}

fn policy_decision(c: &mut Criterion) {
    let catalog = Catalog::build(&Config::default(), Path::new("(defaults)"), |_| None).unwrap();
    let abilities: Vec<Vec<f32>> = (0..catalog.models.len())
        .map(|i| vec![(i % 7) as f32 * 0.5; 8])
        .collect();
    let options: Vec<ModelView> = catalog
        .models
        .values()
        .zip(&abilities)
        .map(|(model, a)| ModelView {
            model,
            abilities: Some(a),
            healthy: true,
        })
        .collect();
    let prompt = PromptView {
        difficulty: 0.5,
        skill_mix: vec![0.125; 8],
    };
    let needs = Needs {
        prompt_tokens: 500,
        ..Needs::default()
    };
    c.bench_function(&format!("policy/decide/{}_models", options.len()), |b| {
        b.iter(|| {
            policy::decide(
                black_box(&options),
                black_box(&prompt),
                &needs,
                Profile::Balanced,
                &Constraints::default(),
                Targets::default(),
            )
        })
    });
}

criterion_group!(benches, classification, policy_decision);
criterion_main!(benches);
