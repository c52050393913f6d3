//! `completions SHELL` and `man [--out-dir DIR]`: generated from the clap definitions in
//! `cli.rs`, so they never disagree with `--help`. Neither reads the config.

use clap::CommandFactory;

use super::report;
use crate::cli::{Cli, Command};
use crate::sync::ExitCode;

/// Runs `completions` or `man`.
pub(super) fn run(cli: &Cli) -> ExitCode {
    let r = match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "rostersync", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { out_dir: Some(dir) } => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(Cli::command(), dir))
            .map(|()| eprintln!("man pages written to {}", dir.display())),
        Command::Man { out_dir: None } => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())
        }
        _ => unreachable!("only completions and man are dispatched here"),
    };
    match r {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            report(&e);
            ExitCode::Failed
        }
    }
}
