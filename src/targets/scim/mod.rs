//! The `scim` kind: MaestroQA (`maestroqa` flavor, seed 000) or any RFC 7644 service.
//!
//! What a server does is believed from its answers, not assumed (RFC 7644 3.3 lets a
//! server ignore POSTed content):
//! - a create records only the members its answer shows; the others are sent in a PATCH
//!   (or, when the answer carries no `members` at all, the group is read back once first);
//! - a PATCH answer that carries the group is compared with what was sent, and what it
//!   shows is recorded (`write.rs`);
//! - a 501 is final: a filtered member removal is resent once in the value form and the
//!   group read back to prove only those members left; a rename answered 501 means the
//!   server cannot rename (warned, the remote name kept);
//! - `/ServiceProviderConfig` is read once per target (kept a day) and picks the listing's
//!   page size and whether a name lookup filters or pages.
//!
//! What was learned is kept as target facts (`scim.*`, see `FACT_*`), so later runs send
//! the working form at once.

pub mod wire;
mod write;

use std::collections::BTreeSet;

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;

use super::decode::{self, NotUnderstood};
use super::http::{default_verdict, secret_header, urlencode};
use super::{CallInfo, Ctx, Http, OpError, RemoteGroup, Request, Target, Verdict};
use crate::config::{Auth, Flavor, Secret, TargetConfig};
use crate::plan::{Create, Delete, KnownGroup, Update};
use crate::store::Fact;

/// Page size when listing groups (lowered to the server's `filter.maxResults`).
const PAGE: usize = 100;
/// Upper bound on pages read when looking for a group by name (100,000 groups).
const MAX_PAGES: usize = 1000;

/// Fact: the server's ServiceProviderConfig, as JSON (`wire::Spc`), or `none: <why>` when
/// it has none that can be read. Read again after a day.
pub const FACT_SPC: &str = "scim.service_provider_config";
/// Fact: `value` once a filtered member removal was answered 501 and the value form was
/// proven to remove exactly the members named. Forgotten when the value form is refused.
pub const FACT_REMOVE_FORM: &str = "scim.remove_form";
/// Fact: `unsupported` once a rename was answered 501. Tried again after a day.
pub const FACT_RENAME: &str = "scim.rename";
/// Fact: what an answer to a create without `members` means: `shows_members` (the server
/// has shown the members it kept in such answers: none shown is none kept) or
/// `drops_members` (a read-back showed it kept none of them). Either way the members are
/// then sent in a PATCH at once, without reading the group back.
pub const FACT_CREATE: &str = "scim.create_answer";

/// How long a read ServiceProviderConfig (and a rename found unsupported) is believed.
const DAY: time::Duration = time::Duration::days(1);

pub struct Scim {
    base: String,
    flavor: Flavor,
    batch_size: usize,
    /// The removal form the operator pinned (`remove_form`): always sent, never learned.
    pinned_form: Option<wire::RemoveForm>,
    /// Every group as listed once per run, for name lookups where filtering is not
    /// supported; dropped when a create may have changed it.
    listing: tokio::sync::Mutex<Option<Vec<wire::Group>>>,
    /// The ServiceProviderConfig as this run knows it (read or from the facts), once
    /// looked at: `Err` says why there is none.
    spc: tokio::sync::Mutex<Option<Caps>>,
    /// Groups whose impossible rename was already logged in this run (one warning each).
    rename_warned: std::sync::Mutex<BTreeSet<String>>,
}

pub fn build(cfg: &TargetConfig) -> Result<(Box<dyn Target>, Http), super::BuildError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        "application/scim+json; charset=utf-8"
            .parse()
            .expect("static header"),
    );
    headers.insert(
        reqwest::header::ACCEPT,
        "application/scim+json, application/json"
            .parse()
            .expect("static"),
    );
    if let Some(token) = Secret::value_of(&cfg.token) {
        let token = token.expose_secret();
        match cfg.auth {
            Auth::ApiToken => {
                headers.insert(HeaderName::from_static("apitoken"), secret_header(token)?);
            }
            Auth::Basic => {
                let enc = base64::engine::general_purpose::STANDARD.encode(token);
                headers.insert(AUTHORIZATION, secret_header(&format!("Basic {enc}"))?);
            }
            Auth::Bearer => {
                headers.insert(AUTHORIZATION, secret_header(&format!("Bearer {token}"))?);
            }
        }
    }
    let http = Http::new(cfg, headers)?;
    let t = Scim {
        base: cfg.base_url.clone(),
        flavor: cfg.flavor,
        batch_size: cfg.batch_size,
        pinned_form: cfg.remove_form,
        listing: tokio::sync::Mutex::new(None),
        spc: tokio::sync::Mutex::new(None),
        rename_warned: std::sync::Mutex::new(BTreeSet::new()),
    };
    Ok((Box::new(t), http))
}

