//! The scale benchmark of issue 11 (SPEC section 9): the five figures at S, L and XL.
//!
//! ```sh
//! cargo bench --bench scale -- S          # or L, XL; several sizes at once: S L XL
//! cargo bench --bench scale -- XL --client # figures 2 and 4 at XL too (about 3 minutes)
//! cargo bench --bench scale -- L --rate   # also figure 3 (20 ms latency, vendor limits)
//! cargo bench --bench scale -- XL --keep   # keep the seeded directories, for `perf record`
//! cargo bench --bench scale -- S L XL --pg # the same figures with the state in PostgreSQL
//! cargo bench --bench scale -- L --backend sqlite,postgres # both, side by side
//! ```
//!
//! `--pg` (or `--backend postgres`; `--backend sqlite,postgres` for both) puts the state in
//! a throwaway PostgreSQL cluster that the benchmark starts itself (`src/store/pg_cluster.rs`,
//! Debian's server with that harness' defaults, printed at the start), one fresh database
//! per setup, dropped after it. The runs then take the lease as any one-shot run on
//! PostgreSQL does. Without a backend option the state is SQLite, as before.
//!
//! The source is generated deterministically (`tests/it/scale/generate.rs`, shared with
//! the CI smoke test): people and groups over several files, all four kinds. Runs of the
//! real binary are timed as child processes (wall, peak RSS and CPU from `wait4`); every
//! figure is the median of `--reps N` runs (default 5; at most 3 for the initial syncs).
//!
//! 1. no-op `sync` with the shortcut (wall, peak RSS); the source changed by one
//!    membership: `sync --dry-run` (load + state + resolve + plan), YAML and JSON, and the
//!    in-process phases (load, resolve + plan);
//! 2. a 1% churn: requests per kind counted by the fakes against the minimal counts;
//! 3. (`--rate`) the initial sync against fakes with 20 ms latency and each kind's rate
//!    limit, against calls / rate;
//! 4. the initial sync against zero-latency fakes without rate limits: calls/s and CPU
//!    per call (state writes included);
//! 5. state database bytes per membership, and the time to open it and read what a run
//!    needs (known state and resolution cache of every target).
//!
//! Figures 2 and 4 run against the local fakes of `tests/it/fakes/` (at S and L always, at
//! XL with `--client`); the fakes index what they hold, so a request costs them little,
//! but they run in this process on the same cores as rostersync (whose own CPU per call
//! comes from `wait4`). For
//! figures 1 and 5 the known state is written directly through `Store` (everything
//! converged), the targets point at an unused port, and one real run records the base.

#[allow(unused_imports)]
#[path = "../tests/it/fakes/mod.rs"]
mod fakes;
#[path = "../tests/it/scale/generate.rs"]
mod generate;
#[allow(unused_imports)] // its tests' `use super::*` (no test harness here)
#[path = "../src/store/pg_cluster.rs"]
mod pg_cluster;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fakes::{Fake, Fault, Match};
use generate::{Change, Format, Scale, TARGETS};
use rostersync::config::Config;
use rostersync::plan::{KnownMember, PlanOptions, plan_target};
use rostersync::store::{Delta, Store};

const BIN: &str = env!("CARGO_BIN_EXE_rostersync");

