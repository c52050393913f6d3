//! Planner tests: one `check(desired, known, options, expected)` per case.
//!
//! Notation (ids stand for people; their email is `<id>@x`):
//! - desired group: `"KEY[=NAME]: m1 m2 [owners: o1] [rc: m1]"`
//! - known group:   `"KEY#RID[=NAME]: m1+ m2*"` where `+` = added by rostersync (owned) and
//!   `*` = may receive calls; a leading `!` on the whole string marks an unfinished create.
//! - expected: one line per op (see `brief`), then `unchanged N`, `left KEY`, `guard ...`.

use super::*;

fn opts() -> PlanOptions {
    PlanOptions {
        mode: Mode::Authoritative,
        safety: Safety {
            max_removals: 100,
            max_removal_ratio: 1.0,
            delete_groups: false,
        },
        allow_mass_removal: false,
        keep: Keep::default(),
        only: None,
    }
}

fn split_head(s: &str) -> (&str, &str) {
    let (head, rest) = s.split_once(':').unwrap_or((s, ""));
    (head.trim(), rest)
}

fn desired(groups: &[&str]) -> DesiredTarget {
    let mut d = DesiredTarget::default();
    for g in groups {
        let (head, rest) = split_head(g);
        let (key, name) = head.split_once('=').unwrap_or((head, head));
        let mut dg = DesiredGroup {
            key: key.into(),
            name: name.into(),
            ..Default::default()
        };
        let mut section = "members";
        for tok in rest.split_whitespace() {
            match tok {
                "owners:" => section = "owners",
                "rc:" => section = "rc",
                id => match section {
                    "members" => {
                        dg.members.insert(id.into(), format!("{id}@x"));
                    }
                    "owners" => {
                        dg.owners.insert(id.into(), format!("{id}@x"));
                    }
                    _ => {
                        dg.receive_call.insert(id.into());
                    }
                },
            }
        }
        d.groups.insert(key.into(), dg);
    }
    d
}

fn known(groups: &[&str]) -> Known {
    let mut k = Known::default();
    for g in groups {
        if let Some(key) = g.strip_prefix('!') {
            k.intents.insert(key.into());
            continue;
        }
        let (head, rest) = split_head(g);
        let (key_rid, name) = match head.split_once('=') {
            Some((kr, n)) => (kr, n.to_string()),
            None => (head, head.split('#').next().unwrap().to_string()),
        };
        let (key, rid) = key_rid.split_once('#').unwrap();
        let mut kg = KnownGroup {
            key: key.into(),
            remote_id: rid.into(),
            name,
            ..Default::default()
        };
        let mut owners = false;
        for tok in rest.split_whitespace() {
            if tok == "owners:" {
                owners = true;
                continue;
            }
            let id = tok.trim_end_matches(['+', '*']);
            let m = KnownMember {
                owned: tok.contains('+'),
                receive_call: tok.contains('*'),
                email: Some(format!("{id}@x")),
            };
            if owners {
                kg.owners.insert(id.into(), m)
            } else {
                kg.members.insert(id.into(), m)
            };
        }
        k.groups.insert(key.into(), kg);
    }
    k
}

