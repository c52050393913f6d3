//! What can be wrong with a source: every problem found, each with the place it is at.

use std::fmt;

use crate::model::Origin;

/// At most this many errors are listed; more are counted but not kept.
pub const MAX_ERRORS: usize = 50;

/// One problem in the source: where it is, and what is wrong (with the fix when obvious).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct SourceError {
    /// The file and, where the format has lines, the line of the offending value.
    pub origin: Origin,
    /// One line naming the offending value and, when obvious, how to fix it.
    pub message: String,
}

/// Every problem found while loading the source. Loading never stops at the first
/// problem, so that one run of `rostersync check` shows all of them.
///
/// Display prints a count, then one `path:line: message` line per error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", Listing(self))]
pub struct SourceErrors {
    /// The first [`MAX_ERRORS`] errors found, sorted by file and line.
    pub errors: Vec<SourceError>,
    /// How many errors were found in all, including those not kept.
    pub total: usize,
}

/// The Display of [`SourceErrors`].
struct Listing<'a>(&'a SourceErrors);

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let SourceErrors { errors, total } = self.0;
        let plural = if *total == 1 { "" } else { "s" };
        write!(f, "{total} error{plural} in the source")?;
        if *total > errors.len() {
            write!(f, " (the first {} shown)", errors.len())?;
        }
        write!(f, ":")?;
        for e in errors {
            write!(f, "\n{e}")?;
        }
        Ok(())
    }
}

/// Collects errors while loading, up to [`MAX_ERRORS`].
#[derive(Debug, Default)]
pub(super) struct Errors {
    /// The errors kept.
    list: Vec<SourceError>,
    /// All errors seen, kept or not.
    total: usize,
}

impl Errors {
    /// Records an error at `origin`.
    pub(super) fn push(&mut self, origin: Origin, message: impl Into<String>) {
        self.total += 1;
        if self.list.len() < MAX_ERRORS {
            self.list.push(SourceError {
                origin,
                message: message.into(),
            });
        }
    }

    /// Records `other`'s errors after this one's (as if pushed here in that order).
    pub(super) fn append(&mut self, other: Errors) {
        self.total += other.total;
        let room = MAX_ERRORS.saturating_sub(self.list.len());
        self.list.extend(other.list.into_iter().take(room));
    }

    /// How many errors were recorded so far.
    pub(super) fn total(&self) -> usize {
        self.total
    }

    /// `Ok(value)` when no error was recorded, else all of them, by file and line.
    pub(super) fn into_result<T>(mut self, value: T) -> Result<T, SourceErrors> {
        if self.total == 0 {
            Ok(value)
        } else {
            // Stable: errors on one line keep the order they were found in.
            self.list.sort_by(|a, b| a.origin.cmp(&b.origin));
            Err(SourceErrors {
                errors: self.list,
                total: self.total,
            })
        }
    }
}
