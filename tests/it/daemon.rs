//! `rostersync daemon` against the fake MaestroQA, with a unix datagram socket standing in for
//! systemd's `NOTIFY_SOCKET`; and the systemd unit files under `systemd-analyze`.
//!
//! Runs are counted from the `STATUS=run N done ...` messages the daemon sends after each run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fakes::maestro::FakeMaestro;
use crate::fakes::{Fake, Fault, Logged, Match};

const BIN: &str = env!("CARGO_BIN_EXE_rostersync");
/// A cron expression that does not fire during a test.
pub(crate) const NEVER: &str = "0 0 1 1 *";

/// Polls `f` every 50 ms until it gives a value; panics naming `what` after `timeout`.
pub(crate) fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(timeout, f).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `f` every 50 ms until it gives a value, or None after `timeout`.
pub(crate) fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What systemd would hear: every datagram sent to `NOTIFY_SOCKET`.
pub(crate) struct NotifySocket {
    pub(crate) path: PathBuf,
    messages: Arc<Mutex<Vec<String>>>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NotifySocket {
    pub(crate) fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (m, d) = (messages.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            while !d.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    m.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        NotifySocket {
            path,
            messages,
            done,
            thread: Some(thread),
        }
    }

    /// Every `KEY=value` line received so far, in order.
    pub(crate) fn lines(&self) -> Vec<String> {
        let m = self.messages.lock().unwrap();
        m.iter()
            .flat_map(|d| d.lines().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    pub(crate) fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|l| *l == line).count()
    }

    /// The ids of the runs reported done in `STATUS=`.
    fn runs_done(&self) -> BTreeSet<u64> {
        self.lines()
            .iter()
            .filter_map(|l| l.strip_prefix("STATUS=run "))
            .filter_map(|rest| {
                let (n, tail) = rest.split_once(' ')?;
                tail.starts_with("done").then(|| n.parse().ok()).flatten()
            })
            .collect()
    }

    pub(crate) fn wait_line(&self, line: &str, n: usize, timeout: Duration) {
        wait_for(
            &format!("{n} x {line:?} on NOTIFY_SOCKET (got {:?})", self.lines()),
            timeout,
            || (self.count(line) >= n).then_some(()),
        );
    }

    fn wait_run(&self, run: u64, timeout: Duration) {
        wait_for(
            &format!("run {run} done (STATUS lines: {:?})", self.lines()),
            timeout,
            || self.runs_done().contains(&run).then_some(()),
        );
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A config and source in a temp dir, next to a fake MaestroQA with a few agents.
struct Setup {
    dir: tempfile::TempDir,
    fake: Arc<FakeMaestro>,
    config: PathBuf,
    source: PathBuf,
}

struct Opts {
    cron: &'static str,
    full_every: u32,
    watch: bool,
    /// `[metrics]` lines.
    metrics: String,
    /// Edits the fake's `[[target]]` block.
    target: fn(String) -> String,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            cron: NEVER,
            full_every: 0,
            watch: false,
            metrics: String::new(),
            target: |t| t,
        }
    }
}

fn groups_yaml(groups: &[(&str, &[&str])]) -> String {
    let mut s = String::from("groups:\n");
    for (name, members) in groups {
        s += &format!("  - name: {name}\n    members: [{}]\n", members.join(", "));
    }
    s
}

impl Setup {
    fn new(o: Opts, groups: &[(&str, &[&str])]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeMaestro::start();
        for e in ["ana@example.com", "bo@example.com", "cy@example.com"] {
            fake.add_user(e);
        }
        let config = dir.path().join("rostersync.toml");
        let source = dir.path().join("groups.yaml");
        let toml = format!(
            "source = \"groups.yaml\"\nstate = \"state/rostersync.db\"\n\n[safety]\nmax_removal_ratio = 1.0\n\n[schedule]\ncron = \"{}\"\nfull_every = {}\nwatch = {}\n\n[metrics]\n{}\n\n{}",
            o.cron,
            o.full_every,
            o.watch,
            o.metrics,
            (o.target)(fake.target_toml("maestro"))
        );
        std::fs::write(&config, toml).unwrap();
        std::fs::write(&source, groups_yaml(groups)).unwrap();
        Setup {
            dir,
            fake,
            config,
            source,
        }
    }

