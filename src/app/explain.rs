//! `explain EMAIL [--online] [--output text|json]` (SPEC 2, 8): where a person is meant to
//! be on every target, which source file and line put them there, whether the known state
//! agrees, the last call that touched them, and with `--online` what each target holds now
//! (Kazoo: "groups containing a user", one listing; elsewhere one read of each group the
//! person is meant to be in or is known in), every disagreement with the known state marked.
//!
//! Read-only: the state database is opened read-only, and online reads go through a `Ctx`
//! with a dry recorder. Exit 0, or 1 when an online read failed (its target is named).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use super::report;
use crate::cli::Format;
use crate::config::{Config, Flavor, Kind, TargetConfig};
use crate::model::Desired;
use crate::plan::{Known, KnownGroup};
use crate::store::{CallRow, HistoryFilter, Store};
use crate::sync::ExitCode;
use crate::targets::{self, Ctx, Recorder, Target};

/// One group of one target, as far as this person is concerned.
#[derive(Debug, Default, Serialize)]
struct GroupView {
    key: Option<String>,
    name: String,
    /// The target's id of the group (known state, or what the target answered).
    remote_id: Option<String>,
    /// The source puts the person in this group.
    meant: bool,
    /// Where in the source (file:line).
    #[serde(skip_serializing_if = "Option::is_none")]
    put_there_by: Option<String>,
    /// rostersync manages this group (it is in the known state).
    managed: bool,
    /// The known state has the person in this group.
    known: bool,
    /// `--online`: the target has the person in this group now (None: not asked, or the
    /// read failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    online: Option<bool>,
    /// Everything that disagrees (source vs known state, known state vs the target now).
    disagreements: Vec<String>,
}

/// One target's part.
#[derive(Debug, Serialize)]
struct TargetView {
    name: String,
    kind: &'static str,
    member_id: Option<String>,
    /// Where the id comes from: `source`, `email` (MaestroQA names members by email),
    /// `cache` (a lookup of an earlier run), `known state`, `lookup` (asked now, --online).
    member_id_from: Option<&'static str>,
    /// The `keep_members` pattern that protects the person on this target.
    #[serde(skip_serializing_if = "Option::is_none")]
    protected_by: Option<String>,
    /// What the protection cannot see on this kind (DeepCall: agents' emails).
    #[serde(skip_serializing_if = "Option::is_none")]
    protection_note: Option<String>,
    groups: Vec<GroupView>,
    /// `--online`: why the target could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    online_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_call: Option<CallRow>,
}

impl TargetView {
    fn group(&mut self, key: Option<&str>, remote_id: Option<&str>) -> Option<&mut GroupView> {
        self.groups.iter_mut().find(|g| {
            (key.is_some() && g.key.as_deref() == key)
                || (remote_id.is_some() && g.remote_id.as_deref() == remote_id)
        })
    }
}

/// The member id of `email` on `t`, and where it comes from (offline).
fn member_id(
    t: &TargetConfig,
    desired: &Desired,
    email: &str,
    cache: &std::collections::HashMap<String, Option<String>>,
    known: &Known,
) -> Option<(String, &'static str)> {
    if let Some(id) = desired.people.get(email).and_then(|p| p.ids.get(&t.name)) {
        return Some((id.clone(), "source"));
    }
    if t.kind == Kind::Scim && t.flavor == Flavor::Maestroqa {
        return Some((email.to_string(), "email"));
    }
    if let Some(Some(id)) = cache.get(email) {
        return Some((id.clone(), "cache"));
    }
    known
        .groups
        .values()
        .flat_map(|g| g.members.iter())
        .find(|(_, m)| {
            m.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        })
        .map(|(id, _)| (id.clone(), "known state"))
}

