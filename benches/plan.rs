//! Scale benchmark (SPEC section 9): a large contact center, a no-op run and a churn plan.
//!
//! `cargo bench --bench plan` runs the full size (20,000 agents, 2,000 groups, 50,000
//! memberships); under `cargo test` it runs a small size as a smoke test. Prints medians.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rostersync::config::Config;
use rostersync::plan::{KnownMember, PlanOptions, plan_target};
use rostersync::store::{Delta, Store};
use rostersync::sync::{self, SyncOptions};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(n: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..n {
        let t = Instant::now();
        last = Some(f());
        times.push(t.elapsed());
    }
    (median(times), last.expect("n >= 1"))
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (agents, groups, per_group, reps) = if full {
        (20_000, 2_000, 25, 5)
    } else {
        (200, 20, 5, 1)
    };
    let dir = tempfile::tempdir().expect("tempdir");

    // The source: people with ids for a teams-style target, groups of `per_group`.
    let mut y = String::with_capacity(agents * 120 + groups * per_group * 30);
    y.push_str("people:\n");
    for i in 0..agents {
        let _ = writeln!(
            y,
            "  - email: agent{i:05}@example.com\n    ids: {{ t: \"id-{i:05}\" }}"
        );
    }
    y.push_str("groups:\n");
    for gi in 0..groups {
        let members: Vec<String> = (0..per_group)
            .map(|k| format!("agent{:05}@example.com", (gi * 7 + k * 13) % agents))
            .collect();
        let _ = writeln!(
            y,
            "  - name: \"Group {gi:04}\"\n    members: [{}]",
            members.join(", ")
        );
    }
    std::fs::write(dir.path().join("groups.yaml"), &y).unwrap();
    std::fs::write(
        dir.path().join("rostersync.toml"),
        "source = \"groups.yaml\"\nstate = \"state.db\"\n[[target]]\nname = \"t\"\nkind = \"scim\"\nflavor = \"maestroqa\"\nbase_url = \"http://127.0.0.1:9/scim\"\ntoken_env = \"BENCH_TOKEN\"\n",
    )
    .unwrap();
    // SAFETY: single-threaded at this point; the variable only names a dummy secret.
    unsafe { std::env::set_var("BENCH_TOKEN", "bench-token") };
    let cfg = Config::load(&dir.path().join("rostersync.toml")).expect("config");

    let (t_load, desired) = time(reps, || {
        rostersync::source::load(&cfg.source, &["t"], false).expect("source")
    });
    let memberships: usize = desired.groups.values().map(|g| g.members.len()).sum();

    // Known state = desired (everything converged), written through the store.
    {
        let mut store = Store::open_at(&cfg.state, None).unwrap();
        for g in desired.groups.values() {
            let members: BTreeMap<String, KnownMember> = g
                .members
                .iter()
                .map(|e| {
                    let id = desired.people[&**e].ids.get("t").unwrap().clone();
                    (
                        id,
                        KnownMember {
                            owned: true,
                            receive_call: false,
                            email: Some(e.clone()),
                        },
                    )
                })
                .collect();
            let delta = Delta::Group {
                key: g.key.clone(),
                remote_id: format!("r-{}", g.key),
                name: g.name.clone(),
                members,
                owners: BTreeMap::new(),
            };
            store.apply("t", &delta).unwrap();
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = SyncOptions {
        command: "bench".into(),
        ..Default::default()
    };
    let (t_noop, report) = time(reps, || rt.block_on(sync::run(&cfg, &opts)).expect("run"));
    assert_eq!(
        report.calls_ok + report.calls_failed,
        0,
        "a no-op run sends nothing"
    );
    assert_eq!(report.targets[0].plan.as_ref().unwrap().unchanged, groups);

    // The pure planner alone, no-op and with 1% of groups changed.
    let store = Store::open_at(&cfg.state, None).unwrap();
    let (t_known, known) = time(reps, || store.known("t").unwrap());
    let mut dt = rostersync::plan::DesiredTarget::default();
    for g in desired.groups.values() {
        let mut dg = rostersync::plan::DesiredGroup {
            key: g.key.clone(),
            name: g.name.clone(),
            ..Default::default()
        };
        for e in &g.members {
            dg.members.insert(
                desired.people[&**e].ids.get("t").unwrap().as_str().into(),
                e.clone(),
            );
        }
        dt.groups.insert(g.key.clone(), dg);
    }
    let naming = rostersync::plan::resolve::Naming {
        target: "t",
        email_is_id: false,
        owners: false,
        receive_call: false,
        scim: false,
    };
    let no_cache = std::collections::HashMap::new();
    let (t_resolve, r) = time(reps, || {
        let wanted = rostersync::plan::resolve::to_look_up(&desired, &naming, &no_cache);
        assert!(wanted.is_empty());
        rostersync::plan::resolve::desired_target(&desired, &naming, &no_cache, &known, &|_| {
            String::new()
        })
    });
    assert_eq!(r.target, dt);
    let popts = PlanOptions {
        mode: Default::default(),
        safety: cfg.safety,
        allow_mass_removal: false,
        keep: Default::default(),
        only: None,
    };
    let (t_plan, p) = time(reps, || plan_target(&dt, &known, &popts));
    assert!(p.ops.is_empty());
    for (i, g) in dt.groups.values_mut().enumerate() {
        if i % 100 == 0 {
            g.members.insert(
                format!("new-{i}").into(),
                format!("new{i}@example.com").into(),
            );
        }
    }
    let (t_churn, p) = time(reps, || plan_target(&dt, &known, &popts));
    assert_eq!(p.ops.len(), groups.div_ceil(100));

    println!(
        "scale: {agents} agents, {groups} groups, {memberships} memberships, source {} KiB",
        y.len() / 1024
    );
    println!(
        "source load (parse + validate)      {:>9.1} ms",
        t_load.as_secs_f64() * 1e3
    );
    println!(
        "no-op sync run (load+state+plan)    {:>9.1} ms  ({:.2}x the source load), 0 requests",
        t_noop.as_secs_f64() * 1e3,
        t_noop.as_secs_f64() / t_load.as_secs_f64()
    );
    println!(
        "known state read from SQLite        {:>9.1} ms",
        t_known.as_secs_f64() * 1e3
    );
    println!(
        "member ids resolved (pure part)     {:>9.1} ms",
        t_resolve.as_secs_f64() * 1e3
    );
    println!(
        "plan only, no change                {:>9.1} ms",
        t_plan.as_secs_f64() * 1e3
    );
    println!(
        "plan only, 1% of groups changed     {:>9.1} ms  ({} ops)",
        t_churn.as_secs_f64() * 1e3,
        p.ops.len()
    );
    println!(
        "peak RSS                            {:>9.1} MiB",
        peak_rss_mib()
    );
}
