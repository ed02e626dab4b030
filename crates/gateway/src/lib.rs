//! triage-gateway: the serving side. An OpenAI- and Anthropic-compatible HTTP server
//! (`server`), adaptive routing on top of the core's classifier and policy (`router`), the
//! dispatcher with its fallbacks and circuit breakers (`dispatch`), one adapter per provider
//! wire format (`providers`), the outcome log (`outcomes`), virtual keys (`keys`), the
//! Prometheus metrics (`metrics`) and OpenTelemetry traces (`telemetry`).
//!
//! A request reads top to bottom: `server` → `router` → `dispatch` → `providers`, and its
//! outcome goes to `outcomes` when it ends.

pub mod dispatch;
#[cfg(test)]
mod fuzzing;
pub mod init;
pub mod keys;
pub mod metrics;
pub mod outcomes;
pub mod providers;
pub mod router;
pub mod server;
pub mod telemetry;
