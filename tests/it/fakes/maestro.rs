//! Fake MaestroQA SCIM Groups API (`kind = "scim"`, `flavor = "maestroqa"`), written from
//! `shared/seeds/000_78bb6dd2db6a0f3f.txt`.
//!
//! Wire contract modelled (base `http://127.0.0.1:PORT/api/v1/scim/v2`):
//! - auth on every request: `apiToken: <token>` or `Authorization: Basic <base64>` where the
//!   base64 is of the token alone or of `token:`; anything else is a 401 SCIM error.
//! - `POST /Groups` (schemas + displayName required, members/owners are plain strings)
//!   answers 201 with the group and its new `id`.
//! - `GET /Groups` pages with `startIndex` (1-based) and `count` (default 20, capped at
//!   `max_page_size`, default 100) and answers a ListResponse. `filter` is NOT supported:
//!   it is ignored and the normal page comes back, so the client must page and match names.
//! - `GET /Groups/{id}`, `PUT /Groups/{id}` (replaces the fields it carries),
//!   `PATCH /Groups/{id}` (PatchOp; `add|remove|replace` on `members`/`owners` with
//!   `[{"value": X}]`, and `replace` of `displayName`) answering a ListResponse holding the
//!   group, as the document shows, and `DELETE /Groups/{id}` -> 204. Unknown id -> 404.
//! - Members are agent emails, user ids or external ids of agents in the directory;
//!   an unknown member string is a 400. Owners are user ids (or external ids); an email
//!   owner is refused unless `set_accept_owner_emails(true)`.
//! - A PATCH is atomic: any bad operation refuses the whole request and changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::Fake;
use super::http::{Fault, Handler, Journal, Match, Reply, Req, Server, scim_error};
use super::keyed::{Keyed, Keys};

const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// Path prefix of every endpoint, as in the vendor's base URL.
pub const PREFIX: &str = "/api/v1/scim/v2";

/// One agent of the MaestroQA account.
#[derive(Clone, Debug)]
pub struct Agent {
    pub email: String,
    pub user_id: String,
    pub external_id: String,
}

impl Keys for Agent {
    /// A member string names an agent by email (any case), user id or external id.
    fn keys(&self) -> Vec<String> {
        vec![
            email_key(&self.email),
            format!("u:{}", self.user_id),
            format!("x:{}", self.external_id),
        ]
    }
}

fn email_key(email: &str) -> String {
    format!("e:{}", email.to_ascii_lowercase())
}

/// One agent group as the server stores it: members and owners exactly as given.
#[derive(Clone, Debug)]
pub struct Group {
    pub id: String,
    pub display_name: String,
    pub members: Vec<String>,
    pub owners: Vec<String>,
}

impl Keys for Group {
    fn keys(&self) -> Vec<String> {
        vec![self.id.clone()]
    }
}

impl Group {
    fn to_json(&self) -> Value {
        json!({
            "schemas": [GROUP_SCHEMA],
            "id": self.id,
            "displayName": self.display_name,
            "members": self.members,
            "owners": self.owners,
        })
    }
}

/// Everything the fake server knows.
#[derive(Debug)]
pub struct State {
    /// The agent directory, in registration order, by email, user id and external id.
    pub agents: Keyed<Agent>,
    /// Groups in creation order, by id (names may repeat: the API does not forbid it).
    pub groups: Keyed<Group>,
    /// Next number for generated group ids.
    pub next_group: u64,
    /// Next number for generated user ids.
    pub next_user: u64,
    /// Page size when `count` is absent (the document shows 20).
    pub default_page_size: usize,
    /// Largest page served whatever `count` asks for.
    pub max_page_size: usize,
    /// Accept agent emails as owners (the document says owners are user ids).
    pub accept_owner_emails: bool,
}

impl State {
    fn agent(&self, s: &str) -> Option<&Agent> {
        self.agent_index(s).map(|i| &self.agents[i])
    }

    /// The agent index a member string names, if any: the first agent in registration
    /// order whose email (any case), user id or external id it is.
    fn agent_index(&self, s: &str) -> Option<usize> {
        [email_key(s), format!("u:{s}"), format!("x:{s}")]
            .iter()
            .filter_map(|k| self.agents.first(k))
            .min()
    }

