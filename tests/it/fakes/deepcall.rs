//! Fake DeepCall (Sarv Group API v2) server: the `assign_group` target kind.
//!
//! Written from the vendor documents `seeds/002_c1fdce3c60ad5790.txt`
//! (`submitAssignGroupToAgent`) and `seeds/004_9d8bde114779b545.txt` (`delete`, error
//! bodies), DeepCall's public API reference (docs.deepcall.com, V2.0 Group pages "List"
//! and "Group Agent Relation": `Group/list` answers `status`, `code` and a `response`
//! holding the groups; `getGroupAgentRelation` answers a `response` holding `groupData`,
//! `agentData` and `relationData`), plus SPEC.md section 5 (`assign_group` row) and 6.3.
//! Other answer shapes are switches (`Shape`), for the evidence rules.
//!
//! Wire rules modelled here:
//! - base URL `http://127.0.0.1:PORT/api/v2`; every endpoint is `POST Group/<op>`, with or
//!   without a trailing slash; anything else is a 404 (an Express "Cannot GET ..." page);
//! - the JSON body carries the credentials: `ssid`, or `userId` + `token`; the body is parsed
//!   whatever the Content-Type says (the vendor's own examples send `text/plain`);
//! - every answer the application gives is HTTP 200; the body decides:
//!   `{"status":"success","message":...,"code":200,...}` or
//!   `{"status":"error","message":...,"code":N}`;
//! - group ids are strings of an incrementing number (`groupId` is accepted as a string or a
//!   number in requests, as the vendor's `delete` example sends `"groupId": 11`);
//! - agent ids are numeric strings ("1001", ...) from the user directory.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};

use super::Fake;
use super::http::{Fault, Handler, Logged, Match, Reply, Req, Server};

/// How `Group/getGroupAgentRelation` spells each `receive_call` flag (its answer shape is
/// not documented; SPEC 6.3 says clients must accept all three).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Style {
    /// `1` / `0` (the default).
    #[default]
    Number,
    /// `"1"` / `"0"`.
    Text,
    /// `true` / `false`.
    Bool,
}

/// How `Group/list` and `getGroupAgentRelation` shape their success answers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Shape {
    /// DeepCall's public reference (the default): the listing's groups in an array under
    /// `response`; the relation's `response` holding `groupData` (an object), `agentData`
    /// (the agents) and `relationData` (agent id and `receive_call` per agent).
    #[default]
    Documented,
    /// Both answers' rows (agent id and flag for the relation) under these keys:
    /// `["data"]`, `["result"]`, `["response", "groups"]`...
    At(Vec<String>),
    /// Success bodies that hold no array at all (`{"status", "code", "message"}`).
    NoArray,
    /// The records in an object keyed by id, under `response`.
    KeyedById,
    /// The documented shape, but the arrays disagree: `agentData` names an agent more than
    /// `relationData`, and the listing has a second array `recent` naming a group more.
    Disagree,
    /// The documented relation, but a listing that never shows a group: `response` is
    /// always an empty array, whatever the account holds.
    Blind,
}

/// Vendor error codes (from the documents).
pub mod code {
    pub const INVALID_PARAMETERS: u32 = 1000;
    pub const SOMETHING_WENT_WRONG: u32 = 1009;
    pub const PERMISSION_DENIED: u32 = 1015;
    pub const INVALID_REQUEST_DATA: u32 = 1047;
    pub const NAME_MISSING: u32 = 1501;
    pub const GROUP_ID_MISSING: u32 = 1502;
    pub const GROUP_NOT_FOUND: u32 = 1503;
}

/// The documented message for a vendor error code.
pub fn message_for(code: u32) -> &'static str {
    match code {
        code::INVALID_PARAMETERS => "Invalid parameters",
        code::SOMETHING_WENT_WRONG => "Something went wrong",
        code::PERMISSION_DENIED => "Permission denied",
        code::INVALID_REQUEST_DATA => "Invalid Request Data",
        code::NAME_MISSING => "The 'Name' field was not provided in the request",
        code::GROUP_ID_MISSING => "GroupId is required",
        code::GROUP_NOT_FOUND => "Group not found or not authorized",
        _ => "Something went wrong",
    }
}

const ENDPOINTS: [&str; 6] = [
    "Group/add",
    "Group/list",
    "Group/update",
    "Group/delete",
    "Group/submitAssignGroupToAgent",
    "Group/getGroupAgentRelation",
];

#[derive(Clone, Debug)]
struct Group {
    name: String,
    /// Agent ids in the order they were assigned.
    agents: Vec<String>,
    /// Agent ids allowed to receive calls (always a subset of `agents`).
    receive_call: BTreeSet<String>,
}

struct FailNext {
    endpoint: String,
    code: u32,
    left: usize,
}

#[derive(Default)]
struct State {
    /// Lower-cased email -> agent id.
    directory: BTreeMap<String, String>,
    /// Agent id -> lower-cased email (the directory the other way round).
    emails: HashMap<String, String>,
    next_agent: u64,
    /// Group id -> group, in creation order (ids increase). Change names only through
    /// `create`, `rename` and `remove`, which keep `by_name` in step.
    groups: BTreeMap<u64, Group>,
    /// ASCII-lower-cased name -> ids of the groups so named, whatever the case.
    by_name: HashMap<String, BTreeSet<u64>>,
    next_group: u64,
    fail_next: Vec<FailNext>,
    /// Group id -> error code answered for every request naming that group.
    fail_group: BTreeMap<String, u32>,
    style: Style,
    /// How `Group/list` and `getGroupAgentRelation` shape their answers.
    shape: Shape,
    /// Groups per `Group/list` page (None: one page). A paged listing answers `total` and
    /// `page` beside its records and reads the `page` of the request (1 when absent).
    page_size: Option<usize>,
}

/// Puts `records` into `{...}` under the keys of `at`, as the `extra` of a success body.
fn nested(at: &[String], records: Value) -> Value {
    at.iter().rev().fold(records, |inner, k| {
        let mut o = serde_json::Map::new();
        o.insert(k.clone(), inner);
        Value::Object(o)
    })
}

impl State {
    fn new() -> State {
        State {
            next_agent: 1001,
            next_group: 1,
            ..State::default()
        }
    }

