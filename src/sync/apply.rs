//! Sending a target's plan: creates (looked up and adopted first), updates (a 404 forgets
//! the group and creates it again), deletes. Real runs only: a dry-run never gets here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::report::{Failed, TargetReport};
use crate::config::{Mode, TargetConfig};
use crate::plan::{
    Create, DesiredGroup, DesiredTarget, KnownGroup, KnownMember, Op, PlanOptions, TargetPlan,
    plan_group,
};
use crate::store::Delta;
use crate::targets::{Ctx, OpError, RemoteGroup, Target};

/// What a target's ops are applied towards.
pub struct Goal<'a> {
    /// The desired groups (a group found gone is created again from them).
    pub desired: &'a DesiredTarget,
    /// The options the plan was made with: adoption plans again with them, and a scoped
    /// run creates no group.
    pub opts: &'a PlanOptions,
}

/// Sends a target's plan and records as it goes. Once `stop` is cancelled no further op
/// starts; the ops not started are counted in the report (the next run sends them).
pub async fn apply_target(
    ctx: &Ctx,
    target: &dyn Target,
    t: &TargetConfig,
    plan: &TargetPlan,
    goal: &Goal<'_>,
    stop: &CancellationToken,
    report: &mut TargetReport,
) {
    crate::progress::add(plan.ops.len());
    // Collected first: see `readback::read_back`.
    let ops: Vec<_> = plan
        .ops
        .iter()
        .map(|op| async move {
            if stop.is_cancelled() {
                return (op, None);
            }
            let r = apply_op(ctx, target, t, op, goal, stop).await;
            crate::progress::done();
            (op, Some(r))
        })
        .collect();
    let results = futures::stream::iter(ops)
        .buffer_unordered(t.concurrency)
        .collect::<Vec<_>>()
        .await;
    report.not_started = results.iter().filter(|(_, r)| r.is_none()).count();
    if report.not_started > 0 {
        warn!(
            not_started = report.not_started,
            "stopping: {} operations not started; the next run sends them", report.not_started
        );
    }
    for (op, r) in results {
        if let Some(Err(e)) = r {
            let (kind, name) = match op {
                Op::Create(c) => ("create", &c.name),
                Op::Update(u) => ("update", &u.name),
                Op::Delete(d) => ("delete", &d.name),
            };
            warn!(group = %name, op = kind, error = %e, "operation failed");
            report.failed.push(Failed {
                group: name.clone(),
                op: kind.into(),
                error: e.to_string(),
            });
        }
    }
}

async fn apply_op(
    ctx: &Ctx,
    target: &dyn Target,
    t: &TargetConfig,
    op: &Op,
    goal: &Goal<'_>,
    stop: &CancellationToken,
) -> Result<(), OpError> {
    let (dt, popts) = (goal.desired, goal.opts);
    match op {
        Op::Create(c) => create_or_adopt(ctx, target, t, c, &dt.groups[&c.key], popts, stop).await,
        Op::Update(u) => {
            let r = intended(ctx, &u.key, &u.name, target.update(ctx, u)).await;
            match r {
                Err(e) if e.is_not_found() && popts.only.is_some() => {
                    // A scoped run creates no group: the next whole run creates it again.
                    warn!(group = %u.name, "managed group is gone from the target (404); a run without --only creates it again");
                    let forget = Delta::Forget { key: u.key.clone() };
                    ctx.note("forget", &u.key, &u.name, forget).await?;
                    Err(e)
                }
                Err(e) if e.is_not_found() => {
                    warn!(group = %u.name, "managed group is gone from the target (404); creating it again");
                    let forget = Delta::Forget { key: u.key.clone() };
                    ctx.note("forget", &u.key, &u.name, forget).await?;
                    let d = &dt.groups[&u.key];
                    create_or_adopt(
                        ctx,
                        target,
                        t,
                        &crate::plan::create_of(d, false),
                        d,
                        popts,
                        stop,
                    )
                    .await
                }
                r => r,
            }
        }
        Op::Delete(d) => intended(ctx, &d.key, &d.name, target.delete(ctx, d)).await,
    }
}

