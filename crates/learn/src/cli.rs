//! The learning side's `triage` subcommands (train, distill-static, eval, label, calibrate,
//! replay, probe), as one clap enum that the `triage` binary flattens into its own when built
//! with the `learn` feature. A binary edge: errors leave as `anyhow`.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use triage_core::catalog;
use triage_core::classifier::Classifier;
use triage_gateway::router::AdaptiveRouter;

use crate::{calibrate, eval, train};

#[derive(Subcommand)]
pub enum Command {
    /// Fit the classifier and the model abilities on outcome data; writes a model directory.
    Train(train::TrainArgs),
    /// Distil static token embeddings from a pretrained sentence encoder (Model2Vec method):
    /// the table the default classifier's heads sit on.
    DistillStatic(train::static_distill::DistillArgs),
    /// Measure routing quality on outcome data: RouteLLM's APGR/CPT (two models) or cost-quality
    /// curves and AIQ (many models), beside random, oracle and kNN routers; with `--battles`,
    /// how often the predicted better model won pairwise battles.
    Eval {
        #[command(flatten)]
        args: eval::EvalArgs,
        /// Classifier model directory or Hugging Face repo id.
        #[arg(long, default_value = "models/default")]
        model: String,
    },
    /// Grade logged answers that have no feedback with a judge model; stores the grades in the
    /// log for `train --from-log`.
    Label(train::judge::LabelArgs),
    /// Set a profile's quality target from logged traffic, for a share of requests to one
    /// model or a budget per 1,000 requests.
    Calibrate(calibrate::CalibrateArgs),
    /// Write rows of an outcome file into an outcome log as if they were traffic with
    /// feedback, to try `train --from-log` and `calibrate` on public data.
    Replay(train::replay::ReplayArgs),
    /// Measure how the classifier reads hand-labelled chat prompts: skill accuracy, tool-need
    /// AUC, easy/hard concordance.
    Probe(eval::probes::ProbeArgs),
}

/// Runs one learning-side command.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Probe(args) => {
            let classifier = Classifier::load(&args.model)?;
            let probes = eval::probes::read_probes(&args.probes)?;
            let report = eval::probes::measure(&classifier, &probes)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(())
        }
        Command::DistillStatic(args) => {
            let summary = train::static_distill::run(&args)?;
            eprintln!(
                "wrote {}: {} tokens x {} dims ({:.1}% of the teacher's variance), token frequencies from {} prompts, {:.0} s",
                args.out.display(),
                summary.vocab,
                summary.dims,
                100.0 * summary.explained_variance,
                summary.corpus_prompts,
                summary.seconds
            );
            if let Some(t) = &summary.tuning {
                eprintln!(
                    "tuned on {} prompts' sentence vectors: held-out cosine {:.4} -> {:.4} (epoch {} of {})",
                    t.sentences, t.cosine_before, t.cosine_after, t.best_epoch, t.epochs
                );
            }
            Ok(())
        }
        Command::Calibrate(args) => {
            let (config, catalog) = catalog::load_configured(args.config.as_deref())?;
            let router = AdaptiveRouter::new(
                Classifier::load(&config.classifier.model)?,
                &catalog,
                config.routing.targets(),
            );
            let calibration = calibrate::run(&args, &config, &catalog, &router)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&calibration)?);
            } else {
                print!("{calibration}");
            }
            Ok(())
        }
        Command::Replay(args) => {
            let replayed = train::replay::run(&args)?;
            eprintln!(
                "logged {} replayed requests in {}: {} with feedback, {} battles as two answers and a preference",
                replayed.requests(),
                args.log,
                replayed.graded,
                replayed.battles
            );
            Ok(())
        }
        Command::Label(args) => {
            let (config, catalog) = catalog::load_configured(args.config.as_deref())?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let summary = runtime.block_on(train::judge::run(&args, &config, &catalog))?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Command::Eval { args, model } => evaluate(&args, &model),
        Command::Train(args) if args.refit_ability_maps => {
            let metadata = train::refit_ability_maps(&args)?;
            for map in metadata.maps() {
                eprintln!("{} map: {}", map.benchmark, map.fit);
            }
            Ok(())
        }
        Command::Train(args) if args.prompt_list_only => {
            let listed = train::list_prompts(&args)?;
            eprintln!("listed {listed} training prompts in {}", args.out.display());
            Ok(())
        }
        Command::Train(args) => {
            let summary = train::run(&args)?;
            eprintln!(
                "wrote {} in {:.0} s",
                summary.out.display(),
                summary.seconds
            );
            Ok(())
        }
    }
}

fn evaluate(args: &eval::EvalArgs, model: &str) -> anyhow::Result<()> {
    let classifier = Classifier::load(model)?;
    let dir = Path::new(model).is_dir().then(|| PathBuf::from(model));
    let scorer = eval::classifier::ClassifierScorer::new(&classifier, dir);
    let report = eval::run(args, &scorer)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
