//! YAML, TOML and JSON files: one structure (SPEC section 3), read with each format's own
//! crate, keeping the line of every string value for error messages and `explain`.
//!
//! How lines are found differs by format, so [`Loc`] asks a per-thread setting, made
//! for the duration of one parse by [`parse`]:
//! - YAML: `serde_saphyr::Spanned` gives the line directly;
//! - TOML: `toml::Spanned` gives a byte offset, turned into a line with a [`LineIndex`];
//! - JSON: serde_json has no spans, so the text is scanned once beforehand for its string
//!   values (not keys) and their lines. serde_json reads in document order and every
//!   string value of this structure is a [`Loc`], so the n-th [`Loc`] read is the n-th
//!   string value of the text; the value is compared to make sure.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::MessageFormatter as _;

use super::Format;
use super::error::Errors;
use crate::model::Origin;

/// A string from the source and the 1-based line it was written on, if known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Loc {
    /// The value as written (after the format's unescaping).
    pub value: String,
    /// 1-based line of the value.
    pub line: Option<usize>,
}

/// One YAML, TOML or JSON file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDef {
    /// `people:`; absent or null means none.
    pub people: Option<Vec<MapOf<PersonDef>>>,
    /// `groups:`; absent or null means none.
    pub groups: Option<Vec<MapOf<GroupDef>>>,
}

/// One entry of `people:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PersonDef {
    /// The person's key everywhere.
    pub email: Loc,
    /// For logs only.
    pub name: Option<Loc>,
    /// Member id per target name, in the order written.
    pub ids: Option<IdMap>,
}

/// One entry of `groups:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupDef {
    /// Display name.
    pub name: Loc,
    /// Stable key; default is `name`.
    pub key: Option<Loc>,
    /// Member emails.
    pub members: Option<Vec<Loc>>,
    /// Owner emails (scim targets only).
    pub owners: Option<Vec<Loc>>,
    /// Emails that receive calls (assign_group targets only); absent means all members.
    pub receive_call: Option<Vec<Loc>>,
    /// Target names; absent means every target.
    pub targets: Option<Vec<Loc>>,
}

/// A `T` that must be written as a map. serde's derived structs also accept a list of
/// their fields in order, which would let `["Tier 1", "t1"]` pass for a group.
#[derive(Debug)]
pub(super) struct MapOf<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOf<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for MapVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(MapVisitor(PhantomData))
            .map(MapOf)
    }
}

/// `ids:` as written: a map from target name to member id, keeping the order and any
/// repeated key (which serde's maps would silently collapse in JSON).
#[derive(Debug, Default)]
pub(super) struct IdMap(pub Vec<(String, Loc)>);

impl<'de> Deserialize<'de> for IdMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdMapVisitor;

        impl<'de> Visitor<'de> for IdMapVisitor {
            type Value = IdMap;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from target name to member id")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IdMap, A::Error> {
                let mut entries = Vec::new();
                while let Some(target) = map.next_key::<String>()? {
                    entries.push((target, map.next_value::<Loc>()?));
                }
                Ok(IdMap(entries))
            }
        }

        deserializer.deserialize_map(IdMapVisitor)
    }
}

/// How [`Loc`] finds lines during the current parse on this thread.
enum Spans {
    /// Not parsing a file (e.g. in a test): no lines.
    Off,
    /// YAML: serde-saphyr's spans.
    Yaml,
    /// TOML: byte offsets, turned into lines.
    Toml(LineIndex),
    /// JSON: the string values found by a scan of the text.
    Json(JsonStrings),
}

thread_local! {
    static SPANS: RefCell<Spans> = const { RefCell::new(Spans::Off) };
}

/// Sets [`SPANS`] for one parse and resets it when dropped (also on panic).
struct SpansScope;

impl SpansScope {
    fn enter(spans: Spans) -> Self {
        SPANS.with(|s| *s.borrow_mut() = spans);
        SpansScope
    }
}

impl Drop for SpansScope {
    fn drop(&mut self) {
        SPANS.with(|s| *s.borrow_mut() = Spans::Off);
    }
}

