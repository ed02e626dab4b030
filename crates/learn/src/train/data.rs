//! Training data: outcome and tool-need files in the shared format, read into one list of
//! prompts, each with its outcome rows, tool-need label and weak skill label, and assigned to the
//! train or dev split.
//!
//! What happens here, in order: held-out files are read for their prompt stems only; each
//! training file's rows are grouped by prompt text (repeats merged and counted); prompts whose
//! stem is in a held-out file are removed and counted; prompts already seen in an earlier file
//! are merged into it; per-file caps keep a stable-hash sample; extra "needs no tool" prompts are
//! drawn from the outcome files; weak skill labels come from the recipe's rules; the split is a
//! stable hash of the stem, so near-duplicates land on the same side.
//!
//! Not for: tokenizing (`fit`) or deciding what a score means beyond mapping it to [0, 1].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::TrainError;
use super::recipe::{FileKind, FileSpec, Recipe, SkillRule, level_value};
use crate::eval::data::prompt_text;

/// One training prompt.
#[derive(Debug, Clone)]
pub struct PromptRecord {
    /// The text the classifier sees (a conversation already rendered).
    pub text: String,
    pub source: String,
    pub subset: String,
    /// Index into the recipe's files of the file it came from first.
    pub file: usize,
    /// Weight of this prompt in the outcome loss.
    pub weight: f32,
    /// Weight of this prompt in the skill, tool-need and level losses.
    pub label_weight: f32,
    /// (model index, score in [0, 1]).
    pub outcomes: Vec<(u32, f32)>,
    /// 1 needs a tool, 0 does not; `None` unknown.
    pub tool: Option<f32>,
    /// Weak skill label (index into the recipe's skills).
    pub skill: Option<usize>,
    /// 1 hard, 0 easy (labelled prompts only).
    pub level: Option<f32>,
    /// Pairwise outcomes (model a, model b, P(a beats b)): battles, preferences.
    pub pairs: Vec<(u32, u32, f32)>,
    pub dev: bool,
}

