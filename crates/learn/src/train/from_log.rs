//! `train --from-log`: the outcome log's graded answers, written out as one more outcome file in
//! the shared format, so the trainer reads them exactly as it reads the public data.
//!
//! Each answered request with text becomes one row `(prompt, model, score)` where something is
//! known of its quality, in this order of trust: the client's feedback (mean of its scores),
//! else the judges' grades (mean), else an implicit failure (`truncated` or
//! `invalid_tool_json`: score 0). Answers with none of these are left out: an ungraded answer
//! says nothing. Models are named by their catalog id, so a model new to the log gets its own
//! θ with no code change, and the router uses it for that id.
//!
//! A client's preference between two answers to the same prompt becomes a battle: two rows
//! with an `opponent` (one from each side, as the Chatbot Arena file has them), which training
//! reads through its Bradley–Terry loss rather than as grades. A preference between two answers
//! of the same model says nothing about which model to route to and is counted, not written.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use super::TrainError;
use triage_core::classifier::render_conversation;
use triage_gateway::outcomes::signals::{INVALID_TOOL_JSON, TRUNCATED};
use triage_gateway::outcomes::store::{Paired, Verdicts};
use triage_gateway::outcomes::{PairResult, Target};

/// The `source` of exported rows.
pub const SOURCE: &str = "outcome_log";

/// What was taken from the log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogExport {
    #[serde(skip)]
    pub path: PathBuf,
    /// Answered requests with text in the log (since the cut-off).
    pub answered: usize,
    /// Rows written, by where their score came from (`preference`: two rows per preference).
    pub by_label: BTreeMap<&'static str, usize>,
    pub models: BTreeSet<String>,
    /// Preferences left out because both answers came from the same model.
    pub same_model_preferences: usize,
}

impl LogExport {
    pub fn rows(&self) -> usize {
        self.by_label.values().sum()
    }
}

/// Reads the log (`PATH_OR_URL`) and writes its graded answers to
/// `dir/from_log-<pid>-<n>.jsonl`: one file per run, so two retrains sharing a cache directory
/// do not read each other's.
pub fn export(log: &str, since_ms: i64, dir: &Path) -> Result<LogExport, TrainError> {
    let target = Target::parse(log);
    let (verdicts, preferences) = target
        .open_read()
        .and_then(|mut store| Ok((store.verdicts(since_ms)?, store.preferences(since_ms)?)))
        .map_err(|e| TrainError::File {
            path: PathBuf::from(target.describe()),
            message: format!("cannot read the outcome log: {e}"),
        })?;
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("from_log-{}-{run}.jsonl", std::process::id()));
    let io = |e: std::io::Error| TrainError::File {
        path: path.clone(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io)?);
    let mut export = LogExport {
        answered: verdicts.len(),
        ..LogExport::default()
    };
    for v in &verdicts {
        let (Some((score, label)), Some(prompt)) = (score_of(v), classifier_text(&v.prompt)) else {
            continue;
        };
        let row = json!({
            "source": SOURCE,
            "prompt_id": v.id,
            "prompt": prompt,
            "model": v.model,
            "score": score,
            "label": "score_0_1",
            "subset": label,
        });
        writeln!(file, "{row}").map_err(io)?;
        *export.by_label.entry(label).or_default() += 1;
        export.models.insert(v.model.clone());
    }
    for p in &preferences {
        if p.model == p.opponent_model {
            export.same_model_preferences += 1;
            continue;
        }
        let Some(rows) = battle_rows(p) else {
            continue;
        };
        for row in rows {
            writeln!(file, "{row}").map_err(io)?;
        }
        *export.by_label.entry("preference").or_default() += 2;
        export.models.insert(p.model.clone());
        export.models.insert(p.opponent_model.clone());
    }
    file.flush().map_err(io)?;
    export.path = path;
    Ok(export)
}

/// The score of a logged answer and where it came from, if anything is known.
pub fn score_of(v: &Verdicts) -> Option<(f64, &'static str)> {
    if let Some(score) = v.feedback {
        return Some((score.clamp(0.0, 1.0), "feedback"));
    }
    if let Some(score) = v.judged {
        return Some((score.clamp(0.0, 1.0), "judge"));
    }
    let failed = v
        .signals
        .split(',')
        .any(|s| s == TRUNCATED || s == INVALID_TOOL_JSON);
    failed.then_some((0.0, "implicit"))
}

