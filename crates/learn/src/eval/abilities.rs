//! Fitting the ability vector θ of a model the scorer does not know, from its outcomes on the
//! calibration prompts, with the classifier frozen.
//!
//! θ minimises the cross-entropy of σ(⟨θ, g(x)⟩ − b(x)) against the normalised score, plus a
//! Gaussian prior (λ/2)·‖θ − θ₀‖² that keeps skills the calibration prompts barely use near θ₀
//! and a penalty on the skills' spread around their mean (`SPREAD_PRECISION`).
//! The problem is convex and K is small, so Newton's method with a backtracking line search
//! converges in a few steps.
//!
//! Not for: training the classifier or the shipped ability table (`train` does that).

use super::scorer::PromptFeatures;

/// λ of the prior: one pseudo-observation's worth of curvature per skill, small beside the
/// hundreds of calibration prompts a fit normally has.
pub const PRIOR_PRECISION: f64 = 1.0;

/// λ of the penalty (λ/2)·Σ_k (θ_k − θ̄)² on the skills' spread around the model's mean
/// ability: a few hundred calibration prompts pin one general ability well and eight per-skill
/// ones badly, so a skill strays from the mean only where the data insists (on AlpacaEval's
/// gpt-3.5-turbo-1106 vs alpaca-7b, a fitted alpaca-7b took APGR from 0.449 without it to 0.532).
/// The shipped θ table is held the same way in training (`theta_spread`).
pub const SPREAD_PRECISION: f64 = 100.0;

const MAX_STEPS: usize = 100;
const TOLERANCE: f64 = 1e-8;

/// Fits θ to `targets` (scores in [0, 1]) on prompts with `features`, pulled towards `prior`
/// with precision `precision`, and its skills towards their own mean with `spread_precision`.
/// `prior.len()` is K; every prompt's skills must have K values.
pub fn fit_ability(
    features: &[&PromptFeatures],
    targets: &[f64],
    prior: &[f64],
    precision: f64,
    spread_precision: f64,
) -> Vec<f32> {
    assert_eq!(features.len(), targets.len());
    let k = prior.len();
    let objective = |theta: &[f64]| -> f64 {
        let data: f64 = features
            .iter()
            .zip(targets)
            .map(|(f, &y)| {
                let z = logit(theta, f);
                softplus(z) - y * z
            })
            .sum();
        let penalty: f64 = theta.iter().zip(prior).map(|(t, p)| (t - p).powi(2)).sum();
        data + precision / 2.0 * penalty + spread_precision / 2.0 * spread(theta)
    };
    let mut theta = prior.to_vec();
    let mut value = objective(&theta);
    for _ in 0..MAX_STEPS {
        let mut gradient: Vec<f64> = theta
            .iter()
            .zip(prior)
            .map(|(t, p)| precision * (t - p))
            .collect();
        let mut hessian = vec![0.0; k * k];
        for d in 0..k {
            hessian[d * k + d] = precision;
        }
        // The spread penalty's gradient λ(θ − θ̄) and Hessian λ(I − 11ᵀ/K).
        let mean = theta.iter().sum::<f64>() / k as f64;
        for a in 0..k {
            gradient[a] += spread_precision * (theta[a] - mean);
            for b in 0..k {
                let identity = if a == b { 1.0 } else { 0.0 };
                hessian[a * k + b] += spread_precision * (identity - 1.0 / k as f64);
            }
        }
        for (f, &y) in features.iter().zip(targets) {
            let q = super::scorer::sigmoid(logit(&theta, f));
            let weight = q * (1.0 - q);
            for a in 0..k {
                let ga = f64::from(f.skills[a]);
                gradient[a] += (q - y) * ga;
                for b in 0..k {
                    hessian[a * k + b] += weight * ga * f64::from(f.skills[b]);
                }
            }
        }
        let step = solve_positive_definite(&mut hessian, &gradient, k);
        let mut scale = 1.0;
        let mut candidate: Vec<f64>;
        loop {
            candidate = theta
                .iter()
                .zip(&step)
                .map(|(t, s)| t - scale * s)
                .collect();
            let next = objective(&candidate);
            if next <= value || scale < 1e-6 {
                value = next;
                break;
            }
            scale /= 2.0;
        }
        let moved = step.iter().map(|s| (scale * s).abs()).fold(0.0, f64::max);
        theta = candidate;
        if moved < TOLERANCE {
            break;
        }
    }
    theta.into_iter().map(|t| t as f32).collect()
}

