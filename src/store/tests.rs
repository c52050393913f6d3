use super::*;
use std::sync::Arc;

fn m(owned: bool) -> KnownMember {
    KnownMember {
        owned,
        receive_call: false,
        email: Some("a@x".into()),
    }
}

fn call(op: &str) -> CallRecord {
    CallRecord {
        target: "t".into(),
        group_key: Some("g".into()),
        op: op.into(),
        method: "POST".into(),
        path: "/Groups".into(),
        ok: true,
        status: Some(201),
        ..Default::default()
    }
}

#[test]
fn migrations_are_forward_only_and_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/state.db");
    drop(Store::open(&path).unwrap());
    let s = SqliteStore::open(&path).unwrap();
    let v: i64 = s
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v as usize, sqlite::MIGRATIONS.len());
}

#[test]
fn read_only_open_of_a_missing_database_knows_nothing_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.db");
    assert!(Store::open_read_only(&path).unwrap().is_none());
    assert!(!path.exists());
}

#[test]
fn second_writer_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let _held = StateLock::acquire(&db).unwrap();
    match StateLock::acquire(&db) {
        Err(LockError::Held { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
        other => panic!("expected Held, got {other:?}"),
    }
}

// ---- the writer thread (store::writer) ----

mod writer;

// ---- the store suite, on both backends ----

mod lease;
mod suite;

/// A fresh PostgreSQL state on the test process's throwaway cluster (never a mock: CI
/// fails when PostgreSQL cannot start).
pub(crate) fn pg_location() -> PgLocation {
    PgLocation {
        url: pg_cluster::Cluster::shared().fresh_database(),
        password: None,
        password_from: None,
        ca_file: None,
        application: "rostersync store tests".into(),
    }
}

/// Each named suite test, once on SQLite and once on PostgreSQL.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[test]
                fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let mut s = super::Store::open(&dir.path().join("s.db")).unwrap();
                    super::suite::$name(&mut s);
                }
            )*
        }
        mod on_postgres {
            $(
                #[test]
                fn $name() {
                    let at = super::StateLocation::Postgres(super::pg_location());
                    let mut s = super::Store::open_at(&at, None).unwrap();
                    super::suite::$name(&mut s);
                }
            )*
        }
    };
}

both!(
    record_changes_known_state_with_its_history_row,
    resolution_cache_keeps_negative_answers_until_answered_again,
    facts_are_kept_per_target_and_forgotten,
    the_shortcut_base_is_the_latest_converged_run,
    record_many_is_all_or_nothing,
    history_filters_by_target_group_run_and_email,
    an_empty_state_is_empty_until_a_run,
    a_large_group_is_written_and_read_whole,
    a_group_written_in_pieces_is_read_whole_and_sorted,
);

#[test]
fn history_retention_forgets_old_runs_and_their_calls_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("s.db")).unwrap();
    let old = s.begin_run("daemon", false, "d").unwrap();
    s.record(old, &call("create"), &Delta::None).unwrap();
    let kept_by_intent = s.begin_run("daemon", false, "d").unwrap();
    s.write_intent(kept_by_intent, "t", "g", "G").unwrap();
    let recent = s.begin_run("daemon", false, "d").unwrap();
    s.record(recent, &call("create"), &Delta::None).unwrap();
    let generation = s.state_generation().unwrap();
    s.sqlite()
        .unwrap()
        .conn
        .execute(
            "UPDATE runs SET started_at = '2000-01-01T00:00:00.000Z' WHERE id IN (?1, ?2)",
            rusqlite::params![old, kept_by_intent],
        )
        .unwrap();
    assert_eq!(
        s.prune_history(90).unwrap(),
        1,
        "only the old run without intents"
    );
    let runs: Vec<i64> = s.runs(10, None).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(runs, [recent, kept_by_intent]);
    let calls = s.history(&HistoryFilter {
        limit: 10,
        ..Default::default()
    });
    assert!(calls.unwrap().iter().all(|c| c.run != old));
    assert_eq!(
        s.state_generation().unwrap(),
        generation,
        "history is not the known state"
    );
}

fn group(key: &str, member: &str) -> Delta {
    Delta::Group {
        key: key.into(),
        remote_id: format!("r-{key}"),
        name: key.into(),
        members: BTreeMap::from([(member.to_string(), m(true))]),
        owners: BTreeMap::new(),
    }
}

/// Issue 17 item 11: a lockless reader (a dry-run) sees one state, never parts of two: a
/// writer that moves a member from one group to another between the reader's queries
/// changes nothing the reader returns.
#[test]
fn a_reader_sees_one_state_while_another_connection_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut w = Store::open(&path).unwrap();
    w.apply("t", &group("g1", "m1")).unwrap();
    let mut r = SqliteStore::open_read_only(&path).unwrap().unwrap();
    let writer = std::sync::Mutex::new(w);
    r.between_reads = Some(Box::new(move || {
        let mut w = writer.lock().unwrap();
        let tx_of = |w: &mut Store, d: &Delta| w.apply("t", d).unwrap();
        tx_of(&mut w, &Delta::Forget { key: "g1".into() });
        tx_of(&mut w, &group("g2", "m2"));
        w.set_fact("t", "f", Some("after")).unwrap();
    }));
    let snap = r.snapshot("t").unwrap();
    assert_eq!(snap.known.groups.keys().collect::<Vec<_>>(), ["g1"]);
    assert_eq!(
        snap.known.groups["g1"].members.keys().collect::<Vec<_>>(),
        ["m1"],
        "the members of the state the groups came from"
    );
    assert!(snap.facts.is_empty(), "the facts of that state too");
    // The next read sees the writer's state whole.
    r.between_reads = None;
    let k = r.known("t").unwrap();
    assert_eq!(k.groups.keys().collect::<Vec<_>>(), ["g2"]);
    assert_eq!(k.groups["g2"].members.keys().collect::<Vec<_>>(), ["m2"]);
}

/// Issue 17 item 11: a relaxed commit that happened is reported done even when
/// `synchronous = FULL` cannot be restored after it (the writer would otherwise record the
/// batch again, one by one: duplicate rows); the next intent restores FULL first, or is
/// refused.
#[tokio::test]
async fn a_commit_is_not_recorded_twice_when_full_cannot_be_restored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let s = SqliteStore::open(&path).unwrap();
    let run = s.begin_run("sync", false, "d").unwrap();
    s.fail_restore.set(true);
    let writer = Writer::spawn(Store::from(s));
    let (a, b) = tokio::join!(
        writer.record(run, call("add"), Delta::None),
        writer.record(run, call("remove"), Delta::None)
    );
    a.unwrap();
    b.unwrap();
    let refused = writer.write_intent(run, "t", "g", "G").await;
    assert!(refused.is_err(), "no intent on an unsynced connection");
    writer
        .with(|s| {
            s.sqlite().expect("a SQLite store").fail_restore.set(false);
            Ok(())
        })
        .await
        .unwrap();
    writer.write_intent(run, "t", "g", "G").await.unwrap();
    let calls = writer
        .with(|s| {
            let s = s.sqlite().expect("a SQLite store");
            s.conn
                .query_row("SELECT count(*) FROM calls", [], |r| r.get::<_, i64>(0))
                .map_err(|e| s.wrap(e))
        })
        .await
        .unwrap();
    assert_eq!(calls, 2, "each call recorded once");
    writer.close().await.unwrap();
}
