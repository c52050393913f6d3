//! The PostgreSQL state (SPEC 6.7): the same tables as SQLite, on a server that several
//! nodes share, one of them leading under the lease (lease.rs).
//!
//! Every method runs in one explicit transaction and keeps nothing between transactions
//! (no session settings, no advisory lock, no statement cached across transactions), so a
//! pooler in transaction mode (PgBouncer) may give each transaction another server
//! connection. Every write of a store opened under a [`Fence`] first reads the lease row
//! `FOR SHARE` in the same transaction and commits only while this node's epoch holds it
//! unexpired on the server's clock: a takeover (an UPDATE of that row) waits for the
//! transaction, and a node that lost the lease commits nothing more.
//!
//! Bulk rows (a group's members, a call's people) go in one statement as arrays
//! (`unnest`), not one round trip per row.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{IsolationLevel, Transaction};

use super::{
    Backend, CallRecord, CallRow, Delta, Fact, Facts, Fence, HistoryFilter, PgLocation, Result,
    RunBase, RunRow, StoreError, TargetState, Value, now,
};
use crate::intern::Interner;
use crate::plan::{Known, KnownGroup, KnownMember};

const MIGRATIONS: &[&str] = &[include_str!("migrations/postgres/001_initial.sql")];

/// Columns that hold integers (everything else is text), for `state copy`.
const INT_COLUMNS: &[&str] = &[
    "owned",
    "receive_call",
    "run_id",
    "id",
    "full",
    "exit_code",
    "state_generation",
    "converged",
    "unchanged_since",
    "call_id",
    "added",
    "removed",
    "status",
    "latency_ms",
    "attempts",
];

/// What can end a transaction here: the database, or the lease check.
enum Fail {
    Db(postgres::Error),
    Fenced {
        holder: Option<String>,
        epoch: Option<i64>,
    },
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Fail {
        Fail::Db(e)
    }
}

type Pg<T> = std::result::Result<T, Fail>;

pub(super) struct PgStore {
    client: RefCell<postgres::Client>,
    url: String,
    /// The lease this store writes under (None: reads only, or `state copy`).
    fence: Option<Fence>,
}

impl PgStore {
    /// Connects and migrates.
    pub(super) fn open(at: &PgLocation, fence: Option<Fence>) -> Result<PgStore> {
        let store = PgStore {
            client: RefCell::new(at.connect()?),
            url: at.url.clone(),
            fence,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Connects without migrating; None when the database has no state yet.
    pub(super) fn open_read_only(at: &PgLocation) -> Result<Option<PgStore>> {
        let store = PgStore {
            client: RefCell::new(at.connect()?),
            url: at.url.clone(),
            fence: None,
        };
        let version = store.read(schema_version)?;
        Ok((version > 0).then_some(store))
    }

    /// The live holder of the lease and its epoch (`lease::peek`).
    pub(super) fn lease_holder(&self) -> Result<Option<(String, i64)>> {
        self.read(|tx| {
            let r = tx.query_one(
                "SELECT holder, epoch, NOT released AND expires_at > clock_timestamp() FROM lease WHERE id = 1",
                &[],
            )?;
            let live: bool = r.get(2);
            Ok(r.get::<_, Option<String>>(0)
                .filter(|_| live)
                .map(|h| (h, r.get(1))))
        })
    }

    fn fail(&self, f: Fail) -> StoreError {
        match f {
            Fail::Db(source) => StoreError::Postgres {
                location: self.url.clone(),
                source,
            },
            Fail::Fenced { holder, epoch } => {
                let fence = self.fence.as_ref();
                StoreError::Fenced {
                    location: self.url.clone(),
                    node: fence.map(|f| f.node.clone()).unwrap_or_default(),
                    epoch: fence.map(|f| f.epoch).unwrap_or_default(),
                    holder,
                    holder_epoch: epoch,
                }
            }
        }
    }

    fn migrate(&self) -> Result<()> {
        self.tx(false, |tx| {
            // Two nodes starting at once: the second waits here, then finds it done. A
            // transaction-scoped lock, so a pooler in transaction mode is no problem.
            tx.execute("SELECT pg_advisory_xact_lock(7203461)", &[])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_version (id INT PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)",
            )?;
            let version = schema_version(tx)?;
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
                tx.batch_execute(sql)?;
                tx.execute(
                    "INSERT INTO schema_version (id, version) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET version = $1",
                    &[&((i + 1) as i64)],
                )?;
            }
            Ok(())
        })
    }

