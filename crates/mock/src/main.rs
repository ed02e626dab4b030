//! `triage-mock`: the fake providers as a program of their own (the same as `triage
//! mock-upstream`), for a deployment that builds the serving binary without them.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "triage-mock",
    version,
    about = "A fake OpenAI, Anthropic and Gemini provider"
)]
struct Cli {
    #[command(flatten)]
    options: triage_mock::Options,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    triage_mock::run(Cli::parse().options).await
}
