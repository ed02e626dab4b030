//! `triage eval` end to end, against a fake scorer: metrics by hand, data errors, the ability
//! fit, and synthetic data where the planted difficulty is known.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use triage_learn::eval::abilities::{PRIOR_PRECISION, SPREAD_PRECISION, fit_ability};
use triage_learn::eval::metrics::{
    CostPoint, SharePoint, aiq, apgr, cost_at_quality, cpt, non_decreasing_hull, oracle_curve,
    random_curve, threshold_curve,
};
use triage_learn::eval::{
    AbilitySource, EvalArgs, EvalError, PromptFeatures, Report, Results, Scorer, prompt_hash, run,
};

// ---------------------------------------------------------------- a fake scorer

/// Difficulty from the prompt's length, a one-hot skill from a keyword, an embedding from hashed
/// character trigrams.
struct FakeScorer {
    name: &'static str,
    difficulty: fn(&str) -> f32,
    skills: fn(&str) -> Vec<f32>,
    abilities: HashMap<String, Vec<f32>>,
    training: Option<HashSet<u64>>,
}

impl Scorer for FakeScorer {
    fn features(&self, prompts: &[String]) -> Vec<PromptFeatures> {
        prompts
            .iter()
            .map(|p| PromptFeatures {
                difficulty: (self.difficulty)(p),
                skills: (self.skills)(p),
                embedding: trigram_embedding(p),
            })
            .collect()
    }
    fn known_abilities(&self) -> HashMap<String, Vec<f32>> {
        self.abilities.clone()
    }
    fn name(&self) -> &str {
        self.name
    }
    fn training_prompts(&self) -> Option<HashSet<u64>> {
        self.training.clone()
    }
}

