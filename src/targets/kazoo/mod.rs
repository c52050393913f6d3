//! The `kazoo` kind: groups of one Kazoo account through the Crossbar v2 API (seed 003).
//!
//! - Auth is lazy: the first call of a run exchanges `api_key` for a token at
//!   `PUT /v2/api_auth` (or uses a configured token), kept here and shared by concurrent
//!   calls, sent as `X-Auth-Token`, and scrubbed from every message. A 401 logs in again
//!   once (one login however many calls saw the 401 at once) and re-sends the call once.
//! - Create is `PUT .../groups` with the whole `endpoints` map; adoption matches the name in
//!   the listing (read once per run, then re-read with `filter_name` when a create is
//!   retried) and reads the group for its endpoints.
//! - An update is exactly one merge `PATCH .../groups/{id}`: additions, `null` removals
//!   and the rename in one body. 409 `datastore_conflict` is retried.
//! - Only `user` endpoints are members: devices are never read into the known state, so
//!   never removed, in any mode.

pub mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderMap, HeaderName};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use super::decode::{self, NotUnderstood};
use super::http::{secret_header, urlencode};
use super::{
    CallInfo, Ctx, FailKind, Http, OpError, Pending, RemoteGroup, Reply, Request, Retry, Target,
};
use crate::config::{Secret, TargetConfig};
use crate::plan::{Create, Delete, KnownGroup, Update};
use crate::store::Delta;

/// Logins one call may trigger when its token keeps being refused.
const MAX_RENEWALS: usize = 2;
/// Upper bound on pages read from one listing (Crossbar pages hold 50 rows by default).
const MAX_PAGES: usize = 2000;

const AUTH_HEADER: HeaderName = HeaderName::from_static("x-auth-token");

type VerdictFn = dyn Fn(u16, &[u8]) -> super::Verdict + Sync;

/// The session token of this run.
#[derive(Default)]
struct Session {
    /// Bumped at every login, so calls that saw a 401 with an older token reuse the new one
    /// instead of logging in again.
    generation: u64,
    token: Option<SecretString>,
    /// Set when the target refused the credentials: later calls fail without a request.
    refused: Option<String>,
}

/// Groups by exact name from the one listing of this run: name -> ids.
type Listing = HashMap<String, Vec<String>>;

pub struct Kazoo {
    /// `base_url` without a trailing slash; paths start with `/v2`.
    base: String,
    account: String,
    /// Exchanged for a session token; None when a token is configured directly.
    api_key: Option<SecretString>,
    /// A token configured directly (`token_env`); used when there is no api_key.
    token: Option<SecretString>,
    session: Mutex<Session>,
    /// The group listing, read on the first `find` of the run (only runs that create read it).
    listing: Mutex<Option<Arc<Listing>>>,
    /// Keys already looked up in `listing`: a second `find` (a create that may have been
    /// applied) must look at the target again, not at the listing.
    listed: std::sync::Mutex<HashSet<String>>,
}

pub fn build(cfg: &TargetConfig) -> Result<(Box<dyn Target>, Http), super::BuildError> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, "application/json".parse().expect("static header"));
    let http = Http::new(cfg, headers)?;
    let secret = |s| Secret::value_of(s).cloned();
    let account = cfg
        .account_id
        .clone()
        .unwrap_or_default()
        .trim()
        .to_string();
    if account.is_empty() {
        return Err(super::BuildError::Missing("account_id"));
    }
    let t = Kazoo {
        base: cfg.base_url.clone(),
        account,
        api_key: secret(&cfg.api_key),
        token: secret(&cfg.token),
        session: Mutex::new(Session::default()),
        listing: Mutex::new(None),
        listed: std::sync::Mutex::new(HashSet::new()),
    };
    Ok((Box::new(t), http))
}

impl Kazoo {
    fn url(&self, path: &str) -> String {
        format!(
            "{}/v2/accounts/{}{path}",
            self.base,
            urlencode(&self.account)
        )
    }

