//! Commands: load the config, set up logging, run one command, return its exit code.
//! Exit codes (SPEC section 2): 0 ok, 1 some operations failed, 2 bad usage/config/source
//! (nothing sent), 3 a safety guard stopped a target, 4 another instance holds the lock.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use serde_json::json;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, Format};
use crate::config::{Config, LogFormat};
use crate::store::{HistoryFilter, Store};
use crate::sync::{SyncError, SyncOptions};

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_GUARD: u8 = 3;
pub const EXIT_LOCKED: u8 = 4;

/// Prints an error once, with its whole chain, to stderr.
fn report(e: &dyn std::error::Error) {
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
pub fn main(cli: Cli) -> u8 {
    let path = Config::locate(cli.config.as_deref());
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            init_logging(&cli, None);
            report(&e);
            return EXIT_USAGE;
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
            return EXIT_FAILED;
        }
    };
    match &cli.command {
        Command::Check => check(&cfg),
        Command::Sync {
            dry_run,
            targets,
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
                command: "sync".into(),
                expect: None,
                ..Default::default()
            };
            if let Some(file) = plan_file {
                let saved = std::fs::read(file)
                    .map_err(|e| e.to_string())
                    .and_then(|b| {
                        serde_json::from_slice::<crate::sync::SavedPlan>(&b)
                            .map_err(|e| e.to_string())
                    });
                match saved {
                    Ok(p) => {
                        opts.full = p.full;
                        opts.allow_mass_removal = p.allow_mass_removal;
                        opts.targets = p.targets.keys().cloned().collect();
                        opts.expect = Some(p);
                    }
                    Err(e) => {
                        eprintln!("error: --plan {}: not a saved plan: {e}", file.display());
                        return EXIT_USAGE;
                    }
                }
            }
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
                eprintln!("error: {e}");
                EXIT_USAGE
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
            history(&cfg, &f, *output)
        }
        Command::State { target, output } => state(&cfg, target.as_deref(), *output),
        Command::Explain { email } => explain(&cfg, email),
    }
}

/// Exit code of a sync error.
pub fn exit_code_of(e: &SyncError) -> u8 {
    match e {
        SyncError::Source(_) | SyncError::Usage(_) => EXIT_USAGE,
        SyncError::Lock(crate::store::LockError::Held { .. }) => EXIT_LOCKED,
        SyncError::Lock(_) | SyncError::Store(_) => EXIT_FAILED,
    }
}

fn sync(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    opts: &SyncOptions,
    output: Format,
    save_plan: Option<&std::path::Path>,
) -> u8 {
    match rt.block_on(crate::sync::run(cfg, opts)) {
        Ok(report) => {
            if let Some(path) = save_plan {
                let saved = crate::sync::SavedPlan::from_report(&report, opts.allow_mass_removal);
                let text = serde_json::to_string_pretty(&saved).unwrap_or_default();
                if let Err(e) = std::fs::write(path, text) {
                    eprintln!("error: cannot write the plan to {}: {e}", path.display());
                    return EXIT_FAILED;
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
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                ),
                Format::Text => {
                    print!("{}", crate::render::plan(&report));
                    if !opts.dry_run {
                        print!("{}", crate::render::results(&report));
                    }
                }
            }
            report.exit_code()
        }
        Err(e) => {
            if output == Format::Json {
                println!(
                    "{}",
                    json!({ "error": e.to_string(), "exit_code": exit_code_of(&e) })
                );
            }
            report(&e);
            exit_code_of(&e)
        }
    }
}

