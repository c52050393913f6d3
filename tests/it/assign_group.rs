//! The `assign_group` kind against the fake DeepCall server: HTTP 200 error bodies, lost
//! creates and the duplicate-name suffix, 1503, whole-list replacement in every membership
//! mode, receive_call subsets, renames, deletes, ssid auth.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::conformance::count_ok;
use crate::fakes::deepcall::{FakeDeepCall, Shape, Style};
use crate::fakes::{Fake, Fault, Logged, Match};
use crate::harness::*;

/// A group of the source: name, members, and the receive_call subset (None = all).
struct Sg<'a> {
    name: &'a str,
    key: Option<&'a str>,
    members: Vec<String>,
    receive_call: Option<Vec<String>>,
}

fn sg<'a>(name: &'a str, members: &[usize]) -> Sg<'a> {
    Sg {
        name,
        key: None,
        members: members.iter().map(|i| email(*i)).collect(),
        receive_call: None,
    }
}

impl<'a> Sg<'a> {
    fn rc(mut self, who: &[usize]) -> Self {
        self.receive_call = Some(who.iter().map(|i| email(*i)).collect());
        self
    }
    fn key(mut self, k: &'a str) -> Self {
        self.key = Some(k);
        self
    }
}

fn start() -> (Arc<FakeDeepCall>, Env) {
    let f = FakeDeepCall::start();
    let env = Env::new(f.clone());
    (f, env)
}

