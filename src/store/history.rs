//! The history as `history` and `explain` read it: runs and calls, newest first.

use rusqlite::params;
use serde::Serialize;

use super::Result;

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

impl super::SqliteStore {
    /// Forgets runs older than `days` days with their calls (history only: the known
    /// state never depends on it). Keeps the latest run (the shortcut's base) and runs
    /// that intents still name. Returns the number of runs forgotten.
    pub(super) fn prune(&mut self, days: u32) -> Result<usize> {
        let cutoff = super::timestamp(
            time::OffsetDateTime::now_utc() - time::Duration::days(i64::from(days)),
        );
        let w = super::StoreError::sqlite(&self.path);
        let tx = self.conn.transaction().map_err(w)?;
        tx.execute(
            "CREATE TEMP TABLE IF NOT EXISTS old_runs (id INTEGER PRIMARY KEY)",
            [],
        )
        .map_err(w)?;
        tx.execute("DELETE FROM old_runs", []).map_err(w)?;
        tx.execute(
            "INSERT INTO old_runs SELECT id FROM runs WHERE started_at < ?1
             AND id < (SELECT max(id) FROM runs) AND id NOT IN (SELECT run_id FROM intents)",
            params![cutoff],
        )
        .map_err(w)?;
        tx.execute(
            "DELETE FROM call_members WHERE call_id IN
             (SELECT id FROM calls WHERE run_id IN (SELECT id FROM old_runs))",
            [],
        )
        .map_err(w)?;
        tx.execute(
            "DELETE FROM calls WHERE run_id IN (SELECT id FROM old_runs)",
            [],
        )
        .map_err(w)?;
        let n = tx
            .execute("DELETE FROM runs WHERE id IN (SELECT id FROM old_runs)", [])
            .map_err(w)?;
        tx.commit().map_err(w)?;
        Ok(n)
    }

    /// Calls, newest first.
    pub(super) fn calls(&self, f: &HistoryFilter) -> Result<Vec<CallRow>> {
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
    pub(super) fn run_rows(&self, limit: usize, run: Option<i64>) -> Result<Vec<RunRow>> {
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
