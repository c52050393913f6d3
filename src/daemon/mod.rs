//! The scheduler loop for systemd (SPEC section 7).
//!
//! One task owns the loop. It waits for the next trigger (start, cron, a settled change of
//! the source, `SIGHUP`) or the end of the run in progress, which runs on a task of its own
//! (its state writes go to the store's writer thread), so runs never overlap, a trigger
//! during a run queues at most one more, and a slow run or disk never stalls signals or the
//! watchdog. It ticks at least every `TICK`; the watchdog
//! task (`systemd::spawn_watchdog`) pings systemd only while it does, and `/healthz` reads the
//! same heartbeat. `/metrics` and `/healthz` are served by `crate::metrics` on tasks of their
//! own.
//!
//! Invariants: only `Daemon::start` calls `sync::run`. A source that does not load is never
//! run (a run reads it afresh and stops before sending anything). `SIGTERM` cancels
//! `SyncOptions::stop`, so no operation starts after it; calls in flight get `GRACE` to finish
//! and be recorded.

mod error;
mod schedule;
mod systemd;
mod watch;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::metrics::{HaRole, Health};
use crate::store::StateLocation;
use crate::store::lease::{Lease, Role};
use crate::sync::{ExitCode, RunReport, SyncError, SyncOptions};
pub use error::{DaemonError, Invalid};
use schedule::{Cron, FullEvery};
use watch::SourceWatcher;

/// How long the source must be quiet after a change before the run starts.
const SETTLE: Duration = Duration::from_secs(2);
/// How long `SIGTERM` waits for the calls in flight.
const GRACE: Duration = Duration::from_secs(30);
/// The loop ticks at least this often (the heartbeat of the watchdog and `/healthz`).
const TICK: Duration = Duration::from_secs(5);

/// Why a run starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    Start,
    Schedule,
    Watch,
    Reload,
    /// This node took the lease (SPEC 6.7).
    Takeover,
    /// The last run failed on the state database.
    Retry,
}

impl Why {
    fn as_str(self) -> &'static str {
        match self {
            Why::Start => "start",
            Why::Schedule => "schedule",
            Why::Watch => "source changed",
            Why::Reload => "reload",
            Why::Takeover => "took the lease",
            Why::Retry => "retry after a state database failure",
        }
    }
}

/// A request for a run.
#[derive(Clone, Copy, Debug)]
struct Trigger {
    /// For the log line that starts the run.
    why: Why,
    /// Read every managed group back first (`--full`).
    full: bool,
}

type RunFuture = Pin<Box<dyn Future<Output = Result<RunReport, SyncError>> + Send>>;

/// The run in progress.
struct Running {
    /// What started it, for the log when it ends.
    trigger: Trigger,
    /// `sync::run` on a task of its own.
    fut: RunFuture,
}

/// The signals the loop answers.
struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    fn register() -> Result<Signals, DaemonError> {
        let reg = |k: SignalKind, name: &'static str| {
            signal(k).map_err(|source| DaemonError::Signal {
                signal: name,
                source,
            })
        };
        Ok(Signals {
            hup: reg(SignalKind::hangup(), "SIGHUP")?,
            term: reg(SignalKind::terminate(), "SIGTERM")?,
            int: reg(SignalKind::interrupt(), "SIGINT")?,
        })
    }
}

