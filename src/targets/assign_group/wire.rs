//! DeepCall Group API v2 wire types and the pure lowering of changes into request bodies
//! (no IO). Seeds 002 (`submitAssignGroupToAgent`) and 004 (`delete`, error bodies).
//!
//! Every call is `POST {base}/Group/<endpoint>` with a JSON body; the credentials are merged
//! into it by `mod.rs` (never here, so nothing in this file ever holds a secret). The
//! vendor answers HTTP 200 for its own errors: the body decides (`classify`).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::config::Mode;
use crate::plan::{Keep, Update};
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
pub fn list_body(name: Option<&str>) -> Value {
    match name {
        Some(n) => json!({ "name": n }),
        None => json!({}),
    }
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

fn has_any(o: &Value, keys: &[&str]) -> bool {
    keys.iter().any(|k| o.get(*k).is_some_and(|v| !v.is_null()))
}

/// The `groupId` of a `Group/add` answer (top level or under `data`), by the one id rule.
pub fn created_id(v: &Value) -> Option<String> {
    let at = |o: &Value| {
        o.as_object()
            .and_then(|o| decode::first_of(o, &GROUP_ID))
            .and_then(decode::id)
    };
    at(v).or_else(|| v.get("data").and_then(at))
}

/// The name a `Group/add` answer reports, when it reports one (the vendor appends a number
/// to a duplicate name).
pub fn created_name(v: &Value) -> Option<String> {
    let at = |o: &Value| {
        GROUP_NAME
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_str).map(str::to_string))
    };
    at(v).or_else(|| v.get("data").and_then(at))
}

/// One group of a `Group/list` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub name: String,
}

/// A record of a located array that lacks what it must carry.
fn bad_record(what: &str, path: &str, i: usize, v: &Value, expected: &str) -> NotUnderstood {
    NotUnderstood {
        what: what.into(),
        seen: format!(
            "{} is {}; expected {expected}",
            decode::at(path, i),
            decode::describe(v)
        ),
    }
}

/// The groups of a `Group/list` answer, whose shape is not documented: the one array of
/// objects that carry an id (`groupId`, `group_id` or `id`) and a name (`name`, `groupName`
/// or `group_name`), wherever `decode::locate` finds it. Every record of that array must
/// carry both (a group we cannot read could be the one we look for); an explicit empty
/// array under `data` or `groups` in a `"status": "success"` body is "no groups".
pub fn listed(v: &Value) -> Result<Vec<Listed>, NotUnderstood> {
    const WHAT: &str = "the group listing";
    const EXPECTED: &str =
        "objects with an id (groupId, group_id or id) and a name (name, groupName or group_name)";
    let is = |_: Option<&str>, items: &[Value]| {
        items
            .iter()
            .any(|g| has_any(g, &GROUP_ID) && has_any(g, &GROUP_NAME))
    };
    let found = decode::locate(
        v,
        &decode::Wanted {
            what: WHAT,
            expected: EXPECTED,
            is_records: &is,
            empty_keys: &["data", "groups"],
        },
    )?;
    found
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
                _ => Err(bad_record(WHAT, &found.path, i, g, "an id and a name")),
            }
        })
        .collect()
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

