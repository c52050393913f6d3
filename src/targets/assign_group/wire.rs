//! DeepCall Group API v2 wire types and the pure lowering of changes into request bodies
//! (no IO). Seeds 002 (`submitAssignGroupToAgent`) and 004 (`delete`, error bodies).
//!
//! Every call is `POST {base}/Group/<endpoint>` with a JSON body; the credentials are merged
//! into it by `mod.rs` (never here, so nothing in this file ever holds a secret). The
//! vendor answers HTTP 200 for its own errors: the body decides (`classify`).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::plan::Update;
use crate::targets::decode::evidence::{self, Array, At, Evidence, Found, Records};
use crate::targets::decode::{self, NotUnderstood};
use crate::targets::http::{Verdict, default_verdict, message};

/// The endpoints rostersync calls. Vendor error codes mean different things per endpoint
/// (1501/1502/1503 are the Group module's; other modules reuse the numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Add,
    List,
    Update,
    Delete,
    Assign,
    Relation,
}

impl Endpoint {
    /// The path below the base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Add => "/Group/add",
            Endpoint::List => "/Group/list",
            Endpoint::Update => "/Group/update",
            Endpoint::Delete => "/Group/delete",
            Endpoint::Assign => "/Group/submitAssignGroupToAgent",
            Endpoint::Relation => "/Group/getGroupAgentRelation",
        }
    }

    /// Whether the call names a group by `groupId` (so 1503 means "not found or not
    /// authorized" for that group).
    fn names_group(self) -> bool {
        !matches!(self, Endpoint::Add | Endpoint::List)
    }
}

/// Vendor error codes (seeds 002 and 004, plus the transient 1010).
pub mod code {
    pub const INVALID_PARAMETERS: i64 = 1000;
    /// "Something went wrong (Generic error)": transient.
    pub const SOMETHING_WENT_WRONG: i64 = 1009;
    /// Transient as well (a busy backend).
    pub const TRY_AGAIN: i64 = 1010;
    pub const PERMISSION_DENIED: i64 = 1015;
    pub const INVALID_REQUEST_DATA: i64 = 1047;
    pub const NAME_MISSING: i64 = 1501;
    pub const GROUP_ID_MISSING: i64 = 1502;
    pub const GROUP_NOT_FOUND: i64 = 1503;
}

/// A vendor error body: `{"status": "error", "code": N, "message": ...}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendorError {
    pub code: Option<i64>,
    pub message: String,
}

impl std::fmt::Display for VendorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(c) => write!(f, "DeepCall error {c}: {}", self.message),
            None => write!(f, "DeepCall error: {}", self.message),
        }
    }
}

