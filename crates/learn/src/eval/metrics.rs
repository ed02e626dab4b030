//! Routing-quality metrics, as the papers that define them compute them.
//!
//! Two models (RouteLLM, `routellm/evals/evaluate.py` and `benchmarks.py`): a router gives every
//! prompt a score; thresholds at the 0, 10 … 100% quantiles of the scores (numpy's linear
//! interpolation) send prompts with `score ≥ threshold` to the strong model (`>` at the last,
//! which sends none); each threshold is one point (share of strong calls, mean quality). From the
//! points sorted by share: AUC by the trapezoid rule over the share in [0, 1], APGR =
//! (AUC − weak·Δ) / ((strong − weak)·Δ) with Δ the share range the points span, and CPT(p) the
//! share of strong calls at which the curve reaches `weak + p·(strong − weak)`. RouteLLM reads CPT
//! with `np.interp` over the quality column, which assumes it increases; here it is the first
//! crossing of the piecewise-linear curve, the same number when the curve increases and the
//! cheapest share otherwise. Quality is a mean score in [0, 1] (RouteLLM prints percent; APGR and
//! CPT do not change). RouteLLM's `pd.qcut` refuses repeated thresholds (a router with few
//! distinct scores); here they are kept, and the repeated points add no area.
//!
//! Many models (RouterBench, `evaluation/AIQ.py`): a router's (cost, quality) points are reduced
//! to their non-decreasing convex hull, the upper concave envelope from the cheapest point up to
//! the best quality (mixing two operating points at random reaches any point between them). Each
//! hull is extended flat to the largest cost any compared hull reaches, and AIQ is the area under
//! it divided by that cost.
//!
//! Not for: choosing models. The routers' decisions are made in `pair` and `multi`.

use serde::Serialize;

use super::data::splitmix64;

/// Thresholds per router in the two-model sweep: RouteLLM's `--num-results` default.
pub const THRESHOLD_BINS: usize = 10;
/// How many random routers RouteLLM averages (`--random-iters` default).
pub const RANDOM_ITERATIONS: usize = 10;

/// One point of a two-model quality curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SharePoint {
    /// Percent of calls sent to the strong model, 0–100.
    pub strong_pct: f64,
    /// Mean normalised score, 0–1.
    pub quality: f64,
}

/// One point of a cost-quality curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CostPoint {
    /// Mean US$ per prompt.
    pub cost: f64,
    /// Mean normalised score, 0–1.
    pub quality: f64,
}

/// The `q`-quantile of sorted values with linear interpolation (numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let fraction = position - below as f64;
    sorted[below] + (sorted[above] - sorted[below]) * fraction
}

/// RouteLLM's threshold sweep: `scores[i]` is the router's preference for the strong model on
/// prompt i, `strong[i]` and `weak[i]` the two models' scores there. Sorted by share.
pub fn threshold_curve(
    scores: &[f64],
    strong: &[f64],
    weak: &[f64],
    bins: usize,
) -> Vec<SharePoint> {
    assert!(!scores.is_empty() && scores.len() == strong.len() && scores.len() == weak.len());
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = scores.len() as f64;
    let mut curve: Vec<SharePoint> = (0..=bins)
        .map(|i| {
            let threshold = quantile(&sorted, i as f64 / bins as f64);
            let (mut calls, mut total) = (0usize, 0.0);
            for (j, &score) in scores.iter().enumerate() {
                let to_strong = if i < bins {
                    score >= threshold
                } else {
                    score > threshold
                };
                if to_strong {
                    calls += 1;
                    total += strong[j];
                } else {
                    total += weak[j];
                }
            }
            SharePoint {
                strong_pct: calls as f64 / n * 100.0,
                quality: total / n,
            }
        })
        .collect();
    curve.sort_by(|a, b| a.strong_pct.total_cmp(&b.strong_pct));
    curve
}

