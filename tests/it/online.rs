//! Issue 12: `check --online` against every fake, presence before removal (teams),
//! `explain --online`, completions and man pages.

use std::process::Command;
use std::sync::Arc;

use serde_json::Value;

use crate::fakes::{Fake, deepcall, kazoo, maestro, scim2, teams};
use crate::harness::{BIN, Run};

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
