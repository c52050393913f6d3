//! The failover drill (SPEC 6.7, README "Two nodes"): `rostersync daemon` on two nodes with
//! one config but `[ha] node`, one real PostgreSQL (`pg_cluster`), the fake MaestroQA.
//!
//! What it proves, each scenario against a fresh database:
//!
//! - **One writer.** Of two daemons exactly one leads: the other says so (`STATUS=standby
//!   (leader A, epoch N)`, `/healthz` `"role": "standby"` with the leader, metric
//!   `rostersync_leader 0`) and sends not a single request, not even a read, while the
//!   leader keeps its lease (same epoch over several TTLs) and converges the target.
//! - **`kill -9` of the leader mid-write.** The standby takes over within TTL + the target
//!   timeout (the takeover wait) + a lease tick (+ slack), reads back the group whose write
//!   was cut off, and converges: the target equals the source, no group twice, every call a
//!   live node had confirmed is in the history exactly once, the known state is exactly what
//!   the target holds, and the next run sends nothing.
//! - **A leader paused (`SIGSTOP`) past its lease sends nothing after it wakes.** The
//!   standby takes over and converges; the old leader, resumed, sends no further write (its
//!   request in flight may complete), records nothing, and reports standby.
//! - **PostgreSQL restarted mid-run.** A one-shot `sync` fails cleanly (exit 1, naming the
//!   state database), its known state never claims what the target does not hold, and the
//!   next one-shot run takes the lease and converges. A daemon whose database goes away
//!   (crash, for longer than the lease) mid-run converges once it is back, without a
//!   restart or a signal.
//! - **A leader whose sessions the server terminates stops writing.** Each node logs in as
//!   its own role; the leader's role is cut off (NOLOGIN + `pg_terminate_backend`) mid-run:
//!   it sends no further write, reports standby within one TTL (+ slack), and the standby
//!   takes over and converges.
//! - **A one-shot `sync` while a daemon leads exits 4**, naming the leader, and sends nothing.
//!
//! The nodes' requests are told apart at the fake by `User-Agent: rostersync/V (node NAME)`;
//! a write is held in flight with `Fault::Delay` on the fake's membership PATCH (the fake
//! applies it at once and answers late), and `Server::received` shows it before its answer.
//! The lease is 2 s and the target timeout 2 s (the fake's), so a takeover takes ~4 s; one
//! request in flight at a time (`concurrency = 1`), so the held PATCH is the only one.
//!
//! Not proved (README "The one window left"): a node frozen between its last fence check
//! and its request leaving the machine; no lease closes that window, and no test outside the
//! process can aim a `SIGSTOP` at it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::{NEVER, NotifySocket, clean_env, parse_metrics, poll};
use crate::fakes::maestro::FakeMaestro;
use crate::fakes::{Fake, Fault, Logged, Match};
use crate::harness::free_port;
use crate::pg_cluster::Cluster;

const BIN: &str = env!("CARGO_BIN_EXE_rostersync");
/// `[ha] lease`.
const TTL: Duration = Duration::from_secs(2);
/// The target's `timeout` (the fake's `target_toml`): the takeover waits for it too.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The target's name in the configs.
const TARGET: &str = "maestro";
/// Generous bound for anything that should take a few seconds on a loaded machine.
const LONG: Duration = Duration::from_secs(30);

const PEOPLE: &[&str] = &[
    "ana@example.com",
    "bo@example.com",
    "cy@example.com",
    "dee@example.com",
];

type Groups = &'static [(&'static str, &'static [&'static str])];

/// What the first run converges.
const BEFORE: Groups = &[
    ("Tier 1", &["ana@example.com", "bo@example.com"]),
    ("Tier 2", &["cy@example.com"]),
    ("Tier 3", &["dee@example.com"]),
];

/// The change a drill is run on: three membership PATCHes and a create.
const AFTER: Groups = &[
    (
        "Tier 1",
        &["ana@example.com", "bo@example.com", "cy@example.com"],
    ),
    ("Tier 2", &["cy@example.com", "dee@example.com"]),
    ("Tier 3", &["ana@example.com", "dee@example.com"]),
    ("Tier 4", &["bo@example.com"]),
];

