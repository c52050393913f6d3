//! Soak: all four kinds at once (one config, one fake of each kind) through
//! `ROSTERSYNC_SOAK_RUNS` consecutive runs (default 10) with random source churn while the
//! fakes inject random 429s (with and without `Retry-After`), 500s, dropped connections
//! before and after the request is applied, slow answers past the timeout and DeepCall
//! 1009 bodies, and `kill -9`s rostersync at random moments in some runs (often while a
//! slowed membership write is in flight, the next source then not wanting it).
//!
//! After one final clean run: no membership of the source is missing on any target, no
//! target has a duplicate group name, and every call a finished run got a 2xx for is in
//! its history. That plain run must also make every target *equal* to the source (a write
//! applied by the vendor but unrecorded before a `kill -9` or a lost answer keeps its
//! intent, so the plain run reads that group back first); a final `--full` must then find
//! nothing to change.
//!
//! Seeded: the seed is printed at the start and in every failure;
//! `ROSTERSYNC_SOAK_SEED=<n>` replays it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fakes::{Fake, Fault, Logged, Match, deepcall, kazoo, maestro, teams};
use crate::harness::*;

/// xorshift64*: small, seeded, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const GROUPS: usize = 8;
const PEOPLE: usize = 24;

struct Soak {
    dir: tempfile::TempDir,
    fakes: Vec<(String, Arc<dyn Fake>)>,
    /// Each fake's `clear_faults` (not part of the `Fake` trait).
    clearers: Vec<Box<dyn Fn()>>,
    seed: u64,
}

impl Soak {
    fn new(seed: u64) -> Soak {
        let t = teams::FakeTeams::start_with_ids_in_source();
        t.set_rate_limit(None);
        let (m, d, k) = (
            maestro::FakeMaestro::start(),
            deepcall::FakeDeepCall::start(),
            kazoo::FakeKazoo::start(),
        );
        let clearers: Vec<Box<dyn Fn()>> = vec![
            Box::new({
                let m = m.clone();
                move || m.clear_faults()
            }),
            Box::new({
                let t = t.clone();
                move || t.clear_faults()
            }),
            Box::new({
                let d = d.clone();
                move || d.clear_faults()
            }),
            Box::new({
                let k = k.clone();
                move || k.clear_faults()
            }),
        ];
        let fakes: Vec<(String, Arc<dyn Fake>)> = vec![
            ("maestro".into(), m),
            ("teams".into(), t),
            ("deepcall".into(), d),
            ("kazoo".into(), k),
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from(
            "source = \"groups.yaml\"\nstate = \"state/rostersync.db\"\n\n[safety]\n\
             max_removals = 100000\nmax_removal_ratio = 1.0\n\n",
        );
        for (name, f) in &fakes {
            // Timeouts past which the slow answers land; few quick retries.
            let block: String = f
                .target_toml(name)
                .lines()
                .filter(|l| !l.starts_with("timeout") && !l.starts_with("max_retries"))
                .map(|l| format!("{l}\n"))
                .collect();
            text += &format!("{block}timeout = \"1s\"\nmax_retries = 2\n\n");
        }
        std::fs::write(dir.path().join("rostersync.toml"), text).unwrap();
        Soak {
            dir,
            fakes,
            clearers,
            seed,
        }
    }

    fn write_source(&self, groups: &BTreeMap<String, BTreeSet<usize>>) {
        let mut y = String::from("people:\n");
        for p in 0..PEOPLE {
            let e = email(p);
            y += &format!("  - email: {e}\n");
            let mut ids = String::new();
            for (name, f) in &self.fakes {
                f.add_user(&e);
                if let Some(id) = f.source_id(&e) {
                    ids += &format!("      {name}: \"{id}\"\n");
                }
            }
            if !ids.is_empty() {
                y += &format!("    ids:\n{ids}");
            }
        }
        y += "groups:\n";
        for (name, members) in groups {
            let m: Vec<String> = members.iter().map(|&i| email(i)).collect();
            y += &format!("  - name: \"{name}\"\n    members: [{}]\n", m.join(", "));
        }
        std::fs::write(self.dir.path().join("groups.yaml"), y).unwrap();
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(BIN);
        c.arg("--config")
            .arg(self.dir.path().join("rostersync.toml"))
            .args(args);
        c.env_remove("ROSTERSYNC_CONFIG")
            .env_remove("ROSTERSYNC_LOG")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null());
        scrub_test_env(&mut c);
        for (_, f) in &self.fakes {
            for (k, v) in f.env() {
                c.env(k, v);
            }
        }
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        let o = self.command(args).output().unwrap();
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// The calls of the latest run in the history, as (method, path, outcome).
    fn last_run_calls(&self) -> Vec<(String, String, String, String)> {
        let h = self.run(&["history", "--limit", "100000", "--output", "json"]);
        assert_eq!(h.code, 0, "seed {}: {}", self.seed, h.stderr);
        let v: serde_json::Value = serde_json::from_str(&h.stdout).expect("history json");
        let last = v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["id"].as_i64())
            .max()
            .unwrap_or(0);
        v["calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["run"].as_i64() == Some(last))
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
                (s("target"), s("method"), s("path"), s("outcome"))
            })
            .collect()
    }

    /// Arms random faults on every fake.
    fn arm_faults(&self, rng: &mut Rng) -> Vec<String> {
        let mut armed = Vec::new();
        for (name, f) in &self.fakes {
            for _ in 0..rng.below(4) {
                // DeepCall reads with POST too.
                let reads = if name == "deepcall" {
                    Match::new("POST", "Group/")
                } else {
                    Match::new("GET", "")
                };
                let when = match rng.below(4) {
                    0 => f.membership_write(),
                    1 => f.create_request(),
                    2 => reads,
                    _ => Match::new("*", ""),
                };
                let (what, fault) = match rng.below(if name == "deepcall" { 8 } else { 7 }) {
                    0 => ("429 Retry-After: 1", Fault::too_many(1)),
                    1 => ("429", Fault::status(429)),
                    2 => ("500", Fault::status(500)),
                    3 => ("drop before", Fault::Drop),
                    4 => ("drop after applying", Fault::DropAfter),
                    5 | 6 => (
                        "slow past the timeout",
                        Fault::Delay(Duration::from_millis(1400)),
                    ),
                    _ => (
                        "1009",
                        Fault::body(
                            200,
                            serde_json::json!({"status": "error", "message": "Something went wrong", "code": 1009}),
                        ),
                    ),
                };
                let times = 1 + rng.below(2) as usize;
                armed.push(format!(
                    "{name}: {what} x{times} on {} {}",
                    when.method, when.path_contains
                ));
                f.inject(when, fault, times);
            }
        }
        armed
    }

    fn clear(&self) {
        for (_, f) in &self.fakes {
            f.clear_requests();
        }
    }

    fn clear_faults(&self) {
        for clear in &self.clearers {
            clear();
        }
    }
}

