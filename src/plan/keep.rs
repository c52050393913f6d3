//! `keep_members` (SPEC 5, "Protected members"): glob patterns on a person's email, or
//! `id:` patterns on the target's member id. A protected member is never removed.
//!
//! Patterns are compiled once, at config load, with `globset`; emails match
//! case-insensitively, member ids exactly.

use globset::{GlobBuilder, GlobMatcher};

/// A target's protected members: its `keep_members` patterns, compiled.
#[derive(Clone, Debug, Default)]
pub struct Keep {
    patterns: Vec<Pattern>,
}

#[derive(Clone, Debug)]
struct Pattern {
    /// As written in the config, for the plan and for `explain`.
    text: String,
    /// Matches member ids (`id:` patterns) rather than emails.
    on_id: bool,
    matcher: GlobMatcher,
}

/// A `keep_members` entry that is not a pattern.
#[derive(Debug, thiserror::Error)]
#[error("\"{pattern}\" {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

impl PartialEq for Keep {
    fn eq(&self, other: &Keep) -> bool {
        self.patterns().eq(other.patterns())
    }
}

impl Keep {
    /// Compiles `keep_members`: `svc-*@example.com` (an email glob) or `id:4711` / `id:47*`
    /// (a member-id glob).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Keep, PatternError> {
        let mut out = Vec::with_capacity(patterns.len());
        for p in patterns {
            let text = p.as_ref();
            let fail = |reason: String| PatternError {
                pattern: text.to_string(),
                reason,
            };
            let (glob, on_id) = match text.strip_prefix("id:") {
                Some(id) => (id.trim(), true),
                None => (text.trim(), false),
            };
            if glob.is_empty() {
                return Err(fail("is empty".into()));
            }
            if !on_id && !glob.contains('@') {
                return Err(fail(
                    "has no @: it is neither an email pattern nor an id: pattern".into(),
                ));
            }
            let matcher = GlobBuilder::new(glob)
                .case_insensitive(!on_id)
                .build()
                .map_err(|e| fail(format!("is not a glob pattern: {}", e.kind())))?
                .compile_matcher();
            out.push(Pattern {
                text: text.to_string(),
                on_id,
                matcher,
            });
        }
        Ok(Keep { patterns: out })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern is on emails (so a member's email must be known to decide).
    pub fn on_emails(&self) -> bool {
        self.patterns.iter().any(|p| !p.on_id)
    }

    /// The patterns as written.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|p| p.text.as_str())
    }

    /// The first pattern that protects this member, if any. A member whose email is unknown
    /// (found by a `--full` read) can only match `id:` patterns.
    pub fn protects(&self, id: &str, email: Option<&str>) -> Option<&str> {
        self.protects_person(Some(id), email)
    }

    /// `protects` for a person whose member id may not be known yet (`explain`): only
    /// email patterns can match then.
    pub fn protects_person(&self, id: Option<&str>, email: Option<&str>) -> Option<&str> {
        self.patterns
            .iter()
            .find(|p| {
                let on = if p.on_id { id } else { email };
                on.is_some_and(|v| p.matcher.is_match(v))
            })
            .map(|p| p.text.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_ids_and_bad_patterns() {
        let k = Keep::new(&["svc-*@example.com", "id:4711", "id:9*"]).unwrap();
        assert_eq!(
            k.protects("1", Some("SVC-Bot@Example.com")),
            Some("svc-*@example.com")
        );
        assert_eq!(k.protects("1", Some("ana@example.com")), None);
        assert_eq!(k.protects("4711", None), Some("id:4711"));
        assert_eq!(k.protects("47110", None), None, "a whole-id match");
        assert_eq!(k.protects("901", Some("x@y.z")), Some("id:9*"));
        assert_eq!(
            k.protects("svc-1@example.com", None),
            None,
            "no email, no email match"
        );
        assert!(Keep::new(&["svc-[*@example.com"]).is_err());
        assert!(Keep::new(&["id:"]).is_err());
        assert!(Keep::new(&[""]).is_err());
        assert!(
            Keep::new(&["svc-*"]).is_err(),
            "an email pattern needs an @"
        );
        assert!(Keep::new::<&str>(&[]).unwrap().is_empty());
    }
}
