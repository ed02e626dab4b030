//! Outcome files in the shared long format, read into a prompt × model table of normalised
//! scores, and the deterministic calibration split.
//!
//! A row is one JSON object per line (plain or gzip, told apart by the gzip magic bytes):
//! `source, subset, prompt_id, prompt, model, label, score[, cost]`. `prompt` is a string or an
//! array of user turns (strings, or objects with a `content` string), rendered as training and
//! the classifier render a conversation (`user: …` lines, the last turn bare); a
//! row without `prompt` takes its text from a `--prompts` file (`prompt_id`, `prompt` per line).
//!
//! Scores are mapped to [0, 1] once per file: `(score − lo) / (hi − lo)` with
//! `lo = min(0, smallest score)` and `hi = max(1, largest score)` over the rows kept. So 0/1
//! correctness and [0, 1] task scores stay as they are and a 1–10 judge grade becomes grade / 10.
//! Rows labelled `correct` or `score_0_1` must already lie in [0, 1]. Several rows for one
//! (prompt, model) pair (a model in several battles on one prompt) are averaged. A row whose
//! `score` is null (or Python's bare `NaN`, which some converters write) has no outcome: it is
//! skipped and counted in a warning. A row without a `score` field is an error.
//!
//! Not for: deciding which prompts a comparison uses; that is the caller's, through
//! [`Dataset::complete_prompts`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use serde_json::{Map, Value, json};

use super::EvalError;
use triage_core::classifier::render_conversation;

/// One prompt of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub id: String,
    pub text: String,
}

/// The outcome of one model on one prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    /// The score normalised to [0, 1], higher is better.
    pub score: f64,
    /// The US$ the call cost, where every row of this pair recorded it.
    pub cost: Option<f64>,
}

/// Keep only rows whose field `key` equals one of `values` (`--filter source=routellm_mmlu`).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub key: String,
    pub values: Vec<String>,
}

impl Filter {
    /// Parses `KEY=VALUE[,VALUE…]`.
    pub fn parse(text: &str) -> Result<Self, EvalError> {
        let (key, values) = text
            .split_once('=')
            .ok_or_else(|| EvalError::Args(format!("filter {text:?} is not KEY=VALUE[,VALUE…]")))?;
        let values: Vec<String> = values.split(',').map(str::to_owned).collect();
        if key.is_empty() || values.iter().any(String::is_empty) {
            return Err(EvalError::Args(format!(
                "filter {text:?} is not KEY=VALUE[,VALUE…]"
            )));
        }
        Ok(Filter {
            key: key.to_owned(),
            values,
        })
    }

    pub(crate) fn keeps(&self, row: &Map<String, Value>) -> bool {
        let Some(value) = row.get(&self.key) else {
            return false;
        };
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        self.values.contains(&text)
    }
}

/// A prompt × model table of outcomes.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Prompts in order of first appearance.
    pub prompts: Vec<Prompt>,
    /// Models in order of first appearance.
    pub models: Vec<String>,
    /// `prompts.len() × models.len()`, row-major.
    cells: Vec<Option<Cell>>,
    /// The (lo, hi) that scores were normalised with.
    pub score_range: (f64, f64),
    /// Rows read (after filters).
    pub rows: usize,
    /// Rows that repeated a (prompt, model) pair and were averaged into it.
    pub repeated_rows: usize,
    /// Things worth telling the user that are not errors.
    pub warnings: Vec<String>,
}

impl Dataset {
    /// Reads an outcome file, with an optional `prompt_id → prompt` file for rows without text.
    pub fn load(
        path: &Path,
        prompts_file: Option<&Path>,
        filters: &[Filter],
    ) -> Result<Self, EvalError> {
        let texts = match prompts_file {
            Some(file) => Some(read_prompts(&display(file), open(file)?)?),
            None => None,
        };
        Self::parse(&display(path), open(path)?, texts.as_ref(), filters)
    }