/// A preference as the two rows of one battle in the shared format, one from each side (score:
/// win 1, tie 0.5, both bad 0.25, loss 0); `None` without a known result or prompt text.
pub fn battle_rows(p: &Paired) -> Option<[serde_json::Value; 2]> {
    let result = p.result?;
    let prompt = classifier_text(&p.prompt)?;
    let side = |model: &str, opponent: &str, result: PairResult| {
        json!({
            "source": SOURCE,
            "prompt_id": p.request_id,
            "battle_id": format!("{}/{}", p.request_id, p.opponent_id),
            "prompt": prompt,
            "model": model,
            "opponent": opponent,
            "score": result.score(),
            "label": result.as_str(),
            "subset": "preference",
        })
    };
    Some([
        side(&p.model, &p.opponent_model, result),
        side(&p.opponent_model, &p.model, result.mirrored()),
    ])
}

/// The text the classifier saw for a logged `{"system"?, "messages"}`: the same rendering as
/// `ClassifierInput::from_chat`, with a top-level (Anthropic) system prompt put first.
pub fn classifier_text(prompt: &str) -> Option<String> {
    let text = render_conversation(&triage_gateway::outcomes::logged_messages(prompt)?);
    (!text.trim().is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(signals: &str, feedback: Option<f64>, judged: Option<f64>) -> Verdicts {
        Verdicts {
            signals: signals.into(),
            feedback,
            judged,
            ..Verdicts::default()
        }
    }

    #[test]
    fn feedback_beats_the_judge_and_the_judge_beats_signals() {
        assert_eq!(
            score_of(&verdicts("truncated", Some(1.0), Some(0.2))),
            Some((1.0, "feedback"))
        );
        assert_eq!(
            score_of(&verdicts("truncated", None, Some(0.2))),
            Some((0.2, "judge"))
        );
        assert_eq!(
            score_of(&verdicts("upstream_error,invalid_tool_json", None, None)),
            Some((0.0, "implicit"))
        );
        assert_eq!(score_of(&verdicts("upstream_error", None, None)), None);
        assert_eq!(score_of(&verdicts("", None, None)), None);
    }

    #[test]
    fn a_preference_is_one_battle_seen_from_both_sides() {
        let paired = |result| Paired {
            request_id: "r1".into(),
            model: "a/big".into(),
            prompt: json!({"messages": [{"role": "user", "content": "Sort this list"}]})
                .to_string(),
            opponent_id: "r2".into(),
            opponent_model: "b/small".into(),
            result,
        };
        let [mine, theirs] = battle_rows(&paired(Some(PairResult::Loss))).unwrap();
        assert_eq!(
            (
                &mine["model"],
                &mine["opponent"],
                &mine["score"],
                &mine["label"]
            ),
            (
                &json!("a/big"),
                &json!("b/small"),
                &json!(0.0),
                &json!("loss")
            )
        );
        assert_eq!(
            (&theirs["model"], &theirs["opponent"], &theirs["score"]),
            (&json!("b/small"), &json!("a/big"), &json!(1.0))
        );
        assert_eq!(mine["prompt"], "Sort this list");
        let [both_bad, other] = battle_rows(&paired(Some(PairResult::BothBad))).unwrap();
        assert_eq!(
            (&both_bad["score"], &other["score"]),
            (&json!(0.25), &json!(0.25))
        );
        assert!(battle_rows(&paired(None)).is_none());
    }

    #[test]
    fn logged_prompts_render_as_the_classifier_saw_them() {
        let chat = json!({"messages": [{"role": "user", "content": "What is 2+2?"}]});
        assert_eq!(
            classifier_text(&chat.to_string()).as_deref(),
            Some("What is 2+2?")
        );
        let messages = json!({"system": [{"type": "text", "text": "Be terse."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]});
        let text = classifier_text(&messages.to_string()).unwrap();
        assert!(text.starts_with("system: Be terse."), "{text}");
        assert!(text.ends_with("Hi"), "{text}");
        assert_eq!(classifier_text("not json"), None);
    }
}
