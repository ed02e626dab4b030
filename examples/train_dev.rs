//! TEMPORARY (train helper): runs `triage::train::run` until `triage train` is wired in main.rs.
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: triage::train::TrainArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let summary = triage::train::run(&cli.args)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
