//! What the log says routing did and saved: requests, tokens and cost by model, key and
//! profile; the mix of models `auto` chose; and the counterfactual cost of sending each
//! adaptive request to a baseline model instead. `triage report` prints it, `GET /v1/usage`
//! serves it as JSON; both call [`Report::compute`].

use std::collections::BTreeMap;
use std::fmt;

use rusqlite::{Connection, params};
use serde::Serialize;
use serde_json::Value;

use crate::catalog::{Catalog, Usage};

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
}

impl Report {
    /// Reads the log and prices the counterfactual with `catalog`.
    pub fn compute(
        conn: &Connection,
        catalog: &Catalog,
        options: &ReportOptions,
    ) -> rusqlite::Result<Report> {
        let since = options.since_ms.unwrap_or(i64::MIN);
        let group = |column: &str| groups(conn, column, since);
        let total = group("'all'")?.pop().unwrap_or_else(|| Group {
            name: "all".into(),
            requests: 0,
            errors: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: 0.0,
        });
        let by_model = group("COALESCE(model, '(none)')")?;
        let by_key = group("key_id")?;
        let by_profile = group("COALESCE(profile, 'explicit')")?;
        let mut mix = conn.prepare(
            "SELECT COALESCE(model, '(none)'), COUNT(*) FROM outcomes
             WHERE route = 'auto' AND status < 400 AND ts_ms >= ?1
             GROUP BY 1 ORDER BY 2 DESC, 1",
        )?;
        let counts: Vec<(String, u64)> = mix
            .query_map([since], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<Result<_, _>>()?;
        let auto_total: u64 = counts.iter().map(|(_, n)| n).sum();
        let routing_mix = counts
            .into_iter()
            .map(|(model, requests)| Share {
                model,
                requests,
                share: requests as f64 / auto_total as f64,
            })
            .collect();
        let savings = savings(conn, catalog, since, options.baseline.as_deref())?;
        Ok(Report {
            since_ms: options.since_ms,
            total,
            by_model,
            by_key,
            by_profile,
            routing_mix,
            savings,
        })
    }
}

fn groups(conn: &Connection, column: &str, since: i64) -> rusqlite::Result<Vec<Group>> {
    let sql = format!(
        "SELECT {column}, COUNT(*), SUM(status >= 400), SUM(prompt_tokens),
         SUM(completion_tokens), SUM(cost_usd)
         FROM outcomes WHERE ts_ms >= ?1 GROUP BY 1 ORDER BY 6 DESC, 2 DESC, 1"
    );
    let mut statement = conn.prepare(&sql)?;
    statement
        .query_map(params![since], |r| {
            Ok(Group {
                name: r.get(0)?,
                requests: r.get::<_, i64>(1)? as u64,
                errors: r.get::<_, i64>(2)? as u64,
                prompt_tokens: r.get::<_, i64>(3)? as u64,
                completion_tokens: r.get::<_, i64>(4)? as u64,
                cost_usd: r.get(5)?,
            })
        })?
        .collect()
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

fn savings(
    conn: &Connection,
    catalog: &Catalog,
    since: i64,
    baseline: Option<&str>,
) -> rusqlite::Result<Savings> {
    let mut statement = conn.prepare(
        "SELECT model, candidates, prompt_tokens, completion_tokens, cached_tokens,
         cache_write_tokens, cost_usd FROM outcomes
         WHERE route = 'auto' AND status < 400 AND ts_ms >= ?1",
    )?;
    let mut rows = statement.query([since])?;
    let mut s = Savings {
        baseline: baseline.unwrap_or("strongest candidate").to_string(),
        ..Savings::default()
    };
    let (mut quality_sum, mut baseline_quality_sum, mut rated) = (0.0, 0.0, 0u64);
    while let Some(row) = rows.next()? {
        let answered: Option<String> = row.get(0)?;
        let logged: Option<String> = row.get(1)?;
        let usage = Usage {
            prompt_tokens: row.get::<_, i64>(2)? as u64,
            completion_tokens: row.get::<_, i64>(3)? as u64,
            cached_tokens: row.get::<_, i64>(4)? as u64,
            cache_write_tokens: row.get::<_, i64>(5)? as u64,
        };
        let cost: f64 = row.get(6)?;
        let logged = candidates(logged.as_deref().unwrap_or(""));
        let baseline_id = match baseline {
            Some(id) => Some(id.to_string()),
            None => strongest(&logged).map(|c| c.model.clone()),
        };
        let Some(model) = baseline_id.as_deref().and_then(|id| catalog.model(id)) else {
            s.unpriced += 1;
            continue;
        };
        s.requests += 1;
        s.actual_cost_usd += cost;
        s.baseline_cost_usd += model.cost(&usage);
        let quality_of = |id: &str| {
            logged
                .iter()
                .find(|c| c.model == id)
                .and_then(|c| c.quality)
        };
        if let (Some(q), Some(b)) = (
            answered.as_deref().and_then(quality_of),
            quality_of(&model.id),
        ) {
            quality_sum += q;
            baseline_quality_sum += b;
            rated += 1;
        }
    }
    s.saved_usd = s.baseline_cost_usd - s.actual_cost_usd;
    s.saved_pct = if s.baseline_cost_usd > 0.0 {
        100.0 * s.saved_usd / s.baseline_cost_usd
    } else {
        0.0
    };
    if rated > 0 {
        s.mean_quality = Some(quality_sum / rated as f64);
        s.mean_baseline_quality = Some(baseline_quality_sum / rated as f64);
        s.quality_kept = (baseline_quality_sum > 0.0).then(|| quality_sum / baseline_quality_sum);
    }
    Ok(s)
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
                writeln!(
                    f,
                    "  {:<36} {:>9} {:>7} {:>12} {:>12} {:>12.6}",
                    g.name, g.requests, g.errors, g.prompt_tokens, g.completion_tokens, g.cost_usd
                )?;
            }
        }
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

/// `triage report`: the report of a log file, as text or JSON.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The SQLite outcome log (default: the config's `[log] path`, else triage.db).
    #[arg(long)]
    pub db: Option<std::path::PathBuf>,
    /// Config file whose catalog prices the baseline (default: the built-in catalog).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Only requests from this date on (`2026-11-25`, UTC, or `2026-11-25T10:00:00Z`).
    #[arg(long)]
    pub since: Option<String>,
    /// Compare adaptive requests with this model (default: each one's strongest candidate).
    #[arg(long)]
    pub baseline: Option<String>,
    /// Print one JSON object (the same as `GET /v1/usage`).
    #[arg(long)]
    pub json: bool,
}

/// Runs `triage report`.
pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let (config, file) = match &args.config {
        Some(path) => (crate::config::Config::load(path)?, path.clone()),
        None => (
            crate::config::Config::default(),
            std::path::PathBuf::from("(built-in defaults)"),
        ),
    };
    let catalog = Catalog::build(&config, &file, |var| std::env::var(var).ok())?;
    let db = args.db.clone().unwrap_or(config.log.path);
    let since_ms = match &args.since {
        Some(text) => Some(
            super::parse_date(text)
                .with_context(|| format!("--since {text}: expected a date like 2026-11-25"))?,
        ),
        None => None,
    };
    if let Some(baseline) = &args.baseline {
        anyhow::ensure!(
            catalog.model(baseline).is_some(),
            "--baseline {baseline}: not a model of the catalog"
        );
    }
    let store = super::Store::open_read(&db)
        .with_context(|| format!("cannot open the outcome log {}", db.display()))?;
    let options = ReportOptions {
        since_ms,
        baseline: args.baseline.clone(),
    };
    let report = Report::compute(store.connection(), &catalog, &options)
        .with_context(|| format!("cannot read the outcome log {}", db.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