/// The binary runs are timed with: this build's, or `RS_BENCH_BIN` (to compare a build of
/// other code with this benchmark).
fn bin() -> String {
    std::env::var("RS_BENCH_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// One run of the binary as a child process.
#[derive(Clone, Copy, Debug)]
struct Measured {
    code: i32,
    wall: Duration,
    rss_mib: f64,
    cpu: Duration,
}

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// Runs `cmd` and measures it. The peak RSS must come from a process spawned by a small
/// one: a child spawned straight from this (large) process shares its memory until
/// `exec`, and Linux counts that in the child's `ru_maxrss`. So when GNU time is there
/// (`/usr/bin/time`, Debian package `time`) it spawns the binary and reports its peak;
/// otherwise `wait4`'s figure is an upper bound.
fn measure(cmd: &mut Command, log: &Path) -> Measured {
    let time_out = log.with_extension("time");
    let gnu_time = Path::new("/usr/bin/time").exists();
    let mut cmd = if gnu_time {
        let mut t = Command::new("/usr/bin/time");
        t.arg("-o")
            .arg(&time_out)
            .arg("-f")
            .arg("%M %U %S")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => t.env(k, v),
                None => t.env_remove(k),
            };
        }
        t
    } else {
        std::mem::replace(cmd, Command::new("true"))
    };
    let f = std::fs::File::create(log).unwrap();
    cmd.stdout(Stdio::null()).stderr(f).stdin(Stdio::null());
    let t = Instant::now();
    #[allow(clippy::zombie_processes)] // reaped by wait4 below
    let child = cmd.spawn().expect("spawn rostersync");
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let wall = t.elapsed();
    assert!(pid > 0, "wait4 failed");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let mut m = Measured {
        code,
        wall,
        rss_mib: ru.ru_maxrss as f64 / 1024.0,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
    };
    if gnu_time {
        let text = std::fs::read_to_string(&time_out).unwrap_or_default();
        // The last line holds the figures (earlier ones say why the command failed).
        let f: Vec<f64> = text
            .lines()
            .last()
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [kib, user, sys] = f[..] {
            m.rss_mib = kib / 1024.0;
            m.cpu = Duration::from_secs_f64(user + sys);
        }
    }
    m
}

