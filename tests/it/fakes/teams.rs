//! Fake Dixa-style Teams API (target kind `teams`), written from
//! `shared/seeds/001_0562aab02ffe9a67.txt` and SPEC.md section 5.
//!
//! Served under the path prefix `/v1` (`base_url = http://127.0.0.1:PORT/v1`):
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/teams` | 200 `{"data":[{id,name}]}`, creation order, no paging |
//! | `POST /v1/teams {name}` | 201 `{"data":{id,name}}` (duplicate names are allowed, as in the document) |
//! | `GET /v1/teams/{id}` | 200 `{"data":{id,name}}` |
//! | `DELETE /v1/teams/{id}` | 204 |
//! | `GET /v1/teams/{id}/agents` | 200 `{"data":[{id,name,email}]}` |
//! | `PATCH /v1/teams/{id}/agents {agentIds}` | 204 (200 with `set_add_status(200)`), no body |
//! | `DELETE /v1/teams/{id}/agents {agentIds}` | 204, no body |
//! | `GET /v1/teams/{id}/presence[?pageKey=K][&pageLimit=N]` | 200 `{"data":[{userId,requestTime,lastSeen,presenceStatus,connectionStatus,activeChannels}]}` (one record per member; `Online` for agents set online, else `Offline`), `meta.next` while more remain |
//! | `GET /v1/agents[?email=E][&pageKey=K][&pageLimit=N]` | 200 `{"data":[{id,name,email}]}` plus `"meta":{"next":PATH}` while more remain |
//!
//! Errors are `{"message": ...}` bodies: 401 for anything but the raw key in `Authorization`;
//! 429 with `Retry-After: 1` past the token bucket (burst 4, refill 10/s); 400
//! `Invalid value for: path parameter teamId` for an id that is not a UUID; 404 `An entity in
//! this request could not be found` for a well-formed unknown team id; 400 `Invalid value for:
//! body` for malformed JSON, a missing/empty `name`, a missing `agentIds`, or any agent id that
//! is not a known agent (the whole request is then refused, nothing applied); 415 when a body
//! is sent without `Content-Type: application/json`; 404/405 for unknown routes/methods.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use super::Fake;
use super::http::{Handler, Journal, Match, Reply, Req, Server};
use super::keyed::{Keyed, Keys};

/// The API path prefix this fake serves under.
pub const PREFIX: &str = "/v1";
/// The documented limit: 10 requests/s with a burst of 4, per token.
pub const DIXA_RATE_LIMIT: (u32, u32) = (10, 4);
/// Default largest page of `GET /v1/agents` (also the size when `pageLimit` is absent).
pub const DEFAULT_AGENTS_PAGE_CAP: usize = 100;

const NOT_FOUND: &str = "An entity in this request could not be found";
const BAD_BODY: &str = "Invalid value for: body";
const BAD_TEAM_ID: &str = "Invalid value for: path parameter teamId";
const BAD_PAGE_KEY: &str = "Invalid value for: query parameter pageKey";
const BAD_PAGE_LIMIT: &str = "Invalid value for: query parameter pageLimit";

#[derive(Clone, Debug)]
struct Agent {
    id: String,
    name: String,
    email: String,
}

impl Keys for Agent {
    /// Found by id and by email, any case.
    fn keys(&self) -> Vec<String> {
        vec![id_key(&self.id), email_key(&self.email)]
    }
}

/// Ids are UUIDs, matched whatever the case.
fn id_key(id: &str) -> String {
    format!("i:{}", id.to_ascii_lowercase())
}

fn email_key(email: &str) -> String {
    format!("e:{}", email.to_ascii_lowercase())
}

#[derive(Clone, Debug)]
struct Team {
    id: String,
    name: String,
    /// Agent ids, in the order they were added.
    members: Vec<String>,
    /// The same ids, for membership checks.
    present: HashSet<String>,
}

impl Keys for Team {
    fn keys(&self) -> Vec<String> {
        vec![self.id.clone()]
    }
}

impl Team {
    /// Appends the agent unless it is a member already.
    fn add(&mut self, id: String) {
        if self.present.insert(id.clone()) {
            self.members.push(id);
        }
    }

    fn remove_all(&mut self, ids: &HashSet<String>) {
        self.members.retain(|m| !ids.contains(m));
        self.present.retain(|m| !ids.contains(m));
    }

