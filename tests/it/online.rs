//! Issue 12: `check --online` against every fake, presence before removal (teams),
//! `explain --online`, completions and man pages.

use std::process::Command;
use std::sync::Arc;

use serde_json::Value;

use crate::fakes::{Fake, deepcall, kazoo, maestro, scim2, teams};
use crate::harness::{BIN, Env, G, Run, g};

/// A config with one target per fake, named `maestro`, `scim2`, `teams`, `deepcall`, `kazoo`.
struct Many {
    dir: tempfile::TempDir,
    fakes: Vec<(&'static str, Arc<dyn Fake>)>,
}

impl Many {
    fn all() -> Many {
        let fakes: Vec<(&'static str, Arc<dyn Fake>)> = vec![
            ("maestro", maestro::FakeMaestro::start()),
            ("scim2", scim2::Scim2Server::start()),
            ("teams", teams::FakeTeams::start()),
            ("deepcall", deepcall::FakeDeepCall::start()),
            ("kazoo", kazoo::FakeKazoo::start()),
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = String::from("source = \"groups.yaml\"\nstate = \"state/rostersync.db\"\n\n");
        for (name, f) in &fakes {
            cfg += &f.target_toml(name);
            cfg += "\n";
        }
        std::fs::write(dir.path().join("rostersync.toml"), cfg).unwrap();
        std::fs::write(
            dir.path().join("groups.yaml"),
            "groups:\n  - name: Tier 1\n    members: [ana@example.com]\n",
        )
        .unwrap();
        for (_, f) in &fakes {
            f.create_group_by_hand("Existing", &[]);
            f.clear_requests();
        }
        Many { dir, fakes }
    }

    fn run(&self, args: &[&str], env: &[(String, String)]) -> Run {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(self.dir.path().join("rostersync.toml"))
            .args(args)
            .env_remove("ROSTERSYNC_CONFIG")
            .env_remove("ROSTERSYNC_LOG")
            .env("NO_COLOR", "1");
        for (_, f) in &self.fakes {
            for (k, v) in f.env() {
                c.env(k, v);
            }
        }
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    #[track_caller]
    fn assert_no_writes(&self) {
        for (name, f) in &self.fakes {
            let reqs = f.requests();
            assert!(!reqs.is_empty(), "{name} was probed");
            let writes: Vec<_> = reqs.iter().filter(|r| f.is_write(r)).collect();
            // Kazoo's login is a PUT that writes nothing.
            let writes: Vec<_> = writes
                .into_iter()
                .filter(|r| !r.path.ends_with("/api_auth"))
                .collect();
            assert!(writes.is_empty(), "{name} received writes: {writes:?}");
        }
    }
}

#[test]
fn check_online_probes_every_target_read_only() {
    let m = Many::all();
    let r = m.run(&["check", "--online"], &[]).expect(0);
    for (name, f) in &m.fakes {
        let line = r
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("target {name} {} ok: ", f.kind())))
            .unwrap_or_else(|| panic!("a line for {name}:\n{}", r.stdout));
        assert!(line.contains("answer understood"), "{line}");
        assert!(line.contains(" listed"), "{line}");
        assert!(line.ends_with(" ms)"), "{line}");
    }
    assert!(r.stdout.ends_with("ok\n"), "{}", r.stdout);
    println!("{}", r.stdout);
    m.assert_no_writes();

    let j = m
        .run(&["check", "--online", "--output", "json"], &[])
        .expect(0);
    let v: Value = serde_json::from_str(&j.stdout).expect("one JSON document");
    assert_eq!(v["ok"], true);
    assert_eq!(v["targets"].as_array().unwrap().len(), 5);
    assert_eq!(v["targets"][0]["probe"]["noun"], "groups");
    assert!(v["targets"][4]["latency_ms"].is_u64());

