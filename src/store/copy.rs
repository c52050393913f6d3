//! `rostersync state copy --to URL|PATH`: the whole state, from one backend to the other,
//! so moving to two nodes needs no `--full` re-read of every vendor.

use super::{Result, StateLocation, Store, StoreError, TABLES, Value};

/// Rows moved per insert.
const CHUNK: usize = 5_000;

/// What was copied, table by table.
#[derive(Debug, Default)]
pub struct Copied {
    pub tables: Vec<(&'static str, usize)>,
}

/// Copies every table of `from` into `to` (created and migrated when missing). Refuses a
/// destination that already holds a state. Each chunk of rows commits on its own: a copy
/// that fails half-way leaves a destination that is not empty, which the next attempt
/// refuses (drop it and copy again), never a state that looks whole.
pub fn copy_state(from: &StateLocation, to: &StateLocation) -> Result<Copied> {
    let Some(source) = Store::open_read_only_at(from)? else {
        return Err(StoreError::Setup {
            location: from.shown(),
            message: "there is no state here to copy".into(),
        });
    };
    if from.shown() == to.shown() {
        return Err(StoreError::Setup {
            location: to.shown(),
            message: "the source and the destination are the same".into(),
        });
    }
    let mut dest = Store::open_at(to, None)?;
    if !dest.is_empty()? {
        return Err(StoreError::NotEmpty {
            location: to.shown(),
        });
    }
    let mut copied = Copied::default();
    for (table, columns) in TABLES {
        let mut rows: Vec<Vec<Value>> = Vec::with_capacity(CHUNK);
        let mut n = 0;
        source.export_rows(table, columns, &mut |row| {
            rows.push(row);
            n += 1;
            if rows.len() == CHUNK {
                dest.import_rows(table, columns, &rows)?;
                rows.clear();
            }
            Ok(())
        })?;
        if !rows.is_empty() {
            dest.import_rows(table, columns, &rows)?;
        }
        copied.tables.push((table, n));
    }
    dest.finish_import(source.state_generation()?)?;
    dest.checkpoint()?;
    source.close()?;
    dest.close()?;
    Ok(copied)
}
