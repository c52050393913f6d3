//! One run: load -> (read back) -> resolve -> plan -> (render | apply + record).
//!
//! Dry-run is one branch at the top: it opens the state read-only and never calls
//! `apply_target`. Targets run concurrently; one target's failure never stops another.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::config::{Config, Flavor, Kind, Mode, TargetConfig};
use crate::model::Desired;
use crate::plan::resolve::{self, Naming, Unresolved};
use crate::plan::{
    Create, DesiredGroup, DesiredTarget, Known, KnownGroup, KnownMember, Op, PlanOptions,
    TargetPlan, plan_group, plan_target,
};
use crate::store::{Delta, StateLock, Store};
use crate::targets::{self, Ctx, OpError, Recorder, RemoteGroup, Tally, Target};

/// What the command line asked of this run.
#[derive(Clone, Debug, Default)]
pub struct SyncOptions {
    pub dry_run: bool,
    pub full: bool,
    /// Only these targets (empty = all).
    pub targets: Vec<String>,
    pub allow_mass_removal: bool,
    /// `sync` or `daemon`, for the runs table.
    pub command: String,
    /// `sync --plan FILE`: apply exactly this saved plan, or refuse if anything changed.
    pub expect: Option<SavedPlan>,
    /// Cancelled by the daemon on SIGTERM: no operation starts after that, calls in flight
    /// finish and are recorded, and the next run re-plans what was not sent.
    pub stop: CancellationToken,
}

/// A plan saved by `sync --dry-run --save-plan FILE`, applied by `sync --plan FILE`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct SavedPlan {
    /// Format version.
    pub rostersync_plan: u32,
    pub source_digest: String,
    pub full: bool,
    pub allow_mass_removal: bool,
    pub targets: BTreeMap<String, SavedTarget>,
}

/// One target's part of a saved plan.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct SavedTarget {
    /// Digest of the known state the plan was made from.
    pub known_digest: String,
    pub plan: TargetPlan,
}

impl SavedPlan {
    /// The plan of a dry-run, to save.
    pub fn from_report(r: &RunReport, allow_mass_removal: bool) -> SavedPlan {
        let targets = r
            .targets
            .iter()
            .filter_map(|t| {
                let plan = t.plan.clone()?;
                Some((
                    t.name.clone(),
                    SavedTarget {
                        known_digest: t.known_digest.clone(),
                        plan,
                    },
                ))
            })
            .collect();
        SavedPlan {
            rostersync_plan: 1,
            source_digest: r.source_digest.clone(),
            full: r.full,
            allow_mass_removal,
            targets,
        }
    }
}

/// Digest of one target's known state (to tell whether it changed since a plan was saved).
pub fn known_digest(known: &Known) -> String {
    use sha2::Digest as _;
    let bytes = serde_json::to_vec(known).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(&bytes))
}

/// Errors that stop a run before anything is sent, or the state lock.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Source(#[from] crate::source::SourceErrors),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Lock(#[from] crate::store::LockError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// An op that failed.
#[derive(Clone, Debug, Serialize)]
pub struct Failed {
    pub group: String,
    pub op: String,
    pub error: String,
}

/// One target's part of a run.
#[derive(Clone, Debug, Serialize)]
pub struct TargetReport {
    pub name: String,
    pub kind: Kind,
    /// Why the target was not planned at all (kind not built, missing secret, error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<TargetPlan>,
    pub unresolved: Vec<Unresolved>,
    pub failed: Vec<Failed>,
    /// Memberships that a `--full` read found different from the known state.
    pub drift: usize,
    /// Warnings for the operator (renames a kind cannot do, ...).
    pub warnings: Vec<String>,
    /// Digest of the known state the plan was made from (before any `--full` read).
    pub known_digest: String,
    /// `--plan FILE`: the fresh plan differs from the saved one, so nothing was sent.
    pub stale: bool,
}

