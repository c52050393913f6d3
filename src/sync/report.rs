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

use crate::config::{Kind, TargetConfig};
use crate::plan::TargetPlan;
use crate::plan::resolve::Unresolved;
use crate::store::StoreError;
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
}

impl TargetReport {
    pub fn new(t: &TargetConfig) -> TargetReport {
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
            not_started: 0,
            scoped: false,
        }
    }

    /// The safety guard refused this target (and it was not overridden).
    pub fn refused(&self) -> bool {
        self.plan.as_ref().is_some_and(TargetPlan::refused)
    }

    /// This target's part of the exit policy.
    pub fn exit_code(&self) -> ExitCode {
        if self.stale {
            ExitCode::Usage
        } else if self.refused() {
            ExitCode::Guard
        } else if self.skipped.is_some() || !self.failed.is_empty() || self.not_started > 0 {
            ExitCode::Failed
        } else {
            ExitCode::Ok
        }
    }

    /// Did this target end where the source wants it (for health and freshness metrics)?
    /// A run scoped with `--only` never did: it left the rest for a whole run.
    pub fn converged(&self) -> bool {
        !self.scoped && self.exit_code() == ExitCode::Ok
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

/// The exit code of a run made of these targets: the strongest of theirs.
pub fn exit_policy(targets: &[TargetReport]) -> ExitCode {
    targets
        .iter()
        .map(TargetReport::exit_code)
        .fold(ExitCode::Ok, ExitCode::max)
}

impl RunReport {
    /// The run's exit code (see the module docs for the policy).
    pub fn exit_code(&self) -> ExitCode {
        exit_policy(&self.targets)
    }

    pub fn outcome(&self) -> &'static str {
        self.exit_code().outcome()
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
        let not_run = if self.scoped {
            format!("{not_run}, scoped with --only")
        } else {
            not_run
        };
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
mod tests {
    use super::*;
    use crate::plan::{Guard, TargetPlan};

    fn empty_plan() -> TargetPlan {
        TargetPlan {
            ops: Vec::new(),
            unchanged: 0,
            left_alone: Vec::new(),
            guard: None,
            skipped: Vec::new(),
        }
    }

    fn target(name: &str) -> TargetReport {
        TargetReport {
            name: name.into(),
            kind: Kind::Teams,
            skipped: None,
            plan: Some(empty_plan()),
            unresolved: Vec::new(),
            failed: Vec::new(),
            drift: 0,
            warnings: Vec::new(),
            known_digest: String::new(),
            stale: false,
            not_started: 0,
            scoped: false,
        }
    }

    fn ok() -> TargetReport {
        target("ok")
    }
    fn failed_op() -> TargetReport {
        let mut t = target("failed");
        t.failed.push(Failed {
            group: "g".into(),
            op: "update".into(),
            error: "HTTP 500".into(),
        });
        t
    }
    fn skipped() -> TargetReport {
        let mut t = target("skipped");
        t.plan = None;
        t.skipped = Some(NotRun::NoCredentials("token_env (X)".into()));
        t
    }
    fn guarded(overridden: bool) -> TargetReport {
        let mut t = target("guarded");
        t.plan = Some(TargetPlan {
            guard: Some(Guard {
                removals: 5,
                managed: 10,
                deletes: 0,
                max_removals: 1,
                max_removal_ratio: 0.25,
                overridden,
            }),
            ..empty_plan()
        });
        t
    }
    fn stale() -> TargetReport {
        let mut t = target("stale");
        t.stale = true;
        t
    }
    fn stopped() -> TargetReport {
        let mut t = target("stopped");
        t.not_started = 2;
        t
    }

    fn code(ts: Vec<TargetReport>) -> u8 {
        exit_policy(&ts).code()
    }

    #[test]
    fn every_case_of_the_exit_policy() {
        // (case, targets, exit code); the same table is in ARCHITECTURE.md.
        let cases: Vec<(&str, Vec<TargetReport>, u8)> = vec![
            ("no targets", vec![], 0),
            ("all ok", vec![ok(), ok()], 0),
            (
                "guard overridden by --allow-mass-removal",
                vec![guarded(true)],
                0,
            ),
            ("a failed operation", vec![ok(), failed_op()], 1),
            ("a target that could not run", vec![ok(), skipped()], 1),
            ("a target that could not run, alone", vec![skipped()], 1),
            ("operations not started (stop)", vec![stopped()], 1),
            ("guard", vec![guarded(false)], 3),
            (
                "guard beats a failed operation",
                vec![failed_op(), guarded(false)],
                3,
            ),
            (
                "guard beats a skipped target",
                vec![guarded(false), skipped()],
                3,
            ),
            ("stale plan", vec![stale()], 2),
            (
                "stale plan beats the guard",
                vec![guarded(false), stale()],
                2,
            ),
            (
                "stale plan beats a failure",
                vec![failed_op(), stale(), skipped()],
                2,
            ),
        ];
        for (case, ts, want) in cases {
            assert_eq!(code(ts), want, "{case}");
        }
    }

    #[test]
    fn a_dry_run_follows_the_same_policy() {
        // Dry-runs make the same TargetReports (no calls recorded, but skipped targets and
        // failed reads alike): the policy has no dry-run exception.
        for (t, want) in [
            (skipped(), 1),
            (failed_op(), 1),
            (guarded(false), 3),
            (ok(), 0),
        ] {
            let r = RunReport {
                run: None,
                dry_run: true,
                full: false,
                scoped: false,
                targets: vec![t],
                groups: 0,
                calls_ok: 0,
                calls_failed: 0,
                added: 0,
                removed: 0,
                duration: Duration::ZERO,
                source_digest: String::new(),
                exit_code: ExitCode::Ok,
                unchanged_since: None,
            };
            assert_eq!(r.exit_code().code(), want);
        }
    }

    #[test]
    fn outcomes_and_codes() {
        assert_eq!(ExitCode::Guard.outcome(), "refused");
        assert_eq!(ExitCode::Locked.code(), 4);
        assert_eq!(ExitCode::Ok.max(ExitCode::Failed), ExitCode::Failed);
        assert_eq!(ExitCode::Guard.max(ExitCode::Failed), ExitCode::Guard);
        assert!(!skipped().converged());
        assert!(ok().converged());
        let mut scoped = ok();
        scoped.scoped = true;
        assert_eq!(scoped.exit_code(), ExitCode::Ok);
        assert!(
            !scoped.converged(),
            "a run scoped with --only never converges"
        );
    }
}