    fn add_user(&mut self, email: &str) -> String {
        let key = email.trim().to_ascii_lowercase();
        if let Some(id) = self.directory.get(&key) {
            return id.clone();
        }
        let id = self.next_agent.to_string();
        self.next_agent += 1;
        self.emails.insert(id.clone(), key.clone());
        self.directory.insert(key, id.clone());
        id
    }

    fn is_agent(&self, id: &str) -> bool {
        self.emails.contains_key(id)
    }

    fn email_of(&self, id: &str) -> String {
        self.emails
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    /// Ids of the groups whose name is `name` ignoring ASCII case, in creation order.
    fn named_any_case(&self, name: &str) -> impl Iterator<Item = u64> + '_ {
        self.by_name
            .get(&name.to_ascii_lowercase())
            .into_iter()
            .flatten()
            .copied()
    }

    fn rename(&mut self, id: u64, name: String) {
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        let old = std::mem::replace(&mut g.name, name.clone());
        self.unlist_name(id, &old);
        self.by_name
            .entry(name.to_ascii_lowercase())
            .or_default()
            .insert(id);
    }

    fn remove(&mut self, id: u64) {
        if let Some(g) = self.groups.remove(&id) {
            self.unlist_name(id, &g.name);
        }
    }

    fn unlist_name(&mut self, id: u64, name: &str) {
        let key = name.to_ascii_lowercase();
        if let Some(ids) = self.by_name.get_mut(&key) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_name.remove(&key);
            }
        }
    }

    /// The vendor's uniqueness rule: a name already taken (case-insensitively) by another
    /// group gets the smallest number appended that makes it unique ("Tier 1" -> "Tier 11",
    /// then "Tier 12").
    fn unique_name(&self, wanted: &str, except: Option<u64>) -> String {
        let taken = |n: &str| self.named_any_case(n).any(|id| Some(id) != except);
        if !taken(wanted) {
            return wanted.to_string();
        }
        // At most groups.len() candidates can be taken, so this always finds one.
        for n in 1..=self.groups.len() as u64 + 1 {
            let candidate = format!("{wanted}{n}");
            if !taken(&candidate) {
                return candidate;
            }
        }
        unreachable!("pigeonhole: some suffix is free")
    }

    fn create(&mut self, name: &str) -> u64 {
        let name = self.unique_name(name, None);
        let id = self.next_group;
        self.next_group += 1;
        self.by_name
            .entry(name.to_ascii_lowercase())
            .or_default()
            .insert(id);
        self.groups.insert(
            id,
            Group {
                name,
                agents: Vec::new(),
                receive_call: BTreeSet::new(),
            },
        );
        id
    }

    /// The first group named exactly `name`, else the first named so in another case.
    fn find(&self, name: &str) -> Option<u64> {
        self.named_any_case(name)
            .find(|id| self.groups[id].name == name)
            .or_else(|| self.named_any_case(name).next())
    }

    /// Member arguments of the by-hand knobs: an email (registered if new) or a raw id.
    fn member_id(&mut self, m: &str) -> String {
        if m.contains('@') {
            self.add_user(m)
        } else {
            m.to_string()
        }
    }

    fn take_fail_next(&mut self, endpoint: &str) -> Option<u32> {
        let i = self
            .fail_next
            .iter()
            .position(|f| f.left > 0 && endpoint_is(endpoint, &f.endpoint))?;
        let f = &mut self.fail_next[i];
        f.left -= 1;
        let code = f.code;
        if f.left == 0 {
            self.fail_next.remove(i);
        }
        Some(code)
    }
}

/// True when `knob` names `endpoint`: "Group/add", "add", "/Group/add/" all name "Group/add".
fn endpoint_is(endpoint: &str, knob: &str) -> bool {
    let k = knob.trim_matches('/');
    let k = k.strip_prefix("api/v2/").unwrap_or(k);
    endpoint.eq_ignore_ascii_case(k)
        || endpoint
            .rsplit('/')
            .next()
            .is_some_and(|last| last.eq_ignore_ascii_case(k))
}

fn error(code: u32, message: &str) -> Reply {
    body(json!({"status": "error", "message": message, "code": code}))
}

fn error_code(code: u32) -> Reply {
    error(code, message_for(code))
}

fn success(message: &str, extra: Value) -> Reply {
    let mut v = json!({"status": "success", "message": message, "code": 200});
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    body(v)
}

fn body(v: Value) -> Reply {
    Reply {
        status: 200,
        headers: vec![(
            "content-type".into(),
            "application/json; charset=utf-8".into(),
        )],
        body: v.to_string(),
    }
}

/// A string field that may also come as a number; None when absent, null or empty.
fn loose_string(v: Option<&Value>) -> Result<Option<String>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(()),
    }
}

/// An array of ids (strings or numbers); None when absent or null.
fn id_list(v: Option<&Value>) -> Result<Option<Vec<String>>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match loose_string(Some(item))? {
                    Some(s) => out.push(s),
                    None => return Err(()),
                }
            }
            Ok(Some(out))
        }
        Some(_) => Err(()),
    }
}

/// The vendor logic behind the HTTP plumbing.
pub struct Vendor {
    /// Set once, right after the server has bound its port (the values embed the port).
    creds: OnceLock<Creds>,
    state: Mutex<State>,
}

struct Creds {
    user_id: String,
    token: String,
    ssid: String,
}

impl Vendor {
    fn new() -> Vendor {
        Vendor {
            creds: OnceLock::new(),
            state: Mutex::new(State::new()),
        }
    }

    fn creds(&self) -> &Creds {
        self.creds
            .get()
            .expect("credentials are set in FakeDeepCall::start")
    }

    fn authorized(&self, b: &serde_json::Map<String, Value>) -> bool {
        let Some(c) = self.creds.get() else {
            return false;
        };
        let s = |k: &str| b.get(k).and_then(|v| loose_string(Some(v)).ok().flatten());
        if let Some(ssid) = s("ssid") {
            return ssid == c.ssid;
        }
        s("userId").is_some_and(|u| u == c.user_id) && s("token").is_some_and(|t| t == c.token)
    }

