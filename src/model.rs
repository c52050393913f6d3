//! The desired state as read from the source of truth. Produced by `source`, consumed by
//! `sync` (which resolves member ids per target) and `plan`. Plain data, no IO.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

/// Where something was defined: a file and, where the format has lines, a 1-based line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Origin {
    /// Shared by every origin in the file: copying an origin allocates nothing.
    pub file: Arc<Path>,
    pub line: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}", self.file.display(), l),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// A person from `people:`; the email (lower-cased) is the key everywhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Person {
    /// Lower-cased email.
    pub email: String,
    /// Display name, for logs only.
    pub name: Option<String>,
    /// Member id per target *name* (not kind).
    pub ids: Ids,
    /// Where the person was (first) defined.
    pub origin: Origin,
}

/// A person's member ids by target name: a few entries, sorted by target, in one small
/// vector (a map's node would cost about 500 bytes a person at 100,000 people), the
/// target names shared with every other person.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ids(Vec<(Arc<str>, String)>);

impl Ids {
    /// The id for the target named `target`.
    pub fn get(&self, target: &str) -> Option<&String> {
        self.0
            .binary_search_by(|(t, _)| (**t).cmp(target))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Sets the id for `target`, returning the one it replaces.
    pub fn insert(&mut self, target: Arc<str>, id: String) -> Option<String> {
        match self.0.binary_search_by(|(t, _)| t.cmp(&target)) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, id)),
            Err(i) => {
                self.0.insert(i, (target, id));
                None
            }
        }
    }

    /// (target, id), by target name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(t, id)| (&**t, id.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: Into<Arc<str>>, I: Into<String>> FromIterator<(T, I)> for Ids {
    fn from_iter<It: IntoIterator<Item = (T, I)>>(iter: It) -> Self {
        let mut ids = Ids::default();
        for (t, id) in iter {
            ids.insert(t.into(), id.into());
        }
        ids
    }
}

impl Serialize for Ids {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// A group as the source wants it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Group {
    /// Stable key (defaults to `name`); renaming `name` under the same key renames remotely.
    pub key: String,
    /// Display name sent to targets.
    pub name: String,
    /// Lower-cased member emails, sorted and de-duplicated; each email is one allocation
    /// shared by every group it is in (interned by the loader).
    pub members: Vec<Arc<str>>,
    /// Lower-cased owner emails (scim targets only), sorted and de-duplicated.
    pub owners: Vec<String>,
    /// Lower-cased emails allowed to receive calls (assign_group only); None = all members.
    pub receive_call: Option<Vec<String>>,
    /// Target names this group goes to; None = every target.
    pub targets: Option<Vec<String>>,
    /// Where the group was defined (for a CSV-only group: its first row).
    pub origin: Origin,
    /// Where each member was put into the group (for `explain`): `member_origins[i]` is
    /// where `members[i]` was (first) written. Empty when not known (tests).
    pub member_origins: Vec<Origin>,
}

impl Group {
    /// Where `email` was put into this group (the group's own place when not known).
    pub fn member_origin(&self, email: &str) -> &Origin {
        self.members
            .binary_search_by(|m| (**m).cmp(email))
            .ok()
            .and_then(|i| self.member_origins.get(i))
            .unwrap_or(&self.origin)
    }

    /// Whether this group is meant for the target named `target`.
    pub fn is_for(&self, target: &str) -> bool {
        self.targets
            .as_ref()
            .is_none_or(|t| t.iter().any(|n| n == target))
    }
}

/// Everything the source says, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Desired {
    /// People by lower-cased email.
    pub people: BTreeMap<String, Person>,
    /// Groups by key.
    pub groups: BTreeMap<String, Group>,
    /// The files read, in the order read.
    pub files: Vec<PathBuf>,
    /// SHA-256 (hex) over the files' paths and bytes, to detect a changed source.
    pub digest: String,
}