    fn email_of(&self, s: &str) -> String {
        self.agent(s)
            .map(|a| a.email.clone())
            .unwrap_or_else(|| s.to_string())
    }

    fn group_mut(&mut self, id: &str) -> Option<&mut Group> {
        self.groups.get_mut(id)
    }
}

/// A member (or owner) list being built or changed. An agent may appear under any of its
/// names, so finding an entry is: the entry spelled exactly so, else the first entry naming
/// the same agent. Indexes by spelling and by agent make that O(log n) (no scan per entry).
struct Working<'a> {
    st: &'a State,
    /// The entries in order; None once removed.
    slots: Vec<Option<String>>,
    /// Spelling -> positions of the live entries spelled so.
    exact: HashMap<String, BTreeSet<usize>>,
    /// Agent index -> positions of the live entries naming that agent.
    agent: HashMap<usize, BTreeSet<usize>>,
}

impl<'a> Working<'a> {
    fn new(st: &'a State, list: &[String]) -> Working<'a> {
        let mut w = Working {
            st,
            slots: Vec::with_capacity(list.len()),
            exact: HashMap::new(),
            agent: HashMap::new(),
        };
        for s in list {
            w.push(s.clone());
        }
        w
    }

    /// Position of the entry `s` names (itself, or another name of the same agent).
    fn position(&self, s: &str) -> Option<usize> {
        let first = |set: Option<&BTreeSet<usize>>| set.and_then(|p| p.first().copied());
        first(self.exact.get(s)).or_else(|| first(self.agent.get(&self.st.agent_index(s)?)))
    }

    fn contains(&self, s: &str) -> bool {
        self.position(s).is_some()
    }

    /// Appends `s` (duplicates are the caller's business).
    fn push(&mut self, s: String) {
        let i = self.slots.len();
        if let Some(a) = self.st.agent_index(&s) {
            self.agent.entry(a).or_default().insert(i);
        }
        self.exact.entry(s.clone()).or_default().insert(i);
        self.slots.push(Some(s));
    }

    /// Appends `s` unless it (or another name of the same agent) is there already.
    fn add(&mut self, s: String) {
        if !self.contains(&s) {
            self.push(s);
        }
    }

    fn remove(&mut self, i: usize) {
        let Some(s) = self.slots[i].take() else {
            return;
        };
        if let Some(a) = self.st.agent_index(&s)
            && let Some(p) = self.agent.get_mut(&a)
        {
            p.remove(&i);
        }
        if let Some(p) = self.exact.get_mut(&s) {
            p.remove(&i);
        }
    }

    fn into_vec(self) -> Vec<String> {
        self.slots.into_iter().flatten().collect()
    }
}

/// The MaestroQA vendor logic.
pub struct MaestroHandler {
    /// The API token, set once the port is known (it carries the port).
    pub token: std::sync::OnceLock<String>,
    pub state: Mutex<State>,
}

fn list_response(total: usize, start: usize, items: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": items.len(),
        "Resources": items,
    })
}

/// Decodes standard base64 (padding optional); None on any invalid character.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf: u32 = 0;
    let mut bits = 0;
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Encodes standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Which member list an operation or a body field is about.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    Member,
    Owner,
}

impl MaestroHandler {
    fn authorized(&self, req: &Req) -> bool {
        if let Some(t) = req.header("apitoken") {
            return Some(t.trim()) == self.token.get().map(String::as_str);
        }
        if let Some(auth) = req.header("authorization") {
            let mut parts = auth.trim().splitn(2, ' ');
            let scheme = parts.next().unwrap_or("");
            let cred = parts.next().unwrap_or("").trim();
            if !scheme.eq_ignore_ascii_case("basic") {
                return false;
            }
            let Some(decoded) = base64_decode(cred) else {
                return false;
            };
            let decoded = String::from_utf8_lossy(&decoded).into_owned();
            let Some(token) = self.token.get() else {
                return false;
            };
            return decoded == *token || decoded == format!("{token}:");
        }
        false
    }

    /// Checks that `s` is acceptable in `role`; Err is the refusal message.
    fn check_id(st: &State, role: Role, s: &str) -> Result<(), String> {
        match (role, st.agent(s)) {
            (_, None) => Err(format!(
                "{} '{s}' is not an agent, user id or external id in this account",
                if role == Role::Member {
                    "member"
                } else {
                    "owner"
                }
            )),
            (Role::Owner, Some(a))
                if !st.accept_owner_emails && a.email.eq_ignore_ascii_case(s) =>
            {
                Err(format!("owner '{s}' must be a user id, not an email"))
            }
            _ => Ok(()),
        }
    }