    /// Reads outcome rows from `reader`; `name` is the file name used in errors.
    pub fn parse(
        name: &str,
        reader: impl BufRead,
        texts: Option<&HashMap<String, String>>,
        filters: &[Filter],
    ) -> Result<Self, EvalError> {
        let mut table = Builder::default();
        for_each_row(name, reader, |line, row| {
            if !filters.iter().all(|f| f.keeps(&row)) {
                return Ok(());
            }
            let raw = RawRow::from_json(&row, texts).map_err(|message| EvalError::Row {
                file: name.to_owned(),
                line,
                message,
            })?;
            match raw {
                Some(raw) => table.add(raw),
                None => table.unscored += 1,
            }
            Ok(())
        })?;
        if table.rows == 0 {
            return Err(EvalError::Data(if filters.is_empty() {
                format!("{name} has no outcome rows")
            } else {
                format!("no row of {name} passes the filters")
            }));
        }
        Ok(table.finish())
    }

    pub fn model_index(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m == name)
    }

    pub fn cell(&self, prompt: usize, model: usize) -> Option<Cell> {
        self.cells[prompt * self.models.len() + model]
    }

    /// The prompts that have an outcome for every one of `models`.
    pub fn complete_prompts(&self, models: &[usize]) -> Vec<usize> {
        (0..self.prompts.len())
            .filter(|&p| models.iter().all(|&m| self.cell(p, m).is_some()))
            .collect()
    }

    /// How many prompts have an outcome for each model, for error messages.
    pub fn prompts_per_model(&self) -> Vec<(String, usize)> {
        self.models
            .iter()
            .enumerate()
            .map(|(m, name)| {
                let n = (0..self.prompts.len())
                    .filter(|&p| self.cell(p, m).is_some())
                    .count();
                (name.clone(), n)
            })
            .collect()
    }
}

/// Splits `ids` into calibration (`true`) and held-out prompts: the `round(n × fraction)` ids
/// that come first in the order of a seeded hash. The same ids and seed give the same split on
/// every platform, and a prompt's side does not depend on the rest of the file's order.
pub fn calibration_split(ids: &[&str], fraction: f64, seed: u64) -> Vec<bool> {
    let mut order: Vec<(u64, usize)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (keyed_hash(id, seed), i))
        .collect();
    order.sort_unstable();
    let take = (ids.len() as f64 * fraction).round() as usize;
    let mut calibration = vec![false; ids.len()];
    for &(_, i) in &order[..take.min(ids.len())] {
        calibration[i] = true;
    }
    calibration
}

fn keyed_hash(id: &str, seed: u64) -> u64 {
    // FNV-1a over seed and id, then the splitmix64 finaliser to spread the bits.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in seed.to_le_bytes().iter().chain(id.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    splitmix64(h)
}

pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Opens a file for line reading, through gzip when it starts with the gzip magic bytes.
fn open(path: &Path) -> Result<Box<dyn BufRead>, EvalError> {
    let io_error = |source| EvalError::Io {
        path: display(path),
        source,
    };
    let mut file = BufReader::new(File::open(path).map_err(io_error)?);
    let head = file.fill_buf().map_err(io_error)?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::new(MultiGzDecoder::new(file))))
    } else {
        Ok(Box::new(file))
    }
}

/// Calls `each` with the 1-based line number and object of every row. Blank lines are an error,
/// except at the end of the file.
fn for_each_row(
    name: &str,
    reader: impl BufRead,
    mut each: impl FnMut(usize, Map<String, Value>) -> Result<(), EvalError>,
) -> Result<(), EvalError> {
    let row_error = |line: usize, message: String| EvalError::Row {
        file: name.to_owned(),
        line,
        message,
    };
    let mut first_blank = None;
    for (i, line) in reader.lines().enumerate() {
        let number = i + 1;
        let line = line.map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => row_error(number, "not UTF-8 text".into()),
            _ => EvalError::Io {
                path: name.to_owned(),
                source: e,
            },
        })?;
        if line.trim().is_empty() {
            first_blank.get_or_insert(number);
            continue;
        }
        if let Some(blank) = first_blank {
            return Err(row_error(blank, "empty line".into()));
        }
        let value: Value = serde_json::from_str(&line)
            .or_else(|e| match nan_as_null(&line) {
                Some(fixed) => serde_json::from_str(&fixed).map_err(|_| e),
                None => Err(e),
            })
            .map_err(|e| row_error(number, format!("not valid JSON: {e}")))?;
        let Value::Object(row) = value else {
            return Err(row_error(number, "expected a JSON object".into()));
        };
        each(number, row)?;
    }
    Ok(())
}

