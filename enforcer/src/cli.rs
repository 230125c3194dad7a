//! `trustbroker-enforcer enroll | run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use clap::{Parser, Subcommand};
use trust_bundles::{Clock, SystemClock};

use crate::config::Registrations;
use crate::identity::Identity;
use crate::procfs::RealProc;
use crate::server::{Enforcer, run as serve};

#[derive(Debug, Parser)]
#[command(
    name = "trustbroker-enforcer",
    version,
    about = "trustbroker's node enforcer"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enroll this node with a broker using a join token.
    Enroll {
        #[arg(long)]
        broker: String,
        /// The join token. Visible to local users in the process list: prefer
        /// `--join-token-file` or `TRUSTBROKER_JOIN_TOKEN`. Tokens are base64url: one in 64
        /// starts with `-`, and is still a value.
        #[arg(
            long,
            env = "TRUSTBROKER_JOIN_TOKEN",
            hide_env_values = true,
            allow_hyphen_values = true
        )]
        join_token: Option<String>,
        #[arg(long, conflicts_with = "join_token")]
        join_token_file: Option<PathBuf>,
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Serve evidence on a Unix socket.
    Run {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(std::io::stdout)
        .try_init();
}

pub fn run(cli: Cli) -> ExitCode {
    init_logging();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    match cli.command {
        Command::Enroll {
            broker,
            join_token,
            join_token_file,
            data_dir,
        } => {
            let token = match (join_token, join_token_file) {
                (Some(t), _) => t,
                (None, Some(f)) => match std::fs::read_to_string(&f) {
                    Ok(t) => t.trim().to_owned(),
                    Err(e) => {
                        eprintln!("trustbroker-enforcer: {}: {e}", f.display());
                        return ExitCode::FAILURE;
                    }
                },
                (None, None) => {
                    eprintln!(
                        "trustbroker-enforcer: a join token is required (--join-token-file, TRUSTBROKER_JOIN_TOKEN or --join-token)"
                    );
                    return ExitCode::from(2);
                }
            };
            enroll(&broker, &token, &data_dir, clock.as_ref())
        }
        Command::Run {
            data_dir,
            socket,
            config,
        } => {
            let registrations = match config.as_deref().map(Registrations::load).transpose() {
                Ok(r) => r.unwrap_or_default(),
                Err(problems) => {
                    for p in problems {
                        eprintln!("{p}");
                    }
                    return ExitCode::from(2);
                }
            };
            let identity = match Identity::load(&data_dir) {
                Ok(i) => Arc::new(RwLock::new(i)),
                Err(e) => {
                    eprintln!("trustbroker-enforcer: {e} (run `enroll` first)");
                    return ExitCode::FAILURE;
                }
            };
            spawn_renewal(identity.clone(), data_dir, clock.clone());
            let enforcer = Arc::new(Enforcer {
                identity,
                registrations,
                procs: Arc::new(RealProc::default()),
                clock,
                watch: Arc::new(std::sync::Mutex::new(crate::watch::Watchlist::new())),
            });
            spawn_exit_watch(enforcer.clone());
            tracing::info!(socket = %socket.display(), "enforcer is serving");
            match serve(enforcer, &socket) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("trustbroker-enforcer: {}: {e}", socket.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn enroll(broker: &str, token: &str, data_dir: &std::path::Path, clock: &dyn Clock) -> ExitCode {
    match Identity::enroll(broker, token, data_dir, clock) {
        Ok(id) => {
            println!(
                "enrolled as {} (certificate until {})",
                id.state.spiffe_id, id.state.expires_at
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("trustbroker-enforcer: enrollment failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How often attested processes are checked for exit.
const EXIT_WATCH_EVERY: Duration = Duration::from_millis(200);

/// Watches attested processes and reports each exit to the broker, which revokes the
/// tokens bound to that workload's key. Undelivered reports are retried next round.
fn spawn_exit_watch(enforcer: Arc<Enforcer>) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(EXIT_WATCH_EVERY);
            let exits = enforcer
                .watch
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .sweep(enforcer.procs.as_ref(), crate::watch::MAX_EXITS_PER_REPORT);
            if exits.is_empty() {
                continue;
            }
            let sent = enforcer
                .identity
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .report_exits(&exits, enforcer.clock.as_ref());
            match sent {
                Ok(()) => {
                    for e in &exits {
                        tracing::info!(
                            event = "workload_exit",
                            pid = e.pid,
                            "exit reported; its tokens are revoked"
                        );
                    }
                    enforcer
                        .watch
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .delivered(exits.len());
                }
                Err(e) => {
                    tracing::warn!(error = %e, pending = exits.len(), "reporting workload exits failed; retrying")
                }
            }
        }
    });
}

/// Renews the node certificate at half-life, retrying every 30 s on failure.
fn spawn_renewal(identity: Arc<RwLock<Identity>>, dir: PathBuf, clock: Arc<dyn Clock>) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(30));
            let due = identity
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .wants_renewal(clock.as_ref());
            if !due {
                continue;
            }
            let renewed = identity
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .renew(&dir, clock.as_ref());
            match renewed {
                Ok(next) => {
                    tracing::info!(
                        expires_at = next.state.expires_at,
                        "node certificate renewed"
                    );
                    *identity.write().unwrap_or_else(PoisonError::into_inner) = next;
                }
                Err(e) => tracing::warn!(error = %e, "renewal failed; retrying"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use clap::Parser;

    use super::*;

    #[test]
    fn a_join_token_that_starts_with_a_hyphen_is_a_value() {
        let cli = Cli::try_parse_from([
            "trustbroker-enforcer",
            "enroll",
            "--broker",
            "http://127.0.0.1:1",
            "--join-token",
            "-8cLv3AXz",
            "--data-dir",
            "d",
        ])
        .unwrap();
        match cli.command {
            Command::Enroll { join_token, .. } => {
                assert_eq!(join_token.as_deref(), Some("-8cLv3AXz"));
            }
            _ => panic!("not enroll"),
        }
    }
}
