//! Presence before removal (SPEC 5, `teams` targets): before a team's removals are sent,
//! one paged presence read of that team; removals of agents online now are marked
//! `online`, and with `[safety] defer_online_removals` held back (`Update::deferred`) until
//! a later run. Teams without planned removals get no read; a target refused by the guard
//! gets none either (it gets no call at all). A read that fails is advice lost, not a gate:
//! the removals go unmarked with a warning, or, when deferring, that team's removals wait.

use tracing::warn;

use super::report::TargetReport;
use crate::config::TargetConfig;
use crate::plan::{Member, Op, TargetPlan};
use crate::targets::{Ctx, Target};

/// Marks (and with `defer`, holds back) the removals of agents online now. Returns the
/// number of removals deferred.
pub(super) async fn mark(
    ctx: &Ctx,
    target: &dyn Target,
    t: &TargetConfig,
    plan: &mut TargetPlan,
    defer: bool,
    report: &mut TargetReport,
) {
    if plan.refused() {
        return;
    }
    let missing = t.missing_secrets();
    for op in &mut plan.ops {
        let Op::Update(u) = op else { continue };
        if u.remove.is_empty() {
            continue;
        }
        let online = if missing.is_empty() {
            target.online(ctx, &u.key, &u.name, &u.remote_id).await
        } else {
            Err(crate::targets::OpError::Credentials(format!(
                "{} not set",
                missing.join(", ")
            )))
        };
        let online = match online {
            Ok(Some(ids)) => ids,
            // The kind has no presence.
            Ok(None) => return,
            Err(e) => {
                let what = if defer {
                    "its removals are deferred to a later run"
                } else {
                    "its removals are not marked"
                };
                let msg = format!("presence of \"{}\" could not be read ({e}); {what}", u.name);
                warn!(group = %u.name, error = %e, "{msg}");
                report.warnings.push(msg);
                if defer {
                    defer_all(u, |_| true, report);
                }
                continue;
            }
        };
        for m in &mut u.remove {
            m.online = online.contains(&m.id);
        }
        if defer {
            defer_all(u, |m| m.online, report);
        }
    }
}

/// Moves the removals `which` picks from `remove` to `deferred` (they stay members).
fn defer_all(
    u: &mut crate::plan::Update,
    which: impl Fn(&Member) -> bool,
    report: &mut TargetReport,
) {
    let (held, sent): (Vec<Member>, Vec<Member>) = u.remove.drain(..).partition(|m| which(m));
    u.remove = sent;
    if held.is_empty() {
        return;
    }
    report.deferred += held.len();
    u.members_after.extend(held.iter().map(|m| m.id.clone()));
    u.members_after.sort();
    u.members_after.dedup();
    u.deferred.extend(held);
}

/// A plan as it was before presence marked it (saved plans compare this: presence may
/// change between the review and the apply without making the plan stale).
pub fn unmarked(plan: &TargetPlan) -> TargetPlan {
    let mut p = plan.clone();
    for op in &mut p.ops {
        if let Op::Update(u) = op {
            let deferred: Vec<String> = u.deferred.iter().map(|m| m.id.clone()).collect();
            u.remove.append(&mut u.deferred);
            u.remove.sort();
            for m in &mut u.remove {
                m.online = false;
            }
            u.members_after.retain(|id| !deferred.contains(id));
        }
    }
    p
}
