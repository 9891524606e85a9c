//! The `perfpilot` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    perfpilot::cli::run(perfpilot::cli::Cli::parse())
}