fn trigram_embedding(text: &str) -> Vec<f32> {
    const DIMS: usize = 64;
    let chars: Vec<char> = text.to_lowercase().chars().collect();
    let mut v = vec![0.0f32; DIMS];
    for w in chars.windows(3) {
        let mut h: u64 = 0xcbf29ce484222325;
        for c in w {
            h ^= u64::from(*c);
            h = h.wrapping_mul(0x100000001b3);
        }
        v[(h % DIMS as u64) as usize] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// Synthetic prompts carry their planted difficulty in their length: `topic question id` and
/// `4 × (b + 3)` padding words.
fn planted_difficulty(prompt: &str) -> f32 {
    (prompt.split_whitespace().count() as f32 - 3.0) / 4.0 - 3.0
}

fn topic_skill(prompt: &str) -> Vec<f32> {
    if prompt.starts_with("math") {
        vec![1.0, 0.0]
    } else {
        vec![0.0, 1.0]
    }
}

fn knowing(abilities: &[(&str, [f32; 2])]) -> FakeScorer {
    FakeScorer {
        name: "fake-knows-difficulty",
        difficulty: planted_difficulty,
        skills: topic_skill,
        abilities: abilities
            .iter()
            .map(|(m, t)| (m.to_string(), t.to_vec()))
            .collect(),
        training: None,
    }
}

fn blind() -> FakeScorer {
    FakeScorer {
        name: "fake-blind",
        difficulty: |_| 0.0,
        skills: |_| vec![0.5, 0.5],
        abilities: HashMap::new(),
        training: None,
    }
}

// ---------------------------------------------------------------- synthetic data

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

struct Planted {
    model: &'static str,
    theta: [f64; 2],
    cost: Option<f64>,
}

/// Rows of `n` prompts × the planted models, outcomes drawn from the item-response model.
fn synthetic_rows(n: usize, models: &[Planted], seed: u64) -> Vec<serde_json::Value> {
    let mut rng = Rng(seed);
    let mut rows = Vec::new();
    for i in 0..n {
        let math = rng.next() < 0.5;
        let pads = (rng.next() * 24.0).round() as usize; // b = pads / 4 − 3 ∈ [−3, 3]
        let b = pads as f64 / 4.0 - 3.0;
        let prompt = format!(
            "{} question q{i}{}",
            if math { "math" } else { "prose" },
            " pad".repeat(pads)
        );
        for m in models {
            let ability = if math { m.theta[0] } else { m.theta[1] };
            let correct = rng.next() < sigmoid(ability - b);
            let mut row = json!({
                "source": "synthetic", "subset": if math { "math" } else { "prose" },
                "prompt_id": format!("q{i}"), "prompt": prompt, "model": m.model,
                "label": "correct", "score": if correct { 1.0 } else { 0.0 },
            });
            if let Some(cost) = m.cost {
                row["cost"] = json!(cost * (1.0 + pads as f64 / 24.0));
            }
            rows.push(row);
        }
    }
    rows
}

fn write_rows(dir: &Path, name: &str, rows: &[serde_json::Value]) -> PathBuf {
    let path = dir.join(name);
    let mut text = String::new();
    for row in rows {
        text.push_str(&row.to_string());
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

const STRONG: Planted = Planted {
    model: "strong",
    theta: [2.0, 1.0],
    cost: None,
};
const WEAK: Planted = Planted {
    model: "weak",
    theta: [-0.5, 0.5],
    cost: None,
};

fn pair_args(data: &Path) -> EvalArgs {
    let mut args = EvalArgs::new(data);
    args.strong = Some("strong".into());
    args.weak = Some("weak".into());
    args
}

fn pair(report: &Report) -> &triage_learn::eval::PairResults {
    match &report.results {
        Results::TwoModel(p) => p,
        _ => panic!("expected two-model results"),
    }
}

fn multi(report: &Report) -> &triage_learn::eval::MultiResults {
    match &report.results {
        Results::MultiModel(m) => m,
        _ => panic!("expected multi-model results"),
    }
}

// ---------------------------------------------------------------- metrics by hand

// strong = [1, 1, 1, 0], weak = [1, 0, 0, 0]: strong 0.75, weak 0.25; the strong model gains on
// prompts 1 and 2 only.
const STRONG_TINY: [f64; 4] = [1.0, 1.0, 1.0, 0.0];
const WEAK_TINY: [f64; 4] = [1.0, 0.0, 0.0, 0.0];

#[test]
fn oracle_apgr_and_cpt_by_hand() {
    let curve = oracle_curve(&STRONG_TINY, &WEAK_TINY);
    // (1 + min(4p, 2)) / 4 at p = 0, 0.1 … 1.
    let expected = [
        0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75,
    ];
    for (point, want) in curve.iter().zip(expected) {
        assert!((point.quality - want).abs() < 1e-12, "{curve:?}");
    }
    // AUC = 0.1 × (Σ − (first + last) / 2) = 0.625; APGR = (0.625 − 0.25) / 0.5.
    assert!((apgr(&curve, 0.75, 0.25).unwrap() - 0.75).abs() < 1e-12);
    assert!((cpt(&curve, 0.75, 0.25, 0.5) - 25.0).abs() < 1e-9);
    assert!((cpt(&curve, 0.75, 0.25, 0.8) - 40.0).abs() < 1e-9);
}

#[test]
fn threshold_curve_follows_routellm_quantiles() {
    // Thresholds at the deciles of [0.1, 0.3, 0.5, 0.9] send 4, 3, 3, 3, 2, 2, 2, 1, 1, 1, 0
    // prompts to the strong model; this router ranks the two gaining prompts first.
    let scores = [0.1, 0.9, 0.5, 0.3];
    let curve = threshold_curve(&scores, &STRONG_TINY, &WEAK_TINY, 10);
    let pcts: Vec<f64> = curve.iter().map(|p| p.strong_pct).collect();
    assert_eq!(
        pcts,
        [
            0.0, 25.0, 25.0, 25.0, 50.0, 50.0, 50.0, 75.0, 75.0, 75.0, 100.0
        ]
    );
    let at = |pct: f64| curve.iter().find(|p| p.strong_pct == pct).unwrap().quality;
    assert_eq!(
        (at(0.0), at(25.0), at(50.0), at(75.0), at(100.0)),
        (0.25, 0.5, 0.75, 0.75, 0.75)
    );
    // Trapezoids 0.09375 + 0.15625 + 0.1875 + 0.1875 = 0.625 → APGR 0.75, CPT(80%) 40%.
    assert!((apgr(&curve, 0.75, 0.25).unwrap() - 0.75).abs() < 1e-12);
    assert!((cpt(&curve, 0.75, 0.25, 0.8) - 40.0).abs() < 1e-9);
}

#[test]
fn random_router_recovers_half_the_gap() {
    // In expectation the random curve is the straight line from weak to strong: APGR 0.5.
    let curve = random_curve(&STRONG_TINY, &WEAK_TINY, 4000, 1);
    let value = apgr(&curve, 0.75, 0.25).unwrap();
    assert!((value - 0.5).abs() < 0.02, "random APGR {value}");
    // RouteLLM's ten draws are deterministic here too.
    assert_eq!(
        random_curve(&STRONG_TINY, &WEAK_TINY, 10, 3),
        random_curve(&STRONG_TINY, &WEAK_TINY, 10, 3)
    );
}

#[test]
fn cpt_clamps_like_np_interp() {
    let curve = [
        SharePoint {
            strong_pct: 0.0,
            quality: 0.5,
        },
        SharePoint {
            strong_pct: 100.0,
            quality: 0.6,
        },
    ];
    assert_eq!(cpt(&curve, 0.9, 0.5, 0.8), 100.0);
    assert_eq!(cpt(&curve, 0.55, 0.1, 0.5), 0.0);
}

#[test]
fn convex_hull_area_on_three_points() {
    let p = |cost, quality| CostPoint { cost, quality };
    // (2, 0.6) lies under the chord from (1, 0.5) to (4, 0.9), which reads 0.633 there.
    let hull = non_decreasing_hull(&[p(2.0, 0.6), p(1.0, 0.5), p(4.0, 0.9)]);
    assert_eq!(hull, vec![p(1.0, 0.5), p(4.0, 0.9)]);
    // Area 3 × (0.5 + 0.9) / 2 = 2.1 over the largest cost 4.
    assert!((aiq(std::slice::from_ref(&hull))[0].unwrap() - 0.525).abs() < 1e-12);
    // Beside a hull that reaches cost 5, this one is extended flat: (2.1 + 0.9) / 5.
    let other = vec![p(0.5, 0.4), p(5.0, 0.95)];
    let both = aiq(&[hull.clone(), other]);
    assert!((both[0].unwrap() - 0.6).abs() < 1e-12);
    assert!((both[1].unwrap() - 4.5 * 1.35 / 2.0 / 5.0).abs() < 1e-12);
    // A point past the best quality is not on the non-decreasing hull.
    let falling = non_decreasing_hull(&[p(1.0, 0.5), p(2.0, 0.8), p(3.0, 0.7)]);
    assert_eq!(falling, vec![p(1.0, 0.5), p(2.0, 0.8)]);
    assert!((cost_at_quality(&hull, 0.7).unwrap() - 2.5).abs() < 1e-12);
    assert_eq!(cost_at_quality(&hull, 0.95), None);
}

// ---------------------------------------------------------------- the ability fit

#[test]
fn fit_recovers_a_planted_ability() {
    let planted = [1.5f64, -0.5, 0.8];
    let mut rng = Rng(11);
    let mut features = Vec::new();
    let mut targets = Vec::new();
    for _ in 0..6000 {
        let raw: Vec<f64> = (0..3).map(|_| rng.next() + 0.05).collect();
        let total: f64 = raw.iter().sum();
        let skills: Vec<f32> = raw.iter().map(|r| (r / total) as f32).collect();
        let difficulty = (rng.next() * 4.0 - 2.0) as f32;
        let logit: f64 = planted
            .iter()
            .zip(&skills)
            .map(|(t, g)| t * f64::from(*g))
            .sum::<f64>()
            - f64::from(difficulty);
        targets.push(if rng.next() < sigmoid(logit) {
            1.0
        } else {
            0.0
        });
        features.push(PromptFeatures {
            difficulty,
            skills,
            embedding: vec![],
        });
    }
    let refs: Vec<&PromptFeatures> = features.iter().collect();
    let theta = fit_ability(&refs, &targets, &[0.0; 3], PRIOR_PRECISION, 0.0);
    for (got, want) in theta.iter().zip(planted) {
        assert!(
            (f64::from(*got) - want).abs() < 0.25,
            "fitted {theta:?}, planted {planted:?}"
        );
    }
    // The spread penalty pulls the skills together around the same mean ability, keeping their
    // order.
    let held = fit_ability(
        &refs,
        &targets,
        &[0.0; 3],
        PRIOR_PRECISION,
        SPREAD_PRECISION,
    );
    let (mean, mean_held) = (
        theta.iter().sum::<f32>() / 3.0,
        held.iter().sum::<f32>() / 3.0,
    );
    assert!((mean - mean_held).abs() < 0.1, "{theta:?} {held:?}");
    assert!(held[0] > held[2] && held[2] > held[1], "{held:?}");
    assert!(
        held[0] - held[1] < theta[0] - theta[1],
        "{theta:?} {held:?}"
    );
}

// ---------------------------------------------------------------- data errors

fn row_error_line(result: Result<Report, EvalError>) -> (usize, String) {
    match result {
        Err(EvalError::Row { line, message, .. }) => (line, message),
        Err(other) => panic!("expected a row error, got {other}"),
        Ok(_) => panic!("expected a row error, got a report"),
    }
}

#[test]
fn malformed_rows_are_reported_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows: Vec<String> = synthetic_rows(5, &[STRONG, WEAK], 1)
        .iter()
        .map(|r| r.to_string())
        .collect();
    let scorer = blind();

    let mut broken = rows.clone();
    broken[3] = "{\"prompt_id\": \"q1\", \"model\": ".into();
    std::fs::write(dir.path().join("a.jsonl"), broken.join("\n")).unwrap();
    let (line, message) = row_error_line(run(&pair_args(&dir.path().join("a.jsonl")), &scorer));
    assert_eq!(line, 4);
    assert!(message.contains("JSON"), "{message}");

    rows[6] = json!({"prompt_id": "q3", "prompt": "x", "model": "weak"}).to_string();
    std::fs::write(dir.path().join("b.jsonl"), rows.join("\n")).unwrap();
    let (line, message) = row_error_line(run(&pair_args(&dir.path().join("b.jsonl")), &scorer));
    assert_eq!((line, message.as_str()), (7, "missing `score`"));

    rows[6] = String::new();
    std::fs::write(dir.path().join("c.jsonl"), rows.join("\n")).unwrap();
    let (line, message) = row_error_line(run(&pair_args(&dir.path().join("c.jsonl")), &scorer));
    assert_eq!((line, message.as_str()), (7, "empty line"));

    let error = run(&pair_args(&dir.path().join("missing.jsonl")), &scorer)
        .err()
        .unwrap();
    assert!(error.to_string().contains("missing.jsonl"), "{error}");
}

#[test]
fn unknown_models_and_missing_prices_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_rows(
        dir.path(),
        "d.jsonl",
        &synthetic_rows(50, &[STRONG, WEAK], 2),
    );
    let mut args = pair_args(&path);
    args.strong = Some("gpt-9".into());
    let error = run(&args, &blind()).err().unwrap().to_string();
    assert!(
        error.contains("gpt-9") && error.contains("strong, weak"),
        "{error}"
    );

    let error = run(&EvalArgs::new(&path), &blind())
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("no cost for strong, weak"), "{error}");
}

#[test]
fn models_that_never_meet_on_a_prompt_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = synthetic_rows(40, &[STRONG, WEAK], 9);
    for row in &mut rows {
        if row["model"] == "weak" {
            row["prompt_id"] = json!(format!("other-{}", row["prompt_id"].as_str().unwrap()));
        }
    }
    let path = write_rows(dir.path(), "apart.jsonl", &rows);
    let error = run(&EvalArgs::new(&path), &blind())
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("0 prompts have outcomes for every compared model"),
        "{error}"
    );
    assert!(error.contains("strong 40, weak 40"), "{error}");
}

