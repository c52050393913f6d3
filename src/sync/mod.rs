//! One run: load -> (read back) -> resolve -> plan -> (render | apply + record).
//!
//! The choice between a dry-run and a real run is made once, in `Exec::open`: a dry-run
//! reads the known state and writes nothing (its `Recorder` has no store), a real run holds
//! the state lock, records every call and applies the plans. A run has two phases: every
//! selected target is prepared (known state, `--full` read-back, lookups, plan) before any
//! target is sent a write, so a stale saved plan is refused for all targets at once. Targets
//! run concurrently; one target's failure never stops another.
//!
//! Files: `apply.rs` (sending a plan, create-or-adopt), `readback.rs` (`--full`),
//! `lookup.rs` (member-id lookups), `saved.rs` (saved plans), `report.rs` (the report and
//! the one exit policy).

mod apply;
mod lookup;
mod prepare;
mod presence;
mod readback;
mod report;
mod saved;
mod unchanged;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::config::{Config, TargetConfig};
use crate::model::Desired;
use crate::plan::{DesiredTarget, Known, PlanOptions, plan_target};
use crate::source::SourceErrors;
use crate::store::{LockError, StateLock, Store, StoreError, Writer};
use crate::targets::{self, Ctx, Recorder, Target};

pub use lookup::naming;
use prepare::prepare_target;
pub use presence::unmarked;
pub use report::{ExitCode, Failed, NotRun, RunReport, TargetReport, exit_policy};
pub use saved::{SavedPlan, SavedPlanError, SavedTarget, known_digest};
pub use unchanged::config_digest;

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
    /// `--only EMAIL`: scope the run to these people (lower-cased; empty = a whole run).
    pub only: Vec<String>,
    /// `sync --plan FILE`: apply exactly this saved plan, or refuse if anything changed.
    pub expect: Option<SavedPlan>,
    /// Cancelled by the daemon on SIGTERM: no operation starts after that, calls in flight
    /// finish and are recorded, and the next run re-plans what was not sent.
    pub stop: CancellationToken,
}

/// What stops a run before anything is sent (or the state lock).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Source(#[from] SourceErrors),
    #[error("--target {name}: no such target in {config} (targets: {known})")]
    UnknownTarget {
        name: String,
        config: PathBuf,
        known: String,
    },
    #[error("{0}")]
    MissingSecrets(String),
    #[error(transparent)]
    SavedPlan(#[from] SavedPlanError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the source stopped unexpectedly: {0}")]
    Loader(#[source] tokio::task::JoinError),
}

impl SyncError {
    /// The exit code of a run that stopped with this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            SyncError::Source(_)
            | SyncError::UnknownTarget { .. }
            | SyncError::MissingSecrets(_)
            | SyncError::SavedPlan(_) => ExitCode::Usage,
            SyncError::Lock(LockError::Held { .. }) => ExitCode::Locked,
            SyncError::Lock(_) | SyncError::Store(_) | SyncError::Loader(_) => ExitCode::Failed,
        }
    }
}

/// What a run reads of one target from the state database.
struct State {
    known: Known,
    /// The resolution cache: email -> member id, None for "not found".
    cache: HashMap<String, Option<String>>,
    /// What the target's answers have shown about it (learned shapes, capabilities).
    facts: crate::store::Facts,
}

/// How this run touches the state database and the targets: chosen once, at the top.
struct Exec {
    /// The state database (None for a dry-run before any real run: nothing is known).
    state: Option<Writer>,
    /// Where calls are recorded: the state database, or nowhere for a dry-run.
    recorder: Arc<Recorder>,
    /// Whether plans are sent (a real run) or only shown (a dry-run).
    apply: bool,
    /// Held for the whole of a real run.
    _lock: Option<StateLock>,
}

impl Exec {
    /// A dry-run opens the state read-only (if it exists) and records nothing; a real run
    /// takes the lock, opens (and migrates) the state and begins a run in the history.
    fn open(cfg: &Config, opts: &SyncOptions) -> Result<Exec, SyncError> {
        if opts.dry_run {
            return Ok(Exec {
                state: Store::open_read_only(&cfg.state)?.map(Writer::spawn),
                recorder: Arc::new(Recorder::dry()),
                apply: false,
                _lock: None,
            });
        }
        let lock = StateLock::acquire(&cfg.state)?;
        let state = Writer::spawn(Store::open(&cfg.state)?);
        Ok(Exec {
            state: Some(state),
            recorder: Arc::new(Recorder::dry()),
            apply: true,
            _lock: Some(lock),
        })
    }

    /// Begins the run in the history (real runs); returns its id.
    async fn begin(
        &mut self,
        opts: &SyncOptions,
        desired: &Desired,
    ) -> Result<Option<i64>, StoreError> {
        match (&self.state, self.apply) {
            (Some(s), true) => {
                let run = s
                    .begin_run(opts.command.clone(), opts.full, desired.digest.clone())
                    .await?;
                self.recorder = Arc::new(Recorder::real(run, s.clone()));
                Ok(Some(run))
            }
            _ => Ok(None),
        }
    }

