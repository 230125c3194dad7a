//! `trustbroker`: parses the command line and hands over to the library.

use clap::Parser;

/// mimalloc: every exchange makes and frees a few hundred small allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    broker::cli::run(broker::cli::Cli::parse())
}
