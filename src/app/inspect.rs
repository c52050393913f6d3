//! The read-only commands: `history`, `state`, `explain`.

use std::collections::BTreeMap;

use serde_json::json;

use super::report;
use crate::cli::Format;
use crate::config::Config;
use crate::store::{HistoryFilter, Store};
use crate::sync::ExitCode;

fn open_existing(cfg: &Config) -> Result<Option<Store>, ExitCode> {
    Store::open_read_only(&cfg.state).map_err(|e| {
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
                println!("no history yet: {} does not exist", cfg.state.display());
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

pub(super) fn explain(cfg: &Config, email: &str) -> ExitCode {
    let email = email.trim().to_lowercase();
    let names: Vec<&str> = cfg.targets.iter().map(|t| t.name.as_str()).collect();
    let desired = match crate::source::load(&cfg.source, &names, true) {
        Ok(d) => d,
        Err(e) => {
            report(&e);
            return ExitCode::Usage;
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
        let member_id = person
            .and_then(|p| p.ids.get(&t.name).cloned())
            .or_else(|| cache.get(&email).cloned().flatten());
        let id = member_id
            .as_ref()
            .map(|id| format!("member id {id}"))
            .unwrap_or_else(|| "member id not resolved yet".into());
        println!("{} ({}): {id}", t.name, t.kind);
        if let Some(p) = t
            .keep_members
            .protects_person(member_id.as_deref(), Some(&email))
        {
            println!("  protected by keep_members \"{p}\": never removed on this target");
        }
        let groups: Vec<_> = desired
            .groups
            .values()
            .filter(|g| g.is_for(&t.name) && g.members.iter().any(|m| **m == *email))
            .collect();
        if groups.is_empty() {
            println!("  in no group");
        }
        for g in groups {
            let at = g.member_origins.get(email.as_str()).unwrap_or(&g.origin);
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
    ExitCode::Ok
}
