//! Protected members (`keep_members`) and scoped runs (`--only`).

use super::*;

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
