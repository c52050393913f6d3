//! Hostile input and answers: oversized sources and answers, a million CSV rows, YAML alias
//! bombs, deep nesting, a file that changes while it is read, symlink loops, paths that are
//! not UTF-8, world-readable secret files. Each ends in exit 2 with a clear message (nothing
//! sent) or a correct run, within bounded time and memory: every run here is measured
//! (wall time, peak RSS through `/usr/bin/time` when the machine has it) and the figures
//! are printed (`-- --nocapture`).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fakes::teams::FakeTeams;
use crate::fakes::{Fake, Fault, Match};
use crate::harness::*;

/// A teams fake (ids in the source, no rate limit) and its environment.
fn teams() -> (Arc<FakeTeams>, Env) {
    let fake = FakeTeams::start_with_ids_in_source();
    fake.set_rate_limit(None);
    let env = Env::new(fake.clone());
    (fake, env)
}

/// Points the config at `source` (relative to the config's folder, or absolute) and adds
/// top-level `extra` lines.
fn set_source(env: &Env, source: &Path, extra: &str) {
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let src = source.to_str().expect("a UTF-8 source path in the config");
    let text = text.replace(
        "source = \"groups.yaml\"",
        &format!("source = \"{src}\"\n{extra}"),
    );
    std::fs::write(env.config_path(), text).unwrap();
}

/// What one measured run gave.
struct Measured {
    run: Run,
    secs: f64,
    rss_kib: Option<u64>,
}

impl Measured {
    fn show(&self, what: &str) -> String {
        let rss = self
            .rss_kib
            .map_or("n/a".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0));
        let line = format!(
            "[hostile] {what}: exit {} in {:.2}s, peak RSS {rss}",
            self.run.code, self.secs
        );
        eprintln!("{line}");
        line
    }
    /// Asserts the time and memory bounds.
    #[track_caller]
    fn bounded(&self, what: &str, secs: f64, rss_mib: u64) {
        let line = self.show(what);
        assert!(self.secs < secs, "{line}: slower than {secs}s");
        if let Some(k) = self.rss_kib {
            assert!(k < rss_mib * 1024, "{line}: more than {rss_mib} MiB");
        }
    }
}

/// The binary under test: `RS_TEST_BIN` (e.g. the release build) or the test build.
fn bin() -> PathBuf {
    std::env::var_os("RS_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BIN))
}

/// Runs `rostersync --config <env's config> args`, measuring wall time and peak RSS.
fn measured(env: &Env, args: &[&str]) -> Measured {
    let time = Path::new("/usr/bin/time");
    let mut c = if time.exists() {
        let mut c = Command::new(time);
        c.arg("-f").arg("ROSTERSYNC_RSS_KIB=%M").arg(bin());
        c
    } else {
        Command::new(bin())
    };
    c.arg("--config").arg(env.config_path()).args(args);
    c.env_remove("ROSTERSYNC_CONFIG")
        .env_remove("ROSTERSYNC_LOG")
        .env("NO_COLOR", "1");
    for (k, v) in env.fake.env() {
        c.env(k, v);
    }
    let started = Instant::now();
    let out = c.output().expect("run rostersync");
    let secs = started.elapsed().as_secs_f64();
    let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut rss_kib = None;
    if let Some(i) = stderr.rfind("ROSTERSYNC_RSS_KIB=") {
        rss_kib = stderr[i + 19..].trim().parse().ok();
        stderr.truncate(i);
    }
    // Measured through /usr/bin/time: the figure must be there, or the memory bound of
    // `bounded` would silently check nothing.
    assert!(
        !time.exists() || rss_kib.is_some(),
        "no peak RSS from /usr/bin/time in: {stderr}"
    );
    Measured {
        run: Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        },
        secs,
        rss_kib,
    }
}

/// `check` and `sync` both exit 2 naming `needle`, within bounds, and nothing is sent.
#[track_caller]
fn refused(fake: &FakeTeams, env: &Env, what: &str, needle: &str, secs: f64, rss_mib: u64) {
    fake.clear_requests();
    for cmd in ["check", "sync"] {
        let m = measured(env, &[cmd]);
        m.bounded(&format!("{what} ({cmd})"), secs, rss_mib);
        assert_eq!(m.run.code, 2, "{what} ({cmd}): {}", m.run.stderr);
        assert!(
            m.run.stderr.contains(needle),
            "{what} ({cmd}) names {needle:?}: {}",
            m.run.stderr
        );
    }
    assert!(fake.requests().is_empty(), "{what}: nothing sent");
}

