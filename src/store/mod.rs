//! The state database: the only module with SQL (SPEC 6.1, 6.2).
//!
//! Known state changes only through `record`, which writes the history row of a confirmed
//! call and its state delta in one transaction. Migrations are numbered SQL files applied
//! forward-only at open, each in its own transaction, tracked by `PRAGMA user_version`.
//!
//! In a run, the `Store` lives on its own thread behind a `Writer` (writer.rs): SQLite
//! commits and their fsyncs never run on a tokio worker, and records queued together share
//! one commit.

mod lock;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, params};
use serde::Serialize;

use crate::plan::{Known, KnownGroup, KnownMember};

pub use lock::{LockError, StateLock};
pub use writer::{Writer, WriterOptions, WriterStats};

const MIGRATIONS: &[&str] = &[include_str!("migrations/001_initial.sql")];

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

/// A history row as `history` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct CallRow {
    pub id: i64,
    pub run: i64,
    pub at: String,
    pub target: String,
    pub group_key: Option<String>,
    pub group_name: Option<String>,
    pub op: String,
    pub method: String,
    pub path: String,
    pub added: i64,
    pub removed: i64,
    pub status: Option<i64>,
    pub outcome: String,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub attempts: i64,
}

/// A run as `history` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub command: String,
    pub full: bool,
    pub outcome: Option<String>,
    pub exit_code: Option<i64>,
    pub summary: Option<String>,
}

/// Filters for `history`.
#[derive(Clone, Debug, Default)]
pub struct HistoryFilter {
    pub limit: usize,
    pub target: Option<String>,
    /// Group key or name.
    pub group: Option<String>,
    pub run: Option<i64>,
    /// Only calls that touched this email.
    pub email: Option<String>,
}

