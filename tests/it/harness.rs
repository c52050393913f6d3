//! Per-test environment: a temp dir with config, source and state, the fakes behind it,
//! and helpers to run the real `rostersync` binary.

#![allow(dead_code)]

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fakes::{Fake, Fault, Match};
use crate::pg_cluster::Cluster;

pub const BIN: &str = env!("CARGO_BIN_EXE_rostersync");

/// The name the suite gives the target under test.
pub const T: &str = "t1";

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A group in the desired state: name and member emails.
#[derive(Clone, Debug)]
pub struct G {
    pub name: String,
    pub key: Option<String>,
    pub members: Vec<String>,
}

pub fn g(name: &str, members: &[&str]) -> G {
    G {
        name: name.into(),
        key: None,
        members: members.iter().map(|s| s.to_string()).collect(),
    }
}

/// A port on 127.0.0.1 free a moment ago (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

pub fn email(i: usize) -> String {
    format!("agent{i:03}@example.com")
}

thread_local! {
    /// Whether `Env::new` on this thread puts the state in PostgreSQL (`on_postgres`).
    static ON_POSTGRES: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every `Env::new` it makes (on this thread) keeping its state in a fresh
/// database of `Cluster::shared()` instead of SQLite: the same scenario on PostgreSQL.
pub fn on_postgres<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ON_POSTGRES.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(ON_POSTGRES.with(|c| c.replace(true)));
    f()
}

/// The lease TTL of an `Env` on PostgreSQL: short, so a run after a `kill -9` waits a few
/// seconds for the killed run's lease to expire, not the default 15 s.
pub const PG_LEASE: &str = "5s";

/// Where an `Env` on PostgreSQL keeps its state: a fresh database of `Cluster::shared()`
/// (or of a cluster of the test's own).
#[derive(Clone, Debug)]
pub struct PgState {
    /// The database's name.
    pub db: String,
    /// `postgres://USER@127.0.0.1:PORT/DB` (never with a password).
    pub url: String,
    /// The test's own cluster; None: `Cluster::shared()`.
    pub own: Option<Arc<Cluster>>,
}

impl PgState {
    /// A fresh database of `Cluster::shared()`, as its superuser (trust auth).
    pub fn shared() -> PgState {
        let cluster = Cluster::shared();
        let db = cluster.fresh_database_name();
        PgState {
            url: cluster.url(&db),
            db,
            own: None,
        }
    }

    /// A fresh database of `cluster`, reached as `user`.
    pub fn on(cluster: Arc<Cluster>, user: &str) -> PgState {
        let db = cluster.fresh_database_name();
        PgState {
            url: cluster.url_as(user, &db),
            db,
            own: Some(cluster),
        }
    }

    pub fn cluster(&self) -> &Cluster {
        self.own.as_deref().unwrap_or_else(|| Cluster::shared())
    }
}

/// A temp dir with rostersync.toml, groups.yaml and the state db, for one fake target.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub fake: Arc<dyn Fake>,
    /// Extra TOML placed before the targets (e.g. a [safety] section).
    pub extra: String,
    /// Lines appended to the target block.
    pub target_extra: String,
    /// The state in PostgreSQL instead of `state/rostersync.db` (`new_pg`, `on_postgres`).
    pub pg: Option<PgState>,
    /// Lines added to the `[state]` table (PostgreSQL only: `password_file`, `ca_file`).
    pub state_extra: String,
}

impl Env {
    /// The state in SQLite, or in PostgreSQL inside `on_postgres`.
    pub fn new(fake: Arc<dyn Fake>) -> Env {
        if ON_POSTGRES.with(Cell::get) {
            return Env::new_pg(fake);
        }
        Env::with_state(fake, None)
    }

    /// The state in a fresh database of `Cluster::shared()`.
    pub fn new_pg(fake: Arc<dyn Fake>) -> Env {
        Env::with_state(fake, Some(PgState::shared()))
    }

    /// The state in this PostgreSQL database.
    pub fn new_pg_at(fake: Arc<dyn Fake>, pg: PgState) -> Env {
        Env::with_state(fake, Some(pg))
    }

    /// Moves the state (SQLite's `state/rostersync.db` for None) and rewrites the config.
    pub fn set_pg(&mut self, pg: Option<PgState>) {
        self.pg = pg;
        self.write_config();
    }