/// Writes `groups` groups of `members` members each as block-style YAML (a torn prefix of
/// it is still valid YAML, with fewer groups).
fn yaml_groups(groups: usize, members: usize, salt: usize) -> String {
    let mut y = String::from("groups:\n");
    for g in 0..groups {
        y += &format!("  - name: \"Group {g:06}\"\n    members:\n");
        for m in 0..members {
            y += &format!(
                "      - agent{:06}@example.com\n",
                (g * 31 + m + salt) % 100_000
            );
        }
    }
    y
}

/// Writes `n` bytes of valid YAML groups to `path`, streamed (never all in memory).
fn write_big_yaml(path: &Path, n: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(b"groups:\n").unwrap();
    let mut written = 8u64;
    let mut i = 0usize;
    while written < n {
        let members: Vec<String> = (0..50)
            .map(|k| format!("agent{:06}@example.com", (i * 7 + k) % 100_000))
            .collect();
        let line = format!(
            "  - name: \"G{i}\"\n    members: [{}]\n",
            members.join(", ")
        );
        f.write_all(line.as_bytes()).unwrap();
        written += line.len() as u64;
        i += 1;
    }
    f.flush().unwrap();
}

/// A 200 MB source is refused before any of it is read (the default `max_source_bytes` is
/// 128 MiB), as one file and as a directory of files; the same limit, set low, refuses a
/// 2 MB source.
#[test]
fn an_oversized_source_is_refused_unread() {
    let (fake, env) = teams();
    env.write_source(&[g("Tier 1", &[&email(1)])]);
    env.sync().expect(0);
    let big = env.path("big.yaml");
    write_big_yaml(&big, 200 * 1024 * 1024);
    set_source(&env, Path::new("big.yaml"), "");
    refused(
        &fake,
        &env,
        "a 200 MB source file",
        "over max_source_bytes = 134217728 (128.0 MiB)",
        10.0,
        100,
    );
    // The same bytes spread over a directory.
    let dir = env.path("bigdir");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..4 {
        write_big_yaml(&dir.join(format!("part{i}.yaml")), 50 * 1024 * 1024);
    }
    std::fs::remove_file(&big).unwrap();
    env.write_config();
    set_source(&env, Path::new("bigdir"), "");
    refused(
        &fake,
        &env,
        "a 200 MB source directory",
        "in 4 files, over max_source_bytes",
        10.0,
        100,
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // The CI-sized variant of the same limit: 2 MB against max_source_bytes = 1 MiB.
    write_big_yaml(&env.path("two.yaml"), 2 * 1024 * 1024);
    env.write_config();
    set_source(&env, Path::new("two.yaml"), "max_source_bytes = 1048576");
    refused(
        &fake,
        &env,
        "a 2 MB source over max_source_bytes = 1 MiB",
        "over max_source_bytes = 1048576 (1.0 MiB)",
        10.0,
        100,
    );
}

/// A CSV of `rows` memberships (`rows / 100` groups of 100).
fn write_csv(path: &Path, rows: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(b"group,email\n").unwrap();
    for r in 0..rows {
        let (g, m) = (r / 100, r % 100);
        writeln!(
            f,
            "Group {g:05},agent{:06}@example.com",
            (g * 37 + m) % 100_000
        )
        .unwrap();
    }
    f.flush().unwrap();
}

fn csv_rows(rows: usize, secs: f64, rss_mib: u64) {
    let (fake, env) = teams();
    write_csv(&env.path("rows.csv"), rows);
    set_source(&env, Path::new("rows.csv"), "");
    let m = measured(&env, &["check"]);
    m.bounded(&format!("a CSV of {rows} rows (check)"), secs, rss_mib);
    assert_eq!(m.run.code, 0, "{}", m.run.stderr);
    let want = format!("{} groups, {rows} memberships", rows / 100);
    assert!(m.run.stdout.contains(&want), "{want}: {}", m.run.stdout);
    assert!(fake.requests().is_empty(), "check sends nothing");
}

/// 100,000 CSV rows load correctly (the CI variant of the million below).
#[test]
fn a_csv_of_100k_rows_loads() {
    csv_rows(100_000, 30.0, 300);
}

/// A million CSV rows (SPEC 9's design point) load correctly. Slow in a debug build (about
/// 26 s): `#[ignore]`d; run it against the release binary, see BENCHMARKS.md.
#[test]
#[ignore = "slow in a debug build; run with RS_TEST_BIN=target/release/rostersync"]
fn a_csv_of_a_million_rows_loads() {
    csv_rows(1_000_000, 60.0, 1024);
}

/// YAML alias bombs inside `groups`: a billion-laughs nesting (refused at the first
/// alias, a list where an email belongs) and a type-valid one, 10,000 groups whose
/// `members` all alias one list of 1,000 (10 million memberships from 350 KB): refused at
/// the replay budget.
#[test]
fn yaml_alias_bombs_are_refused() {
    let (fake, env) = teams();
    env.write_source(&[g("Tier 1", &[&email(1)])]);
    let mut laughs = String::from("groups:\n  - name: A\n    members: &a0 [");
    laughs += &["a@example.com"; 9].join(", ");
    laughs += "]\n";
    for l in 1..10 {
        laughs += &format!(
            "  - name: B{l}\n    members: &a{l} [{}]\n",
            vec![format!("*a{}", l - 1); 9].join(", ")
        );
    }
    env.write_raw_source("groups.yaml", &laughs);
    refused(&fake, &env, "a billion laughs", "groups.yaml:5", 10.0, 100);

    let mut bomb = String::from("groups:\n  - name: \"G0\"\n    members: &m [");
    bomb += &(0..1000)
        .map(|i| format!("a{i}@example.com"))
        .collect::<Vec<_>>()
        .join(", ");
    bomb += "]\n";
    for i in 1..10_000 {
        bomb += &format!("  - {{name: \"G{i}\", members: *m}}\n");
    }
    env.write_raw_source("groups.yaml", &bomb);
    refused(
        &fake,
        &env,
        "10,000 aliases of a 1,000-member list",
        "too large or too complex: total_replayed_events=1000001 > 1000000",
        40.0,
        300,
    );
}

/// Nesting 100,000 deep in YAML (flow and block), JSON and TOML: refused by each parser's
/// depth limit, never a stack overflow.
#[test]
fn deep_nesting_is_refused() {
    let (fake, env) = teams();
    let open = "[".repeat(100_000);
    let close = "]".repeat(100_000);
    let cases = [
        (
            "deep.yaml",
            format!("groups: {open}{close}\n"),
            "recursion limit",
        ),
        (
            "deep.json",
            format!("{{\"groups\": {open}{close}}}"),
            "deep.json:1",
        ),
        (
            "deep.toml",
            format!("groups = {open}{close}\n"),
            "recursion",
        ),
        (
            "block.yaml",
            (0..3000).fold("groups:\n".to_string(), |s, i| {
                s + &"  ".repeat(i + 1) + "-\n"
            }),
            "block.yaml",
        ),
    ];
    for (file, text, needle) in cases {
        env.write_config();
        env.write_raw_source(file, &text);
        set_source(&env, Path::new(file), "");
        refused(
            &fake,
            &env,
            &format!("nesting in {file}"),
            needle,
            15.0,
            200,
        );
    }
}

/// A file rewritten (not atomically) again and again while rostersync reads it: every run
/// either plans from one whole version (600 or 800 groups) or refuses with exit 2;
/// never from a torn read (a prefix of a version is valid YAML with fewer groups).
#[test]
fn a_file_changing_while_it_is_read_is_never_planned_from() {
    let (fake, env) = teams();
    env.write_source(&[g("Tier 1", &[&email(1)])]);
    let a = yaml_groups(600, 5, 0);
    let b = yaml_groups(800, 5, 7);
    let path = env.path("groups.yaml");
    std::fs::write(&path, &a).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let text = if n.is_multiple_of(2) { &b } else { &a };
                let mut f = std::fs::File::create(&path).unwrap();
                for piece in text.as_bytes().chunks(4 * 1024) {
                    f.write_all(piece).unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
                drop(f);
                // Pauses of 0 to 600 ms: some reads see a settled file, some a torn one.
                std::thread::sleep(Duration::from_millis((n as u64 * 150) % 600));
                n += 1;
            }
            n
        })
    };
    let (mut planned, mut refused_runs) = (Vec::new(), 0);
    for _ in 0..16 {
        let m = measured(&env, &["check"]);
        match m.run.code {
            0 => {
                let ok = m.run.stdout.contains("600 groups, 3000 memberships")
                    || m.run.stdout.contains("800 groups, 4000 memberships");
                assert!(ok, "planned from a torn read: {}", m.run.stdout);
                planned.push(m.secs);
            }
            2 => {
                let e = &m.run.stderr;
                assert!(
                    e.contains("changed while it was read")
                        || e.contains("empty or truncated")
                        || e.contains("groups.yaml:"),
                    "a clear refusal: {e}"
                );
                refused_runs += 1;
            }
            c => panic!("exit {c}: {}", m.run.stderr),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rewrites = writer.join().unwrap();
    eprintln!(
        "[hostile] source rewritten {rewrites} times during 16 checks: {} planned from a whole \
         version, {refused_runs} refused",
        planned.len()
    );
    assert!(fake.requests().is_empty());
    // Settled: the next run reads it whole.
    let m = measured(&env, &["check"]);
    m.bounded("the settled file (check)", 15.0, 200);
    assert_eq!(m.run.code, 0, "{}", m.run.stderr);
}

/// A directory with a symlink loop is walked once (a correct run); a symlink to itself is
/// a clear error (exit 2, nothing sent).
#[test]
fn symlink_loops_end() {
    let (fake, env) = teams();
    let dir = env.path("src");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink("..", dir.join("sub/loop")).unwrap();
    std::os::unix::fs::symlink(&dir, dir.join("sub/abs")).unwrap();
    let groups = vec![g("Tier 1", &[&email(1), &email(2)])];
    env.write_source(&groups);
    std::fs::rename(env.path("groups.yaml"), dir.join("sub/groups.yaml")).unwrap();
    set_source(&env, Path::new("src"), "");
    let m = measured(&env, &["sync"]);
    m.bounded("a directory with symlink loops (sync)", 15.0, 200);
    assert_eq!(m.run.code, 0, "{}", m.run.stderr);
    env.assert_converged(&groups);

    std::os::unix::fs::symlink("self.yaml", dir.join("self.yaml")).unwrap();
    refused(
        &fake,
        &env,
        "a symlink to itself",
        "self.yaml: cannot read",
        15.0,
        200,
    );
}

/// A config and a source under paths that are not UTF-8 (the config's folder and a
/// source file's name): a correct run; an error in such a file names it (lossily), exit 2.
#[test]
fn paths_that_are_not_utf8_work() {
    let (fake, env) = teams();
    let base = env
        .dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"conf\xff"));
    std::fs::create_dir_all(base.join("src")).unwrap();
    let groups = vec![g("Tier 1", &[&email(1), &email(2)])];
    env.write_source(&groups);
    let file = base
        .join("src")
        .join(std::ffi::OsStr::from_bytes(b"gr\xfdoups.yaml"));
    std::fs::rename(env.path("groups.yaml"), &file).unwrap();
    let text = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace("source = \"groups.yaml\"", "source = \"src\"");
    let config = base.join("rostersync.toml");
    std::fs::write(&config, text).unwrap();
    let run = |args: &[&str]| {
        let mut c = Command::new(bin());
        c.arg("--config").arg(&config).args(args);
        c.env_remove("ROSTERSYNC_CONFIG")
            .env_remove("ROSTERSYNC_LOG");
        for (k, v) in fake.env() {
            c.env(k, v);
        }
        let started = Instant::now();
        let out = c.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            started.elapsed().as_secs_f64(),
        )
    };
    let (code, err, secs) = run(&["sync"]);
    eprintln!("[hostile] a source under a non-UTF-8 path (sync): exit {code} in {secs:.2}s");
    assert_eq!(code, 0, "{err}");
    env.assert_converged(&groups);
    assert!(base.join("state/rostersync.db").exists());
    std::fs::write(&file, "groups:\n  - name: A\n    members: [not-an-email]\n").unwrap();
    fake.clear_requests();
    let (code, err, _) = run(&["sync"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("gr\u{fffd}oups.yaml") && err.contains("not-an-email"),
        "names the file: {err}"
    );
    assert!(fake.requests().is_empty());
}

