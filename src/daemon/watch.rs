//! Watching the source for changes (`schedule.watch = true`).
//!
//! A file source is watched through its directory, so that an editor's save-as-rename or a
//! replaced file is seen; a directory source is watched recursively. Only events that can
//! change what `source::load` reads get through (`relevant`): reads of the source (our own
//! runs open it), metadata changes, hidden files, editor leftovers and files of other types
//! (such as a state database kept beside the source) are ignored. The loop debounces what
//! gets through.

use std::path::{Path, PathBuf};

use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;
use tracing::warn;

/// The extensions `source::load` reads in a directory.
const SOURCE_EXTENSIONS: &[&str] = &["yaml", "yml", "toml", "json", "csv"];

/// What is watched, to decide which events matter.
#[derive(Clone, Debug)]
pub enum Scope {
    /// One file, watched through its directory: only this file name counts.
    File {
        dir: PathBuf,
        name: std::ffi::OsString,
    },
    /// A directory tree: source files below it count, and directories (a renamed or removed
    /// directory carries its files along without an event for each).
    Dir(PathBuf),
}

impl Scope {
    /// The scope for a configured source path (which must exist).
    pub fn of(source: &Path) -> Result<Scope, WatchError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WatchError::Path { path, source }
        };
        let canon = source.canonicalize().map_err(io(source))?;
        if canon.is_dir() {
            return Ok(Scope::Dir(canon));
        }
        // Watch the directory the configured path is in (not the symlink target's).
        let name = source
            .file_name()
            .ok_or_else(|| WatchError::NotAFile(source.to_path_buf()))?;
        let parent = source
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = parent.canonicalize().map_err(io(parent))?;
        Ok(Scope::File {
            dir,
            name: name.to_os_string(),
        })
    }

    /// What is watched, for the log.
    pub fn describe(&self) -> String {
        match self {
            Scope::File { dir, name } => {
                format!("{} (through {})", dir.join(name).display(), dir.display())
            }
            Scope::Dir(d) => format!("{} and below", d.display()),
        }
    }

    /// Whether an event on `path` can change the source.
    pub fn relevant_path(&self, path: &Path) -> bool {
        match self {
            Scope::File { name, .. } => path.file_name() == Some(name.as_os_str()),
            Scope::Dir(root) => {
                let rel = path.strip_prefix(root).unwrap_or(path);
                if rel.as_os_str().is_empty() {
                    return true;
                }
                let hidden = rel.components().any(|c| {
                    let s = c.as_os_str().to_string_lossy();
                    s.starts_with('.') || s.ends_with('~') || s.ends_with(".swp")
                });
                if hidden {
                    return false;
                }
                match path.extension().and_then(|e| e.to_str()) {
                    Some(ext) => SOURCE_EXTENSIONS
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(ext)),
                    // Most likely a directory (created, renamed or removed with files in it).
                    None => true,
                }
            }
        }
    }
}

/// Whether this kind of event can change a file's content or presence.
pub fn relevant_kind(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(_) | EventKind::Other => false,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Any | EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
    }
}

/// A running watch; dropping it stops watching.
pub struct SourceWatcher {
    _watcher: RecommendedWatcher,
    /// What is watched, for the log.
    pub scope: Scope,
}

/// Starts watching `source`; sends `()` on `changes` for every relevant event.
pub fn start(source: &Path, changes: UnboundedSender<()>) -> Result<SourceWatcher, WatchError> {
    let scope = Scope::of(source)?;
    let filter = scope.clone();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                if relevant_kind(&ev.kind) && ev.paths.iter().any(|p| filter.relevant_path(p)) {
                    let _ = changes.send(());
                }
            }
            Err(e) => {
                // A lost event (queue overflow, ...) may hide a change: treat it as one.
                warn!(error = %e, "watching the source: {e}; running as if it changed");
                let _ = changes.send(());
            }
        })
        .map_err(|e| watch_error(source, e))?;
    let (path, mode) = match &scope {
        Scope::File { dir, .. } => (dir.clone(), RecursiveMode::NonRecursive),
        Scope::Dir(d) => (d.clone(), RecursiveMode::Recursive),
    };
    watcher
        .watch(&path, mode)
        .map_err(|e| watch_error(&path, e))?;
    Ok(SourceWatcher {
        _watcher: watcher,
        scope,
    })
}

/// Why the source cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{}: {source}", path.display())]
    Path {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a file name", .0.display())]
    NotAFile(PathBuf),
    #[error("cannot watch {}: {source}{hint}", path.display())]
    Notify {
        path: PathBuf,
        #[source]
        source: notify::Error,
        hint: &'static str,
    },
}

fn watch_error(path: &Path, e: notify::Error) -> WatchError {
    let hint = match &e.kind {
        notify::ErrorKind::MaxFilesWatch => {
            "; raise the limit (sysctl fs.inotify.max_user_watches) or set schedule.watch = false"
        }
        _ => "; set schedule.watch = false to rely on the cron schedule alone",
    };
    WatchError::Notify {
        path: path.to_path_buf(),
        source: e,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};

    #[test]
    fn reads_and_metadata_do_not_count() {
        assert!(!relevant_kind(&EventKind::Access(AccessKind::Any)));
        assert!(!relevant_kind(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::AccessTime
        ))));
        assert!(relevant_kind(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(relevant_kind(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(relevant_kind(&EventKind::Create(CreateKind::File)));
        assert!(relevant_kind(&EventKind::Remove(RemoveKind::File)));
    }

    #[test]
    fn a_file_source_counts_only_its_own_name() {
        let s = Scope::File {
            dir: "/etc/rs".into(),
            name: "groups.yaml".into(),
        };
        assert!(s.relevant_path(Path::new("/etc/rs/groups.yaml")));
        assert!(!s.relevant_path(Path::new("/etc/rs/.groups.yaml.swp")));
        assert!(!s.relevant_path(Path::new("/etc/rs/rostersync.db-wal")));
        assert!(!s.relevant_path(Path::new("/etc/rs/groups.yaml~")));
    }

    #[test]
    fn a_directory_source_counts_source_files_and_directories() {
        let s = Scope::Dir("/srv/.git-roster/groups".into());
        for p in [
            "/srv/.git-roster/groups/a.yaml",
            "/srv/.git-roster/groups/sub/b.CSV",
            "/srv/.git-roster/groups/sub",
        ] {
            assert!(s.relevant_path(Path::new(p)), "{p}");
        }
        for p in [
            "/srv/.git-roster/groups/.git/index",
            "/srv/.git-roster/groups/.a.yaml.swp",
            "/srv/.git-roster/groups/a.yaml~",
            "/srv/.git-roster/groups/state.db",
            "/srv/.git-roster/groups/.hidden/a.yaml",
            "/srv/.git-roster/groups/notes.txt",
        ] {
            assert!(!s.relevant_path(Path::new(p)), "{p}");
        }
    }
}
