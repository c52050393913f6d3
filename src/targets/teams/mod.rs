//! The `teams` kind: the Dixa-style Teams API of seed 001 (`base_url` carries the `/v1` or
//! `/beta` prefix).
//!
//! | op | calls |
//! |---|---|
//! | find (adopt) | `GET /teams` once per run (cached here), match the name exactly; then `GET /teams/{id}/agents` |
//! | create | `POST /teams {name}` -> `data.id`, then `PATCH /teams/{id}/agents {agentIds}` |
//! | update | one `PATCH .../agents` with all additions, one `DELETE .../agents` (JSON body) with all removals, split past `batch_size` |
//! | rename | not offered by the API: a warning, nothing sent, the known name stays the real one |
//! | delete | `DELETE /teams/{id}` |
//! | read (`--full`) | `GET /teams/{id}/agents`, names from the cached `GET /teams` |
//! | lookup | `GET /agents?email=E`, following `meta.next` |
//!
//! The API key goes raw in `Authorization`; errors are `{"message": ...}` bodies. The API
//! refuses a whole membership call when one agent id in it is unknown (400): additions are
//! then split to find the refused ids (the others still go in), removals check the team
//! (an agent that is gone from it is removed already).

pub mod wire;

use std::collections::BTreeSet;

use async_trait::async_trait;
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap};
use secrecy::ExposeSecret;
use tracing::warn;

use super::decode::{self, NotUnderstood};
use super::http::{default_verdict, membership_verdict, secret_header};
use super::{CallInfo, Ctx, FailKind, Http, OpError, RemoteGroup, Request, Retry, Target, batches};
use crate::config::{Secret, TargetConfig};
use crate::plan::{Create, Delete, KnownGroup, Member, Update};
use wire::Team;

/// Upper bound on pages followed through `meta.next` (a server that never stops paging).
const MAX_PAGES: usize = 1000;
/// Extra calls one refused addition batch may spend on splitting, to find the refused ids.
/// One bad id among 100 takes 14; a batch refused for another reason stops here.
const MAX_SPLIT_CALLS: usize = 24;

pub struct Teams {
    /// `base_url`, with the API prefix, without a trailing slash.
    base: String,
    /// Member ids per membership call.
    batch_size: usize,
    /// This run's `GET /teams` (the target is built anew for every run): read once, on the
    /// first adoption lookup or `--full` name check, then kept in step with what this run
    /// does (a created team is added, a deleted one removed). Whatever leaves the server's
    /// side uncertain drops it, so the next lookup lists again: a create that may have been
    /// applied without an answer, a 404 on a membership call. The async lock makes
    /// concurrent lookups wait for one listing.
    listing: tokio::sync::Mutex<Option<Vec<Team>>>,
    /// Groups whose impossible rename was already logged in this run (one warning each).
    rename_warned: std::sync::Mutex<BTreeSet<String>>,
    /// Agent id -> email, as this run's team agent listings showed them (`email_of`).
    emails: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

pub fn build(cfg: &TargetConfig) -> Result<(Box<dyn Target>, Http), super::BuildError> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, "application/json".parse().expect("static header"));
    if let Some(token) = Secret::value_of(&cfg.token) {
        // The raw key, no `Bearer` (seed 001: ApiKeyAuth in Authorization).
        headers.insert(AUTHORIZATION, secret_header(token.expose_secret())?);
    }
    let http = Http::new(cfg, headers)?;
    let t = Teams {
        base: cfg.base_url.clone(),
        batch_size: cfg.batch_size,
        listing: tokio::sync::Mutex::new(None),
        rename_warned: std::sync::Mutex::new(BTreeSet::new()),
        emails: Default::default(),
    };
    Ok((Box::new(t), http))
}

/// The team a membership call is about: the group's key and name (for the history) and
/// the team's id.
#[derive(Clone, Copy)]
struct TeamRef<'a> {
    key: &'a str,
    name: &'a str,
    id: &'a str,
}

fn is_refused(e: &OpError) -> bool {
    matches!(e, OpError::Call(f) if f.status == Some(400))
}

/// A failure of the member call that follows a confirmed create, made final for this run:
/// the team is recorded (with no members yet), so the engine must not go looking for it
/// and adopt it as somebody else's; the next run sends the additions as an ordinary update.
fn after_create(e: OpError) -> OpError {
    match e {
        OpError::Call(mut f) if f.kind == FailKind::Transient => {
            f.kind = FailKind::Permanent;
            f.message = format!("team created, adding its members failed: {}", f.message);
            OpError::Call(f)
        }
        e => e,
    }
}

/// Names a refused member in the error of its call.
fn naming(e: OpError, m: &Member) -> OpError {
    match e {
        OpError::Call(mut f) => {
            f.message = format!("{} refused: {}", m.label(), f.message);
            OpError::Call(f)
        }
        e => e,
    }
}

