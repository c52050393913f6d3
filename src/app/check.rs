//! `check [--online] [--output text|json]`: validates config and source, says for each
//! target whether a run could use it, and with `--online` probes every target read-only
//! (SPEC 8): authenticate, read one page of the group listing, say whether the answer was
//! understood, how long it took and which rate-limit headers came back.
//!
//! Exit codes: 2 for config, source or missing secrets (nothing is sent); 1 naming each
//! target that cannot run or whose probe failed; else 0.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use super::report;
use crate::cli::Format;
use crate::config::{Config, TargetConfig};
use crate::store::Facts;
use crate::sync::ExitCode;
use crate::targets::{self, Ctx, Probe, Recorder};

/// One target's line of `check`.
#[derive(Debug, Serialize)]
struct TargetCheck {
    name: String,
    kind: &'static str,
    base_url: String,
    /// Source groups meant for this target.
    groups: usize,
    /// `ok`, `missing` (secrets; exit 2), `failed` (its client cannot be made, or the
    /// online probe failed; exit 1).
    status: &'static str,
    /// Why it is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// `--online`: what the probe found (absent when it failed or was not run).
    #[serde(skip_serializing_if = "Option::is_none")]
    probe: Option<Probe>,
    /// `--online`: how long the probe took, login included.
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<u64>,
}

/// Probes one target read-only: the `Ctx` has a dry recorder, so nothing is written to the
/// state database either.
async fn probe(t: &TargetConfig, facts: Facts) -> (Result<Probe, super::AskError>, u64) {
    let started = Instant::now();
    let r = match targets::build(t) {
        Err(e) => Err(e.into()),
        Ok((target, http)) => {
            let ctx = Ctx::new(t.name.clone(), http, Arc::new(Recorder::dry()), facts);
            target.probe(&ctx).await.map_err(super::AskError::from)
        }
    };
    (r, started.elapsed().as_millis() as u64)
}

/// The text of a successful probe, e.g. `authenticated, 37 teams listed, answer understood`.
fn probe_text(p: &Probe) -> String {
    let more = if p.more {
        " (first page; more follow)"
    } else {
        ""
    };
    let mut s = format!(
        "{}, {} {} listed{more}, answer understood",
        p.auth, p.listed, p.noun
    );
    if !p.rate_limit.is_empty() {
        let rl: Vec<String> = p
            .rate_limit
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        s += &format!(", rate limit: {}", rl.join(" "));
    }
    s
}

