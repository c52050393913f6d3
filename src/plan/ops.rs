//! What a plan is made of: the operations for one target (`Op`: create, update, delete),
//! what they leave out (`Kept`, `Skipped`), and the safety guard's verdict (`Guard`).

use serde::{Deserialize, Serialize};

use super::Member;

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
// Plans are small lists of data (one op per changed group), not hot in memory: an
// `Update` carries its member lists inline rather than behind a box.
#[allow(clippy::large_enum_variant)]
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
