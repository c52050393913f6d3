//! The lease (SPEC 6.7): which node may write, on a PostgreSQL state.
//!
//! One row (`lease`: holder, epoch, expiry, released) decides it, on the server's clock
//! only (`clock_timestamp()`). A node takes the lease when it is expired or released,
//! raising the epoch; the holder renews it every third of the TTL over a connection of its
//! own (never a pooled one). Every write the store commits for a run checks, in its own
//! transaction, that the run's epoch still holds the lease ([`Fence`], see postgres.rs);
//! before every vendor write request the run asks the store to check it again and also
//! checks [`Guard`], the local deadline (the moment the last successful renewal was sent,
//! plus the TTL, on this machine's monotonic clock, which keeps running while the process
//! is stopped).
//!
//! A new holder waits, before its first write, until the old lease's expiry plus the
//! longest target timeout (of its config and of the old holder's) has passed, so that a
//! write the old holder sent before losing the lease has landed or died; then the run
//! reads back every group with an intent left. A holder that ends cleanly releases the
//! lease, and the next one need not wait.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{PgLocation, Result, StoreError};

/// The lease a store's writes are made under: this node and the epoch it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub node: String,
    pub epoch: i64,
}

/// How this node takes part: `[ha] node`, `[ha] lease`, and the longest target timeout.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub node: String,
    pub ttl: Duration,
    /// The longest `timeout` of any target: how long after the lease expires a write the
    /// old holder sent may still land.
    pub grace: Duration,
}

/// Where this node stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// The lease has not been asked yet (or the database cannot be reached).
    Unknown,
    /// Another node holds the lease (None: nobody holds it, and this node could not take it).
    Standby { leader: Option<String>, epoch: i64 },
    /// This node holds the lease; `ready` once the takeover wait is over.
    Leader { epoch: i64, ready: bool },
}

impl Role {
    /// The fence of a leader that may write now.
    pub fn fence(&self, node: &str) -> Option<Fence> {
        match self {
            Role::Leader { epoch, ready: true } => Some(Fence {
                node: node.to_string(),
                epoch: *epoch,
            }),
            _ => None,
        }
    }

    /// For `STATUS=`, logs and `/healthz`.
    pub fn describe(&self, node: &str) -> String {
        match self {
            Role::Unknown => "standby (lease not known yet)".into(),
            Role::Standby {
                leader: Some(l),
                epoch,
            } => format!("standby (leader {l}, epoch {epoch})"),
            Role::Standby {
                leader: None,
                epoch,
            } => {
                format!("standby (no leader, epoch {epoch})")
            }
            Role::Leader { epoch, ready: true } => format!("leader ({node}, epoch {epoch})"),
            Role::Leader {
                epoch,
                ready: false,
            } => format!("taking over (epoch {epoch}): waiting for the old leader's writes to end"),
        }
    }
}

/// Why a one-shot run could not take the lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "state database {location}: another node leads ({holder}, epoch {epoch}, lease expires in {expires_in_ms} ms); this run sends nothing"
    )]
    Held {
        location: String,
        holder: String,
        epoch: i64,
        expires_in_ms: i64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The local deadline of the lease: until when this node may believe it holds it.
#[derive(Clone, Debug)]
pub struct Guard {
    valid_until: Arc<Mutex<Option<Instant>>>,
}

impl Guard {
    fn new() -> Guard {
        Guard {
            valid_until: Arc::new(Mutex::new(None)),
        }
    }

    fn set(&self, until: Option<Instant>) {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }

    /// Whether the lease still holds on this machine's clock.
    pub fn holds(&self) -> bool {
        self.valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| Instant::now() < t)
    }
}

/// What one attempt to take the lease found.
enum Took {
    /// Taken: the new epoch, and how long to wait before the first write.
    Yes { epoch: i64, wait: Duration },
    /// Someone else holds it.
    No {
        holder: Option<String>,
        epoch: i64,
        expires_in_ms: i64,
    },
}

/// Creates or migrates the schema (with the lease row), on a blocking thread.
async fn migrate(at: &PgLocation) -> Result<()> {
    let at2 = at.clone();
    tokio::task::spawn_blocking(move || super::postgres::PgStore::open(&at2, None).map(drop))
        .await
        .map_err(|e| StoreError::Setup {
            location: at.url.clone(),
            message: format!("opening the state stopped unexpectedly: {e}"),
        })?
}

fn db(at: &PgLocation) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
    move |source| StoreError::Postgres {
        location: at.url.clone(),
        source,
    }
}

