//! Secrets never leave: every command (check, sync, sync --dry-run, --save-plan and
//! --plan, --full, history, state, explain, the daemon and its /metrics and /healthz) run
//! with recognisable secret values, for every kind, while the fake echoes the secrets back
//! in error bodies; stdout, stderr, the /metrics text, the state database and every file
//! written are scanned for them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fakes::{Fake, Fault, Match, deepcall, kazoo, maestro, teams};
use crate::harness::*;

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    Some(raw)
}

/// Every file below `dir`, with its bytes.
fn files(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p.display().to_string(), b));
        }
    }
}

/// A body that repeats every secret rostersync sent back, as a careless vendor's error page
/// would: every secret of the fake (with the forms it travels in), except DeepCall's
/// `ssid` (another way to log in, not configured here) and Kazoo's session tokens (issued
/// at each run's login; every Kazoo answer of the fake carries the current one anyway).
fn echo(fake: &dyn Fake) -> serde_json::Value {
    let mut secrets = fake.secrets();
    match fake.kind() {
        "assign_group" => secrets.truncate(2),
        // The session token in use is only known once the run has logged in (the fake's
        // own answers carry it, as Kazoo's do): echoed here is the API key.
        "kazoo" => secrets.truncate(1),
        _ => {}
    }
    let all = secrets.join(" / ");
    serde_json::json!({
        "status": "error",
        "code": 1000,
        "message": format!("invalid credentials: {all}"),
        "detail": format!("token {all} refused"),
        "error": format!("bad key {all}"),
    })
}

