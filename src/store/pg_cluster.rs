//! A throwaway PostgreSQL cluster for tests: Debian's real server (no mock), initdb'ed in a
//! temp dir, listening on a free 127.0.0.1 port and on a unix socket in that dir, `trust`
//! auth, superuser `rostersync`.
//!
//! Compiled twice: into the lib under `#[cfg(test)]` (`store::pg_cluster`) and into the
//! integration tests (`tests/it/main.rs` includes this file by path), so it uses nothing of
//! the crate: std, `tempfile`, `libc` and the `postgres` crate only.
//!
//! - Never skipped: a missing or failing PostgreSQL panics with the server's log.
//! - As root (CI), initdb and postgres run as the `postgres` system user (they refuse root);
//!   otherwise as the current user.
//! - No leaked servers: the postmaster is a child of this process, started (also on
//!   restart) from one long-lived spawner thread with `PR_SET_PDEATHSIG = SIGQUIT`, so it
//!   dies with the test process even when that is killed. A dropped `Cluster` stops its
//!   server and removes its dir; the shared one is stopped and removed at exit.
//! - Every wait is bounded.
//! - The harness' own SQL (`sql`, `fresh_database`, ...) runs on a short-lived thread of
//!   its own, so it also works from inside a tokio runtime (`#[tokio::test]`), where the
//!   `postgres` crate's blocking client would panic. `client()` does not: it returns a
//!   blocking client for the caller's thread.

#![allow(dead_code)]

use std::ffi::{CString, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, TryLockError, mpsc};
use std::time::{Duration, Instant};

/// The superuser `initdb` creates (`-U`); every cluster trusts it on the socket and on
/// 127.0.0.1.
pub const SUPERUSER: &str = "rostersync";

/// How long a server may take to accept connections (start, restart).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to go away after a shutdown signal, before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long initdb (or the copy of its template) may take.
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// How many free ports a start tries when the one it picked was taken meanwhile.
const PORT_TRIES: usize = 5;

/// A running postmaster in a temp dir (see the module doc).
#[derive(Debug)]
pub struct Cluster {
    /// Holds `data/` (PGDATA), `server.log`, the socket, and the TLS files.
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The account the server runs as when this process is root.
    account: Option<Account>,
    /// `-c name=value` settings beyond the defaults (TLS).
    settings: Vec<(String, String)>,
    child: Mutex<Option<Child>>,
    /// `Cluster::shared()`'s: stopping or restarting it would break other tests.
    shared: bool,
}

/// The user and group ids the server runs as.
#[derive(Clone, Copy, Debug)]
struct Account {
    uid: libc::uid_t,
    gid: libc::gid_t,
}

impl Cluster {
    /// initdb + start; returns when the server accepts connections. Panics (with the log)
    /// when PostgreSQL is missing or does not start.
    pub fn start() -> Cluster {
        Cluster::start_with(|_| Vec::new())
    }

    /// Like `start`, with `ssl = on` and this server certificate and key (PEM files; they
    /// are copied into the cluster's dir, the key with mode 0600, owned by the server's
    /// user). Clients that do not ask for TLS still get in.
    pub fn start_tls(cert_pem: impl AsRef<Path>, key_pem: impl AsRef<Path>) -> Cluster {
        let (cert_pem, key_pem) = (cert_pem.as_ref().to_owned(), key_pem.as_ref().to_owned());
        Cluster::start_with(move |dir| {
            let cert = dir.path.join("server.crt");
            let key = dir.path.join("server.key");
            for (from, to, mode) in [(&cert_pem, &cert, 0o644), (&key_pem, &key, 0o600)] {
                std::fs::copy(from, to)
                    .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
                std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
                    .unwrap_or_else(|e| panic!("chmod {}: {e}", to.display()));
                if let Some(a) = dir.account {
                    chown(to, a);
                }
            }
            vec![
                ("ssl".to_owned(), "on".to_owned()),
                ("ssl_cert_file".to_owned(), cert.display().to_string()),
                ("ssl_key_file".to_owned(), key.display().to_string()),
            ]
        })
    }