/// Everything read, plus the accounting that goes into `triage.json`.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub prompts: Vec<PromptRecord>,
    /// θ rows: model names as written in `triage.json` (after aliases), sorted.
    pub models: Vec<String>,
    /// Mean score of each model (as named in the data) over all rows of each outcome file,
    /// before any removal: the file's own benchmark accuracy.
    pub model_means: BTreeMap<String, BTreeMap<String, f64>>,
    /// Graded answers per model (after aliases) in the outcome log (`--from-log`), counted
    /// before a logged prompt merges with the same prompt of a public file.
    pub log_graded: BTreeMap<String, usize>,
    pub report: DataReport,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DataReport {
    pub files: Vec<FileReport>,
    /// Prompts per held-out file, read only to remove overlaps.
    pub held_out: BTreeMap<String, usize>,
    pub extra_tool_negatives: usize,
    /// Weakly labelled prompts per skill.
    pub skill_labels: BTreeMap<String, usize>,
    pub train_prompts: usize,
    pub dev_prompts: usize,
    pub train_outcome_rows: usize,
    pub dev_outcome_rows: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FileReport {
    pub file: String,
    pub rows: usize,
    /// Rows without a score (`null`, or `NaN` as Python writes it), skipped.
    pub missing_scores: usize,
    /// Distinct prompt texts in the file.
    pub prompts: usize,
    /// Prompts (by id, or by row in the tool-need file) whose text repeats an earlier one's.
    pub repeated_prompts: usize,
    /// Prompts removed because their stem is in a held-out file, per held-out file.
    pub removed_overlap: BTreeMap<String, usize>,
    /// Prompts also present in an earlier training file (merged into it).
    pub merged_with_earlier_file: usize,
    /// Prompts dropped by `max_prompts`.
    pub capped: usize,
    /// Rows dropped by the file's filters (`positive_contains`).
    pub filtered: usize,
    pub kept: usize,
}

/// A prompt while its file is being read.
struct Pending {
    text: String,
    source: String,
    subset: String,
    outcomes: Vec<(String, f64)>,
    /// (model, opponent, P(model beats opponent)).
    pairs: Vec<(String, String, f64)>,
    tool: Option<f32>,
    /// An explicit skill name (labelled files), used before the recipe's rules.
    skill: Option<String>,
    level: Option<f32>,
}

impl Dataset {
    pub fn load(recipe: &Recipe, data_dir: &Path) -> Result<Dataset, TrainError> {
        let mut report = DataReport::default();
        let held_out = read_held_out(recipe, data_dir, &mut report)?;
        let mut prompts: Vec<PromptRecord> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let mut model_rows: Vec<Vec<(String, f64)>> = Vec::new();
        let mut pair_rows: Vec<Vec<(String, String, f64)>> = Vec::new();
        let mut explicit_skills: Vec<Option<String>> = Vec::new();
        let mut model_means = BTreeMap::new();
        let mut log_graded: BTreeMap<String, usize> = BTreeMap::new();
        for (file_index, spec) in recipe.files.iter().enumerate() {
            let path = data_dir.join(&spec.path);
            let (pending, mut file_report) = match spec.kind {
                FileKind::Outcomes => read_outcomes(&path, spec, data_dir, &recipe.exclude_models)?,
                FileKind::ToolNeed => read_tool_need(&path, spec)?,
                FileKind::Labels => read_labels(&path, spec)?,
            };
            if spec.kind == FileKind::Outcomes {
                model_means.insert(spec.path.clone(), mean_by_model(&pending));
            }
            file_report.file = spec.path.clone();
            let mut fresh = Vec::new();
            for p in pending {
                if let Some(held) = held_out
                    .get(&stem_key(&p.text))
                    .filter(|_| !spec.keep_held_out)
                {
                    *file_report.removed_overlap.entry(held.clone()).or_default() += 1;
                    continue;
                }
                if p.source == super::from_log::SOURCE {
                    for (model, _) in &p.outcomes {
                        *log_graded.entry(alias(recipe, model)).or_default() += 1;
                    }
                }
                let key = normalise(&p.text);
                if let Some(&earlier) = by_key.get(&key) {
                    file_report.merged_with_earlier_file += 1;
                    model_rows[earlier].extend(p.outcomes);
                    pair_rows[earlier].extend(p.pairs);
                    if prompts[earlier].tool.is_none() {
                        prompts[earlier].tool = p.tool;
                    }
                    if prompts[earlier].level.is_none() {
                        prompts[earlier].level = p.level;
                    }
                    if explicit_skills[earlier].is_none() {
                        explicit_skills[earlier] = p.skill;
                    }
                    continue;
                }
                fresh.push((key, p));
            }
            if let Some(cap) = spec.max_prompts
                && fresh.len() > cap
            {
                fresh.sort_by_cached_key(|(key, _)| stable_hash("cap", key));
                file_report.capped = fresh.len() - cap;
                fresh.truncate(cap);
            }
            file_report.kept = fresh.len();
            for (key, p) in fresh {
                by_key.insert(key, prompts.len());
                model_rows.push(p.outcomes);
                pair_rows.push(p.pairs);
                explicit_skills.push(p.skill);
                prompts.push(PromptRecord {
                    dev: stable_hash("split", &stem_key(&p.text))
                        < fraction_threshold(recipe.dev_fraction),
                    text: p.text,
                    source: p.source,
                    subset: p.subset,
                    file: file_index,
                    weight: spec.weight as f32,
                    label_weight: spec.label_weight as f32,
                    outcomes: Vec::new(),
                    tool: p.tool,
                    skill: None,
                    level: p.level,
                    pairs: Vec::new(),
                });
            }
            report.files.push(file_report);
        }
        let models = intern_models(recipe, &mut prompts, model_rows, pair_rows);
        report.extra_tool_negatives = add_tool_negatives(recipe, &mut prompts);
        label_skills(recipe, &mut prompts, &explicit_skills, &mut report);
        for p in &prompts {
            if p.dev {
                report.dev_prompts += 1;
                report.dev_outcome_rows += p.outcomes.len();
            } else {
                report.train_prompts += 1;
                report.train_outcome_rows += p.outcomes.len();
            }
        }
        if report.train_prompts == 0 {
            return Err(TrainError::Invalid(
                "no training prompts left after overlap removal".into(),
            ));
        }
        Ok(Dataset {
            prompts,
            models,
            model_means,
            log_graded,
            report,
        })
    }
}

/// Stems of every held-out prompt, mapped to the file's name.
fn read_held_out(
    recipe: &Recipe,
    data_dir: &Path,
    report: &mut DataReport,
) -> Result<HashMap<String, String>, TrainError> {
    let mut stems = HashMap::new();
    for name in &recipe.held_out {
        let path = data_dir.join(name);
        let mut texts = BTreeSet::new();
        for_each_row(&path, |_, row| {
            if let Some(text) = prompt_text(row)? {
                texts.insert(stem_key(&text));
            }
            Ok(())
        })?;
        report.held_out.insert(name.clone(), texts.len());
        for stem in texts {
            stems.entry(stem).or_insert_with(|| name.clone());
        }
    }
    Ok(stems)
}

fn read_outcomes(
    path: &Path,
    spec: &FileSpec,
    data_dir: &Path,
    exclude: &[String],
) -> Result<(Vec<Pending>, FileReport), TrainError> {
    let texts = match &spec.prompts {
        Some(name) => read_prompt_texts(&data_dir.join(name))?,
        None => HashMap::new(),
    };
    let mut report = FileReport::default();
    let mut pending: Vec<Pending> = Vec::new();
    let mut by_text: HashMap<String, usize> = HashMap::new();
    let mut ids: std::collections::HashSet<String> = std::collections::HashSet::new();
    for_each_row(path, |_, row| {
        report.rows += 1;
        let source = required_str(row, "source")?;
        let model = required_str(row, "model")?;
        let opponent = row.get("opponent").and_then(Value::as_str);
        // A held-back model is held back from the public data; the deployment's own log of it
        // is what a retrain learns it from, so the log's rows always count.
        if source != super::from_log::SOURCE
            && exclude
                .iter()
                .any(|m| m == model || Some(m.as_str()) == opponent)
        {
            return Ok(());
        }
        if row.get("score") == Some(&Value::Null) {
            report.missing_scores += 1;
            return Ok(());
        }
        let score = row
            .get("score")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite())
            .ok_or("`score` is missing or not a finite number")?;
        if let Some(label) = row.get("label").and_then(Value::as_str)
            && ["correct", "score_0_1"].contains(&label)
            && !(0.0..=1.0).contains(&score)
        {
            return Err(format!("label {label} with score {score} outside [0, 1]"));
        }
        let id = row.get("prompt_id").map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let text = match prompt_text(row)? {
            Some(text) => text,
            None => {
                let id = id.as_deref().ok_or("no `prompt` and no `prompt_id`")?;
                texts
                    .get(id)
                    .cloned()
                    .ok_or_else(|| format!("prompt_id {id:?} is not in the prompts file"))?
            }
        };
        let key = normalise(&text);
        let seen_text = by_text.contains_key(&key);
        let index = *by_text.entry(key).or_insert_with(|| {
            pending.push(Pending {
                text,
                source: source.to_string(),
                subset: row
                    .get("subset")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                outcomes: Vec::new(),
                pairs: Vec::new(),
                tool: None,
                skill: None,
                level: None,
            });
            pending.len() - 1
        });
        if let Some(id) = id
            && ids.insert(id)
            && seen_text
        {
            report.repeated_prompts += 1;
        }
        match row.get("opponent").and_then(Value::as_str) {
            // A battle: the score is this model's vote against the opponent (win 1, tie 0.5,
            // both bad 0.25, loss 0); "both bad" says nothing about which is better.
            Some(opponent) => {
                let p = if score == 0.25 {
                    0.5
                } else {
                    score.clamp(0.0, 1.0)
                };
                pending[index]
                    .pairs
                    .push((model.to_string(), opponent.to_string(), p));
            }
            None => pending[index].outcomes.push((model.to_string(), score)),
        }
        Ok(())
    })?;
    normalise_scores(&mut pending);
    report.prompts = pending.len();
    Ok((pending, report))
}

