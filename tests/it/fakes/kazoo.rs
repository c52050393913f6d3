//! A fake Kazoo Crossbar (v2) for one account: `PUT /v2/api_auth` token exchange, the
//! `groups` resource (list / create / read / replace / recursive-merge PATCH / delete) and
//! the `users` listing with `filter_*` and `page_size`/`start_key` paging.
//!
//! Written from the vendor's "Groups" document (`seeds/003_*`) and what Crossbar does where
//! that document is silent: every answer is an envelope `{"data", "status", "revision",
//! "request_id", "auth_token", ...}`, errors carry `"error"` (the code as a string) and a
//! `"message"`, a body must be `{"data": {...}}` (or empty), a PATCH merges recursively and a
//! `null` deletes a key.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

use super::Fake;
use super::http::{Fault, Handler, Journal, Match, Reply, Req, Server};
use super::keyed::{Keyed, Keys};

/// Crossbar's default listing page size when the client sends no `page_size`.
const DEFAULT_PAGE_SIZE: usize = 50;
/// The group schema's `name` bounds (string(1..128)).
const NAME_MAX: usize = 128;

/// One person in the account's user directory.
#[derive(Clone, Debug)]
struct User {
    id: String,
    email: String,
    first_name: String,
    last_name: String,
}

impl Listed for User {
    fn key(&self) -> &str {
        &self.id
    }
    /// The user's document, as read and as listed.
    fn full(&self) -> Value {
        json!({
            "id": self.id,
            "email": self.email,
            "username": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "priv_level": "user",
            "features": [],
        })
    }
    fn row(&self) -> Value {
        self.full()
    }
}

/// One group document: the public fields as the client last wrote them (no `id`).
#[derive(Clone, Debug)]
struct Group {
    id: String,
    /// CouchDB-style revision counter, bumped on every write.
    rev: u64,
    doc: Map<String, Value>,
}

impl Keys for Group {
    fn keys(&self) -> Vec<String> {
        vec![self.id.clone()]
    }
}

/// What a listing needs of its records: the key it is sorted and paged by, the full doc
/// that `filter_<field>` parameters look at, and the row it shows.
trait Listed {
    fn key(&self) -> &str;
    fn full(&self) -> Value;
    fn row(&self) -> Value;
}

impl Listed for Group {
    fn key(&self) -> &str {
        &self.id
    }
    fn full(&self) -> Value {
        let mut d = self.doc.clone();
        d.insert("id".into(), Value::String(self.id.clone()));
        Value::Object(d)
    }
    /// The summary a listing shows.
    fn row(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.doc.get("name").cloned().unwrap_or(Value::Null),
            "features": [],
            "endpoints": self.endpoints().map_or(0, Map::len),
        })
    }
}

impl Group {
    fn endpoints(&self) -> Option<&Map<String, Value>> {
        self.doc.get("endpoints").and_then(Value::as_object)
    }
    fn revision(&self) -> String {
        format!("{}-{}", self.rev, hash_hex(&(&self.id, self.rev)))
    }
    fn name(&self) -> &str {
        self.doc.get("name").and_then(Value::as_str).unwrap_or("")
    }
}

/// Everything the fake server knows, behind one lock.
struct State {
    /// Seed for ids and tokens, unique per fake instance.
    seed: u64,
    /// Counter feeding every generated id.
    next: u64,
    port: u16,
    account_id: String,
    api_key: String,
    /// Live tokens -> authenticated calls made with each so far.
    tokens: BTreeMap<String, usize>,
    /// Every token ever handed out (for `secrets()`).
    issued: Vec<String>,
    /// Successful `PUT /v2/api_auth` calls.
    logins: usize,
    /// `expire_tokens_after(n)`: a token answers 401 once it has served n calls.
    token_limit: Option<usize>,
    /// `conflict_next(n)`: group writes still to refuse with 409 datastore_conflict.
    conflicts: usize,
    page_size: usize,
    /// User directory, ordered by id (the listing and paging order).
    users: BTreeMap<String, User>,
    by_email: BTreeMap<String, String>,
    /// Groups in creation order, by id.
    groups: Keyed<Group>,
}

