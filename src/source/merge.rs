//! Checks the values read from every file and merges them into one [`Desired`] state:
//! people by email, groups by key, CSV rows into their groups.
//!
//! Files are added in order; checks that need every file (a CSV row before the group's
//! definition, `receive_call` against members added by CSV, names shared by two keys) run
//! in [`Builder::finish`]. All work is `O(n log n)` in the number of values.

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, hash_map};
use std::path::Path;
use std::sync::Arc;

use super::csv::Row;
use super::error::Errors;
use super::structured::{FileDef, GroupDef, Loc, MapOf, PersonDef};
use crate::intern::Interner;
use crate::model::{Group, Ids, Origin, Person};

/// Accumulates the source, file by file.
pub(super) struct Builder<'t> {
    /// Configured target names.
    targets: &'t [&'t str],
    /// The same, shared by every person's `ids`.
    target_names: Vec<Arc<str>>,
    /// Every problem found.
    pub errors: Errors,
    /// The files added so far.
    files: Files,
    /// People by lower-cased email.
    people: BTreeMap<String, PersonAcc>,
    /// Groups by key.
    groups: BTreeMap<String, GroupAcc>,
    /// Every lower-cased email seen, once: members are clones of these (no allocation).
    emails: Interner,
}

/// A person and where each of their values was written, to name both places of a conflict.
struct PersonAcc {
    person: Person,
    /// Where `person.name` was written.
    name_at: Option<Pos>,
    /// Where each of `person.ids` was written, by index into the configured targets.
    ids_at: Vec<(usize, Pos)>,
}

/// The files added so far; the last one is being added.
#[derive(Default)]
struct Files(Vec<Arc<Path>>);

/// A place in one of [`Files`]: 8 bytes, cheap to copy (there is one per membership
/// while the source is gathered), made into an [`Origin`] only when kept in the result
/// or reported.
#[derive(Clone, Copy, Debug)]
struct Pos {
    file: u32,
    /// 1-based; 0 when the format has no lines (or the line does not fit).
    line: u32,
}

impl Files {
    /// `line` of the file being added.
    fn pos(&self, line: Option<usize>) -> Pos {
        Pos {
            file: u32::try_from(self.0.len() - 1).expect("fewer than 2^32 source files"),
            line: line.and_then(|l| u32::try_from(l).ok()).unwrap_or(0),
        }
    }

    fn origin(&self, pos: Pos) -> Origin {
        Origin {
            file: self.0[pos.file as usize].clone(),
            line: (pos.line > 0).then_some(pos.line as usize),
        }
    }
}

/// A group as gathered so far, from its structured definition and CSV rows.
#[derive(Default)]
struct GroupAcc {
    /// The one structured definition, if any.
    head: Option<GroupHead>,
    /// The first CSV row for this key: its group name and where it is.
    csv: Option<(String, Origin)>,
    /// Members and where each was written, in the order seen (sorted and de-duplicated,
    /// the first place kept, when the group is finished).
    members: Vec<(Arc<str>, Pos)>,
}

/// What only a structured definition gives a group.
struct GroupHead {
    name: String,
    origin: Origin,
    owners: BTreeSet<String>,
    receive_call: Option<Vec<(String, Origin)>>,
    targets: Option<BTreeSet<String>>,
}

