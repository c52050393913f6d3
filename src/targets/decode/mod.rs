//! The decoding toolkit every kind uses (SPEC 6.3: lenient is not credulous).
//!
//! Decoding an answer has three outcomes: the records, "there are none" (the answer says
//! so in a shape we know), and "not understood" (an error naming the keys seen).
//!
//! - `answer` / `value`: a body as a serde type / as JSON; anything else is `NotUnderstood`.
//! - `id` / `de_id` / `de_ids`: the ONE rule for an id that may be a string or a number.
//! - `flag` / `de_flag`: the ONE rule for a flag spelled `1`/`0`, `"1"`/`"0"`, `true`/`false`
//!   or `"true"`/`"false"`.
//! - `paged`: the ONE pager (any cursor), which refuses to stop at its cap with a partial list.
//! - `gone_on_404`: the ONE "read by id, 404 means gone" rule.
//! - `evidence`: where an undocumented answer (DeepCall) keeps its records, by evidence: a
//!   pinned or learned path, agreeing arrays, empty arrays in a success body; and the signs
//!   of more pages in a listing.
//!
//! Messages never quote an answer's values (Kazoo answers echo the session token): only its
//! keys, its type and its size.

use std::future::Future;

use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::OpError;

pub mod evidence;

/// An answer that did not carry the records an operation needs.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{what}: answer not understood ({seen})")]
pub struct NotUnderstood {
    /// What was being read, e.g. "the group listing".
    pub what: String,
    /// What the answer held instead, e.g. "an object with keys: items, total".
    pub seen: String,
}

impl NotUnderstood {
    /// `v` was not the answer expected: names its keys, and what was expected instead.
    pub fn of(what: &str, v: &Value, expected: &str) -> NotUnderstood {
        NotUnderstood {
            what: what.to_string(),
            seen: format!("{}; expected {expected}", describe(v)),
        }
    }
}

/// What a JSON value is, by its shape only (never its values): "an object with keys: a, b",
/// "an array of 3 items", "a string", "null".
pub fn describe(v: &Value) -> String {
    match v {
        Value::Object(o) if o.is_empty() => "an empty object".into(),
        Value::Object(o) => {
            let keys: Vec<&str> = o.keys().map(String::as_str).take(12).collect();
            let more = if o.len() > keys.len() { ", ..." } else { "" };
            format!("an object with keys: {}{more}", keys.join(", "))
        }
        Value::Array(a) if a.is_empty() => "an empty array".into(),
        Value::Array(a) => format!("an array of {} items", a.len()),
        Value::String(_) => "a string".into(),
        Value::Number(_) => "a number".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Null => "null".into(),
    }
}

/// A body as JSON; an empty body or one that is not JSON is not understood.
pub fn value(what: &str, body: &[u8]) -> Result<Value, NotUnderstood> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(NotUnderstood {
            what: what.into(),
            seen: "an empty body".into(),
        });
    }
    serde_json::from_slice(body).map_err(|_| NotUnderstood {
        what: what.into(),
        seen: format!("a body of {} bytes that is not JSON", body.len()),
    })
}

/// A JSON value as the serde type `T`; `expected` says what was wanted, for the message.
/// Unknown fields are ignored (the types do not deny them); a missing or malformed record
/// is not understood, and serde's reason is added to the message.
pub fn typed<T: DeserializeOwned>(
    what: &str,
    expected: &str,
    v: &Value,
) -> Result<T, NotUnderstood> {
    T::deserialize(v).map_err(|e| {
        let mut n = NotUnderstood::of(what, v, expected);
        n.seen += &format!(": {e}");
        n
    })
}

/// A body as the serde type `T` (`value`, then `typed`).
pub fn answer<T: DeserializeOwned>(
    what: &str,
    expected: &str,
    body: &[u8],
) -> Result<T, NotUnderstood> {
    typed(what, expected, &value(what, body)?)
}

/// THE id rule: a JSON string (trimmed, not empty) or an integer number (a float without a
/// fraction counts as one). Empty strings, null, booleans, objects, arrays and fractions
/// are no id.
pub fn id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_string),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| format!("{}", f as i64)),
        _ => None,
    }
}

const ID_EXPECTED: &str = "an id (a non-empty string or an integer)";

/// `#[serde(deserialize_with = "decode::de_id")]`: a field that holds an id (`id`).
pub fn de_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = Value::deserialize(d)?;
    id(&v).ok_or_else(|| D::Error::custom(format!("{} is not {ID_EXPECTED}", describe(&v))))
}