    /// Reads a plain-string list (POST/PUT bodies), checking every entry.
    fn string_list(st: &State, role: Role, v: &Value) -> Result<Vec<String>, Reply> {
        let field = if role == Role::Member {
            "members"
        } else {
            "owners"
        };
        let Some(arr) = v.as_array() else {
            return Err(scim_error(
                400,
                Some("invalidSyntax"),
                &format!("{field} must be an array"),
            ));
        };
        let mut out = Working::new(st, &[]);
        for item in arr {
            let Some(s) = item.as_str() else {
                return Err(scim_error(
                    400,
                    Some("invalidSyntax"),
                    &format!("{field} entries must be strings (emails, user ids or external ids)"),
                ));
            };
            Self::check_id(st, role, s).map_err(|m| scim_error(400, Some("invalidValue"), &m))?;
            out.add(s.to_string());
        }
        Ok(out.into_vec())
    }

    /// Reads a PATCH value list `[{"value": X}, ...]`.
    fn value_list(v: Option<&Value>) -> Result<Vec<String>, Reply> {
        let bad = || {
            scim_error(
                400,
                Some("invalidSyntax"),
                "value must be an array of {\"value\": \"<email|userID>\"} objects",
            )
        };
        let arr = v.and_then(Value::as_array).ok_or_else(bad)?;
        arr.iter()
            .map(|o| {
                o.get("value")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(bad)
            })
            .collect()
    }

    fn handle_authed(&self, req: &Req) -> Reply {
        let Some(rest) = req.path.strip_prefix(PREFIX) else {
            return scim_error(404, None, "no such endpoint");
        };
        let rest = rest.trim_end_matches('/');
        if rest == "/Groups" {
            return match req.method.as_str() {
                "GET" => self.list(req),
                "POST" => self.create(req),
                _ => scim_error(405, None, "method not allowed on /Groups"),
            };
        }
        let Some(id) = rest.strip_prefix("/Groups/") else {
            return scim_error(404, None, "no such endpoint");
        };
        if id.is_empty() || id.contains('/') {
            return scim_error(404, None, "no such endpoint");
        }
        match req.method.as_str() {
            "GET" => {
                let st = self.state.lock().unwrap();
                match st.groups.get(id) {
                    Some(g) => Reply::json(200, g.to_json()),
                    None => not_found(id),
                }
            }
            "PUT" => self.put(req, id),
            "PATCH" => self.patch(req, id),
            "DELETE" => {
                let mut st = self.state.lock().unwrap();
                match st.groups.first(id) {
                    Some(i) => {
                        st.groups.remove(i);
                        Reply::empty(204)
                    }
                    None => not_found(id),
                }
            }
            _ => scim_error(405, None, "method not allowed on /Groups/{id}"),
        }
    }

    fn body(req: &Req) -> Result<Value, Reply> {
        let ct = req.header("content-type").unwrap_or("");
        if !ct.to_ascii_lowercase().contains("json") {
            return Err(scim_error(
                415,
                None,
                "Content-Type must be application/json; charset=utf-8",
            ));
        }
        match serde_json::from_str::<Value>(&req.body) {
            Ok(v) if v.is_object() => Ok(v),
            Ok(_) => Err(scim_error(
                400,
                Some("invalidSyntax"),
                "body must be a JSON object",
            )),
            Err(e) => Err(scim_error(
                400,
                Some("invalidSyntax"),
                &format!("invalid JSON: {e}"),
            )),
        }
    }