/// `(min(0, min s), max(1, max s))`: the range a file's scores are mapped from onto [0, 1].
pub fn score_range(scores: impl Iterator<Item = f64>) -> (f64, f64) {
    scores.fold((0.0, 1.0), |(lo, hi), s| (lo.min(s), hi.max(s)))
}

/// Maps a file's scores to [0, 1]: `(s − lo) / (hi − lo)`, `lo = min(0, min s)`,
/// `hi = max(1, max s)`; 0/1 and [0, 1] scores are unchanged, a 1–10 grade becomes grade / 10.
fn normalise_scores(pending: &mut [Pending]) {
    let (lo, hi) = score_range(pending.iter().flat_map(|p| p.outcomes.iter().map(|o| o.1)));
    for p in pending {
        for outcome in &mut p.outcomes {
            outcome.1 = (outcome.1 - lo) / (hi - lo);
        }
    }
}

fn mean_by_model(pending: &[Pending]) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for (model, score) in pending.iter().flat_map(|p| &p.outcomes) {
        let entry = sums.entry(model.clone()).or_default();
        entry.0 += score;
        entry.1 += 1;
    }
    sums.into_iter()
        .map(|(m, (sum, n))| (m, sum / n as f64))
        .collect()
}

fn read_tool_need(path: &Path, spec: &FileSpec) -> Result<(Vec<Pending>, FileReport), TrainError> {
    let sources = &spec.sources;
    let mut report = FileReport::default();
    let mut pending: Vec<Pending> = Vec::new();
    let mut by_text: HashMap<String, usize> = HashMap::new();
    for_each_row(path, |_, row| {
        let source = required_str(row, "source")?;
        if !sources.is_empty() && !sources.iter().any(|s| s == source) {
            return Ok(());
        }
        report.rows += 1;
        let text = prompt_text(row)?.ok_or("`prompt` is missing")?;
        let needs = match row.get("needs_tool") {
            Some(Value::Bool(b)) => *b,
            Some(v) if v.as_f64() == Some(1.0) => true,
            Some(v) if v.as_f64() == Some(0.0) => false,
            _ => return Err("`needs_tool` is missing or not 0/1".into()),
        };
        if needs && !spec.positive_contains.is_empty() {
            let lower = text.to_lowercase();
            if !spec
                .positive_contains
                .iter()
                .any(|w| lower.contains(w.as_str()))
            {
                report.filtered += 1;
                return Ok(());
            }
        }
        let label = if needs { 1.0 } else { 0.0 };
        let text = if needs && spec.strip_greetings {
            without_greeting(&text).to_string()
        } else {
            text
        };
        match by_text.get(&normalise(&text)) {
            Some(&i) => {
                report.repeated_prompts += 1;
                // A prompt labelled both ways counts as needing a tool: the safer side.
                let tool = pending[i].tool.get_or_insert(label);
                *tool = tool.max(label);
            }
            None => {
                by_text.insert(normalise(&text), pending.len());
                pending.push(Pending {
                    text,
                    source: source.to_string(),
                    subset: String::new(),
                    outcomes: Vec::new(),
                    pairs: Vec::new(),
                    tool: Some(label),
                    skill: None,
                    level: None,
                });
            }
        }
        Ok(())
    })?;
    report.prompts = pending.len();
    Ok((pending, report))
}

