//! The one place that sends HTTP: rate limit (governor), concurrency cap, timeout, retries
//! with exponential backoff and jitter (backon) honoring `Retry-After`, and secret scrubbing
//! of every message that leaves it.

use std::num::NonZeroU32;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::ExposeSecret;
use tokio::sync::Semaphore;

use crate::config::{Secret, TargetConfig};

/// How a target reads an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Worth retrying (429, 5xx, a vendor's "try again" code).
    Retry(String),
    /// Final refusal (other 4xx, vendor error bodies).
    Fail(String),
    /// The resource is gone (404).
    NotFound(String),
    /// Credentials refused (401).
    Unauthorized(String),
}

/// Why a call did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailKind {
    /// Transient errors that outlived the retries (or were not retried, for creates).
    Transient,
    Permanent,
    NotFound,
    Unauthorized,
}

/// What a failed call did to the target, as far as its answer (or the lack of one)
/// shows. A fact of its own, beside (not inside) how the call may be retried (`FailKind`):
/// a target may make a failure final for this run without changing what the engine
/// records about the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The target said it did it (a 2xx), but the answer could not be used (e.g. larger
    /// than `max_response_bytes`).
    Applied,
    /// The target surely did nothing: it refused (4xx, 429, a vendor error body) or the
    /// request never reached it (connection refused).
    NotApplied,
    /// Nobody knows: a timeout, a dropped connection, a 5xx or 408.
    Unknown,
}

impl Outcome {
    /// Whether the target may hold a change that was not confirmed.
    pub fn may_have_changed(self) -> bool {
        self != Outcome::NotApplied
    }
}

/// A call that did not succeed, with what the history needs.
#[derive(Clone, Debug)]
pub struct Failure {
    /// How to go on: retry, give up, the resource is gone, credentials refused.
    pub kind: FailKind,
    pub status: Option<u16>,
    /// The vendor's message or the transport error, secrets scrubbed.
    pub message: String,
    pub latency_ms: u64,
    pub attempts: u32,
    /// What the call did to the target: a create that may have been applied must be
    /// looked up again before it is re-sent, and a write that may have been applied keeps
    /// its intent (the group is read back at the next run).
    pub outcome: Outcome,
}

/// A successful answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub latency_ms: u64,
    pub attempts: u32,
    /// The answer's rate-limit headers (`X-RateLimit-*`, `RateLimit-*`, `Retry-After`), for
    /// `check --online`; values are counts and times, never secrets.
    pub rate_limit: Vec<(String, String)>,
}

/// The rate-limit headers of an answer, by name (lower case), in the order received.
fn rate_limit_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            k.contains("ratelimit") || k.contains("rate-limit") || k == "retry-after"
        })
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

impl Reply {
    /// The body as JSON, leniently (an empty or non-JSON body is `null`). Never for reading
    /// records: `decode::value`/`decode::answer` tell "not understood" from "none".
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One request to send. Its `Debug` shows no body and no header value: DeepCall and Kazoo
/// carry credentials in the body.
#[derive(Clone)]
pub struct Request {
    pub method: Method,
    /// Absolute URL.
    pub url: String,
    pub body: Option<serde_json::Value>,
    /// Extra headers (auth is added by the target through `Http::with_header`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        let mut d = f.debug_struct("Request");
        d.field("method", &self.method).field("path", &self.path());
        if self.body.is_some() {
            d.field("body", &format_args!("[REDACTED]"));
        }
        d.field("headers", &headers).finish()
    }
}

impl Request {
    pub fn new(method: Method, url: impl Into<String>) -> Request {
        Request {
            method,
            url: url.into(),
            body: None,
            headers: Vec::new(),
        }
    }
    pub fn json(mut self, body: serde_json::Value) -> Request {
        self.body = Some(body);
        self
    }
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Request {
        self.headers.push((name, value));
        self
    }
    /// Path and query, for the history (never carries a secret: secrets travel in headers
    /// or bodies).
    pub fn path(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(u) => match u.query() {
                Some(q) => format!("{}?{}", u.path(), q),
                None => u.path().to_string(),
            },
            Err(_) => self.url.clone(),
        }
    }
}

