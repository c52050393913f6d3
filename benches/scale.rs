//! The scale benchmark of issue 11 (SPEC section 9): the five figures at S, L and XL.
//!
//! ```sh
//! cargo bench --bench scale -- S          # or L, XL; several sizes at once: S L XL
//! cargo bench --bench scale -- XL --client # figures 2 and 4 at XL too (about 3 minutes)
//! cargo bench --bench scale -- L --rate   # also figure 3 (20 ms latency, vendor limits)
//! cargo bench --bench scale -- XL --keep   # keep the seeded directories, for `perf record`
//! ```
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

/// A generated setup: a temp dir with config, source and state, and how to run in it.
struct Setup {
    dir: tempfile::TempDir,
    scale: Scale,
    format: Format,
    env: Vec<(String, String)>,
    fakes: Vec<Arc<dyn Fake>>,
    ids: Box<dyn Fn(usize, usize) -> Option<String>>,
}

impl Setup {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
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
fn with_fakes(scale: Scale, format: Format, limits: bool) -> Setup {
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
    let ids = Box::new(move |t: usize, p: usize| ids[t].get(&p).cloned());
    let s = Setup {
        dir,
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
fn seeded(scale: Scale, format: Format) -> Setup {
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
    let ids = Box::new(|t: usize, p: usize| (t > 0).then(|| format!("{t}-{p}")));
    let s = Setup {
        dir,
        scale,
        format,
        env: vec![("BENCH_TOKEN".into(), "bench-token".into())],
        fakes: Vec::new(),
        ids,
    };
    s.write_source(Change::default());
    let cfg = s.config();
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
    store.apply_many(&deltas).unwrap();
    drop(store);
    s.run(&["sync"]);
    s
}

struct Args {
    scales: Vec<Scale>,
    reps: usize,
    rate: bool,
    client: bool,
    /// Keep the seeded directories (for `perf record` of a run in them).
    keep: bool,
}

fn args() -> Args {
    let mut a = Args {
        scales: Vec::new(),
        reps: 5,
        rate: false,
        client: false,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--bench" => {}
            "--rate" => a.rate = true,
            "--client" => a.client = true,
            "--keep" => a.keep = true,
            "--reps" => a.reps = it.next().and_then(|n| n.parse().ok()).unwrap_or(5),
            s => a.scales.extend(Scale::by_name(s)),
        }
    }
    if a.scales.is_empty() {
        a.scales.push(generate::S);
    }
    a
}

fn main() {
    let a = args();
    // Under `cargo test --benches`: the smallest size, once.
    let smoke = !std::env::args().any(|x| x == "--bench");
    let reps = if smoke { 1 } else { a.reps.max(1) };
    println!("rostersync scale benchmark, medians of {reps} runs (2 shared cores: noisy)");
    for scale in a.scales {
        println!(
            "\n== {}: {} people, {} groups, {} memberships, 4 targets (one per kind), {} source files",
            scale.name,
            scale.people,
            scale.groups,
            scale.memberships(),
            2 * generate::FILES
        );
        // An initial sync at XL sends about 35,000 requests: only when asked.
        if scale.people <= 50_000 || a.client {
            client(scale, reps);
        }
        for format in [Format::Yaml, Format::Json] {
            let s = seeded(scale, format);
            figure1(&s, reps);
            if format == Format::Yaml {
                figure5(&s, reps);
            }
            if a.keep {
                println!("kept for profiling: {}", s.dir.path().display());
                // Leaks the TempDir on purpose: its directory stays.
                std::mem::forget(s);
            }
        }
        if a.rate {
            figure3(scale);
        }
    }
}

/// Figures 2 and 4: the initial sync against zero-latency fakes, then a 1% churn.
fn client(scale: Scale, reps: usize) {
    let mut runs = Vec::new();
    let mut calls = 0;
    let mut churn_counts = [0; 4];
    for _ in 0..reps.min(3) {
        let s = with_fakes(scale, Format::Yaml, false);
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
        "[4] initial sync, zero-latency fakes, no rate limit: {calls} calls in {:.2} s = {:.0} calls/s; rostersync CPU {:.0} us/call (state writes included), peak RSS {:.0} MiB",
        m.wall.as_secs_f64(),
        calls as f64 / m.wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / calls as f64,
        m.rss_mib
    );
    let minimal = generate::minimal_churn(&scale);
    println!(
        "[2] 1% churn ({} groups, +1 -1 each): requests per kind (maestro, teams, deepcall, kazoo) {:?}, minimal {:?}: {}",
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
        "[1] {f} ({mb:.1} MiB) no-op sync (shortcut): {:.0} ms wall, {:.1} MiB peak RSS",
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
        "[1] {f} one membership changed, sync --dry-run (load + state + resolve + plan): {:.0} ms wall, {:.0} MiB peak RSS",
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
        "[1] {f} in process: load {:.0} ms + resolve and plan {:.0} ms = {:.0} ms",
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
    {
        let store = Store::open_at(&cfg.state, None).unwrap();
        store.checkpoint().unwrap();
    }
    let bytes = std::fs::metadata(cfg.state.sqlite_path().expect("a SQLite state"))
        .unwrap()
        .len();
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
        "[5] state database {:.1} MiB = {:.0} bytes per membership; open + read known state and caches of 4 targets: {:.0} ms",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / s.scale.memberships() as f64,
        ms(t)
    );
}

/// Figure 3: the initial sync with 20 ms latency and the vendors' limits (one run).
fn figure3(scale: Scale) {
    let s = with_fakes(scale, Format::Yaml, true);
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
        "[3] initial sync, 20 ms latency, vendor rate limits: {:.1} s wall against a bound of {:.1} s ({:+.1}%): {}",
        m.wall.as_secs_f64(),
        bound,
        (m.wall.as_secs_f64() / bound - 1.0) * 100.0,
        parts.join("; ")
    );
}
