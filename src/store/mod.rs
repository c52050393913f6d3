//! The state: the only module with SQL (SPEC 6.1, 6.2, 6.7).
//!
//! One interface, [`Backend`], two implementations: SQLite (`sqlite.rs`, the embedded
//! default) and PostgreSQL (`postgres.rs`, for two nodes). The engine sees only [`Store`]
//! (a backend behind one type) and, in a run, the [`Writer`] thread that owns it.
//!
//! Known state changes only through `record`, which writes the history row of a confirmed
//! call and its state delta in one transaction. Migrations are numbered SQL files applied
//! forward-only at open, each in its own transaction.
//!
//! In a run, the `Store` lives on its own thread behind a `Writer` (writer.rs): commits
//! and their fsyncs never run on a tokio worker, and records queued together share one
//! commit. On PostgreSQL every write of a run also checks the run's lease (lease.rs) in its
//! own transaction: a node that lost the lease commits nothing more.

mod copy;
mod delta;
mod history;
pub mod lease;
mod location;
mod lock;
#[cfg(test)]
pub(crate) mod pg_cluster;
mod postgres;
mod sqlite;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::plan::{Known, KnownMember};

pub use copy::copy_state;
pub use history::{CallRow, HistoryFilter, RunRow};
pub use lease::{Fence, LeaseError};
pub use location::{PgLocation, StateLocation};
pub use lock::{LockError, StateLock};
pub use sqlite::SqliteStore;
pub use writer::{Writer, WriterOptions, WriterStats};

/// What a target's answers have shown about the target (see `targets::Facts`), by name.
pub type Facts = BTreeMap<String, Fact>;

/// One fact learned about a target, and when (RFC 3339, UTC) it was last written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fact {
    pub value: String,
    pub at: String,
}

/// What a run reads of one target from the state database, as of one moment.
#[derive(Clone, Debug, Default)]
pub struct TargetState {
    pub known: Known,
    /// The resolution cache: email -> member id, None for "not found".
    pub cache: HashMap<String, Option<String>>,
    /// What the target's answers have shown about it (learned shapes, capabilities).
    pub facts: Facts,
}

/// What the no-op shortcut (SPEC 9) compares: the latest run's inputs, if it converged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunBase {
    /// The run whose result a shortcut repeats (the latest run, or the run it repeated).
    pub run: i64,
    pub source_digest: String,
    pub config_digest: String,
    pub state_generation: i64,
}

/// The latest run's row as the shortcut reads it: (id, converged, source digest, config
/// digest, state generation, unchanged since).
pub(crate) type LatestRun = (
    i64,
    bool,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

impl RunBase {
    /// The base the latest run gives the shortcut: only a converged run with every digest.
    pub(crate) fn of(latest: Option<LatestRun>) -> Option<RunBase> {
        match latest {
            Some((id, true, Some(source), Some(config), Some(generation), since)) => {
                Some(RunBase {
                    run: since.unwrap_or(id),
                    source_digest: source,
                    config_digest: config,
                    state_generation: generation,
                })
            }
            _ => None,
        }
    }
}

/// A state database problem, with the file or database it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL refused: connecting, migrating, a query or a commit. `location` is the
    /// URL without its password.
    #[error("state database {location}: {}", pg_text(.source))]
    Postgres {
        location: String,
        #[source]
        source: ::postgres::Error,
    },
    /// PostgreSQL's TLS settings could not be made (the `ca_file`).
    #[error("state database {location}: {message}")]
    Setup { location: String, message: String },
    /// This node no longer holds the lease it started the run under (SPEC 6.7): the write
    /// was not committed, and the node must send nothing more.
    #[error(
        "state database {location}: this node ({node}) no longer holds the lease of epoch {epoch}{}; nothing more is written or sent",
        match (.holder, .holder_epoch) {
            (Some(h), Some(e)) => format!(" (now held by {h}, epoch {e})"),
            _ => String::new(),
        }
    )]
    Fenced {
        location: String,
        node: String,
        epoch: i64,
        holder: Option<String>,
        holder_epoch: Option<i64>,
    },
    /// The lease ran out on this node's own clock (its renewals failed or came too late):
    /// nothing more is sent, even before the server says so.
    #[error(
        "state database {location}: the lease ran out on this node's clock before it could be renewed; nothing more is written or sent"
    )]
    LeaseRanOut { location: String },
    /// `state copy` to a destination that already holds a state.
    #[error(
        "state database {location}: it already holds a state; `state copy` never overwrites one"
    )]
    NotEmpty { location: String },
    /// SQLite refused: opening, migrating, a query or a commit.
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The database file or its directory could not be created.
    #[error("state database {path}: cannot create it: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The writer thread is gone (closed, or it stopped): nothing more can be recorded.
    #[error("state database {path}: the store writer has stopped; nothing more can be recorded")]
    Closed { path: PathBuf },
}