/// The loop's state.
struct Daemon {
    /// The config file, read again on `SIGHUP`.
    path: PathBuf,
    /// The config in force; each run gets its own reference.
    cfg: Arc<Config>,
    /// `schedule.cron` of the config in force.
    cron: Cron,
    /// When the next scheduled run is due; None if the expression never matches again.
    next_cron: Option<DateTime<Local>>,
    /// Which scheduled runs are `--full`.
    full: FullEvery,
    /// The source watch, when `schedule.watch = true`.
    watcher: Option<SourceWatcher>,
    /// Kept so that the channel stays open while no watch runs.
    changes_tx: mpsc::UnboundedSender<()>,
    /// One message per relevant change of the source (from the watcher's thread).
    changes: mpsc::UnboundedReceiver<()>,
    /// When the source will have been quiet for `SETTLE` since its last change.
    settle_at: Option<Instant>,
    /// When to try again after a run the state database failed (it went away, failed
    /// over, or its connection was cut): the next tick, not the next cron time.
    retry_at: Option<Instant>,
    running: Option<Running>,
    /// At most one run waiting for the one in progress.
    queued: Option<Trigger>,
    /// Cancelled on `SIGTERM`/`SIGINT`: no run or operation starts after it.
    stop: CancellationToken,
    /// The heartbeat and per-target freshness, shared with `/healthz` and the watchdog.
    health: Arc<Health>,
    /// How often the loop ticks: `TICK`, or less than a quarter of the watchdog period.
    tick: Duration,
    /// A PostgreSQL state: this node's lease (it runs only while it leads).
    lease: Option<Lease>,
    /// The lease's role, as last seen by the loop.
    role: Option<tokio::sync::watch::Receiver<Role>>,
}

/// Runs until `SIGTERM` or `SIGINT`; returns the exit code (0 after a graceful stop).
/// Errors are startup failures (the source does not load, a secret is missing, the metrics
/// address is taken...): nothing has been sent then.
pub async fn run(cfg_path: PathBuf, cfg: Config) -> Result<ExitCode, DaemonError> {
    // Reading the source (files, a directory, a program) blocks: not on a runtime worker.
    let checked = cfg.clone();
    tokio::task::spawn_blocking(move || validate(&checked))
        .await
        .unwrap_or_else(|e| Err(Invalid::Stopped(e)))
        .map_err(DaemonError::Invalid)?;
    // Before READY=1: systemd's reload must never meet SIGHUP's default action (exit).
    let mut signals = Signals::register()?;
    let cron = Cron::parse(&cfg.schedule.cron).map_err(DaemonError::Cron)?;
    let names = target_names(&cfg);
    let health = Arc::new(Health::new(&names, cfg.metrics.max_age, TICK * 6));
    health.beat();
    let watchdog = systemd::spawn_watchdog(health.clone());
    let tick = watchdog
        .map(|w| (w / 4).clamp(Duration::from_millis(100), TICK))
        .unwrap_or(TICK);
    if let Some(addr) = cfg.metrics.listen {
        let handle = crate::metrics::install()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Listen {
                config: cfg.path.display().to_string(),
                addr,
                source,
            })?;
        info!(listen = %addr, "serving Prometheus metrics on http://{addr}/metrics and health on /healthz");
        tokio::spawn(crate::metrics::serve(listener, handle, health.clone()));
    }
    let (changes_tx, changes) = mpsc::unbounded_channel();
    let watcher = if cfg.schedule.watch {
        Some(watch::start(&cfg.source, changes_tx.clone())?)
    } else {
        None
    };
    let next_cron = cron.next_after(&Local::now());
    let lease = match &cfg.state {
        StateLocation::Postgres(pg) => Some(
            Lease::start(pg.clone(), cfg.lease_config())
                .await
                .map_err(DaemonError::State)?,
        ),
        StateLocation::Sqlite(_) => None,
    };
    let role = lease.as_ref().map(Lease::watch);
    let mut d = Daemon {
        path: cfg_path,
        full: FullEvery::new(cfg.schedule.full_every),
        cfg: Arc::new(cfg),
        cron,
        next_cron,
        watcher,
        changes_tx,
        changes,
        settle_at: None,
        retry_at: None,
        running: None,
        queued: None,
        stop: CancellationToken::new(),
        health,
        tick,
        lease,
        role,
    };
    info!(
        config = %d.path.display(),
        source = %d.cfg.source.display(),
        state = %d.cfg.state,
        targets = %names.join(","),
        cron = %d.cron.expr,
        full_every = d.full.every,
        watch = d.watcher.as_ref().map(|w| w.scope.describe()).unwrap_or_else(|| "off".into()),
        "daemon started; next scheduled run {}",
        d.next_text()
    );
    match &d.lease {
        None => {
            systemd::ready("first run starting");
            d.trigger(Trigger {
                why: Why::Start,
                full: false,
            });
        }
        // Runs start when the lease says this node leads (`on_role`).
        Some(l) => {
            let role = l.role();
            systemd::ready(&role.describe(l.node()));
            d.on_role(role);
        }
    }
    let code = d.main_loop(&mut signals).await;
    if let Some(l) = d.lease.take() {
        l.stop().await;
    }
    Ok(code)
}