impl Teams {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GETs `url` and every page `meta.next` leads to (on the same origin), decoding each
    /// page's `data` as `T`; hands each page to `each` until it returns Some. A `meta.next`
    /// that leaves the origin (the API key must never be sent elsewhere) or names the page
    /// just read is not understood: the listing is whole or an error.
    async fn pages<T, R>(
        &self,
        ctx: &Ctx,
        info: CallInfo,
        what: &str,
        url: String,
        each: impl FnMut(Vec<T>, bool) -> Option<R> + Send,
    ) -> Result<Option<R>, OpError>
    where
        T: serde::de::DeserializeOwned + Send + PartialEq + Clone,
    {
        let fetch = |url: String| {
            let info = info.clone();
            async move {
                let req = Request::new(Method::GET, &url);
                let reply = ctx.read(info, req, &default_verdict).await?;
                let (records, next) = wire::page::<T>(what, &reply.body)?;
                let Some(next) = next else {
                    return Ok((records, None));
                };
                match wire::next_url(&self.base, &url, &next) {
                    Some(n) => Ok((records, Some(n))),
                    None => Err(OpError::from(NotUnderstood {
                        what: what.into(),
                        seen:
                            "a meta.next that leaves the API's origin or names the page just read"
                                .into(),
                    })),
                }
            }
        };
        decode::paged(what, MAX_PAGES, url, fetch, each).await
    }

    /// Runs `f` on this run's team listing, reading it first if needed.
    async fn with_listing<T>(
        &self,
        ctx: &Ctx,
        info: CallInfo,
        f: impl FnOnce(&[Team]) -> T + Send,
    ) -> Result<T, OpError> {
        let mut listing = self.listing.lock().await;
        if listing.is_none() {
            let mut all = Vec::new();
            self.pages(
                ctx,
                info,
                "the team listing",
                self.url("/teams"),
                |page, _| {
                    all.extend(page);
                    None::<()>
                },
            )
            .await?;
            *listing = Some(all);
        }
        Ok(f(listing.as_deref().unwrap_or_default()))
    }

    /// Keeps the cached listing in step with a confirmed create.
    async fn listed(&self, team: Team) {
        if let Some(l) = self.listing.lock().await.as_mut() {
            l.push(team);
        }
    }

    /// Keeps the cached listing in step with a team deleted or found gone.
    async fn unlisted(&self, id: &str) {
        if let Some(l) = self.listing.lock().await.as_mut() {
            l.retain(|t| t.id != id);
        }
    }

    /// A team's current members; a 404 (the team is gone) is the read's NotFound failure.
    async fn members_now(
        &self,
        ctx: &Ctx,
        key: &str,
        name: &str,
        id: &str,
    ) -> Result<Vec<String>, OpError> {
        let mut ids = Vec::new();
        let url = self.url(&format!("/teams/{id}/agents"));
        let info = CallInfo::new("read").group(key, name);
        self.pages(
            ctx,
            info,
            "the team's agents",
            url,
            |page: Vec<wire::TeamAgent>, _| {
                let mut emails = self.emails.lock().unwrap_or_else(|e| e.into_inner());
                for a in page {
                    if let Some(e) = a.email {
                        emails.insert(a.id.clone(), e);
                    }
                    ids.push(a.id);
                }
                None::<()>
            },
        )
        .await?;
        Ok(ids)
    }

    /// A team's current members; None when the team is gone (404).
    async fn members(
        &self,
        ctx: &Ctx,
        key: &str,
        name: &str,
        id: &str,
    ) -> Result<Option<Vec<String>>, OpError> {
        let r = decode::gone_on_404(self.members_now(ctx, key, name, id)).await?;
        if r.is_none() {
            self.unlisted(id).await;
        }
        Ok(r)
    }

    /// One membership call (`PATCH` adds, `DELETE` removes) for one batch.
    async fn membership_call(
        &self,
        ctx: &Ctx,
        t: TeamRef<'_>,
        adding: bool,
        batch: &[Member],
    ) -> Result<(), OpError> {
        let (method, info) = if adding {
            (
                Method::PATCH,
                CallInfo::new("add").group(t.key, t.name).adds(batch),
            )
        } else {
            (
                Method::DELETE,
                CallInfo::new("remove").group(t.key, t.name).removes(batch),
            )
        };
        let req = Request::new(method, self.url(&format!("/teams/{}/agents", t.id)))
            .json(wire::agents_body(batch));
        let p = ctx
            .send(info, req, Retry::Always, &membership_verdict)
            .await?;
        let delta = if adding {
            super::members_delta(t.key, batch, &[], false)
        } else {
            super::members_delta(t.key, &[], batch, false)
        };
        ctx.confirm(p, delta).await
    }