/// A second change (the daemon part of the restart scenario).
const AFTER2: Groups = &[
    ("Tier 1", &["ana@example.com"]),
    (
        "Tier 2",
        &["cy@example.com", "dee@example.com", "bo@example.com"],
    ),
    (
        "Tier 3",
        &["ana@example.com", "dee@example.com", "cy@example.com"],
    ),
    ("Tier 4", &["bo@example.com", "ana@example.com"]),
];

/// A third change: the daemon part again, with a restart faster than the lease.
const AFTER3: Groups = &[
    ("Tier 1", &["ana@example.com", "dee@example.com"]),
    ("Tier 2", &["cy@example.com"]),
    (
        "Tier 3",
        &["ana@example.com", "dee@example.com", "cy@example.com"],
    ),
    ("Tier 4", &["bo@example.com"]),
];

fn expected(groups: Groups) -> BTreeMap<String, BTreeSet<String>> {
    groups
        .iter()
        .map(|(n, m)| (n.to_string(), m.iter().map(|s| s.to_string()).collect()))
        .collect()
}

/// Whether `r` was sent by `node` (its User-Agent).
fn sent_by(r: &Logged, node: &str) -> bool {
    r.header("user-agent")
        .is_some_and(|ua| ua.starts_with("rostersync/") && ua.ends_with(&format!("(node {node})")))
}

/// A source, the fake, and a config per node in a temp dir.
struct Drill {
    dir: tempfile::TempDir,
    fake: Arc<FakeMaestro>,
    source: PathBuf,
}

impl Drill {
    fn new(groups: Groups) -> Drill {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeMaestro::start();
        for p in PEOPLE {
            fake.add_user(p);
        }
        let d = Drill {
            source: dir.path().join("groups.yaml"),
            dir,
            fake,
        };
        d.set_source(groups);
        d
    }

    fn set_source(&self, groups: Groups) {
        let mut s = String::from("groups:\n");
        for (name, members) in groups {
            s += &format!("  - name: {name}\n    members: [{}]\n", members.join(", "));
        }
        let tmp = self.dir.path().join(".groups.yaml.tmp");
        std::fs::write(&tmp, s).unwrap();
        std::fs::rename(&tmp, &self.source).unwrap();
    }