/// `text` without a leading greeting sentence ("Hi!", "Hey chatbot,", "Hello there."), when
/// something follows it.
fn without_greeting(text: &str) -> &str {
    let lower = text.trim_start().to_lowercase();
    let greets = ["hi", "hello", "hey"].iter().any(|g| {
        lower
            .strip_prefix(g)
            .is_some_and(|rest| rest.starts_with(|c: char| !c.is_alphanumeric()))
    });
    if !greets {
        return text;
    }
    let trimmed = text.trim_start();
    match trimmed.find(['!', '.', '?', ',']) {
        Some(end) if end < 40 && !trimmed[end + 1..].trim().is_empty() => {
            trimmed[end + 1..].trim_start()
        }
        _ => text,
    }
}

/// A labelled prompt file (`FileKind::Labels`).
fn read_labels(path: &Path, spec: &FileSpec) -> Result<(Vec<Pending>, FileReport), TrainError> {
    let default_level = spec
        .level
        .as_deref()
        .map(level_value)
        .transpose()
        .map_err(|message| TrainError::Invalid(format!("{}: {message}", spec.path)))?;
    let mut report = FileReport::default();
    let mut pending: Vec<Pending> = Vec::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for_each_row(path, |_, row| {
        report.rows += 1;
        let text = prompt_text(row)?.ok_or("`prompt` is missing")?;
        if !seen.insert(normalise(&text)) {
            report.repeated_prompts += 1;
            return Ok(());
        }
        let field = |name: &str| row.get(name).and_then(Value::as_str).map(str::to_string);
        let skill = row
            .get("skills")
            .and_then(Value::as_array)
            .and_then(|s| s.first())
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| field("skill"));
        let tool = match row.get("tool_need") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_f64().ok_or("`tool_need` is not 0/1")? as f32),
        };
        let level = match row.get("level").and_then(Value::as_str) {
            Some(text) => Some(level_value(text)?),
            None => default_level,
        };
        pending.push(Pending {
            text,
            source: field("source").unwrap_or_else(|| spec.path.clone()),
            subset: field("topic").unwrap_or_default().to_lowercase(),
            outcomes: Vec::new(),
            pairs: Vec::new(),
            tool,
            skill,
            level,
        });
        Ok(())
    })?;
    report.prompts = pending.len();
    Ok((pending, report))
}