/// `verdict` with the message a SCIM error answer carries (`wire::error_message`).
fn restate(v: Verdict, status: u16, body: &[u8]) -> Verdict {
    let m = || wire::error_message(status, body);
    match v {
        Verdict::Ok => Verdict::Ok,
        Verdict::Retry(_) => Verdict::Retry(m()),
        Verdict::Fail(_) => Verdict::Fail(m()),
        Verdict::NotFound(_) => Verdict::NotFound(m()),
        Verdict::Unauthorized(_) => Verdict::Unauthorized(m()),
    }
}

/// The default reading of an answer (`http::default_verdict`), with SCIM error messages.
fn verdict(status: u16, body: &[u8]) -> Verdict {
    restate(default_verdict(status, body), status, body)
}

/// Membership changes: 409 means "already there" (SPEC 5), which counts as done.
fn membership_verdict(status: u16, body: &[u8]) -> Verdict {
    restate(super::http::membership_verdict(status, body), status, body)
}

/// 409 on a create means a group of that name exists: look again (and adopt) rather than fail.
fn create_verdict(status: u16, body: &[u8]) -> Verdict {
    if status == 409 {
        Verdict::Retry(wire::error_message(status, body))
    } else {
        verdict(status, body)
    }
}

/// Whether a fact was learned within `age` (fact times are fixed-width UTC, so they
/// compare as text).
fn fresh(f: &Fact, age: time::Duration) -> bool {
    f.at >= crate::store::timestamp(time::OffsetDateTime::now_utc() - age)
}

/// Whether a call failed with this HTTP status.
fn failed_with(e: &OpError, status: u16) -> bool {
    matches!(e, OpError::Call(f) if f.status == Some(status))
}