impl TargetReport {
    fn new(t: &TargetConfig) -> TargetReport {
        TargetReport {
            name: t.name.clone(),
            kind: t.kind,
            skipped: None,
            plan: None,
            unresolved: Vec::new(),
            failed: Vec::new(),
            drift: 0,
            warnings: Vec::new(),
            known_digest: String::new(),
            stale: false,
        }
    }
    pub fn refused(&self) -> bool {
        self.plan.as_ref().is_some_and(TargetPlan::refused)
    }
}

/// The result of a run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The run's id in the history; None for dry-runs.
    pub run: Option<i64>,
    pub dry_run: bool,
    pub full: bool,
    pub targets: Vec<TargetReport>,
    pub groups: usize,
    pub calls_ok: usize,
    pub calls_failed: usize,
    pub added: usize,
    pub removed: usize,
    #[serde(serialize_with = "as_secs")]
    pub duration: Duration,
    pub source_digest: String,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

impl RunReport {
    /// 0 ok, 1 some ops failed, 2 a saved plan was stale, 3 a safety guard refused a target.
    pub fn exit_code(&self) -> u8 {
        use crate::app::{EXIT_FAILED, EXIT_GUARD, EXIT_OK, EXIT_USAGE};
        if self.targets.iter().any(|t| t.stale) {
            EXIT_USAGE
        } else if self.targets.iter().any(TargetReport::refused) {
            EXIT_GUARD
        } else if self.targets.iter().any(|t| !t.failed.is_empty()) {
            EXIT_FAILED
        } else {
            EXIT_OK
        }
    }

    pub fn outcome(&self) -> &'static str {
        match self.exit_code() {
            0 => "ok",
            2 => "stale plan",
            3 => "refused",
            _ => "failed",
        }
    }

    /// The one summary line of SPEC section 8.
    pub fn summary(&self) -> String {
        let secs = self.duration.as_secs_f64();
        let targets = self.targets.len();
        if self.dry_run {
            let (adds, rems): (usize, usize) = self
                .targets
                .iter()
                .filter_map(|t| t.plan.as_ref())
                .fold((0, 0), |(a, r), p| (a + p.additions(), r + p.removals()));
            return format!(
                "dry-run done in {secs:.1}s: {targets} targets, {} groups, plan +{adds} -{rems} members, nothing sent",
                self.groups
            );
        }
        format!(
            "run {} done in {secs:.1}s: {targets} targets, {} groups, {} calls ({} ok, {} failed), +{} -{} members",
            self.run.unwrap_or(0),
            self.groups,
            self.calls_ok + self.calls_failed,
            self.calls_ok,
            self.calls_failed,
            self.added,
            self.removed
        )
    }
}