/// Writes groups.yaml with ids for every member (registered on the fake) and receive_call.
fn write(env: &Env, f: &FakeDeepCall, groups: &[Sg<'_>]) {
    let people: BTreeSet<&String> = groups.iter().flat_map(|g| g.members.iter()).collect();
    let mut y = String::from("people:\n");
    for p in people {
        y += &format!(
            "  - email: {p}\n    ids:\n      {T}: \"{}\"\n",
            Fake::add_user(f, p)
        );
    }
    y += "groups:\n";
    for g in groups {
        y += &format!(
            "  - name: \"{}\"\n    members: [{}]\n",
            g.name,
            g.members.join(", ")
        );
        if let Some(k) = g.key {
            y += &format!("    key: \"{k}\"\n");
        }
        if let Some(rc) = &g.receive_call {
            y += &format!("    receive_call: [{}]\n", rc.join(", "));
        }
    }
    env.write_raw_source("groups.yaml", &y);
}

fn emails(who: &[usize]) -> BTreeSet<String> {
    who.iter().map(|i| email(*i)).collect()
}

fn writes(reqs: &[Logged], f: &FakeDeepCall) -> usize {
    reqs.iter().filter(|r| Fake::is_write(f, r)).count()
}

fn assigns(f: &FakeDeepCall) -> usize {
    count_ok(&f.requests(), &f.membership_write())
}

fn names(f: &FakeDeepCall) -> Vec<String> {
    let mut n = f.group_names();
    n.sort();
    n
}

fn history(env: &Env) -> Vec<Value> {
    let h = env
        .run(&["history", "--limit", "500", "--output", "json"])
        .expect(0);
    let v: Value = serde_json::from_str(&h.stdout).expect("history json");
    v["calls"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("history json has no \"calls\" array: {}", h.stdout))
}

fn four(f: &FakeDeepCall, env: &Env) -> Vec<G> {
    let groups = vec![
        g("Tier 1 Support", &[&email(1), &email(2), &email(3)]),
        g("Tier 2 Support", &[&email(3), &email(4)]),
        g("Billing Escalations", &[&email(5)]),
        g("Night Shift", &[&email(1), &email(6), &email(7)]),
    ];
    env.write_source(&groups);
    env.sync().expect(0);
    env.assert_converged(&groups);
    f.clear_requests();
    groups
}

#[test]
fn a_create_whose_answer_is_lost_leaves_one_group() {
    let (f, env) = start();
    let groups = vec![
        g("Tier 1", &[&email(1), &email(2)]),
        g("Tier 2", &[&email(3)]),
    ];
    env.write_source(&groups);
    // The fake creates "Tier 1", then drops the connection: the client saw nothing.
    f.inject(f.create_request().body("Tier 1"), Fault::DropAfter, 1);
    let r = env.sync().expect(0);
    env.assert_converged(&groups);
    assert_eq!(
        f.group_count_with_prefix("Tier 1"),
        1,
        "no \"Tier 11\": {:?}",
        f.group_names()
    );
    assert_eq!(
        f.calls_to("Group/add"),
        2,
        "the lost create is never re-sent: it is found and adopted"
    );
    assert!(
        r.stderr.contains("looking the group up again"),
        "{}",
        r.stderr
    );
    assert!(
        history(&env)
            .iter()
            .any(|c| c["op"] == "adopt" && c["group_name"] == "Tier 1")
    );

    // A vendor error body on the create (HTTP 200, 1009): looked up again, created once.
    let groups = vec![
        groups[0].clone(),
        groups[1].clone(),
        g("Tier 3", &[&email(4)]),
    ];
    env.write_source(&groups);
    f.fail_next("Group/add", 1009, 1);
    f.clear_requests();
    env.sync().expect(0);
    env.assert_converged(&groups);
    assert_eq!(f.group_count_with_prefix("Tier 3"), 1);
    // The 1009 was answered (the first create) and the create was sent once more.
    assert_eq!(
        f.calls_to("Group/add"),
        2,
        "the refused create and the one that went in"
    );
}

#[test]
fn a_create_lost_to_a_crash_is_adopted_by_the_next_run() {
    let (f, env) = start();
    let groups = vec![g("Queue A", &[&email(1), &email(2)])];
    env.write_source(&groups);
    // The fake creates the group at once but answers only after 10 s; the run is killed
    // while it waits.
    f.inject(f.create_request(), Fault::Delay(Duration::from_secs(10)), 1);
    let mut child = env.spawn(&["sync"]);
    assert!(
        wait_until(Duration::from_secs(20), || f.group_names() == ["Queue A"]),
        "the create reached the fake"
    );
    child.kill().expect("kill -9");
    let _ = child.wait();
    f.clear_faults();
    let dry = env.run(&["sync", "--dry-run"]).expect(0);
    assert!(
        dry.stdout.contains("resuming an unconfirmed create"),
        "{}",
        dry.stdout
    );
    f.clear_requests();
    env.sync().expect(0);
    env.assert_converged(&groups);
    assert_eq!(
        f.group_count_with_prefix("Queue A"),
        1,
        "{:?}",
        f.group_names()
    );
    assert_eq!(
        f.calls_to("Group/add"),
        0,
        "found and adopted, not created again"
    );
    f.clear_requests();
    env.sync().expect(0);
    assert!(f.requests().is_empty());
}

#[test]
fn a_1503_fails_that_group_only_and_never_recreates_it() {
    let (f, env) = start();
    let mut groups = four(&f, &env);
    groups[0] = g("Tier 1 Support", &[&email(1), &email(8)]);
    groups[2] = g("Billing Escalations", &[&email(5), &email(9)]);
    env.write_source(&groups);
    // The operator lost the rights to "Tier 1 Support": every call naming it answers 1503,
    // but the group is still listed.
    let id = f.group_id("Tier 1 Support").unwrap();
    f.fail_group(&id, 1503);
    let r = env.sync().expect(1);
    assert!(r.stdout.contains("Tier 1 Support"), "{}", r.stdout);
    assert!(
        r.stderr.contains("Group not found or not authorized"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("still listed"), "{}", r.stderr);
    let got = f.groups();
    assert_eq!(
        got["Billing Escalations"],
        emails(&[5, 9]),
        "the other group converged"
    );
    assert_eq!(
        got["Tier 1 Support"],
        emails(&[1, 2, 3]),
        "the refused group is untouched"
    );
    assert_eq!(
        f.group_names().len(),
        4,
        "nothing created beside it: {:?}",
        f.group_names()
    );
    assert_eq!(f.calls_to("Group/add"), 0);
    let h = history(&env);
    assert!(
        h.iter().any(|c| c["outcome"] == "failed"
            && c["error"].as_str().is_some_and(
                |e| e.contains("1503") && e.contains("Group not found or not authorized")
            )),
        "the vendor's message is in the history: {h:?}"
    );
    // The known state is unchanged: once the rights are back, the same change goes through.
    f.clear_fail_group(&id);
    f.clear_requests();
    env.sync().expect(0);
    env.assert_converged(&groups);
    assert_eq!(assigns(&f), 1);
}

#[test]
fn a_group_deleted_by_hand_is_created_again_in_the_same_run() {
    let (f, env) = start();
    let mut groups = four(&f, &env);
    f.delete_group_by_hand("Night Shift");
    groups[3] = g("Night Shift", &[&email(1), &email(6)]);
    env.write_source(&groups);
    let r = env.sync().expect(0);
    env.assert_converged(&groups);
    assert!(r.stderr.contains("gone from the target"), "{}", r.stderr);
    assert_eq!(f.group_count_with_prefix("Night Shift"), 1);
}

#[test]
fn vendor_errors_under_http_200_are_failures() {
    let (f, env) = start();
    let mut groups = four(&f, &env);
    groups[1] = g("Tier 2 Support", &[&email(3)]);
    env.write_source(&groups);
    // A final refusal with HTTP 200: the group fails, its known state does not change.
    f.inject(
        f.membership_write(),
        Fault::body(
            200,
            json!({"status": "error", "code": 1047, "message": "Invalid Request Data"}),
        ),
        1,
    );
    let r = env.sync().expect(1);
    assert!(
        r.stderr
            .contains("DeepCall error 1047: Invalid Request Data"),
        "{}",
        r.stderr
    );
    assert_eq!(f.groups()["Tier 2 Support"], emails(&[3, 4]));
    assert_eq!(
        f.requests()
            .iter()
            .filter(|r| r.path.contains("submitAssign"))
            .count(),
        1,
        "1047 is not retried"
    );
    // Transient codes (1009, 1010) are retried in place.
    f.clear_requests();
    f.fail_next("submitAssignGroupToAgent", 1009, 1);
    f.fail_next("submitAssignGroupToAgent", 1010, 1);
    env.sync().expect(0);
    env.assert_converged(&groups);
    assert_eq!(f.calls_to("submitAssignGroupToAgent"), 3);
    let h = history(&env);
    assert!(
        h.iter()
            .any(|c| c["op"] == "update" && c["outcome"] == "ok" && c["attempts"] == 3),
        "{h:?}"
    );
    assert!(
        h.iter()
            .all(|c| c["method"] == "POST" || c["method"] == "-")
    );
}

#[test]
fn receive_call_subsets_round_trip() {
    let (f, env) = start();
    let src = |rc: &[usize]| vec![sg("Sales", &[1, 2, 3]).rc(rc), sg("Support", &[3, 4])];
    write(&env, &f, &src(&[1, 3]));
    env.sync().expect(0);
    assert_eq!(f.receive_call("Sales"), emails(&[1, 3]));
    assert_eq!(
        f.receive_call("Support"),
        emails(&[3, 4]),
        "default: every member"
    );
    let body = f
        .requests()
        .into_iter()
        .find(|r| r.path.contains("submitAssign") && r.body.contains("1001"))
        .unwrap();
    let b: Value = serde_json::from_str(&body.body).unwrap();
    assert_eq!(
        b["receive_call"],
        json!([f.add_user(&email(1)), f.add_user(&email(3))])
    );

    // A --full read sees no difference however the vendor spells the flags.
    for style in [Style::Number, Style::Text, Style::Bool] {
        f.set_receive_call_style(style);
        f.clear_requests();
        let r = env.run(&["sync", "--full"]).expect(0);
        assert_eq!(writes(&f.requests(), &f), 0, "{style:?}: {}", r.stderr);
        assert!(!r.stderr.contains("drift found"), "{style:?}: {}", r.stderr);
    }

    // A changed subset is one assign call with both whole lists.
    write(&env, &f, &src(&[2]));
    f.clear_requests();
    env.sync().expect(0);
    assert_eq!(writes(&f.requests(), &f), 1);
    assert_eq!(f.receive_call("Sales"), emails(&[2]));
    assert_eq!(f.groups()["Sales"], emails(&[1, 2, 3]));

    // Changed by hand: a normal run trusts the known state, --full repairs it.
    f.set_receive_call_by_hand("Sales", &[&email(1)]);
    f.clear_requests();
    env.sync().expect(0);
    assert!(f.requests().is_empty());
    env.run(&["sync", "--full"]).expect(0);
    assert_eq!(f.receive_call("Sales"), emails(&[2]));
    assert_eq!(assigns(&f), 1);
    let s = env.run(&["state"]).expect(0);
    assert!(s.stdout.contains("receives calls"), "{}", s.stdout);
}

#[test]
fn owned_mode_keeps_agents_rostersync_does_not_own() {
    let (f, mut env) = start();
    env.set_target_extra("membership = \"owned\"");
    f.create_group_by_hand("Tier 1", &[&email(1), &email(30)]);
    write(&env, &f, &[sg("Tier 1", &[1, 2, 3])]);
    f.clear_requests();
    env.sync().expect(0);
    assert_eq!(
        f.groups()["Tier 1"],
        emails(&[1, 2, 3, 30]),
        "30 was there before: kept"
    );
    let reqs = f.requests();
    // list + relation (adoption) + one assign: the relation read is not repeated.
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(f.calls_to("getGroupAgentRelation"), 1);

    // Somebody adds 31 by hand; rostersync removes 3 (its own) and keeps 30 and 31.
    f.set_members_by_hand(
        "Tier 1",
        &[&email(1), &email(2), &email(3), &email(30), &email(31)],
    );
    write(&env, &f, &[sg("Tier 1", &[1, 2])]);
    f.clear_requests();
    env.sync().expect(0);
    assert_eq!(f.groups()["Tier 1"], emails(&[1, 2, 30, 31]));
    assert_eq!(
        f.calls_to("getGroupAgentRelation"),
        1,
        "owned mode reads before replacing"
    );
    assert_eq!(assigns(&f), 1);

    // 30 (not ours, not wanted) is removed by hand: it is not put back by the next change.
    f.set_members_by_hand("Tier 1", &[&email(1), &email(2), &email(31)]);
    write(&env, &f, &[sg("Tier 1", &[1, 2, 4])]);
    env.sync().expect(0);
    assert_eq!(f.groups()["Tier 1"], emails(&[1, 2, 4, 31]));
    f.clear_requests();
    env.sync().expect(0);
    assert!(f.requests().is_empty(), "converged");
}

#[test]
fn add_only_mode_never_removes() {
    let (f, mut env) = start();
    env.set_target_extra("membership = \"add_only\"");
    write(&env, &f, &[sg("Q", &[1, 2])]);
    env.sync().expect(0);
    f.set_members_by_hand("Q", &[&email(1), &email(2), &email(40)]);
    write(&env, &f, &[sg("Q", &[1, 3])]);
    f.clear_requests();
    env.sync().expect(0);
    assert_eq!(f.groups()["Q"], emails(&[1, 2, 3, 40]));
    assert_eq!(assigns(&f), 1);
}

#[test]
fn rename_and_delete() {
    let (f, mut env) = start();
    env.set_extra("delete_groups = true");
    write(
        &env,
        &f,
        &[
            sg("Alpha", &[1]).key("a"),
            sg("Beta", &[2]).key("b"),
            sg("Gamma", &[3]).key("c"),
        ],
    );
    env.sync().expect(0);

    // Same key, new name: one Group/update (after checking the name is free).
    write(
        &env,
        &f,
        &[
            sg("Alpha Team", &[1]).key("a"),
            sg("Beta", &[2]).key("b"),
            sg("Gamma", &[3]).key("c"),
        ],
    );
    f.clear_requests();
    env.sync().expect(0);
    assert_eq!(names(&f), ["Alpha Team", "Beta", "Gamma"]);
    assert_eq!(f.calls_to("Group/update"), 1);
    assert_eq!(writes(&f.requests(), &f), 1);

    // Renaming onto a name another group has would give ours a numbered name: refused.
    f.create_group_by_hand("Delta", &[]);
    write(
        &env,
        &f,
        &[
            sg("Alpha Team", &[1]).key("a"),
            sg("delta", &[2]).key("b"),
            sg("Gamma", &[3]).key("c"),
        ],
    );
    let r = env.sync().expect(1);
    assert!(r.stderr.contains("already has a group"), "{}", r.stderr);
    assert_eq!(
        names(&f),
        ["Alpha Team", "Beta", "Delta", "Gamma"],
        "no \"Delta1\""
    );

    // A group that left the source is deleted; one deleted by hand already is forgotten.
    f.delete_group_by_hand("Beta");
    write(&env, &f, &[sg("Alpha Team", &[1]).key("a")]);
    f.clear_requests();
    env.sync().expect(0);
    assert_eq!(names(&f), ["Alpha Team", "Delta"]);
    let s = env.run(&["state"]).expect(0);
    assert!(
        !s.stdout.contains("Gamma") && !s.stdout.contains("Beta"),
        "{}",
        s.stdout
    );
}

#[test]
fn ssid_authentication_and_secrets_only_in_bodies() {
    let (f, mut env) = start();
    env.set_target_extra(&format!("ssid_env = \"{}\"", f.ssid_env()));
    write(&env, &f, &[sg("S", &[1, 2])]);
    env.sync().expect(0);
    assert_eq!(f.groups()["S"], emails(&[1, 2]));
    for r in f.requests() {
        assert_eq!(r.method, "POST");
        let b: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(b["ssid"], json!(f.ssid()), "{}", r.path);
        assert!(b.get("token").is_none() && b.get("userId").is_none());
        assert!(
            !r.path.contains(&f.ssid()) && !r.headers.iter().any(|(_, v)| v.contains(&f.ssid()))
        );
    }
    let h = history(&env);
    assert!(!h.is_empty());
    env.assert_no_secret(&[]);
}

#[test]
fn a_member_without_an_id_is_skipped_with_a_warning() {
    let (f, env) = start();
    let ana = f.add_user(&email(1));
    let y = format!(
        "people:\n  - email: {}\n    ids: {{{T}: \"{ana}\"}}\ngroups:\n  - name: G\n    members: [{}, {}]\n",
        email(1),
        email(1),
        email(2)
    );
    env.write_raw_source("groups.yaml", &y);
    let r = env.sync().expect(0);
    assert!(
        r.stderr.contains(&email(2)) && r.stderr.contains("skipped"),
        "{}",
        r.stderr
    );
    assert_eq!(f.groups()["G"], emails(&[1]));
}

#[test]
fn slow_and_failing_reads_are_retried() {
    let (f, mut env) = start();
    env.set_target_extra("timeout = \"1s\"\nmax_retries = 4");
    let groups = vec![g("R", &[&email(1)])];
    env.write_source(&groups);
    f.inject(
        Match::new("POST", "Group/list"),
        Fault::Delay(Duration::from_millis(1500)),
        1,
    );
    f.inject(Match::new("POST", "Group/list"), Fault::status(500), 1);
    let busy = json!({"status": "error", "code": 1009, "message": "Something went wrong"});
    f.inject(Match::new("POST", "Group/list"), Fault::body(200, busy), 1);
    env.sync().expect(0);
    env.assert_converged(&groups);
    // (The fake does not log the timed-out request: the client hung up before its answer.)
    let h = history(&env);
    assert!(
        h.iter()
            .any(|c| c["op"] == "find" && c["outcome"] == "ok" && c["attempts"] == 4),
        "one find, answered at the 4th attempt: {h:?}"
    );
    assert_eq!(f.group_count_with_prefix("R"), 1);
}

#[test]
fn full_with_a_refused_group_repairs_the_others() {
    let (f, env) = start();
    let groups = four(&f, &env);
    let id = f.group_id("Tier 1 Support").unwrap();
    f.fail_group(&id, 1503);
    f.set_members_by_hand("Tier 2 Support", &[&email(4)]);
    let r = env.run(&["sync", "--full"]).expect(1);
    assert!(
        r.stderr.contains("could not read the group"),
        "{}",
        r.stderr
    );
    assert_eq!(
        f.groups()["Tier 2 Support"],
        emails(&[3, 4]),
        "the drifted group is repaired"
    );
    assert_eq!(
        f.group_names().len(),
        4,
        "nothing created: {:?}",
        f.group_names()
    );
    f.clear_fail_group(&id);
    env.run(&["sync", "--full"]).expect(0);
    env.assert_converged(&groups);
}

/// SPEC 6.3: a `Group/list` or `getGroupAgentRelation` answer whose records cannot be found
/// fails the group (exit 1, the keys seen named) and sends no create, never "no such group".
#[test]
fn answers_in_an_unknown_shape_fail_the_group_and_create_nothing() {
    let (f, env) = start();
    f.create_group_by_hand("Tier 1", &[&email(1)]);
    let groups = vec![
        g("Tier 1", &[&email(1), &email(2)]),
        g("Tier 2", &[&email(3)]),
    ];
    env.write_source(&groups);
    let shape = json!({"status": "success", "message": "ok", "code": 200,
        "items": [{"gid": "1", "title": "Tier 1"}], "total": 1});
    let r = sync_not_understood(
        &env,
        Match::new("POST", "Group/list"),
        shape,
        "the group listing: answer not understood (an object with keys: ",
    );
    assert!(r.stderr.contains("items") && r.stderr.contains("total"));
    assert_eq!(f.calls_to("Group/add"), 0, "no create was sent");
    assert_eq!(assigns(&f), 0);
    assert_eq!(names(&f), ["Tier 1"]);

    // The listing is fine, the relation of the group to adopt is not: still no create.
    f.clear_faults();
    f.clear_requests();
    sync_not_understood(
        &env,
        Match::new("POST", "getGroupAgentRelation"),
        json!({"status": "success", "rows": [{"uid": 1001}]}),
        "the group's agents: answer not understood (an object with keys: rows, status",
    );
    assert_eq!(
        f.calls_to("Group/add"),
        1,
        "only Tier 2, which the listing does not have"
    );
    assert_eq!(f.group_count_with_prefix("Tier 1"), 1);

    // Answers in a shape we know: Tier 1 is adopted, never duplicated.
    f.clear_faults();
    env.sync().expect(0);
    env.assert_converged(&groups);
    assert_eq!(f.group_count_with_prefix("Tier 1"), 1);
}

/// The records of the undocumented answers are found one level deeper too.
#[test]
fn records_nested_deeper_are_found_and_adopted() {
    for at in [&["data", "groups"][..], &["response", "groups"][..]] {
        let (f, env) = start();
        f.set_records_at(at);
        f.create_group_by_hand("Tier 1", &[&email(1), &email(2)]);
        let groups = vec![
            g("Tier 1", &[&email(1), &email(3)]),
            g("Tier 2", &[&email(3)]),
        ];
        env.write_source(&groups);
        env.sync().expect(0);
        env.assert_converged(&groups);
        assert_eq!(
            f.calls_to("Group/add"),
            1,
            "{at:?}: Tier 1 adopted, only Tier 2 created"
        );
        assert_eq!(f.group_count_with_prefix("Tier 1"), 1);
        // --full reads the relations in the same shape.
        f.set_members_by_hand("Tier 2", &[&email(4)]);
        env.run(&["sync", "--full"]).expect(0);
        env.assert_converged(&groups);
    }
}

/// Issue 17 item 2: the assign after a create, applied by the vendor but never answered,
/// keeps its intent (a failure made final for this run is still one that may have
/// landed): the next run reads the group back before planning it, and records what the
/// vendor holds.
#[test]
fn an_assign_that_may_have_landed_after_a_create_is_read_back() {
    let (f, env) = start();
    let groups = vec![g("Tier 1", &[&email(1), &email(2)])];
    env.write_source(&groups);
    f.inject(f.membership_write(), Fault::DropAfter, 10);
    env.sync().expect(1);
    f.clear_faults();
    f.clear_requests();
    env.sync().expect(0);
    let reads = count_ok(&f.requests(), &Match::new("POST", "getGroupAgentRelation"));
    assert_eq!(reads, 1, "the group with an unfinished write is read back");
    assert_eq!(
        assigns(&f),
        0,
        "the vendor holds the list already: nothing to send"
    );
    env.assert_converged(&groups);
    let state = env.run(&["state", "--output", "json"]).expect(0);
    assert!(state.stdout.contains(&email(2)), "{}", state.stdout);
}

// ---------------------------------------------------------------------------------------
// Issue 18: DeepCall by evidence. The answers of `Group/list` and `getGroupAgentRelation`
// in every shape a tenant may send; what rostersync learns, and what a wrong guess costs.
// ---------------------------------------------------------------------------------------

/// An `owned`-mode target in `fake`'s shape: adopts a group with a stranger on it, keeps
/// the stranger through a change, and is a no-op after.
pub fn owned_mode_in_any_shape(fake: Arc<FakeDeepCall>) {
    let mut env = Env::new(fake.clone());
    env.set_target_extra("membership = \"owned\"");
    fake.add_user(&email(30));
    fake.create_group_by_hand("Tier 1", &[&email(1), &email(30)]);
    let mut groups = vec![
        g("Tier 1", &[&email(1), &email(2)]),
        g("Tier 2", &[&email(3)]),
    ];
    env.write_source(&groups);
    env.sync().expect(0);
    assert_eq!(fake.groups()["Tier 1"], emails(&[1, 2, 30]));
    groups[0] = g("Tier 1", &[&email(2), &email(4)]);
    env.write_source(&groups);
    env.sync().expect(0);
    assert_eq!(
        fake.groups()["Tier 1"],
        emails(&[1, 2, 4, 30]),
        "1 and 30 were there before rostersync: kept"
    );
    assert_eq!(fake.group_count_with_prefix("Tier 1"), 1);
    fake.clear_requests();
    env.sync().expect(0);
    assert!(fake.requests().is_empty(), "a no-op after");
}

/// A group without members (its relation: empty arrays) is created, read back by
/// `--full` and left alone; a fresh account's empty listing is "none".
pub fn empty_answers_in_any_shape(fake: Arc<FakeDeepCall>) {
    let env = Env::new(fake.clone());
    let groups = vec![g("Empty Queue", &[]), g("Tier 1", &[&email(1)])];
    env.write_source(&groups);
    env.sync().expect(0);
    env.assert_converged(&groups);
    fake.clear_requests();
    env.run(&["sync", "--full"]).expect(0);
    assert_eq!(
        assigns(&fake),
        0,
        "--full found both groups as they should be"
    );
    env.assert_converged(&groups);
    fake.clear_requests();
    env.sync().expect(0);
    assert!(fake.requests().is_empty(), "a no-op after");
}

/// The conformance and scope scenarios, plus owned mode and empty answers, with the
/// fake's answers in one shape.
macro_rules! shapes {
    ($name:ident, $shape:expr) => {
        mod $name {
            use std::sync::Arc;

            use crate::fakes::Fake;
            use crate::fakes::deepcall::FakeDeepCall;

            fn deepcall() -> Arc<FakeDeepCall> {
                FakeDeepCall::start_shaped($shape)
            }
            fn fake() -> Arc<dyn Fake> {
                deepcall()
            }
            #[test]
            fn fresh_account_initial_noop_churn() {
                crate::conformance::initial_noop_churn(fake())
            }
            #[test]
            fn adoption() {
                crate::conformance::adoption(fake())
            }
            #[test]
            fn drift_repaired_by_full() {
                crate::conformance::drift_repaired_by_full(fake())
            }
            #[test]
            fn crash_during_creates() {
                crate::conformance::crash_mid_run(fake())
            }
            #[test]
            fn crash_during_an_assign() {
                crate::conformance::crash_mid_membership_write(fake())
            }
            #[test]
            fn keep_members() {
                crate::scope::hand_added_survives_a_run(fake())
            }
            #[test]
            fn only() {
                crate::scope::only_one_person_then_the_rest(fake())
            }
            #[test]
            fn owned_mode() {
                super::owned_mode_in_any_shape(deepcall())
            }
            #[test]
            fn empty_answers() {
                super::empty_answers_in_any_shape(deepcall())
            }
        }
    };
}

fn at(keys: &[&str]) -> Shape {
    Shape::At(keys.iter().map(|k| k.to_string()).collect())
}

// The vendor's documented envelope: groups under `response`; the relation's agents in two
// agreeing arrays (`agentData` + `relationData`, the flags in the second).
shapes!(shape_documented, super::Shape::Documented);
shapes!(shape_data, super::at(&["data"]));
shapes!(shape_response, super::at(&["response"]));
shapes!(shape_result, super::at(&["result"]));
shapes!(shape_rows, super::at(&["rows"]));
shapes!(shape_one_level_deeper, super::at(&["response", "groups"]));

fn add_calls(f: &FakeDeepCall) -> usize {
    f.calls_to("Group/add")
}

/// Shapes that fail the group (exit 1) and send no create and no assign: no array at all,
/// records in an object keyed by id, two arrays that disagree. Every message names the
/// arrays seen and the key that pins the path.
#[test]
fn shapes_that_are_not_understood_send_no_write() {
    for (shape, seen) in [
        (Shape::NoArray, "no array"),
        (Shape::KeyedById, "no array"),
        (Shape::Disagree, "do not name the same ones"),
    ] {
        let (f, env) = start();
        f.create_group_by_hand("Tier 1", &[&email(1)]);
        f.set_shape(shape.clone());
        // (Only groups the listing holds: a listing that finds no group of the name is
        // "none" whatever the shape, and the create's proof is what costs one group then.)
        env.write_source(&[g("Tier 1", &[&email(1), &email(2)])]);
        let r = env.sync().expect(1);
        assert!(
            r.stdout.contains(seen) && r.stdout.contains("groups_at = \"PATH\""),
            "{shape:?}: {}",
            r.stdout
        );
        assert_eq!(add_calls(&f), 0, "{shape:?}: no create");
        assert_eq!(assigns(&f), 0, "{shape:?}: no assign");
        assert_eq!(names(&f), ["Tier 1"], "{shape:?}");
    }

    // The listing pinned, the relation's arrays disagree: the adoption fails, no write.
    let (f, mut env) = start();
    env.set_target_extra("groups_at = \"response\"");
    f.create_group_by_hand("Tier 1", &[&email(1)]);
    f.set_shape(Shape::Disagree);
    env.write_source(&[g("Tier 1", &[&email(1), &email(2)])]);
    let r = env.sync().expect(1);
    assert!(
        r.stdout
            .contains("the group's agents: answer not understood")
            && r.stdout
                .contains("response.agentData, response.relationData")
            && r.stdout.contains("agents_at = \"PATH\""),
        "{}",
        r.stdout
    );
    assert_eq!((add_calls(&f), assigns(&f)), (0, 0));
}

/// The learned path is kept in the state database: a later run (a new process) reads only
/// it, and an answer without it is loud (exit 1, no write), never "none".
#[test]
fn a_learned_path_survives_a_restart_and_its_loss_is_loud() {
    let (f, env) = start();
    f.set_records_at(&["response", "groups"]);
    let groups = vec![g("Tier 1", &[&email(1)])];
    env.write_source(&groups);
    env.sync().expect(0);
    // A read of the group teaches where the relation puts its agents.
    env.run(&["sync", "--full"]).expect(0);
    env.assert_converged(&groups);
    let check = env.run(&["check", "--online"]).expect(0);
    assert!(
        check
            .stdout
            .contains("group listing: records at `response.groups`, as learned"),
        "{}",
        check.stdout
    );
    // The vendor now answers `data`: the listing and the relation are not understood.
    f.set_records_at(&["data"]);
    let more = vec![g("Tier 1", &[&email(1)]), g("Tier 2", &[&email(2)])];
    env.write_source(&more);
    f.clear_requests();
    let r = env.sync().expect(1);
    assert!(
        r.stdout
            .contains("expected the records at `response.groups`")
            && r.stdout.contains("arrays at: data (empty)"),
        "{}",
        r.stdout
    );
    assert_eq!((add_calls(&f), assigns(&f)), (0, 0));
    f.set_members_by_hand("Tier 1", &[&email(3)]);
    let r = env.run(&["sync", "--full"]).expect(1);
    assert!(
        r.stdout.contains("expected the records at `response"),
        "{}",
        r.stdout
    );
    assert_eq!(
        assigns(&f),
        0,
        "a group that cannot be read gets no write: {}\n{}",
        r.stdout,
        r.stderr
    );
    // The operator pins the new paths: converged.
    let mut env = env;
    env.set_target_extra("groups_at = \"data\"\nagents_at = \"data\"");
    env.run(&["sync", "--full"]).expect(0);
    env.assert_converged(&more);
}

/// A listing that cannot see the group just created costs one group: the target fails,
/// the group stays recorded, no further create is sent in that run or the next, each run
/// says so; once the listing shows records, creates go on.
#[test]
fn a_listing_that_cannot_see_a_new_group_costs_at_most_one_group() {
    let (f, mut env) = start();
    env.set_target_extra("concurrency = 4");
    f.set_shape(Shape::Blind);
    let groups = vec![
        g("Tier 1", &[&email(1)]),
        g("Tier 2", &[&email(2)]),
        g("Tier 3", &[&email(3)]),
        g("Tier 4", &[&email(4)]),
    ];
    env.write_source(&groups);
    let r = env.sync().expect(1);
    assert_eq!(add_calls(&f), 1, "one create: {}", r.stdout);
    assert_eq!(f.group_names().len(), 1);
    assert!(
        r.stdout.contains("does not show it")
            && r.stdout.contains("no group is created on this target"),
        "{}",
        r.stdout
    );
    let state = env.run(&["state"]).expect(0);
    assert!(
        state.stdout.contains(&f.group_names()[0]),
        "the created group is recorded: {}",
        state.stdout
    );
    let check = env.run(&["check", "--online"]).expect(0);
    assert!(
        check.stdout.contains("creates are stopped"),
        "{}",
        check.stdout
    );
    for _ in 0..2 {
        f.clear_requests();
        let r = env.sync().expect(1);
        assert_eq!(add_calls(&f), 0, "no create in a later run: {}", r.stdout);
        assert!(
            r.stdout.contains("no group is created on this target")
                && r.stdout.contains("groups_at"),
            "{}",
            r.stdout
        );
    }
    assert_eq!(f.group_names().len(), 1, "{:?}", f.group_names());
    // The vendor's listing shows its groups again: the next run creates the rest.
    f.set_shape(Shape::Documented);
    env.sync().expect(0);
    env.assert_converged(&groups);
    f.clear_requests();
    env.sync().expect(0);
    assert!(f.requests().is_empty());
}

/// The create's proof finds another group of the same name (made meanwhile, so the vendor
/// numbered ours): ours is deleted and the other adopted, whatever the create answer said.
#[test]
fn the_proof_finds_a_duplicate_deletes_it_and_adopts_the_other() {
    let (f, env) = start();
    let groups = vec![g("Tier 1", &[&email(1), &email(2)])];
    env.write_source(&groups);
    // The first lookup sees nothing (an empty listing), the group appears meanwhile.
    f.create_group_by_hand("Tier 1", &[&email(1)]);
    f.inject(
        Match::new("POST", "Group/list"),
        Fault::body(
            200,
            json!({"status": "success", "code": 200, "response": []}),
        ),
        1,
    );
    env.sync().expect(0);
    env.assert_converged(&groups);
    assert_eq!(add_calls(&f), 1);
    assert_eq!(f.calls_to("Group/delete"), 1, "the duplicate was deleted");
    assert!(
        history(&env)
            .iter()
            .any(|c| c["op"] == "adopt" && c["group_name"] == "Tier 1")
    );
}

/// A listing in pages: the group looked for on page 2 is adopted, never re-created; a 1503
/// is checked against every page (a group on page 2 is not "gone").
#[test]
fn a_paged_listing_is_read_whole() {
    let (f, env) = start();
    f.set_page_size(Some(2));
    for n in ["Tier 10", "Tier 11", "Tier 1", "Tier 12"] {
        f.create_group_by_hand(n, &[&email(9)]);
    }
    let groups = vec![g("Tier 1", &[&email(1)])];
    env.write_source(&groups);
    env.sync().expect(0);
    assert_eq!(add_calls(&f), 0, "adopted from page 2");
    assert_eq!(f.group_count_with_prefix("Tier 1"), 4);
    assert_eq!(f.groups()["Tier 1"], emails(&[1]));
    // Not authorized any more, still listed on page 2: never created again.
    let id = f.group_id("Tier 1").unwrap();
    f.fail_group(&id, 1503);
    env.write_source(&[g("Tier 1", &[&email(1), &email(2)])]);
    let r = env.sync().expect(1);
    assert!(r.stdout.contains("still listed"), "{}", r.stdout);
    assert_eq!(add_calls(&f), 0);
    // Signs of more pages with no way to ask for them: not understood, no create.
    f.clear_fail_group(&id);
    f.inject(
        Match::new("POST", "Group/list"),
        Fault::body(
            200,
            json!({"status": "success", "code": 200, "response": [], "total": 7}),
        ),
        5,
    );
    env.write_source(&[g("Tier 1", &[&email(1), &email(2)]), g("New", &[&email(3)])]);
    let r = env.sync().expect(1);
    assert!(
        r.stdout.contains("shows more pages (total = 7"),
        "{}",
        r.stdout
    );
    assert_eq!(add_calls(&f), 0);
}

/// `check --online` shows the listing's shape: none yet, found, learned, pinned (matched
/// or not).
#[test]
fn check_online_shows_the_shape() {
    let (f, mut env) = start();
    env.write_source(&[g("Tier 1", &[&email(1)])]);
    let c = env.run(&["check", "--online"]).expect(0);
    assert!(
        c.stdout.contains("the account has no groups yet"),
        "{}",
        c.stdout
    );
    f.create_group_by_hand("Tier 1", &[]);
    let c = env.run(&["check", "--online"]).expect(0);
    assert!(
        c.stdout.contains("records found at `response`"),
        "{}",
        c.stdout
    );
    env.set_target_extra("groups_at = \"response\"");
    let c = env.run(&["check", "--online"]).expect(0);
    assert!(
        c.stdout
            .contains("pinned at `response` (groups_at) and matched"),
        "{}",
        c.stdout
    );
    env.set_target_extra("groups_at = \"data.groups\"");
    let c = env.run(&["check", "--online"]).expect(1);
    assert!(
        c.stdout.contains("pinned by groups_at = \"data.groups\"")
            && c.stdout.contains("arrays at: response"),
        "{}",
        c.stdout
    );
}

/// `groups_at`/`agents_at`: only for assign_group, a path of keys; else exit 2, nothing sent.
#[test]
fn a_bad_records_path_is_refused_at_load() {
    for (extra, want) in [
        ("groups_at = \"response..groups\"", "is not a path"),
        ("agents_at = \"\"", "is not a path"),
        ("groups_at = \"a b\"", "is not a path"),
    ] {
        let (f, mut env) = start();
        env.set_target_extra(extra);
        env.write_source(&[g("Tier 1", &[&email(1)])]);
        let r = env.sync().expect(2);
        assert!(r.stderr.contains(want), "{extra}: {}", r.stderr);
        assert!(f.requests().is_empty());
    }
}

/// An authoritative assign drops no agent the plan does not remove: a hand-added agent
/// stays through a change, is recorded as found, and the next plan shows its removal
/// (counted by the guard, recorded in the history).
#[test]
fn a_hand_added_agent_is_removed_only_by_a_plan_that_shows_it() {
    let (f, env) = start();
    let groups = vec![g("Tier 1", &[&email(1), &email(2)])];
    env.write_source(&groups);
    env.sync().expect(0);
    f.add_user(&email(30));
    f.set_members_by_hand("Tier 1", &[&email(1), &email(2), &email(30)]);
    let next = vec![g("Tier 1", &[&email(1), &email(2), &email(3)])];
    env.write_source(&next);
    env.sync().expect(0);
    assert_eq!(
        f.groups()["Tier 1"],
        emails(&[1, 2, 3, 30]),
        "30 not dropped silently"
    );
    let dry = env.run(&["sync", "--dry-run"]).expect(0);
    let id30 = f.source_id(&email(30)).unwrap();
    assert!(dry.stdout.contains(&format!("- {id30}")), "{}", dry.stdout);
    // The guard counts it.
    let config = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(
        env.config_path(),
        config.replace("max_removals = 1000", "max_removals = 0"),
    )
    .unwrap();
    let r = env.sync().expect(3);
    assert!(r.stdout.contains("REFUSED"), "{}", r.stdout);
    assert_eq!(f.groups()["Tier 1"], emails(&[1, 2, 3, 30]));
    env.write_config();
    env.sync().expect(0);
    env.assert_converged(&next);
    assert!(
        history(&env)
            .iter()
            .any(|c| c["op"] == "update" && c["removed"] == 1 && c["outcome"] == "ok"),
        "the removal is in the history: {:?}",
        history(&env)
    );
}

/// `explain` says that DeepCall's answers carry no email, and recommends `id:` patterns.
#[test]
fn explain_says_email_patterns_cannot_see_hand_added_agents() {
    let (_f, mut env) = start();
    env.set_target_extra("keep_members = [\"svc-*@example.com\"]");
    env.write_source(&[g("Tier 1", &[&email(1)])]);
    let r = env.run(&["explain", &email(1)]).expect(0);
    assert!(
        r.stdout.contains("DeepCall's answers carry no email")
            && r.stdout.contains("`id:` patterns"),
        "{}",
        r.stdout
    );
    env.set_target_extra("keep_members = [\"id:1001\"]");
    let r = env.run(&["explain", &email(1)]).expect(0);
    assert!(!r.stdout.contains("carry no email"), "{}", r.stdout);
}

/// `keep_members` email patterns protect a hand-added agent whose id a source person
/// carries for this target: the assign keeps it (recorded without an email), and the next
/// plan names it from the source and keeps it instead of removing it.
#[test]
fn an_email_pattern_protects_a_hand_added_agent_a_source_person_carries() {
    let (f, mut env) = start();
    env.set_target_extra("keep_members = [\"svc-*@example.com\"]");
    let bot = "svc-bot@example.com";
    let groups = vec![g("Tier 1", &[&email(1)]), g("Bots", &[bot])];
    env.write_source(&groups);
    env.sync().expect(0);
    // The bot is added to Tier 1 by hand; Tier 1 then changes.
    f.set_members_by_hand("Tier 1", &[&email(1), bot]);
    let next = vec![g("Tier 1", &[&email(1), &email(2)]), g("Bots", &[bot])];
    env.write_source(&next);
    env.sync().expect(0);
    let want: BTreeSet<String> = [email(1), email(2), bot.to_string()].into();
    assert_eq!(f.groups()["Tier 1"], want);
    // The next run would remove it, were it not named and protected.
    let dry = env.run(&["sync", "--dry-run"]).expect(0);
    assert!(
        dry.stdout.contains("+0 -0 members"),
        "no removal: {}",
        dry.stdout
    );
    env.sync().expect(0);
    assert_eq!(f.groups()["Tier 1"], want);
}

/// `sync --only EMAIL` never drops an agent outside its scope: the assign reads the group
/// first, and a hand-added agent stays.
#[test]
fn only_never_drops_an_agent_outside_its_scope() {
    let (f, env) = start();
    env.write_source(&[g("Tier 1", &[&email(1)])]);
    env.sync().expect(0);
    f.add_user(&email(30));
    f.set_members_by_hand("Tier 1", &[&email(1), &email(30)]);
    env.write_source(&[g("Tier 1", &[&email(1), &email(2)])]);
    f.clear_requests();
    env.run(&["sync", "--only", &email(2)]).expect(0);
    assert_eq!(f.groups()["Tier 1"], emails(&[1, 2, 30]));
    assert_eq!(assigns(&f), 1);
}