/// Σ (θ_k − θ̄)²: how far the per-skill abilities stray from their mean.
fn spread(theta: &[f64]) -> f64 {
    let mean = theta.iter().sum::<f64>() / theta.len().max(1) as f64;
    theta.iter().map(|t| (t - mean).powi(2)).sum()
}

fn logit(theta: &[f64], features: &PromptFeatures) -> f64 {
    theta
        .iter()
        .zip(&features.skills)
        .map(|(t, g)| t * f64::from(*g))
        .sum::<f64>()
        - f64::from(features.difficulty)
}

/// ln(1 + eᶻ) without overflow.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// Solves `A x = b` for a symmetric positive-definite `A` (row-major, overwritten) by Cholesky.
fn solve_positive_definite(a: &mut [f64], b: &[f64], k: usize) -> Vec<f64> {
    for j in 0..k {
        let mut diagonal = a[j * k + j];
        for p in 0..j {
            diagonal -= a[j * k + p] * a[j * k + p];
        }
        let diagonal = diagonal.max(1e-300).sqrt();
        a[j * k + j] = diagonal;
        for i in j + 1..k {
            let mut value = a[i * k + j];
            for p in 0..j {
                value -= a[i * k + p] * a[j * k + p];
            }
            a[i * k + j] = value / diagonal;
        }
    }
    let mut y = vec![0.0; k];
    for i in 0..k {
        let mut value = b[i];
        for p in 0..i {
            value -= a[i * k + p] * y[p];
        }
        y[i] = value / a[i * k + i];
    }
    let mut x = vec![0.0; k];
    for i in (0..k).rev() {
        let mut value = y[i];
        for p in i + 1..k {
            value -= a[p * k + i] * x[p];
        }
        x[i] = value / a[i * k + i];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_small_system() {
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        let x = solve_positive_definite(&mut a, &[2.0, 1.0], 2);
        // 4x + 2y = 2, 2x + 3y = 1 → x = 0.5, y = 0.
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12);
    }

    fn prompts(skills: Vec<f32>, successes: usize, failures: usize) -> (PromptFeatures, Vec<f64>) {
        let features = PromptFeatures {
            difficulty: 0.0,
            skills,
            embedding: vec![],
        };
        let targets = [vec![1.0; successes], vec![0.0; failures]].concat();
        (features, targets)
    }

    #[test]
    fn a_skill_without_data_follows_the_models_general_ability() {
        let (one_hot, targets) = prompts(vec![1.0, 0.0], 40, 10);
        let features = vec![&one_hot; targets.len()];
        let theta = fit_ability(
            &features,
            &targets,
            &[0.3, -0.7],
            PRIOR_PRECISION,
            SPREAD_PRECISION,
        );
        // ln(40/10) ≈ 1.39 on the skill with data; the other one near it, far from its prior.
        assert!(theta[0] > 1.0, "{theta:?}");
        assert!((theta[1] - theta[0]).abs() < 0.1, "{theta:?}");
    }

    #[test]
    fn skills_part_where_the_data_insists() {
        let (first, first_targets) = prompts(vec![1.0, 0.0], 900, 100);
        let (second, second_targets) = prompts(vec![0.0, 1.0], 100, 900);
        let features: Vec<&PromptFeatures> = std::iter::repeat_n(&first, 1000)
            .chain(std::iter::repeat_n(&second, 1000))
            .collect();
        let targets = [first_targets, second_targets].concat();
        let theta = fit_ability(
            &features,
            &targets,
            &[0.0, 0.0],
            PRIOR_PRECISION,
            SPREAD_PRECISION,
        );
        assert!(theta[0] - theta[1] > 2.0, "{theta:?}");
    }
}