    fn has_schema(v: &Value, urn: &str) -> bool {
        v.get("schemas")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|s| s.as_str() == Some(urn)))
    }

    fn list(&self, req: &Req) -> Reply {
        let num = |name: &str| -> Result<Option<i64>, Reply> {
            match req.query_param(name) {
                None => Ok(None),
                Some(s) if s.is_empty() => Ok(None),
                Some(s) => s.trim().parse::<i64>().map(Some).map_err(|_| {
                    scim_error(
                        400,
                        Some("invalidValue"),
                        &format!("{name} must be an integer"),
                    )
                }),
            }
        };
        let start = match num("startIndex") {
            Ok(v) => v.unwrap_or(1).max(1) as usize,
            Err(r) => return r,
        };
        let st = self.state.lock().unwrap();
        let count = match num("count") {
            Ok(v) => v.map_or(st.default_page_size, |c| c.max(0) as usize),
            Err(r) => return r,
        }
        .min(st.max_page_size);
        // `filter` is deliberately ignored, like the real service.
        let items: Vec<Value> = st
            .groups
            .iter()
            .skip(start - 1)
            .take(count)
            .map(Group::to_json)
            .collect();
        Reply::json(200, list_response(st.groups.len(), start, items))
    }

    fn create(&self, req: &Req) -> Reply {
        let body = match Self::body(req) {
            Ok(b) => b,
            Err(r) => return r,
        };
        if !Self::has_schema(&body, GROUP_SCHEMA) {
            return scim_error(
                400,
                Some("invalidValue"),
                &format!("schemas must hold {GROUP_SCHEMA}"),
            );
        }
        let name = match body.get("displayName").and_then(Value::as_str) {
            Some(n) if !n.trim().is_empty() => n.to_string(),
            _ => return scim_error(400, Some("invalidValue"), "displayName is required"),
        };
        let mut st = self.state.lock().unwrap();
        let members = match body.get("members") {
            None | Some(Value::Null) => vec![],
            Some(v) => match Self::string_list(&st, Role::Member, v) {
                Ok(l) => l,
                Err(r) => return r,
            },
        };
        let owners = match body.get("owners") {
            None | Some(Value::Null) => vec![],
            Some(v) => match Self::string_list(&st, Role::Owner, v) {
                Ok(l) => l,
                Err(r) => return r,
            },
        };
        st.next_group += 1;
        let id = group_id(st.next_group);
        let g = Group {
            id,
            display_name: name,
            members,
            owners,
        };
        let out = g.to_json();
        st.groups.push(g);
        Reply::json(201, out)
    }

    fn put(&self, req: &Req, id: &str) -> Reply {
        let body = match Self::body(req) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let mut st = self.state.lock().unwrap();
        if st.groups.first(id).is_none() {
            return not_found(id);
        }
        if !Self::has_schema(&body, GROUP_SCHEMA) {
            return scim_error(
                400,
                Some("invalidValue"),
                &format!("schemas must hold {GROUP_SCHEMA}"),
            );
        }
        if let Some(bid) = body.get("id").and_then(Value::as_str)
            && bid != id
        {
            return scim_error(
                400,
                Some("mutability"),
                "id in the body does not match the URL",
            );
        }
        let name = match body.get("displayName") {
            None | Some(Value::Null) => None,
            Some(Value::String(n)) if !n.trim().is_empty() => Some(n.clone()),
            Some(_) => {
                return scim_error(
                    400,
                    Some("invalidValue"),
                    "displayName must be a non-empty string",
                );
            }
        };
        let members = match body.get("members") {
            None | Some(Value::Null) => None,
            Some(v) => match Self::string_list(&st, Role::Member, v) {
                Ok(l) => Some(l),
                Err(r) => return r,
            },
        };
        let owners = match body.get("owners") {
            None | Some(Value::Null) => None,
            Some(v) => match Self::string_list(&st, Role::Owner, v) {
                Ok(l) => Some(l),
                Err(r) => return r,
            },
        };
        let g = st.group_mut(id).unwrap();
        if let Some(n) = name {
            g.display_name = n;
        }
        if let Some(m) = members {
            g.members = m;
        }
        if let Some(o) = owners {
            g.owners = o;
        }
        Reply::json(200, g.to_json())
    }

    fn patch(&self, req: &Req, id: &str) -> Reply {
        let body = match Self::body(req) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let mut st = self.state.lock().unwrap();
        let Some(g) = st.groups.get(id) else {
            return not_found(id);
        };
        if !Self::has_schema(&body, PATCH_SCHEMA) {
            return scim_error(
                400,
                Some("invalidValue"),
                &format!("schemas must hold {PATCH_SCHEMA}"),
            );
        }
        let ops = match body.get("Operations").and_then(Value::as_array) {
            Some(ops) if !ops.is_empty() => ops.clone(),
            _ => {
                return scim_error(
                    400,
                    Some("invalidValue"),
                    "Operations must be a non-empty array",
                );
            }
        };
        // Working copies: nothing is stored unless every operation applies.
        let mut name = g.display_name.clone();
        let mut members = Working::new(&st, &g.members);
        let mut owners = Working::new(&st, &g.owners);
        for op in &ops {
            if let Err(r) = Self::apply_op(&st, &mut name, &mut members, &mut owners, op) {
                return r;
            }
        }
        let (members, owners) = (members.into_vec(), owners.into_vec());
        let g = st.group_mut(id).unwrap();
        g.display_name = name;
        g.members = members;
        g.owners = owners;
        Reply::json(200, list_response(1, 1, vec![g.to_json()]))
    }

    /// Applies one PATCH operation to the working copies of the group's fields.
    fn apply_op<'a>(
        st: &'a State,
        name: &mut String,
        members: &mut Working<'a>,
        owners: &mut Working<'a>,
        op: &Value,
    ) -> Result<(), Reply> {
        let kind = op
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        if !matches!(kind.as_str(), "add" | "remove" | "replace") {
            return Err(scim_error(
                400,
                Some("invalidValue"),
                "op must be one of add, remove, replace",
            ));
        }
        let path = op.get("path").and_then(Value::as_str);
        let value = op.get("value");
        let role = match path {
            Some(p) if p.eq_ignore_ascii_case("members") => Role::Member,
            Some(p) if p.eq_ignore_ascii_case("owners") => Role::Owner,
            Some(p) if p.eq_ignore_ascii_case("displayName") => {
                if kind != "replace" {
                    return Err(scim_error(
                        400,
                        Some("invalidPath"),
                        "displayName can only be replaced",
                    ));
                }
                return match value.and_then(Value::as_str) {
                    Some(n) if !n.trim().is_empty() => {
                        *name = n.to_string();
                        Ok(())
                    }
                    _ => Err(scim_error(
                        400,
                        Some("invalidValue"),
                        "displayName must be a non-empty string",
                    )),
                };
            }
            None if kind == "replace" => {
                let Some(obj) = value.and_then(Value::as_object) else {
                    return Err(scim_error(
                        400,
                        Some("invalidValue"),
                        "replace without path needs an object value",
                    ));
                };
                for (k, v) in obj {
                    match (k.as_str(), v.as_str()) {
                        ("displayName", Some(n)) if !n.trim().is_empty() => {
                            *name = n.to_string();
                        }
                        _ => {
                            return Err(scim_error(
                                400,
                                Some("invalidValue"),
                                &format!("cannot replace '{k}' this way"),
                            ));
                        }
                    }
                }
                return Ok(());
            }
            None => {
                return Err(scim_error(
                    400,
                    Some("noTarget"),
                    "path is required (members or owners)",
                ));
            }
            Some(p) => {
                return Err(scim_error(
                    400,
                    Some("invalidPath"),
                    &format!("unsupported path '{p}': use members, owners or displayName"),
                ));
            }
        };
        let ids = Self::value_list(value)?;
        let list = if role == Role::Member {
            members
        } else {
            owners
        };
        match kind.as_str() {
            "add" => {
                for s in ids {
                    Self::check_id(st, role, &s)
                        .map_err(|m| scim_error(400, Some("invalidValue"), &m))?;
                    list.add(s);
                }
            }
            "remove" => {
                for s in ids {
                    match list.position(&s) {
                        Some(i) => list.remove(i),
                        None if st.agent(&s).is_some() => {} // absent: no-op
                        None => {
                            return Err(scim_error(
                                400,
                                Some("invalidValue"),
                                &format!(
                                    "'{s}' is not an agent, user id or external id in this account"
                                ),
                            ));
                        }
                    }
                }
            }
            _ => {
                let mut new = Working::new(st, &[]);
                for s in ids {
                    Self::check_id(st, role, &s)
                        .map_err(|m| scim_error(400, Some("invalidValue"), &m))?;
                    new.add(s);
                }
                *list = new;
            }
        }
        Ok(())
    }
}