/// What a reload (and the start) must check before anything runs: the source loads and
/// every target has its secrets.
fn validate(cfg: &Config) -> Result<(), Invalid> {
    cfg.load_source()?;
    match cfg.missing_secrets(&cfg.targets) {
        Some(e) => Err(Invalid::MissingSecrets(e)),
        None => Ok(()),
    }
}

fn target_names(cfg: &Config) -> Vec<String> {
    cfg.targets.iter().map(|t| t.name.clone()).collect()
}

/// Waits for the next change of the lease's role, or forever without a lease.
async fn role_changed(role: &mut Option<tokio::sync::watch::Receiver<Role>>) -> Role {
    match role {
        Some(r) => {
            if r.changed().await.is_err() {
                // The lease task ended (it only does when stopped): nothing more changes.
                std::future::pending::<()>().await;
            }
            r.borrow_and_update().clone()
        }
        None => std::future::pending().await,
    }
}

/// Waits for the run in progress, or forever when there is none.
async fn run_done(running: &mut Option<Running>) -> Result<RunReport, SyncError> {
    match running {
        Some(r) => (&mut r.fut).await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    async fn main_loop(&mut self, signals: &mut Signals) -> ExitCode {
        loop {
            let wake = self.next_wake();
            tokio::select! {
                result = run_done(&mut self.running) => {
                    let trigger = self.running.take().map(|r| r.trigger);
                    self.finished(trigger, result);
                    if let Some(next) = self.queued.take() {
                        self.start(next);
                    }
                }
                _ = tokio::time::sleep_until(wake) => self.on_tick(),
                role = role_changed(&mut self.role) => self.on_role(role),
                Some(()) = self.changes.recv() => self.on_change(),
                _ = signals.hup.recv() => self.reload().await,
                _ = signals.term.recv() => return self.shutdown("SIGTERM", signals).await,
                _ = signals.int.recv() => return self.shutdown("SIGINT", signals).await,
            }
        }
    }

    /// The earliest of: the next tick, the next cron time, the end of the settle delay.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + self.tick;
        if let Some(at) = self.next_cron {
            let wait = (at - Local::now()).to_std().unwrap_or(Duration::ZERO);
            // A millisecond late rather than early: the tick compares with the wall clock.
            wake = wake.min(now + wait + Duration::from_millis(1));
        }
        if let Some(s) = self.settle_at {
            wake = wake.min(s);
        }
        if let Some(r) = self.retry_at {
            wake = wake.min(r);
        }
        wake
    }

    fn on_tick(&mut self) {
        self.health.beat();
        let now = Local::now();
        if let Some(at) = self.next_cron.filter(|at| now >= *at) {
            self.next_cron = self.cron.next_after(&now);
            let full = self.full.next();
            debug!(due = %at.format("%F %T"), full, "scheduled run due");
            self.trigger(Trigger {
                why: Why::Schedule,
                full,
            });
        }
        if self.retry_at.is_some_and(|r| Instant::now() >= r) {
            self.retry_at = None;
            self.trigger(Trigger {
                why: Why::Retry,
                full: false,
            });
        }
        if self.settle_at.is_some_and(|s| Instant::now() >= s) {
            self.settle_at = None;
            self.trigger(Trigger {
                why: Why::Watch,
                full: false,
            });
        }
    }

    /// The lease's role changed: metrics, `/healthz`, `STATUS=`; a node that now leads
    /// (its takeover wait over) runs at once: the old leader may have stopped mid-run, and
    /// a run with nothing to do is a no-op.
    fn on_role(&mut self, role: Role) {
        let Some(lease) = &self.lease else { return };
        let node = lease.node().to_string();
        let (leader, holder, epoch) = match &role {
            Role::Leader { epoch, ready } => (*ready, Some(node.clone()), *epoch),
            Role::Standby { leader, epoch } => (false, leader.clone(), *epoch),
            Role::Unknown => (false, None, 0),
        };
        metrics::gauge!("rostersync_leader").set(if leader { 1.0 } else { 0.0 });
        metrics::gauge!("rostersync_lease_epoch").set(epoch as f64);
        self.health.set_role(HaRole {
            node: node.clone(),
            leader,
            holder,
            epoch,
        });
        let text = role.describe(&node);
        info!(node = %node, epoch, "{text}");
        if leader {
            systemd::status(&format!("{text}; run starting"));
            self.trigger(Trigger {
                why: Why::Takeover,
                full: false,
            });
        } else {
            systemd::status(&text);
        }
    }

    fn on_change(&mut self) {
        if self.settle_at.is_none() {
            info!(
                "the source changed; a run follows once it has been quiet for {}s",
                SETTLE.as_secs()
            );
        }
        self.settle_at = Some(Instant::now() + SETTLE);
    }

    /// Starts a run now, or queues it behind the one in progress (at most one waits).
    fn trigger(&mut self, t: Trigger) {
        if self.stop.is_cancelled() {
            return;
        }
        if self.running.is_none() {
            self.start(t);
            return;
        }
        match &mut self.queued {
            Some(q) => {
                q.full |= t.full;
                debug!(
                    trigger = t.why.as_str(),
                    "a run is already queued; this trigger joins it"
                );
            }
            None => {
                info!(
                    trigger = t.why.as_str(),
                    full = t.full,
                    "a run is in progress; one more run is queued after it"
                );
                self.queued = Some(t);
            }
        }
    }

    fn start(&mut self, t: Trigger) {
        if self.stop.is_cancelled() {
            return;
        }
        // Two nodes: only the leader runs; a standby's triggers are dropped (the leader
        // has its own schedule, and a takeover runs at once).
        let lease = match &self.lease {
            None => None,
            Some(l) => match l.fence() {
                Some(fence) => Some(crate::sync::RunLease {
                    fence,
                    guard: l.guard(),
                }),
                None => {
                    debug!(
                        trigger = t.why.as_str(),
                        "{}: the run is left to the leader",
                        l.role().describe(l.node())
                    );
                    return;
                }
            },
        };
        let opts = SyncOptions {
            full: t.full,
            command: "daemon".into(),
            stop: self.stop.clone(),
            lease,
            ..Default::default()
        };
        let cfg = self.cfg.clone();
        info!(
            trigger = t.why.as_str(),
            full = t.full,
            "starting a run ({}{})",
            t.why.as_str(),
            if t.full { ", full" } else { "" }
        );
        let task = tokio::spawn(async move { crate::sync::run(&cfg, &opts).await });
        let fut: RunFuture = Box::pin(async move {
            match task.await {
                Ok(r) => r,
                Err(e) => Err(SyncError::Loader(e)),
            }
        });
        self.running = Some(Running { trigger: t, fut });
    }

    /// Logs and reports a finished run; the daemon carries on whatever its outcome.
    fn finished(&mut self, trigger: Option<Trigger>, result: Result<RunReport, SyncError>) {
        let why = trigger.map(|t| t.why.as_str()).unwrap_or("?");
        match result {
            Ok(report) => {
                let now = std::time::Instant::now();
                if report.unchanged_since.is_some() {
                    // The shortcut: every configured target converged at the base run and
                    // nothing changed since, so each of them is as fresh as this run.
                    for t in &self.cfg.targets {
                        self.health.succeeded(&t.name, now);
                    }
                }
                for t in report.targets.iter().filter(|t| t.converged()) {
                    self.health.succeeded(&t.name, now);
                }
                let code = report.exit_code();
                let run = report.run.unwrap_or(0);
                match code {
                    ExitCode::Ok => {}
                    ExitCode::Guard => warn!(
                        run,
                        exit = code.code(),
                        "run {run}: the safety guard refused a target (see above); it stays refused at every run until the source is fixed or `rostersync sync --allow-mass-removal` is run by hand"
                    ),
                    _ => warn!(
                        run,
                        exit = code.code(),
                        "run {run}: some operations failed (see above); the next run retries them"
                    ),
                }
                let problems: Vec<(String, Option<String>)> = report
                    .targets
                    .iter()
                    .map(|t| (t.name.clone(), t.problem()))
                    .collect();
                self.health.ran(&problems);
                let problem = report
                    .problem()
                    .map(|(t, why)| format!("; target {t}: {}", short(&why, 160)))
                    .unwrap_or_default();
                systemd::status(&format!(
                    "{}{problem}; next scheduled run {}",
                    report.summary(),
                    self.next_text()
                ));
            }
            Err(e) => {
                metrics::counter!("rostersync_runs_total", "outcome" => "skipped").increment(1);
                if matches!(&e, SyncError::Store(s) if !s.is_fenced()) {
                    // The database may be back at once (a restart, a failover): the run
                    // is tried again at the next tick; the lease decides who runs it.
                    self.retry_at = Some(Instant::now() + self.tick);
                }
                let what = match &e {
                    SyncError::Source(_) => {
                        "the source has errors; nothing was sent and the known state is unchanged. The run is skipped until the source is fixed"
                    }
                    SyncError::Lock(_) => {
                        "another rostersync holds the state database; the run is skipped"
                    }
                    SyncError::UnknownTarget { .. }
                    | SyncError::MissingSecrets(_)
                    | SyncError::SavedPlan(_) => "the run is skipped; fix the config and reload",
                    SyncError::Store(e) if e.is_fenced() => {
                        "this node lost the lease; it sends nothing more and the new leader re-plans"
                    }
                    SyncError::Store(_) => "the state database failed; the run is skipped",
                    SyncError::Lease(_) => "this node does not lead; the run is skipped",
                    SyncError::Loader(_) | SyncError::Opener(_) => {
                        "the run stopped unexpectedly; the next run re-plans"
                    }
                };
                error!(trigger = why, error = %e, "{what}");
                let first = e.to_string().lines().next().unwrap_or_default().to_string();
                systemd::status(&format!(
                    "last run skipped: {first}; next scheduled run {}",
                    self.next_text()
                ));
            }
        }
    }

    /// `SIGHUP`: reads the config and the source again; puts them in force only if both are
    /// valid, then runs. A bad reload changes nothing. The reading (files, parsing a large
    /// source) runs on a blocking thread, not on the runtime's workers.
    async fn reload(&mut self) {
        systemd::reloading();
        info!(config = %self.path.display(), "SIGHUP: reloading the config and the source");
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            Config::load(&path)
                .map_err(Invalid::from)
                .and_then(|c| validate(&c).map(|()| c))
        })
        .await
        .unwrap_or_else(|e| Err(Invalid::Stopped(e)));
        match loaded {
            Err(e) => {
                error!(error = %e, "reload failed; the previous config and source stay in force");
                let first = e.to_string().lines().next().unwrap_or_default().to_string();
                systemd::ready(&format!("reload failed, previous config in force: {first}"));
            }
            Ok(new) => {
                for w in &new.warnings {
                    warn!("{w}");
                }
                self.apply(new);
                let watch = self
                    .watcher
                    .as_ref()
                    .map(|w| w.scope.describe())
                    .unwrap_or_else(|| "off".into());
                info!(cron = %self.cron.expr, watch, "reloaded; next scheduled run {}", self.next_text());
                // A standby runs nothing: its status stays its role (SPEC 6.7).
                match self.lease.as_ref().filter(|l| l.fence().is_none()) {
                    Some(l) => systemd::ready(&l.role().describe(l.node())),
                    None => systemd::ready("reloaded; run starting"),
                }
                self.trigger(Trigger {
                    why: Why::Reload,
                    full: false,
                });
            }
        }
    }

    /// Puts a validated config in force for the next runs.
    fn apply(&mut self, mut new: Config) {
        let old = self.cfg.clone();
        // The state and the lease are the daemon's for its lifetime: a run under one lease
        // must never write another state.
        if new.state.shown() != old.state.shown()
            || new.ha.node != old.ha.node
            || new.ha.lease != old.ha.lease
        {
            warn!(
                "state or [ha] changed: they take effect when the daemon restarts; the running daemon keeps {}",
                old.state
            );
            new.state = old.state.clone();
            new.ha = old.ha.clone();
            new.set_user_agents();
        }
        if new.schedule.cron != self.cron.expr {
            match Cron::parse(&new.schedule.cron) {
                Ok(c) => {
                    self.cron = c;
                    self.next_cron = self.cron.next_after(&Local::now());
                }
                Err(e) => warn!(error = %e, "schedule.cron not changed"),
            }
        }
        self.full.every = new.schedule.full_every;
        if new.source != old.source || new.schedule.watch != self.watcher.is_some() {
            self.watcher = None;
            self.settle_at = None;
            if new.schedule.watch {
                match watch::start(&new.source, self.changes_tx.clone()) {
                    Ok(w) => self.watcher = Some(w),
                    Err(e) => {
                        warn!(error = %e, "the source is not watched; runs follow the cron schedule only")
                    }
                }
            }
        }
        if new.metrics.listen != old.metrics.listen {
            warn!("metrics.listen changed: the new address takes effect when the daemon restarts");
        }
        if new.log.level != old.log.level || new.log.format != old.log.format {
            warn!("[log] changed: it takes effect when the daemon restarts");
        }
        self.health
            .configure(&target_names(&new), new.metrics.max_age);
        self.cfg = Arc::new(new);
    }

    /// Stops scheduling, lets the run in progress finish its calls in flight (at most
    /// `GRACE`), and returns the exit code.
    async fn shutdown(&mut self, sig: &str, signals: &mut Signals) -> ExitCode {
        self.stop.cancel();
        self.queued = None;
        self.settle_at = None;
        self.watcher = None;
        let Some(mut r) = self.running.take() else {
            systemd::stopping("stopping");
            info!("{sig}: stopped (no run in progress)");
            return ExitCode::Ok;
        };
        systemd::stopping("stopping: waiting for the calls in flight");
        info!(
            "{sig}: stopping; no new operation starts, the calls in flight get up to {}s to finish",
            GRACE.as_secs()
        );
        let deadline = Instant::now() + GRACE;
        loop {
            tokio::select! {
                result = &mut r.fut => {
                    self.finished(Some(r.trigger), result);
                    break;
                }
                _ = tokio::time::sleep_until(deadline.min(Instant::now() + self.tick)) => {
                    self.health.beat();
                    if Instant::now() >= deadline {
                        warn!("calls still in flight after {}s are abandoned; the next run looks them up and re-plans", GRACE.as_secs());
                        break;
                    }
                }
                _ = signals.term.recv() => {
                    warn!("second SIGTERM: not waiting for the calls in flight; the next run re-plans them");
                    break;
                }
                _ = signals.int.recv() => {
                    warn!("second SIGINT: not waiting for the calls in flight; the next run re-plans them");
                    break;
                }
            }
        }
        info!("stopped");
        ExitCode::Ok
    }

    fn next_text(&self) -> String {
        match self.next_cron {
            Some(t) => t.format("%F %T %Z").to_string(),
            None => format!(
                "never (schedule.cron = \"{}\" matches no future time)",
                self.cron.expr
            ),
        }
    }
}

/// At most `max` characters of `s` (one line), for the `STATUS=` line.
fn short(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() <= max {
        line.to_string()
    } else {
        format!("{}...", line.chars().take(max).collect::<String>())
    }
}