    /// `node`'s config (`<dir>/<node>/<file>`): the state at `url`, the lease, a
    /// cron that never fires, `/metrics` on `port`, one request in flight at a time.
    fn config(&self, node: &str, url: &str, port: u16, file: &str) -> PathBuf {
        let home = self.dir.path().join(node);
        std::fs::create_dir_all(&home).unwrap();
        let path = home.join(file);
        let text = format!(
            "source = \"{}\"\n\n[state]\nurl = \"{url}\"\n\n[ha]\nnode = \"{node}\"\nlease = \"{}s\"\n\n\
             [safety]\nmax_removal_ratio = 1.0\n\n[schedule]\ncron = \"{NEVER}\"\nfull_every = 0\nwatch = false\n\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n\n{}concurrency = 1\n",
            self.source.display(),
            TTL.as_secs(),
            self.fake.target_toml(TARGET)
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn command(&self, node: &str, url: &str, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(self.config(node, url, free_port(), "cli.toml"))
            .args(args);
        clean_env(&mut c);
        c.envs(self.fake.env())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    /// A command (not the daemon) as `node`, run to its end.
    fn cli(&self, node: &str, url: &str, args: &[&str]) -> Output {
        self.command(node, url, args)
            .output()
            .expect("run rostersync")
    }

    /// `rostersync daemon` as `node`.
    fn spawn(&self, node: &str, url: &str) -> Node {
        let home = self.dir.path().join(node);
        std::fs::create_dir_all(&home).unwrap();
        let notify = NotifySocket::bind(&home);
        let port = free_port();
        let log = home.join("daemon.log");
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(self.config(node, url, port, "rostersync.toml"))
            .arg("daemon");
        clean_env(&mut c);
        c.envs(self.fake.env())
            .env("NO_COLOR", "1")
            .env("NOTIFY_SOCKET", &notify.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = c.spawn().expect("start rostersync daemon");
        Node {
            name: node.to_string(),
            child,
            notify,
            log,
            port,
        }
    }

    /// Writes that reached the fake, as they arrived (answered or not).
    fn writes(&self) -> Vec<Logged> {
        self.fake
            .server
            .received()
            .into_iter()
            .filter(Logged::is_write)
            .collect()
    }

    fn writes_by(&self, node: &str) -> Vec<Logged> {
        self.writes()
            .into_iter()
            .filter(|r| sent_by(r, node))
            .collect()
    }

    /// Holds the next membership PATCH `delay` (the fake applies it at once, answers late);
    /// returns the time it was armed.
    fn hold_next_patch(&self, delay: Duration) -> Instant {
        let armed = Instant::now();
        self.fake
            .inject(Match::new("PATCH", "/Groups/"), Fault::Delay(delay), 1);
        armed
    }

    /// Waits until `node`'s PATCH held since `armed` has arrived (it is then still
    /// unanswered); returns it.
    fn wait_held(&self, node: &str, armed: Instant, logs: &[&Node]) -> Logged {
        wait(
            &format!("{node}'s held PATCH at the fake"),
            LONG,
            logs,
            || {
                self.writes_by(node)
                    .into_iter()
                    .find(|r| r.fault == Some("delay") && r.at >= armed)
            },
        )
    }

    fn converged(&self, groups: Groups) -> bool {
        self.fake.groups() == expected(groups)
    }

    fn wait_converged(&self, groups: Groups, within: Duration, logs: &[&Node]) {
        wait("the target to equal the source", within, logs, || {
            self.converged(groups).then_some(())
        });
    }

    /// The target equals the source, and no group is there twice.
    #[track_caller]
    fn assert_converged(&self, groups: Groups) {
        assert_eq!(
            self.fake.groups(),
            expected(groups),
            "the target vs the source"
        );
        let mut names = self.fake.all_group_names();
        names.sort();
        let want: Vec<String> = expected(groups).into_keys().collect();
        assert_eq!(names, want, "every group exactly once");
    }

    /// The new leader read back the group whose write was cut off (its unfinished intent)
    /// before planning it.
    #[track_caller]
    fn assert_read_back(&self, held: &Logged, by: &str) {
        let reads: Vec<_> = self
            .fake
            .server
            .received()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path == held.path && sent_by(r, by))
            .collect();
        assert!(
            !reads.is_empty(),
            "{by} read {} back after the takeover",
            held.path
        );
    }

    /// `state --output json`: the known state of the target, group name -> member ids.
    fn known(&self, node: &str, url: &str) -> BTreeMap<String, BTreeSet<String>> {
        let out = self.cli(node, url, &["state", "--output", "json"]);
        assert!(
            out.status.success(),
            "state: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let groups = v[TARGET]["groups"].as_object().cloned().unwrap_or_default();
        groups
            .values()
            .map(|g| {
                let members = g["members"]
                    .as_object()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                (g["name"].as_str().unwrap().to_string(), members)
            })
            .collect()
    }

    /// `history --output json`: every call recorded.
    fn history(&self, node: &str, url: &str) -> Vec<Value> {
        let out = self.cli(
            node,
            url,
            &["history", "--output", "json", "--limit", "10000"],
        );
        assert!(
            out.status.success(),
            "history: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["calls"].as_array().cloned().unwrap_or_default()
    }

    /// Every write the fake confirmed to a node that lived to read it is in the history
    /// once, and the history records no membership change twice. `lost`: writes whose
    /// answer never reached a live node (cut by `kill -9`, or answered to a node that had
    /// lost the lease meanwhile).
    #[track_caller]
    fn assert_history_once(
        &self,
        node: &str,
        url: &str,
        sql: &dyn Fn(&str) -> Rows,
        lost: &[Logged],
    ) {
        let calls = self.history(node, url);
        let recorded: Vec<(String, String)> = calls
            .iter()
            .filter(|c| c["outcome"] == "ok" && c["method"] != "GET" && c["method"] != "-")
            .map(|c| {
                (
                    c["method"].as_str().unwrap().to_string(),
                    c["path"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let is_lost = |r: &Logged| lost.iter().any(|l| l.at == r.at && l.path == r.path);
        let confirmed: Vec<(String, String)> = self
            .fake
            .requests()
            .iter()
            .filter(|r| r.is_write() && (200..300).contains(&r.status) && !is_lost(r))
            .map(|r| (r.method.clone(), r.path.clone()))
            .collect();
        let count = |v: &[(String, String)]| {
            let mut m: BTreeMap<(String, String), usize> = BTreeMap::new();
            for k in v {
                *m.entry(k.clone()).or_default() += 1;
            }
            m
        };
        assert_eq!(
            count(&recorded),
            count(&confirmed),
            "the confirmed writes (the fake's journal) vs the history's\n{calls:#?}"
        );
        // One membership change, one record: (group, op, change, member) never twice.
        let rows = sql(
            "SELECT c.group_key, c.op, m.change, m.member_id, count(*) FROM calls c \
             JOIN call_members m ON m.call_id = c.id \
             WHERE c.outcome = 'ok' AND c.method NOT IN ('GET', '-') \
             GROUP BY 1, 2, 3, 4 HAVING count(*) > 1",
        );
        assert!(rows.is_empty(), "recorded twice: {rows:?}");
    }
}

type Rows = Vec<Vec<Option<String>>>;

/// Polls `f` every 20 ms until it gives a value; panics after `timeout` with the logs.
fn wait<T>(what: &str, timeout: Duration, logs: &[&Node], f: impl FnMut() -> Option<T>) -> T {
    poll(timeout, f).unwrap_or_else(|| {
        let mut text = String::new();
        for n in logs {
            text += &format!(
                "\n--- {} (STATUS: {:?}) ---\n{}",
                n.name,
                n.status(),
                n.log()
            );
        }
        panic!("timed out after {timeout:?} waiting for {what}{text}")
    })
}

/// A running `rostersync daemon`; killed (even when stopped) if the test ends without it.
struct Node {
    name: String,
    child: Child,
    notify: NotifySocket,
    log: PathBuf,
    /// `[metrics] listen`.
    port: u16,
}

impl Node {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child, not reaped yet (so the pid is its).
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig}) of {}", self.name);
    }

    /// The last `STATUS=` it sent.
    fn status(&self) -> Option<String> {
        self.notify
            .lines()
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("STATUS=").map(str::to_string))
    }

    fn healthz(&self) -> Option<(u16, Value)> {
        let (status, body) = crate::daemon::try_http_get(self.port, "/healthz")?;
        Some((status, serde_json::from_str(&body).ok()?))
    }

    /// `"role"` in `/healthz` (None while it does not answer yet).
    fn role(&self) -> Option<String> {
        let (_, v) = self.healthz()?;
        v["role"].as_str().map(str::to_string)
    }

    fn metrics(&self) -> BTreeMap<String, f64> {
        let (status, text) =
            crate::daemon::try_http_get(self.port, "/metrics").expect("/metrics answers");
        assert_eq!(status, 200, "{text}");
        parse_metrics(&text)
    }

    /// SIGTERM, then exit 0 (a leader releases its lease).
    fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let child = &mut self.child;
        let status = poll(LONG, || child.try_wait().unwrap())
            .unwrap_or_else(|| panic!("{} did not stop", self.name));
        assert_eq!(
            status.code(),
            Some(0),
            "{}'s exit; log:\n{}",
            self.name,
            self.log()
        );
    }

    /// `kill -9`, reaped.
    fn kill(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until one of the two leads (and may write) and the other stands by; returns
/// (leader, standby).
fn leader_of(a: Node, b: Node) -> (Node, Node) {
    let a_leads = wait(
        "one node to lead and the other to stand by",
        LONG,
        &[&a, &b],
        || match (a.role().as_deref(), b.role().as_deref()) {
            (Some("leader"), Some("standby")) if b.status_names_leader(&a.name) => Some(true),
            (Some("standby"), Some("leader")) if a.status_names_leader(&b.name) => Some(false),
            _ => None,
        },
    );
    if a_leads { (a, b) } else { (b, a) }
}

impl Node {
    /// Its `STATUS=` says it stands by for `leader`.
    fn status_names_leader(&self, leader: &str) -> bool {
        self.status()
            .is_some_and(|s| s.starts_with(&format!("standby (leader {leader}, epoch ")))
    }
}

/// The lease row: its holder and epoch.
fn lease_row(sql: &dyn Fn(&str) -> Rows) -> (Option<String>, i64) {
    let rows = sql("SELECT holder, epoch FROM lease");
    (
        rows[0][0].clone(),
        rows[0][1].as_deref().unwrap().parse().unwrap(),
    )
}

/// The shared cluster, a fresh database: its URL and SQL on it.
fn fresh_db() -> (String, impl Fn(&str) -> Rows) {
    let cluster = Cluster::shared();
    let db = cluster.fresh_database_name();
    let url = cluster.url(&db);
    (url, move |q: &str| cluster.sql(&db, q))
}

#[test]
fn one_leads_the_standby_sends_nothing() {
    let (url, sql) = fresh_db();
    let d = Drill::new(BEFORE);
    let (leader, standby) = leader_of(d.spawn("node-a", &url), d.spawn("node-b", &url));
    d.wait_converged(BEFORE, LONG, &[&leader, &standby]);

    // A trigger on the standby runs nothing; renewals keep the lease over several TTLs.
    standby.signal(libc::SIGHUP);
    let (_, epoch) = lease_row(&sql);
    std::thread::sleep(TTL * 2);
    assert_eq!(
        lease_row(&sql),
        (Some(leader.name.clone()), epoch),
        "the leader kept its lease"
    );

    let status = standby.status().unwrap();
    assert_eq!(
        status,
        format!("standby (leader {}, epoch {epoch})", leader.name)
    );
    let said = format!(
        "STATUS=leader ({}, epoch {epoch}); run starting",
        leader.name
    );
    assert_eq!(leader.notify.count(&said), 1, "{:?}", leader.notify.lines());
    for (node, role) in [(&leader, "leader"), (&standby, "standby")] {
        let (code, h) = node.healthz().expect("/healthz answers");
        assert_eq!(code, 200, "{h}");
        assert_eq!(h["role"], role, "{h}");
        assert_eq!(h["node"], node.name.as_str(), "{h}");
        assert_eq!(h["leader"], leader.name.as_str(), "{h}");
        assert_eq!(h["epoch"], epoch, "{h}");
        let m = node.metrics();
        let leads = if role == "leader" { 1.0 } else { 0.0 };
        assert_eq!(m.get("rostersync_leader"), Some(&leads), "{m:?}");
        assert_eq!(
            m.get("rostersync_lease_epoch"),
            Some(&(epoch as f64)),
            "{m:?}"
        );
    }

    d.assert_converged(BEFORE);
    let all = d.fake.server.received();
    assert!(!all.is_empty());
    assert!(
        all.iter().all(|r| sent_by(r, &leader.name)),
        "every request came from the leader: {:?}",
        all.iter()
            .map(|r| (r.method.clone(), r.path.clone(), r.header("user-agent")))
            .collect::<Vec<_>>()
    );
    assert!(
        !standby.log().contains("starting a run"),
        "{}",
        standby.log()
    );
    standby.stop();
    leader.stop();
}

#[test]
fn kill_9_of_the_leader_mid_write() {
    let (url, sql) = fresh_db();
    let d = Drill::new(BEFORE);
    let (leader, standby) = leader_of(d.spawn("node-a", &url), d.spawn("node-b", &url));
    d.wait_converged(BEFORE, LONG, &[&leader, &standby]);
    let (_, epoch) = lease_row(&sql);

    d.set_source(AFTER);
    let armed = d.hold_next_patch(Duration::from_secs(3));
    leader.signal(libc::SIGHUP);
    let held = d.wait_held(&leader.name, armed, &[&leader, &standby]);
    let killed = Instant::now();
    let old = leader.name.clone();
    leader.kill();

    wait("the standby to lead", LONG, &[&standby], || {
        (standby.role().as_deref() == Some("leader")).then_some(())
    });
    let took = killed.elapsed();
    d.wait_converged(AFTER, LONG, &[&standby]);
    let converged = killed.elapsed();
    eprintln!("kill -9: the standby led after {took:?}, converged after {converged:?}");
    let bound = TTL + TIMEOUT + Duration::from_secs(10);
    assert!(took < bound, "took over after {took:?} (bound {bound:?})");
    assert!(
        took >= TIMEOUT,
        "the takeover waited for the old leader's writes: {took:?}"
    );
    assert_eq!(lease_row(&sql), (Some(standby.name.clone()), epoch + 1));
    let m = standby.metrics();
    assert_eq!(m.get("rostersync_leader"), Some(&1.0), "{m:?}");
    assert_eq!(
        m.get("rostersync_lease_epoch"),
        Some(&((epoch + 1) as f64)),
        "{m:?}"
    );
    d.assert_converged(AFTER);
    assert!(
        d.writes_by(&old).iter().all(|r| r.at <= held.at),
        "nothing from the killed leader after its held write"
    );
    d.assert_read_back(&held, &standby.name);
    d.assert_history_once(&standby.name, &url, &sql, &[held]);

    // The next run (a one-shot, once the daemon released the lease) sends nothing, and the
    // known state is exactly what the target holds.
    let new = standby.name.clone();
    standby.stop();
    let before = d.writes().len();
    let out = d.cli(&new, &url, &["sync"]);
    assert!(
        out.status.success(),
        "sync: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(d.writes().len(), before, "the run after is a no-op");
    assert_eq!(d.known(&new, &url), expected(AFTER), "the known state");
}

#[test]
fn a_paused_leader_sends_nothing_after_it_wakes() {
    let (url, sql) = fresh_db();
    let d = Drill::new(BEFORE);
    let (leader, standby) = leader_of(d.spawn("node-a", &url), d.spawn("node-b", &url));
    d.wait_converged(BEFORE, LONG, &[&leader, &standby]);
    let (_, epoch) = lease_row(&sql);

    d.set_source(AFTER);
    let armed = d.hold_next_patch(Duration::from_secs(3));
    leader.signal(libc::SIGHUP);
    let held = d.wait_held(&leader.name, armed, &[&leader, &standby]);
    let stopped = Instant::now();
    leader.signal(libc::SIGSTOP);

    wait("the standby to lead", LONG, &[&standby], || {
        (standby.role().as_deref() == Some("leader")).then_some(())
    });
    let took_over = Instant::now();
    d.wait_converged(AFTER, LONG, &[&standby]);
    eprintln!(
        "SIGSTOP: the standby led after {:?}, converged after {:?}",
        took_over - stopped,
        stopped.elapsed()
    );
    // Paused for longer than the lease and the timeout together.
    let paused = TTL + TIMEOUT + Duration::from_millis(500);
    if let Some(rest) = paused.checked_sub(stopped.elapsed()) {
        std::thread::sleep(rest);
    }
    let lines = leader.notify.lines().len();
    let woke = Instant::now();
    leader.signal(libc::SIGCONT);

    // It learns it lost the lease, and its run (which had a write in flight) ends.
    wait(
        "the old leader to stand by for the new one",
        LONG,
        &[&leader],
        || {
            let (_, h) = leader.healthz()?;
            (h["role"] == "standby" && h["leader"] == standby.name.as_str()).then_some(())
        },
    );
    wait("the old leader's run to end", LONG, &[&leader], || {
        leader.notify.lines()[lines..]
            .iter()
            .any(|l| l.starts_with("STATUS=run ") || l.starts_with("STATUS=last run skipped"))
            .then_some(())
    });
    assert!(
        leader.notify.lines()[lines..]
            .iter()
            .any(|l| l.starts_with("STATUS=standby")),
        "STATUS lines: {:?}",
        leader.notify.lines()
    );
    assert!(
        leader.log().contains("this node lost the lease"),
        "{}",
        leader.log()
    );
    let late: Vec<_> = d
        .writes_by(&leader.name)
        .into_iter()
        .filter(|r| r.at >= woke)
        .map(|r| (r.method, r.path))
        .collect();
    assert!(
        late.is_empty(),
        "the old leader wrote after it woke: {late:?}\n{}",
        leader.log()
    );
    // After the takeover, no group gets a write from both nodes.
    let mut by_group: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in d.writes().iter().filter(|r| r.at > held.at) {
        let node = r
            .header("user-agent")
            .unwrap_or_default()
            .rsplit("(node ")
            .next()
            .unwrap_or_default()
            .to_string();
        by_group.entry(r.path.clone()).or_default().insert(node);
    }
    assert!(
        by_group.values().all(|n| n.len() == 1),
        "writes by group and node: {by_group:?}"
    );
    assert_eq!(lease_row(&sql), (Some(standby.name.clone()), epoch + 1));
    d.assert_converged(AFTER);
    d.assert_read_back(&held, &standby.name);
    d.assert_history_once(&standby.name, &url, &sql, &[held]);
    assert_eq!(d.known(&standby.name, &url), expected(AFTER));
    leader.stop();
    standby.stop();
}

#[test]
fn postgres_restarted_mid_run() {
    let cluster = Cluster::start();
    let db = cluster.fresh_database_name();
    let url = cluster.url(&db);
    let sql = |q: &str| cluster.sql(&db, q);
    let d = Drill::new(BEFORE);
    let out = d.cli("node-a", &url, &["sync"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.assert_converged(BEFORE);

    // A one-shot run: PostgreSQL restarts while its write is held.
    d.set_source(AFTER);
    let armed = d.hold_next_patch(Duration::from_millis(1500));
    let child = d
        .command("node-a", &url, &["sync"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    d.wait_held("node-a", armed, &[]);
    cluster.restart();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("state database {url}")),
        "the message names the state database:\n{stderr}"
    );
    // Nothing lost: what the state knows, the target holds.
    let on_target = d.fake.groups();
    for (group, members) in d.known("node-a", &url) {
        let held = on_target.get(&group).cloned().unwrap_or_default();
        assert!(
            members.is_subset(&held),
            "known {group}: {members:?}, on the target: {held:?}"
        );
    }
    // The next run takes the lease (once the failed run's lease is free) and converges.
    wait("the lease to be free", LONG, &[], || {
        let r = sql("SELECT released OR expires_at <= clock_timestamp() FROM lease");
        (r[0][0].as_deref() == Some("t")).then_some(())
    });
    let out = d.cli("node-a", &url, &["sync"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.assert_converged(AFTER);
    assert_eq!(d.known("node-a", &url), expected(AFTER));

    // A daemon: the database crashes mid-run and stays away longer than the lease.
    let mut node = d.spawn("node-a", &url);
    wait("the daemon to lead", LONG, &[&node], || {
        (node.role().as_deref() == Some("leader")).then_some(())
    });
    wait("the daemon's first run", LONG, &[&node], || {
        node.notify
            .lines()
            .iter()
            .any(|l| l.starts_with("STATUS=run "))
            .then_some(())
    });
    d.set_source(AFTER2);
    let armed = d.hold_next_patch(Duration::from_millis(1500));
    node.signal(libc::SIGHUP);
    d.wait_held("node-a", armed, &[&node]);
    cluster.stop_immediate();
    std::thread::sleep(TTL + Duration::from_millis(500));
    cluster.start_again();
    let back = Instant::now();
    d.wait_converged(AFTER2, LONG, &[&node]);
    eprintln!(
        "PostgreSQL back: the daemon converged after {:?}",
        back.elapsed()
    );
    assert!(
        node.child.try_wait().unwrap().is_none(),
        "the same daemon, never restarted"
    );
    d.assert_converged(AFTER2);
    wait("the known state to match", LONG, &[&node], || {
        (d.known("node-a", &url) == expected(AFTER2)).then_some(())
    });

    // Restarted faster than the lease runs out: the node still leads, and the run that
    // failed is tried again at the daemon's next tick (no cron, no SIGHUP).
    d.set_source(AFTER3);
    let armed = d.hold_next_patch(Duration::from_millis(1500));
    node.signal(libc::SIGHUP);
    d.wait_held("node-a", armed, &[&node]);
    cluster.restart();
    d.wait_converged(AFTER3, LONG, &[&node]);
    wait("the known state to match", LONG, &[&node], || {
        (d.known("node-a", &url) == expected(AFTER3)).then_some(())
    });
    node.stop();
}

#[test]
fn terminated_sessions_stop_the_leader() {
    let cluster = Cluster::shared();
    let db = cluster.fresh_database_name();
    let sql = |q: &str| cluster.sql(&db, q);
    let role_of = |node: &str| format!("{db}_{}", node.replace('-', "_"));
    for n in ["node-a", "node-b"] {
        cluster.create_user(&role_of(n));
    }
    let url_of = |node: &str| cluster.url_as(&role_of(node), &db);
    let d = Drill::new(BEFORE);
    let (leader, standby) = leader_of(
        d.spawn("node-a", &url_of("node-a")),
        d.spawn("node-b", &url_of("node-b")),
    );
    d.wait_converged(BEFORE, LONG, &[&leader, &standby]);
    let (_, epoch) = lease_row(&sql);

    d.set_source(AFTER);
    let armed = d.hold_next_patch(Duration::from_millis(1500));
    leader.signal(libc::SIGHUP);
    let held = d.wait_held(&leader.name, armed, &[&leader, &standby]);
    let cut = Instant::now();
    let ended = cluster.cut_off_user(&role_of(&leader.name));
    // Its sessions are gone now (pg_terminate_backend waited for them).
    let cut_done = Instant::now();
    assert!(ended >= 2, "the leader's sessions (lease, store): {ended}");

    wait("the cut-off leader to stand by", LONG, &[&leader], || {
        (leader.role().as_deref() == Some("standby")).then_some(())
    });
    let stood_by = cut.elapsed();
    wait("the standby to lead", LONG, &[&standby], || {
        (standby.role().as_deref() == Some("leader")).then_some(())
    });
    d.wait_converged(AFTER, LONG, &[&standby, &leader]);
    eprintln!(
        "cut off: the old leader stood by after {stood_by:?}; converged after {:?}",
        cut.elapsed()
    );
    // Its local deadline (the last renewal + TTL), noticed at the next lease tick.
    let bound = TTL + TTL / 3 + Duration::from_secs(3);
    assert!(
        stood_by < bound,
        "stood by after {stood_by:?} (bound {bound:?})"
    );
    let late: Vec<_> = d
        .writes_by(&leader.name)
        .into_iter()
        .filter(|r| r.at >= cut_done)
        .map(|r| (r.method, r.path))
        .collect();
    assert!(
        late.is_empty(),
        "the cut-off leader wrote after its sessions ended: {late:?}\n{}",
        leader.log()
    );
    assert_eq!(lease_row(&sql), (Some(standby.name.clone()), epoch + 1));
    d.assert_converged(AFTER);
    d.assert_read_back(&held, &standby.name);
    d.assert_history_once(&standby.name, &url_of(&standby.name), &sql, &[held]);
    standby.stop();
    leader.stop();
}

#[test]
fn a_one_shot_sync_while_a_daemon_leads_exits_4() {
    let (url, sql) = fresh_db();
    let d = Drill::new(BEFORE);
    let node = d.spawn("node-a", &url);
    wait("the daemon to lead", LONG, &[&node], || {
        (node.role().as_deref() == Some("leader")).then_some(())
    });
    d.wait_converged(BEFORE, LONG, &[&node]);
    let lease = lease_row(&sql);

    d.set_source(AFTER);
    let out = d.cli("node-c", &url, &["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "exit code; stderr:\n{stderr}");
    assert!(
        stderr.contains("another node leads (node-a, epoch"),
        "names the leader:\n{stderr}"
    );
    let by_c: Vec<_> = d
        .fake
        .server
        .received()
        .into_iter()
        .filter(|r| sent_by(r, "node-c"))
        .map(|r| (r.method, r.path))
        .collect();
    assert!(by_c.is_empty(), "the one-shot sent {by_c:?}");
    assert_eq!(lease_row(&sql), lease, "the lease is the daemon's still");
    assert!(d.converged(BEFORE), "nothing changed on the target");
    node.stop();
}
