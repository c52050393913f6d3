//! Where an undocumented answer keeps its records, decided by evidence (SPEC 6.3).
//!
//! - `records`: the records of one answer. A path the operator pinned, or one an earlier
//!   answer of the same target showed, is the only place read: an empty array there (in a
//!   success answer) is "none", an answer without it is "not understood". Before any path
//!   is known, the arrays that hold records decide: one array, or several that name the
//!   same records (the same set of ids), is the answer, and its path is what the caller
//!   learns; arrays that disagree are "not understood"; no such array, but an empty array
//!   (up to two levels deep) in a success answer, is "none"; no array at all is "not
//!   understood".
//! - `more_pages`: whether a listing answer shows signs of more pages (a total larger than
//!   the records held, a next link, a page number), and how to ask for the next one.
//!
//! Every "not understood" names the arrays seen (path and size, never values) and says
//! which config key pins the path.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{NotUnderstood, describe};

/// The path of an answer that is itself the array.
pub const WHOLE: &str = ".";

/// What a target knows about where an answer's records are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At<'a> {
    /// The operator's config names the path (only it is read).
    Pinned(&'a str),
    /// An earlier answer of this target had its records there (kept in the state).
    Learned(&'a str),
    /// Nothing yet: the arrays of the answer decide.
    Unknown,
}

impl At<'_> {
    /// The path, when one is known.
    pub fn path(&self) -> Option<&str> {
        match self {
            At::Pinned(p) | At::Learned(p) => Some(p),
            At::Unknown => None,
        }
    }
}

/// What is being read, and what a record is.
pub struct Evidence<'a> {
    /// What is read, e.g. "the group listing".
    pub what: &'a str,
    /// What a record carries, for messages.
    pub expected: &'a str,
    /// The config key that pins the path, e.g. "groups_at".
    pub pin_key: &'a str,
    /// The id of an item when it is a record (its key is the array's key): None for
    /// anything else (links, other objects).
    pub id_of: &'a dyn Fn(Option<&str>, &Value) -> Option<String>,
}

/// One array of an answer.
#[derive(Clone, Debug)]
pub struct Array<'a> {
    /// Where it was, e.g. `response.relationData` (`.` for an answer that is the array).
    pub path: String,
    /// The key that holds it (None for a bare array).
    pub key: Option<&'a str>,
    pub items: &'a [Value],
    /// The object that holds it (None for a bare array).
    pub parent: Option<&'a Map<String, Value>>,
}

/// The records of one answer: one array, or several that name the same records; none at
/// all when the answer showed there are none.
#[derive(Clone, Debug)]
pub struct Records<'a> {
    /// The arrays read; empty arrays when the answer says there are none.
    pub arrays: Vec<Array<'a>>,
    /// Whether there are no records.
    pub none: bool,
    /// How the place was decided: pinned, learned earlier, or found in this answer.
    pub at: Found,
}

/// How the records' place was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Pinned,
    Learned,
    /// Found in this answer by its arrays (the caller may learn the path).
    Seen,
    /// No records, shown by empty arrays before any path was known (nothing to learn).
    EmptyArrays,
}

/// How deep arrays are searched: under a key of the answer, or one or two levels deeper.
const MAX_DEPTH: usize = 3;
/// How deep an empty array may be to show "none" before a path is known.
const EMPTY_DEPTH: usize = 2;

