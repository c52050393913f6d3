//! The planner: desired + known -> plan. PURE: no IO, no clock, no randomness; the same
//! input always gives the same plan, in the same order (ops sorted by group key).
//!
//! Member ids are already resolved per target by `sync` before the planner runs; the planner
//! only compares sets. Most tests of the project's behaviour live in `tests.rs` beside this.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{Mode, Safety};

mod keep;
pub mod resolve;
#[cfg(test)]
mod tests;

pub use keep::{Keep, PatternError};

/// A member as the plan names it: the target's member id and, for people, the email.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    /// For display; None when the id's owner is unknown (e.g. found by a `--full` read).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email: Option<String>,
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

/// A removal not planned because the member is protected by `keep_members`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email: Option<String>,
    /// The `keep_members` pattern that protects the member.
    pub pattern: String,
    /// An owner (scim), not a member.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub owner: bool,
}

impl Kept {
    /// What an operator reads: the email where known, else the id.
    pub fn label(&self) -> &str {
        self.email.as_deref().unwrap_or(&self.id)
    }
}

/// What a run scoped with `--only` leaves for a whole run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Skipped {
    /// A group not yet on the target.
    Create {
        key: String,
        name: String,
        members: usize,
    },
    /// A managed group that left the source (`delete_groups`).
    Delete {
        key: String,
        name: String,
        members: usize,
    },
    /// A rename of a managed group.
    Rename {
        key: String,
        from: String,
        to: String,
    },
    /// Other people's additions and removals (members and owners) in a managed group.
    Members {
        key: String,
        name: String,
        add: usize,
        remove: usize,
    },
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
    /// Protected members are among them too (see `kept_members`).
    #[serde(default)]
    pub kept: Vec<String>,
    /// Removals not planned because `keep_members` protects the member, with the pattern.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_members: Vec<Kept>,
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
    /// `--only`: what this scoped run does not send (listed as `skipped (outside --only)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
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
        })
        .collect()
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
/// the mode allows; protected members are kept, and out-of-scope people are skipped.
fn changes(
    known: &BTreeMap<String, KnownMember>,
    desired: &BTreeMap<String, String>,
    opts: &PlanOptions,
    owner: bool,
) -> Changes {
    let mut c = Changes::default();
    for (id, email) in desired.iter().filter(|(id, _)| !known.contains_key(*id)) {
        if opts.in_scope(Some(email)) {
            c.add.push(Member {
                id: id.clone(),
                email: Some(email.clone()),
            });
        } else {
            c.skipped_add += 1;
        }
    }
    for (id, k) in known {
        let removable = !desired.contains_key(id)
            && match opts.mode {
                Mode::Authoritative => true,
                Mode::Owned => k.owned,
                Mode::AddOnly => false,
            };
        if !removable {
            continue;
        }
        let email = k.email.as_deref();
        if let Some(pattern) = opts.keep.protects(id, email) {
            if opts.in_scope(email) {
                c.kept.push(Kept {
                    id: id.clone(),
                    email: k.email.clone(),
                    pattern: pattern.to_string(),
                    owner,
                });
            }
        } else if opts.in_scope(email) {
            c.remove.push(Member {
                id: id.clone(),
                email: k.email.clone(),
            });
        } else {
            c.skipped_remove += 1;
        }
    }
    c
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

    let mut after: BTreeSet<String> = known.members.keys().cloned().collect();
    after.extend(members.add.iter().map(|m| m.id.clone()));
    for m in &members.remove {
        after.remove(&m.id);
    }
    // receive_call: desired flags for desired members in scope; members we keep but do not
    // want (owned/add_only, keep_members) and people outside `--only` keep their known flag.
    let rc_after: BTreeSet<String> = after
        .iter()
        .filter(|id| match desired.members.get(*id) {
            Some(email) if opts.in_scope(Some(email)) => desired.receive_call.contains(*id),
            _ => known.members.get(*id).is_some_and(|k| k.receive_call),
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
        .filter(|id| !desired.members.contains_key(*id))
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
            None => ops.push(Op::Create(Create {
                key: key.clone(),
                name: d.name.clone(),
                members: members_of(&d.members),
                owners: members_of(&d.owners),
                receive_call: d.receive_call.iter().cloned().collect(),
                resumed: known.intents.contains(key),
            })),
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