/// Loads config-relative inputs and runs once.
pub async fn run(cfg: &Config, opts: &SyncOptions) -> Result<RunReport, SyncError> {
    let started = Instant::now();
    for t in &opts.targets {
        if cfg.target(t).is_none() {
            let names: Vec<_> = cfg.targets.iter().map(|t| t.name.as_str()).collect();
            return Err(SyncError::Usage(format!(
                "--target {t}: no such target in {} (targets: {})",
                cfg.path.display(),
                names.join(", ")
            )));
        }
    }
    let desired = cfg.load_source()?;
    let selected: Vec<&TargetConfig> = cfg
        .targets
        .iter()
        .filter(|t| opts.targets.is_empty() || opts.targets.contains(&t.name))
        .collect();

    // Everything that can stop a run is checked before anything is sent.
    if let Some(e) = cfg
        .missing_secrets(selected.iter().copied())
        .filter(|_| !opts.dry_run)
    {
        return Err(SyncError::Usage(e));
    }
    let (_lock, store) = if opts.dry_run {
        (None, Store::open_read_only(&cfg.state)?)
    } else {
        let lock = StateLock::acquire(&cfg.state)?;
        (Some(lock), Some(Store::open(&cfg.state)?))
    };
    if let Some(saved) = &opts.expect {
        check_saved(saved, &desired, store.as_ref(), &selected)?;
    }
    let run_id = match (&store, opts.dry_run) {
        (Some(s), false) => Some(s.begin_run(&opts.command, opts.full, &desired.digest)?),
        _ => None,
    };
    let store = store.map(|s| Arc::new(Mutex::new(s)));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let recorder = Arc::new(Recorder {
        store: if opts.dry_run { None } else { store.clone() },
        run: run_id.unwrap_or(0),
        tally: tally.clone(),
    });
    let span = tracing::info_span!("run", run = run_id.unwrap_or(0), dry_run = opts.dry_run);
    async {
        info!(
            targets = selected.len(),
            groups = desired.groups.len(),
            full = opts.full,
            "run {} started",
            run_id
                .map(|r| r.to_string())
                .unwrap_or_else(|| "(dry-run)".into())
        );
    }
    .instrument(span.clone())
    .await;

    let desired = Arc::new(desired);
    let futs = selected.iter().map(|t| {
        let desired = desired.clone();
        let store = store.clone();
        let recorder = recorder.clone();
        let span = tracing::info_span!(parent: &span, "target", run = run_id.unwrap_or(0), target = %t.name);
        async move { sync_target(cfg, t, &desired, store, recorder, opts).await }.instrument(span)
    });
    let reports = futures::future::join_all(futs).await;

    let t = tally.lock().expect("tally").clone();
    let report = RunReport {
        run: run_id,
        dry_run: opts.dry_run,
        full: opts.full,
        groups: desired.groups.len(),
        targets: reports,
        calls_ok: t.calls_ok,
        calls_failed: t.calls_failed,
        added: t.added,
        removed: t.removed,
        duration: started.elapsed(),
        source_digest: desired.digest.clone(),
    };
    if let (Some(run), Some(store)) = (run_id, &store) {
        let s = store.lock().expect("store");
        s.finish_run(
            run,
            report.outcome(),
            report.exit_code() as i32,
            &report.summary(),
        )?;
    }
    metrics::counter!("rostersync_runs_total", "outcome" => report.outcome()).increment(1);
    metrics::histogram!("rostersync_run_duration_seconds").record(report.duration.as_secs_f64());
    metrics::counter!("rostersync_members_added_total").increment(report.added as u64);
    metrics::counter!("rostersync_members_removed_total").increment(report.removed as u64);
    span.in_scope(|| info!(exit = report.exit_code(), "{}", report.summary()));
    Ok(report)
}

/// `--plan FILE`: refuses (nothing sent) if the source or a target's known state changed
/// since the plan was saved.
fn check_saved(
    saved: &SavedPlan,
    desired: &Desired,
    store: Option<&Store>,
    selected: &[&TargetConfig],
) -> Result<(), SyncError> {
    if saved.source_digest != desired.digest {
        return Err(SyncError::Usage(
            "the source changed since the plan was saved; make a new plan with `sync --dry-run --save-plan FILE`".into(),
        ));
    }
    for t in selected {
        let Some(st) = saved.targets.get(&t.name) else {
            continue;
        };
        let known = match store {
            Some(s) => s.known(&t.name)?,
            None => Known::default(),
        };
        if known_digest(&known) != st.known_digest {
            return Err(SyncError::Usage(format!(
                "the known state of target {} changed since the plan was saved (another run happened); make a new plan",
                t.name
            )));
        }
    }
    Ok(())
}

fn plan_options(cfg: &Config, t: &TargetConfig, opts: &SyncOptions) -> PlanOptions {
    PlanOptions {
        mode: t.membership,
        safety: cfg.safety,
        allow_mass_removal: opts.allow_mass_removal,
    }
}

