//! The planner: desired + known -> plan. PURE: no IO, no clock, no randomness; the same
//! input always gives the same plan, in the same order (ops sorted by group key).
//!
//! Member ids are already resolved per target by `sync` before the planner runs; the planner
//! only compares sets. Most tests of the project's behaviour live in `tests.rs` beside this.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{Mode, Safety};

pub mod resolve;
#[cfg(test)]
mod tests;

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

/// One group as one target should have it, ids resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DesiredGroup {
    pub key: String,
    pub name: String,
    /// Member id -> email.
    pub members: BTreeMap<String, String>,
    /// Owner id -> email (scim only; empty elsewhere).
    pub owners: BTreeMap<String, String>,
    /// Member ids allowed to receive calls (assign_group only; empty elsewhere).
    pub receive_call: BTreeSet<String>,
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
    pub email: Option<String>,
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
    /// Keys of groups whose create was started but never confirmed (crash, timeout).
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
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlanOptions {
    pub mode: Mode,
    pub safety: Safety,
    /// `--allow-mass-removal`: the guard reports but does not refuse.
    pub allow_mass_removal: bool,
}

/// Create a group (after looking for one of the same name to adopt).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Create {
    pub key: String,
    pub name: String,
    pub members: Vec<Member>,
    pub owners: Vec<Member>,
    /// assign_group: ids that may receive calls.
    pub receive_call: Vec<String>,
    /// An earlier create of this group was never confirmed.
    pub resumed: bool,
}

/// Change a managed group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub key: String,
    pub remote_id: String,
    /// The desired name (sent when `rename_from` is set).
    pub name: String,
    /// The old name, when the group is renamed.
    pub rename_from: Option<String>,
    pub add: Vec<Member>,
    pub remove: Vec<Member>,
    pub add_owners: Vec<Member>,
    pub remove_owners: Vec<Member>,
    /// assign_group: the whole desired `receive_call` list, set when it changed.
    pub receive_call: Option<Vec<String>>,
    /// Member ids rostersync will know after this op (known + add - remove), for
    /// APIs that replace the whole list.
    pub members_after: Vec<String>,
    /// receive_call ids after this op.
    pub receive_call_after: Vec<String>,
    /// Ids of `members_after` that the source does not want: known members kept only
    /// because the mode never removes them (`owned`: not added by rostersync; `add_only`).
    /// A replace API keeps them only while the group still has them.
    #[serde(default)]
    pub kept: Vec<String>,
    /// Removals of agents online now held back by `[safety] defer_online_removals` (SPEC
    /// 5): not sent in this run (they are not in `remove`); the next run tries again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<Member>,
}

impl Update {
    /// Whether the op changes membership (as opposed to only the name).
    pub fn changes_members(&self) -> bool {
        !(self.add.is_empty()
            && self.remove.is_empty()
            && self.add_owners.is_empty()
            && self.remove_owners.is_empty()
            && self.receive_call.is_none())
    }
}

/// Delete a managed group that left the source (only with `delete_groups`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delete {
    pub key: String,
    pub remote_id: String,
    pub name: String,
    pub members: usize,
}

/// One operation of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Create(Create),
    Update(Update),
    Delete(Delete),
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Create(c) => &c.key,
            Op::Update(u) => &u.key,
            Op::Delete(d) => &d.key,
        }
    }
    /// Members this op adds (members and owners).
    pub fn additions(&self) -> usize {
        match self {
            Op::Create(c) => c.members.len() + c.owners.len(),
            Op::Update(u) => u.add.len() + u.add_owners.len(),
            Op::Delete(_) => 0,
        }
    }
    /// Memberships this op removes (a delete removes all of its group's).
    pub fn removals(&self) -> usize {
        match self {
            Op::Create(_) => 0,
            Op::Update(u) => u.remove.len() + u.remove_owners.len(),
            Op::Delete(d) => d.members,
        }
    }
}

/// Why the safety guard refused a target (SPEC 6.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Guard {
    pub removals: usize,
    pub managed: usize,
    pub deletes: usize,
    pub max_removals: usize,
    pub max_removal_ratio: f64,
    /// True when `--allow-mass-removal` let it through anyway.
    pub overridden: bool,
}

impl std::fmt::Display for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = if self.managed > 0 {
            format!("{:.0}%", 100.0 * self.removals as f64 / self.managed as f64)
        } else {
            "n/a".into()
        };
        write!(
            f,
            "would remove {} of {} managed memberships ({pct}) and delete {} groups; limits are {} \
             removals and {:.0}% (safety.max_removals, safety.max_removal_ratio)",
            self.removals,
            self.managed,
            self.deletes,
            self.max_removals,
            100.0 * self.max_removal_ratio
        )
    }
}