    /// One cluster for the whole test process (started on first use, stopped and removed at
    /// exit), for tests that only need a fresh database or a role of their own. Do not stop
    /// or restart it (those panic): start a `Cluster` of your own for that.
    pub fn shared() -> &'static Cluster {
        SHARED.get_or_init(|| {
            let mut cluster = Cluster::start();
            cluster.shared = true;
            clean_up_at_exit();
            cluster
        })
    }

    /// `setup` runs after initdb, before the first start, and returns `-c` settings.
    fn start_with(setup: impl FnOnce(&SetupDir<'_>) -> Vec<(String, String)>) -> Cluster {
        let bin = bin_dir();
        let account = server_account();
        let dir = temp_dir(account, "rostersync-pg-");
        init_data_dir(&bin, account, dir.path());
        let settings = setup(&SetupDir {
            path: dir.path(),
            account,
        });
        let mut cluster = Cluster {
            dir,
            bin,
            port: 0,
            account,
            settings,
            child: Mutex::new(None),
            shared: false,
        };
        // A port picked free can be taken before the server binds it (other tests pick
        // ports too): then try another one.
        for attempt in 1..=PORT_TRIES {
            cluster.port = free_port();
            let log_from = cluster.log().len();
            match cluster.launch() {
                Ok(()) => return cluster,
                Err(e) => {
                    let log = cluster.log();
                    let new = log.get(log_from..).unwrap_or_default();
                    let taken = new.contains("could not bind")
                        || new.contains("could not create any TCP/IP sockets");
                    if !(taken && attempt < PORT_TRIES) {
                        panic!(
                            "PostgreSQL ({}) did not start: {e}\n--- server log ---\n{}",
                            cluster.bin.display(),
                            tail(&log)
                        );
                    }
                }
            }
        }
        unreachable!("the last attempt panics")
    }

    /// `postgres://rostersync@127.0.0.1:{port}/{db}`.
    pub fn url(&self, db: &str) -> String {
        self.url_as(SUPERUSER, db)
    }

    /// `postgres://{user}@127.0.0.1:{port}/{db}` (trust auth: no password).
    pub fn url_as(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a uniquely named empty database and returns its URL (`url`).
    pub fn fresh_database(&self) -> String {
        self.url(&self.fresh_database_name())
    }

    /// Creates a uniquely named empty database (`t_<pid>_<n>`) and returns its name.
    pub fn fresh_database_name(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Runs `sql` (one or more statements, simple query protocol) in `db` as the
    /// superuser; the rows of every statement, as text (NULL is None). Panics on error.
    pub fn sql(&self, db: &str, sql: &str) -> Vec<Vec<Option<String>>> {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("{sql:?} in {db}: {}", describe(&e)))
    }

    /// `sql`, with the error returned.
    pub fn try_sql(
        &self,
        db: &str,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, postgres::Error> {
        let config = self.config(SUPERUSER, db);
        off_runtime(move || {
            let mut client = config.connect(postgres::NoTls)?;
            let mut rows = Vec::new();
            for message in client.simple_query(sql)? {
                if let postgres::SimpleQueryMessage::Row(row) = message {
                    rows.push(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_owned))
                            .collect(),
                    );
                }
            }
            Ok(rows)
        })
    }

    /// A blocking client to `db` as the superuser. Not from inside a tokio runtime (the
    /// `postgres` crate panics there): use `sql` or a thread of your own.
    pub fn client(&self, db: &str) -> postgres::Client {
        self.client_as(SUPERUSER, db)
    }

    /// A blocking client to `db` as `user` (see `client`).
    pub fn client_as(&self, user: &str, db: &str) -> postgres::Client {
        self.config(user, db)
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| {
                panic!(
                    "connect to {db} as {user} on port {}: {}",
                    self.port,
                    describe(&e)
                )
            })
    }

    /// The connection settings for `user` and `db` over 127.0.0.1 (no TLS, 5 s connect
    /// timeout).
    pub fn config(&self, user: &str, db: &str) -> postgres::Config {
        let mut config = postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .dbname(db)
            .connect_timeout(Duration::from_secs(5));
        config
    }

    /// Creates a role that can log in (a superuser: it may do anything the tests' schema
    /// needs, in any database).
    pub fn create_user(&self, name: &str) {
        self.sql(
            "postgres",
            &format!("CREATE ROLE {} LOGIN SUPERUSER", ident(name)),
        );
    }

    /// `ALTER ROLE .. NOLOGIN`: new logins of `name` are refused; its open sessions stay
    /// (see `cut_off_user`).
    pub fn block_user(&self, name: &str) {
        self.sql("postgres", &format!("ALTER ROLE {} NOLOGIN", ident(name)));
    }

    /// Lets `name` log in again (`block_user` undone).
    pub fn unblock_user(&self, name: &str) {
        self.sql("postgres", &format!("ALTER ROLE {} LOGIN", ident(name)));
    }

    /// Cuts `name` off: no new logins (`block_user`), and its sessions ended
    /// (`terminate_user`); returns how many were.
    pub fn cut_off_user(&self, name: &str) -> usize {
        self.block_user(name);
        self.terminate_user(name)
    }

    /// `pg_terminate_backend` of every session of `user` (but the harness' own), waiting up
    /// to 5 s for each to be gone (PostgreSQL 14 and later); returns how many ended.
    pub fn terminate_user(&self, user: &str) -> usize {
        let version = self.sql("postgres", "SHOW server_version_num");
        let version: u32 = version[0][0].as_deref().unwrap_or("0").parse().unwrap_or(0);
        let terminate = if version >= 140000 {
            "pg_terminate_backend(pid, 5000)"
        } else {
            "pg_terminate_backend(pid)"
        };
        let rows = self.sql(
            "postgres",
            &format!(
                // Materialized first: in one WHERE, the planner may call the function
                // before the filters, on every session (ours included).
                "WITH sessions AS MATERIALIZED (SELECT pid FROM pg_stat_activity \
                 WHERE usename = {} AND pid <> pg_backend_pid()) \
                 SELECT count(*) FROM sessions WHERE {terminate}",
                literal(user)
            ),
        );
        rows[0][0]
            .as_deref()
            .unwrap_or("0")
            .parse()
            .expect("a count")
    }

    /// Stops the server (fast shutdown: sessions are ended, a checkpoint is written) and
    /// waits until it is gone. Does nothing when it is not running.
    pub fn stop(&self) {
        self.refuse_shared("stop");
        self.signal_and_wait(libc::SIGINT);
    }

    /// Stops the server like a crash (immediate shutdown: no checkpoint; the next start
    /// runs crash recovery) and waits until it is gone.
    pub fn stop_immediate(&self) {
        self.refuse_shared("stop_immediate");
        self.signal_and_wait(libc::SIGQUIT);
    }

    /// Starts the stopped server again: same dir, same port, same settings. Panics (with
    /// the log) when it does not come up, or when it is running.
    pub fn start_again(&self) {
        self.refuse_shared("start_again");
        if let Err(e) = self.launch() {
            panic!(
                "PostgreSQL did not start again on port {}: {e}\n--- server log ---\n{}",
                self.port,
                tail(&self.log())
            );
        }
    }

    /// `stop` + `start_again`.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the unix socket (`.s.PGSQL.<port>`); a `host` for libpq-style
    /// clients.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// PGDATA.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The postmaster's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.slot().as_ref().map(Child::id)
    }

    /// The server's log so far (every start of it, appended).
    pub fn log(&self) -> String {
        let mut text = Vec::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let _ = f.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    fn slot(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn refuse_shared(&self, what: &str) {
        assert!(
            !self.shared,
            "{what} on Cluster::shared() would break the other tests: use a Cluster::start() of your own"
        );
    }

    /// Spawns the postmaster (through the spawner thread) and waits until it accepts
    /// connections; on failure it is gone again.
    fn launch(&self) -> Result<(), String> {
        let mut slot = self.slot();
        if let Some(child) = slot.as_mut()
            && child.try_wait().ok().flatten().is_none()
        {
            return Err(format!("already running (pid {})", child.id()));
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("open {}: {e}", self.log_path().display()))?;
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path());
        let defaults = [
            ("listen_addresses", "127.0.0.1"),
            ("unix_socket_permissions", "0777"),
            ("shared_buffers", "16MB"),
            ("max_connections", "100"),
            ("fsync", "on"),
            ("ssl", "off"),
            ("logging_collector", "off"),
        ];
        let settings = defaults
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(self.settings.iter().cloned());
        for (name, value) in settings {
            let mut arg = OsString::from(name);
            arg.push("=");
            arg.push(value);
            cmd.arg("-c").arg(arg);
        }
        cmd.current_dir(self.dir.path())
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let child = spawn_from_spawner(cmd, self.account)
            .map_err(|e| format!("spawn {}: {e}", self.bin.join("postgres").display()))?;
        let pid = child.id();
        *slot = Some(child);
        match self.wait_ready(slot.as_mut().unwrap()) {
            Ok(()) => Ok(()),
            Err(e) => {
                let child = slot.take().unwrap();
                stop_child(child, libc::SIGQUIT);
                Err(format!("postmaster (pid {pid}): {e}"))
            }
        }
    }

    /// Until the server answers a query (or exits, or READY_TIMEOUT passes).
    fn wait_ready(&self, child: &mut Child) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let config = self.config(SUPERUSER, "postgres");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited before it was ready ({status})"));
            }
            let mut config = config.clone();
            config.connect_timeout(Duration::from_secs(2));
            let last = match off_runtime(move || {
                config.connect(postgres::NoTls)?.simple_query("SELECT 1")
            }) {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "not accepting connections after {READY_TIMEOUT:?} (last: {})",
                    describe(&last)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal_and_wait(&self, signal: libc::c_int) {
        if let Some(child) = self.slot().take() {
            stop_child(child, signal);
        }
    }
}