fn expected(groups: &BTreeMap<String, BTreeSet<usize>>) -> BTreeMap<String, BTreeSet<String>> {
    groups
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().map(|&i| email(i)).collect()))
        .collect()
}

/// Writes the fake saw answered 2xx without any fault (so the client saw the answer).
fn clean_ok_writes(f: &dyn Fake, reqs: &[Logged]) -> Vec<(String, String)> {
    reqs.iter()
        .filter(|r| f.is_write(r) && (200..300).contains(&r.status) && r.fault.is_none())
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect()
}

#[test]
fn soak_all_kinds_with_faults_and_kills() {
    let seed = std::env::var("ROSTERSYNC_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let runs: usize = std::env::var("ROSTERSYNC_SOAK_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    eprintln!("[soak] seed {seed} (replay with ROSTERSYNC_SOAK_SEED={seed}), {runs} runs");
    let started = Instant::now();
    let mut rng = Rng(seed);
    let soak = Soak::new(seed);

    let mut groups: BTreeMap<String, BTreeSet<usize>> = (0..GROUPS)
        .map(|g| {
            let members = (0..4).map(|k| (g * 3 + k) % PEOPLE).collect();
            (format!("Soak Group {g}"), members)
        })
        .collect();
    let (mut killed, mut finished, mut codes) = (0, 0, BTreeMap::<i32, usize>::new());
    for i in 0..runs {
        // Churn: toggle 1 to 5 memberships (every group keeps at least one member).
        for _ in 0..1 + rng.below(5) {
            let g = format!("Soak Group {}", rng.below(GROUPS as u64));
            let p = rng.below(PEOPLE as u64) as usize;
            let m = groups.get_mut(&g).unwrap();
            if !m.remove(&p) {
                m.insert(p);
            }
            if m.is_empty() {
                m.insert(p);
            }
        }
        soak.write_source(&groups);
        let armed = soak.arm_faults(&mut rng);
        soak.clear();
        let kill = rng.chance(30);
        if kill {
            // Often while a slowed membership write is in flight.
            if rng.chance(50) {
                let (_, f) = &soak.fakes[rng.below(4) as usize];
                f.inject(
                    f.membership_write(),
                    Fault::Delay(Duration::from_millis(900)),
                    3,
                );
            }
            let mut child = soak
                .command(&["sync"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(50 + rng.below(1500)));
            let _ = child.kill();
            let status = child.wait().unwrap();
            eprintln!(
                "[soak] run {i}: kill -9 ({}); faults: {armed:?}",
                if status.code().is_some() {
                    "it had already ended"
                } else {
                    "mid-run"
                }
            );
            killed += 1;
            continue;
        }
        let r = soak.run(&["sync"]);
        *codes.entry(r.code).or_default() += 1;
        eprintln!("[soak] run {i}: exit {}; faults: {armed:?}", r.code);
        assert!(
            matches!(r.code, 0 | 1),
            "seed {seed} run {i}: exit {}\n{}",
            r.code,
            r.stderr
        );
        finished += 1;
        // Every write a finished run got a 2xx for is in its history, as ok.
        let calls = soak.last_run_calls();
        for (name, f) in &soak.fakes {
            let mut have: Vec<(String, String)> = calls
                .iter()
                .filter(|c| &c.0 == name && c.3 == "ok")
                .map(|c| (c.1.clone(), c.2.clone()))
                .collect();
            for w in clean_ok_writes(&**f, &f.requests()) {
                let pos = have.iter().position(|h| *h == w);
                assert!(
                    pos.is_some(),
                    "seed {seed} run {i}: {name}: {} {} got a 2xx but is not in the history",
                    w.0,
                    w.1
                );
                have.remove(pos.unwrap());
            }
        }
    }

    // The final clean run: no fault left anywhere.
    soak.clear_faults();
    soak.clear();
    let want = expected(&groups);
    let last = soak.run(&["sync"]);
    assert_eq!(
        last.code, 0,
        "seed {seed}: the final clean run\n{}",
        last.stderr
    );
    let mut plain_equal = true;
    for (name, f) in &soak.fakes {
        let got = f.groups();
        for (g, members) in &want {
            let have = got.get(g).cloned().unwrap_or_default();
            let lost: Vec<&String> = members.difference(&have).collect();
            assert!(
                lost.is_empty(),
                "seed {seed}: {name}: {g} lost {lost:?} (has {have:?})"
            );
        }
        let mut names = f.all_group_names();
        names.sort();
        let mut uniq = names.clone();
        uniq.dedup();
        assert_eq!(names, uniq, "seed {seed}: {name}: a duplicate group name");
        if got != want {
            plain_equal = false;
            for (g, members) in &want {
                let have = got.get(g).cloned().unwrap_or_default();
                let extra: Vec<&String> = have.difference(members).collect();
                if !extra.is_empty() {
                    eprintln!(
                        "[soak] seed {seed}: after the plain final run {name}: {g} still has \
                         {extra:?} that the source no longer wants"
                    );
                }
            }
        }
    }
    eprintln!(
        "[soak] seed {seed}: {runs} runs ({killed} killed, {finished} finished, exits {codes:?}) \
         in {:.0}s; the plain final run left every target equal to the source: {plain_equal}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        plain_equal,
        "seed {seed}: the plain final run did not make every target equal to the source"
    );
    soak.clear();
    let full = soak.run(&["sync", "--full"]);
    assert_eq!(full.code, 0, "seed {seed}: --full\n{}", full.stderr);
    for (name, f) in &soak.fakes {
        let writes: Vec<String> = f
            .requests()
            .iter()
            .filter(|r| f.is_write(r))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(
            writes.is_empty(),
            "seed {seed}: {name}: --full after the plain run found drift to repair: {writes:?}"
        );
        assert_eq!(
            f.groups(),
            want,
            "seed {seed}: {name} differs from the source after --full"
        );
        let mut names = f.all_group_names();
        names.sort();
        let want_names: Vec<String> = want.keys().cloned().collect();
        assert_eq!(names, want_names, "seed {seed}: {name}: every group once");
    }
}
