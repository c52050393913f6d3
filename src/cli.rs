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

/// An `--only` value that is not an email.
#[derive(Debug, thiserror::Error)]
#[error("\"{0}\" is not an email")]
pub struct NotAnEmail(String);

/// `--only EMAIL`: trimmed and lower-cased (emails are compared case-insensitively).
fn parse_email(s: &str) -> Result<String, NotAnEmail> {
    let e = s.trim().to_lowercase();
    match e.split_once('@') {
        Some((user, domain)) if !user.is_empty() && !domain.is_empty() => Ok(e),
        _ => Err(NotAnEmail(s.to_string())),
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
    Check {
        /// Also probe every target, read-only: authenticate, read one page of the group
        /// listing, say whether the answer was understood, latency and rate-limit headers.
        #[arg(long)]
        online: bool,
        /// Output format of the summary.
        #[arg(long, value_enum, default_value = "text")]
        output: Format,
    },
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
        /// Output format of the plan and the results.
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
        /// At most this many calls (newest first).
        #[arg(long, default_value_t = 50, value_name = "N")]
        limit: usize,
        /// Only calls sent to this target.
        #[arg(long = "target", value_name = "NAME")]
        target: Option<String>,
        /// Group key or name.
        #[arg(long)]
        group: Option<String>,
        /// Only this run (its id, as `history` lists it).
        #[arg(long, value_name = "ID")]
        run: Option<i64>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Format,
    },
    /// The known state: remote ids and members per group (`state copy` moves it).
    State {
        #[command(subcommand)]
        action: Option<StateAction>,
        /// Only this target.
        #[arg(long = "target", value_name = "NAME")]
        target: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Format,
    },
    /// Where a person is meant to be on every target, whether the known state agrees, and
    /// the last call that touched them.
    Explain {
        /// The person's email (compared case-insensitively).
        email: String,
        /// Also ask each target, read-only, what it holds for them now, and mark every
        /// disagreement with the known state.
        #[arg(long)]
        online: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Format,
    },
    /// Print a shell completion script on stdout.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (roff), from the same definitions as --help.
    Man {
        /// Write rostersync.1 and one page per command into DIR (default: rostersync.1 on stdout).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// `rostersync state ...`.
#[derive(Debug, Subcommand)]
pub enum StateAction {
    /// Copies the whole state (known groups, members, intents, lookups, facts, history) to
    /// another backend: from SQLite to PostgreSQL to go to two nodes without a `--full`
    /// re-read of every vendor, or back. Refuses a destination that already holds a state.
    /// Holds the source's lock (or lease) while it copies, so no run writes meanwhile.
    Copy {
        /// The destination: `postgres://user@host/db` or a SQLite file path.
        #[arg(long, value_name = "URL|PATH")]
        to: String,
        /// The destination's password, from this file (PostgreSQL).
        #[arg(long, value_name = "FILE", conflicts_with = "password_env")]
        password_file: Option<std::path::PathBuf>,
        /// The destination's password, from this environment variable (PostgreSQL).
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// CA certificates (PEM) to verify the destination server with (PostgreSQL; TLS
        /// is then required).
        #[arg(long, value_name = "FILE")]
        ca_file: Option<std::path::PathBuf>,
    },
}