/// Every array of `v` within `MAX_DEPTH` keys (arrays inside arrays are not searched).
pub fn arrays(v: &Value) -> Vec<Array<'_>> {
    fn walk<'a>(o: &'a Map<String, Value>, prefix: &str, depth: usize, out: &mut Vec<Array<'a>>) {
        for (k, child) in o {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match child {
                Value::Array(a) => out.push(Array {
                    path,
                    key: Some(k.as_str()),
                    items: a.as_slice(),
                    parent: Some(o),
                }),
                Value::Object(c) if depth < MAX_DEPTH => walk(c, &path, depth + 1, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    match v {
        Value::Array(a) => out.push(Array {
            path: WHOLE.into(),
            key: None,
            items: a.as_slice(),
            parent: None,
        }),
        Value::Object(o) => walk(o, "", 1, &mut out),
        _ => {}
    }
    out
}

/// The array at `path` (dot-separated keys; `.` is the answer itself), if there is one.
pub fn array_at<'a>(v: &'a Value, path: &str) -> Option<Array<'a>> {
    if path == WHOLE {
        return v.as_array().map(|a| Array {
            path: WHOLE.into(),
            key: None,
            items: a.as_slice(),
            parent: None,
        });
    }
    let mut parent: Option<&Map<String, Value>> = None;
    let mut cur = v;
    let mut last = "";
    for seg in path.split('.') {
        let o = cur.as_object()?;
        let (k, next) = o.get_key_value(seg)?;
        parent = Some(o);
        last = k.as_str();
        cur = next;
    }
    cur.as_array().map(|a| Array {
        path: path.to_string(),
        key: Some(last),
        items: a.as_slice(),
        parent,
    })
}

/// Whether the answer is the vendor's success body (`"status": "success"` or `true`).
pub fn is_success(v: &Value) -> bool {
    match v.get("status") {
        Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("success"),
        Some(Value::Bool(b)) => *b,
        _ => false,
    }
}

/// "response (2 items), links (empty)": the arrays seen, for messages.
pub fn seen_arrays(all: &[Array<'_>]) -> String {
    if all.is_empty() {
        return "no array".into();
    }
    let list: Vec<String> = all
        .iter()
        .map(|a| match a.items.len() {
            0 => format!("{} (empty)", a.path),
            1 => format!("{} (1 item)", a.path),
            n => format!("{} ({n} items)", a.path),
        })
        .collect();
    format!("arrays at: {}", list.join(", "))
}

/// The ids of an array's records; None if an item is no record.
fn ids_of(e: &Evidence<'_>, a: &Array<'_>) -> Option<BTreeSet<String>> {
    a.items.iter().map(|i| (e.id_of)(a.key, i)).collect()
}

/// The records of `v` (see the module's rules).
pub fn records<'a>(
    v: &'a Value,
    e: &Evidence<'_>,
    at: At<'_>,
) -> Result<Records<'a>, NotUnderstood> {
    let all = arrays(v);
    let not = |why: String| NotUnderstood {
        what: e.what.into(),
        seen: format!(
            "{}, {}; {why}; if the records are in one of these arrays, set {} = \"PATH\" for this target",
            describe(v),
            seen_arrays(&all),
            e.pin_key
        ),
    };
    if let Some(path) = at.path() {
        let how = match at {
            At::Pinned(_) => format!("pinned by {} = \"{path}\"", e.pin_key),
            _ => format!("where this target's earlier answers had them ({path})"),
        };
        let found = if matches!(at, At::Pinned(_)) {
            Found::Pinned
        } else {
            Found::Learned
        };
        return match array_at(v, path) {
            None => Err(not(format!(
                "expected the records at `{path}`, {how}, and this answer has no array there"
            ))),
            Some(a) if a.items.is_empty() && !is_success(v) => Err(not(format!(
                "an empty array at `{path}` in an answer that is not a success body"
            ))),
            Some(a) => Ok(Records {
                none: a.items.is_empty(),
                arrays: vec![a],
                at: found,
            }),
        };
    }
    let (holding, rest): (Vec<Array<'a>>, Vec<Array<'a>>) = all
        .iter()
        .cloned()
        .partition(|a| a.items.iter().any(|i| (e.id_of)(a.key, i).is_some()));
    match holding.len() {
        0 => {
            let empty = rest
                .iter()
                .filter(|a| a.items.is_empty() && depth(&a.path) <= EMPTY_DEPTH)
                .cloned()
                .collect::<Vec<_>>();
            if !empty.is_empty() && is_success(v) {
                return Ok(Records {
                    arrays: empty,
                    none: true,
                    at: Found::EmptyArrays,
                });
            }
            let why = if all.is_empty() {
                format!("expected an array of {}", e.expected)
            } else if is_success(v) {
                format!("no array holds {}", e.expected)
            } else {
                format!("not a success body, and no array holds {}", e.expected)
            };
            Err(not(why))
        }
        1 => Ok(Records {
            arrays: holding,
            none: false,
            at: Found::Seen,
        }),
        n => {
            let sets: Vec<Option<BTreeSet<String>>> =
                holding.iter().map(|a| ids_of(e, a)).collect();
            let agree = sets[0].is_some() && sets.iter().all(|s| s == &sets[0]);
            if agree {
                return Ok(Records {
                    arrays: holding,
                    none: false,
                    at: Found::Seen,
                });
            }
            let paths: Vec<&str> = holding.iter().map(|a| a.path.as_str()).collect();
            Err(not(format!(
                "{n} arrays hold records ({}) and they do not name the same ones",
                paths.join(", ")
            )))
        }
    }
}

