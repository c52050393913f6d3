//! Prometheus metrics and the health check of the daemon (SPEC section 8).
//!
//! Counters are emitted where things happen (`sync`, `targets`) through the `metrics`
//! facade. This module installs the Prometheus recorder behind that facade, describes every
//! metric, and serves `GET /metrics` and `GET /healthz` on `[metrics] listen`. Only the daemon
//! installs the recorder: a oneshot `sync` records into the facade's no-op default.
//!
//! `Health` is what `/healthz` reads and what the systemd watchdog trusts: the time of the
//! scheduler loop's last tick, and per target the time of its last successful run.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tracing::{debug, warn};

/// Buckets of `rostersync_run_duration_seconds`: from a no-op run to a rate-limited hour.
const RUN_BUCKETS: &[f64] = &[0.05, 0.25, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0];

/// The Prometheus recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics: {0}")]
    Buckets(#[source] metrics_exporter_prometheus::BuildError),
    #[error("metrics: {0}")]
    Install(#[source] metrics_exporter_prometheus::BuildError),
}

/// Installs the Prometheus recorder (once per process) and describes the metrics.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("rostersync_run_duration_seconds".into()),
            RUN_BUCKETS,
        )
        .map_err(MetricsError::Buckets)?
        .install_recorder()
        .map_err(MetricsError::Install)?;
    describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "rostersync_runs_total",
        "Runs by outcome: ok, failed (some operations failed), refused (a safety guard stopped a target), skipped (source error, lock held: nothing sent)."
    );
    describe_counter!(
        "rostersync_calls_total",
        "Calls sent, by target, operation and outcome (ok or failed); retries of one call count once."
    );
    describe_counter!(
        "rostersync_removals_deferred_total",
        "Removals of agents online now held back for a later run (teams, safety.defer_online_removals)."
    );
    describe_counter!(
        "rostersync_retries_total",
        "Retries of calls after a 429, 5xx, timeout or dropped connection."
    );
    describe_counter!(
        "rostersync_members_added_total",
        "Memberships added on targets, as confirmed by them."
    );
    describe_counter!(
        "rostersync_members_removed_total",
        "Memberships removed on targets, as confirmed by them."
    );
    describe_counter!(
        "rostersync_drift_found_total",
        "Memberships a --full run found different from the known state, by target."
    );
    describe_histogram!(
        "rostersync_run_duration_seconds",
        Unit::Seconds,
        "Duration of runs."
    );
    describe_gauge!(
        "rostersync_last_success_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the last run that synced the target without a failed operation."
    );
    describe_gauge!(
        "rostersync_plan_ops",
        "Operations the last plan held, by target."
    );
    // Series that exist from the start, so that rate() and absent() work before the first event.
    for outcome in ["ok", "failed", "refused", "skipped"] {
        metrics::counter!("rostersync_runs_total", "outcome" => outcome).increment(0);
    }
    metrics::counter!("rostersync_retries_total").increment(0);
    metrics::counter!("rostersync_members_added_total").increment(0);
    metrics::counter!("rostersync_members_removed_total").increment(0);
}

/// Serves `/metrics` and `/healthz` on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    health: Arc<Health>,
) {
    // Histograms are folded into their buckets by the upkeep, not at each scrape.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (handle, health) = (handle.clone(), health.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let resp = respond(req.method(), req.uri().path(), &handle, &health);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

fn respond(
    method: &Method,
    path: &str,
    handle: &PrometheusHandle,
    health: &Health,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &'static str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", kind)
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts")
    };
    match (method, path) {
        (&Method::GET, "/metrics") => {
            reply(StatusCode::OK, "text/plain; version=0.0.4", handle.render())
        }
        (&Method::GET, "/healthz") => {
            let (ok, body) = health.check(Instant::now());
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, "application/json", body.to_string() + "\n")
        }
        (_, "/metrics" | "/healthz") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}

/// Liveness of the scheduler loop and freshness of every target, for `/healthz` and the
/// systemd watchdog.
pub struct Health {
    /// The origin of `heartbeat_ms`.
    origin: Instant,
    /// Milliseconds after `origin` of the loop's last tick.
    heartbeat_ms: AtomicU64,
    /// How long the loop may go without ticking and still count as alive.
    loop_timeout: Duration,
    targets: Mutex<Freshness>,
    /// Two nodes on PostgreSQL (SPEC 6.7): this node's role; None on SQLite.
    role: Mutex<Option<HaRole>>,
}