/// Whether transient failures are retried in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Retry every transient failure (reads, idempotent writes).
    Always,
    /// Retry only failures that surely did not apply (429, refused connections): for
    /// creates, which must be looked up again instead of being re-sent blindly.
    OnlyIfNotApplied,
}

/// The HTTP client of one target.
pub struct Http {
    client: reqwest::Client,
    limiter: Option<DefaultDirectRateLimiter>,
    in_flight: Semaphore,
    max_retries: u32,
    retry_base: Duration,
    /// The largest answer body read; a larger one is refused while it is read.
    max_response_bytes: u64,
    /// Secret values to scrub from any text that leaves this module. Behind a lock so a
    /// target can add a session token it obtains mid-run through `&Http`.
    secrets: RwLock<Vec<String>>,
    /// Default headers (auth) sent with every request.
    headers: HeaderMap,
}

/// The default reading of an HTTP status: 2xx ok, 404 gone, 401 unauthorized,
/// 408/429/5xx retried, any other 4xx final, with the vendor's message. 501 (Not
/// Implemented) and 505 (HTTP Version Not Supported) are final: the same request gets the
/// same answer, and the server did nothing (a target may fall back to another form).
pub fn default_verdict(status: u16, body: &[u8]) -> Verdict {
    match status {
        200..=299 => Verdict::Ok,
        404 => Verdict::NotFound(message(status, body)),
        401 => Verdict::Unauthorized(message(status, body)),
        501 | 505 => Verdict::Fail(message(status, body)),
        408 | 429 | 500..=599 => Verdict::Retry(message(status, body)),
        _ => Verdict::Fail(message(status, body)),
    }
}

/// Membership changes: 409 means "already there" (SPEC 5: idempotent by construction),
/// which counts as done; everything else as `default_verdict`.
pub fn membership_verdict(status: u16, body: &[u8]) -> Verdict {
    if status == 409 {
        Verdict::Ok
    } else {
        default_verdict(status, body)
    }
}

/// A short message from an error body: SCIM `detail`, `message`, `error`, or the text.
pub fn message(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["detail", "message", "error", "error_description"]
                .iter()
                .find_map(|k| v.get(k).and_then(|m| m.as_str().map(str::to_string)))
        });
    let text = from_json.unwrap_or_else(|| text.trim().to_string());
    let mut text: String = text.chars().take(300).collect();
    if text.is_empty() {
        text = "no message".into();
    }
    format!("HTTP {status}: {text}")
}

/// The share of a configured `rate_limit` that rostersync actually uses.
pub const RATE_MARGIN: f64 = 0.97;

/// How the limiter paces a target whose vendor allows `rate` requests/s with bursts of
/// `burst` (a token bucket): one request per `period`, bursts of the returned size.
///
/// Pacing at exactly the vendor's numbers leaves no slack at all: after the first burst the
/// vendor's bucket is empty and every request is due the very instant its token comes back,
/// so any request that reaches the server a little earlier than its predecessor's spacing
/// (network or scheduling jitter, the two clocks) is refused with 429. So rostersync keeps
/// one token in hand (bursts one smaller than allowed, when the burst is above 1), which
/// absorbs up to a whole period of jitter (100 ms at 10/s) from the first request on, and
/// runs at 97% of the rate, so the vendor's bucket refills further with every request (a
/// whole token more every 33 requests; and a run started right after another finds it
/// fuller). The cost: 3% of throughput in a long run, one period once (SPEC 9 asks for an
/// initial sync within 5% of calls / rate).
pub fn pacing(rate: f64, burst: u32) -> (Duration, u32) {
    let period = Duration::from_secs_f64(1.0 / (rate * RATE_MARGIN));
    (period, burst.saturating_sub(1).max(1))
}

/// The limiter of a target whose vendor allows `rate` requests/s with bursts of `burst`.
fn limiter(rate: f64, burst: u32) -> DefaultDirectRateLimiter {
    let (period, burst) = pacing(rate, burst);
    let quota = Quota::with_period(period)
        .expect("positive rate")
        .allow_burst(NonZeroU32::new(burst).expect("burst >= 1"));
    RateLimiter::direct(quota)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(300)))
}

