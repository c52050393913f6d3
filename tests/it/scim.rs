//! SCIM-specific behaviour beyond the conformance suite: paging, batches, owners, modes,
//! a group deleted behind rostersync's back.

use crate::conformance::{assert_known_is_held, count_ok, matches};
use crate::fakes::maestro::FakeMaestro;
use crate::fakes::scim2::{Quirks, Scim2Server};
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

/// Requests of `method` whose path contains `path`, with their statuses.
fn statuses(fake: &Scim2Server, method: &str, path: &str) -> Vec<u16> {
    fake.requests()
        .iter()
        .filter(|r| r.method == method && r.path.contains(path))
        .map(|r| r.status)
        .collect()
}

fn patches(fake: &Scim2Server) -> Vec<String> {
    fake.requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| format!("{} {}", r.status, r.body))
        .collect()
}

/// Issue 19: a server that ignores the members of a POST (and says so in its 201) gets
/// them in a PATCH, recorded only once it succeeds; the known state never claims them
/// before. The first create reads the group back once; later ones (the server is known
/// to drop members) go straight to the PATCH.
#[test]
fn members_a_create_did_not_keep_are_added_and_recorded_after() {
    let fake = Scim2Server::start_with(Quirks {
        ignores_posted_members: true,
        ..Default::default()
    });
    let mut env = Env::new(fake.clone());
    env.set_target_extra("concurrency = 1");
    let one = vec![g("Tier 1 Support", &[&email(1), &email(2), &email(3)])];
    env.write_source(&one);
    env.sync().expect(0);
    env.assert_converged(&one);
    assert_known_is_held(&env, &*fake, true);
    assert_eq!(statuses(&fake, "POST", "/Groups"), [201]);
    assert_eq!(
        statuses(&fake, "GET", "/Groups/"),
        [200],
        "the answer showed no members: read back once"
    );
    assert_eq!(statuses(&fake, "PATCH", "/Groups/"), [204]);

    let two = vec![one[0].clone(), g("Tier 2 Support", &[&email(4)])];
    env.write_source(&two);
    fake.clear_requests();
    env.sync().expect(0);
    env.assert_converged(&two);
    assert_known_is_held(&env, &*fake, true);
    assert_eq!(
        statuses(&fake, "GET", "/Groups/"),
        Vec::<u16>::new(),
        "known to drop members: no read-back"
    );
    assert_eq!(statuses(&fake, "PATCH", "/Groups/"), [204]);
    fake.clear_requests();
    env.sync().expect(0);
    assert!(fake.requests().is_empty(), "converged: a no-op run");
    let c = env.run(&["check", "--online"]).expect(0);
    assert!(
        c.stdout
            .contains("keeps no members sent in a create: they follow in a PATCH"),
        "{}",
        c.stdout
    );
}

/// Against the real server (it keeps and shows the members of a POST): one call per
/// create, as before, and no read-back.
#[test]
fn a_server_that_shows_the_members_it_kept_costs_one_call_per_create() {
    let fake = Scim2Server::start();
    let env = Env::new(fake.clone());
    let groups = vec![g("A", &[&email(1), &email(2)]), g("B", &[&email(3)])];
    env.write_source(&groups);
    env.sync().expect(0);
    env.assert_converged(&groups);
    assert_eq!(statuses(&fake, "POST", "/Groups"), [201, 201]);
    assert!(statuses(&fake, "GET", "/Groups/").is_empty());
    assert!(statuses(&fake, "PATCH", "/Groups/").is_empty());
    assert_eq!(
        statuses(&fake, "GET", "/ServiceProviderConfig"),
        [200],
        "read once"
    );
    fake.clear_requests();
    env.write_source(&[g("A", &[&email(1)]), g("B", &[&email(3)])]);
    env.sync().expect(0);
    assert!(
        statuses(&fake, "GET", "/ServiceProviderConfig").is_empty(),
        "kept for a day"
    );
}