/// A group's agents and which of them receive calls, from a `getGroupAgentRelation`
/// answer, whose shape is not documented. `decode::locate` finds, wherever it is, either
/// - the one array of rows carrying an agent id (`agent_unique_id`, `agentUniqueId`,
///   `agent_id`, `agentId` or `id`) and maybe a flag (`receive_call` or `receiveCall`, by
///   `decode::flag`; a row without one does not receive calls), or
/// - the assign call's own shape: an `agent_unique_id` array of ids, with its sibling
///   `receive_call` array of ids (left out: nobody receives calls).
///
/// A row without an agent id, an id that is no id, or a flag that is no flag is not
/// understood; so is an answer with no such array, except an explicit empty array under
/// `data`, `agents` or `agent_unique_id` in a `"status": "success"` body ("no agents").
pub fn relation(v: &Value) -> Result<(Vec<String>, Vec<String>), NotUnderstood> {
    const WHAT: &str = "the group's agents";
    const EXPECTED: &str = "objects with an agent id (agent_unique_id, agentUniqueId, agent_id, agentId or id), \
                            or an agent_unique_id array of ids";
    let is = |key: Option<&str>, items: &[Value]| {
        items.iter().any(|r| has_any(r, &AGENT_ID))
            || (key == Some("agent_unique_id") && items.iter().all(|i| !i.is_object()))
    };
    let found = decode::locate(
        v,
        &decode::Wanted {
            what: WHAT,
            expected: EXPECTED,
            is_records: &is,
            empty_keys: &["data", "agents", "agent_unique_id"],
        },
    )?;
    let ids = |path: &str, items: &[Value]| -> Result<Vec<String>, NotUnderstood> {
        items
            .iter()
            .enumerate()
            .map(|(i, x)| decode::id(x).ok_or_else(|| bad_record(WHAT, path, i, x, "an agent id")))
            .collect()
    };
    let mut agents = Vec::new();
    let mut rc = Vec::new();
    if found.key == Some("agent_unique_id") && found.items.iter().all(|i| !i.is_object()) {
        agents = ids(&found.path, found.items)?;
        match found.parent.and_then(|p| p.get("receive_call")) {
            None | Some(Value::Null) => {}
            Some(Value::Array(r)) => rc = ids("receive_call", r)?,
            Some(other) => {
                return Err(NotUnderstood {
                    what: WHAT.into(),
                    seen: format!(
                        "receive_call is {}; expected an array of agent ids",
                        decode::describe(other)
                    ),
                });
            }
        }
        let mut seen = BTreeSet::new();
        agents.retain(|a| seen.insert(a.clone()));
        return Ok((agents, rc));
    }
    let mut seen = BTreeSet::new();
    for (i, row) in found.items.iter().enumerate() {
        let o = row.as_object();
        let id = o
            .and_then(|o| decode::first_of(o, &AGENT_ID))
            .and_then(decode::id);
        let Some(id) = id else {
            return Err(bad_record(WHAT, &found.path, i, row, "an agent id"));
        };
        let flag = match o.and_then(|o| decode::first_of(o, &FLAG)) {
            None => false,
            Some(f) => decode::flag(f).ok_or_else(|| {
                bad_record(
                    WHAT,
                    &found.path,
                    i,
                    f,
                    "a receive_call flag (1/0, \"1\"/\"0\", true/false)",
                )
            })?,
        };
        if seen.insert(id.clone()) {
            if flag {
                rc.push(id.clone());
            }
            agents.push(id);
        }
    }
    Ok((agents, rc))
}

/// The two whole lists one assign call sends, and what it proves beyond the plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Every agent the group has after the call (sorted).
    pub agents: Vec<String>,
    /// The agents among them that receive calls (sorted).
    pub receive_call: Vec<String>,
    /// Agents on the group that rostersync did not know of, kept as they are (owned and
    /// add_only modes): recorded as members rostersync did not add.
    pub foreign: Vec<String>,
    /// Known members the source does not want, kept only by the mode, that somebody has
    /// removed from the group since: not put back, and forgotten.
    pub dropped: Vec<String>,
}

/// The whole lists for one update. `authoritative`: exactly what the plan says the group
/// has after the op, plus (with the group's current lists) the agents on it now that
/// `keep_members` protects by id. `owned`/`add_only` with the group's current lists
/// (`current`, from a relation read): what the plan says, plus the agents the group has
/// now that rostersync does not know of (with their current flags), minus the planned
/// removals. In every mode, without the merely kept members (`Update::kept`) that the
/// group no longer has.
pub fn assignment(
    u: &Update,
    mode: Mode,
    keep: &Keep,
    current: Option<&(Vec<String>, Vec<String>)>,
) -> Assignment {
    let mut agents: BTreeSet<String> = u.members_after.iter().cloned().collect();
    let mut rc: BTreeSet<String> = u.receive_call_after.iter().cloned().collect();
    let mut foreign = Vec::new();
    let mut dropped = Vec::new();
    // Agents on the group that the plan does not name stay when the mode keeps what
    // rostersync does not know, or when they are protected.
    let stays = |id: &str| mode != Mode::Authoritative || keep.protects(id, None).is_some();
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
            if removed.contains(id.as_str())
                || agents.contains(id)
                || dropped.contains(id)
                || !stays(id)
            {
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