pub(super) fn check(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    online: bool,
    output: Format,
) -> ExitCode {
    let desired = match cfg.load_source() {
        Ok(d) => d,
        Err(e) => {
            if output == Format::Json {
                println!(
                    "{}",
                    json!({ "error": e.to_string(), "exit_code": ExitCode::Usage })
                );
            }
            report(&e);
            return ExitCode::Usage;
        }
    };
    let memberships: usize = desired.groups.values().map(|g| g.members.len()).sum();
    // Groups that `[[source.ldap.route]]` sends nowhere (SPEC 3.1: `check` lists them).
    let unrouted: Vec<&crate::model::Group> = desired
        .groups
        .values()
        .filter(|g| g.targets.as_ref().is_some_and(Vec::is_empty))
        .collect();
    let mut code = ExitCode::Ok;
    let mut checks: Vec<TargetCheck> = Vec::new();
    for t in &cfg.targets {
        let groups = desired
            .groups
            .values()
            .filter(|g| g.is_for(&t.name))
            .count();
        let missing = t.missing_secrets();
        let built = crate::targets::build(t).err();
        let (status, error) = match (&built, missing.is_empty()) {
            (_, false) => {
                code = code.max(ExitCode::Usage);
                ("missing", Some(format!("{} not set", missing.join(", "))))
            }
            (Some(e), true) => {
                code = code.max(ExitCode::Failed);
                ("failed", Some(format!("cannot run: {e}")))
            }
            (None, true) => ("ok", None),
        };
        checks.push(TargetCheck {
            name: t.name.clone(),
            kind: t.kind.as_str(),
            base_url: t.base_url.clone(),
            groups,
            status,
            error,
            probe: None,
            latency_ms: None,
        });
    }
    // What the config alone says of each target, before any probe.
    let offline: Vec<String> = checks
        .iter()
        .map(|c| match (c.status, &c.error) {
            ("missing", Some(e)) => format!("MISSING {}", e.trim_end_matches(" not set")),
            (_, Some(e)) => format!("FAILED: {e}"),
            _ => "ok".into(),
        })
        .collect();
    // Probes only once everything the config alone decides is known good (exit 2 before
    // any request).
    let probed = online && code == ExitCode::Ok;
    if probed {
        let facts = crate::store::facts_or_none(&cfg.state);
        let results = rt.block_on(futures::future::join_all(
            cfg.targets
                .iter()
                .map(|t| probe(t, facts.get(&t.name).cloned().unwrap_or_default())),
        ));
        for (c, (r, ms)) in checks.iter_mut().zip(results) {
            c.latency_ms = Some(ms);
            match r {
                Ok(p) => c.probe = Some(p),
                Err(e) => {
                    code = code.max(ExitCode::Failed);
                    c.status = "failed";
                    c.error = Some(e.to_string());
                }
            }
        }
    }
    // `--online` on PostgreSQL: who leads now (read-only; off the runtime).
    let lease = match (&cfg.state, probed) {
        (crate::store::StateLocation::Postgres(pg), true) => {
            Some(match crate::store::lease::peek(pg) {
                Ok(Some((holder, epoch))) => format!(": leader {holder}, epoch {epoch}"),
                Ok(None) => ": no node leads now".to_string(),
                Err(e) => {
                    code = code.max(ExitCode::Failed);
                    format!(": FAILED: {e}")
                }
            })
        }
        _ => None,
    };
    let failing: Vec<&str> = checks
        .iter()
        .filter(|c| c.status != "ok")
        .map(|c| c.name.as_str())
        .collect();
    match output {
        Format::Json => {
            let doc = json!({
                "config": cfg.path,
                "source": {
                    "path": cfg.source,
                    "live": cfg.live.as_ref().map(|l| match l {
                        crate::config::LiveSource::Ldap(_) => "ldap",
                        crate::config::LiveSource::Command(_) => "command",
                    }),
                    "unrouted": unrouted.iter().map(|g| &g.name).collect::<Vec<_>>(),
                    "files": desired.files.len(),
                    "groups": desired.groups.len(),
                    "memberships": memberships,
                    "people_with_ids": desired.people.len(),
                },
                "state": {
                    "path": cfg.state.shown(),
                    "backend": if cfg.state.is_postgres() { "postgres" } else { "sqlite" },
                    "exists": cfg.state.sqlite_path().map(|p| p.exists()),
                    "node": cfg.state.is_postgres().then_some(&cfg.ha.node),
                    "lease": lease.as_deref().map(|l| l.trim_start_matches(": ")),
                },
                "safety": {
                    "max_removals": cfg.safety.max_removals,
                    "max_removal_ratio": cfg.safety.max_removal_ratio,
                    "delete_groups": cfg.safety.delete_groups,
                    "defer_online_removals": cfg.defer_online_removals,
                },
                "online": probed,
                "targets": checks,
                "failing": failing,
                "ok": code == ExitCode::Ok,
                "exit_code": code,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).expect("serializes")
            );
        }
        Format::Text => {
            println!("config   {}", cfg.path.display());
            let read = match &cfg.live {
                None => format!("{} files", desired.files.len()),
                Some(crate::config::LiveSource::Ldap(_)) => "directory, bound and read".into(),
                Some(crate::config::LiveSource::Command(_)) => "program output".into(),
            };
            println!(
                "source   {} ({read}): {} groups, {} memberships, {} people with ids",
                cfg.source.display(),
                desired.groups.len(),
                memberships,
                desired.people.len()
            );
            for g in &unrouted {
                println!(
                    "         group {:?} ({}) matches no route: it goes to no target",
                    g.name, g.origin
                );
            }
            let note = match cfg.state.sqlite_path() {
                Some(p) if p.exists() => String::new(),
                Some(_) => " (not created yet)".into(),
                None => format!(
                    " (PostgreSQL; node {}, lease {}){}",
                    cfg.ha.node,
                    humantime::format_duration(cfg.ha.lease),
                    lease.as_deref().unwrap_or("")
                ),
            };
            println!("state    {}{note}", cfg.state);
            println!(
                "safety   max_removals={} max_removal_ratio={} delete_groups={} defer_online_removals={}",
                cfg.safety.max_removals,
                cfg.safety.max_removal_ratio,
                cfg.safety.delete_groups,
                cfg.defer_online_removals
            );
            // One line per target with its final verdict: with --online the probe's,
            // else what the config alone says (and that nothing was asked yet).
            for (c, status) in checks.iter().zip(&offline) {
                let verdict = match (probed, &c.probe, &c.error) {
                    (true, Some(p), _) => {
                        format!("ok: {} ({} ms)", probe_text(p), c.latency_ms.unwrap_or(0))
                    }
                    (true, None, e) => format!(
                        "FAILED: {} ({} ms)",
                        e.as_deref().unwrap_or("unknown"),
                        c.latency_ms.unwrap_or(0)
                    ),
                    (false, _, _) if status == "ok" && online => {
                        "config ok, not probed (another target's config is not)".to_string()
                    }
                    (false, _, _) if status == "ok" => {
                        "config ok (not asked; --online probes it)".to_string()
                    }
                    (false, _, _) => status.clone(),
                };
                println!(
                    "target   {:<12} {:<13} {:>5} groups  {}  {verdict}",
                    c.name, c.kind, c.groups, c.base_url
                );
                for note in c.probe.iter().flat_map(|p| &p.notes) {
                    println!("           {note}");
                }
            }
            match code {
                ExitCode::Ok => println!("ok"),
                _ => println!("not ok: {}", failing.join(", ")),
            }
        }
    }
    code
}
