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
//!   whole desired lists; in `owned`/`add_only` modes the group's current lists are read
//!   first (`Group/getGroupAgentRelation`) so that agents rostersync does not know are kept.
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
use tracing::warn;

use super::decode::{self, NotUnderstood};
use super::{CallInfo, Ctx, FailKind, Http, OpError, RemoteGroup, Request, Retry, Target, Verdict};
use crate::config::{Mode, Secret, TargetConfig};
use crate::plan::{Create, Delete, Keep, KnownGroup, KnownMember, Update};
use crate::store::Delta;
use wire::{Assignment, Endpoint};

/// A group's current agents and the ones among them that receive calls.
type Lists = (Vec<String>, Vec<String>);

pub struct AssignGroup {
    /// `.../api/v2`, without a trailing slash.
    base: String,
    /// The target's membership mode: `owned`/`add_only` read a group before replacing it.
    mode: Mode,
    /// `keep_members`: protected agents already on a group stay on the list sent.
    keep: Keep,
    /// The credential fields merged into every body: `ssid`, or `userId` + `token`.
    auth: Vec<(&'static str, SecretString)>,
    /// Relation reads of this run (adoption, `--full`) by group id, taken by the update
    /// that follows so that it need not read the same group again. The target lives for
    /// one run, and each entry is taken at most once.
    fresh: Mutex<HashMap<String, Lists>>,
}

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
        mode: cfg.membership,
        keep: cfg.keep_members.clone(),
        auth,
        fresh: Mutex::new(HashMap::new()),
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

    /// `Group/list`, filtered by `filter` (a substring match on the vendor's side) or whole.
    async fn list(
        &self,
        ctx: &Ctx,
        key: &str,
        name: &str,
        filter: Option<&str>,
    ) -> Result<Vec<wire::Listed>, OpError> {
        let info = CallInfo::new("find").group(key, name);
        let req = self.request(Endpoint::List, wire::list_body(filter));
        let reply = ctx.read(info, req, &verdict(Endpoint::List)).await?;
        Ok(wire::listed(&decode::value(
            "the group listing",
            &reply.body,
        )?)?)
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
        Ok(wire::relation(&decode::value(
            "the group's agents",
            &reply.body,
        )?)?)
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
            Ok(groups) if !groups.iter().any(|g| g.id == id) => e,
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
        // The assign replaces the whole list: read it first when agents rostersync does
        // not know may have to stay (owned/add_only modes, or protected members).
        let current = match self.mode {
            Mode::Authoritative if self.keep.is_empty() => None,
            _ => {
                let cached = self.fresh.lock().expect("fresh lock").remove(&u.remote_id);
                match cached {
                    Some(c) => Some(c),
                    None => Some(self.relation(ctx, &u.key, &u.name, &u.remote_id).await?),
                }
            }
        };
        let a = wire::assignment(u, self.mode, &self.keep, current.as_ref());
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
        let groups = self.list(ctx, &u.key, &u.name, Some(&u.name)).await?;
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
        let req = self.request(Endpoint::List, wire::list_body(None));
        let reply = ctx
            .read(CallInfo::new("probe"), req, &verdict(Endpoint::List))
            .await?;
        let groups = wire::listed(&decode::value("the group listing", &reply.body)?)?;
        Ok(super::Probe::of("groups", groups.len(), false, &reply))
    }

    async fn find(&self, ctx: &Ctx, key: &str, name: &str) -> Result<Option<RemoteGroup>, OpError> {
        let groups = self.list(ctx, key, name, Some(name)).await?;
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
        let info = CallInfo::new("create").group(&op.key, &op.name);
        let req = self.request(Endpoint::Add, wire::add_body(&op.name));
        // Never re-sent in place once it may have been applied: the engine looks again.
        let p = ctx
            .send(info, req, Retry::OnlyIfNotApplied, &verdict(Endpoint::Add))
            .await?;
        const WHAT: &str = "the Group/add answer";
        let answer = decode::value(WHAT, &p.reply.body);
        let (id, answer) = match answer {
            Ok(v) => match wire::created_id(&v) {
                Some(id) => (id, v),
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
        if let Some(got) =
            wire::created_name(&answer).filter(|n| n.to_lowercase() != op.name.to_lowercase())
        {
            // Another group of this name appeared since the lookup and the vendor numbered
            // ours: remove the duplicate and look again (the other one is then adopted).
            ctx.confirm(p, Delta::None).await?;
            warn!(group = %op.name, created = %got, "DeepCall gave the new group a numbered name; deleting it");
            let info = CallInfo::new("delete").group(&op.key, &got);
            let req = self.request(Endpoint::Delete, wire::group_body(&id));
            return match ctx
                .send(info, req, Retry::Always, &verdict(Endpoint::Delete))
                .await
            {
                Ok(p) => {
                    ctx.confirm(p, Delta::None).await?;
                    Err(OpError::LookAgain(format!(
                        "DeepCall named the new group {got:?} (a duplicate, deleted)"
                    )))
                }
                Err(e) => Err(permanent(
                    e,
                    &format!(
                        "DeepCall named the new group {got:?} (id {id}), a duplicate; delete it by hand"
                    ),
                )),
            };
        }
        let group = Delta::Group {
            key: op.key.clone(),
            remote_id: id.clone(),
            name: op.name.clone(),
            members: Default::default(),
            owners: Default::default(),
        };
        ctx.confirm(p, group).await?;
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
        let a = wire::assignment(&u, Mode::Authoritative, &Keep::default(), None);
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
