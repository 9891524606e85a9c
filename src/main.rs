//! The `perfpilot` binary: parse the command line and hand over to the library.
#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options, [`perfpilot::cli::MALLOC_CONF`]: jemalloc reads them from
/// this symbol (`_rjem_`-prefixed like the rest of tikv-jemalloc-sys's jemalloc).
// The one unsafe attribute of the binary: the symbol name is jemalloc's own, and the value a
// pointer to a 'static C string (see `MallocConf`).
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: perfpilot::cli::MallocConf = perfpilot::cli::MallocConf::AGENT;

fn main() -> ExitCode {
    // clap builds every subcommand's arguments to parse the line: about 24 KiB of stack once.
    // On a thread that ends, those pages go back instead of staying in the main thread's stack
    // for the agent's whole life.
    let cli = std::thread::scope(|scope| scope.spawn(perfpilot::cli::Cli::parse).join())
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    perfpilot::cli::run(cli)
}