/// A number that may come as a JSON number or a numeric string.
fn loose_i64(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The vendor error an answer carries, if any: `status` "error" (or "fail"/"failed"/`false`),
/// or no `status` but a `code` other than 200.
pub fn vendor_error(v: &Value) -> Option<VendorError> {
    let o = v.as_object()?;
    let code = loose_i64(o.get("code"));
    let is_error = match o.get("status") {
        Some(Value::String(s)) => {
            matches!(
                s.trim().to_ascii_lowercase().as_str(),
                "error" | "fail" | "failed" | "failure"
            )
        }
        Some(Value::Bool(b)) => !b,
        _ => code.is_some_and(|c| c != 200),
    };
    if !is_error {
        return None;
    }
    let text = ["message", "msg", "error"]
        .iter()
        .find_map(|k| o.get(*k).and_then(Value::as_str))
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .unwrap_or("no message");
    Some(VendorError {
        code,
        message: text.chars().take(300).collect(),
    })
}

/// How an answer of `ep` reads: the body decides, not the HTTP status.
///
/// - 429, 408 and 5xx: retried (as for every kind);
/// - a vendor error body: 1009/1010 retried; 1503 on a call naming a group "maybe gone"
///   (NotFound: the target checks the listing before anything is forgotten); 1015
///   refused credentials or rights; every other code final, with the vendor's message;
/// - 2xx with a JSON object that is no error: success; a 2xx that is not a JSON object
///   proves nothing and is retried (as a lost answer would be);
/// - HTTP 404 is a wrong `base_url` (every path is a fixed endpoint), never a gone group.
pub fn classify(ep: Endpoint, status: u16, body: &[u8]) -> Verdict {
    if matches!(status, 408 | 429 | 500..=599) {
        return default_verdict(status, body);
    }
    let v: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(e) = v.as_ref().and_then(vendor_error) {
        let msg = e.to_string();
        return match e.code {
            Some(code::SOMETHING_WENT_WRONG | code::TRY_AGAIN) => Verdict::Retry(msg),
            Some(code::GROUP_NOT_FOUND) if ep.names_group() => Verdict::NotFound(msg),
            Some(code::PERMISSION_DENIED) => Verdict::Unauthorized(msg),
            _ => Verdict::Fail(msg),
        };
    }
    match status {
        200..=299 if v.as_ref().is_some_and(Value::is_object) => Verdict::Ok,
        200..=299 => Verdict::Retry(format!(
            "HTTP {status}: the answer is not a DeepCall JSON body"
        )),
        404 => Verdict::Fail(format!(
            "{} (no such endpoint: check base_url)",
            message(status, body)
        )),
        _ => default_verdict(status, body),
    }
}

/// `Group/add {name}`.
pub fn add_body(name: &str) -> Value {
    json!({ "name": name })
}

/// `Group/list {name}` (the vendor filters by case-insensitive substring); no name lists all.
/// `page`: the key and number of the page to ask for, when an earlier page of the same
/// listing named one (the vendor documents no paging).
pub fn list_body(name: Option<&str>, page: Option<(&str, u64)>) -> Value {
    let mut v = match name {
        Some(n) => json!({ "name": n }),
        None => json!({}),
    };
    if let (Some((k, n)), Value::Object(o)) = (page, &mut v) {
        o.insert(k.to_string(), json!(n));
    }
    v
}

/// `Group/update {groupId, name}`.
pub fn rename_body(group_id: &str, name: &str) -> Value {
    json!({ "groupId": group_id, "name": name })
}

/// `Group/delete {groupId}` and `Group/getGroupAgentRelation {groupId}`.
pub fn group_body(group_id: &str) -> Value {
    json!({ "groupId": group_id })
}

/// `Group/submitAssignGroupToAgent`: both lists, always whole (the call replaces them).
pub fn assign_body(group_id: &str, a: &Assignment) -> Value {
    json!({
        "groupId": group_id,
        "agent_unique_id": a.agents,
        "receive_call": a.receive_call,
    })
}

/// Merges the credential fields into a request body.
pub fn with_auth(mut body: Value, auth: &Map<String, Value>) -> Value {
    if let Value::Object(o) = &mut body {
        for (k, v) in auth {
            o.insert(k.clone(), v.clone());
        }
    }
    body
}

/// Field names a group record may use for its id and its name.
const GROUP_ID: [&str; 3] = ["groupId", "group_id", "id"];
const GROUP_NAME: [&str; 3] = ["name", "groupName", "group_name"];
/// Field names a relation record may use for the agent id and its `receive_call` flag.
const AGENT_ID: [&str; 5] = [
    "agent_unique_id",
    "agentUniqueId",
    "agent_id",
    "agentId",
    "id",
];
const FLAG: [&str; 2] = ["receive_call", "receiveCall"];

/// The `groupId` of a `Group/add` answer (top level or under `data`), by the one id rule.
pub fn created_id(v: &Value) -> Option<String> {
    let at = |o: &Value| {
        o.as_object()
            .and_then(|o| decode::first_of(o, &GROUP_ID))
            .and_then(decode::id)
    };
    at(v)
        .or_else(|| v.get("data").and_then(at))
        .or_else(|| v.get("response").and_then(at))
}

/// A group's agents, and the ones among them that receive calls.
pub type Lists = (Vec<String>, Vec<String>);

/// One group of a `Group/list` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub name: String,
}