impl StoreError {
    pub(crate) fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
        move |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether this error says the node lost its lease (not a broken database).
    pub fn is_fenced(&self) -> bool {
        matches!(
            self,
            StoreError::Fenced { .. } | StoreError::LeaseRanOut { .. }
        )
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What PostgreSQL said: the server's message, code and detail, not only "db error".
fn pg_text(e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({}): {}", db.severity(), db.code().code(), db.message());
            if let Some(d) = db.detail() {
                s += &format!("; {d}");
            }
            if let Some(h) = db.hint() {
                s += &format!("; hint: {h}");
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                s += &format!(": {c}");
                cause = c.source();
            }
            s
        }
    }
}

/// What a confirmed call changes in the known state.
#[derive(Clone, Debug, PartialEq)]
pub enum Delta {
    /// A read, a lookup or a failed call: history only.
    None,
    /// The group as the target now has it (created, adopted or read back by `--full`):
    /// replaces its known row and members, and clears any create intent.
    Group {
        key: String,
        remote_id: String,
        name: String,
        members: BTreeMap<String, KnownMember>,
        owners: BTreeMap<String, KnownMember>,
    },
    /// Members added or removed on a known group.
    Members {
        key: String,
        added: Vec<(String, KnownMember)>,
        removed: Vec<String>,
        owners_added: Vec<(String, KnownMember)>,
        owners_removed: Vec<String>,
        /// When set: exactly these members may receive calls.
        receive_call: Option<Vec<String>>,
    },
    /// The group was renamed.
    Renamed { key: String, name: String },
    /// The group was deleted, or found gone: forget it.
    Forget { key: String },
}

/// One call sent to a target, as the history keeps it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CallRecord {
    pub target: String,
    pub group_key: Option<String>,
    pub group_name: Option<String>,
    /// `create`, `update`, `add`, `remove`, `rename`, `delete`, `read`, `find`, `lookup`, `login`.
    pub op: String,
    pub method: String,
    /// Path and query, without secrets.
    pub path: String,
    pub added: usize,
    pub removed: usize,
    /// HTTP status; None when no answer came.
    pub status: Option<u16>,
    pub ok: bool,
    /// The vendor's message or the transport error; never a secret.
    pub error: Option<String>,
    pub latency_ms: u64,
    pub attempts: u32,
    /// (change '+'/'-', member id, email) for membership calls.
    #[serde(skip)]
    pub members: Vec<(char, String, Option<String>)>,
}

pub fn now() -> String {
    timestamp(time::OffsetDateTime::now_utc())
}

/// The state's one form of a time: RFC 3339 in UTC with milliseconds, fixed width, so
/// times compare as text (`runs.started_at`, fact and history cutoffs).
pub fn timestamp(t: time::OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .expect("a time within years 0-9999 formats")
}

/// One column value of a state table, as `state copy` moves it: both backends keep only
/// integers and text (times are RFC 3339 text, flags 0/1), so a row moves unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

/// The tables `state copy` moves, in an order that keeps every reference valid, with their
/// columns. Both backends have exactly these (the lease is not state: it stays behind).
pub const TABLES: &[(&str, &[&str])] = &[
    (
        "groups",
        &["target", "key", "remote_id", "name", "updated_at"],
    ),
    (
        "members",
        &[
            "target",
            "key",
            "role",
            "member_id",
            "email",
            "owned",
            "receive_call",
        ],
    ),
    (
        "intents",
        &["target", "key", "name", "run_id", "created_at"],
    ),
    (
        "resolution",
        &["target", "email", "member_id", "resolved_at"],
    ),
    (
        "runs",
        &[
            "id",
            "started_at",
            "finished_at",
            "command",
            "full",
            "outcome",
            "exit_code",
            "summary",
            "source_digest",
            "config_digest",
            "state_generation",
            "converged",
            "unchanged_since",
        ],
    ),
    (
        "calls",
        &[
            "id",
            "run_id",
            "at",
            "target",
            "group_key",
            "group_name",
            "op",
            "method",
            "path",
            "added",
            "removed",
            "status",
            "outcome",
            "error",
            "latency_ms",
            "attempts",
        ],
    ),
    ("call_members", &["call_id", "change", "member_id", "email"]),
    ("target_facts", &["target", "name", "value", "updated_at"]),
];

