//! The scheduler loop for systemd (SPEC section 7): not built yet.

use crate::config::Config;

/// Runs until stopped. Not built yet: the daemon issue fills this in.
pub async fn run(_cfg_path: std::path::PathBuf, _cfg: Config) -> Result<u8, String> {
    Err("`rostersync daemon` is not built yet; use the oneshot `sync` with a timer".into())
}
