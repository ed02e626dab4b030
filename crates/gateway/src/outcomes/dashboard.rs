//! What the dashboard (`/ui`) draws, computed from the outcome log: traffic, spend, saving and
//! latency over time and by model and key; what `auto` chose by skill and by difficulty; the
//! cost-quality curve of the relative profiles' target; one request in full. The page draws
//! each chart from one of these through a JSON endpoint (`/v1/dashboard/…`), so a script reads
//! the numbers the page shows.
//!
//! Rows are aggregated here rather than in SQL, as in `report`, so SQLite and PostgreSQL agree.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use super::Store;
use super::report::{Savings, SavingsSum};
use super::store::{
    LoggedRow, RequestLine, RequestVerdicts, SamePrompt, StoreError, StoredFeedback, StoredLabel,
    StoredPreference,
};
use triage_core::catalog::Catalog;
use triage_core::policy::{self, Candidate};
use triage_core::profile::Targets;

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// The most time buckets one overview draws.
pub const MAX_BUCKETS: i64 = 1_000;
/// Difficulty bands in the difficulty map, at most.
const MAX_BANDS: f64 = 16.0;
/// Targets the cost-quality curve is drawn at (the configured ones are added).
const CURVE_TARGETS: [f64; 11] = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0];

/// Latency percentiles of a group of requests, in ms; `None` without requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p95_ms: Option<f64>,
}

/// Latencies collected for percentiles.
#[derive(Default)]
struct Samples {
    latency: Vec<f64>,
    ttft: Vec<f64>,
}

impl Samples {
    fn add(&mut self, row: &LoggedRow) {
        self.latency.push(row.latency_ms);
        self.ttft.extend(row.ttft_ms);
    }

    fn finish(mut self) -> Latency {
        self.latency.sort_by(f64::total_cmp);
        self.ttft.sort_by(f64::total_cmp);
        Latency {
            p50_ms: percentile(&self.latency, 50.0),
            p95_ms: percentile(&self.latency, 95.0),
            ttft_p50_ms: percentile(&self.ttft, 50.0),
            ttft_p95_ms: percentile(&self.ttft, 95.0),
        }
    }
}

/// Nearest-rank percentile `p` (0–100) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// One time bucket's traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub start_ms: i64,
    pub requests: u64,
    pub errors: u64,
    pub cost_usd: f64,
    /// What the bucket's successful adaptive requests would have cost on the strongest
    /// candidate, what routing saved on them, and the share of predicted quality kept.
    pub baseline_cost_usd: f64,
    pub saved_usd: f64,
    pub quality_kept: Option<f64>,
    pub latency: Latency,
}

/// One model's or key's traffic over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slice {
    pub name: String,
    /// For a virtual key: the name it was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    pub requests: u64,
    pub errors: u64,
    pub cost_usd: f64,
    pub latency: Latency,
}

/// The overview page: totals, a time series and the split by model and by key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub since_ms: i64,
    pub until_ms: i64,
    pub bucket_ms: i64,
    pub requests: u64,
    pub errors: u64,
    pub cost_usd: f64,
    /// Adaptive routing against the strongest candidate, over the window.
    pub savings: Savings,
    pub latency: Latency,
    pub buckets: Vec<Bucket>,
    /// Most expensive first.
    pub by_model: Vec<Slice>,
    pub by_key: Vec<Slice>,
}

/// Counts of one group while the log is read.
#[derive(Default)]
struct Tally {
    requests: u64,
    errors: u64,
    cost_usd: f64,
    samples: Samples,
}

impl Tally {
    fn add(&mut self, row: &LoggedRow) {
        self.requests += 1;
        self.errors += u64::from(row.status >= 400);
        self.cost_usd += row.cost_usd;
        self.samples.add(row);
    }

    fn slice(self, name: String, key_name: Option<String>) -> Slice {
        Slice {
            name,
            key_name,
            requests: self.requests,
            errors: self.errors,
            cost_usd: self.cost_usd,
            latency: self.samples.finish(),
        }
    }
}