fn not_found(id: &str) -> Reply {
    scim_error(404, None, &format!("Group {id} not found"))
}

/// A MaestroQA-looking group id ("abcD3fgH1"): nine letters and digits, deterministic.
fn group_id(n: u64) -> String {
    const A: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5bd1_e995;
    let mut s = String::from("mq");
    for _ in 0..7 {
        s.push(A[(x % A.len() as u64) as usize] as char);
        x /= A.len() as u64;
    }
    s
}

impl Handler for MaestroHandler {
    fn handle(&self, req: &Req) -> Reply {
        if !self.authorized(req) {
            return scim_error(401, None, "Unauthorized: missing or invalid apiToken");
        }
        self.handle_authed(req)
    }
}

/// A running fake MaestroQA account.
pub struct FakeMaestro {
    pub server: Server<MaestroHandler>,
    /// `auth` value written into `target_toml` ("api_token" or "basic").
    auth: Mutex<&'static str>,
}

impl FakeMaestro {
    pub fn start() -> Arc<FakeMaestro> {
        let handler = MaestroHandler {
            token: std::sync::OnceLock::new(),
            state: Mutex::new(State {
                agents: Keyed::new(),
                groups: Keyed::new(),
                next_group: 0,
                next_user: 0,
                default_page_size: 20,
                max_page_size: 100,
                accept_owner_emails: false,
            }),
        };
        let server = Server::start(handler);
        // The token carries the port; nobody can reach the server before it is set.
        let token = format!("s3cret-maestro-{}-Xk7Pq", server.addr.port());
        server.handler.token.set(token).expect("token set once");
        Arc::new(FakeMaestro {
            server,
            auth: Mutex::new("api_token"),
        })
    }

    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }
    pub fn base_url(&self) -> String {
        format!("{}{PREFIX}", self.server.base_url())
    }
    pub fn token(&self) -> String {
        self.server.handler.token.get().cloned().unwrap_or_default()
    }
    fn token_env(&self) -> String {
        format!("FAKE_MAESTRO_TOKEN_{}", self.port())
    }
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.server.handler.state.lock().unwrap()
    }

    /// Makes `target_toml` say `auth = "basic"` (the server accepts both all the time).
    pub fn use_basic_auth(&self) {
        *self.auth.lock().unwrap() = "basic";
    }
    /// Registers an agent with given user and external ids (idempotent on the email).
    pub fn add_user_with_ids(&self, email: &str, user_id: &str, external_id: &str) {
        let mut st = self.state();
        if let Some(a) = st.agents.get_mut(&email_key(email)) {
            a.user_id = user_id.into();
            a.external_id = external_id.into();
            st.agents.reindex();
        } else {
            st.agents.push(Agent {
                email: email.into(),
                user_id: user_id.into(),
                external_id: external_id.into(),
            });
        }
    }
    /// The agent's MaestroQA user id (what `owners` expects), registering it if needed.
    pub fn user_id(&self, email: &str) -> String {
        self.add_user(email);
        self.state().agent(email).unwrap().user_id.clone()
    }
    /// The agent's external id, registering it if needed.
    pub fn external_id(&self, email: &str) -> String {
        self.add_user(email);
        self.state().agent(email).unwrap().external_id.clone()
    }
    /// Default page size of `GET /Groups` when `count` is absent (20).
    pub fn set_default_page_size(&self, n: usize) {
        self.state().default_page_size = n.max(1);
    }
    /// Largest page served whatever `count` asks (100).
    pub fn set_max_page_size(&self, n: usize) {
        self.state().max_page_size = n.max(1);
    }
    /// Accept emails as owners (default false: owners must be user or external ids).
    pub fn set_accept_owner_emails(&self, yes: bool) {
        self.state().accept_owner_emails = yes;
    }
    /// Number of groups with exactly this display name (duplicates show failed adoption).
    pub fn count_named(&self, name: &str) -> usize {
        self.state()
            .groups
            .iter()
            .filter(|g| g.display_name == name)
            .count()
    }
    /// Total number of groups.
    pub fn group_count(&self) -> usize {
        self.state().groups.len()
    }
    /// Id of the first group with this display name.
    pub fn group_id(&self, name: &str) -> Option<String> {
        self.state()
            .groups
            .iter()
            .find(|g| g.display_name == name)
            .map(|g| g.id.clone())
    }
    /// Members of the first group named `name`, exactly as stored (emails or ids as sent).
    pub fn raw_members(&self, name: &str) -> Option<Vec<String>> {
        self.state()
            .groups
            .iter()
            .find(|g| g.display_name == name)
            .map(|g| g.members.clone())
    }
    /// Owners of the first group named `name`, exactly as stored.
    pub fn raw_owners(&self, name: &str) -> Option<Vec<String>> {
        self.state()
            .groups
            .iter()
            .find(|g| g.display_name == name)
            .map(|g| g.owners.clone())
    }
    /// Owners of the first group named `name`, as emails.
    pub fn owners(&self, name: &str) -> BTreeSet<String> {
        let st = self.state();
        st.groups
            .iter()
            .find(|g| g.display_name == name)
            .map(|g| g.owners.iter().map(|o| st.email_of(o)).collect())
            .unwrap_or_default()
    }
    pub fn clear_faults(&self) {
        self.server.clear_faults();
    }
}