/// The line with Python's bare `NaN` values (`: NaN,` or `: NaN}`) written as `null`; `None`
/// when it has none. Only tried on lines that are not valid JSON as they are.
fn nan_as_null(line: &str) -> Option<String> {
    let fixed = line
        .replace(": NaN,", ": null,")
        .replace(": NaN}", ": null}")
        .replace(":NaN,", ":null,")
        .replace(":NaN}", ":null}");
    (fixed != line).then_some(fixed)
}

/// Reads a `prompt_id → prompt` file.
fn read_prompts(name: &str, reader: impl BufRead) -> Result<HashMap<String, String>, EvalError> {
    let mut texts = HashMap::new();
    for_each_row(name, reader, |line, row| {
        let parsed = prompt_id(&row).and_then(|id| match prompt_text(&row)? {
            Some(text) => Ok((id, text)),
            None => Err("missing `prompt`".to_owned()),
        });
        let (id, text) = parsed.map_err(|message| EvalError::Row {
            file: name.to_owned(),
            line,
            message,
        })?;
        texts.entry(id).or_insert(text);
        Ok(())
    })?;
    Ok(texts)
}

/// One validated row, before normalisation.
struct RawRow {
    prompt_id: String,
    text: String,
    model: String,
    score: f64,
    cost: Option<f64>,
}

impl RawRow {
    /// The row, `None` when its score is null (no outcome), or what is wrong with it.
    fn from_json(
        row: &Map<String, Value>,
        texts: Option<&HashMap<String, String>>,
    ) -> Result<Option<Self>, String> {
        let prompt_id = prompt_id(row)?;
        let model = match row.get("model") {
            Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
            Some(Value::String(_)) => return Err("`model` is empty".into()),
            Some(_) => return Err("`model` is not a string".into()),
            None => return Err("missing `model`".into()),
        };
        let score = match row.get("score") {
            Some(Value::Number(n)) => n.as_f64().ok_or("`score` is not a finite number")?,
            Some(Value::Null) => return Ok(None),
            None => return Err("missing `score`".into()),
            Some(_) => return Err("`score` is not a number".into()),
        };
        if let Some(Value::String(label)) = row.get("label")
            && (label == "correct" || label == "score_0_1")
            && !(0.0..=1.0).contains(&score)
        {
            return Err(format!(
                "label `{label}` but score {score} is outside [0, 1]"
            ));
        }
        let cost = match row.get("cost") {
            Some(Value::Number(n)) => match n.as_f64() {
                Some(c) if c >= 0.0 => Some(c),
                _ => return Err(format!("`cost` {n} is not a non-negative number")),
            },
            Some(Value::Null) | None => None,
            Some(_) => return Err("`cost` is not a number".into()),
        };
        let text =
            match prompt_text(row)? {
                Some(text) => text,
                None => match texts.and_then(|t| t.get(&prompt_id)) {
                    Some(text) => text.clone(),
                    None if texts.is_some() => {
                        return Err(format!(
                            "no `prompt` and prompt_id {prompt_id:?} is not in the prompts file"
                        ));
                    }
                    None => return Err(
                        "missing `prompt` (pass --prompts FILE for files like mmlu_pro_outcomes)"
                            .into(),
                    ),
                },
            };
        Ok(Some(RawRow {
            prompt_id,
            text,
            model,
            score,
            cost,
        }))
    }
}

fn prompt_id(row: &Map<String, Value>) -> Result<String, String> {
    match row.get("prompt_id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::String(_)) => Err("`prompt_id` is empty".into()),
        Some(_) => Err("`prompt_id` is neither a string nor a number".into()),
        None => Err("missing `prompt_id`".into()),
    }
}

