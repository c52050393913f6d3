//! `[source.ldap]` (SPEC 3.1): the groups and people read live from LDAP or Active
//! Directory into the same validated [`Desired`] as files.
//!
//! One load is: connect and bind (`read::Conn`), one paged search of the groups, one paged
//! search of the people, the member values of each group read to the end (AD's ranges
//! included, `read::full_values`), member groups followed (cycle-safe, at most
//! `max_depth` deep), one paged search per route. Anything that fails, is cut short or is
//! not understood is a source error: the load never gives a shorter source.
//!
//! The digest of a directory source is the SHA-256 of the canonical source built from it
//! (people and groups, sorted), so an unchanged directory has an unchanged digest and the
//! no-op shortcut still applies.

pub mod read;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use ldap3::Scope;
use sha2::{Digest, Sha256};

pub use self::read::{CaFileError, read_ca_file};
use self::read::{Conn, Directory, Entry, ReadError};
use super::error::Errors;
use super::merge::email_problem;
use super::{SourceErrors, error::SourceError};
use crate::config::LdapSource;
use crate::intern::Interner;
use crate::model::{Desired, Group, Ids, Origin, Person};

/// Reads the directory: every group `groups_filter` matches under `groups_base`, with its
/// people. Runs on a thread of its own (with its own small runtime), so it may be called
/// from anywhere, the async runtime included.
///
/// # Errors
///
/// A connection, TLS, bind or search that fails, a limit reached, a referral, a range not
/// read to the end, a group nested deeper than `max_depth`; a group without one key or
/// one name, two groups with one key or name, a member with an email that is not one or
/// with several emails or ids; no groups at all unless `allow_empty`. Each names the
/// entry or the search.
pub fn load(
    cfg: &LdapSource,
    targets: &[&str],
    allow_empty: bool,
) -> Result<Desired, SourceErrors> {
    let at = origin_of(&cfg.url, None);
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| one(at.clone(), format!("cannot start the LDAP reader: {e}")))?;
            rt.block_on(async {
                let mut conn = Conn::open(cfg)
                    .await
                    .map_err(|e| one(at.clone(), e.to_string()))?;
                let result = gather(&mut conn, cfg, targets, allow_empty).await;
                conn.close().await;
                result
            })
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// One error at `origin`.
fn one(origin: Origin, message: String) -> SourceErrors {
    SourceErrors {
        errors: vec![SourceError { origin, message }],
        total: 1,
    }
}

/// Where an entry is, for messages and `explain`: `ldap://host/DN`.
fn origin_of(url: &str, dn: Option<&str>) -> Origin {
    let place = match dn {
        Some(dn) => format!("{}/{dn}", url.trim_end_matches('/')),
        None => url.to_string(),
    };
    Origin {
        file: Arc::from(Path::new(&place)),
        line: None,
    }
}

/// A DN in one form for comparing: lower-cased, without spaces around `,` and `=`.
fn norm_dn(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    for part in dn.split(',') {
        if !out.is_empty() {
            out.push(',');
        }
        match part.split_once('=') {
            Some((a, v)) => {
                out.push_str(&a.trim().to_lowercase());
                out.push('=');
                out.push_str(&v.trim().to_lowercase());
            }
            None => out.push_str(&part.trim().to_lowercase()),
        }
    }
    out
}

/// A `uniqueMember` value is a DN with an optional `#'0101'B` uid; the DN is kept.
fn strip_unique_uid(v: &str) -> &str {
    match v.rfind('#') {
        Some(i) if v[i + 1..].starts_with('\'') && v.ends_with("'B") => &v[..i],
        _ => v,
    }
}

/// What a member value turned out to be.
#[derive(Clone, Debug)]
enum Node {
    /// A person, by index into `Gather::people`.
    Person(usize),
    /// A person entry without the email attribute (skipped, warned once).
    NoEmail,
    /// An entry whose values are wrong (an error was recorded).
    Bad,
    /// A group: members of it count (nested).
    Group,
    /// Not an entry of the directory (skipped, warned once).
    Missing,
    /// An entry of the people search not looked at yet (by index into `Gather::pending`):
    /// only the entries a synced group reaches are checked, so a bad entry elsewhere
    /// under `people_base` stops nothing.
    Pending(usize),
}

/// A person read from the directory.
struct PersonRec {
    dn: String,
    email: Arc<str>,
    ids: Ids,
}