    /// Records a run stopped at the shortcut: `unchanged since run N`, itself a base for
    /// the next run (same digests, same generation).
    async fn unchanged(
        self,
        cfg: &Config,
        opts: &SyncOptions,
        base: crate::store::RunBase,
        started: Instant,
    ) -> Result<RunReport, SyncError> {
        let state = self.state.as_ref().expect("a real run has its state");
        let run = state
            .begin_run(opts.command.clone(), false, base.source_digest.clone())
            .await?;
        let mut report = RunReport {
            run: Some(run),
            dry_run: false,
            full: false,
            groups: 0,
            targets: Vec::new(),
            calls_ok: 0,
            calls_failed: 0,
            added: 0,
            removed: 0,
            duration: started.elapsed(),
            source_digest: base.source_digest,
            exit_code: ExitCode::Ok,
            unchanged_since: Some(base.run),
            scoped: false,
        };
        report.exit_code = report.exit_code();
        finish(cfg, opts, state, run, &report).await?;
        state
            .mark_converged(run, base.config_digest, Some(base.run))
            .await?;
        metrics::counter!("rostersync_runs_total", "outcome" => report.outcome()).increment(1);
        for t in &cfg.targets {
            metrics::gauge!("rostersync_last_success_timestamp_seconds", "target" => t.name.clone())
                .set(unix_now());
        }
        info!(run, "{}", report.summary());
        Ok(report)
    }

    /// The known state and resolution cache of each target, in order.
    async fn states(&self, targets: &[&TargetConfig]) -> Vec<Result<State, StoreError>> {
        let mut states = Vec::with_capacity(targets.len());
        for t in targets {
            states.push(self.known(&t.name).await);
        }
        states
    }

    /// One target's known state and resolution cache.
    async fn known(&self, target: &str) -> Result<State, StoreError> {
        match &self.state {
            Some(s) => Ok(State {
                known: s.known(target.to_string()).await?,
                cache: s.resolution_cache(target.to_string()).await?,
                facts: s.facts(target.to_string()).await?,
            }),
            None => Ok(State {
                known: Known::default(),
                cache: HashMap::new(),
                facts: Default::default(),
            }),
        }
    }
}

/// Ends a run in the history (its outcome, exit code and summary) and, in the daemon,
/// applies `[log] history_days`. Whole runs and runs stopped at the shortcut both end here,
/// so a daemon whose source never changes still forgets old history.
async fn finish(
    cfg: &Config,
    opts: &SyncOptions,
    state: &Writer,
    run: i64,
    report: &RunReport,
) -> Result<(), StoreError> {
    state
        .finish_run(
            run,
            report.outcome().to_string(),
            i32::from(report.exit_code.code()),
            report.summary(),
        )
        .await?;
    if opts.command == "daemon" && cfg.log.history_days > 0 {
        match state.prune_history(cfg.log.history_days).await {
            Ok(0) => {}
            Ok(n) => info!(
                runs = n,
                "history older than {} days forgotten", cfg.log.history_days
            ),
            Err(e) => warn!(error = %e, "cannot forget old history"),
        }
    }
    Ok(())
}

/// Reads the source off the async runtime (it can take seconds on a large source).
async fn load_source(cfg: &Config) -> Result<Desired, SyncError> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || cfg.load_source())
        .await
        .map_err(SyncError::Loader)?
        .map_err(SyncError::from)
}

