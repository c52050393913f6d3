//! Parses arguments, sets up logging, calls one function, maps the result to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = rostersync::cli::Cli::parse();
    rostersync::app::main(cli).into()
}
