//! The no-op shortcut of SPEC 9: when the source's bytes, the config's effective settings
//! and the known state are all what they were at the end of the latest run, and that run
//! converged everywhere, nothing can be planned, so the run stops without parsing.
//!
//! Exact by construction: the source digest streams every file's bytes (the same digest
//! `source::load` records), the config digest covers every setting but secrets (and the
//! program's version), and the state generation is moved by a trigger on every write to
//! the known state. `--full`, `--plan`, dry-runs and scoped runs never take it, and the
//! latest run must be a converged, unscoped one (so a run after a failed one never does).

use sha2::{Digest, Sha256};

use super::SyncOptions;
use crate::config::Config;
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

/// The run the current inputs repeat, if the shortcut applies: reads the source's bytes
/// (off the async runtime) and the latest run's digests.
pub(super) async fn unchanged_since(
    cfg: &Config,
    state: &Writer,
) -> Result<Option<RunBase>, StoreError> {
    let (base, generation) = state.run_base().await?;
    let Some(base) = base else { return Ok(None) };
    if base.state_generation != generation || base.config_digest != config_digest(cfg) {
        return Ok(None);
    }
    let path = cfg.source.clone();
    let source = tokio::task::spawn_blocking(move || crate::source::digest(&path))
        .await
        .ok()
        .flatten();
    Ok((source.as_deref() == Some(base.source_digest.as_str())).then_some(base))
}
