//! The `assign_group` kind: DeepCall Group API v2 (seeds 002 and 004).
//!
//! - Every call is `POST {base_url}/Group/<endpoint>` with the credentials (`userId` +
//!   `token`, or `ssid`) inside the JSON body. The history keeps method + path only; `Http`
//!   scrubs the secret values from every error text.
//! - The body decides success, not the HTTP status (`wire::classify`).
//! - Create = `Group/add {name}` then one `Group/submitAssignGroupToAgent` (when the group
//!   has members). The vendor appends a number to a duplicate name, so the engine looks the
//!   name up (`find`: `Group/list {name}`, exact case-insensitive match on our side) before
//!   every create, and after every create that may have been applied.
//! - The assign call replaces both lists, so a changed group gets exactly one, with the
//!   whole desired lists; the group's current lists are read first
//!   (`Group/getGroupAgentRelation`, unless this run just read them) so that the assign
//!   drops no agent the plan does not remove: agents rostersync did not know of stay and
//!   are recorded as found (an authoritative run removes them in its next plan, shown and
//!   counted by the guard like any removal; `--only` and `keep_members` are honored).
//! - `Group/list` and `getGroupAgentRelation` answers are read by evidence
//!   (`decode::evidence`): the path where a target's answers put their records is learned
//!   from the first answer that shows it (facts `deepcall.groups_at`,
//!   `deepcall.agents_at`) or pinned by the operator (`groups_at`, `agents_at`); a listing
//!   that shows more pages is read whole or not understood.
//! - Every create proves the listing: the new group is looked up by name at once and must
//!   be listed under its id. If it is not, creates stop on this target (fact
//!   `deepcall.creates_stopped`) until a listing shows records or the operator pins
//!   `groups_at`: a misread listing costs at most one group. Creates are sent one at a
//!   time until a listing has been proved in this run.
//! - 1503 "Group not found or not authorized" is ambiguous: before a group is forgotten
//!   (and created again), the listing must show it gone (`disambiguate`). A group that is
//!   still listed fails its op instead: rostersync never re-creates a group the operator
//!   lost the rights to.

pub mod wire;

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use tracing::{info, warn};

use super::decode::evidence::{self, At, Found, More};
use super::decode::{self, NotUnderstood};
use super::{CallInfo, Ctx, FailKind, Http, OpError, RemoteGroup, Request, Retry, Target, Verdict};
use crate::config::{Secret, TargetConfig};
use crate::plan::{Create, Delete, KnownGroup, KnownMember, Update};
use crate::store::Delta;
use wire::{Assignment, Endpoint};

use wire::Lists;

