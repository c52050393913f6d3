//! Records kept in insertion order and found by key without a scan: the fakes' stores of
//! agents, users, teams and groups, so a request costs the same with 50,000 of them as
//! with three.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

/// Every key a record is found by (its id, its lower-cased email...). A record answering
/// to keys of several kinds prefixes them (`"e:"`, `"u:"`) so the kinds cannot collide.
pub trait Keys {
    fn keys(&self) -> Vec<String>;
}

/// Records in insertion order, with a map from each key to the first record holding it:
/// `first(key)` answers what a front-to-back scan for that key would.
///
/// Reads go through the slice (`Deref`). Changing a record's keys in place (through
/// `DerefMut`) must be followed by `reindex`; removing records rebuilds the map itself
/// (deletes are rare, lookups are not).
pub struct Keyed<T> {
    items: Vec<T>,
    first: HashMap<String, usize>,
}

impl<T> Default for Keyed<T> {
    fn default() -> Keyed<T> {
        Keyed {
            items: Vec::new(),
            first: HashMap::new(),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Keyed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.items.fmt(f)
    }
}

impl<T: Keys> Keyed<T> {
    pub fn new() -> Keyed<T> {
        Keyed::default()
    }

    /// Appends a record; returns its position.
    pub fn push(&mut self, item: T) -> usize {
        let i = self.items.len();
        for k in item.keys() {
            self.first.entry(k).or_insert(i);
        }
        self.items.push(item);
        i
    }

    /// Position of the first record with this key.
    pub fn first(&self, key: &str) -> Option<usize> {
        self.first.get(key).copied()
    }

    /// The first record with this key.
    pub fn get(&self, key: &str) -> Option<&T> {
        self.first(key).map(|i| &self.items[i])
    }

    /// The first record with this key, to change anything but its keys.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut T> {
        self.first(key).map(|i| &mut self.items[i])
    }

    /// Removes the record at `i`, shifting the later ones (as `Vec::remove`).
    pub fn remove(&mut self, i: usize) -> T {
        let item = self.items.remove(i);
        self.reindex();
        item
    }

    /// Keeps the records for which `keep` is true, in order (as `Vec::retain`).
    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        let before = self.items.len();
        self.items.retain(keep);
        if self.items.len() != before {
            self.reindex();
        }
    }

    /// Rebuilds the map from the records (after a record's keys changed in place).
    pub fn reindex(&mut self) {
        self.first.clear();
        for (i, item) in self.items.iter().enumerate() {
            for k in item.keys() {
                self.first.entry(k).or_insert(i);
            }
        }
    }
}

impl<T> Deref for Keyed<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<'a, T> IntoIterator for &'a Keyed<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl<T> DerefMut for Keyed<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct R(&'static str, &'static str);
    impl Keys for R {
        fn keys(&self) -> Vec<String> {
            vec![format!("a:{}", self.0), format!("b:{}", self.1)]
        }
    }

    #[test]
    fn first_record_wins_and_removal_reindexes() {
        let mut k = Keyed::new();
        k.push(R("1", "x"));
        k.push(R("2", "x"));
        k.push(R("3", "y"));
        assert_eq!(k.first("b:x"), Some(0));
        assert_eq!(k.get("a:2"), Some(&R("2", "x")));
        k.remove(0);
        assert_eq!(k.first("b:x"), Some(0));
        assert_eq!(k.first("a:3"), Some(1));
        assert_eq!(k.first("a:1"), None);
        k.retain(|r| r.1 != "x");
        assert_eq!(k.len(), 1);
        assert_eq!(k.first("a:3"), Some(0));
        k[0].0 = "4";
        k.reindex();
        assert_eq!(k.first("a:4"), Some(0));
        assert_eq!(k.first("a:3"), None);
    }
}
