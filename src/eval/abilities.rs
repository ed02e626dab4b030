//! Fitting the ability vector θ of a model the scorer does not know, from its outcomes on the
//! calibration prompts, with the classifier frozen.
//!
//! θ minimises the cross-entropy of σ(⟨θ, g(x)⟩ − b(x)) against the normalised score, plus a
//! Gaussian prior (λ/2)·‖θ − θ₀‖² that keeps skills the calibration prompts barely use near θ₀.
//! The problem is convex and K is small, so Newton's method with a backtracking line search
//! converges in a few steps.
//!
//! Not for: training the classifier or the shipped ability table (`train` does that).

use super::scorer::PromptFeatures;

/// λ of the prior: one pseudo-observation's worth of curvature per skill, small beside the
/// hundreds of calibration prompts a fit normally has.
pub const PRIOR_PRECISION: f64 = 1.0;

const MAX_STEPS: usize = 100;
const TOLERANCE: f64 = 1e-8;

/// Fits θ to `targets` (scores in [0, 1]) on prompts with `features`, pulled towards `prior`
/// with precision `precision`. `prior.len()` is K; every prompt's skills must have K values.
pub fn fit_ability(
    features: &[&PromptFeatures],
    targets: &[f64],
    prior: &[f64],
    precision: f64,
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
        data + precision / 2.0 * penalty
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

    #[test]
    fn a_skill_without_data_stays_at_the_prior() {
        let one_hot = PromptFeatures {
            difficulty: 0.0,
            skills: vec![1.0, 0.0],
            embedding: vec![],
        };
        let features = vec![&one_hot; 50];
        let targets = vec![1.0; 25]
            .into_iter()
            .chain(vec![0.0; 25])
            .collect::<Vec<_>>();
        let theta = fit_ability(&features, &targets, &[0.3, -0.7], PRIOR_PRECISION);
        assert!(theta[0].abs() < 0.05, "{theta:?}");
        assert!((theta[1] + 0.7).abs() < 1e-6, "{theta:?}");
    }
}
