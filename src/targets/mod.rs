//! Targets: the `Target` trait every kind implements, the per-run `Ctx` through which a
//! target sends calls and records what they confirmed, and `build` to make one from config.
//!
//! A target turns plan ops into HTTP calls (its `wire.rs` has the serde types and the pure
//! lowering of a change into request bodies). It never touches SQL: it hands each confirmed
//! call to `Ctx::confirm` with the state change it proves, and the store writes both in one
//! transaction.

pub mod assign_group;
pub mod http;
pub mod kazoo;
pub mod scim;
pub mod teams;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::config::{Kind, TargetConfig};
use crate::plan::{Create, Delete, KnownGroup, Member, Update};
use crate::store::{CallRecord, Delta, Store};

pub use http::{FailKind, Failure, Http, Reply, Request, Retry, Verdict};

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

/// Why an operation did not complete.
#[derive(Clone, Debug, thiserror::Error)]
pub enum OpError {
    /// A call failed; it is already in the history.
    #[error("{}", .0.message)]
    Call(Failure),
    /// The state database refused a write: stop this target, nothing may go unrecorded.
    #[error("recording failed: {0}")]
    Record(String),
    /// The target cannot do this at all (e.g. missing credentials).
    #[error("{0}")]
    Unsupported(String),
}

impl OpError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, OpError::Call(f) if f.kind == FailKind::NotFound)
    }
    pub fn is_transient(&self) -> bool {
        matches!(self, OpError::Call(f) if f.kind == FailKind::Transient)
    }
    pub fn maybe_applied(&self) -> bool {
        matches!(self, OpError::Call(f) if f.maybe_applied)
    }
}

/// What a call is, for the history and the log.
#[derive(Clone, Debug, Default)]
pub struct CallInfo {
    /// `create`, `update`, `add`, `remove`, `rename`, `delete`, `read`, `find`, `lookup`, `login`.
    pub op: &'static str,
    pub group_key: Option<String>,
    pub group_name: Option<String>,
    pub added: Vec<Member>,
    pub removed: Vec<Member>,
}

impl CallInfo {
    pub fn new(op: &'static str) -> CallInfo {
        CallInfo {
            op,
            ..Default::default()
        }
    }
    pub fn group(mut self, key: &str, name: &str) -> CallInfo {
        self.group_key = Some(key.to_string());
        self.group_name = Some(name.to_string());
        self
    }
    pub fn adds(mut self, m: &[Member]) -> CallInfo {
        self.added = m.to_vec();
        self
    }
    pub fn removes(mut self, m: &[Member]) -> CallInfo {
        self.removed = m.to_vec();
        self
    }
}

/// A successful call whose history row is still to be written (with its state change).
#[must_use = "confirm the call with the state change it proves"]
pub struct Pending {
    record: CallRecord,
    pub reply: Reply,
}

impl Pending {
    pub fn json(&self) -> serde_json::Value {
        self.reply.json()
    }
}

/// Counts for the run summary.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub calls_ok: usize,
    pub calls_failed: usize,
    pub added: usize,
    pub removed: usize,
}

/// Where calls are recorded: the state database (real runs) or nowhere (dry-runs).
pub struct Recorder {
    pub store: Option<Arc<Mutex<Store>>>,
    pub run: i64,
    pub tally: Arc<Mutex<Tally>>,
}

/// Everything a target needs during one run: its name, HTTP client and recorder.
pub struct Ctx {
    pub target: String,
    pub http: Http,
    pub recorder: Arc<Recorder>,
}

impl Ctx {
    fn record_of(&self, info: &CallInfo, req: &Request) -> CallRecord {
        let mut members = Vec::new();
        members.extend(
            info.added
                .iter()
                .map(|m| ('+', m.id.clone(), m.email.clone())),
        );
        members.extend(
            info.removed
                .iter()
                .map(|m| ('-', m.id.clone(), m.email.clone())),
        );
        CallRecord {
            target: self.target.clone(),
            group_key: info.group_key.clone(),
            group_name: info.group_name.clone(),
            op: info.op.to_string(),
            method: req.method.to_string(),
            path: self.http.scrub(&req.path()),
            added: info.added.len(),
            removed: info.removed.len(),
            members,
            ..Default::default()
        }
    }

