//! Phase 1 of a run, for one target: its client, the read-back of `--full` and of groups
//! with an unfinished write, member lookups, presence marks and the plan. Sends reads only.
//! Phase 2 (`Prepared::apply`) sends the plan in a real run.

use super::*;
use crate::plan::Known;

fn plan_options(cfg: &Config, t: &TargetConfig, opts: &SyncOptions) -> PlanOptions {
    PlanOptions {
        mode: t.membership,
        safety: cfg.safety,
        allow_mass_removal: opts.allow_mass_removal,
        keep: t.keep_members.clone(),
        only: (!opts.only.is_empty()).then(|| {
            opts.only
                .iter()
                .map(|e| e.to_lowercase())
                .collect::<BTreeSet<_>>()
        }),
    }
}

/// A target after phase 1: its report (with the plan) and what applying it needs.
pub(super) struct Prepared {
    pub(super) report: TargetReport,
    /// None when the target could not run (the report says why), and in a dry-run.
    work: Option<Work>,
}

/// What applying a target's plan needs.
struct Work {
    target: Box<dyn Target>,
    ctx: Ctx,
    desired: DesiredTarget,
    /// The options the plan was made with (adoption plans again with them).
    popts: PlanOptions,
    /// Keys of creates left unfinished by an earlier run (groups not known).
    intents: Vec<String>,
}

impl Prepared {
    fn not_run(mut report: TargetReport, why: NotRun) -> Prepared {
        warn!("target {} could not run: {why}", report.name);
        report.skipped = Some(why);
        Prepared { report, work: None }
    }

    /// Phase 2 of a real run: sends the plan (unless the guard refused it).
    pub(super) async fn apply(
        mut self,
        t: &TargetConfig,
        stop: &CancellationToken,
    ) -> TargetReport {
        let (Some(w), Some(plan)) = (self.work, self.report.plan.take()) else {
            return self.report;
        };
        if !plan.refused() {
            for key in w
                .intents
                .iter()
                .filter(|k| !w.desired.groups.contains_key(*k))
            {
                warn!(group = %key, "dropping the unconfirmed create of a group no longer in the source; check the target for a stray group");
                if let Err(e) = w.ctx.recorder.drop_intent(&t.name, key).await {
                    warn!(group = %key, error = %e, "cannot drop the intent");
                }
            }
            apply::apply_target(
                &w.ctx,
                w.target.as_ref(),
                t,
                &plan,
                &apply::Goal {
                    desired: &w.desired,
                    opts: &w.popts,
                },
                stop,
                &mut self.report,
            )
            .await;
        }
        self.report.plan = Some(plan);
        if self.report.converged() {
            metrics::gauge!("rostersync_last_success_timestamp_seconds", "target" => t.name.clone())
                .set(unix_now());
        }
        self.report
    }
}

