//! Checks the values read from every file and merges them into one [`Desired`] state:
//! people by email, groups by key, CSV rows into their groups.
//!
//! Files are added in order; checks that need every file (a CSV row before the group's
//! definition, `receive_call` against members added by CSV, names shared by two keys) run
//! in [`Builder::finish`]. All work is `O(n log n)` in the number of values.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::csv::Row;
use super::error::Errors;
use super::structured::{FileDef, GroupDef, Loc, MapOf, PersonDef};
use crate::model::{Group, Origin, Person};

/// Accumulates the source, file by file.
pub(super) struct Builder<'t> {
    /// Configured target names.
    targets: &'t [&'t str],
    /// Every problem found.
    pub errors: Errors,
    /// The file being added (origins point into it).
    file: PathBuf,
    /// People by lower-cased email.
    people: BTreeMap<String, PersonAcc>,
    /// Groups by key.
    groups: BTreeMap<String, GroupAcc>,
}

/// A person and where each of their values was written, to name both places of a conflict.
struct PersonAcc {
    person: Person,
    name_origin: Option<Origin>,
    id_origins: BTreeMap<String, Origin>,
}

/// A group as gathered so far, from its structured definition and CSV rows.
#[derive(Default)]
struct GroupAcc {
    /// The one structured definition, if any.
    head: Option<GroupHead>,
    /// The first CSV row for this key: its group name and where it is.
    csv: Option<(String, Origin)>,
    /// Members and where each was (first) written.
    members: BTreeMap<String, Origin>,
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
            errors,
            file: PathBuf::new(),
            people: BTreeMap::new(),
            groups: BTreeMap::new(),
        }
    }

    /// Adds one YAML, TOML or JSON file.
    pub(super) fn add_file(&mut self, file: &Path, def: FileDef) {
        self.file = file.to_path_buf();
        for MapOf(person) in def.people.unwrap_or_default() {
            self.add_person(person);
        }
        for MapOf(group) in def.groups.unwrap_or_default() {
            self.add_group(group);
        }
    }

    /// Adds the rows of one CSV file.
    pub(super) fn add_rows(&mut self, file: &Path, rows: Vec<Row>) {
        self.file = file.to_path_buf();
        for row in rows {
            self.add_row(row);
        }
    }

    fn add_person(&mut self, def: PersonDef) {
        let email = self.email(&def.email, "person email", None);
        let mut ids = Vec::new();
        let mut seen = BTreeMap::new();
        for (target, id) in def.ids.unwrap_or_default().0 {
            let origin = self.origin(&id);
            if !self.targets.contains(&target.as_str()) {
                self.errors.push(
                    origin,
                    format!(
                        "ids: unknown target {target:?} for {:?}; {}",
                        def.email.value,
                        self.configured()
                    ),
                );
            } else if id.value.trim().is_empty() {
                self.errors.push(
                    origin,
                    format!("ids: empty id for target {target:?}; give the id or remove the entry"),
                );
            } else if let Some(first) = seen.insert(target.clone(), origin.clone()) {
                self.errors.push(
                    origin,
                    format!("ids: target {target:?} is given twice (also at {first})"),
                );
            } else {
                ids.push((target, id.value, origin));
            }
        }
        let Some(email) = email else { return };
        let name = def.name.map(|n| {
            let origin = self.origin(&n);
            (n.value, origin)
        });

        let origin = self.file_origin(def.email.line);
        let acc = match self.people.entry(email.clone()) {
            Entry::Vacant(v) => v.insert(PersonAcc {
                person: Person {
                    email,
                    name: None,
                    ids: BTreeMap::new(),
                    origin,
                },
                name_origin: None,
                id_origins: BTreeMap::new(),
            }),
            Entry::Occupied(o) => o.into_mut(),
        };
        if let Some((name, origin)) = name {
            match (&acc.person.name, &acc.name_origin) {
                (Some(old), Some(old_origin)) if *old != name => self.errors.push(
                    origin,
                    format!(
                        "person {:?} is named {name:?} here but {old:?} at {old_origin}; \
                         keep one name",
                        acc.person.email
                    ),
                ),
                (Some(_), _) => {}
                (None, _) => {
                    acc.person.name = Some(name);
                    acc.name_origin = Some(origin);
                }
            }
        }
        for (target, id, origin) in ids {
            match acc.person.ids.get(&target) {
                Some(old) if *old != id => {
                    let old_origin = &acc.id_origins[&target];
                    self.errors.push(
                        origin,
                        format!(
                            "person {:?} has id {id:?} for target {target:?} here but {old:?} \
                             at {old_origin}; a person has one id per target",
                            acc.person.email
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    acc.person.ids.insert(target.clone(), id);
                    acc.id_origins.insert(target, origin);
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

        let mut members = BTreeMap::new();
        for m in def.members.iter().flatten() {
            if let Some(email) = self.email(m, "member", Some(&key.value)) {
                let origin = self.origin(m);
                members.entry(email).or_insert(origin);
            }
        }
        let mut owners = BTreeSet::new();
        for o in def.owners.iter().flatten() {
            owners.extend(self.email(o, "owner", Some(&key.value)));
        }
        let receive_call = def.receive_call.as_ref().map(|list| {
            list.iter()
                .filter_map(|r| {
                    let email = self.email(r, "receive_call entry", Some(&key.value))?;
                    Some((email, self.origin(r)))
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
        for (email, origin) in members {
            acc.members.entry(email).or_insert(origin);
        }
        acc.head = Some(GroupHead {
            name: def.name.value,
            origin,
            owners,
            receive_call,
            targets,
        });
    }

    fn add_row(&mut self, row: Row) {
        let group = row.key.as_ref().unwrap_or(&row.group);
        let email = self.email(&row.email, "email", Some(&group.value));
        let name_ok = self.label(&row.group, "group name");
        let key = row.key.as_ref().unwrap_or(&row.group);
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
        acc.members.entry(email).or_insert(origin);
    }

    /// The people and groups, after the checks that need the whole source.
    /// `empty_origin` is where to report a source without groups.
    pub(super) fn finish(
        mut self,
        allow_empty: bool,
        empty_origin: Origin,
    ) -> (BTreeMap<String, Person>, BTreeMap<String, Group>, Errors) {
        let t = std::time::Instant::now();
        let people = std::mem::take(&mut self.people)
            .into_iter()
            .map(|(email, acc)| (email, acc.person))
            .collect();

        eprintln!("  people {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let mut groups = BTreeMap::new();
        // Lower-cased display name -> (key, origin): targets adopt groups by name,
        // DeepCall even case-insensitively, so two keys must not share one name.
        let mut names: HashMap<String, (String, Origin)> = HashMap::new();
        for (key, acc) in std::mem::take(&mut self.groups) {
            let group = match (acc.head, acc.csv) {
                (Some(head), _) => {
                    let receive_call = head.receive_call.map(|list| {
                        let mut ok = BTreeSet::new();
                        for (email, origin) in list {
                            if acc.members.contains_key(&email) {
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
                        members: acc.members.keys().cloned().collect(),
                        owners: head.owners.into_iter().collect(),
                        receive_call,
                        targets: head.targets.map(|t| t.into_iter().collect()),
                        origin: head.origin,
                        member_origins: acc.members,
                    }
                }
                (None, Some((name, origin))) => Group {
                    key,
                    name,
                    members: acc.members.keys().cloned().collect(),
                    owners: Vec::new(),
                    receive_call: None,
                    targets: None,
                    origin,
                    member_origins: acc.members,
                },
                (None, None) => unreachable!("a group is only created with a definition or a row"),
            };
            match names.entry(group.name.to_lowercase()) {
                std::collections::hash_map::Entry::Occupied(o) => {
                    let (other_key, other_origin) = o.get();
                    self.errors.push(
                        group.origin.clone(),
                        format!(
                            "group name {:?} (key {:?}) is also the name of group key \
                             {other_key:?} at {other_origin}; targets find groups by name, so \
                             give them different names (or, for CSV rows, the same `key`)",
                            group.name, group.key
                        ),
                    );
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((group.key.clone(), group.origin.clone()));
                }
            }
            groups.insert(group.key.clone(), group);
        }

        eprintln!("  groups {:?}", t.elapsed());
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
    fn email(&mut self, loc: &Loc, role: &str, group: Option<&str>) -> Option<String> {
        match email_problem(&loc.value) {
            None => Some(loc.value.to_lowercase()),
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

    fn origin(&self, loc: &Loc) -> Origin {
        self.file_origin(loc.line)
    }

    fn file_origin(&self, line: Option<usize>) -> Origin {
        Origin {
            file: self.file.clone(),
            line,
        }
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
