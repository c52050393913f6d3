//! A standard RFC 7644 SCIM target (`kind = "scim"`, `flavor = "rfc7644"`) that nobody here
//! wrote: the `scim2-server` program from PyPI, run as a child process on 127.0.0.1, behind
//! a logging and fault-injecting proxy built on `http::Server`.
//!
//! rostersync talks to the proxy (`base_url` = `http://127.0.0.1:PROXY/v2`); the proxy
//! forwards every request, unchanged (the `Host` header too, so the `Location`s and
//! `meta.location`s the server builds name the proxy), to the real server over a blocking
//! `TcpStream` with `Connection: close`. `requests()` and `inject()` therefore work as for
//! the other fakes. The knobs (`add_user`, `groups`, `*_by_hand`) talk to the real server
//! directly, so they are not logged and no fault applies to them.
//!
//! The program comes from `bash tests/run.sh`, which creates `target/scim-venv` and exports
//! `SCIM2_SERVER_BIN`. What scim2-server 0.8.3 does (tried by hand, see the tests below):
//! - Serves `/v2/...` (the root answers too); bearer token required on every request, else
//!   401 with a SCIM Error body and `WWW-Authenticate: Bearer realm="SCIM"`.
//! - Answers HTTP/1.0 with `Content-Length` and closes the connection; content type
//!   `application/scim+json`; accepts `application/json` bodies too.
//! - `POST /Users` -> 201; a second user with the same `userName` -> 409 `uniqueness`.
//!   `filter=userName eq "E"` matches case-insensitively.
//! - `POST /Groups` -> 201 with `members: [{"value": id}]` as sent; unknown member ids are
//!   accepted (no referential check); duplicate `displayName`s are accepted; `owners` is
//!   refused (400 invalidSyntax "Extra inputs are not permitted: owners").
//! - `GET /Groups?filter=displayName eq "N"` works, case-insensitively, with `\"` escapes.
//!   Listing order is by id (random hex), not by creation. Without `count`, up to 1000.
//! - `PATCH` answers 204 with no body (200 with the resource when `attributes` is given);
//!   `add` of a member already there is a no-op; `remove` with path
//!   `members[value eq "id"]` (also `... or value eq "id2"`) of an absent member is a no-op;
//!   `remove` with path `members` and a value list is a 400 ("a remove operation carries no
//!   value"), and `remove` with path `members` and no value empties the group. `replace`
//!   of `displayName` works with a path or with a value object. A PATCH is atomic.
//!   `schemas` may be missing; `Operations: []` is a 400.
//! - Unknown id -> 404 SCIM Error `"Group '<id>' not found"`; `DELETE` -> 204.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Fake;
use super::http::{Fault, Handler, Journal, Match, Reply, Req, Server, scim_error};

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// Path prefix the server serves.
pub const PREFIX: &str = "/v2";

/// One HTTP answer read off the wire.
#[derive(Clone, Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Headers that belong to one connection and are never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "expect",
];

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Sends one request over a fresh blocking connection (`Connection: close`) and reads the
/// whole answer. `path_q` is the path with its query string.
pub fn http_call(
    addr: SocketAddr,
    method: &str,
    path_q: &str,
    headers: &[(String, String)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<RawResponse> {
    let mut s = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(5)))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut head = format!("{method} {path_q} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers.iter().filter(|(k, _)| !is_hop_by_hop(k)) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// Parses a complete HTTP/1.x response (the connection was closed after it).
pub fn parse_response(raw: &[u8]) -> std::io::Result<RawResponse> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers in the upstream answer"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v)
    };
    let rest = &raw[end + 4..];
    let body =
        if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            dechunk(rest)?
        } else if let Some(n) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
            rest[..n.min(rest.len())].to_vec()
        } else {
            rest.to_vec()
        };
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

