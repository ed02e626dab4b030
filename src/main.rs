//! The `triage` command line. Serving: `serve`, `init`, `health`, `keys`, `models`, `classify`
//! and `report`. With the `learn` feature (default) also `train`, `distill-static`, `eval`,
//! `label`, `calibrate`, `replay` and `probe` (from `triage-learn`); with `mock`,
//! `mock-upstream`; with `bench`, `bench-overhead`. `--no-default-features` builds the serving
//! binary alone.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use triage_core::catalog::{self, Catalog};
use triage_core::classifier::{Classifier, ClassifierInput};
use triage_core::config::Config;
use triage_gateway::router::AdaptiveRouter;
use triage_gateway::server::{self, AppState};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its `mimalloc.h`, v2 and v3): how many milliseconds freed
/// memory waits before it goes back to the OS; -1 keeps it. `libmimalloc-sys` does not export it;
/// a test recognises it by its default.
#[cfg(feature = "learn")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Training and evaluation allocate and free tensors of tens of megabytes at every step. By
/// default mimalloc hands freed memory back to the OS, and the kernel zeroes each page again when
/// it comes back: under `perf`, half of a training step of the shipped recipe (2026-12-06). The
/// learning commands keep freed memory instead: the shipped recipe trains 1.6× as fast with the
/// same result, peak RSS 1.6 GB instead of 0.9 (training/README.md, "Allocator").
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
#[cfg(feature = "learn")]
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an allocator option, which mimalloc reads each time it considers purging.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

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
        /// TOML config file; else TRIAGE_CONFIG, else ./triage.toml if present, else the
        /// built-in catalog and defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address, overriding the config's `listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Write a commented starter config (default ./triage.toml).
    Init {
        /// A config for `triage mock-upstream` instead: runs as written, no keys needed.
        #[arg(long)]
        demo: bool,
        /// Overwrite the file if it exists.
        #[arg(long)]
        force: bool,
        #[arg(default_value = triage_core::config::DEFAULT_FILE)]
        path: PathBuf,
    },
    /// Exit 0 when a running router answers its health check, 1 otherwise (for container
    /// health checks, where there is no curl).
    Health {
        #[arg(long, default_value = "http://127.0.0.1:8080/health")]
        url: String,
    },
    /// Requests, tokens and cost from the outcome log, and what adaptive routing saved.
    Report(ReportArgs),
    /// Virtual keys in the config's log: create, list, update, revoke (as /admin/keys does).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        /// TOML config file (its [log] says where the keys are); else TRIAGE_CONFIG, else
        /// ./triage.toml, else the built-in defaults.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// The catalog as `auto` sees it: prices, context, capabilities, θ per skill and its
    /// source, whether the provider's key is set.
    Models {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// TOML config file; else TRIAGE_CONFIG, else ./triage.toml if present, else the
        /// built-in catalog and defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the classifier's view of a prompt: difficulty, skills, tool need.
    Classify {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// `builtin` (the default, compiled in), a model directory or a Hugging Face repo id.
        #[arg(long)]
        model: Option<String>,
        /// The prompt; `-` reads it from standard input.
        text: String,
    },
    /// Run a fake OpenAI, Anthropic and Gemini provider, for tests, benchmarks and trying
    /// triage out (also the `triage-mock` binary).
    #[cfg(feature = "mock")]
    MockUpstream(triage_mock::Options),
    /// Measure the latency the router adds over calling a mock upstream directly.
    #[cfg(feature = "bench")]
    BenchOverhead(triage_bench::Options),
    #[cfg(feature = "learn")]
    #[command(flatten)]
    Learn(triage_learn::cli::Command),
    /// A command this build leaves out (or a typo): answered with what to build instead.
    #[cfg(not(all(feature = "learn", feature = "mock", feature = "bench")))]
    #[command(external_subcommand)]
    Missing(Vec<String>),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: not in journald, docker logs or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve { .. })
        && std::env::var_os("RAYON_NUM_THREADS").is_none()
    {
        // One thread per classification, several requests in parallel: the better shape for
        // a server on few cores (CANDLE.md). SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    }
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match cli.command {
        Command::Serve { config, listen } => runtime()?.block_on(serve(config, listen)),
        Command::Init { demo, force, path } => {
            triage_gateway::init::write(&path, demo, force)?;
            let next = if demo {
                "start `triage mock-upstream`, then `triage serve`"
            } else {
                "set your providers' keys (OPENAI_API_KEY, ...), then `triage serve`"
            };
            eprintln!("wrote {}: {next}", path.display());
            Ok(())
        }
        Command::Health { url } => runtime()?.block_on(health(&url)),
        Command::Classify { json, model, text } => classify(json, model, &text),
        Command::Models { json, config } => models(json, config.as_ref()),
        Command::Report(args) => report(&args),
        Command::Keys { action, config } => keys_command(action, config.as_ref()),
        #[cfg(feature = "mock")]
        Command::MockUpstream(options) => runtime()?.block_on(triage_mock::run(options)),
        // It builds a single-threaded runtime of its own, leaving the cores to its children.
        #[cfg(feature = "bench")]
        Command::BenchOverhead(options) => triage_bench::run(options),
        #[cfg(feature = "learn")]
        Command::Learn(command) => {
            keep_freed_memory();
            triage_learn::cli::run(command)
        }
        #[cfg(not(all(feature = "learn", feature = "mock", feature = "bench")))]
        Command::Missing(words) => anyhow::bail!(missing_command(&words[0])),
    }
}

