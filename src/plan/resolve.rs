//! PURE: the desired state of one target, with member ids, from the source and what is
//! known of each person's id on that target. The lookups themselves (IO) happen in `sync`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;

use super::{DesiredGroup, DesiredTarget, Known};
use crate::model::Desired;

/// How one target names people and what it takes.
#[derive(Clone, Copy, Debug)]
pub struct Naming<'a> {
    /// The target's name (people's `ids` are keyed by it).
    pub target: &'a str,
    /// The email itself is the member id (MaestroQA).
    pub email_is_id: bool,
    /// The target takes group owners (MaestroQA).
    pub owners: bool,
    /// The target keeps a `receive_call` list (DeepCall).
    pub receive_call: bool,
    /// A SCIM target (owners given for one that does not take them get a warning).
    pub scim: bool,
}

/// A member that could not be resolved for a target: skipped there, never a removal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unresolved {
    pub email: String,
    pub group: String,
    pub reason: String,
}

/// The desired state of one target, and who was left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    pub target: DesiredTarget,
    pub unresolved: Vec<Unresolved>,
    pub warnings: Vec<String>,
}

/// The per-run maps' hasher: these maps are keyed by the source's emails and the state's
/// ids, never by a vendor's answer, and SipHash's cost showed at a million memberships.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// email -> the id `people[].ids.<target>` gives, built once per target.
fn source_ids<'a>(desired: &'a Desired, n: &Naming<'_>) -> Map<&'a str, &'a str> {
    desired
        .people
        .values()
        .filter_map(|p| Some((p.email.as_str(), p.ids.get(n.target)?.as_str())))
        .collect()
}

/// The emails whose id must be looked up through the target's API: members of the
/// target's groups with no id in the source and no entry (positive or negative) in `cache`.
pub fn to_look_up(
    desired: &Desired,
    n: &Naming<'_>,
    cache: &HashMap<String, Option<String>>,
) -> BTreeSet<String> {
    if n.email_is_id {
        return BTreeSet::new();
    }
    let given = source_ids(desired, n);
    let mut seen: Map<&str, ()> = Map::default();
    let mut out = BTreeSet::new();
    for e in desired
        .groups
        .values()
        .filter(|g| g.is_for(n.target))
        .flat_map(|g| g.members.iter())
    {
        let e: &str = e;
        if seen.insert(e, ()).is_none() && !cache.contains_key(e) && !given.contains_key(e) {
            out.insert(e.to_string());
        }
    }
    out
}

/// Each person's id on one target, worked out once and shared by all their memberships.
struct PersonIds<'a> {
    n: Naming<'a>,
    given: Map<&'a str, &'a str>,
    looked_up: &'a HashMap<String, Option<String>>,
    known: &'a Known,
    /// email -> id of every known member: built only if some member needs it.
    known_ids: Option<Map<&'a str, &'a str>>,
    /// email -> id (None: no id), as decided.
    decided: Map<Arc<str>, Option<Arc<str>>>,
}

impl<'a> PersonIds<'a> {
    fn of(&mut self, e: &Arc<str>) -> Option<Arc<str>> {
        if let Some(id) = self.decided.get(e) {
            return id.clone();
        }
        let id = self.work_out(e);
        self.decided.insert(e.clone(), id.clone());
        id
    }

    fn work_out(&mut self, e: &Arc<str>) -> Option<Arc<str>> {
        if let Some(id) = self.given.get(&**e) {
            return Some(Arc::from(*id));
        }
        if self.n.email_is_id {
            return Some(e.clone());
        }
        // A cached "not found" is no proof that the known id is wrong: it falls through to
        // the id a known group holds, so it never turns into a removal (SPEC 5).
        if let Some(Some(id)) = self.looked_up.get(&**e) {
            return Some(Arc::from(id.as_str()));
        }
        let known = self.known;
        let known_ids = self.known_ids.get_or_insert_with(|| {
            let mut m = Map::default();
            for g in known.groups.values() {
                for (id, k) in &g.members {
                    if let Some(email) = &k.email {
                        m.insert(&**email, id.as_str());
                    }
                }
            }
            m
        });
        known_ids.get(&**e).map(|id| Arc::from(*id))
    }
}

