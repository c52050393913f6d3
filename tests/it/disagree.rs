//! Fakes that disagree with us (SPEC 6.3, "lenient is not credulous"): teams, Kazoo and
//! MaestroQA answer their reads in shapes our reading of the seeds did not foresee. Their
//! seeds document one shape for each answer (`{"data": [...]}`, `{"Resources": [...]}`),
//! so the same records under another key or one level deeper must fail too (unlike
//! DeepCall's undocumented answers, which are searched, see `assign_group.rs`); so must no
//! records at all, two candidate arrays, an HTML error page with status 200 and a
//! truncated JSON body.
//!
//! Under each shape: adoption, `--full` and owned mode fail the group (exit 1) and send
//! no create, no membership write, and leave no duplicate name; once the answers are
//! understood again, the run converges (the hand-made group adopted, the hand-added agent
//! of owned mode kept).

use std::sync::Arc;

use crate::fakes::{Fake, Fault, Match, Reshape, kazoo, maestro, teams};
use crate::harness::*;

/// The shapes, for an answer whose records are under `key`.
fn shapes(key: &'static str) -> Vec<(&'static str, Reshape)> {
    vec![
        (
            "records under another key",
            Reshape::Rename {
                from: key,
                to: "items",
            },
        ),
        ("records one level deeper", Reshape::Nest("result")),
        ("no records at all", Reshape::NoRecords),
        (
            "two candidate arrays",
            Reshape::TwoArrays { key, key2: "items" },
        ),
        ("an HTML page with status 200", Reshape::Html),
        ("a truncated JSON body", Reshape::Truncated),
    ]
}

fn writes(fake: &dyn Fake) -> Vec<String> {
    fake.requests()
        .iter()
        .filter(|r| fake.is_write(r))
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}

/// Every GET answered in `shape` (listings, reads, lookups).
fn reshape_reads(fake: &dyn Fake, shape: &Reshape) {
    fake.inject(Match::new("GET", ""), Fault::Reshape(shape.clone()), 10_000);
}

/// One kind under every shape. `clear` drops the armed faults of this fake.
fn disagree(start: impl Fn() -> (Arc<dyn Fake>, Box<dyn Fn()>), key: &'static str) {
    for (what, shape) in shapes(key) {
        let (fake, clear) = start();
        let kind = fake.kind();
        let mut env = Env::new(fake.clone());
        env.set_target_extra("max_retries = 1\nretry_base = \"10ms\"");
        let groups = vec![
            g("Tier 1", &[&email(1), &email(2), &email(3)]),
            g("Tier 2", &[&email(3)]),
        ];
        env.write_source(&groups);
        fake.add_user(&email(30));
        fake.create_group_by_hand("Tier 1", &[&email(1), &email(30)]);

        // Adoption: the listing is not understood: no create (not even of Tier 2, whose
        // name lookup is the same listing), no membership write.
        fake.clear_requests();
        reshape_reads(&*fake, &shape);
        let r = env.sync();
        assert_eq!(r.code, 1, "[{kind}] {what}: adoption\n{}", r.stderr);
        assert!(
            r.stderr.contains("not understood"),
            "[{kind}] {what}: the log says why\n{}",
            r.stderr
        );
        assert_eq!(writes(&*fake), Vec::<String>::new(), "[{kind}] {what}");
        assert_eq!(fake.all_group_names(), ["Tier 1"], "[{kind}] {what}");
        clear();
        env.sync().expect(0);
        env.assert_converged(&groups);

        // --full: reads not understood: nothing written, even to a drifted group.
        fake.set_members_by_hand("Tier 2", &[&email(1)]);
        fake.clear_requests();
        reshape_reads(&*fake, &shape);
        let r = env.run(&["sync", "--full"]);
        assert_eq!(r.code, 1, "[{kind}] {what}: --full\n{}", r.stderr);
        assert_eq!(writes(&*fake), Vec::<String>::new(), "[{kind}] {what}");
        clear();

        // Owned mode: an agent added by hand is never removed on a misread; once the
        // answers are understood, --full repairs the drift and keeps that agent.
        env.set_target_extra("max_retries = 1\nretry_base = \"10ms\"\nmembership = \"owned\"");
        fake.set_members_by_hand("Tier 1", &[&email(1), &email(2), &email(3), &email(30)]);
        let owned = vec![g("Tier 1", &[&email(1), &email(2)]), groups[1].clone()];
        env.write_source(&owned);
        fake.clear_requests();
        reshape_reads(&*fake, &shape);
        let r = env.run(&["sync", "--full"]);
        assert_eq!(r.code, 1, "[{kind}] {what}: owned --full\n{}", r.stderr);
        assert_eq!(writes(&*fake), Vec::<String>::new(), "[{kind}] {what}");
        clear();
        env.run(&["sync", "--full"]).expect(0);
        let got = fake.groups();
        let tier1 = &got["Tier 1"];
        assert!(
            tier1.contains(&email(30)) && tier1.contains(&email(1)) && tier1.contains(&email(2)),
            "[{kind}] {what}: owned mode keeps the hand-added agent: {tier1:?}"
        );
        assert_eq!(
            got["Tier 2"],
            [email(3)].into_iter().collect(),
            "[{kind}] {what}"
        );
        let mut names = fake.all_group_names();
        names.sort();
        assert_eq!(names, ["Tier 1", "Tier 2"], "[{kind}] {what}: no duplicate");
        eprintln!("[disagree] {kind}: {what}: adoption, --full, owned: exit 1, nothing written");
    }
}

#[test]
fn teams_answers_in_other_shapes_write_nothing() {
    disagree(
        || {
            let f = teams::FakeTeams::start_with_ids_in_source();
            f.set_rate_limit(None);
            let c = f.clone();
            (f, Box::new(move || c.clear_faults()))
        },
        "data",
    );
}

#[test]
fn kazoo_answers_in_other_shapes_write_nothing() {
    disagree(
        || {
            let f = kazoo::FakeKazoo::start();
            let c = f.clone();
            (f, Box::new(move || c.clear_faults()))
        },
        "data",
    );
}

#[test]
fn maestroqa_answers_in_other_shapes_write_nothing() {
    disagree(
        || {
            let f = maestro::FakeMaestro::start();
            let c = f.clone();
            (f, Box::new(move || c.clear_faults()))
        },
        "Resources",
    );
}