    /// `PUT /v2/api_auth`: a fresh session token, registered with the scrubber.
    async fn login(&self, ctx: &Ctx, api_key: &SecretString) -> Result<SecretString, OpError> {
        let req = Request::new(Method::PUT, format!("{}/v2/api_auth", self.base))
            .json(wire::auth_body(api_key.expose_secret()));
        let p = ctx
            .send(CallInfo::new("login"), req, Retry::Always, &wire::verdict)
            .await?;
        const WHAT: &str = "the api_auth answer";
        let answer = decode::value(WHAT, &p.reply.body);
        let token = answer.as_ref().ok().and_then(wire::auth_token);
        if let Some(t) = &token {
            ctx.http.add_secret(t);
        }
        ctx.confirm(p, Delta::None).await?;
        match (token, answer) {
            (Some(t), _) => Ok(SecretString::from(t)),
            (None, Ok(v)) => Err(NotUnderstood::of(WHAT, &v, "auth_token").into()),
            (None, Err(e)) => Err(e.into()),
        }
    }

    /// The token to send, logging in on the first call of the run. When `stale` is the
    /// generation of a token the target just refused, logs in again, unless another call
    /// already did.
    async fn token(&self, ctx: &Ctx, stale: Option<u64>) -> Result<(u64, SecretString), OpError> {
        let mut s = self.session.lock().await;
        if let Some(msg) = &s.refused {
            return Err(OpError::Credentials(msg.clone()));
        }
        let fresh = match (&s.token, stale) {
            (Some(t), None) => return Ok((s.generation, t.clone())),
            (Some(t), Some(g)) if g != s.generation => return Ok((s.generation, t.clone())),
            _ => match (&self.api_key, &self.token) {
                (Some(key), _) => match self.login(ctx, key).await {
                    Ok(t) => t,
                    Err(e) => {
                        if let OpError::Call(f) = &e
                            && matches!(f.kind, FailKind::Unauthorized | FailKind::Permanent)
                        {
                            s.refused =
                                Some(format!("login refused earlier in this run: {}", f.message));
                        }
                        return Err(e);
                    }
                },
                // A configured token cannot be renewed: the 401 stands.
                (None, Some(t)) if stale.is_none() => t.clone(),
                (None, Some(_)) => {
                    return Err(OpError::Credentials(
                        "the configured token was refused (401); give api_key_env to log in instead".into(),
                    ));
                }
                (None, None) => {
                    return Err(OpError::Credentials(
                        "no api_key or token to log in with".into(),
                    ));
                }
            },
        };
        s.generation += 1;
        s.token = Some(fresh.clone());
        Ok((s.generation, fresh))
    }

    /// Sends an authenticated call; on a 401, logs in again (once for all the calls that
    /// saw the same token refused) and re-sends it. A token that dies again before the
    /// re-send gets one more renewal; a third refusal stands.
    async fn call(
        &self,
        ctx: &Ctx,
        info: CallInfo,
        req: Request,
        retry: Retry,
        verdict: &VerdictFn,
    ) -> Result<Pending, OpError> {
        let authed = |t: &SecretString| -> Result<Request, OpError> {
            let v = secret_header(t.expose_secret()).map_err(|_| {
                OpError::Credentials("the session token is not a valid header value".into())
            })?;
            Ok(req.clone().header(AUTH_HEADER, v))
        };
        let (mut generation, mut token) = self.token(ctx, None).await?;
        for _ in 0..MAX_RENEWALS {
            match ctx
                .send(info.clone(), authed(&token)?, retry, verdict)
                .await
            {
                Err(OpError::Call(f)) if f.kind == FailKind::Unauthorized => {
                    tracing::info!(target = %ctx.target, "the session token was refused; logging in again");
                    (generation, token) = self.token(ctx, Some(generation)).await?;
                }
                r => return r,
            }
        }
        ctx.send(info, authed(&token)?, retry, verdict).await
    }

    /// An authenticated read-only call, recorded at once.
    async fn read_call(&self, ctx: &Ctx, info: CallInfo, req: Request) -> Result<Reply, OpError> {
        let p = self
            .call(ctx, info, req, Retry::Always, &wire::verdict)
            .await?;
        let reply = p.reply.clone();
        ctx.confirm(p, Delta::None).await?;
        Ok(reply)
    }