/// An answer body larger than `max_response_bytes` is refused while it is read, never
/// buffered whole: here an endless chunked body. The group fails (exit 1), nothing that
/// depends on the answer (the create) is sent, and the run ends promptly.
#[test]
fn an_endless_answer_is_refused_at_max_response_bytes() {
    let (_fake, mut env) = teams();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                        head.push(byte[0]);
                    }
                    let line = String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    seen.lock().unwrap().push(line);
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                          transfer-encoding: chunked\r\n\r\n",
                    );
                    let _ = s.write_all(b"9\r\n{\"data\":[\r\n");
                    let item = "{\"id\":\"x\",\"name\":\"y\"},".repeat(700);
                    let chunk = format!("{:x}\r\n{item}\r\n", item.len());
                    // Endless (bounded at 4 GiB so a broken client cannot hang the suite).
                    let mut sent = 0u64;
                    while sent < 4 << 30 && s.write_all(chunk.as_bytes()).is_ok() {
                        sent += chunk.len() as u64;
                    }
                });
            }
        });
    }
    env.set_target_extra(&format!(
        "base_url = \"http://127.0.0.1:{port}/v1\"\nmax_response_bytes = 65536\ntimeout = \"20s\""
    ));
    env.write_source(&[g("Tier 1", &[&email(1)])]);
    let m = measured(&env, &["sync"]);
    m.bounded("an endless answer (sync)", 15.0, 200);
    assert_eq!(m.run.code, 1, "{}", m.run.stderr);
    assert!(
        m.run
            .stderr
            .contains("larger than max_response_bytes = 65536"),
        "{}",
        m.run.stderr
    );
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|l| l.starts_with("GET ")),
        "only the listing, no create: {seen:?}"
    );
    assert_eq!(seen.len(), 1, "not retried: {seen:?}");
}

