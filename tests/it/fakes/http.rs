//! Shared plumbing for the fake vendor servers: a real HTTP/1.1 server on 127.0.0.1 (hyper),
//! a request log, and fault injection. Each vendor fake supplies only `Handler::handle`.
//!
//! Everything runs on its own thread with its own tokio runtime, so blocking `#[test]`s that
//! spawn the rostersync binary can use a fake without any async of their own.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// One request as the fake saw it, with the status it answered (0 when the fault dropped it).
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    /// Path and query, percent-decoded query left as sent.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub status: u16,
    /// The injected fault that shaped the answer, if any ("status", "drop", "drop_after",
    /// "delay"): a delayed 2xx may have reached the client after its timeout.
    pub fault: Option<&'static str>,
    /// When the request arrived (its body read), on this process' monotonic clock.
    pub at: Instant,
}

impl Logged {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// True for requests that change something on the server. A session login (Kazoo's
    /// `PUT /v2/api_auth`) only issues a token: a dry-run needs one for its lookups.
    pub fn is_write(&self) -> bool {
        self.method != "GET" && !self.is_login()
    }
    /// True for a request that exchanges credentials for a session token.
    pub fn is_login(&self) -> bool {
        let path = self.path.split('?').next().unwrap_or("");
        self.method == "PUT" && path.ends_with("/v2/api_auth")
    }
}

/// A request handed to a vendor handler.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Raw query string (without '?'), empty when none.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// A query parameter, percent-decoded ('+' as space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a vendor handler answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(status: u16, v: serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: v.to_string(),
        }
    }
    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: String::new(),
        }
    }
}

/// A fault to inject instead of (or around) the normal answer.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and body, without touching the fake's state.
    Status {
        status: u16,
        retry_after: Option<u64>,
        body: String,
    },
    /// Close the connection without answering, without touching state.
    Drop,
    /// Run the request against the state, then close the connection without answering
    /// (the "create whose response is lost" case).
    DropAfter,
    /// Run the request normally but answer only after this delay.
    Delay(Duration),
    /// Run the request normally, then answer in another shape (SPEC 6.3: answers our
    /// reading of the seeds did not foresee).
    Reshape(Reshape),
}

/// Another shape for a normal answer: the fakes that disagree with us.
#[derive(Clone, Debug)]
pub enum Reshape {
    /// The same records under another top-level key.
    Rename {
        from: &'static str,
        to: &'static str,
    },
    /// The whole answer one level deeper, under this key.
    Nest(&'static str),
    /// No records at all: `{"status": "success"}`.
    NoRecords,
    /// Two candidate arrays of records: the records under `key` and a copy under `key2`.
    TwoArrays {
        key: &'static str,
        key2: &'static str,
    },
    /// An HTML error page with status 200 (a proxy's or a portal's).
    Html,
    /// The first half of the JSON body.
    Truncated,
}

impl Reshape {
    fn apply(&self, rep: Reply) -> Reply {
        if !(200..300).contains(&rep.status) {
            return rep;
        }
        let json = || serde_json::from_str::<serde_json::Value>(&rep.body).ok();
        let body = match self {
            Reshape::Rename { from, to } => match json() {
                Some(serde_json::Value::Object(mut o)) => {
                    if let Some(v) = o.remove(*from) {
                        o.insert((*to).into(), v);
                    }
                    serde_json::Value::Object(o).to_string()
                }
                _ => rep.body.clone(),
            },
            Reshape::Nest(key) => match json() {
                Some(v) => serde_json::json!({ *key: v }).to_string(),
                None => rep.body.clone(),
            },
            Reshape::NoRecords => serde_json::json!({"status": "success"}).to_string(),
            Reshape::TwoArrays { key, key2 } => match json() {
                Some(serde_json::Value::Object(mut o)) => {
                    if let Some(v) = o.get(*key).cloned() {
                        o.insert((*key2).into(), v);
                    }
                    serde_json::Value::Object(o).to_string()
                }
                _ => rep.body.clone(),
            },
            Reshape::Html => {
                return Reply {
                    status: 200,
                    headers: vec![("content-type".into(), "text/html".into())],
                    body: "<!DOCTYPE html><html><head><title>Service unavailable</title>\
                           </head><body><h1>We'll be right back</h1></body></html>"
                        .into(),
                };
            }
            Reshape::Truncated => {
                rep.body[..rep.body.floor_char_boundary(rep.body.len() / 2)].to_string()
            }
        };
        Reply {
            status: rep.status,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        }
    }
}

impl Fault {
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            retry_after: None,
            body: String::new(),
        }
    }
    pub fn too_many(retry_after_secs: u64) -> Fault {
        Fault::Status {
            status: 429,
            retry_after: Some(retry_after_secs),
            body: String::new(),
        }
    }
    /// An answer with a given status and a JSON body (DeepCall's HTTP 200 error bodies).
    pub fn body(status: u16, body: serde_json::Value) -> Fault {
        Fault::Status {
            status,
            retry_after: None,
            body: body.to_string(),
        }
    }
}