/// Offline view of one target: source vs known state.
fn offline(
    t: &TargetConfig,
    desired: &Desired,
    email: &str,
    store: Option<&Store>,
) -> Result<(TargetView, Known), crate::store::StoreError> {
    let (known, cache) = match store {
        Some(s) => (s.known(&t.name)?, s.resolution_cache(&t.name)?),
        None => (Known::default(), Default::default()),
    };
    let id = member_id(t, desired, email, &cache, &known);
    let mut v = TargetView {
        name: t.name.clone(),
        kind: t.kind.as_str(),
        member_id: id.as_ref().map(|(i, _)| i.clone()),
        member_id_from: id.as_ref().map(|(_, f)| *f),
        protected_by: t
            .keep_members
            .protects_person(id.as_ref().map(|(i, _)| i.as_str()), Some(email))
            .map(str::to_string),
        protection_note: None,
        groups: Vec::new(),
        online_error: None,
        last_call: None,
    };
    if t.kind == Kind::AssignGroup && t.keep_members.patterns().any(|p| !p.starts_with("id:")) {
        v.protection_note = Some(
            "DeepCall's answers carry no email: an email pattern protects an agent only when a \
             source person carries its id for this target; protect agents added by hand with \
             `id:` patterns"
                .into(),
        );
    }
    let has = |g: &KnownGroup| {
        v.member_id
            .as_ref()
            .is_some_and(|id| g.members.contains_key(id))
            || g.members.values().any(|m| {
                m.email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            })
    };
    let mut groups = Vec::new();
    for g in desired
        .groups
        .values()
        .filter(|g| g.is_for(&t.name) && g.members.iter().any(|m| **m == *email))
    {
        let k = known.groups.get(&g.key);
        let at = g.member_origin(email);
        let mut gv = GroupView {
            key: Some(g.key.clone()),
            name: g.name.clone(),
            remote_id: k.map(|k| k.remote_id.clone()),
            meant: true,
            put_there_by: Some(at.to_string()),
            managed: k.is_some(),
            known: k.is_some_and(has),
            ..Default::default()
        };
        if k.is_none() {
            gv.disagreements
                .push("the group is not on the target yet (the next sync creates it)".into());
        } else if !gv.known {
            gv.disagreements
                .push("the known state does not have them (the next sync adds them)".into());
        }
        groups.push(gv);
    }
    for k in known.groups.values().filter(|k| has(k)) {
        if groups.iter().any(|g| g.key.as_deref() == Some(&k.key)) {
            continue;
        }
        groups.push(GroupView {
            key: Some(k.key.clone()),
            name: k.name.clone(),
            remote_id: Some(k.remote_id.clone()),
            managed: true,
            known: true,
            disagreements: vec![
                "the known state has them, the source does not (the next sync removes them, as the membership mode allows)".into(),
            ],
            ..Default::default()
        });
    }
    v.groups = groups;
    if let Some(s) = store {
        let f = HistoryFilter {
            limit: 1,
            target: Some(t.name.clone()),
            email: Some(email.to_string()),
            ..Default::default()
        };
        v.last_call = s.history(&f)?.into_iter().next();
    }
    Ok((v, known))
}

/// `--online`: asks the target what it holds for the person now, and marks every
/// disagreement with the known state.
async fn online(
    facts: crate::store::Facts,
    t: &TargetConfig,
    email: &str,
    v: &mut TargetView,
    known: &Known,
) -> Result<(), super::AskError> {
    let missing = t.missing_secrets();
    if !missing.is_empty() {
        return Err(super::AskError::MissingSecrets(missing.join(", ")));
    }
    let (target, http) = targets::build(t)?;
    let ctx = Ctx::new(t.name.clone(), http, Arc::new(Recorder::dry()), facts);
    let target: &dyn Target = target.as_ref();
    if v.member_id.is_none()
        && target.can_lookup()
        && let Some(id) = target.lookup(&ctx, email).await?
    {
        v.member_id = Some(id);
        v.member_id_from = Some("lookup");
    }
    let Some(id) = v.member_id.clone() else {
        for g in v.groups.iter_mut() {
            g.disagreements
                .push("the target has nobody with this email".into());
        }
        return Ok(());
    };
    if let Some(all) = target.groups_of(&ctx, &id).await? {
        let holding: BTreeSet<&str> = all.iter().map(|(gid, _)| gid.as_str()).collect();
        for g in v.groups.iter_mut().filter(|g| g.remote_id.is_some()) {
            g.online = Some(holding.contains(g.remote_id.as_deref().unwrap_or_default()));
        }
        for (gid, name) in &all {
            if v.group(None, Some(gid)).is_some() {
                continue;
            }
            let managed = known.groups.values().find(|k| &k.remote_id == gid);
            let mut gv = GroupView {
                key: managed.map(|k| k.key.clone()),
                name: name.clone(),
                remote_id: Some(gid.clone()),
                managed: managed.is_some(),
                online: Some(true),
                ..Default::default()
            };
            if managed.is_none() {
                gv.disagreements.push(
                    "on the target in a group rostersync does not manage (never touched by it)"
                        .into(),
                );
            }
            v.groups.push(gv);
        }
    } else {
        for g in v.groups.iter_mut() {
            let now = match g
                .remote_id
                .as_deref()
                .and_then(|rid| known.groups.values().find(|k| k.remote_id == rid))
            {
                Some(k) => target.read(&ctx, k).await?,
                None => {
                    target
                        .find(&ctx, g.key.as_deref().unwrap_or(&g.name), &g.name)
                        .await?
                }
            };
            match now {
                Some(r) => {
                    g.remote_id.get_or_insert(r.id.clone());
                    g.online = Some(r.members.contains(&id));
                }
                None => g.online = None,
            }
        }
    }
    for g in v.groups.iter_mut() {
        match (g.online, g.known, g.managed) {
            (Some(false), true, _) => g.disagreements.push(
                "the known state has them, the target does not now (removed by hand? `sync --full` repairs it)".into(),
            ),
            (Some(true), false, true) => g.disagreements.push(
                "the target has them now, the known state does not (added by hand? `sync --full` reads it back)".into(),
            ),
            _ => {}
        }
    }
    Ok(())
}