impl Overview {
    /// The log from `since_ms` (rounded down to a bucket) to `until_ms`, in buckets of
    /// `bucket_ms`; the caller keeps the bucket count within [`MAX_BUCKETS`].
    pub fn compute(
        store: &mut Store,
        catalog: &Catalog,
        since_ms: i64,
        until_ms: i64,
        bucket_ms: i64,
    ) -> Result<Overview, StoreError> {
        let start = since_ms.div_euclid(bucket_ms) * bucket_ms;
        let count = ((until_ms - start).div_euclid(bucket_ms) + 1).max(1) as usize;
        let mut buckets: Vec<(Tally, SavingsSum)> = (0..count)
            .map(|_| (Tally::default(), SavingsSum::new(None)))
            .collect();
        let mut all = Tally::default();
        let mut savings = SavingsSum::new(None);
        let mut by_model: BTreeMap<String, Tally> = BTreeMap::new();
        let mut by_key: BTreeMap<String, Tally> = BTreeMap::new();
        store.scan(start, |row| {
            let index = ((row.ts_ms - start).div_euclid(bucket_ms) as usize).min(count - 1);
            let (tally, bucket_savings) = &mut buckets[index];
            tally.add(&row);
            all.add(&row);
            let model = row.model.clone().unwrap_or_else(|| "(none)".into());
            by_model.entry(model).or_default().add(&row);
            by_key.entry(row.key_id.clone()).or_default().add(&row);
            if row.profile.is_some() && row.status < 400 {
                bucket_savings.add(&row, catalog);
                savings.add(&row, catalog);
            }
        })?;
        let names: HashMap<String, String> =
            store.keys()?.into_iter().map(|k| (k.id, k.name)).collect();
        let buckets = buckets
            .into_iter()
            .enumerate()
            .map(|(i, (tally, bucket_savings))| {
                let s = bucket_savings.finish();
                Bucket {
                    start_ms: start + i as i64 * bucket_ms,
                    requests: tally.requests,
                    errors: tally.errors,
                    cost_usd: tally.cost_usd,
                    baseline_cost_usd: s.baseline_cost_usd,
                    saved_usd: s.saved_usd,
                    quality_kept: s.quality_kept,
                    latency: tally.samples.finish(),
                }
            })
            .collect();
        Ok(Overview {
            since_ms: start,
            until_ms,
            bucket_ms,
            requests: all.requests,
            errors: all.errors,
            cost_usd: all.cost_usd,
            savings: savings.finish(),
            latency: all.samples.finish(),
            buckets,
            by_model: slices(by_model, &HashMap::new()),
            by_key: slices(by_key, &names),
        })
    }
}

/// Most expensive first, then most requests, then by name.
fn slices(groups: BTreeMap<String, Tally>, names: &HashMap<String, String>) -> Vec<Slice> {
    let mut out: Vec<Slice> = groups
        .into_iter()
        .map(|(name, tally)| {
            let key_name = names.get(&name).cloned();
            tally.slice(name, key_name)
        })
        .collect();
    out.sort_by(|a, b| {
        b.cost_usd
            .total_cmp(&a.cost_usd)
            .then(b.requests.cmp(&a.requests))
            .then(a.name.cmp(&b.name))
    });
    out
}

/// Requests and the models that served them, for one skill or difficulty band.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mix {
    pub name: String,
    pub requests: u64,
    /// Model → requests; `(failed)` for requests no model answered.
    pub models: BTreeMap<String, u64>,
}

/// One band of the difficulty map: difficulties in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Band {
    pub from: f64,
    pub to: f64,
    pub requests: u64,
    pub models: BTreeMap<String, u64>,
}

