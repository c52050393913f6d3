//! Writes to a SCIM server, recording what its answers show: a create records the members
//! its answer shows and adds the others in a PATCH; a PATCH answer that carries the group
//! is compared with what was sent; a 501 falls back to the documented alternative once.

use std::collections::HashSet;

use reqwest::Method;

use super::wire::{self, PatchParts, RemoveForm, Shown};
use super::{
    FACT_CREATE, FACT_REMOVE_FORM, FACT_RENAME, Scim, create_verdict, failed_with,
    membership_verdict, verdict,
};
use crate::config::Flavor;
use crate::plan::{Create, KnownMember, Member, Update};
use crate::store::Delta;
use crate::targets::{CallInfo, Ctx, OpError, Pending, Request, Retry, batches, created_delta};

/// At most this many ids are named in a message.
const NAMED: usize = 5;

/// Some ids for a message: the first few, and how many more.
fn some_ids<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> String {
    let n = ids.len();
    let mut s: Vec<&str> = ids.take(NAMED).collect();
    let more = n - s.len();
    s.sort_unstable();
    let mut out = s.join(", ");
    if more > 0 {
        out += &format!(" and {more} more");
    }
    out
}

/// Members added by rostersync, as the known state keeps them.
fn ours(ms: &[&Member]) -> Vec<(String, KnownMember)> {
    ms.iter()
        .map(|m| {
            let k = KnownMember {
                owned: true,
                receive_call: false,
                email: m.email.as_deref().map(std::sync::Arc::from),
            };
            (m.id.clone(), k)
        })
        .collect()
}

/// What one list's answer proves: the additions it shows, the removals it no longer
/// shows, and a note for each that it contradicts. `shown` None: the answer says nothing
/// of this list, so the call's success confirms it as sent.
fn split<'a>(
    what: &str,
    add: &'a [Member],
    remove: &'a [Member],
    shown: Option<&[String]>,
    notes: &mut Vec<String>,
) -> (Vec<&'a Member>, Vec<&'a Member>) {
    let Some(shown) = shown else {
        return (add.iter().collect(), remove.iter().collect());
    };
    let set: HashSet<&str> = shown.iter().map(String::as_str).collect();
    let (added, missing): (Vec<&Member>, Vec<&Member>) =
        add.iter().partition(|m| set.contains(m.id.as_str()));
    let (left, removed): (Vec<&Member>, Vec<&Member>) =
        remove.iter().partition(|m| set.contains(m.id.as_str()));
    if !missing.is_empty() {
        notes.push(format!(
            "{} of the {} {what} added are not in the answer ({})",
            missing.len(),
            add.len(),
            some_ids(missing.iter().map(|m| m.id.as_str()))
        ));
    }
    if !left.is_empty() {
        notes.push(format!(
            "{} of the {} {what} removed are still in the answer ({})",
            left.len(),
            remove.len(),
            some_ids(left.iter().map(|m| m.id.as_str()))
        ));
    }
    (added, removed)
}

/// The state change a PATCH's answer proves (what it shows where it shows the group, the
/// call as sent where it does not), and how the answer contradicts the call, if it does.
pub(super) fn answered(
    key: &str,
    parts: &PatchParts<'_>,
    shown: &Shown,
) -> (Delta, Option<String>) {
    let mut notes = Vec::new();
    let (added, removed) = split(
        "members",
        parts.add,
        parts.remove,
        shown.members.as_deref(),
        &mut notes,
    );
    let (oadded, oremoved) = split(
        "owners",
        parts.add_owners,
        parts.remove_owners,
        shown.owners.as_deref(),
        &mut notes,
    );
    let ids = |ms: &[&Member]| ms.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    let delta = Delta::Members {
        key: key.to_string(),
        added: ours(&added),
        removed: ids(&removed),
        owners_added: ours(&oadded),
        owners_removed: ids(&oremoved),
        receive_call: None,
    };
    (delta, (!notes.is_empty()).then(|| notes.join("; ")))
}

/// The members of `sent` that `shown` holds.
fn kept(sent: &[Member], shown: &[String]) -> Vec<Member> {
    let set: HashSet<&str> = shown.iter().map(String::as_str).collect();
    sent.iter()
        .filter(|m| set.contains(m.id.as_str()))
        .cloned()
        .collect()
}