async fn sync_target(
    cfg: &Config,
    t: &TargetConfig,
    desired: &Desired,
    store: Option<Arc<Mutex<Store>>>,
    recorder: Arc<Recorder>,
    opts: &SyncOptions,
) -> TargetReport {
    let mut report = TargetReport::new(t);
    let (target, http) = match targets::build(t) {
        Ok(x) => x,
        Err(e) => {
            warn!("target {} skipped: {e}", t.name);
            report.skipped = Some(e.to_string());
            return report;
        }
    };
    let ctx = Ctx {
        target: t.name.clone(),
        http,
        recorder,
    };
    let (mut known, cache) = match &store {
        Some(s) => {
            let s = s.lock().expect("store");
            let known = s.known(&t.name);
            let cache = s.resolution_cache(&t.name);
            match (known, cache) {
                (Ok(k), Ok(c)) => (k, c),
                (Err(e), _) | (_, Err(e)) => {
                    report.skipped = Some(e.to_string());
                    return report;
                }
            }
        }
        None => (Known::default(), HashMap::new()),
    };
    // For saved plans only (made by dry-runs, checked by --plan): not on the daemon's path.
    if opts.dry_run || opts.expect.is_some() {
        report.known_digest = known_digest(&known);
    }
    let missing = t.missing_secrets();
    if opts.full {
        if !missing.is_empty() {
            report.skipped = Some(format!(
                "--full needs {} to read the target",
                missing.join(", ")
            ));
            return report;
        }
        if let Err(e) = read_back(
            &ctx,
            target.as_ref(),
            &mut known,
            &names_by_id(desired, &t.name, &cache),
            &mut report,
            opts.dry_run,
        )
        .await
        {
            report.skipped = Some(format!("--full read-back failed: {e}"));
            return report;
        }
    }
    let can_call = missing.is_empty();
    let dt = resolve(
        &ctx,
        target.as_ref(),
        t,
        desired,
        &known,
        cache,
        opts,
        can_call,
        store.as_ref(),
        &mut report,
    )
    .await;
    let plan = plan_target(&dt, &known, &plan_options(cfg, t, opts));
    let saved = opts.expect.as_ref().and_then(|p| p.targets.get(&t.name));
    if saved.is_some_and(|s| s.plan != plan) {
        warn!(
            "target {}: the plan differs from the saved one (a member lookup gave another answer); nothing sent, make a new plan",
            t.name
        );
        report.stale = true;
        report.plan = Some(plan);
        return report;
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
    metrics::gauge!("rostersync_plan_ops", "target" => t.name.clone()).set(plan.ops.len() as f64);
    if !opts.dry_run && !plan.refused() {
        // Intents of groups that left the source: their create never got confirmed.
        for key in known.intents.iter().filter(|k| !dt.groups.contains_key(*k)) {
            warn!(group = %key, "dropping the unconfirmed create of a group no longer in the source; check the target for a stray group");
            if let Some(s) = &store {
                let _ = s.lock().expect("store").drop_intent(&t.name, key);
            }
        }
        let not_started = apply_target(
            &ctx,
            target.as_ref(),
            t,
            &plan,
            &dt,
            &store,
            &opts.stop,
            &mut report,
        )
        .await;
        if report.failed.is_empty() && not_started == 0 {
            metrics::gauge!("rostersync_last_success_timestamp_seconds", "target" => t.name.clone())
                .set(unix_now());
        }
    }
    report.plan = Some(plan);
    report
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `--full`: reads every managed group back and replaces the known state with it.
async fn read_back(
    ctx: &Ctx,
    target: &dyn Target,
    known: &mut Known,
    names: &HashMap<String, String>,
    report: &mut TargetReport,
    dry_run: bool,
) -> Result<(), OpError> {
    let groups: Vec<KnownGroup> = known.groups.values().cloned().collect();
    let reads = futures::stream::iter(
        groups
            .iter()
            .map(|g| async move { (g, target.read(ctx, g).await) }),
    )
    .buffer_unordered(4)
    .collect::<Vec<_>>()
    .await;
    let mut drift = 0;
    for (g, r) in reads {
        let r = match r {
            Ok(r) => r,
            Err(e @ OpError::Record(_)) => return Err(e),
            // Contained: this group fails and is planned from its known state; the others
            // are still read and repaired.
            Err(e) => {
                warn!(group = %g.name, error = %e, "--full could not read the group; it keeps its known state");
                report.failed.push(Failed {
                    group: g.name.clone(),
                    op: "read".into(),
                    error: e.to_string(),
                });
                continue;
            }
        };
        match r {
            None => {
                warn!(group = %g.name, "managed group is gone from the target; it will be created again");
                drift += g.members.len();
                known.groups.remove(&g.key);
                if !dry_run {
                    ctx.note(
                        "forget",
                        &g.key,
                        &g.name,
                        Delta::Forget { key: g.key.clone() },
                    )?;
                }
            }
            Some(rg) => {
                let fresh = known_from_remote(g, &rg, names);
                let d = changed(&g.members, &fresh.members) + changed(&g.owners, &fresh.owners);
                if d > 0 || fresh.name != g.name {
                    warn!(group = %g.name, drift = d, "drift found: the target differs from the known state");
                    drift += d;
                    if !dry_run {
                        let delta = Delta::Group {
                            key: fresh.key.clone(),
                            remote_id: fresh.remote_id.clone(),
                            name: fresh.name.clone(),
                            members: fresh.members.clone(),
                            owners: fresh.owners.clone(),
                        };
                        ctx.note("drift", &g.key, &g.name, delta)?;
                    }
                }
                known.groups.insert(g.key.clone(), fresh);
            }
        }
    }
    report.drift = drift;
    metrics::counter!("rostersync_drift_found_total", "target" => ctx.target.clone())
        .increment(drift as u64);
    Ok(())
}

/// How many ids are in one map and not the other.
fn changed(a: &BTreeMap<String, KnownMember>, b: &BTreeMap<String, KnownMember>) -> usize {
    a.keys().filter(|id| !b.contains_key(*id)).count()
        + b.keys().filter(|id| !a.contains_key(*id)).count()
}

/// Member id -> email, from the source's `people[].ids` and the resolution cache: names
/// the members a `--full` read finds, so plans show emails rather than raw ids.
fn names_by_id(
    desired: &Desired,
    target: &str,
    cache: &HashMap<String, Option<String>>,
) -> HashMap<String, String> {
    let cached = cache
        .iter()
        .filter_map(|(e, id)| Some((id.clone()?, e.clone())));
    let given = desired
        .people
        .values()
        .filter_map(|p| Some((p.ids.get(target)?.clone(), p.email.clone())));
    cached.chain(given).collect()
}

/// Known state as a read shows it, keeping what we knew of members still there.
fn known_from_remote(
    prev: &KnownGroup,
    rg: &RemoteGroup,
    names: &HashMap<String, String>,
) -> KnownGroup {
    let rc: BTreeSet<&String> = rg.receive_call.iter().collect();
    let carry = |prev: &BTreeMap<String, KnownMember>, ids: &[String], calls: bool| {
        ids.iter()
            .map(|id| {
                let p = prev.get(id);
                let k = KnownMember {
                    owned: p.is_some_and(|p| p.owned),
                    receive_call: calls && rc.contains(id),
                    email: p
                        .and_then(|p| p.email.clone())
                        .or_else(|| names.get(id).cloned()),
                };
                (id.clone(), k)
            })
            .collect()
    };
    KnownGroup {
        key: prev.key.clone(),
        remote_id: rg.id.clone(),
        name: if rg.name.is_empty() {
            prev.name.clone()
        } else {
            rg.name.clone()
        },
        members: carry(&prev.members, &rg.members, true),
        owners: carry(&prev.owners, &rg.owners, false),
    }
}

/// Resolves every member of every group meant for this target to a member id: looks up
/// (and caches) the people the source and the cache do not name, then builds the target's
/// desired state with `plan::resolve::desired_target`.
#[allow(clippy::too_many_arguments)]
async fn resolve(
    ctx: &Ctx,
    target: &dyn Target,
    t: &TargetConfig,
    desired: &Desired,
    known: &Known,
    mut cache: HashMap<String, Option<String>>,
    opts: &SyncOptions,
    can_call: bool,
    store: Option<&Arc<Mutex<Store>>>,
    report: &mut TargetReport,
) -> DesiredTarget {
    let naming = Naming {
        target: &t.name,
        email_is_id: t.kind == Kind::Scim && t.flavor == Flavor::Maestroqa,
        owners: t.kind == Kind::Scim && t.flavor == Flavor::Maestroqa,
        receive_call: t.kind == Kind::AssignGroup,
        scim: t.kind == Kind::Scim,
    };
    if opts.full {
        // A --full run asks again about people nobody had.
        cache.retain(|_, v| v.is_some());
    }
    let wanted = resolve::to_look_up(desired, &naming, &cache);
    let mut failed: HashMap<String, String> = HashMap::new();
    if !wanted.is_empty() && target.can_lookup() && can_call {
        let results = futures::stream::iter(
            wanted
                .iter()
                .map(|e| async move { (e, target.lookup(ctx, e).await) }),
        )
        .buffer_unordered(t.concurrency)
        .collect::<Vec<_>>()
        .await;
        for (email, r) in results {
            match r {
                Ok(id) => {
                    let cached = match store {
                        Some(s) if !opts.dry_run => {
                            s.lock()
                                .expect("store")
                                .cache_resolution(&t.name, email, id.as_deref())
                        }
                        _ => Ok(()),
                    };
                    if let Err(e) = cached {
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
    let reason = |e: &str| match failed.get(e) {
        Some(err) => format!("lookup failed: {err}"),
        None if !target.can_lookup() => {
            format!(
                "no people[].ids.{} given and {} has no lookup by email",
                t.name, t.kind
            )
        }
        None if !can_call => {
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

/// Sends a target's plan: creates (with adoption), updates, deletes; records as it goes.
/// Once `stop` is cancelled no further op starts; returns how many were not started.
#[allow(clippy::too_many_arguments)]
async fn apply_target(
    ctx: &Ctx,
    target: &dyn Target,
    t: &TargetConfig,
    plan: &TargetPlan,
    dt: &DesiredTarget,
    store: &Option<Arc<Mutex<Store>>>,
    stop: &CancellationToken,
    report: &mut TargetReport,
) -> usize {
    crate::progress::add(plan.ops.len());
    let results = futures::stream::iter(plan.ops.iter().map(|op| async move {
        if stop.is_cancelled() {
            return (op, None);
        }
        let r = match op {
            Op::Create(c) => {
                create_or_adopt(ctx, target, t, c, &dt.groups[&c.key], store, stop).await
            }
            Op::Update(u) => match target.update(ctx, u).await {
                Err(e) if e.is_not_found() => {
                    warn!(group = %u.name, "managed group is gone from the target (404); creating it again");
                    let forgot = ctx.note("forget", &u.key, &u.name, Delta::Forget { key: u.key.clone() });
                    match forgot {
                        Ok(()) => {
                            let d = &dt.groups[&u.key];
                            let c = create_op(d, false);
                            create_or_adopt(ctx, target, t, &c, d, store, stop).await
                        }
                        Err(e) => Err(e),
                    }
                }
                r => r,
            },
            Op::Delete(d) => target.delete(ctx, d).await,
        };
        crate::progress::done();
        (op, Some(r))
    }))
    .buffer_unordered(t.concurrency)
    .collect::<Vec<_>>()
    .await;
    let not_started = results.iter().filter(|(_, r)| r.is_none()).count();
    if not_started > 0 {
        warn!(
            not_started,
            "stopping: {not_started} operations not started; the next run sends them"
        );
    }
    for (op, r) in results {
        if let Some(Err(e)) = r {
            let name = match op {
                Op::Create(c) => c.name.clone(),
                Op::Update(u) => u.name.clone(),
                Op::Delete(d) => d.name.clone(),
            };
            let kind = match op {
                Op::Create(_) => "create",
                Op::Update(_) => "update",
                Op::Delete(_) => "delete",
            };
            warn!(group = %name, op = kind, error = %e, "operation failed");
            report.failed.push(Failed {
                group: name,
                op: kind.into(),
                error: e.to_string(),
            });
        }
    }
    not_started
}

fn create_op(d: &DesiredGroup, resumed: bool) -> Create {
    let ms = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(id, e)| crate::plan::Member {
                id: id.clone(),
                email: Some(e.clone()),
            })
            .collect()
    };
    Create {
        key: d.key.clone(),
        name: d.name.clone(),
        members: ms(&d.members),
        owners: ms(&d.owners),
        receive_call: d.receive_call.iter().cloned().collect(),
        resumed,
    }
}

/// Looks for a group of the same name first and adopts it; creates only if there is none.
/// A create that may have been applied (timeout, dropped connection, 5xx) is never re-sent
/// before looking again.
async fn create_or_adopt(
    ctx: &Ctx,
    target: &dyn Target,
    t: &TargetConfig,
    c: &Create,
    d: &DesiredGroup,
    store: &Option<Arc<Mutex<Store>>>,
    stop: &CancellationToken,
) -> Result<(), OpError> {
    if let Some(s) = store {
        s.lock()
            .expect("store")
            .write_intent(ctx.recorder.run, &ctx.target, &c.key, &c.name)?;
    }
    let mut last = None;
    let mut attempts = 0;
    for attempt in 0..=t.max_retries {
        if attempt > 0 {
            if stop.is_cancelled() {
                break;
            }
            let wait = t.retry_base.saturating_mul(1 << attempt.min(6));
            tokio::time::sleep(wait.min(Duration::from_secs(30))).await;
        }
        if let Some(rg) = target.find(ctx, &c.key, &c.name).await? {
            return adopt(ctx, target, t, c, d, &rg).await;
        }
        attempts += 1;
        match target.create(ctx, c).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() => {
                warn!(group = %c.name, error = %e, "create did not complete; looking the group up again before any retry");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    match last {
        Some(last) => Err(OpError::CreateGaveUp {
            attempts,
            last: Box::new(last),
        }),
        None => Err(OpError::CreateGaveUp {
            attempts,
            last: Box::new(OpError::Conflict("stopped before the first attempt".into())),
        }),
    }
}

/// Takes over an existing group: records it with its current members, then sends only the
/// difference to the desired state.
async fn adopt(
    ctx: &Ctx,
    target: &dyn Target,
    t: &TargetConfig,
    c: &Create,
    d: &DesiredGroup,
    rg: &RemoteGroup,
) -> Result<(), OpError> {
    info!(group = %c.name, remote_id = %rg.id, members = rg.members.len(), "adopting the existing group of the same name");
    // After a crash mid-create, what is there is what we sent: ours to manage.
    let ours = c.resumed && t.membership != Mode::Authoritative;
    let rc: BTreeSet<&String> = rg.receive_call.iter().collect();
    let known_of = |ids: &[String], desired: &BTreeMap<String, String>, calls: bool| {
        ids.iter()
            .map(|id| {
                let k = KnownMember {
                    owned: ours && desired.contains_key(id),
                    receive_call: calls && rc.contains(id),
                    email: desired.get(id).cloned(),
                };
                (id.clone(), k)
            })
            .collect::<BTreeMap<_, _>>()
    };
    let kg = KnownGroup {
        key: c.key.clone(),
        remote_id: rg.id.clone(),
        name: rg.name.clone(),
        members: known_of(&rg.members, &d.members, true),
        owners: known_of(&rg.owners, &d.owners, false),
    };
    ctx.note(
        "adopt",
        &c.key,
        &c.name,
        Delta::Group {
            key: kg.key.clone(),
            remote_id: kg.remote_id.clone(),
            name: kg.name.clone(),
            members: kg.members.clone(),
            owners: kg.owners.clone(),
        },
    )?;
    match plan_group(d, &kg, t.membership) {
        Some(u) => target.update(ctx, &u).await,
        None => Ok(()),
    }
}