impl<'t> Builder<'t> {
    /// An empty source for the configured `targets`.
    pub(super) fn new(targets: &'t [&'t str], errors: Errors) -> Self {
        Builder {
            targets,
            target_names: targets.iter().map(|t| Arc::from(*t)).collect(),
            errors,
            files: Files::default(),
            people: BTreeMap::new(),
            groups: BTreeMap::new(),
            emails: Interner::default(),
        }
    }

    /// Adds one YAML, TOML or JSON file.
    pub(super) fn add_file(&mut self, file: &Path, def: FileDef) {
        self.files.0.push(file.into());
        for MapOf(person) in def.people.unwrap_or_default() {
            self.add_person(person);
        }
        for MapOf(group) in def.groups.unwrap_or_default() {
            self.add_group(group);
        }
    }

    /// Adds the rows of one CSV file.
    pub(super) fn add_rows(&mut self, file: &Path, rows: Vec<Row>) {
        self.files.0.push(file.into());
        for row in rows {
            self.add_row(row);
        }
    }

    fn add_person(&mut self, def: PersonDef) {
        let email = self.email(&def.email, "person email", None);
        // (index into the configured targets, target, id, where the id is)
        let mut ids: Vec<(usize, String, String, Pos)> = Vec::new();
        for (target, id) in def.ids.unwrap_or_default().0 {
            let at = self.files.pos(id.line);
            let Some(index) = self.targets.iter().position(|t| *t == target) else {
                let message = format!(
                    "ids: unknown target {target:?} for {:?}; {}",
                    def.email.value,
                    self.configured()
                );
                self.errors.push(self.files.origin(at), message);
                continue;
            };
            let message = if id.value.trim().is_empty() {
                format!("ids: empty id for target {target:?}; give the id or remove the entry")
            } else if let Some(first) = ids.iter().find(|e| e.0 == index) {
                let first = self.files.origin(first.3);
                format!("ids: target {target:?} is given twice (also at {first})")
            } else {
                ids.push((index, target, id.value, at));
                continue;
            };
            self.errors.push(self.files.origin(at), message);
        }
        let Some(email) = email.map(|e| e.to_string()) else {
            return;
        };

        let origin = self.files.origin(self.files.pos(def.email.line));
        let acc = match self.people.entry(email.clone()) {
            Entry::Vacant(v) => v.insert(PersonAcc {
                person: Person {
                    email,
                    name: None,
                    ids: Ids::default(),
                    origin,
                },
                name_at: None,
                ids_at: Vec::new(),
            }),
            Entry::Occupied(o) => o.into_mut(),
        };
        if let Some(name) = def.name {
            let at = self.files.pos(name.line);
            match (&acc.person.name, acc.name_at) {
                (Some(old), Some(old_at)) if *old != name.value => self.errors.push(
                    self.files.origin(at),
                    format!(
                        "person {:?} is named {:?} here but {old:?} at {}; keep one name",
                        acc.person.email,
                        name.value,
                        self.files.origin(old_at)
                    ),
                ),
                (Some(_), _) => {}
                (None, _) => {
                    acc.person.name = Some(name.value);
                    acc.name_at = Some(at);
                }
            }
        }
        for (index, target, id, at) in ids {
            match acc.person.ids.get(&target) {
                Some(old) if *old != id => {
                    let old_at = acc.ids_at.iter().find(|e| e.0 == index).map(|e| e.1);
                    let old_at = old_at.expect("every id has its place");
                    self.errors.push(
                        self.files.origin(at),
                        format!(
                            "person {:?} has id {id:?} for target {target:?} here but {old:?} \
                             at {}; a person has one id per target",
                            acc.person.email,
                            self.files.origin(old_at)
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    acc.person.ids.insert(self.target_names[index].clone(), id);
                    acc.ids_at.push((index, at));
                }
            }
        }
    }

    fn add_group(&mut self, def: GroupDef) {
        let name_ok = self.label(&def.name, "group name");
        let key = def.key.as_ref().unwrap_or(&def.name);
        let key_ok = def.key.is_none() || self.label(key, "group key");
        let origin = self.file_origin(
            match (def.name.line, def.key.as_ref().and_then(|k| k.line)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        );

        let mut members = Vec::new();
        for m in def.members.iter().flatten() {
            if let Some(email) = self.email(m, "member", Some(&key.value)) {
                members.push((email, self.files.pos(m.line)));
            }
        }

        let mut owners = BTreeSet::new();
        for o in def.owners.iter().flatten() {
            owners.extend(
                self.email(o, "owner", Some(&key.value))
                    .map(|e| e.to_string()),
            );
        }
        let receive_call = def.receive_call.as_ref().map(|list| {
            list.iter()
                .filter_map(|r| {
                    let email = self.email(r, "receive_call entry", Some(&key.value))?;
                    Some((email.to_string(), self.origin(r)))
                })
                .collect::<Vec<_>>()
        });
        let targets = def.targets.as_ref().map(|list| {
            let mut names = BTreeSet::new();
            for t in list {
                if self.targets.contains(&t.value.as_str()) {
                    names.insert(t.value.clone());
                } else {
                    let message = format!(
                        "unknown target {:?} in group {:?}; {}",
                        t.value,
                        key.value,
                        self.configured()
                    );
                    self.errors.push(self.origin(t), message);
                }
            }
            names
        });
        if !(name_ok && key_ok) {
            return;
        }

        let acc = self.groups.entry(key.value.clone()).or_default();
        if let Some(first) = &acc.head {
            self.errors.push(
                origin,
                format!(
                    "group key {:?} is defined twice: here and at {}; define each group once \
                     (or give one of them another `key`)",
                    key.value, first.origin
                ),
            );
            return;
        }
        if let Some((csv_name, csv_origin)) = &acc.csv
            && *csv_name != def.name.value
        {
            let message = csv_name_mismatch(csv_name, &key.value, &def.name.value, &origin);
            self.errors.push(csv_origin.clone(), message);
        }
        acc.members.append(&mut members);
        acc.head = Some(GroupHead {
            name: def.name.value,
            origin,
            owners,
            receive_call,
            targets,
        });
    }

    fn add_row(&mut self, row: Row) {
        let key = row.key.as_ref().unwrap_or(&row.group);
        let email = self.email(&row.email, "email", Some(&key.value));
        let name_ok = self.label(&row.group, "group name");
        let key_ok = row.key.is_none() || self.label(key, "group key");
        let (Some(email), true, true) = (email, name_ok, key_ok) else {
            return;
        };
        let origin = self.origin(&row.email);
        let acc = self.groups.entry(key.value.clone()).or_default();
        if let Some(head) = &acc.head {
            if head.name != row.group.value {
                let message =
                    csv_name_mismatch(&row.group.value, &key.value, &head.name, &head.origin);
                self.errors.push(origin, message);
                return;
            }
        } else if let Some((first_name, first_origin)) = &acc.csv {
            if *first_name != row.group.value {
                self.errors.push(
                    origin,
                    format!(
                        "group {:?} (key {:?}) is named {first_name:?} at {first_origin}; \
                         rows of one key must name the group the same way",
                        row.group.value, key.value
                    ),
                );
                return;
            }
        } else {
            acc.csv = Some((row.group.value.clone(), origin.clone()));
        }
        acc.members.push((email, self.files.pos(row.email.line)));
    }

    /// The people and groups, after the checks that need the whole source.
    /// `empty_origin` is where to report a source without groups.
    pub(super) fn finish(
        mut self,
        allow_empty: bool,
        empty_origin: Origin,
    ) -> (BTreeMap<String, Person>, BTreeMap<String, Group>, Errors) {
        let people = std::mem::take(&mut self.people)
            .into_iter()
            .map(|(email, acc)| (email, acc.person))
            .collect();

        let mut groups = BTreeMap::new();
        // Lower-cased display name -> (name, key, origin): targets adopt groups by name,
        // DeepCall even case-insensitively, so two keys must not share one name.
        let mut names: HashMap<String, (String, String, Origin)> = HashMap::new();
        for (key, mut acc) in std::mem::take(&mut self.groups) {
            // Sorted in bulk (stable: each member keeps the place it was first written at).
            acc.members.sort_by(|a, b| a.0.cmp(&b.0));
            acc.members.dedup_by(|later, first| later.0 == first.0);
            let (members, member_origins) = self.members_and_origins(acc.members);
            let group = match (acc.head, acc.csv) {
                (Some(head), _) => {
                    let receive_call = head.receive_call.map(|list| {
                        let mut ok = BTreeSet::new();
                        for (email, origin) in list {
                            if members
                                .binary_search_by(|m| (**m).cmp(email.as_str()))
                                .is_ok()
                            {
                                ok.insert(email);
                            } else {
                                self.errors.push(
                                    origin,
                                    format!(
                                        "receive_call {email:?} is not a member of group \
                                         {key:?}; add it to members or remove it from \
                                         receive_call"
                                    ),
                                );
                            }
                        }
                        ok.into_iter().collect()
                    });
                    Group {
                        key,
                        name: head.name,
                        owners: head.owners.into_iter().collect(),
                        receive_call,
                        targets: head.targets.map(|t| t.into_iter().collect()),
                        origin: head.origin,
                        members,
                        member_origins,
                    }
                }
                (None, Some((name, origin))) => Group {
                    key,
                    name,
                    members,
                    owners: Vec::new(),
                    receive_call: None,
                    targets: None,
                    origin,
                    member_origins,
                },
                (None, None) => unreachable!("a group is only created with a definition or a row"),
            };
            let this = (group.name.clone(), group.key.clone(), group.origin.clone());
            match names.entry(group.name.to_lowercase()) {
                hash_map::Entry::Occupied(o) => {
                    // Report at the later of the two places, naming the earlier one.
                    let (first, (name, key, origin)) = if o.get().2 <= this.2 {
                        (o.get().clone(), this)
                    } else {
                        (this, o.get().clone())
                    };
                    let (_, first_key, first_origin) = first;
                    self.errors.push(
                        origin,
                        format!(
                            "group name {name:?} (key {key:?}) is also the name of group key \
                             {first_key:?} at {first_origin}; targets find groups by name, so \
                             give them different names (or, for CSV rows, the same `key`)",
                        ),
                    );
                }
                hash_map::Entry::Vacant(v) => {
                    v.insert(this);
                }
            }
            groups.insert(group.key.clone(), group);
        }

        if groups.is_empty() && !allow_empty && self.errors.total() == 0 {
            self.errors.push(
                empty_origin,
                "the source defines no groups; refusing to read it as \"remove everybody\" \
                 (set allow_empty_source = true if that is really meant)",
            );
        }
        (people, groups, self.errors)
    }

    /// Checks and lower-cases an email; records an error and gives `None` if it is not one.
    /// `role` and `group` say what the email is for, in the message.
    fn email(&mut self, loc: &Loc, role: &str, group: Option<&str>) -> Option<Arc<str>> {
        // Written as seen before (lower-case, so already checked): most occurrences.
        if let Some(e) = self.emails.get(loc.value.as_str()) {
            return Some(e.clone());
        }
        match email_problem(&loc.value) {
            None => Some(self.intern(&loc.value)),
            Some(problem) => {
                let of_group = group
                    .map(|g| format!(" of group {g:?}"))
                    .unwrap_or_default();
                let message = format!(
                    "{role} {:?}{of_group} is not an email address: {problem}",
                    loc.value
                );
                self.errors.push(self.origin(loc), message);
                None
            }
        }
    }

    /// The one shared copy of `email`, lower-cased: no allocation when it was seen before
    /// (and no lower-casing copy when it is lower-case already).
    fn intern(&mut self, email: &str) -> Arc<str> {
        let lower = if email
            .bytes()
            .any(|b| b.is_ascii_uppercase() || !b.is_ascii())
        {
            Cow::Owned(email.to_lowercase())
        } else {
            Cow::Borrowed(email)
        };
        self.emails.intern(&lower)
    }

    /// Checks a group name or key; records an error and gives false if it is unusable.
    fn label(&mut self, loc: &Loc, what: &str) -> bool {
        let problem = if loc.value.trim().is_empty() {
            "it is empty"
        } else if loc.value.trim() != loc.value {
            "it has leading or trailing spaces"
        } else if loc.value.chars().any(char::is_control) {
            "it has a control character (a line break?)"
        } else {
            return true;
        };
        let message = format!("{what} {:?} is not usable: {problem}", loc.value);
        self.errors.push(self.origin(loc), message);
        false
    }

    /// "configured targets: ..." for error messages.
    fn configured(&self) -> String {
        if self.targets.is_empty() {
            "no targets are configured".to_owned()
        } else {
            format!("configured targets: {}", self.targets.join(", "))
        }
    }

    /// Where `loc` is, in the file being added.
    fn origin(&self, loc: &Loc) -> Origin {
        self.file_origin(loc.line)
    }

    /// `line` of the file being added.
    fn file_origin(&self, line: Option<usize>) -> Origin {
        self.files.origin(self.files.pos(line))
    }

    /// A group's members, and beside them where each was (first) written.
    fn members_and_origins(&self, members: Vec<(Arc<str>, Pos)>) -> (Vec<Arc<str>>, Vec<Origin>) {
        members
            .into_iter()
            .map(|(email, pos)| (email, self.files.origin(pos)))
            .unzip()
    }
}

/// The message for a CSV row whose group name differs from the group's definition.
fn csv_name_mismatch(csv_name: &str, key: &str, def_name: &str, def_origin: &Origin) -> String {
    format!(
        "CSV group {csv_name:?} has key {key:?}, but group key {key:?} is named {def_name:?} at \
         {def_origin}; use the same name, or give the CSV rows their own `key`"
    )
}

/// Why `s` is not an email address, or `None` if it is one. Simple but sane: one `@`,
/// something before it, a dotted domain after it, no spaces or address punctuation.
pub(super) fn email_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("it is empty");
    }
    if s.chars().any(char::is_whitespace) {
        return Some("it contains a space");
    }
    if s.chars()
        .any(|c| c.is_control() || "<>()[],;:\"\\".contains(c))
    {
        return Some("it contains a character that does not belong in an address");
    }
    let Some((local, domain)) = s.split_once('@') else {
        return Some("it has no @");
    };
    if domain.contains('@') {
        return Some("it has more than one @");
    }
    if local.is_empty() {
        return Some("nothing comes before the @");
    }
    if !domain.contains('.') {
        return Some("the domain has no dot");
    }
    if domain.split('.').any(str::is_empty) {
        return Some("the domain has an empty part");
    }
    None
}