impl Drop for Cluster {
    /// Immediate shutdown, then the dir goes (with the TempDir).
    fn drop(&mut self) {
        let slot = match self.child.get_mut() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(child) = slot.take() {
            stop_child(child, libc::SIGQUIT);
        }
    }
}

/// The cluster dir while it is set up (`start_with`'s `setup`).
struct SetupDir<'a> {
    path: &'a Path,
    account: Option<Account>,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();

/// Registers `stop_shared_at_exit` (once).
fn clean_up_at_exit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain extern "C" fn that never unwinds; it runs once, at exit.
    ONCE.call_once(|| unsafe {
        libc::atexit(stop_shared_at_exit);
    });
}

/// At exit: the shared cluster's server stopped (immediate) and its dir removed, and the
/// initdb template removed. Never panics (it runs inside `exit`).
extern "C" fn stop_shared_at_exit() {
    if let Some(cluster) = SHARED.get() {
        let slot = match cluster.child.try_lock() {
            Ok(slot) => Some(slot),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            // Held by a thread that still runs: the parent-death signal ends the server.
            Err(TryLockError::WouldBlock) => None,
        };
        if let Some(child) = slot.and_then(|mut slot| slot.take()) {
            stop_child(child, libc::SIGQUIT);
        }
        let _ = std::fs::remove_dir_all(cluster.dir.path());
    }
    if let Some(template) = TEMPLATE.get() {
        let _ = std::fs::remove_dir_all(template);
    }
}

