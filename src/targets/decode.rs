//! The decoding toolkit every kind uses (SPEC 6.3: lenient is not credulous).
//!
//! Decoding an answer has three outcomes: the records, "there are none" (the answer says
//! so in a shape we know), and "not understood" (an error naming the keys seen).

/// An answer that did not carry the records an operation needs.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{what}: answer not understood ({seen})")]
pub struct NotUnderstood {
    /// What was being read, e.g. "the group listing".
    pub what: String,
    /// What the answer held instead, e.g. "an object with keys: items, total".
    pub seen: String,
}
