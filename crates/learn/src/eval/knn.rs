//! The kNN baseline: a prompt's predicted quality for each model is the mean outcome of that
//! model on the k calibration prompts nearest to it, by cosine similarity of the scorer's
//! embeddings (as RouterBench's `knn_router.py` does with its own embeddings).
//!
//! Not for: anything but a baseline. Brute force over the calibration prompts, split across the
//! machine's cores.

use std::thread;

/// RouterBench tried 5 to 40 neighbours; 10 is its middle.
pub const DEFAULT_K: usize = 10;

/// For each query embedding, the mean of `outcomes` (one row per reference prompt, one column
/// per model) over the `k` references with the largest dot product. Embeddings are L2-normalised,
/// so the dot product is the cosine similarity.
pub fn knn_predict(
    references: &[&[f32]],
    outcomes: &[Vec<f64>],
    queries: &[&[f32]],
    k: usize,
) -> Vec<Vec<f64>> {
    assert_eq!(references.len(), outcomes.len());
    let k = k.clamp(1, references.len().max(1));
    let threads = thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = queries.len().div_ceil(threads).max(1);
    thread::scope(|scope| {
        let workers: Vec<_> = queries
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|q| mean_of_nearest(references, outcomes, q, k))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a kNN worker panicked"))
            .collect()
    })
}

fn mean_of_nearest(
    references: &[&[f32]],
    outcomes: &[Vec<f64>],
    query: &[f32],
    k: usize,
) -> Vec<f64> {
    let mut similarities: Vec<(f32, usize)> = references
        .iter()
        .enumerate()
        .map(|(i, r)| (dot(r, query), i))
        .collect();
    if k < similarities.len() {
        similarities.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        similarities.truncate(k);
    }
    let models = outcomes.first().map_or(0, Vec::len);
    let mut mean = vec![0.0; models];
    for &(_, i) in &similarities {
        for (m, value) in mean.iter_mut().zip(&outcomes[i]) {
            *m += value;
        }
    }
    let n = similarities.len().max(1) as f64;
    mean.iter_mut().for_each(|m| *m /= n);
    mean
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_the_nearest_references() {
        let refs: Vec<[f32; 2]> = vec![[1.0, 0.0], [0.9, 0.436], [0.0, 1.0]];
        let references: Vec<&[f32]> = refs.iter().map(|r| r.as_slice()).collect();
        let outcomes = vec![vec![1.0, 0.0], vec![0.0, 0.0], vec![0.0, 1.0]];
        let query = [1.0f32, 0.0];
        let predicted = knn_predict(&references, &outcomes, &[&query], 2);
        assert_eq!(predicted, vec![vec![0.5, 0.0]]);
    }
}