/// Sends `signal` to the postmaster and waits (bounded) until it is gone; SIGKILL after
/// STOP_TIMEOUT. The postmaster ends its own children before it exits.
fn stop_child(mut child: Child, signal: libc::c_int) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on our own child, which we have not reaped (so the pid is its).
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    if wait_bounded(&mut child, STOP_TIMEOUT).is_none() {
        let _ = child.kill();
        let _ = wait_bounded(&mut child, Duration::from_secs(10));
    }
}

fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Err(_) => return None,
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A spawn request for the spawner thread, and where its answer goes.
type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` (as `account`, with the parent-death signal) from the one spawner thread of
/// this process. `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends, and
/// every test runs on a short-lived thread of its own: the spawner lives as long as the
/// process.
fn spawn_from_spawner(mut cmd: Command, account: Option<Account>) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("pg-cluster-spawner".into())
            .spawn(move || {
                // Ends only with the process: SPAWNER keeps a sender forever.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the PostgreSQL spawner thread");
        tx
    });
    as_server_child(&mut cmd, account);
    let (tx, rx) = mpsc::channel();
    spawner
        .send((cmd, tx))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    rx.recv_timeout(Duration::from_secs(30))
        .map_err(|e| io::Error::other(format!("no answer from the spawner thread: {e}")))?
}

