//! Distillation: a trained model directory (the teacher, e.g. all-MiniLM-L6-v2 fine-tuned on a
//! GPU) predicts q_m(x) = σ(⟨θ_m, g(x)⟩ − b(x)) for every training prompt and every model it
//! knows; the student fits those soft targets beside the outcome rows. Every prompt then teaches
//! the student about every model (an Arena prompt has outcomes for two, a tool-need prompt for
//! none), with what the teacher's bigger, pretrained encoder reads from it.

use std::path::Path;

use candle_core::{Device, Tensor};

use super::TrainError;
use super::data::Dataset;
use super::progress::Progress;
use super::recipe::DistillSpec;
use triage_core::classifier::{Classifier, ClassifierInput};

/// Prompts per teacher inference batch.
const BATCH: usize = 64;

/// The teacher's predictions, `[prompts, models]` in the dataset's order.
pub struct Targets {
    /// q_m(x) as the teacher predicts it (0 where unknown).
    pub q: Tensor,
    /// 1 where the teacher knows the model, else 0.
    pub known: Tensor,
    pub weight: f64,
    /// How many of the dataset's models the teacher has θ for.
    pub models_known: usize,
}

/// Runs the teacher over every prompt of `data`.
pub fn teacher_targets(
    spec: &DistillSpec,
    data: &Dataset,
    skills: &[String],
    device: &Device,
    quiet: bool,
) -> Result<Targets, TrainError> {
    let teacher = Classifier::load_dir(Path::new(&spec.teacher), device)?;
    if teacher.skills() != skills {
        return Err(TrainError::Invalid(format!(
            "teacher {}: its skills {:?} differ from the recipe's {skills:?}",
            spec.teacher,
            teacher.skills()
        )));
    }
    let theta: Vec<Option<&Vec<f32>>> = data
        .models
        .iter()
        .map(|m| teacher.metadata.abilities.get(m))
        .collect();
    let models_known = theta.iter().flatten().count();
    if models_known == 0 {
        return Err(TrainError::Invalid(format!(
            "teacher {} knows none of the recipe's models",
            spec.teacher
        )));
    }
    let (prompts, models) = (data.prompts.len(), data.models.len());
    let mut q: Vec<f32> = Vec::with_capacity(prompts * models);
    let mut known: Vec<f32> = Vec::with_capacity(prompts * models);
    let mut bar = Progress::new(prompts as u64, "teacher", "prompts", quiet);
    for chunk in data.prompts.chunks(BATCH) {
        let inputs: Vec<ClassifierInput> = chunk
            .iter()
            .map(|p| ClassifierInput::from_text(p.text.clone()))
            .collect();
        for prediction in teacher.predict(&inputs)? {
            let mix = prediction.skill_mix(skills);
            for t in &theta {
                match t {
                    Some(t) => {
                        let logit: f32 = t.iter().zip(&mix).map(|(a, g)| a * g).sum::<f32>()
                            - prediction.difficulty;
                        q.push(1.0 / (1.0 + (-logit).exp()));
                        known.push(1.0);
                    }
                    None => {
                        q.push(0.0);
                        known.push(0.0);
                    }
                }
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    Ok(Targets {
        q: Tensor::from_vec(q, (prompts, models), device)?,
        known: Tensor::from_vec(known, (prompts, models), device)?,
        weight: spec.weight,
        models_known,
    })
}