    fn with_state(fake: Arc<dyn Fake>, pg: Option<PgState>) -> Env {
        let env = Env {
            dir: tempfile::tempdir().expect("tempdir"),
            fake,
            extra: String::new(),
            target_extra: String::new(),
            pg,
            state_extra: String::new(),
        };
        env.write_config();
        env
    }

    /// The PostgreSQL state of an `Env` made by `new_pg` (panics on SQLite).
    #[track_caller]
    pub fn pg(&self) -> &PgState {
        self.pg
            .as_ref()
            .expect("an Env with its state in PostgreSQL")
    }

    /// Sets lines of the `[state]` table (PostgreSQL) and rewrites the config.
    pub fn set_state_extra(&mut self, lines: &str) {
        self.state_extra = lines.into();
        self.write_config();
    }

    /// After a run was killed: on PostgreSQL, waits (bounded) until the lease the killed
    /// run held has expired, so the next one-shot run can take it rather than exit 4 (the
    /// takeover wait after it is the run's own). Nothing to wait for on SQLite: the file
    /// lock went with the process.
    pub fn after_kill(&self) {
        let Some(pg) = &self.pg else { return };
        let free = wait_until(Duration::from_secs(60), || {
            let rows = pg.cluster().sql(
                &pg.db,
                "SELECT released OR holder IS NULL OR expires_at <= clock_timestamp() FROM lease",
            );
            rows.first()
                .and_then(|r| r.first())
                .is_some_and(|v| v.as_deref() == Some("t"))
        });
        assert!(free, "the killed run's lease expired within 60 s");
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("rostersync.toml")
    }

    pub fn db_path(&self) -> PathBuf {
        self.path("state/rostersync.db")
    }

    /// Sets a `[safety]` or other top-level section and rewrites the config.
    pub fn set_extra(&mut self, extra: &str) {
        self.extra = extra.into();
        self.write_config();
    }

    /// Adds `key = value` lines to the target block (replacing keys it already has).
    pub fn set_target_extra(&mut self, lines: &str) {
        self.target_extra = lines.into();
        self.write_config();
    }

