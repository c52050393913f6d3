//! Targets: the `Target` trait every kind implements, the per-run `Ctx` through which a
//! target sends calls and records what they confirmed, and `build` to make one from config.
//!
//! A target turns plan ops into HTTP calls (its `wire.rs` has the serde types and the pure
//! lowering of a change into request bodies). It never touches SQL: it hands each confirmed
//! call to `Ctx::confirm` with the state change it proves, and the store writes both in one
//! transaction.

pub mod assign_group;
mod ctx;
pub mod decode;
pub mod http;
pub mod kazoo;
pub mod scim;
pub mod teams;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{Kind, TargetConfig};
use crate::plan::{Create, Delete, KnownGroup, Member, Update};
use crate::store::{Delta, StoreError};

pub use ctx::{CallInfo, Ctx, Pending, Recorder, Tally};
pub use decode::NotUnderstood;
pub use http::{FailKind, Failure, Http, Outcome, Reply, Request, Retry, Verdict};

/// A group as the target reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteGroup {
    pub id: String,
    pub name: String,
    pub members: Vec<String>,
    pub owners: Vec<String>,
    /// assign_group: members that may receive calls.
    pub receive_call: Vec<String>,
}

/// What `check --online` learned from one read-only probe of a target: its credentials
/// were taken and the first page of its group listing was understood.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Probe {
    /// How the kind calls its groups ("groups", "teams").
    pub noun: &'static str,
    /// Records on the first page.
    pub listed: usize,
    /// The listing says more pages follow (or more records than the page holds).
    pub more: bool,
    /// How it authenticated: "logged in" (Kazoo's `api_auth`), "token taken" (a configured
    /// token or key that the listing accepted).
    pub auth: &'static str,
    /// Rate-limit headers of the listing's answer.
    pub rate_limit: Vec<(String, String)>,
    /// What else the probe learned, one line each (where a listing's records were found,
    /// what the server says it supports).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Probe {
    /// A probe of the listing answer in `reply`.
    pub fn of(noun: &'static str, listed: usize, more: bool, reply: &Reply) -> Probe {
        Probe {
            noun,
            listed,
            more,
            auth: "authenticated",
            rate_limit: reply.rate_limit.clone(),
            notes: Vec::new(),
        }
    }
}