/// `#[serde(deserialize_with = "decode::de_ids")]`: a list of ids (`id` for each).
pub fn de_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items = Vec::<Value>::deserialize(d)?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            id(v).ok_or_else(|| {
                D::Error::custom(format!("item {i}: {} is not {ID_EXPECTED}", describe(v)))
            })
        })
        .collect()
}

/// A list item that holds an id: bare (`"a"`, `7`), or an object holding it under `value`
/// (SCIM members, `{"value": id}`) or `id` (teams agents, `{"id": ..., "name": ...}`), by
/// the one id rule; anything else is not understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdRef(pub String);

impl<'de> Deserialize<'de> for IdRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IdRef, D::Error> {
        let v = Value::deserialize(d)?;
        let found = match &v {
            Value::Object(o) => first_of(o, &["value", "id"]).and_then(id),
            other => id(other),
        };
        found.map(IdRef).ok_or_else(|| {
            D::Error::custom(format!(
                "an item that is {} (expected {ID_EXPECTED}, bare or as {{\"value\" or \"id\": id}})",
                describe(&v)
            ))
        })
    }
}

/// An id that deserializes by `id` (for lists and enums of ids).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Id(pub String);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        de_id(d).map(Id)
    }
}

/// THE flag rule: `1`/`0`, `"1"`/`"0"`, `true`/`false`, `"true"`/`"false"` (trimmed, any
/// case). Anything else is no flag.
pub fn flag(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_f64() {
            Some(1.0) => Some(true),
            Some(0.0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" => Some(true),
            "0" | "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// `#[serde(deserialize_with = "decode::de_flag")]`: a field that holds a flag (`flag`).
pub fn de_flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Value::deserialize(d)?;
    flag(&v).ok_or_else(|| {
        D::Error::custom(format!(
            "{} is not a flag (1/0, \"1\"/\"0\", true/false)",
            describe(&v)
        ))
    })
}

/// THE pager. Reads page after page: `fetch(cursor)` reads one page and gives its records
/// and the cursor of the next page (None on the last page); `each(records, more)` sees every
/// page's records (`more`: another page follows) and ends the paging early by returning
/// Some. A next cursor equal to the one just read (a loop), a page that repeats the page
/// before it (a server that ignores the paging parameter: what is on page 2 would never be
/// seen), or still another page after `max_pages` pages, is not understood: a listing is
/// whole or it is an error, never truncated (a group beyond the cap would be created twice).
pub async fn paged<T, C, R, F, Fut>(
    what: &str,
    max_pages: usize,
    first: C,
    mut fetch: F,
    mut each: impl FnMut(Vec<T>, bool) -> Option<R>,
) -> Result<Option<R>, OpError>
where
    T: PartialEq + Clone,
    C: PartialEq + Clone,
    F: FnMut(C) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, Option<C>), OpError>>,
{
    let mut cursor = first;
    let mut previous: Option<Vec<T>> = None;
    for _ in 0..max_pages {
        let (records, next) = fetch(cursor.clone()).await?;
        if !records.is_empty() && previous.as_ref() == Some(&records) {
            return Err(NotUnderstood {
                what: what.into(),
                seen: "a page that repeats the page before it (the server ignores the paging \
                       parameter, so later pages cannot be read)"
                    .into(),
            }
            .into());
        }
        if next.is_some() {
            previous = Some(records.clone());
        }
        if let Some(found) = each(records, next.is_some()) {
            return Ok(Some(found));
        }
        match next {
            None => return Ok(None),
            Some(n) if n == cursor => {
                return Err(NotUnderstood {
                    what: what.into(),
                    seen: "the next page it names is the page just read".into(),
                }
                .into());
            }
            Some(n) => cursor = n,
        }
    }
    Err(NotUnderstood {
        what: what.into(),
        seen: format!(
            "stopped at {max_pages} pages, the cap, with more to come; rostersync reads a \
             listing whole or not at all (a server that pages forever, or a listing larger \
             than the cap: raise the kind's MAX_PAGES)"
        ),
    }
    .into())
}

/// THE "read by id" rule: a 404 (`OpError::is_not_found`) means the record is gone
/// (`Ok(None)`); any other failure, and any answer not understood, stands.
pub async fn gone_on_404<T>(
    read: impl Future<Output = Result<T, OpError>>,
) -> Result<Option<T>, OpError> {
    match read.await {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Where a record of a located array sits, for messages: `data.groups[3]`.
pub fn at(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The first of `keys` that `o` has (not null), for records whose field names vary.
pub fn first_of<'a>(o: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|k| o.get(*k).filter(|v| !v.is_null()))
}

#[cfg(test)]
mod tests;