/// Decodes a chunked body (trailers ignored).
pub fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    // Each round consumes at least one line, so this ends; bound it anyway.
    for _ in 0..=data.len() {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("truncated chunk size"))?;
        let size_line = String::from_utf8_lossy(&data[..eol]);
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| bad(&format!("bad chunk size {size_hex:?}")))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err(bad("truncated chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
    Err(bad("too many chunks"))
}

/// Percent-encodes a query value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A SCIM string literal for a filter: quoted, with `"` and `\` escaped.
pub fn scim_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Behaviours other SCIM servers have (RFC 7644 allows each), played by the proxy in
/// front of the real server: each switch rewrites a request before scim2-server sees it,
/// or its answer after, so what the server holds stays the truth `groups()` reads.
#[derive(Clone, Debug, Default)]
pub struct Quirks {
    /// `POST /Groups` keeps no members (RFC 7644 3.3: a server may ignore POSTed
    /// content): they are taken out before the server sees them, and its 201 shows what
    /// it kept (no `members`).
    pub ignores_posted_members: bool,
    /// A PATCH with a filtered removal path (`members[value eq "x"]`) is answered 501 and
    /// nothing of it applies; the value form (`path: members` with a value list) works
    /// (turned into the filter form the real server takes).
    pub filter_removal_501: bool,
    /// With `filter_removal_501`: the value form empties the whole list (a server that
    /// reads `remove` of `members` as "remove them all" whatever the value).
    pub value_removal_empties: bool,
    /// A PATCH that replaces `displayName` is answered 501 and nothing of it applies.
    pub rename_501: bool,
    /// A PATCH that replaces `displayName` applies without the rename, and answers 200
    /// with the group (showing the name it kept).
    pub ignores_rename: bool,
    /// Error answers carry `status` as a JSON number (`404`, not `"404"`).
    pub numeric_error_status: bool,
    /// A 401 comes with an empty body.
    pub empty_401: bool,
    /// Answers to writes (POST and PATCH) leave `members` out.
    pub no_members_in_answers: bool,
    /// A successful PATCH answers 200 with the group (read after it) instead of 204.
    pub patch_shows_group: bool,
    /// The next this many PATCHes that add two or more members apply all but the last
    /// added, and answer 200 with the group as it then is (fewer members than sent).
    pub patch_drops_one: usize,
    /// A filtered `GET /Groups` is answered this many resources at a time (whatever
    /// `count` asks), in displayName byte order, with the true `totalResults`.
    pub filter_page: Option<usize>,
    /// With `filter_page`: `startIndex` is ignored (every page is the first).
    pub filter_ignores_start: bool,
    /// `/ServiceProviderConfig` is a 404.
    pub no_spc: bool,
}

/// The proxy's vendor logic: forward to the real server and hand its answer back,
/// through the `Quirks` switched on.
pub struct Scim2Proxy {
    pub upstream: SocketAddr,
    pub quirks: Mutex<Quirks>,
}

/// Whether a PATCH operation replaces `displayName` (by path or in a value object).
fn renames(op: &Value) -> bool {
    let kind = op["op"].as_str().unwrap_or("").to_ascii_lowercase();
    let path = op["path"].as_str().unwrap_or("");
    kind == "replace"
        && (path.eq_ignore_ascii_case("displayName")
            || (path.is_empty() && op["value"].get("displayName").is_some()))
}

fn is_remove(op: &Value) -> bool {
    op["op"]
        .as_str()
        .unwrap_or("")
        .eq_ignore_ascii_case("remove")
}

impl Scim2Proxy {
    fn forward(&self, req: &Req, path_q: &str, body: &str) -> Reply {
        let answer = http_call(
            self.upstream,
            &req.method,
            path_q,
            &req.headers,
            body.as_bytes(),
            Duration::from_secs(30),
        );
        match answer {
            Ok(r) => Reply {
                status: r.status,
                headers: r
                    .headers
                    .into_iter()
                    .filter(|(k, _)| !is_hop_by_hop(k))
                    .collect(),
                body: String::from_utf8_lossy(&r.body).into_owned(),
            },
            Err(e) => scim_error(
                502,
                None,
                &format!("fake proxy: scim2-server did not answer: {e}"),
            ),
        }
    }

    /// A PATCH body as the switches make it; Err is the answer instead of forwarding.
    fn patch_body(&self, q: &mut Quirks, body: &str) -> Result<(String, bool), Reply> {
        let Ok(mut v) = serde_json::from_str::<Value>(body) else {
            return Ok((body.to_string(), false));
        };
        let Some(ops) = v["Operations"].as_array().cloned() else {
            return Ok((body.to_string(), false));
        };
        if q.rename_501 && ops.iter().any(renames) {
            return Err(scim_error(501, None, "renaming a group is not implemented"));
        }
        let filtered =
            |op: &Value| is_remove(op) && op["path"].as_str().is_some_and(|p| p.contains('['));
        if q.filter_removal_501 && ops.iter().any(filtered) {
            return Err(scim_error(
                501,
                None,
                "filtered remove paths are not implemented",
            ));
        }
        let mut out = Vec::new();
        let mut dropped = false;
        let mut kept_name = false;
        for mut op in ops {
            if q.ignores_rename && renames(&op) {
                kept_name = true;
                continue;
            }
            let path = op["path"].as_str().unwrap_or("").to_string();
            if q.filter_removal_501 && is_remove(&op) && path == "members" {
                let ids: Vec<String> = op["value"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|m| m["value"].as_str().map(scim_quote))
                            .collect()
                    })
                    .unwrap_or_default();
                op = if q.value_removal_empties || ids.is_empty() {
                    json!({"op": "remove", "path": "members"})
                } else {
                    let f: Vec<String> = ids.iter().map(|i| format!("value eq {i}")).collect();
                    json!({"op": "remove", "path": format!("members[{}]", f.join(" or "))})
                };
            }
            let adds =
                op["op"].as_str().unwrap_or("").eq_ignore_ascii_case("add") && path == "members";
            if q.patch_drops_one > 0
                && !dropped
                && adds
                && op["value"].as_array().is_some_and(|a| a.len() >= 2)
                && let Some(a) = op["value"].as_array_mut()
            {
                a.pop();
                dropped = true;
            }
            out.push(op);
        }
        if dropped {
            q.patch_drops_one -= 1;
        }
        if out.is_empty() {
            // Nothing left to apply: no call, only the group as it is.
            return Ok((String::new(), true));
        }
        v["Operations"] = Value::Array(out);
        Ok((v.to_string(), dropped || kept_name))
    }

    /// A filtered group listing served a page of `size` at a time from the whole answer.
    fn filter_paged(&self, req: &Req, size: usize, ignore_start: bool) -> Reply {
        let filter = req.query_param("filter").unwrap_or_default();
        let start = req
            .query_param("startIndex")
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|_| !ignore_start)
            .unwrap_or(1)
            .max(1);
        let path_q = format!(
            "{}?filter={}&startIndex=1&count=1000",
            req.path,
            url_encode(&filter)
        );
        let mut rep = self.forward(req, &path_q, "");
        let Ok(mut v) = serde_json::from_str::<Value>(&rep.body) else {
            return rep;
        };
        let mut all = v["Resources"].as_array().cloned().unwrap_or_default();
        all.sort_by(|a, b| {
            let n = |g: &Value| g["displayName"].as_str().unwrap_or("").to_string();
            n(a).cmp(&n(b))
        });
        let page: Vec<Value> = all.iter().skip(start - 1).take(size).cloned().collect();
        v["totalResults"] = json!(all.len());
        v["startIndex"] = json!(start);
        v["itemsPerPage"] = json!(page.len());
        v["Resources"] = Value::Array(page);
        rep.body = v.to_string();
        rep
    }

    fn handle_quirky(&self, req: &Req, q: &mut Quirks) -> Reply {
        let path_q = if req.query.is_empty() {
            req.path.clone()
        } else {
            format!("{}?{}", req.path, req.query)
        };
        let groups = req.path.trim_end_matches('/').ends_with("/Groups");
        let one_group = req.path.contains("/Groups/");
        if q.no_spc && req.path.ends_with("/ServiceProviderConfig") {
            return scim_error(404, None, "no such endpoint");
        }
        if let Some(size) = q.filter_page
            && req.method == "GET"
            && groups
            && req.query_param("filter").is_some()
        {
            return self.filter_paged(req, size, q.filter_ignores_start);
        }
        let mut body = req.body.clone();
        let mut show_group = false;
        if req.method == "POST"
            && groups
            && q.ignores_posted_members
            && let Ok(mut v) = serde_json::from_str::<Value>(&body)
            && let Some(o) = v.as_object_mut()
        {
            o.remove("members");
            body = v.to_string();
        }
        if req.method == "PATCH" && one_group {
            match self.patch_body(q, &body) {
                Ok((b, dropped)) => {
                    body = b;
                    show_group = dropped || q.patch_shows_group;
                }
                Err(rep) => return rep,
            }
        }
        let mut rep = if req.method == "PATCH" && one_group && body.is_empty() {
            Reply::empty(204)
        } else {
            self.forward(req, &path_q, &body)
        };
        if show_group && rep.status == 204 {
            let read = Req {
                method: "GET".into(),
                body: String::new(),
                ..req.clone()
            };
            let got = self.forward(&read, &req.path, "");
            if got.status == 200 {
                rep = got;
            }
        }
        let write = matches!(req.method.as_str(), "POST" | "PATCH");
        if q.no_members_in_answers
            && write
            && (200..300).contains(&rep.status)
            && let Ok(mut v) = serde_json::from_str::<Value>(&rep.body)
            && let Some(o) = v.as_object_mut()
        {
            o.remove("members");
            rep.body = v.to_string();
        }
        if rep.status == 401 && q.empty_401 {
            rep.body.clear();
            rep.headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
        }
        if rep.status >= 400
            && q.numeric_error_status
            && let Ok(mut v) = serde_json::from_str::<Value>(&rep.body)
            && v.get("status").is_some()
        {
            v["status"] = json!(rep.status);
            rep.body = v.to_string();
        }
        rep
    }
}