/// A record of a located array that lacks what it must carry (the message names the key
/// that pins where the records are, in case they are elsewhere).
fn bad_record(what: &str, path: &str, i: usize, v: &Value, expected: &str) -> NotUnderstood {
    let pin = if what == "the group listing" {
        GROUPS_AT
    } else {
        AGENTS_AT
    };
    NotUnderstood {
        what: what.into(),
        seen: format!(
            "{} is {}; expected {expected}; if the records are in another array, set {pin} = \"PATH\" \
             for this target",
            decode::at(path, i),
            decode::describe(v)
        ),
    }
}

/// The config key that pins where `Group/list` puts its records.
pub const GROUPS_AT: &str = "groups_at";
/// The config key that pins where `getGroupAgentRelation` puts its records.
pub const AGENTS_AT: &str = "agents_at";

/// The records of one answer, and how their place was decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read<T> {
    pub records: T,
    /// Where the records were (None: the answer showed there are none by empty arrays,
    /// before any path was known).
    pub path: Option<String>,
    pub found: Found,
}

/// The id of a listing record: an object with an id (`groupId`, `group_id` or `id`) and a
/// name (`name`, `groupName` or `group_name`).
fn group_record(_: Option<&str>, g: &Value) -> Option<String> {
    let o = g.as_object()?;
    decode::first_of(o, &GROUP_NAME)?;
    decode::first_of(o, &GROUP_ID).and_then(decode::id)
}

/// The groups of a `Group/list` answer, by `decode::evidence::records`: only the path `at`
/// names when one is pinned or learned; else the one array of group records (several
/// arrays that name the same groups are one), or "none" shown by empty arrays in a success
/// body. Every record of the array read must carry an id and a name (a group we cannot
/// read could be the one we look for).
pub fn listed(v: &Value, at: At<'_>) -> Result<Read<Vec<Listed>>, NotUnderstood> {
    const WHAT: &str = "the group listing";
    let r = evidence::records(
        v,
        &Evidence {
            what: WHAT,
            expected: "objects with an id (groupId, group_id or id) and a name (name, groupName or group_name)",
            pin_key: GROUPS_AT,
            id_of: &group_record,
        },
        at,
    )?;
    let (path, found) = place(&r);
    if r.none {
        return Ok(Read {
            records: vec![],
            path,
            found,
        });
    }
    let a = &r.arrays[0];
    let groups = a
        .items
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let o = g.as_object();
            let id = o
                .and_then(|o| decode::first_of(o, &GROUP_ID))
                .and_then(decode::id);
            let name = o
                .and_then(|o| decode::first_of(o, &GROUP_NAME))
                .and_then(Value::as_str);
            match (id, name) {
                (Some(id), Some(name)) => Ok(Listed {
                    id,
                    name: name.to_string(),
                }),
                _ => Err(bad_record(WHAT, &a.path, i, g, "an id and a name")),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Read {
        records: groups,
        path,
        found,
    })
}

/// Where the records of `r` were, and how that was decided: a known path, the array
/// found, or nothing (no records shown by empty arrays).
fn place(r: &Records<'_>) -> (Option<String>, Found) {
    match r.at {
        Found::EmptyArrays => (None, r.at),
        _ => (r.arrays.first().map(|a| a.path.clone()), r.at),
    }
}

/// The group of exactly this name, compared case-insensitively on our side (the vendor's
/// filter is a substring match): the exact-case match first, else the lowest id.
pub fn exact_match<'a>(groups: &'a [Listed], name: &str) -> Option<&'a Listed> {
    groups.iter().find(|g| g.name == name).or_else(|| {
        groups
            .iter()
            .filter(|g| g.name.to_lowercase() == name.to_lowercase())
            .min_by_key(|g| (g.id.parse::<u64>().unwrap_or(u64::MAX), g.id.clone()))
    })
}