#[test]
fn gzip_and_plain_files_read_alike_and_prompts_come_from_a_prompts_file() {
    let dir = tempfile::tempdir().unwrap();
    let rows = synthetic_rows(200, &[STRONG, WEAK], 3);
    let plain = write_rows(dir.path(), "plain.jsonl", &rows);
    let gz = dir.path().join("rows.jsonl.gz");
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    encoder.write_all(&std::fs::read(&plain).unwrap()).unwrap();
    encoder.finish().unwrap();

    // The same outcomes with the text moved to a prompts file, as mmlu_pro ships.
    let mut prompts = Vec::new();
    let mut outcomes = Vec::new();
    for row in &rows {
        if row["model"] == "strong" {
            prompts.push(json!({"prompt_id": row["prompt_id"], "prompt": row["prompt"]}));
        }
        let mut outcome = row.clone();
        outcome.as_object_mut().unwrap().remove("prompt");
        outcomes.push(outcome);
    }
    let split_outcomes = write_rows(dir.path(), "outcomes.jsonl", &outcomes);
    let prompts_file = write_rows(dir.path(), "prompts.jsonl", &prompts);

    let scorer = knowing(&[]);
    let a = serde_json::to_value(pair(&run(&pair_args(&plain), &scorer).unwrap())).unwrap();
    let b = serde_json::to_value(pair(&run(&pair_args(&gz), &scorer).unwrap())).unwrap();
    assert_eq!(a, b);
    let without_prompts = run(&pair_args(&split_outcomes), &scorer).err().unwrap();
    assert!(
        without_prompts
            .to_string()
            .contains("line 1: missing `prompt`"),
        "{without_prompts}"
    );
    let mut args = pair_args(&split_outcomes);
    args.prompts = Some(prompts_file);
    let c = serde_json::to_value(pair(&run(&args, &scorer).unwrap())).unwrap();
    assert_eq!(a, c);
}

