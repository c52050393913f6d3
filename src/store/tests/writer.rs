//! The writer thread: order, group commit, closing, file modes.

use super::*;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

fn add(key: &str, id: &str) -> (CallRecord, Delta) {
    let mut c = call("add");
    c.group_key = Some(key.into());
    c.members = vec![('+', id.into(), Some(format!("{id}@x")))];
    c.added = 1;
    let d = Delta::Members {
        key: key.into(),
        added: vec![(id.into(), m(true))],
        removed: vec![],
        owners_added: vec![],
        owners_removed: vec![],
        receive_call: None,
    };
    (c, d)
}

fn group(key: &str) -> Delta {
    Delta::Group {
        key: key.into(),
        remote_id: format!("r-{key}"),
        name: key.to_uppercase(),
        members: BTreeMap::new(),
        owners: BTreeMap::new(),
    }
}

/// Blocks the writer thread until the returned sender is used (or dropped), so that the
/// jobs sent meanwhile are all queued together.
async fn hold(w: &Writer) -> std::sync::mpsc::Sender<()> {
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel();
    let w = w.clone();
    tokio::spawn(async move {
        w.with(move |_| {
            let _ = started.send(());
            let _ = gate.recv();
            Ok(())
        })
        .await
    });
    running.await.unwrap();
    release
}

async fn until_submitted(w: &Writer, n: u64) {
    let t = Instant::now();
    while w.stats().submitted < n {
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", w.stats());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn store_error_is_send_sync_static() {
    fn check<T: Send + Sync + 'static>() {}
    check::<StoreError>();
    check::<Writer>();
}

#[tokio::test]
async fn writer_records_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let w = Writer::spawn(Store::open(&dir.path().join("s.db")).unwrap());
    let run = w.begin_run("sync", false, "d").await.unwrap();
    w.write_intent(run, "t", "g", "G").await.unwrap();
    assert!(w.known("t").await.unwrap().intents.contains("g"));
    w.record(run, call("create"), group("g")).await.unwrap();
    let (c, d) = add("g", "1");
    let id = w.record(run, c, d).await.unwrap();
    assert!(id > 0);
    let k = w.known("t").await.unwrap();
    assert!(
        k.intents.contains("g"),
        "an intent stays until it is dropped"
    );
    w.drop_intent("t", "g").await.unwrap();
    let k = w.known("t").await.unwrap();
    assert!(k.intents.is_empty());
    assert_eq!(k.groups["g"].remote_id, "r-g");
    assert!(k.groups["g"].members["1"].owned);
    w.cache_resolution("t", "a@x", Some("1".into()))
        .await
        .unwrap();
    w.cache_resolution("t", "b@x", None).await.unwrap();
    let cache = w.resolution_cache("t").await.unwrap();
    assert_eq!(cache["a@x"].as_deref(), Some("1"));
    assert_eq!(cache["b@x"], None);
    w.write_intent(run, "t", "h", "H").await.unwrap();
    w.drop_intent("t", "h").await.unwrap();
    assert!(w.known("t").await.unwrap().intents.is_empty());
    w.finish_run(run, "ok", 0, "1 added").await.unwrap();
    let runs = w.with(|s| s.runs(5, None)).await.unwrap();
    assert_eq!(runs[0].outcome.as_deref(), Some("ok"));
    w.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_all_land_in_few_transactions() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_records(Store::open(&dir.path().join("s.db")).unwrap()).await;
}

/// Group commit on PostgreSQL too: the same batches, one transaction each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_all_land_in_few_transactions_on_postgres() {
    // The blocking client never runs on a runtime worker.
    let store = tokio::task::spawn_blocking(|| {
        let at = StateLocation::Postgres(super::pg_location());
        Store::open_at(&at, None).unwrap()
    })
    .await
    .unwrap();
    concurrent_records(store).await;
}

async fn concurrent_records(store: Store) {
    let w = Writer::spawn(store);
    let run = w.begin_run("sync", false, "d").await.unwrap();
    for t in 0..8 {
        w.record(run, call("create"), group(&format!("g{t}")))
            .await
            .unwrap();
    }
    let before = w.stats();
    let release = hold(&w).await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("g{t}");
            let calls = (0..63).filter(|i| t * 63 + i < 500).map(|i| {
                let (c, d) = add(&key, &format!("m{i}"));
                w.record(run, c, d)
            });
            futures::future::join_all(calls).await
        }));
    }
    until_submitted(&w, before.submitted + 500).await;
    release.send(()).unwrap();
    let mut ids = Vec::new();
    for t in tasks {
        for r in t.await.unwrap() {
            ids.push(r.unwrap());
        }
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 500);
    let after = w.stats();
    assert_eq!(after.records - before.records, 500);
    // 500 queued records: a batch of 256 and one of 244
    assert_eq!(after.transactions - before.transactions, 2, "{after:?}");
    let k = w.known("t").await.unwrap();
    assert_eq!(
        k.groups.values().map(|g| g.members.len()).sum::<usize>(),
        500
    );
    // and without holding the writer: 8 tasks, one record at a time each
    let before = w.stats();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let (c, d) = add(&format!("g{t}"), &format!("n{i}"));
                w.record(run, c, d).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = w.stats();
    assert_eq!(after.records - before.records, 160);
    assert!(after.transactions - before.transactions <= 160);
    w.close().await.unwrap();
}