/// The state of one load.
struct Gather<'a, D> {
    dir: &'a mut D,
    cfg: &'a LdapSource,
    targets: &'a [&'a str],
    errors: Errors,
    emails: Interner,
    people: Vec<PersonRec>,
    /// Person index by lower-cased email, to find two entries with one email.
    by_email: HashMap<Arc<str>, usize>,
    /// What each member DN (normalized) is.
    nodes: HashMap<String, Node>,
    /// Person DN (normalized) by lower-cased uid, for `memberUid`.
    by_uid: HashMap<String, String>,
    /// The people search's entries, each taken when first reached.
    pending: Vec<Option<Entry>>,
    /// Member values of the groups read so far, by normalized DN.
    members_of: HashMap<String, Arc<Vec<String>>>,
    /// Entries already warned about.
    warned: HashSet<String>,
}

/// The attributes read of each person.
fn person_attrs(cfg: &LdapSource) -> Vec<String> {
    let mut a = vec![
        "objectClass".to_string(),
        cfg.email_attribute.clone(),
        cfg.uid_attribute.clone(),
    ];
    a.extend(cfg.ids.values().cloned());
    a
}

/// Reads the whole source through `dir`.
async fn gather<D: Directory>(
    dir: &mut D,
    cfg: &LdapSource,
    targets: &[&str],
    allow_empty: bool,
) -> Result<Desired, SourceErrors> {
    let fatal = |e: ReadError| one(origin_of(&cfg.url, None), e.to_string());
    let group_attrs = vec![
        "objectClass".to_string(),
        cfg.name_attribute.clone(),
        cfg.key_attribute.clone(),
        cfg.member_attribute.clone(),
    ];
    let groups = dir
        .search(
            &cfg.groups_base,
            Scope::Subtree,
            &cfg.groups_filter,
            &group_attrs,
        )
        .await
        .map_err(fatal)?;
    let people = dir
        .search(
            &cfg.people_base,
            Scope::Subtree,
            &cfg.people_filter,
            &person_attrs(cfg),
        )
        .await
        .map_err(fatal)?;
    let mut g = Gather {
        dir,
        cfg,
        targets,
        errors: Errors::default(),
        emails: Interner::default(),
        people: Vec::new(),
        by_email: HashMap::new(),
        nodes: HashMap::with_capacity(people.len()),
        by_uid: HashMap::new(),
        pending: Vec::with_capacity(people.len()),
        members_of: HashMap::new(),
        warned: HashSet::new(),
    };
    for p in people {
        g.add_pending(p);
    }
    // The synced groups' own members, read to the end (AD ranges) before any nesting.
    let mut synced = Vec::with_capacity(groups.len());
    for e in &groups {
        let values = read::full_values(g.dir, e, &cfg.member_attribute)
            .await
            .map_err(fatal)?;
        let norm = norm_dn(&e.dn);
        g.nodes.insert(norm.clone(), Node::Group);
        g.members_of.insert(norm, Arc::new(text_values(values)));
    }
    for e in &groups {
        synced.push(g.group(e).await.map_err(fatal)?);
    }
    let routes = g.routes().await.map_err(fatal)?;

    let mut by_key: BTreeMap<String, Group> = BTreeMap::new();
    let mut by_name: HashMap<String, Origin> = HashMap::new();
    for (mut group, dn) in synced.into_iter().flatten() {
        if let Some(routes) = &routes {
            let mut to: Vec<String> = routes
                .iter()
                .filter(|(dns, _)| dns.contains(&norm_dn(&dn)))
                .flat_map(|(_, t)| t.iter().cloned())
                .collect();
            to.sort();
            to.dedup();
            if to.is_empty() {
                tracing::warn!(
                    group = %group.name,
                    dn = %dn,
                    "no [[source.ldap.route]] matches this group; it goes to no target"
                );
            }
            group.targets = Some(to);
        }
        if let Some(first) = by_name.get(&group.name.to_lowercase()) {
            g.errors.push(
                group.origin.clone(),
                format!(
                    "group name {:?} is also the name of the group at {first}; targets find \
                     groups by name, so give them different names",
                    group.name
                ),
            );
            continue;
        }
        by_name.insert(group.name.to_lowercase(), group.origin.clone());
        match by_key.get(&group.key) {
            Some(other) => {
                let message = format!(
                    "{} {:?} is also the key of the group at {}; keys must be unique",
                    cfg.key_attribute, group.key, other.origin
                );
                g.errors.push(group.origin.clone(), message);
            }
            None => {
                by_key.insert(group.key.clone(), group);
            }
        }
    }
    if by_key.is_empty() && !allow_empty && g.errors.total() == 0 {
        g.errors.push(
            origin_of(&cfg.url, Some(&cfg.groups_base)),
            format!(
                "the directory has no group matching groups_filter = {:?} under \
                 groups_base; refusing to read it as \"remove everybody\" (check the filter, \
                 or set allow_empty_source = true if that is really meant)",
                cfg.groups_filter
            ),
        );
    }
    let mut people_out = BTreeMap::new();
    for p in &g.people {
        if !p.ids.is_empty() {
            people_out.insert(
                p.email.to_string(),
                Person {
                    email: p.email.to_string(),
                    name: None,
                    ids: p.ids.clone(),
                    origin: origin_of(&cfg.url, Some(&p.dn)),
                },
            );
        }
    }
    let mut desired = Desired {
        people: people_out,
        groups: by_key,
        files: Vec::new(),
        digest: String::new(),
    };
    desired.digest = canonical_digest(&desired);
    g.errors.into_result(desired)
}