    /// Every row of a listing (`path` may carry filters), following `next_start_key`, each
    /// decoded as `T`. `each` ends the paging early once it returns a value. A listing not
    /// understood, or longer than `MAX_PAGES`, is an error, never a shorter list.
    async fn list<T, R>(
        &self,
        ctx: &Ctx,
        info: &CallInfo,
        what: &str,
        path: &str,
        each: impl FnMut(Vec<T>, bool) -> Option<R> + Send,
    ) -> Result<Option<R>, OpError>
    where
        T: serde::de::DeserializeOwned + Send + PartialEq + Clone,
    {
        let sep = if path.contains('?') { '&' } else { '?' };
        let fetch = |start: Option<String>| async move {
            let url = match &start {
                Some(k) => format!("{}{sep}start_key={}", self.url(path), urlencode(k)),
                None => self.url(path),
            };
            let reply = self
                .read_call(ctx, info.clone(), Request::new(Method::GET, url))
                .await?;
            let (rows, next) = wire::page::<T>(what, &reply.body)?;
            Ok((rows, next.map(Some)))
        };
        decode::paged(what, MAX_PAGES, None, fetch, each).await
    }

    /// `GET .../groups/{id}`; None when it is gone.
    async fn get_group(
        &self,
        ctx: &Ctx,
        info: CallInfo,
        id: &str,
    ) -> Result<Option<RemoteGroup>, OpError> {
        let path = format!("/groups/{}", urlencode(id));
        decode::gone_on_404(async {
            let reply = self
                .read_call(ctx, info, Request::new(Method::GET, self.url(&path)))
                .await?;
            Ok(wire::group("the group", &reply.body)?.remote()?)
        })
        .await
    }

    /// The listing of this run's first `find`: every group, by exact name.
    async fn listing(&self, ctx: &Ctx, key: &str, name: &str) -> Result<Arc<Listing>, OpError> {
        let mut cached = self.listing.lock().await;
        if let Some(l) = cached.as_ref() {
            return Ok(l.clone());
        }
        let mut by_name = Listing::new();
        let info = CallInfo::new("find").group(key, name);
        self.list(
            ctx,
            &info,
            "the group listing",
            "/groups",
            |rows: Vec<wire::GroupRow>, _| {
                for g in rows {
                    by_name.entry(g.name).or_default().push(g.id);
                }
                None::<()>
            },
        )
        .await?;
        let l = Arc::new(by_name);
        *cached = Some(l.clone());
        Ok(l)
    }

    /// Ids of the groups called exactly `name`, asking the target now (`filter_name`; the
    /// name is compared again here in case the filter is not applied).
    async fn ids_named(&self, ctx: &Ctx, key: &str, name: &str) -> Result<Vec<String>, OpError> {
        let mut ids = Vec::new();
        let info = CallInfo::new("find").group(key, name);
        let path = format!("/groups?filter_name={}", urlencode(name));
        let what = "the group lookup";
        self.list(ctx, &info, what, &path, |rows: Vec<wire::GroupRow>, _| {
            ids.extend(rows.into_iter().filter(|g| g.name == name).map(|g| g.id));
            None::<()>
        })
        .await?;
        Ok(ids)
    }
}

#[async_trait]
impl Target for Kazoo {
    async fn probe(&self, ctx: &Ctx) -> Result<super::Probe, OpError> {
        // Logs in first (api_key), so a refused key is told apart from a refused listing.
        self.token(ctx, None).await?;
        let req = Request::new(Method::GET, self.url("/groups"));
        let reply = self.read_call(ctx, CallInfo::new("probe"), req).await?;
        let (rows, next) = wire::page::<wire::GroupRow>("the group listing", &reply.body)?;
        let mut p = super::Probe::of("groups", rows.len(), next.is_some(), &reply);
        if self.api_key.is_some() {
            p.auth = "logged in";
        }
        Ok(p)
    }

    async fn groups_of(
        &self,
        ctx: &Ctx,
        member_id: &str,
    ) -> Result<Option<Vec<(String, String)>>, OpError> {
        let mut all = Vec::new();
        let path = format!("/users/{}/groups", urlencode(member_id));
        let info = CallInfo::new("read");
        self.list(
            ctx,
            &info,
            "the user's groups",
            &path,
            |rows: Vec<wire::GroupRow>, _| {
                all.extend(rows.into_iter().map(|g| (g.id, g.name)));
                None::<()>
            },
        )
        .await?;
        Ok(Some(all))
    }