pub(super) fn explain(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    email: &str,
    ask: bool,
    output: Format,
) -> ExitCode {
    let email = email.trim().to_lowercase();
    let desired = match cfg.load_source_allowing_empty(true) {
        Ok(d) => d,
        Err(e) => {
            report(&e);
            return ExitCode::Usage;
        }
    };
    let store = match Store::open_read_only_at(&cfg.state) {
        Ok(s) => s,
        Err(e) => {
            report(&e);
            return ExitCode::Failed;
        }
    };
    // Read here, off the runtime: what the targets' answers have shown (for `--online`).
    let mut facts = match (&store, ask) {
        (Some(s), true) => s.all_facts().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read what is known about the targets; probing as on a first run");
            Default::default()
        }),
        _ => Default::default(),
    };
    let mut code = ExitCode::Ok;
    let mut views = Vec::new();
    for t in &cfg.targets {
        let (mut v, known) = match offline(t, &desired, &email, store.as_ref()) {
            Ok(x) => x,
            Err(e) => {
                report(&e);
                return ExitCode::Failed;
            }
        };
        if ask
            && let Err(e) = rt.block_on(online(
                facts.remove(&t.name).unwrap_or_default(),
                t,
                &email,
                &mut v,
                &known,
            ))
        {
            tracing::warn!(target = %t.name, error = %e, "explain --online: the target could not be asked");
            v.online_error = Some(e.to_string());
            code = code.max(ExitCode::Failed);
        }
        views.push(v);
    }
    let person = desired.people.get(&email);
    match output {
        Format::Json => {
            let doc = json!({
                "email": email,
                "name": person.and_then(|p| p.name.clone()),
                "defined_at": person.map(|p| p.origin.to_string()),
                "online": ask,
                "targets": views,
                "exit_code": code,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).expect("serializes")
            );
        }
        Format::Text => print!("{}", text(&email, person, &views, ask)),
    }
    code
}

fn text(
    email: &str,
    person: Option<&crate::model::Person>,
    views: &[TargetView],
    ask: bool,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    match person {
        Some(p) => {
            let name = p
                .name
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let _ = writeln!(out, "{email}{name} (defined at {})", p.origin);
        }
        None => {
            let _ = writeln!(out, "{email} (not in people:)");
        }
    }
    for v in views {
        let id = match (&v.member_id, v.member_id_from) {
            (Some(id), Some("email")) => format!("member id {id} (the email itself)"),
            (Some(id), Some(from)) => format!("member id {id} (from the {from})"),
            _ => "member id not resolved yet (the next sync looks it up)".into(),
        };
        let _ = writeln!(out, "{} ({}): {id}", v.name, v.kind);
        if let Some(p) = &v.protected_by {
            let _ = writeln!(
                out,
                "  protected by keep_members \"{p}\": never removed on this target"
            );
        }
        if let Some(n) = &v.protection_note {
            let _ = writeln!(out, "  note: {n}");
        }
        if v.groups.is_empty() {
            let _ = writeln!(out, "  in no group");
        }
        let mut by_name: BTreeMap<(bool, &str), &GroupView> = BTreeMap::new();
        for g in &v.groups {
            by_name.insert((!g.meant, &g.name), g);
        }
        for g in by_name.values() {
            let mark = if g.disagreements.is_empty() { " " } else { "!" };
            let mut line = if g.meant {
                format!(
                    "{mark} in \"{}\" (key {}), put there by {}",
                    g.name,
                    g.key.as_deref().unwrap_or("-"),
                    g.put_there_by.as_deref().unwrap_or("?")
                )
            } else {
                format!("{mark} not meant to be in \"{}\"", g.name)
            };
            if g.known && g.meant {
                line += "; the known state agrees";
            }
            match g.online {
                Some(true) => line += "; on the target now",
                Some(false) => line += "; NOT on the target now",
                None if ask && g.managed => line += "; the target no longer has this group",
                None => {}
            }
            let _ = writeln!(out, "  {line}");
            for d in &g.disagreements {
                let _ = writeln!(out, "      ! {d}");
            }
        }
        if let Some(e) = &v.online_error {
            let _ = writeln!(out, "  ! could not ask the target: {e}");
        }
        match &v.last_call {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "  last call: {} run {} {} \"{}\" {} ({})",
                    c.at,
                    c.run,
                    c.op,
                    c.group_name.as_deref().unwrap_or("-"),
                    c.outcome,
                    c.status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "no answer".into())
                );
            }
            None => {
                let _ = writeln!(out, "  no call has touched them yet");
            }
        }
    }
    out
}