fn ids(ms: &[Member]) -> String {
    ms.iter()
        .map(|m| m.id.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn brief(op: &Op) -> String {
    let mut s = String::new();
    match op {
        Op::Create(c) => {
            s += &format!("create {} \"{}\" +[{}]", c.key, c.name, ids(&c.members));
            if !c.owners.is_empty() {
                s += &format!(" owners+[{}]", ids(&c.owners));
            }
            if !c.receive_call.is_empty() {
                s += &format!(" rc[{}]", c.receive_call.join(" "));
            }
            if c.resumed {
                s += " resumed";
            }
        }
        Op::Update(u) => {
            s += &format!("update {}", u.key);
            if let Some(from) = &u.rename_from {
                s += &format!(" rename \"{from}\"->\"{}\"", u.name);
            }
            if !u.add.is_empty() {
                s += &format!(" +[{}]", ids(&u.add));
            }
            if !u.remove.is_empty() {
                s += &format!(" -[{}]", ids(&u.remove));
            }
            if !u.add_owners.is_empty() {
                s += &format!(" owners+[{}]", ids(&u.add_owners));
            }
            if !u.remove_owners.is_empty() {
                s += &format!(" owners-[{}]", ids(&u.remove_owners));
            }
            if let Some(rc) = &u.receive_call {
                s += &format!(" rc[{}]", rc.join(" "));
            }
            if !u.kept_members.is_empty() {
                let kept: Vec<String> = u
                    .kept_members
                    .iter()
                    .map(|k| {
                        format!(
                            "{}{}<{}>",
                            if k.owner { "owner " } else { "" },
                            k.id,
                            k.pattern
                        )
                    })
                    .collect();
                s += &format!(" kept[{}]", kept.join(" "));
            }
        }
        Op::Delete(d) => s += &format!("delete {} ({})", d.key, d.members),
    }
    s
}

#[track_caller]
fn check(d: &[&str], k: &[&str], o: PlanOptions, expected: &[&str]) {
    let p = plan_target(&desired(d), &known(k), &o);
    let mut got: Vec<String> = p.ops.iter().map(brief).collect();
    if p.unchanged > 0 {
        got.push(format!("unchanged {}", p.unchanged));
    }
    for l in &p.left_alone {
        got.push(format!("left {l}"));
    }
    for sk in &p.skipped {
        got.push(match sk {
            Skipped::Create { key, members, .. } => format!("skip create {key} ({members})"),
            Skipped::Delete { key, members, .. } => format!("skip delete {key} ({members})"),
            Skipped::Rename { key, from, to } => format!("skip rename {key} \"{from}\"->\"{to}\""),
            Skipped::Members {
                key, add, remove, ..
            } => format!("skip {key} +{add} -{remove}"),
        });
    }
    if let Some(g) = &p.guard {
        let verdict = if g.overridden {
            "overridden"
        } else {
            "refused"
        };
        got.push(format!("guard {}/{} {verdict}", g.removals, g.managed));
    }
    assert_eq!(got, expected, "\ndesired: {d:?}\nknown: {k:?}");
    // Pure and deterministic: the same input gives the same plan.
    assert_eq!(plan_target(&desired(d), &known(k), &o), p);
}

fn mode(m: Mode) -> PlanOptions {
    PlanOptions { mode: m, ..opts() }
}

fn guard(max_removals: usize, ratio: f64) -> PlanOptions {
    PlanOptions {
        safety: Safety {
            max_removals,
            max_removal_ratio: ratio,
            delete_groups: false,
        },
        ..opts()
    }
}

/// `keep_members` patterns (emails in the notation are `<id>@x`).
fn keeping(patterns: &[&str], o: PlanOptions) -> PlanOptions {
    PlanOptions {
        keep: Keep::new(patterns).unwrap(),
        ..o
    }
}

/// `--only` these people (by id: their email is `<id>@x`).
fn only(people: &[&str], o: PlanOptions) -> PlanOptions {
    PlanOptions {
        only: Some(people.iter().map(|p| format!("{p}@x")).collect()),
        ..o
    }
}

fn deleting() -> PlanOptions {
    PlanOptions {
        safety: Safety {
            max_removals: 100,
            max_removal_ratio: 1.0,
            delete_groups: true,
        },
        ..opts()
    }
}

#[test]
fn creates() {
    check(
        &["t1=Tier 1: a b"],
        &[],
        opts(),
        &["create t1 \"Tier 1\" +[a b]"],
    );
    check(&["t1: "], &[], opts(), &["create t1 \"t1\" +[]"]);
    check(
        &["b: x", "a: y"],
        &[],
        opts(),
        &["create a \"a\" +[y]", "create b \"b\" +[x]"],
    );
    check(
        &["t: a owners: o"],
        &[],
        opts(),
        &["create t \"t\" +[a] owners+[o]"],
    );
    check(
        &["t: a b rc: a"],
        &[],
        opts(),
        &["create t \"t\" +[a b] rc[a]"],
    );
    check(&["t: a"], &["!t"], opts(), &["create t \"t\" +[a] resumed"]);
}

#[test]
fn no_change_is_no_op() {
    check(&["t: a b"], &["t#1: a b"], opts(), &["unchanged 1"]);
    check(&["t: "], &["t#1: "], opts(), &["unchanged 1"]);
    check(
        &["t: a owners: o"],
        &["t#1: a owners: o"],
        opts(),
        &["unchanged 1"],
    );
    check(&["t: a b rc: a"], &["t#1: a* b"], opts(), &["unchanged 1"]);
}

#[test]
fn adds_and_removes() {
    check(&["t: a b c"], &["t#1: a"], opts(), &["update t +[b c]"]);
    check(&["t: a"], &["t#1: a b c"], opts(), &["update t -[b c]"]);
    check(&["t: a d"], &["t#1: a b"], opts(), &["update t +[d] -[b]"]);
    check(
        &["t: a owners: p"],
        &["t#1: a owners: o"],
        opts(),
        &["update t owners+[p] owners-[o]"],
    );
    check(&["t: "], &["t#1: a"], opts(), &["update t -[a]"]);
}

#[test]
fn renames() {
    check(
        &["t=New: a"],
        &["t#1=Old: a"],
        opts(),
        &["update t rename \"Old\"->\"New\""],
    );
    check(
        &["t=New: a b"],
        &["t#1=Old: a"],
        opts(),
        &["update t rename \"Old\"->\"New\" +[b]"],
    );
}

#[test]
fn membership_modes() {
    // authoritative removes everybody not in the source, owned or not
    check(
        &["t: a"],
        &["t#1: a b+ c"],
        mode(Mode::Authoritative),
        &["update t -[b c]"],
    );
    // owned removes only what rostersync added
    check(
        &["t: a"],
        &["t#1: a b+ c"],
        mode(Mode::Owned),
        &["update t -[b]"],
    );
    check(
        &["t: a"],
        &["t#1: a c"],
        mode(Mode::Owned),
        &["unchanged 1"],
    );
    check(
        &["t: a owners: "],
        &["t#1: a owners: o p+"],
        mode(Mode::Owned),
        &["update t owners-[p]"],
    );
    // add_only never removes
    check(
        &["t: a d"],
        &["t#1: a b+ c"],
        mode(Mode::AddOnly),
        &["update t +[d]"],
    );
    check(
        &["t: "],
        &["t#1: a+"],
        mode(Mode::AddOnly),
        &["unchanged 1"],
    );
}

#[test]
fn receive_call() {
    check(
        &["t: a b rc: a b"],
        &["t#1: a* b"],
        opts(),
        &["update t rc[a b]"],
    );
    check(
        &["t: a b rc: b"],
        &["t#1: a* b"],
        opts(),
        &["update t rc[b]"],
    );
    check(
        &["t: a b c rc: a c"],
        &["t#1: a* b"],
        opts(),
        &["update t +[c] rc[a c]"],
    );
    // a removed member's flag goes with it; no receive_call change left
    check(&["t: a rc: a"], &["t#1: a* b*"], opts(), &["update t -[b]"]);
    // owned mode keeps a foreign member and its flag
    check(
        &["t: a rc: a"],
        &["t#1: a* b*"],
        mode(Mode::Owned),
        &["unchanged 1"],
    );
}

#[test]
fn id_change_is_remove_plus_add() {
    // the source gave the person a new id on this target
    check(&["t: a2"], &["t#1: a"], opts(), &["update t +[a2] -[a]"]);
}

#[test]
fn groups_that_left_the_source() {
    check(
        &["a: x"],
        &["a#1: x", "b#2: y"],
        opts(),
        &["unchanged 1", "left b"],
    );
    check(
        &["a: x"],
        &["a#1: x", "b#2: y z"],
        deleting(),
        &["delete b (2)", "unchanged 1"],
    );
    check(&[], &["b#2: "], deleting(), &["delete b (0)"]);
}

#[test]
fn safety_guard() {
    // at the limits: allowed
    check(
        &["t: a b"],
        &["t#1: a b c d"],
        guard(2, 0.5),
        &["update t -[c d]"],
    );
    // one over max_removals
    check(
        &["t: a"],
        &["t#1: a b c d"],
        guard(2, 1.0),
        &["update t -[b c d]", "guard 3/4 refused"],
    );
    // over the ratio
    check(
        &["t: a b"],
        &["t#1: a b c d"],
        guard(100, 0.25),
        &["update t -[c d]", "guard 2/4 refused"],
    );
    // the ratio applies only once something is managed
    check(
        &["t: a b"],
        &[],
        guard(100, 0.1),
        &["create t \"t\" +[a b]"],
    );
    // additions never count
    check(
        &["t: a b c d e f"],
        &["t#1: a"],
        guard(0, 0.0),
        &["update t +[b c d e f]"],
    );
    // overridden by --allow-mass-removal
    let o = PlanOptions {
        allow_mass_removal: true,
        ..guard(0, 0.0)
    };
    check(
        &["t: "],
        &["t#1: a"],
        o,
        &["update t -[a]", "guard 1/1 overridden"],
    );
    // an emptied source is the classic disaster: every removal counts
    let o = PlanOptions {
        safety: Safety {
            max_removals: 100,
            max_removal_ratio: 0.25,
            delete_groups: true,
        },
        ..opts()
    };
    check(
        &[],
        &["a#1: x y", "b#2: z"],
        o,
        &["delete a (2)", "delete b (1)", "guard 3/3 refused"],
    );
    // removals summed across groups of one target
    check(
        &["a: x", "b: y"],
        &["a#1: x p", "b#2: y q"],
        guard(1, 1.0),
        &["update a -[p]", "update b -[q]", "guard 2/4 refused"],
    );
}

#[test]
fn protected_members_are_kept_in_every_mode() {
    // authoritative: b is protected by its email, c is removed
    check(
        &["t: a"],
        &["t#1: a b c"],
        keeping(&["b@*"], opts()),
        &["update t -[c] kept[b<b@*>]"],
    );
    // an id: pattern (globs allowed)
    check(
        &["t: a"],
        &["t#1: a b c"],
        keeping(&["id:[bc]"], opts()),
        &["unchanged 1"],
    );
    // a group whose only removal is protected needs no call
    check(
        &["t: a"],
        &["t#1: a b"],
        keeping(&["B@X"], opts()),
        &["unchanged 1"],
    );
    // owned: only rostersync's own members are removed, and never a protected one
    check(
        &["t: a"],
        &["t#1: a b+ c+"],
        keeping(&["id:b"], mode(Mode::Owned)),
        &["update t -[c] kept[b<id:b>]"],
    );
    // add_only removes nobody anyway
    check(
        &["t: a d"],
        &["t#1: a b+"],
        keeping(&["id:b"], mode(Mode::AddOnly)),
        &["update t +[d]"],
    );
    // owners are protected alike
    check(
        &["t: a owners: "],
        &["t#1: a x owners: o p"],
        keeping(&["o@x"], opts()),
        &["update t -[x] owners-[p] kept[owner o<o@x>]"],
    );
    // additions are unaffected, and a protected member stays in the whole list
    let p = plan_target(
        &desired(&["t: a d rc: a d"]),
        &known(&["t#1: a* b*"]),
        &keeping(&["id:b"], opts()),
    );
    let Op::Update(u) = &p.ops[0] else {
        panic!("{p:?}")
    };
    assert_eq!(ids(&u.add), "d");
    assert!(u.remove.is_empty());
    assert_eq!(u.members_after, ["a", "b", "d"]);
    assert_eq!(u.receive_call_after, ["a", "b", "d"], "b keeps its flag");
    assert_eq!(u.kept, ["b"]);
    assert_eq!(u.kept_members[0].email.as_deref(), Some("b@x"));
    // a member whose email is unknown (found by --full) matches id: patterns only
    let mut k = known(&["t#1: a b"]);
    k.groups
        .get_mut("t")
        .unwrap()
        .members
        .get_mut("b")
        .unwrap()
        .email = None;
    let p = plan_target(&desired(&["t: a"]), &k, &keeping(&["*@x"], opts()));
    assert_eq!(
        p.ops.iter().map(brief).collect::<Vec<_>>(),
        ["update t -[b]"]
    );
    let p = plan_target(&desired(&["t: a"]), &k, &keeping(&["id:b"], opts()));
    assert!(p.ops.is_empty(), "{p:?}");
    // deletes of groups are unaffected by keep_members
    check(
        &[],
        &["g#1: b"],
        keeping(&["*@x"], deleting()),
        &["delete g (1)"],
    );
}

#[test]
fn the_guard_does_not_count_kept_removals() {
    // without protection: 3 removals > 1, refused
    check(
        &["t: a"],
        &["t#1: a b c d"],
        guard(1, 1.0),
        &["update t -[b c d]", "guard 3/4 refused"],
    );
    // b and c are protected: one removal, at the limit, not refused
    check(
        &["t: a"],
        &["t#1: a b c d"],
        keeping(&["id:[bc]"], guard(1, 1.0)),
        &["update t -[d] kept[b<id:[bc]> c<id:[bc]>]"],
    );
    // the ratio too: 1 of 4 is 25%
    check(
        &["t: a"],
        &["t#1: a b c d"],
        keeping(&["svc-*@x", "b@x", "c@x"], guard(100, 0.25)),
        &["update t -[d] kept[b<b@x> c<c@x>]"],
    );
}

#[test]
fn only_plans_the_named_people_in_known_groups() {
    let d = &["t: a d e", "other: e", "new: d", "r=New: a d"];
    let k = &["t#1: a b c", "other#2: b", "r#3=Old: a", "gone#4: x y"];
    // the whole run, for reference
    check(
        d,
        k,
        deleting(),
        &[
            "delete gone (2)",
            "create new \"new\" +[d]",
            "update other +[e] -[b]",
            "update r rename \"Old\"->\"New\" +[d]",
            "update t +[d e] -[b c]",
        ],
    );
    // --only d and b: their additions and removals in known groups; the rest skipped
    check(
        d,
        k,
        only(&["d", "b"], deleting()),
        &[
            "update other -[b]",
            "update r +[d]",
            "update t +[d] -[b]",
            "skip create new (1)",
            "skip other +1 -0",
            "skip rename r \"Old\"->\"New\"",
            "skip t +1 -1",
            "skip delete gone (2)",
        ],
    );
    // a rename skipped: the update keeps the known name
    let p = plan_target(&desired(d), &known(k), &only(&["d"], deleting()));
    let Op::Update(u) = p.ops.iter().find(|o| o.key() == "r").unwrap() else {
        panic!()
    };
    assert_eq!((u.name.as_str(), u.rename_from.as_ref()), ("Old", None));
    // nobody in scope changes: nothing is sent, and the groups are not "unchanged"
    check(
        &["t: a d"],
        &["t#1: a b"],
        only(&["zed"], opts()),
        &["skip t +1 -1"],
    );
    // an unfinished create is a create: skipped
    check(
        &["t: a"],
        &["!t"],
        only(&["a"], opts()),
        &["skip create t (1)"],
    );
    // without delete_groups a group that left the source is left alone, as always
    check(&[], &["g#1: a"], only(&["a"], opts()), &["left g"]);
    // the scope is on emails, case-insensitively; an unknown email is never in scope
    let mut kn = known(&["t#1: a B c"]);
    kn.groups
        .get_mut("t")
        .unwrap()
        .members
        .get_mut("B")
        .unwrap()
        .email = Some("B@X".into());
    kn.groups
        .get_mut("t")
        .unwrap()
        .members
        .get_mut("c")
        .unwrap()
        .email = None;
    let p = plan_target(&desired(&["t: a"]), &kn, &only(&["b"], opts()));
    assert_eq!(
        p.ops.iter().map(brief).collect::<Vec<_>>(),
        ["update t -[B]"]
    );
    // other people's receive_call changes are not sent
    check(
        &["t: a b c rc: b c"],
        &["t#1: a* b"],
        only(&["c"], opts()),
        &["update t +[c] rc[a c]"],
    );
    // protected and scoped: a kept removal is shown for the people in scope
    check(
        &["t: a"],
        &["t#1: a b c"],
        only(&["b", "c"], keeping(&["id:b"], opts())),
        &["update t -[c] kept[b<id:b>]"],
    );
}

#[test]
fn members_after_for_replace_apis() {
    let p = plan_target(
        &desired(&["t: a c rc: c"]),
        &known(&["t#1: a* b"]),
        &mode(Mode::Owned),
    );
    let Op::Update(u) = &p.ops[0] else {
        panic!("{p:?}")
    };
    assert_eq!(u.members_after, ["a", "b", "c"]);
    assert_eq!(u.receive_call_after, ["c"]);
    assert_eq!(
        u.kept,
        ["b"],
        "b stays only because owned mode does not remove it"
    );
}

#[test]
fn plan_group_after_adoption() {
    // adopting a group that already has some members: only the difference is sent
    let d = &desired(&["t=Tier: a b"]).groups["t"];
    let k = &known(&["t#9=Tier: b c"]).groups["t"];
    let u = plan_group(d, k, &mode(Mode::Owned)).unwrap();
    assert_eq!(ids(&u.add), "a");
    assert!(
        u.remove.is_empty(),
        "c was there before: owned mode keeps it"
    );
    let u = plan_group(d, k, &mode(Mode::Authoritative)).unwrap();
    assert_eq!(ids(&u.remove), "c");
    assert_eq!(
        plan_group(
            d,
            &known(&["t#9=Tier: a b"]).groups["t"],
            &mode(Mode::Owned)
        ),
        None
    );
}

/// Properties over random desired and known states: applying the plan gives the source
/// (authoritative), never removes what the mode protects, and the plan is a fixed point.
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Up to 6 groups of up to 8 members out of 12 people; known members carry flags.
    fn state() -> impl Strategy<Value = (DesiredTarget, Known)> {
        let desired =
            prop::collection::btree_map(0u8..6, prop::collection::btree_set(0u8..12, 0..8), 0..6);
        let known = prop::collection::btree_map(
            0u8..6,
            prop::collection::btree_map(
                0u8..12,
                (any::<bool>(), any::<bool>(), prop::bool::weighted(0.8)),
                0..8,
            ),
            0..6,
        );
        (desired, known, any::<bool>()).prop_map(|(d, k, renamed)| {
            let mut dt = DesiredTarget::default();
            for (g, ms) in d {
                let key = format!("g{g}");
                let mut dg = DesiredGroup {
                    key: key.clone(),
                    name: key.clone(),
                    ..Default::default()
                };
                if renamed {
                    dg.name = format!("G{g}");
                }
                for m in ms {
                    dg.members.insert(format!("u{m}"), format!("u{m}@x"));
                }
                dg.receive_call = dg.members.keys().take(2).cloned().collect();
                dt.groups.insert(key, dg);
            }
            let mut kn = Known::default();
            for (g, ms) in k {
                let key = format!("g{g}");
                let mut kg = KnownGroup {
                    key: key.clone(),
                    remote_id: format!("r{g}"),
                    name: key.clone(),
                    ..Default::default()
                };
                for (m, (owned, rc, email_known)) in ms {
                    // Some members were found by a `--full` read: their owner is unknown.
                    let km = KnownMember {
                        owned,
                        receive_call: rc,
                        email: email_known.then(|| format!("u{m}@x")),
                    };
                    kg.members.insert(format!("u{m}"), km);
                }
                kn.groups.insert(key, kg);
            }
            (dt, kn)
        })
    }

    /// Random `keep_members`: email globs and `id:` globs over the generated people.
    fn keep() -> impl Strategy<Value = Keep> {
        let all = vec![
            "u1@x",
            "U2@X",
            "u1*@x",
            "*0@*",
            "u?@x",
            "id:u3",
            "id:u1[01]",
            "id:*5",
            "id:u{4,6}",
        ];
        prop::sample::subsequence(all, 0..4).prop_map(|ps| Keep::new(&ps).unwrap())
    }

    /// A random `--only` scope over the generated people (mixed case), or a whole run.
    fn scope() -> impl Strategy<Value = Option<BTreeSet<String>>> {
        prop::option::of(prop::collection::btree_set(0u8..14, 0..4))
            .prop_map(|o| o.map(|s| s.into_iter().map(|m| format!("u{m}@x")).collect()))
    }

    /// The known state after every op of `plan` was confirmed.
    fn apply(known: &Known, plan: &TargetPlan) -> Known {
        let mut k = known.clone();
        for op in &plan.ops {
            match op {
                Op::Create(c) => {
                    let mut g = KnownGroup {
                        key: c.key.clone(),
                        remote_id: "new".into(),
                        name: c.name.clone(),
                        ..Default::default()
                    };
                    for m in &c.members {
                        let rc = c.receive_call.contains(&m.id);
                        g.members.insert(
                            m.id.clone(),
                            KnownMember {
                                owned: true,
                                receive_call: rc,
                                email: m.email.clone(),
                            },
                        );
                    }
                    k.groups.insert(c.key.clone(), g);
                }
                Op::Update(u) => {
                    let g = k.groups.get_mut(&u.key).expect("updates name known groups");
                    for m in &u.add {
                        g.members.insert(
                            m.id.clone(),
                            KnownMember {
                                owned: true,
                                receive_call: false,
                                email: m.email.clone(),
                            },
                        );
                    }
                    for m in &u.remove {
                        assert!(
                            g.members.remove(&m.id).is_some(),
                            "removes only known members"
                        );
                    }
                    if let Some(rc) = &u.receive_call {
                        for (id, m) in g.members.iter_mut() {
                            m.receive_call = rc.contains(id);
                        }
                    }
                    g.name = u.name.clone();
                }
                Op::Delete(d) => {
                    k.groups.remove(&d.key);
                }
            }
        }
        k
    }

    fn opts(mode: Mode, delete_groups: bool) -> PlanOptions {
        PlanOptions {
            mode,
            safety: Safety {
                max_removals: usize::MAX,
                max_removal_ratio: 1.0,
                delete_groups,
            },
            allow_mass_removal: false,
            keep: Keep::default(),
            only: None,
        }
    }

    proptest! {
        #[test]
        fn authoritative_plans_converge_in_one_step((d, k) in state(), delete in any::<bool>()) {
            let plan = plan_target(&d, &k, &opts(Mode::Authoritative, delete));
            prop_assert!(plan.guard.is_none());
            let after = apply(&k, &plan);
            for (key, dg) in &d.groups {
                let g = &after.groups[key];
                prop_assert_eq!(g.members.keys().collect::<Vec<_>>(), dg.members.keys().collect::<Vec<_>>());
                prop_assert_eq!(&g.name, &dg.name);
                let rc: BTreeSet<&String> = g.members.iter().filter(|(_, m)| m.receive_call).map(|(id, _)| id).collect();
                prop_assert_eq!(rc, dg.receive_call.iter().collect::<BTreeSet<_>>());
            }
            for key in k.groups.keys().filter(|key| !d.groups.contains_key(*key)) {
                prop_assert_eq!(after.groups.contains_key(key), !delete, "left alone unless delete_groups");
            }
            // a fixed point: planning again from the result sends nothing
            let again = plan_target(&d, &after, &opts(Mode::Authoritative, delete));
            prop_assert!(again.ops.is_empty(), "{:?}", again.ops);
        }

        #[test]
        fn protected_members_are_never_removed((d, k) in state()) {
            for mode in [Mode::Owned, Mode::AddOnly] {
                let plan = plan_target(&d, &k, &opts(mode, false));
                for op in &plan.ops {
                    if let Op::Update(u) = op {
                        for m in &u.remove {
                            prop_assert!(mode == Mode::Owned && k.groups[&u.key].members[&m.id].owned, "{mode:?} removed {}", m.id);
                        }
                    }
                }
                let after = apply(&k, &plan);
                for (key, dg) in &d.groups {
                    for id in dg.members.keys() {
                        prop_assert!(after.groups[key].members.contains_key(id), "every desired member is there");
                    }
                }
                prop_assert!(plan_target(&d, &after, &opts(mode, false)).ops.is_empty());
            }
        }

        #[test]
        fn keep_members_are_never_removed_in_any_mode(
            (d, k) in state(),
            keep in keep(),
            only in scope(),
            delete in any::<bool>(),
        ) {
            for mode in [Mode::Authoritative, Mode::Owned, Mode::AddOnly] {
                let plain = PlanOptions { only: only.clone(), ..opts(mode, delete) };
                let o = PlanOptions { keep: keep.clone(), ..plain.clone() };
                let plan = plan_target(&d, &k, &o);
                let unprotected = plan_target(&d, &k, &plain);
                for op in &plan.ops {
                    let Op::Update(u) = op else { continue };
                    for m in u.remove.iter().chain(&u.remove_owners) {
                        prop_assert!(keep.protects(&m.id, m.email.as_deref()).is_none(), "{mode:?} removed protected {}", m.id);
                    }
                    for kept in &u.kept_members {
                        prop_assert!(u.members_after.contains(&kept.id) || kept.owner);
                        prop_assert_eq!(keep.protects(&kept.id, kept.email.as_deref()), Some(kept.pattern.as_str()));
                    }
                }
                // Protection takes away exactly the protected removals, nothing else.
                let removed = |p: &TargetPlan| -> BTreeSet<(String, String)> {
                    p.ops.iter().filter_map(|op| match op { Op::Update(u) => Some(u), _ => None })
                        .flat_map(|u| u.remove.iter().map(move |m| (u.key.clone(), m.id.clone())))
                        .collect()
                };
                let expect: BTreeSet<_> = removed(&unprotected).into_iter()
                    .filter(|(key, id)| keep.protects(id, k.groups[key].members[id].email.as_deref()).is_none())
                    .collect();
                prop_assert_eq!(removed(&plan), expect);
                // Deletes of groups are unaffected.
                let deletes = |p: &TargetPlan| p.ops.iter().filter(|o| matches!(o, Op::Delete(_))).count();
                prop_assert_eq!(deletes(&plan), deletes(&unprotected));
                // Applying the plan and planning again: no protected member is ever removed,
                // and the result is a fixed point.
                let after = apply(&k, &plan);
                for (key, g) in &k.groups {
                    for (id, m) in &g.members {
                        if keep.protects(id, m.email.as_deref()).is_some() && !(delete && !d.groups.contains_key(key) && only.is_none()) {
                            prop_assert!(after.groups[key].members.contains_key(id), "{mode:?}: protected {id} gone from {key}");
                        }
                    }
                }
                if only.is_none() {
                    prop_assert!(plan_target(&d, &after, &o).ops.is_empty());
                }
            }
        }

        #[test]
        fn the_guard_ignores_kept_removals((d, k) in state(), keep in keep(), max in 0usize..10, ratio in 0.0f64..1.0) {
            let o = PlanOptions {
                safety: Safety { max_removals: max, max_removal_ratio: ratio, delete_groups: false },
                keep: keep.clone(),
                ..opts(Mode::Authoritative, false)
            };
            let plan = plan_target(&d, &k, &o);
            // The removals that count: the unprotected members the source no longer wants.
            let counted: usize = d.groups.iter().filter_map(|(key, dg)| k.groups.get(key).map(|g| (dg, g)))
                .map(|(dg, g)| g.members.iter().filter(|(id, m)| !dg.members.contains_key(*id) && keep.protects(id, m.email.as_deref()).is_none()).count())
                .sum();
            prop_assert_eq!(plan.removals(), counted);
            let managed = k.managed();
            let over = counted > max || (managed > 0 && counted as f64 > ratio * managed as f64);
            prop_assert_eq!(plan.refused(), over);
        }

        #[test]
        fn only_sends_exactly_the_scoped_changes((d, k) in state(), only in scope(), delete in any::<bool>()) {
            let Some(scope) = only.clone() else { return Ok(()) };
            let whole = plan_target(&d, &k, &opts(Mode::Authoritative, delete));
            let scoped = plan_target(&d, &k, &PlanOptions { only, ..opts(Mode::Authoritative, delete) });
            let in_scope = |m: &Member| m.email.as_ref().is_some_and(|e| scope.contains(&e.to_lowercase()));
            let changes = |p: &TargetPlan, filter: bool| -> BTreeSet<(String, char, String)> {
                p.ops.iter().filter_map(|op| match op { Op::Update(u) => Some(u), _ => None })
                    .flat_map(|u| u.add.iter().map(|m| ('+', m)).chain(u.remove.iter().map(|m| ('-', m))).map(move |(c, m)| (u, c, m)))
                    .filter(|(_, _, m)| !filter || in_scope(m))
                    .map(|(u, c, m)| (u.key.clone(), c, m.id.clone()))
                    .collect()
            };
            prop_assert_eq!(changes(&scoped, false), changes(&whole, true));
            for op in &scoped.ops {
                let Op::Update(u) = op else {
                    prop_assert!(false, "a scoped run only updates: {:?}", op);
                    unreachable!()
                };
                prop_assert!(u.rename_from.is_none());
                prop_assert!(u.changes_members());
            }
            let creates = whole.ops.iter().filter(|o| matches!(o, Op::Create(_))).count();
            let deletes = whole.ops.iter().filter(|o| matches!(o, Op::Delete(_))).count();
            let skipped = |f: fn(&Skipped) -> bool| scoped.skipped.iter().filter(|s| f(s)).count();
            prop_assert_eq!(skipped(|s| matches!(s, Skipped::Create { .. })), creates);
            prop_assert_eq!(skipped(|s| matches!(s, Skipped::Delete { .. })), deletes);
            // After the scoped run, a whole run brings the target to the source all the same.
            let mid = apply(&k, &scoped);
            let rest = plan_target(&d, &mid, &opts(Mode::Authoritative, delete));
            let end = apply(&mid, &rest);
            for (key, dg) in &d.groups {
                prop_assert_eq!(end.groups[key].members.keys().collect::<Vec<_>>(), dg.members.keys().collect::<Vec<_>>());
            }
            prop_assert!(plan_target(&d, &end, &opts(Mode::Authoritative, delete)).ops.is_empty());
        }

        #[test]
        fn the_guard_trips_exactly_past_its_limits((d, k) in state(), max in 0usize..10, ratio in 0.0f64..1.0) {
            let o = PlanOptions { safety: Safety { max_removals: max, max_removal_ratio: ratio, delete_groups: true }, ..opts(Mode::Authoritative, true) };
            let plan = plan_target(&d, &k, &o);
            let removals: usize = plan.ops.iter().map(Op::removals).sum();
            let managed = k.managed();
            let over = removals > max || (managed > 0 && removals as f64 > ratio * managed as f64);
            prop_assert_eq!(plan.refused(), over);
        }
    }
}
