//! `trustbroker`: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    broker::cli::run(broker::cli::Cli::parse())
}