fn read_prompt_texts(path: &Path) -> Result<HashMap<String, String>, TrainError> {
    let mut texts = HashMap::new();
    for_each_row(path, |_, row| {
        let id = required_str(row, "prompt_id")?;
        let text = prompt_text(row)?.ok_or("`prompt` is missing")?;
        texts.insert(id.to_string(), text);
        Ok(())
    })?;
    Ok(texts)
}

/// The θ row a model's data trains: its name in the recipe's `[aliases]`, or its own.
fn alias(recipe: &Recipe, name: &str) -> String {
    recipe
        .aliases
        .get(name)
        .cloned()
        .unwrap_or_else(|| name.to_string())
}

/// Assigns θ rows: every model name (after aliases), sorted.
fn intern_models(
    recipe: &Recipe,
    prompts: &mut [PromptRecord],
    model_rows: Vec<Vec<(String, f64)>>,
    pair_rows: Vec<Vec<(String, String, f64)>>,
) -> Vec<String> {
    let alias = |name: &str| alias(recipe, name);
    let names: BTreeSet<String> = model_rows
        .iter()
        .flatten()
        .map(|(m, _)| alias(m))
        .chain(
            pair_rows
                .iter()
                .flatten()
                .flat_map(|(a, b, _)| [alias(a), alias(b)]),
        )
        .collect();
    let models: Vec<String> = names.into_iter().collect();
    let index: HashMap<&str, u32> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i as u32))
        .collect();
    for (prompt, rows) in prompts.iter_mut().zip(&model_rows) {
        prompt.outcomes = rows
            .iter()
            .map(|(m, s)| (index[alias(m).as_str()], *s as f32))
            .collect();
    }
    for (prompt, rows) in prompts.iter_mut().zip(&pair_rows) {
        prompt.pairs = rows
            .iter()
            .map(|(a, b, p)| {
                (
                    index[alias(a).as_str()],
                    index[alias(b).as_str()],
                    *p as f32,
                )
            })
            .collect();
    }
    models
}