/// Each member's id is, in order: `people[].ids.<target>`; the email (where it is the id);
/// `ids` (cache and fresh lookups); the id a known group already holds for that email (so
/// a failed lookup never turns into a removal). Without one, the member is skipped for
/// this target, with `reason(email)`.
pub fn desired_target(
    desired: &Desired,
    n: &Naming<'_>,
    ids: &HashMap<String, Option<String>>,
    known: &Known,
    reason: &dyn Fn(&str) -> String,
) -> Resolved {
    let mut people = PersonIds {
        n: *n,
        given: source_ids(desired, n),
        looked_up: ids,
        known,
        known_ids: None,
        decided: Map::default(),
    };
    let mut out = Resolved::default();
    for g in desired.groups.values().filter(|g| g.is_for(n.target)) {
        let mut dg = DesiredGroup {
            key: g.key.clone(),
            name: g.name.clone(),
            ..Default::default()
        };
        let mut members = Vec::with_capacity(g.members.len());
        for e in &g.members {
            match people.of(e) {
                Some(id) => members.push((id, e.clone())),
                None => out.unresolved.push(Unresolved {
                    email: e.to_string(),
                    group: g.name.clone(),
                    reason: reason(e),
                }),
            }
        }
        // Collected sorted, in bulk: cheaper than an insert per member.
        dg.members = members.into_iter().collect();
        if n.owners {
            for e in &g.owners {
                // SPEC 5: an owner without an id is sent as the email.
                let id = people
                    .given
                    .get(e.as_str())
                    .map_or_else(|| Arc::from(e.as_str()), |id| Arc::from(*id));
                dg.owners.insert(id, Arc::from(e.as_str()));
            }
        } else if !g.owners.is_empty() && n.scim {
            out.warnings.push(format!(
                "group \"{}\": owners are only sent to maestroqa-flavored SCIM targets",
                g.name
            ));
        }
        if n.receive_call {
            dg.receive_call = match &g.receive_call {
                None => dg.members.keys().cloned().collect(),
                Some(rc) => dg
                    .members
                    .iter()
                    .filter(|(_, e)| rc.iter().any(|r| r.as_str() == &***e))
                    .map(|(id, _)| id.clone())
                    .collect(),
            };
        }
        out.target.groups.insert(g.key.clone(), dg);
    }
    out
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::model::{Group, Origin, Person};
    use crate::plan::{KnownGroup, KnownMember, PlanOptions, plan_target};

    fn origin() -> Origin {
        Origin {
            file: std::path::Path::new("groups.yaml").into(),
            line: Some(1),
        }
    }

    /// A group: name, member emails, target names (None = every target).
    type G<'a> = (&'a str, &'a [&'a str], Option<&'a [&'a str]>);

    /// groups: (name, members, targets); people: (email, id on "t").
    fn source(groups: &[G<'_>], people: &[(&str, &str)]) -> Desired {
        let mut d = Desired::default();
        for (email, id) in people {
            let p = Person {
                email: email.to_string(),
                name: None,
                ids: [("t", id.to_string())].into_iter().collect(),
                origin: origin(),
            };
            d.people.insert(email.to_string(), p);
        }
        for (name, members, targets) in groups {
            let g = Group {
                key: name.to_string(),
                name: name.to_string(),
                members: members.iter().map(|s| (*s).into()).collect(),
                owners: vec![],
                receive_call: None,
                targets: targets.map(|t| t.iter().map(|s| s.to_string()).collect()),
                origin: origin(),
                member_origins: Vec::new(),
            };
            d.groups.insert(name.to_string(), g);
        }
        d
    }

    fn naming() -> Naming<'static> {
        Naming {
            target: "t",
            email_is_id: false,
            owners: false,
            receive_call: false,
            scim: false,
        }
    }

    fn cache(entries: &[(&str, Option<&str>)]) -> HashMap<String, Option<String>> {
        entries
            .iter()
            .map(|(e, id)| (e.to_string(), id.map(str::to_string)))
            .collect()
    }

    /// The resolved members of each group as `id=email`, and the unresolved as `?email`.
    #[track_caller]
    fn check(
        d: &Desired,
        n: Naming<'_>,
        ids: &HashMap<String, Option<String>>,
        known: &Known,
        expected: &[&str],
    ) {
        let r = desired_target(d, &n, ids, known, &|e| format!("no id for {e}"));
        let mut got: Vec<String> = r
            .target
            .groups
            .values()
            .map(|g| {
                let ms: Vec<String> = g
                    .members
                    .iter()
                    .map(|(id, e)| format!("{id}={e}"))
                    .collect();
                format!("{}: {}", g.key, ms.join(" "))
            })
            .collect();
        got.extend(
            r.unresolved
                .iter()
                .map(|u| format!("?{} in {}", u.email, u.group)),
        );
        assert_eq!(got, expected);
    }

    #[test]
    fn where_ids_come_from() {
        let d = source(
            &[("G", &["a@x", "b@x", "c@x", "d@x"], None)],
            &[("a@x", "A")],
        );
        let mut known = Known::default();
        let mut kg = KnownGroup {
            key: "Other".into(),
            remote_id: "r".into(),
            ..Default::default()
        };
        let km = KnownMember {
            owned: true,
            receive_call: false,
            email: Some("c@x".into()),
        };
        kg.members.insert("C".into(), km);
        known.groups.insert("Other".into(), kg);
        // a: from the source; b: from the cache; c: from a known group; d: nowhere
        check(
            &d,
            naming(),
            &cache(&[("b@x", Some("B")), ("d@x", None)]),
            &known,
            &["G: A=a@x B=b@x C=c@x", "?d@x in G"],
        );
        // the email is the id (MaestroQA): the source id still wins
        let n = Naming {
            email_is_id: true,
            ..naming()
        };
        check(
            &d,
            n,
            &cache(&[]),
            &Known::default(),
            &["G: A=a@x b@x=b@x c@x=c@x d@x=d@x"],
        );
    }

    #[test]
    fn who_is_looked_up() {
        let d = source(
            &[
                ("G", &["a@x", "b@x", "c@x"], None),
                ("H", &["e@x"], Some(&["other"])),
            ],
            &[("a@x", "A")],
        );
        let wanted = to_look_up(&d, &naming(), &cache(&[("b@x", None)]));
        assert_eq!(
            wanted.into_iter().collect::<Vec<_>>(),
            ["c@x"],
            "not a (source id), b (cached as nobody), e (other target)"
        );
        assert!(
            to_look_up(
                &d,
                &Naming {
                    email_is_id: true,
                    ..naming()
                },
                &cache(&[])
            )
            .is_empty()
        );
    }

    #[test]
    fn groups_for_other_targets_are_left_out() {
        let d = source(
            &[
                ("G", &["a@x"], Some(&["t"])),
                ("H", &["a@x"], Some(&["u"])),
                ("I", &[], Some(&[])),
            ],
            &[("a@x", "A")],
        );
        check(&d, naming(), &cache(&[]), &Known::default(), &["G: A=a@x"]);
    }

    #[test]
    fn owners_and_receive_call() {
        let mut d = source(
            &[("G", &["a@x", "b@x"], None)],
            &[("a@x", "A"), ("b@x", "B"), ("o@x", "O")],
        );
        let g = d.groups.get_mut("G").unwrap();
        g.owners = vec!["o@x".into(), "p@x".into()];
        g.receive_call = Some(vec!["b@x".into()]);
        let n = Naming {
            owners: true,
            receive_call: true,
            ..naming()
        };
        let r = desired_target(&d, &n, &cache(&[]), &Known::default(), &|_| String::new());
        let g = &r.target.groups["G"];
        assert_eq!(
            g.owners.keys().map(|k| &**k).collect::<Vec<_>>(),
            ["O", "p@x"],
            "an owner without an id is sent as the email"
        );
        assert_eq!(
            g.receive_call.iter().map(|k| &**k).collect::<Vec<_>>(),
            ["B"]
        );
        d.groups.get_mut("G").unwrap().receive_call = None;
        let r = desired_target(&d, &n, &cache(&[]), &Known::default(), &|_| String::new());
        assert_eq!(
            r.target.groups["G"].receive_call.len(),
            2,
            "receive_call defaults to all members"
        );
        // a SCIM target without owners warns instead
        let n = Naming {
            scim: true,
            ..naming()
        };
        d.groups.get_mut("G").unwrap().owners = vec!["o@x".into()];
        let r = desired_target(&d, &n, &cache(&[]), &Known::default(), &|_| String::new());
        assert!(r.target.groups["G"].owners.is_empty() && r.warnings.len() == 1);
    }

    /// A known group "G" with these (id, email) members, all added by rostersync.
    fn known_g(members: &[(&str, &str)]) -> Known {
        let mut kg = KnownGroup {
            key: "G".into(),
            remote_id: "r".into(),
            name: "G".into(),
            ..Default::default()
        };
        for (id, e) in members {
            let km = KnownMember {
                owned: true,
                receive_call: false,
                email: Some((*e).into()),
            };
            kg.members.insert((*id).into(), km);
        }
        let mut known = Known::default();
        known.groups.insert("G".into(), kg);
        known
    }

    #[test]
    fn a_cached_not_found_never_removes_a_known_member() {
        // b is known in G with id B; the cache says the target has nobody by that email
        // (a lookup answered "none" once): the known id still stands, no removal.
        let d = source(&[("G", &["a@x", "b@x"], None)], &[("a@x", "A")]);
        let known = known_g(&[("A", "a@x"), ("B", "b@x")]);
        check(
            &d,
            naming(),
            &cache(&[("b@x", None)]),
            &known,
            &["G: A=a@x B=b@x"],
        );
    }

    #[test]
    fn an_unresolved_member_never_causes_a_removal() {
        // b was added earlier (known with its id); today its lookup failed and the cache
        // was lost: the known id keeps it. c was never resolved: skipped, nothing removed.
        let d = source(&[("G", &["a@x", "b@x", "c@x"], None)], &[("a@x", "A")]);
        let known = known_g(&[("A", "a@x"), ("B", "b@x")]);
        let r = desired_target(&d, &naming(), &cache(&[]), &known, &|_| {
            "lookup failed".into()
        });
        assert_eq!(r.unresolved.len(), 1);
        let opts = PlanOptions {
            mode: Default::default(),
            safety: crate::config::Safety {
                max_removals: 100,
                max_removal_ratio: 1.0,
                delete_groups: false,
            },
            allow_mass_removal: false,
            keep: Default::default(),
            only: None,
        };
        let p = plan_target(&r.target, &known, &opts);
        assert!(p.ops.is_empty(), "{p:?}");
        assert_eq!(p.unchanged, 1);
    }
}