    fn route(&self, endpoint: &str, b: &serde_json::Map<String, Value>) -> Reply {
        let mut st = self.state.lock().unwrap();
        if let Some(c) = st.take_fail_next(endpoint) {
            return error_code(c);
        }
        let name =
            || loose_string(b.get("name")).map_err(|()| error_code(code::INVALID_PARAMETERS));
        if endpoint == "Group/add" {
            let name = match name() {
                Ok(n) => n,
                Err(e) => return e,
            };
            let Some(name) = name else {
                return error_code(code::NAME_MISSING);
            };
            let id = st.create(&name);
            return success(
                "Group added successfully",
                json!({"groupId": id.to_string()}),
            );
        }
        if endpoint == "Group/list" {
            let name = match name() {
                Ok(n) => n,
                Err(e) => return e,
            };
            let needle = name.map(|n| n.to_lowercase());
            let mut data: Vec<Value> = st
                .groups
                .iter()
                .filter(|(_, g)| {
                    needle
                        .as_ref()
                        .is_none_or(|n| g.name.to_lowercase().contains(n.as_str()))
                })
                .map(|(id, g)| {
                    json!({
                        "groupId": id.to_string(),
                        "name": g.name,
                        "description": "",
                        "agentCount": g.agents.len(),
                    })
                })
                .collect();
            let mut paging = json!({});
            if let Some(size) = st.page_size {
                let page = b
                    .get("page")
                    .and_then(|p| loose_string(Some(p)).ok().flatten())
                    .and_then(|p| p.parse::<usize>().ok())
                    .unwrap_or(1)
                    .max(1);
                let total = data.len();
                data = data
                    .into_iter()
                    .skip((page - 1) * size)
                    .take(size)
                    .collect();
                paging = json!({"total": total, "page": page});
            }
            let mut extra = match &st.shape {
                Shape::Documented => json!({ "response": data }),
                Shape::At(at) => nested(at, Value::Array(data)),
                Shape::NoArray => json!({}),
                Shape::KeyedById => {
                    let keyed: serde_json::Map<String, Value> = data
                        .into_iter()
                        .map(|g| (g["groupId"].as_str().unwrap_or_default().to_string(), g))
                        .collect();
                    json!({ "response": keyed })
                }
                Shape::Disagree => {
                    let mut recent = data.clone();
                    recent.push(json!({"groupId": "999999", "name": "Archived"}));
                    json!({ "response": data, "recent": recent })
                }
                Shape::Blind => json!({ "response": [] }),
            };
            if let (Some(o), Value::Object(p)) = (extra.as_object_mut(), paging) {
                o.extend(p);
            }
            return success("Groups fetched successfully", extra);
        }

        // Everything else names a group.
        let gid = match loose_string(b.get("groupId")) {
            Ok(Some(g)) => g,
            Ok(None) => return error_code(code::GROUP_ID_MISSING),
            Err(()) => return error_code(code::INVALID_PARAMETERS),
        };
        if let Some(c) = st.fail_group.get(&gid) {
            return error_code(*c);
        }
        let Some(key) = gid
            .parse::<u64>()
            .ok()
            .filter(|k| st.groups.contains_key(k))
        else {
            return error_code(code::GROUP_NOT_FOUND);
        };
        match endpoint {
            "Group/update" => {
                let name = match name() {
                    Ok(n) => n,
                    Err(e) => return e,
                };
                let Some(name) = name else {
                    return error_code(code::NAME_MISSING);
                };
                let name = st.unique_name(&name, Some(key));
                st.rename(key, name);
                success("Group updated successfully", json!({"groupId": gid}))
            }
            "Group/delete" => {
                st.remove(key);
                success("Group deleted successfully", json!({}))
            }
            "Group/submitAssignGroupToAgent" => {
                let (Ok(agents), Ok(receive)) = (
                    id_list(b.get("agent_unique_id")),
                    id_list(b.get("receive_call")),
                ) else {
                    return error_code(code::INVALID_PARAMETERS);
                };
                let mut list: Vec<String> = Vec::new();
                let mut listed: HashSet<String> = HashSet::new();
                for a in agents.unwrap_or_default() {
                    if !st.is_agent(&a) {
                        return error(code::INVALID_REQUEST_DATA, "Invalid Request Data");
                    }
                    if listed.insert(a.clone()) {
                        list.push(a);
                    }
                }
                let mut rc = BTreeSet::new();
                for r in receive.unwrap_or_default() {
                    if !listed.contains(&r) {
                        return error(code::INVALID_REQUEST_DATA, "Invalid Request Data");
                    }
                    rc.insert(r);
                }
                let g = st.groups.get_mut(&key).unwrap();
                g.agents = list;
                g.receive_call = rc;
                success(
                    "Agents successfully assigned to the group, and Elasticsearch updated",
                    json!({}),
                )
            }
            "Group/getGroupAgentRelation" => {
                let style = st.style;
                let g = &st.groups[&key];
                let flag = |a: &String| {
                    let on = g.receive_call.contains(a);
                    match style {
                        Style::Number => json!(if on { 1 } else { 0 }),
                        Style::Text => json!(if on { "1" } else { "0" }),
                        Style::Bool => json!(on),
                    }
                };
                let rows: Vec<Value> = g
                    .agents
                    .iter()
                    .map(|a| json!({"groupId": gid, "agent_unique_id": a, "receive_call": flag(a)}))
                    .collect();
                let documented = |extra_agent: bool| {
                    let mut agents: Vec<Value> = g
                        .agents
                        .iter()
                        .map(|a| json!({"agent_unique_id": a, "name": format!("Agent {a}"), "status": 1}))
                        .collect();
                    if extra_agent {
                        agents.push(json!({"agent_unique_id": "990001", "name": "Agent 990001"}));
                    }
                    json!({"response": {
                        "groupData": {"groupId": gid, "name": g.name, "status": 1},
                        "agentData": agents,
                        "relationData": rows,
                    }})
                };
                let extra = match &st.shape {
                    Shape::Documented | Shape::Blind => documented(false),
                    Shape::Disagree => documented(true),
                    Shape::At(at) => nested(at, Value::Array(rows)),
                    Shape::NoArray => json!({}),
                    Shape::KeyedById => {
                        let keyed: serde_json::Map<String, Value> = g
                            .agents
                            .iter()
                            .map(|a| (a.clone(), json!({"receive_call": flag(a)})))
                            .collect();
                        json!({ "response": keyed })
                    }
                };
                success("Group agent relation fetched successfully", extra)
            }
            _ => error_code(code::SOMETHING_WENT_WRONG),
        }
    }
}

