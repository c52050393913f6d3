//! What operators read: the terraform-like plan, the run results, history and state tables.
//! Pure functions from data to text.

use std::fmt::Write as _;

use crate::plan::{Op, Skipped, TargetPlan};
use crate::store::{CallRow, RunRow};
use crate::sync::{RunReport, TargetReport};

/// The plan of every target, as `terraform plan` would show it (SPEC section 8).
pub fn plan(report: &RunReport) -> String {
    let mut out = String::new();
    let (mut creates, mut updates, mut deletes, mut adds, mut rems, mut touched) =
        (0, 0, 0, 0, 0, 0);
    for t in &report.targets {
        let _ = writeln!(out, "{} ({})", t.name, t.kind);
        if let Some(why) = &t.skipped {
            let _ = writeln!(out, "  ! skipped: {why}");
            continue;
        }
        let Some(p) = &t.plan else { continue };
        if t.drift > 0 {
            let _ = writeln!(
                out,
                "  ! --full found {} memberships that differed from the known state",
                t.drift
            );
        }
        if let Some(g) = &p.guard {
            let verdict = if g.overridden {
                "OVERRIDDEN by --allow-mass-removal"
            } else {
                "REFUSED by the safety guard"
            };
            let _ = writeln!(out, "  ! {verdict}: {g}");
            if !g.overridden {
                let _ = writeln!(
                    out,
                    "  ! nothing is sent to this target; if the removals are intended, run once with --allow-mass-removal"
                );
            }
        }
        target_ops(&mut out, p);
        for u in dedup_unresolved(t) {
            let _ = writeln!(out, "  ? {u}");
        }
        for w in &t.warnings {
            let _ = writeln!(out, "  ! {w}");
        }
        if !p.ops.is_empty() {
            touched += 1;
        }
        for op in &p.ops {
            match op {
                Op::Create(_) => creates += 1,
                Op::Update(_) => updates += 1,
                Op::Delete(_) => deletes += 1,
            }
        }
        adds += p.additions();
        rems += p.removals();
    }
    let _ = writeln!(
        out,
        "Plan: {creates} create, {updates} update, {deletes} delete; +{adds} -{rems} members on {touched} targets."
    );
    if report.scoped {
        let _ = writeln!(
            out,
            "Scoped with --only: the skipped changes are sent by a run without --only."
        );
    }
    out
}

fn dedup_unresolved(t: &TargetReport) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::<&str, (Vec<&str>, &str)>::new();
    for u in &t.unresolved {
        let e = seen.entry(&u.email).or_insert((Vec::new(), &u.reason));
        e.0.push(&u.group);
    }
    seen.into_iter()
        .map(|(email, (groups, reason))| {
            format!("{email} skipped in {}: {reason}", groups.join(", "))
        })
        .collect()
}

fn target_ops(out: &mut String, p: &TargetPlan) {
    for op in &p.ops {
        match op {
            Op::Create(c) => {
                let mut notes = String::new();
                if !c.receive_call.is_empty() && c.receive_call.len() != c.members.len() {
                    notes += &format!(", {} receive calls", c.receive_call.len());
                }
                if c.resumed {
                    notes += " (resuming an unconfirmed create)";
                }
                let _ = writeln!(
                    out,
                    "  + create {:<24} {} members{notes}",
                    quoted(&c.name),
                    c.members.len()
                );
                for m in &c.owners {
                    let _ = writeln!(out, "      + owner {}", m.label());
                }
            }
            Op::Update(u) => {
                let mut what = format!(
                    "+{} -{}",
                    u.add.len() + u.add_owners.len(),
                    u.remove.len() + u.remove_owners.len()
                );
                if let Some(from) = &u.rename_from {
                    what = format!("{what}, rename from {}", quoted(from));
                }
                if u.receive_call.is_some() {
                    what += ", receive_call changed";
                }
                let _ = writeln!(out, "  ~ update {:<24} {what}", quoted(&u.name));
                for m in &u.add {
                    let _ = writeln!(out, "      + {}", m.label());
                }
                for m in &u.remove {
                    let _ = writeln!(out, "      - {}", m.label());
                }
                for m in &u.add_owners {
                    let _ = writeln!(out, "      + owner {}", m.label());
                }
                for m in &u.remove_owners {
                    let _ = writeln!(out, "      - owner {}", m.label());
                }
                for k in &u.kept_members {
                    let owner = if k.owner { "owner " } else { "" };
                    let _ = writeln!(
                        out,
                        "      = kept {owner}{} (keep_members {})",
                        k.label(),
                        quoted(&k.pattern)
                    );
                }
            }
            Op::Delete(d) => {
                let _ = writeln!(
                    out,
                    "  - delete {:<24} {} members",
                    quoted(&d.name),
                    d.members
                );
            }
        }
    }
    if p.unchanged > 0 {
        let _ = writeln!(out, "  = {} groups unchanged", p.unchanged);
    }
    for s in &p.skipped {
        let what = match s {
            Skipped::Create { name, members, .. } => {
                format!("create {} ({members} members)", quoted(name))
            }
            Skipped::Delete { name, members, .. } => {
                format!("delete {} ({members} members)", quoted(name))
            }
            Skipped::Rename { from, to, .. } => {
                format!("rename {} to {}", quoted(from), quoted(to))
            }
            Skipped::Members {
                name, add, remove, ..
            } => format!("+{add} -{remove} of other people in {}", quoted(name)),
        };
        let _ = writeln!(out, "  . skipped (outside --only): {what}");
    }
    if !p.left_alone.is_empty() {
        let _ = writeln!(
            out,
            "  . {} groups no longer in the source left alone (safety.delete_groups = false): {}",
            p.left_alone.len(),
            p.left_alone.join(", ")
        );
    }
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// After a real run: what failed, and the summary.
pub fn results(report: &RunReport) -> String {
    let mut out = String::new();
    for t in &report.targets {
        for f in &t.failed {
            let _ = writeln!(
                out,
                "{}: {} \"{}\" failed: {}",
                t.name, f.op, f.group, f.error
            );
        }
    }
    let _ = writeln!(out, "{}", report.summary());
    out
}

/// `history` as text: runs, then their calls.
pub fn history(runs: &[RunRow], calls: &[CallRow]) -> String {
    let mut out = String::new();
    for r in runs {
        let _ = writeln!(
            out,
            "run {} {} {}{} exit={}{} {}",
            r.id,
            r.started_at,
            r.command,
            if r.full { " --full" } else { "" },
            r.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            r.outcome
                .as_deref()
                .map(|o| format!(" ({o})"))
                .unwrap_or_default(),
            r.summary
                .as_deref()
                .unwrap_or("(unfinished: the process stopped before the end of the run)")
        );
    }
    if !calls.is_empty() {
        let _ = writeln!(out);
    }
    for c in calls {
        let status = c
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into());
        let group = c
            .group_name
            .as_deref()
            .or(c.group_key.as_deref())
            .unwrap_or("-");
        let _ = write!(
            out,
            "{} run {} {} {:<8} {:<28} {:<7} +{} -{} {} {} {} {}ms",
            c.at,
            c.run,
            c.target,
            c.op,
            quoted(group),
            c.outcome,
            c.added,
            c.removed,
            c.method,
            c.path,
            status,
            c.latency_ms
        );
        if c.attempts > 1 {
            let _ = write!(out, " ({} attempts)", c.attempts);
        }
        if let Some(e) = &c.error {
            let _ = write!(out, " error: {e}");
        }
        let _ = writeln!(out);
    }
    out
}