/// The state's one interface (SPEC 6.1): what the engine, the commands and `state copy`
/// ask of a backend. SQLite and PostgreSQL implement it; `store::tests` runs the same
/// suite against both. Every method that writes commits before it returns; on PostgreSQL
/// it first checks the lease the store was opened under ([`Fence`]) in the same
/// transaction, and fails with [`StoreError::Fenced`] without writing when it is gone.
pub trait Backend: Send {
    /// Where the state is, for messages: a file path, or a URL without its password.
    fn location(&self) -> String;
    /// Everything a run reads of one target (known state, resolution cache, facts), in one
    /// read transaction: one state, never parts of two.
    fn snapshot(&self, target: &str) -> Result<TargetState>;
    /// The known state of one target, in one read transaction.
    fn known(&self, target: &str) -> Result<Known>;
    /// Targets that have known state (including ones no longer configured).
    fn targets(&self) -> Result<Vec<String>>;
    /// The resolution cache of one target: email -> member id (None = known not found).
    fn resolution_cache(&self, target: &str) -> Result<HashMap<String, Option<String>>>;
    /// Caches a resolution (None = the target has nobody with that email).
    fn cache_resolution(&self, target: &str, email: &str, id: Option<&str>) -> Result<()>;
    /// What the target's answers have shown about it, by name.
    fn facts(&self, target: &str) -> Result<Facts>;
    /// Every target's facts.
    fn all_facts(&self) -> Result<BTreeMap<String, Facts>>;
    /// Keeps a fact about a target (None forgets it). Durable on return: a fact may stop writes.
    fn set_fact(&self, target: &str, name: &str, value: Option<&str>) -> Result<()>;
    /// Starts a run; returns its id.
    fn begin_run(&self, command: &str, full: bool, digest: &str) -> Result<i64>;
    fn finish_run(&self, run: i64, outcome: &str, exit_code: i32, summary: &str) -> Result<()>;
    /// The generation of the known state: moved by every write to it.
    fn state_generation(&self) -> Result<i64>;
    /// The latest run, when it is one the shortcut may repeat: finished, every target
    /// converged, nothing left out. None after a failed, unfinished or scoped run.
    fn run_base(&self) -> Result<Option<RunBase>>;
    /// Marks `run` as one every target converged in: its config digest and the state
    /// generation now (after all of its writes), and the run it repeats, if a shortcut.
    fn mark_converged(
        &self,
        run: i64,
        config_digest: &str,
        unchanged_since: Option<i64>,
    ) -> Result<()>;
    /// Writes down that a write is about to be sent to a group (SPEC 6.2); durable on
    /// return. It stays until the operation drops it, having ended.
    fn write_intent(&self, run: i64, target: &str, key: &str, name: &str) -> Result<()>;
    /// Drops an intent: its operation ended, or its group was read back.
    fn drop_intent(&self, target: &str, key: &str) -> Result<()>;
    /// Records several calls and their state changes in ONE transaction (group commit):
    /// all of them or none. Returns the call ids in order.
    fn record_many(&mut self, batch: &[(i64, &CallRecord, &Delta)]) -> Result<Vec<i64>>;
    /// Applies many state changes without calls in one transaction (seeding a large known
    /// state in benchmarks and repairs).
    fn apply_many(&mut self, deltas: &[(&str, Delta)]) -> Result<()>;
    /// Forgets runs older than `days` days with their calls. Keeps the latest run and runs
    /// that intents still name. Returns the number of runs forgotten.
    fn prune_history(&mut self, days: u32) -> Result<usize>;
    /// Calls, newest first.
    fn history(&self, f: &HistoryFilter) -> Result<Vec<CallRow>>;
    /// Runs, newest first.
    fn runs(&self, limit: usize, run: Option<i64>) -> Result<Vec<RunRow>>;
    /// Checks that the lease this store was opened under still holds (PostgreSQL), in a
    /// transaction of its own: called before every vendor write request. SQLite: always
    /// true (its file lock is held for the whole run).
    fn check_fence(&self) -> Result<()>;
    /// Whether this backend fences (PostgreSQL opened under a lease).
    fn fenced(&self) -> bool;
    /// Makes everything committed durable in the main file (SQLite's checkpoint).
    fn checkpoint(&self) -> Result<()>;
    /// Whether the state holds nothing yet (no run, no group): `state copy` writes only there.
    fn is_empty(&self) -> Result<bool>;
    /// Every row of `table` (one of [`TABLES`]) with `columns`, in key order, to `row`.
    fn export_rows(
        &self,
        table: &str,
        columns: &[&str],
        row: &mut dyn FnMut(Vec<Value>) -> Result<()>,
    ) -> Result<()>;
    /// Inserts rows into `table`, in one transaction; `finish` also sets the state
    /// generation and any id sequence after the last table.
    fn import_rows(&mut self, table: &str, columns: &[&str], rows: &[Vec<Value>]) -> Result<()>;
    /// After an import: the generation and id counters continue from the copied state.
    fn finish_import(&mut self, generation: i64) -> Result<()>;
    /// Closes the connection, reporting what the database says.
    fn close(self: Box<Self>) -> Result<()>;
    /// Tests: the SQLite store behind this backend, for its test seams.
    #[cfg(test)]
    fn sqlite(&mut self) -> Option<&mut SqliteStore> {
        None
    }
}