    /// Runs `f` in a read-only transaction that sees one snapshot of the state.
    fn read<R>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Pg<R>) -> Result<R> {
        let mut client = self.client.borrow_mut();
        let run = || -> Pg<R> {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let r = f(&mut tx)?;
            tx.commit()?;
            Ok(r)
        };
        run().map_err(|e| self.fail(e))
    }

    /// Runs `f` in a transaction that commits on success. `fenced`: first check, in this
    /// same transaction, that this node still holds the lease it was opened under.
    fn tx<R>(&self, fenced: bool, f: impl FnOnce(&mut Transaction<'_>) -> Pg<R>) -> Result<R> {
        let mut client = self.client.borrow_mut();
        let run = || -> Pg<R> {
            let mut tx = client.transaction()?;
            if fenced && let Some(fence) = &self.fence {
                check_lease(&mut tx, fence)?;
            }
            let r = f(&mut tx)?;
            tx.commit()?;
            Ok(r)
        };
        run().map_err(|e| self.fail(e))
    }

    /// A write of the state: fenced when the store has a lease.
    fn write<R>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Pg<R>) -> Result<R> {
        self.tx(true, f)
    }
}

fn schema_version(tx: &mut Transaction<'_>) -> Pg<i64> {
    let exists: bool = tx
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(tx
        .query_opt("SELECT version FROM schema_version WHERE id = 1", &[])?
        .map(|r| r.get(0))
        .unwrap_or(0))
}

/// The fence: this node's epoch holds the lease, unreleased and unexpired on the server's
/// clock. `FOR SHARE` holds off a takeover until this transaction ends.
fn check_lease(tx: &mut Transaction<'_>, fence: &Fence) -> Pg<()> {
    let row = tx.query_one(
        "SELECT holder, epoch, released, expires_at > clock_timestamp() FROM lease WHERE id = 1 FOR SHARE",
        &[],
    )?;
    let holder: Option<String> = row.get(0);
    let epoch: i64 = row.get(1);
    let released: bool = row.get(2);
    let live: bool = row.get(3);
    if holder.as_deref() == Some(fence.node.as_str()) && epoch == fence.epoch && !released && live {
        Ok(())
    } else {
        Err(Fail::Fenced {
            holder: holder.filter(|_| live && !released),
            epoch: Some(epoch),
        })
    }
}