#[tokio::test]
async fn jobs_keep_their_order_around_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let w = Writer::spawn(Store::open(&dir.path().join("s.db")).unwrap());
    let run = w.begin_run("sync", false, "d").await.unwrap();
    let release = hold(&w).await;
    // Polled once, each future sends its job and waits: queued in this order: an intent,
    // two records, the intent again, a read.
    let (c, d) = add("g", "1");
    let mut a = Box::pin(w.write_intent(run, "t", "g", "G"));
    let mut b = Box::pin(w.record(run, call("create"), group("g")));
    let mut b2 = Box::pin(w.record(run, c, d));
    let mut c = Box::pin(w.write_intent(run, "t", "g", "G2"));
    let mut d = Box::pin(w.known("t"));
    assert!(futures::poll!(&mut a).is_pending());
    assert!(futures::poll!(&mut b).is_pending());
    assert!(futures::poll!(&mut b2).is_pending());
    assert!(futures::poll!(&mut c).is_pending());
    assert!(futures::poll!(&mut d).is_pending());
    release.send(()).unwrap();
    a.await.unwrap();
    b.await.unwrap();
    b2.await.unwrap();
    c.await.unwrap();
    let k = d.await.unwrap();
    assert_eq!(k.groups["g"].members.len(), 1);
    assert!(
        k.intents.contains("g"),
        "the later intent was not undone by the earlier create"
    );
    let s = w.stats();
    assert_eq!(
        (s.records, s.transactions),
        (2, 1),
        "the two records shared a commit"
    );
}

#[tokio::test]
async fn an_intent_is_in_the_file_when_write_intent_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let w = Writer::spawn(Store::open(&path).unwrap());
    let run = w.begin_run("sync", false, "d").await.unwrap();
    w.write_intent(run, "t", "g", "G").await.unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    let name: String = other
        .query_row(
            "SELECT name FROM intents WHERE target = 't' AND key = 'g'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(name, "G");
    // the writer is still alive and usable after another connection read
    w.drop_intent("t", "g").await.unwrap();
}

#[tokio::test]
async fn a_closed_writer_answers_closed() {
    let dir = tempfile::tempdir().unwrap();
    let w = Writer::spawn(Store::open(&dir.path().join("s.db")).unwrap());
    let other = w.clone();
    w.close().await.unwrap();
    match other.known("t").await {
        Err(StoreError::Closed { path }) => assert!(path.ends_with("s.db")),
        r => panic!("expected Closed, got {r:?}"),
    }
    let (c, d) = add("g", "1");
    assert!(matches!(
        other.record(1, c, d).await,
        Err(StoreError::Closed { .. })
    ));
    assert!(matches!(
        other.clone().close().await,
        Err(StoreError::Closed { .. })
    ));
    let e = other.known("t").await.unwrap_err().to_string();
    assert!(
        e.starts_with("state database ") && e.contains("writer has stopped"),
        "{e}"
    );
}

#[tokio::test]
async fn a_panic_on_the_writer_thread_is_closed_not_a_panic_in_callers() {
    let dir = tempfile::tempdir().unwrap();
    let w = Writer::spawn(Store::open(&dir.path().join("s.db")).unwrap());
    let r: Result<()> = w.with(|_| panic!("boom (expected by this test)")).await;
    assert!(matches!(r, Err(StoreError::Closed { .. })));
    assert!(matches!(w.known("t").await, Err(StoreError::Closed { .. })));
    assert!(matches!(w.close().await, Err(StoreError::Closed { .. })));
}

#[tokio::test]
async fn dropping_the_last_handle_ends_the_thread_and_closes_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let wal = dir.path().join("s.db-wal");
    let w = Writer::spawn(Store::open(&path).unwrap());
    let run = w.begin_run("sync", false, "d").await.unwrap();
    w.record(run, call("create"), group("g")).await.unwrap();
    assert!(wal.exists());
    drop(w.clone());
    assert!(wal.exists(), "a clone going away leaves the writer running");
    drop(w);
    // the last connection to close checkpoints and removes the WAL: the thread closed it
    let t = Instant::now();
    while wal.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the writer did not close"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let w = Writer::spawn(Store::open(&path).unwrap());
    assert!(w.known("t").await.unwrap().groups.contains_key("g"));
}

#[tokio::test]
async fn database_wal_and_lock_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/s.db");
    let _lock = StateLock::acquire(&path).unwrap();
    let w = Writer::spawn(Store::open(&path).unwrap());
    let run = w.begin_run("sync", false, "d").await.unwrap();
    w.write_intent(run, "t", "g", "G").await.unwrap();
    let mode = |suffix: &str| {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(""), 0o600);
    assert_eq!(mode("-wal"), 0o600);
    assert_eq!(mode(".lock"), 0o600);
    w.close().await.unwrap();
}

