//! Pairwise outcomes (rows with an `opponent`, such as the Chatbot Arena battles): how often the
//! model the scorer predicts better won. A battle is two rows, one per side, read once (from the
//! side whose model name sorts first). Decided battles (a win and a loss) are measured; ties and
//! "both bad" say nothing about which model is better and are left out. Beside the scorer: the
//! model of higher mean ability with the prompt unread (θ alone) and a coin (50%).
//!
//! Not for: routing curves (`pair`, `multi`): a battle compares two models on one prompt and
//! says nothing of what either costs.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::data::prompt_text;
use super::scorer::{Scorer, predicted_quality, prompt_hash};
use super::{DataSummary, EvalArgs, EvalError, SeenInTraining};
use crate::train::TrainError;
use crate::train::data::for_each_row;

/// What `eval --battles` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BattleResults {
    /// Decided battles measured.
    pub decided: usize,
    /// Share of them won by the model the scorer predicts better (a predicted tie counts half).
    pub predicted: f64,
    /// Share won by the model of higher mean ability, the prompt unread.
    pub ability_only: f64,
    /// One standard error of a share near `predicted` over `decided` battles.
    pub standard_error: f64,
    /// Decided battles left out because a model has no θ in the scorer.
    pub unknown_model_battles: usize,
    /// Those models, by name.
    pub unknown_models: Vec<String>,
    /// Decided battles left out because the scorer was trained on their prompt (none with
    /// `--keep-seen`).
    pub seen_battles: usize,
}

/// One decided battle: `winner` beat `loser` on prompt `prompt` (an index into the texts).
struct Battle {
    prompt: usize,
    winner: String,
    loser: String,
}

/// The file's decided battles and what was read, before any prompt is scored.
struct Read {
    battles: Vec<Battle>,
    texts: Vec<String>,
    rows: usize,
    models: BTreeSet<String>,
}

fn read(args: &EvalArgs) -> Result<Read, EvalError> {
    let mut read = Read {
        battles: Vec::new(),
        texts: Vec::new(),
        rows: 0,
        models: BTreeSet::new(),
    };
    let mut text_index: HashMap<String, usize> = HashMap::new();
    for_each_row(&args.data, |_, row| {
        if !args.filters.iter().all(|f| f.keeps(row)) {
            return Ok(());
        }
        read.rows += 1;
        let name = |key: &str| match row.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(format!("`{key}` is missing or not a model name")),
        };
        let (model, opponent) = (name("model")?, name("opponent")?);
        read.models.insert(model.clone());
        read.models.insert(opponent.clone());
        let score = row
            .get("score")
            .and_then(Value::as_f64)
            .ok_or("`score` is missing or not a number")?;
        // Each battle has a row per side: read it from one side only.
        if model >= opponent || !(score == 0.0 || score == 1.0) {
            return Ok(());
        }
        let text = prompt_text(row)?.ok_or("`prompt` is missing")?;
        let next = read.texts.len();
        let prompt = *text_index.entry(text.clone()).or_insert(next);
        if prompt == next {
            read.texts.push(text);
        }
        let (winner, loser) = if score == 1.0 {
            (model, opponent)
        } else {
            (opponent, model)
        };
        read.battles.push(Battle {
            prompt,
            winner,
            loser,
        });
        Ok(())
    })
    .map_err(row_error)?;
    Ok(read)
}

/// The reader's error as eval reports a bad row (`EvalError::Row`) or file: it names the path
/// once.
fn row_error(error: TrainError) -> EvalError {
    match error {
        TrainError::Data {
            path,
            line,
            message,
        } => EvalError::Row {
            file: path.display().to_string(),
            line,
            message,
        },
        other => EvalError::Data(other.to_string()),
    }
}

