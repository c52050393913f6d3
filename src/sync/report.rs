//! What a run did, per target, and the one exit policy of a run.
//!
//! `RunReport::exit_code` is the only place that turns a run into an exit code; `app`
//! prints it, the daemon logs it, the history keeps it. The policy, strongest first:
//! a stale saved plan (2, nothing was sent), a safety guard refusal (3), anything that
//! did not happen as asked (1: a failed operation, a target that could not run, a lookup
//! that failed or could not be made, operations not started before a stop), else 0. A
//! dry-run follows the same policy: one that could not read what its plan needs is 1.

use std::time::Duration;

use serde::{Serialize, Serializer};

use super::SyncError;
use crate::config::{Kind, TargetConfig};
use crate::plan::TargetPlan;
use crate::plan::resolve::Unresolved;
use crate::store::{LockError, StoreError};
use crate::targets::{BuildError, OpError};

/// The process exit codes of every command (SPEC section 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitCode {
    /// Everything asked was done.
    Ok,
    /// The run finished, but something was not done (see `RunReport::exit_code`).
    Failed,
    /// Bad usage, config or source, or a stale saved plan: nothing was sent.
    Usage,
    /// A safety guard refused a target, whether or not other calls failed.
    Guard,
    /// Another instance holds the state lock.
    Locked,
}

