//! `state` and `[ha]` (SPEC 6.7): where the state lives and how this node takes part in
//! the lease when it lives in PostgreSQL.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, duration, err, resolve, target::secret_of};
use crate::store::{PgLocation, StateLocation};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    /// `postgres://...` (or `postgresql://`), or a path for SQLite.
    url: Option<String>,
    path: Option<String>,
    password_file: Option<String>,
    password_env: Option<String>,
    ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHa {
    node: Option<String>,
    lease: Option<String>,
}

/// `[ha]`: this node's name and the lease's TTL (used only with a PostgreSQL state).
#[derive(Clone, Debug)]
pub struct Ha {
    pub node: String,
    pub lease: Duration,
}

/// The host name, the default node name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "rostersync".into())
}

pub(super) fn validate_ha(file: &Path, raw: RawHa) -> Result<Ha, ConfigError> {
    let node = raw.node.unwrap_or_else(host_name);
    if node.is_empty() || node.len() > 200 || node.chars().any(char::is_control) {
        return Err(err(
            file,
            format!("ha.node = {node:?}: give a short name without control characters"),
        ));
    }
    let lease = duration(file, "ha.lease", raw.lease.as_deref().unwrap_or("15s"))?;
    if lease < Duration::from_secs(1) || lease > Duration::from_secs(3600) {
        return Err(err(
            file,
            format!(
                "ha.lease = \"{}\" must be between 1s and 1h (it is renewed every third of it)",
                humantime::format_duration(lease)
            ),
        ));
    }
    Ok(Ha { node, lease })
}

fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

pub(super) fn validate_state(
    file: &Path,
    dir: &Path,
    raw: Option<serde_json::Value>,
    node: &str,
    warnings: &mut Vec<String>,
) -> Result<StateLocation, ConfigError> {
    let table = match raw {
        None => return Ok(StateLocation::Sqlite(resolve(dir, "state/rostersync.db"))),
        Some(serde_json::Value::String(s)) if is_url(&s) => RawState {
            url: Some(s),
            path: None,
            password_file: None,
            password_env: None,
            ca_file: None,
        },
        Some(serde_json::Value::String(s)) => return Ok(StateLocation::Sqlite(resolve(dir, &s))),
        Some(v @ serde_json::Value::Object(_)) => {
            serde_json::from_value::<RawState>(v).map_err(|e| err(file, format!("[state]: {e}")))?
        }
        Some(other) => {
            return Err(err(
                file,
                format!(
                    "state = {other}: give a path, or a [state] table with url = \"postgres://...\""
                ),
            ));
        }
    };
    let at = match (table.url, table.path) {
        (Some(_), Some(_)) => {
            return Err(err(file, "[state]: give url or path, not both"));
        }
        (None, None) => return Err(err(file, "[state]: url (or path) is missing")),
        (Some(u), None) if is_url(&u) => u,
        (Some(p), None) | (None, Some(p)) => {
            if table.password_file.is_some()
                || table.password_env.is_some()
                || table.ca_file.is_some()
            {
                return Err(err(
                    file,
                    format!(
                        "[state]: {p:?} is a SQLite path; password_file, password_env and ca_file are for a postgres:// url"
                    ),
                ));
            }
            return Ok(StateLocation::Sqlite(resolve(dir, &p)));
        }
    };
    let parsed =
        url::Url::parse(&at).map_err(|e| err(file, format!("state.url: not a URL ({e})")))?;
    if parsed.password().is_some() {
        return Err(err(
            file,
            "state.url carries a password: remove it and give password_file or password_env \
             (the URL is shown in logs and messages; a password never is)",
        ));
    }
    let password = secret_of(
        file,
        dir,
        "[state]",
        "password",
        table.password_env,
        table.password_file,
        warnings,
    )?;
    // A missing secret is found at load (exit 2), like a target's or the LDAP source's.
    if let Some(p) = &password
        && p.value.is_none()
    {
        return Err(err(
            file,
            format!("[state]: {} is missing or empty", p.from),
        ));
    }
    let ca_file = match table.ca_file {
        Some(ca) => {
            let full = resolve(dir, &ca);
            crate::source::ldap::read_ca_file(&full)
                .map_err(|e| err(file, format!("state.ca_file: {e}")))?;
            Some(full)
        }
        None => None,
    };
    Ok(StateLocation::Postgres(PgLocation {
        url: at,
        password_from: password.as_ref().map(|s| s.from.clone()),
        password: password.and_then(|s| s.value),
        ca_file,
        application: format!("rostersync {node}"),
    }))
}