/// A node's part in the lease, as `/healthz` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaRole {
    pub node: String,
    /// Leads (and may write now).
    pub leader: bool,
    /// Who leads, when known.
    pub holder: Option<String>,
    pub epoch: i64,
}

/// The part of `Health` that a reload changes.
struct Freshness {
    /// A target is stale once its last success (or its start under watch) is older than this.
    max_age: Duration,
    /// Per target: since when it is fresh, and whether that is a success or only the time
    /// the daemon started watching it.
    since: BTreeMap<String, (Instant, bool)>,
    /// Per target: why its last run failed or was refused (None once a run went well).
    problems: BTreeMap<String, String>,
    /// The last run's first failure or refusal: (target, reason).
    last_problem: Option<(String, String)>,
}

impl Health {
    pub fn new(targets: &[String], max_age: Duration, loop_timeout: Duration) -> Health {
        let now = Instant::now();
        Health {
            origin: now,
            heartbeat_ms: AtomicU64::new(0),
            loop_timeout,
            targets: Mutex::new(Freshness {
                max_age,
                since: targets.iter().map(|t| (t.clone(), (now, false))).collect(),
                problems: BTreeMap::new(),
                last_problem: None,
            }),
            role: Mutex::new(None),
        }
    }

    /// This node's role changed (two nodes on PostgreSQL).
    pub fn set_role(&self, role: HaRole) {
        *self.role.lock().expect("health lock") = Some(role);
    }