    // Without --online: no request at all, JSON too.
    for (_, f) in &m.fakes {
        f.clear_requests();
    }
    let j = m.run(&["check", "--output", "json"], &[]).expect(0);
    let v: Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(
        (v["online"].clone(), v["ok"].clone()),
        (Value::Bool(false), Value::Bool(true))
    );
    for (name, f) in &m.fakes {
        assert!(
            f.requests().is_empty(),
            "{name}: check without --online sends nothing"
        );
    }
}

#[test]
fn check_online_names_the_target_whose_secret_is_wrong() {
    let m = Many::all();
    let teams = &m.fakes[2].1;
    let (var, _) = teams.env().remove(0);
    let r = m
        .run(&["check", "--online"], &[(var, "wrong-secret".into())])
        .expect(1);
    let bad = r
        .stdout
        .lines()
        .find(|l| l.starts_with("target teams teams FAILED: "))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(bad.contains("401"), "{bad}");
    assert!(r.stdout.ends_with("not ok: teams\n"), "{}", r.stdout);
    for name in ["maestro", "scim2", "deepcall", "kazoo"] {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with(&format!("target {name} ")) && l.contains(" ok: ")),
            "{name} still ok:\n{}",
            r.stdout
        );
    }
    m.assert_no_writes();
    let j = m.run(
        &["check", "--online", "--output", "json"],
        &[(teams.env().remove(0).0, "x".into())],
    );
    assert_eq!(j.code, 1);
    let v: Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(v["failing"], serde_json::json!(["teams"]));
}

/// Presence requests the teams fake answered.
fn presence_reads(f: &teams::FakeTeams) -> Vec<String> {
    f.requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains("/presence"))
        .map(|r| r.path)
        .collect()
}

#[test]
fn presence_before_removal_marks_and_defers_online_agents() {
    let fake = teams::FakeTeams::start_with_ids_in_source();
    fake.set_rate_limit(None);
    // Pages of one record: the presence read pages (3 members -> 3 pages).
    fake.set_presence_page_cap(1);
    let mut env = Env::new(fake.clone());
    let (on, off, stay) = ("on@example.com", "off@example.com", "stay@example.com");
    let other = "other@example.com";
    let before: Vec<G> = vec![g("Tier 1", &[on, off, stay]), g("Tier 2", &[other])];
    env.write_source(&before);
    env.sync().expect(0);
    fake.set_online(on, true);
    fake.set_online(other, true);
    fake.clear_requests();

    // Tier 1 loses one online and one offline agent; Tier 2 only gains somebody.
    let after: Vec<G> = vec![
        g("Tier 1", &[stay]),
        g("Tier 2", &[other, "new@example.com"]),
    ];
    env.write_source(&after);
    let dry = env.run(&["sync", "--dry-run"]).expect(0);
    assert!(
        dry.stdout.contains(&format!("      - {on} (online now)\n")),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains(&format!("      - {off}\n")),
        "{}",
        dry.stdout
    );
    let t1 = fake.team_id("Tier 1").unwrap();
    let reads = presence_reads(&fake);
    assert_eq!(reads.len(), 3, "one paged read of Tier 1 only: {reads:?}");
    assert!(reads.iter().all(|p| p.contains(&t1)), "{reads:?}");
    assert!(
        fake.requests().iter().all(|r| r.method == "GET"),
        "a dry-run only reads"
    );

    let json = env
        .run(&["sync", "--dry-run", "--output", "json"])
        .expect(0);
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    let ops = v["targets"][0]["plan"]["ops"].as_array().unwrap();
    let rem = ops.iter().find(|o| o["name"] == "Tier 1").unwrap()["remove"].clone();
    let on_json = rem
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == on)
        .unwrap();
    let off_json = rem
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == off)
        .unwrap();
    assert_eq!(on_json["online"], true);
    assert!(off_json.get("online").is_none(), "{off_json}");

    // defer_online_removals: the offline agent goes, the online one stays, exit 0.
    env.set_extra("defer_online_removals = true");
    fake.clear_requests();
    let r = env.sync().expect(0);
    assert!(
        r.stdout
            .contains(&format!("      - {on} (online now, deferred)")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("1 removals deferred (online now)"),
        "{}",
        r.stdout
    );
    assert_eq!(presence_reads(&fake).len(), 3);
    let got = fake.groups();
    let want: std::collections::BTreeSet<String> =
        [on, stay].iter().map(|s| s.to_string()).collect();
    assert_eq!(
        got["Tier 1"], want,
        "the online agent stays, the offline one is removed"
    );
    assert_eq!(got["Tier 2"].len(), 2);

    // Still online: deferred again, still exit 0.
    env.sync().expect(0);
    assert!(fake.groups()["Tier 1"].contains(on));

    // Once offline, the next run removes them.
    fake.set_online(on, false);
    fake.clear_requests();
    let r = env.sync().expect(0);
    assert!(!r.stdout.contains("deferred"), "{}", r.stdout);
    assert_eq!(
        presence_reads(&fake).len(),
        2,
        "one paged read: two members, two pages"
    );
    env.assert_converged(&after);

    // Nothing to remove: no presence read at all.
    fake.clear_requests();
    env.sync().expect(0);
    assert!(presence_reads(&fake).is_empty());
}