/// The subcommands the `learn` feature brings (`triage_learn::cli::Command`'s, checked by a
/// test), named here because a build without the feature does not link that crate.
const LEARN_COMMANDS: [&str; 7] = [
    "train",
    "distill-static",
    "eval",
    "label",
    "calibrate",
    "replay",
    "probe",
];

/// Why `triage NAME` is not a command of this build: the feature that brings it, or unknown.
#[cfg_attr(
    all(feature = "learn", feature = "mock", feature = "bench"),
    allow(dead_code)
)]
fn missing_command(name: &str) -> String {
    let feature = match name {
        name if LEARN_COMMANDS.contains(&name) => "learn",
        "mock-upstream" => "mock",
        "bench-overhead" => "bench",
        _ => return format!("`{name}` is not a triage command (`triage --help` lists them)"),
    };
    format!(
        "`triage {name}` is not in this build: it was built without the `{feature}` feature \
         (a serving binary, `cargo build --no-default-features`); build with the default \
         features, or `--features {feature}`, to have it"
    )
}

fn classify(json: bool, model: Option<String>, text: &str) -> anyhow::Result<()> {
    let text = if text == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the prompt from stdin")?
    } else {
        text.to_string()
    };
    let source = model.unwrap_or_else(|| Config::default().classifier.model);
    let classifier = Classifier::load(&source)?;
    let prediction = classifier.predict_one(&ClassifierInput::from_text(text))?;
    let names = classifier.skills();
    let mix = prediction.skill_mix(names);
    if json {
        let skills: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .zip(&mix)
            .map(|(name, weight)| (name.clone(), serde_json::json!(weight)))
            .collect();
        let out = serde_json::json!({
            "difficulty": prediction.difficulty,
            "skills": skills,
            "tool_need": prediction.tool_need,
            "tokens": prediction.tokens,
        });
        println!("{out}");
        return Ok(());
    }
    println!("model       {}", classifier.source);
    println!("difficulty  {:.3}", prediction.difficulty);
    println!("tool need   {:.3}", prediction.tool_need);
    println!("tokens      {}", prediction.tokens);
    let mut ranked: Vec<_> = names.iter().zip(&mix).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(a.1));
    for (name, weight) in ranked {
        println!("  {name:<12} {weight:.3}");
    }
    Ok(())
}

