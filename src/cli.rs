//! Command-line definitions (clap) only.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "rostersync",
    version,
    about = "Keeps agent groups in step across SCIM, teams, DeepCall and Kazoo"
)]
pub struct Cli {
    /// Config file (default: $ROSTERSYNC_CONFIG, ./config/rostersync.toml, /etc/rostersync/rostersync.toml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format on stderr (overrides [log] format).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<Format>,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less logging (warnings and errors only).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// `--only EMAIL`: trimmed and lower-cased (emails are compared case-insensitively).
fn parse_email(s: &str) -> Result<String, String> {
    let e = s.trim().to_lowercase();
    match e.split_once('@') {
        Some((user, domain)) if !user.is_empty() && !domain.is_empty() => Ok(e),
        _ => Err(format!("\"{s}\" is not an email")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate config and source; print a one-screen summary.
    Check,
    /// One run, then exit.
    Sync {
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only this target (repeatable).
        #[arg(long = "target", value_name = "NAME")]
        targets: Vec<String>,
        /// Only this person's additions and removals in groups that already exist
        /// (repeatable): a trial before a whole run. Creates, deletes, renames and other
        /// people's changes are listed as skipped.
        #[arg(long = "only", value_name = "EMAIL", value_parser = parse_email)]
        only: Vec<String>,
        /// Read every managed group back first and repair drift.
        #[arg(long)]
        full: bool,
        /// Let this run remove more than the safety guard allows.
        #[arg(long)]
        allow_mass_removal: bool,
        #[arg(long, value_enum, default_value = "text")]
        output: Format,
        /// With --dry-run: write the plan to FILE, to review and then apply with --plan.
        #[arg(long, value_name = "FILE", requires = "dry_run")]
        save_plan: Option<PathBuf>,
        /// Apply exactly the plan in FILE; refused (exit 2) if the source or the known
        /// state changed since it was saved.
        #[arg(long = "plan", value_name = "FILE", conflicts_with_all = ["dry_run", "full", "targets", "allow_mass_removal", "only"])]
        plan_file: Option<PathBuf>,
    },
    /// Scheduler loop for systemd.
    Daemon,
    /// What past runs sent and how each call ended.
    History {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long = "target", value_name = "NAME")]
        target: Option<String>,
        /// Group key or name.
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        run: Option<i64>,
        #[arg(long, value_enum, default_value = "text")]
        output: Format,
    },
    /// The known state: remote ids and members per group.
    State {
        #[arg(long = "target", value_name = "NAME")]
        target: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        output: Format,
    },
    /// Where a person is meant to be on every target, and the last call that touched them.
    Explain { email: String },
}
