//! The `perfpilot` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options, [`perfpilot::cli::MALLOC_CONF`]: jemalloc reads them from
/// this symbol (`_rjem_`-prefixed like the rest of tikv-jemalloc-sys's jemalloc).
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: perfpilot::cli::MallocConf = perfpilot::cli::MallocConf::AGENT;

fn main() -> ExitCode {
    perfpilot::cli::run(perfpilot::cli::Cli::parse())
}