/// The members of `sent` that `shown` does not hold.
fn missing(sent: &[Member], shown: &[String]) -> Vec<Member> {
    let set: HashSet<&str> = shown.iter().map(String::as_str).collect();
    sent.iter()
        .filter(|m| !set.contains(m.id.as_str()))
        .cloned()
        .collect()
}

impl Scim {
    /// `POST /Groups`, then whatever its answer did not show: the members it shows are
    /// recorded with the group; when it carries no `members` at all (and the server is
    /// not known to show them), the group is read back once; the members sent that
    /// neither shows are added with a PATCH and recorded when that succeeds.
    pub(super) async fn create_group(&self, ctx: &Ctx, op: &Create) -> Result<String, OpError> {
        let body = wire::create_body(self.flavor, &op.name, &op.members, &op.owners);
        let req = Request::new(Method::POST, self.url("/Groups")).json(body);
        let mut all = op.members.clone();
        all.extend(op.owners.iter().cloned());
        let info = CallInfo::new("create").group(&op.key, &op.name).adds(&all);
        let p = ctx
            .send(info, req, Retry::OnlyIfNotApplied, &create_verdict)
            .await?;
        let (id, shown) = match wire::created(&p.reply.body) {
            Ok(x) => x,
            Err(e) => {
                ctx.confirm(p, Delta::None).await?;
                return Err(e.into());
            }
        };
        // An answer without `members`: none kept, when the server is known to show them
        // (or to drop them); else unknown until read.
        let known = ctx.fact(super::FACT_CREATE).is_some();
        let or_none = |shown: Option<Vec<String>>, sent: &[Member]| {
            shown.or_else(|| (sent.is_empty() || known).then(Vec::new))
        };
        let members = or_none(shown.members.clone(), &op.members);
        // rfc7644 sends no owners in a create (servers refuse them); they are recorded as
        // the plan has them, as before.
        let owners = match self.flavor {
            Flavor::Maestroqa => or_none(shown.owners.clone(), &op.owners),
            Flavor::Rfc7644 => Some(op.owners.iter().map(|m| m.id.clone()).collect()),
        };
        if shown.members.as_ref().is_some_and(|m| !m.is_empty())
            && ctx
                .fact(FACT_CREATE)
                .is_none_or(|f| f.value != "shows_members")
        {
            ctx.learn(FACT_CREATE, Some("shows_members")).await?;
        }
        let of = |sent: &[Member], shown: &Option<Vec<String>>| match shown {
            Some(s) => kept(sent, s),
            None => Vec::new(),
        };
        let recorded = Create {
            members: of(&op.members, &members),
            owners: of(&op.owners, &owners),
            ..op.clone()
        };
        ctx.confirm(p, created_delta(&recorded, &id)).await?;
        let (members, owners) = match (members, owners) {
            (Some(m), Some(o)) => (m, o),
            (m, o) => self
                .read_created(ctx, op, &id, m.is_none(), o.is_none())
                .await
                .map_err(|e| OpError::AfterCreate {
                    what: "its answer did not show its members and reading it back failed".into(),
                    cause: Box::new(e),
                })?,
        };
        let (add, add_owners) = (missing(&op.members, &members), missing(&op.owners, &owners));
        if add.is_empty() && add_owners.is_empty() {
            return Ok(id);
        }
        tracing::info!(target = %ctx.target, group = %op.name, sent = op.members.len() + op.owners.len(),
            missing = add.len() + add_owners.len(),
            "the server did not keep every member the create carried; adding the others");
        let follow = Update {
            key: op.key.clone(),
            remote_id: id.clone(),
            name: op.name.clone(),
            add,
            add_owners,
            members_after: op.members.iter().map(|m| m.id.clone()).collect(),
            ..Default::default()
        };
        let n = follow.add.len() + follow.add_owners.len();
        match self.update_group(ctx, &follow).await {
            Ok(()) => Ok(id),
            Err(e) => Err(OpError::AfterCreate {
                what: format!("adding the {n} members its answer did not show failed"),
                cause: Box::new(e),
            }),
        }
    }