async fn try_take(
    client: &tokio_postgres::Client,
    at: &PgLocation,
    cfg: &LeaseConfig,
) -> Result<Took> {
    let ttl = cfg.ttl.as_secs_f64();
    let grace = cfg.grace.as_millis() as i64;
    let row = client
        .query_opt(
            "WITH old AS (SELECT holder, epoch, expires_at, released, grace_ms FROM lease WHERE id = 1 FOR UPDATE)
             UPDATE lease SET holder = $1, epoch = old.epoch + 1,
                    expires_at = clock_timestamp() + make_interval(secs => $2),
                    released = false, grace_ms = $3
             FROM old
             WHERE lease.id = 1 AND (old.released OR old.holder IS NULL OR old.expires_at <= clock_timestamp())
             RETURNING lease.epoch,
                 CASE WHEN old.released OR old.holder IS NULL THEN 0::float8
                      ELSE greatest(0, extract(epoch FROM old.expires_at - clock_timestamp()) * 1000
                                       + greatest(old.grace_ms, $3))::float8 END",
            &[&cfg.node, &ttl, &grace],
        )
        .await
        .map_err(db(at))?;
    if let Some(r) = row {
        let wait_ms: f64 = r.get(1);
        return Ok(Took::Yes {
            epoch: r.get(0),
            wait: Duration::from_millis(wait_ms.max(0.0) as u64),
        });
    }
    let r = client
        .query_one(
            "SELECT holder, epoch,
                    CASE WHEN released OR holder IS NULL THEN 0::float8
                         ELSE extract(epoch FROM expires_at - clock_timestamp()) * 1000 END
             FROM lease WHERE id = 1",
            &[],
        )
        .await
        .map_err(db(at))?;
    let ms: f64 = r.get(2);
    Ok(Took::No {
        holder: r.get(0),
        epoch: r.get(1),
        expires_in_ms: ms as i64,
    })
}

/// Renews this node's lease; false when it is no longer this node's.
async fn renew(
    client: &tokio_postgres::Client,
    at: &PgLocation,
    cfg: &LeaseConfig,
    epoch: i64,
) -> Result<bool> {
    let n = client
        .execute(
            "UPDATE lease SET expires_at = clock_timestamp() + make_interval(secs => $3), grace_ms = $4
             WHERE id = 1 AND holder = $1 AND epoch = $2 AND NOT released AND expires_at > clock_timestamp()",
            &[&cfg.node, &epoch, &cfg.ttl.as_secs_f64(), &(cfg.grace.as_millis() as i64)],
        )
        .await
        .map_err(db(at))?;
    Ok(n == 1)
}

async fn release(client: &tokio_postgres::Client, at: &PgLocation, cfg: &LeaseConfig, epoch: i64) {
    let r = client
        .execute(
            "UPDATE lease SET released = true, expires_at = clock_timestamp()
             WHERE id = 1 AND holder = $1 AND epoch = $2 AND NOT released",
            &[&cfg.node, &epoch],
        )
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %db(at)(e), "cannot release the lease; the next leader waits for it to expire");
    }
}

/// A node's part in the lease: a task that takes (or waits for) the lease and renews it,
/// publishing the node's [`Role`]. Released when stopped.
pub struct Lease {
    cfg: LeaseConfig,
    role: watch::Receiver<Role>,
    guard: Guard,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// The daemon's lease: keeps trying to take it (every third of the TTL) while another
    /// node leads, renews it while this node does.
    pub async fn start(at: PgLocation, cfg: LeaseConfig) -> Result<Lease> {
        // The schema (with the lease row) exists before the first attempt.
        migrate(&at).await?;
        Ok(Lease::spawn(at, cfg, None))
    }

    /// A one-shot run's lease: taken now or never. Another node's unexpired lease is
    /// `LeaseError::Held` (exit 4). Once taken, waits out the old holder's writes.
    pub async fn acquire_once(
        at: PgLocation,
        cfg: LeaseConfig,
    ) -> std::result::Result<Lease, LeaseError> {
        let client = at.connect_async().await?;
        let took = match try_take(&client, &at, &cfg).await {
            // A database without the schema yet (the first run on it): create it, then ask
            // again. Only then, so a run on a migrated database pays no extra connection.
            Err(StoreError::Postgres { source, .. })
                if source.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
            {
                migrate(&at).await?;
                try_take(&client, &at, &cfg).await?
            }
            took => took?,
        };
        match took {
            Took::No {
                holder,
                epoch,
                expires_in_ms,
            } => Err(LeaseError::Held {
                location: at.url.clone(),
                holder: holder.unwrap_or_else(|| "?".into()),
                epoch,
                expires_in_ms,
            }),
            Took::Yes { epoch, wait } => {
                let sent = Instant::now();
                let lease = Lease::spawn(at, cfg, Some((client, epoch, sent, wait)));
                let mut role = lease.role.clone();
                // Ready after the wait, unless the lease is lost meanwhile.
                let _ = role
                    .wait_for(|r| !matches!(r, Role::Leader { ready: false, .. }))
                    .await;
                Ok(lease)
            }
        }
    }