    pub fn write_config(&self) {
        let mut block = self.fake.target_toml(T);
        for line in self.target_extra.lines().filter(|l| !l.trim().is_empty()) {
            let key = line.split('=').next().unwrap().trim();
            block = block
                .lines()
                .filter(|l| l.split('=').next().map(str::trim) != Some(key))
                .collect::<Vec<_>>()
                .join("\n");
            block = format!("{block}\n{line}");
        }
        let state = match &self.pg {
            None => "state = \"state/rostersync.db\"\n",
            Some(_) => "",
        };
        let mut text = format!(
            "source = \"groups.yaml\"\n{state}\n[safety]\nmax_removals = 1000\nmax_removal_ratio = 1.0\n{}\n\n{block}\n",
            self.extra
        );
        // A table header ends the top-level keys: the PostgreSQL state goes last.
        if let Some(pg) = &self.pg {
            text += &format!(
                "\n[state]\nurl = \"{}\"\n{}\n\n[ha]\nlease = \"{PG_LEASE}\"\n",
                pg.url, self.state_extra
            );
        }
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Writes groups.yaml: people (with ids where the kind needs them in the source) and
    /// groups. Registers every member on the fake first.
    pub fn write_source(&self, groups: &[G]) {
        let mut people: BTreeSet<&str> = BTreeSet::new();
        for g in groups {
            people.extend(g.members.iter().map(String::as_str));
        }
        let mut y = String::from("people:\n");
        for p in &people {
            self.fake.add_user(p);
            y += &format!("  - email: {p}\n");
            if let Some(id) = self.fake.source_id(p) {
                y += &format!("    ids:\n      {T}: \"{id}\"\n");
            }
        }
        y += "groups:\n";
        for g in groups {
            y += &format!("  - name: \"{}\"\n", g.name);
            if let Some(k) = &g.key {
                y += &format!("    key: \"{k}\"\n");
            }
            y += &format!("    members: [{}]\n", g.members.join(", "));
        }
        std::fs::write(self.path("groups.yaml"), y).unwrap();
    }

    pub fn write_raw_source(&self, file: &str, text: &str) {
        std::fs::write(self.path(file), text).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(self.config_path()).args(args);
        c.env_remove("ROSTERSYNC_CONFIG")
            .env_remove("ROSTERSYNC_LOG")
            .env("NO_COLOR", "1");
        scrub_test_env(&mut c);
        for (k, v) in self.fake.env() {
            c.env(k, v);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Runs the binary to completion (bounded by the fakes' timeouts).
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run rostersync"))
    }

    /// Runs the binary with other environment: `remove` these variables (e.g. a target's
    /// secret), then `add` these.
    pub fn run_env(&self, args: &[&str], remove: &[String], add: &[(String, String)]) -> Run {
        let mut c = self.command(args);
        for k in remove {
            c.env_remove(k);
        }
        c.envs(add.iter().map(|(k, v)| (k, v)));
        Run::from(c.output().expect("run rostersync"))
    }

    pub fn sync(&self) -> Run {
        self.run(&["sync"])
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    }

    /// The desired groups as the fake should end up: name -> emails.
    pub fn expected(groups: &[G]) -> BTreeMap<String, BTreeSet<String>> {
        groups
            .iter()
            .map(|g| (g.name.clone(), g.members.iter().cloned().collect()))
            .collect()
    }

    /// Asserts the fake holds exactly these groups, each once.
    #[track_caller]
    pub fn assert_converged(&self, groups: &[G]) {
        assert_eq!(
            self.fake.groups(),
            Env::expected(groups),
            "the target differs from the source"
        );
        let mut names = self.fake.all_group_names();
        names.sort();
        let mut want: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
        want.sort();
        assert_eq!(names, want, "every group exactly once (no duplicates)");
    }

    /// Asserts no secret of the fake appears in these outputs or in the state database.
    #[track_caller]
    pub fn assert_no_secret(&self, outputs: &[&Run]) {
        let db = self.db_bytes();
        for s in self.fake.secrets() {
            for o in outputs {
                assert!(
                    !o.stdout.contains(&s) && !o.stderr.contains(&s),
                    "secret leaked in output"
                );
            }
            assert!(
                !contains_bytes(&db, s.as_bytes()),
                "secret leaked into the database"
            );
        }
    }

    /// Everything the state database holds: the SQLite file (and its WAL), or on
    /// PostgreSQL the text of every row of every table of the database.
    pub fn db_bytes(&self) -> Vec<u8> {
        if let Some(pg) = &self.pg {
            return pg_rows_text(pg.cluster(), &pg.db).into_bytes();
        }
        let mut all = Vec::new();
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.db_path().into_os_string();
            p.push(suffix);
            if let Ok(b) = std::fs::read(&p) {
                all.extend(b);
            }
        }
        all
    }
}

/// The text of every row of every table of `db` on `cluster`, one row a line.
pub fn pg_rows_text(cluster: &Cluster, db: &str) -> String {
    let tables = cluster.sql(
        db,
        "SELECT quote_ident(table_name) FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name",
    );
    let mut text = String::new();
    for t in tables
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
    {
        for row in cluster.sql(db, &format!("SELECT t::text FROM {t} t")) {
            text += &format!("{t} {}\n", row[0].as_deref().unwrap_or(""));
        }
    }
    text
}

/// SPEC 6.3: arms the fake to answer every request matching `when` with `body` (HTTP 200, an
/// answer in a shape rostersync does not know), runs `sync`, and checks that it exits 1 with
/// `message` (the operation and the keys seen) in its log.
#[track_caller]
pub fn sync_not_understood(env: &Env, when: Match, body: serde_json::Value, message: &str) -> Run {
    env.fake.inject(when, Fault::body(200, body), 100);
    let r = env.sync().expect(1);
    assert!(r.stderr.contains(message), "{message}\n{}", r.stderr);
    r
}

/// Polls `f` until it is true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// The test suite's own `ROSTERSYNC_SOAK_*` settings are not config overrides: the binary
/// would read `ROSTERSYNC_SOAK_RUNS` as an unknown key `soak_runs`. Never passed on.
pub fn scrub_test_env(c: &mut Command) {
    for k in [
        "ROSTERSYNC_SOAK_RUNS",
        "ROSTERSYNC_SOAK_SEED",
        "ROSTERSYNC_SOAK_STRICT",
    ] {
        c.env_remove(k);
    }
}
