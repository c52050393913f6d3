//! The `teams` kind: not built yet; `sync` skips such targets with a warning.

use crate::config::TargetConfig;

use super::{Http, Target};

pub fn build(_cfg: &TargetConfig) -> Result<(Box<dyn Target>, Http), String> {
    Err("the teams kind is not built yet".into())
}