impl Handler for Vendor {
    fn handle(&self, req: &Req) -> Reply {
        let endpoint = req
            .path
            .strip_prefix("/api/v2/")
            .map(|p| p.strip_suffix('/').unwrap_or(p))
            .and_then(|p| ENDPOINTS.iter().find(|e| **e == p));
        let (Some(endpoint), true) = (endpoint, req.method == "POST") else {
            return Reply {
                status: 404,
                headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
                body: format!("Cannot {} {}", req.method, req.path),
            };
        };
        let Some(Value::Object(b)) = req.json() else {
            return error_code(code::INVALID_PARAMETERS);
        };
        if !self.authorized(&b) {
            return error_code(code::PERMISSION_DENIED);
        }
        self.route(endpoint, &b)
    }
}

/// The fake DeepCall server (`kind = "assign_group"`).
pub struct FakeDeepCall {
    server: Server<Vendor>,
    port: u16,
}

impl FakeDeepCall {
    /// Starts a fresh server on 127.0.0.1 with an empty directory and no groups.
    pub fn start() -> Arc<FakeDeepCall> {
        let server = Server::start(Vendor::new());
        let port = server.addr.port();
        let creds = Creds {
            user_id: format!("dcuser-{port}-Qm4"),
            token: format!("s3cret-deepcall-{port}-Zq9"),
            ssid: format!("s3ssid-deepcall-{port}-Wx2"),
        };
        assert!(
            server.handler.creds.set(creds).is_ok(),
            "credentials set twice"
        );
        Arc::new(FakeDeepCall { server, port })
    }