    /// The loop is alive: called at every tick.
    pub fn beat(&self) {
        self.heartbeat_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the loop's last tick.
    pub fn loop_age(&self, now: Instant) -> Duration {
        let at = self.origin + Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(at)
    }

    /// After a reload: new targets start fresh, removed ones are forgotten.
    pub fn configure(&self, targets: &[String], max_age: Duration) {
        let mut f = self.targets.lock().expect("health lock");
        f.max_age = max_age;
        let now = Instant::now();
        f.since.retain(|name, _| targets.contains(name));
        f.problems.retain(|name, _| targets.contains(name));
        for t in targets {
            f.since.entry(t.clone()).or_insert((now, false));
        }
    }

    /// A run synced this target without a failed operation.
    pub fn succeeded(&self, target: &str, at: Instant) {
        let mut f = self.targets.lock().expect("health lock");
        if let Some(s) = f.since.get_mut(target) {
            *s = (at, true);
        }
    }

    /// What a finished run says of each target: why it failed or was refused (None: it
    /// went well), and the run's first problem, for `/healthz`.
    pub fn ran(&self, problems: &[(String, Option<String>)]) {
        let mut f = self.targets.lock().expect("health lock");
        f.last_problem = None;
        for (name, p) in problems {
            match p {
                Some(p) => {
                    f.problems.insert(name.clone(), p.clone());
                    if f.last_problem.is_none() {
                        f.last_problem = Some((name.clone(), p.clone()));
                    }
                }
                None => {
                    f.problems.remove(name);
                }
            }
        }
    }

    /// Whether the daemon is healthy at `now`, and the JSON body that says why.
    pub fn check(&self, now: Instant) -> (bool, serde_json::Value) {
        let loop_age = self.loop_age(now);
        let loop_ok = loop_age <= self.loop_timeout;
        let f = self.targets.lock().expect("health lock");
        let role = self.role.lock().expect("health lock").clone();
        // A standby runs nothing: it is healthy while its loop is (the leader answers for
        // the targets' freshness).
        let standby = role.as_ref().is_some_and(|r| !r.leader);
        let mut ok = loop_ok;
        let mut targets = serde_json::Map::new();
        for (name, (since, succeeded)) in &f.since {
            let age = now.saturating_duration_since(*since);
            let fresh = age <= f.max_age;
            ok &= fresh || standby;
            let key = if *succeeded {
                "last_success_age_seconds"
            } else {
                "no_success_since_start_seconds"
            };
            let mut t = json!({ key: secs(age), "ok": fresh });
            if let Some(p) = f.problems.get(name) {
                t["last_problem"] = json!(p);
            }
            targets.insert(name.clone(), t);
        }
        let mut body = json!({
            "status": if ok { "ok" } else { "unhealthy" },
            "loop": { "last_tick_age_seconds": secs(loop_age), "ok": loop_ok },
            "max_age_seconds": f.max_age.as_secs_f64(),
            "targets": targets,
            "last_problem": f.last_problem.as_ref().map(|(t, reason)| json!({ "target": t, "reason": reason })),
        });
        if let Some(r) = role {
            body["role"] = json!(if r.leader { "leader" } else { "standby" });
            body["node"] = json!(r.node);
            body["leader"] = json!(r.holder);
            body["epoch"] = json!(r.epoch);
        }
        (ok, body)
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn healthy_while_the_loop_ticks_and_targets_are_fresh() {
        let h = Health::new(
            &names(&["a", "b"]),
            Duration::from_secs(60),
            Duration::from_secs(30),
        );
        h.beat();
        let t0 = Instant::now();
        assert!(h.check(t0).0);
        // The loop stopped ticking 31 s ago.
        let (ok, body) = h.check(t0 + Duration::from_secs(31));
        assert!(!ok, "{body}");
        assert_eq!(body["loop"]["ok"], false);
        assert_eq!(body["targets"]["a"]["ok"], true);
    }

    #[test]
    fn targets_that_never_succeeded_count_from_the_start() {
        let h = Health::new(&names(&["a"]), Duration::from_secs(60), Duration::MAX);
        let t0 = Instant::now();
        assert!(h.check(t0 + Duration::from_secs(59)).0);
        let (ok, body) = h.check(t0 + Duration::from_secs(61));
        assert!(!ok, "{body}");
        assert_eq!(body["status"], "unhealthy");
        assert!(body["targets"]["a"]["no_success_since_start_seconds"].is_number());
    }

    #[test]
    fn a_stale_target_makes_it_unhealthy() {
        let h = Health::new(
            &names(&["a", "b"]),
            Duration::from_secs(60),
            Duration::from_secs(3600),
        );
        let t0 = Instant::now();
        h.succeeded("a", t0 + Duration::from_secs(50));
        let (ok, body) = h.check(t0 + Duration::from_secs(100));
        assert!(!ok);
        assert_eq!(body["targets"]["a"]["ok"], true);
        assert_eq!(body["targets"]["b"]["ok"], false);
        h.succeeded("b", t0 + Duration::from_secs(90));
        assert!(h.check(t0 + Duration::from_secs(100)).0);
    }

    #[test]
    fn the_last_problem_names_target_and_reason() {
        let h = Health::new(
            &names(&["a", "b"]),
            Duration::from_secs(60),
            Duration::from_secs(5),
        );
        h.beat();
        h.ran(&[
            ("a".into(), None),
            ("b".into(), Some("refused by the safety guard: x".into())),
        ]);
        let (_, body) = h.check(Instant::now());
        assert_eq!(body["last_problem"]["target"], "b");
        assert_eq!(
            body["last_problem"]["reason"],
            "refused by the safety guard: x"
        );
        assert_eq!(
            body["targets"]["b"]["last_problem"],
            "refused by the safety guard: x"
        );
        assert!(body["targets"]["a"].get("last_problem").is_none());
        h.ran(&[("a".into(), None), ("b".into(), None)]);
        let (_, body) = h.check(Instant::now());
        assert!(body["last_problem"].is_null());
        assert!(body["targets"]["b"].get("last_problem").is_none());
    }

    #[test]
    fn reload_adds_and_forgets_targets() {
        let h = Health::new(
            &names(&["a"]),
            Duration::from_secs(60),
            Duration::from_secs(3600),
        );
        h.configure(&names(&["b"]), Duration::from_secs(10));
        let (_, body) = h.check(Instant::now());
        assert!(body["targets"].get("a").is_none());
        assert!(body["targets"].get("b").is_some());
        assert_eq!(body["max_age_seconds"], 10.0);
    }

    #[test]
    fn routes() {
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let h = Health::new(&[], Duration::from_secs(60), Duration::from_secs(30));
        h.beat();
        assert_eq!(
            respond(&Method::GET, "/metrics", &handle, &h).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(&Method::GET, "/healthz", &handle, &h).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(&Method::POST, "/metrics", &handle, &h).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            respond(&Method::GET, "/", &handle, &h).status(),
            StatusCode::NOT_FOUND
        );
    }
}
