//! The store suite: every test here runs against both backends (`both!`): a SQLite file
//! and a fresh database on the test process's throwaway PostgreSQL cluster.

use std::collections::BTreeMap;

use super::super::*;
use super::{call, m};

pub fn record_changes_known_state_with_its_history_row(s: &mut Store) {
    let run = s.begin_run("sync", false, "d").unwrap();
    s.write_intent(run, "t", "g", "G").unwrap();
    assert!(s.known("t").unwrap().intents.contains("g"));
    let members = BTreeMap::from([("1".to_string(), m(true)), ("2".to_string(), m(false))]);
    let delta = Delta::Group {
        key: "g".into(),
        remote_id: "r1".into(),
        name: "G".into(),
        members,
        owners: BTreeMap::from([("9".to_string(), m(false))]),
    };
    s.record(run, &call("create"), &delta).unwrap();
    let k = s.known("t").unwrap();
    assert!(
        k.intents.contains("g"),
        "an intent stays until the whole operation has ended"
    );
    s.drop_intent("t", "g").unwrap();
    let k = s.known("t").unwrap();
    assert!(k.intents.is_empty());
    assert_eq!(k.groups["g"].remote_id, "r1");
    assert_eq!(k.groups["g"].members.len(), 2);
    assert_eq!(k.groups["g"].owners.keys().collect::<Vec<_>>(), ["9"]);
    assert!(k.groups["g"].members["1"].owned && !k.groups["g"].members["2"].owned);
    assert_eq!(k.groups["g"].members["1"].email.as_deref(), Some("a@x"));

    let delta = Delta::Members {
        key: "g".into(),
        added: vec![("3".into(), m(true))],
        removed: vec!["1".into()],
        owners_added: vec![],
        owners_removed: vec!["9".into()],
        receive_call: Some(vec!["3".into()]),
    };
    s.record(run, &call("update"), &delta).unwrap();
    let k = s.known("t").unwrap();
    let ids: Vec<_> = k.groups["g"].members.keys().cloned().collect();
    assert_eq!(ids, ["2", "3"]);
    assert!(k.groups["g"].members["3"].receive_call);
    assert!(!k.groups["g"].members["2"].receive_call);
    assert!(k.groups["g"].owners.is_empty());
    // Adding a member again keeps "owned" once set and an email once known.
    let again = Delta::Members {
        key: "g".into(),
        added: vec![(
            "2".into(),
            KnownMember {
                owned: true,
                receive_call: false,
                email: None,
            },
        )],
        removed: vec![],
        owners_added: vec![],
        owners_removed: vec![],
        receive_call: None,
    };
    s.record(run, &call("update"), &again).unwrap();
    let k = s.known("t").unwrap();
    assert!(k.groups["g"].members["2"].owned);
    assert_eq!(k.groups["g"].members["2"].email.as_deref(), Some("a@x"));
    s.record(
        run,
        &call("rename"),
        &Delta::Renamed {
            key: "g".into(),
            name: "H".into(),
        },
    )
    .unwrap();
    assert_eq!(s.known("t").unwrap().groups["g"].name, "H");
    s.record(run, &call("delete"), &Delta::Forget { key: "g".into() })
        .unwrap();
    assert!(s.known("t").unwrap().groups.is_empty());
    let h = s
        .history(&HistoryFilter {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        h.iter().map(|c| c.op.as_str()).collect::<Vec<_>>(),
        ["delete", "rename", "update", "update", "create"]
    );
    // other targets are untouched
    assert!(s.known("other").unwrap().groups.is_empty());
    assert_eq!(s.targets().unwrap(), Vec::<String>::new());
}

pub fn resolution_cache_keeps_negative_answers_until_answered_again(s: &mut Store) {
    s.cache_resolution("t", "a@x", Some("1")).unwrap();
    s.cache_resolution("t", "b@x", None).unwrap();
    let c = s.resolution_cache("t").unwrap();
    assert_eq!(c["a@x"].as_deref(), Some("1"));
    assert_eq!(c["b@x"], None);
    // a later answer replaces the negative one
    s.cache_resolution("t", "b@x", Some("2")).unwrap();
    assert_eq!(
        s.resolution_cache("t").unwrap()["b@x"].as_deref(),
        Some("2")
    );
    assert!(s.resolution_cache("other").unwrap().is_empty());
}

pub fn facts_are_kept_per_target_and_forgotten(s: &mut Store) {
    s.set_fact("t", "groups_at", Some("data.list")).unwrap();
    s.set_fact("u", "groups_at", Some("x")).unwrap();
    s.set_fact("t", "caps", Some("{}")).unwrap();
    let f = s.facts("t").unwrap();
    assert_eq!(f["groups_at"].value, "data.list");
    assert_eq!(f.len(), 2);
    s.set_fact("t", "caps", None).unwrap();
    assert_eq!(s.facts("t").unwrap().len(), 1);
    let all = s.all_facts().unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), ["t", "u"]);
    let snap = s.snapshot("t").unwrap();
    assert_eq!(snap.facts["groups_at"].value, "data.list");
}