impl<'de> Deserialize<'de> for Loc {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Clone, Copy)]
        enum Kind {
            Off,
            Yaml,
            Toml,
            Json,
        }
        // Look at the mode without holding the borrow while deserializing.
        let kind = SPANS.with(|s| match &*s.borrow() {
            Spans::Off => Kind::Off,
            Spans::Yaml => Kind::Yaml,
            Spans::Toml(_) => Kind::Toml,
            Spans::Json(_) => Kind::Json,
        });
        match kind {
            Kind::Off => Ok(Loc {
                value: String::deserialize(deserializer)?,
                line: None,
            }),
            Kind::Yaml => {
                let spanned = serde_saphyr::Spanned::<String>::deserialize(deserializer)?;
                let line = usize::try_from(spanned.referenced.line()).ok();
                Ok(Loc {
                    value: spanned.value,
                    line: line.filter(|&l| l > 0),
                })
            }
            Kind::Toml => {
                let spanned = toml::Spanned::<String>::deserialize(deserializer)?;
                let start = spanned.span().start;
                let line = SPANS.with(|s| match &*s.borrow() {
                    Spans::Toml(index) => Some(index.line_of(start)),
                    _ => None,
                });
                Ok(Loc {
                    value: spanned.into_inner(),
                    line,
                })
            }
            Kind::Json => {
                let value = String::deserialize(deserializer)?;
                let line = SPANS.with(|s| match &mut *s.borrow_mut() {
                    Spans::Json(strings) => strings.next_line(&value),
                    _ => None,
                });
                Ok(Loc { value, line })
            }
        }
    }
}

/// Parses one structured file. Syntax errors, unknown fields and wrong types are recorded
/// in `errors` (the formats stop at the first one in a file) and give `None`.
pub(super) fn parse(
    format: Format,
    text: &str,
    file: &Path,
    errors: &mut Errors,
) -> Option<FileDef> {
    let origin = |line: Option<usize>| Origin {
        file: file.into(),
        line,
    };
    match format {
        Format::Yaml => {
            let _scope = SpansScope::enter(Spans::Yaml);
            serde_saphyr::from_str_with_options::<MapOf<FileDef>>(text, yaml_options())
                .map(|m| m.0)
                .map_err(|e| {
                    let known = e.location().filter(|l| l.line() > 0);
                    let line = known.and_then(|l| usize::try_from(l.line()).ok());
                    let column = known.map(|l| l.column());
                    let message = serde_saphyr::UserMessageFormatter
                        .format_message(e.without_snippet())
                        .into_owned();
                    errors.push(
                        origin(line),
                        syntax_message(&message, column, snippet(text, line)),
                    );
                })
                .ok()
        }
        Format::Toml => {
            let _scope = SpansScope::enter(Spans::Toml(LineIndex::new(text)));
            toml::from_str::<FileDef>(text)
                .map_err(|e| {
                    let index = LineIndex::new(text);
                    let start = e.span().map(|s| s.start);
                    let line = start.map(|s| index.line_of(s));
                    let column = start.map(|s| index.column_of(text, s));
                    errors.push(
                        origin(line),
                        syntax_message(e.message(), column, snippet(text, line)),
                    );
                })
                .ok()
        }
        Format::Json => {
            let _scope = SpansScope::enter(Spans::Json(JsonStrings::scan(text)));
            serde_json::from_str::<MapOf<FileDef>>(text)
                .map(|m| m.0)
                .map_err(|e| {
                    let full = e.to_string();
                    let suffix = format!(" at line {} column {}", e.line(), e.column());
                    let message = full.strip_suffix(&suffix).unwrap_or(&full);
                    let line = Some(e.line()).filter(|&l| l > 0);
                    errors.push(
                        origin(line),
                        syntax_message(message, Some(e.column()), snippet(text, line)),
                    );
                })
                .ok()
        }
        Format::Csv => unreachable!("CSV files are read by source::csv"),
    }
}

/// A parser's message as one line, with the column and the offending line's text when
/// known (so the message shows the value, not only where it is).
fn syntax_message(
    message: &str,
    column: Option<impl fmt::Display>,
    line: Option<String>,
) -> String {
    let mut message: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if let Some(c) = column {
        message += &format!(" (column {c})");
    }
    if let Some(l) = line {
        message += &format!(" in: {l}");
    }
    message
}