/// In the child, before exec: become `account` (when root), then ask for SIGQUIT when the
/// parent goes (after the credentials change, which clears that setting), and give up if
/// the parent already went.
fn as_server_child(cmd: &mut Command, account: Option<Account>) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (setgroups, setgid, setuid, prctl, getppid), no
    // allocation.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(a) = account
                && (libc::setgroups(1, &a.gid) != 0
                    || libc::setgid(a.gid) != 0
                    || libc::setuid(a.uid) != 0)
            {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// The dir of this process' initdb output (`data/` in it): one initdb per process, copied
/// into every cluster's dir (a copy takes ~50 ms, initdb ~1 s). Removed at exit.
static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();

/// The dir holding the initdb output this process copies into every cluster (removed at
/// exit), once it was made. A test that kills a process of its own that started clusters
/// removes that process' template dir with this path.
pub fn initdb_template() -> Option<PathBuf> {
    TEMPLATE.get().cloned()
}

/// Fills `<dir>/data` with a fresh cluster: a copy of this process' initdb template.
fn init_data_dir(bin: &Path, account: Option<Account>, dir: &Path) {
    // One initdb at a time: the others wait for it (and try again if it panicked).
    let template = TEMPLATE.get_or_init(|| {
        let template = make_template(bin, account);
        clean_up_at_exit();
        template
    });
    // Copied as the server's user (`cp -a`), so the copy is its own, mode 0700 and all.
    let mut cp = Command::new("cp");
    cp.arg("-a")
        .arg(template.join("data"))
        .arg(dir.join("data"));
    run_bounded(cp, account, dir, "copy of the initdb template");
}

/// initdb into `data/` of a temp dir of its own, kept until exit; returns that dir.
fn make_template(bin: &Path, account: Option<Account>) -> PathBuf {
    let dir = temp_dir(account, "rostersync-pg-template-");
    let mut initdb = Command::new(bin.join("initdb"));
    initdb.arg("-D").arg(dir.path().join("data")).args([
        "-U",
        SUPERUSER,
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        // 1 MB WAL segments, not 16: less to copy into every cluster and to remove.
        "--wal-segsize=1",
    ]);
    run_bounded(initdb, account, dir.path(), "initdb");
    dir.keep()
}

/// A new temp dir (mode 0755) that the server's user owns. As root, under /tmp: the
/// server's user must reach it, and root's own TMPDIR may be closed to it.
fn temp_dir(account: Option<Account>, prefix: &str) -> tempfile::TempDir {
    let parent = match account {
        Some(_) => PathBuf::from("/tmp"),
        None => std::env::temp_dir(),
    };
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&parent)
        .unwrap_or_else(|e| panic!("a temp dir in {}: {e}", parent.display()));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.path().display()));
    if let Some(a) = account {
        chown(dir.path(), a);
    }
    dir
}