/// How many keys deep a path is (`response.groups`: 2; `.`: 0).
fn depth(path: &str) -> usize {
    if path == WHOLE {
        0
    } else {
        path.split('.').count()
    }
}

/// What a listing answer says about further pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum More {
    /// No sign of another page.
    No,
    /// Another page follows: ask for it by sending `key` = `page` in the next request.
    Page { key: String, page: u64 },
    /// Signs of more pages, but no page number to ask for the next one.
    Unreadable(String),
}

const TOTAL: [&str; 9] = [
    "total",
    "totalCount",
    "total_count",
    "totalRecords",
    "total_records",
    "recordsTotal",
    "totalItems",
    "total_items",
    "count",
];
const NEXT: [&str; 6] = [
    "next",
    "next_page",
    "nextPage",
    "next_page_url",
    "nextPageUrl",
    "next_cursor",
];
const PAGE: [&str; 6] = [
    "page",
    "current_page",
    "currentPage",
    "pageNo",
    "page_no",
    "pageNumber",
];
const LAST: [&str; 5] = [
    "last_page",
    "lastPage",
    "total_pages",
    "totalPages",
    "pages",
];

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Whether the listing answer `v`, whose records are at `path`, shows more pages when
/// `held` records have been read so far (this page's included). Looked for in the answer's
/// top level and in the object holding the records (and its `links`/`meta`/`pagination`).
pub fn more_pages(v: &Value, path: Option<&str>, held: usize) -> More {
    let mut places: Vec<&Map<String, Value>> = Vec::new();
    if let Some(o) = v.as_object() {
        places.push(o);
    }
    if let Some(p) = path.filter(|p| *p != WHOLE)
        && let Some(parent) = array_at(v, p).and_then(|a| a.parent)
        && !places.iter().any(|o| std::ptr::eq(*o, parent))
    {
        places.push(parent);
    }
    for o in places.clone() {
        for k in [
            "links",
            "meta",
            "pagination",
            "paging",
            "page_info",
            "pageInfo",
        ] {
            if let Some(Value::Object(inner)) = o.get(k) {
                places.push(inner);
            }
        }
    }
    let mut signs = Vec::new();
    let mut page: Option<(String, u64)> = None;
    let mut last: Option<u64> = None;
    for o in &places {
        for k in TOTAL {
            if let Some(t) = o.get(k).and_then(number)
                && t > held as u64
            {
                signs.push(format!("{k} = {t} with {held} records read"));
            }
        }
        for k in NEXT {
            match o.get(k) {
                None | Some(Value::Null) | Some(Value::Bool(false)) => {}
                Some(Value::String(s)) if s.trim().is_empty() => {}
                Some(_) => signs.push(format!("a `{k}` link")),
            }
        }
        for k in PAGE {
            if page.is_none()
                && let Some(n) = o.get(k).and_then(number)
            {
                page = Some((k.to_string(), n));
            }
        }
        for k in LAST {
            if last.is_none() {
                last = o.get(k).and_then(number);
            }
        }
    }
    if let (Some((_, p)), Some(l)) = (&page, last)
        && *p < l
    {
        signs.push(format!("page {p} of {l}"));
    }
    match (signs.is_empty(), page) {
        (true, _) => More::No,
        (false, Some((key, p))) => More::Page { key, page: p + 1 },
        (false, None) => More::Unreadable(signs.join(", ")),
    }
}
