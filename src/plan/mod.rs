//! The planner: desired + known -> plan. PURE: no IO, no clock, no randomness; the same
//! input always gives the same plan, in the same order (ops sorted by group key).
//!
//! Member ids are already resolved per target by `sync` before the planner runs; the planner
//! only compares sets. Most tests of the project's behaviour live in `tests.rs` beside this.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{Mode, Safety};

mod keep;
mod ops;
pub mod resolve;
#[cfg(test)]
mod tests;

pub use keep::{Keep, PatternError};
pub use ops::{Create, Delete, Guard, Kept, Op, Skipped, TargetPlan, Update};

/// A member as the plan names it: the target's member id and, for people, the email.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    /// For display; None when the id's owner is unknown (e.g. found by a `--full` read).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email: Option<String>,
    /// A removal of an agent who is online now (teams presence, SPEC 5); never set by the
    /// planner, only by the run after its presence read.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub online: bool,
}

impl Member {
    /// What an operator reads: the email where known, else the id.
    pub fn label(&self) -> &str {
        self.email.as_deref().unwrap_or(&self.id)
    }
}

/// One group as one target should have it, ids resolved. Ids and emails are shared
/// (`Arc<str>`): a person's id is made once per target and every membership clones it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DesiredGroup {
    pub key: String,
    pub name: String,
    /// Member id -> email.
    pub members: BTreeMap<Arc<str>, Arc<str>>,
    /// Owner id -> email (scim only; empty elsewhere).
    pub owners: BTreeMap<Arc<str>, Arc<str>>,
    /// Member ids allowed to receive calls (assign_group only; empty elsewhere).
    pub receive_call: BTreeSet<Arc<str>>,
}

/// All groups one target should have, by key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DesiredTarget {
    pub groups: BTreeMap<String, DesiredGroup>,
}

/// What rostersync knows of one member of a managed group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownMember {
    /// rostersync added this member (as opposed to finding it in an adopted group).
    pub owned: bool,
    /// assign_group: the member may receive calls.
    pub receive_call: bool,
    /// Shared by all of a person's memberships where it was read (the state's reader
    /// interns them).
    pub email: Option<Arc<str>>,
}

/// A managed group as last confirmed by the target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownGroup {
    pub key: String,
    pub remote_id: String,
    /// The name last sent or confirmed.
    pub name: String,
    pub members: BTreeMap<String, KnownMember>,
    pub owners: BTreeMap<String, KnownMember>,
}

/// Everything known of one target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    pub groups: BTreeMap<String, KnownGroup>,
    /// Keys of groups with a write (create, membership change, rename, delete) that was
    /// started but never ended (crash, timeout). For a key not in `groups` it is an
    /// unfinished create (looked up and adopted before anything is sent); for a managed
    /// group, the group is read back before it is planned.
    pub intents: BTreeSet<String>,
}

impl Known {
    /// Memberships under management (members and owners of every known group).
    pub fn managed(&self) -> usize {
        self.groups
            .values()
            .map(|g| g.members.len() + g.owners.len())
            .sum()
    }
}

/// Knobs of one target's plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanOptions {
    pub mode: Mode,
    pub safety: Safety,
    /// `--allow-mass-removal`: the guard reports but does not refuse.
    pub allow_mass_removal: bool,
    /// `keep_members`: members never removed, in any mode (their removals are shown as kept
    /// and do not count towards the guard).
    pub keep: Keep,
    /// `--only`: the lower-cased emails this run is scoped to; None = a whole run. A scoped
    /// run plans only their additions and removals in known groups; the rest is skipped.
    pub only: Option<BTreeSet<String>>,
}

impl PlanOptions {
    /// Whether a member with this email is in the run's scope (always, in a whole run). A
    /// member whose email is unknown is never in the scope of `--only`.
    fn in_scope(&self, email: Option<&str>) -> bool {
        match &self.only {
            None => true,
            Some(only) => email.is_some_and(|e| only.contains(&e.to_lowercase())),
        }
    }
}

fn members_of(m: &BTreeMap<Arc<str>, Arc<str>>) -> Vec<Member> {
    m.iter()
        .map(|(id, email)| Member {
            id: id.to_string(),
            email: Some(email.to_string()),
            online: false,
        })
        .collect()
}

/// The create of a desired group; `resumed` when an earlier run left it unfinished.
pub fn create_of(d: &DesiredGroup, resumed: bool) -> Create {
    Create {
        key: d.key.clone(),
        name: d.name.clone(),
        members: members_of(&d.members),
        owners: members_of(&d.owners),
        receive_call: d.receive_call.iter().map(|id| id.to_string()).collect(),
        resumed,
    }
}

