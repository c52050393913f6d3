//! Parses arguments, sets up logging, calls one function, maps the result to an exit code.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's malloc: at SPEC 9's design point (a million memberships)
/// a run allocates millions of small strings on several threads (the source's parsers,
/// the store's thread); glibc kept ~60% more resident than the heap held (per-thread
/// arenas that are not given back) and spent more time in malloc/free. See BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = rostersync::cli::Cli::parse();
    rostersync::app::main(cli).into()
}
