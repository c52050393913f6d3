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

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::config::{Config, TargetConfig};
use crate::model::Desired;
use crate::plan::{DesiredTarget, PlanOptions, plan_target};
use crate::source::SourceErrors;
use crate::store::lease::{Guard, Lease, LeaseError};
use crate::store::{Fence, LockError, StateLocation, StateLock, Store, StoreError, Writer};
use crate::targets::{self, Ctx, Recorder, Target};

pub use lookup::naming;
use prepare::prepare_target;
pub use presence::unmarked;
pub use report::{Ending, ExitCode, Failed, NotRun, RunReport, TargetReport, exit_policy};
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
    /// A PostgreSQL state: the lease the daemon holds, that this run writes under. None in
    /// a one-shot run, which takes the lease itself (or exits 4 when another node leads).
    pub lease: Option<RunLease>,
}

/// The lease a run writes under (the daemon's): its fence and its local deadline.
#[derive(Clone, Debug)]
pub struct RunLease {
    pub fence: Fence,
    pub guard: Guard,
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
    /// Another node leads (a PostgreSQL state): a one-shot run sends nothing (exit 4).
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the source stopped unexpectedly: {0}")]
    Loader(#[source] tokio::task::JoinError),
    #[error("opening the state database stopped unexpectedly: {0}")]
    Opener(#[source] tokio::task::JoinError),
}

impl SyncError {
    /// The exit code of a run that stopped with this error (`exit_policy`).
    pub fn exit_code(&self) -> ExitCode {
        exit_policy(Ending::Stopped(self))
    }
}

/// What a run reads of one target from the state database (one read transaction).
use crate::store::TargetState as State;

/// How this run touches the state database and the targets: chosen once, at the top.
struct Exec {
    /// The state database (None for a dry-run before any real run: nothing is known).
    state: Option<Writer>,
    /// Where calls are recorded: the state database, or nowhere for a dry-run.
    recorder: Arc<Recorder>,
    /// Whether plans are sent (a real run) or only shown (a dry-run).
    apply: bool,
    /// Held for the whole of a real run on SQLite.
    _lock: Option<StateLock>,
    /// A one-shot real run on PostgreSQL: the lease it took, released when it ends.
    lease: Option<Lease>,
}

impl Exec {
    /// A dry-run opens the state read-only (if it exists) and records nothing; a real run
    /// takes the lock (SQLite) or writes under a lease (PostgreSQL: the daemon's, or one
    /// this run takes), opens (and migrates) the state and begins a run in the history.
    /// The opening (the lock file, the database's open, migrations and their fsyncs, a
    /// busy wait of up to 10 s) runs on a blocking thread, never on a tokio worker.
    async fn open(cfg: &Config, opts: &SyncOptions) -> Result<Exec, SyncError> {
        let dry = opts.dry_run;
        let mut lease = None;
        let run_lease = match (&cfg.state, dry, &opts.lease) {
            (StateLocation::Postgres(_), false, Some(l)) => Some(l.clone()),
            (StateLocation::Postgres(pg), false, None) => {
                let l = Lease::acquire_once(pg.clone(), cfg.lease_config()).await?;
                let fence = l.fence();
                let guard = l.guard();
                lease = Some(l);
                match fence {
                    Some(fence) => Some(RunLease { fence, guard }),
                    None => {
                        if let Some(l) = lease.take() {
                            l.stop().await;
                        }
                        return Err(SyncError::Lease(LeaseError::Store(
                            StoreError::LeaseRanOut {
                                location: cfg.state.shown(),
                            },
                        )));
                    }
                }
            }
            _ => None,
        };
        let at = cfg.state.clone();
        let fence = run_lease.as_ref().map(|l| l.fence.clone());
        let opened = tokio::task::spawn_blocking(move || Exec::open_blocking(&at, dry, fence))
            .await
            .map_err(SyncError::Opener)
            .and_then(|r| r);
        match opened {
            Ok(mut exec) => {
                if let Some(l) = &run_lease {
                    exec.state = exec.state.take().map(|s| s.with_guard(l.guard.clone()));
                }
                exec.lease = lease;
                Ok(exec)
            }
            Err(e) => {
                if let Some(l) = lease {
                    l.stop().await;
                }
                Err(e)
            }
        }
    }

    fn open_blocking(
        at: &StateLocation,
        dry: bool,
        fence: Option<Fence>,
    ) -> Result<Exec, SyncError> {
        if dry {
            return Ok(Exec {
                state: Store::open_read_only_at(at)?.map(Writer::spawn),
                recorder: Arc::new(Recorder::dry()),
                apply: false,
                _lock: None,
                lease: None,
            });
        }
        let lock = match at {
            StateLocation::Sqlite(path) => Some(StateLock::acquire(path)?),
            StateLocation::Postgres(_) => None,
        };
        let state = Writer::spawn(Store::open_at(at, fence)?);
        Ok(Exec {
            state: Some(state),
            recorder: Arc::new(Recorder::dry()),
            apply: true,
            _lock: lock,
            lease: None,
        })
    }

    /// Ends the run's hold on the state: the writer finishes what is queued, closes the
    /// database and its thread ends; only then is the lock (or a one-shot run's lease)
    /// released (a second instance never opens a database the first one still writes).
    async fn close(self) -> Result<(), StoreError> {
        let Exec {
            state,
            _lock,
            lease,
            ..
        } = self;
        let closed = match state {
            Some(w) => w.close().await,
            None => Ok(()),
        };
        if let Some(l) = lease {
            l.stop().await;
        }
        drop(_lock);
        closed
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
        &self,
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
            Some(s) => s.snapshot(target.to_string()).await,
            None => Ok(State::default()),
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

/// One run, from the config and the command line's options. The state it opened is
/// closed before the lock is released, whatever the run's result.
pub async fn run(cfg: &Config, opts: &SyncOptions) -> Result<RunReport, SyncError> {
    let mut held = None;
    let result = run_holding(cfg, opts, &mut held).await;
    match held {
        Some(exec) => match (exec.close().await, result) {
            (Err(e), Ok(_)) => Err(e.into()),
            (Err(e), Err(first)) => {
                warn!(error = %e, "closing the state database failed too");
                Err(first)
            }
            (Ok(()), r) => r,
        },
        None => result,
    }
}

/// `run`, keeping the state it opens in `held` so that `run` closes it in every case.
async fn run_holding(
    cfg: &Config,
    opts: &SyncOptions,
    held: &mut Option<Exec>,
) -> Result<RunReport, SyncError> {
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
    // A live source read by the shortcut is not read again.
    let mut read_already = None;
    if unchanged::eligible(opts) {
        let exec = held.insert(Exec::open(cfg, opts).await?);
        if let Some(state) = &exec.state {
            match unchanged::unchanged_since(cfg, state).await? {
                unchanged::Unchanged::Since(base) => {
                    return exec.unchanged(cfg, opts, base, started).await;
                }
                unchanged::Unchanged::Changed(loaded) => read_already = loaded,
            }
        }
    }
    // The known state is read (on the store's thread) while the source is parsed, by a
    // run whose state is open already: every whole real run, and dry-runs (read-only).
    if held.is_none() && opts.dry_run {
        *held = Some(Exec::open(cfg, opts).await?);
    }
    let (desired, early_states) = match (held.as_ref(), read_already) {
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
    if held.is_none() {
        *held = Some(Exec::open(cfg, opts).await?);
    }
    let exec = held.as_mut().expect("opened above");
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

/// A config for the unit tests of a run: `dir/rostersync.toml` with one group (one member)
/// in `dir/groups.yaml`, a token file, `state` and these `[[target]]` lines (nobody
/// listens on port 9: every request is refused).
#[cfg(test)]
pub(crate) fn test_config(dir: &std::path::Path, state: &str, target: &str) -> Config {
    std::fs::write(dir.join("token"), "secret-token").unwrap();
    std::fs::write(
        dir.join("groups.yaml"),
        "groups:\n  - name: G\n    members: [a@example.com]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("rostersync.toml"),
        format!(
            "source = \"groups.yaml\"\nstate = \"{state}\"\n\n[[target]]\nname = \"t\"\n\
             token_file = \"token\"\n{target}"
        ),
    )
    .unwrap();
    Config::load(&dir.join("rostersync.toml")).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17 item 10: when a real run returns, its state database is closed (SQLite
    /// removed its write-ahead log on the last close) before the lock is free for the next.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_closes_the_database_before_it_releases_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = test_config(
            dir.path(),
            "state/state.db",
            "kind = \"scim\"\nflavor = \"maestroqa\"\nbase_url = \"http://127.0.0.1:9/scim\"\nmax_retries = 0\n",
        );
        let opts = SyncOptions {
            command: "sync".into(),
            ..Default::default()
        };
        for _ in 0..3 {
            let report = run(&cfg, &opts).await.expect("the run ends with a report");
            assert_eq!(
                report.exit_code(),
                ExitCode::Failed,
                "nobody listens on port 9"
            );
            assert!(
                !dir.path().join("state/state.db-wal").exists(),
                "the database is closed when the run returns"
            );
            let path = cfg.state.sqlite_path().expect("a SQLite state");
            drop(StateLock::acquire(path).expect("the lock is free"));
        }
    }

    /// Issue 17 item 8: opening the state (the lock, SQLite's open and migrations, a busy
    /// wait while another connection holds the database) never blocks the runtime: on a
    /// one-thread runtime a ticker keeps running while the open waits for the database.
    #[test]
    fn opening_the_state_never_blocks_the_runtime() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let cfg = test_config(
            dir.path(),
            "state.db",
            "kind = \"scim\"\nbase_url = \"http://127.0.0.1:9/scim\"\n",
        );
        let db = dir.path().join("state.db");
        // Another program holds the (not yet migrated) database exclusively for a while.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA journal_mode=DELETE; CREATE TABLE other (a); BEGIN EXCLUSIVE; INSERT INTO other VALUES (1);")
            .unwrap();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(400));
            conn.execute_batch("COMMIT").unwrap();
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ticks = Arc::new(AtomicUsize::new(0));
        let opened = rt.block_on(async {
            let t = ticks.clone();
            tokio::spawn(async move {
                for _ in 0..1000 {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    t.fetch_add(1, Ordering::Relaxed);
                }
            });
            let exec = Exec::open(&cfg, &SyncOptions::default()).await;
            (exec.is_ok(), ticks.load(Ordering::Relaxed))
        });
        holder.join().unwrap();
        assert!(opened.0, "the open succeeds once the other program lets go");
        assert!(
            opened.1 > 0,
            "the runtime kept running while the open waited ({} ticks)",
            opened.1
        );
    }
}