impl Handler for Scim2Proxy {
    fn handle(&self, req: &Req) -> Reply {
        let mut q = self.quirks.lock().unwrap();
        self.handle_quirky(req, &mut q)
    }
}

/// Where the scim2-server program is: `SCIM2_SERVER_BIN`, else the venv that
/// `tests/run.sh` makes under the crate's `target/`.
pub fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SCIM2_SERVER_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "SCIM2_SERVER_BIN={} does not exist: run `bash tests/run.sh` (it installs \
             scim2-server into target/scim-venv)",
            p.display()
        );
        return p;
    }
    let candidates = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/scim-venv/bin/scim2-server"),
        PathBuf::from("/work/main/target/scim-venv/bin/scim2-server"),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "scim2-server not found (looked at {}): run the suite with `bash tests/run.sh`, \
             which creates target/scim-venv and pip-installs scim2-server, or set \
             SCIM2_SERVER_BIN",
                candidates[0].display()
            )
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A running scim2-server behind the fault-injecting proxy.
pub struct Scim2Server {
    /// The proxy rostersync talks to.
    pub proxy: Server<Scim2Proxy>,
    /// The real server's address (knobs talk to it directly).
    pub upstream: SocketAddr,
    token: String,
    child: Mutex<Child>,
    log_path: PathBuf,
    /// email (lowercase) -> user id, for the users this fake created or looked up.
    users: Mutex<BTreeMap<String, String>>,
}