/// The plan for one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetPlan {
    pub ops: Vec<Op>,
    /// Desired groups that need no call.
    pub unchanged: usize,
    /// Managed groups that left the source and stay on the target (no `delete_groups`).
    pub left_alone: Vec<String>,
    /// Set when the guard tripped; the target is refused unless `overridden`.
    pub guard: Option<Guard>,
}

impl TargetPlan {
    /// The guard refuses this target's ops.
    pub fn refused(&self) -> bool {
        self.guard.as_ref().is_some_and(|g| !g.overridden)
    }
    pub fn additions(&self) -> usize {
        self.ops.iter().map(Op::additions).sum()
    }
    pub fn removals(&self) -> usize {
        self.ops.iter().map(Op::removals).sum()
    }
}

fn members_of(m: &BTreeMap<String, String>) -> Vec<Member> {
    m.iter()
        .map(|(id, email)| Member {
            id: id.clone(),
            email: Some(email.clone()),
            online: false,
        })
        .collect()
}

/// Which known members to remove, given the mode.
fn removals(
    known: &BTreeMap<String, KnownMember>,
    desired: &BTreeMap<String, String>,
    mode: Mode,
) -> Vec<Member> {
    known
        .iter()
        .filter(|(id, k)| {
            !desired.contains_key(*id)
                && match mode {
                    Mode::Authoritative => true,
                    Mode::Owned => k.owned,
                    Mode::AddOnly => false,
                }
        })
        .map(|(id, k)| Member {
            id: id.clone(),
            email: k.email.clone(),
            online: false,
        })
        .collect()
}

fn additions(
    known: &BTreeMap<String, KnownMember>,
    desired: &BTreeMap<String, String>,
) -> Vec<Member> {
    desired
        .iter()
        .filter(|(id, _)| !known.contains_key(*id))
        .map(|(id, email)| Member {
            id: id.clone(),
            email: Some(email.clone()),
            online: false,
        })
        .collect()
}

/// The update that brings one known group to its desired state, or None if none is needed.
/// Also used after adopting a group, with what the target reported as `known`.
pub fn plan_group(desired: &DesiredGroup, known: &KnownGroup, mode: Mode) -> Option<Update> {
    let add = additions(&known.members, &desired.members);
    let remove = removals(&known.members, &desired.members, mode);
    let add_owners = additions(&known.owners, &desired.owners);
    let remove_owners = removals(&known.owners, &desired.owners, mode);

    let mut after: BTreeSet<String> = known.members.keys().cloned().collect();
    after.extend(add.iter().map(|m| m.id.clone()));
    for m in &remove {
        after.remove(&m.id);
    }
    // receive_call: desired flags for desired members; members we keep but do not want
    // (owned/add_only) keep their known flag.
    let rc_after: BTreeSet<String> = after
        .iter()
        .filter(|id| {
            if desired.members.contains_key(*id) {
                desired.receive_call.contains(*id)
            } else {
                known.members.get(*id).is_some_and(|k| k.receive_call)
            }
        })
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
    let rename_from = (desired.name != known.name).then(|| known.name.clone());
    let kept = after
        .iter()
        .filter(|id| !desired.members.contains_key(*id))
        .cloned()
        .collect();

    let u = Update {
        key: desired.key.clone(),
        remote_id: known.remote_id.clone(),
        name: desired.name.clone(),
        rename_from,
        add,
        remove,
        add_owners,
        remove_owners,
        receive_call,
        members_after: after.into_iter().collect(),
        receive_call_after: rc_after.into_iter().collect(),
        kept,
        deferred: Vec::new(),
    };
    (u.rename_from.is_some() || u.changes_members()).then_some(u)
}

/// Plans one target: creates for new groups, updates for changed ones, deletes (only with
/// `delete_groups`) for managed groups that left the source, then the safety guard.
pub fn plan_target(desired: &DesiredTarget, known: &Known, opts: &PlanOptions) -> TargetPlan {
    let mut ops = Vec::new();
    let mut unchanged = 0;
    for (key, d) in &desired.groups {
        match known.groups.get(key) {
            None => ops.push(Op::Create(Create {
                key: key.clone(),
                name: d.name.clone(),
                members: members_of(&d.members),
                owners: members_of(&d.owners),
                receive_call: d.receive_call.iter().cloned().collect(),
                resumed: known.intents.contains(key),
            })),
            Some(k) => match plan_group(d, k, opts.mode) {
                Some(u) => ops.push(Op::Update(u)),
                None => unchanged += 1,
            },
        }
    }
    let mut left_alone = Vec::new();
    for (key, k) in &known.groups {
        if desired.groups.contains_key(key) {
            continue;
        }
        if opts.safety.delete_groups {
            ops.push(Op::Delete(Delete {
                key: key.clone(),
                remote_id: k.remote_id.clone(),
                name: k.name.clone(),
                members: k.members.len() + k.owners.len(),
            }));
        } else {
            left_alone.push(key.clone());
        }
    }
    ops.sort_by(|a, b| a.key().cmp(b.key()));

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
    }
}