/// Measures the decided battles of `args.data` that `scorer` was not trained on.
pub(super) fn evaluate(
    args: &EvalArgs,
    scorer: &dyn Scorer,
) -> Result<(BattleResults, DataSummary, Vec<String>), EvalError> {
    let read = read(args)?;
    // θ by the file's model names, through the training recipe's aliases where needed.
    let known = scorer.known_abilities();
    let aliases = scorer.aliases();
    let abilities: HashMap<&String, &Vec<f32>> = read
        .models
        .iter()
        .filter_map(|name| {
            let theta = known.get(name).or_else(|| known.get(aliases.get(name)?))?;
            Some((name, theta))
        })
        .collect();
    let seen = scorer.training_prompts();
    let is_seen = |b: &Battle| {
        seen.as_ref()
            .is_some_and(|s| s.contains(&prompt_hash(&read.texts[b.prompt])))
    };
    let mut unknown_models = BTreeSet::new();
    let mut seen_prompts = BTreeSet::new();
    let (mut unknown_model_battles, mut seen_battles) = (0, 0);
    let mut measured = Vec::new();
    for battle in &read.battles {
        let missing: Vec<&String> = [&battle.winner, &battle.loser]
            .into_iter()
            .filter(|m| !abilities.contains_key(m))
            .collect();
        if !missing.is_empty() {
            unknown_models.extend(missing.into_iter().cloned());
            unknown_model_battles += 1;
            continue;
        }
        if is_seen(battle) {
            seen_prompts.insert(battle.prompt);
            if !args.keep_seen {
                seen_battles += 1;
                continue;
            }
        }
        measured.push(battle);
    }
    if measured.is_empty() {
        return Err(EvalError::Data(format!(
            "no decided battle to measure in {} ({} decided: {unknown_model_battles} with a model the scorer has no θ for, {seen_battles} on prompts it was trained on)",
            args.data.display(),
            read.battles.len()
        )));
    }

    let prompts: BTreeSet<usize> = measured.iter().map(|b| b.prompt).collect();
    let prompts: Vec<usize> = prompts.into_iter().collect();
    let texts: Vec<String> = prompts.iter().map(|&p| read.texts[p].clone()).collect();
    let features: HashMap<usize, _> = prompts
        .iter()
        .copied()
        .zip(scorer.features(&texts))
        .collect();
    let share = |better: &dyn Fn(&Battle) -> f64| {
        measured.iter().map(|b| better(b)).sum::<f64>() / measured.len() as f64
    };
    let predicted = share(&|b| {
        let f = &features[&b.prompt];
        winner_credit(
            predicted_quality(abilities[&b.winner], f),
            predicted_quality(abilities[&b.loser], f),
        )
    });
    let ability_only = share(&|b| {
        winner_credit(
            mean_ability(abilities[&b.winner]),
            mean_ability(abilities[&b.loser]),
        )
    });
    let decided = measured.len();
    let results = BattleResults {
        decided,
        predicted,
        ability_only,
        standard_error: (predicted * (1.0 - predicted) / decided as f64).sqrt(),
        unknown_model_battles,
        unknown_models: unknown_models.into_iter().collect(),
        seen_battles,
    };
    let mut warnings = Vec::new();
    if unknown_model_battles > 0 {
        warnings.push(format!(
            "{unknown_model_battles} decided battles left out: no θ for {}",
            results.unknown_models.join(", ")
        ));
    }
    let summary = DataSummary {
        file: args.data.display().to_string(),
        rows: read.rows,
        prompts: read.texts.len(),
        models: read.models.len(),
        compared_prompts: read.texts.len(),
        calibration_prompts: 0,
        held_out_prompts: prompts.len(),
        score_range: (0.0, 1.0),
        seen_in_training: seen.as_ref().map(|_| SeenInTraining {
            calibration: 0,
            held_out: seen_prompts.len(),
            excluded: !args.keep_seen,
        }),
    };
    Ok((results, summary, warnings))
}

impl fmt::Display for BattleResults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "decided battles measured: {} (left out: {} on prompts seen in training, {} with a model without θ)",
            self.decided, self.seen_battles, self.unknown_model_battles
        )?;
        writeln!(f, "won by the model …")?;
        writeln!(
            f,
            "  triage predicts better   {:5.1}%  (± {:.1})",
            100.0 * self.predicted,
            100.0 * self.standard_error
        )?;
        writeln!(
            f,
            "  of higher mean ability   {:5.1}%",
            100.0 * self.ability_only
        )?;
        writeln!(f, "  a coin                    50.0%")
    }
}

/// A model's mean ability: its θ averaged over the skills, the prompt unread.
pub fn mean_ability(theta: &[f32]) -> f64 {
    theta.iter().map(|&t| f64::from(t)).sum::<f64>() / theta.len().max(1) as f64
}

/// A battle's credit to a prediction: 1 when the winner is predicted better, ½ on a predicted
/// tie, 0 otherwise. Training's dev metric counts the same way.
pub fn winner_credit(winner: f64, loser: f64) -> f64 {
    match winner.partial_cmp(&loser) {
        Some(std::cmp::Ordering::Greater) => 1.0,
        Some(std::cmp::Ordering::Less) => 0.0,
        _ => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_predicted_tie_earns_half_a_battle() {
        assert_eq!(winner_credit(0.7, 0.4), 1.0);
        assert_eq!(winner_credit(0.4, 0.7), 0.0);
        assert_eq!(winner_credit(0.5, 0.5), 0.5);
    }
}
