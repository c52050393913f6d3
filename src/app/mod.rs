//! Commands: load the config, set up logging, run one command, return its exit code.
//! Exit codes (SPEC section 2, `sync::ExitCode`): 0 ok, 1 something was not done, 2 bad
//! usage/config/source (nothing sent), 3 a safety guard stopped a target, 4 another
//! instance holds the lock. A run's code is computed in one place: `RunReport::exit_code`.

mod inspect;

use std::io::IsTerminal;

use serde_json::json;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, Format};
use crate::config::{Config, LogFormat};
use crate::store::HistoryFilter;
use crate::sync::{ExitCode, SavedPlan, SyncOptions};

/// Prints an error once, with its whole chain, to stderr.
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
        Command::Check => check(&cfg),
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
                match SavedPlan::read(file) {
                    Ok(p) => {
                        opts.full = p.full;
                        opts.allow_mass_removal = p.allow_mass_removal;
                        opts.targets = p.targets.keys().cloned().collect();
                        opts.only = p.only.clone();
                        opts.expect = Some(p);
                    }
                    Err(e) => {
                        report(&e);
                        return ExitCode::Usage;
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
        Command::State { target, output } => inspect::state(&cfg, target.as_deref(), *output),
        Command::Explain { email } => inspect::explain(&cfg, email),
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
        Ok(run) => {
            if let Some(path) = save_plan {
                let saved = SavedPlan::from_report(&run, opts.allow_mass_removal, &opts.only);
                if let Err(e) = saved.write(path) {
                    report(&e);
                    return ExitCode::Failed;
                }
                eprintln!(
                    "plan saved to {}; apply it with `rostersync sync --plan {}`",
                    path.display(),
                    path.display()
                );
            }
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
            run.exit_code()
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

/// `check`: validates config and source, and says for each target whether a run could use
/// it. A target whose client cannot be made is not "ok" (exit 1); a missing secret is exit 2.
fn check(cfg: &Config) -> ExitCode {
    let desired = match cfg.load_source() {
        Ok(d) => d,
        Err(e) => {
            report(&e);
            return ExitCode::Usage;
        }
    };
    let memberships: usize = desired.groups.values().map(|g| g.members.len()).sum();
    println!("config   {}", cfg.path.display());
    println!(
        "source   {} ({} files): {} groups, {} memberships, {} people with ids",
        cfg.source.display(),
        desired.files.len(),
        desired.groups.len(),
        memberships,
        desired.people.len()
    );
    println!(
        "state    {}{}",
        cfg.state.display(),
        if cfg.state.exists() {
            ""
        } else {
            " (not created yet)"
        }
    );
    println!(
        "safety   max_removals={} max_removal_ratio={} delete_groups={}",
        cfg.safety.max_removals, cfg.safety.max_removal_ratio, cfg.safety.delete_groups
    );
    let mut code = ExitCode::Ok;
    for t in &cfg.targets {
        let groups = desired
            .groups
            .values()
            .filter(|g| g.is_for(&t.name))
            .count();
        let missing = t.missing_secrets();
        let built = crate::targets::build(t).err();
        let status = match (&built, missing.is_empty()) {
            (_, false) => {
                code = code.max(ExitCode::Usage);
                format!("MISSING {}", missing.join(", "))
            }
            (Some(e), true) => {
                code = code.max(ExitCode::Failed);
                format!("FAILED: cannot run: {e}")
            }
            (None, true) => "ok".into(),
        };
        println!(
            "target   {:<12} {:<13} {:>5} groups  {}  {}",
            t.name,
            t.kind.as_str(),
            groups,
            t.base_url,
            status
        );
    }
    match code {
        ExitCode::Ok => println!("ok"),
        _ => println!("not ok"),
    }
    code
}