#[test]
fn prompts_lacking_a_model_are_left_out_and_seen_prompts_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = synthetic_rows(300, &[STRONG, WEAK], 4);
    rows.retain(|r| !(r["model"] == "weak" && r["prompt_id"].as_str().unwrap().ends_with('7')));
    let path = write_rows(dir.path(), "e.jsonl", &rows);
    let mut scorer = knowing(&[]);
    let seen: HashSet<u64> = rows
        .iter()
        .filter(|r| r["prompt_id"].as_str().unwrap().ends_with('3'))
        .map(|r| prompt_hash(r["prompt"].as_str().unwrap()))
        .collect();
    scorer.training = Some(seen);
    let report = run(&pair_args(&path), &scorer).unwrap();
    assert_eq!(report.data.compared_prompts, 270);
    let seen = report.data.seen_in_training.as_ref().unwrap();
    assert_eq!(seen.calibration + seen.held_out, 30);
    assert!(seen.excluded && seen.held_out > 0);
    assert_eq!(
        report.data.calibration_prompts + report.data.held_out_prompts + seen.held_out,
        270
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("seen in training")),
        "{:?}",
        report.warnings
    );
}

// ---------------------------------------------------------------- end to end

#[test]
fn knowing_the_difficulty_beats_random_in_two_model_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_rows(
        dir.path(),
        "pair.jsonl",
        &synthetic_rows(3000, &[STRONG, WEAK], 5),
    );
    let knows = run(&pair_args(&path), &knowing(&[])).unwrap();
    let routers = &pair(&knows).routers;
    let (triage, random, oracle) = (&routers["triage"], &routers["random"], &routers["oracle"]);
    let (t, r, o) = (
        triage.apgr.unwrap(),
        random.apgr.unwrap(),
        oracle.apgr.unwrap(),
    );
    eprintln!("{knows}");
    assert!(t > r + 0.05, "triage APGR {t} vs random {r}");
    assert!(o > t, "oracle APGR {o} vs triage {t}");
    let (tc, rc) = (triage.cpt50.unwrap(), random.cpt50.unwrap());
    assert!(tc < rc, "CPT(50%) {tc} vs random {rc}");
    assert!((r - 0.5).abs() < 0.05, "random APGR {r}");
    assert_eq!(pair(&knows).strong.ability.source, AbilitySource::Fitted);
    let theta = &pair(&knows).strong.ability.theta;
    assert!(
        (theta[0] - 2.0).abs() < 0.6 && (theta[1] - 1.0).abs() < 0.6,
        "fitted θ {theta:?}"
    );

    // A scorer that sees nothing gives every prompt the same score: no better than random.
    let blind = run(&pair_args(&path), &blind()).unwrap();
    let b = pair(&blind).routers["triage"].apgr.unwrap();
    assert!(t > b + 0.05, "knowing {t} vs blind {b}");

    // Known abilities are used as they are.
    let told = knowing(&[("strong", [2.0, 1.0]), ("weak", [-0.5, 0.5])]);
    let report = run(&pair_args(&path), &told).unwrap();
    assert_eq!(pair(&report).weak.ability.source, AbilitySource::Scorer);
    assert!(pair(&report).routers["triage"].apgr.unwrap() > r + 0.05);

    let json = serde_json::to_value(&knows).unwrap();
    assert_eq!(json["mode"], "two_model");
    for router in ["triage", "knn", "random", "oracle"] {
        for key in ["apgr", "cpt50", "cpt80"] {
            assert!(
                json["routers"][router][key].is_number(),
                "{router}.{key} in {json}"
            );
        }
    }
}