/// The id of a relation record: an object with an agent id (`agent_unique_id`,
/// `agentUniqueId`, `agent_id`, `agentId` or `id`), or a bare id in an `agent_unique_id`
/// array (the assign call's own shape).
fn agent_record(key: Option<&str>, r: &Value) -> Option<String> {
    match r {
        Value::Object(o) => decode::first_of(o, &AGENT_ID).and_then(decode::id),
        other if key == Some("agent_unique_id") => decode::id(other),
        _ => None,
    }
}

/// One array's agents (in order, once each) and the ones it flags as receiving calls
/// (None when no row of it carries a flag).
type Rows = (Vec<String>, Option<BTreeSet<String>>);

/// The agents and flags of one located array of the relation.
fn rows(a: &Array<'_>) -> Result<Rows, NotUnderstood> {
    const WHAT: &str = "the group's agents";
    let mut agents = Vec::new();
    let mut seen = BTreeSet::new();
    if a.key == Some("agent_unique_id") && a.items.iter().all(|i| !i.is_object()) {
        // The assign call's own shape: the sibling `receive_call` array of ids.
        for (i, x) in a.items.iter().enumerate() {
            let id = decode::id(x).ok_or_else(|| bad_record(WHAT, &a.path, i, x, "an agent id"))?;
            if seen.insert(id.clone()) {
                agents.push(id);
            }
        }
        let rc = match a.parent.and_then(|p| p.get("receive_call")) {
            None | Some(Value::Null) => None,
            Some(Value::Array(r)) => Some(
                r.iter()
                    .enumerate()
                    .map(|(i, x)| {
                        decode::id(x)
                            .ok_or_else(|| bad_record(WHAT, "receive_call", i, x, "an agent id"))
                    })
                    .collect::<Result<BTreeSet<_>, _>>()?,
            ),
            Some(other) => {
                return Err(NotUnderstood {
                    what: WHAT.into(),
                    seen: format!(
                        "receive_call is {}; expected an array of agent ids",
                        decode::describe(other)
                    ),
                });
            }
        };
        return Ok((agents, rc));
    }
    let mut rc = BTreeSet::new();
    let mut flagged = false;
    for (i, row) in a.items.iter().enumerate() {
        let o = row.as_object();
        let id = o
            .and_then(|o| decode::first_of(o, &AGENT_ID))
            .and_then(decode::id);
        let Some(id) = id else {
            return Err(bad_record(WHAT, &a.path, i, row, "an agent id"));
        };
        if let Some(f) = o.and_then(|o| decode::first_of(o, &FLAG)) {
            flagged = true;
            let on = decode::flag(f).ok_or_else(|| {
                bad_record(
                    WHAT,
                    &a.path,
                    i,
                    f,
                    "a receive_call flag (1/0, \"1\"/\"0\", true/false)",
                )
            })?;
            if on {
                rc.insert(id.clone());
            }
        }
        if seen.insert(id.clone()) {
            agents.push(id);
        }
    }
    Ok((agents, flagged.then_some(rc)))
}