impl State {
    fn new_id(&mut self) -> String {
        self.next += 1;
        let n = self.next;
        format!(
            "{:016x}{:016x}",
            mix(self.seed ^ mix(n)),
            mix(self.seed.rotate_left(29) ^ mix(n ^ 0x5bd1_e995))
        )
    }

    fn add_user(&mut self, email: &str) -> String {
        if let Some(id) = self.by_email.get(email) {
            return id.clone();
        }
        let id = self.new_id();
        let local = email.split('@').next().unwrap_or(email);
        let first = local.split(['.', '_', '-', '+']).next().unwrap_or(local);
        let mut first_name: String = first.chars().take(1).flat_map(char::to_uppercase).collect();
        first_name.extend(first.chars().skip(1));
        let user = User {
            id: id.clone(),
            email: email.to_string(),
            first_name,
            last_name: "Agent".into(),
        };
        self.users.insert(id.clone(), user);
        self.by_email.insert(email.to_string(), id.clone());
        id
    }

    /// A by-hand member: `device:<id>` is a device endpoint, an email is a user (registered
    /// if new), anything else a raw user id.
    fn endpoint_for(&mut self, member: &str) -> (String, Value) {
        if let Some(dev) = member.strip_prefix("device:") {
            (dev.to_string(), json!({"type": "device"}))
        } else if member.contains('@') {
            (self.add_user(member), json!({"type": "user"}))
        } else {
            (member.to_string(), json!({"type": "user"}))
        }
    }

    fn endpoints_for(&mut self, members: &[&str]) -> Map<String, Value> {
        let mut eps = Map::new();
        for m in members {
            let (id, ep) = self.endpoint_for(m);
            eps.insert(id, ep);
        }
        eps
    }

    fn group_index(&self, id: &str) -> Option<usize> {
        self.groups.first(id)
    }

    /// The groups in listing order (by id), from `start` on.
    fn groups_by_id(&self, start: Option<String>) -> impl Iterator<Item = &Group> {
        let mut all: Vec<&Group> = self
            .groups
            .iter()
            .filter(|g| start.as_ref().is_none_or(|s| g.id >= *s))
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all.into_iter()
    }

    fn member_label(&self, id: &str, ep: &Value) -> String {
        if ep.get("type").and_then(Value::as_str) == Some("device") {
            return format!("device:{id}");
        }
        self.users
            .get(id)
            .map_or_else(|| id.to_string(), |u| u.email.clone())
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hash_hex<T: Hash>(v: &T) -> String {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    let a = h.finish();
    format!("{:016x}{:016x}", a, mix(a))
}

fn fresh_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    mix(nanos ^ mix(u64::from(std::process::id())) ^ mix(COUNTER.fetch_add(1, Ordering::Relaxed)))
}

/// The routes this fake serves (path after `/v2`).
enum Route {
    ApiAuth,
    Groups(String),
    Group(String, String),
    Users(String),
    User(String, String),
    UserGroups(String, String),
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let p = path.strip_suffix('/').unwrap_or(path);
        let segs: Vec<&str> = p.split('/').collect();
        let s = |x: &str| x.to_string();
        Some(match segs.as_slice() {
            ["", "v2", "api_auth"] => Route::ApiAuth,
            ["", "v2", "accounts", a, "groups"] => Route::Groups(s(a)),
            ["", "v2", "accounts", a, "groups", g] => Route::Group(s(a), s(g)),
            ["", "v2", "accounts", a, "users"] => Route::Users(s(a)),
            ["", "v2", "accounts", a, "users", u] => Route::User(s(a), s(u)),
            ["", "v2", "accounts", a, "users", u, "groups"] => Route::UserGroups(s(a), s(u)),
            _ => return None,
        })
    }
    fn allowed(&self) -> &'static [&'static str] {
        match self {
            Route::ApiAuth => &["PUT"],
            Route::Groups(_) => &["GET", "PUT"],
            Route::Group(..) => &["GET", "POST", "PATCH", "DELETE"],
            Route::Users(_) | Route::User(..) | Route::UserGroups(..) => &["GET"],
        }
    }
    fn account(&self) -> Option<&str> {
        match self {
            Route::ApiAuth => None,
            Route::Groups(a)
            | Route::Group(a, _)
            | Route::Users(a)
            | Route::User(a, _)
            | Route::UserGroups(a, _) => Some(a),
        }
    }
}