pub fn the_shortcut_base_is_the_latest_converged_run(s: &mut Store) {
    assert_eq!(s.run_base().unwrap(), None);
    let g0 = s.state_generation().unwrap();
    let run = s.begin_run("sync", false, "src").unwrap();
    s.record(run, &call("create"), &super::group("g", "1"))
        .unwrap();
    let g1 = s.state_generation().unwrap();
    assert!(g1 > g0, "a write to the known state moves the generation");
    s.finish_run(run, "ok", 0, "fine").unwrap();
    assert_eq!(s.run_base().unwrap(), None, "not converged yet");
    s.mark_converged(run, "cfg", None).unwrap();
    assert_eq!(
        s.run_base().unwrap(),
        Some(RunBase {
            run,
            source_digest: "src".into(),
            config_digest: "cfg".into(),
            state_generation: g1,
        })
    );
    // History is not the known state; facts neither.
    s.record(run, &call("read"), &Delta::None).unwrap();
    s.set_fact("t", "f", Some("v")).unwrap();
    assert_eq!(s.state_generation().unwrap(), g1);
    // A shortcut run repeats its base.
    let next = s.begin_run("sync", false, "src").unwrap();
    s.mark_converged(next, "cfg", Some(run)).unwrap();
    assert_eq!(s.run_base().unwrap().unwrap().run, run);
    // A later unfinished run is no base.
    s.begin_run("sync", false, "src").unwrap();
    assert_eq!(s.run_base().unwrap(), None);
    let runs = s.runs(10, None).unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[2].outcome.as_deref(), Some("ok"));
    assert_eq!(s.runs(10, Some(run)).unwrap().len(), 1);
}

