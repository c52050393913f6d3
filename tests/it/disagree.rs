//! Fakes that disagree with us (SPEC 6.3, "lenient is not credulous"): teams, Kazoo and
//! MaestroQA answer their reads in shapes our reading of the seeds did not foresee. Their
//! seeds document one shape for each answer (`{"data": [...]}`, `{"Resources": [...]}`),
//! so the same records under another key or one level deeper must fail too (unlike
//! DeepCall's undocumented answers, which are searched, see `assign_group.rs`); so must no
//! records at all, an HTML error page with status 200 and a truncated JSON body. A second
//! array beside the documented key is no ambiguity for these kinds: it must still work.
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

        if let Reshape::TwoArrays { .. } = shape {
            // The documented key is there and unambiguous: an extra array beside it is
            // ignored (lenient), so this one must work: Tier 1 adopted, Tier 2 created.
            reshape_reads(&*fake, &shape);
            let r = env.sync();
            assert_eq!(r.code, 0, "[{kind}] {what}\n{}", r.stderr);
            assert!(
                fake.requests().iter().any(|q| q.fault == Some("reshape")),
                "[{kind}] {what}: the listing carried the second array"
            );
            env.assert_converged(&groups);
            eprintln!("[disagree] {kind}: {what}: understood (documented key present), adopted");
            continue;
        }

        // Adoption: the listing is not understood: no create (not even of Tier 2, whose
        // name lookup is the same listing), no membership write.
        fake.clear_requests();
        reshape_reads(&*fake, &shape);
        let r = env.sync();
        assert_eq!(r.code, 1, "[{kind}] {what}: adoption\n{}", r.stderr);
        assert!(
            fake.requests().iter().any(|q| q.fault == Some("reshape")),
            "[{kind}] {what}: the listing was answered in the other shape"
        );
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

        // --full: reads not understood: nothing written, even to a drifted group (a group
        // whose read fails keeps its known state). MaestroQA reads one group as a bare
        // resource, which a renamed or doubled `Resources` does not touch: understood.
        let touches_reads = !(kind == "scim" && matches!(shape, Reshape::Rename { .. }));
        fake.set_members_by_hand("Tier 2", &[&email(1)]);
        fake.clear_requests();
        reshape_reads(&*fake, &shape);
        let r = env.run(&["sync", "--full"]);
        if touches_reads {
            assert_eq!(r.code, 1, "[{kind}] {what}: --full\n{}", r.stderr);
            assert_eq!(writes(&*fake), Vec::<String>::new(), "[{kind}] {what}");
        } else {
            assert_eq!(r.code, 0, "[{kind}] {what}: --full\n{}", r.stderr);
        }
        clear();

        // Owned mode: an agent added by hand is never removed on a misread (the removal
        // the source asks for may go out: it is computed from the known state, not from
        // the answer); once the answers are understood, --full repairs the drift and
        // keeps that agent.
        env.set_target_extra("max_retries = 1\nretry_base = \"10ms\"\nmembership = \"owned\"");
        fake.set_members_by_hand("Tier 1", &[&email(1), &email(2), &email(3), &email(30)]);
        fake.set_members_by_hand("Tier 2", &[&email(1)]);
        let owned = vec![g("Tier 1", &[&email(1), &email(2)]), groups[1].clone()];
        env.write_source(&owned);
        fake.clear_requests();
        reshape_reads(&*fake, &shape);
        let r = env.run(&["sync", "--full"]);
        if touches_reads {
            assert_eq!(r.code, 1, "[{kind}] {what}: owned --full\n{}", r.stderr);
        } else {
            assert_eq!(r.code, 0, "[{kind}] {what}: owned --full\n{}", r.stderr);
        }
        assert!(
            fake.requests().iter().any(|q| q.fault == Some("reshape")),
            "[{kind}] {what}: the reads were answered in the other shape"
        );
        assert!(
            fake.groups()["Tier 1"].contains(&email(30)),
            "[{kind}] {what}: the hand-added agent is still there"
        );
        // The kind's own create request (a SCIM create is `POST /Groups`, which a check on
        // "Groups?" could never see).
        let creates: Vec<String> = fake
            .requests()
            .iter()
            .filter(|q| crate::conformance::matches(q, &fake.create_request()))
            .map(|q| format!("{} {}", q.method, q.path))
            .collect();
        assert_eq!(creates, Vec::<String>::new(), "[{kind}] {what}: no create");
        clear();
        env.run(&["sync", "--full"]).expect(0);
        let got = fake.groups();
        let tier1 = &got["Tier 1"];
        assert!(
            tier1.contains(&email(30)) && tier1.contains(&email(1)) && tier1.contains(&email(2)),
            "[{kind}] {what}: owned mode keeps the hand-added agent: {tier1:?}"
        );
        // Tier 2: the agent put there by hand is kept too (owned mode), the missing one back.
        assert_eq!(
            got["Tier 2"],
            [email(1), email(3)].into_iter().collect(),
            "[{kind}] {what}"
        );
        let mut names = fake.all_group_names();
        names.sort();
        assert_eq!(names, ["Tier 1", "Tier 2"], "[{kind}] {what}: no duplicate");
        eprintln!(
            "[disagree] {kind}: {what}: adoption and --full exit 1 with nothing written \
             (--full understood: {}), owned mode kept the hand-added agent",
            !touches_reads
        );
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
