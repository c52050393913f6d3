//! The lease and the fence (SPEC 6.7), on the test process's throwaway PostgreSQL.

use std::time::{Duration, Instant};

use super::super::lease::{Lease, LeaseConfig, LeaseError, Role};
use super::super::*;
use super::pg_cluster::Cluster;
use super::pg_location;

fn cfg(node: &str, ttl_ms: u64, grace_ms: u64) -> LeaseConfig {
    LeaseConfig {
        node: node.into(),
        ttl: Duration::from_millis(ttl_ms),
        grace: Duration::from_millis(grace_ms),
    }
}

fn db_of(at: &PgLocation) -> String {
    at.url.rsplit('/').next().unwrap().to_string()
}

/// Creates the schema (as a run's open would).
fn migrated() -> PgLocation {
    let at = pg_location();
    drop(Store::open_at(&StateLocation::Postgres(at.clone()), None).unwrap());
    at
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Waits (bounded) until `role` satisfies `ok`.
async fn until(lease: &Lease, ok: impl Fn(&Role) -> bool, within: Duration) -> Role {
    let mut w = lease.watch();
    match tokio::time::timeout(within, w.wait_for(|r| ok(r))).await {
        Ok(Ok(r)) => r.clone(),
        _ => panic!("role never came: last {:?}", lease.role()),
    }
}

#[test]
fn a_write_commits_only_while_its_epoch_holds_the_lease() {
    let at = migrated();
    let rt = rt();
    let a = rt
        .block_on(Lease::acquire_once(at.clone(), cfg("a", 10_000, 0)))
        .unwrap();
    let fence = a.fence().expect("a leads");
    assert_eq!(fence.epoch, 1);
    let loc = StateLocation::Postgres(at.clone());
    let s = Store::open_at(&loc, Some(fence.clone())).unwrap();
    let run = s.begin_run("sync", false, "d").unwrap();
    s.write_intent(run, "t", "g1", "G1").unwrap();
    s.check_fence().unwrap();
    // The lease runs out (as if node a had stopped renewing) and node b takes it.
    Cluster::shared().sql(
        &db_of(&at),
        "UPDATE lease SET expires_at = clock_timestamp() - interval '1 second'",
    );
    let b = rt
        .block_on(Lease::acquire_once(at.clone(), cfg("b", 10_000, 0)))
        .unwrap();
    assert_eq!(b.fence().unwrap().epoch, 2);
    match s.write_intent(run, "t", "g2", "G2") {
        Err(StoreError::Fenced {
            node,
            epoch,
            holder,
            holder_epoch,
            ..
        }) => {
            assert_eq!((node.as_str(), epoch), ("a", 1));
            assert_eq!((holder.as_deref(), holder_epoch), (Some("b"), Some(2)));
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert!(s.check_fence().unwrap_err().is_fenced());
    assert!(s.finish_run(run, "ok", 0, "x").unwrap_err().is_fenced());
    let k = Store::open_read_only_at(&loc)
        .unwrap()
        .unwrap()
        .known("t")
        .unwrap();
    assert_eq!(
        k.intents.iter().collect::<Vec<_>>(),
        ["g1"],
        "nothing of the fenced writes"
    );
    rt.block_on(async {
        a.stop().await;
        b.stop().await;
    });
}

/// The first one-shot run on an empty database (no schema yet) creates the schema (with
/// the lease row) before it asks for the lease, takes it, then writes under it (the
/// failover drill found a fresh database failing).
#[test]
fn a_one_shot_lease_on_an_empty_database_then_writes_under_it() {
    let at = pg_location();
    let rt = rt();
    let a = rt
        .block_on(Lease::acquire_once(at.clone(), cfg("a", 10_000, 0)))
        .unwrap();
    let fence = a.fence().expect("a leads");
    assert_eq!(fence.epoch, 1);
    let s = Store::open_at(&StateLocation::Postgres(at.clone()), Some(fence)).unwrap();
    let run = s.begin_run("sync", false, "d").unwrap();
    assert!(run > 0);
    rt.block_on(a.stop());
}

#[test]
fn a_live_lease_is_held_and_named() {
    let at = migrated();
    let rt = rt();
    let a = rt
        .block_on(Lease::acquire_once(at.clone(), cfg("host-a", 10_000, 0)))
        .unwrap();
    match rt.block_on(Lease::acquire_once(at.clone(), cfg("host-b", 10_000, 0))) {
        Err(LeaseError::Held { holder, epoch, .. }) => {
            assert_eq!((holder.as_str(), epoch), ("host-a", 1));
        }
        Err(e) => panic!("expected Held, got {e}"),
        Ok(_) => panic!("two holders"),
    }
    rt.block_on(a.stop());
}

#[test]
fn a_released_lease_is_taken_at_once_and_an_expired_one_after_the_grace() {
    let at = migrated();
    let rt = rt();
    let a = rt
        .block_on(Lease::acquire_once(at.clone(), cfg("a", 10_000, 5_000)))
        .unwrap();
    rt.block_on(a.stop());
    let started = Instant::now();
    let b = rt
        .block_on(Lease::acquire_once(at.clone(), cfg("b", 10_000, 5_000)))
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(2_000),
        "a released lease needs no wait: {:?}",
        started.elapsed()
    );
    assert_eq!(b.fence().unwrap().epoch, 2);
    // Node b "crashes": its lease stays, unreleased, and runs out 300 ms from now; the
    // longest timeout it had was 1.2 s.
    rt.block_on(async { drop(b) });
    Cluster::shared().sql(
        &db_of(&at),
        "UPDATE lease SET holder = 'b', expires_at = clock_timestamp() + interval '300 milliseconds', released = false, grace_ms = 1200",
    );
    std::thread::sleep(Duration::from_millis(400));
    let started = Instant::now();
    let c = rt
        .block_on(Lease::acquire_once(at.clone(), cfg("c", 10_000, 100)))
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1_000),
        "the new leader waits out the old one's longest timeout: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(c.fence().unwrap().epoch, 3);
    rt.block_on(c.stop());
}

#[test]
fn a_standby_takes_over_when_the_leader_stops() {
    let at = migrated();
    let rt = rt();
    rt.block_on(async {
        let a = Lease::start(at.clone(), cfg("a", 600, 0)).await.unwrap();
        let ra = until(
            &a,
            |r| matches!(r, Role::Leader { ready: true, .. }),
            Duration::from_secs(5),
        )
        .await;
        let b = Lease::start(at.clone(), cfg("b", 600, 0)).await.unwrap();
        let rb = until(
            &b,
            |r| matches!(r, Role::Standby { .. }),
            Duration::from_secs(5),
        )
        .await;
        let Role::Leader { epoch, .. } = ra else {
            unreachable!()
        };
        assert_eq!(
            rb,
            Role::Standby {
                leader: Some("a".into()),
                epoch
            }
        );
        assert_eq!(b.fence(), None, "a standby may not write");
        assert!(a.guard().holds());
        a.stop().await;
        let rb = until(
            &b,
            |r| matches!(r, Role::Leader { ready: true, .. }),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            rb,
            Role::Leader {
                epoch: epoch + 1,
                ready: true
            }
        );
        b.stop().await;
    });
}

#[test]
fn a_leader_whose_lease_was_taken_stands_by() {
    let at = migrated();
    let rt = rt();
    rt.block_on(async {
        let a = Lease::start(at.clone(), cfg("a", 600, 0)).await.unwrap();
        until(&a, |r| matches!(r, Role::Leader { ready: true, .. }), Duration::from_secs(5)).await;
        // Another node takes the row behind a's back (as after a's lease ran out).
        Cluster::shared().sql(
            &db_of(&at),
            "UPDATE lease SET holder = 'z', epoch = epoch + 1, expires_at = clock_timestamp() + interval '1 hour'",
        );
        let r = until(&a, |r| matches!(r, Role::Standby { .. }), Duration::from_secs(5)).await;
        assert_eq!(a.fence(), None);
        assert!(!a.guard().holds(), "no local belief in a lost lease");
        let _ = r;
        a.stop().await;
    });
}

#[test]
fn a_writer_checks_the_fence_and_the_local_deadline() {
    let at = migrated();
    let rt = rt();
    rt.block_on(async {
        let a = Lease::acquire_once(at.clone(), cfg("a", 900, 0))
            .await
            .unwrap();
        let fence = a.fence().unwrap();
        let loc = StateLocation::Postgres(at.clone());
        let store = tokio::task::spawn_blocking(move || Store::open_at(&loc, Some(fence)))
            .await
            .unwrap()
            .unwrap();
        let w = Writer::spawn(store).with_guard(a.guard());
        w.check_fence().await.unwrap();
        // The renewals stop (the node is cut off): within the TTL the check fails, on the
        // server's clock and on the local deadline alike.
        a.stop().await;
        assert!(w.check_fence().await.unwrap_err().is_fenced());
        w.close().await.unwrap();
    });
}

#[test]
fn state_copy_moves_everything_both_ways_and_refuses_a_full_destination() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = StateLocation::Sqlite(dir.path().join("a.db"));
    {
        let mut s = Store::open_at(&sqlite, None).unwrap();
        super::suite::record_changes_known_state_with_its_history_row(&mut s);
        let run = s.begin_run("sync", false, "d").unwrap();
        s.record(run, &super::call("create"), &super::group("kept", "7"))
            .unwrap();
        s.write_intent(run, "t", "pending", "P").unwrap();
        s.cache_resolution("t", "a@x", Some("1")).unwrap();
        s.set_fact("t", "f", Some("v")).unwrap();
        s.mark_converged(run, "cfg", None).unwrap();
        s.close().unwrap();
    }
    let pg = StateLocation::Postgres(pg_location());
    copy_state(&sqlite, &pg).unwrap();
    let back = StateLocation::Sqlite(dir.path().join("b.db"));
    copy_state(&pg, &back).unwrap();
    for at in [&sqlite, &pg, &back] {
        let s = Store::open_read_only_at(at).unwrap().unwrap();
        let k = s.known("t").unwrap();
        assert_eq!(k.groups.keys().collect::<Vec<_>>(), ["kept"], "{at}");
        assert_eq!(k.intents.iter().collect::<Vec<_>>(), ["pending"]);
        assert_eq!(s.resolution_cache("t").unwrap().len(), 1);
        assert_eq!(s.facts("t").unwrap()["f"].value, "v");
        assert_eq!(s.runs(10, None).unwrap().len(), 2);
        assert_eq!(
            s.history(&HistoryFilter {
                limit: 100,
                ..Default::default()
            })
            .unwrap()
            .len(),
            6
        );
        assert!(
            s.run_base().unwrap().is_some(),
            "the shortcut's base moves too"
        );
    }
    // New runs continue after the copied ids.
    let s = Store::open_at(&pg, None).unwrap();
    assert_eq!(s.begin_run("sync", false, "d").unwrap(), 3);
    assert!(matches!(
        copy_state(&sqlite, &pg),
        Err(StoreError::NotEmpty { .. })
    ));
}