    /// Adds members, one call per batch. A batch the API refuses (400: an agent id it does
    /// not know) is split in halves until the refused ids stand alone, so everybody else
    /// still goes in; the first refusal is returned once all the rest is sent.
    async fn add(&self, ctx: &Ctx, t: TeamRef<'_>, members: &[Member]) -> Result<(), OpError> {
        let mut refused: Option<OpError> = None;
        for batch in batches(members, self.batch_size)
            .into_iter()
            .filter(|b| !b.is_empty())
        {
            let mut todo = vec![batch];
            let mut splits = 0;
            while let Some(b) = todo.pop() {
                match self.membership_call(ctx, t, true, b).await {
                    Ok(()) => {}
                    Err(e) if is_refused(&e) && b.len() > 1 && splits < MAX_SPLIT_CALLS => {
                        splits += 2;
                        let (x, y) = b.split_at(b.len() / 2);
                        todo.push(y);
                        todo.push(x);
                    }
                    Err(e) if is_refused(&e) => {
                        if b.len() == 1 {
                            warn!(group = %t.name, person = %b[0].label(), "the API refused this agent id; the others are added");
                            refused.get_or_insert(naming(e, &b[0]));
                        } else {
                            refused.get_or_insert(e);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        refused.map_or(Ok(()), Err)
    }

    /// Removes members, one call per batch. When the API refuses a batch (400: an agent id
    /// it does not know, e.g. an agent deleted from the organisation), the team is read: who
    /// is not in it any more is removed already (recorded as such), and the others are sent
    /// again.
    async fn remove(&self, ctx: &Ctx, t: TeamRef<'_>, members: &[Member]) -> Result<(), OpError> {
        for batch in batches(members, self.batch_size)
            .into_iter()
            .filter(|b| !b.is_empty())
        {
            let Err(e) = self.membership_call(ctx, t, false, batch).await else {
                continue;
            };
            if !is_refused(&e) {
                return Err(e);
            }
            // A team found gone (404) fails the removal with that read's NotFound.
            let now = self.members_now(ctx, t.key, t.name, t.id).await?;
            let now: BTreeSet<&str> = now.iter().map(String::as_str).collect();
            let (still, gone): (Vec<Member>, Vec<Member>) = batch
                .iter()
                .cloned()
                .partition(|m| now.contains(m.id.as_str()));
            if gone.is_empty() {
                return Err(e);
            }
            let delta = super::members_delta(t.key, &[], &gone, false);
            ctx.note("removed", t.key, t.name, delta).await?;
            if !still.is_empty() {
                self.membership_call(ctx, t, false, &still).await?;
            }
        }
        Ok(())
    }

    fn warn_rename(&self, u: &Update) {
        let first = self
            .rename_warned
            .lock()
            .expect("rename_warned lock")
            .insert(u.key.clone());
        if first {
            let from = u.rename_from.as_deref().unwrap_or_default();
            warn!(group = %u.name, from = %from,
                "the teams API cannot rename a team: rename \"{from}\" to \"{}\" by hand; rostersync keeps the name \
                 the team really has and picks up the new one at the next --full run", u.name);
        }
    }
}

#[async_trait]
impl Target for Teams {
    async fn probe(&self, ctx: &Ctx) -> Result<super::Probe, OpError> {
        let req = Request::new(Method::GET, self.url("/teams"));
        let reply = ctx
            .read(CallInfo::new("probe"), req, &default_verdict)
            .await?;
        let (teams, next) = wire::page::<Team>("the team listing", &reply.body)?;
        Ok(super::Probe::of(
            "teams",
            teams.len(),
            next.is_some(),
            &reply,
        ))
    }

    fn can_lookup(&self) -> bool {
        true
    }

    async fn online(
        &self,
        ctx: &Ctx,
        key: &str,
        name: &str,
        remote_id: &str,
    ) -> Result<Option<BTreeSet<String>>, OpError> {
        let mut online = BTreeSet::new();
        let url = self.url(&format!("/teams/{remote_id}/presence"));
        let info = CallInfo::new("presence").group(key, name);
        self.pages(
            ctx,
            info,
            "the team's presence",
            url,
            |page: Vec<wire::Presence>, _| {
                online.extend(page.into_iter().filter(|p| p.online()).map(|p| p.user_id));
                None::<()>
            },
        )
        .await?;
        Ok(Some(online))
    }

    async fn lookup(&self, ctx: &Ctx, email: &str) -> Result<Option<String>, OpError> {
        let url = self.url(&format!("/agents?email={}", super::http::urlencode(email)));
        let info = CallInfo::new("lookup");
        self.pages(
            ctx,
            info,
            "the agent lookup",
            url,
            |page: Vec<wire::Agent>, more| wire::agent_with_email(&page, more, email),
        )
        .await
    }

    async fn find(&self, ctx: &Ctx, key: &str, name: &str) -> Result<Option<RemoteGroup>, OpError> {
        let (first, count) = self
            .with_listing(ctx, CallInfo::new("find").group(key, name), |teams| {
                let same: Vec<&Team> = teams.iter().filter(|t| t.name == name).collect();
                (same.first().map(|t| t.id.clone()), same.len())
            })
            .await?;
        let Some(id) = first else { return Ok(None) };
        if count > 1 {
            warn!(group = %name, remote_id = %id, "{count} teams have this name; adopting the first one listed");
        }
        Ok(self
            .members(ctx, key, name, &id)
            .await?
            .map(|members| RemoteGroup {
                id,
                name: name.to_string(),
                members,
                ..Default::default()
            }))
    }

    async fn read(&self, ctx: &Ctx, g: &KnownGroup) -> Result<Option<RemoteGroup>, OpError> {
        let Some(members) = self.members(ctx, &g.key, &g.name, &g.remote_id).await? else {
            return Ok(None);
        };
        // The agents list carries no team name: the run's listing does (one call per run),
        // so a team renamed by hand is known by its real name again.
        let info = CallInfo::new("read").group(&g.key, &g.name);
        let name = self
            .with_listing(ctx, info, |teams| {
                teams
                    .iter()
                    .find(|t| t.id == g.remote_id)
                    .map(|t| t.name.clone())
            })
            .await?;
        Ok(Some(RemoteGroup {
            id: g.remote_id.clone(),
            name: name.unwrap_or_default(),
            members,
            ..Default::default()
        }))
    }

    async fn email_of(&self, _ctx: &Ctx, member_id: &str) -> Result<Option<String>, OpError> {
        // The team's agent listing that found the member showed its email (no request).
        Ok(self
            .emails
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(member_id)
            .cloned())
    }

    async fn create(&self, ctx: &Ctx, op: &Create) -> Result<String, OpError> {
        let req = Request::new(Method::POST, self.url("/teams")).json(wire::create_body(&op.name));
        let info = CallInfo::new("create").group(&op.key, &op.name);
        let p = match ctx
            .send(info, req, Retry::OnlyIfNotApplied, &default_verdict)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                if e.maybe_applied() {
                    // The team may exist now: the next lookup must list again.
                    *self.listing.lock().await = None;
                }
                return Err(e);
            }
        };
        // The team exists, with nobody in it yet.
        let empty = Create {
            members: Vec::new(),
            owners: Vec::new(),
            receive_call: Vec::new(),
            ..op.clone()
        };
        let id = match ctx.created(p, &empty, wire::created_id).await {
            Ok(id) => id,
            Err(e) => {
                // The team may exist now: the next lookup must list again.
                *self.listing.lock().await = None;
                return Err(e);
            }
        };
        self.listed(Team {
            id: id.clone(),
            name: op.name.clone(),
        })
        .await;
        let t = TeamRef {
            key: &op.key,
            name: &op.name,
            id: &id,
        };
        self.add(ctx, t, &op.members).await.map_err(after_create)?;
        Ok(id)
    }

    async fn update(&self, ctx: &Ctx, u: &Update) -> Result<(), OpError> {
        if u.rename_from.is_some() {
            // Nothing is sent and no `Renamed` is recorded: the known name stays the one the
            // team has, so the plan keeps showing the rename until it is done by hand.
            self.warn_rename(u);
        }
        let t = TeamRef {
            key: &u.key,
            name: &u.name,
            id: &u.remote_id,
        };
        let added = self.add(ctx, t, &u.add).await;
        let r = if added.as_ref().is_err_and(|e| !is_refused(e)) {
            added
        } else {
            // A refused addition does not hold back the removals; a team found gone wins.
            match (added, self.remove(ctx, t, &u.remove).await) {
                (_, Err(e)) if e.is_not_found() => Err(e),
                (Err(e), _) | (Ok(()), Err(e)) => Err(e),
                (Ok(()), Ok(())) => Ok(()),
            }
        };
        if matches!(&r, Err(e) if e.is_not_found()) {
            // The engine forgets the team and looks for it by name before creating it again.
            // The API's 404 says only "an entity" was not found: list again rather than trust
            // that the team is gone, so a team that is still there is adopted, not duplicated.
            *self.listing.lock().await = None;
        }
        r
    }

    async fn delete(&self, ctx: &Ctx, d: &Delete) -> Result<(), OpError> {
        let req = Request::new(Method::DELETE, self.url(&format!("/teams/{}", d.remote_id)));
        let info = CallInfo::new("delete").group(&d.key, &d.name);
        let r = ctx
            .deleted(
                d,
                ctx.send(info, req, Retry::Always, &default_verdict).await,
            )
            .await;
        if r.is_ok() {
            self.unlisted(&d.remote_id).await;
        }
        r
    }
}
