//! Properties over random desired and known states: applying the plan gives the source
//! (authoritative), never removes what the mode protects, and the plan is a fixed point.

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
                dg.members
                    .insert(format!("u{m}").into(), format!("u{m}@x").into());
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
                    email: email_known.then(|| format!("u{m}@x").into()),
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
                            email: m.email.as_deref().map(Into::into),
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
                            email: m.email.as_deref().map(Into::into),
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
            prop_assert_eq!(g.members.keys().map(String::as_str).collect::<Vec<_>>(), dg.members.keys().map(|k| &**k).collect::<Vec<_>>());
            prop_assert_eq!(&g.name, &dg.name);
            let rc: BTreeSet<&str> = g.members.iter().filter(|(_, m)| m.receive_call).map(|(id, _)| id.as_str()).collect();
            prop_assert_eq!(rc, dg.receive_call.iter().map(|k| &**k).collect::<BTreeSet<&str>>());
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
                    prop_assert!(after.groups[key].members.contains_key(&**id), "every desired member is there");
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
            .map(|(dg, g)| g.members.iter().filter(|(id, m)| !dg.members.contains_key(id.as_str()) && keep.protects(id, m.email.as_deref()).is_none()).count())
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
            prop_assert_eq!(end.groups[key].members.keys().map(String::as_str).collect::<Vec<_>>(), dg.members.keys().map(|k| &**k).collect::<Vec<_>>());
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
