//! `trustbroker-enforcer`: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    enforcer::cli::run(enforcer::cli::Cli::parse())
}