fn known_in(tx: &mut Transaction<'_>, target: &str) -> Pg<Known> {
    let mut known = Known::default();
    for r in tx.query(
        "SELECT key, remote_id, name FROM groups WHERE target = $1",
        &[&target],
    )? {
        let g = KnownGroup {
            key: r.get(0),
            remote_id: r.get(1),
            name: r.get(2),
            ..Default::default()
        };
        known.groups.insert(g.key.clone(), g);
    }
    // Streamed, in the table's order, not the key's: with an ORDER BY the planner
    // chooses between the primary key's index and a sort of the target's rows, and where
    // the targets' rows are interleaved on disk (as a sync writes them) it sorts, past
    // `work_mem`, on disk: three times the server's cost of the read, and none of it
    // overlapped with the client's. A group's rows mostly come together; its runs are
    // gathered and each group's maps built in bulk at the end.
    let params: [&(dyn ToSql + Sync); 1] = [&target];
    let mut rows = tx.query_raw(
        "SELECT key, role, member_id, email, owned, receive_call FROM members WHERE target = $1",
        params,
    )?;
    type Rows = Vec<(String, KnownMember)>;
    let mut gathered: HashMap<String, (Rows, Rows)> = HashMap::new();
    let mut emails = Interner::default();
    let mut key = String::new();
    let (mut members, mut owners): (Rows, Rows) = (Vec::new(), Vec::new());
    let gather =
        |all: &mut HashMap<String, (Rows, Rows)>, key: &str, m: &mut Rows, o: &mut Rows| {
            if m.is_empty() && o.is_empty() {
                return;
            }
            match all.get_mut(key) {
                Some((am, ao)) => {
                    am.append(m);
                    ao.append(o);
                }
                None => {
                    all.insert(key.to_string(), (std::mem::take(m), std::mem::take(o)));
                }
            }
        };
    while let Some(r) = rows.next()? {
        let k: &str = r.get(0);
        if k != key {
            gather(&mut gathered, &key, &mut members, &mut owners);
            key = k.to_string();
        }
        let owner = r.get::<_, &str>(1) == "owner";
        let id: String = r.get(2);
        let m = KnownMember {
            email: r.get::<_, Option<&str>>(3).map(|e| emails.intern(e)),
            owned: r.get::<_, i64>(4) != 0,
            receive_call: r.get::<_, i64>(5) != 0,
        };
        if owner {
            owners.push((id, m));
        } else {
            members.push((id, m));
        }
    }
    gather(&mut gathered, &key, &mut members, &mut owners);
    drop(rows);
    for (key, (m, o)) in gathered {
        if let Some(g) = known.groups.get_mut(&key) {
            // Sorted here (one run per piece of the group read): the maps built in bulk.
            g.members = m.into_iter().collect();
            g.owners = o.into_iter().collect();
        }
    }
    for r in tx.query("SELECT key FROM intents WHERE target = $1", &[&target])? {
        known.intents.insert(r.get(0));
    }
    Ok(known)
}

fn cache_in(tx: &mut Transaction<'_>, target: &str) -> Pg<HashMap<String, Option<String>>> {
    Ok(tx
        .query(
            "SELECT email, member_id FROM resolution WHERE target = $1",
            &[&target],
        )?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

fn facts_in(tx: &mut Transaction<'_>, target: Option<&str>) -> Pg<BTreeMap<String, Facts>> {
    let mut all: BTreeMap<String, Facts> = BTreeMap::new();
    for r in tx.query(
        "SELECT target, name, value, updated_at FROM target_facts WHERE $1::text IS NULL OR target = $1",
        &[&target],
    )? {
        all.entry(r.get(0)).or_default().insert(
            r.get(1),
            Fact {
                value: r.get(2),
                at: r.get(3),
            },
        );
    }
    Ok(all)
}

/// Inserts (or merges into) member rows of one group and role, in one statement.
fn member_rows(
    tx: &mut Transaction<'_>,
    target: &str,
    key: &str,
    role: &str,
    members: &[(String, KnownMember)],
) -> Pg<()> {
    if members.is_empty() {
        return Ok(());
    }
    // One row per id (ON CONFLICT may not touch a row twice in one statement).
    let unique: BTreeMap<&str, &KnownMember> =
        members.iter().map(|(id, m)| (id.as_str(), m)).collect();
    let ids: Vec<&str> = unique.keys().copied().collect();
    let emails: Vec<Option<&str>> = unique.values().map(|m| m.email.as_deref()).collect();
    let owned: Vec<i64> = unique.values().map(|m| i64::from(m.owned)).collect();
    let rc: Vec<i64> = unique.values().map(|m| i64::from(m.receive_call)).collect();
    tx.execute(
        "INSERT INTO members (target, key, role, member_id, email, owned, receive_call)
         SELECT $1, $2, $3, u.id, u.email, u.owned, u.rc
         FROM unnest($4::text[], $5::text[], $6::int8[], $7::int8[]) AS u(id, email, owned, rc)
         ON CONFLICT (target, key, role, member_id) DO UPDATE SET
            email = coalesce(excluded.email, members.email),
            receive_call = excluded.receive_call,
            owned = greatest(members.owned, excluded.owned)",
        &[&target, &key, &role, &ids, &emails, &owned, &rc],
    )?;
    Ok(())
}

fn apply_delta(tx: &mut Transaction<'_>, target: &str, delta: &Delta, at: &str) -> Pg<()> {
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
                "INSERT INTO groups (target, key, remote_id, name, updated_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (target, key) DO UPDATE SET remote_id = $3, name = $4, updated_at = $5",
                &[&target, key, remote_id, name, &at],
            )?;
            tx.execute(
                "DELETE FROM members WHERE target = $1 AND key = $2",
                &[&target, key],
            )?;
            let m: Vec<_> = members
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let o: Vec<_> = owners.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            member_rows(tx, target, key, "member", &m)?;
            member_rows(tx, target, key, "owner", &o)?;
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
            member_rows(tx, target, key, "owner", owners_added)?;
            for (role, ids) in [("member", removed), ("owner", owners_removed)] {
                if !ids.is_empty() {
                    tx.execute(
                        "DELETE FROM members WHERE target = $1 AND key = $2 AND role = $3
                         AND member_id = ANY($4)",
                        &[&target, key, &role, ids],
                    )?;
                }
            }
            if let Some(rc) = receive_call {
                tx.execute(
                    "UPDATE members SET receive_call = (member_id = ANY($3))::int::int8
                     WHERE target = $1 AND key = $2 AND role = 'member'",
                    &[&target, key, rc],
                )?;
            }
            tx.execute(
                "UPDATE groups SET updated_at = $3 WHERE target = $1 AND key = $2",
                &[&target, key, &at],
            )?;
        }
        Delta::Renamed { key, name } => {
            tx.execute(
                "UPDATE groups SET name = $3, updated_at = $4 WHERE target = $1 AND key = $2",
                &[&target, key, name, &at],
            )?;
        }
        Delta::Forget { key } => {
            tx.execute(
                "DELETE FROM members WHERE target = $1 AND key = $2",
                &[&target, key],
            )?;
            tx.execute(
                "DELETE FROM groups WHERE target = $1 AND key = $2",
                &[&target, key],
            )?;
        }
    }
    Ok(())
}

