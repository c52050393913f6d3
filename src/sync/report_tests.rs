//! Unit tests of the exit policy: every case, in a dry-run too.

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
        plan: Some(empty_plan()),
        ..TargetReport::named(name, Kind::Teams)
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
    exit_policy(Ending::ran(&ts)).code()
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
    // A plan that could not be saved: at least 1, and the stronger codes still win.
    for (ts, want) in [
        (vec![ok()], 1),
        (vec![guarded(false)], 3),
        (vec![stale()], 2),
    ] {
        let e = Ending::Ran {
            targets: &ts,
            plan_not_saved: true,
        };
        assert_eq!(exit_policy(e).code(), want);
    }
    // Runs that stopped before anything was sent.
    let stopped: Vec<(SyncError, u8)> = vec![
        (SyncError::MissingSecrets("X_TOKEN".into()), 2),
        (
            SyncError::SavedPlan(crate::sync::SavedPlanError::SourceChanged),
            2,
        ),
        (
            SyncError::Lock(crate::store::LockError::Held {
                path: "db".into(),
                pid: "7".into(),
            }),
            4,
        ),
        (
            SyncError::Store(crate::store::StoreError::Closed { path: "db".into() }),
            1,
        ),
    ];
    for (e, want) in stopped {
        assert_eq!(exit_policy(Ending::Stopped(&e)).code(), want, "{e}");
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
    assert!(
        !scoped.converged(),
        "a run scoped with --only never converges"
    );
    assert_eq!(exit_policy(Ending::ran(&[scoped])), ExitCode::Ok);
    assert_eq!(ok().problem(), None);
    assert!(
        guarded(false)
            .problem()
            .unwrap()
            .starts_with("refused by the safety guard: would remove 5")
    );
    assert_eq!(guarded(true).problem(), None);
    assert_eq!(
        failed_op().problem().unwrap(),
        "update \"g\" failed: HTTP 500"
    );
    assert!(
        skipped()
            .problem()
            .unwrap()
            .starts_with("could not run: reading groups back")
    );
    let mut deferred = ok();
    deferred.deferred = 2;
    assert_eq!(
        exit_policy(Ending::ran(&[deferred])).code(),
        0,
        "deferred removals exit 0"
    );
    let mut deferred = ok();
    deferred.deferred = 2;
    assert!(!deferred.converged(), "but the target has not converged");
}
