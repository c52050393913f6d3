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
                        dg.members.insert(id.into(), format!("{id}@x").into());
                    }
                    "owners" => {
                        dg.owners.insert(id.into(), format!("{id}@x").into());
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
                email: Some(format!("{id}@x").into()),
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

mod scope;

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

/// Properties over random desired and known states (proptest).
mod properties;