/// The Crossbar logic behind the fake's HTTP server.
pub struct KazooHandler {
    state: Mutex<State>,
}

/// Builds answers in Crossbar's envelope, echoing the caller's token as Crossbar does.
struct Answer<'a> {
    request_id: String,
    token: &'a str,
}

impl Answer<'_> {
    fn envelope(&self, status: &str, data: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("auth_token".into(), Value::String(self.token.to_string()));
        m.insert("data".into(), data);
        m.insert("node".into(), json!("fake-kazoo@127.0.0.1"));
        m.insert("request_id".into(), Value::String(self.request_id.clone()));
        m.insert("status".into(), json!(status));
        m.insert("version".into(), json!("4.3.142"));
        m
    }
    fn reply(&self, status: u16, body: Map<String, Value>) -> Reply {
        let mut r = Reply::json(status, Value::Object(body));
        r.headers
            .push(("x-request-id".into(), self.request_id.clone()));
        r
    }
    fn ok(&self, status: u16, data: Value, revision: String) -> Reply {
        let mut m = self.envelope("success", data);
        m.insert("revision".into(), Value::String(revision));
        self.reply(status, m)
    }
    fn ok_list(&self, data: Vec<Value>, paging: Map<String, Value>) -> Reply {
        let revision = hash_hex(&Value::Array(data.clone()).to_string());
        let mut m = self.envelope("success", Value::Array(data));
        m.insert("revision".into(), Value::String(revision));
        m.extend(paging);
        self.reply(200, m)
    }
    fn err(&self, status: u16, message: &str, data: Value) -> Reply {
        let mut m = self.envelope("error", data);
        m.insert("error".into(), Value::String(status.to_string()));
        m.insert("message".into(), json!(message));
        self.reply(status, m)
    }
    fn unauthorized(&self) -> Reply {
        // No token is echoed on a credential failure.
        let body = json!({
            "status": "error",
            "error": "401",
            "message": "invalid_credentials",
            "data": {},
            "request_id": self.request_id,
        });
        let mut r = Reply::json(401, body);
        r.headers
            .push(("x-request-id".into(), self.request_id.clone()));
        r
    }
    fn bad_identifier(&self, id: &str) -> Reply {
        self.err(
            404,
            "bad_identifier",
            json!({"message": "bad identifier", "cause": id}),
        )
    }
    fn invalid(&self, errors: Map<String, Value>) -> Reply {
        self.err(400, "validation error", Value::Object(errors))
    }
    fn conflict(&self) -> Reply {
        self.err(409, "datastore_conflict", json!({}))
    }
}

const REQUIRED: &str = "Field is required but missing";

/// Adds one Crossbar validation error: `{key: {kind: {"message", "target"?}}}`.
fn verror(errors: &mut Map<String, Value>, key: &str, kind: &str, message: String, target: Value) {
    let mut detail = json!({ "message": message });
    if !target.is_null() {
        detail["target"] = target;
    }
    let entry = errors.entry(key.to_string()).or_insert_with(|| json!({}));
    if let Some(o) = entry.as_object_mut() {
        o.insert(kind.into(), detail);
    }
}

fn type_error(errors: &mut Map<String, Value>, key: &str, ty: &str) {
    let msg = format!("Value did not match type(s): {ty}");
    verror(errors, key, "type", msg, json!(ty));
}

/// Request data from a `{"data": {...}}` body; an empty body means empty data.
fn req_data(req: &Req) -> Result<Map<String, Value>, (u16, &'static str, Value)> {
    if let Some(ct) = req.header("content-type") {
        let ct = ct.to_ascii_lowercase();
        if !ct.contains("json") {
            return Err((
                415,
                "unsupported_media_type",
                json!({"message": format!("content type {ct} is not accepted here")}),
            ));
        }
    }
    if req.body.trim().is_empty() {
        return Ok(Map::new());
    }
    let bad = |msg: String| {
        (
            400,
            "validation error",
            json!({"json": {"invalid": {"message": msg, "target": "body"}}}),
        )
    };
    let v: Value = serde_json::from_str(&req.body).map_err(|e| bad(e.to_string()))?;
    match v.get("data") {
        Some(Value::Object(d)) => Ok(d.clone()),
        Some(_) => Err(bad("data must be an object".into())),
        None => Err(bad("Invalid JSON request envelope: missing data".into())),
    }
}