pub struct AssignGroup {
    /// `.../api/v2`, without a trailing slash.
    base: String,
    /// The credential fields merged into every body: `ssid`, or `userId` + `token`.
    auth: Vec<(&'static str, SecretString)>,
    /// Relation reads of this run (adoption, `--full`) by group id, taken by the update
    /// that follows so that it need not read the same group again. The target lives for
    /// one run, and each entry is taken at most once.
    fresh: Mutex<HashMap<String, Lists>>,
    /// `groups_at`: where the operator says `Group/list` puts its records.
    groups_at: Option<String>,
    /// `agents_at`: where the operator says `getGroupAgentRelation` puts its records.
    agents_at: Option<String>,
    /// Held by a create from its send to its proof while no create has proved the listing
    /// in this run, so that a listing that cannot see new groups costs one group, not
    /// `concurrency` of them.
    create_lock: tokio::sync::Mutex<()>,
    /// A create of this run found its group in the listing: later creates need no lock.
    proved: std::sync::atomic::AtomicBool,
    /// Creates are stopped and this run has already looked at the whole listing once to
    /// see whether it shows records now: the other creates of the run do not look again.
    stop_checked: std::sync::atomic::AtomicBool,
}

/// Fact: the path where this target's `Group/list` answers put their records.
pub const FACT_GROUPS_AT: &str = "deepcall.groups_at";
/// Fact: the path where this target's `getGroupAgentRelation` answers put their records.
pub const FACT_AGENTS_AT: &str = "deepcall.agents_at";
/// Fact: creates are stopped because the listing could not see a group just created. The
/// value is `<groups_at pinned then, or empty>|<what happened>`.
pub const FACT_CREATES_STOPPED: &str = "deepcall.creates_stopped";

/// The most pages a listing is read in (a listing is whole or not understood).
const MAX_PAGES: usize = 100;

pub fn build(cfg: &TargetConfig) -> Result<(Box<dyn Target>, Http), super::BuildError> {
    let value = |s| Secret::value_of(s).cloned();
    // Missing values are allowed here (dry-runs); `sync` refuses real runs without them.
    let mut auth = Vec::new();
    if cfg.ssid.is_some() {
        auth.extend(value(&cfg.ssid).map(|v| ("ssid", v)));
    } else {
        auth.extend(value(&cfg.user_id).map(|v| ("userId", v)));
        auth.extend(value(&cfg.token).map(|v| ("token", v)));
    }
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    let http = Http::new(cfg, headers)?;
    let t = AssignGroup {
        base: cfg.base_url.clone(),
        auth,
        fresh: Mutex::new(HashMap::new()),
        groups_at: cfg.groups_at.clone(),
        agents_at: cfg.agents_at.clone(),
        create_lock: tokio::sync::Mutex::new(()),
        proved: std::sync::atomic::AtomicBool::new(false),
        stop_checked: std::sync::atomic::AtomicBool::new(false),
    };
    Ok((Box::new(t), http))
}

/// The verdict function of one endpoint.
fn verdict(ep: Endpoint) -> impl Fn(u16, &[u8]) -> Verdict + Sync {
    move |status, body| wire::classify(ep, status, body)
}

/// Makes a failure final, with context; other errors pass through.
fn permanent(e: OpError, context: &str) -> OpError {
    match e {
        OpError::Call(mut f) => {
            f.kind = FailKind::Permanent;
            f.message = format!("{context}: {}", f.message);
            OpError::Call(f)
        }
        e => e,
    }
}

impl AssignGroup {
    /// A `POST` to `ep` with the credentials merged into `body`.
    fn request(&self, ep: Endpoint, body: Value) -> Request {
        let auth: Map<String, Value> = self
            .auth
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.expose_secret().to_string())))
            .collect();
        Request::new(Method::POST, format!("{}{}", self.base, ep.path()))
            .json(wire::with_auth(body, &auth))
    }

    /// Where `what` (a pin and a fact name) is known to be: pinned, learned, or not yet.
    fn at<'a>(
        &self,
        ctx: &Ctx,
        pin: &'a Option<String>,
        fact: &str,
        learned: &'a mut Option<String>,
    ) -> At<'a> {
        if let Some(p) = pin {
            return At::Pinned(p);
        }
        *learned = ctx.fact(fact).map(|f| f.value);
        match learned {
            Some(p) => At::Learned(p),
            None => At::Unknown,
        }
    }

    /// Keeps the path an answer just showed its records at (when none was known).
    async fn learn_path(
        &self,
        ctx: &Ctx,
        fact: &str,
        path: &Option<String>,
        found: Found,
    ) -> Result<(), OpError> {
        if found != Found::Seen {
            return Ok(());
        }
        let Some(path) = path else { return Ok(()) };
        if ctx.fact(fact).is_none_or(|f| &f.value != path) {
            info!(fact, path = %path, "learned where the answers put their records");
            ctx.learn(fact, Some(path)).await?;
        }
        Ok(())
    }

    /// `Group/list`, filtered by `filter` (a substring match on the vendor's side) or whole,
    /// read page after page while the answer shows more (`decode::evidence::more_pages`).
    async fn list(
        &self,
        ctx: &Ctx,
        key: &str,
        name: &str,
        filter: Option<&str>,
    ) -> Result<wire::Read<Vec<wire::Listed>>, OpError> {
        const WHAT: &str = "the group listing";
        let mut learned = None;
        let at = self.at(ctx, &self.groups_at, FACT_GROUPS_AT, &mut learned);
        let mut all: Vec<wire::Listed> = Vec::new();
        let mut first: Option<wire::Read<()>> = None;
        let mut page: Option<(String, u64)> = None;
        let mut whole = false;
        for _ in 0..MAX_PAGES {
            let info = CallInfo::new("find").group(key, name);
            let body = wire::list_body(filter, page.as_ref().map(|(k, n)| (k.as_str(), *n)));
            let req = self.request(Endpoint::List, body);
            let reply = ctx.read(info, req, &verdict(Endpoint::List)).await?;
            let v = decode::value(WHAT, &reply.body)?;
            // Later pages are read where the first one had its records.
            let here = match (&first, at) {
                (Some(f), At::Unknown) => f.path.as_deref().map_or(At::Unknown, At::Learned),
                _ => at,
            };
            let read = wire::listed(&v, here)?;
            let got = read.records.len();
            all.extend(read.records);
            if first.is_none() {
                first = Some(wire::Read {
                    records: (),
                    path: read.path.clone(),
                    found: read.found,
                });
            }
            match evidence::more_pages(&v, read.path.as_deref(), all.len()) {
                More::No => {}
                // A page without records ends the listing.
                More::Page { .. } if got == 0 => {}
                More::Page { key: k, page: n } => {
                    if page.as_ref().is_some_and(|(_, p)| *p >= n) {
                        return Err(NotUnderstood {
                            what: WHAT.into(),
                            seen: format!(
                                "asked for page {}, the answer names page {} as its own; rostersync reads \
                                 a listing whole or not at all",
                                page.as_ref().map_or(0, |(_, p)| *p),
                                n - 1
                            ),
                        }
                        .into());
                    }
                    page = Some((k, n));
                    continue;
                }
                More::Unreadable(signs) => {
                    return Err(NotUnderstood {
                        what: WHAT.into(),
                        seen: format!(
                            "the answer shows more pages ({signs}) but no page number to ask for the next \
                             one; rostersync reads a listing whole or not at all (a group on a later page \
                             must not look gone)"
                        ),
                    }
                    .into());
                }
            }
            whole = true;
            break;
        }
        if !whole {
            return Err(NotUnderstood {
                what: WHAT.into(),
                seen: format!("stopped at {MAX_PAGES} pages, the cap, with more to come"),
            }
            .into());
        }
        let first = first.expect("at least one page is read");
        self.learn_path(ctx, FACT_GROUPS_AT, &first.path, first.found)
            .await?;
        if !all.is_empty() && ctx.fact(FACT_CREATES_STOPPED).is_some() {
            info!("a listing shows records again: creates are allowed on this target");
            ctx.learn(FACT_CREATES_STOPPED, None).await?;
        }
        Ok(wire::Read {
            records: all,
            path: first.path,
            found: first.found,
        })
    }

    /// `Group/getGroupAgentRelation`: the group's agents and receive_call flags. A 1503 comes
    /// back as NotFound only when the listing shows the group gone.
    async fn relation(&self, ctx: &Ctx, key: &str, name: &str, id: &str) -> Result<Lists, OpError> {
        let info = CallInfo::new("read").group(key, name);
        let req = self.request(Endpoint::Relation, wire::group_body(id));
        let reply = match ctx.read(info, req, &verdict(Endpoint::Relation)).await {
            Ok(reply) => reply,
            Err(e) => return Err(self.disambiguate(ctx, key, name, id, e).await),
        };
        let mut learned = None;
        let at = self.at(ctx, &self.agents_at, FACT_AGENTS_AT, &mut learned);
        let read = wire::relation(&decode::value("the group's agents", &reply.body)?, at)?;
        self.learn_path(ctx, FACT_AGENTS_AT, &read.path, read.found)
            .await?;
        Ok(read.records)
    }

    /// A group read through its relation, kept for the update that may follow in this run.
    fn remote(&self, id: &str, name: &str, (members, receive_call): Lists) -> RemoteGroup {
        self.fresh
            .lock()
            .expect("fresh lock")
            .insert(id.to_string(), (members.clone(), receive_call.clone()));
        RemoteGroup {
            id: id.to_string(),
            name: name.to_string(),
            members,
            owners: vec![],
            receive_call,
        }
    }

    /// 1503 means "not found or not authorized". Only a listing without the group proves it
    /// gone (NotFound: the engine forgets it and creates it again); a group still listed,
    /// or a listing that fails, makes the failure final: rostersync must not create a
    /// second group beside one the operator lost the rights to.
    async fn disambiguate(
        &self,
        ctx: &Ctx,
        key: &str,
        name: &str,
        id: &str,
        e: OpError,
    ) -> OpError {
        if !e.is_not_found() {
            return e;
        }
        match self.list(ctx, key, name, None).await {
            Ok(groups) if !groups.records.iter().any(|g| g.id == id) => e,
            Ok(_) => permanent(
                e,
                &format!(
                    "group {id} is still listed, so rostersync lacks the rights to it (not re-created)"
                ),
            ),
            Err(le) => permanent(
                e,
                &format!("could not check whether group {id} still exists ({le})"),
            ),
        }
    }

    /// The one assign call of an update (none when the group already has both lists).
    async fn assign(&self, ctx: &Ctx, u: &Update) -> Result<(), OpError> {
        // The assign replaces the whole list: read it first (unless this run just did), so
        // that no agent the plan does not remove is dropped (SPEC 5: hand-added agents,
        // protected ones, agents outside `--only`).
        let cached = self.fresh.lock().expect("fresh lock").remove(&u.remote_id);
        let current = match cached {
            Some(c) => c,
            None => self.relation(ctx, &u.key, &u.name, &u.remote_id).await?,
        };
        let current = Some(current);
        let a = wire::assignment(u, current.as_ref());
        let delta = members_delta(u, &a);
        if current.as_ref().is_some_and(|c| wire::already(&a, c)) {
            // The read just proved the group has both lists already.
            return ctx.note("update", &u.key, &u.name, delta).await;
        }
        let info = CallInfo::new("update")
            .group(&u.key, &u.name)
            .adds(&u.add)
            .removes(&u.remove);
        let req = self.request(Endpoint::Assign, wire::assign_body(&u.remote_id, &a));
        match ctx
            .send(info, req, Retry::Always, &verdict(Endpoint::Assign))
            .await
        {
            Ok(p) => ctx.confirm(p, delta).await,
            Err(e) => Err(self
                .disambiguate(ctx, &u.key, &u.name, &u.remote_id, e)
                .await),
        }
    }

    /// `Group/update {groupId, name}`, after checking that no other group has the name
    /// (the vendor would append a number to ours).
    async fn rename(&self, ctx: &Ctx, u: &Update) -> Result<(), OpError> {
        let same = |n: &str| n.to_lowercase() == u.name.to_lowercase();
        let groups = self
            .list(ctx, &u.key, &u.name, Some(&u.name))
            .await?
            .records;
        if let Some(other) = groups.iter().find(|g| g.id != u.remote_id && same(&g.name)) {
            return Err(OpError::Conflict(format!(
                "cannot rename {:?} to {:?}: DeepCall already has a group {:?} (id {}) and would give ours a \
                 numbered name; rename or delete that group first",
                u.rename_from.as_deref().unwrap_or_default(),
                u.name,
                other.name,
                other.id
            )));
        }
        let info = CallInfo::new("rename").group(&u.key, &u.name);
        let req = self.request(Endpoint::Update, wire::rename_body(&u.remote_id, &u.name));
        match ctx
            .send(info, req, Retry::Always, &verdict(Endpoint::Update))
            .await
        {
            Ok(p) => {
                ctx.confirm(
                    p,
                    Delta::Renamed {
                        key: u.key.clone(),
                        name: u.name.clone(),
                    },
                )
                .await
            }
            Err(e) => Err(self
                .disambiguate(ctx, &u.key, &u.name, &u.remote_id, e)
                .await),
        }
    }
}

