//! The `scim` kind: MaestroQA (`maestroqa` flavor, seed 000) or any RFC 7644 service.

pub mod wire;

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName};
use secrecy::ExposeSecret;

use super::decode::{self, NotUnderstood};
use super::http::{default_verdict, membership_verdict, secret_header, urlencode};
use super::{CallInfo, Ctx, Http, OpError, RemoteGroup, Request, Retry, Target, Verdict, batches};
use crate::config::{Auth, Flavor, Secret, TargetConfig};
use crate::plan::{Create, Delete, KnownGroup, KnownMember, Member, Update};
use crate::store::Delta;
use wire::PatchParts;

/// Page size when listing groups.
const PAGE: usize = 100;
/// Upper bound on pages read when looking for a group by name (100,000 groups).
const MAX_PAGES: usize = 1000;

pub struct Scim {
    base: String,
    flavor: Flavor,
    batch_size: usize,
    /// Every group as listed once per run, for name lookups where filtering is not
    /// supported; dropped when a create may have changed it.
    listing: tokio::sync::Mutex<Option<Vec<wire::Group>>>,
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
        listing: tokio::sync::Mutex::new(None),
    };
    Ok((Box::new(t), http))
}

/// 409 on a create means a group of that name exists: look again (and adopt) rather than fail.
fn create_verdict(status: u16, body: &[u8]) -> Verdict {
    if status == 409 {
        Verdict::Retry(super::http::message(status, body))
    } else {
        default_verdict(status, body)
    }
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
            let reply = ctx.read(info, req, &default_verdict).await?;
            Ok(wire::group("the group", &reply.body)?.remote())
        })
        .await
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
        let mut listing = self.listing.lock().await;
        if listing.is_none() {
            let mut all = Vec::new();
            let fetch = |start: usize| async move {
                let url = self.url(&format!("/Groups?startIndex={start}&count={PAGE}"));
                let info = CallInfo::new("find").group(key, name);
                let reply = ctx
                    .read(info, Request::new(Method::GET, url), &default_verdict)
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
}

#[async_trait]
impl Target for Scim {
    async fn probe(&self, ctx: &Ctx) -> Result<super::Probe, OpError> {
        let url = self.url(&format!("/Groups?startIndex=1&count={PAGE}"));
        let reply = ctx
            .read(
                CallInfo::new("probe"),
                Request::new(Method::GET, url),
                &default_verdict,
            )
            .await?;
        let (items, total) = wire::list::<wire::Group>("the group listing", &reply.body)?;
        let more = total.is_some_and(|t| t > items.len() as u64);
        Ok(super::Probe::of("groups", items.len(), more, &reply))
    }

    fn can_lookup(&self) -> bool {
        self.flavor == Flavor::Rfc7644
    }

    async fn lookup(&self, ctx: &Ctx, email: &str) -> Result<Option<String>, OpError> {
        let filter = format!("userName eq {}", wire::quote(email));
        let url = format!("{}?filter={}", self.url("/Users"), urlencode(&filter));
        let reply = ctx
            .read(
                CallInfo::new("lookup"),
                Request::new(Method::GET, url),
                &default_verdict,
            )
            .await?;
        let (users, _) = wire::list::<wire::User>("the user lookup", &reply.body)?;
        Ok(users
            .into_iter()
            .find(|u| u.user_name.eq_ignore_ascii_case(email))
            .map(|u| u.id))
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
        let filter = format!("displayName eq {}", wire::quote(name));
        let url = format!("{}?filter={}", self.url("/Groups"), urlencode(&filter));
        let info = CallInfo::new("find").group(key, name);
        match ctx
            .read(info, Request::new(Method::GET, url), &default_verdict)
            .await
        {
            Ok(reply) => {
                let (groups, _) = wire::list::<wire::Group>("the group lookup", &reply.body)?;
                match groups.iter().find(|g| g.display_name == name) {
                    Some(g) => self.complete(ctx, key, name, g).await,
                    None => Ok(None),
                }
            }
            // Filtering not supported (400 invalidFilter / 501): page instead.
            Err(OpError::Call(f)) if matches!(f.status, Some(400) | Some(501)) => {
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
        let body = wire::create_body(self.flavor, &op.name, &op.members, &op.owners);
        let req = Request::new(Method::POST, self.url("/Groups")).json(body);
        let mut all = op.members.clone();
        all.extend(op.owners.iter().cloned());
        let info = CallInfo::new("create").group(&op.key, &op.name).adds(&all);
        let p = match ctx
            .send(info, req, Retry::OnlyIfNotApplied, &create_verdict)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                // The group may exist now: the next lookup must list again.
                *self.listing.lock().await = None;
                return Err(e);
            }
        };
        let r = ctx.created(p, op, wire::created_id).await;
        if r.is_err() {
            // The group may exist now: the next lookup must list again.
            *self.listing.lock().await = None;
        }
        r
    }

    async fn update(&self, ctx: &Ctx, u: &Update) -> Result<(), OpError> {
        let size = self.batch_size;
        let (add, rem) = (batches(&u.add, size), batches(&u.remove, size));
        let (oadd, orem) = (
            batches(&u.add_owners, size),
            batches(&u.remove_owners, size),
        );
        let n = add.len().max(rem.len()).max(oadd.len()).max(orem.len());
        let empty: &[Member] = &[];
        for i in 0..n {
            let parts = PatchParts {
                rename: if i == 0 {
                    u.rename_from.as_ref().map(|_| u.name.as_str())
                } else {
                    None
                },
                add: add.get(i).copied().unwrap_or(empty),
                remove: rem.get(i).copied().unwrap_or(empty),
                add_owners: oadd.get(i).copied().unwrap_or(empty),
                remove_owners: orem.get(i).copied().unwrap_or(empty),
            };
            let Some(body) = wire::patch_body(self.flavor, &parts) else {
                continue;
            };
            let mut added = parts.add.to_vec();
            added.extend(parts.add_owners.iter().cloned());
            let mut removed = parts.remove.to_vec();
            removed.extend(parts.remove_owners.iter().cloned());
            let op = if parts.rename.is_some() && added.is_empty() && removed.is_empty() {
                "rename"
            } else {
                "update"
            };
            let info = CallInfo::new(op)
                .group(&u.key, &u.name)
                .adds(&added)
                .removes(&removed);
            let req = Request::new(Method::PATCH, self.url(&format!("/Groups/{}", u.remote_id)))
                .json(body);
            let p = ctx
                .send(info, req, Retry::Always, &membership_verdict)
                .await?;
            // One transaction: the history row and the members it proves.
            let ours = |ms: &[Member]| -> Vec<(String, KnownMember)> {
                let k = |m: &Member| KnownMember {
                    owned: true,
                    receive_call: false,
                    email: m.email.as_deref().map(std::sync::Arc::from),
                };
                ms.iter().map(|m| (m.id.clone(), k(m))).collect()
            };
            let ids = |ms: &[Member]| ms.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
            let delta = Delta::Members {
                key: u.key.clone(),
                added: ours(parts.add),
                removed: ids(parts.remove),
                owners_added: ours(parts.add_owners),
                owners_removed: ids(parts.remove_owners),
                receive_call: None,
            };
            ctx.confirm(p, delta).await?;
            if parts.rename.is_some() {
                ctx.renamed(u).await?;
            }
        }
        Ok(())
    }

    async fn delete(&self, ctx: &Ctx, d: &Delete) -> Result<(), OpError> {
        let req = Request::new(
            Method::DELETE,
            self.url(&format!("/Groups/{}", d.remote_id)),
        );
        let info = CallInfo::new("delete").group(&d.key, &d.name);
        ctx.deleted(
            d,
            ctx.send(info, req, Retry::Always, &default_verdict).await,
        )
        .await
    }
}