#[test]
fn knowing_the_difficulty_beats_random_in_multi_model_mode() {
    let dir = tempfile::tempdir().unwrap();
    let models = [
        Planted {
            model: "small",
            theta: [-1.0, 0.0],
            cost: Some(1e-4),
        },
        Planted {
            model: "medium",
            theta: [1.0, 0.5],
            cost: Some(5e-4),
        },
        Planted {
            model: "large",
            theta: [2.5, 2.5],
            cost: Some(3e-3),
        },
    ];
    let path = write_rows(dir.path(), "multi.jsonl", &synthetic_rows(3000, &models, 6));
    let report = run(&EvalArgs::new(&path), &knowing(&[])).unwrap();
    eprintln!("{report}");
    let results = multi(&report);
    let aiq_of = |name: &str| results.routers[name].aiq.unwrap();
    let saving_of = |name: &str| results.routers[name].saving_at_95.unwrap();
    // Measured here: the target rule saves more than random at 95% of the best quality, but its
    // AIQ stays just under the random mixtures' (≈0.657 vs 0.665); willingness to pay beats both.
    assert!(
        saving_of("triage") > saving_of("random") + 0.05,
        "{} vs {}",
        saving_of("triage"),
        saving_of("random")
    );
    assert!(
        aiq_of("triage:wtp") > aiq_of("random") + 0.01,
        "{} vs {}",
        aiq_of("triage:wtp"),
        aiq_of("random")
    );
    assert!(aiq_of("oracle") > aiq_of("triage:wtp"));
    assert_eq!(results.best_model, "large");

    // A scorer that sees nothing predicts one quality per model, so each operating point sends
    // every prompt to one model: its hull is the random mixtures' (AIQ 0.665 here, above the
    // knowing scorer's target rule, whose "else the best" sends hopeless prompts to the priciest
    // model).
    let blind_report = run(&EvalArgs::new(&path), &blind()).unwrap();
    let blind_results = multi(&blind_report);
    let blind_saving = blind_results.routers["triage"].saving_at_95.unwrap();
    assert!(
        saving_of("triage") > blind_saving + 0.05,
        "{} vs {blind_saving}",
        saving_of("triage")
    );
    assert!(aiq_of("triage:wtp") > blind_results.routers["triage:wtp"].aiq.unwrap() + 0.01);
    let profiles = &results.profiles;
    assert!(profiles["auto:cheap"].cost <= profiles["auto"].cost);
    assert!(profiles["auto"].cost <= profiles["auto:best"].cost);

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["mode"], "multi_model");
    for router in ["triage", "triage:wtp", "knn", "random", "oracle"] {
        assert!(json["routers"][router]["aiq"].is_number(), "{router}");
        assert!(
            json["routers"][router].get("saving_at_95").is_some(),
            "{router}"
        );
    }
}