impl AssignGroup {
    /// Why creates are stopped on this target, if they are: a create's listing could not
    /// see its group, and the operator has not pinned `groups_at` since.
    fn creates_stopped(&self, ctx: &Ctx) -> Option<String> {
        let f = ctx.fact(FACT_CREATES_STOPPED)?;
        let (pin, what) = f.value.split_once('|').unwrap_or(("", &f.value));
        match &self.groups_at {
            Some(now) if now != pin => None,
            _ => Some(format!("{what} (at {})", f.at)),
        }
    }
}

/// The `check --online` line about the listing's shape.
fn shape_note(read: &wire::Read<Vec<wire::Listed>>, at: At<'_>) -> String {
    let n = read.records.len();
    match (at, read.found) {
        (At::Pinned(p), _) if n == 0 => {
            format!("group listing: pinned at `{p}` ({}) and matched: an empty array, no groups yet", wire::GROUPS_AT)
        }
        (At::Pinned(p), _) => format!("group listing: pinned at `{p}` ({}) and matched: {n} groups", wire::GROUPS_AT),
        (At::Learned(p), _) => format!("group listing: records at `{p}`, as learned from earlier answers ({n} groups)"),
        (_, Found::EmptyArrays) => "group listing: the account has no groups yet (an empty array in a success \
                                    answer); where the records are is learned from the first answer that holds one"
            .to_string(),
        (_, _) => format!(
            "group listing: records found at `{}` ({n} groups); kept for later runs",
            read.path.as_deref().unwrap_or(evidence::WHOLE)
        ),
    }
}