fn check(cfg: &Config) -> u8 {
    let desired = match cfg.load_source() {
        Ok(d) => d,
        Err(e) => {
            report(&e);
            return EXIT_USAGE;
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
    let mut code = EXIT_OK;
    for t in &cfg.targets {
        let groups = desired
            .groups
            .values()
            .filter(|g| g.is_for(&t.name))
            .count();
        let missing = t.missing_secrets();
        let built = crate::targets::build(t).err();
        let status = match (&built, missing.is_empty()) {
            (Some(e), _) => format!("skipped by sync: {e}"),
            (None, false) => {
                code = EXIT_USAGE;
                format!("MISSING {}", missing.join(", "))
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
    if code == EXIT_OK {
        println!("ok");
    }
    code
}

fn open_existing(cfg: &Config) -> Result<Option<Store>, u8> {
    Store::open_read_only(&cfg.state).map_err(|e| {
        report(&e);
        EXIT_FAILED
    })
}

fn history(cfg: &Config, f: &HistoryFilter, output: Format) -> u8 {
    let store = match open_existing(cfg) {
        Ok(Some(s)) => s,
        Ok(None) => {
            if output == Format::Json {
                println!("{}", json!({ "runs": [], "calls": [] }));
            } else {
                println!("no history yet: {} does not exist", cfg.state.display());
            }
            return EXIT_OK;
        }
        Err(c) => return c,
    };
    let calls = store.history(f);
    let runs = store.runs(if f.run.is_some() { 1 } else { f.limit.min(20) }, f.run);
    match (calls, runs) {
        (Ok(calls), Ok(runs)) => {
            match output {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "runs": runs, "calls": calls }))
                        .unwrap_or_default()
                ),
                Format::Text => print!("{}", crate::render::history(&runs, &calls)),
            }
            EXIT_OK
        }
        (Err(e), _) | (_, Err(e)) => {
            report(&e);
            EXIT_FAILED
        }
    }
}

fn state(cfg: &Config, target: Option<&str>, output: Format) -> u8 {
    let store = match open_existing(cfg) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let mut names: Vec<String> = match &store {
        Some(s) => s.targets().unwrap_or_default(),
        None => Vec::new(),
    };
    for t in &cfg.targets {
        if !names.contains(&t.name) {
            names.push(t.name.clone());
        }
    }
    names.retain(|n| target.is_none_or(|t| t == n));
    let mut all = BTreeMap::new();
    for n in &names {
        let known = match &store {
            Some(s) => match s.known(n) {
                Ok(k) => k,
                Err(e) => {
                    report(&e);
                    return EXIT_FAILED;
                }
            },
            None => Default::default(),
        };
        all.insert(n.clone(), known);
    }
    match output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default()),
        Format::Text => {
            for (name, known) in &all {
                let kind = cfg
                    .target(name)
                    .map(|t| t.kind.as_str())
                    .unwrap_or("not configured");
                println!(
                    "{name} ({kind}): {} groups, {} memberships",
                    known.groups.len(),
                    known.managed()
                );
                for g in known.groups.values() {
                    println!(
                        "  {:<28} key={} id={} {} members",
                        format!("\"{}\"", g.name),
                        g.key,
                        g.remote_id,
                        g.members.len()
                    );
                    for (id, m) in &g.members {
                        let who = m.email.as_deref().unwrap_or("?");
                        let flags = [
                            (m.owned, "added by rostersync"),
                            (m.receive_call, "receives calls"),
                        ]
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, s)| *s)
                        .collect::<Vec<_>>()
                        .join(", ");
                        println!(
                            "      {who} ({id}){}",
                            if flags.is_empty() {
                                String::new()
                            } else {
                                format!(" [{flags}]")
                            }
                        );
                    }
                    for (id, m) in &g.owners {
                        println!("      owner {} ({id})", m.email.as_deref().unwrap_or("?"));
                    }
                }
                for k in &known.intents {
                    println!(
                        "  ! unconfirmed create of key {k}: the next sync looks it up before creating"
                    );
                }
            }
        }
    }
    EXIT_OK
}

fn explain(cfg: &Config, email: &str) -> u8 {
    let email = email.trim().to_lowercase();
    let names: Vec<&str> = cfg.targets.iter().map(|t| t.name.as_str()).collect();
    let desired = match crate::source::load(&cfg.source, &names, true) {
        Ok(d) => d,
        Err(e) => {
            report(&e);
            return EXIT_USAGE;
        }
    };
    let store = match open_existing(cfg) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let person = desired.people.get(&email);
    match person {
        Some(p) => println!(
            "{email}{} (defined at {})",
            p.name
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default(),
            p.origin
        ),
        None => println!("{email} (not in people:)"),
    }
    for t in &cfg.targets {
        let cache = store
            .as_ref()
            .and_then(|s| s.resolution_cache(&t.name).ok())
            .unwrap_or_default();
        let id = person
            .and_then(|p| p.ids.get(&t.name).cloned())
            .or_else(|| cache.get(&email).cloned().flatten())
            .map(|id| format!("member id {id}"))
            .unwrap_or_else(|| "member id not resolved yet".into());
        println!("{} ({}): {id}", t.name, t.kind);
        let groups: Vec<_> = desired
            .groups
            .values()
            .filter(|g| g.is_for(&t.name) && g.members.contains(&email))
            .collect();
        if groups.is_empty() {
            println!("  in no group");
        }
        for g in groups {
            let at = g.member_origins.get(&email).unwrap_or(&g.origin);
            println!("  in \"{}\" (key {}), put there by {at}", g.name, g.key);
        }
        if let Some(s) = &store {
            let f = HistoryFilter {
                limit: 1,
                target: Some(t.name.clone()),
                email: Some(email.clone()),
                ..Default::default()
            };
            match s.history(&f) {
                Ok(rows) => match rows.first() {
                    Some(c) => println!(
                        "  last call: {} run {} {} \"{}\" {} ({})",
                        c.at,
                        c.run,
                        c.op,
                        c.group_name.as_deref().unwrap_or("-"),
                        c.outcome,
                        c.status
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "no answer".into())
                    ),
                    None => println!("  no call has touched them yet"),
                },
                Err(e) => report(&e),
            }
        }
    }
    EXIT_OK
}
