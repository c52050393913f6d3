//! The state database: the only module with SQL (SPEC 6.1, 6.2).
//!
//! Known state changes only through `record`, which writes the history row of a confirmed
//! call and its state delta in one transaction. Migrations are numbered SQL files applied
//! forward-only at open, each in its own transaction, tracked by `PRAGMA user_version`.
//!
//! In a run, the `Store` lives on its own thread behind a `Writer` (writer.rs): SQLite
//! commits and their fsyncs never run on a tokio worker, and records queued together share
//! one commit.

mod delta;
mod history;
mod lock;
#[cfg(test)]
pub(crate) mod pg_cluster;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

use crate::intern::Interner;
use crate::plan::{Known, KnownGroup, KnownMember};

use delta::{apply_delta, insert_call};
pub use history::{CallRow, HistoryFilter, RunRow};
pub use lock::{LockError, StateLock};
pub use writer::{Writer, WriterOptions, WriterStats};

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_initial.sql"),
    include_str!("migrations/002_unchanged.sql"),
    include_str!("migrations/003_target_facts.sql"),
];

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

/// A state database problem, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
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
    fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
        move |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The database file this error concerns.
    pub fn path(&self) -> &Path {
        match self {
            StoreError::Sqlite { path, .. }
            | StoreError::Io { path, .. }
            | StoreError::Closed { path } => path,
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

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

/// An open state database.
/// A text column borrowed from its row (no copy).
fn text<'r>(r: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'r str> {
    let v = r.get_ref(i)?;
    v.as_str()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, v.data_type(), Box::new(e)))
}

/// One group's member rows as [`Store::known`] reads them, sorted by id.
#[derive(Default)]
struct Batch {
    key: String,
    members: Vec<(String, KnownMember)>,
    owners: Vec<(String, KnownMember)>,
}

impl Batch {
    /// Hands the rows to their group (rows of a group not in `groups` are dropped).
    fn flush(&mut self, known: &mut Known) {
        let (members, owners) = (
            std::mem::take(&mut self.members),
            std::mem::take(&mut self.owners),
        );
        if let Some(g) = known.groups.get_mut(&self.key) {
            g.members = members.into_iter().collect();
            g.owners = owners.into_iter().collect();
        }
    }
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// `relaxed` could not put `synchronous` back to FULL after a relaxed commit: the next
    /// write that must be synced (an intent above all) restores it first, or fails.
    full_lost: std::cell::Cell<bool>,
    /// Tests: runs between the reads of `snapshot` (to prove they see one state).
    #[cfg(test)]
    pub(crate) between_reads: Option<Box<dyn Fn() + Send>>,
    /// Tests: makes restoring `synchronous = FULL` fail.
    #[cfg(test)]
    pub(crate) fail_restore: std::cell::Cell<bool>,
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

impl Store {
    /// Opens (creating the file and its directory if missing) and migrates.
    /// A new file is created with mode 0600 before SQLite opens it (SPEC 6.5: it holds
    /// people's emails); SQLite gives its `-wal` and `-shm` files the same mode.
    pub fn open(path: &Path) -> Result<Store> {
        create_private(path)?;
        let wrap = StoreError::sqlite(path);
        let conn = Connection::open(path).map_err(wrap)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(wrap)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(wrap)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(wrap)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(wrap)?;
        let mut store = Store::with(conn, path);
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing database read-only (dry-runs change nothing); None if it does not
    /// exist yet, which means nothing is known.
    pub fn open_read_only(path: &Path) -> Result<Option<Store>> {
        if !path.exists() {
            return Ok(None);
        }
        let wrap = StoreError::sqlite(path);
        // NO_MUTEX as `Connection::open` has it: the connection is used by one thread at a
        // time; without it SQLite locks a mutex on every column read (a third of reading
        // a million known memberships).
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(wrap)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(wrap)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(wrap)?;
        if version == 0 {
            return Ok(None);
        }
        Ok(Some(Store::with(conn, path)))
    }

    fn with(conn: Connection, path: &Path) -> Store {
        Store {
            conn,
            path: path.to_path_buf(),
            full_lost: std::cell::Cell::new(false),
            #[cfg(test)]
            between_reads: None,
            #[cfg(test)]
            fail_restore: std::cell::Cell::new(false),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn wrap(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn migrate(&mut self) -> Result<()> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.wrap(e))?;
        let w = StoreError::sqlite(&self.path);
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let tx = self.conn.transaction().map_err(&w)?;
            tx.execute_batch(sql).map_err(&w)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(&w)?;
            tx.commit().map_err(&w)?;
        }
        Ok(())
    }

    /// Everything a run reads of one target (known state, resolution cache, facts), in one
    /// read transaction: one state, never parts of two (a dry-run reads without the lock,
    /// while a real run may be writing).
    pub fn snapshot(&self, target: &str) -> Result<TargetState> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.wrap(e))?;
        let known = self.known_in(target)?;
        let cache = self.resolution_cache(target)?;
        let facts = self.facts(target)?;
        tx.finish().map_err(|e| self.wrap(e))?;
        Ok(TargetState {
            known,
            cache,
            facts,
        })
    }

