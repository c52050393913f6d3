//! SCIM-specific behaviour beyond the conformance suite: paging, batches, owners, modes,
//! a group deleted behind rostersync's back.

use crate::conformance::{count_ok, matches};
use crate::fakes::maestro::FakeMaestro;
use crate::fakes::scim2::Scim2Server;
use crate::fakes::{Fake, Match};
use crate::harness::*;

#[test]
fn maestroqa_lists_groups_once_per_run_and_adopts_from_any_page() {
    let fake = FakeMaestro::start();
    let env = Env::new(fake.clone());
    for i in 0..230 {
        fake.create_group_by_hand(&format!("Other {i:03}"), &[]);
    }
    fake.add_user(&email(1));
    fake.create_group_by_hand("Late Shift", &[&email(1)]);
    let groups: Vec<G> = (0..5)
        .map(|i| g(&format!("New {i}"), &[&email(i + 1)]))
        .chain([g("Late Shift", &[&email(1), &email(2)])])
        .collect();
    env.write_source(&groups);
    env.sync().expect(0);
    let reqs = fake.requests();
    let lists = reqs
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/Groups?"))
        .count();
    assert_eq!(
        lists, 3,
        "one listing of 231 groups in pages of 100, shared by 6 lookups"
    );
    assert_eq!(
        count_ok(&reqs, &fake.create_request()),
        5,
        "Late Shift was adopted from page 3"
    );
    assert_eq!(
        fake.groups()["Late Shift"],
        [email(1), email(2)].into_iter().collect()
    );
    assert_eq!(fake.count_named("Late Shift"), 1);
}

#[test]
fn long_member_lists_are_split_at_batch_size() {
    let fake = Scim2Server::start();
    let mut env = Env::new(fake.clone());
    env.set_target_extra("batch_size = 2");
    env.write_source(&[g("Big", &[&email(1)])]);
    env.sync().expect(0);
    let all: Vec<String> = (2..=6).map(email).collect();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    env.write_source(&[g("Big", &refs)]);
    fake.clear_requests();
    env.sync().expect(0);
    let patches = fake
        .requests()
        .iter()
        .filter(|r| matches(r, &Match::new("PATCH", "/Groups/")))
        .count();
    assert_eq!(
        patches, 3,
        "5 additions and 1 removal in batches of 2 -> 3 PATCH calls"
    );
    env.assert_converged(&[g("Big", &refs)]);
}

#[test]
fn maestroqa_owners_are_sent_and_kept_in_step() {
    let fake = FakeMaestro::start();
    let env = Env::new(fake.clone());
    fake.add_user(&email(1));
    fake.add_user(&email(9));
    let lead = fake.user_id(&email(9));
    let src = |owner_id: &str, owners: &str| {
        format!(
            "people:\n  - email: {}\n    ids: {{ t1: \"{owner_id}\" }}\ngroups:\n  - name: Team\n    members: [{}]\n    owners: [{owners}]\n",
            email(9),
            email(1)
        )
    };
    env.write_raw_source("groups.yaml", &src(&lead, &email(9)));
    env.sync().expect(0);
    assert_eq!(fake.raw_owners("Team").unwrap(), vec![lead.clone()]);
    env.write_raw_source("groups.yaml", &src(&lead, ""));
    fake.clear_requests();
    env.sync().expect(0);
    assert!(
        fake.raw_owners("Team").unwrap().is_empty(),
        "owner removed with one PATCH"
    );
    let reqs = fake.requests();
    assert_eq!(
        (reqs.len(), count_ok(&reqs, &fake.membership_write())),
        (1, 1),
        "one PATCH: {reqs:?}"
    );
}

#[test]
fn owned_mode_keeps_people_who_were_there_before_adoption() {
    let fake = Scim2Server::start();
    let mut env = Env::new(fake.clone());
    env.set_target_extra("membership = \"owned\"");
    fake.add_user(&email(7));
    fake.create_group_by_hand("Team", &[&email(7)]);
    env.write_source(&[g("Team", &[&email(1), &email(2)])]);
    env.sync().expect(0);
    env.write_source(&[g("Team", &[&email(1)])]);
    env.sync().expect(0);
    let want = [email(1), email(7)].into_iter().collect();
    assert_eq!(
        fake.groups()["Team"],
        want,
        "email 7 was not added by rostersync: kept"
    );

    // add_only never removes anybody
    env.set_target_extra("membership = \"add_only\"");
    env.write_source(&[g("Team", &[&email(3)])]);
    env.sync().expect(0);
    let want = [email(1), email(3), email(7)].into_iter().collect();
    assert_eq!(fake.groups()["Team"], want);
}