fn every_command(fake: Arc<dyn Fake>) {
    let mut env = Env::new(fake.clone());
    let port = free_port();
    env.set_extra(&format!(
        "[schedule]\ncron = \"0 0 1 1 *\"\nwatch = false\n\n[metrics]\nlisten = \"127.0.0.1:{port}\""
    ));
    env.set_target_extra("max_retries = 1\nretry_base = \"10ms\"");
    let groups = vec![
        g("Tier 1", &[&email(1), &email(2)]),
        g("Tier 2", &[&email(3)]),
    ];
    env.write_source(&groups);
    let secrets = fake.secrets();
    assert!(!secrets.is_empty());
    let mut texts: Vec<(String, String)> = Vec::new();
    let mut keep = |what: &str, r: Run| {
        texts.push((format!("{what} stdout"), r.stdout));
        texts.push((format!("{what} stderr"), r.stderr));
    };

    keep("check", env.run(&["-vv", "check"]));
    // Errors that echo the secrets: on the create (500 and 400) and on the lookups.
    fake.inject(fake.create_request(), Fault::body(500, echo(&*fake)), 2);
    fake.inject(fake.create_request(), Fault::body(400, echo(&*fake)), 1);
    fake.inject(Match::new("*", "/"), Fault::body(401, echo(&*fake)), 1);
    keep("sync (echoing errors)", env.run(&["-vv", "sync"]));
    fake.clear_requests();
    for _ in 0..3 {
        let r = env.run(&["-vv", "sync"]);
        let done = r.code == 0;
        keep("sync", r);
        if done {
            break;
        }
    }
    env.assert_converged(&groups);
    keep(
        "sync --dry-run json",
        env.run(&[
            "--log-format",
            "json",
            "-vv",
            "sync",
            "--dry-run",
            "--output",
            "json",
        ]),
    );
    let mut more = groups.clone();
    more.push(g("Tier 3", &[&email(4)]));
    env.write_source(&more);
    let plan = env.path("plan.json");
    let plan_s = plan.to_str().unwrap();
    keep(
        "sync --dry-run --save-plan",
        env.run(&["-vv", "sync", "--dry-run", "--save-plan", plan_s]),
    );
    fake.inject(fake.membership_write(), Fault::body(500, echo(&*fake)), 1);
    fake.inject(fake.create_request(), Fault::body(500, echo(&*fake)), 1);
    keep("sync --plan", env.run(&["-vv", "sync", "--plan", plan_s]));
    keep("sync --full", env.run(&["-vv", "sync", "--full"]));
    keep("history", env.run(&["history", "--limit", "500"]));
    keep(
        "history json",
        env.run(&["history", "--limit", "500", "--output", "json"]),
    );
    keep("state", env.run(&["state"]));
    keep("state json", env.run(&["state", "--output", "json"]));
    keep("explain", env.run(&["explain", &email(1)]));
    keep(
        "explain --online json",
        env.run(&["-vv", "explain", &email(1), "--online", "--output", "json"]),
    );
    keep("check --online", env.run(&["-vv", "check", "--online"]));
    // A probe answered with an error body that echoes the secrets.
    fake.inject(Match::new("*", "/"), Fault::body(401, echo(&*fake)), 1);
    keep(
        "check --online (echoing error) json",
        env.run(&["-vv", "check", "--online", "--output", "json"]),
    );

    // The daemon: one run at start (with an echoing error), /metrics, /healthz, SIGTERM.
    fake.inject(fake.create_request(), Fault::body(500, echo(&*fake)), 1);
    more.push(g("Tier 4", &[&email(5)]));
    env.write_source(&more);
    let mut child = env
        .command(&["-vv", "daemon"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let mut metrics = String::new();
    while Instant::now() < end {
        if let Some(m) = http_get(port, "/metrics")
            && m.contains("rostersync_runs_total")
        {
            metrics = m;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !metrics.is_empty(),
        "the daemon served /metrics after a run"
    );
    texts.push(("/metrics".into(), metrics));
    texts.push((
        "/healthz".into(),
        http_get(port, "/healthz").expect("the daemon served /healthz"),
    ));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let end = Instant::now() + Duration::from_secs(40);
    while child.try_wait().unwrap().is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    texts.push((
        "daemon stdout".into(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ));
    texts.push((
        "daemon stderr".into(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ));

    // Every secret, including the session tokens issued during the commands.
    let secrets = fake.secrets();
    // The echoed errors did reach the logs (redacted), so the scan means something.
    let all_logs: String = texts.iter().map(|(_, t)| t.as_str()).collect();
    assert!(
        all_logs.contains("[REDACTED]"),
        "[{}] an echoed secret was seen and scrubbed",
        fake.kind()
    );
    for s in &secrets {
        for (what, text) in &texts {
            if let Some(i) = text.find(s.as_str()) {
                let from = text.floor_char_boundary(i.saturating_sub(300));
                let to = text.floor_char_boundary((i + s.len() + 100).min(text.len()));
                panic!(
                    "[{}] a secret leaked in {what}: ...{}...",
                    fake.kind(),
                    &text[from..to]
                );
            }
        }
    }
    let mut written = Vec::new();
    files(env.dir.path(), &mut written);
    assert!(written.iter().any(|(p, _)| p.ends_with("plan.json")));
    assert!(written.iter().any(|(p, _)| p.ends_with("rostersync.db")));
    for s in &secrets {
        for (path, bytes) in &written {
            if let Some(i) = bytes.windows(s.len()).position(|w| w == s.as_bytes()) {
                let ctx = String::from_utf8_lossy(
                    &bytes[i.saturating_sub(200)..(i + s.len() + 60).min(bytes.len())],
                );
                panic!("[{}] a secret leaked into {path}: ...{ctx}...", fake.kind());
            }
        }
    }
    env.assert_no_secret(&[]);
    eprintln!(
        "[secrets] {}: {} outputs and {} files scanned for {} secrets: clean",
        fake.kind(),
        texts.len(),
        written.len(),
        secrets.len()
    );
}

#[test]
fn no_command_leaks_a_secret_teams() {
    let f = teams::FakeTeams::start();
    f.set_rate_limit(None);
    every_command(f);
}

#[test]
fn no_command_leaks_a_secret_assign_group() {
    every_command(deepcall::FakeDeepCall::start());
}

#[test]
fn no_command_leaks_a_secret_kazoo() {
    every_command(kazoo::FakeKazoo::start());
}

#[test]
fn no_command_leaks_a_secret_maestroqa() {
    every_command(maestro::FakeMaestro::start());
}
