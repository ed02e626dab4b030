//! The shipped classifier as an eval [`Scorer`]: features from real inference, abilities from
//! the model directory, and the training prompts it lists (`training_prompts.bin`).

use std::collections::{HashMap, HashSet};

use super::scorer::{PromptFeatures, Scorer};
use triage_core::classifier::{Classifier, ClassifierInput};

/// File in a model directory listing [`super::prompt_hash`]es of the training prompts, as
/// little-endian u64s.
pub const TRAINING_PROMPTS_FILE: &str = "training_prompts.bin";

/// Prompts per inference batch.
const BATCH: usize = 32;

pub struct ClassifierScorer<'a> {
    classifier: &'a Classifier,
    name: String,
    dir: Option<std::path::PathBuf>,
}

impl<'a> ClassifierScorer<'a> {
    /// `dir`: the model directory, where the training prompt list may be.
    pub fn new(
        classifier: &'a Classifier,
        dir: Option<std::path::PathBuf>,
    ) -> ClassifierScorer<'a> {
        let name = format!("triage ({})", classifier.metadata.encoder);
        ClassifierScorer {
            classifier,
            name,
            dir,
        }
    }
}

impl Scorer for ClassifierScorer<'_> {
    fn features(&self, prompts: &[String]) -> Vec<PromptFeatures> {
        let names = self.classifier.skills();
        prompts
            .chunks(BATCH)
            .flat_map(|chunk| {
                let inputs: Vec<ClassifierInput> = chunk
                    .iter()
                    .map(|p| ClassifierInput::from_text(p.clone()))
                    .collect();
                self.classifier
                    .predict(&inputs)
                    .expect("classifier inference failed")
                    .into_iter()
                    .map(|p| PromptFeatures {
                        difficulty: p.difficulty,
                        skills: p.skill_mix(names),
                        embedding: p.embedding,
                    })
            })
            .collect()
    }

    fn known_abilities(&self) -> HashMap<String, Vec<f32>> {
        self.classifier
            .metadata
            .abilities
            .clone()
            .into_iter()
            .collect()
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn aliases(&self) -> HashMap<String, String> {
        let aliases = &self.classifier.metadata.training["recipe"]["aliases"];
        aliases
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(name, target)| Some((name.clone(), target.as_str()?.to_owned())))
            .collect()
    }

    fn training_prompts(&self) -> Option<HashSet<u64>> {
        let bytes = std::fs::read(self.dir.as_ref()?.join(TRAINING_PROMPTS_FILE)).ok()?;
        Some(
            bytes
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        )
    }
}