/// A row's prompt as the classifier sees it, in training and in eval alike (so a conversation is
/// classified, and hashed for "seen in training", exactly as the trainer saw it): a string as is; an array of user turns (or the
/// source's `all_user_turns`, when longer than one) rendered as a conversation.
pub fn prompt_text(row: &Map<String, Value>) -> Result<Option<String>, String> {
    if let Some(Value::Array(turns)) = row.get("all_user_turns")
        && turns.len() > 1
    {
        return render_turns(turns).map(Some);
    }
    match row.get("prompt") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Err("`prompt` is empty".into()),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(turns)) if !turns.is_empty() => render_turns(turns).map(Some),
        Some(_) => Err("`prompt` is neither a string nor a non-empty array of turns".into()),
    }
}

fn render_turns(turns: &[Value]) -> Result<String, String> {
    let messages = turns
        .iter()
        .map(|turn| {
            let text = match turn {
                Value::String(s) => s.as_str(),
                Value::Object(o) => o
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or("a turn has no `content` string")?,
                _ => return Err("a turn is neither a string nor an object".to_string()),
            };
            Ok(json!({"role": "user", "content": text}))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(render_conversation(&messages))
}

#[derive(Default)]
struct Sum {
    score: f64,
    cost: f64,
    rows: u32,
    costed: u32,
}

#[derive(Default)]
struct Builder {
    prompts: Vec<Prompt>,
    prompt_index: HashMap<String, usize>,
    models: Vec<String>,
    model_index: HashMap<String, usize>,
    sums: HashMap<(usize, usize), Sum>,
    rows: usize,
    repeated_rows: usize,
    unscored: usize,
    other_texts: usize,
    min: f64,
    max: f64,
}

impl Builder {
    fn add(&mut self, row: RawRow) {
        let p = match self.prompt_index.get(&row.prompt_id) {
            Some(&p) => {
                if self.prompts[p].text != row.text {
                    self.other_texts += 1;
                }
                p
            }
            None => {
                self.prompts.push(Prompt {
                    id: row.prompt_id.clone(),
                    text: row.text,
                });
                self.prompt_index
                    .insert(row.prompt_id, self.prompts.len() - 1);
                self.prompts.len() - 1
            }
        };
        let m = *self
            .model_index
            .entry(row.model.clone())
            .or_insert_with(|| {
                self.models.push(row.model);
                self.models.len() - 1
            });
        let sum = self.sums.entry((p, m)).or_default();
        if sum.rows > 0 {
            self.repeated_rows += 1;
        }
        sum.rows += 1;
        sum.score += row.score;
        if let Some(cost) = row.cost {
            sum.costed += 1;
            sum.cost += cost;
        }
        if self.rows == 0 {
            (self.min, self.max) = (row.score, row.score);
        }
        self.min = self.min.min(row.score);
        self.max = self.max.max(row.score);
        self.rows += 1;
    }

    fn finish(self) -> Dataset {
        let (lo, hi) = (self.min.min(0.0), self.max.max(1.0));
        let n_models = self.models.len();
        let mut cells = vec![None; self.prompts.len() * n_models];
        for ((p, m), sum) in self.sums {
            let n = f64::from(sum.rows);
            cells[p * n_models + m] = Some(Cell {
                score: (sum.score / n - lo) / (hi - lo),
                cost: (sum.costed == sum.rows).then(|| sum.cost / n),
            });
        }
        let mut warnings = Vec::new();
        if self.unscored > 0 {
            warnings.push(format!(
                "{} rows have no score (null or NaN) and were skipped",
                self.unscored
            ));
        }
        if self.other_texts > 0 {
            warnings.push(format!(
                "{} rows gave a prompt_id a different text than its first row; the first text is used",
                self.other_texts
            ));
        }
        if (lo, hi) != (0.0, 1.0) {
            warnings.push(format!(
                "scores span [{}, {}]: normalised as (score − {lo}) / ({hi} − {lo})",
                self.min, self.max
            ));
        }
        Dataset {
            prompts: self.prompts,
            models: self.models,
            cells,
            score_range: (lo, hi),
            rows: self.rows,
            repeated_rows: self.repeated_rows,
            warnings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_arrays_render_as_a_conversation() {
        let row = json!({"prompt": ["Write a sort", "Now make it stable"]});
        let text = prompt_text(row.as_object().unwrap()).unwrap().unwrap();
        assert_eq!(text, "user: Write a sort\nNow make it stable");
        let row = json!({"prompt": 3});
        assert!(prompt_text(row.as_object().unwrap()).is_err());
    }

    fn parse(text: &str) -> Result<Dataset, EvalError> {
        Dataset::parse("t.jsonl", text.as_bytes(), None, &[])
    }

    fn line_of(error: EvalError) -> usize {
        match error {
            EvalError::Row { line, .. } => line,
            other => panic!("expected a row error, got {other}"),
        }
    }

    #[test]
    fn judge_grades_are_divided_by_their_range() {
        let data = parse(concat!(
            r#"{"prompt_id":"a","prompt":"x","model":"m","score":7}"#,
            "\n",
            r#"{"prompt_id":"a","prompt":"x","model":"n","score":10}"#,
            "\n",
        ))
        .unwrap();
        assert_eq!(data.score_range, (0.0, 10.0));
        assert!((data.cell(0, 0).unwrap().score - 0.7).abs() < 1e-12);
    }

    #[test]
    fn conversations_and_repeats() {
        let data = parse(concat!(
            r#"{"prompt_id":1,"prompt":["hi",{"role":"user","content":"more"}],"model":"m","score":1,"cost":0.5}"#,
            "\n",
            r#"{"prompt_id":1,"prompt":["hi",{"role":"user","content":"more"}],"model":"m","score":0}"#,
            "\n\n\n",
        ))
        .unwrap();
        // Rendered as the classifier sees a conversation (and as training rendered it).
        assert_eq!(data.prompts[0].text, "user: hi\nmore");
        assert_eq!(data.prompts[0].id, "1");
        assert_eq!(data.repeated_rows, 1);
        // Averaged; the cost is unknown because one of the two rows lacks it.
        assert_eq!(
            data.cell(0, 0),
            Some(Cell {
                score: 0.5,
                cost: None
            })
        );
    }

    #[test]
    fn errors_name_the_line() {
        let good = r#"{"prompt_id":"a","prompt":"x","model":"m","score":1}"#;
        assert_eq!(line_of(parse(&format!("{good}\n{{oops\n")).unwrap_err()), 2);
        assert_eq!(
            line_of(parse(&format!("{good}\n\n{good}\n")).unwrap_err()),
            2
        );
        assert_eq!(line_of(parse(&format!("{good}\n{{}}\n")).unwrap_err()), 2);
        let bad_label = r#"{"prompt_id":"a","prompt":"x","model":"m","score":3,"label":"correct"}"#;
        assert_eq!(
            line_of(parse(&format!("{good}\n{good}\n{bad_label}")).unwrap_err()),
            3
        );
        let no_prompt = r#"{"prompt_id":"a","model":"m","score":1}"#;
        assert_eq!(line_of(parse(no_prompt).unwrap_err()), 1);
    }

    #[test]
    fn null_and_nan_scores_are_skipped_with_a_warning() {
        let data = parse(concat!(
            r#"{"prompt_id":"a","prompt":"x","model":"m","score":NaN,"cost":0.1}"#,
            "\n",
            r#"{"prompt_id":"a","prompt":"x","model":"n","score":null}"#,
            "\n",
            r#"{"prompt_id":"a","prompt":"x","model":"o","score":1}"#,
        ))
        .unwrap();
        assert_eq!((data.rows, data.models.len()), (1, 1));
        assert!(
            data.warnings[0].starts_with("2 rows have no score"),
            "{:?}",
            data.warnings
        );
        let bare = r#"{"prompt_id":"a","prompt":"NaN","model":"m","score":NaN"#;
        assert_eq!(line_of(parse(bare).unwrap_err()), 1);
    }

    #[test]
    fn split_is_deterministic_and_exact() {
        let ids: Vec<String> = (0..1000).map(|i| format!("p{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let a = calibration_split(&refs, 0.2, 7);
        assert_eq!(a, calibration_split(&refs, 0.2, 7));
        assert_eq!(a.iter().filter(|&&c| c).count(), 200);
        assert_ne!(a, calibration_split(&refs, 0.2, 8));
    }
}
