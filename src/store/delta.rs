//! How a confirmed call is written: its history row, its member rows, and the state change
//! it proves, inside the caller's transaction.

use rusqlite::params;

use super::{CallRecord, Delta, now};
use crate::plan::KnownMember;

/// One call row, its member rows and its state change, inside the caller's transaction.
pub(super) fn insert_call(
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

pub(super) fn apply_delta(
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