fn median_by<T: Copy>(v: &[T], key: impl Fn(&T) -> f64) -> T {
    let mut v = v.to_vec();
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Where the state of a setup lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// A setup's database in the benchmark's PostgreSQL cluster: dropped with the setup.
struct PgDb {
    cluster: Arc<pg_cluster::Cluster>,
    name: String,
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = self.cluster.try_sql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Points the generated config in `dir` at the backend: SQLite as generated, or a fresh
/// database of `pg`.
fn place_state(dir: &Path, pg: Option<&Arc<pg_cluster::Cluster>>) -> Option<PgDb> {
    let cluster = pg?;
    let name = cluster.fresh_database_name();
    let path = dir.join("rostersync.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let line = "state = \"state/rostersync.db\"\n";
    assert!(text.contains(line), "the generated config names the state");
    let text = text.replacen(line, &format!("state = \"{}\"\n", cluster.url(&name)), 1);
    std::fs::write(&path, text).unwrap();
    Some(PgDb {
        cluster: cluster.clone(),
        name,
    })
}

/// A generated setup: a temp dir with config, source and state, and how to run in it.
struct Setup {
    dir: tempfile::TempDir,
    /// The state's database when it is in PostgreSQL (dropped after the setup).
    pg: Option<PgDb>,
    /// "" with the SQLite state alone; else the backend's name, to tell the lines apart.
    label: String,
    scale: Scale,
    format: Format,
    env: Vec<(String, String)>,
    fakes: Vec<Arc<dyn Fake>>,
    ids: Box<dyn Fn(usize, usize) -> Option<String>>,
}

impl Setup {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config")
            .arg(self.dir.path().join("rostersync.toml"))
            .args(args)
            .env_remove("ROSTERSYNC_CONFIG")
            .env_remove("ROSTERSYNC_LOG")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().cloned());
        c
    }

    fn run(&self, args: &[&str]) -> Measured {
        let m = measure(&mut self.cmd(args), &self.dir.path().join("last.log"));
        if m.code != 0 {
            let log = std::fs::read_to_string(self.dir.path().join("last.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "rostersync {args:?} exited {}:\n{}",
                m.code,
                tail.join("\n")
            );
        }
        m
    }

    fn write_source(&self, change: Change) {
        generate::write_source(
            &self.dir.path().join("source"),
            &self.scale,
            self.format,
            change,
            &*self.ids,
        );
    }

    fn source_bytes(&self) -> u64 {
        std::fs::read_dir(self.dir.path().join("source"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    fn config(&self) -> Config {
        for (k, v) in &self.env {
            // SAFETY: the bench sets these before any thread of its own reads the environment.
            unsafe { std::env::set_var(k, v) };
        }
        Config::load(&self.dir.path().join("rostersync.toml")).expect("config")
    }

    fn counts(&self) -> [usize; 4] {
        let mut out = [0; 4];
        for (i, f) in self.fakes.iter().enumerate() {
            out[i] = f
                .requests()
                .iter()
                .filter(|r| (200..300).contains(&r.status))
                .count();
            f.clear_requests();
        }
        out
    }
}

/// Fakes for every kind (vendor rate limits on when `limits`), users registered.
fn with_fakes(scale: Scale, format: Format, limits: bool, on: &On) -> Setup {
    let teams = fakes::teams::FakeTeams::start_with_ids_in_source();
    if !limits {
        teams.set_rate_limit(None);
    }
    let fakes: Vec<Arc<dyn Fake>> = vec![
        fakes::maestro::FakeMaestro::start(),
        teams,
        fakes::deepcall::FakeDeepCall::start(),
        fakes::kazoo::FakeKazoo::start_with_ids_in_source(),
    ];
    let mut ids: Vec<BTreeMap<usize, String>> = vec![BTreeMap::new(); 4];
    for p in 0..scale.people {
        let e = generate::email(p);
        for (t, f) in fakes.iter().enumerate() {
            let id = f.add_user(&e);
            if t > 0 {
                ids[t].insert(p, f.source_id(&e).unwrap_or(id));
            }
        }
    }
    let blocks: Vec<String> = fakes
        .iter()
        .zip(TARGETS)
        .map(|(f, name)| {
            let extra = if limits { "" } else { "rate_limit = 0\n" };
            format!("{}timeout = \"30s\"\n{extra}", f.target_toml(name))
        })
        .map(|b| dedup_keys(&b))
        .collect();
    let env = fakes.iter().flat_map(|f| f.env()).collect();
    let dir = tempfile::tempdir().unwrap();
    generate::write_config(dir.path(), &blocks);
    let pg = place_state(dir.path(), on.pg.as_ref());
    let ids = Box::new(move |t: usize, p: usize| ids[t].get(&p).cloned());
    let s = Setup {
        dir,
        pg,
        label: on.label.clone(),
        scale,
        format,
        env,
        fakes,
        ids,
    };
    s.write_source(Change::default());
    s
}

/// A target block with later keys replacing earlier ones.
fn dedup_keys(block: &str) -> String {
    let mut lines: Vec<&str> = Vec::new();
    for l in block.lines() {
        let key = l.split('=').next().unwrap().trim();
        if l.contains('=') {
            lines.retain(|x| x.split('=').next().unwrap().trim() != key);
        }
        lines.push(l);
    }
    lines.join("\n") + "\n"
}

/// No fakes: targets on an unused port, ids chosen here, the known state written
/// directly (everything converged), then one real run to record it.
fn seeded(scale: Scale, format: Format, on: &On) -> Setup {
    let kinds = [
        "kind = \"scim\"\nflavor = \"maestroqa\"\ntoken_env = \"BENCH_TOKEN\"",
        "kind = \"teams\"\ntoken_env = \"BENCH_TOKEN\"",
        "kind = \"assign_group\"\nuser_id_env = \"BENCH_TOKEN\"\ntoken_env = \"BENCH_TOKEN\"",
        "kind = \"kazoo\"\naccount_id = \"acc\"\napi_key_env = \"BENCH_TOKEN\"",
    ];
    let blocks: Vec<String> = TARGETS
        .iter()
        .zip(kinds)
        .map(|(n, k)| {
            format!("[[target]]\nname = \"{n}\"\n{k}\nbase_url = \"http://127.0.0.1:9/api\"\n")
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    generate::write_config(dir.path(), &blocks);
    let pg = place_state(dir.path(), on.pg.as_ref());
    let ids = Box::new(|t: usize, p: usize| (t > 0).then(|| format!("{t}-{p}")));
    let s = Setup {
        dir,
        pg,
        label: on.label.clone(),
        scale,
        format,
        env: vec![("BENCH_TOKEN".into(), "bench-token".into())],
        fakes: Vec::new(),
        ids,
    };
    s.write_source(Change::default());
    let cfg = s.config();
    let seeding = Instant::now();
    let mut store = Store::open_at(&cfg.state, None).unwrap();
    let mut deltas = Vec::new();
    for g in 0..scale.groups {
        let t = g % 4;
        let members = generate::members(&scale, g, Change::default())
            .into_iter()
            .map(|p| {
                let e = generate::email(p);
                let id = (s.ids)(t, p).unwrap_or_else(|| e.clone());
                let m = KnownMember {
                    owned: true,
                    receive_call: t == 2,
                    email: Some(e.as_str().into()),
                };
                (id, m)
            })
            .collect();
        let name = generate::group_name(g);
        deltas.push((
            TARGETS[t],
            Delta::Group {
                key: name.clone(),
                remote_id: format!("r{g}"),
                name,
                members,
                owners: BTreeMap::new(),
            },
        ));
    }
    match &s.pg {
        None => store.apply_many(&deltas).unwrap(),
        // One transaction per few hundred groups: every statement of a transaction moves
        // the generation row again, and its versions pile up until the transaction ends.
        Some(_) => {
            for chunk in deltas.chunks(PG_SEED_GROUPS) {
                store.apply_many(chunk).unwrap();
            }
        }
    }
    store.close().unwrap();
    if let Some(db) = &s.pg {
        let t = Instant::now();
        // What autovacuum would do soon after such a bulk load, done now rather than in
        // the middle of the measured runs.
        db.cluster.sql(&db.name, "VACUUM (ANALYZE)");
        println!(
            "    {}seeded {} memberships in {:.1} s, VACUUM (ANALYZE) {:.1} s",
            s.label,
            scale.memberships(),
            (t - seeding).as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
    }
    s.run(&["sync"]);
    s
}

/// Groups per transaction when seeding PostgreSQL.
const PG_SEED_GROUPS: usize = 250;

struct Args {
    scales: Vec<Scale>,
    reps: usize,
    rate: bool,
    client: bool,
    /// Keep the seeded directories (for `perf record` of a run in them).
    keep: bool,
    /// Where the state lives, each backend measured in turn (default: SQLite).
    backends: Vec<Backend>,
}

/// What one backend's setups are made with.
struct On {
    backend: Backend,
    /// The cluster the PostgreSQL states live in.
    pg: Option<Arc<pg_cluster::Cluster>>,
    /// Put before each figure's text ("" for SQLite alone, as before).
    label: String,
}

fn backends(list: &str) -> Vec<Backend> {
    list.split(',')
        .map(|b| match b.trim().to_ascii_lowercase().as_str() {
            "sqlite" => Backend::Sqlite,
            "postgres" | "postgresql" | "pg" => Backend::Postgres,
            other => panic!("--backend {other}: give sqlite, postgres or sqlite,postgres"),
        })
        .collect()
}

fn args() -> Args {
    let mut a = Args {
        scales: Vec::new(),
        reps: 5,
        rate: false,
        client: false,
        keep: false,
        backends: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--bench" => {}
            "--rate" => a.rate = true,
            "--client" => a.client = true,
            "--keep" => a.keep = true,
            "--pg" => a.backends = vec![Backend::Postgres],
            "--backend" => a.backends = backends(&it.next().unwrap_or_default()),
            "--reps" => a.reps = it.next().and_then(|n| n.parse().ok()).unwrap_or(5),
            s => a.scales.extend(Scale::by_name(s)),
        }
    }
    if a.scales.is_empty() {
        a.scales.push(generate::S);
    }
    if a.backends.is_empty() {
        a.backends.push(Backend::Sqlite);
    }
    a.backends.dedup();
    a
}

/// The machine's load average (1, 5, 15 minutes), as /proc/loadavg has it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Starts the benchmark's PostgreSQL cluster and prints its version and settings.
fn start_postgres() -> Arc<pg_cluster::Cluster> {
    let t = Instant::now();
    let cluster = pg_cluster::Cluster::start();
    let version = cluster.sql("postgres", "SELECT version()");
    println!(
        "PostgreSQL cluster started in {:.1} s (src/store/pg_cluster.rs defaults, data in {}): {}",
        t.elapsed().as_secs_f64(),
        cluster.data_dir().display(),
        version[0][0].as_deref().unwrap_or("?")
    );
    let rows = cluster.sql(
        "postgres",
        "SELECT name, setting || coalesce(' ' || unit, ''), source FROM pg_settings
         WHERE source NOT IN ('default', 'override', 'client', 'session')
            OR name IN ('shared_buffers', 'work_mem', 'effective_cache_size', 'fsync',
                        'synchronous_commit', 'wal_level', 'wal_segment_size', 'max_wal_size',
                        'checkpoint_timeout', 'full_page_writes', 'autovacuum', 'jit',
                        'max_connections')
         ORDER BY name",
    );
    let text: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} = {} ({})",
                r[0].as_deref().unwrap_or(""),
                r[1].as_deref().unwrap_or(""),
                r[2].as_deref().unwrap_or("")
            )
        })
        .collect();
    println!("PostgreSQL settings: {}", text.join("; "));
    Arc::new(cluster)
}

fn main() {
    let a = args();
    // Under `cargo test --benches`: the smallest size, once.
    let smoke = !std::env::args().any(|x| x == "--bench");
    let reps = if smoke { 1 } else { a.reps.max(1) };
    println!(
        "rostersync scale benchmark, medians of {reps} runs (2 shared cores: noisy); load average {}",
        load_average()
    );
    let pg = a.backends.contains(&Backend::Postgres).then(start_postgres);
    let both = a.backends.len() > 1 || a.backends != [Backend::Sqlite];
    let ons: Vec<On> = a
        .backends
        .iter()
        .map(|&backend| On {
            backend,
            pg: (backend == Backend::Postgres).then(|| pg.clone().unwrap()),
            label: if both {
                format!("{}: ", backend.name())
            } else {
                String::new()
            },
        })
        .collect();
    for scale in a.scales {
        println!(
            "\n== {}: {} people, {} groups, {} memberships, 4 targets (one per kind), {} source files",
            scale.name,
            scale.people,
            scale.groups,
            scale.memberships(),
            2 * generate::FILES
        );
        for on in &ons {
            if both {
                println!(
                    "-- state in {} (load average {})",
                    on.backend.name(),
                    load_average()
                );
            }
            // An initial sync at XL sends about 35,000 requests: only when asked.
            if scale.people <= 50_000 || a.client {
                client(scale, reps, on);
            }
            for format in [Format::Yaml, Format::Json] {
                let s = seeded(scale, format, on);
                figure1(&s, reps);
                if format == Format::Yaml {
                    figure5(&s, reps);
                }
                if a.keep {
                    let mut s = s;
                    println!("kept for profiling: {}", s.dir.path().display());
                    if s.pg.take().is_some() {
                        println!(
                            "  (not its state: the PostgreSQL cluster goes when the benchmark ends)"
                        );
                    }
                    // Leaks the TempDir on purpose: its directory stays.
                    std::mem::forget(s);
                }
            }
            if a.rate {
                figure3(scale, on);
            }
        }
    }
    println!("\nload average at the end: {}", load_average());
}

/// Figures 2 and 4: the initial sync against zero-latency fakes, then a 1% churn.
fn client(scale: Scale, reps: usize, on: &On) {
    let mut runs = Vec::new();
    let mut calls = 0;
    let mut churn_counts = [0; 4];
    for _ in 0..reps.min(3) {
        let s = with_fakes(scale, Format::Yaml, false, on);
        let m = s.run(&["sync"]);
        let c = s.counts();
        assert_eq!(
            c,
            generate::minimal_initial(&scale),
            "initial sync: minimal requests"
        );
        calls = c.iter().sum::<usize>();
        runs.push(m);
        s.write_source(Change {
            churn: true,
            ..Change::default()
        });
        s.run(&["sync"]);
        churn_counts = s.counts();
    }
    let m = median_by(&runs, |m| m.wall.as_secs_f64());
    let cpu = median_by(&runs, |m| m.cpu.as_secs_f64()).cpu;
    println!(
        "[4] {}initial sync, zero-latency fakes, no rate limit: {calls} calls in {:.2} s = {:.0} calls/s; rostersync CPU {:.0} us/call (state writes included), peak RSS {:.0} MiB",
        on.label,
        m.wall.as_secs_f64(),
        calls as f64 / m.wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / calls as f64,
        m.rss_mib
    );
    let minimal = generate::minimal_churn(&scale);
    println!(
        "[2] {}1% churn ({} groups, +1 -1 each): requests per kind (maestro, teams, deepcall, kazoo) {:?}, minimal {:?}: {}",
        on.label,
        (0..scale.groups).filter(|g| generate::churned(*g)).count(),
        churn_counts,
        minimal,
        if churn_counts == minimal {
            "exactly minimal"
        } else {
            "NOT minimal"
        }
    );
}

/// Figure 1: the no-op with the shortcut, and a changed source without it.
fn figure1(s: &Setup, reps: usize) {
    let f = match s.format {
        Format::Yaml => "YAML",
        Format::Json => "JSON",
    };
    let mb = s.source_bytes() as f64 / (1 << 20) as f64;
    let noop: Vec<Measured> = (0..reps).map(|_| s.run(&["sync"])).collect();
    let m = median_by(&noop, |m| m.wall.as_secs_f64());
    let rss = median_by(&noop, |m| m.rss_mib).rss_mib;
    println!(
        "[1] {}{f} ({mb:.1} MiB) no-op sync (shortcut): {:.0} ms wall, {:.1} MiB peak RSS",
        s.label,
        ms(m.wall),
        rss
    );
    let mut changed = Vec::new();
    for round in 0..reps {
        s.write_source(Change {
            one: true,
            round,
            ..Change::default()
        });
        changed.push(s.run(&["sync", "--dry-run"]));
    }
    let m = median_by(&changed, |m| m.wall.as_secs_f64());
    let rss = median_by(&changed, |m| m.rss_mib).rss_mib;
    println!(
        "[1] {}{f} one membership changed, sync --dry-run (load + state + resolve + plan): {:.0} ms wall, {:.0} MiB peak RSS",
        s.label,
        ms(m.wall),
        rss
    );
    // In process: the phases.
    let cfg = s.config();
    let mut load = Vec::new();
    let mut plan = Vec::new();
    let store = Store::open_read_only_at(&cfg.state).unwrap().unwrap();
    let known: Vec<_> = cfg
        .targets
        .iter()
        .map(|t| store.known(&t.name).unwrap())
        .collect();
    for _ in 0..reps {
        let t = Instant::now();
        let desired = cfg.load_source().expect("source");
        load.push(t.elapsed());
        let t = Instant::now();
        let mut ops = 0;
        for (tc, known) in cfg.targets.iter().zip(&known) {
            let n = rostersync::sync::naming(tc);
            let r = rostersync::plan::resolve::desired_target(
                &desired,
                &n,
                &Default::default(),
                known,
                &|_| String::new(),
            );
            let popts = PlanOptions {
                mode: tc.membership,
                safety: cfg.safety,
                allow_mass_removal: false,
                keep: tc.keep_members.clone(),
                only: None,
            };
            ops += plan_target(&r.target, known, &popts).ops.len();
        }
        plan.push(t.elapsed());
        assert_eq!(ops, 1, "one membership changed: one op");
        drop(desired);
    }
    let l = median_by(&load, |d| d.as_secs_f64());
    let p = median_by(&plan, |d| d.as_secs_f64());
    println!(
        "[1] {}{f} in process: load {:.0} ms + resolve and plan {:.0} ms = {:.0} ms",
        s.label,
        ms(l),
        ms(p),
        ms(l + p)
    );
    // Back to the base, and record a converged run there for the next format.
    s.write_source(Change::default());
    s.run(&["sync"]);
}

/// Figure 5: bytes per membership, and opening the state with what a run reads.
fn figure5(s: &Setup, reps: usize) {
    let cfg = s.config();
    let bytes = match &s.pg {
        None => {
            {
                let store = Store::open_at(&cfg.state, None).unwrap();
                store.checkpoint().unwrap();
            }
            std::fs::metadata(cfg.state.sqlite_path().expect("a SQLite state"))
                .unwrap()
                .len()
        }
        Some(db) => {
            // VACUUM refuses to run in a transaction block: one statement per call.
            db.cluster.sql(&db.name, "VACUUM (ANALYZE)");
            db.cluster.sql(&db.name, "CHECKPOINT");
            let row = db.cluster.sql(
                &db.name,
                "SELECT pg_database_size(current_database()),
                    (SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = 'public' AND c.relkind = 'r'),
                    pg_total_relation_size('members') + pg_total_relation_size('groups'),
                    pg_relation_size('members'), pg_indexes_size('members')",
            );
            let n = |i: usize| -> u64 { row[0][i].as_deref().unwrap().parse().unwrap() };
            let per = |b: u64| b as f64 / s.scale.memberships() as f64;
            println!(
                "[5] {}database {:.1} MiB (pg_database_size, the catalogs included) = {:.0} bytes per membership; known state (members and groups, indexes included) {:.1} MiB = {:.0} bytes per membership (members: heap {:.1} MiB, indexes {:.1} MiB)",
                s.label,
                n(0) as f64 / (1 << 20) as f64,
                per(n(0)),
                n(2) as f64 / (1 << 20) as f64,
                per(n(2)),
                n(3) as f64 / (1 << 20) as f64,
                n(4) as f64 / (1 << 20) as f64,
            );
            // Every state table with its indexes and TOAST, after VACUUM: the figure that
            // compares with SQLite's file.
            n(1)
        }
    };
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let store = Store::open_at(&cfg.state, None).unwrap();
        for tc in &cfg.targets {
            let k = store.known(&tc.name).unwrap();
            let c = store.resolution_cache(&tc.name).unwrap();
            std::hint::black_box((k, c));
        }
        times.push(t.elapsed());
    }
    let t = median_by(&times, |d| d.as_secs_f64());
    println!(
        "[5] {}state {} {:.1} MiB = {:.0} bytes per membership; open + read known state and caches of 4 targets: {:.0} ms",
        s.label,
        if s.pg.is_some() {
            "tables (pg_total_relation_size summed)"
        } else {
            "database"
        },
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / s.scale.memberships() as f64,
        ms(t)
    );
}

/// Figure 3: the initial sync with 20 ms latency and the vendors' limits (one run).
fn figure3(scale: Scale, on: &On) {
    let s = with_fakes(scale, Format::Yaml, true, on);
    for f in &s.fakes {
        f.inject(
            Match::new("*", ""),
            Fault::Delay(Duration::from_millis(20)),
            usize::MAX,
        );
    }
    let cfg = s.config();
    let m = s.run(&["sync"]);
    let c = s.counts();
    let mut bound: f64 = 0.0;
    let mut parts = Vec::new();
    for (i, t) in cfg.targets.iter().enumerate() {
        let b = match t.rate_limit {
            Some(r) => c[i] as f64 / r,
            None => c[i] as f64 * 0.020 / t.concurrency as f64,
        };
        parts.push(format!("{} {} calls >= {:.1} s", t.name, c[i], b));
        bound = bound.max(b);
    }
    println!(
        "[3] {}initial sync, 20 ms latency, vendor rate limits: {:.1} s wall against a bound of {:.1} s ({:+.1}%): {}",
        on.label,
        m.wall.as_secs_f64(),
        bound,
        (m.wall.as_secs_f64() / bound - 1.0) * 100.0,
        parts.join("; ")
    );
}