/// One list's (members or owners) planned changes, and what the plan does not send.
#[derive(Default)]
struct Changes {
    add: Vec<Member>,
    remove: Vec<Member>,
    kept: Vec<Kept>,
    /// Out of the `--only` scope: additions and removals left for a whole run.
    skipped_add: usize,
    skipped_remove: usize,
}

/// Additions of desired members not known, and removals of known members not desired that
/// the mode allows; protected members are kept, and out-of-scope people are skipped. Both
/// maps are sorted by id, so one merged walk finds both (no lookup per member).
fn changes(
    known: &BTreeMap<String, KnownMember>,
    desired: &BTreeMap<Arc<str>, Arc<str>>,
    opts: &PlanOptions,
    owner: bool,
) -> Changes {
    use std::cmp::Ordering;
    let mut c = Changes::default();
    let (mut d, mut k) = (desired.iter().peekable(), known.iter().peekable());
    loop {
        let order = match (d.peek(), k.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((di, _)), Some((ki, _))) => (***di).cmp(ki.as_str()),
        };
        match order {
            Ordering::Equal => {
                d.next();
                k.next();
            }
            Ordering::Less => {
                let (id, email) = d.next().expect("peeked");
                if opts.in_scope(Some(email)) {
                    c.add.push(Member {
                        id: id.to_string(),
                        email: Some(email.to_string()),
                        online: false,
                    });
                } else {
                    c.skipped_add += 1;
                }
            }
            Ordering::Greater => {
                let (id, k) = k.next().expect("peeked");
                removal(&mut c, id, k, opts, owner);
            }
        }
    }
    c
}

/// A known member that is not desired: removed if the mode allows, kept if protected,
/// skipped if out of scope.
fn removal(c: &mut Changes, id: &str, k: &KnownMember, opts: &PlanOptions, owner: bool) {
    let removable = match opts.mode {
        Mode::Authoritative => true,
        Mode::Owned => k.owned,
        Mode::AddOnly => false,
    };
    if !removable {
        return;
    }
    let email = k.email.as_deref();
    if let Some(pattern) = opts.keep.protects(id, email) {
        if opts.in_scope(email) {
            c.kept.push(Kept {
                id: id.to_string(),
                email: k.email.as_deref().map(str::to_string),
                pattern: pattern.to_string(),
                owner,
            });
        }
    } else if opts.in_scope(email) {
        c.remove.push(Member {
            id: id.to_string(),
            email: k.email.as_deref().map(str::to_string),
            online: false,
        });
    } else {
        c.skipped_remove += 1;
    }
}

/// The `receive_call` flag a member has after the plan: the desired flag for a desired
/// member in scope; members kept but not wanted (owned/add_only, keep_members) and people
/// outside `--only` keep their known flag.
fn rc_after(desired: &DesiredGroup, known: &KnownGroup, opts: &PlanOptions, id: &str) -> bool {
    match desired.members.get(id) {
        Some(email) if opts.in_scope(Some(email)) => desired.receive_call.contains(id),
        _ => known.members.get(id).is_some_and(|k| k.receive_call),
    }
}

/// The update that brings one known group to its desired state, or None if none is needed.
/// Also used after adopting a group, with what the target reported as `known`.
pub fn plan_group(
    desired: &DesiredGroup,
    known: &KnownGroup,
    opts: &PlanOptions,
) -> Option<Update> {
    plan_group_into(desired, known, opts, &mut Vec::new())
}