    /// Sends a call. A failure is recorded (history only) and returned; a success comes
    /// back as `Pending`, to be confirmed with the state change it proves.
    pub async fn send(
        &self,
        info: CallInfo,
        req: Request,
        retry: Retry,
        verdict: &(dyn Fn(u16, &[u8]) -> Verdict + Sync),
    ) -> Result<Pending, OpError> {
        let mut record = self.record_of(&info, &req);
        match self.http.send(&req, retry, verdict).await {
            Ok(reply) => {
                record.ok = true;
                record.status = Some(reply.status);
                record.latency_ms = reply.latency_ms;
                record.attempts = reply.attempts;
                Ok(Pending { record, reply })
            }
            Err(f) => {
                record.ok = false;
                record.status = f.status;
                record.error = Some(f.message.clone());
                record.latency_ms = f.latency_ms;
                record.attempts = f.attempts;
                self.write(record, &Delta::None)?;
                Err(OpError::Call(f))
            }
        }
    }

    /// Sends a read-only call and records it at once (history only).
    pub async fn read(
        &self,
        info: CallInfo,
        req: Request,
        verdict: &(dyn Fn(u16, &[u8]) -> Verdict + Sync),
    ) -> Result<Reply, OpError> {
        let p = self.send(info, req, Retry::Always, verdict).await?;
        let reply = p.reply.clone();
        self.confirm(p, Delta::None)?;
        Ok(reply)
    }

    /// Records a confirmed call with the state change it proves, in one transaction.
    pub fn confirm(&self, p: Pending, delta: Delta) -> Result<(), OpError> {
        self.write(p.record, &delta)
    }

    /// Records a state change that a call already in the history proved (adoption after
    /// a lookup, forgetting a group found gone), as a row of its own.
    pub fn note(
        &self,
        op: &'static str,
        key: &str,
        name: &str,
        delta: Delta,
    ) -> Result<(), OpError> {
        let record = CallRecord {
            target: self.target.clone(),
            group_key: Some(key.to_string()),
            group_name: Some(name.to_string()),
            op: op.to_string(),
            method: "-".into(),
            path: "-".into(),
            ok: true,
            ..Default::default()
        };
        self.write(record, &delta)
    }

    /// Ends a delete: the call confirmed it, or the group was already gone (404, or
    /// `gone` for kinds that tell "not found" by other means); other errors stand.
    pub fn deleted(&self, d: &Delete, r: Result<Pending, OpError>) -> Result<(), OpError> {
        let forget = Delta::Forget { key: d.key.clone() };
        match r {
            Ok(p) => self.confirm(p, forget),
            Err(e) if e.is_not_found() => self.note("forget", &d.key, &d.name, forget),
            Err(e) => Err(e),
        }
    }

    /// Records the rename an update carried, once its call was confirmed.
    pub fn renamed(&self, u: &Update) -> Result<(), OpError> {
        let delta = Delta::Renamed {
            key: u.key.clone(),
            name: u.name.clone(),
        };
        self.note("rename", &u.key, &u.name, delta)
    }

    fn write(&self, record: CallRecord, delta: &Delta) -> Result<(), OpError> {
        let outcome = if record.ok { "ok" } else { "failed" };
        if record.method != "-" {
            metrics::counter!("rostersync_calls_total", "target" => record.target.clone(),
                "operation" => record.op.clone(), "outcome" => outcome)
            .increment(1);
            if record.ok {
                tracing::info!(target = %record.target, group = record.group_name.as_deref().unwrap_or("-"),
                    op = %record.op, added = record.added, removed = record.removed,
                    status = record.status.unwrap_or(0), latency_ms = record.latency_ms,
                    attempts = record.attempts, "{} {}", record.method, record.path);
            } else {
                tracing::warn!(target = %record.target, group = record.group_name.as_deref().unwrap_or("-"),
                    op = %record.op, added = record.added, removed = record.removed,
                    status = record.status.unwrap_or(0), latency_ms = record.latency_ms,
                    attempts = record.attempts, error = record.error.as_deref().unwrap_or(""),
                    "{} {} failed", record.method, record.path);
            }
            let mut t = self.recorder.tally.lock().expect("tally lock");
            if record.ok {
                t.calls_ok += 1;
                t.added += record.added;
                t.removed += record.removed;
            } else {
                t.calls_failed += 1;
            }
        }
        if let Some(store) = &self.recorder.store {
            let mut s = store.lock().expect("store lock");
            s.record(self.recorder.run, &record, delta)
                .map_err(|e| OpError::Record(e.to_string()))?;
        }
        Ok(())
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

/// Makes the target of a configured kind. Err when the kind is not built yet.
pub fn build(cfg: &TargetConfig) -> Result<(Box<dyn Target>, Http), String> {
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
                    email: m.email.clone(),
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
                    email: m.email.clone(),
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
