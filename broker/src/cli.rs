//! The command line (SPEC §3).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Problems, ProcessEnv};

#[derive(Debug, Parser)]
#[command(
    name = "trustbroker",
    version,
    about = "A federation trust broker across clouds and clusters"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker (embedded defaults without --config).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration and list every problem.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Show the signing keys in the state directory.
    Keys {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn load(config: Option<&PathBuf>) -> Result<Config, Problems> {
    match config {
        Some(p) => Config::load(p, &ProcessEnv),
        None => Config::defaults(),
    }
}

fn report(problems: &Problems) -> ExitCode {
    eprintln!(
        "configuration refused ({} problem{}):",
        problems.0.len(),
        if problems.0.len() == 1 { "" } else { "s" }
    );
    for p in &problems.0 {
        eprintln!("  {p}");
    }
    ExitCode::from(2)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init();
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config, &ProcessEnv) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} trust domains, {} boundaries)",
                    config.display(),
                    cfg.domains.len().saturating_sub(1),
                    cfg.boundaries.len()
                );
                ExitCode::SUCCESS
            }
            Err(p) => report(&p),
        },
        Command::Serve { config } => {
            let cfg = match load(config.as_ref()) {
                Ok(cfg) => cfg,
                Err(p) => return report(&p),
            };
            init_logging();
            let result = actix_web::rt::System::new().block_on(crate::serve::run(cfg));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "trustbroker could not start");
                    eprintln!("trustbroker: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Keys { config } => {
            let cfg = match load(config.as_ref()) {
                Ok(cfg) => cfg,
                Err(p) => return report(&p),
            };
            let crate::config::StateConfig::Embedded { path } = &cfg.state;
            match crate::store::DurableStore::open(path).and_then(|s| s.load_keys()) {
                Ok(records) => {
                    for r in records {
                        println!(
                            "{}\t{:?}\tpublish_at={}\tactivate_at={}\tdeactivate_at={}",
                            r.kid, r.alg, r.publish_at, r.activate_at, r.deactivate_at
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("trustbroker: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