/// Which requests a fault applies to: method (or "*") and a substring of the path, and
/// optionally a substring of the body.
#[derive(Clone, Debug)]
pub struct Match {
    pub method: String,
    pub path_contains: String,
    pub body_contains: Option<String>,
}

impl Match {
    pub fn new(method: &str, path_contains: &str) -> Match {
        Match {
            method: method.into(),
            path_contains: path_contains.into(),
            body_contains: None,
        }
    }
    pub fn body(mut self, s: &str) -> Match {
        self.body_contains = Some(s.into());
        self
    }
    fn matches(&self, r: &Req) -> bool {
        (self.method == "*" || self.method.eq_ignore_ascii_case(&r.method))
            && (r.path.contains(&self.path_contains)
                || format!("{}?{}", r.path, r.query).contains(&self.path_contains))
            && self
                .body_contains
                .as_ref()
                .is_none_or(|b| r.body.contains(b))
    }
}

/// The vendor logic: a pure function of the request and the fake's state.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: &Req) -> Reply;
}

struct Armed {
    when: Match,
    fault: Fault,
    times: usize,
}

/// The journal and fault injection of a running fake server, whatever its handler: what
/// `Fake::requests`, `clear_requests` and `inject` delegate to.
pub trait Journal: Send + Sync {
    /// Every request received so far.
    fn requests(&self) -> Vec<Logged>;
    fn clear_requests(&self);
    /// Arms `fault` for the next `times` requests matching `when`.
    fn inject(&self, when: Match, fault: Fault, times: usize);
}

impl<H: Handler> Journal for Server<H> {
    fn requests(&self) -> Vec<Logged> {
        Server::requests(self)
    }
    fn clear_requests(&self) {
        Server::clear_requests(self)
    }
    fn inject(&self, when: Match, fault: Fault, times: usize) {
        Server::inject(self, when, fault, times)
    }
}

/// A SCIM error answer (RFC 7644 3.12), `status` as the string the RFC shows.
pub fn scim_error(status: u16, scim_type: Option<&str>, detail: &str) -> Reply {
    let mut body = serde_json::json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.to_string(),
        "detail": detail,
    });
    if let Some(t) = scim_type {
        body["scimType"] = serde_json::json!(t);
    }
    Reply::json(status, body)
}

/// A running fake server: the handler behind real HTTP, its request log and armed faults.
pub struct Server<H: Handler> {
    pub addr: SocketAddr,
    pub handler: Arc<H>,
    log: Arc<Mutex<Vec<Logged>>>,
    /// Every request as it arrived (status 0), before its answer: a delayed request is
    /// here while it is still in flight.
    received: Arc<Mutex<Vec<Logged>>>,
    faults: Arc<Mutex<VecDeque<Armed>>>,
}