/// The logged adaptive traffic as if the relative profile had quality target `target`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurvePoint {
    pub target: f64,
    /// Mean expected cost of the model the policy would choose, US$ per request.
    pub mean_cost_usd: f64,
    /// Mean predicted quality of that model.
    pub mean_quality: f64,
    /// Predicted quality kept against the strongest candidate (target 1.0), and the cost
    /// against it.
    pub quality_kept: f64,
    pub cost_share: f64,
    /// Which models it would choose.
    pub models: BTreeMap<String, u64>,
    /// The profile whose target this is (`auto`, `auto:cheap`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// The routing page: what `auto` chose, and what moving the target would change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Routing {
    pub since_ms: i64,
    /// Adaptive requests in the window.
    pub requests: u64,
    /// Requests per profile (`auto`, `auto:cheap`, …).
    pub by_profile: BTreeMap<String, u64>,
    /// Per top skill, most requested first.
    pub by_skill: Vec<Mix>,
    /// The difficulty map: equal bands from the easiest to the hardest request.
    pub difficulty: Vec<Band>,
    /// The cost-quality curve over the requests whose candidates were logged.
    pub curve: Vec<CurvePoint>,
    /// The relative profiles' targets as configured.
    pub targets: TargetsView,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TargetsView {
    pub balanced: f64,
    pub cheap: f64,
}

/// An adaptive request as the routing page reads it.
struct Routed {
    difficulty: Option<f64>,
    top_skill: Option<String>,
    served: String,
    candidates: Vec<Candidate>,
}

impl Routing {
    pub fn compute(
        store: &mut Store,
        since_ms: i64,
        targets: Targets,
    ) -> Result<Routing, StoreError> {
        let mut routed = Vec::new();
        let mut by_profile: BTreeMap<String, u64> = BTreeMap::new();
        store.scan(since_ms, |row| {
            let Some(profile) = &row.profile else { return };
            *by_profile.entry(profile.clone()).or_default() += 1;
            let served = match (&row.model, row.status < 400) {
                (Some(model), true) => model.clone(),
                _ => "(failed)".into(),
            };
            routed.push(Routed {
                difficulty: row.difficulty,
                top_skill: row.skills.as_deref().and_then(top_skill),
                served,
                candidates: row
                    .candidates
                    .as_deref()
                    .and_then(|c| serde_json::from_str(c).ok())
                    .unwrap_or_default(),
            });
        })?;
        let targets = TargetsView {
            balanced: f64::from(targets.balanced),
            cheap: f64::from(targets.cheap),
        };
        Ok(Routing {
            since_ms,
            requests: routed.len() as u64,
            by_profile,
            by_skill: by_skill(&routed),
            difficulty: difficulty_map(&routed),
            curve: curve(&routed, targets),
            targets,
        })
    }
}

/// The skill with the largest weight in a logged `{"skill": weight, …}`.
pub fn top_skill(skills: &str) -> Option<String> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(skills) else {
        return None;
    };
    map.into_iter()
        .filter_map(|(name, weight)| Some((name, weight.as_f64()?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(name, _)| name)
}

fn by_skill(routed: &[Routed]) -> Vec<Mix> {
    let mut mixes: BTreeMap<String, Mix> = BTreeMap::new();
    for r in routed {
        let name = r.top_skill.clone().unwrap_or_else(|| "(unknown)".into());
        let mix = mixes.entry(name.clone()).or_insert_with(|| Mix {
            name,
            requests: 0,
            models: BTreeMap::new(),
        });
        mix.requests += 1;
        *mix.models.entry(r.served.clone()).or_default() += 1;
    }
    let mut out: Vec<Mix> = mixes.into_values().collect();
    out.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.name.cmp(&b.name)));
    out
}

/// Equal-width bands (a multiple of 0.25 wide, at most [`MAX_BANDS`]) covering every
/// difficulty seen, each with the models that served its requests.
fn difficulty_map(routed: &[Routed]) -> Vec<Band> {
    let seen: Vec<(f64, &str)> = routed
        .iter()
        .filter_map(|r| Some((r.difficulty?, r.served.as_str())))
        .filter(|(d, _)| d.is_finite())
        .collect();
    let (Some(min), Some(max)) = (
        seen.iter().map(|s| s.0).min_by(f64::total_cmp),
        seen.iter().map(|s| s.0).max_by(f64::total_cmp),
    ) else {
        return Vec::new();
    };
    let lo = (min * 4.0).floor() / 4.0;
    let hi = ((max * 4.0).floor() + 1.0) / 4.0;
    let width = (((hi - lo) / MAX_BANDS) * 4.0).ceil().max(1.0) / 4.0;
    let count = ((hi - lo) / width).ceil() as usize;
    let mut bands: Vec<Band> = (0..count)
        .map(|i| Band {
            from: lo + i as f64 * width,
            to: lo + (i + 1) as f64 * width,
            requests: 0,
            models: BTreeMap::new(),
        })
        .collect();
    for (difficulty, served) in seen {
        let index = (((difficulty - lo) / width) as usize).min(count - 1);
        bands[index].requests += 1;
        *bands[index].models.entry(served.to_string()).or_default() += 1;
    }
    bands
}

