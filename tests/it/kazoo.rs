//! The kazoo kind beyond the conformance suite: token renewal mid-run, device endpoints
//! that survive every run, 409 retries, one merge PATCH per group, listing pages, lookups
//! and credentials.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::conformance::count_ok;
use crate::fakes::Fake;
use crate::fakes::kazoo::FakeKazoo;
use crate::fakes::{Logged, Match};
use crate::harness::*;

fn e(i: usize) -> String {
    email(i)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Authenticated calls the fake answered with 2xx (everything but logins).
fn authed_ok(reqs: &[Logged]) -> usize {
    reqs.iter()
        .filter(|r| !r.is_login() && (200..300).contains(&r.status))
        .count()
}

fn logins_sent(reqs: &[Logged]) -> usize {
    reqs.iter().filter(|r| r.is_login()).count()
}

fn patches(reqs: &[Logged]) -> Vec<&Logged> {
    reqs.iter().filter(|r| r.method == "PATCH").collect()
}

fn groups(n: usize) -> Vec<G> {
    (0..n)
        .map(|i| g(&format!("Queue {i:02}"), &[&e(i), &e(i + 1)]))
        .collect()
}

/// Tokens that die mid-run (401 after N calls) are renewed: no group fails, every expiry
/// costs exactly one login however many calls saw the 401 at once, and the token never
/// leaks.
#[test]
fn expired_token_mid_run_is_renewed_without_failing_a_group() {
    let fake = FakeKazoo::start_with_ids_in_source();
    let env = Env::new(fake.clone());
    let mut gs = groups(20);
    env.write_source(&gs);
    const N: usize = 8;
    fake.expire_tokens_after(N);

    let r = env.run(&["-v", "sync"]).expect(0);
    env.assert_converged(&gs);
    let reqs = fake.requests();
    let ok = authed_ok(&reqs);
    assert_eq!(ok, 21, "1 listing + 20 creates");
    let refused = reqs.iter().filter(|r| r.status == 401).count();
    eprintln!(
        "[kazoo] initial, tokens dying after {N} calls: {} logins, {refused} calls refused",
        fake.logins()
    );
    assert_eq!(
        fake.logins(),
        ok.div_ceil(N),
        "one login per expiry: {}",
        r.stderr
    );
    assert_eq!(logins_sent(&reqs), fake.logins(), "no login failed");
    assert!(refused >= fake.logins() - 1, "every expiry was seen");
    assert!(r.stderr.contains("logging in again"), "{}", r.stderr);

    // Churn every group: 20 PATCHes with tokens that die every N calls.
    for gr in &mut gs {
        gr.members.push(e(40));
    }
    env.write_source(&gs);
    fake.clear_requests();
    let before = fake.logins();
    env.sync().expect(0);
    env.assert_converged(&gs);
    let reqs = fake.requests();
    assert_eq!(count_ok(&reqs, &fake.membership_write()), 20);
    assert_eq!(fake.logins() - before, 20usize.div_ceil(N));

    // The history shows the refused calls and the logins; no token anywhere.
    let h = env.run(&["history", "--output", "json"]).expect(0);
    let v: Value = serde_json::from_str(&h.stdout).unwrap();
    let calls = v["calls"].as_array().unwrap();
    assert!(calls.iter().any(|c| c["op"] == "login"));
    env.assert_no_secret(&[&h, &r]);
}

/// Tokens revoked between runs: the next run's first call logs in (runs do not share tokens)
/// and a run with nothing to do sends nothing, not even a login.
#[test]
fn login_is_lazy_and_per_run() {
    let fake = FakeKazoo::start_with_ids_in_source();
    let env = Env::new(fake.clone());
    let mut gs = groups(3);
    env.write_source(&gs);
    env.sync().expect(0);
    assert_eq!(fake.logins(), 1);
    fake.revoke_tokens();
    fake.clear_requests();
    env.sync().expect(0);
    env.run(&["sync", "--dry-run"]).expect(0);
    assert!(fake.requests().is_empty(), "no call needed, no login");
    gs[0].members.push(e(9));
    env.write_source(&gs);
    env.sync().expect(0);
    env.assert_converged(&gs);
    let reqs = fake.requests();
    assert_eq!(
        (logins_sent(&reqs), reqs.len()),
        (1, 2),
        "login + one PATCH"
    );
    assert!(reqs.iter().all(|r| r.status != 401));
}

/// Devices in a group are the operator's: a normal run, a `--full` run, a rename, an
/// adoption and every membership mode leave them alone.
#[test]
fn device_endpoint_added_by_hand_survives_every_run() {
    for mode in ["authoritative", "owned", "add_only"] {
        let fake = FakeKazoo::start();
        let mut env = Env::new(fake.clone());
        env.set_target_extra(&format!("membership = \"{mode}\""));
        let mut gs = vec![
            G {
                key: Some("t1".into()),
                ..g("Tier 1", &[&e(1), &e(2)])
            },
            g("Night", &[&e(3)]),
        ];
        env.write_source(&gs);
        // An existing group to adopt, with a device and somebody the source does not name.
        fake.add_user(&e(30));
        fake.create_group_by_hand("Night", &["device:desk-phone", &e(30)]);
        env.sync().expect(0);
        fake.add_device_by_hand("Tier 1", "lobby-phone");
        let night_kept = if mode == "authoritative" {
            vec![]
        } else {
            vec![e(30)]
        };
        let want = |tier1: &[String], night: &[String]| {
            let mut t = set(&["device:lobby-phone"]);
            t.extend(tier1.iter().cloned());
            let mut n = set(&["device:desk-phone"]);
            n.extend(night.iter().cloned());
            n.extend(night_kept.iter().cloned());
            (t, n)
        };
        let check = |tier1_name: &str, tier1: &[String], night: &[String]| {
            let got = fake.groups();
            let (t, n) = want(tier1, night);
            assert_eq!(got.get(tier1_name), Some(&t), "{mode}: Tier 1");
            assert_eq!(got.get("Night"), Some(&n), "{mode}: Night");
            assert_eq!(fake.all_group_names().len(), 2, "{mode}: no duplicate");
        };
        check("Tier 1", &[e(1), e(2)], &[e(3)]);

        // churn: a removal (kept in add_only) and an addition
        gs[0].members = vec![e(1), e(4)];
        env.write_source(&gs);
        fake.clear_requests();
        env.sync().expect(0);
        let tier1 = if mode == "add_only" {
            vec![e(1), e(2), e(4)]
        } else {
            vec![e(1), e(4)]
        };
        check("Tier 1", &tier1, &[e(3)]);
        let reqs = fake.requests();
        let p = patches(&reqs);
        assert_eq!(p.len(), 1, "{mode}: one PATCH");
        let body: Value = serde_json::from_str(&p[0].body).unwrap();
        let eps = &body["data"]["endpoints"];
        assert_eq!(
            eps.get("lobby-phone"),
            None,
            "{mode}: the device is not in the PATCH"
        );

        // --full sees the devices but they are not drift
        fake.clear_requests();
        let r = env.run(&["sync", "--full"]).expect(0);
        assert!(
            patches(&fake.requests()).is_empty(),
            "{mode}: devices are no drift: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("drift found"), "{mode}: {}", r.stderr);
        check("Tier 1", &tier1, &[e(3)]);

        // rename (same key) with a membership change: one PATCH carrying both
        gs[0].name = "Tier One".into();
        gs[0].members = vec![e(4)];
        env.write_source(&gs);
        fake.clear_requests();
        env.sync().expect(0);
        let tier1: Vec<String> = match mode {
            "add_only" => vec![e(1), e(2), e(4)],
            _ => vec![e(4)],
        };
        check("Tier One", &tier1, &[e(3)]);
        let reqs = fake.requests();
        let p = patches(&reqs);
        assert_eq!(p.len(), 1, "{mode}: rename and removal in one PATCH");
        let body: Value = serde_json::from_str(&p[0].body).unwrap();
        assert_eq!(body["data"]["name"], "Tier One");
        if mode != "add_only" {
            let removed = fake.add_user(&e(1));
            assert_eq!(body["data"]["endpoints"][&removed], Value::Null);
            assert!(
                body["data"]["endpoints"]
                    .as_object()
                    .unwrap()
                    .contains_key(&removed),
                "a null entry"
            );
        }
        assert!(p[0].header("x-auth-token").is_some());

        // and --full once more, then a no-op
        env.run(&["sync", "--full"]).expect(0);
        fake.clear_requests();
        env.sync().expect(0);
        assert!(fake.requests().is_empty());
        check("Tier One", &tier1, &[e(3)]);
    }
}

/// 409 datastore_conflict is retried until the write goes through.
#[test]
fn datastore_conflicts_are_retried() {
    let fake = FakeKazoo::start_with_ids_in_source();
    let env = Env::new(fake.clone());
    let mut gs = groups(2);
    env.write_source(&gs);
    env.sync().expect(0);
    gs[1].members = vec![e(7)];
    env.write_source(&gs);
    fake.conflict_next(2);
    fake.clear_requests();
    env.sync().expect(0);
    env.assert_converged(&gs);
    let reqs = fake.requests();
    assert_eq!(reqs.iter().filter(|r| r.status == 409).count(), 2);
    assert_eq!(count_ok(&reqs, &fake.membership_write()), 1);
    let h = env
        .run(&["history", "--output", "json", "--limit", "3"])
        .expect(0);
    let v: Value = serde_json::from_str(&h.stdout).unwrap();
    let patch = v["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["method"] == "PATCH")
        .cloned();
    assert_eq!(
        patch.as_ref().map(|c| c["attempts"].clone()),
        Some(json!(3)),
        "{}",
        h.stdout
    );
}

/// The group listing is paged (`next_start_key` -> `start_key`): a group on the last page
/// is adopted, not duplicated.
/// Five groups H0..H4 listed in pages of two; the source wants H4 (to adopt) and New.
fn five_groups_in_pages_of_two() -> (Arc<FakeKazoo>, Env) {
    let fake = FakeKazoo::start_with_ids_in_source();
    let env = Env::new(fake.clone());
    fake.set_default_page_size(2);
    for i in 0..5 {
        fake.create_group_by_hand(&format!("H{i}"), &[]);
    }
    env.write_source(&[g("H4", &[&e(1)]), g("New", &[&e(2)])]);
    (fake, env)
}

#[test]
fn adoption_pages_through_the_listing() {
    let (fake, env) = five_groups_in_pages_of_two();
    fake.clear_requests();
    env.sync().expect(0);
    let got = fake.groups();
    assert_eq!(got["H4"], set(&[&e(1)]));
    assert_eq!(got["New"], set(&[&e(2)]));
    assert_eq!(
        fake.all_group_names().len(),
        6,
        "H4 adopted, not created again"
    );
    let reqs = fake.requests();
    let pages: Vec<&Logged> = reqs
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/groups") && !r.path.contains("/groups/"))
        .collect();
    assert_eq!(
        pages.len(),
        3,
        "5 groups in pages of 2, read once for both creates"
    );
    assert!(pages[1].path.contains("start_key="));
}

/// People are looked up by `filter_email` once and cached; unknown emails are skipped with
/// a warning naming them; a user stored with capitals is not found (Crossbar's filter is
/// exact) and is reached through `people[].ids`.
#[test]
fn lookups_cache_and_skip_unknown_people() {
    let fake = FakeKazoo::start();
    let env = Env::new(fake.clone());
    fake.add_user(&e(1));
    let mixed = fake.add_user("Mixed.Case@Example.com");
    let src = |with_id: bool| {
        let ids = if with_id {
            format!("    ids: {{{T}: \"{mixed}\"}}\n")
        } else {
            String::new()
        };
        format!(
            "people:\n  - email: mixed.case@example.com\n{ids}groups:\n  - name: G\n    members: [{}, ghost@example.com, mixed.case@example.com]\n",
            e(1)
        )
    };
    env.write_raw_source("groups.yaml", &src(false));
    let r = env.sync().expect(0);
    assert!(
        r.stderr.contains("ghost@example.com") && r.stderr.contains("member skipped"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("mixed.case@example.com"), "{}", r.stderr);
    assert_eq!(fake.groups()["G"], set(&[&e(1)]));
    let reqs = fake.requests();
    let lookups: Vec<&Logged> = reqs.iter().filter(|r| r.path.contains("/users?")).collect();
    assert_eq!(lookups.len(), 3);
    assert!(
        lookups
            .iter()
            .any(|r| r.path.contains("filter_email=agent001%40example.com"))
    );

    // cached, even "nobody": the next run sends nothing
    fake.clear_requests();
    env.sync().expect(0);
    assert!(fake.requests().is_empty());

    // the workaround for the capitals: the id in the source
    env.write_raw_source("groups.yaml", &src(true));
    fake.clear_requests();
    env.sync().expect(0);
    assert_eq!(fake.groups()["G"], set(&[&e(1), "Mixed.Case@Example.com"]));
    assert_eq!(patches(&fake.requests()).len(), 1);
}

/// A wrong api_key: one login attempt, every operation fails with the vendor's message
/// (exit 1), and the key never shows.
#[test]
fn refused_api_key_fails_ops_after_one_login_attempt() {
    let fake = FakeKazoo::start_with_ids_in_source();
    let env = Env::new(fake.clone());
    env.write_source(&groups(4));
    let (var, _) = fake.env().remove(0);
    let wrong = "wrong-kazoo-key-0123456789";
    let out = env.command(&["sync"]).env(&var, wrong).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("invalid_credentials"), "{stderr}");
    assert!(!stdout.contains(wrong) && !stderr.contains(wrong));
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1, "one login attempt, nothing else");
    assert_eq!(reqs[0].status, 401);
    assert!(fake.groups().is_empty());
}

/// A minimal HTTP/1.1 call over std (the fakes' own tests do the same).
fn http_put(fake: &FakeKazoo, path: &str, body: &Value) -> Value {
    use std::io::{Read, Write};
    let addr = format!("127.0.0.1:{}", fake.port());
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    let body = body.to_string();
    let req = format!(
        "PUT {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap()
}

/// A token given directly (`token_env`) is used as is: no login; when it is refused, the
/// run fails with a message saying what to do, and it never shows.
#[test]
fn token_given_directly() {
    let fake = FakeKazoo::start_with_ids_in_source();
    let env = Env::new(fake.clone());
    let token = http_put(
        &fake,
        "/v2/api_auth",
        &json!({"data": {"api_key": fake.api_key()}}),
    )["auth_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (var, _) = fake.env().remove(0);
    let toml = fake.target_toml(T).replace(
        &format!("api_key_env = \"{var}\""),
        "token_env = \"KZ_TEST_TOKEN\"",
    );
    std::fs::write(
        env.config_path(),
        format!("source = \"groups.yaml\"\nstate = \"state/rostersync.db\"\n[safety]\nmax_removal_ratio = 1.0\n\n{toml}"),
    )
    .unwrap();
    let gs = groups(2);
    env.write_source(&gs);
    fake.clear_requests();
    let out = env
        .command(&["sync"])
        .env("KZ_TEST_TOKEN", &token)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.assert_converged(&gs);
    assert_eq!(logins_sent(&fake.requests()), 0);
    assert_eq!(fake.logins(), 1, "only the test's own");

    fake.revoke_tokens();
    let mut gs2 = gs.clone();
    gs2[0].members.push(e(9));
    env.write_source(&gs2);
    fake.clear_requests();
    let out = env
        .command(&["sync"])
        .env("KZ_TEST_TOKEN", &token)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("api_key_env"), "says what to do: {stderr}");
    assert!(!stderr.contains(&token) && !String::from_utf8_lossy(&out.stdout).contains(&token));
    let reqs = fake.requests();
    assert_eq!(
        (reqs.len(), logins_sent(&reqs)),
        (1, 0),
        "the refused call only"
    );
}

/// `delete_groups`: a managed group that left the source is deleted with one DELETE.
#[test]
fn delete_groups_sends_one_delete() {
    let fake = FakeKazoo::start_with_ids_in_source();
    let mut env = Env::new(fake.clone());
    let gs = groups(3);
    env.write_source(&gs);
    env.sync().expect(0);
    env.set_extra("delete_groups = true");
    env.write_source(&gs[..2]);
    fake.clear_requests();
    env.sync().expect(0);
    env.assert_converged(&gs[..2]);
    let reqs = fake.requests();
    assert_eq!(count_ok(&reqs, &Match::new("DELETE", "/groups/")), 1);
    assert_eq!(reqs.len(), 2, "login + DELETE");
}

/// SPEC 6.3: a group listing page in a shape not understood (here the second page) fails
/// the group (exit 1, the keys seen named) and sends no create: never a shorter listing.
#[test]
fn a_listing_page_in_an_unknown_shape_creates_nothing() {
    let (fake, env) = five_groups_in_pages_of_two();
    sync_not_understood(
        &env,
        Match::new("GET", "start_key="),
        json!({"status": "success", "rows": [{"id": "x", "name": "H4"}]}),
        "the group listing: answer not understood (an object with keys: rows, status; expected {\"data\": [...]}",
    );
    let creates = |f: &FakeKazoo| {
        f.requests()
            .iter()
            .filter(|r| r.method == "PUT" && r.path.ends_with("/groups"))
            .count()
    };
    assert_eq!(creates(&fake), 0, "no create was sent");
    assert_eq!(fake.all_group_names().len(), 5);
    fake.clear_faults();
    env.sync().expect(0);
    assert_eq!(creates(&fake), 1, "H4 adopted, New created");
    assert_eq!(fake.all_group_names().len(), 6);
}