/// `triage models`: every catalog model with its θ, as `GET /v1/models` shows it under
/// `triage` (less the circuit state, which lives in a running server).
fn models(json: bool, config: Option<&PathBuf>) -> anyhow::Result<()> {
    let (config, catalog) = catalog::load_configured(config.map(PathBuf::as_path))?;
    let metadata = classifier_metadata(&config.classifier.model)
        .with_context(|| format!("loading the classifier {}", config.classifier.model))?;
    let abilities = triage_core::abilities::Abilities::resolve(&catalog, &metadata);
    let entries: Vec<serde_json::Value> = catalog
        .models
        .values()
        .map(|m| {
            let mut entry = m.to_openai_json();
            entry["triage"] =
                triage_gateway::router::describe(&catalog, m, Some(&abilities), &config.routing);
            entry
        })
        .collect();
    if json {
        let out = serde_json::json!({
            "classifier": config.classifier.model,
            "skills": abilities.skills,
            "prior": abilities.prior,
            "models": entries,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print!("{}", models_table(&catalog, &abilities, &config));
    Ok(())
}

/// The model directory's `triage.json` (θ, maps, skills) without loading the weights, unless
/// the source is a Hugging Face repo id.
fn classifier_metadata(source: &str) -> anyhow::Result<triage_core::classifier::Metadata> {
    let dir = std::path::Path::new(source);
    if dir.is_dir() {
        return Ok(triage_core::classifier::load_metadata(dir)?);
    }
    Ok(Classifier::load(source)?.metadata)
}

/// One line per model: prices, context, capabilities, key, θ source and θ per skill; then the
/// prior's fit.
fn models_table(
    catalog: &Catalog,
    abilities: &triage_core::abilities::Abilities,
    config: &Config,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let skills: Vec<String> = abilities
        .skills
        .iter()
        .map(|s| s.chars().take(5).collect())
        .collect();
    let _ = write!(
        out,
        "{:<34} {:>7} {:>7} {:>8} {:<4} {:<16} {:<4} {:<5}",
        "model", "in/M", "out/M", "context", "caps", "θ source", "key", "auto"
    );
    for skill in &skills {
        let _ = write!(out, " {skill:>5}");
    }
    out.push('\n');
    for model in catalog.models.values() {
        let caps: String = [(model.tools, 'T'), (model.vision, 'V'), (model.json, 'J')]
            .iter()
            .map(|(on, c)| if *on { *c } else { '-' })
            .collect();
        let ability = abilities.get(&model.id);
        let source = ability.map_or("-".to_string(), |a| a.source.to_string());
        let key = catalog.missing_key(model).is_none();
        // `auto` can choose it: its key is set and `[routing] models` admits it.
        let auto = key
            && config
                .routing
                .allows(triage_core::policy::Profile::Balanced, &model.id);
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let _ = write!(
            out,
            "{:<34} {:>7.3} {:>7.3} {:>8} {:<4} {:<16} {:<4} {:<5}",
            model.id,
            model.input_per_mtok,
            model.output_per_mtok,
            model.context,
            caps,
            source,
            yes_no(key),
            yes_no(auto)
        );
        for theta in ability.iter().flat_map(|a| &a.theta) {
            let _ = write!(out, " {theta:>5.2}");
        }
        out.push('\n');
    }
    let prior = &abilities.prior;
    let r2: Vec<String> = prior.r2.iter().map(|r| format!("{r:.2}")).collect();
    let _ = writeln!(
        out,
        "\nprior: θ = θ̄ + slope·(ln output price − {:.2}), fitted on {} models with a measured θ; \
         r² per skill {}",
        prior.mean_log_price,
        prior.anchors.len(),
        r2.join(" ")
    );
    out
}

async fn serve(config_path: Option<PathBuf>, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let (config, catalog) = catalog::load_configured(config_path.as_deref())?;
    for provider in catalog.providers.values() {
        if let (Some(env), None) = (&provider.api_key_env, &provider.api_key) {
            tracing::warn!(provider = %provider.name, "no API key: {env} is not set; auto skips its models and explicit requests for them answer 503");
        }
    }
    let keys = config.router_keys(std::env::var("TRIAGE_KEYS").ok().as_deref());
    if keys.is_empty() {
        tracing::warn!(
            "no router keys configured ([auth] keys or TRIAGE_KEYS): every caller is accepted"
        );
    }
    let models = catalog.models.len();
    warn_if_auto_has_no_model(&config, &catalog);
    let adaptive = load_adaptive(&config, &catalog);
    let state = AppState::new(&config, catalog, &keys, adaptive)?;
    let addr = match listen {
        Some(addr) => addr,
        None => config.listen.parse()?,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(%addr, models, "triage listening");
    tokio::spawn(reload_on_sighup(state.clone()));
    server::serve(
        listener,
        &state,
        server::app(state.clone()),
        shutdown_signal(),
    )
    .await?;
    // Every request has finished and queued its outcome: write them all before exiting.
    if let Some(log) = &state.outcomes {
        log.flush().await;
        tracing::info!("outcome log drained");
    }
    // And their spans (bounded by the export timeout).
    if let Some(telemetry) = state.telemetry.as_ref() {
        tokio::task::block_in_place(|| telemetry.flush());
    }
    Ok(())
}

/// `triage health`: one plain-HTTP GET, success only on 200. Written on a bare TCP stream so
/// that it needs no TLS set-up or CA bundle (a minimal container image has none); health
/// checks talk to the router on loopback.
async fn health(url: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let parsed = reqwest::Url::parse(url).with_context(|| format!("`{url}` is not a URL"))?;
    anyhow::ensure!(
        parsed.scheme() == "http",
        "triage health speaks plain http://, not {url}"
    );
    let host = parsed.host_str().context("the URL has no host")?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let check = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
            parsed.path()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        anyhow::Ok(head)
    };
    let head = tokio::time::timeout(std::time::Duration::from_secs(5), check)
        .await
        .with_context(|| format!("GET {url}: no answer within 5 s"))?
        .with_context(|| format!("GET {url}"))?;
    // "HTTP/1.1 200"
    anyhow::ensure!(
        &head[9..12] == b"200",
        "GET {url}: {}",
        String::from_utf8_lossy(&head)
    );
    Ok(())
}

#[derive(clap::Subcommand)]
enum KeysAction {
    /// Create a key and print it with its secret (shown this once).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        budget_usd: Option<f64>,
        /// day, month or total.
        #[arg(long, value_parser = ["day", "month", "total"])]
        budget_period: Option<String>,
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens (prompt + completion) per minute.
        #[arg(long)]
        tpm: Option<u32>,
        /// Model ids, globs and profiles the key may use, comma separated.
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// A date (2027-01-31) or date and time, UTC.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Every key with its spend in its current period.
    List,
    /// Change a key's budget, rate or allow-list.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        budget_usd: Option<f64>,
        #[arg(long)]
        rpm: Option<u32>,
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Refuse the key from the next request on (running routers: within [log] key_refresh_ms).
    Revoke { id: String },
}

/// The stored key with this id.
fn stored_key(
    store: &mut triage_gateway::outcomes::Store,
    id: &str,
) -> anyhow::Result<triage_gateway::outcomes::store::KeyRow> {
    store
        .keys()?
        .into_iter()
        .find(|r| r.id == id)
        .with_context(|| format!("no key has id {id}"))
}

/// `triage keys …`: the same store the running routers read.
fn keys_command(action: KeysAction, config: Option<&PathBuf>) -> anyhow::Result<()> {
    use triage_gateway::keys::{KeyRing, NewKey};
    let (config, _) = catalog::load_configured(config.map(PathBuf::as_path))?;
    let target = triage_gateway::outcomes::Target::of(&config.log);
    let mut store = target.open()?;
    let now = triage_gateway::outcomes::now_ms();
    match action {
        KeysAction::Create {
            name,
            budget_usd,
            budget_period,
            rpm,
            tpm,
            models,
            expires_at,
        } => {
            let budget_period = budget_period
                .as_deref()
                .map(triage_gateway::keys::Period::parse);
            let new = NewKey {
                name,
                budget_usd,
                budget_period,
                rpm,
                tpm,
                models,
                expires_at,
                metadata: None,
            };
            let (row, secret) = new.into_row(now)?;
            store.insert_key(&row)?;
            println!("{}\t{}\t{secret}", row.id, row.name);
            eprintln!("the secret is shown this once; it is stored only as its SHA-256");
        }
        KeysAction::List => {
            let rows = store.keys()?;
            let spend = store.key_spend(i64::MIN)?;
            let ring = KeyRing::default();
            ring.load(rows, &spend, now);
            for key in ring.all() {
                println!("{}", serde_json::to_string(&key.describe())?);
            }
        }
        KeysAction::Update {
            id,
            name,
            budget_usd,
            rpm,
            models,
            expires_at,
        } => {
            let mut row = stored_key(&mut store, &id)?;
            if let Some(name) = name {
                row.name = name;
            }
            row.budget_usd = budget_usd.or(row.budget_usd);
            row.rpm = rpm.map(i64::from).or(row.rpm);
            if let Some(models) = &models {
                row.models = Some(serde_json::to_string(models)?);
            }
            if let Some(at) = expires_at {
                row.expires_ms = Some(triage_gateway::keys::expiry(&at)?);
            }
            triage_gateway::keys::check(&row, models.as_deref())?;
            store.update_key(&row)?;
            println!("updated {id}");
        }
        KeysAction::Revoke { id } => {
            let mut row = stored_key(&mut store, &id)?;
            row.revoked_ms.get_or_insert(now);
            store.update_key(&row)?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// Says at start-up, rather than at the first `auto` request, when no model can answer `auto`:
/// every model's provider lacks its key or `[routing] models` leaves none.
fn warn_if_auto_has_no_model(config: &Config, catalog: &Catalog) {
    let profile = triage_core::policy::Profile::Balanced;
    let unavailable = triage_gateway::router::unavailable(catalog, &config.routing, profile);
    let callable = catalog.models.len() - unavailable.len();
    if callable > 0 {
        tracing::info!(models = callable, "models auto can choose");
        return;
    }
    let mut missing: Vec<&str> = catalog
        .models
        .values()
        .filter_map(|m| catalog.missing_key(m))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    tracing::warn!(
        "auto has no model to choose: set one of {} or add a keyless provider, and check [routing] models",
        missing.join(", ")
    );
}

/// The classifier for `auto`. A missing or broken model disables adaptive routing with a
/// warning; explicit routing works without it.
fn load_adaptive(config: &Config, catalog: &Catalog) -> Option<AdaptiveRouter> {
    let started = std::time::Instant::now();
    match Classifier::load(&config.classifier.model) {
        Ok(classifier) => {
            let router = AdaptiveRouter::new(classifier, catalog, config.routing.targets());
            tracing::info!(
                model = %config.classifier.model,
                routable_models = router.routable(),
                load_ms = started.elapsed().as_millis() as u64,
                "classifier loaded: adaptive routing (model \"auto\") is on"
            );
            Some(router)
        }
        Err(error) => {
            tracing::warn!("adaptive routing is off: {error}");
            None
        }
    }
}

/// SIGHUP reloads the classifier model directory, like `POST /admin/reload`.
async fn reload_on_sighup(state: std::sync::Arc<AppState>) {
    #[cfg(unix)]
    if let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    {
        while hangups.recv().await.is_some() {
            // Errors are logged inside and leave the old model in place.
            let _ = server::reload_classifier(&state).await;
        }
    }
    #[cfg(not(unix))]
    let _ = state;
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

/// The options of `triage report`.
#[derive(Debug, Clone, clap::Args)]
struct ReportArgs {
    /// The SQLite outcome log (default: the config's `[log] url` or `path`, else triage.db).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Config file whose catalog prices the baseline (default: the built-in catalog).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Only requests from this date on (`2026-11-25`, UTC, or `2026-11-25T10:00:00Z`).
    #[arg(long)]
    since: Option<String>,
    /// Compare adaptive requests with this model (default: each one's strongest candidate).
    #[arg(long)]
    baseline: Option<String>,
    /// Print one JSON object (the same as `GET /v1/usage`).
    #[arg(long)]
    json: bool,
}

/// `triage report`: the report of a log file, as text or JSON.
fn report(args: &ReportArgs) -> anyhow::Result<()> {
    use triage_gateway::outcomes::report::{Report, ReportOptions};
    use triage_gateway::outcomes::{Store, parse_date};
    let (config, catalog) = catalog::load_configured(args.config.as_deref())?;
    let db = args.db.clone().unwrap_or(config.log.path);
    let since_ms = match &args.since {
        Some(text) => Some(
            parse_date(text)
                .with_context(|| format!("--since {text}: expected a date like 2026-11-25"))?,
        ),
        None => None,
    };
    if let Some(baseline) = &args.baseline {
        anyhow::ensure!(
            catalog.model(baseline).is_some(),
            "--baseline {baseline}: not a model of the catalog"
        );
    }
    let mut store = match &config.log.url {
        Some(url) if args.db.is_none() => Store::connect(url)
            .with_context(|| "cannot connect to the outcome log at [log] url".to_string())?,
        _ => Store::open_read(&db)
            .with_context(|| format!("cannot open the outcome log {}", db.display()))?,
    };
    let options = ReportOptions {
        since_ms,
        baseline: args.baseline.clone(),
    };
    let report = Report::compute(&mut store, &catalog, &options)
        .with_context(|| format!("cannot read the outcome log {}", db.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

#[cfg(all(test, feature = "learn", feature = "mock", feature = "bench"))]
mod tests {
    use super::*;

    /// The full build knows every command a serving build answers for, and the learn list is
    /// exactly the learning side's subcommands.
    #[test]
    fn the_missing_commands_are_the_full_builds_commands() {
        use clap::{CommandFactory, Subcommand};
        let full = Cli::command();
        for name in LEARN_COMMANDS
            .iter()
            .chain(&["mock-upstream", "bench-overhead"])
        {
            assert!(full.find_subcommand(name).is_some(), "{name}");
            assert!(
                missing_command(name).contains("is not in this build"),
                "{name}"
            );
        }
        let learn = triage_learn::cli::Command::augment_subcommands(clap::Command::new("learn"));
        let mut names: Vec<&str> = learn.get_subcommands().map(|c| c.get_name()).collect();
        names.sort_unstable();
        let mut listed = LEARN_COMMANDS.to_vec();
        listed.sort_unstable();
        assert_eq!(names, listed);
        assert!(missing_command("mock-upstream").contains("`mock` feature"));
        assert!(missing_command("train").contains("`learn` feature"));
        assert!(missing_command("serv").contains("not a triage command"));
    }

    /// `MI_OPTION_PURGE_DELAY` is a bare number: `libmimalloc-sys` does not export the option.
    /// In mimalloc v3 (what the crate builds without its `v2` feature) the purge delay is the
    /// only option whose default is 1,000; its neighbours default to 1 and 0. A crate upgrade
    /// that renumbers the options fails here instead of silently setting another one.
    #[test]
    fn the_purge_delay_option_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the environment sets the value this test reads
        }
        // SAFETY: reads an allocator option.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000, "option {MI_OPTION_PURGE_DELAY}'s default");
    }
}
