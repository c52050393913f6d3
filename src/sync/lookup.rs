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
/// An answer that cannot be cached (the state database refused it) stops the target, as
/// every other store failure does: nothing may go unrecorded.
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
    stop: &tokio_util::sync::CancellationToken,
    report: &mut TargetReport,
) -> Result<DesiredTarget, crate::store::StoreError> {
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
            // Once `stop` is cancelled no further lookup starts (those in flight finish and
            // are cached); the people not looked up stay unresolved in this run.
            let lookups: Vec<_> = wanted
                .iter()
                .map(|e| async move {
                    if stop.is_cancelled() {
                        return (e, None);
                    }
                    (e, Some(target.lookup(ctx, e).await))
                })
                .collect();
            let results = futures::stream::iter(lookups)
                .buffer_unordered(t.concurrency)
                .collect::<Vec<_>>()
                .await;
            for (email, r) in results {
                let Some(r) = r else { continue };
                match r {
                    Ok(id) => {
                        ctx.recorder
                            .cache_resolution(&t.name, email, id.as_deref())
                            .await?;
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
    Ok(r.target)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::*;
    use crate::plan::{Create, Delete, KnownGroup, Update};
    use crate::store::{Store, Writer};
    use crate::targets::{OpError, Probe, Recorder, RemoteGroup};

    /// A target whose only skill is a lookup that always finds the person.
    struct Finds;

    #[async_trait]
    impl Target for Finds {
        fn can_lookup(&self) -> bool {
            true
        }
        async fn lookup(&self, _: &Ctx, _: &str) -> Result<Option<String>, OpError> {
            Ok(Some("ID-1".into()))
        }
        async fn probe(&self, _: &Ctx) -> Result<Probe, OpError> {
            unreachable!("not probed")
        }
        async fn find(&self, _: &Ctx, _: &str, _: &str) -> Result<Option<RemoteGroup>, OpError> {
            unreachable!("no find")
        }
        async fn read(&self, _: &Ctx, _: &KnownGroup) -> Result<Option<RemoteGroup>, OpError> {
            unreachable!("no read")
        }
        async fn create(&self, _: &Ctx, _: &Create) -> Result<String, OpError> {
            unreachable!("no create")
        }
        async fn update(&self, _: &Ctx, _: &Update) -> Result<(), OpError> {
            unreachable!("no update")
        }
        async fn delete(&self, _: &Ctx, _: &Delete) -> Result<(), OpError> {
            unreachable!("no delete")
        }
    }

    /// Issue 17 item 4: a lookup whose answer cannot be cached stops the target (a store
    /// failure), instead of a warning and a run that goes on unrecorded.
    #[tokio::test]
    async fn a_lookup_that_cannot_be_cached_stops_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::sync::test_config(
            dir.path(),
            "state.db",
            "kind = \"teams\"\nbase_url = \"http://127.0.0.1:9/v1\"\n",
        );
        let desired = cfg.load_source().unwrap();
        let t = &cfg.targets[0];
        let (_, http) = crate::targets::build(t).unwrap();
        let writer = Writer::spawn(Store::open(&dir.path().join("state.db")).unwrap());
        writer.clone().close().await.unwrap();
        let ctx = Ctx::new(
            "t",
            http,
            Arc::new(Recorder::real(1, writer)),
            Default::default(),
        );
        let mut report = TargetReport::new(t);
        let r = resolve_members(
            &ctx,
            &Finds,
            t,
            &desired,
            &Known::default(),
            HashMap::new(),
            false,
            &Default::default(),
            &mut report,
        )
        .await;
        assert!(
            matches!(r, Err(crate::store::StoreError::Closed { .. })),
            "{:?}",
            r.map(|_| ())
        );
    }
}