#[test]
fn prices_stand_in_for_a_missing_cost_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_rows(
        dir.path(),
        "p.jsonl",
        &synthetic_rows(400, &[STRONG, WEAK], 7),
    );
    let prices = dir.path().join("prices.toml");
    std::fs::write(
        &prices,
        "[strong]\ninput_per_mtok = 10\noutput_per_mtok = 30\n[weak]\ninput_per_mtok = 0.5\noutput_per_mtok = 1.5\n",
    )
    .unwrap();
    let mut args = EvalArgs::new(&path);
    args.prices = Some(prices);
    let report = run(&args, &knowing(&[])).unwrap();
    let results = multi(&report);
    assert_eq!(results.output_tokens, Some(300));
    assert!(results.models["strong"].cost > 10.0 * results.models["weak"].cost);
}

#[test]
fn plots_are_written_as_svg_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_rows(
        dir.path(),
        "plot.jsonl",
        &synthetic_rows(300, &[STRONG, WEAK], 8),
    );
    for name in ["pair.svg", "pair.png"] {
        let mut args = pair_args(&path);
        args.plot = Some(dir.path().join(name));
        match run(&args, &knowing(&[])) {
            Ok(_) => {}
            Err(EvalError::Plot { message, .. }) if message.contains("no TrueType font") => {
                eprintln!("skipped: {message}");
                return;
            }
            Err(other) => panic!("{other}"),
        }
    }
    let svg = std::fs::read_to_string(dir.path().join("pair.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("oracle"));
    let png = std::fs::read(dir.path().join("pair.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));

    let mut args = EvalArgs::new(&path);
    args.prices = Some(dir.path().join("prices.json"));
    std::fs::write(
        args.prices.as_ref().unwrap(),
        r#"{"strong": {"input_per_mtok": 10, "output_per_mtok": 30}, "weak": {"input_per_mtok": 1, "output_per_mtok": 2}}"#,
    )
    .unwrap();
    args.plot = Some(dir.path().join("multi.svg"));
    run(&args, &knowing(&[])).unwrap();
    assert!(
        std::fs::read_to_string(dir.path().join("multi.svg"))
            .unwrap()
            .contains("auto:best")
    );
}

// ---------------------------------------------------------------- real data (by hand)

fn shared_dataset(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/datasets")
        .join(name);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipped: {} is not here", path.display());
        None
    }
}

/// The fake scorer for real prompts: difficulty from the log word count, three keyword skills.
fn length_and_keywords() -> FakeScorer {
    FakeScorer {
        name: "fake-length-keywords",
        difficulty: |p| (p.split_whitespace().count() as f32 + 1.0).ln() - 3.0,
        skills: |p| {
            let lower = p.to_lowercase();
            if ["how many", "calculate", "total", "$"]
                .iter()
                .any(|k| lower.contains(k))
            {
                vec![1.0, 0.0, 0.0]
            } else if ["code", "function", "program"]
                .iter()
                .any(|k| lower.contains(k))
            {
                vec![0.0, 1.0, 0.0]
            } else {
                vec![0.0, 0.0, 1.0]
            }
        },
        abilities: HashMap::new(),
        training: None,
    }
}

fn timed(label: &str, args: &EvalArgs) {
    let started = std::time::Instant::now();
    match run(args, &length_and_keywords()) {
        Ok(report) => eprintln!("{report}"),
        Err(error) => eprintln!("error: {error}"),
    }
    eprintln!("({label}: {:.2} s)\n", started.elapsed().as_secs_f64());
}

/// Run with `cargo test --release --test eval -- --ignored --nocapture`: the fake scorer on
/// RouteLLM's MMLU and GSM8K outcomes, for speed and robustness.
#[test]
#[ignore]
fn real_routellm_data_with_the_fake_scorer() {
    let Some(path) = shared_dataset("routellm_mmlu_gsm8k.jsonl.gz") else {
        return;
    };
    for source in ["routellm_mmlu", "routellm_gsm8k"] {
        let mut args = EvalArgs::new(&path);
        args.strong = Some("gpt-4-1106-preview".into());
        args.weak = Some("mistralai/Mixtral-8x7B-Instruct-v0.1".into());
        args.filters =
            vec![triage_learn::eval::Filter::parse(&format!("source={source}")).unwrap()];
        args.plot = Some(std::env::temp_dir().join(format!("triage-eval-{source}.svg")));
        timed(source, &args);
    }
}

/// The other shared files, for robustness: many models with recorded costs, a separate prompts
/// file, judge grades, pairwise battles, data without costs.
#[test]
#[ignore]
fn other_real_data_with_the_fake_scorer() {
    if let Some(path) = shared_dataset("routerbench_slice.jsonl.gz") {
        let mut args = EvalArgs::new(&path);
        args.plot = Some(std::env::temp_dir().join("triage-eval-routerbench.svg"));
        timed("routerbench_slice, 11 models, recorded costs", &args);
    }
    if let (Some(outcomes), Some(prompts)) = (
        shared_dataset("mmlu_pro_outcomes.jsonl.gz"),
        shared_dataset("mmlu_pro_prompts.jsonl.gz"),
    ) {
        let mut args = EvalArgs::new(&outcomes);
        args.prompts = Some(prompts);
        args.strong = Some("gpt-4o-2024-05-13".into());
        args.weak = Some("Mixtral-8x7B-Instruct-v0.1".into());
        timed("mmlu_pro, two of 31 models, --prompts", &args);
    }
    if let Some(path) = shared_dataset("vicuna_bench_judged.jsonl.gz") {
        let mut args = EvalArgs::new(&path);
        args.filters = vec![triage_learn::eval::Filter::parse("judge=gpt-4").unwrap()];
        args.strong = Some("gpt-3.5-turbo:20230327".into());
        args.weak = Some("llama-13b:v1".into());
        timed("vicuna_bench_judged, GPT-4 judge", &args);
    }
    if let Some(path) = shared_dataset("chat_arena_battles.jsonl.gz") {
        let mut args = EvalArgs::new(&path);
        args.strong = Some("gpt-4".into());
        args.weak = Some("gpt-3.5-turbo".into());
        timed("chat_arena_battles, gpt-4 vs gpt-3.5-turbo", &args);
    }
    if let Some(path) = shared_dataset("llmrouter_dcrouter.jsonl.gz") {
        let mut args = EvalArgs::new(&path);
        args.filters = vec![triage_learn::eval::Filter::parse("subset=test").unwrap()];
        timed("llmrouter_dcrouter without prices", &args);
    }
}

// ---------------------------------------------------------------- battles

/// Both rows of one battle on `prompt`: `a` scored `score`, `b` the rest.
fn battle(id: &str, prompt: &str, a: &str, b: &str, score: f64) -> [serde_json::Value; 2] {
    let row = |model: &str, opponent: &str, score: f64| json!({"prompt_id": id, "prompt": prompt, "model": model, "opponent": opponent, "score": score});
    [row(a, b, score), row(b, a, 1.0 - score)]
}

#[test]
fn battles_count_the_wins_of_the_model_predicted_better() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<serde_json::Value> = [
        // The prompt's topic decides the predicted winner; mean ability favours "mathy".
        battle("1", "math: integrate x", "mathy", "chatty", 1.0),
        battle("2", "chat: hello there", "chatty", "mathy", 1.0),
        battle("3", "chat: tell me a story", "mathy", "chatty", 0.0),
        battle("4", "math: solve 2x = 4", "chatty", "mathy", 1.0),
        // Left out: a tie, "both bad", a model without θ, a prompt seen in training.
        battle("5", "chat: a tie", "chatty", "mathy", 0.5),
        battle("6", "math: both bad", "chatty", "mathy", 0.25),
        battle("7", "math: a stranger", "mathy", "stranger", 1.0),
        battle("8", "math: seen before", "mathy", "chatty", 1.0),
    ]
    .into_iter()
    .flatten()
    .collect();
    let data = write_rows(dir.path(), "battles.jsonl", &rows);
    let scorer = FakeScorer {
        name: "fake-topic",
        difficulty: |_| 0.0,
        skills: topic_skill,
        abilities: HashMap::from([
            ("mathy".to_owned(), vec![2.0, -1.0]),
            ("chatty".to_owned(), vec![-1.0, 1.5]),
        ]),
        training: Some(HashSet::from([prompt_hash("math: seen before")])),
    };
    let mut args = EvalArgs::new(&data);
    args.battles = true;
    let report = run(&args, &scorer).unwrap();
    let Results::Battles(results) = &report.results else {
        panic!("expected battle results");
    };
    assert_eq!(
        (
            results.decided,
            results.seen_battles,
            results.unknown_model_battles
        ),
        (4, 1, 1)
    );
    assert_eq!(results.unknown_models, ["stranger"]);
    assert!((results.predicted - 0.75).abs() < 1e-12);
    assert!((results.ability_only - 0.25).abs() < 1e-12);
    assert!((results.standard_error - (0.75f64 * 0.25 / 4.0).sqrt()).abs() < 1e-12);
    assert!(report.to_string().contains("75.0%"), "{report}");

    args.keep_seen = true;
    let Results::Battles(results) = run(&args, &scorer).unwrap().results else {
        panic!("expected battle results");
    };
    assert_eq!((results.decided, results.seen_battles), (5, 0));
    assert!((results.predicted - 0.8).abs() < 1e-12);

    // A name the training recipe aliased ("mathy-0" → "mathy") finds its θ.
    let rows: Vec<serde_json::Value> =
        battle("9", "math: aliased", "chatty", "mathy-0", 0.0).into();
    let aliased = write_rows(dir.path(), "aliased.jsonl", &rows);
    let mut args = EvalArgs::new(&aliased);
    args.battles = true;
    assert!(
        run(&args, &scorer).is_err(),
        "no θ for mathy-0 without the alias"
    );
    let with_alias = Aliased(&scorer, HashMap::from([("mathy-0".into(), "mathy".into())]));
    let Results::Battles(results) = run(&args, &with_alias).unwrap().results else {
        panic!("expected battle results");
    };
    assert_eq!((results.decided, results.predicted), (1, 1.0));

    // Rows without an opponent are an error that names the field, not a panic.
    let plain = write_rows(
        dir.path(),
        "plain.jsonl",
        &[json!({"prompt_id": "1", "prompt": "x", "model": "mathy", "score": 1})],
    );
    let mut args = EvalArgs::new(&plain);
    args.battles = true;
    let (line, message) = row_error_line(run(&args, &scorer));
    assert_eq!(line, 1);
    assert!(message.contains("`opponent`"), "{message}");
}

/// A scorer whose training recipe had `[aliases]`.
struct Aliased<'a>(&'a FakeScorer, HashMap<String, String>);

impl Scorer for Aliased<'_> {
    fn features(&self, prompts: &[String]) -> Vec<PromptFeatures> {
        self.0.features(prompts)
    }
    fn known_abilities(&self) -> HashMap<String, Vec<f32>> {
        self.0.known_abilities()
    }
    fn name(&self) -> &str {
        self.0.name()
    }
    fn aliases(&self) -> HashMap<String, String> {
        self.1.clone()
    }
}
