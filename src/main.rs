//! The `triage` command line: `serve`, `mock-upstream` and `bench-overhead`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use triage::catalog::Catalog;
use triage::config::Config;
use triage::server::{self, AppState};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "triage", version, about = "A self-hosted LLM router")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router.
    Serve {
        /// TOML config file; without it, the built-in catalog and defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address, overriding the config's `listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run a fake OpenAI-compatible provider, for tests, benchmarks and trying triage out.
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Require this bearer key from callers.
        #[arg(long)]
        api_key: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve { config, listen } => runtime.block_on(serve(config, listen)),
        Command::MockUpstream { listen, api_key } => runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            tracing::info!("mock upstream listening on http://{listen}/v1");
            triage::mock::serve(listener, api_key).await?;
            Ok(())
        }),
    }
}

async fn serve(config_path: Option<PathBuf>, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let (config, file) = match &config_path {
        Some(path) => (Config::load(path)?, path.clone()),
        None => (Config::default(), PathBuf::from("(built-in defaults)")),
    };
    let catalog = Catalog::build(&config, &file, |var| std::env::var(var).ok())?;
    for provider in catalog.providers.values() {
        if let (Some(env), None) = (&provider.api_key_env, &provider.api_key) {
            tracing::warn!(provider = %provider.name, "no API key: {env} is not set; its models will fail over");
        }
    }
    let keys = config.router_keys(std::env::var("TRIAGE_KEYS").ok().as_deref());
    if keys.is_empty() {
        tracing::warn!(
            "no router keys configured ([auth] keys or TRIAGE_KEYS): every caller is accepted"
        );
    }
    let models = catalog.models.len();
    let state = AppState::new(&config, catalog, &keys)?;
    let addr = match listen {
        Some(addr) => addr,
        None => config.listen.parse()?,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(%addr, models, "triage listening");
    axum::serve(listener, server::app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

/// Ctrl-C or SIGTERM: stop accepting, finish what is in flight.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