/// Why an operation did not complete. Each variant is a decision the engine makes
/// differently: a failed call is in the history already; a store failure stops the target
/// (nothing may go unrecorded); an answer not understood is never read as "nothing there".
#[derive(Clone, Debug, thiserror::Error)]
pub enum OpError {
    /// A call failed; it is already in the history.
    #[error("{}", .0.message)]
    Call(Failure),
    /// The state database refused a write: stop this target, nothing may go unrecorded.
    #[error("recording failed: {0}")]
    Record(#[source] Arc<StoreError>),
    /// A vendor answer without the records the operation needs (SPEC 6.3): the operation
    /// fails, and nothing that depends on it is sent.
    #[error(transparent)]
    NotUnderstood(#[from] NotUnderstood),
    /// Refused on our side before sending, because the vendor would do it wrong (e.g. a
    /// rename onto a name another group has, which DeepCall would number).
    #[error("{0}")]
    Conflict(String),
    /// The target refused our credentials, or there are none it can use.
    #[error("{0}")]
    Credentials(String),
    /// A create that may have been applied although no call failed (its answer carried no
    /// id, or the vendor gave the group a numbered name and the duplicate was removed):
    /// transient, so the engine looks the group up again before any new attempt.
    #[error("{0}")]
    LookAgain(String),
    /// A create whose every attempt failed transiently (each was looked up again first).
    #[error("the create did not complete after {attempts} attempts: {last}")]
    CreateGaveUp { attempts: u32, last: Box<OpError> },
    /// The target's answer shows another result than the call asked for (a write answer
    /// showing fewer members than sent, a removal that took more members than named).
    /// What the answer showed is recorded; the group fails for this run and the next run
    /// plans from what was recorded.
    #[error("the target's answer disagrees with the call: {0}")]
    Disagreed(String),
    /// A create that was confirmed (and recorded with what its answer showed), whose
    /// follow-up call for what the answer did not show failed. Not a create to retry: the
    /// group exists and is known.
    #[error("the group was created, but {what}: {cause}")]
    AfterCreate { what: String, cause: Box<OpError> },
}

impl OpError {
    /// Whether the target may hold a change that was not recorded: the call may have
    /// reached it (timeout, dropped connection, 5xx, an answer too large to read), its
    /// answer was not understood, or its confirmation could not be written. An operation
    /// that ends like this keeps its intent, so the next run reads the group back first.
    /// Reads only the call's `Outcome`, never its `FailKind`: how a failure is retried
    /// says nothing about what it did.
    pub fn may_have_changed_the_target(&self) -> bool {
        match self {
            OpError::Call(f) => f.outcome.may_have_changed(),
            OpError::Record(_)
            | OpError::NotUnderstood(_)
            | OpError::LookAgain(_)
            | OpError::CreateGaveUp { .. } => true,
            OpError::AfterCreate { cause, .. } => cause.may_have_changed_the_target(),
            OpError::Conflict(_) | OpError::Credentials(_) | OpError::Disagreed(_) => false,
        }
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> OpError {
        OpError::Record(Arc::new(e))
    }
}

/// Why a target's client could not be made (a run fails that target: exit 1).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The `ca_file` could not be read or parsed (also checked when the config loads).
    #[error("ca_file {path}: {message}")]
    CaFile {
        path: std::path::PathBuf,
        message: String,
    },
    /// A secret that cannot travel in an HTTP header (e.g. a newline inside it).
    #[error("{what} is not a valid HTTP header value")]
    Header { what: &'static str },
    /// A setting the kind needs (also checked when the config loads).
    #[error("{0} is missing")]
    Missing(&'static str),
    /// The HTTP client refused its settings.
    #[error("HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl OpError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, OpError::Call(f) if f.kind == FailKind::NotFound)
    }
    pub fn is_transient(&self) -> bool {
        matches!(self, OpError::Call(f) if f.kind == FailKind::Transient)
            || matches!(self, OpError::LookAgain(_))
    }
    pub fn maybe_applied(&self) -> bool {
        matches!(self, OpError::Call(f) if f.outcome.may_have_changed())
            || matches!(self, OpError::LookAgain(_))
    }
}

/// One kind of remote system. Implementations send calls through `ctx` and confirm each
/// one with the state change it proves.
#[async_trait]
pub trait Target: Send + Sync {
    /// Whether member ids can be looked up by email through the target's API.
    fn can_lookup(&self) -> bool {
        false
    }
    /// The member id of the person with this email; None if the target has nobody by it.
    async fn lookup(&self, _ctx: &Ctx, _email: &str) -> Result<Option<String>, OpError> {
        Ok(None)
    }
    /// `check --online`: authenticates and reads one page of the group listing, read-only
    /// (nothing is written anywhere; the `Ctx` of a probe has a dry recorder).
    async fn probe(&self, ctx: &Ctx) -> Result<Probe, OpError>;
    /// Member ids of the agents online now in a team (`teams` presence, SPEC 5). None:
    /// the kind has no presence.
    async fn online(
        &self,
        _ctx: &Ctx,
        _key: &str,
        _name: &str,
        _remote_id: &str,
    ) -> Result<Option<std::collections::BTreeSet<String>>, OpError> {
        Ok(None)
    }
    /// Every group that holds this member now, as (remote id, name), asked of the target in
    /// one listing (Kazoo's "groups containing a user"). None: the kind cannot list them,
    /// so `explain --online` reads each relevant group instead.
    async fn groups_of(
        &self,
        _ctx: &Ctx,
        _member_id: &str,
    ) -> Result<Option<Vec<(String, String)>>, OpError> {
        Ok(None)
    }
    /// The email of the person the target names by this member id, for `keep_members`
    /// email patterns on members a read found that nobody told rostersync about (a
    /// hand-added member). None: the target has no such person, or the kind cannot tell
    /// (DeepCall: only `id:` patterns protect such a member there).
    async fn email_of(&self, _ctx: &Ctx, _member_id: &str) -> Result<Option<String>, OpError> {
        Ok(None)
    }
    /// A group of exactly this name (the kind's own matching rules), to adopt; with its
    /// current members.
    async fn find(&self, ctx: &Ctx, key: &str, name: &str) -> Result<Option<RemoteGroup>, OpError>;
    /// A managed group's current state (`--full`); None if it is gone.
    async fn read(&self, ctx: &Ctx, group: &KnownGroup) -> Result<Option<RemoteGroup>, OpError>;
    /// Creates the group with its initial members; confirms `Delta::Group` (and any
    /// follow-up membership call) itself. Returns the remote id.
    async fn create(&self, ctx: &Ctx, op: &Create) -> Result<String, OpError>;
    /// Applies an update; confirms each call's `Delta` as it succeeds. A 404 comes back
    /// as a NotFound failure (the engine forgets the group and creates it again).
    async fn update(&self, ctx: &Ctx, op: &Update) -> Result<(), OpError>;
    /// Deletes a group (404 counts as done); confirms `Delta::Forget`.
    async fn delete(&self, ctx: &Ctx, op: &Delete) -> Result<(), OpError>;
}

/// Makes the target of a configured kind with its HTTP client.
pub fn build(cfg: &TargetConfig) -> Result<(Box<dyn Target>, Http), BuildError> {
    match cfg.kind {
        Kind::Scim => scim::build(cfg),
        Kind::Teams => teams::build(cfg),
        Kind::AssignGroup => assign_group::build(cfg),
        Kind::Kazoo => kazoo::build(cfg),
    }
}

/// Splits a list into batches of at most `size` (at least one batch, possibly empty).
pub fn batches<T>(items: &[T], size: usize) -> Vec<&[T]> {
    if items.is_empty() {
        return vec![items];
    }
    items.chunks(size.max(1)).collect()
}

/// Confirms the `Members` delta for a batch of additions and removals.
pub fn members_delta(key: &str, added: &[Member], removed: &[Member], owners: bool) -> Delta {
    let add: Vec<_> = added
        .iter()
        .map(|m| {
            (
                m.id.clone(),
                crate::plan::KnownMember {
                    owned: true,
                    receive_call: false,
                    email: m.email.as_deref().map(std::sync::Arc::from),
                },
            )
        })
        .collect();
    let rem: Vec<_> = removed.iter().map(|m| m.id.clone()).collect();
    if owners {
        Delta::Members {
            key: key.into(),
            added: vec![],
            removed: vec![],
            owners_added: add,
            owners_removed: rem,
            receive_call: None,
        }
    } else {
        Delta::Members {
            key: key.into(),
            added: add,
            removed: rem,
            owners_added: vec![],
            owners_removed: vec![],
            receive_call: None,
        }
    }
}

/// The known state a confirmed create proves: the group with all its initial members,
/// every one added by rostersync.
pub fn created_delta(op: &Create, remote_id: &str) -> Delta {
    let rc: std::collections::BTreeSet<&String> = op.receive_call.iter().collect();
    let known = |ms: &[Member], calls: bool| {
        ms.iter()
            .map(|m| {
                let k = crate::plan::KnownMember {
                    owned: true,
                    receive_call: calls && rc.contains(&m.id),
                    email: m.email.as_deref().map(std::sync::Arc::from),
                };
                (m.id.clone(), k)
            })
            .collect()
    };
    Delta::Group {
        key: op.key.clone(),
        remote_id: remote_id.to_string(),
        name: op.name.clone(),
        members: known(&op.members, true),
        owners: known(&op.owners, false),
    }
}

/// A member with an id and no email, for the kinds' tests.
#[cfg(test)]
pub fn test_member(id: &str) -> Member {
    Member {
        id: id.into(),
        email: None,
        online: false,
    }
}