    /// Replaces the source as an editor does: write a new file, rename it over the old one.
    fn save_as_rename(&self, text: &str) {
        let tmp = self.dir.path().join(".groups.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.source).unwrap();
    }

    fn members(&self, group: &str) -> BTreeSet<String> {
        self.fake.groups().get(group).cloned().unwrap_or_default()
    }

    /// A rostersync command (not the daemon) on this config, with the fake's secrets.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.config).args(args);
        clean_env(&mut c);
        c.envs(self.fake.env()).output().unwrap()
    }

    fn history(&self) -> Value {
        let out = self.cli(&["history", "--output", "json", "--limit", "100"]);
        assert!(
            out.status.success(),
            "history: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn spawn(&self, extra_env: &[(&str, &str)]) -> Daemon {
        let notify = NotifySocket::bind(self.dir.path());
        let log = self.dir.path().join("daemon.log");
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.config).arg("daemon");
        clean_env(&mut c);
        c.envs(self.fake.env())
            .env("NOTIFY_SOCKET", &notify.path)
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = c.spawn().expect("start rostersync daemon");
        Daemon { child, notify, log }
    }
}

/// Keeps the test's own environment (ROSTERSYNC_*, systemd variables) away from the child.
pub(crate) fn clean_env(c: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("ROSTERSYNC_")
            || [
                "NOTIFY_SOCKET",
                "WATCHDOG_USEC",
                "WATCHDOG_PID",
                "INVOCATION_ID",
                "CREDENTIALS_DIRECTORY",
            ]
            .contains(&k.as_str())
        {
            c.env_remove(&k);
        }
    }
}

/// A running daemon; killed if the test ends without stopping it.
struct Daemon {
    child: Child,
    notify: NotifySocket,
    log: PathBuf,
}

impl Daemon {
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        let log = &self.log;
        wait_for(
            &format!(
                "the daemon to exit; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
            timeout,
            || child.try_wait().unwrap(),
        )
    }

    /// `wait_for`, with the daemon's log in the panic message.
    fn wait_for<T>(&self, what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
        poll(timeout, f).unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for {what}; log:\n{}",
                self.log()
            )
        })
    }

    fn wait_log(&self, needle: &str, timeout: Duration) {
        wait_for(&format!("{needle:?} in the daemon's log"), timeout, || {
            self.log().contains(needle).then_some(())
        });
    }

    /// SIGTERM, then expects exit 0 and STOPPING=1.
    fn stop(mut self) {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(35));
        assert_eq!(status.code(), Some(0), "exit status; log:\n{}", self.log());
        self.notify
            .wait_line("STOPPING=1", 1, Duration::from_secs(2));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Requests that change something on the fake.
fn writes(log: &[Logged]) -> usize {
    log.iter().filter(|r| r.is_write()).count()
}

/// A plain HTTP/1.1 GET on 127.0.0.1; returns the status and the body.
pub(crate) fn http_get(port: u16, path: &str) -> (u16, String) {
    try_http_get(port, path).expect("the metrics listener answers")
}

/// A plain HTTP/1.1 GET on 127.0.0.1, or None when nothing answers (yet).
pub(crate) fn try_http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Some((status, body.to_string()))
}