/// Marks a seeded sample of outcome-file prompts as "needs no tool": the tool-need file's own
/// negatives are few.
fn add_tool_negatives(recipe: &Recipe, prompts: &mut [PromptRecord]) -> usize {
    let salt = format!("negatives:{}", recipe.seed);
    let mut added = 0;
    for spec in recipe.files.iter().filter(|f| f.kind == FileKind::ToolNeed) {
        let mut candidates: Vec<usize> = (0..prompts.len())
            .filter(|&i| {
                let p = &prompts[i];
                let graded = !p.outcomes.is_empty() || !p.pairs.is_empty();
                p.tool.is_none()
                    && if spec.negative_sources.is_empty() {
                        graded
                    } else {
                        spec.negative_sources.contains(&p.source)
                    }
            })
            .collect();
        candidates.sort_by_cached_key(|&i| stable_hash(&salt, &prompts[i].text));
        candidates.truncate(spec.extra_negatives);
        for &i in &candidates {
            prompts[i].tool = Some(0.0);
        }
        added += candidates.len();
    }
    added
}

fn label_skills(
    recipe: &Recipe,
    prompts: &mut [PromptRecord],
    explicit: &[Option<String>],
    report: &mut DataReport,
) {
    let tool_use = recipe.skills.iter().position(|s| s == "tool_use");
    let index_of = |name: &str| recipe.skills.iter().position(|s| s == name);
    for (prompt, explicit) in prompts.iter_mut().zip(explicit) {
        let lower = prompt.text.to_lowercase();
        let rule = recipe
            .skill_rules
            .iter()
            .find(|rule| rule_matches(rule, prompt, &lower));
        if prompt.level.is_none() {
            // Rule levels were checked when the recipe was read.
            prompt.level = rule
                .and_then(|r| r.level.as_deref())
                .and_then(|level| level_value(level).ok());
        }
        prompt.skill = explicit
            .as_deref()
            .and_then(index_of)
            .or_else(|| rule.and_then(|rule| index_of(&rule.skill)))
            .or(if recipe.tool_positives_skill && prompt.tool == Some(1.0) {
                tool_use
            } else {
                None
            });
        if let Some(skill) = prompt.skill {
            *report
                .skill_labels
                .entry(recipe.skills[skill].clone())
                .or_default() += 1;
        }
    }
}

fn rule_matches(rule: &SkillRule, prompt: &PromptRecord, lower: &str) -> bool {
    rule.source.as_ref().is_none_or(|s| *s == prompt.source)
        && (rule.subset.is_empty()
            || rule
                .subset
                .iter()
                .any(|s| prompt.subset.starts_with(s.as_str())))
        && (rule.subset_contains.is_empty()
            || rule
                .subset_contains
                .iter()
                .any(|s| prompt.subset.contains(s.as_str())))
        && (rule.contains.is_empty() || rule.contains.iter().any(|c| lower.contains(c.as_str())))
        && (rule.starts_with.is_empty()
            || rule
                .starts_with
                .iter()
                .any(|c| lower.starts_with(c.as_str())))
        && rule
            .min_chars
            .is_none_or(|n| prompt.text.chars().count() >= n)
        && rule
            .max_chars
            .is_none_or(|n| prompt.text.chars().count() <= n)
}

