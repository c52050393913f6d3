//! The single-writer lock (SPEC 6.5): an exclusive lock on `<state>.lock` holding our pid.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Another instance holds the lock, or the lock file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another rostersync (pid {pid}) is using the state database {path}; wait for it to finish or stop it"
    )]
    Held { pid: String, path: PathBuf },
    #[error("cannot open the lock file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The database's canonical path: the file's own when it exists (symlinks resolved), else
/// its directory's canonical path joined with its name; the path as given if neither can be
/// resolved (the open then fails with the real reason).
fn canonical(db: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(db) {
        return p;
    }
    let dir = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (std::fs::canonicalize(dir), db.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => db.to_path_buf(),
    }
}

/// Held for the life of a writer; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    pub path: PathBuf,
}

impl StateLock {
    /// Takes the lock beside the database `db`, without waiting. The lock file is named
    /// from the database's canonical path, so the same database reached through a symlink,
    /// `..` or a relative path takes the same lock.
    pub fn acquire(db: &Path) -> Result<StateLock, LockError> {
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut name = canonical(db).into_os_string();
        name.push(".lock");
        let path = PathBuf::from(name);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            // SPEC 6.5: created private, like the database beside it.
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).map_err(io)?;
                file.seek(SeekFrom::Start(0)).map_err(io)?;
                write!(file, "{}", std::process::id()).map_err(io)?;
                file.flush().map_err(io)?;
                Ok(StateLock { _file: file, path })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = if pid.trim().is_empty() {
                    "unknown".into()
                } else {
                    pid.trim().to_string()
                };
                Err(LockError::Held {
                    pid,
                    path: db.to_path_buf(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17 item 10: one database, one lock, however its path is written.
    #[test]
    fn the_same_database_by_another_path_is_the_same_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let first = StateLock::acquire(&db).unwrap();
        let dotted = dir.path().join("sub/../state.db");
        assert!(matches!(
            StateLock::acquire(&dotted),
            Err(LockError::Held { .. })
        ));
        std::fs::write(&db, b"").unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        assert!(matches!(
            StateLock::acquire(&link),
            Err(LockError::Held { .. })
        ));
        drop(first);
        let again = StateLock::acquire(&link).unwrap();
        assert!(again.path.ends_with("state.db.lock"), "{:?}", again.path);
    }
}
