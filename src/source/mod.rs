//! The source of truth (SPEC section 3): a file or a directory of YAML, TOML, JSON and CSV
//! files, loaded into a validated [`Desired`] state.
//!
//! Invariants:
//! - this module reads files and nothing else: no state database, no target, no clock;
//! - each file is read exactly once, and its bytes feed both the parser and the digest;
//! - loading never stops at the first problem: every error in every file is reported
//!   (up to [`MAX_ERRORS`]), each naming the file, the line and the offending value;
//! - a source with no groups at all is an error unless explicitly allowed, so that an
//!   empty or truncated file is never read as "remove everybody".
//!
//! Code map: `structured` parses YAML/TOML/JSON, `csv` parses CSV rows, `merge` checks
//! values and merges all files, `error` holds the error types. Live sources (SPEC 3.1):
//! `ldap` reads groups and people from LDAP / Active Directory, `command` reads a
//! program's stdout; both end in the same `Desired` and the same errors.

pub mod command;
mod csv;
mod error;
pub mod ldap;
mod merge;
mod structured;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use self::error::Errors;
pub use self::error::{MAX_ERRORS, SourceError, SourceErrors};
use self::merge::Builder;
use crate::model::{Desired, Origin};

/// Loads the source at `path`: one file, or every `*.yaml`, `*.yml`, `*.toml`, `*.json`
/// and `*.csv` file below a directory, in sorted path order (hidden files and
/// directories and editor leftovers skipped). `targets` are the configured target names;
/// `allow_empty` is the config's `allow_empty_source`.
///
/// # Errors
///
/// Every problem found in every file (up to [`MAX_ERRORS`] listed, all counted), each
/// naming the file, the line and the offending value: a missing path, an unreadable or
/// unparsable file, an unknown field or wrong type, an email that is not one, a group
/// key defined twice, a person with conflicting ids or names, an unknown target, a
/// `receive_call` entry that is not a member, a CSV row disagreeing with its group, and
/// an empty source or file unless `allow_empty`.
pub fn load(path: &Path, targets: &[&str], allow_empty: bool) -> Result<Desired, SourceErrors> {
    load_limited(path, targets, allow_empty, DEFAULT_MAX_SOURCE_BYTES)
}

/// The default `max_source_bytes`: 128 MiB, over three times the YAML of SPEC 9's design
/// point (1,000,000 memberships).
pub const DEFAULT_MAX_SOURCE_BYTES: u64 = 128 * 1024 * 1024;

/// How often a source that changes while it is read is read again before the load gives up.
pub const READ_ATTEMPTS: usize = 3;

/// [`load`] with the config's `max_source_bytes`: a source whose files add up to more is
/// refused (one error naming the limit) before any of it is parsed.
///
/// Every file's bytes are hashed as they are read, and read (and hashed) again once the
/// whole source is parsed: a file that changed in between was read torn, so the whole
/// source is read again (up to [`READ_ATTEMPTS`] times), never planned from.
pub fn load_limited(
    path: &Path,
    targets: &[&str],
    allow_empty: bool,
    max_bytes: u64,
) -> Result<Desired, SourceErrors> {
    let mut changed = Vec::new();
    for _ in 0..READ_ATTEMPTS {
        let (result, read) = load_once(path, targets, allow_empty, max_bytes);
        changed = read
            .iter()
            .filter(|(file, digest)| file_digest(file, max_bytes).as_ref() != Some(digest))
            .map(|(file, _)| file.clone())
            .collect();
        if changed.is_empty() {
            return result;
        }
        tracing::warn!(
            files = changed.len(),
            "the source changed while it was read; reading it again"
        );
    }
    let mut errors = Errors::default();
    for file in changed {
        errors.push(
            Origin {
                file: file.into(),
                line: None,
            },
            format!(
                "the file changed while it was read, {READ_ATTEMPTS} times in a row; \
                 nothing was planned from it. Write source files atomically (write a \
                 temporary file, then rename it over the old one)"
            ),
        );
    }
    errors.into_result(Desired::default())
}

/// The SHA-256 of a file's bytes (at most `max_bytes + 1` of them), read in chunks; None
/// when it cannot be read.
fn file_digest(file: &Path, max_bytes: u64) -> Option<[u8; 32]> {
    use std::io::Read as _;
    let mut f = fs::File::open(file).ok()?.take(max_bytes.saturating_add(1));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(hasher.finalize().into())
}

/// A file read, and the SHA-256 of the bytes parsed from it.
type FileDigest = (PathBuf, [u8; 32]);

