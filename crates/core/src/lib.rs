//! triage-core: what every part of triage shares and nothing that talks to the network. The
//! config file and the model catalog it resolves, the classifier's inference (the compiled-in
//! default model, model directories, Hugging Face repos), the quality model q_m(x) with its
//! per-model abilities θ, and the policy that chooses among candidates.
//!
//! Read in this order: `config` → `catalog` → `classifier` → `quality` → `abilities` →
//! `policy` (with `profile`, the names of `auto`'s profiles).

pub mod abilities;
pub mod catalog;
pub mod classifier;
pub mod config;
pub mod policy;
pub mod profile;
pub mod quality;
