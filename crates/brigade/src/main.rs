//! `brigade`: runs Brigade's services (all in one process, or one per process) and loads
//! demo data. A thin shell over the service crates: parse flags, load settings, start,
//! wait for a signal, stop.
#![forbid(unsafe_code)]

mod cli;
mod messages;
mod run;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's malloc: a request allocates a few dozen small objects
/// (headers, the request context, the JSON body) and frees them on another poll, the
/// pattern glibc handles worst; it measured ≈10% of a cached product read's CPU
/// (BENCHMARKS.md). The bench's bare servers use it too, so ratios stay like for like.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("brigade: error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line naming the cause, never a backtrace.
            eprintln!("brigade: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
