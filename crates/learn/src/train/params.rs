//! Named trainable variables, in creation order, saved as one safetensors file.
//!
//! candle-nn's `VarMap` would do, but it hands out variables through a `VarBuilder` whose
//! initialisers draw from an unseeded generator; here every value comes from the run's seeded
//! generator, so a fixed seed gives the same model twice.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use rand::rngs::StdRng;

use super::TrainError;
use super::encoder::Init;

pub struct Params {
    entries: Vec<(String, Var)>,
    device: Device,
}

impl Default for Params {
    fn default() -> Params {
        Params::on(Device::Cpu)
    }
}

impl Params {
    /// No variables yet; every variable will live on `device`.
    pub fn on(device: Device) -> Params {
        Params {
            entries: Vec::new(),
            device,
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A new variable of shape `dims`, initialised from `rng`; returns the tensor to compute with.
    pub fn create(
        &mut self,
        name: &str,
        dims: &[usize],
        init: Init,
        rng: &mut StdRng,
    ) -> Result<Tensor, TrainError> {
        let values = init.values(dims.iter().product(), rng);
        self.insert(name, Tensor::from_vec(values, dims, &self.device)?)
    }

    /// A new variable holding `value` (moved to the parameters' device).
    pub fn insert(&mut self, name: &str, value: Tensor) -> Result<Tensor, TrainError> {
        if self.entries.iter().any(|(n, _)| n == name) {
            return Err(TrainError::Invalid(format!(
                "variable {name} defined twice"
            )));
        }
        let var = Var::from_tensor(&value.to_device(&self.device)?)?;
        let tensor = var.as_tensor().clone();
        self.entries.push((name.to_string(), var));
        Ok(tensor)
    }

    pub fn entries(&self) -> &[(String, Var)] {
        &self.entries
    }

    /// The variables whose names start with `prefix` (all of them for "").
    pub fn vars(&self, prefix: &str) -> Vec<Var> {
        self.vars_where(|n| n.starts_with(prefix))
    }

    /// The variables whose names pass `keep`.
    pub fn vars_where(&self, keep: impl Fn(&str) -> bool) -> Vec<Var> {
        self.entries
            .iter()
            .filter(|(n, _)| keep(n))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Copies of every variable's current value.
    pub fn snapshot(&self) -> Result<Vec<Tensor>, TrainError> {
        Ok(self
            .entries
            .iter()
            .map(|(_, v)| v.as_tensor().copy())
            .collect::<Result<_, _>>()?)
    }

    /// Sets every variable back to a [`Params::snapshot`].
    pub fn restore(&self, values: &[Tensor]) -> Result<(), TrainError> {
        for ((_, var), value) in self.entries.iter().zip(values) {
            var.set(value)?;
        }
        Ok(())
    }

    /// Writes the variables whose names pass `keep` (safetensors orders them by name, so the
    /// bytes depend only on the values).
    pub fn save_where(&self, path: &Path, keep: impl Fn(&str) -> bool) -> Result<(), TrainError> {
        let tensors: HashMap<String, Tensor> = self
            .entries
            .iter()
            .filter(|(n, _)| keep(n))
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&tensors, path)?;
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        self.save_where(path, |_| true)
    }
}