/// The known-state change one assign call proves: the planned additions (added by
/// rostersync) and removals, the agents found on the group that rostersync did not know
/// (not added by it), the kept members found gone, and exactly the flags sent.
fn members_delta(u: &Update, a: &Assignment) -> Delta {
    let mut added: Vec<(String, KnownMember)> = u
        .add
        .iter()
        .map(|m| {
            (
                m.id.clone(),
                KnownMember {
                    owned: true,
                    receive_call: false,
                    email: m.email.as_deref().map(std::sync::Arc::from),
                },
            )
        })
        .collect();
    added.extend(
        a.foreign
            .iter()
            .map(|id| (id.clone(), KnownMember::default())),
    );
    let mut removed: Vec<String> = u.remove.iter().map(|m| m.id.clone()).collect();
    removed.extend(a.dropped.iter().cloned());
    Delta::Members {
        key: u.key.clone(),
        added,
        removed,
        owners_added: vec![],
        owners_removed: vec![],
        receive_call: Some(a.receive_call.clone()),
    }
}

#[async_trait]
impl Target for AssignGroup {
    async fn probe(&self, ctx: &Ctx) -> Result<super::Probe, OpError> {
        let req = self.request(Endpoint::List, wire::list_body(None, None));
        let reply = ctx
            .read(CallInfo::new("probe"), req, &verdict(Endpoint::List))
            .await?;
        let mut learned = None;
        let at = self.at(ctx, &self.groups_at, FACT_GROUPS_AT, &mut learned);
        let v = decode::value("the group listing", &reply.body)?;
        let read = wire::listed(&v, at)?;
        let more = !matches!(
            evidence::more_pages(&v, read.path.as_deref(), read.records.len()),
            More::No
        );
        let mut notes = vec![shape_note(&read, at)];
        if let Some(p) = ctx.fact(FACT_AGENTS_AT) {
            notes.push(format!(
                "group agents: records at `{}` (learned {})",
                p.value, p.at
            ));
        }
        if let Some(p) = &self.agents_at {
            notes.push(format!("group agents: pinned at `{p}` (agents_at)"));
        }
        if let Some(why) = self.creates_stopped(ctx) {
            notes.push(format!("creates are stopped: {why}"));
        }
        let mut probe = super::Probe::of("groups", read.records.len(), more, &reply);
        probe.notes = notes;
        Ok(probe)
    }

