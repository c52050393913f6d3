//! The `assign_group` kind: not built yet; `sync` skips such targets with a warning.

use crate::config::TargetConfig;

use super::{Http, Target};

pub fn build(_cfg: &TargetConfig) -> Result<(Box<dyn Target>, Http), String> {
    Err("the assign_group kind is not built yet".into())
}