/// Issue 19: a filtered removal answered 501 is not retried; it is resent once in the
/// value form and the group read back; the form is kept, so the next removal is sent in
/// it at once.
#[test]
fn a_filtered_removal_answered_501_falls_back_to_the_value_form_once() {
    let fake = Scim2Server::start_with(Quirks {
        filter_removal_501: true,
        ..Default::default()
    });
    let env = Env::new(fake.clone());
    let all = [email(1), email(2), email(3), email(4)];
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    env.write_source(&[g("Team", &refs)]);
    env.sync().expect(0);
    fake.clear_requests();
    let next = vec![g("Team", &[&email(1), &email(2), &email(5)])];
    env.write_source(&next);
    env.sync().expect(0);
    env.assert_converged(&next);
    assert_known_is_held(&env, &*fake, true);
    let p = patches(&fake);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(
        p[0].starts_with("501 ") && p[0].contains("members[value eq"),
        "{p:#?}"
    );
    assert!(
        p[1].starts_with("204 ") && p[1].contains(r#""path":"members","value""#),
        "{p:#?}"
    );
    assert_eq!(statuses(&fake, "GET", "/Groups/"), [200], "read back once");

    fake.clear_requests();
    env.write_source(&[g("Team", &[&email(1)])]);
    env.sync().expect(0);
    let p = patches(&fake);
    assert_eq!(p.len(), 1, "the value form at once: {p:#?}");
    assert!(p[0].starts_with("204 "), "{p:#?}");
    assert!(statuses(&fake, "GET", "/Groups/").is_empty());
    env.assert_converged(&[g("Team", &[&email(1)])]);
    assert_known_is_held(&env, &*fake, true);
}

/// Issue 19: a value-form removal that takes more members than named: those are put
/// back, the group fails loudly (exit 1), the form is not kept, and the known state
/// still equals what the server holds.
#[test]
fn a_value_removal_that_takes_more_puts_them_back_and_fails() {
    let fake = Scim2Server::start_with(Quirks {
        filter_removal_501: true,
        value_removal_empties: true,
        ..Default::default()
    });
    let env = Env::new(fake.clone());
    env.write_source(&[g("Team", &[&email(1), &email(2), &email(3)])]);
    env.sync().expect(0);
    env.write_source(&[g("Team", &[&email(1), &email(2)])]);
    let r = env.sync().expect(1);
    assert!(
        r.stdout.contains("also removed 2 member(s) not named")
            && r.stdout.contains("they were put back"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let want: std::collections::BTreeSet<String> = [email(1), email(2)].into_iter().collect();
    assert_eq!(fake.groups()["Team"], want);
    assert_known_is_held(&env, &*fake, true);
    fake.clear_requests();
    env.sync().expect(0);
    assert!(fake.requests().is_empty(), "nothing left to remove");
}

/// Issue 19: a rename answered 501: the members still go (alone), the server is known not
/// to rename (one warning, the remote name kept), and later runs send no rename.
#[test]
fn a_rename_answered_501_keeps_the_remote_name() {
    let fake = Scim2Server::start_with(Quirks {
        rename_501: true,
        ..Default::default()
    });
    let env = Env::new(fake.clone());
    let keyed = |name: &str, members: &[&str]| G {
        key: Some("tier1".into()),
        ..g(name, members)
    };
    env.write_source(&[keyed("Tier 1", &[&email(1)])]);
    env.sync().expect(0);
    env.write_source(&[keyed("Tier 1 Support", &[&email(1), &email(2)])]);
    fake.clear_requests();
    let r = env.sync().expect(0);
    assert!(r.stderr.contains("cannot rename"), "{}", r.stderr);
    let want: std::collections::BTreeSet<String> = [email(1), email(2)].into_iter().collect();
    assert_eq!(fake.groups()["Tier 1"], want, "members changed, name kept");
    let p = patches(&fake);
    assert_eq!(
        p.len(),
        3,
        "together (501), members alone, rename alone (501): {p:#?}"
    );
    assert!(p[0].starts_with("501 ") && p[1].starts_with("204 ") && p[2].starts_with("501 "));
    assert_known_is_held(&env, &*fake, true);
    // The run converged: the next stops at the no-op shortcut; one that must plan (a new
    // member) warns again and sends the member alone.
    env.write_source(&[keyed("Tier 1 Support", &[&email(1), &email(2), &email(3)])]);
    fake.clear_requests();
    let r = env.sync().expect(0);
    let p = patches(&fake);
    assert!(
        p.len() == 1 && !p[0].contains("displayName"),
        "no rename sent again: {p:#?}"
    );
    assert!(r.stderr.contains("cannot rename"), "{}", r.stderr);
    assert_known_is_held(&env, &*fake, true);
}

/// Issue 19: a PATCH answer that shows fewer members than sent: what it shows is
/// recorded, the disagreement fails the group, the next run adds the missing member.
#[test]
fn a_patch_answer_showing_fewer_members_is_believed() {
    let fake = Scim2Server::start_with(Quirks::default());
    let env = Env::new(fake.clone());
    env.write_source(&[g("Team", &[&email(1)])]);
    env.sync().expect(0);
    fake.quirks(|q| q.patch_drops_one = 1);
    let next = vec![g("Team", &[&email(1), &email(2), &email(3)])];
    env.write_source(&next);
    let r = env.sync().expect(1);
    assert!(
        r.stdout
            .contains("1 of the 2 members added are not in the answer"),
        "{}",
        r.stdout
    );
    assert_known_is_held(&env, &*fake, true);
    assert_eq!(fake.groups()["Team"].len(), 2);
    env.sync().expect(0);
    env.assert_converged(&next);
    assert_known_is_held(&env, &*fake, true);
}

/// Issue 17 item 6: a server that answers a filter one page at a time: the lookup reads
/// on until it finds the exact name (here on page 2), never taking page 1 for the whole.
#[test]
fn a_paged_filter_answer_is_read_to_the_end() {
    let fake = Scim2Server::start_with(Quirks {
        filter_page: Some(1),
        ..Default::default()
    });
    let env = Env::new(fake.clone());
    fake.add_user(&email(1));
    // displayName byte order: "TIER 1 SUPPORT" comes first; the filter matches both.
    fake.create_group_by_hand("TIER 1 SUPPORT", &[]);
    fake.create_group_by_hand("Tier 1 Support", &[&email(1)]);
    let groups = vec![g("Tier 1 Support", &[&email(1), &email(2)])];
    env.write_source(&groups);
    env.sync().expect(0);
    assert_eq!(
        fake.count_named("Tier 1 Support"),
        1,
        "adopted, not created again"
    );
    assert_eq!(statuses(&fake, "POST", "/Groups"), Vec::<u16>::new());
    let finds = fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/Groups?filter="))
        .count();
    assert_eq!(finds, 2, "two pages of one");
}

/// Issue 19: SCIM error answers whose `status` is a number, and a 401 with an empty body,
/// still give a message that says what happened.
#[test]
fn error_answers_in_any_shape_say_what_happened() {
    let fake = Scim2Server::start_with(Quirks {
        numeric_error_status: true,
        empty_401: true,
        ..Default::default()
    });
    let env = Env::new(fake.clone());
    env.write_source(&[g("Team", &[&email(1)])]);
    fake.inject(
        fake.create_request(),
        crate::fakes::Fault::body(400, serde_json::json!({"status": 400, "scimType": "invalidValue", "detail": "displayName is reserved"})),
        1,
    );
    let r = env.sync().expect(1);
    assert!(
        r.stdout
            .contains("HTTP 400 Bad Request: displayName is reserved (invalidValue)"),
        "{}",
        r.stdout
    );
    let mut cmd = env.command(&["sync"]);
    for (k, _) in fake.env() {
        cmd.env(k, "wrong-token-1234");
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("HTTP 401 Unauthorized (an empty answer)"),
        "{text}"
    );
}

/// Issue 19: `check --online` prints what the server says it supports, or that it has
/// nothing to say and the defaults apply.
#[test]
fn check_online_prints_the_service_provider_config() {
    let fake = Scim2Server::start();
    let env = Env::new(fake.clone());
    env.write_source(&[g("Team", &[&email(1)])]);
    let r = env.run(&["check", "--online"]).expect(0);
    assert!(
        r.stdout
            .contains("ServiceProviderConfig: patch yes, filter yes"),
        "{}",
        r.stdout
    );
    fake.quirks(|q| q.no_spc = true);
    let r = env.run(&["check", "--online"]).expect(0);
    assert!(
        r.stdout.contains("ServiceProviderConfig: none (HTTP 404"),
        "{}",
        r.stdout
    );
    // `check` keeps nothing; a real run reads it once and keeps even "none" for a day.
    fake.clear_requests();
    env.sync().expect(0);
    assert_eq!(statuses(&fake, "GET", "/ServiceProviderConfig"), [404]);
    env.assert_converged(&[g("Team", &[&email(1)])]);
    fake.clear_requests();
    env.write_source(&[g("Team", &[&email(1)]), g("Other", &[&email(2)])]);
    env.sync().expect(0);
    assert!(statuses(&fake, "GET", "/ServiceProviderConfig").is_empty());
}

/// The operator pins the removal form (`remove_form`): sent at once, no 501 on the way;
/// a value that is not a form, or the key on another kind, is exit 2 naming it.
#[test]
fn the_operator_pins_the_removal_form() {
    let fake = Scim2Server::start_with(Quirks {
        filter_removal_501: true,
        ..Default::default()
    });
    let mut env = Env::new(fake.clone());
    env.set_target_extra("remove_form = \"value\"");
    env.write_source(&[g("Team", &[&email(1), &email(2)])]);
    env.sync().expect(0);
    fake.clear_requests();
    env.write_source(&[g("Team", &[&email(1)])]);
    env.sync().expect(0);
    let p = patches(&fake);
    assert!(p.len() == 1 && p[0].starts_with("204 "), "{p:#?}");
    assert!(
        statuses(&fake, "GET", "/Groups/").is_empty(),
        "pinned: no proof read"
    );
    env.assert_converged(&[g("Team", &[&email(1)])]);
    env.set_target_extra("remove_form = \"both\"");
    let r = env.sync().expect(2);
    assert!(
        r.stderr
            .contains("remove_form = \"both\" is not one of filter, value"),
        "{}",
        r.stderr
    );
}

/// A PATCH answer that shows another name than the rename sent: the known name stays
/// the one the answer shows, and the group fails (exit 1) saying so.
#[test]
fn a_rename_the_answer_does_not_show_is_not_recorded() {
    let fake = Scim2Server::start_with(Quirks {
        ignores_rename: true,
        ..Default::default()
    });
    let env = Env::new(fake.clone());
    let keyed = |name: &str, members: &[&str]| G {
        key: Some("tier1".into()),
        ..g(name, members)
    };
    env.write_source(&[keyed("Tier 1", &[&email(1)])]);
    env.sync().expect(0);
    env.write_source(&[keyed("Tier 1 Support", &[&email(1), &email(2)])]);
    let r = env.sync().expect(1);
    assert!(
        r.stdout
            .contains(r#"the answer shows the name \"Tier 1\", not \"Tier 1 Support\""#)
            || r.stdout
                .contains(r#"the answer shows the name "Tier 1", not "Tier 1 Support""#),
        "{}",
        r.stdout
    );
    assert!(fake.groups().contains_key("Tier 1"));
    assert_known_is_held(&env, &*fake, true);
}

/// Issue 17 item 6: a server that pages a filter but ignores `startIndex` (every page is
/// the first): not understood, the group fails, nothing is created twice.
#[test]
fn a_paged_filter_that_repeats_its_first_page_is_not_understood() {
    let fake = Scim2Server::start_with(Quirks {
        filter_page: Some(1),
        filter_ignores_start: true,
        ..Default::default()
    });
    let env = Env::new(fake.clone());
    fake.add_user(&email(1));
    fake.create_group_by_hand("TIER 1 SUPPORT", &[]);
    fake.create_group_by_hand("Tier 1 Support", &[&email(1)]);
    env.write_source(&[g("Tier 1 Support", &[&email(1)])]);
    let r = env.sync().expect(1);
    assert!(
        r.stdout.contains("repeats a record already read"),
        "{}",
        r.stdout
    );
    assert_eq!(fake.count_named("Tier 1 Support"), 1);
    assert_eq!(statuses(&fake, "POST", "/Groups"), Vec::<u16>::new());
}