impl Scim2Server {
    /// Starts scim2-server on a free port (retrying if another process took the port),
    /// waits until it answers (at most 30 s), and puts the proxy in front of it.
    pub fn start() -> Arc<Scim2Server> {
        Scim2Server::start_with(Quirks::default())
    }

    /// `start`, with these behaviours of other servers switched on (see `Quirks`).
    pub fn start_with(quirks: Quirks) -> Arc<Scim2Server> {
        let bin = server_bin();
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let token = format!("s3cret-scim2-{port}-Vw4Rt9");
            let log_path = std::env::temp_dir()
                .join(format!("scim2-server-{}-{port}.log", std::process::id()));
            let log = std::fs::File::create(&log_path).expect("create scim2-server log file");
            let mut child = Command::new(&bin)
                .args(["--hostname", "127.0.0.1", "--port", &port.to_string()])
                .args(["--bearer-token", &token])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let upstream: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut ready = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                let probe = http_call(
                    upstream,
                    "GET",
                    "/v2/ServiceProviderConfig",
                    &[("Authorization".into(), format!("Bearer {token}"))],
                    b"",
                    Duration::from_secs(2),
                );
                if probe.is_ok_and(|r| r.status == 200) {
                    ready = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if ready {
                let proxy = Server::start(Scim2Proxy {
                    upstream,
                    quirks: Mutex::new(quirks.clone()),
                });
                return Arc::new(Scim2Server {
                    proxy,
                    upstream,
                    token,
                    child: Mutex::new(child),
                    log_path,
                    users: Mutex::new(BTreeMap::new()),
                });
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let _ = std::fs::remove_file(&log_path);
        }
        panic!(
            "scim2-server ({}) did not start in 3 tries; its last output:\n{last_log}",
            bin.display()
        );
    }

    pub fn port(&self) -> u16 {
        self.proxy.addr.port()
    }
    /// The base URL rostersync uses (through the proxy).
    pub fn base_url(&self) -> String {
        format!("{}{PREFIX}", self.proxy.base_url())
    }
    /// The real server's base URL (bypasses the log and the faults).
    pub fn upstream_url(&self) -> String {
        format!("http://{}{PREFIX}", self.upstream)
    }
    pub fn token(&self) -> String {
        self.token.clone()
    }
    fn token_env(&self) -> String {
        format!("FAKE_SCIM2_TOKEN_{}", self.port())
    }
    pub fn clear_faults(&self) {
        self.proxy.clear_faults();
    }
    /// Changes the switched-on behaviours.
    pub fn quirks(&self, f: impl FnOnce(&mut Quirks)) {
        f(&mut self.proxy.handler.quirks.lock().unwrap());
    }

    /// Calls the real server directly, as an administrator; panics if it does not answer.
    pub fn api(&self, method: &str, path_q: &str, body: Option<&Value>) -> (u16, Value) {
        let mut headers = vec![(
            "Authorization".to_string(),
            format!("Bearer {}", self.token),
        )];
        let body = body.map(Value::to_string).unwrap_or_default();
        if !body.is_empty() {
            headers.push(("Content-Type".into(), "application/scim+json".into()));
        }
        let r = http_call(
            self.upstream,
            method,
            &format!("{PREFIX}{path_q}"),
            &headers,
            body.as_bytes(),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("scim2-server did not answer {method} {path_q}: {e}"));
        (r.status, r.json())
    }

    fn list_all(&self, endpoint: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut start = 1;
        for _page in 0..1000 {
            let (s, v) = self.api(
                "GET",
                &format!("/{endpoint}?startIndex={start}&count=500"),
                None,
            );
            assert_eq!(s, 200, "GET /{endpoint}: {v}");
            let items = v["Resources"].as_array().cloned().unwrap_or_default();
            let total = v["totalResults"].as_u64().unwrap_or(0) as usize;
            let n = items.len();
            out.extend(items);
            start += n;
            if n == 0 || out.len() >= total {
                break;
            }
        }
        out
    }

    /// Id of the user with this userName, if the server has one (no creation).
    pub fn user_id(&self, email: &str) -> Option<String> {
        let key = email.to_ascii_lowercase();
        if let Some(id) = self.users.lock().unwrap().get(&key) {
            return Some(id.clone());
        }
        let filter = url_encode(&format!("userName eq {}", scim_quote(email)));
        let (s, v) = self.api("GET", &format!("/Users?filter={filter}"), None);
        assert_eq!(s, 200, "user lookup: {v}");
        let id = v["Resources"][0]["id"].as_str()?.to_string();
        self.users.lock().unwrap().insert(key, id.clone());
        Some(id)
    }

    /// All groups as the server has them (raw JSON), oldest first.
    pub fn raw_groups(&self) -> Vec<Value> {
        let mut gs = self.list_all("Groups");
        gs.sort_by_key(|g| {
            (
                g["meta"]["created"].as_str().unwrap_or("").to_string(),
                g["id"].as_str().unwrap_or("").to_string(),
            )
        });
        gs
    }

    /// The first (oldest) group with exactly this displayName.
    pub fn group(&self, name: &str) -> Option<Value> {
        self.raw_groups()
            .into_iter()
            .find(|g| g["displayName"] == name)
    }
    pub fn group_id(&self, name: &str) -> Option<String> {
        self.group(name)
            .and_then(|g| g["id"].as_str().map(str::to_string))
    }
    /// Number of groups with exactly this displayName (duplicates show failed adoption).
    pub fn count_named(&self, name: &str) -> usize {
        self.raw_groups()
            .iter()
            .filter(|g| g["displayName"] == name)
            .count()
    }

    fn member_values(&self, members: &[&str]) -> Vec<Value> {
        members
            .iter()
            .map(|m| {
                let id = if m.contains('@') {
                    self.user_id(m)
                } else {
                    None
                };
                json!({"value": id.unwrap_or_else(|| m.to_string())})
            })
            .collect()
    }

    fn must_group_id(&self, name: &str) -> String {
        self.group_id(name)
            .unwrap_or_else(|| panic!("no group named {name:?} on scim2-server"))
    }
}

impl Drop for Scim2Server {
    fn drop(&mut self) {
        if let Ok(mut c) = self.child.lock() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}

impl Fake for Scim2Server {
    fn clear_faults(&self) {
        Scim2Server::clear_faults(self)
    }

