//! Commands: load the config, set up logging, run one command, return its exit code.
//! Exit codes (SPEC section 2, `sync::ExitCode`): 0 ok, 1 something was not done, 2 bad
//! usage/config/source (nothing sent), 3 a safety guard stopped a target, 4 another
//! instance holds the lock. A run's code is computed in one place: `RunReport::exit_code`.

mod check;
mod explain;
mod inspect;
mod manual;

use std::io::IsTerminal;

use serde_json::json;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, Format};
use crate::config::{Config, LogFormat};
use crate::store::HistoryFilter;
use crate::sync::{Ending, ExitCode, SavedPlan, SyncOptions, exit_policy};

/// Prints an error once, with its whole chain, to stderr.
/// Why a read-only question to a target (`check --online`, `explain --online`) got no
/// answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AskError {
    #[error("{0} not set")]
    MissingSecrets(String),
    #[error("cannot run: {0}")]
    Client(#[from] crate::targets::BuildError),
    #[error(transparent)]
    Op(#[from] crate::targets::OpError),
}

pub(crate) fn report(e: &dyn std::error::Error) {
    let mut msg = format!("error: {e}");
    let mut src = e.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !msg.contains(&s_text) {
            msg += &format!(": {s_text}");
        }
        src = s.source();
    }
    eprintln!("{msg}");
}

fn init_logging(cli: &Cli, cfg: Option<&Config>) {
    let format = match cli.log_format {
        Some(Format::Json) => LogFormat::Json,
        Some(Format::Text) => LogFormat::Text,
        None => cfg.map(|c| c.log.format).unwrap_or(LogFormat::Text),
    };
    let level = if cli.quiet {
        "warn".to_string()
    } else {
        match cli.verbose {
            0 => cfg
                .map(|c| c.log.level.clone())
                .unwrap_or_else(|| "info".into()),
            1 => "debug".into(),
            _ => "trace".into(),
        }
    };
    let filter = EnvFilter::try_from_env("ROSTERSYNC_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,rostersync={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::progress::LogWriter);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// Runs the command line; returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    // Generated from the clap definitions alone: no config needed.
    if matches!(
        cli.command,
        Command::Completions { .. } | Command::Man { .. }
    ) {
        return manual::run(&cli);
    }
    let path = Config::locate(cli.config.as_deref());
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            init_logging(&cli, None);
            report(&e);
            return ExitCode::Usage;
        }
    };
    init_logging(&cli, Some(&cfg));
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(&e);
            return ExitCode::Failed;
        }
    };
    match &cli.command {
        Command::Check { online, output } => check::check(&rt, &cfg, *online, *output),
        Command::Sync {
            dry_run,
            targets,
            only,
            full,
            allow_mass_removal,
            output,
            save_plan,
            plan_file,
        } => {
            let mut opts = SyncOptions {
                dry_run: *dry_run,
                full: *full,
                targets: targets.clone(),
                allow_mass_removal: *allow_mass_removal,
                only: only.clone(),
                expect: None,
                ..Default::default()
            };
            if let Some(file) = plan_file {
                let read = SavedPlan::read(file).and_then(|p| {
                    let selected = p.selection(file)?;
                    Ok((p, selected))
                });
                match read {
                    Ok((p, selected)) => {
                        opts.full = p.full;
                        opts.allow_mass_removal = p.allow_mass_removal;
                        opts.targets = selected;
                        opts.only = p.only.clone();
                        opts.expect = Some(p);
                    }
                    Err(e) => {
                        let e = crate::sync::SyncError::from(e);
                        report(&e);
                        return e.exit_code();
                    }
                }
            }
            opts.command = if opts.only.is_empty() {
                "sync".into()
            } else {
                format!("sync --only {}", opts.only.join(","))
            };
            let json_logs = cli.log_format == Some(Format::Json)
                || (cli.log_format.is_none() && cfg.log.format == LogFormat::Json);
            if crate::progress::allowed(json_logs || *output == Format::Json) && !cli.quiet {
                crate::progress::enable();
            }
            let code = sync(&rt, &cfg, &opts, *output, save_plan.as_deref());
            crate::progress::finish();
            code
        }
        Command::Daemon => match rt.block_on(crate::daemon::run(path.clone(), cfg.clone())) {
            Ok(code) => code,
            Err(e) => {
                report(&e);
                e.exit_code()
            }
        },
        Command::History {
            limit,
            target,
            group,
            run,
            output,
        } => {
            let f = HistoryFilter {
                limit: *limit,
                target: target.clone(),
                group: group.clone(),
                run: *run,
                email: None,
            };
            inspect::history(&cfg, &f, *output)
        }
        Command::State {
            action: Some(action),
            ..
        } => inspect::copy(&rt, &cfg, action),
        Command::State {
            action: None,
            target,
            output,
        } => inspect::state(&cfg, target.as_deref(), *output),
        Command::Explain {
            email,
            online,
            output,
        } => explain::explain(&rt, &cfg, email, *online, *output),
        Command::Completions { .. } | Command::Man { .. } => manual::run(&cli),
    }
}

fn sync(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    opts: &SyncOptions,
    output: Format,
    save_plan: Option<&std::path::Path>,
) -> ExitCode {
    match rt.block_on(crate::sync::run(cfg, opts)) {
        Ok(mut run) => {
            let plan_not_saved = save_plan.is_some_and(|path| !save(&run, opts, path));
            run.exit_code = exit_policy(Ending::Ran {
                targets: &run.targets,
                plan_not_saved,
            });
            match output {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&run).expect("a report serializes")
                ),
                Format::Text => {
                    print!("{}", crate::render::plan(&run));
                    if !opts.dry_run {
                        print!("{}", crate::render::results(&run));
                    }
                }
            }
            run.exit_code
        }
        Err(e) => {
            if output == Format::Json {
                println!(
                    "{}",
                    json!({ "error": e.to_string(), "exit_code": e.exit_code() })
                );
            }
            report(&e);
            e.exit_code()
        }
    }
}

/// `--save-plan`: writes what the dry-run planned, naming the targets it could not plan
/// (they are not in the file, so `--plan` never touches them). A dry-run that planned no
/// target saves nothing. False when the plan was to be saved and was not.
fn save(run: &crate::sync::RunReport, opts: &SyncOptions, path: &std::path::Path) -> bool {
    let saved = SavedPlan::from_report(run, opts.allow_mass_removal, &opts.only);
    let missing: Vec<&str> = run
        .targets
        .iter()
        .filter(|t| !saved.targets.contains_key(&t.name))
        .map(|t| t.name.as_str())
        .collect();
    if saved.targets.is_empty() {
        eprintln!(
            "no plan saved: no target could be planned ({}); fix what is reported above and make a new plan",
            missing.join(", ")
        );
        return false;
    }
    if let Err(e) = saved.write(path) {
        report(&e);
        return false;
    }
    let held: Vec<&str> = saved.targets.keys().map(String::as_str).collect();
    if missing.is_empty() {
        eprintln!(
            "plan saved to {} ({}); apply it with `rostersync sync --plan {}`",
            path.display(),
            held.join(", "),
            path.display()
        );
    } else {
        eprintln!(
            "plan saved to {} for {} only; NOT in it, because they could not be planned: {}. \
             `rostersync sync --plan {}` would apply only the targets it holds; make a new plan \
             once every target can be planned",
            path.display(),
            held.join(", "),
            missing.join(", "),
            path.display()
        );
    }
    true
}