/// Prometheus text -> (name{labels} -> value), labels as written.
pub(crate) fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The sum of every series of `name` whose labels contain all of `labels`.
fn sum(m: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            let base = k.split('{').next().unwrap_or("");
            base == name && labels.iter().all(|l| k.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn ready_watchdog_metrics_and_healthz() {
    let port = crate::harness::free_port();
    let s = Setup::new(
        Opts {
            metrics: format!("listen = \"127.0.0.1:{port}\"\nmax_age = \"6s\""),
            ..Default::default()
        },
        &[
            ("Tier 1", &["ana@example.com", "bo@example.com"]),
            ("Tier 2", &["cy@example.com"]),
        ],
    );
    let d = s.spawn(&[("WATCHDOG_USEC", "1000000")]);
    d.notify.wait_line("READY=1", 1, Duration::from_secs(10));
    d.notify.wait_run(1, Duration::from_secs(20));
    d.notify.wait_line("WATCHDOG=1", 1, Duration::from_secs(5));
    assert_eq!(s.members("Tier 1").len(), 2);

    let (status, text) = http_get(port, "/metrics");
    assert_eq!(status, 200, "{text}");
    let m = parse_metrics(&text);
    let requests = s.fake.requests();
    let t = "target=\"maestro\"";
    assert_eq!(
        sum(&m, "rostersync_calls_total", &[t]) as usize,
        requests.len(),
        "calls vs the fake's log:\n{text}"
    );
    let posts = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/Groups"))
        .count();
    assert_eq!(posts, 2);
    assert_eq!(
        sum(
            &m,
            "rostersync_calls_total",
            &[t, "operation=\"create\"", "outcome=\"ok\""]
        ) as usize,
        posts
    );
    let gets = requests.iter().filter(|r| r.method == "GET").count();
    assert_eq!(
        sum(&m, "rostersync_calls_total", &[t, "operation=\"find\""]) as usize,
        gets
    );
    assert_eq!(
        sum(&m, "rostersync_calls_total", &["outcome=\"failed\""]),
        0.0
    );
    assert_eq!(sum(&m, "rostersync_retries_total", &[]), 0.0);
    assert_eq!(sum(&m, "rostersync_runs_total", &["outcome=\"ok\""]), 1.0);
    assert_eq!(
        sum(&m, "rostersync_runs_total", &["outcome=\"failed\""]),
        0.0
    );
    assert_eq!(sum(&m, "rostersync_members_added_total", &[]), 3.0);
    assert_eq!(sum(&m, "rostersync_members_removed_total", &[]), 0.0);
    assert_eq!(sum(&m, "rostersync_run_duration_seconds_count", &[]), 1.0);
    assert!(sum(&m, "rostersync_last_success_timestamp_seconds", &[t]) > 1.7e9);
    assert!(text.contains("# HELP rostersync_calls_total"), "{text}");

    let (status, body) = http_get(port, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"maestro\""), "{body}");
    // Nothing runs again (the cron never fires), so the target goes stale after max_age.
    let body = wait_for(
        "/healthz to answer 503 once max_age has passed",
        Duration::from_secs(15),
        || {
            let (status, body) = http_get(port, "/healthz");
            (status == 503).then_some(body)
        },
    );
    assert!(body.contains("unhealthy"), "{body}");
    assert_eq!(http_get(port, "/nope").0, 404);
    d.stop();
}

#[test]
fn an_edit_runs_within_5s_and_a_burst_of_edits_runs_once() {
    let s = Setup::new(
        Opts {
            watch: true,
            ..Default::default()
        },
        &[("Tier 1", &["ana@example.com"])],
    );
    let d = s.spawn(&[]);
    d.notify.wait_line("READY=1", 1, Duration::from_secs(10));
    d.notify.wait_run(1, Duration::from_secs(20));
    assert_eq!(
        s.members("Tier 1"),
        BTreeSet::from(["ana@example.com".to_string()])
    );

    let edited = Instant::now();
    s.save_as_rename(&groups_yaml(&[(
        "Tier 1",
        &["ana@example.com", "bo@example.com"],
    )]));
    d.wait_for(
        "bo on the fake after the edit",
        Duration::from_secs(5),
        || s.members("Tier 1").contains("bo@example.com").then_some(()),
    );
    assert!(edited.elapsed() < Duration::from_secs(5));
    d.notify.wait_run(2, Duration::from_secs(5));

    // Ten quick edits, in place and by rename, with editor leftovers: one run (two at most).
    for i in 0..10 {
        let last = i == 9;
        let members: &[&str] = if last {
            &["ana@example.com", "cy@example.com"]
        } else {
            &["ana@example.com", "bo@example.com"]
        };
        let text = groups_yaml(&[("Tier 1", members)]) + &format!("# edit {i}\n");
        if i % 2 == 0 {
            std::fs::write(&s.source, text).unwrap();
        } else {
            s.save_as_rename(&text);
        }
        std::fs::write(s.dir.path().join(".groups.yaml.swp"), format!("{i}")).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    d.wait_for("the last edit on the fake", Duration::from_secs(10), || {
        let m = s.members("Tier 1");
        (m.contains("cy@example.com") && !m.contains("bo@example.com")).then_some(())
    });
    // Any further run would start within the 2 s settle delay of the last event.
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet_until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let runs = d.notify.runs_done();
    let after_burst = runs.iter().filter(|r| **r > 2).count();
    assert!(
        (1..=2).contains(&after_burst),
        "runs after the burst: {runs:?}"
    );
    d.stop();
}

#[test]
fn sighup_with_a_broken_source_keeps_the_old_one_until_a_good_reload() {
    let s = Setup::new(Opts::default(), &[("Tier 1", &["ana@example.com"])]);
    let mut d = s.spawn(&[]);
    d.notify.wait_line("READY=1", 1, Duration::from_secs(10));
    d.notify.wait_run(1, Duration::from_secs(20));
    let sent = s.fake.requests().len();
    let writes_before = writes(&s.fake.requests());

    // Truncated in the middle of a list, as a failed copy would leave it.
    std::fs::write(
        &s.source,
        "groups:\n  - name: Tier 1\n    members: [ana@example.com,\n",
    )
    .unwrap();
    d.signal("HUP");
    d.wait_log("reload failed", Duration::from_secs(10));
    d.notify.wait_line("READY=1", 2, Duration::from_secs(5));
    assert_eq!(d.notify.count("RELOADING=1"), 1);
    assert!(
        d.alive(),
        "the daemon died on a bad reload; log:\n{}",
        d.log()
    );
    assert!(
        d.log().contains("groups.yaml"),
        "the error names the file:\n{}",
        d.log()
    );
    assert_eq!(
        d.notify.runs_done(),
        BTreeSet::from([1]),
        "no run on a broken source"
    );
    assert_eq!(writes(&s.fake.requests()), writes_before, "nothing sent");
    assert_eq!(s.fake.requests().len(), sent, "not even a read");
    assert_eq!(
        s.members("Tier 1"),
        BTreeSet::from(["ana@example.com".to_string()])
    );

    // A broken config is refused the same way.
    let good_config = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        good_config.replace("[schedule]", "[schedule]\nbogus = 1"),
    )
    .unwrap();
    d.signal("HUP");
    d.notify.wait_line("READY=1", 3, Duration::from_secs(5));
    assert!(d.log().contains("bogus"), "{}", d.log());
    assert!(d.alive());
    std::fs::write(&s.config, good_config).unwrap();

    std::fs::write(
        &s.source,
        groups_yaml(&[("Tier 1", &["ana@example.com", "bo@example.com"])]),
    )
    .unwrap();
    d.signal("HUP");
    d.wait_for(
        "the good reload on the fake",
        Duration::from_secs(5),
        || s.members("Tier 1").contains("bo@example.com").then_some(()),
    );
    d.notify.wait_run(2, Duration::from_secs(5));
    assert_eq!(d.notify.count("RELOADING=1"), 3);
    d.stop();
}

#[test]
fn sigterm_during_a_slow_call_lets_it_finish_records_it_and_exits_0() {
    let slow = Duration::from_secs(3);
    let s = Setup::new(
        Opts {
            target: |t| t.replace("timeout = \"2s\"", "timeout = \"10s\"") + "concurrency = 1\n",
            ..Default::default()
        },
        &[
            ("Alpha", &["ana@example.com"]),
            ("Beta", &["bo@example.com"]),
        ],
    );
    s.fake
        .inject(Match::new("POST", "/Groups"), Fault::Delay(slow), 2);
    let mut d = s.spawn(&[]);
    d.notify.wait_line("READY=1", 1, Duration::from_secs(10));
    // The fake applies a delayed request at once and answers later: the group appears while
    // the call is still in flight.
    wait_for(
        "the first create to reach the fake",
        Duration::from_secs(20),
        || (s.fake.group_count() == 1).then_some(()),
    );
    let term = Instant::now();
    d.signal("TERM");
    d.notify.wait_line("STOPPING=1", 1, Duration::from_secs(5));
    let status = d.wait_exit(Duration::from_secs(35));
    let waited = term.elapsed();
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
    assert!(
        waited >= slow / 2,
        "exited after {waited:?}, before the slow call could finish"
    );
    assert!(waited < Duration::from_secs(30), "exited after {waited:?}");
    assert_eq!(s.fake.group_count(), 1, "no operation starts after SIGTERM");

    let h = s.history();
    let creates: Vec<&Value> = h["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["op"] == "create")
        .collect();
    assert_eq!(creates.len(), 1, "{h:#}");
    assert_eq!(creates[0]["outcome"], "ok", "{h:#}");
    assert_eq!(creates[0]["status"], 201, "{h:#}");
    assert!(creates[0]["latency_ms"].as_i64().unwrap() >= 1000, "{h:#}");

    // The next run sends what was not started, and nothing twice.
    let out = s.cli(&["sync"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.fake.count_named("Alpha"), 1);
    assert_eq!(s.fake.count_named("Beta"), 1);
}

/// "2026-01-01T10:00:00.5Z" -> seconds since the day began, with the date.
fn instant_of(ts: &str) -> (String, f64) {
    let (date, time) = ts.trim_end_matches('Z').split_once('T').unwrap();
    let time = time.split('+').next().unwrap();
    let mut parts = time.split(':').map(|p| p.parse::<f64>().unwrap());
    let (h, m, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    (date.to_string(), h * 3600.0 + m * 60.0 + s)
}

/// The secret as systemd's `LoadCredential=` hands it over: a file in `$CREDENTIALS_DIRECTORY`.
fn token_from_credentials(target: String) -> String {
    target
        .lines()
        .map(|l| {
            if l.starts_with("token_env") {
                "token_file = \"$CREDENTIALS_DIRECTORY/maestro\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn cron_runs_in_turn_and_every_nth_is_full() {
    let s = Setup::new(
        Opts {
            cron: "* * * * * *",
            full_every: 2,
            target: token_from_credentials,
            ..Default::default()
        },
        &[("Tier 1", &["ana@example.com"])],
    );
    let creds = s.dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("maestro"), s.fake.token() + "\n").unwrap();
    let d = s.spawn(&[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())]);
    d.notify.wait_line("READY=1", 1, Duration::from_secs(10));
    d.notify.wait_run(5, Duration::from_secs(20));
    d.stop();

    let h = s.history();
    let mut runs: Vec<&Value> = h["runs"].as_array().unwrap().iter().collect();
    runs.sort_by_key(|r| r["id"].as_i64());
    assert!(runs.len() >= 5, "{h:#}");
    assert_eq!(runs[0]["full"], false, "the start run is not full");
    assert!(
        runs[1..].iter().any(|r| r["full"] == true),
        "a full run every 2nd scheduled run: {h:#}"
    );
    assert!(
        runs.iter()
            .all(|r| r["command"] == "daemon" && r["outcome"] == "ok"),
        "{h:#}"
    );
    for w in runs.windows(2) {
        let done = instant_of(w[0]["finished_at"].as_str().unwrap());
        let next = instant_of(w[1]["started_at"].as_str().unwrap());
        assert!(
            next >= done,
            "run {} started before run {} finished: {h:#}",
            w[1]["id"],
            w[0]["id"]
        );
    }
    // A full run reads each managed group back.
    let reads = s
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/Groups/"))
        .count();
    assert!(reads >= 1, "no read-back request");
    assert!(!d_log_has_lock_error(&s), "runs overlapped");
}

fn d_log_has_lock_error(s: &Setup) -> bool {
    std::fs::read_to_string(s.dir.path().join("daemon.log"))
        .unwrap_or_default()
        .contains("another rostersync")
}

// --- systemd unit files -------------------------------------------------------------------

fn systemd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

fn systemd_analyze() -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join("systemd-analyze");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "systemd-analyze is missing: install Debian's `systemd` package \
         (apt-get install -y --no-install-recommends systemd; tests/run.sh does it when run as root)"
    );
}

/// The unit files in a temp dir, with `ExecStart=` pointing at the binary just built (verify
/// checks that the command exists).
fn units_for_analysis() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "rostersync.service",
        "rostersync-sync.service",
        "rostersync-sync.timer",
    ] {
        let text = std::fs::read_to_string(systemd_dir().join(name)).unwrap();
        std::fs::write(
            dir.path().join(name),
            text.replace("/usr/bin/rostersync", BIN),
        )
        .unwrap();
    }
    dir
}

#[test]
fn unit_files_pass_systemd_analyze_verify() {
    let analyze = systemd_analyze();
    let dir = units_for_analysis();
    for name in [
        "rostersync.service",
        "rostersync-sync.service",
        "rostersync-sync.timer",
    ] {
        let out = Command::new(&analyze)
            .arg("verify")
            .arg(dir.path().join(name))
            .env("SYSTEMD_LOG_LEVEL", "notice")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Warnings about the host (no /run/systemd when not booted with it) are not the units'.
        let ours: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("rostersync"))
            .collect();
        assert!(
            out.status.success() && ours.is_empty(),
            "systemd-analyze verify {name}:\n{stderr}"
        );
    }
}

