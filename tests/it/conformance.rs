//! The conformance suite: the same end-to-end scenarios for every target kind, each against
//! its fake (or real) server over HTTP on 127.0.0.1, through the real binary.
//!
//! `conformance!(name, constructor)` instantiates every scenario for one fake, with the
//! state in SQLite and (in `NAME::postgres`) in PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use crate::fakes::{Fake, Fault, Logged, Match};
use crate::harness::*;

/// Requests the fake answered with 2xx that match `m`.
pub fn count_ok(reqs: &[Logged], m: &Match) -> usize {
    reqs.iter()
        .filter(|r| matches(r, m) && (200..300).contains(&r.status))
        .count()
}

pub fn matches(r: &Logged, m: &Match) -> bool {
    (m.method == "*" || m.method.eq_ignore_ascii_case(&r.method))
        && r.path.contains(&m.path_contains)
        && m.body_contains.as_ref().is_none_or(|b| r.body.contains(b))
}

pub fn writes(fake: &dyn Fake, reqs: &[Logged]) -> usize {
    reqs.iter().filter(|r| fake.is_write(r)).count()
}

pub fn summary(reqs: &[Logged]) -> String {
    let mut by: std::collections::BTreeMap<String, usize> = Default::default();
    for r in reqs {
        let path: String = r.path.split('?').next().unwrap_or("").to_string();
        let shape: Vec<&str> = path
            .split('/')
            .map(|s| {
                // Ids (UUIDs, hex, numbers) carry digits; endpoint names do not.
                let digits = s.chars().any(|c| c.is_ascii_digit());
                if s.len() > 12 && digits || s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty()
                {
                    "{id}"
                } else {
                    s
                }
            })
            .collect();
        *by.entry(format!("{} {} -> {}", r.method, shape.join("/"), r.status))
            .or_default() += 1;
    }
    by.iter()
        .map(|(k, v)| format!("{v} x {k}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn e(i: usize) -> String {
    email(i)
}

/// The known state of target `t1` as `state --output json` prints it: group name ->
/// member emails (a member without an email by its id).
pub fn known(env: &Env) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let s = env.run(&["state", "--output", "json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&s.stdout).expect("state json");
    let mut out = std::collections::BTreeMap::new();
    for g in v[T]["groups"]
        .as_object()
        .into_iter()
        .flat_map(|o| o.values())
    {
        let members = g["members"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.iter())
            .map(|(id, k)| k["email"].as_str().unwrap_or(id).to_string())
            .collect();
        out.insert(g["name"].as_str().unwrap_or("").to_string(), members);
    }
    out
}

/// SCIM (issue 19): the known state never claims a member the target does not hold, and
/// (`exact`) holds every member the target has in each known group.
#[track_caller]
pub fn assert_known_is_held(env: &Env, fake: &dyn Fake, exact: bool) {
    if fake.kind() != "scim" {
        return;
    }
    let held = fake.groups();
    for (name, members) in known(env) {
        let there = held.get(&name).cloned().unwrap_or_default();
        let claimed: Vec<&String> = members.difference(&there).collect();
        assert!(
            claimed.is_empty(),
            "the known state claims members of {name:?} the target does not hold: {claimed:?}"
        );
        if exact {
            assert_eq!(
                members, there,
                "the known state of {name:?} is what the target holds"
            );
        }
    }
}

fn four_groups() -> Vec<G> {
    vec![
        g("Tier 1 Support", &[&e(1), &e(2), &e(3)]),
        g("Tier 2 Support", &[&e(3), &e(4)]),
        g("Billing Escalations", &[&e(5)]),
        g("Night Shift", &[&e(1), &e(6), &e(7)]),
    ]
}

/// Initial sync, then a no-op run (zero requests), then a churn of two groups (exactly two
/// membership writes).
pub fn initial_noop_churn(fake: Arc<dyn Fake>) {
    let env = Env::new(fake.clone());
    let mut groups = four_groups();
    env.write_source(&groups);

    let r = env.sync().expect(0);
    env.assert_converged(&groups);
    let reqs = fake.requests();
    assert_eq!(
        count_ok(&reqs, &fake.create_request()),
        4,
        "one create per group: {}",
        summary(&reqs)
    );
    eprintln!(
        "[{}] initial (4 groups, 9 memberships): {} requests, {} writes: {}",
        fake.kind(),
        reqs.len(),
        writes(&*fake, &reqs),
        summary(&reqs)
    );
    assert!(r.stderr.contains("done in"), "summary line: {}", r.stderr);
    assert_known_is_held(&env, &*fake, true);

    fake.clear_requests();
    let r = env.sync().expect(0);
    let reqs = fake.requests();
    assert!(
        reqs.is_empty(),
        "a no-op run sends nothing: {}",
        summary(&reqs)
    );
    // SPEC 9: nothing changed since a converged run: stopped before parsing.
    assert!(r.stdout.contains("unchanged since run 1"), "{}", r.stdout);
    eprintln!("[{}] no-op: {} requests", fake.kind(), reqs.len());

    // churn: one add and one removal in one group, one add in another
    groups[0] = g("Tier 1 Support", &[&e(1), &e(2), &e(8)]);
    groups[2] = g("Billing Escalations", &[&e(5), &e(9)]);
    env.write_source(&groups);
    fake.clear_requests();
    let dry = env.run(&["sync", "--dry-run"]).expect(0);
    assert!(
        dry.stdout.contains("+ agent008@example.com"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("- agent003@example.com"),
        "{}",
        dry.stdout
    );
    let reqs = fake.requests();
    assert_eq!(
        writes(&*fake, &reqs),
        0,
        "a dry-run writes nothing: {}",
        summary(&reqs)
    );
    fake.clear_requests();
    env.sync().expect(0);
    env.assert_converged(&groups);
    assert_known_is_held(&env, &*fake, true);
    let reqs = fake.requests();
    assert_eq!(
        count_ok(&reqs, &fake.membership_write()),
        2,
        "one membership write per changed group: {}",
        summary(&reqs)
    );
    assert_eq!(count_ok(&reqs, &fake.create_request()), 0);
    eprintln!(
        "[{}] churn (2 groups, +2 -1): {} requests, {} writes: {}",
        fake.kind(),
        reqs.len(),
        writes(&*fake, &reqs),
        summary(&reqs)
    );

    // history and state tell what happened
    let h = env.run(&["history", "--output", "json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&h.stdout).expect("history json");
    assert!(
        v["calls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["op"] == "create")
    );
    let s = env.run(&["state"]).expect(0);
    assert!(
        s.stdout.contains("Tier 1 Support") && s.stdout.contains("agent008@example.com"),
        "{}",
        s.stdout
    );
}

/// Drift behind rostersync's back is not seen by a normal run (no requests) and is
/// repaired by `--full`.
pub fn drift_repaired_by_full(fake: Arc<dyn Fake>) {
    let env = Env::new(fake.clone());
    let groups = four_groups();
    env.write_source(&groups);
    env.sync().expect(0);
    fake.add_user(&e(20));
    // e(1) is somebody rostersync knows from other groups; e(20) is a stranger
    fake.set_members_by_hand("Tier 2 Support", &[&e(4), &e(20), &e(1)]);
    fake.clear_requests();
    env.sync().expect(0);
    assert!(
        fake.requests().is_empty(),
        "a normal run trusts the known state"
    );
    let dry = env.run(&["sync", "--full", "--dry-run"]).expect(0);
    assert!(
        dry.stdout.contains("- agent001@example.com"),
        "a person rostersync knows is named, not shown as an id: {}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("+ agent003@example.com"),
        "{}",
        dry.stdout
    );
    assert!(
        writes(&*fake, &fake.requests()) == 0,
        "dry-run --full only reads"
    );
    fake.clear_requests();
    let r = env.run(&["sync", "--full"]).expect(0);
    env.assert_converged(&groups);
    assert_known_is_held(&env, &*fake, true);
    let reqs = fake.requests();
    assert_eq!(
        count_ok(&reqs, &fake.membership_write()),
        1,
        "{}",
        summary(&reqs)
    );
    assert!(r.stderr.contains("drift found"), "{}", r.stderr);
    eprintln!(
        "[{}] --full with one drifted group: {} requests: {}",
        fake.kind(),
        reqs.len(),
        summary(&reqs)
    );
    fake.clear_requests();
    env.sync().expect(0);
    assert!(fake.requests().is_empty(), "converged after --full");

    // a managed group deleted by hand is created again by --full
    fake.delete_group_by_hand("Night Shift");
    env.run(&["sync", "--full"]).expect(0);
    env.assert_converged(&groups);
}

/// A group of the same name that already exists is adopted, never duplicated.
pub fn adoption(fake: Arc<dyn Fake>) {
    let env = Env::new(fake.clone());
    let groups = four_groups();
    env.write_source(&groups);
    fake.add_user(&e(30));
    fake.create_group_by_hand("Tier 1 Support", &[&e(1), &e(30)]);
    fake.clear_requests();
    env.sync().expect(0);
    env.assert_converged(&groups);
    let reqs = fake.requests();
    assert_eq!(
        count_ok(&reqs, &fake.create_request()),
        3,
        "{}",
        summary(&reqs)
    );
    assert_known_is_held(&env, &*fake, true);
    let h = env.run(&["history", "--group", "Tier 1 Support"]).expect(0);
    assert!(h.stdout.contains("adopt"), "{}", h.stdout);
}

/// 429 with Retry-After, 500s, a dropped connection, a create whose answer is lost, and a
/// slow answer past the timeout: the run still converges, with no duplicate.
pub fn faults(fake: Arc<dyn Fake>) {
    let mut env = Env::new(fake.clone());
    env.set_target_extra("timeout = \"1s\"\nmax_retries = 4");
    let mut groups = four_groups();
    env.write_source(&groups);
    fake.inject(fake.create_request(), Fault::too_many(1), 1);
    fake.inject(fake.create_request(), Fault::status(500), 1);
    fake.inject(fake.create_request(), Fault::Drop, 1);
    fake.inject(fake.create_request(), Fault::DropAfter, 1);
    env.sync().expect(0);
    env.assert_converged(&groups);
    let reqs = fake.requests();
    assert!(reqs.iter().any(|r| r.status == 429), "the 429 was seen");
    assert!(reqs.iter().any(|r| r.status == 500), "the 500 was seen");
    for (fault, what) in [
        ("drop", "the dropped connection"),
        ("drop_after", "the lost answer"),
    ] {
        assert!(
            reqs.iter().any(|r| r.fault == Some(fault)),
            "{what} was injected: {}",
            summary(&reqs)
        );
    }
    eprintln!(
        "[{}] initial with 429+500+drop+lost answer: {}",
        fake.kind(),
        summary(&reqs)
    );

    groups[1] = g("Tier 2 Support", &[&e(3), &e(4), &e(10)]);
    env.write_source(&groups);
    fake.clear_requests();
    fake.inject(
        fake.membership_write(),
        Fault::Delay(Duration::from_millis(1500)),
        1,
    );
    fake.inject(fake.membership_write(), Fault::status(503), 1);
    env.sync().expect(0);
    env.assert_converged(&groups);
    let reqs = fake.requests();
    assert!(
        reqs.iter().any(|r| r.status == 503),
        "the 503 was injected: {}",
        summary(&reqs)
    );
    // The fake does not log a request whose client hung up before the delayed answer: the
    // history shows it instead, as the first of three attempts (timeout, 503, ok).
    let h = env.run(&["history", "--limit", "5"]).expect(0);
    assert!(
        h.stdout.contains("(3 attempts)"),
        "retries show in the history: {}",
        h.stdout
    );
}

/// A permanent refusal fails that group only: exit 1, the others converge, and the next
/// run (refusal gone) converges too.
pub fn one_failure_does_not_stop_the_others(fake: Arc<dyn Fake>) {
    let env = Env::new(fake.clone());
    let groups = four_groups();
    env.write_source(&groups);
    fake.inject(
        fake.create_request().body("Night Shift"),
        Fault::status(400),
        1,
    );
    let r = env.sync().expect(1);
    assert!(r.stdout.contains("Night Shift"), "{}", r.stdout);
    assert!(
        fake.requests()
            .iter()
            .any(|q| q.status == 400 && q.body.contains("Night Shift")),
        "the refusal was Night Shift's create: {}",
        summary(&fake.requests())
    );
    let got = fake.groups();
    for gr in &groups[..3] {
        assert!(
            got.contains_key(&gr.name),
            "{} converged despite the other's failure",
            gr.name
        );
    }
    env.sync().expect(0);
    env.assert_converged(&groups);
}

/// `kill -9` in the middle of a 40-group initial sync, then a second run: the target ends
/// equal to the source, and no group was created twice.
pub fn crash_mid_run(fake: Arc<dyn Fake>) {
    let env = Env::new(fake.clone());
    let groups: Vec<G> = (0..40)
        .map(|i| g(&format!("Group {i:02}"), &[&e(i), &e(i + 1)]))
        .collect();
    env.write_source(&groups);
    fake.inject(
        fake.create_request(),
        Fault::Delay(Duration::from_millis(120)),
        40,
    );
    let mut child = env.spawn(&["sync"]);
    let creates = || {
        count_ok(&fake.requests(), &fake.create_request())
            + fake
                .requests()
                .iter()
                .filter(|r| matches(r, &fake.create_request()) && r.status == 0)
                .count()
    };
    assert!(
        wait_until(Duration::from_secs(60), || creates() >= 8),
        "the run got going"
    );
    child.kill().expect("kill -9");
    let _ = child.wait();
    env.after_kill();
    let before = fake.all_group_names().len();
    assert!(before < 40, "killed mid-run ({before} groups made)");
    env.sync().expect(0);
    env.assert_converged(&groups);
    let h = env.run(&["history"]).expect(0);
    assert!(
        h.stdout.contains("unfinished"),
        "the killed run shows as unfinished: {}",
        h.stdout
    );
}

/// `kill -9` after the target applied a membership write but before rostersync recorded
/// it, then a source that no longer wants that member: the next run reads the group back
/// (the write's intent was left) and removes them; the run after that sends nothing.
pub fn crash_mid_membership_write(fake: Arc<dyn Fake>) {
    let env = Env::new(fake.clone());
    let before = vec![g("Tier 1", &[&e(1), &e(2)]), g("Tier 2", &[&e(3)])];
    env.write_source(&before);
    env.sync().expect(0);
    let added = vec![g("Tier 1", &[&e(1), &e(2), &e(4)]), g("Tier 2", &[&e(3)])];
    env.write_source(&added);
    // The fake applies the write, then holds the answer: the kill lands in between.
    fake.inject(
        fake.membership_write(),
        Fault::Delay(Duration::from_secs(20)),
        1,
    );
    // A rate-limited fake (teams: burst 4, 10/s) must have its bucket full again: started
    // at once, the held write did not apply (refused, the bucket being empty), the client
    // retried it after its 2 s timeout, the retry applied it, and the run had recorded it
    // before the kill.
    std::thread::sleep(Duration::from_millis(600));
    let mut child = env.spawn(&["sync"]);
    let applied = wait_until(Duration::from_secs(30), || {
        fake.groups()
            .get("Tier 1")
            .is_some_and(|m| m.contains(&e(4)))
    });
    child.kill().expect("kill -9");
    let _ = child.wait();
    env.after_kill();
    assert!(applied, "the target applied the write before the kill");
    let s = env.run(&["state"]).expect(0);
    assert!(s.stdout.contains("unfinished write"), "{}", s.stdout);
    assert_known_is_held(&env, &*fake, false);
    // The source no longer wants the member the killed run added.
    env.write_source(&before);
    fake.clear_requests();
    env.sync().expect(0);
    env.assert_converged(&before);
    fake.clear_requests();
    env.sync().expect(0);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 0, "no intent is left: {}", summary(&reqs));
    assert_known_is_held(&env, &*fake, true);
}

/// Every bad input: exit 2, nothing sent, a message naming the file.
pub fn bad_input(fake: Arc<dyn Fake>) {
    let env = Env::new(fake.clone());
    env.write_source(&four_groups());
    env.sync().expect(0);
    fake.clear_requests();
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        ("groups: []\n", "empty"),
        (
            "groups:\n  - name: A\n    members: [not-an-email]\n",
            "not-an-email",
        ),
        (
            "groups:\n  - name: A\n    members: [a@example.com]\n    colour: red\n",
            "colour",
        ),
        // a wrong type: a number where a list of emails belongs
        ("groups:\n  - name: A\n    members: 5\n", "members: 5"),
        (
            "groups:\n  - name: A\n    members: [a@example.com]\n    targets: [nowhere]\n",
            "nowhere",
        ),
        (
            "groups:\n  - name: A\n    members: [a@example.com]\n  - name: A\n    members: [b@example.com]\n",
            "group key \"A\" is defined twice",
        ),
        (
            "groups:\n  - name: A\n    members: a@example.com, [\n",
            "groups.yaml:3",
        ),
        (
            "people:\n  - email: a@example.com\n    ids: {t1: \"1\"}\n  - email: a@example.com\n    ids: {t1: \"2\"}\ngroups:\n  - name: A\n    members: [a@example.com]\n",
            "a@example.com",
        ),
    ];
    for (text, needle) in cases {
        env.write_raw_source("groups.yaml", text);
        let r = env.sync();
        assert_eq!(r.code, 2, "source {text:?}\n{}", r.stderr);
        assert!(
            r.stderr.contains("groups.yaml"),
            "names the file: {}",
            r.stderr
        );
        assert!(r.stderr.contains(needle), "names {needle:?}: {}", r.stderr);
        assert!(fake.requests().is_empty(), "nothing sent for {text:?}");
        let d = env.run(&["sync", "--dry-run"]);
        assert_eq!(d.code, 2);
        let c = env.run(&["check"]);
        assert_eq!(c.code, 2);
    }
    // a missing secret: exit 2 naming the key, nothing sent
    env.write_source(&four_groups());
    let mut cmd = env.command(&["sync"]);
    for (k, _) in fake.env() {
        cmd.env_remove(k);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("_env"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fake.requests().is_empty());
}

/// The mass-removal guard refuses the target (exit 3, no removal sent) until overridden.
pub fn safety_guard(fake: Arc<dyn Fake>) {
    let mut env = Env::new(fake.clone());
    env.set_extra("");
    let groups = four_groups();
    env.write_source(&groups);
    env.sync().expect(0);
    std::fs::write(
        env.config_path(),
        std::fs::read_to_string(env.config_path())
            .unwrap()
            .replace("max_removal_ratio = 1.0", "max_removal_ratio = 0.25"),
    )
    .unwrap();
    let shrunk = vec![
        g("Tier 1 Support", &[&e(1)]),
        g("Tier 2 Support", &[&e(3)]),
        groups[2].clone(),
        g("Night Shift", &[&e(1)]),
    ];
    env.write_source(&shrunk);
    fake.clear_requests();
    let r = env.sync().expect(3);
    assert!(r.stdout.contains("REFUSED"), "{}", r.stdout);
    assert!(
        r.stderr.contains("max_removal"),
        "shows the limits: {}",
        r.stderr
    );
    assert_eq!(
        writes(&*fake, &fake.requests()),
        0,
        "nothing sent to a refused target"
    );
    env.run(&["sync", "--allow-mass-removal"]).expect(0);
    env.assert_converged(&shrunk);
}

/// No secret value ever reaches stdout, stderr or the state database.
pub fn secrets_never_leak(fake: Arc<dyn Fake>) {
    let env = Env::new(fake.clone());
    env.write_source(&four_groups());
    assert!(!fake.secrets().is_empty(), "there are secrets to look for");
    fake.inject(fake.create_request(), Fault::status(500), 1);
    let mut outs = vec![
        env.run(&["-vv", "sync"]),
        env.run(&["--log-format", "json", "sync", "--full"]),
    ];
    assert!(
        fake.requests().iter().any(|r| r.status == 500),
        "the create's 500 was answered (its error went through the logs)"
    );
    outs.push(env.run(&["history", "--output", "json"]));
    outs.push(env.run(&["state", "--output", "json"]));
    outs.push(env.run(&["check"]));
    assert!(!env.db_bytes().is_empty());
    env.assert_no_secret(&outs.iter().collect::<Vec<_>>());
}

/// Issue 17 item 3: a lookup that fails before a create leaves no intent behind, so when
/// the group turns up later (made by somebody else, with people in it) it is adopted as
/// theirs: in `owned` mode the people who were there first are never removed, even when
/// the source later drops them.
pub fn a_failed_lookup_claims_no_stranger(fake: Arc<dyn Fake>) {
    let mut env = Env::new(fake.clone());
    env.set_target_extra("membership = \"owned\"\nmax_retries = 1\nretry_base = \"10ms\"");
    let kind = fake.kind();
    let both = vec![g("Tier 1", &[&e(1), &e(2)])];
    env.write_source(&both);
    // Every request fails: the adoption lookup too, so no create is sent.
    fake.inject(Match::new("*", ""), Fault::status(500), 1000);
    env.sync().expect(1);
    fake.clear_faults();
    assert!(
        fake.all_group_names().is_empty(),
        "[{kind}] nothing created while the lookup fails"
    );
    // Somebody creates the group by hand with agent 1 in it.
    fake.create_group_by_hand("Tier 1", &[&e(1)]);
    env.sync().expect(0);
    env.assert_converged(&both);
    // The source drops agent 1: rostersync never added them, so owned mode keeps them.
    env.write_source(&[g("Tier 1", &[&e(2)])]);
    env.sync().expect(0);
    assert!(
        fake.groups()["Tier 1"].contains(&e(1)),
        "[{kind}] a member found in an adopted group is not rostersync's to remove"
    );
}

#[macro_export]
macro_rules! conformance {
    ($name:ident, $ctor:expr) => {
        mod $name {
            use std::sync::Arc;

            use $crate::conformance as c;
            #[allow(unused_imports)]
            use $crate::fakes::*;

            fn fake() -> Arc<dyn Fake> {
                $ctor
            }
            #[test]
            fn initial_noop_churn() {
                c::initial_noop_churn(fake())
            }
            #[test]
            fn drift_repaired_by_full() {
                c::drift_repaired_by_full(fake())
            }
            #[test]
            fn adoption() {
                c::adoption(fake())
            }
            #[test]
            fn a_failed_lookup_claims_no_stranger() {
                c::a_failed_lookup_claims_no_stranger(fake())
            }
            #[test]
            fn faults() {
                c::faults(fake())
            }
            #[test]
            fn one_failure_does_not_stop_the_others() {
                c::one_failure_does_not_stop_the_others(fake())
            }
            #[test]
            fn crash_mid_run() {
                c::crash_mid_run(fake())
            }
            #[test]
            fn crash_mid_membership_write() {
                c::crash_mid_membership_write(fake())
            }
            #[test]
            fn bad_input() {
                c::bad_input(fake())
            }
            #[test]
            fn safety_guard() {
                c::safety_guard(fake())
            }
            #[test]
            fn secrets_never_leak() {
                c::secrets_never_leak(fake())
            }

            /// The same scenarios with the state in PostgreSQL (a fresh database each).
            mod postgres {
                use $crate::conformance as c;
                use $crate::harness::on_postgres;

                use super::fake;
                #[test]
                fn initial_noop_churn() {
                    on_postgres(|| c::initial_noop_churn(fake()))
                }
                #[test]
                fn drift_repaired_by_full() {
                    on_postgres(|| c::drift_repaired_by_full(fake()))
                }
                #[test]
                fn adoption() {
                    on_postgres(|| c::adoption(fake()))
                }
                #[test]
                fn a_failed_lookup_claims_no_stranger() {
                    on_postgres(|| c::a_failed_lookup_claims_no_stranger(fake()))
                }
                #[test]
                fn faults() {
                    on_postgres(|| c::faults(fake()))
                }
                #[test]
                fn one_failure_does_not_stop_the_others() {
                    on_postgres(|| c::one_failure_does_not_stop_the_others(fake()))
                }
                #[test]
                fn crash_mid_run() {
                    on_postgres(|| c::crash_mid_run(fake()))
                }
                #[test]
                fn crash_mid_membership_write() {
                    on_postgres(|| c::crash_mid_membership_write(fake()))
                }
                #[test]
                fn bad_input() {
                    on_postgres(|| c::bad_input(fake()))
                }
                #[test]
                fn safety_guard() {
                    on_postgres(|| c::safety_guard(fake()))
                }
                #[test]
                fn secrets_never_leak() {
                    on_postgres(|| c::secrets_never_leak(fake()))
                }
            }
        }
    };
}

/// The SCIM scenarios of issue 19 against scim2-server with one of the `Quirks` of other
/// SCIM servers switched on: each converges, with the known state equal to what the
/// server holds (checked inside the scenarios for every `scim` fake).
#[macro_export]
macro_rules! scim_quirks {
    ($name:ident, $quirks:expr) => {
        mod $name {
            use std::sync::Arc;

            use $crate::conformance as c;
            use $crate::fakes::scim2::{Quirks, Scim2Server};
            use $crate::fakes::*;

            fn fake() -> Arc<dyn Fake> {
                let q: Quirks = $quirks;
                Scim2Server::start_with(q)
            }
            #[test]
            fn initial_noop_churn() {
                c::initial_noop_churn(fake())
            }
            #[test]
            fn drift_repaired_by_full() {
                c::drift_repaired_by_full(fake())
            }
            #[test]
            fn adoption() {
                c::adoption(fake())
            }
            #[test]
            fn crash_mid_membership_write() {
                c::crash_mid_membership_write(fake())
            }
            #[test]
            fn keep_members() {
                $crate::scope::kept_when_it_leaves_the_source(fake())
            }
        }
    };
}

conformance!(maestroqa, maestro::FakeMaestro::start());
conformance!(rfc7644, scim2::Scim2Server::start());
scim_quirks!(
    rfc7644_ignores_posted_members,
    Quirks {
        ignores_posted_members: true,
        ..Default::default()
    }
);
scim_quirks!(
    rfc7644_filter_removal_501,
    Quirks {
        filter_removal_501: true,
        ..Default::default()
    }
);
scim_quirks!(
    rfc7644_no_members_in_answers,
    Quirks {
        no_members_in_answers: true,
        ..Default::default()
    }
);
scim_quirks!(
    rfc7644_patch_shows_group,
    Quirks {
        patch_shows_group: true,
        ..Default::default()
    }
);
scim_quirks!(
    rfc7644_error_bodies,
    Quirks {
        numeric_error_status: true,
        empty_401: true,
        ..Default::default()
    }
);
scim_quirks!(
    rfc7644_filter_pages,
    Quirks {
        filter_page: Some(1),
        ..Default::default()
    }
);
scim_quirks!(
    rfc7644_no_service_provider_config,
    Quirks {
        no_spc: true,
        ..Default::default()
    }
);
scim_quirks!(
    rfc7644_all_at_once,
    Quirks {
        ignores_posted_members: true,
        filter_removal_501: true,
        no_members_in_answers: true,
        numeric_error_status: true,
        empty_401: true,
        filter_page: Some(1),
        no_spc: true,
        ..Default::default()
    }
);
conformance!(kazoo, kazoo::FakeKazoo::start());
conformance!(
    kazoo_ids_in_source,
    kazoo::FakeKazoo::start_with_ids_in_source()
);
conformance!(assign_group, deepcall::FakeDeepCall::start());
conformance!(teams, teams::FakeTeams::start());
conformance!(
    teams_ids_in_source,
    teams::FakeTeams::start_with_ids_in_source()
);
