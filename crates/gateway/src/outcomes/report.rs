//! What the log says routing did and saved: requests, tokens and cost by model, key and
//! profile; the mix of models `auto` chose; and the counterfactual cost of sending each
//! adaptive request to a baseline model instead. `triage report` prints it, `GET /v1/usage`
//! serves it as JSON; both call [`Report::compute`].

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::Store;
use super::store::{LoggedRow, StoreError};
use triage_core::catalog::{Catalog, Usage};

/// What to report on.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// Only requests at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// The model every adaptive request is compared with; default: for each request, the
    /// candidate with the highest predicted quality the policy considered.
    pub baseline: Option<String>,
}

/// Totals of one group of requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub name: String,
    /// For a virtual key (`vk_…`): the name it was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    pub requests: u64,
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

/// A model's share of the adaptive requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Share {
    pub model: String,
    pub requests: u64,
    pub share: f64,
}

/// Adaptive routing against the baseline, over successful `auto` requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Savings {
    /// The baseline model, or `strongest candidate`.
    pub baseline: String,
    /// Successful adaptive requests compared (those whose baseline has a catalog price).
    pub requests: u64,
    /// Adaptive requests left out: no candidates logged, or the baseline is not in the catalog.
    pub unpriced: u64,
    pub actual_cost_usd: f64,
    pub baseline_cost_usd: f64,
    pub saved_usd: f64,
    /// Saving as a percentage of the baseline cost.
    pub saved_pct: f64,
    /// Mean predicted quality of the models that answered, and of the baseline, on the
    /// requests where both were predicted.
    pub mean_quality: Option<f64>,
    pub mean_baseline_quality: Option<f64>,
    /// `mean_quality / mean_baseline_quality`: the share of the baseline's quality kept.
    pub quality_kept: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub since_ms: Option<i64>,
    pub total: Group,
    pub by_model: Vec<Group>,
    pub by_key: Vec<Group>,
    /// By requested profile (`auto`, `auto:cheap`, …); explicit requests under `explicit`.
    pub by_profile: Vec<Group>,
    /// Which models answered adaptive requests.
    pub routing_mix: Vec<Share>,
    pub savings: Savings,
    pub labels: Labels,
}

/// What the log knows of answer quality: what `train --from-log` can learn from.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Labels {
    /// Requests with client feedback.
    pub feedback: u64,
    /// Requests graded by a judge (`triage label`).
    pub judged: u64,
    /// Requests a client compared with another answer to the same prompt (a preference).
    pub compared: u64,
    /// Requests per implicit signal (`truncated`, `invalid_tool_json`, `upstream_error`).
    pub signals: BTreeMap<String, u64>,
}

impl Labels {
    fn add(&mut self, row: &LoggedRow) {
        self.feedback += u64::from(row.has_feedback);
        self.judged += u64::from(row.judged);
        self.compared += u64::from(row.compared);
        for signal in row.signals.iter().flat_map(|s| s.split(',')) {
            if !signal.is_empty() {
                *self.signals.entry(signal.to_string()).or_default() += 1;
            }
        }
    }
}

impl Report {
    /// Reads the log and prices the counterfactual with `catalog`. The rows are aggregated
    /// here rather than in SQL, so SQLite and PostgreSQL give the same numbers.
    pub fn compute(
        store: &mut Store,
        catalog: &Catalog,
        options: &ReportOptions,
    ) -> Result<Report, StoreError> {
        let mut totals = Totals::default();
        let mut savings = SavingsSum::new(options.baseline.as_deref());
        let mut labels = Labels::default();
        store.scan(options.since_ms.unwrap_or(i64::MIN), |row| {
            totals.add(&row);
            labels.add(&row);
            if row.profile.is_some() && row.status < 400 {
                savings.add(&row, catalog);
            }
        })?;
        let auto_total: u64 = totals.mix.values().sum();
        let mut routing_mix: Vec<Share> = totals
            .mix
            .into_iter()
            .map(|(model, requests)| Share {
                model,
                requests,
                share: requests as f64 / auto_total as f64,
            })
            .collect();
        routing_mix.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.model.cmp(&b.model)));
        // Virtual keys by the names they were given (the log holds their ids).
        let names: std::collections::HashMap<String, String> =
            store.keys()?.into_iter().map(|k| (k.id, k.name)).collect();
        let mut by_key = sorted(totals.by_key);
        for group in &mut by_key {
            group.key_name = names.get(&group.name).cloned();
        }
        Ok(Report {
            since_ms: options.since_ms,
            total: totals.all,
            by_model: sorted(totals.by_model),
            by_key,
            by_profile: sorted(totals.by_profile),
            routing_mix,
            savings: savings.finish(),
            labels,
        })
    }
}