impl Fake for FakeMaestro {
    fn clear_faults(&self) {
        FakeMaestro::clear_faults(self)
    }

    fn all_group_names(&self) -> Vec<String> {
        self.state()
            .groups
            .iter()
            .map(|g| g.display_name.clone())
            .collect()
    }

    fn kind(&self) -> &'static str {
        "scim"
    }

    fn target_toml(&self, name: &str) -> String {
        format!(
            "[[target]]\nname = \"{name}\"\nkind = \"scim\"\nflavor = \"maestroqa\"\n\
             base_url = \"{}\"\nauth = \"{}\"\ntoken_env = \"{}\"\ntimeout = \"2s\"\n\
             max_retries = 3\nretry_base = \"20ms\"\n",
            self.base_url(),
            self.auth.lock().unwrap(),
            self.token_env()
        )
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![(self.token_env(), self.token())]
    }

    fn secrets(&self) -> Vec<String> {
        let t = self.token();
        vec![
            base64_encode(t.as_bytes()),
            base64_encode(format!("{t}:").as_bytes()),
            t,
        ]
    }

    fn add_user(&self, email: &str) -> String {
        let mut st = self.state();
        if st.agent(email).is_none() {
            st.next_user += 1;
            let n = st.next_user;
            st.agents.push(Agent {
                email: email.to_string(),
                user_id: format!("usr{n:04}Mq"),
                external_id: format!("ext-{n:04}"),
            });
        }
        // For maestroqa the email itself is the member id rostersync sends.
        email.to_string()
    }

    fn source_id(&self, _email: &str) -> Option<String> {
        None
    }

    fn groups(&self) -> BTreeMap<String, BTreeSet<String>> {
        let st = self.state();
        let mut out = BTreeMap::new();
        for g in &st.groups {
            let members: BTreeSet<String> = g.members.iter().map(|m| st.email_of(m)).collect();
            let key = if out.contains_key(&g.display_name) {
                format!("{} [duplicate {}]", g.display_name, g.id)
            } else {
                g.display_name.clone()
            };
            out.insert(key, members);
        }
        out
    }

    fn create_group_by_hand(&self, name: &str, members: &[&str]) {
        let mut st = self.state();
        st.next_group += 1;
        let id = group_id(st.next_group);
        let mut list = Working::new(&st, &[]);
        for m in members {
            list.add(m.to_string());
        }
        let list = list.into_vec();
        st.groups.push(Group {
            id,
            display_name: name.into(),
            members: list,
            owners: vec![],
        });
    }

    fn set_members_by_hand(&self, name: &str, members: &[&str]) {
        let mut st = self.state();
        let mut list = Working::new(&st, &[]);
        for m in members {
            list.add(m.to_string());
        }
        let list = list.into_vec();
        let g = st
            .groups
            .iter_mut()
            .find(|g| g.display_name == name)
            .unwrap_or_else(|| panic!("no group named {name:?} on the fake MaestroQA"));
        g.members = list;
    }

    fn delete_group_by_hand(&self, name: &str) {
        let mut st = self.state();
        let i = st
            .groups
            .iter()
            .position(|g| g.display_name == name)
            .unwrap_or_else(|| panic!("no group named {name:?} on the fake MaestroQA"));
        st.groups.remove(i);
    }

    fn journal(&self) -> Option<&dyn Journal> {
        Some(&self.server)
    }

    fn membership_write(&self) -> Match {
        Match::new("PATCH", "/Groups/")
    }

    fn create_request(&self) -> Match {
        Match::new("POST", "/Groups")
    }
}

#[cfg(test)]
#[path = "maestro_tests.rs"]
mod tests;