pub fn record_many_is_all_or_nothing(s: &mut Store) {
    let run = s.begin_run("sync", false, "d").unwrap();
    let good = call("create");
    let bad = call("create");
    let g = super::group("g", "1");
    // A call of a run that does not exist breaks a foreign key: the batch fails whole.
    let r = s.record_many(&[(run, &good, &g), (-1, &bad, &Delta::None)]);
    assert!(r.is_err(), "a call of no run is refused");
    assert!(
        s.known("t").unwrap().groups.is_empty(),
        "nothing of the batch"
    );
    assert!(
        s.history(&HistoryFilter {
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .is_empty()
    );
    let ids = s.record_many(&[(run, &good, &g), (run, &good, &Delta::None)]);
    assert_eq!(ids.unwrap().len(), 2);
}

pub fn history_filters_by_target_group_run_and_email(s: &mut Store) {
    let r1 = s.begin_run("sync", false, "d").unwrap();
    let mut c = call("update");
    c.group_name = Some("Tier 1".into());
    c.members = vec![('+', "7".into(), Some("bo@x".into()))];
    s.record(r1, &c, &Delta::None).unwrap();
    let r2 = s.begin_run("sync", false, "d").unwrap();
    let mut other = call("create");
    other.target = "u".into();
    s.record(r2, &other, &Delta::None).unwrap();
    let f = |target: Option<&str>, group: Option<&str>, run: Option<i64>, email: Option<&str>| {
        s.history(&HistoryFilter {
            limit: 10,
            target: target.map(Into::into),
            group: group.map(Into::into),
            run,
            email: email.map(Into::into),
        })
        .unwrap()
        .len()
    };
    assert_eq!(f(None, None, None, None), 2);
    assert_eq!(f(Some("u"), None, None, None), 1);
    assert_eq!(f(None, Some("Tier 1"), None, None), 1);
    assert_eq!(f(None, Some("g"), None, None), 2, "by key too");
    assert_eq!(f(None, None, Some(r2), None), 1);
    assert_eq!(
        f(None, None, None, Some("BO@x")),
        1,
        "emails compare lower-cased"
    );
    assert_eq!(f(None, None, None, Some("nobody@x")), 0);
}

pub fn an_empty_state_is_empty_until_a_run(s: &mut Store) {
    assert!(s.is_empty().unwrap());
    s.begin_run("sync", false, "d").unwrap();
    assert!(!s.is_empty().unwrap());
}

pub fn a_large_group_is_written_and_read_whole(s: &mut Store) {
    let members: BTreeMap<String, KnownMember> = (0..5000)
        .map(|i| (format!("m{i:05}"), m(i % 2 == 0)))
        .collect();
    let run = s.begin_run("sync", false, "d").unwrap();
    let delta = Delta::Group {
        key: "big".into(),
        remote_id: "r".into(),
        name: "Big".into(),
        members: members.clone(),
        owners: BTreeMap::new(),
    };
    s.record(run, &call("create"), &delta).unwrap();
    let mut c = call("update");
    c.members = (0..3000).map(|i| ('-', format!("m{i:05}"), None)).collect();
    let removed: Vec<String> = (0..3000).map(|i| format!("m{i:05}")).collect();
    s.record(
        run,
        &c,
        &Delta::Members {
            key: "big".into(),
            added: vec![],
            removed,
            owners_added: vec![],
            owners_removed: vec![],
            receive_call: None,
        },
    )
    .unwrap();
    let k = s.known("t").unwrap();
    assert_eq!(k.groups["big"].members.len(), 2000);
    assert_eq!(
        k.groups["big"].members.keys().next().map(String::as_str),
        Some("m03000")
    );
}

/// Several groups, one of them given more members and an owner after all the others were
/// written (on PostgreSQL its rows then lie apart on disk, and the read takes them in the
/// table's order): every group comes back whole and sorted, members and owners apart.
pub fn a_group_written_in_pieces_is_read_whole_and_sorted(s: &mut Store) {
    let people = |prefix: &str, n: usize| -> BTreeMap<String, KnownMember> {
        (0..n)
            .map(|i| (format!("{prefix}{i:05}"), m(i % 3 == 0)))
            .collect()
    };
    let group = |key: &str, members, owners| Delta::Group {
        key: key.into(),
        remote_id: format!("r-{key}"),
        name: key.to_uppercase(),
        members,
        owners,
    };
    let mut want = vec![
        ("a", people("m", 600), BTreeMap::new()),
        ("b", people("m", 697), people("o", 3)),
        ("c", people("n", 700), BTreeMap::new()),
    ];
    for round in 0..2 {
        if round == 1 {
            want.push(("d", people("x", 1), BTreeMap::new()));
        }
        let deltas: Vec<(&str, Delta)> = want
            .iter()
            .map(|(k, mm, o)| ("t", group(k, mm.clone(), o.clone())))
            .collect();
        s.apply_many(&deltas).unwrap();
        let known = s.known("t").unwrap();
        assert_eq!(known.groups.len(), want.len(), "round {round}");
        for (k, mm, o) in &want {
            let g = &known.groups[*k];
            assert_eq!(&g.members, mm, "round {round}: members of {k}");
            assert_eq!(&g.owners, o, "round {round}: owners of {k}");
        }
    }
    let added: Vec<(String, KnownMember)> = ["z1", "a0"]
        .iter()
        .map(|id| (id.to_string(), m(true)))
        .collect();
    s.apply_many(&[(
        "t",
        Delta::Members {
            key: "a".into(),
            added: added.clone(),
            removed: vec![],
            owners_added: vec![("oa".into(), m(false))],
            owners_removed: vec![],
            receive_call: None,
        },
    )])
    .unwrap();
    want[0].1.extend(added);
    want[0].2.insert("oa".into(), m(false));
    let known = s.known("t").unwrap();
    for (k, mm, o) in &want {
        let g = &known.groups[*k];
        assert_eq!(&g.members, mm, "after the additions: members of {k}");
        assert_eq!(&g.owners, o, "after the additions: owners of {k}");
    }
    let a: Vec<&str> = known.groups["a"]
        .members
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        (a[0], a[a.len() - 1], a.len()),
        ("a0", "z1", 602),
        "sorted by id"
    );
}