impl<H: Handler> Server<H> {
    /// Binds 127.0.0.1 on a free port and serves `handler` until the test process ends.
    pub fn start(handler: H) -> Server<H> {
        let handler = Arc::new(handler);
        let log = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let faults: Arc<Mutex<VecDeque<Armed>>> = Arc::new(Mutex::new(VecDeque::new()));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (h, l, f) = (handler.clone(), log.clone(), faults.clone());
        let r = received.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (h, l, f, r) = (h.clone(), l.clone(), f.clone(), r.clone());
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            serve_one(h.clone(), l.clone(), f.clone(), r.clone(), req)
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        Server {
            addr,
            handler,
            log,
            received,
            faults,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Arms `fault` for the next `times` requests that match `when`.
    pub fn inject(&self, when: Match, fault: Fault, times: usize) {
        self.faults
            .lock()
            .unwrap()
            .push_back(Armed { when, fault, times });
    }

    pub fn clear_faults(&self) {
        self.faults.lock().unwrap().clear();
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.log.lock().unwrap().clear();
        self.received.lock().unwrap().clear();
    }

    /// Every request as it arrived, answered or not (status 0), in arrival order.
    pub fn received(&self) -> Vec<Logged> {
        self.received.lock().unwrap().clone()
    }
}

#[derive(Debug)]
struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}
impl std::error::Error for Dropped {}

async fn serve_one<H: Handler>(
    handler: Arc<H>,
    log: Arc<Mutex<Vec<Logged>>>,
    faults: Arc<Mutex<VecDeque<Armed>>>,
    received: Arc<Mutex<Vec<Logged>>>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Dropped> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let r = Req {
        method,
        path,
        query,
        headers,
        body,
    };

    let fault = {
        let mut fs = faults.lock().unwrap();
        let pos = fs.iter().position(|a| a.times > 0 && a.when.matches(&r));
        pos.map(|i| {
            fs[i].times -= 1;
            let fault = fs[i].fault.clone();
            if fs[i].times == 0 {
                fs.remove(i);
            }
            fault
        })
    };
    let full_path = if r.query.is_empty() {
        r.path.clone()
    } else {
        format!("{}?{}", r.path, r.query)
    };
    let mut logged = Logged {
        method: r.method.clone(),
        path: full_path,
        headers: r.headers.clone(),
        body: r.body.clone(),
        status: 0,
        fault: fault.as_ref().map(|f| match f {
            Fault::Status { .. } => "status",
            Fault::Drop => "drop",
            Fault::DropAfter => "drop_after",
            Fault::Delay(_) => "delay",
            Fault::Reshape(_) => "reshape",
        }),
        at: Instant::now(),
    };
    received.lock().unwrap().push(logged.clone());
    let reply = match fault {
        Some(Fault::Drop) => {
            log.lock().unwrap().push(logged);
            return Err(Dropped);
        }
        Some(Fault::DropAfter) => {
            let _ = handler.handle(&r);
            log.lock().unwrap().push(logged);
            return Err(Dropped);
        }
        Some(Fault::Status {
            status,
            retry_after,
            body,
        }) => {
            let mut rep = Reply {
                status,
                headers: vec![],
                body,
            };
            if let Some(s) = retry_after {
                rep.headers.push(("retry-after".into(), s.to_string()));
            }
            if !rep.body.is_empty() {
                rep.headers
                    .push(("content-type".into(), "application/json".into()));
            }
            rep
        }
        Some(Fault::Reshape(shape)) => shape.apply(handler.handle(&r)),
        Some(Fault::Delay(d)) => {
            let rep = handler.handle(&r);
            tokio::time::sleep(d).await;
            rep
        }
        None => handler.handle(&r),
    };
    logged.status = reply.status;
    log.lock().unwrap().push(logged);
    let mut resp = hyper::Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        resp = resp.header(k, v);
    }
    Ok(resp.body(Full::new(Bytes::from(reply.body))).unwrap())
}
