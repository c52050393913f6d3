//! The one interface the conformance suite uses for every fake target.

use std::collections::{BTreeMap, BTreeSet};

use super::http::{Fault, Journal, Logged, Match};

/// What the conformance suite needs from a fake target, whatever its kind.
///
/// People are named by email everywhere in the suite; each fake keeps its own user
/// directory (email -> the vendor's member id) and maps back to emails in `groups()`.
pub trait Fake: Send + Sync {
    /// The target kind this fake stands for (`scim`, `teams`, `assign_group`, `kazoo`).
    fn kind(&self) -> &'static str;
    /// The `[[target]]` block for rostersync.toml, with this `name`. Secrets are named by
    /// `*_env` keys whose values `env()` gives.
    fn target_toml(&self, name: &str) -> String;
    /// Environment variables (secret values) the target block refers to.
    fn env(&self) -> Vec<(String, String)>;
    /// Every secret value, so tests can check none of them leaks.
    fn secrets(&self) -> Vec<String>;
    /// Registers an agent on the vendor side (idempotent) and returns its member id.
    fn add_user(&self, email: &str) -> String;
    /// The id the source file must carry for this person under `people[].ids.<target>`,
    /// or None when rostersync is expected to resolve it itself (email or lookup).
    fn source_id(&self, email: &str) -> Option<String>;
    /// Groups on the server now: name -> member emails (members unknown to the
    /// directory appear as their raw id).
    fn groups(&self) -> BTreeMap<String, BTreeSet<String>>;
    /// Every group's name, duplicates included (to prove no group was created twice).
    fn all_group_names(&self) -> Vec<String>;
    /// Creates a group directly on the server, as an operator clicking in the console would.
    fn create_group_by_hand(&self, name: &str, members: &[&str]);
    /// Replaces a group's members directly on the server (drift behind rostersync's back).
    fn set_members_by_hand(&self, name: &str, members: &[&str]);
    /// Deletes a group directly on the server.
    fn delete_group_by_hand(&self, name: &str);
    /// Whether a request changes something on the server. Most APIs read with GET; an API
    /// whose every call is a POST (DeepCall) says which of its endpoints only read.
    fn is_write(&self, r: &Logged) -> bool {
        r.is_write()
    }
    /// The server's journal and fault injection (the shared toolkit's `Server`), which
    /// `requests`, `clear_requests` and `inject` use. None: the fake implements those
    /// three itself.
    fn journal(&self) -> Option<&dyn Journal> {
        None
    }
    /// Every request received so far.
    fn requests(&self) -> Vec<Logged> {
        self.journal()
            .map(Journal::requests)
            .expect("a fake without a journal implements requests")
    }
    fn clear_requests(&self) {
        self.journal()
            .expect("a fake without a journal implements clear_requests")
            .clear_requests()
    }
    /// Arms `fault` for the next `times` requests matching `when`.
    fn inject(&self, when: Match, fault: Fault, times: usize) {
        self.journal()
            .expect("a fake without a journal implements inject")
            .inject(when, fault, times)
    }
    /// Disarms every fault.
    fn clear_faults(&self);
    /// The `Match` for this kind's membership-change requests (used by fault scenarios).
    fn membership_write(&self) -> Match;
    /// The `Match` for this kind's group-create request.
    fn create_request(&self) -> Match;
}