    /// The known state of one target, in one read transaction.
    pub fn known(&self, target: &str) -> Result<Known> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.wrap(e))?;
        let known = self.known_in(target)?;
        tx.finish().map_err(|e| self.wrap(e))?;
        Ok(known)
    }

    /// `known`'s reads, inside the caller's transaction.
    fn known_in(&self, target: &str) -> Result<Known> {
        let w = |e| self.wrap(e);
        let mut known = Known::default();
        let mut q = self
            .conn
            .prepare_cached("SELECT key, remote_id, name FROM groups WHERE target = ?1")
            .map_err(w)?;
        let rows = q
            .query_map([target], |r| {
                Ok(KnownGroup {
                    key: r.get(0)?,
                    remote_id: r.get(1)?,
                    name: r.get(2)?,
                    ..Default::default()
                })
            })
            .map_err(w)?;
        for g in rows {
            let g = g.map_err(w)?;
            known.groups.insert(g.key.clone(), g);
        }
        #[cfg(test)]
        if let Some(f) = &self.between_reads {
            f();
        }
        // In primary-key order (SQLite's BINARY collation is Rust's `str` order): each
        // group's rows come together and sorted, so its maps are built in bulk, and no key
        // or role is copied out of SQLite per row.
        let mut q = self
            .conn
            .prepare_cached(
                "SELECT key, role, member_id, email, owned, receive_call FROM members \
                 WHERE target = ?1 ORDER BY key, role, member_id",
            )
            .map_err(w)?;
        let mut rows = q.query([target]).map_err(w)?;
        let mut batch = Batch::default();
        // Each person's email once, shared by all their memberships.
        let mut emails = Interner::default();
        while let Some(r) = rows.next().map_err(w)? {
            let key = text(r, 0).map_err(w)?;
            if batch.key != key {
                batch.flush(&mut known);
                batch.key = key.to_string();
            }
            let owner = text(r, 1).map_err(w)? == "owner";
            let id: String = r.get(2).map_err(w)?;
            let email = match r.get_ref(3).map_err(w)? {
                rusqlite::types::ValueRef::Null => None,
                _ => Some(emails.intern(text(r, 3).map_err(w)?)),
            };
            let m = KnownMember {
                email,
                owned: r.get(4).map_err(w)?,
                receive_call: r.get(5).map_err(w)?,
            };
            if owner {
                batch.owners.push((id, m));
            } else {
                batch.members.push((id, m));
            }
        }
        batch.flush(&mut known);
        let mut q = self
            .conn
            .prepare_cached("SELECT key FROM intents WHERE target = ?1")
            .map_err(w)?;
        for k in q
            .query_map([target], |r| r.get::<_, String>(0))
            .map_err(w)?
        {
            known.intents.insert(k.map_err(w)?);
        }
        Ok(known)
    }

    /// Targets that have known state (including ones no longer configured).
    pub fn targets(&self) -> Result<Vec<String>> {
        let w = |e| self.wrap(e);
        let mut q = self
            .conn
            .prepare("SELECT DISTINCT target FROM groups UNION SELECT DISTINCT target FROM intents ORDER BY 1")
            .map_err(w)?;
        q.query_map([], |r| r.get(0))
            .map_err(w)?
            .collect::<std::result::Result<_, _>>()
            .map_err(w)
    }

    /// The resolution cache of one target: email -> member id (None = known not found).
    pub fn resolution_cache(&self, target: &str) -> Result<HashMap<String, Option<String>>> {
        let w = |e| self.wrap(e);
        let mut q = self
            .conn
            .prepare_cached("SELECT email, member_id FROM resolution WHERE target = ?1")
            .map_err(w)?;
        q.query_map([target], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(w)?
            .collect::<std::result::Result<_, _>>()
            .map_err(w)
    }

    /// Caches a resolution (None = the target has nobody with that email).
    pub fn cache_resolution(&self, target: &str, email: &str, id: Option<&str>) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO resolution (target, email, member_id, resolved_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (target, email) DO UPDATE SET member_id = ?3, resolved_at = ?4",
            )
            .and_then(|mut q| q.execute(params![target, email, id, now()]))
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    /// What the target's answers have shown about it (learned answer shapes, server
    /// capabilities), by name.
    pub fn facts(&self, target: &str) -> Result<Facts> {
        let w = |e| self.wrap(e);
        if !self.has_facts()? {
            // A database older than this program, opened read-only: nothing learned yet.
            return Ok(Facts::new());
        }
        let mut q = self
            .conn
            .prepare_cached("SELECT name, value, updated_at FROM target_facts WHERE target = ?1")
            .map_err(w)?;
        q.query_map([target], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Fact {
                    value: r.get(1)?,
                    at: r.get(2)?,
                },
            ))
        })
        .map_err(w)?
        .collect::<std::result::Result<_, _>>()
        .map_err(w)
    }

    /// Whether the database has the facts table (a read-only open does not migrate).
    fn has_facts(&self) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'target_facts'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| self.wrap(e))
    }

    /// Keeps a fact about a target (None forgets it). Synced: a fact may stop writes.
    pub fn set_fact(&self, target: &str, name: &str, value: Option<&str>) -> Result<()> {
        self.synced()?;
        let r = match value {
            Some(v) => self.conn.execute(
                "INSERT INTO target_facts (target, name, value, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (target, name) DO UPDATE SET value = ?3, updated_at = ?4",
                params![target, name, v, now()],
            ),
            None => self.conn.execute(
                "DELETE FROM target_facts WHERE target = ?1 AND name = ?2",
                params![target, name],
            ),
        };
        r.map(|_| ()).map_err(|e| self.wrap(e))
    }

    /// Starts a run; returns its id.
    pub fn begin_run(&self, command: &str, full: bool, digest: &str) -> Result<i64> {
        self.synced()?;
        self.conn
            .execute(
                "INSERT INTO runs (started_at, command, full, source_digest) VALUES (?1, ?2, ?3, ?4)",
                params![now(), command, full, digest],
            )
            .map_err(|e| self.wrap(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(&self, run: i64, outcome: &str, exit_code: i32, summary: &str) -> Result<()> {
        self.synced()?;
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?2, outcome = ?3, exit_code = ?4, summary = ?5 WHERE id = ?1",
                params![run, now(), outcome, exit_code, summary],
            )
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    /// The generation of the known state: moved by every write to it (triggers).
    pub fn state_generation(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT n FROM generation WHERE id = 1", [], |r| r.get(0))
            .map_err(|e| self.wrap(e))
    }

    /// The latest run, when it is one the shortcut may repeat: finished, every target
    /// converged, nothing left out. None after a failed, unfinished or scoped run.
    pub fn run_base(&self) -> Result<Option<RunBase>> {
        let row = self
            .conn
            .query_row(
                "SELECT id, converged, source_digest, config_digest, state_generation, unchanged_since
                 FROM runs ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, bool>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.wrap(e))?;
        Ok(match row {
            Some((id, true, Some(source), Some(config), Some(generation), since)) => {
                Some(RunBase {
                    run: since.unwrap_or(id),
                    source_digest: source,
                    config_digest: config,
                    state_generation: generation,
                })
            }
            _ => None,
        })
    }

    /// Marks `run` as one every target converged in: its config digest and the state
    /// generation now (after all of its writes), and the run it repeats, if a shortcut.
    pub fn mark_converged(
        &self,
        run: i64,
        config_digest: &str,
        unchanged_since: Option<i64>,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET converged = 1, config_digest = ?2, unchanged_since = ?3,
                 state_generation = (SELECT n FROM generation WHERE id = 1) WHERE id = ?1",
                params![run, config_digest, unchanged_since],
            )
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    /// Writes down that a write (create, membership change, rename, delete) is about to be
    /// sent to a group (SPEC 6.2). It stays until the operation drops it, having ended.
    pub fn write_intent(&self, run: i64, target: &str, key: &str, name: &str) -> Result<()> {
        self.synced()?;
        self.conn
            .execute(
                "INSERT INTO intents (target, key, name, run_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (target, key) DO UPDATE SET name = ?3, run_id = ?4",
                params![target, key, name, run, now()],
            )
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    /// Drops an intent: its operation ended, or its group was read back. Without an fsync
    /// of its own, as `record_many`: an intent whose drop a power cut loses costs the next
    /// run one read-back of its group, nothing more.
    pub fn drop_intent(&self, target: &str, key: &str) -> Result<()> {
        self.relaxed(|conn| {
            conn.execute(
                "DELETE FROM intents WHERE target = ?1 AND key = ?2",
                params![target, key],
            )
            .map(|_| ())
        })
    }

    /// Runs `f` with `synchronous = NORMAL` (its commit not synced until the next one that
    /// is), then back to `FULL`. The result is `f`'s: a commit that happened is reported as
    /// done even when `FULL` cannot be restored (reporting it failed would make the writer
    /// record it again); then `full_lost` is set, and the next write that must be synced
    /// restores `FULL` first or fails (`synced`).
    fn relaxed<R>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> Result<R> {
        let w = |e| self.wrap(e);
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(w)?;
        let result = f(&self.conn);
        if let Err(e) = self.restore_full() {
            self.full_lost.set(true);
            tracing::error!(error = %self.wrap(e), "cannot set synchronous = FULL again; the next write that must be synced will try again first");
        }
        result.map_err(w)
    }

    fn restore_full(&self) -> rusqlite::Result<()> {
        #[cfg(test)]
        if self.fail_restore.get() {
            return Err(rusqlite::Error::InvalidQuery);
        }
        self.conn.pragma_update(None, "synchronous", "FULL")
    }

    /// Before a write that must be synced (an intent, a run row, a fact): `synchronous` is
    /// FULL, or the write is refused (nothing is sent on the strength of an unsynced intent).
    fn synced(&self) -> Result<()> {
        if self.full_lost.get() {
            self.restore_full().map_err(|e| self.wrap(e))?;
            self.full_lost.set(false);
        }
        Ok(())
    }

    /// Records one call and, when it was confirmed, its state change: one transaction.
    pub fn record(&mut self, run: i64, call: &CallRecord, delta: &Delta) -> Result<i64> {
        let ids = self.record_many(&[(run, call, delta)])?;
        Ok(ids[0])
    }

    /// Records several calls and their state changes in ONE transaction (group commit):
    /// all of them or none. Returns the call ids in order.
    ///
    /// Committed without an fsync of its own (`synchronous = NORMAL`, WAL): durable against
    /// a crash of the process at once, and against a power loss with the next commit that
    /// syncs (every intent, run row and other write keeps `synchronous = FULL`, and syncing
    /// the WAL makes every earlier commit durable too). A confirmation lost to a power cut is
    /// one a crash between the vendor's answer and the commit would lose as well: the next
    /// run plans it again (adds and removes are idempotent; a create is guarded by its
    /// intent, which was synced before the create was sent).
    pub fn record_many(&mut self, batch: &[(i64, &CallRecord, &Delta)]) -> Result<Vec<i64>> {
        self.relaxed(|conn| {
            let tx = conn.unchecked_transaction()?;
            let mut ids = Vec::with_capacity(batch.len());
            for (run, call, delta) in batch {
                ids.push(insert_call(&tx, *run, call, delta)?);
            }
            tx.commit()?;
            Ok(ids)
        })
    }

    /// Closes the connection, reporting what SQLite says (a plain drop would ignore it).
    pub fn close(self) -> Result<()> {
        let Store { conn, path, .. } = self;
        conn.close()
            .map_err(|(_, source)| StoreError::Sqlite { path, source })
    }

    /// Applies a state change without a call (e.g. forgetting a group a `--full` read
    /// found gone is recorded with its read call instead; this is for tests and repairs).
    pub fn apply(&mut self, target: &str, delta: &Delta) -> Result<()> {
        let w = StoreError::sqlite(&self.path);
        let tx = self.conn.transaction().map_err(w)?;
        apply_delta(&tx, target, delta, &now()).map_err(w)?;
        tx.commit().map_err(w)
    }

    /// Applies many state changes without calls in one transaction (seeding a large known
    /// state in benchmarks and repairs).
    pub fn apply_many(&mut self, deltas: &[(&str, Delta)]) -> Result<()> {
        let w = StoreError::sqlite(&self.path);
        let tx = self.conn.transaction().map_err(w)?;
        let at = now();
        for (target, delta) in deltas {
            apply_delta(&tx, target, delta, &at).map_err(w)?;
        }
        tx.commit().map_err(w)
    }

    /// Moves the write-ahead log into the database file (so its size is the whole state).
    pub fn checkpoint(&self) -> Result<()> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(|e| self.wrap(e))
    }
}

/// Every target's facts in the database at `path`, read-only, for the commands that only
/// read (`check --online`, `explain --online`): empty when there is no database yet or it
/// cannot be read (then the targets behave as on a first run, which is safe).
pub fn facts_or_none(path: &Path) -> BTreeMap<String, Facts> {
    let read = || -> Result<BTreeMap<String, Facts>> {
        let Some(store) = Store::open_read_only(path)? else {
            return Ok(BTreeMap::new());
        };
        if !store.has_facts()? {
            return Ok(BTreeMap::new());
        }
        let mut q = store
            .conn
            .prepare("SELECT target, name, value, updated_at FROM target_facts")
            .map_err(|e| store.wrap(e))?;
        let mut all: BTreeMap<String, Facts> = BTreeMap::new();
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    Fact {
                        value: r.get(2)?,
                        at: r.get(3)?,
                    },
                ))
            })
            .map_err(|e| store.wrap(e))?;
        for row in rows {
            let (target, name, fact) = row.map_err(|e| store.wrap(e))?;
            all.entry(target).or_default().insert(name, fact);
        }
        Ok(all)
    };
    read().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read what is known about the targets; probing as on a first run");
        BTreeMap::new()
    })
}

/// Creates the database file (and its directory) with mode 0600 when it does not exist yet.
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests;
