//! The command line: the shipped example, config errors, exit codes, the lock, JSON output.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::fakes::maestro::FakeMaestro;
use crate::fakes::{Fake, Fault};
use crate::harness::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("ROSTERSYNC_CONFIG").env("NO_COLOR", "1");
    c
}

#[test]
fn shipped_example_dry_run_needs_no_network_and_changes_nothing() {
    // Copy the example so the test never writes next to the repo's own files.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    for f in ["rostersync.toml", "groups.yaml"] {
        std::fs::copy(
            repo().join("config").join(f),
            dir.path().join("config").join(f),
        )
        .unwrap();
    }
    let out = bin()
        .args(["--config", "config/rostersync.toml", "sync", "--dry-run"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("maestro (scim)") && stdout.contains("+ create \"Tier 1 Support\""),
        "{stdout}"
    );
    assert!(stdout.contains("Plan: "), "{stdout}");
    assert!(
        !dir.path().join("state").exists(),
        "a dry-run creates no state database"
    );

    // JSON: exactly one document on stdout, logs on stderr.
    let out = bin()
        .args([
            "--config",
            "config/rostersync.toml",
            "sync",
            "--dry-run",
            "--output",
            "json",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["dry_run"], true);
    assert!(v["targets"][0]["plan"]["ops"].as_array().unwrap().len() >= 3);

    // check: a one-screen summary; secrets are missing here, which check reports (exit 2)
    let out = bin()
        .args(["--config", "config/rostersync.toml", "check"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("3 groups") && stdout.contains("MAESTRO_TOKEN"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(2));
    let out = bin()
        .args(["--config", "config/rostersync.toml", "check"])
        .envs([
            ("MAESTRO_TOKEN", "x1234"),
            ("DIXA_TOKEN", "x1234"),
            ("DEEPCALL_USER_ID", "u1"),
            ("DEEPCALL_TOKEN", "x1234"),
            ("KAZOO_API_KEY", "x1234"),
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn config_mistakes_are_named_by_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("g.yaml"),
        "groups:\n  - name: A\n    members: [a@example.com]\n",
    )
    .unwrap();
    let target = |extra: &str| {
        format!(
            "source = \"g.yaml\"\n[[target]]\nname = \"m\"\nkind = \"scim\"\nbase_url = \"http://127.0.0.1:9/scim\"\ntoken_env = \"T\"\n{extra}"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        ("source = \"g.yaml\"\n[[target]]\nname = \"m\"\nkind = \"ldap\"\nbase_url = \"http://x\"\ntoken_env = \"T\"\n".into(), "kind"),
        ("source = \"g.yaml\"\n[[target]]\nname = \"m\"\nkind = \"scim\"\nbase_url = \"not a url\"\ntoken_env = \"T\"\n".into(), "base_url"),
        ("source = \"g.yaml\"\n[[target]]\nname = \"m\"\nkind = \"scim\"\nbase_url = \"http://x\"\n".into(), "token_env"),
        (format!("{}[[target]]\nname = \"m\"\nkind = \"teams\"\nbase_url = \"http://y\"\ntoken_env = \"T\"\n", target("")), "unique"),
        (target("timeout = \"soon\""), "timeout"),
        (target("membership = \"sometimes\""), "membership"),
        (target("colour = \"red\""), "colour"),
        ("source = \"g.yaml\"\n[schedule]\ncron = \"every minute\"\n".into(), "schedule.cron"),
        ("source = \"g.yaml\"\n[safety]\nmax_removal_ratio = 2.0\n".into(), "max_removal_ratio"),
        ("source = [\"g.yaml\"\n".into(), "TOML"),
        ("state = \"s.db\"\n".into(), "source"),
    ];
    for (text, needle) in cases {
        std::fs::write(dir.path().join("c.toml"), &text).unwrap();
        let out = bin()
            .arg("--config")
            .arg(dir.path().join("c.toml"))
            .args(["sync", "--dry-run"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}\n{stderr}");
        assert!(
            stderr.contains(needle) && stderr.contains("c.toml"),
            "expected {needle:?} in: {stderr}"
        );
    }
    // a missing secret is fine for a dry-run (nothing is sent) and an error for a sync
    std::fs::write(dir.path().join("c.toml"), target("")).unwrap();
    let out = bin()
        .arg("--config")
        .arg(dir.path().join("c.toml"))
        .args(["sync"])
        .env_remove("T")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token_env (T) is not set"));
    // --target naming nothing
    let out = bin()
        .arg("--config")
        .arg(dir.path().join("c.toml"))
        .args(["sync", "--dry-run", "--target", "zz"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("zz"));
}

#[test]
fn environment_overrides_config_keys() {
    let fake = FakeMaestro::start();
    let env = Env::new(fake.clone());
    env.write_source(&[g("A", &[&email(1), &email(2)])]);
    env.sync().expect(0);
    env.write_source(&[g("A", &[&email(1)])]);
    // ROSTERSYNC_SAFETY__MAX_REMOVALS=0 makes any removal trip the guard
    let out = env
        .command(&["sync"])
        .env("ROSTERSYNC_SAFETY__MAX_REMOVALS", "0")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.sync().expect(0);
}

#[test]
fn a_second_writer_exits_4_naming_the_holder() {
    let fake = FakeMaestro::start();
    let env = Env::new(fake.clone());
    env.write_source(&[g("A", &[&email(1)]), g("B", &[&email(2)])]);
    fake.inject(
        fake.create_request(),
        Fault::Delay(Duration::from_millis(1500)),
        2,
    );
    let mut first = env.spawn(&["sync"]);
    assert!(wait_until(Duration::from_secs(10), || !fake
        .requests()
        .is_empty()
        || env.db_path().exists()));
    std::thread::sleep(Duration::from_millis(200));
    let second = env.sync();
    assert_eq!(second.code, 4, "{}", second.stderr);
    assert!(
        second.stderr.contains(&format!("pid {}", first.id())),
        "{}",
        second.stderr
    );
    // a dry-run only reads, so it may run beside the writer
    env.run(&["sync", "--dry-run"]).expect(0);
    assert!(first.wait().unwrap().success());
    env.sync().expect(0);
}

#[test]
fn json_logs_are_one_object_per_line_with_the_run_id() {
    let fake = FakeMaestro::start();
    let env = Env::new(fake.clone());
    env.write_source(&[g("A", &[&email(1)])]);
    let r = env
        .run(&["--log-format", "json", "sync", "--output", "json"])
        .expect(0);
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).expect("stdout is one JSON document");
    assert_eq!(v["run"], 1);
    let lines: Vec<serde_json::Value> = r
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let call = lines
        .iter()
        .find(|l| l["op"] == "create")
        .expect("a log line per call");
    assert_eq!(call["span"]["run"], 1, "{call}");
    assert_eq!(call["group"], "A");
    assert!(
        call["latency_ms"].is_number() && call["status"] == 201,
        "{call}"
    );
    let last = lines.last().unwrap();
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .starts_with("run 1 done in"),
        "{last}"
    );
}

#[test]
fn explain_says_where_a_person_is_and_what_touched_them() {
    let fake = FakeMaestro::start();
    let env = Env::new(fake.clone());
    env.write_source(&[g("A", &[&email(1), &email(2)]), g("B", &[&email(1)])]);
    env.sync().expect(0);
    let r = env.run(&["explain", &email(1).to_uppercase()]).expect(0);
    assert!(
        r.stdout.contains("in \"A\"") && r.stdout.contains("in \"B\""),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("groups.yaml:"),
        "names file and line: {}",
        r.stdout
    );
    assert!(
        r.stdout.contains("last call:") && r.stdout.contains("create"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_saved_plan_is_applied_exactly_or_refused_when_stale() {
    let fake = FakeMaestro::start();
    let env = Env::new(fake.clone());
    let v1 = [g("A", &[&email(1), &email(2)]), g("B", &[&email(3)])];
    env.write_source(&v1);
    env.sync().expect(0);
    let v2 = [
        g("A", &[&email(1), &email(4)]),
        g("B", &[&email(3)]),
        g("C", &[&email(5)]),
    ];
    env.write_source(&v2);
    let plan = env.path("plan.json");
    let plan_s = plan.to_str().unwrap();
    fake.clear_requests();
    let r = env
        .run(&["sync", "--dry-run", "--save-plan", plan_s])
        .expect(0);
    assert!(r.stdout.contains("+ create \"C\""), "{}", r.stdout);
    assert!(fake.requests().iter().all(|q| !q.is_write()));
    env.run(&["sync", "--plan", plan_s]).expect(0);
    env.assert_converged(&v2);

    // the source changed after the plan was saved: refused, nothing sent
    let v3 = [
        g("A", &[&email(1)]),
        g("B", &[&email(3)]),
        g("C", &[&email(5)]),
    ];
    env.write_source(&v3);
    env.run(&["sync", "--dry-run", "--save-plan", plan_s])
        .expect(0);
    env.write_source(&[
        g("A", &[&email(9)]),
        g("B", &[&email(3)]),
        g("C", &[&email(5)]),
    ]);
    fake.clear_requests();
    let r = env.run(&["sync", "--plan", plan_s]).expect(2);
    assert!(r.stderr.contains("source changed"), "{}", r.stderr);
    assert!(fake.requests().is_empty());

    // the known state changed (another run applied something): refused too
    env.write_source(&v3);
    env.run(&["sync", "--dry-run", "--save-plan", plan_s])
        .expect(0);
    fake.add_user(&email(6));
    fake.set_members_by_hand("B", &[&email(3), &email(6)]);
    env.run(&["sync", "--full"]).expect(0);
    fake.clear_requests();
    let r = env.run(&["sync", "--plan", plan_s]).expect(2);
    assert!(r.stderr.contains("known state"), "{}", r.stderr);
    assert!(fake.requests().is_empty());
    // --plan and --dry-run do not mix
    assert_eq!(env.run(&["sync", "--plan", plan_s, "--dry-run"]).code, 2);
}

#[test]
fn an_unusable_ca_file_stops_check_and_sync_with_exit_2_before_any_request() {
    let fake = FakeMaestro::start();
    let mut env = Env::new(fake.clone());
    env.write_source(&[g("Tier 1", &["a@example.com"])]);
    let garbage = env.path("not-a-ca.pem");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    for (ca, says) in [
        ("/nonexistent/ca.pem".to_string(), "cannot read it"),
        (garbage.display().to_string(), "holds no PEM certificate"),
    ] {
        env.set_target_extra(&format!("ca_file = \"{ca}\""));
        for args in [&["check"][..], &["sync"], &["sync", "--dry-run"]] {
            let r = env.run(args).expect(2);
            assert!(
                r.stderr.contains("ca_file") && r.stderr.contains(says),
                "{args:?}: {}",
                r.stderr
            );
            assert!(!r.stdout.contains("\nok\n"), "{}", r.stdout);
        }
    }
    assert!(fake.requests().is_empty(), "nothing may be sent");
    assert!(!env.db_path().exists(), "nothing was run");
}

#[test]
fn a_target_whose_known_state_cannot_be_read_fails_with_exit_1_and_sends_nothing() {
    let fake = FakeMaestro::start();
    let env = Env::new(fake.clone());
    env.write_source(&[g("Tier 1", &["a@example.com", "b@example.com"])]);
    env.sync().expect(0);
    // One row of the known state that the store cannot read back.
    let db = rusqlite::Connection::open(env.db_path()).unwrap();
    let n = db
        .execute(
            "UPDATE members SET owned = 'not a flag' WHERE target = ?1",
            [T],
        )
        .unwrap();
    assert!(n > 0);
    drop(db);
    env.write_source(&[g("Tier 1", &["a@example.com"])]);
    fake.clear_requests();
    for args in [&["sync"][..], &["sync", "--dry-run"]] {
        let r = env.run(args).expect(1);
        assert!(
            r.stdout.contains("known state could not be read")
                || r.stderr.contains("known state could not be read"),
            "{args:?}\n{}\n{}",
            r.stdout,
            r.stderr
        );
    }
    assert!(fake.requests().is_empty(), "nothing may be sent");
    let r = env.run(&["history", "--limit", "1"]).expect(0);
    assert!(r.stdout.contains("failed"), "{}", r.stdout);
}

/// `ROSTERSYNC_CONFIG` names the config file and `ROSTERSYNC_LOG` the log filter: neither
/// is read as a config override (an unknown `ROSTERSYNC_*` variable still is an error).
#[test]
fn rostersync_config_and_log_are_not_config_overrides() {
    let fake = FakeMaestro::start();
    let env = Env::new(fake.clone());
    env.write_source(&[g("Tier 1", &["a@example.com"])]);
    let r = env
        .command(&["check"])
        .env_remove("ROSTERSYNC_CONFIG")
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(0));
    let mut c = bin();
    c.arg("check")
        .env("ROSTERSYNC_CONFIG", env.config_path())
        .env("ROSTERSYNC_LOG", "debug");
    for (k, v) in fake.env() {
        c.env(k, v);
    }
    let r = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(0), "{stderr}");
    c.env("ROSTERSYNC_NO_SUCH_KEY", "1");
    let r = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no_such_key"), "{stderr}");
}

/// Issue 17 item 1: a plan applies only the targets it holds. A dry-run that could not
/// plan a target (here `--full` without its secret) says which targets are missing and
/// never invites applying them; `--plan` touches only what the plan holds; a plan holding
/// no target is refused with exit 2 and sends nothing.
#[test]
fn a_saved_plan_applies_only_the_targets_it_holds() {
    let fake = FakeMaestro::start();
    let second = FakeMaestro::start();
    let mut env = Env::new(fake.clone());
    env.set_extra(&second.target_toml("second"));
    let groups = [g("A", &[&email(1)]), g("B", &[&email(2)])];
    env.write_source(&groups);
    for i in 1..=3 {
        second.add_user(&email(i));
    }
    let both: Vec<(String, String)> = second.env();
    env.run_env(&["sync"], &[], &both).expect(0);
    env.write_source(&[g("A", &[&email(1), &email(3)]), g("B", &[&email(2)])]);
    let plan = env.path("plan.json");
    let plan_s = plan.to_str().unwrap();
    let second_vars: Vec<String> = both.iter().map(|(k, _)| k.clone()).collect();

    // `second` cannot be planned (--full needs its secret): the plan holds `T` only.
    let r = env
        .run_env(
            &["sync", "--dry-run", "--full", "--save-plan", plan_s],
            &second_vars,
            &[],
        )
        .expect(1);
    assert!(
        r.stderr.contains(&format!("for {T} only"))
            && r.stderr.contains("NOT in it")
            && r.stderr.contains("second"),
        "{}",
        r.stderr
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    let held: Vec<&String> = saved["targets"].as_object().unwrap().keys().collect();
    assert_eq!(held, [T]);
    fake.clear_requests();
    second.clear_requests();
    env.run_env(&["sync", "--plan", plan_s], &[], &both)
        .expect(0);
    assert!(fake.requests().iter().any(|q| q.is_write()), "t applied");
    assert!(
        second.requests().is_empty(),
        "the target the plan lacks is never touched"
    );
    // A plan chooses its targets itself.
    let r = env.run_env(
        &["sync", "--plan", plan_s, "--target", "second"],
        &[],
        &both,
    );
    assert_eq!(r.code, 2, "{}", r.stderr);

    // No target can be planned: nothing saved, no invitation to apply it.
    std::fs::remove_file(&plan).unwrap();
    let mut all_vars = second_vars.clone();
    all_vars.extend(fake.env().into_iter().map(|(k, _)| k));
    let r = env
        .run_env(
            &["sync", "--dry-run", "--full", "--save-plan", plan_s],
            &all_vars,
            &[],
        )
        .expect(1);
    assert!(r.stderr.contains("no plan saved"), "{}", r.stderr);
    assert!(!r.stderr.contains("apply it"), "{}", r.stderr);
    assert!(!exists(&plan));

    // A plan holding no target (as an older rostersync saved) is refused: exit 2, nothing
    // sent to any target.
    std::fs::write(
        &plan,
        r#"{"rostersync_plan": 1, "source_digest": "x", "full": true, "allow_mass_removal": false, "targets": {}}"#,
    )
    .unwrap();
    fake.clear_requests();
    second.clear_requests();
    let r = env
        .run_env(&["sync", "--plan", plan_s], &[], &both)
        .expect(2);
    assert!(r.stderr.contains("holds no target"), "{}", r.stderr);
    assert!(fake.requests().is_empty() && second.requests().is_empty());
}