    fn spawn(
        at: PgLocation,
        cfg: LeaseConfig,
        taken: Option<(tokio_postgres::Client, i64, Instant, Duration)>,
    ) -> Lease {
        let initial = match &taken {
            Some((_, epoch, _, _)) => Role::Leader {
                epoch: *epoch,
                ready: false,
            },
            None => Role::Unknown,
        };
        let (tx, role) = watch::channel(initial);
        let guard = Guard::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(at, cfg.clone(), tx, guard.clone(), stop.clone(), taken));
        Lease {
            cfg,
            role,
            guard,
            stop,
            task,
        }
    }

    /// This node's role now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// Changes of the role.
    pub fn watch(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    pub fn node(&self) -> &str {
        &self.cfg.node
    }

    /// The fence a run writes under, when this node leads and may write.
    pub fn fence(&self) -> Option<Fence> {
        self.role().fence(&self.cfg.node)
    }

    /// The local deadline of the lease.
    pub fn guard(&self) -> Guard {
        self.guard.clone()
    }

    /// Stops renewing and releases the lease (if held).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The lease task: take or renew every third of the TTL, until stopped.
async fn run(
    at: PgLocation,
    cfg: LeaseConfig,
    role: watch::Sender<Role>,
    guard: Guard,
    stop: CancellationToken,
    taken: Option<(tokio_postgres::Client, i64, Instant, Duration)>,
) {
    let tick = (cfg.ttl / 3).max(Duration::from_millis(50));
    let mut client = None;
    // (epoch, ready at)
    let mut held: Option<(i64, Instant)> = None;
    if let Some((c, epoch, sent, wait)) = taken {
        client = Some(c);
        guard.set(Some(sent + cfg.ttl));
        held = Some((epoch, sent + wait));
        if wait > Duration::ZERO {
            tracing::info!(
                epoch,
                wait_ms = wait.as_millis() as u64,
                "lease taken; waiting for the old leader's writes to land or time out"
            );
        }
    }
    loop {
        // Ready once the takeover wait is over.
        if let Some((epoch, ready_at)) = held {
            let ready = Instant::now() >= ready_at;
            role.send_if_modified(|r| {
                let new = Role::Leader { epoch, ready };
                (*r != new).then(|| *r = new).is_some()
            });
        }
        let next = match held {
            Some((_, ready_at)) if ready_at > Instant::now() => tick.min(ready_at - Instant::now()),
            _ => tick,
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(next) => {}
        }
        if client
            .as_ref()
            .is_none_or(|c: &tokio_postgres::Client| c.is_closed())
        {
            match at.connect_async().await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the state database for the lease");
                    client = None;
                    if held.is_some() && !guard.holds() {
                        tracing::warn!(
                            "the lease ran out while the database could not be reached; standing by"
                        );
                        held = None;
                        role.send_replace(Role::Standby {
                            leader: None,
                            epoch: 0,
                        });
                    }
                    continue;
                }
            }
        }
        let c = client.as_ref().expect("connected above");
        let sent = Instant::now();
        match held {
            Some((epoch, ready_at)) => match renew(c, &at, &cfg, epoch).await {
                Ok(true) => guard.set(Some(sent + cfg.ttl)),
                Ok(false) => {
                    tracing::warn!(
                        epoch,
                        "the lease was lost (taken by another node, or expired); standing by"
                    );
                    guard.set(None);
                    held = None;
                    role.send_replace(Role::Standby {
                        leader: None,
                        epoch,
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the lease");
                    client = None;
                    if !guard.holds() {
                        held = None;
                        role.send_replace(Role::Standby {
                            leader: None,
                            epoch,
                        });
                    } else {
                        held = Some((epoch, ready_at));
                    }
                }
            },
            None => match try_take(c, &at, &cfg).await {
                Ok(Took::Yes { epoch, wait }) => {
                    guard.set(Some(sent + cfg.ttl));
                    held = Some((epoch, sent + wait));
                    tracing::info!(epoch, wait_ms = wait.as_millis() as u64, node = %cfg.node, "lease taken");
                    role.send_replace(Role::Leader {
                        epoch,
                        ready: wait.is_zero(),
                    });
                }
                Ok(Took::No { holder, epoch, .. }) => {
                    role.send_if_modified(|r| {
                        let new = Role::Standby {
                            leader: holder.clone(),
                            epoch,
                        };
                        (*r != new).then(|| *r = new).is_some()
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot ask for the lease");
                    client = None;
                }
            },
        }
    }
    if let (Some((epoch, _)), Some(c)) = (held, client.as_ref()) {
        release(c, &at, &cfg, epoch).await;
    }
    guard.set(None);
}