/// One reading of the source, and the digest of every file's bytes as they were parsed.
fn load_once(
    path: &Path,
    targets: &[&str],
    allow_empty: bool,
    max_bytes: u64,
) -> (Result<Desired, SourceErrors>, Vec<FileDigest>) {
    let mut errors = Errors::default();
    let listed = list_files(path, &mut errors);
    let mut read_digests = Vec::with_capacity(listed.len());
    // The whole source's size first: nothing is read when it is over the limit.
    let sizes: Vec<u64> = listed
        .iter()
        .map(|(f, _)| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .collect();
    let total: u64 = sizes.iter().sum();
    if total > max_bytes {
        let biggest = listed
            .iter()
            .zip(&sizes)
            .max_by_key(|(_, n)| **n)
            .map(|((f, _), n)| format!("; the largest file is {} ({})", f.display(), mib(*n)))
            .unwrap_or_default();
        errors.push(
            Origin {
                file: path.into(),
                line: None,
            },
            format!(
                "the source is {} in {} files, over max_source_bytes = {max_bytes} ({}){biggest}; \
                 nothing was read. Raise max_source_bytes in the config if the source is \
                 really this large",
                mib(total),
                listed.len(),
                mib(max_bytes)
            ),
        );
        return (errors.into_result(Desired::default()), read_digests);
    }
    let mut budget = max_bytes;
    let mut builder = Builder::new(targets, errors);
    let mut hasher = Sha256::new();
    let mut files = Vec::with_capacity(listed.len());

    // Files are read in order (the byte budget and the digest are sequential), parsed a
    // few at a time on as many threads, and merged in order: the same result, errors
    // included, as one file after the other.
    let width = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let mut queue = listed.into_iter();
    let mut over_budget = false;
    while !over_budget {
        let mut batch = Vec::with_capacity(width);
        for (file, format) in queue.by_ref().take(width) {
            let mut errors = Errors::default();
            let bytes = match read_within(&file, &mut budget, max_bytes, &mut errors) {
                Ok(bytes) => {
                    let bytes_digest: [u8; 32] = Sha256::digest(&bytes).into();
                    read_digests.push((file.clone(), bytes_digest));
                    digest_file(&mut hasher, &file, bytes_digest);
                    Some(bytes)
                }
                Err(Unread::Failed) => None,
                Err(Unread::OverBudget) => {
                    over_budget = true;
                    None
                }
            };
            batch.push(Pending {
                file,
                format,
                errors,
                bytes,
            });
            if over_budget {
                break;
            }
        }
        if batch.is_empty() {
            break;
        }
        for done in parse_batch(batch) {
            builder.errors.append(done.read_errors);
            let errors_before = builder.errors.total();
            builder.errors.append(done.errors);
            let defines_something = match done.parsed {
                Parsed::Unread => continue,
                Parsed::Nothing => false,
                Parsed::Rows(rows) => {
                    let any = !rows.is_empty();
                    builder.add_rows(&done.file, rows);
                    any
                }
                Parsed::Def(def) => {
                    let any = def.people.as_ref().is_some_and(|p| !p.is_empty())
                        || def.groups.as_ref().is_some_and(|g| !g.is_empty());
                    builder.add_file(&done.file, def);
                    any
                }
            };
            if !defines_something && !allow_empty && builder.errors.total() == errors_before {
                builder.errors.push(
                    Origin {
                        file: done.file.as_path().into(),
                        line: None,
                    },
                    "the file defines no groups, people or memberships (empty or truncated?); \
                     delete it or fill it in, or set allow_empty_source = true",
                );
            }
            files.push(done.file);
        }
    }

    let empty_origin = Origin {
        file: path.into(),
        line: None,
    };
    let (people, groups, errors) = builder.finish(allow_empty, empty_origin);
    let result = errors.into_result(Desired {
        people,
        groups,
        files,
        digest: hex::encode(hasher.finalize()),
    });
    (result, read_digests)
}

/// Why a file's bytes were not read.
enum Unread {
    /// It could not be read (the error is recorded); the next file is read.
    Failed,
    /// It grew past the source's budget (the error is recorded); nothing more is read.
    OverBudget,
}

/// Reads a file's bytes, at most `budget` of them (bounded even if the file grows after
/// it was measured), and takes them off the budget.
fn read_within(
    file: &Path,
    budget: &mut u64,
    max_bytes: u64,
    errors: &mut Errors,
) -> Result<Vec<u8>, Unread> {
    use std::io::Read as _;
    let at = |line| Origin {
        file: file.into(),
        line,
    };
    let mut bytes = Vec::new();
    let read =
        fs::File::open(file).and_then(|f| f.take(budget.saturating_add(1)).read_to_end(&mut bytes));
    if let Err(e) = read {
        errors.push(at(None), format!("cannot read the file: {e}"));
        return Err(Unread::Failed);
    }
    if bytes.len() as u64 > *budget {
        errors.push(
            at(None),
            format!(
                "the file grew while it was read and the source went over \
                 max_source_bytes = {max_bytes} ({}); nothing was planned from it",
                mib(max_bytes)
            ),
        );
        return Err(Unread::OverBudget);
    }
    *budget -= bytes.len() as u64;
    Ok(bytes)
}

/// A file read (or not), waiting to be parsed.
struct Pending {
    file: PathBuf,
    format: Format,
    /// What reading it found wrong.
    errors: Errors,
    /// None when it could not be read.
    bytes: Option<Vec<u8>>,
}

/// A file parsed, waiting to be merged.
struct Done {
    file: PathBuf,
    read_errors: Errors,
    /// What parsing it found wrong.
    errors: Errors,
    parsed: Parsed,
}

/// What a file gave.
enum Parsed {
    /// It could not be read, or is not UTF-8: it is not part of the source read.
    Unread,
    /// It is empty, blank or did not parse.
    Nothing,
    Rows(Vec<csv::Row>),
    Def(structured::FileDef),
}

/// Parses a batch of files, each on a thread of its own (a batch of one on this thread),
/// and gives them back in order.
fn parse_batch(batch: Vec<Pending>) -> Vec<Done> {
    if batch.len() == 1 {
        return batch.into_iter().map(parse_one).collect();
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = batch
            .into_iter()
            .map(|p| s.spawn(move || parse_one(p)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Checks one file's encoding and parses it in its format.
fn parse_one(p: Pending) -> Done {
    let mut errors = Errors::default();
    let parsed = match p.bytes {
        None => Parsed::Unread,
        Some(bytes) => match String::from_utf8(bytes) {
            Err(e) => {
                let at_byte = e.utf8_error().valid_up_to();
                let line = 1 + e.as_bytes()[..at_byte]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                errors.push(
                    Origin {
                        file: p.file.as_path().into(),
                        line: Some(line),
                    },
                    "the file is not valid UTF-8; save it as UTF-8",
                );
                Parsed::Unread
            }
            Ok(text) => {
                let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
                if text.trim().is_empty() {
                    Parsed::Nothing
                } else if p.format == Format::Csv {
                    Parsed::Rows(csv::parse(text, &p.file, &mut errors))
                } else {
                    structured::parse(p.format, text, &p.file, &mut errors)
                        .map_or(Parsed::Nothing, Parsed::Def)
                }
            }
        },
    };
    Done {
        file: p.file,
        read_errors: p.errors,
        errors,
        parsed,
    }
}

/// A byte count in MiB, for messages.
fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
}

/// The digest of the source at `path` as [`load`] computes it, without parsing: every
/// file streamed through SHA-256 (never whole in memory). None when anything cannot be
/// listed or read (then the source must be loaded to say what is wrong).
pub fn digest(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut errors = Errors::default();
    let listed = list_files(path, &mut errors);
    if errors.total() > 0 {
        return None;
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    for (file, _) in listed {
        let mut f = fs::File::open(&file).ok()?;
        let mut inner = Sha256::new();
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => inner.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        digest_file(&mut hasher, &file, inner.finalize().into());
    }
    Some(hex::encode(hasher.finalize()))
}

/// Adds one file to the source digest: its path (length-prefixed) and its bytes' digest.
fn digest_file(hasher: &mut Sha256, file: &Path, bytes_digest: [u8; 32]) {
    let path_bytes = file.as_os_str().as_encoded_bytes();
    hasher.update((path_bytes.len() as u64).to_le_bytes());
    hasher.update(path_bytes);
    hasher.update(bytes_digest);
}

/// The kinds of file a source may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Yaml,
    Toml,
    Json,
    Csv,
}

impl Format {
    /// The format of `path`, from its extension (in any case).
    fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "toml" => Some(Format::Toml),
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// The files of the source at `path`, in sorted path order, with their formats.
fn list_files(path: &Path, errors: &mut Errors) -> Vec<(PathBuf, Format)> {
    let at = |file: &Path| Origin {
        file: file.into(),
        line: None,
    };
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            errors.push(
                at(path),
                "the source does not exist; check `source` in the config",
            );
            return Vec::new();
        }
        Err(e) => {
            errors.push(at(path), format!("cannot read the source: {e}"));
            return Vec::new();
        }
    };
    if !meta.is_dir() {
        return match Format::of(path) {
            Some(format) => vec![(path.to_path_buf(), format)],
            None => {
                errors.push(
                    at(path),
                    "unsupported file type; the source must be a directory or a .yaml, .yml, \
                     .toml, .json or .csv file",
                );
                Vec::new()
            }
        };
    }
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    walk(path, &mut files, &mut seen, errors);
    // Path order is by component, so this is a depth-first walk with sorted entries.
    files.sort();
    files
        .into_iter()
        .filter_map(|f| Some((f.clone(), Format::of(&f)?)))
        .collect()
}

/// Adds the source files below `dir` to `out`. `seen` holds the directories already
/// walked (canonical paths), so a symlink loop is walked once.
fn walk(dir: &Path, out: &mut Vec<PathBuf>, seen: &mut HashSet<PathBuf>, errors: &mut Errors) {
    let at = |file: &Path| Origin {
        file: file.into(),
        line: None,
    };
    if !seen.insert(fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())) {
        return;
    }
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(at(dir), format!("cannot read the directory: {e}"));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                errors.push(at(dir), format!("cannot read the directory: {e}"));
                continue;
            }
        };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") {
            continue;
        }
        let path = entry.path();
        match fs::metadata(&path) {
            Ok(m) if m.is_dir() => walk(&path, out, seen, errors),
            Ok(_) if Format::of(&path).is_some() => out.push(path),
            Ok(_) => {}
            Err(e) => errors.push(at(&path), format!("cannot read: {e}")),
        }
    }
}

#[cfg(test)]
mod tests;