#[test]
fn a_database_that_cannot_be_created_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    match Store::open(&file.join("s.db")) {
        Err(e @ StoreError::Io { .. }) => {
            assert!(e.to_string().starts_with("state database "), "{e}");
            assert!(std::error::Error::source(&e).is_some());
        }
        r => panic!("expected Io, got {:?}", r.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_record_in_a_batch_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let w = Writer::spawn(Store::open(&dir.path().join("s.db")).unwrap());
    let run = w.begin_run("sync", false, "d").await.unwrap();
    w.record(run, call("create"), group("g")).await.unwrap();
    let before = w.stats();
    let release = hold(&w).await;
    let mut tasks = Vec::new();
    for i in 0..5 {
        let handle = w.clone();
        // run 999 does not exist: the foreign key on calls.run_id refuses it
        let r = if i == 2 { 999 } else { run };
        let (c, d) = add("g", &format!("m{i}"));
        tasks.push(tokio::spawn(async move { handle.record(r, c, d).await }));
        until_submitted(&w, before.submitted + i + 1).await;
    }
    release.send(()).unwrap();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    for (i, r) in results.iter().enumerate() {
        if i == 2 {
            assert!(matches!(r, Err(StoreError::Sqlite { .. })), "{r:?}");
        } else {
            assert!(r.is_ok(), "record {i}: {r:?}");
        }
    }
    let after = w.stats();
    assert_eq!(after.fallbacks - before.fallbacks, 1);
    assert_eq!(after.records - before.records, 4);
    let k = w.known("t").await.unwrap();
    let ids: Vec<_> = k.groups["g"].members.keys().cloned().collect();
    assert_eq!(ids, ["m0", "m1", "m3", "m4"]);
    // the failed record left nothing behind, in history either
    let h = w
        .with(|s| {
            s.history(&HistoryFilter {
                limit: 100,
                ..Default::default()
            })
        })
        .await
        .unwrap();
    assert_eq!(h.len(), 5);
}

#[test]
fn record_many_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("s.db")).unwrap();
    let run = s.begin_run("sync", false, "d").unwrap();
    let (c1, d1) = add("g", "1");
    let (c2, d2) = add("g", "2");
    assert!(s.record_many(&[(run, &c1, &d1), (999, &c2, &d2)]).is_err());
    assert!(
        s.history(&HistoryFilter {
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .is_empty()
    );
    let ids = s.record_many(&[(run, &c1, &d1), (run, &c2, &d2)]).unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1]);
}

/// Records per second through the writer vs one transaction per record behind a mutex, as
/// the callers do today. On the real disk (under target/), synchronous=FULL:
/// `cargo test --lib store::tests::writer::bench_writer -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_writer() {
    const N: usize = 10_000;
    const TASKS: usize = 4;
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let fresh = |name: &str| {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let store = Store::open(&dir.path().join(name)).unwrap();
        (dir, store)
    };

    // the old path: a mutex around the store, one transaction per record
    let (_d, mut store) = fresh("old.db");
    let run = store.begin_run("bench", false, "d").unwrap();
    for t in 0..TASKS {
        store
            .record(run, &call("create"), &group(&format!("g{t}")))
            .unwrap();
    }
    let store = Arc::new(std::sync::Mutex::new(store));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..N / TASKS {
                let (c, d) = add(&format!("g{t}"), &format!("m{i}"));
                store.lock().unwrap().record(run, &c, &d).unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let old = N as f64 / t0.elapsed().as_secs_f64();
    println!(
        "mutex, one transaction per record: {N} records from {TASKS} tasks: {old:.0} records/s"
    );

    for (label, in_flight, linger) in [
        ("writer, 1 in flight per task", 1, Duration::ZERO),
        ("writer, 16 in flight per task", 16, Duration::ZERO),
        (
            "writer, 1 in flight per task, linger 2 ms",
            1,
            Duration::from_millis(2),
        ),
        (
            "writer, 16 in flight per task, linger 2 ms",
            16,
            Duration::from_millis(2),
        ),
    ] {
        let (_d, store) = fresh("new.db");
        let w = Writer::spawn_with(
            store,
            WriterOptions {
                linger,
                ..Default::default()
            },
        );
        let run = w.begin_run("bench", false, "d").await.unwrap();
        for t in 0..TASKS {
            w.record(run, call("create"), group(&format!("g{t}")))
                .await
                .unwrap();
        }
        let before = w.stats();
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                use futures::StreamExt;
                futures::stream::iter(0..N / TASKS)
                    .map(|i| {
                        let (c, d) = add(&format!("g{t}"), &format!("m{i}"));
                        let w = w.clone();
                        async move { w.record(run, c, d).await.unwrap() }
                    })
                    .buffer_unordered(in_flight)
                    .count()
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let rate = N as f64 / t0.elapsed().as_secs_f64();
        let s = w.stats();
        println!(
            "{label}: {N} records from {TASKS} tasks: {rate:.0} records/s, {} transactions ({:.1}x the old path)",
            s.transactions - before.transactions,
            rate / old
        );
        w.close().await.unwrap();
    }
}