    /// Replaces the members (`ids` holds no duplicates).
    fn set(&mut self, ids: Vec<String>) {
        self.present = ids.iter().cloned().collect();
        self.members = ids;
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Everything the server knows, behind one mutex.
struct State {
    /// Teams in creation order, by id (ids are never reused after a delete).
    teams: Keyed<Team>,
    /// The agent directory, in registration order, by id and by email.
    agents: Keyed<Agent>,
    next_team: u64,
    next_agent: u64,
    /// (requests per second, burst), None = no limiter.
    limit: Option<(u32, u32)>,
    bucket: Bucket,
    rate_limited: usize,
    add_status: u16,
    agents_page_cap: usize,
    /// `GET /v1/agents` honours `email=` (false: a server that ignores the filter and pages
    /// through everybody, so a client must page and match the email itself).
    email_filter: bool,
    /// Agent ids connected now (`connectionStatus: Online` in presence answers).
    online: BTreeSet<String>,
    /// The largest page of `GET /v1/teams/{id}/presence`.
    presence_page_cap: usize,
}

impl State {
    fn team_index(&self, id: &str) -> Option<usize> {
        self.teams.first(&id.to_ascii_lowercase())
    }

    fn agent_by_id(&self, id: &str) -> Option<&Agent> {
        self.agents.get(&id_key(id))
    }

    fn agent_by_email(&self, email: &str) -> Option<&Agent> {
        self.agents.get(&email_key(email))
    }

    /// Registers `email` (idempotent, case-insensitive) and returns its agent id.
    fn add_agent(&mut self, email: &str) -> String {
        if let Some(a) = self.agent_by_email(email) {
            return a.id.clone();
        }
        self.next_agent += 1;
        let n = self.next_agent;
        let id = format!("a9{n:06x}-0000-4000-8000-{n:012x}");
        let local = email.split('@').next().unwrap_or(email);
        let name = local
            .split(['.', '_', '-'])
            .filter(|w| !w.is_empty())
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect::<String>())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" ");
        self.agents.push(Agent {
            id: id.clone(),
            name,
            email: email.to_string(),
        });
        id
    }

    /// Creates a team with these members (no duplicates); returns its position.
    fn new_team(&mut self, name: &str, members: Vec<String>) -> usize {
        self.next_team += 1;
        let n = self.next_team;
        let mut team = Team {
            id: format!("7e{n:06x}-0000-4000-a000-{n:012x}"),
            name: name.into(),
            members: Vec::new(),
            present: HashSet::new(),
        };
        team.set(members);
        self.teams.push(team)
    }

    /// A by-hand member: an existing agent id, else an email (registered when unknown).
    fn resolve_by_hand(&mut self, member: &str) -> String {
        match self.agent_by_id(member) {
            Some(a) => a.id.clone(),
            None => self.add_agent(member),
        }
    }

    fn agent_json(&self, id: &str) -> serde_json::Value {
        match self.agent_by_id(id) {
            Some(a) => serde_json::json!({"id": a.id, "name": a.name, "email": a.email}),
            None => serde_json::json!({"id": id, "name": "", "email": ""}),
        }
    }