    /// Reads a group just created whose answer did not show its members (or owners), and
    /// records those of the sent ones it holds. Gives the lists as read (a full read that
    /// leaves a list out has none).
    async fn read_created(
        &self,
        ctx: &Ctx,
        op: &Create,
        id: &str,
        members: bool,
        owners: bool,
    ) -> Result<(Vec<String>, Vec<String>), OpError> {
        let info = CallInfo::new("read").group(&op.key, &op.name);
        let req = Request::new(Method::GET, self.url(&format!("/Groups/{id}")));
        let p = ctx.send(info, req, Retry::Always, &verdict).await?;
        let g = match wire::group("the group", &p.reply.body) {
            Ok(g) => g.remote(),
            Err(e) => {
                ctx.confirm(p, Delta::None).await?;
                return Err(e.into());
            }
        };
        let none: &[Member] = &[];
        let (m_sent, o_sent) = (
            if members { &op.members[..] } else { none },
            if owners { &op.owners[..] } else { none },
        );
        let (m_kept, o_kept) = (kept(m_sent, &g.members), kept(o_sent, &g.owners));
        fn refs(v: &[Member]) -> Vec<&Member> {
            v.iter().collect()
        }
        let delta = Delta::Members {
            key: op.key.clone(),
            added: ours(&refs(&m_kept)),
            removed: Vec::new(),
            owners_added: ours(&refs(&o_kept)),
            owners_removed: Vec::new(),
            receive_call: None,
        };
        ctx.confirm(p, delta).await?;
        if members && !m_sent.is_empty() && m_kept.is_empty() {
            ctx.learn(FACT_CREATE, Some("drops_members")).await?;
        }
        let shown = |asked: bool, read: Vec<String>, sent: &[Member]| {
            if asked {
                read
            } else {
                sent.iter().map(|m| m.id.clone()).collect()
            }
        };
        Ok((
            shown(members, g.members, &op.members),
            shown(owners, g.owners, &op.owners),
        ))
    }

