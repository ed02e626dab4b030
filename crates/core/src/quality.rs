//! The quality model and the choice rule, in one place for the three code paths that use them:
//! `policy` (serving), `eval` (measuring) and `train` (fitting). What eval measures is what
//! serves because both call these functions.
//!
//! - q_m(x) = σ(⟨θ_m, g(x)⟩ − b(x)): θ_m the model's ability per skill, g(x) the prompt's skill
//!   mix (tool need folded in), b(x) its difficulty.
//! - The choice at a quality target: the cheapest model predicted at or above the target (ties
//!   to the better one); when none reaches it, the predicted best (ties to the cheaper one).
//!
//! Not for: prices (`policy::expected_cost`) or filtering candidates (`policy`).

use std::cmp::Ordering;

/// ⟨θ, g⟩ − b, the logit of q.
pub fn logit(theta: &[f32], mix: &[f32], difficulty: f32) -> f64 {
    theta
        .iter()
        .zip(mix)
        .map(|(t, g)| f64::from(*t) * f64::from(*g))
        .sum::<f64>()
        - f64::from(difficulty)
}

/// q = σ(⟨θ, g⟩ − b).
pub fn quality(theta: &[f32], mix: &[f32], difficulty: f32) -> f64 {
    sigmoid(logit(theta, mix, difficulty))
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// How two options (predicted quality, expected cost) rank at `target`: `Less` when `a` is
/// preferred. Options meeting the target come first, cheapest first (then better); the rest
/// follow, best first (then cheaper). Sorting by it gives the choice and its fallbacks.
pub fn preference(a: (f64, f64), b: (f64, f64), target: f64) -> Ordering {
    let (meets_a, meets_b) = (a.0 >= target, b.0 >= target);
    match (meets_a, meets_b) {
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (true, true) => a.1.total_cmp(&b.1).then(b.0.total_cmp(&a.0)),
        (false, false) => b.0.total_cmp(&a.0).then(a.1.total_cmp(&b.1)),
    }
}

/// The index `preference` puts first (the earliest on a tie); `None` for no options.
pub fn choose(quality: &[f64], cost: &[f64], target: f64) -> Option<usize> {
    (0..quality.len().min(cost.len())).min_by(|&a, &b| {
        preference((quality[a], cost[a]), (quality[b], cost[b]), target).then(a.cmp(&b))
    })
}

/// How strongly a relative profile prefers the dearer of two models on one prompt: a profile
/// with target fraction f (of the best predicted quality) takes the dearer model exactly when
/// f > q_cheap / max(q_cheap, q_dear), so this is 1 − that ratio. Sweeping f from 0 to 1 sends
/// prompts to the dearer model in decreasing order of it: the order the two-model evaluation
/// ranks prompts by, so that its curve is the serving policy's.
pub fn upgrade_score(q_cheap: f64, q_dear: f64) -> f64 {
    let best = q_cheap.max(q_dear);
    if best <= 0.0 {
        0.0
    } else {
        1.0 - q_cheap / best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_is_the_sigmoid_of_ability_against_difficulty() {
        assert!((quality(&[1.0, 3.0], &[0.5, 0.5], 2.0) - 0.5).abs() < 1e-12);
        assert!(quality(&[4.0], &[1.0], 0.0) > quality(&[1.0], &[1.0], 0.0));
    }

    #[test]
    fn the_cheapest_option_at_the_target_wins_else_the_best() {
        let q = [0.9, 0.8, 0.5];
        let c = [10.0, 2.0, 1.0];
        assert_eq!(choose(&q, &c, 0.75), Some(1));
        assert_eq!(choose(&q, &c, 0.85), Some(0));
        assert_eq!(choose(&q, &c, 0.0), Some(2));
        // Nothing reaches it: the predicted best.
        assert_eq!(choose(&q, &c, 0.95), Some(0));
        // Equal cost at the target: the better one.
        assert_eq!(choose(&[0.7, 0.8], &[1.0, 1.0], 0.6), Some(1));
        assert_eq!(choose(&[], &[], 0.5), None);
    }

    #[test]
    fn the_upgrade_score_is_where_a_relative_target_switches_models() {
        let (cheap, dear) = (0.6, 0.8);
        let switch = 1.0 - upgrade_score(cheap, dear);
        let at = |f: f64| choose(&[cheap, dear], &[1.0, 2.0], f * dear);
        assert_eq!(at(switch - 0.01), Some(0));
        assert_eq!(at(switch + 0.01), Some(1));
        assert!(upgrade_score(0.5, 0.9) > upgrade_score(0.8, 0.9));
        assert_eq!(upgrade_score(0.9, 0.5), 0.0);
    }
}