/// Runs `cmd` as `account` in `dir` to its end (bounded by INITDB_TIMEOUT); panics with its
/// output when it fails.
fn run_bounded(mut cmd: Command, account: Option<Account>, dir: &Path, what: &str) {
    let mut out = tempfile::tempfile().expect("a temp file for the output");
    cmd.current_dir(dir)
        .env("LC_ALL", "C")
        .env_remove("PGDATA")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out.try_clone().expect("dup"));
    // From this thread: it waits for the child to end, so the parent-death signal cannot
    // fire early.
    as_server_child(&mut cmd, account);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    let status = wait_bounded(&mut child, INITDB_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    if status.is_some_and(|s| s.success()) {
        return;
    }
    let mut text = String::new();
    let _ = out.seek(SeekFrom::Start(0));
    let _ = out.read_to_string(&mut text);
    panic!(
        "{what} failed ({}) after {:?}: {cmd:?}\n--- output ---\n{}",
        status.map_or("timed out".to_owned(), |s| s.to_string()),
        started.elapsed(),
        tail(&text)
    );
}

/// The directory of `initdb` and `postgres`: `PG_BIN`, else the highest version under
/// `/usr/lib/postgresql/<version>/bin` (Debian), else PATH. Panics with what to install.
fn bin_dir() -> PathBuf {
    let has_both = |d: &Path| d.join("postgres").is_file() && d.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            has_both(&dir),
            "PG_BIN={} has no postgres and initdb",
            dir.display()
        );
        return dir;
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = e.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if has_both(&dir) {
            return dir;
        }
    }
    panic!(
        "PostgreSQL is not installed: no postgres and initdb in PG_BIN, \
         /usr/lib/postgresql/<version>/bin or PATH. Install Debian's `postgresql` package \
         (tests/run.sh does it when run as root with apt)."
    );
}

/// When this process is root: the `postgres` system user (initdb and postgres refuse
/// root). Otherwise None: the server runs as the current user.
fn server_account() -> Option<Account> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = CString::new("postgres").unwrap();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: getpwnam_r writes into `pw` and `buf` (of the given length) only.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    assert!(
        rc == 0 && !found.is_null(),
        "running as root, and there is no `postgres` user to run PostgreSQL as (initdb and \
         postgres refuse root): install Debian's `postgresql` package, which creates it"
    );
    Some(Account {
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    })
}

fn chown(path: &Path, a: Account) {
    std::os::unix::fs::chown(path, Some(a.uid), Some(a.gid))
        .unwrap_or_else(|e| panic!("chown {} to the postgres user: {e}", path.display()));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Runs `f` on a thread of its own: the `postgres` crate's blocking client panics inside a
/// tokio runtime, and the caller may be in one.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join()).unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// A `postgres::Error` with the server's message, detail and hint (its Display says only
/// "db error" for those).
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
            for (label, part) in [("detail", db.detail()), ("hint", db.hint())] {
                if let Some(part) = part {
                    text.push_str(&format!("; {label}: {part}"));
                }
            }
            text
        }
        None => e.to_string(),
    }
}

/// `name` as an SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as an SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The last 16 KiB of a log (whole lines).
fn tail(text: &str) -> &str {
    const MAX: usize = 16 * 1024;
    if text.len() <= MAX {
        return text;
    }
    let mut start = text.len() - MAX;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = &text[start..];
    cut.find('\n').map_or(cut, |i| &cut[i + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs in both test binaries (the lib's and tests/it's): the shared cluster hands out
    /// separate empty databases that hold what is written to them.
    #[test]
    fn the_shared_cluster_hands_out_fresh_databases() {
        let cluster = Cluster::shared();
        let a = cluster.fresh_database_name();
        let b = cluster.fresh_database_name();
        assert_ne!(a, b);
        cluster.sql(&a, "CREATE TABLE t (k text PRIMARY KEY, v int); INSERT INTO t VALUES ('x', 1), ('y', NULL)");
        assert_eq!(
            cluster.sql(&a, "SELECT k, v FROM t ORDER BY k"),
            vec![
                vec![Some("x".to_owned()), Some("1".to_owned())],
                vec![Some("y".to_owned()), None],
            ]
        );
        let err = cluster.try_sql(&b, "SELECT * FROM t").unwrap_err();
        assert_eq!(
            err.code(),
            Some(&postgres::error::SqlState::UNDEFINED_TABLE),
            "{err}"
        );
        assert_eq!(
            cluster.url(&a),
            format!("postgres://rostersync@127.0.0.1:{}/{a}", cluster.port())
        );
    }
}