#[test]
fn a_group_deleted_behind_our_back_is_created_again_in_the_same_run() {
    let fake = Scim2Server::start();
    let env = Env::new(fake.clone());
    env.write_source(&[g("Team", &[&email(1)])]);
    env.sync().expect(0);
    fake.delete_group_by_hand("Team");
    env.write_source(&[g("Team", &[&email(1), &email(2)])]);
    env.sync().expect(0);
    env.assert_converged(&[g("Team", &[&email(1), &email(2)])]);
}

#[test]
fn groups_left_out_of_the_source_are_deleted_only_when_allowed() {
    let fake = Scim2Server::start();
    let mut env = Env::new(fake.clone());
    env.write_source(&[g("A", &[&email(1)]), g("B", &[&email(2)])]);
    env.sync().expect(0);
    env.write_source(&[g("A", &[&email(1)])]);
    let r = env.sync().expect(0);
    assert!(r.stdout.contains("left alone"), "{}", r.stdout);
    assert!(fake.groups().contains_key("B"));
    env.set_extra("delete_groups = true");
    let r = env.sync().expect(0);
    assert!(r.stdout.contains("- delete \"B\""), "{}", r.stdout);
    env.assert_converged(&[g("A", &[&email(1)])]);
}

#[test]
fn a_new_name_under_the_same_key_renames_the_remote_group() {
    let fake = Scim2Server::start();
    let env = Env::new(fake.clone());
    let keyed = |name: &str, members: &[&str]| G {
        key: Some("tier1".into()),
        ..g(name, members)
    };
    env.write_source(&[keyed("Tier 1", &[&email(1)])]);
    env.sync().expect(0);
    let id = fake.group_id("Tier 1").unwrap();
    env.write_source(&[keyed("Tier 1 Support", &[&email(1), &email(2)])]);
    fake.clear_requests();
    let r = env.sync().expect(0);
    assert!(r.stdout.contains("rename from \"Tier 1\""), "{}", r.stdout);
    let patches = fake
        .requests()
        .iter()
        .filter(|r| matches(r, &Match::new("PATCH", "/Groups/")))
        .count();
    assert_eq!(patches, 1, "the rename rides in the membership PATCH");
    assert_eq!(
        fake.group_id("Tier 1 Support"),
        Some(id),
        "same group, new name"
    );
    env.assert_converged(&[keyed("Tier 1 Support", &[&email(1), &email(2)])]);
    fake.clear_requests();
    env.sync().expect(0);
    assert!(fake.requests().is_empty());
}

/// SPEC 6.3: a MaestroQA listing in a shape not understood fails the group (exit 1, the keys
/// seen named) and sends no create; `{"totalResults": 0}` is a real empty listing.
#[test]
fn maestroqa_listing_in_an_unknown_shape_creates_nothing() {
    let fake = FakeMaestro::start();
    let env = Env::new(fake.clone());
    fake.add_user(&email(1));
    fake.create_group_by_hand("Late Shift", &[&email(1)]);
    let groups = vec![
        g("Late Shift", &[&email(1), &email(2)]),
        g("New", &[&email(3)]),
    ];
    env.write_source(&groups);
    sync_not_understood(
        &env,
        Match::new("GET", "/Groups?startIndex"),
        serde_json::json!({"items": [{"id": "x", "displayName": "Late Shift"}], "total": 1}),
        "the group listing: answer not understood (an object with keys: items, total; expected Resources)",
    );
    assert_eq!(count_ok(&fake.requests(), &fake.create_request()), 0);
    assert_eq!(fake.count_named("Late Shift"), 1);
    fake.clear_faults();
    env.sync().expect(0);
    env.assert_converged(&groups);
    assert_eq!(fake.count_named("Late Shift"), 1);
}