/// RouteLLM's random router: uniform scores, `iterations` times, points with the same share
/// averaged.
pub fn random_curve(strong: &[f64], weak: &[f64], iterations: usize, seed: u64) -> Vec<SharePoint> {
    let mut state = seed;
    let mut uniform = move || {
        state = state.wrapping_add(1);
        (splitmix64(state) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut sums: Vec<(f64, f64, usize)> = Vec::new();
    for _ in 0..iterations {
        let scores: Vec<f64> = strong.iter().map(|_| uniform()).collect();
        for point in threshold_curve(&scores, strong, weak, THRESHOLD_BINS) {
            match sums.iter_mut().find(|(pct, _, _)| *pct == point.strong_pct) {
                Some(sum) => {
                    sum.1 += point.quality;
                    sum.2 += 1;
                }
                None => sums.push((point.strong_pct, point.quality, 1)),
            }
        }
    }
    let mut curve: Vec<SharePoint> = sums
        .into_iter()
        .map(|(strong_pct, total, n)| SharePoint {
            strong_pct,
            quality: total / n as f64,
        })
        .collect();
    curve.sort_by(|a, b| a.strong_pct.total_cmp(&b.strong_pct));
    curve
}

/// RouteLLM's optimal router at 0, 10 … 100% strong calls: the weak model everywhere, and the
/// strong model on the prompts where it gains most, as many as the share allows (a fractional
/// last call, as `get_optimal_accuracy` counts `total × percent` calls).
pub fn oracle_curve(strong: &[f64], weak: &[f64]) -> Vec<SharePoint> {
    let n = strong.len() as f64;
    let weak_total: f64 = weak.iter().sum();
    let mut gains: Vec<f64> = strong
        .iter()
        .zip(weak)
        .map(|(s, w)| s - w)
        .filter(|g| *g > 0.0)
        .collect();
    gains.sort_by(|a, b| b.total_cmp(a));
    (0..=10)
        .map(|tenth| {
            let calls = n * f64::from(tenth) / 10.0;
            let whole = (calls.floor() as usize).min(gains.len());
            let mut gained: f64 = gains[..whole].iter().sum();
            if whole < gains.len() {
                gained += gains[whole] * (calls - whole as f64);
            }
            SharePoint {
                strong_pct: f64::from(tenth) * 10.0,
                quality: (weak_total + gained) / n,
            }
        })
        .collect()
}

/// Area under a curve sorted by share, with the share as a fraction (trapezoid rule).
pub fn auc(curve: &[SharePoint]) -> f64 {
    curve
        .windows(2)
        .map(|w| (w[1].strong_pct - w[0].strong_pct) / 100.0 * (w[0].quality + w[1].quality) / 2.0)
        .sum()
}

/// Average performance gap recovered; `None` when the two models score alike or the curve has
/// no width.
pub fn apgr(curve: &[SharePoint], strong: f64, weak: f64) -> Option<f64> {
    let (first, last) = (curve.first()?, curve.last()?);
    let width = (last.strong_pct - first.strong_pct) / 100.0;
    let gap = (strong - weak) * width;
    (gap.abs() > 1e-12).then(|| (auc(curve) - weak * width) / gap)
}

/// Call-performance threshold: the percent of strong calls at which the curve first reaches
/// `weak + fraction·(strong − weak)`; below the curve's start its first share, above its top its
/// last share (as `np.interp` clamps).
pub fn cpt(curve: &[SharePoint], strong: f64, weak: f64, fraction: f64) -> f64 {
    let target = weak + fraction * (strong - weak);
    let first = curve[0];
    if target <= first.quality {
        return first.strong_pct;
    }
    for w in curve.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.quality < target && target <= b.quality {
            return a.strong_pct
                + (target - a.quality) / (b.quality - a.quality) * (b.strong_pct - a.strong_pct);
        }
    }
    curve[curve.len() - 1].strong_pct
}

/// RouterBench's non-decreasing convex hull of (cost, quality) points: the upper concave
/// envelope, from the cheapest point (its best quality) to the last point of greatest quality.
pub fn non_decreasing_hull(points: &[CostPoint]) -> Vec<CostPoint> {
    let mut sorted: Vec<CostPoint> = points.to_vec();
    sorted.sort_by(|a, b| {
        a.cost
            .total_cmp(&b.cost)
            .then(b.quality.total_cmp(&a.quality))
    });
    sorted.dedup_by(|later, earlier| later.cost == earlier.cost);
    let mut hull: Vec<CostPoint> = Vec::with_capacity(sorted.len());
    for p in sorted {
        while hull.len() >= 2 {
            let (o, a) = (hull[hull.len() - 2], hull[hull.len() - 1]);
            let cross = (a.cost - o.cost) * (p.quality - o.quality)
                - (a.quality - o.quality) * (p.cost - o.cost);
            if cross >= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(p);
    }
    let Some(best) = hull.iter().map(|p| p.quality).max_by(f64::total_cmp) else {
        return hull;
    };
    let last_best = hull.iter().rposition(|p| p.quality == best).unwrap_or(0);
    hull.truncate(last_best + 1);
    hull
}

/// RouterBench's AIQ of each hull: the area under it, extended flat to the largest cost of any
/// of the hulls, divided by that cost. `None` for an empty hull or when every cost is zero.
pub fn aiq(hulls: &[Vec<CostPoint>]) -> Vec<Option<f64>> {
    let max_cost = hulls
        .iter()
        .filter_map(|h| h.last())
        .map(|p| p.cost)
        .fold(0.0, f64::max);
    hulls
        .iter()
        .map(|hull| {
            let last = *hull.last()?;
            if max_cost <= 0.0 {
                return None;
            }
            let area: f64 = hull
                .windows(2)
                .map(|w| (w[1].cost - w[0].cost) * (w[0].quality + w[1].quality) / 2.0)
                .sum::<f64>()
                + (max_cost - last.cost) * last.quality;
            Some(area / max_cost)
        })
        .collect()
}

/// The least cost at which a hull reaches `quality`, `None` when it never does.
pub fn cost_at_quality(hull: &[CostPoint], quality: f64) -> Option<f64> {
    let first = hull.first()?;
    if first.quality >= quality {
        return Some(first.cost);
    }
    hull.windows(2).find_map(|w| {
        let (a, b) = (w[0], w[1]);
        (a.quality < quality && quality <= b.quality)
            .then(|| a.cost + (quality - a.quality) / (b.quality - a.quality) * (b.cost - a.cost))
    })
}

/// Area under the ROC curve of `scores` for binary `labels`; `None` without both classes.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Mann–Whitney U with average ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += (i..=j).filter(|&k| labels[order[k]]).count() as f64 * average_rank;
        i = j + 1;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_auc_counts_ties_as_half() {
        assert_eq!(
            roc_auc(&[0.1, 0.2, 0.3, 0.4], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            roc_auc(&[0.4, 0.3, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, true]), None);
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let sorted = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(quantile(&sorted, 0.0), 1.0);
        assert_eq!(quantile(&sorted, 1.0), 8.0);
        // position 0.5 × 3 = 1.5 → between 2 and 4.
        assert_eq!(quantile(&sorted, 0.5), 3.0);
    }

    #[test]
    fn hull_drops_points_below_it_and_after_the_best() {
        let p = |cost, quality| CostPoint { cost, quality };
        let hull = non_decreasing_hull(&[
            p(1.0, 0.5),
            p(2.0, 0.55),
            p(3.0, 0.8),
            p(4.0, 0.7),
            p(3.0, 0.6),
        ]);
        assert_eq!(hull, vec![p(1.0, 0.5), p(3.0, 0.8)]);
    }
}