/// What `policy::choose_at` picks at each target over the logged candidates: the effect of
/// moving a relative profile's target, without classifying anything again.
fn curve(routed: &[Routed], targets: TargetsView) -> Vec<CurvePoint> {
    let logged: Vec<(&[Candidate], &Candidate)> = routed
        .iter()
        .filter_map(|r| {
            let best = policy::choose_at(&r.candidates, 1.0)?;
            Some((r.candidates.as_slice(), best))
        })
        .collect();
    if logged.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<(f64, Option<String>)> = CURVE_TARGETS.iter().map(|t| (*t, None)).collect();
    for (target, profile) in [(targets.balanced, "auto"), (targets.cheap, "auto:cheap")] {
        match points.iter_mut().find(|p| (p.0 - target).abs() < 1e-6) {
            Some(point) => point.1 = Some(profile.to_string()),
            None => points.push((target, Some(profile.to_string()))),
        }
    }
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = logged.len() as f64;
    let quality = |c: &Candidate| f64::from(c.quality.unwrap_or(0.0));
    let best_cost: f64 = logged.iter().map(|(_, best)| best.cost_usd).sum();
    let best_quality: f64 = logged.iter().map(|(_, best)| quality(best)).sum();
    points
        .into_iter()
        .map(|(target, profile)| {
            let (mut cost, mut q) = (0.0, 0.0);
            let mut models: BTreeMap<String, u64> = BTreeMap::new();
            for (candidates, best) in &logged {
                let chosen = policy::choose_at(candidates, target as f32).unwrap_or(best);
                cost += chosen.cost_usd;
                q += quality(chosen);
                *models.entry(chosen.model.clone()).or_default() += 1;
            }
            CurvePoint {
                target,
                mean_cost_usd: cost / n,
                mean_quality: q / n,
                quality_kept: if best_quality > 0.0 {
                    q / best_quality
                } else {
                    1.0
                },
                cost_share: if best_cost > 0.0 {
                    cost / best_cost
                } else {
                    1.0
                },
                models,
                profile,
            }
        })
        .collect()
}

/// One line of the requests page: the logged line and its top skill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListedRequest {
    #[serde(flatten)]
    pub line: RequestLine,
    pub top_skill: Option<String>,
}

impl ListedRequest {
    pub fn of(line: RequestLine) -> ListedRequest {
        let top_skill = line.skills.as_deref().and_then(top_skill);
        ListedRequest { line, top_skill }
    }
}

/// One request in full: the classifier's view, the candidates, the fallbacks, the texts when
/// stored, and the verdicts on it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestView {
    pub id: String,
    pub ts_ms: i64,
    pub endpoint: String,
    pub key_id: String,
    pub requested: String,
    /// `auto` or `explicit`.
    pub route: String,
    pub profile: Option<String>,
    pub model: Option<String>,
    pub status: i64,
    pub stream: bool,
    /// The models that failed before the answering one, as `model (status)`.
    pub fallbacks: Vec<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_usd: f64,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub signals: Vec<String>,
    /// For adaptive requests: difficulty, tool need and skill weights.
    pub classifier: Option<ClassifierView>,
    /// Every model the policy considered, with predicted quality and expected cost.
    pub candidates: Option<Value>,
    /// `{"system"?, "messages"}` as the client sent them, when text is stored.
    pub prompt: Option<Value>,
    pub answer: Option<String>,
    pub feedback: Vec<StoredFeedback>,
    /// Preferences between this answer and another to the same prompt, from this side.
    pub preferences: Vec<StoredPreference>,
    pub labels: Vec<StoredLabel>,
    /// Other answers to the same prompt logged within a day, to compare this one with.
    pub same_prompt: Vec<SamePrompt>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassifierView {
    pub difficulty: Option<f64>,
    pub tool_need: Option<f64>,
    pub skills: Option<Value>,
}

