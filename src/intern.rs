//! One shared copy of each string: the source's loader and the state's reader keep every
//! email once (`Arc<str>`), however many memberships name it.

use std::collections::HashSet;
use std::sync::Arc;

/// The strings seen so far, each once.
#[derive(Debug, Default)]
pub struct Interner(HashSet<Arc<str>, foldhash::fast::RandomState>);

impl Interner {
    /// The shared copy of `s`, if it was seen.
    pub fn get(&self, s: &str) -> Option<&Arc<str>> {
        self.0.get(s)
    }

    /// The shared copy of `s`, made on first sight.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(e) = self.0.get(s) {
            return e.clone();
        }
        let e: Arc<str> = Arc::from(s);
        self.0.insert(e.clone());
        e
    }
}
