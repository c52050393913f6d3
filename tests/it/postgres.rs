//! Every command with the state in PostgreSQL, end to end through the real binary against
//! one fake (MaestroQA) and Debian's real server: `sync` and its options, `check`,
//! `history`, `state`, `explain`, the no-op shortcut; `state copy` from SQLite and back;
//! the password (never in the URL, from `password_file`, never shown); TLS verified
//! against `ca_file`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::fakes::Fake;
use crate::fakes::maestro::FakeMaestro;
use crate::harness::*;
use crate::pg_cluster::Cluster;
use crate::tls::ca;

fn e(i: usize) -> String {
    email(i)
}

fn writes(fake: &FakeMaestro) -> usize {
    fake.requests().iter().filter(|r| r.is_write()).count()
}

/// Every line of every output, for the "never shown" checks.
#[track_caller]
fn assert_not_in(needle: &str, runs: &[&Run]) {
    for r in runs {
        assert!(
            !r.stdout.contains(needle) && !r.stderr.contains(needle),
            "{needle:?} shown:\n--- stdout\n{}\n--- stderr\n{}",
            r.stdout,
            r.stderr
        );
    }
}

/// Lines put first in the cluster's pg_hba.conf (first match wins), then reloaded; waits
/// (bounded) until `applied` says the server uses them.
fn prepend_hba(cluster: &Cluster, lines: &str, mut applied: impl FnMut() -> bool) {
    let path = cluster.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&path).expect("read pg_hba.conf");
    std::fs::write(&path, format!("{lines}\n{old}")).expect("write pg_hba.conf");
    cluster.sql("postgres", "SELECT pg_reload_conf()");
    assert!(
        wait_until(Duration::from_secs(20), &mut applied),
        "the server took the new pg_hba.conf lines:\n{lines}\n--- server log ---\n{}",
        cluster.log()
    );
}