/// The same through the teams fake: an answer announced larger than the limit (a listing
/// of 100 KB) fails the group, no create; the next run (no fault) converges.
#[test]
fn an_answer_over_max_response_bytes_fails_the_group() {
    let (fake, mut env) = teams();
    env.set_target_extra("max_response_bytes = 4096");
    let groups = vec![g("Tier 1", &[&email(1)]), g("Tier 2", &[&email(2)])];
    env.write_source(&groups);
    let big: Vec<serde_json::Value> = (0..2000)
        .map(|i| serde_json::json!({"id": format!("id-{i}"), "name": format!("Team {i}")}))
        .collect();
    fake.inject(
        Match::new("GET", "/v1/teams"),
        Fault::body(200, serde_json::json!({ "data": big })),
        100,
    );
    let r = env.sync().expect(1);
    assert!(
        r.stderr.contains("larger than max_response_bytes = 4096"),
        "{}",
        r.stderr
    );
    assert!(
        fake.requests().iter().any(|q| q.fault == Some("status")),
        "the oversized listing was answered: {:?}",
        fake.requests()
    );
    assert!(
        fake.requests().iter().all(|q| q.method == "GET"),
        "nothing dependent sent"
    );
    assert!(fake.all_group_names().is_empty());
    fake.clear_faults();
    env.sync().expect(0);
    env.assert_converged(&groups);
}

