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
    /// Exchange a token as a workload: nonce, DPoP key, enforcer evidence, exchange.
    Exchange {
        #[arg(long)]
        broker: String,
        #[arg(long)]
        subject_token_file: PathBuf,
        #[arg(long)]
        audience: String,
        #[arg(long)]
        scope: Option<String>,
        /// The local enforcer's socket; without it no evidence is sent.
        #[arg(long)]
        enforcer_socket: Option<PathBuf>,
        /// `jwt` (or the full URI) for a cloud-IAM token.
        #[arg(long)]
        requested_token_type: Option<String>,
        /// `jwt` (default), `id_token` or `access_token`, or the full URI.
        #[arg(long, default_value = "jwt")]
        subject_token_type: String,
        /// A PKCS#8 P-256 key for DPoP; ephemeral by default.
        #[arg(long)]
        dpop_key: Option<PathBuf>,
    },
    /// The whole attested flow on loopback, narrated, with three refusals.
    Demo,
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
        .event_format(crate::logging::FlatJson)
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
        Command::Demo => crate::demo::run(),
        Command::Exchange {
            broker,
            subject_token_file,
            audience,
            scope,
            enforcer_socket,
            requested_token_type,
            subject_token_type,
            dpop_key,
        } => {
            let token = match std::fs::read_to_string(&subject_token_file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("trustbroker: {}: {e}", subject_token_file.display());
                    return ExitCode::FAILURE;
                }
            };
            let key = match dpop_key.as_deref().map(crate::client::DpopKey::load) {
                Some(k) => k,
                None => crate::client::DpopKey::generate(),
            };
            let key = match key {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("trustbroker: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let uri = |t: &str| {
                if t.contains(':') {
                    t.to_owned()
                } else {
                    format!("urn:ietf:params:oauth:token-type:{t}")
                }
            };
            let stt = uri(&subject_token_type);
            let rtt = requested_token_type.as_deref().map(uri);
            let args = crate::client::ExchangeArgs {
                broker: &broker,
                subject_token: token.trim(),
                subject_token_type: &stt,
                audience: &audience,
                scope: scope.as_deref(),
                requested_token_type: rtt.as_deref(),
                enforcer_socket: enforcer_socket.as_deref(),
            };
            match crate::client::exchange(&args, &key) {
                Ok(a) if a.status == 200 => {
                    println!("{}", a.body);
                    ExitCode::SUCCESS
                }
                Ok(a) => {
                    eprintln!("{}", a.body);
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!(
                        "{}",
                        serde_json::json!({"error": "client_error", "error_description": e.to_string()})
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Command::Keys { config } => {
            let cfg = match load(config.as_ref()) {
                Ok(cfg) => cfg,
                Err(p) => return report(&p),
            };
            let loaded = actix_web::rt::System::new().block_on(async {
                crate::backend::Backend::open(&cfg.state)
                    .await?
                    .load_keys()
                    .await
            });
            match loaded {
                Ok((records, _)) => {
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