/// `sync`, `sync --dry-run`, a saved plan, `--only`, `--full`, `check` (and `--online`),
/// `history`, `state`, `explain` and the no-op shortcut, all with the state in a fresh
/// PostgreSQL database.
#[test]
fn every_command_works_on_postgres() {
    let fake = FakeMaestro::start();
    let env = Env::new_pg(fake.clone());
    let pg = env.pg().clone();
    let mut outs: Vec<Run> = Vec::new();

    // check: the state line names the database, the backend, the node and the lease.
    let v1 = vec![
        g("Tier 1", &[&e(1), &e(2)]),
        g("Tier 2", &[&e(3)]),
        g("Night Shift", &[&e(1), &e(4)]),
    ];
    env.write_source(&v1);
    let c = env.run(&["check"]).expect(0);
    let line = c
        .stdout
        .lines()
        .find(|l| l.starts_with("state "))
        .unwrap_or_else(|| panic!("a state line:\n{}", c.stdout));
    assert!(
        line.contains(&pg.url) && line.contains("(PostgreSQL; node ") && line.contains("lease 5s"),
        "{line}"
    );
    let cj = env.run(&["check", "--output", "json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&cj.stdout).expect("check json");
    assert_eq!(v["state"]["backend"], "postgres", "{}", cj.stdout);
    assert_eq!(v["state"]["path"], pg.url.as_str(), "{}", cj.stdout);
    outs.extend([c, cj]);

    // A dry-run before any run: the plan from nothing known, nothing written anywhere.
    let dry = env.run(&["sync", "--dry-run"]).expect(0);
    assert!(dry.stdout.contains("+ create \"Tier 1\""), "{}", dry.stdout);
    assert_eq!(writes(&fake), 0, "a dry-run sends no write");
    assert!(fake.all_group_names().is_empty());
    outs.push(dry);

    // The first run, then the no-op shortcut: unchanged, no request at all.
    let r = env.sync().expect(0);
    env.assert_converged(&v1);
    assert!(r.stderr.contains("done in"), "{}", r.stderr);
    outs.push(r);
    fake.clear_requests();
    let r = env.sync().expect(0);
    assert!(r.stdout.contains("unchanged since run 1"), "{}", r.stdout);
    assert!(
        fake.requests().is_empty(),
        "a no-op run on PostgreSQL sends nothing: {:?}",
        fake.requests()
    );
    outs.push(r);

    // A saved plan, reviewed, then applied exactly.
    let v2 = vec![
        g("Tier 1", &[&e(1), &e(5)]),
        g("Tier 2", &[&e(3)]),
        g("Night Shift", &[&e(1), &e(4)]),
        g("Billing", &[&e(6)]),
    ];
    env.write_source(&v2);
    let plan = env.path("p.json");
    let plan_s = plan.to_str().unwrap();
    fake.clear_requests();
    let saved = env
        .run(&["sync", "--dry-run", "--save-plan", plan_s])
        .expect(0);
    assert!(
        saved.stdout.contains("+ create \"Billing\""),
        "{}",
        saved.stdout
    );
    assert!(
        saved.stdout.contains("+ agent005@example.com"),
        "{}",
        saved.stdout
    );
    assert_eq!(writes(&fake), 0, "saving a plan sends no write");
    assert!(plan.exists(), "the plan was written");
    outs.push(saved);
    let applied = env.run(&["sync", "--plan", plan_s]).expect(0);
    env.assert_converged(&v2);
    outs.push(applied);
    // A plan saved before another run changed the known state is refused, nothing sent.
    env.write_source(&v1);
    env.run(&["sync", "--dry-run", "--save-plan", plan_s])
        .expect(0);
    let mut v2b = v2.clone();
    v2b[3] = g("Billing", &[&e(6), &e(9)]);
    env.write_source(&v2b);
    env.sync().expect(0);
    env.write_source(&v1);
    fake.clear_requests();
    let stale = env.run(&["sync", "--plan", plan_s]).expect(2);
    assert!(stale.stderr.contains("known state"), "{}", stale.stderr);
    assert!(fake.requests().is_empty(), "a stale plan sends nothing");
    env.write_source(&v2);
    env.sync().expect(0);
    env.assert_converged(&v2);

    // --only: this person's change, and nobody else's.
    let v3 = vec![
        g("Tier 1", &[&e(1), &e(5), &e(7)]),
        g("Tier 2", &[&e(3), &e(8)]),
        g("Night Shift", &[&e(1), &e(4)]),
        g("Billing", &[&e(6)]),
    ];
    env.write_source(&v3);
    let only = env.run(&["sync", "--only", &e(7)]).expect(0);
    let held = fake.groups();
    assert!(held["Tier 1"].contains(&e(7)), "{}", only.stdout);
    assert!(
        !held["Tier 2"].contains(&e(8)),
        "another person's change waits: {}",
        only.stdout
    );
    outs.push(only);
    env.sync().expect(0);
    env.assert_converged(&v3);

    // --full: drift behind rostersync's back is repaired.
    fake.add_user(&e(20));
    fake.set_members_by_hand("Tier 2", &[&e(3), &e(8), &e(20)]);
    fake.clear_requests();
    env.sync().expect(0);
    assert!(
        fake.requests().is_empty(),
        "a normal run trusts the known state"
    );
    let full = env.run(&["sync", "--full"]).expect(0);
    assert!(full.stderr.contains("drift found"), "{}", full.stderr);
    env.assert_converged(&v3);
    outs.push(full);

    // check --online: the target probed read-only.
    fake.clear_requests();
    let online = env.run(&["check", "--online"]).expect(0);
    let t = online
        .stdout
        .lines()
        .find(|l| l.split_whitespace().take(2).eq(["target", T]))
        .unwrap_or_else(|| panic!("a line for {T}:\n{}", online.stdout));
    assert!(t.contains(" ok: "), "{t}");
    assert!(!fake.requests().is_empty(), "the probe asked the target");
    assert_eq!(writes(&fake), 0, "the probe only reads");
    outs.push(online);

    // history, text and json: every run and the calls they sent.
    let h = env.run(&["history"]).expect(0);
    assert!(
        h.stdout.contains("create") && h.stdout.contains("Billing"),
        "{}",
        h.stdout
    );
    let hj = env.run(&["history", "--output", "json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&hj.stdout).expect("history json");
    let calls = v["calls"].as_array().expect("calls");
    assert_eq!(
        calls.iter().filter(|c| c["op"] == "create").count(),
        4,
        "one create per group: {}",
        hj.stdout
    );
    assert!(
        calls.iter().any(|c| c["group_name"] == "Tier 2"),
        "{}",
        hj.stdout
    );
    outs.extend([h, hj]);

    // state json: the known state is what the target holds.
    let s = env.run(&["state", "--output", "json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&s.stdout).expect("state json");
    let groups = v[T]["groups"].as_object().expect("groups of t1");
    let mut names: Vec<&str> = groups
        .values()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["Billing", "Night Shift", "Tier 1", "Tier 2"]);
    let tier2 = groups
        .values()
        .find(|g| g["name"] == "Tier 2")
        .expect("Tier 2");
    let mut members: Vec<&str> = tier2["members"]
        .as_object()
        .unwrap()
        .values()
        .map(|m| m["email"].as_str().unwrap())
        .collect();
    members.sort();
    assert_eq!(members, [e(3), e(8)]);
    outs.push(s);

    // explain: where a person is, which line put them there, the last call.
    let x = env.run(&["explain", &e(1)]).expect(0);
    assert!(
        x.stdout.contains("in \"Tier 1\"") && x.stdout.contains("in \"Night Shift\""),
        "{}",
        x.stdout
    );
    assert!(x.stdout.contains("groups.yaml:"), "{}", x.stdout);
    assert!(x.stdout.contains("last call:"), "{}", x.stdout);
    outs.push(x);

    // The rows are in PostgreSQL (and no SQLite file was made); no secret anywhere.
    assert!(!env.db_path().exists(), "no SQLite state beside it");
    let rows = pg_rows_text(pg.cluster(), &pg.db);
    assert!(rows.contains("Billing"), "the state is in the database");
    env.assert_no_secret(&outs.iter().collect::<Vec<_>>());
}

/// `state copy`: SQLite -> PostgreSQL (then a run there re-reads nothing and sends
/// nothing), refused onto a database that already holds a state (exit 2), and
/// PostgreSQL -> SQLite again, the same known state each way.
#[test]
fn state_copy_to_postgres_and_back() {
    let fake = FakeMaestro::start();
    let mut env = Env::new(fake.clone());
    let groups = vec![
        g("Tier 1", &[&e(1), &e(2)]),
        g("Tier 2", &[&e(3)]),
        g("Billing", &[&e(4), &e(5)]),
    ];
    env.write_source(&groups);
    env.sync().expect(0);
    let known_sqlite = env.run(&["state", "--output", "json"]).expect(0).stdout;
    let history_sqlite = env.run(&["history", "--output", "json"]).expect(0).stdout;

    let pg = PgState::shared();
    let copied = env.run(&["state", "copy", "--to", &pg.url]).expect(0);
    assert!(
        copied.stdout.contains(&format!("-> {}", pg.url)) && copied.stdout.contains("groups 3"),
        "{}",
        copied.stdout
    );
    // Copying again onto the same database: refused, it holds a state now.
    let again = env.run(&["state", "copy", "--to", &pg.url]).expect(2);
    assert!(
        again.stderr.contains("already holds a state") && again.stderr.contains(&pg.url),
        "{}",
        again.stderr
    );

    // The config pointed at PostgreSQL: the same known state and history, and a run that
    // re-reads nothing and sends nothing.
    env.set_pg(Some(pg.clone()));
    assert_eq!(
        env.run(&["state", "--output", "json"]).expect(0).stdout,
        known_sqlite,
        "the known state moved unchanged"
    );
    assert_eq!(
        env.run(&["history", "--output", "json"]).expect(0).stdout,
        history_sqlite,
        "the history moved unchanged"
    );
    fake.clear_requests();
    let r = env.sync().expect(0);
    assert!(
        fake.requests().is_empty(),
        "nothing re-read, nothing sent after the copy: {:?}\n{}",
        fake.requests(),
        r.stderr
    );
    let r = env.sync().expect(0);
    assert!(r.stdout.contains("unchanged since run"), "{}", r.stdout);
    assert!(fake.requests().is_empty());

    // A change on PostgreSQL, then back to SQLite (a new file where the old one was).
    let moved = vec![
        g("Tier 1", &[&e(1), &e(2), &e(6)]),
        g("Tier 2", &[&e(3)]),
        g("Billing", &[&e(4), &e(5)]),
    ];
    env.write_source(&moved);
    env.sync().expect(0);
    env.assert_converged(&moved);
    let known_pg = env.run(&["state", "--output", "json"]).expect(0).stdout;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = env.db_path().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    let back = env
        .run(&["state", "copy", "--to", env.db_path().to_str().unwrap()])
        .expect(0);
    assert!(back.stdout.contains("groups 3"), "{}", back.stdout);
    env.set_pg(None);
    assert_eq!(
        env.run(&["state", "--output", "json"]).expect(0).stdout,
        known_pg,
        "the known state came back unchanged"
    );
    fake.clear_requests();
    env.sync().expect(0);
    assert!(
        fake.requests().is_empty(),
        "nothing sent after the copy back: {:?}",
        fake.requests()
    );
    // Back onto a SQLite file that holds a state: refused too.
    env.set_pg(Some(pg.clone()));
    let onto = env
        .run(&["state", "copy", "--to", env.db_path().to_str().unwrap()])
        .expect(2);
    assert!(
        onto.stderr.contains("already holds a state"),
        "{}",
        onto.stderr
    );
}

/// A password in `[state] url` (or in `state copy --to`) is refused before anything is
/// done, naming the key and never printing the password.
#[test]
fn a_password_in_the_url_is_refused_and_never_printed() {
    let fake = FakeMaestro::start();
    let env = Env::new(fake.clone());
    env.write_source(&[g("Tier 1", &[&e(1)])]);
    let pw = "Hunter2-in-the-url";
    let cluster = Cluster::shared();
    let db = cluster.fresh_database_name();
    let with_pw = format!(
        "postgres://rostersync:{pw}@127.0.0.1:{}/{db}",
        cluster.port()
    );

    let text = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace("state = \"state/rostersync.db\"\n", "");
    std::fs::write(
        env.config_path(),
        format!("{text}\n[state]\nurl = \"{with_pw}\"\n"),
    )
    .unwrap();
    let mut outs = Vec::new();
    for args in [
        &["sync"][..],
        &["check"],
        &["sync", "--dry-run"],
        &["state"],
    ] {
        let r = env.run(args).expect(2);
        assert!(
            r.stderr.contains("state.url carries a password"),
            "{args:?}: {}",
            r.stderr
        );
        outs.push(r);
    }
    assert!(fake.requests().is_empty(), "nothing sent");
    assert!(
        cluster
            .sql(&db, "SELECT 1 FROM pg_tables WHERE schemaname = 'public'")
            .is_empty(),
        "nothing created in the database"
    );

    // state copy --to a URL with a password: refused, the password not echoed.
    let env2 = Env::new(fake.clone());
    env2.write_source(&[g("Tier 1", &[&e(1)])]);
    env2.sync().expect(0);
    let r = env2.run(&["state", "copy", "--to", &with_pw]).expect(2);
    assert!(
        r.stderr.contains("the URL carries a password")
            && r.stderr
                .contains(&format!("rostersync:********@127.0.0.1:{}", cluster.port())),
        "{}",
        r.stderr
    );
    outs.push(r);
    assert_not_in(pw, &outs.iter().collect::<Vec<_>>());
}

/// `password_file`: a role that must give its password (scram-sha-256 on a cluster of the
/// test's own) logs in with it, for every command; a missing or wrong password is a clear
/// error naming the file, nothing sent; the password never appears in any output or log.
#[test]
fn password_file_logs_in_and_is_never_shown() {
    let cluster = Arc::new(Cluster::start());
    let pw = "pg-S3cret-7f3a9c";
    cluster.sql(
        "postgres",
        &format!("CREATE ROLE pgpw LOGIN SUPERUSER PASSWORD '{pw}'"),
    );
    let probe_db = cluster.fresh_database_name();
    prepend_hba(&cluster, "host all pgpw 127.0.0.1/32 scram-sha-256", || {
        cluster
            .config("pgpw", &probe_db)
            .password("not-the-password")
            .connect(::postgres::NoTls)
            .is_err()
    });
    // The password really is checked now: a wrong one is refused, the right one is not.
    let Err(refused) = cluster
        .config("pgpw", &probe_db)
        .password("not-the-password")
        .connect(::postgres::NoTls)
    else {
        panic!("pgpw logged in with a wrong password");
    };
    let why = crate::pg_cluster::describe(&refused);
    assert!(why.contains("password authentication failed"), "{why}");
    cluster
        .config("pgpw", &probe_db)
        .password(pw)
        .connect(::postgres::NoTls)
        .expect("pgpw logs in with its password");

    let fake = FakeMaestro::start();
    let pg = PgState::on(cluster.clone(), "pgpw");
    let mut env = Env::new_pg_at(fake.clone(), pg.clone());
    let groups = vec![g("Tier 1", &[&e(1), &e(2)]), g("Tier 2", &[&e(3)])];
    env.write_source(&groups);
    let secrets = env.path("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let pw_file = secrets.join("pg");
    std::fs::write(&pw_file, format!("{pw}\n")).unwrap();
    set_mode(&pw_file, 0o600);
    env.set_state_extra("password_file = \"secrets/pg\"");

    let mut outs = vec![
        env.run(&["-vv", "sync"]).expect(0),
        env.run(&["--log-format", "json", "-vv", "sync", "--full"])
            .expect(0),
        env.run(&["sync"]).expect(0),
        env.run(&["check"]).expect(0),
        env.run(&["check", "--output", "json"]).expect(0),
        env.run(&["history", "--output", "json"]).expect(0),
        env.run(&["state", "--output", "json"]).expect(0),
        env.run(&["explain", &e(1)]).expect(0),
    ];
    env.assert_converged(&groups);
    assert!(
        outs[2].stdout.contains("unchanged since run"),
        "{}",
        outs[2].stdout
    );
    let sessions = cluster.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'pgpw'",
    );
    assert_eq!(
        sessions[0][0].as_deref(),
        Some("0"),
        "no session left behind"
    );

    // A wrong password: the server's refusal, naming the database; nothing sent.
    std::fs::write(&pw_file, "not-the-password\n").unwrap();
    env.write_source(&[g("Tier 1", &[&e(1)])]);
    fake.clear_requests();
    let r = env.run(&["sync"]).expect(1);
    assert!(
        r.stderr.contains(&format!("state database {}", pg.url))
            && r.stderr.contains("password authentication failed"),
        "{}",
        r.stderr
    );
    assert!(fake.requests().is_empty(), "nothing sent without the state");
    outs.push(r);

    // A missing password file: found at load (exit 2, like a target's missing secret),
    // naming the key and the file, for every command; nothing sent.
    std::fs::remove_file(&pw_file).unwrap();
    for args in [&["sync"][..], &["check"], &["history"]] {
        let r = env.run(args).expect(2);
        assert!(
            r.stderr.contains("[state]: password_file (")
                && r.stderr.contains("secrets/pg) is missing or empty"),
            "{args:?}: {}",
            r.stderr
        );
        outs.push(r);
    }
    assert!(fake.requests().is_empty(), "nothing sent without the state");

    assert_not_in(pw, &outs.iter().collect::<Vec<_>>());
    assert!(
        !pg_rows_text(&cluster, &pg.db).contains(pw),
        "the password is not stored"
    );
    // The same for a missing file on a cluster that trusts everybody: the error does not
    // depend on the server asking for a password.
    let mut trusting = Env::new_pg(fake.clone());
    trusting.write_source(&[g("Tier 1", &[&e(1)])]);
    trusting.set_state_extra("password_file = \"no-such-file\"");
    let r = trusting.run(&["sync"]).expect(2);
    assert!(
        r.stderr.contains("password_file") && r.stderr.contains("no-such-file"),
        "{}",
        r.stderr
    );
    assert!(fake.requests().is_empty(), "nothing sent");
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// TLS: a server whose certificate the test CA signed; `ca_file` = that CA gives a run
/// over verified TLS (the role may only log in over TLS); another CA is refused with a
/// TLS error naming the state database, before anything is sent to the target.
#[test]
fn tls_verified_with_ca_file_and_refused_with_another_ca() {
    let authority = ca();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = authority.server_pems(&["127.0.0.1", "localhost"]);
    std::fs::write(dir.path().join("server.crt"), cert).unwrap();
    std::fs::write(dir.path().join("server.key"), key).unwrap();
    let cluster = Arc::new(Cluster::start_tls(
        dir.path().join("server.crt"),
        dir.path().join("server.key"),
    ));
    cluster.create_user("tlsonly");
    let probe_db = cluster.fresh_database_name();
    prepend_hba(
        &cluster,
        "hostnossl all tlsonly 127.0.0.1/32 reject",
        || {
            cluster
                .config("tlsonly", &probe_db)
                .connect(::postgres::NoTls)
                .is_err()
        },
    );

    let fake = FakeMaestro::start();
    let pg = PgState::on(cluster.clone(), "tlsonly");
    let mut env = Env::new_pg_at(fake.clone(), pg.clone());
    let groups = vec![g("Tier 1", &[&e(1), &e(2)]), g("Tier 2", &[&e(3)])];
    env.write_source(&groups);

    // Without ca_file: no TLS asked, and this role may not log in without it.
    let r = env.sync().expect(1);
    assert!(r.stderr.contains(&pg.url), "{}", r.stderr);
    assert!(fake.requests().is_empty(), "nothing sent without the state");

    std::fs::write(env.path("db-ca.pem"), &authority.pem).unwrap();
    env.set_state_extra("ca_file = \"db-ca.pem\"");
    let r = env.sync().expect(0);
    env.assert_converged(&groups);
    assert!(r.stderr.contains("done in"), "{}", r.stderr);
    let r = env.sync().expect(0);
    assert!(r.stdout.contains("unchanged since run 1"), "{}", r.stdout);
    env.run(&["history"]).expect(0);
    env.run(&["check"]).expect(0);
    let runs = cluster.sql(&pg.db, "SELECT count(*) FROM runs");
    assert_eq!(
        runs[0][0].as_deref(),
        Some("2"),
        "both runs are in the database"
    );

    // Another CA: the server's certificate is not trusted. A TLS error naming the state
    // database; nothing sent to the target, nothing written.
    let other = ca();
    std::fs::write(env.path("other-ca.pem"), &other.pem).unwrap();
    env.set_state_extra("ca_file = \"other-ca.pem\"");
    env.write_source(&[g("Tier 1", &[&e(1)])]);
    fake.clear_requests();
    for args in [&["sync"][..], &["sync", "--dry-run"], &["history"]] {
        let r = env.run(args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains(&format!("state database {}", pg.url)),
            "{args:?}: {}",
            r.stderr
        );
        assert!(
            r.stderr
                .contains("error performing TLS handshake: invalid peer certificate"),
            "{args:?}: a TLS error that says why: {}",
            r.stderr
        );
    }
    assert!(fake.requests().is_empty(), "nothing sent to the target");
    env.assert_converged(&groups);
    let runs = cluster.sql(&pg.db, "SELECT count(*) FROM runs");
    assert_eq!(runs[0][0].as_deref(), Some("2"), "no run recorded");
}
