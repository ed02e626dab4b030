//! `triage probe`: does the classifier read chat prompts the way a person would? A probe file
//! lists hand-labelled chat prompts (`tests/fixtures/chat_probes.jsonl`: skills, tool need,
//! easy/hard); this measures skill accuracy, tool-need AUC and easy/hard concordance on them.
//!
//! Not for: routing quality (the rest of `eval`). The probe file is evaluation only: no recipe
//! trains on it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::metrics::roc_auc;
use triage_core::classifier::{Classifier, ClassifierInput};

/// `triage probe` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// Classifier model directory or Hugging Face repo id.
    #[arg(long, default_value = "models/default")]
    pub model: String,
    /// JSON lines: `{"id", "prompt", "skills": [..], "tool_need": 0|1, "level": "easy"|"hard"}`.
    #[arg(long, default_value = "tests/fixtures/chat_probes.jsonl")]
    pub probes: PathBuf,
    /// Print one JSON object (with every probe's prediction).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Probe {
    #[serde(default)]
    pub id: String,
    pub prompt: String,
    pub skills: Vec<String>,
    pub tool_need: u8,
    pub level: String,
}

/// What the classifier said about one probe.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub id: String,
    pub top_skill: String,
    pub labelled: Vec<String>,
    pub difficulty: f32,
    pub tool_need: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub probes: usize,
    /// Share whose top skill is the labelled primary skill.
    pub skill_accuracy: f64,
    /// Share whose top skill is any labelled skill.
    pub skill_accuracy_any: f64,
    /// Primary-skill accuracy per labelled skill: (hits, probes).
    pub per_skill: std::collections::BTreeMap<String, (usize, usize)>,
    pub tool_auc: Option<f64>,
    /// Share of (easy, hard) pairs where the hard probe gets the higher difficulty.
    pub concordance: Option<f64>,
    /// The same over pairs whose easy probe is the longer text.
    pub concordance_easy_longer: Option<f64>,
    pub results: Vec<ProbeResult>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    Classifier(#[from] triage_core::classifier::ClassifierError),
}

pub fn read_probes(path: &Path) -> Result<Vec<Probe>, ProbeError> {
    let error = |message: String| ProbeError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| error(format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// Classifies every probe and scores the answers.
pub fn measure(classifier: &Classifier, probes: &[Probe]) -> Result<ProbeReport, ProbeError> {
    let names = classifier.skills();
    let mut results = Vec::with_capacity(probes.len());
    for probe in probes {
        let p = classifier.predict_one(&ClassifierInput::from_text(probe.prompt.clone()))?;
        results.push(ProbeResult {
            id: probe.id.clone(),
            top_skill: p.top_skill(names).to_string(),
            labelled: probe.skills.clone(),
            difficulty: p.difficulty,
            tool_need: p.tool_need,
        });
    }
    Ok(report(probes, results))
}

fn report(probes: &[Probe], results: Vec<ProbeResult>) -> ProbeReport {
    let n = probes.len().max(1) as f64;
    let mut per_skill = std::collections::BTreeMap::new();
    let (mut hits, mut hits_any) = (0, 0);
    for r in &results {
        let primary = r.labelled.first().cloned().unwrap_or_default();
        let hit = r.top_skill == primary;
        let entry: &mut (usize, usize) = per_skill.entry(primary).or_default();
        entry.0 += usize::from(hit);
        entry.1 += 1;
        hits += usize::from(hit);
        hits_any += usize::from(r.labelled.contains(&r.top_skill));
    }
    let tool_scores: Vec<f64> = results.iter().map(|r| r.tool_need as f64).collect();
    let tool_labels: Vec<bool> = probes.iter().map(|p| p.tool_need == 1).collect();
    ProbeReport {
        probes: probes.len(),
        skill_accuracy: hits as f64 / n,
        skill_accuracy_any: hits_any as f64 / n,
        per_skill,
        tool_auc: roc_auc(&tool_scores, &tool_labels),
        concordance: concordance(probes, &results, false),
        concordance_easy_longer: concordance(probes, &results, true),
        results,
    }
}

/// Over (easy, hard) pairs (only those whose easy text is longer, with `easy_longer`), the
/// share ordered right by difficulty; a tie counts half.
fn concordance(probes: &[Probe], results: &[ProbeResult], easy_longer: bool) -> Option<f64> {
    let level = |l: &'static str| {
        probes
            .iter()
            .zip(results)
            .filter(move |(p, _)| p.level == l)
    };
    let (mut right, mut pairs) = (0.0, 0usize);
    for (easy, e) in level("easy") {
        for (hard, h) in level("hard") {
            if easy_longer && easy.prompt.chars().count() <= hard.prompt.chars().count() {
                continue;
            }
            pairs += 1;
            right += match h.difficulty.partial_cmp(&e.difficulty) {
                Some(std::cmp::Ordering::Greater) => 1.0,
                Some(std::cmp::Ordering::Equal) => 0.5,
                _ => 0.0,
            };
        }
    }
    (pairs > 0).then(|| right / pairs as f64)
}

impl std::fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
        writeln!(f, "probes: {}", self.probes)?;
        writeln!(
            f,
            "skill accuracy (top skill = primary label): {:.3}; top skill among the labels: {:.3}",
            self.skill_accuracy, self.skill_accuracy_any
        )?;
        for (skill, (hits, n)) in &self.per_skill {
            writeln!(f, "  {skill:<10} {hits}/{n}")?;
        }
        writeln!(f, "tool-need AUC: {}", opt(self.tool_auc))?;
        writeln!(
            f,
            "easy/hard concordance: {} (pairs whose easy prompt is longer: {})",
            opt(self.concordance),
            opt(self.concordance_easy_longer)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(prompt: &str, level: &str, tool: u8, skill: &str) -> Probe {
        Probe {
            id: prompt.into(),
            prompt: prompt.into(),
            skills: vec![skill.into()],
            tool_need: tool,
            level: level.into(),
        }
    }

    fn result(difficulty: f32, tool_need: f32, top: &str, skill: &str) -> ProbeResult {
        ProbeResult {
            id: String::new(),
            top_skill: top.into(),
            labelled: vec![skill.into()],
            difficulty,
            tool_need,
        }
    }

    #[test]
    fn concordance_counts_ordered_pairs_and_the_long_easy_subset() {
        let probes = [
            probe("a much longer easy prompt", "easy", 0, "chat"),
            probe("short hard", "hard", 1, "math"),
            probe("easy", "easy", 0, "chat"),
        ];
        // The long easy prompt is rated harder than the hard one: 1 of 2 pairs right.
        let results = vec![
            result(2.0, 0.1, "chat", "chat"),
            result(1.0, 0.9, "code", "math"),
            result(0.0, 0.2, "chat", "chat"),
        ];
        let r = report(&probes, results);
        assert_eq!(r.concordance, Some(0.5));
        assert_eq!(r.concordance_easy_longer, Some(0.0));
        assert_eq!(r.tool_auc, Some(1.0));
        assert!((r.skill_accuracy - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.per_skill["math"], (0, 1));
    }

    #[test]
    fn the_shipped_probe_file_parses_and_is_balanced() {
        let probes = read_probes(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/chat_probes.jsonl"),
        )
        .unwrap();
        assert!(probes.len() >= 150);
        for level in ["easy", "hard"] {
            assert!(probes.iter().filter(|p| p.level == level).count() >= 50);
        }
        assert!(probes.iter().filter(|p| p.tool_need == 1).count() >= 20);
    }
}