    fn can_lookup(&self) -> bool {
        true
    }

    /// `GET .../users?filter_email=E`. The email is sent as the source has it (lower-cased);
    /// Crossbar's filter is exact, so a user stored with capitals is not found this way (give
    /// `people[].ids.<target>` for such a person).
    async fn lookup(&self, ctx: &Ctx, email: &str) -> Result<Option<String>, OpError> {
        let path = format!("/users?filter_email={}", urlencode(email));
        let info = CallInfo::new("lookup");
        self.list(
            ctx,
            &info,
            "the user lookup",
            &path,
            |rows: Vec<wire::UserRow>, _| wire::user_with_email(&rows, email),
        )
        .await
    }

    async fn find(&self, ctx: &Ctx, key: &str, name: &str) -> Result<Option<RemoteGroup>, OpError> {
        let first = self
            .listed
            .lock()
            .expect("listed lock")
            .insert(key.to_string());
        let ids = if first {
            self.listing(ctx, key, name)
                .await?
                .get(name)
                .cloned()
                .unwrap_or_default()
        } else {
            self.ids_named(ctx, key, name).await?
        };
        // The listing gives only a count of endpoints: read the group for its members.
        for id in ids {
            let info = CallInfo::new("read").group(key, name);
            if let Some(g) = self.get_group(ctx, info, &id).await? {
                return Ok(Some(g));
            }
        }
        Ok(None)
    }

    async fn read(&self, ctx: &Ctx, g: &KnownGroup) -> Result<Option<RemoteGroup>, OpError> {
        let info = CallInfo::new("read").group(&g.key, &g.name);
        self.get_group(ctx, info, &g.remote_id).await
    }

    async fn email_of(&self, ctx: &Ctx, member_id: &str) -> Result<Option<String>, OpError> {
        let path = format!("/users/{}", urlencode(member_id));
        let r = decode::gone_on_404(async {
            let reply = self
                .read_call(
                    ctx,
                    CallInfo::new("lookup"),
                    Request::new(Method::GET, self.url(&path)),
                )
                .await?;
            Ok(wire::user_email(&reply.body)?)
        })
        .await?;
        Ok(r.flatten())
    }

    async fn create(&self, ctx: &Ctx, op: &Create) -> Result<String, OpError> {
        let req = Request::new(Method::PUT, self.url("/groups"))
            .json(wire::create_body(&op.name, &op.members));
        let info = CallInfo::new("create")
            .group(&op.key, &op.name)
            .adds(&op.members);
        let p = self
            .call(ctx, info, req, Retry::OnlyIfNotApplied, &wire::verdict)
            .await?;
        ctx.created(p, op, wire::created_id).await
    }

    async fn update(&self, ctx: &Ctx, u: &Update) -> Result<(), OpError> {
        let rename = u.rename_from.as_ref().map(|_| u.name.as_str());
        let Some(body) = wire::patch_body(rename, &u.add, &u.remove) else {
            return Ok(());
        };
        let op = if u.add.is_empty() && u.remove.is_empty() {
            "rename"
        } else {
            "update"
        };
        let info = CallInfo::new(op)
            .group(&u.key, &u.name)
            .adds(&u.add)
            .removes(&u.remove);
        let url = self.url(&format!("/groups/{}", urlencode(&u.remote_id)));
        let req = Request::new(Method::PATCH, url).json(body);
        // A merge PATCH is idempotent: safe to retry whatever happened.
        let p = self
            .call(ctx, info, req, Retry::Always, &wire::verdict)
            .await?;
        ctx.confirm(p, super::members_delta(&u.key, &u.add, &u.remove, false))
            .await?;
        if rename.is_some() {
            ctx.renamed(u).await?;
        }
        Ok(())
    }

    async fn delete(&self, ctx: &Ctx, d: &Delete) -> Result<(), OpError> {
        let req = Request::new(
            Method::DELETE,
            self.url(&format!("/groups/{}", urlencode(&d.remote_id))),
        );
        let info = CallInfo::new("delete").group(&d.key, &d.name);
        let r = self
            .call(ctx, info, req, Retry::Always, &wire::verdict)
            .await;
        ctx.deleted(d, r).await
    }
}