    fn all_group_names(&self) -> Vec<String> {
        self.raw_groups()
            .iter()
            .filter_map(|g| g["displayName"].as_str().map(str::to_string))
            .collect()
    }

    fn kind(&self) -> &'static str {
        "scim"
    }

    fn target_toml(&self, name: &str) -> String {
        format!(
            "[[target]]\nname = \"{name}\"\nkind = \"scim\"\nflavor = \"rfc7644\"\n\
             base_url = \"{}\"\nauth = \"bearer\"\ntoken_env = \"{}\"\ntimeout = \"5s\"\n\
             max_retries = 3\nretry_base = \"20ms\"\n",
            self.base_url(),
            self.token_env()
        )
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![(self.token_env(), self.token())]
    }

    fn secrets(&self) -> Vec<String> {
        vec![self.token()]
    }

    fn add_user(&self, email: &str) -> String {
        if let Some(id) = self.user_id(email) {
            return id;
        }
        let body = json!({
            "schemas": [USER_SCHEMA],
            "userName": email,
            "emails": [{"value": email, "primary": true}],
        });
        let (s, mut v) = self.api("POST", "/Users", Some(&body));
        if s == 409 {
            // A create the server did while its answer was lost (a loaded machine): the
            // user is there; find it.
            let filter = format!("/Users?filter=userName%20eq%20%22{email}%22");
            let (fs, fv) = self.api("GET", &filter, None);
            assert_eq!(fs, 200, "find user {email}: {fv}");
            v = fv["Resources"][0].clone();
        } else {
            assert_eq!(s, 201, "create user {email}: {v}");
        }
        let id = v["id"].as_str().expect("user id").to_string();
        self.users
            .lock()
            .unwrap()
            .insert(email.to_ascii_lowercase(), id.clone());
        id
    }

