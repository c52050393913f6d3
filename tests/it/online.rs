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
            .find(|l| target_line(l, name))
            .unwrap_or_else(|| panic!("a line for {name}:\n{}", r.stdout));
        assert!(line.contains(&format!(" {} ", f.kind())), "{line}");
        assert!(line.contains(" ok: "), "{line}");
        assert!(line.contains("answer understood"), "{line}");
        assert!(line.contains(" listed"), "{line}");
        assert!(line.ends_with(" ms)"), "{line}");
    }
    assert!(r.stdout.ends_with("ok\n"), "{}", r.stdout);
    println!("{}", r.stdout);
    m.assert_no_writes();
    // One line per target: its verdict is said once.
    for (name, _) in &m.fakes {
        let n = r.stdout.lines().filter(|l| target_line(l, name)).count();
        assert_eq!(n, 1, "{name}:\n{}", r.stdout);
    }

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
    println!("{}", r.stdout);
    // One line for the refused target, and it says FAILED (no "ok" anywhere for it).
    let lines: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| target_line(l, "teams"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", r.stdout);
    let bad = lines[0];
    assert!(bad.contains(" FAILED: "), "{bad}");
    assert!(!bad.contains(" ok"), "{bad}");
    assert!(bad.contains("401"), "{bad}");
    assert!(r.stdout.ends_with("not ok: teams\n"), "{}", r.stdout);
    for name in ["maestro", "scim2", "deepcall", "kazoo"] {
        assert!(
            r.stdout
                .lines()
                .any(|l| target_line(l, name) && l.contains(" ok: ")),
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

/// Whether `line` is `check`'s line for target `name`.
fn target_line(line: &str, name: &str) -> bool {
    let mut w = line.split_whitespace();
    w.next() == Some("target") && w.next() == Some(name)
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
    println!("{}", dry.stdout);
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

#[test]
fn explain_online_shows_what_kazoo_holds_and_marks_disagreements() {
    let fake = kazoo::FakeKazoo::start();
    let env = Env::new(fake.clone());
    let (ana, bo) = ("ana@example.com", "bo@example.com");
    let groups = vec![g("Tier 1", &[ana, bo]), g("Tier 2", &[ana])];
    env.write_source(&groups);
    env.sync().expect(0);

    // Offline: the known state agrees, nothing asked of the target.
    fake.clear_requests();
    let r = env.run(&["explain", ana]).expect(0);
    assert!(
        r.stdout.contains("in \"Tier 1\"") && r.stdout.contains("the known state agrees"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains('!'),
        "no disagreement yet:\n{}",
        r.stdout
    );
    assert!(
        fake.requests().is_empty(),
        "explain without --online sends nothing"
    );

    // By hand: ana added to an unmanaged group, removed from a managed one.
    fake.create_group_by_hand("Hand Made", &[ana]);
    fake.set_members_by_hand("Tier 2", &[]);
    fake.clear_requests();
    let r = env.run(&["explain", ana, "--online"]).expect(0);
    let text = &r.stdout;
    println!("{text}");
    assert!(
        text.contains("! not meant to be in \"Hand Made\"; on the target now")
            && text.contains("a group rostersync does not manage"),
        "{text}"
    );
    assert!(
        text.contains("! in \"Tier 2\"") && text.contains("NOT on the target now"),
        "{text}"
    );
    assert!(
        text.contains("  in \"Tier 1\"")
            && text.contains("; the known state agrees; on the target now"),
        "{text}"
    );
    let reqs = fake.requests();
    assert!(
        reqs.iter().any(|r| r.method == "GET"
            && r.path.contains("/users/")
            && r.path.ends_with("/groups")),
        "groups containing a user: {reqs:?}"
    );
    assert!(
        reqs.iter()
            .all(|r| r.method == "GET" || r.path.ends_with("/api_auth")),
        "read-only: {reqs:?}"
    );

    let j = env
        .run(&["explain", ana, "--online", "--output", "json"])
        .expect(0);
    let v: Value = serde_json::from_str(&j.stdout).unwrap();
    let gs = v["targets"][0]["groups"].as_array().unwrap();
    let by = |n: &str| gs.iter().find(|g| g["name"] == n).unwrap().clone();
    assert_eq!(by("Hand Made")["managed"], false);
    assert_eq!(by("Hand Made")["online"], true);
    assert_eq!(by("Tier 2")["online"], false);
    assert!(!by("Tier 2")["disagreements"].as_array().unwrap().is_empty());
    assert!(by("Tier 1")["disagreements"].as_array().unwrap().is_empty());
}

#[test]
fn explain_names_the_maestroqa_member_id_and_reads_each_group_online() {
    let fake = maestro::FakeMaestro::start();
    let env = Env::new(fake.clone());
    let ana = "ana@example.com";
    env.write_source(&[g("Tier 1", &[ana])]);
    env.sync().expect(0);
    let r = env.run(&["explain", ana]).expect(0);
    assert!(
        r.stdout
            .contains(&format!("member id {ana} (the email itself)")),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("not resolved"), "{}", r.stdout);
    fake.set_members_by_hand("Tier 1", &[]);
    let r = env.run(&["explain", ana, "--online"]).expect(0);
    assert!(r.stdout.contains("! in \"Tier 1\""), "{}", r.stdout);
    assert!(r.stdout.contains("NOT on the target now"), "{}", r.stdout);
}

#[test]
fn completions_and_man_pages_are_generated_from_the_definitions() {
    let run = |args: &[&str]| {
        let o = Command::new(BIN)
            .args(args)
            .env("ROSTERSYNC_CONFIG", "/nonexistent")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let s = run(&["completions", shell]);
        assert!(s.contains("rostersync") && s.contains("online"), "{shell}");
        std::fs::write(dir.path().join(shell), &s).unwrap();
    }
    let bash = Command::new("bash")
        .arg("-n")
        .arg(dir.path().join("bash"))
        .status()
        .unwrap();
    assert!(bash.success(), "the bash completion parses");
    if let Ok(st) = Command::new("zsh")
        .arg("-n")
        .arg(dir.path().join("zsh"))
        .status()
    {
        assert!(st.success(), "the zsh completion parses");
    }
    if let Ok(st) = Command::new("fish")
        .arg("--no-execute")
        .arg(dir.path().join("fish"))
        .status()
    {
        assert!(st.success(), "the fish completion parses");
    }

    let page = run(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH rostersync 1"),
        "{}",
        &page[..200.min(page.len())]
    );
    assert!(
        page.contains(".SH NAME") && page.contains(".SH SYNOPSIS"),
        "roff sections"
    );
    let out = dir.path().join("man");
    run(&["man", "--out-dir", out.to_str().unwrap()]);
    for p in [
        "rostersync.1",
        "rostersync-check.1",
        "rostersync-explain.1",
        "rostersync-completions.1",
    ] {
        assert!(out.join(p).exists(), "{p}");
    }
    let check = std::fs::read_to_string(out.join("rostersync-check.1")).unwrap();
    assert!(check.contains("online"), "{check}");
    // Render it where groff is installed (Debian: groff-base).
    if let Ok(o) = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(out.join("rostersync.1"))
        .output()
    {
        assert!(
            o.status.success(),
            "groff: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let warnings = String::from_utf8_lossy(&o.stderr);
        assert!(warnings.trim().is_empty(), "groff warnings: {warnings}");
    }
}

#[test]
fn every_flag_has_a_help_line() {
    let o = Command::new(BIN)
        .args(["man", "--out-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(o.status.success());
    for cmd in [
        "check",
        "sync",
        "history",
        "state",
        "explain",
        "completions",
        "man",
    ] {
        let o = Command::new(BIN).args([cmd, "--help"]).output().unwrap();
        assert!(o.status.success(), "`rostersync {cmd} --help`");
        let help = String::from_utf8(o.stdout).unwrap();
        let mut lines = help.lines().peekable();
        let mut flags = 0;
        while let Some(l) = lines.next() {
            let t = l.trim_start();
            if t.starts_with("--") || (t.starts_with('-') && t.len() > 1) || t.starts_with('<') {
                flags += 1;
                // clap puts the help on the same line (after two spaces) or the next one.
                let same = t.split("  ").filter(|s| !s.trim().is_empty()).count() > 1;
                let next = lines.peek().is_some_and(|n| n.starts_with("          "));
                assert!(
                    same || next,
                    "`rostersync {cmd}`: no help for {t:?}\n{help}"
                );
            }
        }
        // Every command has at least --help: a help text with no flag line was not read.
        assert!(
            flags >= 1,
            "`rostersync {cmd} --help` lists no flag:\n{help}"
        );
    }
}

/// The man pages and completions `cargo deb` packages (dist/) are what the binary
/// generates now. `UPDATE_DIST=1` regenerates them.
#[test]
fn dist_is_fresh() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist");
    let gen_dir = tempfile::tempdir().unwrap();
    let mut want: Vec<(String, Vec<u8>)> = Vec::new();
    let o = Command::new(BIN)
        .args(["man", "--out-dir"])
        .arg(gen_dir.path())
        .output()
        .unwrap();
    assert!(o.status.success());
    let mut pages: Vec<_> = std::fs::read_dir(gen_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.sort();
    for p in pages {
        let name = format!("man/{}", p.file_name().unwrap().to_str().unwrap());
        want.push((name, std::fs::read(p).unwrap()));
    }
    for (shell, file) in [
        ("bash", "rostersync.bash"),
        ("zsh", "_rostersync"),
        ("fish", "rostersync.fish"),
    ] {
        let o = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(o.status.success());
        want.push((format!("completions/{file}"), o.stdout));
    }
    let update = std::env::var_os("UPDATE_DIST").is_some();
    for (rel, bytes) in &want {
        let path = root.join(rel);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
        } else {
            assert!(
                std::fs::read(&path).ok().as_ref() == Some(bytes),
                "dist/{rel} is stale: run `UPDATE_DIST=1 cargo test --test it dist_is_fresh`"
            );
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(root.join("man"))
        .unwrap()
        .map(|e| format!("man/{}", e.unwrap().file_name().to_str().unwrap()))
        .collect();
    on_disk.sort();
    let mut pages: Vec<&String> = want
        .iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("man/"))
        .collect();
    pages.sort();
    assert_eq!(
        on_disk.iter().collect::<Vec<_>>(),
        pages,
        "no stale man page in dist/man"
    );
}
