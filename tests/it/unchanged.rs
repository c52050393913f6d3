//! The no-op shortcut (SPEC 9): a run whose source bytes, config settings and known state
//! are those of the latest converged run stops before parsing, as `unchanged since run N`;
//! any change to any of the three inputs is planned, and so is every run after a failed
//! one, `--full`, `--plan` and a scoped run.

use std::sync::Arc;

use crate::fakes::maestro::FakeMaestro;
use crate::fakes::{Fake, Fault};
use crate::harness::*;

fn groups(extra: bool) -> Vec<G> {
    let mut m = vec![email(1), email(2)];
    if extra {
        m.push(email(3));
    }
    let m: Vec<&str> = m.iter().map(String::as_str).collect();
    vec![g("Tier 1", &m), g("Tier 2", &[&email(2), &email(4)])]
}

#[track_caller]
fn shortcut(r: &Run) -> bool {
    r.stdout.contains("unchanged since run")
}

/// Runs `sync` and says whether it took the shortcut, checking no request was sent if so.
#[track_caller]
fn sync_took_shortcut(env: &Env, args: &[&str], code: i32) -> bool {
    env.fake.clear_requests();
    let mut all = vec!["sync"];
    all.extend_from_slice(args);
    let r = env.run(&all).expect(code);
    let took = shortcut(&r);
    if took {
        assert!(env.fake.requests().is_empty(), "the shortcut sends nothing");
    }
    took
}

#[test]
fn any_changed_input_is_planned() {
    let maestro = FakeMaestro::start();
    let fake: Arc<dyn Fake> = maestro.clone();
    let mut env = Env::new(fake.clone());
    env.write_source(&groups(false));
    assert!(!sync_took_shortcut(&env, &[], 0), "first run");
    let r = env.sync().expect(0);
    assert!(r.stdout.contains("unchanged since run 1"), "{}", r.stdout);
    // A shortcut run is itself a base: still run 1's result.
    let r = env.sync().expect(0);
    assert!(r.stdout.contains("unchanged since run 1"), "{}", r.stdout);
    let h = env.run(&["history"]).expect(0);
    assert!(h.stdout.contains("unchanged since run 1"), "{}", h.stdout);

    // Each change of an input is planned (never the shortcut); the run after it is not.
    type Mutation<'a> = (&'a str, Box<dyn Fn(&mut Env) + 'a>);
    let mutations: Vec<Mutation<'_>> = vec![
        (
            "source: a comment (bytes only)",
            Box::new(|env: &mut Env| {
                let p = env.path("groups.yaml");
                let mut t = std::fs::read_to_string(&p).unwrap();
                t.push_str("# a comment\n");
                std::fs::write(p, t).unwrap();
            }),
        ),
        (
            "source: a member added",
            Box::new(|env: &mut Env| env.write_source(&groups(true))),
        ),
        (
            "config: a setting",
            Box::new(|env: &mut Env| env.set_target_extra("timeout = \"3s\"")),
        ),
        (
            "config: the safety section",
            Box::new(|env: &mut Env| env.set_extra("delete_groups = true")),
        ),
        (
            "known state: a group forgotten",
            Box::new(|env: &mut Env| {
                let mut s = rostersync::store::Store::open(&env.db_path()).unwrap();
                s.apply(
                    T,
                    &rostersync::store::Delta::Forget {
                        key: "Tier 2".into(),
                    },
                )
                .unwrap();
            }),
        ),
    ];
    for (what, mutate) in &mutations {
        mutate(&mut env);
        assert!(!sync_took_shortcut(&env, &[], 0), "{what}: planned");
        assert!(sync_took_shortcut(&env, &[], 0), "{what}: then unchanged");
    }

    // --full, --target and dry-runs never take it.
    assert!(!sync_took_shortcut(&env, &["--full"], 0), "--full");
    assert!(!sync_took_shortcut(&env, &["--target", T], 0), "scoped");
    assert!(!sync_took_shortcut(&env, &[], 0), "after a scoped run");
    assert!(!sync_took_shortcut(&env, &["--dry-run"], 0), "dry-run");
    assert!(sync_took_shortcut(&env, &[], 0));

    // A failed run is never a base: the next run plans again, even with nothing changed.
    env.write_source(&groups(false));
    fake.inject(fake.membership_write(), Fault::status(500), 100);
    assert!(!sync_took_shortcut(&env, &[], 1), "failed");
    assert!(
        fake.requests().iter().any(|r| r.status == 500),
        "the run failed on the injected 500"
    );
    maestro.clear_faults();
    assert!(!sync_took_shortcut(&env, &[], 0), "after a failed run");
    assert!(sync_took_shortcut(&env, &[], 0), "then unchanged");
}