/// Drops fields a client cannot set (`id`, `_rev`, `pvt_*`).
fn public_fields(mut d: Map<String, Value>) -> Map<String, Value> {
    d.retain(|k, _| k != "id" && !k.starts_with('_') && !k.starts_with("pvt_"));
    d
}

/// Crossbar's PATCH: merge objects recursively, a `null` removes the key.
fn merge_recursive(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                if let Some(Value::Object(t)) = target.get_mut(k) {
                    merge_recursive(t, p);
                } else {
                    let mut t = Map::new();
                    merge_recursive(&mut t, p);
                    target.insert(k.clone(), Value::Object(t));
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

/// Validates a whole group doc against the group schema, plus: every endpoint named in
/// `touched` whose type is `user` must be a user of the account.
fn validate_group(
    st: &State,
    doc: &Map<String, Value>,
    touched: &BTreeSet<String>,
) -> Result<(), Map<String, Value>> {
    let mut errors = Map::new();
    let e = &mut errors;
    match doc.get("name") {
        None => verror(e, "name", "required", REQUIRED.into(), Value::Null),
        Some(Value::String(n)) if n.is_empty() => {
            let msg = "String must be at least 1 characters";
            verror(e, "name", "minLength", msg.into(), json!(1));
        }
        Some(Value::String(n)) if n.chars().count() > NAME_MAX => {
            let msg = format!("String must not be more than {NAME_MAX} characters");
            verror(e, "name", "maxLength", msg, json!(NAME_MAX));
        }
        Some(Value::String(_)) => {}
        Some(_) => type_error(e, "name", "string"),
    }
    match doc.get("endpoints") {
        None => verror(e, "endpoints", "required", REQUIRED.into(), Value::Null),
        Some(Value::Object(eps)) => {
            for (id, ep) in eps {
                let key = format!("endpoints.{id}");
                let Some(o) = ep.as_object() else {
                    type_error(e, &key, "object");
                    continue;
                };
                let kind = o.get("type").and_then(Value::as_str);
                let type_key = format!("{key}.type");
                match kind {
                    Some("user" | "device") => {}
                    None => verror(e, &type_key, "required", REQUIRED.into(), Value::Null),
                    Some(_) => {
                        let msg = "Value not found in enumerated list of values";
                        verror(e, &type_key, "enum", msg.into(), json!(["user", "device"]));
                    }
                }
                if o.get("weight").is_some_and(|w| !w.is_u64()) {
                    type_error(e, &format!("{key}.weight"), "integer");
                }
                if kind == Some("user") && touched.contains(id) && !st.users.contains_key(id) {
                    let msg = format!("user {id} does not exist in this account");
                    verror(e, &key, "not_found", msg, json!(id));
                }
            }
        }
        Some(_) => type_error(e, "endpoints", "object"),
    }
    let flags_ok = |f: &Value| f.as_array().is_some_and(|a| a.iter().all(Value::is_string));
    if doc.get("flags").is_some_and(|f| !flags_ok(f)) {
        type_error(e, "flags", "array");
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Endpoint ids a request body names with a non-null value.
fn touched_endpoints(data: &Map<String, Value>) -> BTreeSet<String> {
    data.get("endpoints")
        .and_then(Value::as_object)
        .map(|eps| {
            eps.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// One page of a listing and the paging keys for the envelope.
struct Page {
    rows: Vec<Value>,
    paging: Map<String, Value>,
}

/// Applies `filter_<field>=value` (exact match on the full doc) and Crossbar paging
/// (`page_size`, `start_key`, `paginate=false`) to the records `from(start_key)` gives:
/// sorted by key, those with a key at or after `start_key` (every one for None). Only the
/// rows of the page are built, and the full docs only when a filter asks.
fn list_page<'a, T: Listed + 'a, I: Iterator<Item = &'a T>>(
    req: &Req,
    default_size: usize,
    from: impl FnOnce(Option<String>) -> I,
) -> Result<Page, Map<String, Value>> {
    let filters: Vec<(String, String)> = req
        .query
        .split('&')
        .filter_map(|kv| {
            let (k, _) = kv.split_once('=').unwrap_or((kv, ""));
            let k = super::http::percent_decode(k);
            let field = k.strip_prefix("filter_")?.to_string();
            Some((field.clone(), req.query_param(&k).unwrap_or_default()))
        })
        .collect();
    let keep = |t: &&T| {
        if filters.is_empty() {
            return true;
        }
        let doc = t.full();
        filters.iter().all(|(field, want)| match doc.get(field) {
            Some(Value::String(s)) => s == want,
            Some(Value::Null) | None => false,
            Some(other) => serde_json::from_str::<Value>(want).is_ok_and(|w| w == *other),
        })
    };
    let mut paging = Map::new();
    if req.query_param("paginate").as_deref() == Some("false") {
        return Ok(Page {
            rows: from(None).filter(keep).map(T::row).collect(),
            paging,
        });
    }
    let size = match req.query_param("page_size") {
        None => default_size,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                let mut e = Map::new();
                let msg = "page_size must be a positive integer".to_string();
                verror(&mut e, "page_size", "minimum", msg, json!(1));
                return Err(e);
            }
        },
    };
    let start = req.query_param("start_key");
    if let Some(s) = &start {
        paging.insert("start_key".into(), Value::String(s.clone()));
    }
    let mut items = from(start).filter(keep);
    let rows: Vec<Value> = items.by_ref().take(size).map(T::row).collect();
    let next = items.next().map(|t| t.key().to_string());
    paging.insert("page_size".into(), json!(rows.len()));
    if let Some(n) = next {
        paging.insert("next_start_key".into(), Value::String(n));
    }
    Ok(Page { rows, paging })
}

impl KazooHandler {
    fn new() -> KazooHandler {
        let mut st = State {
            seed: fresh_seed(),
            next: 0,
            port: 0,
            account_id: String::new(),
            api_key: String::new(),
            tokens: BTreeMap::new(),
            issued: Vec::new(),
            logins: 0,
            token_limit: None,
            conflicts: 0,
            page_size: DEFAULT_PAGE_SIZE,
            users: BTreeMap::new(),
            by_email: BTreeMap::new(),
            groups: Keyed::new(),
        };
        st.account_id = st.new_id();
        KazooHandler {
            state: Mutex::new(st),
        }
    }

    fn api_auth(&self, st: &mut State, req: &Req, a: &Answer) -> Reply {
        let data = match req_data(req) {
            Ok(d) => d,
            Err((code, msg, data)) => return a.err(code, msg, data),
        };
        let key = match data.get("api_key") {
            Some(Value::String(k)) => k.clone(),
            None => {
                let mut e = Map::new();
                verror(&mut e, "api_key", "required", REQUIRED.into(), Value::Null);
                return a.invalid(e);
            }
            Some(_) => return a.unauthorized(),
        };
        if key != st.api_key {
            return a.unauthorized();
        }
        let nonce = st.new_id();
        let token = format!("kz-auth-{}-{}-tok-{nonce}", st.port, st.issued.len() + 1);
        st.tokens.insert(token.clone(), 0);
        st.issued.push(token.clone());
        st.logins += 1;
        let a = Answer {
            request_id: a.request_id.clone(),
            token: &token,
        };
        let mut body = a.envelope(
            "success",
            json!({
                "account_id": st.account_id,
                "account_name": "Fake Kazoo Contact Center",
                "apps": [],
                "is_reseller": false,
                "language": "en-us",
                "reseller_id": st.account_id,
            }),
        );
        body.insert("revision".into(), json!("automatic"));
        a.reply(201, body)
    }

    fn groups(&self, st: &mut State, req: &Req, a: &Answer, id: Option<&str>) -> Reply {
        let Some(id) = id else {
            return match req.method.as_str() {
                "GET" => match list_page(req, st.page_size, |start| st.groups_by_id(start)) {
                    Ok(page) => a.ok_list(page.rows, page.paging),
                    Err(e) => a.invalid(e),
                },
                _ => self.create_group(st, req, a),
            };
        };
        let Some(ix) = st.group_index(id) else {
            return a.bad_identifier(id);
        };
        if req.method == "GET" {
            let g = &st.groups[ix];
            return a.ok(200, g.full(), g.revision());
        }
        // A write to an existing group.
        let new_doc = match req.method.as_str() {
            "DELETE" => None,
            m => {
                let data = match req_data(req) {
                    Ok(d) => public_fields(d),
                    Err((code, msg, data)) => return a.err(code, msg, data),
                };
                let touched = touched_endpoints(&data);
                let doc = if m == "PATCH" {
                    let mut doc = st.groups[ix].doc.clone();
                    merge_recursive(&mut doc, &data);
                    doc
                } else {
                    data
                };
                if let Err(e) = validate_group(st, &doc, &touched) {
                    return a.invalid(e);
                }
                Some(doc)
            }
        };
        if let Some(want) = req.header("if-match")
            && want.trim_matches('"') != st.groups[ix].revision()
        {
            return a.conflict();
        }
        if st.conflicts > 0 {
            st.conflicts -= 1;
            return a.conflict();
        }
        match new_doc {
            None => {
                let g = st.groups.remove(ix);
                a.ok(
                    200,
                    g.full(),
                    format!("{}-{}", g.rev + 1, hash_hex(&(&g.id, "deleted"))),
                )
            }
            Some(doc) => {
                let g = &mut st.groups[ix];
                g.doc = doc;
                g.rev += 1;
                a.ok(200, g.full(), g.revision())
            }
        }
    }

    fn create_group(&self, st: &mut State, req: &Req, a: &Answer) -> Reply {
        let data = match req_data(req) {
            Ok(d) => public_fields(d),
            Err((code, msg, data)) => return a.err(code, msg, data),
        };
        let touched = touched_endpoints(&data);
        if let Err(e) = validate_group(st, &data, &touched) {
            return a.invalid(e);
        }
        let g = Group {
            id: st.new_id(),
            rev: 1,
            doc: data,
        };
        let reply = a.ok(201, g.full(), g.revision());
        st.groups.push(g);
        reply
    }

    fn users(&self, st: &State, req: &Req, a: &Answer) -> Reply {
        // `filter_email` is an exact match on the email: at most the one user the index
        // names can pass it (list_page still applies every filter).
        let email = req.query_param("filter_email");
        let from = |start: Option<String>| -> Box<dyn Iterator<Item = &User> + '_> {
            if let Some(e) = &email {
                let u = st.by_email.get(e).and_then(|id| st.users.get(id));
                let from_start = move |u: &&User| start.as_ref().is_none_or(|s| u.id >= *s);
                return Box::new(u.filter(from_start).into_iter());
            }
            let lower = start.map_or(Bound::Unbounded, Bound::Included);
            Box::new(
                st.users
                    .range::<String, _>((lower, Bound::Unbounded))
                    .map(|(_, u)| u),
            )
        };
        match list_page(req, st.page_size, from) {
            Ok(page) => a.ok_list(page.rows, page.paging),
            Err(e) => a.invalid(e),
        }
    }

    fn user_groups(&self, st: &State, req: &Req, a: &Answer, user: &str) -> Reply {
        if !st.users.contains_key(user) {
            return a.bad_identifier(user);
        }
        let member = |g: &&Group| {
            g.endpoints()
                .and_then(|e| e.get(user))
                .and_then(|e| e.get("type"))
                .and_then(Value::as_str)
                == Some("user")
        };
        let from = |start| st.groups_by_id(start).filter(member);
        match list_page(req, st.page_size, from) {
            Ok(page) => a.ok_list(page.rows, page.paging),
            Err(e) => a.invalid(e),
        }
    }
}

impl Handler for KazooHandler {
    fn handle(&self, req: &Req) -> Reply {
        let mut st = self.state.lock().unwrap();
        let request_id = st.new_id();
        let anon = Answer {
            request_id: request_id.clone(),
            token: "",
        };
        let Some(route) = Route::parse(&req.path) else {
            return anon.err(404, "not_found", json!({"message": "not found"}));
        };
        if !route.allowed().contains(&req.method.as_str()) {
            let mut r = anon.err(
                405,
                "method_not_allowed",
                json!({"message": format!("{} is not allowed here", req.method)}),
            );
            r.headers.push(("allow".into(), route.allowed().join(", ")));
            return r;
        }
        if let Route::ApiAuth = route {
            return self.api_auth(&mut st, req, &anon);
        }

        // Every other request needs a live X-Auth-Token.
        let Some(token) = req.header("x-auth-token").map(str::to_string) else {
            return anon.unauthorized();
        };
        let limit = st.token_limit;
        match st.tokens.get_mut(&token) {
            None => return anon.unauthorized(),
            Some(used) if limit.is_some_and(|n| *used >= n) => {
                st.tokens.remove(&token);
                return anon.unauthorized();
            }
            Some(used) => *used += 1,
        }
        let a = Answer {
            request_id,
            token: &token,
        };
        if route.account() != Some(st.account_id.as_str()) {
            return a.err(
                403,
                "forbidden",
                json!({"message": "access denied to this account"}),
            );
        }
        match &route {
            Route::Groups(_) => self.groups(&mut st, req, &a, None),
            Route::Group(_, id) => self.groups(&mut st, req, &a, Some(id)),
            Route::Users(_) => self.users(&st, req, &a),
            Route::User(_, id) => match st.users.get(id) {
                Some(u) => a.ok(200, u.full(), format!("1-{}", hash_hex(id))),
                None => a.bad_identifier(id),
            },
            Route::UserGroups(_, id) => self.user_groups(&st, req, &a, id),
            Route::ApiAuth => unreachable!("handled above"),
        }
    }
}

/// A fake Kazoo Crossbar account behind real HTTP on 127.0.0.1.
pub struct FakeKazoo {
    server: Server<KazooHandler>,
    /// Whether the source file must carry each person's Kazoo user id.
    ids_in_source: bool,
}

impl FakeKazoo {
    /// Starts a fake where rostersync resolves users itself (`filter_email` lookups).
    pub fn start() -> Arc<FakeKazoo> {
        Self::start_inner(false)
    }

    /// Starts a fake whose `source_id()` gives each known user's id, so the source file
    /// carries `people[].ids.<target>` and no lookup is needed.
    pub fn start_with_ids_in_source() -> Arc<FakeKazoo> {
        Self::start_inner(true)
    }

    fn start_inner(ids_in_source: bool) -> Arc<FakeKazoo> {
        let server = Server::start(KazooHandler::new());
        {
            let mut st = server.handler.state.lock().unwrap();
            st.port = server.addr.port();
            // Kazoo API keys are 64 characters; keep the marker greppable.
            let mut key = format!("s3cret-kazoo-{}-Zq9-", st.port);
            let pad = st.new_id() + &st.new_id();
            key.push_str(&pad[..64usize.saturating_sub(key.len()).min(pad.len())]);
            st.api_key = key;
        }
        Arc::new(FakeKazoo {
            server,
            ids_in_source,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.server.handler.state.lock().unwrap()
    }

    /// `http://127.0.0.1:PORT` (rostersync appends `/v2/...`).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }
    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }
    pub fn account_id(&self) -> String {
        self.state().account_id.clone()
    }
    pub fn api_key(&self) -> String {
        self.state().api_key.clone()
    }
    fn env_name(&self) -> String {
        format!("FAKE_KAZOO_API_KEY_{}", self.port())
    }

    /// From now on a token answers 401 once it has served `n` authenticated calls
    /// (counted from its issue), so the client must log in again.
    pub fn expire_tokens_after(&self, n: usize) {
        self.state().token_limit = Some(n);
    }
    /// Invalidates every token issued so far (the next call with one gets 401).
    pub fn revoke_tokens(&self) {
        self.state().tokens.clear();
    }
    /// Successful `PUT /v2/api_auth` calls so far.
    pub fn logins(&self) -> usize {
        self.state().logins
    }
    /// The next `n` writes (POST/PATCH/DELETE) to an existing group answer 409
    /// `datastore_conflict` without applying. Creates are not affected.
    pub fn conflict_next(&self, n: usize) {
        self.state().conflicts = n;
    }
    /// Drops every armed http.rs fault.
    pub fn clear_faults(&self) {
        self.server.clear_faults();
    }
    /// Listing page size used when the client sends no `page_size` (Crossbar's is 50).
    pub fn set_default_page_size(&self, n: usize) {
        self.state().page_size = n.max(1);
    }
    /// Adds a `device` endpoint to the (first) group called `group`, as an operator would.
    pub fn add_device_by_hand(&self, group: &str, device_id: &str) {
        let mut st = self.state();
        let g = st
            .groups
            .iter_mut()
            .find(|g| g.name() == group)
            .unwrap_or_else(|| panic!("fake kazoo: no group named {group:?}"));
        let eps = g.doc.entry("endpoints").or_insert_with(|| json!({}));
        if let Some(eps) = eps.as_object_mut() {
            eps.insert(
                device_id.to_string(),
                json!({"type": "device", "weight": 1}),
            );
        }
        g.rev += 1;
    }
    /// Group names in creation order, duplicates included (to spot a duplicate create).
    pub fn group_names(&self) -> Vec<String> {
        self.state()
            .groups
            .iter()
            .map(|g| g.name().to_string())
            .collect()
    }
    /// The id of the first group called `name`.
    pub fn group_id(&self, name: &str) -> Option<String> {
        self.state()
            .groups
            .iter()
            .find(|g| g.name() == name)
            .map(|g| g.id.clone())
    }
    /// The full stored document (with `id`) of the first group called `name`.
    pub fn group_doc(&self, name: &str) -> Option<Value> {
        self.state()
            .groups
            .iter()
            .find(|g| g.name() == name)
            .map(Group::full)
    }
}

impl Fake for FakeKazoo {
    fn clear_faults(&self) {
        FakeKazoo::clear_faults(self)
    }

    fn all_group_names(&self) -> Vec<String> {
        self.group_names()
    }

    fn kind(&self) -> &'static str {
        "kazoo"
    }

    fn target_toml(&self, name: &str) -> String {
        format!(
            "[[target]]\nname = \"{name}\"\nkind = \"kazoo\"\nbase_url = \"{}\"\n\
             account_id = \"{}\"\napi_key_env = \"{}\"\ntimeout = \"2s\"\n\
             max_retries = 3\nretry_base = \"20ms\"\n",
            self.base_url(),
            self.account_id(),
            self.env_name()
        )
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![(self.env_name(), self.api_key())]
    }

    fn secrets(&self) -> Vec<String> {
        let st = self.state();
        let mut s = vec![st.api_key.clone()];
        s.extend(st.issued.iter().cloned());
        s
    }

    fn add_user(&self, email: &str) -> String {
        self.state().add_user(email)
    }

    fn source_id(&self, email: &str) -> Option<String> {
        if !self.ids_in_source {
            return None;
        }
        self.state().by_email.get(email).cloned()
    }

    fn groups(&self) -> BTreeMap<String, BTreeSet<String>> {
        let st = self.state();
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for g in &st.groups {
            let members = out.entry(g.name().to_string()).or_default();
            for (id, ep) in g.endpoints().into_iter().flatten() {
                members.insert(st.member_label(id, ep));
            }
        }
        out
    }

    fn create_group_by_hand(&self, name: &str, members: &[&str]) {
        let mut st = self.state();
        let endpoints = st.endpoints_for(members);
        let mut doc = Map::new();
        doc.insert("name".into(), json!(name));
        doc.insert("endpoints".into(), Value::Object(endpoints));
        doc.insert("music_on_hold".into(), json!({}));
        let id = st.new_id();
        st.groups.push(Group { id, rev: 1, doc });
    }

    fn set_members_by_hand(&self, name: &str, members: &[&str]) {
        let mut st = self.state();
        let endpoints = st.endpoints_for(members);
        let g = st
            .groups
            .iter_mut()
            .find(|g| g.name() == name)
            .unwrap_or_else(|| panic!("fake kazoo: no group named {name:?}"));
        g.doc.insert("endpoints".into(), Value::Object(endpoints));
        g.rev += 1;
    }

    fn delete_group_by_hand(&self, name: &str) {
        self.state().groups.retain(|g| g.name() != name);
    }

    fn journal(&self) -> Option<&dyn Journal> {
        Some(&self.server)
    }

    fn membership_write(&self) -> Match {
        Match::new("PATCH", "/groups/")
    }

    fn create_request(&self) -> Match {
        Match::new("PUT", "/groups")
    }
}

#[cfg(test)]
#[path = "kazoo_tests.rs"]
mod tests;
