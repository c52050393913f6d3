//! The SQLite state (the embedded default): one file, WAL, `synchronous = FULL` for every
//! write that must survive a power cut (intents, run rows, facts) and NORMAL for records
//! (see `record_many`). Migrations are tracked by `PRAGMA user_version`. The file lock
//! (lock.rs) makes it one writer: there is no lease, so `check_fence` always holds.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::delta::{apply_delta, insert_call};
use super::{
    Backend, CallRecord, CallRow, Delta, Fact, Facts, HistoryFilter, Result, RunBase, RunRow,
    StoreError, TargetState, Value, now,
};
use crate::intern::Interner;
use crate::plan::{Known, KnownGroup, KnownMember};

pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_initial.sql"),
    include_str!("migrations/002_unchanged.sql"),
    include_str!("migrations/003_target_facts.sql"),
];

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

/// An open SQLite state database.
pub struct SqliteStore {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
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

impl SqliteStore {
    /// Opens (creating the file and its directory if missing) and migrates.
    /// A new file is created with mode 0600 before SQLite opens it (SPEC 6.5: it holds
    /// people's emails); SQLite gives its `-wal` and `-shm` files the same mode.
    pub fn open(path: &Path) -> Result<SqliteStore> {
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
        let mut store = SqliteStore::with(conn, path);
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing database read-only (dry-runs change nothing); None if it does not
    /// exist yet, which means nothing is known.
    pub fn open_read_only(path: &Path) -> Result<Option<SqliteStore>> {
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
        Ok(Some(SqliteStore::with(conn, path)))
    }

    fn with(conn: Connection, path: &Path) -> SqliteStore {
        SqliteStore {
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

    pub(super) fn wrap(&self, source: rusqlite::Error) -> StoreError {
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
}

impl Backend for SqliteStore {
    fn snapshot(&self, target: &str) -> Result<TargetState> {
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

    fn known(&self, target: &str) -> Result<Known> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.wrap(e))?;
        let known = self.known_in(target)?;
        tx.finish().map_err(|e| self.wrap(e))?;
        Ok(known)
    }

    fn targets(&self) -> Result<Vec<String>> {
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

    fn resolution_cache(&self, target: &str) -> Result<HashMap<String, Option<String>>> {
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

    fn cache_resolution(&self, target: &str, email: &str, id: Option<&str>) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO resolution (target, email, member_id, resolved_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (target, email) DO UPDATE SET member_id = ?3, resolved_at = ?4",
            )
            .and_then(|mut q| q.execute(params![target, email, id, now()]))
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    fn facts(&self, target: &str) -> Result<Facts> {
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

    fn set_fact(&self, target: &str, name: &str, value: Option<&str>) -> Result<()> {
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

    fn begin_run(&self, command: &str, full: bool, digest: &str) -> Result<i64> {
        self.synced()?;
        self.conn
            .execute(
                "INSERT INTO runs (started_at, command, full, source_digest) VALUES (?1, ?2, ?3, ?4)",
                params![now(), command, full, digest],
            )
            .map_err(|e| self.wrap(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    fn finish_run(&self, run: i64, outcome: &str, exit_code: i32, summary: &str) -> Result<()> {
        self.synced()?;
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?2, outcome = ?3, exit_code = ?4, summary = ?5 WHERE id = ?1",
                params![run, now(), outcome, exit_code, summary],
            )
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    fn state_generation(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT n FROM generation WHERE id = 1", [], |r| r.get(0))
            .map_err(|e| self.wrap(e))
    }

    fn run_base(&self) -> Result<Option<RunBase>> {
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
        Ok(RunBase::of(row))
    }

    fn mark_converged(
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

    fn write_intent(&self, run: i64, target: &str, key: &str, name: &str) -> Result<()> {
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

    fn drop_intent(&self, target: &str, key: &str) -> Result<()> {
        self.relaxed(|conn| {
            conn.execute(
                "DELETE FROM intents WHERE target = ?1 AND key = ?2",
                params![target, key],
            )
            .map(|_| ())
        })
    }

    fn record_many(&mut self, batch: &[(i64, &CallRecord, &Delta)]) -> Result<Vec<i64>> {
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

    fn apply_many(&mut self, deltas: &[(&str, Delta)]) -> Result<()> {
        let w = StoreError::sqlite(&self.path);
        let tx = self.conn.transaction().map_err(w)?;
        let at = now();
        for (target, delta) in deltas {
            apply_delta(&tx, target, delta, &at).map_err(w)?;
        }
        tx.commit().map_err(w)
    }

    fn checkpoint(&self) -> Result<()> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(|e| self.wrap(e))
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn all_facts(&self) -> Result<BTreeMap<String, Facts>> {
        if !self.has_facts()? {
            return Ok(BTreeMap::new());
        }
        let w = |e| self.wrap(e);
        let mut q = self
            .conn
            .prepare("SELECT target, name, value, updated_at FROM target_facts")
            .map_err(w)?;
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
            .map_err(w)?;
        let mut all: BTreeMap<String, Facts> = BTreeMap::new();
        for row in rows {
            let (target, name, fact) = row.map_err(w)?;
            all.entry(target).or_default().insert(name, fact);
        }
        Ok(all)
    }

    fn prune_history(&mut self, days: u32) -> Result<usize> {
        self.prune(days)
    }

    fn history(&self, f: &HistoryFilter) -> Result<Vec<CallRow>> {
        self.calls(f)
    }

    fn runs(&self, limit: usize, run: Option<i64>) -> Result<Vec<RunRow>> {
        self.run_rows(limit, run)
    }

    fn check_fence(&self) -> Result<()> {
        Ok(())
    }

    fn fenced(&self) -> bool {
        false
    }

    fn is_empty(&self) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM runs) AND NOT EXISTS (SELECT 1 FROM groups)",
                [],
                |r| r.get::<_, bool>(0),
            )
            .map_err(|e| self.wrap(e))
    }

    fn export_rows(
        &self,
        table: &str,
        columns: &[&str],
        row: &mut dyn FnMut(Vec<Value>) -> Result<()>,
    ) -> Result<()> {
        let w = |e| self.wrap(e);
        let sql = format!("SELECT {} FROM {table} ORDER BY rowid", columns.join(", "));
        // WITHOUT ROWID tables have no rowid: their primary key orders them.
        let sql = match table {
            "groups" | "members" | "intents" | "resolution" | "target_facts" => {
                format!("SELECT {} FROM {table}", columns.join(", "))
            }
            _ => sql,
        };
        let mut q = self.conn.prepare(&sql).map_err(w)?;
        let mut rows = q.query([]).map_err(w)?;
        while let Some(r) = rows.next().map_err(w)? {
            let mut values = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                values.push(match r.get_ref(i).map_err(w)? {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(n) => Value::Int(n),
                    rusqlite::types::ValueRef::Text(t) => {
                        Value::Text(String::from_utf8_lossy(t).into_owned())
                    }
                    rusqlite::types::ValueRef::Real(x) => Value::Int(x as i64),
                    rusqlite::types::ValueRef::Blob(b) => {
                        Value::Text(String::from_utf8_lossy(b).into_owned())
                    }
                });
            }
            row(values)?;
        }
        Ok(())
    }

    fn import_rows(&mut self, table: &str, columns: &[&str], rows: &[Vec<Value>]) -> Result<()> {
        let w = StoreError::sqlite(&self.path);
        let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            columns.join(", "),
            marks.join(", ")
        );
        let tx = self.conn.transaction().map_err(w)?;
        {
            let mut q = tx.prepare_cached(&sql).map_err(w)?;
            for r in rows {
                let params = r.iter().map(|v| match v {
                    Value::Null => rusqlite::types::Value::Null,
                    Value::Int(n) => rusqlite::types::Value::Integer(*n),
                    Value::Text(t) => rusqlite::types::Value::Text(t.clone()),
                });
                q.execute(rusqlite::params_from_iter(params)).map_err(w)?;
            }
        }
        tx.commit().map_err(w)
    }

    fn finish_import(&mut self, generation: i64) -> Result<()> {
        // The copy's own inserts moved the generation; it continues from the source's.
        self.conn
            .execute(
                "UPDATE generation SET n = ?1 WHERE id = 1",
                params![generation],
            )
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    #[cfg(test)]
    fn sqlite(&mut self) -> Option<&mut SqliteStore> {
        Some(self)
    }

    fn close(self: Box<Self>) -> Result<()> {
        let SqliteStore { conn, path, .. } = *self;
        conn.close()
            .map_err(|(_, source)| StoreError::Sqlite { path, source })
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