impl RequestView {
    pub fn of(found: RequestVerdicts) -> Self {
        let r = found.request;
        let json = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
        let list = |text: &str, separator: &str| -> Vec<String> {
            text.split(separator)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        let classifier = (r.route == "auto").then(|| ClassifierView {
            difficulty: r.difficulty,
            tool_need: r.tool_need,
            skills: json(r.skills.clone()),
        });
        RequestView {
            fallbacks: list(&r.fallbacks, ", "),
            signals: list(r.signals.as_deref().unwrap_or(""), ","),
            classifier,
            candidates: json(r.candidates),
            prompt: json(r.prompt),
            id: r.id,
            ts_ms: r.ts_ms,
            endpoint: r.endpoint,
            key_id: r.key_id,
            requested: r.requested,
            route: r.route,
            profile: r.profile,
            model: r.model,
            status: r.status,
            stream: r.stream,
            prompt_tokens: r.tokens[0],
            completion_tokens: r.tokens[1],
            cached_tokens: r.tokens[2],
            cache_write_tokens: r.tokens[3],
            cost_usd: r.cost_usd,
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            answer: r.answer,
            feedback: found.feedback,
            preferences: found.preferences,
            labels: found.labels,
            same_prompt: found.same_prompt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(10.0));
        assert_eq!(percentile(&values, 95.0), Some(19.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_top_skill_is_the_heaviest() {
        assert_eq!(
            top_skill(r#"{"code": 0.2, "math": 0.7, "writing": 0.1}"#).as_deref(),
            Some("math")
        );
        assert_eq!(top_skill("not json"), None);
    }

    fn routed(difficulty: f64, served: &str, candidates: &str) -> Routed {
        Routed {
            difficulty: Some(difficulty),
            top_skill: None,
            served: served.into(),
            candidates: serde_json::from_str(candidates).unwrap(),
        }
    }

    #[test]
    fn the_difficulty_map_covers_every_request_in_equal_bands() {
        let requests = [
            routed(-0.9, "small", "[]"),
            routed(-0.8, "small", "[]"),
            routed(0.1, "big", "[]"),
            routed(1.2, "big", "[]"),
        ];
        let bands = difficulty_map(&requests);
        assert_eq!(bands.first().unwrap().from, -1.0);
        assert!(bands.last().unwrap().to > 1.2);
        assert_eq!(bands.iter().map(|b| b.requests).sum::<u64>(), 4);
        let first = &bands[0];
        assert_eq!((first.requests, first.models["small"]), (2, 2));
        for pair in bands.windows(2) {
            assert_eq!(pair[0].to, pair[1].from);
        }
    }

    #[test]
    fn the_curve_trades_cost_for_quality_as_the_policy_would() {
        // The cheap model is predicted at 0.6, the strong one at 0.9: targets up to 2/3 of the
        // best take the cheap one.
        let candidates = r#"[{"model": "cheap", "quality": 0.6, "cost_usd": 0.001},
                             {"model": "strong", "quality": 0.9, "cost_usd": 0.01}]"#;
        let requests = [routed(0.0, "strong", candidates)];
        let points = curve(
            &requests,
            TargetsView {
                balanced: 0.95,
                cheap: 0.6,
            },
        );
        let at = |t: f64| points.iter().find(|p| (p.target - t).abs() < 1e-9).unwrap();
        assert_eq!(at(0.6).models.keys().collect::<Vec<_>>(), ["cheap"]);
        assert_eq!(at(0.6).profile.as_deref(), Some("auto:cheap"));
        assert!((at(0.6).quality_kept - 0.6 / 0.9).abs() < 1e-6);
        assert!((at(0.6).cost_share - 0.1).abs() < 1e-9);
        assert_eq!(at(0.7).models.keys().collect::<Vec<_>>(), ["strong"]);
        assert_eq!(at(0.95).profile.as_deref(), Some("auto"));
        assert_eq!(at(1.0).quality_kept, 1.0);
    }
}