/// Phase 1 for one target: its client, `--full` read-back, lookups and plan. Sends reads
/// only.
pub(super) async fn prepare_target(
    cfg: &Config,
    t: &TargetConfig,
    desired: &Desired,
    state: Result<State, StoreError>,
    recorder: Arc<Recorder>,
    opts: &SyncOptions,
) -> Prepared {
    let mut report = TargetReport::new(t);
    report.scoped = !opts.only.is_empty();
    let State {
        mut known,
        cache,
        facts,
    } = match state {
        Ok(s) => s,
        Err(e) => return Prepared::not_run(report, NotRun::State(e)),
    };
    let (target, http) = match targets::build(t) {
        Ok(x) => x,
        Err(e) => return Prepared::not_run(report, NotRun::Client(e)),
    };
    let ctx = Ctx::new(t.name.clone(), http, recorder, facts);
    // For saved plans (made by dry-runs, checked by --plan): not on the daemon's path.
    if opts.dry_run || opts.expect.is_some() {
        report.known_digest = known_digest(&known);
    }
    // Managed groups with an unfinished write are read back before they are planned, so
    // whatever the target applied after a crash is known; `--full` reads every group.
    let pending: BTreeSet<String> = known
        .intents
        .iter()
        .filter(|k| known.groups.contains_key(*k))
        .cloned()
        .collect();
    let to_read: BTreeSet<String> = if opts.full {
        known.groups.keys().cloned().collect()
    } else {
        pending.clone()
    };
    let mut blocked = BTreeSet::new();
    if !to_read.is_empty() {
        let missing = t.missing_secrets();
        if !missing.is_empty() {
            return Prepared::not_run(report, NotRun::NoCredentials(missing.join(", ")));
        }
        if !pending.is_empty() {
            info!(
                groups = pending.len(),
                "reading back groups with an unfinished write from an earlier run"
            );
        }
        let names = readback::names_by_id(desired, &t.name, &cache);
        let read = readback::read_back(
            &ctx,
            target.as_ref(),
            &mut known,
            &to_read,
            &names,
            &t.keep_members,
            &opts.stop,
            &mut report,
        )
        .await;
        match read {
            Ok(unread) => blocked = &unread & &pending,
            Err(e) => return Prepared::not_run(report, NotRun::ReadBack(e)),
        }
    }
    let dt = match lookup::resolve_members(
        &ctx,
        target.as_ref(),
        t,
        desired,
        &known,
        cache,
        opts.full,
        &opts.stop,
        &mut report,
    )
    .await
    {
        Ok(dt) => dt,
        Err(e) => return Prepared::not_run(report, NotRun::Cache(e)),
    };
    name_for_keep(t, desired, &dt, &mut known);
    let popts = plan_options(cfg, t, opts);
    let mut plan = plan_target(&dt, &known, &popts);
    if !blocked.is_empty() {
        // Its state is unknown: nothing that depends on it is sent (it failed above).
        plan.ops.retain(|op| {
            let keep = !blocked.contains(op.key());
            if !keep {
                warn!(group = %op.key(), "an unfinished write could not be read back; nothing is sent to this group in this run");
            }
            keep
        });
    }
    if opts.stop.is_cancelled() {
        // Stopped (SIGTERM) while reading: what was read and looked up is recorded; nothing
        // is sent, and the next run plans again.
        warn!(
            "target {}: stopping before anything is sent; {} operations not started",
            t.name,
            plan.ops.len()
        );
        report.not_started = plan.ops.len();
        report.plan = Some(plan);
        return Prepared { report, work: None };
    }
    if let Some(saved) = &opts.expect
        && !saved.matches(&t.name, &plan)
    {
        warn!(
            "target {}: the plan differs from the saved one (a member lookup gave another answer); make a new plan",
            t.name
        );
        report.stale = true;
    }
    if let Some(g) = &plan.guard {
        if g.overridden {
            warn!("safety guard overridden by --allow-mass-removal: {g}");
        } else {
            warn!(
                "target {} refused by the safety guard: {g}; rerun with --allow-mass-removal if this is intended",
                t.name
            );
        }
    }
    presence::mark(
        &ctx,
        target.as_ref(),
        t,
        &mut plan,
        cfg.defer_online_removals,
        &mut report,
    )
    .await;
    if report.deferred > 0 {
        warn!(
            "target {}: {} removals of agents online now deferred to a later run (safety.defer_online_removals)",
            t.name, report.deferred
        );
        if !opts.dry_run {
            metrics::counter!("rostersync_removals_deferred_total", "target" => t.name.clone())
                .increment(report.deferred as u64);
        }
    }
    metrics::gauge!("rostersync_plan_ops", "target" => t.name.clone()).set(plan.ops.len() as f64);
    report.plan = Some(plan);
    if opts.dry_run {
        // Nothing will be applied: the resolved state is let go now, not at the end.
        return Prepared { report, work: None };
    }
    Prepared {
        report,
        work: Some(Work {
            target,
            ctx,
            desired: dt,
            popts,
            intents: known
                .intents
                .into_iter()
                .filter(|k| !known.groups.contains_key(k))
                .collect(),
        }),
    }
}

/// Names the known members found without an email (agents a DeepCall assign kept and
/// recorded) from the source's ids, so that `keep_members` email patterns protect an agent
/// whose id a source person carries for this target. Only when the target has email
/// patterns and some member lacks an email (nothing to build otherwise).
fn name_for_keep(t: &TargetConfig, desired: &Desired, dt: &DesiredTarget, known: &mut Known) {
    if !t.keep_members.on_emails() {
        return;
    }
    let nameless = |k: &Known| {
        k.groups
            .values()
            .any(|g| g.members.values().any(|m| m.email.is_none()))
    };
    if !nameless(known) {
        return;
    }
    let mut names: std::collections::HashMap<&str, &std::sync::Arc<str>> = dt
        .groups
        .values()
        .flat_map(|g| g.members.iter().map(|(id, e)| (&**id, e)))
        .collect();
    let given: Vec<(String, std::sync::Arc<str>)> = desired
        .people
        .values()
        .filter_map(|p| {
            Some((
                p.ids.get(&t.name)?.clone(),
                std::sync::Arc::from(p.email.as_str()),
            ))
        })
        .collect();
    for (id, e) in &given {
        names.entry(id.as_str()).or_insert(e);
    }
    for g in known.groups.values_mut() {
        for (id, m) in g.members.iter_mut() {
            if m.email.is_none()
                && let Some(e) = names.get(id.as_str())
            {
                m.email = Some((*e).clone());
            }
        }
    }
}