/// One run, from the config and the command line's options.
pub async fn run(cfg: &Config, opts: &SyncOptions) -> Result<RunReport, SyncError> {
    let started = Instant::now();
    for name in &opts.targets {
        if cfg.target(name).is_none() {
            let known: Vec<_> = cfg.targets.iter().map(|t| t.name.as_str()).collect();
            return Err(SyncError::UnknownTarget {
                name: name.clone(),
                config: cfg.path.clone(),
                known: known.join(", "),
            });
        }
    }
    let selected: Vec<&TargetConfig> = cfg
        .targets
        .iter()
        .filter(|t| opts.targets.is_empty() || opts.targets.contains(&t.name))
        .collect();

    // Everything that can stop a run with exit 2 is checked before anything is sent.
    if !opts.dry_run
        && let Some(e) = cfg.missing_secrets(selected.iter().copied())
    {
        return Err(SyncError::MissingSecrets(e));
    }
    // SPEC 9: nothing changed since a converged run? Then stop before parsing.
    let mut opened = None;
    // A live source read by the shortcut is not read again.
    let mut read_already = None;
    if unchanged::eligible(opts) {
        let exec = Exec::open(cfg, opts)?;
        if let Some(state) = &exec.state {
            match unchanged::unchanged_since(cfg, state).await? {
                unchanged::Unchanged::Since(base) => {
                    return exec.unchanged(cfg, opts, base, started).await;
                }
                unchanged::Unchanged::Changed(loaded) => read_already = loaded,
            }
        }
        opened = Some(exec);
    }
    // The known state is read (on the store's thread) while the source is parsed, by a
    // run whose state is open already: every whole real run, and dry-runs (read-only).
    let early = match opened {
        Some(exec) => Some(exec),
        None if opts.dry_run => Some(Exec::open(cfg, opts)?),
        None => None,
    };
    let (desired, early_states) = match (&early, read_already) {
        (Some(exec), Some(loaded)) => (loaded?, Some(exec.states(&selected).await)),
        (Some(exec), None) => {
            let (desired, states) = tokio::join!(load_source(cfg), exec.states(&selected));
            (desired?, Some(states))
        }
        (None, Some(loaded)) => (loaded?, None),
        (None, None) => (load_source(cfg).await?, None),
    };
    for email in &opts.only {
        if !desired
            .groups
            .values()
            .any(|g| g.members.iter().any(|m| **m == **email))
        {
            warn!(
                "--only {email}: in no group of the source; only removals of them can be planned"
            );
        }
    }
    if let Some(saved) = &opts.expect {
        saved.check_source(&desired)?;
    }
    let mut exec = match early {
        Some(exec) => exec,
        None => Exec::open(cfg, opts)?,
    };
    let states = match early_states {
        Some(states) => states,
        None => exec.states(&selected).await,
    };
    if let Some(saved) = &opts.expect {
        for (t, state) in selected.iter().zip(&states) {
            if let Ok(state) = state {
                saved.check_known(&t.name, &state.known)?;
            }
        }
    }
    let run_id = exec.begin(opts, &desired).await?;

    let span = tracing::info_span!("run", run = run_id.unwrap_or(0), dry_run = opts.dry_run);
    span.in_scope(|| {
        info!(
            targets = selected.len(),
            groups = desired.groups.len(),
            full = opts.full,
            "run {} started",
            run_id
                .map(|r| r.to_string())
                .unwrap_or_else(|| "(dry-run)".into())
        )
    });

    // Phase 1: every target is prepared (reads only) before any target is sent a write.
    let desired = Arc::new(desired);
    let prepared = futures::future::join_all(selected.iter().zip(states).map(|(t, state)| {
        let span = tracing::info_span!(parent: &span, "target", run = run_id.unwrap_or(0), target = %t.name);
        let recorder = exec.recorder.clone();
        let desired = desired.clone();
        async move { prepare_target(cfg, t, &desired, state, recorder, opts).await }.instrument(span)
    }))
    .await;

    // Phase 2: a real run applies the plans, unless a saved plan turned out stale.
    let stale: Vec<&str> = prepared
        .iter()
        .filter(|p| p.report.stale)
        .map(|p| p.report.name.as_str())
        .collect();
    if !stale.is_empty() {
        span.in_scope(|| {
            warn!(
                "the saved plan is stale for {}; nothing is sent to any target, make a new plan",
                stale.join(", ")
            )
        });
    }
    let apply = exec.apply && stale.is_empty();
    let reports = futures::future::join_all(selected.iter().zip(prepared).map(|(t, p)| {
        let span = tracing::info_span!(parent: &span, "target", run = run_id.unwrap_or(0), target = %t.name);
        async move {
            if apply {
                p.apply(t, &opts.stop).await
            } else {
                p.report
            }
        }
        .instrument(span)
    }))
    .await;

    let tally = exec.recorder.tally();
    let mut report = RunReport {
        run: run_id,
        dry_run: opts.dry_run,
        full: opts.full,
        scoped: !opts.only.is_empty(),
        groups: desired.groups.len(),
        targets: reports,
        calls_ok: tally.calls_ok,
        calls_failed: tally.calls_failed,
        added: tally.added,
        removed: tally.removed,
        duration: started.elapsed(),
        source_digest: desired.digest.clone(),
        exit_code: ExitCode::Ok,
        unchanged_since: None,
    };
    report.exit_code = report.exit_code();
    if let (Some(run), Some(state)) = (run_id, &exec.state) {
        finish(cfg, opts, state, run, &report).await?;
        // A base for the shortcut: every configured target ran and converged.
        let converged = report
            .targets
            .iter()
            .all(|t| t.converged() && t.unresolved.is_empty());
        if converged && !unchanged::scoped(opts) && report.targets.len() == cfg.targets.len() {
            state
                .mark_converged(run, unchanged::config_digest(cfg), None)
                .await?;
        }
    }
    metrics::counter!("rostersync_runs_total", "outcome" => report.outcome()).increment(1);
    metrics::histogram!("rostersync_run_duration_seconds").record(report.duration.as_secs_f64());
    metrics::counter!("rostersync_members_added_total").increment(report.added as u64);
    metrics::counter!("rostersync_members_removed_total").increment(report.removed as u64);
    span.in_scope(|| info!(exit = report.exit_code.code(), "{}", report.summary()));
    Ok(report)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