/// Runs a write to a managed group under an intent (SPEC 6.2): the intent is committed
/// before the first call is sent, and dropped once the write has ended in a way that
/// leaves nothing unknown (it succeeded, or it failed without reaching the target). A
/// write that may have been applied without its confirmation being recorded (a crash, a
/// timeout, an answer not understood) keeps its intent, and the next run reads the group
/// back before planning it.
async fn intended(
    ctx: &Ctx,
    key: &str,
    name: &str,
    write: impl std::future::Future<Output = Result<(), OpError>>,
) -> Result<(), OpError> {
    ctx.recorder.intent(&ctx.target, key, name).await?;
    let r = write.await;
    if ended(&r) {
        ctx.recorder.drop_intent(&ctx.target, key).await?;
    }
    r
}

/// Whether an operation ended with nothing left unknown on the target.
fn ended(r: &Result<(), OpError>) -> bool {
    match r {
        Ok(()) => true,
        Err(e) => !e.may_have_changed_the_target(),
    }
}

/// The waits between create attempts: exponential with jitter, as the HTTP layer's.
fn create_delays(t: &TargetConfig) -> impl Iterator<Item = std::time::Duration> {
    use backon::BackoffBuilder as _;
    backon::ExponentialBuilder::default()
        .with_min_delay(t.retry_base)
        .with_max_delay(std::time::Duration::from_secs(30))
        .with_max_times(t.max_retries as usize)
        .with_jitter()
        .build()
}

/// Looks for a group of the same name first and adopts it; creates only if there is none.
/// The intent (SPEC 6.2) is committed just before the first write is sent (the create, or
/// the update of an adopted group), not before the lookup: a lookup that fails leaves no
/// intent, so the next run never takes a group it merely failed to find for one it may
/// have created (a resumed create owns, in `owned` mode, what it finds of its members).
/// An intent an earlier run left (`c.resumed`) stands until this create has ended. It is
/// dropped only when the create (with its follow-up membership calls) or the adoption
/// (with its update) has ended with nothing left unknown. A create that may have been
/// applied (timeout, dropped connection, 5xx) is never re-sent before looking again.
async fn create_or_adopt(
    ctx: &Ctx,
    target: &dyn Target,
    t: &TargetConfig,
    c: &Create,
    d: &DesiredGroup,
    popts: &PlanOptions,
    stop: &CancellationToken,
) -> Result<(), OpError> {
    let mut intent = Intent {
        ctx,
        key: &c.key,
        name: &c.name,
        written: c.resumed,
    };
    let r = create_or_adopt_once(ctx, target, t, c, d, popts, stop, &mut intent).await;
    if intent.written && ended(&r) {
        ctx.recorder.drop_intent(&ctx.target, &c.key).await?;
    }
    r
}

/// A group's intent, written once, just before the first write to it is sent.
struct Intent<'a> {
    ctx: &'a Ctx,
    key: &'a str,
    name: &'a str,
    /// Committed (by this run, or left by an earlier one).
    written: bool,
}