/// A group's agents and which of them receive calls, from a `getGroupAgentRelation`
/// answer, by `decode::evidence::records` (the vendor documents a `response` holding
/// `groupData`, `agentData` and `relationData`). The records are either
/// - rows carrying an agent id (`agent_unique_id`, `agentUniqueId`, `agent_id`, `agentId`
///   or `id`) and maybe a flag (`receive_call` or `receiveCall`, by `decode::flag`; a row
///   without one does not receive calls), or
/// - the assign call's own shape: an `agent_unique_id` array of ids, with its sibling
///   `receive_call` array of ids (left out: nobody receives calls).
///
/// Several arrays that name the same agents (`agentData` and `relationData`) are one
/// answer; the flags come from the arrays that carry them, which must agree. The path to
/// learn is the first array that carries flags (else the first array).
pub fn relation(v: &Value, at: At<'_>) -> Result<Read<Lists>, NotUnderstood> {
    const WHAT: &str = "the group's agents";
    let r = evidence::records(
        v,
        &Evidence {
            what: WHAT,
            expected: "objects with an agent id (agent_unique_id, agentUniqueId, agent_id, agentId or id), \
                       or an agent_unique_id array of ids",
            pin_key: AGENTS_AT,
            id_of: &agent_record,
        },
        at,
    )?;
    if r.none {
        let (path, found) = place(&r);
        return Ok(Read {
            records: (vec![], vec![]),
            path,
            found,
        });
    }
    let read: Vec<Rows> = r.arrays.iter().map(rows).collect::<Result<_, _>>()?;
    let flagged: Vec<usize> = (0..read.len()).filter(|i| read[*i].1.is_some()).collect();
    if let [first, others @ ..] = flagged.as_slice()
        && let Some(o) = others.iter().find(|o| read[**o].1 != read[*first].1)
    {
        return Err(NotUnderstood {
            what: WHAT.into(),
            seen: format!(
                "{} and {} name the same agents but disagree on receive_call; set {AGENTS_AT} = \"PATH\" \
                 for this target to read one of them",
                r.arrays[*first].path, r.arrays[*o].path
            ),
        });
    }
    let main = flagged.first().copied().unwrap_or(0);
    let agents = read[main].0.clone();
    let rc: Vec<String> = match &read[main].1 {
        Some(set) => agents
            .iter()
            .filter(|a| set.contains(*a))
            .cloned()
            .collect(),
        None => vec![],
    };
    Ok(Read {
        records: (agents, rc),
        path: Some(r.arrays[main].path.clone()),
        found: r.at,
    })
}

/// The two whole lists one assign call sends, and what it proves beyond the plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Every agent the group has after the call (sorted).
    pub agents: Vec<String>,
    /// The agents among them that receive calls (sorted).
    pub receive_call: Vec<String>,
    /// Agents on the group that rostersync did not know of, kept as they are: recorded as
    /// members rostersync did not add.
    pub foreign: Vec<String>,
    /// Known members the source does not want, kept only by the mode, that somebody has
    /// removed from the group since: not put back, and forgotten.
    pub dropped: Vec<String>,
}

/// The whole lists for one update: what the plan says the group has after the op, plus,
/// with the group's current lists (`current`, from a relation read), the agents on it now
/// that rostersync does not know of (with their current flags), minus the planned
/// removals, and without the merely kept members (`Update::kept`) that the group no
/// longer has. In every mode: an assign never drops an agent the plan does not remove
/// (a hand-added agent is recorded as found, and an authoritative run removes it in a
/// later plan, where it is shown, counted by the guard and protected by `keep_members`;
/// a run scoped with `--only` never removes it).
pub fn assignment(u: &Update, current: Option<&Lists>) -> Assignment {
    let mut agents: BTreeSet<String> = u.members_after.iter().cloned().collect();
    let mut rc: BTreeSet<String> = u.receive_call_after.iter().cloned().collect();
    let mut foreign = Vec::new();
    let mut dropped = Vec::new();
    if let Some((now, now_rc)) = current {
        let now_set: BTreeSet<&String> = now.iter().collect();
        for id in &u.kept {
            if !now_set.contains(id) && agents.remove(id) {
                dropped.push(id.clone());
            }
        }
        let removed: BTreeSet<&str> = u.remove.iter().map(|m| m.id.as_str()).collect();
        let now_rc: BTreeSet<&String> = now_rc.iter().collect();
        for id in now {
            if removed.contains(id.as_str()) || agents.contains(id) || dropped.contains(id) {
                continue;
            }
            agents.insert(id.clone());
            if now_rc.contains(id) {
                rc.insert(id.clone());
            }
            foreign.push(id.clone());
        }
    }
    rc.retain(|id| agents.contains(id));
    foreign.sort();
    foreign.dedup();
    dropped.sort();
    Assignment {
        agents: agents.into_iter().collect(),
        receive_call: rc.into_iter().collect(),
        foreign,
        dropped,
    }
}

/// Whether the group already has exactly these lists (nothing to send).
pub fn already(a: &Assignment, current: &(Vec<String>, Vec<String>)) -> bool {
    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
    set(&a.agents) == set(&current.0) && set(&a.receive_call) == set(&current.1)
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