fn insert_call(tx: &mut Transaction<'_>, run: i64, call: &CallRecord, delta: &Delta) -> Pg<i64> {
    let at = now();
    let id: i64 = tx
        .query_one(
            "INSERT INTO calls (run_id, at, target, group_key, group_name, op, method, path, added,
                                removed, status, outcome, error, latency_ms, attempts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             RETURNING id",
            &[
                &run,
                &at,
                &call.target,
                &call.group_key,
                &call.group_name,
                &call.op,
                &call.method,
                &call.path,
                &(call.added as i64),
                &(call.removed as i64),
                &call.status.map(i64::from),
                &if call.ok { "ok" } else { "failed" },
                &call.error,
                &(call.latency_ms as i64),
                &i64::from(call.attempts),
            ],
        )?
        .get(0);
    if !call.members.is_empty() {
        let changes: Vec<String> = call.members.iter().map(|m| m.0.to_string()).collect();
        let ids: Vec<&str> = call.members.iter().map(|m| m.1.as_str()).collect();
        let emails: Vec<Option<&str>> = call.members.iter().map(|m| m.2.as_deref()).collect();
        tx.execute(
            "INSERT INTO call_members (call_id, change, member_id, email)
             SELECT $1, u.change, u.id, u.email FROM unnest($2::text[], $3::text[], $4::text[]) AS u(change, id, email)",
            &[&id, &changes, &ids, &emails],
        )?;
    }
    apply_delta(tx, &call.target, delta, &at)?;
    Ok(id)
}

impl Backend for PgStore {
    fn location(&self) -> String {
        self.url.clone()
    }

    fn snapshot(&self, target: &str) -> Result<TargetState> {
        self.read(|tx| {
            Ok(TargetState {
                known: known_in(tx, target)?,
                cache: cache_in(tx, target)?,
                facts: facts_in(tx, Some(target))?
                    .remove(target)
                    .unwrap_or_default(),
            })
        })
    }

