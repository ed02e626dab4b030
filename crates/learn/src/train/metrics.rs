//! Dev-set numbers: ROC AUC (with ties) and log-loss, overall and per model.
//!
//! Outcome AUC over all rows mostly measures how well θ orders the models; the per-model AUC
//! (rows of one model, averaged over models weighted by rows) measures whether the classifier
//! orders *prompts*, which is what routing needs. A prompt-blind router scores 0.5 on it.

use std::collections::BTreeMap;

use crate::eval::metrics::roc_auc;

/// Binary cross-entropy of probability `p` against a soft label `y` in [0, 1].
pub fn log_loss(p: f64, y: f64) -> f64 {
    let p = p.clamp(1e-7, 1.0 - 1e-7);
    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
}

/// Outcome predictions for one group of rows.
#[derive(Debug, Default, Clone)]
pub struct OutcomeRows {
    pub model: Vec<u32>,
    pub predicted: Vec<f64>,
    pub score: Vec<f64>,
}

impl OutcomeRows {
    pub fn push(&mut self, model: u32, predicted: f64, score: f64) {
        self.model.push(model);
        self.predicted.push(predicted);
        self.score.push(score);
    }

    pub fn len(&self) -> usize {
        self.score.len()
    }

    pub fn is_empty(&self) -> bool {
        self.score.is_empty()
    }

    pub fn log_loss(&self) -> Option<f64> {
        let n = self.len();
        (n > 0).then(|| {
            self.predicted
                .iter()
                .zip(&self.score)
                .map(|(&p, &y)| log_loss(p, y))
                .sum::<f64>()
                / n as f64
        })
    }

    /// AUC over the rows whose score is exactly 0 or 1.
    pub fn auc(&self) -> Option<f64> {
        let (scores, labels) = self.binary_rows(|_| true);
        roc_auc(&scores, &labels)
    }

    /// Per-model AUC, averaged with weights = that model's binary rows.
    pub fn per_model_auc(&self) -> Option<f64> {
        let models: std::collections::BTreeSet<u32> = self.model.iter().copied().collect();
        let (mut sum, mut weight) = (0.0, 0.0);
        for m in models {
            let (scores, labels) = self.binary_rows(|i| self.model[i] == m);
            if let Some(a) = roc_auc(&scores, &labels) {
                sum += a * labels.len() as f64;
                weight += labels.len() as f64;
            }
        }
        (weight > 0.0).then(|| sum / weight)
    }

    fn binary_rows(&self, keep: impl Fn(usize) -> bool) -> (Vec<f64>, Vec<bool>) {
        (0..self.len())
            .filter(|&i| keep(i) && (self.score[i] == 0.0 || self.score[i] == 1.0))
            .map(|i| (self.predicted[i], self.score[i] == 1.0))
            .unzip()
    }

    pub fn summary(&self) -> OutcomeSummary {
        OutcomeSummary {
            rows: self.len(),
            log_loss: self.log_loss(),
            auc: self.auc(),
            per_model_auc: self.per_model_auc(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct OutcomeSummary {
    pub rows: usize,
    pub log_loss: Option<f64>,
    pub auc: Option<f64>,
    pub per_model_auc: Option<f64>,
}

/// Groups rows by a key (the prompt's source).
pub fn by_key(rows: &[(String, u32, f64, f64)]) -> BTreeMap<String, OutcomeSummary> {
    let mut groups: BTreeMap<String, OutcomeRows> = BTreeMap::new();
    for (key, model, predicted, score) in rows {
        groups
            .entry(key.clone())
            .or_default()
            .push(*model, *predicted, *score);
    }
    groups
        .into_iter()
        .map(|(k, rows)| (k, rows.summary()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_model_auc_ignores_the_ordering_between_models() {
        let mut rows = OutcomeRows::default();
        // Model 0 always predicted higher than model 1; within each model, perfectly ordered.
        rows.push(0, 0.9, 1.0);
        rows.push(0, 0.8, 0.0);
        rows.push(1, 0.2, 1.0);
        rows.push(1, 0.1, 0.0);
        assert_eq!(rows.per_model_auc(), Some(1.0));
        assert_eq!(rows.auc(), Some(0.75));
        assert!(rows.log_loss().unwrap() > 0.0);
    }
}