    /// Token bucket: true when the request may proceed (and takes a token).
    fn admit(&mut self) -> bool {
        let Some((rate, burst)) = self.limit else {
            return true;
        };
        let now = Instant::now();
        let elapsed = now.duration_since(self.bucket.last).as_secs_f64();
        self.bucket.last = now;
        self.bucket.tokens = (self.bucket.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        if self.bucket.tokens >= 1.0 {
            self.bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The vendor logic. Usable on its own (without HTTP) through `Handler::handle`.
pub struct TeamsHandler {
    /// The accepted key; every request is refused until it is set.
    token: OnceLock<String>,
    state: Mutex<State>,
}

fn msg(status: u16, message: &str) -> Reply {
    Reply::json(status, serde_json::json!({ "message": message }))
}

/// `8-4-4-4-12` hex digits, either case (the server parses ids as UUIDs).
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl TeamsHandler {
    /// A handler accepting `token`, with the documented rate limit on.
    pub fn new(token: &str) -> TeamsHandler {
        let h = Self::without_token();
        let _ = h.token.set(token.to_string());
        h
    }

    fn without_token() -> TeamsHandler {
        let (_, burst) = DIXA_RATE_LIMIT;
        TeamsHandler {
            token: OnceLock::new(),
            state: Mutex::new(State {
                teams: Keyed::new(),
                agents: Keyed::new(),
                next_team: 0,
                next_agent: 0,
                limit: Some(DIXA_RATE_LIMIT),
                bucket: Bucket {
                    tokens: f64::from(burst),
                    last: Instant::now(),
                },
                rate_limited: 0,
                add_status: 204,
                agents_page_cap: DEFAULT_AGENTS_PAGE_CAP,
                email_filter: true,
                online: BTreeSet::new(),
                presence_page_cap: DEFAULT_AGENTS_PAGE_CAP,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The JSON body of a write, or the error reply (415 without a JSON content type, 400
    /// when it does not parse as a JSON object).
    fn body(req: &Req) -> Result<serde_json::Map<String, serde_json::Value>, Reply> {
        let json_ct = req
            .header("content-type")
            .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"));
        if !json_ct {
            return Err(msg(415, "Unsupported Media Type"));
        }
        match serde_json::from_str::<serde_json::Value>(&req.body) {
            Ok(serde_json::Value::Object(m)) => Ok(m),
            _ => Err(msg(400, BAD_BODY)),
        }
    }

    /// `{"agentIds": [uuid, ...]}` naming known agents only; ids lowercased, deduplicated.
    fn agent_ids(st: &State, req: &Req) -> Result<Vec<String>, Reply> {
        let body = Self::body(req)?;
        let Some(serde_json::Value::Array(items)) = body.get("agentIds") else {
            return Err(msg(400, BAD_BODY));
        };
        let mut ids: Vec<String> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for item in items {
            let Some(id) = item.as_str().filter(|s| is_uuid(s)) else {
                return Err(msg(400, BAD_BODY));
            };
            let Some(agent) = st.agent_by_id(id) else {
                return Err(msg(400, BAD_BODY));
            };
            if seen.insert(&agent.id) {
                ids.push(agent.id.clone());
            }
        }
        Ok(ids)
    }

    fn list_teams(st: &State) -> Reply {
        let data: Vec<_> = st
            .teams
            .iter()
            .map(|t| serde_json::json!({"id": t.id, "name": t.name}))
            .collect();
        Reply::json(200, serde_json::json!({ "data": data }))
    }

    fn create_team(st: &mut State, req: &Req) -> Reply {
        let body = match Self::body(req) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let Some(name) = body.get("name").and_then(|v| v.as_str()) else {
            return msg(400, BAD_BODY);
        };
        if name.trim().is_empty() {
            return msg(400, BAD_BODY);
        }
        let i = st.new_team(name, Vec::new());
        let team = &st.teams[i];
        Reply::json(
            201,
            serde_json::json!({"data": {"id": team.id, "name": team.name}}),
        )
    }

    fn team_route(st: &mut State, req: &Req, id: &str, agents: bool) -> Reply {
        if !is_uuid(id) {
            return msg(400, BAD_TEAM_ID);
        }
        let Some(i) = st.team_index(id) else {
            return msg(404, NOT_FOUND);
        };
        match (req.method.as_str(), agents) {
            ("GET", false) => {
                let t = &st.teams[i];
                Reply::json(
                    200,
                    serde_json::json!({"data": {"id": t.id, "name": t.name}}),
                )
            }
            ("DELETE", false) => {
                st.teams.remove(i);
                Reply::empty(204)
            }
            ("GET", true) => {
                let data: Vec<_> = st.teams[i]
                    .members
                    .iter()
                    .map(|m| st.agent_json(m))
                    .collect();
                Reply::json(200, serde_json::json!({ "data": data }))
            }
            ("PATCH", true) => {
                let ids = match Self::agent_ids(st, req) {
                    Ok(ids) => ids,
                    Err(r) => return r,
                };
                let team = &mut st.teams[i];
                for id in ids {
                    team.add(id);
                }
                Reply::empty(st.add_status)
            }
            ("DELETE", true) => {
                let ids = match Self::agent_ids(st, req) {
                    Ok(ids) => ids,
                    Err(r) => return r,
                };
                st.teams[i].remove_all(&ids.into_iter().collect());
                Reply::empty(204)
            }
            _ => msg(405, "Method Not Allowed"),
        }
    }

    fn presence(st: &State, req: &Req, id: &str) -> Reply {
        if !is_uuid(id) {
            return msg(400, BAD_TEAM_ID);
        }
        let Some(i) = st.team_index(id) else {
            return msg(404, NOT_FOUND);
        };
        let (offset, limit) = match page_params(req, st.presence_page_cap) {
            Ok(p) => p,
            Err(reply) => return reply,
        };
        let members = &st.teams[i].members;
        let page: Vec<_> = members
            .iter()
            .skip(offset)
            .take(limit)
            .map(|m| {
                let on = st.online.contains(m);
                serde_json::json!({
                    "userId": m,
                    "requestTime": "2021-12-01T12:46:35.935",
                    "lastSeen": "2021-12-01T12:46:35.935",
                    "presenceStatus": if on { "Working" } else { "Away" },
                    "connectionStatus": if on { "Online" } else { "Offline" },
                    "activeChannels": if on { serde_json::json!(["Email"]) } else { serde_json::json!([]) },
                })
            })
            .collect();
        let mut out = serde_json::json!({ "data": page });
        if offset + limit < members.len() {
            let next = format!(
                "{PREFIX}/teams/{}/presence?pageKey={}",
                st.teams[i].id,
                pct_encode(&encode_page_key(offset + limit, limit))
            );
            out["meta"] = serde_json::json!({ "next": next });
        }
        Reply::json(200, out)
    }

    fn list_agents(st: &State, req: &Req) -> Reply {
        let (offset, limit) = match page_params(req, st.agents_page_cap) {
            Ok(p) => p,
            Err(reply) => return reply,
        };
        let email = req.query_param("email").filter(|_| st.email_filter);
        // Emails are unique whatever the case, so the filter matches one agent or none.
        let matching: &[Agent] = match &email {
            Some(e) => match st.agents.first(&email_key(e)) {
                Some(i) => &st.agents[i..=i],
                None => &[],
            },
            None => &st.agents,
        };
        let page: Vec<_> = matching
            .iter()
            .skip(offset)
            .take(limit)
            .map(|a| serde_json::json!({"id": a.id, "name": a.name, "email": a.email}))
            .collect();
        let mut out = serde_json::json!({ "data": page });
        if offset + limit < matching.len() {
            let mut next = format!(
                "{PREFIX}/agents?pageKey={}",
                pct_encode(&encode_page_key(offset + limit, limit))
            );
            if let Some(e) = &email {
                next.push_str(&format!("&email={}", pct_encode(e)));
            }
            out["meta"] = serde_json::json!({ "next": next });
        }
        Reply::json(200, out)
    }
}

impl Handler for TeamsHandler {
    fn handle(&self, req: &Req) -> Reply {
        let key = req.header("authorization");
        if key.is_none() || key != self.token.get().map(String::as_str) {
            return msg(401, "Unauthorized");
        }
        let mut st = self.state();
        if !st.admit() {
            st.rate_limited += 1;
            let mut r = msg(429, "Too Many Requests");
            r.headers.push(("retry-after".into(), "1".into()));
            return r;
        }
        let Some(rest) = req
            .path
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('/'))
        else {
            return msg(404, "Not Found");
        };
        let segs: Vec<&str> = rest.split('/').collect();
        let m = req.method.as_str();
        match segs.as_slice() {
            ["teams"] => match m {
                "GET" => Self::list_teams(&st),
                "POST" => Self::create_team(&mut st, req),
                _ => msg(405, "Method Not Allowed"),
            },
            ["teams", id] => Self::team_route(&mut st, req, id, false),
            ["teams", id, "agents"] => Self::team_route(&mut st, req, id, true),
            ["teams", id, "presence"] => match m {
                "GET" => Self::presence(&st, req, id),
                _ => msg(405, "Method Not Allowed"),
            },
            ["agents"] => match m {
                "GET" => Self::list_agents(&st, req),
                _ => msg(405, "Method Not Allowed"),
            },
            _ => msg(404, "Not Found"),
        }
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode(data: &[u8]) -> String {
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
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if i >= 4 - pad {
                0
            } else {
                B64.iter().position(|&x| x == c)? as u32
            };
            n = (n << 6) | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// The opaque `pageKey`: base64 of `offset=N&limit=M`.
fn encode_page_key(offset: usize, limit: usize) -> String {
    b64_encode(format!("offset={offset}&limit={limit}").as_bytes())
}

/// `pageKey` (offset and limit of the next page) and `pageLimit` of a paged listing, the
/// limit clamped to `cap`; a 400 for either when malformed.
fn page_params(req: &Req, cap: usize) -> Result<(usize, usize), Reply> {
    let (mut offset, mut limit) = (0usize, cap);
    if let Some(key) = req.query_param("pageKey") {
        match decode_page_key(&key) {
            Some((o, l)) => (offset, limit) = (o, l),
            None => return Err(msg(400, BAD_PAGE_KEY)),
        }
    }
    if let Some(l) = req.query_param("pageLimit") {
        match l.parse::<i32>() {
            Ok(n) if n > 0 => limit = n as usize,
            _ => return Err(msg(400, BAD_PAGE_LIMIT)),
        }
    }
    Ok((offset, limit.clamp(1, cap.max(1))))
}

fn decode_page_key(key: &str) -> Option<(usize, usize)> {
    let text = String::from_utf8(b64_decode(key)?).ok()?;
    let (o, l) = text.strip_prefix("offset=")?.split_once("&limit=")?;
    let limit: usize = l.parse().ok()?;
    (limit > 0).then_some(())?;
    Some((o.parse().ok()?, limit))
}

fn pct_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The fake Teams target: a `TeamsHandler` behind real HTTP on 127.0.0.1.
pub struct FakeTeams {
    server: Server<TeamsHandler>,
    token: String,
    token_env: String,
    ids_in_source: bool,
}

impl FakeTeams {
    /// Lookup mode: `source_id()` is always None, so rostersync must resolve every agent
    /// through `GET /v1/agents?email=`.
    pub fn start() -> Arc<FakeTeams> {
        Self::start_inner(false)
    }

    /// `source_id()` gives the agent id of every person registered with `add_user`.
    pub fn start_with_ids_in_source() -> Arc<FakeTeams> {
        Self::start_inner(true)
    }

    fn start_inner(ids_in_source: bool) -> Arc<FakeTeams> {
        // The token names the port, known only once bound: set it right after the start.
        let server = Server::start(TeamsHandler::without_token());
        let port = server.addr.port();
        let token = format!("s3cret-teams-{port}-Zq9-rawkey-7f3c1d");
        let token_env = format!("FAKE_TEAMS_TOKEN_{port}");
        let _ = server.handler.token.set(token.clone());
        Arc::new(FakeTeams {
            server,
            token,
            token_env,
            ids_in_source,
        })
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.server.handler.state()
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("{}{PREFIX}", self.server.base_url())
    }

    /// The raw API key the server accepts in `Authorization`.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The agent id of a registered email (case-insensitive).
    pub fn agent_id(&self, email: &str) -> Option<String> {
        self.st().agent_by_email(email).map(|a| a.id.clone())
    }

    /// Teams as (id, name), in creation order (shows duplicates that `groups()` would name
    /// `"<name> (duplicate N)"`).
    pub fn teams(&self) -> Vec<(String, String)> {
        self.st()
            .teams
            .iter()
            .map(|t| (t.id.clone(), t.name.clone()))
            .collect()
    }

    /// The id of the first team named `name`.
    pub fn team_id(&self, name: &str) -> Option<String> {
        self.st()
            .teams
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.id.clone())
    }

    /// How many requests were refused with 429 by the rate limiter (not by injected faults).
    pub fn rate_limited_count(&self) -> usize {
        self.st().rate_limited
    }

    /// `Some((per_second, burst))` sets the token bucket (starting full); `None` disables it.
    /// The default is `DIXA_RATE_LIMIT` = (10, 4).
    pub fn set_rate_limit(&self, limit: Option<(u32, u32)>) {
        let mut st = self.st();
        st.limit = limit;
        st.bucket = Bucket {
            tokens: f64::from(limit.map_or(0, |l| l.1)),
            last: Instant::now(),
        };
    }

    /// The status of a successful `PATCH .../agents`: 204 by default; the vendor document
    /// lists 200, so a client must accept either.
    pub fn set_add_status(&self, status: u16) {
        self.st().add_status = status;
    }

    /// The largest page `GET /v1/agents` returns, and its size when `pageLimit` is absent.
    pub fn set_agents_page_cap(&self, cap: usize) {
        self.st().agents_page_cap = cap.max(1);
    }

    /// Whether `GET /v1/agents` honours `email=` (default true). Off, it lists everybody,
    /// page by page (see `set_agents_page_cap`).
    pub fn set_email_filter(&self, on: bool) {
        self.st().email_filter = on;
    }

    /// Whether the agent with this email is connected now (presence `Online`).
    pub fn set_online(&self, email: &str, on: bool) {
        let mut st = self.st();
        let Some(id) = st.agent_by_email(email).map(|a| a.id.clone()) else {
            panic!("no agent {email}");
        };
        if on {
            st.online.insert(id);
        } else {
            st.online.remove(&id);
        }
    }

    /// The largest page of `GET /v1/teams/{id}/presence`.
    pub fn set_presence_page_cap(&self, cap: usize) {
        self.st().presence_page_cap = cap.max(1);
    }

    /// Renames a team in the console (the API cannot).
    pub fn rename_team_by_hand(&self, name: &str, new_name: &str) {
        let mut st = self.st();
        let i = Self::team_named(&st, name);
        st.teams[i].name = new_name.into();
    }

    /// Deletes an agent from the organisation: gone from the directory and from every team;
    /// its id is unknown from then on (400 in membership calls).
    pub fn delete_agent_by_hand(&self, email: &str) {
        let mut st = self.st();
        let Some(id) = st.agent_by_email(email).map(|a| a.id.clone()) else {
            return;
        };
        st.agents.retain(|a| a.id != id);
        let gone = HashSet::from([id]);
        for t in st.teams.iter_mut() {
            t.remove_all(&gone);
        }
    }

    pub fn clear_faults(&self) {
        self.server.clear_faults();
    }

    /// The agent ids of by-hand members, in order, without duplicates.
    fn by_hand(st: &mut State, members: &[&str]) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for m in members {
            let id = st.resolve_by_hand(m);
            if seen.insert(id.clone()) {
                ids.push(id);
            }
        }
        ids
    }

    fn team_named(st: &State, name: &str) -> usize {
        st.teams
            .iter()
            .position(|t| t.name == name)
            .unwrap_or_else(|| panic!("fake teams: no team named {name:?}"))
    }
}

impl Fake for FakeTeams {
    fn clear_faults(&self) {
        FakeTeams::clear_faults(self)
    }

    fn all_group_names(&self) -> Vec<String> {
        self.teams().into_iter().map(|(_, n)| n).collect()
    }

    fn kind(&self) -> &'static str {
        "teams"
    }

    fn target_toml(&self, name: &str) -> String {
        format!(
            "[[target]]\nname = \"{name}\"\nkind = \"teams\"\nbase_url = \"{}\"\n\
             token_env = \"{}\"\ntimeout = \"2s\"\nmax_retries = 3\nretry_base = \"20ms\"\n",
            self.base_url(),
            self.token_env
        )
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![(self.token_env.clone(), self.token.clone())]
    }

    fn secrets(&self) -> Vec<String> {
        vec![self.token.clone()]
    }

    fn add_user(&self, email: &str) -> String {
        self.st().add_agent(email)
    }

    fn source_id(&self, email: &str) -> Option<String> {
        if self.ids_in_source {
            self.agent_id(email)
        } else {
            None
        }
    }

    fn groups(&self) -> BTreeMap<String, BTreeSet<String>> {
        let st = self.st();
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &st.teams {
            let n = seen.entry(t.name.as_str()).or_insert(0);
            *n += 1;
            let key = if *n == 1 {
                t.name.clone()
            } else {
                format!("{} (duplicate {n})", t.name)
            };
            let members = t
                .members
                .iter()
                .map(|id| {
                    st.agent_by_id(id)
                        .map_or_else(|| id.clone(), |a| a.email.clone())
                })
                .collect();
            out.insert(key, members);
        }
        out
    }

    fn create_group_by_hand(&self, name: &str, members: &[&str]) {
        let mut st = self.st();
        let ids = Self::by_hand(&mut st, members);
        st.new_team(name, ids);
    }

    fn set_members_by_hand(&self, name: &str, members: &[&str]) {
        let mut st = self.st();
        let i = Self::team_named(&st, name);
        let ids = Self::by_hand(&mut st, members);
        st.teams[i].set(ids);
    }

    fn delete_group_by_hand(&self, name: &str) {
        let mut st = self.st();
        let i = Self::team_named(&st, name);
        st.teams.remove(i);
    }

    fn journal(&self) -> Option<&dyn Journal> {
        Some(&self.server)
    }

    fn membership_write(&self) -> Match {
        Match::new("PATCH", "/agents")
    }

    fn create_request(&self) -> Match {
        Match::new("POST", "/v1/teams")
    }
}

#[cfg(test)]
#[path = "teams_tests.rs"]
mod tests;