/// An open state database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .unwrap_or_default()
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
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
        };
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
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(wrap)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(wrap)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(wrap)?;
        if version == 0 {
            return Ok(None);
        }
        Ok(Some(Store {
            conn,
            path: path.to_path_buf(),
        }))
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

    /// The known state of one target.
    pub fn known(&self, target: &str) -> Result<Known> {
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
        let mut q = self
            .conn
            .prepare_cached(
                "SELECT key, role, member_id, email, owned, receive_call FROM members WHERE target = ?1",
            )
            .map_err(w)?;
        let mut rows = q.query([target]).map_err(w)?;
        while let Some(r) = rows.next().map_err(w)? {
            let key: String = r.get(0).map_err(w)?;
            let role: String = r.get(1).map_err(w)?;
            let id: String = r.get(2).map_err(w)?;
            let m = KnownMember {
                email: r.get(3).map_err(w)?,
                owned: r.get(4).map_err(w)?,
                receive_call: r.get(5).map_err(w)?,
            };
            if let Some(g) = known.groups.get_mut(&key) {
                if role == "owner" {
                    g.owners.insert(id, m)
                } else {
                    g.members.insert(id, m)
                };
            }
        }
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

    /// Starts a run; returns its id.
    pub fn begin_run(&self, command: &str, full: bool, digest: &str) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO runs (started_at, command, full, source_digest) VALUES (?1, ?2, ?3, ?4)",
                params![now(), command, full, digest],
            )
            .map_err(|e| self.wrap(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(&self, run: i64, outcome: &str, exit_code: i32, summary: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?2, outcome = ?3, exit_code = ?4, summary = ?5 WHERE id = ?1",
                params![run, now(), outcome, exit_code, summary],
            )
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    /// Writes down that a create is about to be sent (SPEC 6.2).
    pub fn write_intent(&self, run: i64, target: &str, key: &str, name: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO intents (target, key, name, run_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (target, key) DO UPDATE SET name = ?3, run_id = ?4",
                params![target, key, name, run, now()],
            )
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    /// Drops an intent whose group left the source before its create was confirmed.
    pub fn drop_intent(&self, target: &str, key: &str) -> Result<()> {
        self.conn
            .execute(
                "DELETE FROM intents WHERE target = ?1 AND key = ?2",
                params![target, key],
            )
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    /// Records one call and, when it was confirmed, its state change: one transaction.
    pub fn record(&mut self, run: i64, call: &CallRecord, delta: &Delta) -> Result<i64> {
        let ids = self.record_many(&[(run, call, delta)])?;
        Ok(ids[0])
    }

    /// Records several calls and their state changes in ONE transaction (group commit):
    /// all of them or none. Returns the call ids in order.
    pub fn record_many(&mut self, batch: &[(i64, &CallRecord, &Delta)]) -> Result<Vec<i64>> {
        let w = StoreError::sqlite(&self.path);
        let tx = self.conn.transaction().map_err(&w)?;
        let mut ids = Vec::with_capacity(batch.len());
        for (run, call, delta) in batch {
            ids.push(insert_call(&tx, *run, call, delta).map_err(&w)?);
        }
        tx.commit().map_err(&w)?;
        Ok(ids)
    }

    /// Closes the connection, reporting what SQLite says (a plain drop would ignore it).
    pub fn close(self) -> Result<()> {
        let Store { conn, path } = self;
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

    /// Calls, newest first.
    pub fn history(&self, f: &HistoryFilter) -> Result<Vec<CallRow>> {
        let w = |e| self.wrap(e);
        let mut sql = String::from(
            "SELECT c.id, c.run_id, c.at, c.target, c.group_key, c.group_name, c.op, c.method, c.path,
                    c.added, c.removed, c.status, c.outcome, c.error, c.latency_ms, c.attempts
             FROM calls c WHERE 1 = 1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(t) = &f.target {
            args.push(t.clone().into());
            sql += &format!(" AND c.target = ?{}", args.len());
        }
        if let Some(g) = &f.group {
            args.push(g.clone().into());
            sql += &format!(
                " AND (c.group_key = ?{0} OR c.group_name = ?{0})",
                args.len()
            );
        }
        if let Some(r) = f.run {
            args.push(r.into());
            sql += &format!(" AND c.run_id = ?{}", args.len());
        }
        if let Some(e) = &f.email {
            args.push(e.to_lowercase().into());
            sql += &format!(
                " AND c.id IN (SELECT call_id FROM call_members WHERE email = ?{})",
                args.len()
            );
        }
        args.push((f.limit.max(1) as i64).into());
        sql += &format!(" ORDER BY c.id DESC LIMIT ?{}", args.len());
        let mut q = self.conn.prepare(&sql).map_err(w)?;
        q.query_map(rusqlite::params_from_iter(args), |r| {
            Ok(CallRow {
                id: r.get(0)?,
                run: r.get(1)?,
                at: r.get(2)?,
                target: r.get(3)?,
                group_key: r.get(4)?,
                group_name: r.get(5)?,
                op: r.get(6)?,
                method: r.get(7)?,
                path: r.get(8)?,
                added: r.get(9)?,
                removed: r.get(10)?,
                status: r.get(11)?,
                outcome: r.get(12)?,
                error: r.get(13)?,
                latency_ms: r.get(14)?,
                attempts: r.get(15)?,
            })
        })
        .map_err(w)?
        .collect::<std::result::Result<_, _>>()
        .map_err(w)
    }

    /// Runs, newest first.
    pub fn runs(&self, limit: usize, run: Option<i64>) -> Result<Vec<RunRow>> {
        let w = |e| self.wrap(e);
        let mut q = self
            .conn
            .prepare(
                "SELECT id, started_at, finished_at, command, full, outcome, exit_code, summary FROM runs
                 WHERE (?1 IS NULL OR id = ?1) ORDER BY id DESC LIMIT ?2",
            )
            .map_err(w)?;
        q.query_map(params![run, limit.max(1) as i64], |r| {
            Ok(RunRow {
                id: r.get(0)?,
                started_at: r.get(1)?,
                finished_at: r.get(2)?,
                command: r.get(3)?,
                full: r.get(4)?,
                outcome: r.get(5)?,
                exit_code: r.get(6)?,
                summary: r.get(7)?,
            })
        })
        .map_err(w)?
        .collect::<std::result::Result<_, _>>()
        .map_err(w)
    }
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

/// One call row, its member rows and its state change, inside the caller's transaction.
fn insert_call(
    tx: &rusqlite::Transaction<'_>,
    run: i64,
    call: &CallRecord,
    delta: &Delta,
) -> rusqlite::Result<i64> {
    let at = now();
    tx.prepare_cached(
        "INSERT INTO calls (run_id, at, target, group_key, group_name, op, method, path, added,
                            removed, status, outcome, error, latency_ms, attempts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        run,
        at,
        call.target,
        call.group_key,
        call.group_name,
        call.op,
        call.method,
        call.path,
        call.added as i64,
        call.removed as i64,
        call.status,
        if call.ok { "ok" } else { "failed" },
        call.error,
        call.latency_ms as i64,
        call.attempts,
    ])?;
    let call_id = tx.last_insert_rowid();
    let mut q = tx.prepare_cached(
        "INSERT INTO call_members (call_id, change, member_id, email) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (change, id, email) in &call.members {
        q.execute(params![call_id, change.to_string(), id, email])?;
    }
    apply_delta(tx, &call.target, delta, &at)?;
    Ok(call_id)
}

fn member_rows(
    tx: &rusqlite::Transaction<'_>,
    target: &str,
    key: &str,
    role: &str,
    members: &[(String, KnownMember)],
) -> rusqlite::Result<()> {
    let mut q = tx.prepare_cached(
        "INSERT INTO members (target, key, role, member_id, email, owned, receive_call)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (target, key, role, member_id) DO UPDATE SET
            email = coalesce(excluded.email, email), receive_call = excluded.receive_call,
            owned = max(owned, excluded.owned)",
    )?;
    for (id, m) in members {
        q.execute(params![
            target,
            key,
            role,
            id,
            m.email,
            m.owned,
            m.receive_call
        ])?;
    }
    Ok(())
}

fn remove_rows(
    tx: &rusqlite::Transaction<'_>,
    target: &str,
    key: &str,
    role: &str,
    ids: &[String],
) -> rusqlite::Result<()> {
    let mut q = tx.prepare_cached(
        "DELETE FROM members WHERE target = ?1 AND key = ?2 AND role = ?3 AND member_id = ?4",
    )?;
    for id in ids {
        q.execute(params![target, key, role, id])?;
    }
    Ok(())
}

fn apply_delta(
    tx: &rusqlite::Transaction<'_>,
    target: &str,
    delta: &Delta,
    at: &str,
) -> rusqlite::Result<()> {
    match delta {
        Delta::None => {}
        Delta::Group {
            key,
            remote_id,
            name,
            members,
            owners,
        } => {
            tx.execute(
                "INSERT INTO groups (target, key, remote_id, name, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (target, key) DO UPDATE SET remote_id = ?3, name = ?4, updated_at = ?5",
                params![target, key, remote_id, name, at],
            )?;
            tx.execute(
                "DELETE FROM members WHERE target = ?1 AND key = ?2",
                params![target, key],
            )?;
            let m: Vec<_> = members
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let o: Vec<_> = owners.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            member_rows(tx, target, key, "member", &m)?;
            member_rows(tx, target, key, "owner", &o)?;
            tx.execute(
                "DELETE FROM intents WHERE target = ?1 AND key = ?2",
                params![target, key],
            )?;
        }
        Delta::Members {
            key,
            added,
            removed,
            owners_added,
            owners_removed,
            receive_call,
        } => {
            member_rows(tx, target, key, "member", added)?;
            remove_rows(tx, target, key, "member", removed)?;
            member_rows(tx, target, key, "owner", owners_added)?;
            remove_rows(tx, target, key, "owner", owners_removed)?;
            if let Some(rc) = receive_call {
                tx.execute(
                    "UPDATE members SET receive_call = 0 WHERE target = ?1 AND key = ?2 AND role = 'member'",
                    params![target, key],
                )?;
                let mut q = tx.prepare_cached(
                    "UPDATE members SET receive_call = 1
                     WHERE target = ?1 AND key = ?2 AND role = 'member' AND member_id = ?3",
                )?;
                for id in rc {
                    q.execute(params![target, key, id])?;
                }
            }
            tx.execute(
                "UPDATE groups SET updated_at = ?3 WHERE target = ?1 AND key = ?2",
                params![target, key, at],
            )?;
        }
        Delta::Renamed { key, name } => {
            tx.execute(
                "UPDATE groups SET name = ?3, updated_at = ?4 WHERE target = ?1 AND key = ?2",
                params![target, key, name, at],
            )?;
        }
        Delta::Forget { key } => {
            tx.execute(
                "DELETE FROM members WHERE target = ?1 AND key = ?2",
                params![target, key],
            )?;
            tx.execute(
                "DELETE FROM groups WHERE target = ?1 AND key = ?2",
                params![target, key],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