    fn source_id(&self, _email: &str) -> Option<String> {
        None
    }

    fn groups(&self) -> BTreeMap<String, BTreeSet<String>> {
        let names: BTreeMap<String, String> = self
            .list_all("Users")
            .iter()
            .filter_map(|u| {
                Some((
                    u["id"].as_str()?.to_string(),
                    u["userName"].as_str()?.to_string(),
                ))
            })
            .collect();
        let mut out = BTreeMap::new();
        for g in self.raw_groups() {
            let name = g["displayName"].as_str().unwrap_or("").to_string();
            let members: BTreeSet<String> = g["members"]
                .as_array()
                .map(|ms| {
                    ms.iter()
                        .filter_map(|m| m["value"].as_str())
                        .map(|v| names.get(v).cloned().unwrap_or_else(|| v.to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let key = if out.contains_key(&name) {
                format!("{name} [duplicate {}]", g["id"].as_str().unwrap_or(""))
            } else {
                name
            };
            out.insert(key, members);
        }
        out
    }

    fn create_group_by_hand(&self, name: &str, members: &[&str]) {
        let body = json!({
            "schemas": [GROUP_SCHEMA],
            "displayName": name,
            "members": self.member_values(members),
        });
        let (s, v) = self.api("POST", "/Groups", Some(&body));
        assert_eq!(s, 201, "create group {name}: {v}");
    }

    fn set_members_by_hand(&self, name: &str, members: &[&str]) {
        let id = self.must_group_id(name);
        let body = json!({
            "schemas": [GROUP_SCHEMA],
            "id": id,
            "displayName": name,
            "members": self.member_values(members),
        });
        let (s, v) = self.api("PUT", &format!("/Groups/{id}"), Some(&body));
        assert_eq!(s, 200, "replace members of {name}: {v}");
    }

    fn delete_group_by_hand(&self, name: &str) {
        let id = self.must_group_id(name);
        let (s, v) = self.api("DELETE", &format!("/Groups/{id}"), None);
        assert_eq!(s, 204, "delete group {name}: {v}");
    }

    fn journal(&self) -> Option<&dyn Journal> {
        Some(&self.proxy)
    }

    fn membership_write(&self) -> Match {
        Match::new("PATCH", "/Groups/")
    }

    fn create_request(&self) -> Match {
        Match::new("POST", "/Groups")
    }
}

#[cfg(test)]
#[path = "scim2_tests.rs"]
mod tests;
