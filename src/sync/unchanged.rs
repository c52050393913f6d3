//! The no-op shortcut of SPEC 9: when the source's bytes, the config's effective settings
//! and the known state are all what they were at the end of the latest run, and that run
//! converged everywhere, nothing can be planned, so the run stops without parsing.
//!
//! Exact by construction: the source digest streams every file's bytes (the same digest
//! `source::load` records; for a live source, LDAP or a command, the digest of the
//! canonical source built from what it gave), the config digest covers every setting but secrets (and the
//! program's version), and the state generation is moved by a trigger on every write to
//! the known state. `--full`, `--plan`, dry-runs and scoped runs never take it, and the
//! latest run must be a converged, unscoped one (so a run after a failed one never does).

use sha2::{Digest, Sha256};

use super::SyncOptions;
use crate::config::Config;
use crate::model::Desired;
use crate::source::SourceErrors;
use crate::store::{RunBase, StoreError, Writer};

/// Whether this run may stop at the shortcut at all.
pub(super) fn eligible(opts: &SyncOptions) -> bool {
    !opts.dry_run && !opts.full && opts.expect.is_none() && !scoped(opts)
}

/// A run limited to some targets (`--target`) or some people (`--only`): it never
/// converges the whole source, so it never takes the shortcut and is never a base.
pub(super) fn scoped(opts: &SyncOptions) -> bool {
    !opts.targets.is_empty() || !opts.only.is_empty()
}

/// SHA-256 over the config's effective settings, secrets left out: the validated
/// `Config` as `Debug` prints it (secret values print as `[REDACTED]`; every setting a
/// developer adds is covered without a list to maintain), and the program's version.
pub fn config_digest(cfg: &Config) -> String {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update([0]);
    h.update(format!("{cfg:?}").as_bytes());
    hex::encode(h.finalize())
}

/// What the shortcut found.
pub(super) enum Unchanged {
    /// The run the current inputs repeat.
    Since(RunBase),
    /// Something changed; a live source (LDAP, a command) had to be read whole to know,
    /// and is handed on so the run does not read it twice.
    Changed(Option<Result<Desired, SourceErrors>>),
}

/// The run the current inputs repeat, if the shortcut applies: reads the source's bytes
/// (off the async runtime) and the latest run's digests. A live source has no bytes to
/// stream: it is read, and its digest is that of the canonical source built from it.
pub(super) async fn unchanged_since(cfg: &Config, state: &Writer) -> Result<Unchanged, StoreError> {
    let (base, generation) = state.run_base().await?;
    let Some(base) = base else {
        return Ok(Unchanged::Changed(None));
    };
    if base.state_generation != generation || base.config_digest != config_digest(cfg) {
        return Ok(Unchanged::Changed(None));
    }
    if cfg.live.is_some() {
        let c = cfg.clone();
        let loaded = tokio::task::spawn_blocking(move || c.load_source()).await;
        let Ok(loaded) = loaded else {
            return Ok(Unchanged::Changed(None));
        };
        if let Ok(d) = &loaded
            && d.digest == base.source_digest
        {
            return Ok(Unchanged::Since(base));
        }
        return Ok(Unchanged::Changed(Some(loaded)));
    }
    let path = cfg.source.clone();
    let source = tokio::task::spawn_blocking(move || crate::source::digest(&path))
        .await
        .ok()
        .flatten();
    Ok(if source.as_deref() == Some(base.source_digest.as_str()) {
        Unchanged::Since(base)
    } else {
        Unchanged::Changed(None)
    })
}
