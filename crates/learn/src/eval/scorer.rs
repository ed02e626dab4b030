//! The seam between `eval` and whatever predicts quality: a [`Scorer`] turns prompts into
//! [`PromptFeatures`] and knows the abilities of the models it was trained with.
//!
//! Not for: loading a classifier. The classifier module implements [`Scorer`]; tests use fakes.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

/// What a router knows about one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptFeatures {
    /// b(x): how hard the prompt is, on the logit scale of the item-response model.
    pub difficulty: f32,
    /// g(x): the prompt's mix of K skills (weights that sum to 1).
    pub skills: Vec<f32>,
    /// An L2-normalised embedding; the kNN baseline compares prompts by its dot product.
    pub embedding: Vec<f32>,
}

/// Predicts, for each prompt, the features of the item-response model
/// P(good answer of m on x) = σ(⟨θ_m, g(x)⟩ − b(x)).
pub trait Scorer {
    /// One [`PromptFeatures`] per prompt, in order.
    fn features(&self, prompts: &[String]) -> Vec<PromptFeatures>;
    /// Model name → θ (K values, one per skill) for the models the scorer was fitted with.
    fn known_abilities(&self) -> HashMap<String, Vec<f32>>;
    /// A short name for reports.
    fn name(&self) -> &str;
    /// [`prompt_hash`]es of the prompts the scorer was trained on, where it knows them. Held-out
    /// prompts among them inflate every number, so `eval` warns about and counts them.
    fn training_prompts(&self) -> Option<HashSet<u64>> {
        None
    }
    /// Other names of known models (`name → the name θ is stored under`): the training recipe's
    /// `[aliases]`, for files that name a model as one source did and training stored it as
    /// another ("claude-1" → "claude-v1").
    fn aliases(&self) -> HashMap<String, String> {
        HashMap::new()
    }
}

/// The predicted quality of a model with ability `theta` on a prompt with `features`: the
/// serving path's own function (`quality::quality`).
pub fn predicted_quality(theta: &[f32], features: &PromptFeatures) -> f64 {
    triage_core::quality::quality(theta, &features.skills, features.difficulty)
}

pub(crate) use triage_core::quality::sigmoid;

/// A stable 64-bit hash of a prompt's text, the same on every platform and release: the first
/// eight bytes (big-endian) of the SHA-256 of the normalised text. Normalising trims the text,
/// collapses every run of whitespace to one space and lowercases it, so re-wrapped or re-cased
/// copies of one prompt hash alike. A conversation is hashed as its user turns joined with blank
/// lines, which is the text `eval` gives to [`Scorer::features`].
pub fn prompt_hash(text: &str) -> u64 {
    let mut normalised = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !normalised.is_empty() {
            normalised.push(' ');
        }
        normalised.extend(word.chars().flat_map(char::to_lowercase));
    }
    let digest = Sha256::digest(normalised.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_hash_ignores_case_and_whitespace_only() {
        assert_eq!(
            prompt_hash("What is 2+2?"),
            prompt_hash("  what   is\n2+2? ")
        );
        assert_ne!(prompt_hash("What is 2+2?"), prompt_hash("What is 2+3?"));
    }

    #[test]
    fn prompt_hash_is_stable_across_releases() {
        // SHA-256("hello world") starts b94d27b9934d3e08.
        assert_eq!(prompt_hash(" Hello   World "), 0xb94d27b9934d3e08);
    }

    #[test]
    fn quality_follows_the_item_response_model() {
        let features = PromptFeatures {
            difficulty: 1.0,
            skills: vec![0.5, 0.5],
            embedding: vec![],
        };
        assert!((predicted_quality(&[1.0, 1.0], &features) - 0.5).abs() < 1e-12);
        assert!((predicted_quality(&[3.0, 1.0], &features) - sigmoid(1.0)).abs() < 1e-12);
    }
}