impl Group {
    fn new(name: &str) -> Group {
        Group {
            name: name.to_string(),
            key_name: None,
            requests: 0,
            errors: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: 0.0,
        }
    }

    fn add(&mut self, row: &LoggedRow) {
        self.requests += 1;
        self.errors += u64::from(row.status >= 400);
        self.prompt_tokens += row.prompt_tokens as u64;
        self.completion_tokens += row.completion_tokens as u64;
        self.cost_usd += row.cost_usd;
    }
}

/// Most expensive first, then most requests, then by name.
fn sorted(groups: BTreeMap<String, Group>) -> Vec<Group> {
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by(|a, b| {
        b.cost_usd
            .total_cmp(&a.cost_usd)
            .then(b.requests.cmp(&a.requests))
            .then(a.name.cmp(&b.name))
    });
    groups
}

struct Totals {
    all: Group,
    by_model: BTreeMap<String, Group>,
    by_key: BTreeMap<String, Group>,
    by_profile: BTreeMap<String, Group>,
    /// Successful adaptive requests per answering model.
    mix: BTreeMap<String, u64>,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            all: Group::new("all"),
            by_model: BTreeMap::new(),
            by_key: BTreeMap::new(),
            by_profile: BTreeMap::new(),
            mix: BTreeMap::new(),
        }
    }
}

impl Totals {
    fn add(&mut self, row: &LoggedRow) {
        let model = row.model.as_deref().unwrap_or("(none)");
        let profile = row.profile.as_deref().unwrap_or("explicit");
        self.all.add(row);
        for (groups, name) in [
            (&mut self.by_model, model),
            (&mut self.by_key, row.key_id.as_str()),
            (&mut self.by_profile, profile),
        ] {
            groups
                .entry(name.to_string())
                .or_insert_with(|| Group::new(name))
                .add(row);
        }
        if row.profile.is_some() && row.status < 400 {
            *self.mix.entry(model.to_string()).or_default() += 1;
        }
    }
}

/// A logged candidate, as `AutoColumns::candidates` wrote it.
struct Candidate {
    model: String,
    quality: Option<f64>,
    excluded: bool,
}

fn candidates(json: &str) -> Vec<Candidate> {
    let Ok(Value::Array(list)) = serde_json::from_str::<Value>(json) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|c| {
            Some(Candidate {
                model: c.get("model")?.as_str()?.to_string(),
                quality: c.get("quality").and_then(Value::as_f64),
                excluded: c.get("excluded").is_some_and(|e| !e.is_null()),
            })
        })
        .collect()
}

/// The strongest candidate the policy considered: the best predicted quality among those it
/// did not exclude (among all, when it excluded every one).
fn strongest(candidates: &[Candidate]) -> Option<&Candidate> {
    let best = |eligible: bool| {
        candidates
            .iter()
            .filter(|c| c.quality.is_some() && (!eligible || !c.excluded))
            .max_by(|a, b| {
                a.quality
                    .unwrap_or(0.0)
                    .total_cmp(&b.quality.unwrap_or(0.0))
            })
    };
    best(true).or_else(|| best(false))
}

/// Savings summed request by request (the report's total, the dashboard's time buckets).
pub(super) struct SavingsSum<'a> {
    baseline: Option<&'a str>,
    s: Savings,
    quality: f64,
    baseline_quality: f64,
    rated: u64,
}