/// An open state, SQLite or PostgreSQL: derefs to its [`Backend`].
pub struct Store {
    inner: Box<dyn Backend>,
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;
    fn deref(&self) -> &Self::Target {
        &*self.inner
    }
}

impl std::ops::DerefMut for Store {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.inner
    }
}

impl From<SqliteStore> for Store {
    fn from(s: SqliteStore) -> Store {
        Store { inner: Box::new(s) }
    }
}

impl Store {
    /// Opens (creating the file and its directory if missing) and migrates a SQLite state.
    pub fn open(path: &Path) -> Result<Store> {
        SqliteStore::open(path).map(Store::from)
    }

    /// Opens an existing SQLite state read-only; None if it does not exist yet.
    pub fn open_read_only(path: &Path) -> Result<Option<Store>> {
        Ok(SqliteStore::open_read_only(path)?.map(Store::from))
    }

    /// Opens (creating and migrating) the state where `at` says. On PostgreSQL, `fence`
    /// is the lease this store's writes are made under (None: a store that only reads, or
    /// `state copy`).
    pub fn open_at(at: &StateLocation, fence: Option<Fence>) -> Result<Store> {
        match at {
            StateLocation::Sqlite(path) => Store::open(path),
            StateLocation::Postgres(pg) => Ok(Store {
                inner: Box::new(postgres::PgStore::open(pg, fence)?),
            }),
        }
    }

    /// Opens the state where `at` says for reading only: None when there is none yet
    /// (SQLite: no file; PostgreSQL: no schema), which means nothing is known.
    pub fn open_read_only_at(at: &StateLocation) -> Result<Option<Store>> {
        match at {
            StateLocation::Sqlite(path) => Store::open_read_only(path),
            StateLocation::Postgres(pg) => {
                Ok(postgres::PgStore::open_read_only(pg)?.map(|s| Store { inner: Box::new(s) }))
            }
        }
    }

    /// Records one call and, when it was confirmed, its state change: one transaction.
    pub fn record(&mut self, run: i64, call: &CallRecord, delta: &Delta) -> Result<i64> {
        let ids = self.inner.record_many(&[(run, call, delta)])?;
        Ok(ids[0])
    }

    /// Applies a state change without a call (tests and repairs).
    pub fn apply(&mut self, target: &str, delta: &Delta) -> Result<()> {
        self.inner.apply_many(&[(target, delta.clone())])
    }

    /// Closes the connection, reporting what the database says (a plain drop would ignore it).
    pub fn close(self) -> Result<()> {
        self.inner.close()
    }
}

/// Every target's facts in the state at `at`, read-only, for the commands that only read
/// (`check --online`, `explain --online`): empty when there is no state yet or it cannot
/// be read (then the targets behave as on a first run, which is safe).
pub fn facts_or_none(at: &StateLocation) -> BTreeMap<String, Facts> {
    let read = || -> Result<BTreeMap<String, Facts>> {
        match Store::open_read_only_at(at)? {
            Some(store) => store.all_facts(),
            None => Ok(BTreeMap::new()),
        }
    };
    read().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read what is known about the targets; probing as on a first run");
        BTreeMap::new()
    })
}

#[cfg(test)]
mod tests;