/// SPEC 6.5: a secret file readable by its group or by others gets a warning at load time
/// (every command), naming the file and the fix but not the value; 0600 gets none.
#[test]
fn a_readable_token_file_gets_a_warning() {
    let (fake, env) = teams();
    env.write_source(&[g("Tier 1", &[&email(1)])]);
    let token_file = env.path("token");
    std::fs::write(&token_file, fake.token()).unwrap();
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("token_env") {
                "token_file = \"token\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(env.config_path(), text).unwrap();
    for (mode, who) in [
        (
            0o644,
            "readable by its group and all other users (mode 0644)",
        ),
        (0o640, "readable by its group (mode 0640)"),
        (0o604, "readable by all other users (mode 0604)"),
    ] {
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(mode)).unwrap();
        for args in [&["check"][..], &["sync", "--dry-run"], &["-q", "state"]] {
            let r = env.run(args);
            assert!(
                r.stderr.contains("token_file") && r.stderr.contains(who),
                "{args:?} {mode:o}: {}",
                r.stderr
            );
            assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);
            assert!(!r.stderr.contains(fake.token()) && !r.stdout.contains(fake.token()));
        }
    }
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = env.run(&["check"]).expect(0);
    assert!(!r.stderr.contains("readable by"), "{}", r.stderr);
    env.sync().expect(0);
}