impl Http {
    pub fn new(cfg: &TargetConfig, headers: HeaderMap) -> Result<Http, super::BuildError> {
        let mut b = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(cfg.user_agent.as_str())
            .pool_max_idle_per_host(cfg.concurrency);
        if let Some(ca) = &cfg.ca_file {
            for cert in read_ca_file(ca)? {
                b = b.add_root_certificate(cert);
            }
        }
        let client = b.build().map_err(super::BuildError::Client)?;
        let limiter = cfg.rate_limit.map(|r| limiter(r, cfg.burst));
        let secrets = [&cfg.token, &cfg.user_id, &cfg.api_key, &cfg.ssid]
            .into_iter()
            .filter_map(|s| Secret::value_of(s).map(|v| v.expose_secret().to_string()))
            .filter(|s| s.len() >= 4)
            .flat_map(|s| with_encodings(&s))
            .collect();
        Ok(Http {
            client,
            limiter,
            in_flight: Semaphore::new(cfg.concurrency),
            max_retries: cfg.max_retries,
            retry_base: cfg.retry_base,
            max_response_bytes: cfg.max_response_bytes,
            secrets: RwLock::new(secrets),
            headers,
        })
    }

    /// Adds a secret value to scrub (e.g. a session token obtained at login). Takes `&self`:
    /// targets only hold `&Ctx` while a run is going.
    pub fn add_secret(&self, s: &str) {
        if s.len() >= 4 {
            let mut secrets = self.secrets.write().unwrap_or_else(|e| e.into_inner());
            if !secrets.iter().any(|x| x == s) {
                secrets.push(s.to_string());
            }
        }
    }

    /// Replaces every secret value in `s` by `[REDACTED]`.
    pub fn scrub(&self, s: &str) -> String {
        let mut out = s.to_string();
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        for secret in secrets.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "[REDACTED]");
            }
        }
        out
    }

    /// Sends `req`, retrying as `retry` allows; `verdict` reads each answer. `fence`: a
    /// write under a lease (SPEC 6.7), checked before every attempt; when it no longer
    /// holds, nothing more is sent and the failure says so (outcome: not applied).
    pub async fn send(
        &self,
        req: &Request,
        retry: Retry,
        verdict: &(dyn Fn(u16, &[u8]) -> Verdict + Sync),
        fence: Option<&crate::store::Writer>,
    ) -> Result<Reply, Failure> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .expect("semaphore never closed");
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(self.retry_base)
            .with_max_delay(Duration::from_secs(30))
            .with_max_times(self.max_retries as usize)
            .with_jitter()
            .build();
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            if let Some(l) = &self.limiter {
                l.until_ready().await;
            }
            if let Some(w) = fence
                && let Err(e) = w.check_fence().await
            {
                return Err(Failure {
                    kind: FailKind::Permanent,
                    status: None,
                    message: format!("not sent: {e}"),
                    latency_ms: started.elapsed().as_millis() as u64,
                    attempts,
                    outcome: Outcome::NotApplied,
                });
            }
            attempts += 1;
            let mut rb = self
                .client
                .request(req.method.clone(), &req.url)
                .headers(self.headers.clone());
            for (k, v) in &req.headers {
                rb = rb.header(k, v);
            }
            if let Some(b) = &req.body {
                rb = rb.json(b);
            }
            let outcome = match rb.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    match read_body(resp, self.max_response_bytes).await {
                        Ok(body) => Ok((status, headers, body)),
                        Err(BodyError::Read(e)) => Err((e, Outcome::Unknown)),
                        Err(BodyError::TooLarge) => {
                            // Final: the same request would get the same answer again. The
                            // target may well have done it (a 2xx certainly did).
                            let outcome = if (200..300).contains(&status) {
                                Outcome::Applied
                            } else {
                                Outcome::Unknown
                            };
                            return Err(Failure {
                                kind: FailKind::Permanent,
                                status: Some(status),
                                message: format!(
                                    "HTTP {status}: the answer is larger than \
                                     max_response_bytes = {} and was refused unread",
                                    self.max_response_bytes
                                ),
                                latency_ms: started.elapsed().as_millis() as u64,
                                attempts,
                                outcome,
                            });
                        }
                    }
                }
                Err(e) => {
                    // A refused connection never reached the server.
                    let outcome = if e.is_connect() {
                        Outcome::NotApplied
                    } else {
                        Outcome::Unknown
                    };
                    Err((e, outcome))
                }
            };
            let latency_ms = started.elapsed().as_millis() as u64;
            let (verdict, status, after, outcome) = match outcome {
                Ok((status, headers, body)) => {
                    let v = verdict(status, &body);
                    if v == Verdict::Ok {
                        return Ok(Reply {
                            status,
                            body,
                            latency_ms,
                            attempts,
                            rate_limit: rate_limit_headers(&headers),
                        });
                    }
                    // A retryable answer (408, 5xx) may have been applied, except a 429;
                    // a refusal (any other 4xx, a vendor error body) was not.
                    let outcome = match &v {
                        Verdict::Retry(_) if status != 429 => Outcome::Unknown,
                        _ => Outcome::NotApplied,
                    };
                    (v, Some(status), retry_after(&headers), outcome)
                }
                Err((e, outcome)) => {
                    let what = if e.is_timeout() {
                        "timed out"
                    } else {
                        "failed"
                    };
                    let mut msg = format!("request {what}: {e}");
                    let mut src = std::error::Error::source(&e);
                    while let Some(s) = src {
                        msg += &format!(": {s}");
                        src = s.source();
                    }
                    (Verdict::Retry(msg), None, None, outcome)
                }
            };
            let fail = |kind, message: String| Failure {
                kind,
                status,
                message: self.scrub(&message),
                latency_ms,
                attempts,
                outcome,
            };
            match verdict {
                Verdict::Ok => unreachable!("returned above"),
                Verdict::Fail(m) => return Err(fail(FailKind::Permanent, m)),
                Verdict::NotFound(m) => return Err(fail(FailKind::NotFound, m)),
                Verdict::Unauthorized(m) => return Err(fail(FailKind::Unauthorized, m)),
                Verdict::Retry(m) => {
                    let may_retry = retry == Retry::Always || outcome == Outcome::NotApplied;
                    match delays.next() {
                        Some(d) if may_retry => {
                            let wait = after.unwrap_or(d);
                            tracing::debug!(url = %req.path(), attempt = attempts, wait_ms = wait.as_millis() as u64, error = %self.scrub(&m), "retrying");
                            metrics::counter!("rostersync_retries_total").increment(1);
                            tokio::time::sleep(wait).await;
                        }
                        _ => return Err(fail(FailKind::Transient, m)),
                    }
                }
            }
        }
    }
}

