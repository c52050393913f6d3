//! Member-id resolution with lookups: asks the target about the people that neither the
//! source nor the resolution cache names, caches the answers, then builds the target's
//! desired state with the pure `plan::resolve::desired_target`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::StreamExt;
use tracing::warn;

use super::report::{Failed, TargetReport};
use crate::config::{Flavor, Kind, TargetConfig};
use crate::model::Desired;
use crate::plan::resolve::{self, Naming};
use crate::plan::{DesiredTarget, Known};
use crate::targets::{Ctx, Target};

/// How a target names members.
pub fn naming(t: &TargetConfig) -> Naming<'_> {
    let maestro = t.kind == Kind::Scim && t.flavor == Flavor::Maestroqa;
    Naming {
        target: &t.name,
        email_is_id: maestro,
        owners: maestro,
        receive_call: t.kind == Kind::AssignGroup,
        scim: t.kind == Kind::Scim,
    }
}

/// Resolves every member of every group meant for this target to a member id.
///
/// A lookup that fails (or, in a dry-run without credentials, cannot be made) leaves the
/// person unresolved, and the target's report records it as a failed `lookup`: the run
/// did not do what was asked, so it does not exit 0. A person the target does not have is
/// only a warning (the source names somebody who is not there).
#[allow(clippy::too_many_arguments)]
pub async fn resolve_members(
    ctx: &Ctx,
    target: &dyn Target,
    t: &TargetConfig,
    desired: &Desired,
    known: &Known,
    mut cache: HashMap<String, Option<String>>,
    full: bool,
    report: &mut TargetReport,
) -> DesiredTarget {
    let naming = naming(t);
    if full {
        // A --full run asks again about people nobody had.
        cache.retain(|_, v| v.is_some());
    }
    let missing = t.missing_secrets();
    let wanted = resolve::to_look_up(desired, &naming, &cache);
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    if !wanted.is_empty() && target.can_lookup() {
        if !missing.is_empty() {
            report.failed.push(Failed {
                group: "-".into(),
                op: "lookup".into(),
                error: format!(
                    "{} people could not be looked up: {} not set (a dry-run without credentials does not look people up)",
                    wanted.len(),
                    missing.join(", ")
                ),
            });
        } else {
            // Collected first: see `readback::read_back`.
            let lookups: Vec<_> = wanted
                .iter()
                .map(|e| async move { (e, target.lookup(ctx, e).await) })
                .collect();
            let results = futures::stream::iter(lookups)
                .buffer_unordered(t.concurrency)
                .collect::<Vec<_>>()
                .await;
            for (email, r) in results {
                match r {
                    Ok(id) => {
                        if let Err(e) = ctx
                            .recorder
                            .cache_resolution(&t.name, email, id.as_deref())
                            .await
                        {
                            warn!("cannot cache the resolution of {email}: {e}");
                        }
                        cache.insert(email.clone(), id);
                    }
                    Err(e) => {
                        failed.insert(email.clone(), e.to_string());
                    }
                }
            }
        }
    }
    for (email, error) in &failed {
        report.failed.push(Failed {
            group: "-".into(),
            op: "lookup".into(),
            error: format!("{email}: {error}"),
        });
    }
    let reason = |e: &str| match failed.get(e) {
        Some(err) => format!("lookup failed: {err}"),
        None if !target.can_lookup() => {
            format!(
                "no people[].ids.{} given and {} has no lookup by email",
                t.name, t.kind
            )
        }
        None if !missing.is_empty() => {
            "not in the resolution cache (a dry-run without credentials does not look people up)"
                .into()
        }
        None => format!("no person with this email on {}", t.name),
    };
    let r = resolve::desired_target(desired, &naming, &cache, known, &reason);
    let mut warned = BTreeSet::new();
    for u in &r.unresolved {
        if warned.insert(u.email.clone()) {
            warn!(person = %u.email, group = %u.group, target = %t.name, "member skipped: {}", u.reason);
        }
    }
    report.unresolved = r.unresolved;
    report.warnings.extend(r.warnings);
    r.target
}