impl Scim {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /Groups/{id}`; None when it is gone (404).
    async fn get_group(
        &self,
        ctx: &Ctx,
        info: CallInfo,
        id: &str,
    ) -> Result<Option<RemoteGroup>, OpError> {
        let req = Request::new(Method::GET, self.url(&format!("/Groups/{id}")));
        decode::gone_on_404(async {
            let reply = ctx.read(info, req, &verdict).await?;
            Ok(wire::group("the group", &reply.body)?.remote())
        })
        .await
    }

    /// What the server says it supports: read once per run at most, from the facts when
    /// a copy younger than a day is kept (a dry-run, which keeps nothing, uses any copy
    /// and reads only when there is none). `Caps::Unknown` says why there is none: the
    /// defaults apply then. MaestroQA documents none: not asked.
    async fn spc(&self, ctx: &Ctx) -> Result<Caps, OpError> {
        if self.flavor != Flavor::Rfc7644 {
            return Ok(Caps::Unknown("not asked of MaestroQA".into()));
        }
        let mut slot = self.spc.lock().await;
        if let Some(s) = &*slot {
            return Ok(s.clone());
        }
        let cached = ctx.fact(FACT_SPC);
        let s = match cached {
            Some(f) if ctx.recorder.is_dry() || fresh(&f, DAY) => spc_of_fact(&f.value),
            cached => match self.read_spc(ctx).await? {
                Some(s) => {
                    ctx.learn(FACT_SPC, Some(&fact_of_spc(&s))).await?;
                    s
                }
                // Could not be read now: an older copy, else the defaults, nothing learned.
                None => cached.map_or_else(
                    || Caps::Unknown("could not be read".to_string()),
                    |f| spc_of_fact(&f.value),
                ),
            },
        };
        *slot = Some(s.clone());
        Ok(s)
    }

    /// `GET /ServiceProviderConfig`. `Some(Caps::Unknown(why))`: the server has none we can read
    /// (404, 501, another refusal, an answer not understood); None: the call failed in a
    /// way that says nothing about it (timeout, 5xx, credentials).
    async fn read_spc(&self, ctx: &Ctx) -> Result<Option<Caps>, OpError> {
        let req = Request::new(Method::GET, self.url("/ServiceProviderConfig"));
        match ctx.read(CallInfo::new("read"), req, &verdict).await {
            Ok(reply) => Ok(Some(match wire::spc(&reply.body) {
                Ok(spc) => Caps::Said(spc),
                Err(e) => Caps::Unknown(e.to_string()),
            })),
            Err(OpError::Call(f)) if f.outcome == super::Outcome::NotApplied => {
                if f.kind == super::FailKind::Unauthorized {
                    return Ok(None);
                }
                Ok(Some(Caps::Unknown(f.message)))
            }
            Err(OpError::Call(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Resources per listing page: ours, or fewer when the server says so.
    async fn page(&self, ctx: &Ctx) -> Result<usize, OpError> {
        Ok(match self.spc(ctx).await? {
            Caps::Said(wire::Spc {
                max_results: Some(n),
                ..
            }) => PAGE.min(n as usize).max(1),
            _ => PAGE,
        })
    }

    /// The resources a filtered listing holds, read as far as needed: a server may answer
    /// a filter one page at a time (`totalResults` above what it returned), so further
    /// pages are read (`startIndex`, `count`) until `found` says the records hold what is
    /// looked for, or all are read. A page that promises more and holds none, or more than
    /// `MAX_PAGES` pages, is not understood: never a shorter list.
    async fn filtered<T: DeserializeOwned + wire::Identified>(
        &self,
        ctx: &Ctx,
        info: CallInfo,
        url: &str,
        what: &str,
        found: impl Fn(&[T]) -> bool,
    ) -> Result<Vec<T>, OpError> {
        let mut all: Vec<T> = Vec::new();
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut next = url.to_string();
        for _ in 0..MAX_PAGES {
            let reply = ctx
                .read(info.clone(), Request::new(Method::GET, next), &verdict)
                .await?;
            let (items, total) = wire::list::<T>(what, &reply.body)?;
            let n = items.len();
            let start = all.len() + 1;
            for item in items {
                if !seen.insert(item.id().to_string()) {
                    // A server that ignores `startIndex` answers the first page again.
                    return Err(NotUnderstood {
                        what: what.into(),
                        seen: format!(
                            "the page at startIndex {start} repeats a record already read"
                        ),
                    }
                    .into());
                }
                all.push(item);
            }
            match total {
                // No total: the answer says nothing of more pages.
                None => return Ok(all),
                Some(t) if all.len() as u64 >= t || found(&all) => return Ok(all),
                Some(t) if n == 0 => {
                    return Err(NotUnderstood {
                        what: what.into(),
                        seen: format!("an empty page at startIndex {start} of totalResults {t}"),
                    }
                    .into());
                }
                Some(_) => {}
            }
            let count = self.page(ctx).await?;
            next = format!("{url}&startIndex={}&count={count}", all.len() + 1);
        }
        Err(NotUnderstood {
            what: what.into(),
            seen: format!("more than {MAX_PAGES} pages"),
        }
        .into())
    }

    /// Looks a name up in the listing of every group (for services without filtering,
    /// like MaestroQA). The listing is read once per run, paging with `startIndex`/`count`,
    /// and read again after a create that may have been applied. A listing that is not
    /// understood, or longer than `MAX_PAGES`, fails the lookup (never "no such group").
    async fn find_by_paging(
        &self,
        ctx: &Ctx,
        key: &str,
        name: &str,
    ) -> Result<Option<RemoteGroup>, OpError> {
        const WHAT: &str = "the group listing";
        let page = self.page(ctx).await?;
        let mut listing = self.listing.lock().await;
        if listing.is_none() {
            let mut all = Vec::new();
            let fetch = |start: usize| async move {
                let url = self.url(&format!("/Groups?startIndex={start}&count={page}"));
                let info = CallInfo::new("find").group(key, name);
                let reply = ctx
                    .read(info, Request::new(Method::GET, url), &verdict)
                    .await?;
                let (items, total) = wire::list::<wire::Group>(WHAT, &reply.body)?;
                let next = start + items.len();
                match total {
                    // More promised, none given: the listing cannot be read whole.
                    Some(t) if items.is_empty() && (start as u64) <= t => {
                        Err(OpError::from(NotUnderstood {
                            what: WHAT.into(),
                            seen: format!(
                                "an empty page at startIndex {start} of totalResults {t}"
                            ),
                        }))
                    }
                    _ if items.is_empty() => Ok((items, None)),
                    Some(t) if next as u64 > t => Ok((items, None)),
                    _ => Ok((items, Some(next))),
                }
            };
            decode::paged(WHAT, MAX_PAGES, 1, fetch, |items, _| {
                all.extend(items);
                None::<()>
            })
            .await?;
            *listing = Some(all);
        }
        let found = listing
            .as_ref()
            .and_then(|all| all.iter().find(|g| g.display_name == name))
            .cloned();
        drop(listing);
        match found {
            Some(g) => self.complete(ctx, key, name, &g).await,
            None => Ok(None),
        }
    }

    /// A listed group may come without its members: read it whole then.
    async fn complete(
        &self,
        ctx: &Ctx,
        key: &str,
        name: &str,
        g: &wire::Group,
    ) -> Result<Option<RemoteGroup>, OpError> {
        match g.members {
            Some(_) => Ok(Some(g.remote())),
            None => {
                let info = CallInfo::new("read").group(key, name);
                self.get_group(ctx, info, &g.id).await
            }
        }
    }

    /// Whether a rename was answered 501 within the last day (tried again after that).
    fn cannot_rename(&self, ctx: &Ctx) -> bool {
        ctx.fact(FACT_RENAME)
            .is_some_and(|f| f.value == "unsupported" && fresh(&f, DAY))
    }

    /// Logs once per group and run that the server cannot rename it.
    fn warn_rename(&self, u: &Update) {
        let first = self
            .rename_warned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(u.key.clone());
        if first {
            let from = u.rename_from.as_deref().unwrap_or(&u.name);
            tracing::warn!(group = %u.name,
                "this SCIM server cannot rename a group (it answered 501): rename \"{from}\" to \"{}\" by hand; rostersync keeps the name the group has (tried again after a day)",
                u.name);
        }
    }

    /// How this target removes members: the flavor's form, or the value form once the
    /// server has shown it needs it.
    fn remove_form(&self, ctx: &Ctx) -> wire::RemoveForm {
        if let Some(f) = self.pinned_form {
            return f;
        }
        match ctx.fact(FACT_REMOVE_FORM) {
            Some(f) if f.value == "value" => wire::RemoveForm::Value,
            _ => wire::RemoveForm::default_for(self.flavor),
        }
    }
}

/// What a SCIM server says it supports (its ServiceProviderConfig), or why rostersync does
/// not know (then the defaults apply): a value, not an error.
#[derive(Clone, Debug, PartialEq)]
enum Caps {
    Said(wire::Spc),
    Unknown(String),
}

/// The fact that keeps a ServiceProviderConfig (or why there is none).
fn fact_of_spc(s: &Caps) -> String {
    match s {
        Caps::Said(spc) => serde_json::to_string(spc).expect("a ServiceProviderConfig serializes"),
        Caps::Unknown(why) => format!("none: {why}"),
    }
}

fn spc_of_fact(v: &str) -> Caps {
    match v.strip_prefix("none: ") {
        Some(why) => Caps::Unknown(why.to_string()),
        None => serde_json::from_str(v)
            .map(Caps::Said)
            .unwrap_or_else(|_| Caps::Unknown("a kept copy not understood".to_string())),
    }
}

#[async_trait]
impl Target for Scim {
    async fn probe(&self, ctx: &Ctx) -> Result<super::Probe, OpError> {
        let url = self.url(&format!("/Groups?startIndex=1&count={PAGE}"));
        let reply = ctx
            .read(
                CallInfo::new("probe"),
                Request::new(Method::GET, url),
                &verdict,
            )
            .await?;
        let (items, total) = wire::list::<wire::Group>("the group listing", &reply.body)?;
        let more = total.is_some_and(|t| t > items.len() as u64);
        let mut probe = super::Probe::of("groups", items.len(), more, &reply);
        if self.flavor == Flavor::Rfc7644 {
            // `check --online` shows what the server says now, whatever is kept.
            let spc = match self.read_spc(ctx).await? {
                Some(s) => s,
                None => Caps::Unknown("could not be read".to_string()),
            };
            probe.notes.push(match &spc {
                Caps::Said(s) => s.describe(),
                Caps::Unknown(why) => {
                    format!("ServiceProviderConfig: none ({why}); the defaults apply")
                }
            });
        }
        if self.remove_form(ctx) != wire::RemoveForm::default_for(self.flavor) {
            probe.notes.push(
                "removes members in the value form (the filtered form was answered 501)".into(),
            );
        }
        if self.cannot_rename(ctx) {
            probe
                .notes
                .push("cannot rename groups (a rename was answered 501)".into());
        }
        match ctx.fact(FACT_CREATE).as_ref().map(|f| f.value.as_str()) {
            Some("drops_members") => probe
                .notes
                .push("keeps no members sent in a create: they follow in a PATCH".into()),
            Some("shows_members") => probe
                .notes
                .push("shows the members it kept in a create's answer".into()),
            _ => {}
        }
        Ok(probe)
    }

    fn can_lookup(&self) -> bool {
        self.flavor == Flavor::Rfc7644
    }

    async fn lookup(&self, ctx: &Ctx, email: &str) -> Result<Option<String>, OpError> {
        let filter = format!("userName eq {}", wire::quote(email));
        let url = format!("{}?filter={}", self.url("/Users"), urlencode(&filter));
        let is = |u: &wire::User| u.user_name.eq_ignore_ascii_case(email);
        let users = self
            .filtered::<wire::User>(
                ctx,
                CallInfo::new("lookup"),
                &url,
                "the user lookup",
                |us| us.iter().any(is),
            )
            .await?;
        Ok(users.into_iter().find(|u| is(u)).map(|u| u.id))
    }

    async fn email_of(&self, ctx: &Ctx, member_id: &str) -> Result<Option<String>, OpError> {
        if self.flavor == Flavor::Maestroqa {
            // MaestroQA names members by email (or by a user id, which says nothing).
            return Ok(member_id.contains('@').then(|| member_id.to_string()));
        }
        let url = self.url(&format!("/Users/{}", urlencode(member_id)));
        let r = decode::gone_on_404(async {
            let reply = ctx
                .read(
                    CallInfo::new("lookup"),
                    Request::new(Method::GET, url),
                    &default_verdict,
                )
                .await?;
            let doc: wire::UserDoc =
                decode::answer("the user", "{\"userName\", \"emails\"}", &reply.body)?;
            Ok(doc.email())
        })
        .await?;
        Ok(r.flatten())
    }

    async fn find(&self, ctx: &Ctx, key: &str, name: &str) -> Result<Option<RemoteGroup>, OpError> {
        if self.flavor == Flavor::Maestroqa {
            return self.find_by_paging(ctx, key, name).await;
        }
        if let Caps::Said(wire::Spc {
            filter: Some(false),
            ..
        }) = self.spc(ctx).await?
        {
            return self.find_by_paging(ctx, key, name).await;
        }
        let filter = format!("displayName eq {}", wire::quote(name));
        let url = format!("{}?filter={}", self.url("/Groups"), urlencode(&filter));
        let info = CallInfo::new("find").group(key, name);
        let is = |g: &wire::Group| g.display_name == name;
        match self
            .filtered::<wire::Group>(ctx, info, &url, "the group lookup", |gs| gs.iter().any(is))
            .await
        {
            Ok(groups) => match groups.iter().find(|g| is(g)) {
                Some(g) => self.complete(ctx, key, name, g).await,
                None => Ok(None),
            },
            // Filtering not supported (400 invalidFilter / 501): page instead.
            Err(e) if failed_with(&e, 400) || failed_with(&e, 501) => {
                self.find_by_paging(ctx, key, name).await
            }
            Err(e) => Err(e),
        }
    }

    async fn read(&self, ctx: &Ctx, g: &KnownGroup) -> Result<Option<RemoteGroup>, OpError> {
        let info = CallInfo::new("read").group(&g.key, &g.name);
        self.get_group(ctx, info, &g.remote_id).await
    }

    async fn create(&self, ctx: &Ctx, op: &Create) -> Result<String, OpError> {
        let r = self.create_group(ctx, op).await;
        if matches!(&r, Err(e) if !matches!(e, OpError::AfterCreate { .. })) {
            // The group may exist now: the next lookup must list again.
            *self.listing.lock().await = None;
        }
        r
    }

    async fn update(&self, ctx: &Ctx, u: &Update) -> Result<(), OpError> {
        self.update_group(ctx, u).await
    }

    async fn delete(&self, ctx: &Ctx, d: &Delete) -> Result<(), OpError> {
        let req = Request::new(
            Method::DELETE,
            self.url(&format!("/Groups/{}", d.remote_id)),
        );
        let info = CallInfo::new("delete").group(&d.key, &d.name);
        ctx.deleted(d, ctx.send(info, req, super::Retry::Always, &verdict).await)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_fresh_for_a_day() {
        let at = |d: time::Duration| Fact {
            value: "x".into(),
            at: crate::store::timestamp(time::OffsetDateTime::now_utc() - d),
        };
        assert!(fresh(&at(time::Duration::hours(23)), DAY));
        assert!(!fresh(&at(time::Duration::hours(25)), DAY));
        assert!(!fresh(
            &Fact {
                value: "x".into(),
                at: String::new()
            },
            DAY
        ));
    }

    #[test]
    fn a_service_provider_config_is_kept_as_a_fact() {
        let spc = wire::Spc {
            patch: Some(true),
            filter: Some(false),
            max_results: Some(50),
            ..Default::default()
        };
        for s in [
            Caps::Said(spc),
            Caps::Unknown("HTTP 404 Not Found: no such endpoint".to_string()),
        ] {
            assert_eq!(spc_of_fact(&fact_of_spc(&s)), s);
        }
        assert!(matches!(spc_of_fact("garbage"), Caps::Unknown(_)));
    }
}
