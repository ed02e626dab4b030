//! triage: a self-hosted LLM router. One OpenAI-compatible endpoint in front of many providers,
//! with explicit routing, fallbacks and transparent cost.
//!
//! The request path reads top to bottom: `server` → `router` → `dispatch` → `providers`, with
//! `catalog` and `config` as the data they share.

pub mod abilities;
pub mod bench;
pub mod calibrate;
pub mod catalog;
pub mod classifier;
pub mod config;
pub mod dispatch;
pub mod eval;
pub mod init;
pub mod keys;
pub mod metrics;
pub mod mock;
pub mod outcomes;
pub mod policy;
pub mod profile;
pub mod providers;
pub mod quality;
pub mod router;
pub mod server;
pub mod train;