/// The SHA-256 of the canonical source: people and groups as JSON, in key order.
pub fn canonical_digest(d: &Desired) -> String {
    let mut h = Sha256::new();
    h.update(b"rostersync canonical source 1\0");
    let body = serde_json::to_vec(&(&d.people, &d.groups)).expect("a source serializes");
    h.update(&body);
    hex::encode(h.finalize())
}

/// Values as text (DNs, uids); a value that is not UTF-8 is kept lossily (it will match
/// nothing and be warned about).
fn text_values(values: Vec<Vec<u8>>) -> Vec<String> {
    values
        .into_iter()
        .map(|v| {
            String::from_utf8(v)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        })
        .collect()
}

/// A key value as text: `objectGUID` (16 bytes) in AD's GUID form, other binary values in
/// hex, text as it is.
fn key_text(attr: &str, v: &[u8]) -> String {
    if attr.eq_ignore_ascii_case("objectGUID") && v.len() == 16 {
        let le = |r: std::ops::Range<usize>| {
            v[r].iter()
                .rev()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let be = |r: std::ops::Range<usize>| hex::encode(&v[r]);
        return format!(
            "{}-{}-{}-{}-{}",
            le(0..4),
            le(4..6),
            le(6..8),
            be(8..10),
            be(10..16)
        );
    }
    match std::str::from_utf8(v) {
        Ok(s) => s.to_string(),
        Err(_) => hex::encode(v),
    }
}

impl<D: Directory> Gather<'_, D> {
    fn origin(&self, dn: &str) -> Origin {
        origin_of(&self.cfg.url, Some(dn))
    }

    fn warn_once(&mut self, dn: &str, message: &str) {
        if self.warned.insert(norm_dn(dn)) {
            tracing::warn!(entry = %dn, "{message}");
        }
    }

    /// The one value of `attr` on `e`; records an error naming the entry when there are
    /// several. None when there is none.
    fn single<'e>(&mut self, e: &'e Entry, attr: &str) -> Option<&'e [u8]> {
        match e.values(attr) {
            [] => None,
            [one] => Some(one),
            many => {
                let message = format!(
                    "{attr} has {} values; rostersync needs exactly one",
                    many.len()
                );
                self.errors.push(self.origin(&e.dn), message);
                None
            }
        }
    }

    /// Keeps an entry of the people search, to be looked at when a group reaches it.
    fn add_pending(&mut self, e: Entry) {
        let norm = norm_dn(&e.dn);
        if self.nodes.contains_key(&norm) {
            return;
        }
        if let Some(uid) = e.values(&self.cfg.uid_attribute).first() {
            self.by_uid
                .entry(String::from_utf8_lossy(uid).to_lowercase())
                .or_insert_with(|| norm.clone());
        }
        self.pending.push(Some(e));
        self.nodes
            .insert(norm, Node::Pending(self.pending.len() - 1));
    }

    /// Records what a directory entry (read by its DN) is.
    fn add_entry(&mut self, e: &Entry) -> Node {
        let node = if e.is_group() {
            Node::Group
        } else {
            self.person(e)
        };
        self.nodes.insert(norm_dn(&e.dn), node.clone());
        node
    }

    /// What the entry at `norm` (a normalized DN) is, if it was seen; a pending entry is
    /// looked at now.
    fn known(&mut self, norm: &str) -> Option<Node> {
        match self.nodes.get(norm)?.clone() {
            Node::Pending(i) => {
                let e = self.pending[i]
                    .take()
                    .expect("a pending entry is taken once");
                Some(self.add_entry(&e))
            }
            n => Some(n),
        }
    }

    /// A person entry: its email (checked) and ids.
    fn person(&mut self, e: &Entry) -> Node {
        let email_attr = self.cfg.email_attribute.clone();
        if e.values(&email_attr).is_empty() {
            return Node::NoEmail;
        }
        let Some(raw) = self.single(e, &email_attr) else {
            return Node::Bad;
        };
        let raw = String::from_utf8_lossy(raw).into_owned();
        if let Some(problem) = email_problem(&raw) {
            let message = format!("{email_attr} {raw:?} is not an email address: {problem}");
            self.errors.push(self.origin(&e.dn), message);
            return Node::Bad;
        }
        let email = self.emails.intern(&raw.to_lowercase());
        let mut ids = Ids::default();
        let mut bad = false;
        for (target, attr) in self.cfg.ids.clone() {
            if e.values(&attr).len() > 1 {
                self.single(e, &attr);
                bad = true;
                continue;
            }
            if let Some(v) = e.values(&attr).first() {
                let id = String::from_utf8_lossy(v).trim().to_string();
                if !id.is_empty() && self.targets.contains(&target.as_str()) {
                    ids.insert(Arc::from(target.as_str()), id);
                }
            }
        }
        if bad {
            return Node::Bad;
        }
        if let Some(&other) = self.by_email.get(&email) {
            let first = &self.people[other];
            if first.ids != ids {
                let message = format!(
                    "{email_attr} {email:?} is also the email of {:?}, with other ids; one \
                     person must have one set of ids",
                    first.dn
                );
                self.errors.push(self.origin(&e.dn), message);
                return Node::Bad;
            }
            return Node::Person(other);
        }
        self.people.push(PersonRec {
            dn: e.dn.clone(),
            email: email.clone(),
            ids,
        });
        let i = self.people.len() - 1;
        self.by_email.insert(email, i);
        Node::Person(i)
    }

    /// What the member `dn` is, reading it when it was not in the people search.
    async fn node(&mut self, dn: &str) -> Result<Node, ReadError> {
        let norm = norm_dn(dn);
        if let Some(n) = self.known(&norm) {
            return Ok(n);
        }
        let attrs = person_attrs(self.cfg);
        let found = match self
            .dir
            .search(dn, Scope::Base, "(objectClass=*)", &attrs)
            .await
        {
            Ok(found) => found,
            // The directory says there is no such entry: a dangling member value.
            Err(ReadError::Result { rc: 32, .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        let node = match found.as_slice() {
            [e] => self.add_entry(e),
            _ => {
                self.nodes.insert(norm, Node::Missing);
                Node::Missing
            }
        };
        Ok(node)
    }

    /// The member values of the group at `dn`, read (to the end) once.
    async fn members_of(&mut self, dn: &str) -> Result<Arc<Vec<String>>, ReadError> {
        let norm = norm_dn(dn);
        if let Some(m) = self.members_of.get(&norm) {
            return Ok(m.clone());
        }
        let attrs = vec!["objectClass".to_string(), self.cfg.member_attribute.clone()];
        let found = self
            .dir
            .search(dn, Scope::Base, "(objectClass=*)", &attrs)
            .await?;
        let values = match found.first() {
            Some(e) => {
                text_values(read::full_values(self.dir, e, &self.cfg.member_attribute).await?)
            }
            None => Vec::new(),
        };
        let values = Arc::new(values);
        self.members_of.insert(norm, values.clone());
        Ok(values)
    }

    /// One synced group: its key, name and people (nested groups followed). None when its
    /// entry has a problem (recorded).
    async fn group(&mut self, e: &Entry) -> Result<Option<(Group, String)>, ReadError> {
        let cfg = self.cfg;
        let at = self.origin(&e.dn);
        let key = match self.single(e, &cfg.key_attribute) {
            Some(v) => key_text(&cfg.key_attribute, v),
            None => {
                if e.values(&cfg.key_attribute).is_empty() {
                    let message = format!(
                        "the group has no {} (key_attribute); on Active Directory write \
                         key_attribute = \"objectGUID\"",
                        cfg.key_attribute
                    );
                    self.errors.push(at, message);
                }
                return Ok(None);
            }
        };
        let name = match self.single(e, &cfg.name_attribute) {
            Some(v) => String::from_utf8_lossy(v).trim().to_string(),
            None => {
                if e.values(&cfg.name_attribute).is_empty() {
                    let message =
                        format!("the group has no {} (name_attribute)", cfg.name_attribute);
                    self.errors.push(at, message);
                }
                return Ok(None);
            }
        };
        if name.is_empty() {
            self.errors
                .push(at, format!("the group's {} is empty", cfg.name_attribute));
            return Ok(None);
        }
        // (email, where it came from), in the order found.
        let mut found: Vec<(Arc<str>, Origin)> = Vec::new();
        let top = norm_dn(&e.dn);
        let mut visited: HashSet<String> = HashSet::from([top]);
        // (group DN, path of DNs from the synced group to it)
        let mut stack: Vec<(String, Vec<String>)> = vec![(e.dn.clone(), Vec::new())];
        while let Some((dn, path)) = stack.pop() {
            let members = self.members_of(&dn).await?;
            let origin = if path.is_empty() {
                at.clone()
            } else {
                let mut via = e.dn.clone();
                for p in &path {
                    via.push_str(" > ");
                    via.push_str(p);
                }
                origin_of(&cfg.url, Some(&via))
            };
            let mut nested = Vec::new();
            for value in members.iter() {
                let node = if cfg.member_attribute.eq_ignore_ascii_case("memberUid") {
                    match self.by_uid.get(&value.to_lowercase()).cloned() {
                        Some(norm) => self.known(&norm).unwrap_or(Node::Missing),
                        None => {
                            let message = format!(
                                "memberUid {value:?} of this group matches no {} under \
                                 people_base; skipped",
                                cfg.uid_attribute
                            );
                            if self.warned.insert(format!("uid:{value}")) {
                                tracing::warn!(entry = %e.dn, "{message}");
                            }
                            continue;
                        }
                    }
                } else {
                    self.node(strip_unique_uid(value)).await?
                };
                match node {
                    Node::Person(i) => found.push((self.people[i].email.clone(), origin.clone())),
                    Node::NoEmail => self.warn_once(
                        value,
                        &format!(
                            "a member of {} has no {}; skipped",
                            e.dn, cfg.email_attribute
                        ),
                    ),
                    Node::Missing => self.warn_once(
                        value,
                        &format!("a member of {} is not in the directory; skipped", e.dn),
                    ),
                    Node::Bad => {}
                    Node::Pending(_) => unreachable!("a reached entry is looked at"),
                    Node::Group if !cfg.nested => self.warn_once(
                        value,
                        &format!(
                            "a member of {} is a group; its people do not count with \
                             nested = false",
                            e.dn
                        ),
                    ),
                    Node::Group => {
                        let child = strip_unique_uid(value).to_string();
                        if !visited.insert(norm_dn(&child)) {
                            continue; // seen: a cycle or a second path; counted once
                        }
                        if path.len() + 1 > cfg.max_depth {
                            let mut chain = vec![e.dn.clone()];
                            chain.extend(path.iter().cloned());
                            chain.push(child);
                            let message = format!(
                                "groups are nested deeper than max_depth = {} ({}); nothing \
                                 was planned from a partial group. Raise max_depth if this \
                                 is meant",
                                cfg.max_depth,
                                chain.join(" > ")
                            );
                            self.errors.push(at.clone(), message);
                            return Ok(None);
                        }
                        let mut p = path.clone();
                        p.push(child.clone());
                        nested.push((child, p));
                    }
                }
            }
            // Depth first, in the order the values came.
            stack.extend(nested.into_iter().rev());
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found.dedup_by(|later, first| later.0 == first.0);
        let (members, member_origins) = found.into_iter().unzip();
        Ok(Some((
            Group {
                key,
                name,
                members,
                owners: Vec::new(),
                receive_call: None,
                targets: None,
                origin: at,
                member_origins,
            },
            e.dn.clone(),
        )))
    }

    /// The groups each route matches (normalized DNs) and its targets; None without routes.
    async fn routes(&mut self) -> Result<Option<Vec<(HashSet<String>, Vec<String>)>>, ReadError> {
        if self.cfg.routes.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for r in &self.cfg.routes {
            let filter = format!("(&{}{})", self.cfg.groups_filter, r.filter);
            let found = self
                .dir
                .search(
                    &self.cfg.groups_base,
                    Scope::Subtree,
                    &filter,
                    &["1.1".to_string()],
                )
                .await?;
            out.push((
                found.iter().map(|e| norm_dn(&e.dn)).collect(),
                r.targets.clone(),
            ));
        }
        Ok(Some(out))
    }
}