    async fn find(&self, ctx: &Ctx, key: &str, name: &str) -> Result<Option<RemoteGroup>, OpError> {
        let groups = self.list(ctx, key, name, Some(name)).await?.records;
        let Some(g) = wire::exact_match(&groups, name) else {
            return Ok(None);
        };
        // Gone since the listing: None.
        let found = decode::gone_on_404(self.relation(ctx, key, name, &g.id)).await?;
        Ok(found.map(|lists| self.remote(&g.id, &g.name, lists)))
    }

    async fn read(&self, ctx: &Ctx, g: &KnownGroup) -> Result<Option<RemoteGroup>, OpError> {
        let found = decode::gone_on_404(self.relation(ctx, &g.key, &g.name, &g.remote_id)).await?;
        // The relation does not carry the name: the known one stays.
        Ok(found.map(|lists| self.remote(&g.remote_id, "", lists)))
    }

    async fn create(&self, ctx: &Ctx, op: &Create) -> Result<String, OpError> {
        use std::sync::atomic::Ordering;
        // Until a create of this run has proved the listing, creates go one at a time.
        let _one = if self.proved.load(Ordering::Acquire) {
            None
        } else {
            Some(self.create_lock.lock().await)
        };
        if self.creates_stopped(ctx).is_some() && !self.stop_checked.swap(true, Ordering::AcqRel) {
            // One whole listing per run: if it shows records now (the group the stopped
            // create made, once the listing can see it), creates are allowed again.
            self.list(ctx, &op.key, &op.name, None).await?;
        }
        if let Some(why) = self.creates_stopped(ctx) {
            return Err(OpError::Conflict(format!(
                "no group is created on this target: {why}; pin where Group/list puts its records \
                 ({} = \"PATH\" for this target) or check the listing",
                wire::GROUPS_AT
            )));
        }
        let info = CallInfo::new("create").group(&op.key, &op.name);
        let req = self.request(Endpoint::Add, wire::add_body(&op.name));
        // Never re-sent in place once it may have been applied: the engine looks again.
        let p = ctx
            .send(info, req, Retry::OnlyIfNotApplied, &verdict(Endpoint::Add))
            .await?;
        const WHAT: &str = "the Group/add answer";
        let id = match decode::value(WHAT, &p.reply.body) {
            Ok(v) => match wire::created_id(&v) {
                Some(id) => id,
                None => {
                    ctx.confirm(p, Delta::None).await?;
                    let e = NotUnderstood::of(WHAT, &v, "a groupId");
                    // The group may exist: the engine looks it up again before a new attempt.
                    return Err(OpError::LookAgain(e.to_string()));
                }
            },
            Err(e) => {
                ctx.confirm(p, Delta::None).await?;
                return Err(OpError::LookAgain(e.to_string()));
            }
        };
        let group = Delta::Group {
            key: op.key.clone(),
            remote_id: id.clone(),
            name: op.name.clone(),
            members: Default::default(),
            owners: Default::default(),
        };
        // Every create proves the listing: the new group must be listed under its id.
        let proof = self.list(ctx, &op.key, &op.name, Some(&op.name)).await;
        let groups = match proof {
            Ok(r) => r.records,
            Err(e) => {
                // Recorded all the same: no later run creates it again.
                ctx.confirm(p, group).await?;
                return Err(e);
            }
        };
        let same = |n: &str| n.to_lowercase() == op.name.to_lowercase();
        let Some(ours) = groups.iter().find(|g| g.id == id) else {
            ctx.confirm(p, group).await?;
            let what = format!(
                "group {:?} (id {id}) was created, and the listing by its name does not show it ({} listed)",
                op.name,
                groups.len()
            );
            let pin = self.groups_at.as_deref().unwrap_or("");
            ctx.learn(FACT_CREATES_STOPPED, Some(&format!("{pin}|{what}")))
                .await?;
            warn!(group = %op.name, remote_id = %id, "the listing does not show the group just created; creates stop on this target");
            return Err(NotUnderstood {
                what: "the group listing".into(),
                seen: format!(
                    "{what}; rostersync sends no further create to this target until a listing shows \
                     records or {} = \"PATH\" pins where they are",
                    wire::GROUPS_AT
                ),
            }
            .into());
        };
        if let Some(other) = groups.iter().find(|g| g.id != id && same(&g.name)) {
            // Another group of this name appeared since the lookup (the vendor numbered ours,
            // or kept the name): remove ours and look again (the other one is adopted).
            ctx.confirm(p, Delta::None).await?;
            let got = ours.name.clone();
            warn!(group = %op.name, created = %got, other = %other.id, "another group of this name exists; deleting the one just created");
            let info = CallInfo::new("delete").group(&op.key, &got);
            let req = self.request(Endpoint::Delete, wire::group_body(&id));
            return match ctx
                .send(info, req, Retry::Always, &verdict(Endpoint::Delete))
                .await
            {
                Ok(p) => {
                    ctx.confirm(p, Delta::None).await?;
                    Err(OpError::LookAgain(format!(
                        "DeepCall already had a group {:?} (id {}); the new one {got:?} (id {id}) was a duplicate, deleted",
                        other.name, other.id
                    )))
                }
                Err(e) => Err(permanent(
                    e,
                    &format!(
                        "DeepCall named the new group {got:?} (id {id}), a duplicate of group {}; delete it by hand",
                        other.id
                    ),
                )),
            };
        }
        ctx.confirm(p, group).await?;
        self.proved.store(true, Ordering::Release);
        if self.creates_stopped(ctx).is_none() && ctx.fact(FACT_CREATES_STOPPED).is_some() {
            ctx.learn(FACT_CREATES_STOPPED, None).await?;
        }
        if op.members.is_empty() {
            return Ok(id);
        }
        let u = Update {
            key: op.key.clone(),
            remote_id: id.clone(),
            name: op.name.clone(),
            add: op.members.clone(),
            members_after: op.members.iter().map(|m| m.id.clone()).collect(),
            receive_call_after: op.receive_call.clone(),
            ..Default::default()
        };
        // A group just created has no agents: nothing to read first.
        let a = wire::assignment(&u, None);
        let info = CallInfo::new("add")
            .group(&op.key, &op.name)
            .adds(&op.members);
        let req = self.request(Endpoint::Assign, wire::assign_body(&id, &a));
        match ctx
            .send(info, req, Retry::Always, &verdict(Endpoint::Assign))
            .await
        {
            Ok(p) => {
                ctx.confirm(p, members_delta(&u, &a)).await?;
                Ok(id)
            }
            // The group is recorded: the next run plans the assignment as an update. Not
            // transient, or the engine would look the group up and adopt it again now.
            Err(e) => Err(permanent(
                e,
                "group created, but its members are not assigned yet",
            )),
        }
    }

    async fn update(&self, ctx: &Ctx, u: &Update) -> Result<(), OpError> {
        if u.changes_members() {
            self.assign(ctx, u).await?;
        }
        if u.rename_from.is_some() {
            self.rename(ctx, u).await?;
        }
        Ok(())
    }

    async fn delete(&self, ctx: &Ctx, d: &Delete) -> Result<(), OpError> {
        let info = CallInfo::new("delete").group(&d.key, &d.name);
        let req = self.request(Endpoint::Delete, wire::group_body(&d.remote_id));
        let r = match ctx
            .send(info, req, Retry::Always, &verdict(Endpoint::Delete))
            .await
        {
            Ok(p) => Ok(p),
            // 1503 is "not found or not authorized": gone only if the listing agrees.
            Err(e) => Err(self
                .disambiguate(ctx, &d.key, &d.name, &d.remote_id, e)
                .await),
        };
        ctx.deleted(d, r).await
    }
}