    fn vendor(&self) -> &Vendor {
        &self.server.handler
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.vendor().state.lock().unwrap()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/api/v2`.
    pub fn base_url(&self) -> String {
        format!("{}/api/v2", self.server.base_url())
    }

    pub fn user_id(&self) -> String {
        self.vendor().creds().user_id.clone()
    }

    pub fn token(&self) -> String {
        self.vendor().creds().token.clone()
    }

    pub fn ssid(&self) -> String {
        self.vendor().creds().ssid.clone()
    }

    pub fn user_id_env(&self) -> String {
        format!("FAKE_DEEPCALL_USER_ID_{}", self.port)
    }

    pub fn token_env(&self) -> String {
        format!("FAKE_DEEPCALL_TOKEN_{}", self.port)
    }

    pub fn ssid_env(&self) -> String {
        format!("FAKE_DEEPCALL_SSID_{}", self.port)
    }

    /// The same target block as `target_toml`, but authenticating with `ssid_env`.
    pub fn target_toml_ssid(&self, name: &str) -> String {
        format!(
            "[[target]]\nname = \"{name}\"\nkind = \"assign_group\"\nbase_url = \"{}\"\n\
             ssid_env = \"{}\"\ntimeout = \"2s\"\nmax_retries = 3\nretry_base = \"20ms\"\n",
            self.base_url(),
            self.ssid_env()
        )
    }

    /// How `getGroupAgentRelation` spells `receive_call` flags from now on.
    pub fn set_receive_call_style(&self, style: Style) {
        self.state().style = style;
    }

    /// Where `Group/list` and `getGroupAgentRelation` put their records from now on: the
    /// keys from the answer down to the array (`&["response", "groups"]`).
    pub fn set_records_at(&self, keys: &[&str]) {
        self.set_shape(Shape::At(keys.iter().map(|k| k.to_string()).collect()));
    }

    /// How `Group/list` and `getGroupAgentRelation` shape their answers from now on.
    pub fn set_shape(&self, shape: Shape) {
        self.state().shape = shape;
    }

    /// A fake whose answers have `shape` from the start.
    pub fn start_shaped(shape: Shape) -> Arc<FakeDeepCall> {
        let f = FakeDeepCall::start();
        f.set_shape(shape);
        f
    }

    /// `Group/list` answers pages of `size` groups from now on (None: one page).
    pub fn set_page_size(&self, size: Option<usize>) {
        self.state().page_size = size;
    }

    /// The next `n` authenticated requests to `endpoint` ("Group/add", "add",
    /// "submitAssignGroupToAgent"...) answer HTTP 200 with the vendor error body for `code`
    /// (e.g. 1009 "Something went wrong") without touching state.
    pub fn fail_next(&self, endpoint: &str, code: u32, n: usize) {
        self.state().fail_next.push(FailNext {
            endpoint: endpoint.to_string(),
            code,
            left: n,
        });
    }

    /// Every authenticated request naming `group_id` (update, delete, assign, relation)
    /// answers the vendor error body for `code` until `clear_fail_group`.
    pub fn fail_group(&self, group_id: &str, code: u32) {
        self.state().fail_group.insert(group_id.to_string(), code);
    }

    pub fn clear_fail_group(&self, group_id: &str) {
        self.state().fail_group.remove(group_id);
    }

    /// Drops every pending `fail_next`, `fail_group` and http.rs fault.
    pub fn clear_faults(&self) {
        let mut st = self.state();
        st.fail_next.clear();
        st.fail_group.clear();
        drop(st);
        self.server.clear_faults();
    }

    /// The group id of the group named `name` (exact, else case-insensitive).
    pub fn group_id(&self, name: &str) -> Option<String> {
        self.state().find(name).map(|id| id.to_string())
    }

    /// All group names, in creation order.
    pub fn group_names(&self) -> Vec<String> {
        self.state()
            .groups
            .values()
            .map(|g| g.name.clone())
            .collect()
    }

    /// How many groups have a name starting with `prefix` (case-insensitive): 1 after a
    /// correct create of "Tier 1", 2 when a blind retry left "Tier 11" behind.
    pub fn group_count_with_prefix(&self, prefix: &str) -> usize {
        let p = prefix.to_lowercase();
        self.state()
            .groups
            .values()
            .filter(|g| g.name.to_lowercase().starts_with(&p))
            .count()
    }

    /// The emails (raw ids for agents unknown to the directory) allowed to receive calls in
    /// the group `name`; empty when there is no such group.
    pub fn receive_call(&self, name: &str) -> BTreeSet<String> {
        let st = self.state();
        let Some(id) = st.find(name) else {
            return BTreeSet::new();
        };
        st.groups[&id]
            .receive_call
            .iter()
            .map(|a| st.email_of(a))
            .collect()
    }

    /// Sets a group's `receive_call` list directly (emails or raw ids), as the console would.
    pub fn set_receive_call_by_hand(&self, name: &str, members: &[&str]) {
        let mut st = self.state();
        let Some(id) = st.find(name) else { return };
        let ids: Vec<String> = members.iter().map(|m| st.member_id(m)).collect();
        let g = st.groups.get_mut(&id).unwrap();
        let agents: HashSet<&String> = g.agents.iter().collect();
        let rc = ids.into_iter().filter(|i| agents.contains(i)).collect();
        g.receive_call = rc;
    }

    /// How many requests so far had a path containing `endpoint`.
    pub fn calls_to(&self, endpoint: &str) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path.contains(endpoint))
            .count()
    }
}

impl Fake for FakeDeepCall {
    fn clear_faults(&self) {
        FakeDeepCall::clear_faults(self)
    }

    fn all_group_names(&self) -> Vec<String> {
        self.group_names()
    }

    fn kind(&self) -> &'static str {
        "assign_group"
    }

    fn target_toml(&self, name: &str) -> String {
        format!(
            "[[target]]\nname = \"{name}\"\nkind = \"assign_group\"\nbase_url = \"{}\"\n\
             user_id_env = \"{}\"\ntoken_env = \"{}\"\ntimeout = \"2s\"\nmax_retries = 3\n\
             retry_base = \"20ms\"\n",
            self.base_url(),
            self.user_id_env(),
            self.token_env()
        )
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            (self.user_id_env(), self.user_id()),
            (self.token_env(), self.token()),
            (self.ssid_env(), self.ssid()),
        ]
    }

    fn secrets(&self) -> Vec<String> {
        vec![self.user_id(), self.token(), self.ssid()]
    }

    fn add_user(&self, email: &str) -> String {
        self.state().add_user(email)
    }

    fn source_id(&self, email: &str) -> Option<String> {
        Some(self.add_user(email))
    }

    fn groups(&self) -> BTreeMap<String, BTreeSet<String>> {
        let st = self.state();
        st.groups
            .values()
            .map(|g| {
                (
                    g.name.clone(),
                    g.agents.iter().map(|a| st.email_of(a)).collect(),
                )
            })
            .collect()
    }

    fn create_group_by_hand(&self, name: &str, members: &[&str]) {
        let mut st = self.state();
        let ids: Vec<String> = members.iter().map(|m| st.member_id(m)).collect();
        let id = st.create(name);
        let g = st.groups.get_mut(&id).unwrap();
        g.receive_call = ids.iter().cloned().collect();
        g.agents = ids;
    }

    fn set_members_by_hand(&self, name: &str, members: &[&str]) {
        let mut st = self.state();
        let Some(id) = st.find(name) else { return };
        let ids: Vec<String> = members.iter().map(|m| st.member_id(m)).collect();
        let g = st.groups.get_mut(&id).unwrap();
        g.receive_call = ids.iter().cloned().collect();
        g.agents = ids;
    }

    fn delete_group_by_hand(&self, name: &str) {
        let mut st = self.state();
        if let Some(id) = st.find(name) {
            st.remove(id);
        }
    }

    fn requests(&self) -> Vec<Logged> {
        self.server.requests()
    }

    fn clear_requests(&self) {
        self.server.clear_requests()
    }

    fn inject(&self, when: Match, fault: Fault, times: usize) {
        self.server.inject(when, fault, times)
    }

    /// Every call is a POST; `Group/list` and `Group/getGroupAgentRelation` only read.
    fn is_write(&self, r: &Logged) -> bool {
        !(r.path.contains("Group/list") || r.path.contains("Group/getGroupAgentRelation"))
    }

    fn membership_write(&self) -> Match {
        Match::new("POST", "submitAssignGroupToAgent")
    }

    fn create_request(&self) -> Match {
        Match::new("POST", "Group/add")
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use super::*;

    fn req(method: &str, path: &str, body: &str) -> Req {
        Req {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            headers: vec![],
            body: body.into(),
        }
    }

    /// Calls the handler directly with the fake's own credentials merged into `body`.
    fn call(f: &FakeDeepCall, endpoint: &str, mut body: Value) -> Value {
        body["userId"] = json!(f.user_id());
        body["token"] = json!(f.token());
        raw(f, endpoint, &body.to_string())
    }

    fn raw(f: &FakeDeepCall, endpoint: &str, body: &str) -> Value {
        let r = f
            .vendor()
            .handle(&req("POST", &format!("/api/v2/{endpoint}"), body));
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    fn code_of(v: &Value) -> u64 {
        v["code"].as_u64().unwrap()
    }

    fn add(f: &FakeDeepCall, name: &str) -> String {
        let v = call(f, "Group/add", json!({"name": name}));
        assert_eq!(v["status"], "success", "{v}");
        v["groupId"].as_str().unwrap().to_string()
    }

    fn names(v: &Value) -> Vec<String> {
        v["response"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap().into())
            .collect()
    }

    #[test]
    fn auth_is_checked_on_every_endpoint() {
        let f = FakeDeepCall::start();
        for e in ENDPOINTS {
            let v = raw(&f, e, r#"{"name":"x","groupId":"1"}"#);
            assert_eq!(
                v,
                json!({"status":"error","message":"Permission denied","code":1015})
            );
            let bad = json!({"userId": f.user_id(), "token": "nope", "name": "x"}).to_string();
            assert_eq!(code_of(&raw(&f, e, &bad)), 1015);
            let bad = json!({"userId": "other", "token": f.token(), "name": "x"}).to_string();
            assert_eq!(code_of(&raw(&f, e, &bad)), 1015);
        }
        let v = raw(
            &f,
            "Group/add",
            &json!({"ssid": f.ssid(), "name": "S"}).to_string(),
        );
        assert_eq!(v["status"], "success");
        let v = raw(
            &f,
            "Group/add",
            &json!({"ssid": "wrong", "name": "S"}).to_string(),
        );
        assert_eq!(code_of(&v), 1015);
        assert_eq!(f.group_names(), vec!["S"]);
    }

    #[test]
    fn malformed_bodies_and_unknown_routes() {
        let f = FakeDeepCall::start();
        assert_eq!(code_of(&raw(&f, "Group/add", "not json")), 1000);
        assert_eq!(code_of(&raw(&f, "Group/add", "[1,2]")), 1000);
        assert_eq!(code_of(&raw(&f, "Group/add", "")), 1000);
        let v = call(&f, "Group/add", json!({"name": {"x": 1}}));
        assert_eq!(code_of(&v), 1000);
        let h = f.vendor();
        assert_eq!(
            h.handle(&req("GET", "/api/v2/Group/list", "{}")).status,
            404
        );
        assert_eq!(h.handle(&req("POST", "/api/Group/list", "{}")).status, 404);
        assert_eq!(
            h.handle(&req("POST", "/api/v2/Group/list//", "{}")).status,
            404
        );
        assert_eq!(
            h.handle(&req("POST", "/api/v2/Group/nothing", "{}")).status,
            404
        );
        // Trailing slash is fine (the documented paths have one).
        let body = json!({"userId": f.user_id(), "token": f.token(), "name": "T"}).to_string();
        let r = h.handle(&req("POST", "/api/v2/Group/add/", &body));
        assert!(r.body.contains("\"success\""), "{}", r.body);
    }

    #[test]
    fn add_appends_a_number_to_duplicate_names() {
        let f = FakeDeepCall::start();
        assert_eq!(add(&f, "Tier 1"), "1");
        assert_eq!(add(&f, "Tier 1"), "2");
        assert_eq!(add(&f, "tier 1"), "3");
        assert_eq!(f.group_names(), vec!["Tier 1", "Tier 11", "tier 12"]);
        assert_eq!(f.group_count_with_prefix("tier 1"), 3);
        assert_eq!(code_of(&call(&f, "Group/add", json!({}))), 1501);
        assert_eq!(code_of(&call(&f, "Group/add", json!({"name": "  "}))), 1501);
        let v = call(&f, "Group/add", json!({"name": "Tier 1"}));
        assert_eq!(v["code"], 200);
        assert_eq!(v["message"], "Group added successfully");
        assert_eq!(f.group_names().last().unwrap(), "Tier 13");
    }

    #[test]
    fn list_filters_by_case_insensitive_substring() {
        let f = FakeDeepCall::start();
        for n in ["Tier 1", "Tier 11", "tier 10", "Billing"] {
            add(&f, n);
        }
        let v = call(&f, "Group/list", json!({"name": "TIER 1"}));
        assert_eq!(v["status"], "success");
        assert_eq!(names(&v), vec!["Tier 1", "Tier 11", "tier 10"]);
        assert_eq!(v["response"][0]["groupId"], "1");
        assert_eq!(names(&call(&f, "Group/list", json!({}))).len(), 4);
        assert_eq!(names(&call(&f, "Group/list", json!({"name": ""}))).len(), 4);
        assert!(names(&call(&f, "Group/list", json!({"name": "zzz"}))).is_empty());
        let v = call(
            &f,
            "Group/list",
            json!({"name": "bill", "quick": true, "forward": false}),
        );
        assert_eq!(names(&v), vec!["Billing"]);
    }

    #[test]
    fn update_and_delete() {
        let f = FakeDeepCall::start();
        let a = add(&f, "A");
        add(&f, "B");
        assert_eq!(
            code_of(&call(&f, "Group/update", json!({"name": "C"}))),
            1502
        );
        assert_eq!(
            code_of(&call(
                &f,
                "Group/update",
                json!({"groupId": "99", "name": "C"})
            )),
            1503
        );
        assert_eq!(
            code_of(&call(
                &f,
                "Group/update",
                json!({"groupId": "x", "name": "C"})
            )),
            1503
        );
        assert_eq!(
            code_of(&call(&f, "Group/update", json!({"groupId": a}))),
            1501
        );
        let v = call(
            &f,
            "Group/update",
            json!({"groupId": a, "name": "a renamed"}),
        );
        assert_eq!(v["status"], "success");
        // Renaming to its own name in another case is no duplicate; onto another's name is.
        call(
            &f,
            "Group/update",
            json!({"groupId": a, "name": "A RENAMED"}),
        );
        call(
            &f,
            "Group/update",
            json!({"groupId": 2, "name": "a renamed"}),
        );
        assert_eq!(f.group_names(), vec!["A RENAMED", "a renamed1"]);

        assert_eq!(code_of(&call(&f, "Group/delete", json!({}))), 1502);
        assert_eq!(
            code_of(&call(&f, "Group/delete", json!({"groupId": "7"}))),
            1503
        );
        let v = call(&f, "Group/delete", json!({"groupId": 1}));
        assert_eq!(v["status"], "success");
        assert_eq!(
            code_of(&call(&f, "Group/delete", json!({"groupId": "1"}))),
            1503
        );
        assert_eq!(f.group_names(), vec!["a renamed1"]);
        // Ids are never reused.
        assert_eq!(add(&f, "New"), "3");
    }

    #[test]
    fn assign_replaces_both_lists() {
        let f = FakeDeepCall::start();
        let ana = f.add_user("ana@example.com");
        let bo = f.add_user("Bo@Example.com");
        let cy = f.add_user("cy@example.com");
        assert_eq!(
            (ana.as_str(), bo.as_str(), cy.as_str()),
            ("1001", "1002", "1003")
        );
        assert_eq!(f.add_user("bo@example.com"), "1002");
        let g = add(&f, "Tier 1");
        let v = call(
            &f,
            "Group/submitAssignGroupToAgent",
            json!({"groupId": g, "agent_unique_id": [ana, bo, cy], "receive_call": [ana, cy]}),
        );
        assert_eq!(
            v,
            json!({"status": "success", "code": 200,
                   "message": "Agents successfully assigned to the group, and Elasticsearch updated"})
        );
        let emails = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            f.groups()["Tier 1"],
            emails(&["ana@example.com", "bo@example.com", "cy@example.com"])
        );
        assert_eq!(
            f.receive_call("Tier 1"),
            emails(&["ana@example.com", "cy@example.com"])
        );

        // Whole-list replacement: receive_call omitted means nobody receives calls.
        call(
            &f,
            "Group/submitAssignGroupToAgent",
            json!({"groupId": g, "agent_unique_id": [bo]}),
        );
        assert_eq!(f.groups()["Tier 1"], emails(&["bo@example.com"]));
        assert!(f.receive_call("Tier 1").is_empty());
        // Numeric ids are accepted too.
        call(
            &f,
            "Group/submitAssignGroupToAgent",
            json!({"groupId": 1, "agent_unique_id": [1001], "receive_call": [1001]}),
        );
        assert_eq!(f.receive_call("Tier 1"), emails(&["ana@example.com"]));
        // Omitting agent_unique_id removes all agents.
        let v = call(&f, "Group/submitAssignGroupToAgent", json!({"groupId": g}));
        assert_eq!(v["status"], "success");
        assert!(f.groups()["Tier 1"].is_empty());
    }

    #[test]
    fn assign_rejects_bad_input_atomically() {
        let f = FakeDeepCall::start();
        let ana = f.add_user("ana@example.com");
        let bo = f.add_user("bo@example.com");
        let g = add(&f, "G");
        let w = "Group/submitAssignGroupToAgent";
        call(
            &f,
            w,
            json!({"groupId": g, "agent_unique_id": [ana], "receive_call": [ana]}),
        );
        let before = f.groups();
        let cases = [
            (json!({"agent_unique_id": [ana]}), 1502),
            (json!({"groupId": "", "agent_unique_id": [ana]}), 1502),
            (json!({"groupId": "42", "agent_unique_id": [ana]}), 1503),
            (
                json!({"groupId": g, "agent_unique_id": [ana, "9999"]}),
                1047,
            ),
            (
                json!({"groupId": g, "agent_unique_id": ["ana@example.com"]}),
                1047,
            ),
            (
                json!({"groupId": g, "agent_unique_id": [ana], "receive_call": [bo]}),
                1047,
            ),
            (json!({"groupId": g, "agent_unique_id": ana}), 1000),
            (
                json!({"groupId": g, "agent_unique_id": [ana], "receive_call": "x"}),
                1000,
            ),
            (json!({"groupId": g, "agent_unique_id": [null]}), 1000),
        ];
        for (body, code) in cases {
            let v = call(&f, w, body.clone());
            assert_eq!(v["status"], "error", "{body}");
            assert_eq!(code_of(&v), code, "{body}");
            assert_eq!(v["message"], message_for(code as u32));
        }
        assert_eq!(f.groups(), before);
        assert_eq!(f.receive_call("G").len(), 1);
    }

    #[test]
    fn relation_flags_follow_the_style_knob() {
        let f = FakeDeepCall::start();
        let ana = f.add_user("ana@example.com");
        let bo = f.add_user("bo@example.com");
        let g = add(&f, "G");
        call(
            &f,
            "Group/submitAssignGroupToAgent",
            json!({"groupId": g, "agent_unique_id": [ana, bo], "receive_call": [bo]}),
        );
        let rel = |f: &FakeDeepCall| {
            let v = call(f, "Group/getGroupAgentRelation", json!({"groupId": g}));
            assert_eq!(v["status"], "success");
            assert_eq!(v["code"], 200);
            v["response"]["relationData"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    (
                        d["agent_unique_id"].as_str().unwrap().to_string(),
                        d["receive_call"].clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rel(&f),
            vec![(ana.clone(), json!(0)), (bo.clone(), json!(1))]
        );
        f.set_receive_call_style(Style::Text);
        assert_eq!(
            rel(&f),
            vec![(ana.clone(), json!("0")), (bo.clone(), json!("1"))]
        );
        f.set_receive_call_style(Style::Bool);
        assert_eq!(rel(&f), vec![(ana, json!(false)), (bo, json!(true))]);
        let w = "Group/getGroupAgentRelation";
        assert_eq!(code_of(&call(&f, w, json!({}))), 1502);
        assert_eq!(code_of(&call(&f, w, json!({"groupId": "5"}))), 1503);
    }

    #[test]
    fn answers_follow_the_shape_switch_and_pages() {
        let f = FakeDeepCall::start();
        let ana = f.add_user("ana@example.com");
        let g = add(&f, "G");
        add(&f, "H");
        call(
            &f,
            "Group/submitAssignGroupToAgent",
            json!({"groupId": g, "agent_unique_id": [ana], "receive_call": [ana]}),
        );
        let list = |f: &FakeDeepCall| call(f, "Group/list", json!({}));
        let rel = |f: &FakeDeepCall| call(f, "Group/getGroupAgentRelation", json!({"groupId": g}));
        // The documented envelope.
        let v = list(&f);
        assert_eq!(
            (v["status"].as_str(), v["code"].as_u64()),
            (Some("success"), Some(200))
        );
        assert_eq!(v["response"].as_array().unwrap().len(), 2);
        let v = rel(&f);
        assert_eq!(v["response"]["groupData"]["name"], "G");
        assert_eq!(
            v["response"]["agentData"][0]["agent_unique_id"],
            ana.as_str()
        );
        assert_eq!(v["response"]["relationData"][0]["receive_call"], 1);
        f.set_records_at(&["response", "groups"]);
        assert_eq!(list(&f)["response"]["groups"].as_array().unwrap().len(), 2);
        assert_eq!(
            rel(&f)["response"]["groups"][0]["agent_unique_id"],
            ana.as_str()
        );
        f.set_shape(Shape::NoArray);
        assert!(
            list(&f)
                .as_object()
                .unwrap()
                .values()
                .all(|v| !v.is_array())
        );
        f.set_shape(Shape::KeyedById);
        assert_eq!(list(&f)["response"]["1"]["name"], "G");
        assert_eq!(rel(&f)["response"][ana.as_str()]["receive_call"], 1);
        f.set_shape(Shape::Disagree);
        assert_eq!(list(&f)["recent"].as_array().unwrap().len(), 3);
        assert_eq!(
            rel(&f)["response"]["agentData"].as_array().unwrap().len(),
            2
        );
        f.set_shape(Shape::Blind);
        assert_eq!(list(&f)["response"], json!([]));
        f.set_shape(Shape::Documented);
        f.set_page_size(Some(1));
        let v = list(&f);
        assert_eq!(
            (v["total"].as_u64(), v["page"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(names(&v), vec!["G"]);
        let v = call(&f, "Group/list", json!({"page": 2}));
        assert_eq!(names(&v), vec!["H"]);
        assert!(names(&call(&f, "Group/list", json!({"page": "3"}))).is_empty());
    }

    #[test]
    fn fail_knobs_answer_error_bodies_without_touching_state() {
        let f = FakeDeepCall::start();
        f.fail_next("Group/add", 1009, 2);
        for _ in 0..2 {
            let v = call(&f, "Group/add", json!({"name": "X"}));
            assert_eq!(
                v,
                json!({"status":"error","message":"Something went wrong","code":1009})
            );
        }
        assert!(f.group_names().is_empty());
        // Wrong credentials do not consume an armed failure.
        f.fail_next("add", 1009, 1);
        assert_eq!(code_of(&raw(&f, "Group/add", r#"{"name":"X"}"#)), 1015);
        assert_eq!(code_of(&call(&f, "Group/list", json!({}))), 200);
        assert_eq!(code_of(&call(&f, "Group/add", json!({"name": "X"}))), 1009);
        let g = add(&f, "X");
        let h = add(&f, "Y");
        f.fail_group(&g, 1503);
        for e in [
            "Group/update",
            "Group/delete",
            "Group/submitAssignGroupToAgent",
            "Group/getGroupAgentRelation",
        ] {
            let v = call(&f, e, json!({"groupId": g, "name": "Z"}));
            assert_eq!(code_of(&v), 1503, "{e}");
        }
        assert_eq!(
            code_of(&call(
                &f,
                "Group/getGroupAgentRelation",
                json!({"groupId": h})
            )),
            200
        );
        assert_eq!(f.group_names(), vec!["X", "Y"]);
        f.clear_fail_group(&g);
        assert_eq!(
            code_of(&call(
                &f,
                "Group/update",
                json!({"groupId": g, "name": "Z"})
            )),
            200
        );
        f.fail_next("submitAssignGroupToAgent", 1009, 5);
        f.clear_faults();
        let v = call(&f, "Group/submitAssignGroupToAgent", json!({"groupId": g}));
        assert_eq!(code_of(&v), 200);
    }

    #[test]
    fn fake_trait_view_and_by_hand_knobs() {
        let f = FakeDeepCall::start();
        assert_eq!(f.kind(), "assign_group");
        let port = f.port();
        let toml = f.target_toml("dc");
        assert!(toml.contains("kind = \"assign_group\""));
        assert!(toml.contains(&format!("base_url = \"http://127.0.0.1:{port}/api/v2\"")));
        assert!(toml.contains(&format!("user_id_env = \"FAKE_DEEPCALL_USER_ID_{port}\"")));
        assert!(toml.contains(&format!("token_env = \"FAKE_DEEPCALL_TOKEN_{port}\"")));
        assert!(
            f.target_toml_ssid("dc")
                .contains(&format!("ssid_env = \"FAKE_DEEPCALL_SSID_{port}\""))
        );
        let env = f.env();
        assert!(env.contains(&(f.token_env(), f.token())));
        assert!(
            f.secrets()
                .iter()
                .all(|s| s.contains(&port.to_string()) && s.len() > 12)
        );
        assert_eq!(f.source_id("Ana@example.com"), Some("1001".to_string()));
        assert_eq!(f.add_user("ana@example.com"), "1001");

        f.create_group_by_hand("Tier 1", &["ana@example.com", "bo@example.com", "7777"]);
        let want: BTreeSet<String> = ["ana@example.com", "bo@example.com", "7777"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(f.groups()["Tier 1"], want);
        assert_eq!(f.receive_call("Tier 1"), want);
        f.create_group_by_hand("TIER 1", &[]);
        assert_eq!(f.group_names(), vec!["Tier 1", "TIER 11"]);
        assert_eq!(f.group_id("tier 11"), Some("2".into()));
        f.set_members_by_hand("Tier 1", &["bo@example.com"]);
        f.set_receive_call_by_hand("Tier 1", &[]);
        assert_eq!(f.groups()["Tier 1"].len(), 1);
        assert!(f.receive_call("Tier 1").is_empty());
        f.delete_group_by_hand("TIER 11");
        assert_eq!(f.group_names(), vec!["Tier 1"]);
        assert_eq!(f.group_count_with_prefix("Tier 1"), 1);
        assert_eq!(
            f.membership_write().path_contains,
            "submitAssignGroupToAgent"
        );
        assert_eq!(f.create_request().path_contains, "Group/add");
    }

    /// A minimal HTTP/1.1 POST over a real socket; None when the server dropped the connection.
    fn post(f: &FakeDeepCall, path: &str, body: &Value) -> Option<(u16, Value)> {
        let mut s = TcpStream::connect(f.server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let body = body.to_string();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let (head, rest) = out.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, serde_json::from_str(rest).unwrap_or(Value::Null)))
    }

    #[test]
    fn round_trip_over_http_with_faults() {
        let f = FakeDeepCall::start();
        let ana = f.add_user("ana@example.com");
        let auth = |mut v: Value| {
            v["userId"] = json!(f.user_id());
            v["token"] = json!(f.token());
            v
        };
        let (st, v) = post(&f, "/api/v2/Group/add", &auth(json!({"name": "Tier 1"}))).unwrap();
        assert_eq!(
            (st, v["status"].as_str(), v["groupId"].as_str()),
            (200, Some("success"), Some("1"))
        );
        let (st, v) = post(&f, "/api/v2/Group/list/", &json!({"name": "x"})).unwrap();
        assert_eq!((st, code_of(&v)), (200, 1015));

        // The create whose response is lost: the group exists, the client saw nothing.
        f.inject(f.create_request(), Fault::DropAfter, 1);
        assert!(post(&f, "/api/v2/Group/add", &auth(json!({"name": "Tier 2"}))).is_none());
        assert_eq!(f.group_names(), vec!["Tier 1", "Tier 2"]);
        // A blind retry leaves a suffixed duplicate behind.
        post(&f, "/api/v2/Group/add", &auth(json!({"name": "Tier 2"}))).unwrap();
        assert_eq!(f.group_count_with_prefix("Tier 2"), 2);

        // Vendor error bodies come with HTTP 200.
        f.inject(
            f.membership_write(),
            Fault::body(
                200,
                json!({"status":"error","code":1009,"message":"Something went wrong"}),
            ),
            1,
        );
        let w = "/api/v2/Group/submitAssignGroupToAgent";
        let assign = auth(json!({"groupId": "1", "agent_unique_id": [ana], "receive_call": [ana]}));
        let (st, v) = post(&f, w, &assign).unwrap();
        assert_eq!((st, code_of(&v)), (200, 1009));
        assert!(f.groups()["Tier 1"].is_empty());

        // Slow answers.
        f.inject(
            f.membership_write(),
            Fault::Delay(Duration::from_millis(300)),
            1,
        );
        let t = Instant::now();
        let (st, v) = post(&f, w, &assign).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert_eq!((st, code_of(&v)), (200, 200));
        assert_eq!(f.receive_call("Tier 1").len(), 1);

        let log = f.requests();
        assert_eq!(log.len(), 6);
        assert!(log.iter().all(|r| r.method == "POST"));
        assert_eq!(log[2].status, 0);
        assert_eq!(f.calls_to("submitAssignGroupToAgent"), 2);
        f.clear_requests();
        assert!(f.requests().is_empty());
    }
}