/// A secret and the forms it travels in besides itself (a vendor may echo the
/// `Authorization` header back): base64 of the value, and of `value:` and `:value` (HTTP
/// Basic with the secret as user or password).
fn with_encodings(s: &str) -> Vec<String> {
    use base64::Engine as _;
    let b64 = |v: String| base64::engine::general_purpose::STANDARD.encode(v);
    vec![
        s.to_string(),
        b64(s.to_string()),
        b64(format!("{s}:")),
        b64(format!(":{s}")),
    ]
}

/// Why an answer's body was not read.
enum BodyError {
    Read(reqwest::Error),
    /// Over the limit (announced by `Content-Length` or found while reading).
    TooLarge,
}

/// Reads an answer's body chunk by chunk, refusing it as soon as it exceeds `limit` bytes:
/// never buffered whole.
async fn read_body(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Read)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The certificates of a `ca_file` (a PEM bundle of private CAs), checked the way the HTTP
/// client will use them. Config validation calls this too, so a bad file stops the
/// program with exit 2 before any request.
pub fn read_ca_file(
    path: &std::path::Path,
) -> Result<Vec<reqwest::Certificate>, super::BuildError> {
    let fail = |message: String| super::BuildError::CaFile {
        path: path.to_path_buf(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| fail(format!("not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(fail(
            "holds no PEM certificate (expected -----BEGIN CERTIFICATE----- blocks)".into(),
        ));
    }
    let mut b = reqwest::Client::builder();
    for c in &certs {
        b = b.add_root_certificate(c.clone());
    }
    b.build()
        .map_err(|e| fail(format!("not a usable CA certificate: {e}")))?;
    Ok(certs)
}

/// Percent-encodes a path segment or query value (space as `%20`).
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Builds a header value from a secret, marked sensitive so it never prints.
pub fn secret_header(value: &str) -> Result<HeaderValue, super::BuildError> {
    let mut v =
        HeaderValue::from_str(value).map_err(|_| super::BuildError::Header { what: "a secret" })?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