impl Intent<'_> {
    async fn before_write(&mut self) -> Result<(), OpError> {
        if !self.written {
            self.ctx
                .recorder
                .intent(&self.ctx.target, self.key, self.name)
                .await?;
            self.written = true;
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn create_or_adopt_once(
    ctx: &Ctx,
    target: &dyn Target,
    t: &TargetConfig,
    c: &Create,
    d: &DesiredGroup,
    popts: &PlanOptions,
    stop: &CancellationToken,
    intent: &mut Intent<'_>,
) -> Result<(), OpError> {
    let mut delays = create_delays(t);
    let mut attempts = 0;
    loop {
        if let Some(rg) = target.find(ctx, &c.key, &c.name).await? {
            return adopt(ctx, target, t, c, d, &rg, popts, intent).await;
        }
        attempts += 1;
        intent.before_write().await?;
        let e = match target.create(ctx, c).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() => e,
            Err(e) => return Err(e),
        };
        match delays.next() {
            Some(wait) if !stop.is_cancelled() => {
                warn!(group = %c.name, error = %e, "create did not complete; looking the group up again before any retry");
                tokio::time::sleep(wait).await;
            }
            _ => {
                return Err(OpError::CreateGaveUp {
                    attempts,
                    last: Box::new(e),
                });
            }
        }
    }
}

/// The state change that records a group as the target holds it.
pub fn group_delta(kg: &KnownGroup) -> Delta {
    Delta::Group {
        key: kg.key.clone(),
        remote_id: kg.remote_id.clone(),
        name: kg.name.clone(),
        members: kg.members.clone(),
        owners: kg.owners.clone(),
    }
}

/// Takes over an existing group: records it with its current members, then sends only the
/// difference to the desired state (under the group's intent).
#[allow(clippy::too_many_arguments)]
async fn adopt(
    ctx: &Ctx,
    target: &dyn Target,
    t: &TargetConfig,
    c: &Create,
    d: &DesiredGroup,
    rg: &RemoteGroup,
    popts: &PlanOptions,
    intent: &mut Intent<'_>,
) -> Result<(), OpError> {
    info!(group = %c.name, remote_id = %rg.id, members = rg.members.len(), "adopting the existing group of the same name");
    let kg = adopted(c, d, rg, t.membership);
    ctx.note("adopt", &c.key, &c.name, group_delta(&kg)).await?;
    match plan_group(d, &kg, popts) {
        Some(u) => {
            intent.before_write().await?;
            target.update(ctx, &u).await
        }
        None => Ok(()),
    }
}

/// The known state of an adopted group. After a crash mid-create, what is there is what
/// we sent: ours to manage (in `owned` mode too). Otherwise its members were there before us.
fn adopted(c: &Create, d: &DesiredGroup, rg: &RemoteGroup, mode: Mode) -> KnownGroup {
    let ours = c.resumed && mode != Mode::Authoritative;
    let rc: BTreeSet<&String> = rg.receive_call.iter().collect();
    let known_of = |ids: &[String], desired: &BTreeMap<Arc<str>, Arc<str>>, calls: bool| {
        ids.iter()
            .map(|id| {
                let k = KnownMember {
                    owned: ours && desired.contains_key(id.as_str()),
                    receive_call: calls && rc.contains(id),
                    email: desired.get(id.as_str()).cloned(),
                };
                (id.clone(), k)
            })
            .collect::<BTreeMap<_, _>>()
    };
    KnownGroup {
        key: c.key.clone(),
        remote_id: rg.id.clone(),
        name: rg.name.clone(),
        members: known_of(&rg.members, &d.members, true),
        owners: known_of(&rg.owners, &d.owners, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> DesiredGroup {
        DesiredGroup {
            key: "k".into(),
            name: "G".into(),
            members: [("1".into(), "a@x.io".into())].into(),
            ..Default::default()
        }
    }

    fn remote() -> RemoteGroup {
        RemoteGroup {
            id: "r".into(),
            name: "G".into(),
            members: vec!["1".into(), "2".into()],
            owners: vec![],
            receive_call: vec!["1".into()],
        }
    }

    #[test]
    fn an_adopted_group_keeps_who_was_there_as_not_ours() {
        let c = crate::plan::create_of(&desired(), false);
        let kg = adopted(&c, &desired(), &remote(), Mode::Owned);
        assert!(kg.members.values().all(|m| !m.owned));
        assert_eq!(kg.members["1"].email.as_deref(), Some("a@x.io"));
        assert!(kg.members["1"].receive_call);
        assert_eq!(kg.members["2"].email, None);
    }

    #[test]
    fn a_resumed_create_owns_what_it_sent_in_owned_mode() {
        let c = crate::plan::create_of(&desired(), true);
        let kg = adopted(&c, &desired(), &remote(), Mode::Owned);
        assert!(kg.members["1"].owned, "we sent it before the crash");
        assert!(!kg.members["2"].owned, "not ours: not in the source");
        let kg = adopted(&c, &desired(), &remote(), Mode::Authoritative);
        assert!(!kg.members["1"].owned);
    }
}