impl ExitCode {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        match self {
            ExitCode::Ok => 0,
            ExitCode::Failed => 1,
            ExitCode::Usage => 2,
            ExitCode::Guard => 3,
            ExitCode::Locked => 4,
        }
    }

    /// The word the history and the metrics use for a run that ended with this code.
    pub fn outcome(self) -> &'static str {
        match self {
            ExitCode::Ok => "ok",
            ExitCode::Failed => "failed",
            ExitCode::Usage => "stale plan",
            ExitCode::Guard => "refused",
            ExitCode::Locked => "locked",
        }
    }

    /// Which of two codes a run reports: stale plan > guard > failure > ok.
    fn rank(self) -> u8 {
        match self {
            ExitCode::Ok => 0,
            ExitCode::Failed => 1,
            ExitCode::Guard => 2,
            ExitCode::Usage => 3,
            ExitCode::Locked => 4,
        }
    }

    /// The stronger of two codes.
    pub fn max(self, other: ExitCode) -> ExitCode {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

impl From<ExitCode> for u8 {
    fn from(c: ExitCode) -> u8 {
        c.code()
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> std::process::ExitCode {
        std::process::ExitCode::from(c.code())
    }
}

impl Serialize for ExitCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

/// Why a target could not run at all (it fails the run: exit 1, never 0).
#[derive(Debug, thiserror::Error)]
pub enum NotRun {
    /// Its HTTP client could not be made.
    #[error("its HTTP client could not be made: {0}")]
    Client(#[source] BuildError),
    /// Its known state could not be read from the state database.
    #[error("its known state could not be read: {0}")]
    State(#[source] StoreError),
    /// Reading groups back (`--full`, or unfinished writes) needs credentials that are not
    /// set (dry-runs only; real runs stop earlier).
    #[error("reading groups back (--full, or writes left unfinished) needs {0}")]
    NoCredentials(String),
    /// A member-id lookup's answer could not be cached in the state database.
    #[error("the resolution cache could not be written: {0}")]
    Cache(#[source] StoreError),
    /// The `--full` read-back could not be recorded.
    #[error("--full read-back stopped: {0}")]
    ReadBack(#[source] OpError),
}

/// An operation that failed.
#[derive(Clone, Debug, Serialize)]
pub struct Failed {
    pub group: String,
    pub op: String,
    pub error: String,
}

fn display<T: std::fmt::Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(&v.to_string()),
        None => s.serialize_none(),
    }
}

/// One target's part of a run.
#[derive(Debug, Serialize)]
pub struct TargetReport {
    pub name: String,
    pub kind: Kind,
    /// Why the target could not run at all.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "display")]
    pub skipped: Option<NotRun>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<TargetPlan>,
    pub unresolved: Vec<Unresolved>,
    pub failed: Vec<Failed>,
    /// Memberships that a `--full` read found different from the known state.
    pub drift: usize,
    /// Warnings for the operator (renames a kind cannot do, ...).
    pub warnings: Vec<String>,
    /// Digest of the known state the plan was made from (before any `--full` read); set
    /// for dry-runs and `--plan` runs only (saved plans compare it).
    pub known_digest: String,
    /// `--plan FILE`: the fresh plan differs from the saved one, so nothing was sent.
    pub stale: bool,
    /// Operations not started because the run was stopped (daemon `SIGTERM`).
    pub not_started: usize,
    /// The run was scoped with `--only`: it never counts as converged.
    pub scoped: bool,
    /// Removals of agents online now held back for a later run (`teams`,
    /// `defer_online_removals`): exit 0, but the target has not converged.
    pub deferred: usize,
}

impl TargetReport {
    pub fn new(t: &TargetConfig) -> TargetReport {
        TargetReport::named(&t.name, t.kind)
    }

    /// A report of a target that has not run yet.
    pub fn named(name: &str, kind: Kind) -> TargetReport {
        TargetReport {
            name: name.to_string(),
            kind,
            skipped: None,
            plan: None,
            unresolved: Vec::new(),
            failed: Vec::new(),
            drift: 0,
            warnings: Vec::new(),
            known_digest: String::new(),
            stale: false,
            not_started: 0,
            scoped: false,
            deferred: 0,
        }
    }

    /// The safety guard refused this target (and it was not overridden).
    pub fn refused(&self) -> bool {
        self.plan.as_ref().is_some_and(TargetPlan::refused)
    }

    /// Why this target did not do what was asked, for an operator who reads no logs (the
    /// daemon's `STATUS=` line and `/healthz`): the guard's refusal, why it could not run,
    /// or its first failed operation. None when nothing failed or was refused.
    pub fn problem(&self) -> Option<String> {
        if self.stale {
            return Some("the saved plan is stale; nothing was sent".into());
        }
        if let Some(g) = self.plan.as_ref().and_then(|p| p.guard.as_ref())
            && !g.overridden
        {
            return Some(format!("refused by the safety guard: {g}"));
        }
        if let Some(why) = &self.skipped {
            return Some(format!("could not run: {why}"));
        }
        if let Some(f) = self.failed.first() {
            let more = match self.failed.len() {
                1 => String::new(),
                n => format!(" (and {} more failed operations)", n - 1),
            };
            return Some(format!(
                "{} \"{}\" failed: {}{more}",
                f.op, f.group, f.error
            ));
        }
        if self.not_started > 0 {
            return Some(format!(
                "{} operations not started (the run was stopped)",
                self.not_started
            ));
        }
        None
    }

    /// Did this target end where the source wants it (for health and freshness metrics)?
    /// A run scoped with `--only` never did: it left the rest for a whole run; deferred
    /// removals leave it short of that too, although they exit 0.
    pub fn converged(&self) -> bool {
        !self.scoped && target_code(self) == ExitCode::Ok && self.deferred == 0
    }
}

/// The result of a run.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// The run's id in the history; None for dry-runs.
    pub run: Option<i64>,
    pub dry_run: bool,
    pub full: bool,
    /// The run was scoped with `--only` (never a converged run).
    pub scoped: bool,
    pub targets: Vec<TargetReport>,
    pub groups: usize,
    pub calls_ok: usize,
    pub calls_failed: usize,
    pub added: usize,
    pub removed: usize,
    #[serde(serialize_with = "as_secs")]
    pub duration: Duration,
    pub source_digest: String,
    /// The exit code, as `exit_code()` computes it (for JSON readers).
    pub exit_code: ExitCode,
    /// The run stopped at the no-op shortcut (SPEC 9): the converged run it repeats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unchanged_since: Option<i64>,
}

fn as_secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// How a run (a `sync`, or one run of the daemon) ended, as far as its exit code goes.
#[derive(Clone, Copy, Debug)]
pub enum Ending<'a> {
    /// The run went through its phases: each target's report, and whether `--save-plan`
    /// could not write the plan it was asked to save.
    Ran {
        targets: &'a [TargetReport],
        plan_not_saved: bool,
    },
    /// It stopped before anything was sent (source, config, saved plan, the lock, the
    /// state database).
    Stopped(&'a SyncError),
}

impl<'a> Ending<'a> {
    /// A run that went through, nothing else to say.
    pub fn ran(targets: &'a [TargetReport]) -> Ending<'a> {
        Ending::Ran {
            targets,
            plan_not_saved: false,
        }
    }
}

/// THE exit policy: every exit code of a run is decided here (ARCHITECTURE.md has the
/// same table, in the order the cases win). Strongest first:
/// 1. another instance holds the state lock: 4;
/// 2. config, source, secrets, unknown `--target`, an unreadable, empty or stale saved
///    plan: 2 (nothing was sent to any target);
/// 3. the safety guard refused a target (not overridden): 3, whatever else failed;
/// 4. anything not done as asked: 1 (a failed operation or lookup, a target that could not
///    run, operations not started before a stop, the state database failing, a plan that
///    could not be saved);
/// 5. else 0 (a guard overridden, removals of online agents deferred, included).
pub fn exit_policy(ending: Ending<'_>) -> ExitCode {
    match ending {
        Ending::Stopped(e) => match e {
            SyncError::Lock(LockError::Held { .. })
            | SyncError::Lease(crate::store::LeaseError::Held { .. }) => ExitCode::Locked,
            SyncError::Source(_)
            | SyncError::UnknownTarget { .. }
            | SyncError::MissingSecrets(_)
            | SyncError::SavedPlan(_) => ExitCode::Usage,
            SyncError::Lock(_)
            | SyncError::Lease(_)
            | SyncError::Store(_)
            | SyncError::Loader(_)
            | SyncError::Opener(_) => ExitCode::Failed,
        },
        Ending::Ran {
            targets,
            plan_not_saved,
        } => {
            let code = targets
                .iter()
                .map(target_code)
                .fold(ExitCode::Ok, ExitCode::max);
            if plan_not_saved {
                code.max(ExitCode::Failed)
            } else {
                code
            }
        }
    }
}

/// One target's part of `exit_policy` (also what `TargetReport::converged` reads).
fn target_code(t: &TargetReport) -> ExitCode {
    if t.stale {
        ExitCode::Usage
    } else if t.refused() {
        ExitCode::Guard
    } else if t.skipped.is_some() || !t.failed.is_empty() || t.not_started > 0 {
        ExitCode::Failed
    } else {
        ExitCode::Ok
    }
}

impl RunReport {
    /// The run's exit code (`exit_policy` of its targets).
    pub fn exit_code(&self) -> ExitCode {
        exit_policy(Ending::ran(&self.targets))
    }

    pub fn outcome(&self) -> &'static str {
        self.exit_code().outcome()
    }

    /// The first target that failed or was refused, and why (`TargetReport::problem`).
    pub fn problem(&self) -> Option<(String, String)> {
        self.targets
            .iter()
            .find_map(|t| t.problem().map(|p| (t.name.clone(), p)))
    }

    /// The one summary line of SPEC section 8.
    pub fn summary(&self) -> String {
        let secs = self.duration.as_secs_f64();
        let targets = self.targets.len();
        let not_run = self.targets.iter().filter(|t| t.skipped.is_some()).count();
        let not_run = if not_run > 0 {
            format!(", {not_run} could not run")
        } else {
            String::new()
        };
        if let Some(since) = self.unchanged_since {
            return format!(
                "run {} done in {secs:.1}s: unchanged since run {since} (source, config and known state as then), nothing to do",
                self.run.unwrap_or(0)
            );
        }
        let mut not_run = if self.scoped {
            format!("{not_run}, scoped with --only")
        } else {
            not_run
        };
        let deferred: usize = self.targets.iter().map(|t| t.deferred).sum();
        if deferred > 0 {
            not_run += &format!(", {deferred} removals deferred (online now)");
        }
        if self.dry_run {
            let (adds, rems): (usize, usize) = self
                .targets
                .iter()
                .filter_map(|t| t.plan.as_ref())
                .fold((0, 0), |(a, r), p| (a + p.additions(), r + p.removals()));
            return format!(
                "dry-run done in {secs:.1}s: {targets} targets{not_run}, {} groups, plan +{adds} -{rems} members, nothing sent",
                self.groups
            );
        }
        format!(
            "run {} done in {secs:.1}s: {targets} targets{not_run}, {} groups, {} calls ({} ok, {} failed), +{} -{} members",
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

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