impl<'a> SavingsSum<'a> {
    pub(super) fn new(baseline: Option<&'a str>) -> SavingsSum<'a> {
        SavingsSum {
            baseline,
            s: Savings {
                baseline: baseline.unwrap_or("strongest candidate").to_string(),
                ..Savings::default()
            },
            quality: 0.0,
            baseline_quality: 0.0,
            rated: 0,
        }
    }

    /// One successful adaptive request.
    pub(super) fn add(&mut self, row: &LoggedRow, catalog: &Catalog) {
        let logged = candidates(row.candidates.as_deref().unwrap_or(""));
        let baseline_id = match self.baseline {
            Some(id) => Some(id),
            None => strongest(&logged).map(|c| c.model.as_str()),
        };
        let Some(model) = baseline_id.and_then(|id| catalog.model(id)) else {
            self.s.unpriced += 1;
            return;
        };
        let usage = Usage {
            prompt_tokens: row.prompt_tokens as u64,
            completion_tokens: row.completion_tokens as u64,
            cached_tokens: row.cached_tokens as u64,
            cache_write_tokens: row.cache_write_tokens as u64,
        };
        self.s.requests += 1;
        self.s.actual_cost_usd += row.cost_usd;
        self.s.baseline_cost_usd += model.cost(&usage);
        let quality_of = |id: &str| {
            logged
                .iter()
                .find(|c| c.model == id)
                .and_then(|c| c.quality)
        };
        if let (Some(q), Some(b)) = (
            row.model.as_deref().and_then(quality_of),
            quality_of(&model.id),
        ) {
            self.quality += q;
            self.baseline_quality += b;
            self.rated += 1;
        }
    }

    pub(super) fn finish(mut self) -> Savings {
        let s = &mut self.s;
        s.saved_usd = s.baseline_cost_usd - s.actual_cost_usd;
        s.saved_pct = if s.baseline_cost_usd > 0.0 {
            100.0 * s.saved_usd / s.baseline_cost_usd
        } else {
            0.0
        };
        if self.rated > 0 {
            s.mean_quality = Some(self.quality / self.rated as f64);
            s.mean_baseline_quality = Some(self.baseline_quality / self.rated as f64);
            s.quality_kept =
                (self.baseline_quality > 0.0).then(|| self.quality / self.baseline_quality);
        }
        self.s
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.total;
        writeln!(
            f,
            "{} requests ({} errors), {} input + {} output tokens, US${:.6}",
            t.requests, t.errors, t.prompt_tokens, t.completion_tokens, t.cost_usd
        )?;
        for (title, groups) in [
            ("by model", &self.by_model),
            ("by key", &self.by_key),
            ("by profile", &self.by_profile),
        ] {
            writeln!(f, "\n{title}")?;
            writeln!(
                f,
                "  {:<36} {:>9} {:>7} {:>12} {:>12} {:>12}",
                "", "requests", "errors", "input tok", "output tok", "cost US$"
            )?;
            for g in groups {
                let name = match &g.key_name {
                    Some(key_name) => format!("{key_name} ({})", g.name),
                    None => g.name.clone(),
                };
                writeln!(
                    f,
                    "  {:<36} {:>9} {:>7} {:>12} {:>12} {:>12.6}",
                    name, g.requests, g.errors, g.prompt_tokens, g.completion_tokens, g.cost_usd
                )?;
            }
        }
        let l = &self.labels;
        let signals: Vec<String> = l.signals.iter().map(|(s, n)| format!("{s} {n}")).collect();
        writeln!(
            f,
            "\nlabels: {} with feedback, {} judged, {} compared; signals: {}",
            l.feedback,
            l.judged,
            l.compared,
            if signals.is_empty() {
                "none".to_string()
            } else {
                signals.join(", ")
            }
        )?;
        if self.routing_mix.is_empty() {
            return writeln!(f, "\nno adaptive (auto) requests");
        }
        writeln!(f, "\nrouting mix (auto)")?;
        let mut mix: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
        for s in &self.routing_mix {
            mix.insert(&s.model, (s.requests, s.share));
        }
        for (model, (requests, share)) in mix {
            writeln!(f, "  {model:<36} {requests:>9} {:>6.1}%", share * 100.0)?;
        }
        let s = &self.savings;
        writeln!(
            f,
            "\nsavings against {} ({} requests)",
            s.baseline, s.requests
        )?;
        writeln!(f, "  actual    US${:.6}", s.actual_cost_usd)?;
        writeln!(f, "  baseline  US${:.6}", s.baseline_cost_usd)?;
        writeln!(f, "  saved     US${:.6} ({:.1}%)", s.saved_usd, s.saved_pct)?;
        if let (Some(q), Some(b), Some(kept)) =
            (s.mean_quality, s.mean_baseline_quality, s.quality_kept)
        {
            writeln!(
                f,
                "  predicted quality {q:.3} vs {b:.3} for the baseline: {:.1}% kept",
                kept * 100.0
            )?;
        }
        if s.unpriced > 0 {
            writeln!(
                f,
                "  ({} adaptive requests could not be priced)",
                s.unpriced
            )?;
        }
        Ok(())
    }
}