    /// Sends an update in PATCHes of at most `batch_size` members each; the rename rides
    /// in the first (unless the server is known not to rename).
    pub(super) async fn update_group(&self, ctx: &Ctx, u: &Update) -> Result<(), OpError> {
        let mut rename = u.rename_from.as_ref().map(|_| u.name.as_str());
        if rename.is_some() && self.cannot_rename(ctx) {
            self.warn_rename(u);
            rename = None;
        }
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
                rename: if i == 0 { rename } else { None },
                add: add.get(i).copied().unwrap_or(empty),
                remove: rem.get(i).copied().unwrap_or(empty),
                add_owners: oadd.get(i).copied().unwrap_or(empty),
                remove_owners: orem.get(i).copied().unwrap_or(empty),
            };
            if parts.rename.is_none() && !parts.has_membership() {
                continue;
            }
            self.patch(ctx, u, &parts).await?;
        }
        Ok(())
    }

    /// One PATCH. A 501 to a PATCH that renames says neither which part the server cannot
    /// do: the members are sent alone (with their own fallback), then the rename alone; a
    /// rename answered 501 means the server cannot rename (kept as a fact, warned).
    async fn patch(&self, ctx: &Ctx, u: &Update, parts: &PatchParts<'_>) -> Result<(), OpError> {
        if parts.rename.is_none() {
            return self.patch_members(ctx, u, parts).await;
        }
        let form = self.remove_form(ctx);
        let e = match self.send_patch(ctx, u, parts, form).await {
            Ok(p) => return self.confirm_patch(ctx, u, parts, p).await,
            Err(e) if failed_with(&e, 501) => e,
            Err(e) => return Err(e),
        };
        let only = PatchParts {
            rename: parts.rename,
            ..Default::default()
        };
        if parts.has_membership() {
            self.patch_members(
                ctx,
                u,
                &PatchParts {
                    rename: None,
                    ..*parts
                },
            )
            .await?;
            match self.send_patch(ctx, u, &only, form).await {
                Ok(p) => return self.confirm_patch(ctx, u, &only, p).await,
                Err(e) if failed_with(&e, 501) => {}
                Err(e) => return Err(e),
            }
        }
        tracing::debug!(error = %e, "a rename answered 501");
        ctx.learn(FACT_RENAME, Some("unsupported")).await?;
        self.warn_rename(u);
        Ok(())
    }

    /// A PATCH of members only, in the form this target removes with. A filtered removal
    /// answered 501 is resent once in the value form (`remove_by_value`); a value form
    /// learned earlier and refused now (400) is forgotten and the filter form sent once.
    async fn patch_members(
        &self,
        ctx: &Ctx,
        u: &Update,
        parts: &PatchParts<'_>,
    ) -> Result<(), OpError> {
        let form = self.remove_form(ctx);
        match self.send_patch(ctx, u, parts, form).await {
            Ok(p) => self.confirm_patch(ctx, u, parts, p).await,
            Err(e)
                if failed_with(&e, 501)
                    && parts.has_removals()
                    && form == RemoveForm::Filter
                    && self.pinned_form.is_none() =>
            {
                tracing::info!(target = %ctx.target, group = %u.name,
                    "the server cannot remove members by a filtered path (501); sending the value form once and reading the group back");
                self.remove_by_value(ctx, u, parts).await
            }
            Err(e)
                if failed_with(&e, 400)
                    && parts.has_removals()
                    && form == RemoveForm::Value
                    && self.flavor == Flavor::Rfc7644
                    && self.pinned_form.is_none() =>
            {
                tracing::warn!(target = %ctx.target, group = %u.name, error = %e,
                    "the value form of a removal, learned earlier, was refused; forgetting it and sending the filtered form");
                ctx.learn(FACT_REMOVE_FORM, None).await?;
                let p = self.send_patch(ctx, u, parts, RemoveForm::Filter).await?;
                self.confirm_patch(ctx, u, parts, p).await
            }
            Err(e) => Err(e),
        }
    }

    async fn send_patch(
        &self,
        ctx: &Ctx,
        u: &Update,
        parts: &PatchParts<'_>,
        form: RemoveForm,
    ) -> Result<Pending, OpError> {
        let body = wire::patch_body(form, parts).expect("a PATCH is sent only with an operation");
        let mut added = parts.add.to_vec();
        added.extend(parts.add_owners.iter().cloned());
        let mut removed = parts.remove.to_vec();
        removed.extend(parts.remove_owners.iter().cloned());
        let op = if parts.rename.is_some() && !parts.has_membership() {
            "rename"
        } else {
            "update"
        };
        let info = CallInfo::new(op)
            .group(&u.key, &u.name)
            .adds(&added)
            .removes(&removed);
        let req =
            Request::new(Method::PATCH, self.url(&format!("/Groups/{}", u.remote_id))).json(body);
        ctx.send(info, req, Retry::Always, &membership_verdict)
            .await
    }

    /// Records a PATCH with what its answer shows (`answered`); an answer that shows
    /// another result than sent fails the group after recording it.
    async fn confirm_patch(
        &self,
        ctx: &Ctx,
        u: &Update,
        parts: &PatchParts<'_>,
        p: Pending,
    ) -> Result<(), OpError> {
        let shown = wire::shown(&p.reply.body);
        let (delta, mut disagreement) = answered(&u.key, parts, &shown);
        ctx.confirm(p, delta).await?;
        match (parts.rename, &shown.name) {
            // The answer shows another name: the known name stays the one it had.
            (Some(sent), Some(name)) if name != sent => {
                let note = format!("the answer shows the name \"{name}\", not \"{sent}\"");
                disagreement = Some(match disagreement {
                    Some(d) => format!("{d}; {note}"),
                    None => note,
                });
            }
            (Some(_), _) => ctx.renamed(u).await?,
            (None, _) => {}
        }
        match disagreement {
            Some(m) => Err(OpError::Disagreed(m)),
            None => Ok(()),
        }
    }

    /// The value form of a removal after the filtered one was answered 501, proven by
    /// reading the group back: the members removed must be gone and every other member
    /// still there. Members that went too are put back and the group fails; only a proven
    /// value form is kept for later runs.
    async fn remove_by_value(
        &self,
        ctx: &Ctx,
        u: &Update,
        parts: &PatchParts<'_>,
    ) -> Result<(), OpError> {
        let p = self.send_patch(ctx, u, parts, RemoveForm::Value).await?;
        let info = CallInfo::new("read").group(&u.key, &u.name);
        let req = Request::new(Method::GET, self.url(&format!("/Groups/{}", u.remote_id)));
        let read = async {
            let reply = ctx.read(info, req, &verdict).await?;
            Ok::<_, OpError>(wire::group("the group", &reply.body)?.remote())
        }
        .await;
        let g = match read {
            Ok(g) => g,
            Err(e) => {
                // Unproven: recorded as its answer says, the form not learned.
                self.confirm_patch(ctx, u, parts, p).await?;
                return Err(e);
            }
        };
        let shown = Shown {
            members: Some(g.members.clone()),
            owners: Some(g.owners.clone()),
            name: None,
        };
        let (delta, disagreement) = answered(&u.key, parts, &shown);
        ctx.confirm(p, delta).await?;
        let now: HashSet<&str> = g.members.iter().map(String::as_str).collect();
        let adding: HashSet<&str> = u.add.iter().map(|m| m.id.as_str()).collect();
        let lost: Vec<Member> = u
            .members_after
            .iter()
            .filter(|id| !adding.contains(id.as_str()) && !now.contains(id.as_str()))
            .map(|id| Member {
                id: id.clone(),
                email: None,
                online: false,
            })
            .collect();
        if !lost.is_empty() {
            let put = PatchParts {
                add: &lost,
                ..Default::default()
            };
            let back = match self.send_patch(ctx, u, &put, RemoveForm::Value).await {
                // Still known: the known state never dropped them.
                Ok(p) => {
                    ctx.confirm(p, Delta::None).await?;
                    "they were put back".to_string()
                }
                Err(e) => {
                    let gone = Delta::Members {
                        key: u.key.clone(),
                        added: Vec::new(),
                        removed: lost.iter().map(|m| m.id.clone()).collect(),
                        owners_added: Vec::new(),
                        owners_removed: Vec::new(),
                        receive_call: None,
                    };
                    ctx.note("drift", &u.key, &u.name, gone).await?;
                    format!("putting them back failed ({e}); they are recorded as gone")
                }
            };
            tracing::error!(target = %ctx.target, group = %u.name, lost = lost.len(),
                "a removal in the value form took members it did not name: {back}");
            return Err(OpError::Disagreed(format!(
                "removing {} member(s) in the value form (path \"members\" with a value list), \
                 the only form this server accepts, also removed {} member(s) not named ({}); \
                 {back}. Remove these members by hand",
                parts.remove.len() + parts.remove_owners.len(),
                lost.len(),
                some_ids(lost.iter().map(|m| m.id.as_str()))
            )));
        }
        if let Some(m) = disagreement {
            return Err(OpError::Disagreed(m));
        }
        ctx.learn(FACT_REMOVE_FORM, Some(RemoveForm::Value.as_str()))
            .await?;
        tracing::info!(target = %ctx.target, group = %u.name,
            "the value form removed exactly the members named; later removals use it");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::test_member as m;

    fn ids(v: &[(String, KnownMember)]) -> Vec<&str> {
        v.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn an_answer_that_shows_the_group_is_what_is_recorded() {
        let (add, rem) = ([m("a"), m("b")], [m("c"), m("d")]);
        let parts = PatchParts {
            add: &add,
            remove: &rem,
            ..Default::default()
        };
        // Nothing shown (204, or no members in the answer): the call as sent.
        let (d, note) = answered("k", &parts, &Shown::default());
        let Delta::Members { added, removed, .. } = d else {
            panic!("members delta")
        };
        assert_eq!(
            (ids(&added), removed),
            (vec!["a", "b"], vec!["c".into(), "d".into()])
        );
        assert_eq!(note, None);
        // Shown: "b" was not added, "d" is still there.
        let shown = Shown {
            members: Some(vec!["a".into(), "d".into(), "x".into()]),
            ..Default::default()
        };
        let (d, note) = answered("k", &parts, &shown);
        let Delta::Members { added, removed, .. } = d else {
            panic!("members delta")
        };
        assert_eq!((ids(&added), removed), (vec!["a"], vec!["c".to_string()]));
        assert_eq!(
            note.as_deref(),
            Some(
                "1 of the 2 members added are not in the answer (b); \
                 1 of the 2 members removed are still in the answer (d)"
            )
        );
    }

    #[test]
    fn messages_name_a_few_ids() {
        let v: Vec<String> = (0..8).map(|i| format!("u{i}")).collect();
        assert_eq!(
            some_ids(v.iter().map(String::as_str)),
            "u0, u1, u2, u3, u4 and 3 more"
        );
        assert_eq!(kept(&[m("a"), m("b")], &["b".into()]), [m("b")]);
        assert_eq!(missing(&[m("a"), m("b")], &["b".into()]), [m("a")]);
    }
}