/// Calls `each(line_number, row)` for every non-blank line of a JSON-lines file, plain or gzip
/// (told apart by the magic bytes). Errors name the file and the line.
pub fn for_each_row(
    path: &Path,
    mut each: impl FnMut(usize, &Map<String, Value>) -> Result<(), String>,
) -> Result<(), TrainError> {
    let file_error = |message: String| TrainError::File {
        path: path.to_path_buf(),
        message,
    };
    let mut file = File::open(path).map_err(|e| file_error(e.to_string()))?;
    let mut magic = [0u8; 2];
    let gzip = file
        .read(&mut magic)
        .map_err(|e| file_error(e.to_string()))?
        == 2
        && magic == [0x1f, 0x8b];
    let file = File::open(path).map_err(|e| file_error(e.to_string()))?;
    let reader: Box<dyn BufRead> = if gzip {
        Box::new(BufReader::new(MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let line_error = |line: usize, message: String| TrainError::Data {
        path: PathBuf::from(path),
        line,
        message,
    };
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|e| line_error(number, e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let row: Value = serde_json::from_str(&line)
            .or_else(|e| {
                // Python's json module writes a missing score as a bare NaN, which is not JSON.
                let patched = line.replace("\"score\": NaN", "\"score\": null");
                if patched == line {
                    Err(e)
                } else {
                    serde_json::from_str(&patched)
                }
            })
            .map_err(|e| line_error(number, format!("not JSON: {e}")))?;
        let Value::Object(row) = row else {
            return Err(line_error(number, "not a JSON object".into()));
        };
        each(number, &row).map_err(|message| line_error(number, message))?;
    }
    Ok(())
}

fn required_str<'a>(row: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match row.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(format!("`{key}` is missing or not a non-empty string")),
    }
}

/// Lowercased, whitespace collapsed: two prompts with the same key are the same prompt.
pub fn normalise(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The question without its answer options or answer-format instructions, normalised: what
/// identifies an exam question across the sets that reformat it (MMLU in MMLU-Pro and RouteLLM,
/// GSM8K in RouteLLM and dcrouter).
pub fn stem_key(text: &str) -> String {
    const CUTS: [&str; 5] = [
        "\na. ",
        "\na) ",
        "\nafter careful thought",
        "\nanswer:",
        "\nlet's think step by step",
    ];
    let lower = text.to_lowercase();
    let end = CUTS
        .iter()
        .filter_map(|cut| lower.find(cut))
        .filter(|&i| i > 0)
        .min()
        .unwrap_or(lower.len());
    normalise(&lower[..end])
}

/// A hash that is the same on every machine and in every run.
pub fn stable_hash(salt: &str, key: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update([0u8]);
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    u64::from_le_bytes(
        digest[..8]
            .try_into()
            .expect("a sha256 digest has 32 bytes"),
    )
}

fn fraction_threshold(fraction: f64) -> u64 {
    (fraction.clamp(0.0, 1.0) * u64::MAX as f64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_greeting_is_cut_when_a_request_follows() {
        assert_eq!(
            without_greeting("Hey chatbot! What's the surf report for Prevelly?"),
            "What's the surf report for Prevelly?"
        );
        assert_eq!(without_greeting("hi, book me a table"), "book me a table");
        assert_eq!(without_greeting("Hello!"), "Hello!");
        assert_eq!(
            without_greeting("Highway 1 traffic now?"),
            "Highway 1 traffic now?"
        );
    }

    #[test]
    fn stems_drop_options_and_answer_instructions() {
        let mmlu = "Find the degree of Q(sqrt(2)) over Q.\nA. 0\nB. 2\nAnswer:";
        let pro = "Find the  degree of Q(sqrt(2)) over Q.\nA. 2\nB. 1\nC. 4";
        assert_eq!(stem_key(mmlu), stem_key(pro));
        let gsm = "Tom has 3 apples.\nAfter careful thought, put you final answer in \\boxed{...}.";
        assert_eq!(stem_key(gsm), "tom has 3 apples.");
    }

    #[test]
    fn a_rule_gives_its_level_to_prompts_that_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let rows = [
            r#"{"prompt": "write a python function to parse dates"}"#,
            r#"{"prompt": "write a poem about rain"}"#,
            r#"{"prompt": "write a python script, quickly", "level": "easy"}"#,
            r#"{"prompt": "hello there"}"#,
        ];
        std::fs::write(dir.path().join("l.jsonl"), rows.join("\n")).unwrap();
        let recipe = Recipe::parse(
            r#"
seed = 1
max_tokens = 64
skills = ["code", "writing", "chat"]
encoder = "scratch"
[[files]]
path = "l.jsonl"
kind = "labels"
[[skill_rules]]
skill = "code"
level = "hard"
contains = ["python"]
[[skill_rules]]
skill = "writing"
level = "easy"
contains = ["poem"]
[[skill_rules]]
skill = "chat"
"#,
        )
        .unwrap();
        let data = Dataset::load(&recipe, dir.path()).unwrap();
        let level = |text: &str| data.prompts.iter().find(|p| p.text == text).unwrap().level;
        assert_eq!(level("write a python function to parse dates"), Some(1.0));
        assert_eq!(level("write a poem about rain"), Some(0.0));
        // The row's own level wins; a rule without one leaves none.
        assert_eq!(level("write a python script, quickly"), Some(0.0));
        assert_eq!(level("hello there"), None);
        let bad = recipe_with_level("medium");
        assert!(Recipe::parse(&bad).unwrap_err().contains("medium"));
    }

    #[test]
    fn a_held_back_model_is_left_out_of_public_rows_but_not_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let rows = [
            r#"{"source": "bench", "prompt": "p1", "model": "new", "score": 1.0}"#,
            r#"{"source": "bench", "prompt": "p1", "model": "old", "score": 0.0}"#,
            r#"{"source": "arena", "prompt": "p2", "model": "old", "opponent": "new", "score": 0.0}"#,
            r#"{"source": "outcome_log", "prompt": "p3", "model": "new", "score": 1.0}"#,
        ];
        std::fs::write(dir.path().join("o.jsonl"), rows.join("\n")).unwrap();
        let recipe = Recipe::parse(
            "seed = 1\nmax_tokens = 8\nskills = [\"code\"]\nencoder = \"scratch\"\n\
             exclude_models = [\"new\"]\n[[files]]\npath = \"o.jsonl\"\n",
        )
        .unwrap();
        let data = Dataset::load(&recipe, dir.path()).unwrap();
        let texts: Vec<&str> = data.prompts.iter().map(|p| p.text.as_str()).collect();
        assert!(texts.contains(&"p1"), "the other model's row stays");
        assert!(
            !texts.contains(&"p2"),
            "a battle the held-back model fought goes"
        );
        assert!(texts.contains(&"p3"), "the log's rows of it stay");
        assert_eq!(data.models, ["new", "old"]);
    }

    #[test]
    fn the_log_s_graded_answers_are_counted_per_model_even_on_a_public_prompt() {
        let dir = tempfile::tempdir().unwrap();
        let public = r#"{"source": "bench", "prompt": "p1", "model": "old", "score": 0.0}"#;
        let log = [
            r#"{"source": "outcome_log", "prompt": "p1", "model": "new-v1", "score": 1.0}"#,
            r#"{"source": "outcome_log", "prompt": "p2", "model": "new-v1", "score": 0.0}"#,
        ];
        std::fs::write(dir.path().join("o.jsonl"), public).unwrap();
        std::fs::write(dir.path().join("log.jsonl"), log.join("\n")).unwrap();
        let recipe = Recipe::parse(
            "seed = 1\nmax_tokens = 8\nskills = [\"code\"]\nencoder = \"scratch\"\n\
             [[files]]\npath = \"o.jsonl\"\n[[files]]\npath = \"log.jsonl\"\n\
             [aliases]\n\"new-v1\" = \"new\"\n",
        )
        .unwrap();
        let data = Dataset::load(&recipe, dir.path()).unwrap();
        assert_eq!(
            data.prompts.len(),
            2,
            "p1's log row joins the public prompt"
        );
        assert_eq!(data.log_graded, [("new".to_string(), 2)].into());
    }

    fn recipe_with_level(level: &str) -> String {
        format!(
            "seed = 1\nmax_tokens = 8\nskills = [\"code\"]\nencoder = \"scratch\"\n\
             [[files]]\npath = \"a\"\n[[skill_rules]]\nskill = \"code\"\nlevel = \"{level}\"\n"
        )
    }

    #[test]
    fn hashes_are_stable() {
        assert_eq!(stable_hash("split", "abc"), stable_hash("split", "abc"));
        assert_ne!(stable_hash("split", "abc"), stable_hash("cap", "abc"));
        assert_eq!(fraction_threshold(0.0), 0);
    }
}