#[test]
fn service_exposure_is_ok_or_better() {
    let analyze = systemd_analyze();
    let dir = units_for_analysis();
    let out = Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(dir.path().join("rostersync.service"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
    // The README quotes the score (README-daemon.md until it is folded into README.md).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme: String = ["README.md", "README-daemon.md"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(root.join(f)).ok())
        .collect();
    let quoted = format!("Overall exposure level for rostersync.service: {score:.1}");
    assert!(
        readme.contains(&quoted),
        "the README should quote {quoted:?}"
    );
}

/// Issue 12: the `STATUS=` line and `/healthz` name the target and the reason of the last
/// failure, so an operator can act without reading the logs; a good run clears it.
#[test]
fn status_and_healthz_name_the_last_failure() {
    let port = crate::harness::free_port();
    let s = Setup::new(
        Opts {
            metrics: format!("listen = \"127.0.0.1:{port}\""),
            ..Default::default()
        },
        &[
            ("Tier 1", &["ana@example.com"]),
            ("Tier 2", &["bo@example.com"]),
        ],
    );
    s.fake.inject(
        s.fake.create_request().body("Tier 2"),
        crate::fakes::Fault::status(400),
        100,
    );
    let d = s.spawn(&[]);
    d.notify.wait_run(1, Duration::from_secs(20));
    let status = d
        .notify
        .lines()
        .into_iter()
        .find(|l| l.starts_with("STATUS=run 1 done"))
        .unwrap();
    assert!(
        status.contains("; target maestro: create \"Tier 2\" failed: "),
        "{status}"
    );
    let (_, body) = http_get(port, "/healthz");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["last_problem"]["target"], "maestro", "{body}");
    assert!(
        v["last_problem"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("create \"Tier 2\" failed: "),
        "{body}"
    );
    assert_eq!(
        v["targets"]["maestro"]["last_problem"],
        v["last_problem"]["reason"]
    );
    // The fault gone, the next run (SIGHUP) converges and clears it.
    s.fake.clear_faults();
    d.signal("HUP");
    d.notify.wait_run(2, Duration::from_secs(20));
    let (_, body) = http_get(port, "/healthz");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["last_problem"].is_null(), "{body}");
    d.stop();
}

/// Issue 17 item 9: SIGTERM ends phase 1 too. A `--full` run reading twelve slow groups
/// back (four at a time) stops starting reads once the signal comes: the reads in flight
/// finish, nothing is sent, the daemon exits 0 long before the twelve reads would have
/// taken, and the next run plans again.
#[test]
fn sigterm_during_the_read_back_stops_reading_and_exits_0() {
    let names: Vec<String> = (1..=12).map(|i| format!("Group {i:02}")).collect();
    let groups: Vec<(&str, &[&str])> = names
        .iter()
        .map(|n| (n.as_str(), &["ana@example.com"][..]))
        .collect();
    let s = Setup::new(
        Opts {
            // Every second, and every scheduled run is --full.
            cron: "* * * * * *",
            full_every: 1,
            target: |t| t.replace("timeout = \"2s\"", "timeout = \"20s\""),
            ..Default::default()
        },
        &groups,
    );
    let out = s.cli(&["sync"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let slow = Duration::from_secs(4);
    s.fake
        .inject(Match::new("GET", "/Groups/"), Fault::Delay(slow), 1000);
    s.fake.clear_requests();
    let mut d = s.spawn(&[]);
    d.wait_log("full=true", Duration::from_secs(20));
    // The first reads are in flight now (each is answered after `slow`).
    std::thread::sleep(Duration::from_millis(500));
    let term = Instant::now();
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(60));
    let waited = term.elapsed();
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
    let reads = s
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/Groups/"))
        .count();
    assert!(
        reads <= 4,
        "only the reads in flight at SIGTERM were sent ({reads} of 12); waited {waited:?}"
    );
    // The signal came during the read-back (not before it started): those reads were
    // slowed and finished, so the scenario is the one claimed.
    assert!(
        s.fake
            .requests()
            .iter()
            .any(|r| r.path.contains("/Groups/") && r.fault == Some("delay") && r.status == 200),
        "a slowed read-back was in flight at SIGTERM and finished ({reads} reads); log:\n{}",
        d.log()
    );
    assert!(
        s.fake.requests().iter().all(|r| !r.is_write()),
        "nothing is sent after SIGTERM"
    );
    s.fake.clear_faults();
    let out = s.cli(&["sync", "--full"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
