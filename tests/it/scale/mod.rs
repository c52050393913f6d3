//! The scale scenario at size S, once, as CI's smoke test of `benches/scale.rs`: the
//! generated source against the four local fakes; the request counts must equal the
//! minimal counts (initial sync, no-op, 1% churn). Timings are never asserted.

pub mod generate;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use crate::conformance::count_ok;
use crate::fakes::{Fake, Match, deepcall, kazoo, maestro, teams};
use crate::harness::BIN;
use generate::{Change, Format, S, TARGETS};

/// The four fakes, in [`TARGETS`] order, with the vendors' rate limits off.
pub fn start_fakes() -> Vec<Arc<dyn Fake>> {
    let teams = teams::FakeTeams::start_with_ids_in_source();
    teams.set_rate_limit(None);
    vec![
        maestro::FakeMaestro::start(),
        teams,
        deepcall::FakeDeepCall::start(),
        kazoo::FakeKazoo::start_with_ids_in_source(),
    ]
}

fn sync(dir: &Path, fakes: &[Arc<dyn Fake>], args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(BIN);
    c.arg("--config")
        .arg(dir.join("rostersync.toml"))
        .arg("sync")
        .args(args)
        .env_remove("ROSTERSYNC_CONFIG")
        .env_remove("ROSTERSYNC_LOG")
        .env("NO_COLOR", "1");
    for f in fakes {
        c.envs(f.env());
    }
    let o = c.output().expect("run rostersync");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Requests each fake answered with 2xx since the last clear, in [`TARGETS`] order.
fn counts(fakes: &[Arc<dyn Fake>]) -> [usize; 4] {
    let mut out = [0; 4];
    for (i, f) in fakes.iter().enumerate() {
        out[i] = count_ok(&f.requests(), &Match::new("*", ""));
        f.clear_requests();
    }
    out
}

#[test]
fn scale_s_minimal_requests() {
    let fakes = start_fakes();
    let dir = tempfile::tempdir().unwrap();
    for p in 0..S.people {
        for f in &fakes {
            f.add_user(&generate::email(p));
        }
    }
    let ids = |t: usize, p: usize| fakes[t].source_id(&generate::email(p));
    let blocks: Vec<String> = fakes
        .iter()
        .zip(TARGETS)
        .map(|(f, name)| format!("{}rate_limit = 0\n", f.target_toml(name)))
        .collect();
    generate::write_config(dir.path(), &blocks);
    let source = dir.path().join("source");
    generate::write_source(&source, &S, Format::Yaml, Change::default(), &ids);

    let (code, out, err) = sync(dir.path(), &fakes, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        counts(&fakes),
        generate::minimal_initial(&S),
        "initial sync"
    );

    let (code, out, err) = sync(dir.path(), &fakes, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    // Not a request at all (`counts` sees only the 2xx ones).
    for (f, name) in fakes.iter().zip(TARGETS) {
        assert!(
            f.requests().is_empty(),
            "no-op: {name} was sent {:?}",
            f.requests()
        );
    }
    assert_eq!(counts(&fakes), [0; 4], "no-op");

    let churn = Change {
        churn: true,
        ..Change::default()
    };
    generate::write_source(&source, &S, Format::Yaml, churn, &ids);
    let (code, out, err) = sync(dir.path(), &fakes, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(counts(&fakes), generate::minimal_churn(&S), "1% churn");
    for (t, f) in fakes.iter().enumerate() {
        let groups = f.groups();
        for g in (0..S.groups).filter(|g| g % 4 == t) {
            let want: std::collections::BTreeSet<String> = generate::members(&S, g, churn)
                .into_iter()
                .map(generate::email)
                .collect();
            assert_eq!(groups[&generate::group_name(g)], want, "{}", TARGETS[t]);
        }
    }
}