    fn known(&self, target: &str) -> Result<Known> {
        self.read(|tx| known_in(tx, target))
    }

    fn targets(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            Ok(tx
                .query(
                    "SELECT target FROM groups UNION SELECT target FROM intents ORDER BY 1",
                    &[],
                )?
                .into_iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn resolution_cache(&self, target: &str) -> Result<HashMap<String, Option<String>>> {
        self.read(|tx| cache_in(tx, target))
    }

    fn cache_resolution(&self, target: &str, email: &str, id: Option<&str>) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO resolution (target, email, member_id, resolved_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (target, email) DO UPDATE SET member_id = $3, resolved_at = $4",
                &[&target, &email, &id, &now()],
            )?;
            Ok(())
        })
    }

    fn facts(&self, target: &str) -> Result<Facts> {
        self.read(|tx| {
            Ok(facts_in(tx, Some(target))?
                .remove(target)
                .unwrap_or_default())
        })
    }

    fn all_facts(&self) -> Result<BTreeMap<String, Facts>> {
        self.read(|tx| facts_in(tx, None))
    }

    fn set_fact(&self, target: &str, name: &str, value: Option<&str>) -> Result<()> {
        self.write(|tx| {
            match value {
                Some(v) => tx.execute(
                    "INSERT INTO target_facts (target, name, value, updated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (target, name) DO UPDATE SET value = $3, updated_at = $4",
                    &[&target, &name, &v, &now()],
                )?,
                None => tx.execute(
                    "DELETE FROM target_facts WHERE target = $1 AND name = $2",
                    &[&target, &name],
                )?,
            };
            Ok(())
        })
    }

    fn begin_run(&self, command: &str, full: bool, digest: &str) -> Result<i64> {
        let node = self.fence.as_ref().map(|f| f.node.clone());
        self.write(|tx| {
            Ok(tx
                .query_one(
                    "INSERT INTO runs (started_at, command, \"full\", source_digest, node)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    &[&now(), &command, &i64::from(full), &digest, &node],
                )?
                .get(0))
        })
    }

    fn finish_run(&self, run: i64, outcome: &str, exit_code: i32, summary: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE runs SET finished_at = $2, outcome = $3, exit_code = $4, summary = $5 WHERE id = $1",
                &[&run, &now(), &outcome, &i64::from(exit_code), &summary],
            )?;
            Ok(())
        })
    }

    fn state_generation(&self) -> Result<i64> {
        self.read(|tx| {
            Ok(tx
                .query_one("SELECT n FROM generation WHERE id = 1", &[])?
                .get(0))
        })
    }

    fn run_base(&self) -> Result<Option<RunBase>> {
        let row = self.read(|tx| {
            Ok(tx.query_opt(
                "SELECT id, converged, source_digest, config_digest, state_generation, unchanged_since
                 FROM runs ORDER BY id DESC LIMIT 1",
                &[],
            )?)
        })?;
        Ok(RunBase::of(row.map(|r| {
            (
                r.get(0),
                r.get::<_, i64>(1) != 0,
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
            )
        })))
    }

    fn mark_converged(
        &self,
        run: i64,
        config_digest: &str,
        unchanged_since: Option<i64>,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE runs SET converged = 1, config_digest = $2, unchanged_since = $3,
                 state_generation = (SELECT n FROM generation WHERE id = 1) WHERE id = $1",
                &[&run, &config_digest, &unchanged_since],
            )?;
            Ok(())
        })
    }

    fn write_intent(&self, run: i64, target: &str, key: &str, name: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO intents (target, key, name, run_id, created_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (target, key) DO UPDATE SET name = $3, run_id = $4",
                &[&target, &key, &name, &run, &now()],
            )?;
            Ok(())
        })
    }

    fn drop_intent(&self, target: &str, key: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM intents WHERE target = $1 AND key = $2",
                &[&target, &key],
            )?;
            Ok(())
        })
    }

    fn record_many(&mut self, batch: &[(i64, &CallRecord, &Delta)]) -> Result<Vec<i64>> {
        self.write(|tx| {
            let mut ids = Vec::with_capacity(batch.len());
            for (run, call, delta) in batch {
                ids.push(insert_call(tx, *run, call, delta)?);
            }
            Ok(ids)
        })
    }

    fn apply_many(&mut self, deltas: &[(&str, Delta)]) -> Result<()> {
        self.write(|tx| {
            let at = now();
            for (target, delta) in deltas {
                apply_delta(tx, target, delta, &at)?;
            }
            Ok(())
        })
    }

    fn prune_history(&mut self, days: u32) -> Result<usize> {
        let cutoff = super::timestamp(
            time::OffsetDateTime::now_utc() - time::Duration::days(i64::from(days)),
        );
        self.write(|tx| {
            tx.batch_execute("CREATE TEMP TABLE old_runs (id BIGINT PRIMARY KEY) ON COMMIT DROP")?;
            tx.execute(
                "INSERT INTO old_runs SELECT id FROM runs WHERE started_at < $1
                 AND id < (SELECT max(id) FROM runs) AND id NOT IN (SELECT run_id FROM intents)",
                &[&cutoff],
            )?;
            tx.batch_execute(
                "DELETE FROM call_members WHERE call_id IN
                   (SELECT id FROM calls WHERE run_id IN (SELECT id FROM old_runs));
                 DELETE FROM calls WHERE run_id IN (SELECT id FROM old_runs);",
            )?;
            let n = tx.execute(
                "DELETE FROM runs WHERE id IN (SELECT id FROM old_runs)",
                &[],
            )?;
            Ok(n as usize)
        })
    }

    fn history(&self, f: &HistoryFilter) -> Result<Vec<CallRow>> {
        let email = f.email.as_ref().map(|e| e.to_lowercase());
        let limit = f.limit.max(1) as i64;
        self.read(|tx| {
            let rows = tx.query(
                "SELECT c.id, c.run_id, c.at, c.target, c.group_key, c.group_name, c.op, c.method,
                        c.path, c.added, c.removed, c.status, c.outcome, c.error, c.latency_ms,
                        c.attempts
                 FROM calls c
                 WHERE ($1::text IS NULL OR c.target = $1)
                   AND ($2::text IS NULL OR c.group_key = $2 OR c.group_name = $2)
                   AND ($3::int8 IS NULL OR c.run_id = $3)
                   AND ($4::text IS NULL OR c.id IN (SELECT call_id FROM call_members WHERE email = $4))
                 ORDER BY c.id DESC LIMIT $5",
                &[&f.target, &f.group, &f.run, &email, &limit],
            )?;
            Ok(rows
                .into_iter()
                .map(|r| CallRow {
                    id: r.get(0),
                    run: r.get(1),
                    at: r.get(2),
                    target: r.get(3),
                    group_key: r.get(4),
                    group_name: r.get(5),
                    op: r.get(6),
                    method: r.get(7),
                    path: r.get(8),
                    added: r.get(9),
                    removed: r.get(10),
                    status: r.get(11),
                    outcome: r.get(12),
                    error: r.get(13),
                    latency_ms: r.get(14),
                    attempts: r.get(15),
                })
                .collect())
        })
    }

    fn runs(&self, limit: usize, run: Option<i64>) -> Result<Vec<RunRow>> {
        self.read(|tx| {
            let rows = tx.query(
                "SELECT id, started_at, finished_at, command, \"full\", outcome, exit_code, summary
                 FROM runs WHERE ($1::int8 IS NULL OR id = $1) ORDER BY id DESC LIMIT $2",
                &[&run, &(limit.max(1) as i64)],
            )?;
            Ok(rows
                .into_iter()
                .map(|r| RunRow {
                    id: r.get(0),
                    started_at: r.get(1),
                    finished_at: r.get(2),
                    command: r.get(3),
                    full: r.get::<_, i64>(4) != 0,
                    outcome: r.get(5),
                    exit_code: r.get(6),
                    summary: r.get(7),
                })
                .collect())
        })
    }

    fn check_fence(&self) -> Result<()> {
        if self.fence.is_none() {
            return Ok(());
        }
        self.write(|_| Ok(()))
    }

    fn fenced(&self) -> bool {
        self.fence.is_some()
    }

    fn checkpoint(&self) -> Result<()> {
        Ok(())
    }

    fn is_empty(&self) -> Result<bool> {
        self.read(|tx| {
            Ok(tx
                .query_one(
                    "SELECT NOT EXISTS (SELECT 1 FROM runs) AND NOT EXISTS (SELECT 1 FROM groups)",
                    &[],
                )?
                .get(0))
        })
    }

    fn export_rows(
        &self,
        table: &str,
        columns: &[&str],
        row: &mut dyn FnMut(Vec<Value>) -> Result<()>,
    ) -> Result<()> {
        let sql = format!(
            "SELECT {} FROM {table}",
            columns
                .iter()
                .map(|c| format!("\"{c}\"::text"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut client = self.client.borrow_mut();
        let mut tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(|e| self.fail(e.into()))?;
        let params: [&(dyn ToSql + Sync); 0] = [];
        let mut rows = tx
            .query_raw(sql.as_str(), params)
            .map_err(|e| self.fail(e.into()))?;
        while let Some(r) = rows.next().map_err(|e| self.fail(e.into()))? {
            let mut values = Vec::with_capacity(columns.len());
            for (i, c) in columns.iter().enumerate() {
                let v: Option<String> = r.get(i);
                values.push(match v {
                    None => Value::Null,
                    Some(t) if INT_COLUMNS.contains(c) => Value::Int(t.parse().unwrap_or_default()),
                    Some(t) => Value::Text(t),
                });
            }
            row(values)?;
        }
        drop(rows);
        tx.commit().map_err(|e| self.fail(e.into()))
    }

    fn import_rows(&mut self, table: &str, columns: &[&str], rows: &[Vec<Value>]) -> Result<()> {
        // Every value as text (or NULL), cast to its column's type by the server.
        let casts: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let ty = if INT_COLUMNS.contains(c) {
                    "int8"
                } else {
                    "text"
                };
                format!("u.c{i}::{ty}")
            })
            .collect();
        let arrays: Vec<String> = (1..=columns.len())
            .map(|i| format!("${i}::text[]"))
            .collect();
        let names: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
        let sql = format!(
            "INSERT INTO {table} ({}) SELECT {} FROM unnest({}) AS u({})",
            columns
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", "),
            casts.join(", "),
            arrays.join(", "),
            names.join(", ")
        );
        let mut cols: Vec<Vec<Option<String>>> =
            vec![Vec::with_capacity(rows.len()); columns.len()];
        for r in rows {
            for (i, v) in r.iter().enumerate() {
                cols[i].push(match v {
                    Value::Null => None,
                    Value::Int(n) => Some(n.to_string()),
                    Value::Text(t) => Some(t.clone()),
                });
            }
        }
        self.tx(false, |tx| {
            let params: Vec<&(dyn ToSql + Sync)> =
                cols.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
            tx.execute(sql.as_str(), &params)?;
            Ok(())
        })
    }

    fn finish_import(&mut self, generation: i64) -> Result<()> {
        self.tx(false, |tx| {
            tx.execute("UPDATE generation SET n = $1 WHERE id = 1", &[&generation])?;
            tx.batch_execute(
                "SELECT setval(pg_get_serial_sequence('runs', 'id'), coalesce(max(id), 0) + 1, false) FROM runs;
                 SELECT setval(pg_get_serial_sequence('calls', 'id'), coalesce(max(id), 0) + 1, false) FROM calls;",
            )?;
            Ok(())
        })
    }

    fn close(self: Box<Self>) -> Result<()> {
        let url = self.url.clone();
        self.client
            .into_inner()
            .close()
            .map_err(|source| StoreError::Postgres {
                location: url,
                source,
            })
    }
}
