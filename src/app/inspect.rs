//! The read-only commands: `history`, `state` (`explain` is in `explain.rs`).

use std::collections::BTreeMap;

use serde_json::json;

use super::report;
use crate::cli::Format;
use crate::config::Config;
use crate::store::lease::Lease;
use crate::store::{HistoryFilter, PgLocation, StateLocation, StateLock, Store, copy_state};
use crate::sync::ExitCode;

fn open_existing(cfg: &Config) -> Result<Option<Store>, ExitCode> {
    Store::open_read_only_at(&cfg.state).map_err(|e| {
        report(&e);
        ExitCode::Failed
    })
}

pub(super) fn history(cfg: &Config, f: &HistoryFilter, output: Format) -> ExitCode {
    let store = match open_existing(cfg) {
        Ok(Some(s)) => s,
        Ok(None) => {
            if output == Format::Json {
                println!("{}", json!({ "runs": [], "calls": [] }));
            } else {
                println!("no history yet: {} holds no state", cfg.state);
            }
            return ExitCode::Ok;
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
            ExitCode::Ok
        }
        (Err(e), _) | (_, Err(e)) => {
            report(&e);
            ExitCode::Failed
        }
    }
}

pub(super) fn state(cfg: &Config, target: Option<&str>, output: Format) -> ExitCode {
    let store = match open_existing(cfg) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let mut names: Vec<String> = match &store {
        Some(s) => match s.targets() {
            Ok(t) => t,
            Err(e) => {
                report(&e);
                return ExitCode::Failed;
            }
        },
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
                    return ExitCode::Failed;
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
                    if known.groups.contains_key(k) {
                        println!(
                            "  ! unfinished write to key {k}: the next sync reads the group back first"
                        );
                    } else {
                        println!(
                            "  ! unconfirmed create of key {k}: the next sync looks it up before creating"
                        );
                    }
                }
            }
        }
    }
    ExitCode::Ok
}

/// `state copy --to URL|PATH`: the whole state to another backend, while holding the
/// source's lock (SQLite) or lease (PostgreSQL), so no run writes during the copy.
pub(super) fn copy(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    to: &crate::cli::StateAction,
) -> ExitCode {
    let crate::cli::StateAction::Copy {
        to,
        password_file,
        password_env,
        ca_file,
    } = to;
    let dest = match destination(
        to,
        password_file.as_deref(),
        password_env.as_deref(),
        ca_file.as_deref(),
        &cfg.ha.node,
    ) {
        Ok(d) => d,
        Err(message) => {
            eprintln!("state copy --to {}: {message}", without_password(to));
            return ExitCode::Usage;
        }
    };
    // Nobody writes the source meanwhile.
    let _lock = match &cfg.state {
        StateLocation::Sqlite(path) if path.exists() => match StateLock::acquire(path) {
            Ok(l) => Some(l),
            Err(e) => {
                report(&e);
                return crate::sync::SyncError::from(e).exit_code();
            }
        },
        _ => None,
    };
    let lease = match &cfg.state {
        StateLocation::Postgres(pg) => {
            match rt.block_on(Lease::acquire_once(pg.clone(), cfg.lease_config())) {
                Ok(l) => Some(l),
                Err(e) => {
                    report(&e);
                    return crate::sync::SyncError::from(e).exit_code();
                }
            }
        }
        StateLocation::Sqlite(_) => None,
    };
    let copied = copy_state(&cfg.state, &dest);
    if let Some(l) = lease {
        rt.block_on(l.stop());
    }
    match copied {
        Ok(c) => {
            let parts: Vec<String> = c.tables.iter().map(|(t, n)| format!("{t} {n}")).collect();
            println!("copied {} -> {}: {}", cfg.state, dest, parts.join(", "));
            println!(
                "point `state` at {dest} in {} to use it; the source is left as it was",
                cfg.path.display()
            );
            ExitCode::Ok
        }
        Err(e) => {
            report(&e);
            match e {
                crate::store::StoreError::NotEmpty { .. } => ExitCode::Usage,
                _ => ExitCode::Failed,
            }
        }
    }
}

/// `to` as messages may show it: a URL's password (which `destination` refuses) blanked.
fn without_password(to: &str) -> String {
    match url::Url::parse(to) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("********"));
            u.to_string()
        }
        _ => to.to_string(),
    }
}

/// Why `state copy --to` cannot be used as given (exit 2, nothing copied).
#[derive(Debug, thiserror::Error)]
enum DestinationError {
    #[error("--password-file, --password-env and --ca-file are for a postgres:// destination")]
    OptionsForSqlite,
    #[error("not a URL: {0}")]
    Url(#[from] url::ParseError),
    #[error("the URL carries a password: give --password-file or --password-env")]
    PasswordInUrl,
    #[error("--password-file {path}: {source}")]
    PasswordFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--password-env {0}: not set")]
    PasswordEnv(String),
    #[error("--ca-file: {0}")]
    CaFile(#[from] crate::source::ldap::CaFileError),
}

/// The destination of `state copy`, from the command line.
fn destination(
    to: &str,
    password_file: Option<&std::path::Path>,
    password_env: Option<&str>,
    ca_file: Option<&std::path::Path>,
    node: &str,
) -> Result<StateLocation, DestinationError> {
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        if password_file.is_some() || password_env.is_some() || ca_file.is_some() {
            return Err(DestinationError::OptionsForSqlite);
        }
        return Ok(StateLocation::Sqlite(to.into()));
    }
    if url::Url::parse(to)?.password().is_some() {
        return Err(DestinationError::PasswordInUrl);
    }
    let (password, password_from) = match (password_file, password_env) {
        (Some(f), _) => (
            std::fs::read_to_string(f)
                .map_err(|source| DestinationError::PasswordFile {
                    path: f.to_path_buf(),
                    source,
                })?
                .trim()
                .to_string(),
            format!("--password-file ({})", f.display()),
        ),
        (None, Some(v)) => (
            std::env::var(v).map_err(|_| DestinationError::PasswordEnv(v.to_string()))?,
            format!("--password-env ({v})"),
        ),
        (None, None) => (String::new(), String::new()),
    };
    if let Some(ca) = ca_file {
        crate::source::ldap::read_ca_file(ca)?;
    }
    Ok(StateLocation::Postgres(PgLocation {
        url: to.to_string(),
        password: (!password.is_empty()).then(|| password.into()),
        password_from: (!password_from.is_empty()).then_some(password_from),
        ca_file: ca_file.map(Into::into),
        application: format!("rostersync {node} (state copy)"),
    }))
}