/// The text of a 1-based line, trimmed and shortened, for error messages.
fn snippet(text: &str, line: Option<usize>) -> Option<String> {
    let l = text.lines().nth(line?.checked_sub(1)?)?.trim();
    if l.is_empty() {
        return None;
    }
    let mut out: String = l.chars().take(80).collect();
    if l.chars().count() > 80 {
        out.push('…');
    }
    Some(out)
}

/// serde-saphyr's options: duplicate keys are errors (the default), and a budget that
/// fits a large contact center (the default one stops at 250 000 nodes) while still
/// bounding alias bombs: at most [`MAX_ALIAS_EVENTS`] events replayed from aliases in all
/// (SPEC 9's design point is 1,000,000 memberships), nested at most 64 deep, and at most
/// 64 levels of nesting in all.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_events: 50_000_000,
            max_nodes: 20_000_000,
            max_depth: 64,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_ALIAS_EVENTS,
            max_replay_stack_depth: 64,
        },
    }
}

/// The most YAML events that aliases (`*name`) may replay in one file.
pub(super) const MAX_ALIAS_EVENTS: usize = 1_000_000;

/// Byte offset to line number, for one text.
#[derive(Debug)]
pub(super) struct LineIndex {
    /// Byte offset at which each line starts; the first is 0.
    starts: Vec<usize>,
}

impl LineIndex {
    /// Indexes the lines of `text`.
    pub(super) fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    /// The 1-based line holding byte `offset`.
    pub(super) fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }

    /// The 1-based column (in characters) of byte `offset` in `text`.
    fn column_of(&self, text: &str, offset: usize) -> usize {
        let start = self.starts[self.line_of(offset) - 1];
        let end = offset.min(text.len());
        text.get(start..end).map_or(1, |s| s.chars().count() + 1)
    }
}

/// The string values of a JSON text (not its keys), in order, with their lines.
struct JsonStrings {
    /// The text scanned.
    text: String,
    /// The string values found.
    values: Vec<JsonString>,
    /// The next value to hand out.
    next: usize,
}

/// One string value in a JSON text.
struct JsonString {
    /// Byte range of the literal, quotes included.
    start: usize,
    end: usize,
    /// 1-based line.
    line: usize,
    /// Whether it has escapes (then it must be decoded to be compared).
    escaped: bool,
}

impl JsonStrings {
    /// Finds the string values of `text` in one pass. Does not validate the JSON: it only
    /// needs to be right for texts that serde_json accepts.
    fn scan(text: &str) -> Self {
        let bytes = text.as_bytes();
        let mut values = Vec::new();
        let mut line = 1;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => line += 1,
                b'"' => {
                    let start = i;
                    let mut escaped = false;
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'"' {
                        if bytes[i] == b'\\' {
                            escaped = true;
                            i += 1;
                        }
                        i += 1;
                    }
                    let end = (i + 1).min(bytes.len());
                    // A string followed by ':' is a key.
                    let after = bytes[end..].iter().find(|b| !b.is_ascii_whitespace());
                    if after != Some(&b':') {
                        values.push(JsonString {
                            start,
                            end,
                            line,
                            escaped,
                        });
                    }
                }
                _ => {}
            }
            i += 1;
        }
        JsonStrings {
            text: text.to_owned(),
            values,
            next: 0,
        }
    }

    /// The line of the next string value, which should be `value`. Looks a few values
    /// ahead in case the invariant (every string value is a [`Loc`]) ever breaks.
    fn next_line(&mut self, value: &str) -> Option<usize> {
        const LOOKAHEAD: usize = 16;
        let found = self.values[self.next..]
            .iter()
            .take(LOOKAHEAD)
            .position(|v| self.literal_is(v, value))?;
        self.next += found + 1;
        Some(self.values[self.next - 1].line)
    }

    /// Whether the literal `v` decodes to `value`.
    fn literal_is(&self, v: &JsonString, value: &str) -> bool {
        let literal = &self.text[v.start..v.end];
        if v.escaped {
            serde_json::from_str::<String>(literal).is_ok_and(|s| s == value)
        } else {
            literal.len() >= 2 && &literal[1..literal.len() - 1] == value
        }
    }
}
