//! The per-run context through which a target sends calls and records what they
//! confirmed: `Ctx::send`/`read` go out through the target's `Http`, `Ctx::confirm` hands
//! the call's history row and the state change it proves to the recorder.

use std::sync::{Arc, Mutex};

use super::http::Http;
use super::{NotUnderstood, OpError, Reply, Request, Retry, Verdict};
use crate::plan::{Create, Delete, Member, Update};
use crate::store::{CallRecord, Delta, Fact, Facts, StoreError, Writer};

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

/// Where calls are recorded: chosen once at the top of a run. A real run writes every
/// call and the state change it proves to the state database (through its writer thread);
/// a dry-run writes nothing at all, and this is the only place that tells them apart.
pub struct Recorder {
    /// The run's id in the history (0 for dry-runs).
    pub run: i64,
    /// None for a dry-run.
    store: Option<Writer>,
    /// Counts for the run summary.
    tally: Mutex<Tally>,
}

impl Recorder {
    /// A dry-run's recorder: counts, writes nothing.
    pub fn dry() -> Recorder {
        Recorder {
            run: 0,
            store: None,
            tally: Mutex::default(),
        }
    }

    /// A real run's recorder.
    pub fn real(run: i64, store: Writer) -> Recorder {
        Recorder {
            run,
            store: Some(store),
            tally: Mutex::default(),
        }
    }

    /// Whether this recorder writes nothing (a dry-run, `check --online`, `explain`).
    pub fn is_dry(&self) -> bool {
        self.store.is_none()
    }

    /// The counts so far.
    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn count(&self, record: &CallRecord) {
        let mut t = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        if record.ok {
            t.calls_ok += 1;
            t.added += record.added;
            t.removed += record.removed;
        } else {
            t.calls_failed += 1;
        }
    }

    /// Writes a call's history row and the state change it proves, in one transaction.
    pub async fn record(&self, record: CallRecord, delta: Delta) -> Result<(), StoreError> {
        if let Some(s) = &self.store {
            s.record(self.run, record, delta).await?;
        }
        Ok(())
    }

    /// Writes down that a create is about to be sent (SPEC 6.2); awaited before sending.
    pub async fn intent(&self, target: &str, key: &str, name: &str) -> Result<(), StoreError> {
        match &self.store {
            Some(s) => s.write_intent(self.run, target, key, name).await,
            None => Ok(()),
        }
    }

    /// Drops the intent of a group that left the source before its create was confirmed.
    pub async fn drop_intent(&self, target: &str, key: &str) -> Result<(), StoreError> {
        match &self.store {
            Some(s) => s.drop_intent(target, key).await,
            None => Ok(()),
        }
    }

    /// Keeps a fact learned about a target (None forgets it); a dry-run keeps nothing.
    pub async fn set_fact(
        &self,
        target: &str,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), StoreError> {
        match &self.store {
            Some(s) => s.set_fact(target, name, value.map(str::to_string)).await,
            None => Ok(()),
        }
    }

    /// Caches a member-id lookup (None: the target has nobody with that email).
    pub async fn cache_resolution(
        &self,
        target: &str,
        email: &str,
        id: Option<&str>,
    ) -> Result<(), StoreError> {
        match &self.store {
            Some(s) => {
                s.cache_resolution(target, email, id.map(str::to_string))
                    .await
            }
            None => Ok(()),
        }
    }
}

/// Whether a call of this kind changes the target (and so is sent only while the run's
/// lease holds, SPEC 6.7). Anything not known to be a read counts as a write.
fn is_write(op: &str) -> bool {
    !matches!(
        op,
        "read" | "find" | "lookup" | "login" | "presence" | "probe"
    )
}

/// Everything a target needs during one run: its name, HTTP client and recorder.
pub struct Ctx {
    pub target: String,
    pub http: Http,
    pub recorder: Arc<Recorder>,
    /// What the target's answers have shown about it (read from the state at the start
    /// of the run, kept up to date by `learn`).
    facts: Mutex<Facts>,
}

impl Ctx {
    pub fn new(
        target: impl Into<String>,
        http: Http,
        recorder: Arc<Recorder>,
        facts: Facts,
    ) -> Ctx {
        Ctx {
            target: target.into(),
            http,
            recorder,
            facts: Mutex::new(facts),
        }
    }

    /// A fact learned about this target in this run or an earlier one.
    pub fn fact(&self, name: &str) -> Option<Fact> {
        self.facts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Keeps a fact about this target (None forgets it): in this run at once, and in the
    /// state database for later runs (a real run only; committed on return).
    pub async fn learn(&self, name: &str, value: Option<&str>) -> Result<(), OpError> {
        {
            let mut facts = self.facts.lock().unwrap_or_else(|e| e.into_inner());
            match value {
                Some(v) => {
                    facts.insert(
                        name.to_string(),
                        Fact {
                            value: v.to_string(),
                            at: crate::store::now(),
                        },
                    );
                }
                None => {
                    facts.remove(name);
                }
            }
        }
        self.recorder.set_fact(&self.target, name, value).await?;
        Ok(())
    }

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
        let fence = self.recorder.store.as_ref().filter(|_| is_write(info.op));
        match self.http.send(&req, retry, verdict, fence).await {
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
                self.write(record, Delta::None).await?;
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
        self.confirm(p, Delta::None).await?;
        Ok(reply)
    }

    /// Records a confirmed call with the state change it proves, in one transaction.
    pub async fn confirm(&self, p: Pending, delta: Delta) -> Result<(), OpError> {
        self.write(p.record, delta).await
    }

    /// Ends a create call: the id its answer carries (`id_of`), confirmed with the group it
    /// proves (`created_delta(op, id)`). An answer without an id is recorded as a call that
    /// proved nothing and comes back as not understood (the group may exist now).
    pub async fn created(
        &self,
        p: Pending,
        op: &Create,
        id_of: impl FnOnce(&[u8]) -> Result<String, NotUnderstood>,
    ) -> Result<String, OpError> {
        match id_of(&p.reply.body) {
            Ok(id) => {
                self.confirm(p, super::created_delta(op, &id)).await?;
                Ok(id)
            }
            Err(e) => {
                self.confirm(p, Delta::None).await?;
                Err(e.into())
            }
        }
    }

    /// Records a state change that a call already in the history proved (adoption after
    /// a lookup, forgetting a group found gone), as a row of its own.
    pub async fn note(
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
        self.write(record, delta).await
    }

    /// Ends a delete: the call confirmed it, or the group was already gone (404, or
    /// `gone` for kinds that tell "not found" by other means); other errors stand.
    pub async fn deleted(&self, d: &Delete, r: Result<Pending, OpError>) -> Result<(), OpError> {
        let forget = Delta::Forget { key: d.key.clone() };
        match r {
            Ok(p) => self.confirm(p, forget).await,
            Err(e) if e.is_not_found() => self.note("forget", &d.key, &d.name, forget).await,
            Err(e) => Err(e),
        }
    }

    /// Records the rename an update carried, once its call was confirmed.
    pub async fn renamed(&self, u: &Update) -> Result<(), OpError> {
        let delta = Delta::Renamed {
            key: u.key.clone(),
            name: u.name.clone(),
        };
        self.note("rename", &u.key, &u.name, delta).await
    }

    /// Logs and counts a call, then awaits its commit (real runs) with the state change.
    async fn write(&self, record: CallRecord, delta: Delta) -> Result<(), OpError> {
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
            self.recorder.count(&record);
        }
        self.recorder.record(record, delta).await?;
        Ok(())
    }
}