/// `plan_group`, noting in `skipped` what a scoped run leaves out.
fn plan_group_into(
    desired: &DesiredGroup,
    known: &KnownGroup,
    opts: &PlanOptions,
    skipped: &mut Vec<Skipped>,
) -> Option<Update> {
    let members = changes(&known.members, &desired.members, opts, false);
    let owners = changes(&known.owners, &desired.owners, opts, true);
    let skipped_count =
        members.skipped_add + owners.skipped_add + members.skipped_remove + owners.skipped_remove;
    // The common case at scale: nothing to change. Decided without building any set.
    if members.add.is_empty()
        && members.remove.is_empty()
        && owners.add.is_empty()
        && owners.remove.is_empty()
        && skipped_count == 0
        && desired.name == known.name
        && ((desired.receive_call.is_empty() && !known.members.values().any(|k| k.receive_call))
            || known
                .members
                .iter()
                .all(|(id, k)| rc_after(desired, known, opts, id) == k.receive_call))
    {
        return None;
    }

    let mut after: BTreeSet<String> = known.members.keys().cloned().collect();
    after.extend(members.add.iter().map(|m| m.id.clone()));
    for m in &members.remove {
        after.remove(&m.id);
    }
    let rc_after: BTreeSet<String> = after
        .iter()
        .filter(|id| rc_after(desired, known, opts, id))
        .cloned()
        .collect();
    // Flags of members that stay; a removed member's flag goes with it.
    let rc_known: BTreeSet<String> = known
        .members
        .iter()
        .filter(|(id, k)| k.receive_call && after.contains(*id))
        .map(|(id, _)| id.clone())
        .collect();
    let receive_call = (rc_after != rc_known).then(|| rc_after.iter().cloned().collect());
    let mut name = desired.name.clone();
    let mut rename_from = (desired.name != known.name).then(|| known.name.clone());
    if opts.only.is_some()
        && let Some(from) = rename_from.take()
    {
        skipped.push(Skipped::Rename {
            key: desired.key.clone(),
            from,
            to: desired.name.clone(),
        });
        name = known.name.clone();
    }
    let (skipped_add, skipped_remove) = (
        members.skipped_add + owners.skipped_add,
        members.skipped_remove + owners.skipped_remove,
    );
    if skipped_add + skipped_remove > 0 {
        skipped.push(Skipped::Members {
            key: desired.key.clone(),
            name: known.name.clone(),
            add: skipped_add,
            remove: skipped_remove,
        });
    }
    let kept = after
        .iter()
        .filter(|id| !desired.members.contains_key(id.as_str()))
        .cloned()
        .collect();
    let mut kept_members = members.kept;
    kept_members.extend(owners.kept);

    let u = Update {
        key: desired.key.clone(),
        remote_id: known.remote_id.clone(),
        name,
        rename_from,
        add: members.add,
        remove: members.remove,
        add_owners: owners.add,
        remove_owners: owners.remove,
        receive_call,
        members_after: after.into_iter().collect(),
        receive_call_after: rc_after.into_iter().collect(),
        kept,
        kept_members,
        deferred: Vec::new(),
    };
    (u.rename_from.is_some() || u.changes_members()).then_some(u)
}

/// Plans one target: creates for new groups, updates for changed ones, deletes (only with
/// `delete_groups`) for managed groups that left the source, then the safety guard.
pub fn plan_target(desired: &DesiredTarget, known: &Known, opts: &PlanOptions) -> TargetPlan {
    let scoped = opts.only.is_some();
    let mut ops = Vec::new();
    let mut skipped = Vec::new();
    let mut unchanged = 0;
    for (key, d) in &desired.groups {
        match known.groups.get(key) {
            None if scoped => skipped.push(Skipped::Create {
                key: key.clone(),
                name: d.name.clone(),
                members: d.members.len(),
            }),
            None => ops.push(Op::Create(create_of(d, known.intents.contains(key)))),
            Some(k) => {
                let before = skipped.len();
                match plan_group_into(d, k, opts, &mut skipped) {
                    Some(u) => ops.push(Op::Update(u)),
                    None if skipped.len() == before => unchanged += 1,
                    None => {}
                }
            }
        }
    }
    let mut left_alone = Vec::new();
    for (key, k) in &known.groups {
        if desired.groups.contains_key(key) {
            continue;
        }
        let members = k.members.len() + k.owners.len();
        if !opts.safety.delete_groups {
            left_alone.push(key.clone());
        } else if scoped {
            skipped.push(Skipped::Delete {
                key: key.clone(),
                name: k.name.clone(),
                members,
            });
        } else {
            ops.push(Op::Delete(Delete {
                key: key.clone(),
                remote_id: k.remote_id.clone(),
                name: k.name.clone(),
                members,
            }));
        }
    }
    ops.sort_by(|a, b| a.key().cmp(b.key()));

    // Kept (protected) removals are not in any op, so the guard never counts them.
    let removals: usize = ops.iter().map(Op::removals).sum();
    let deletes = ops.iter().filter(|o| matches!(o, Op::Delete(_))).count();
    let managed = known.managed();
    let over_count = removals > opts.safety.max_removals;
    let over_ratio =
        managed > 0 && removals as f64 > opts.safety.max_removal_ratio * managed as f64;
    let guard = (over_count || over_ratio).then_some(Guard {
        removals,
        managed,
        deletes,
        max_removals: opts.safety.max_removals,
        max_removal_ratio: opts.safety.max_removal_ratio,
        overridden: opts.allow_mass_removal,
    });
    TargetPlan {
        ops,
        unchanged,
        left_alone,
        guard,
        skipped,
    }
}
