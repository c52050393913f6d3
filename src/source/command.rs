//! `[source] command = [...]` (SPEC 3.1): a program's stdout read as one JSON or YAML
//! source file. A program that cannot start, exits non-zero, runs past its timeout, writes
//! more than `max_source_bytes` or writes something that does not parse is a source error
//! (exit 2, nothing sent), with the end of its stderr in the message.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::error::Errors;
use super::merge::Builder;
use super::{Format, SourceErrors, structured};
use crate::config::CommandSource;
use crate::model::{Desired, Origin};

/// How much of the program's stderr is kept for the message (its end).
const STDERR_KEPT: usize = 4096;

/// Runs the program and loads its stdout as a source (JSON when it starts with `{`,
/// YAML otherwise).
///
/// # Errors
///
/// The program does not start, exits non-zero or by a signal, outlives `timeout`, writes
/// more than `max_bytes`; and every error of the source's content, as for a file.
pub fn load(
    cfg: &CommandSource,
    targets: &[&str],
    allow_empty: bool,
    max_bytes: u64,
) -> Result<Desired, SourceErrors> {
    let name = format!("command {}", cfg.argv.join(" "));
    let place: &Path = Path::new(&name);
    let at = Origin {
        file: place.into(),
        line: None,
    };
    let mut errors = Errors::default();
    let stdout = match run(cfg, max_bytes) {
        Ok(out) => out,
        Err(e) => {
            errors.push(at, e.to_string());
            return errors.into_result(Desired::default());
        }
    };
    let text = match String::from_utf8(stdout) {
        Ok(t) => t,
        Err(e) => {
            errors.push(
                at,
                format!(
                    "the program's output is not UTF-8 (at byte {})",
                    e.utf8_error().valid_up_to()
                ),
            );
            return errors.into_result(Desired::default());
        }
    };
    let digest = {
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        hex::encode(h.finalize())
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let format = if text.trim_start().starts_with('{') {
        Format::Json
    } else {
        Format::Yaml
    };
    let mut builder = Builder::new(targets, Errors::default());
    if text.trim().is_empty() {
        if !allow_empty {
            builder.errors.push(
                at.clone(),
                "the program wrote nothing; refusing to read that as \"remove everybody\" \
                 (set allow_empty_source = true if that is really meant)",
            );
        }
    } else if let Some(def) = structured::parse(format, text, place, &mut builder.errors) {
        builder.add_file(place, def);
    }
    let (people, groups, errors) = builder.finish(allow_empty, at);
    errors.into_result(Desired {
        people,
        groups,
        files: Vec::new(),
        digest,
    })
}

/// Why the program gave no source (`stderr`: the end of what it wrote there, if anything).
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("cannot run {program:?}: {error}")]
    Start {
        program: String,
        error: std::io::Error,
    },
    #[error("the program ran longer than the timeout ({timeout}) and was stopped{stderr}")]
    Timeout { timeout: String, stderr: String },
    #[error("cannot wait for the program: {0}")]
    Wait(std::io::Error),
    #[error("the program exited with status {code}{stderr}")]
    Exit { code: i32, stderr: String },
    #[error("the program was ended by a signal ({status}){stderr}")]
    Signal {
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("cannot read the program's output: {0}")]
    Read(std::io::Error),
    #[error("the program wrote more than max_source_bytes = {0}; nothing was read")]
    TooLarge(u64),
}

/// Runs the program: its stdout, or what went wrong (with the end of its stderr).
fn run(cfg: &CommandSource, max_bytes: u64) -> Result<Vec<u8>, RunError> {
    let mut child = Command::new(&cfg.argv[0])
        .args(&cfg.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| RunError::Start {
            program: cfg.argv[0].clone(),
            error,
        })?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    // Both pipes are drained on threads of their own, so a chatty program never blocks.
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let r = out
            .by_ref()
            .take(max_bytes.saturating_add(1))
            .read_to_end(&mut buf);
        // Whatever is past the limit is read and dropped, so the program can finish.
        let _ = std::io::copy(&mut out, &mut std::io::sink());
        r.map(|_| buf)
    });
    // stderr is kept as it comes, so a program stopped at its timeout still shows it.
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let errs = {
        let kept = kept.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let mut buf = kept
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                buf.extend_from_slice(&chunk[..n]);
                let over = buf.len().saturating_sub(STDERR_KEPT);
                buf.drain(..over);
            }
        })
    };
    let stderr_now = || {
        let buf = kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let text = String::from_utf8_lossy(&buf).trim().to_string();
        if text.is_empty() {
            String::new()
        } else {
            format!("; its stderr ends with: {text}")
        }
    };
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= cfg.timeout => {
                let _ = child.kill();
                let _ = child.wait();
                // The readers are left to end with the pipes: a program's own children may
                // hold them open, and the load must not wait for those.
                return Err(RunError::Timeout {
                    timeout: humantime::format_duration(cfg.timeout).to_string(),
                    stderr: stderr_now(),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(RunError::Wait(e)),
        }
    };
    let stdout = reader
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    let _ = errs.join();
    let shown = stderr_now();
    if !status.success() {
        return Err(match status.code() {
            Some(code) => RunError::Exit {
                code,
                stderr: shown,
            },
            None => RunError::Signal {
                status,
                stderr: shown,
            },
        });
    }
    let stdout = stdout.map_err(RunError::Read)?;
    if stdout.len() as u64 > max_bytes {
        return Err(RunError::TooLarge(max_bytes));
    }
    Ok(stdout)
}
