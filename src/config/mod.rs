//! The configuration file (SPEC section 4): raw serde types -> a validated `Config`.
//!
//! TOML is parsed with `toml` first (for line numbers in syntax errors), then loaded through
//! the `config` crate so that `ROSTERSYNC_<SECTION>__<KEY>` environment variables override it.
//! Secrets are read here from `*_env` variables or `*_file` files and kept in `SecretString`,
//! whose `Debug` prints `[REDACTED]`; nothing else in the crate reads the environment.

mod source;
mod state;
mod target;
pub use source::{CommandSource, LdapSource, LdapTls, LiveSource, Route};
pub use state::Ha;
use target::validate_target;

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::plan::Keep;
use crate::store::StateLocation;

/// A configuration mistake, naming the key (and file) at fault.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

fn err(file: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        message: message.into(),
    }
}

/// The kinds of target rostersync can drive (SPEC section 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Scim,
    Teams,
    AssignGroup,
    Kazoo,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Scim => "scim",
            Kind::Teams => "teams",
            Kind::AssignGroup => "assign_group",
            Kind::Kazoo => "kazoo",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SCIM dialects: MaestroQA's, or standard RFC 7644.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    Maestroqa,
    Rfc7644,
}

/// How a SCIM token is presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    ApiToken,
    Basic,
    Bearer,
}

/// Membership mode per target (SPEC section 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Each managed group equals the source.
    #[default]
    Authoritative,
    /// Remove only members rostersync itself added.
    Owned,
    /// Never remove anybody.
    AddOnly,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// A path, or a table (`[source.ldap]`, `[source] command`): see `source.rs`.
    source: Option<serde_json::Value>,
    /// A path, or a table (`[state] url = "postgres://..."`): see `state.rs`.
    state: Option<serde_json::Value>,
    #[serde(default)]
    ha: state::RawHa,
    #[serde(default)]
    allow_empty_source: bool,
    max_source_bytes: Option<u64>,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    safety: RawSafety,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    target: Vec<RawTarget>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    cron: Option<String>,
    full_every: Option<u32>,
    watch: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSafety {
    max_removals: Option<usize>,
    max_removal_ratio: Option<f64>,
    delete_groups: Option<bool>,
    defer_online_removals: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
    history_days: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
    max_age: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Option<String>,
    kind: Option<String>,
    flavor: Option<String>,
    base_url: Option<String>,
    auth: Option<String>,
    token_env: Option<String>,
    token_file: Option<String>,
    user_id_env: Option<String>,
    user_id_file: Option<String>,
    api_key_env: Option<String>,
    api_key_file: Option<String>,
    ssid_env: Option<String>,
    ssid_file: Option<String>,
    account_id: Option<String>,
    ca_file: Option<String>,
    timeout: Option<String>,
    concurrency: Option<usize>,
    rate_limit: Option<f64>,
    burst: Option<u32>,
    max_retries: Option<u32>,
    retry_base: Option<String>,
    batch_size: Option<usize>,
    membership: Option<String>,
    keep_members: Option<Vec<String>>,
    max_response_bytes: Option<u64>,
    groups_at: Option<String>,
    agents_at: Option<String>,
    remove_form: Option<String>,
}

/// `[schedule]`.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Cron expression, 5 fields or 6 with seconds first.
    pub cron: String,
    /// Every n-th scheduled run is `--full`; 0 = never.
    pub full_every: u32,
    /// Also run ~2 s after the source changes.
    pub watch: bool,
}

/// `[safety]`: the mass-removal guard (SPEC 6.4).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Safety {
    pub max_removals: usize,
    pub max_removal_ratio: f64,
    pub delete_groups: bool,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `[log]`.
#[derive(Clone, Debug)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
    /// The daemon forgets runs and calls older than this many days (0 = keep all).
    pub history_days: u32,
}

/// `[metrics]`.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Where to serve `/metrics` and `/healthz`; None = off.
    pub listen: Option<SocketAddr>,
    /// `/healthz` fails once a target's last successful run is older than this.
    pub max_age: Duration,
}

/// A secret and where it came from (for messages that must not show the value).
#[derive(Clone, Debug)]
pub struct Secret {
    /// `token_env = "X"` -> "token_env (X)"; used in messages.
    pub from: String,
    /// None when the variable or file is missing (allowed for dry-runs only).
    pub value: Option<SecretString>,
}

impl Secret {
    /// The value of an optional secret, when it was found.
    pub fn value_of(s: &Option<Secret>) -> Option<&SecretString> {
        s.as_ref().and_then(|s| s.value.as_ref())
    }
}

/// One `[[target]]`, validated.
#[derive(Clone, Debug)]
pub struct TargetConfig {
    pub name: String,
    pub kind: Kind,
    /// SCIM only.
    pub flavor: Flavor,
    /// SCIM only.
    pub auth: Auth,
    /// Without a trailing slash.
    pub base_url: String,
    pub token: Option<Secret>,
    pub user_id: Option<Secret>,
    pub api_key: Option<Secret>,
    pub ssid: Option<Secret>,
    /// Kazoo account.
    pub account_id: Option<String>,
    /// Extra CA certificate (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    /// `rostersync/VERSION`, and the node's name on a PostgreSQL state (two nodes: the
    /// vendors' logs tell which node sent a call).
    pub user_agent: String,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests per second; None = unlimited.
    pub rate_limit: Option<f64>,
    /// Requests allowed at once before the rate applies.
    pub burst: u32,
    pub max_retries: u32,
    /// First backoff delay (doubles each retry, with jitter).
    pub retry_base: Duration,
    /// Member ids per operation where the API takes lists.
    pub batch_size: usize,
    pub membership: Mode,
    /// `keep_members`: protected members, never removed (SPEC 5).
    pub keep_members: Keep,
    /// The largest answer body accepted; a larger one fails the call unread.
    pub max_response_bytes: u64,
    /// `assign_group` only: where `Group/list` answers put their records (dot-separated
    /// keys, `.` for an answer that is the array); None = learned from the answers.
    pub groups_at: Option<String>,
    /// `assign_group` only: where `getGroupAgentRelation` answers put their records.
    pub agents_at: Option<String>,
    /// SCIM: how member removals are written, pinned by the operator (`remove_form`);
    /// None: the flavor's form, and what the server's answers show (a 501 fallback).
    pub remove_form: Option<crate::targets::scim::wire::RemoveForm>,
}

/// The default `max_response_bytes`: 32 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 32 * 1024 * 1024;

impl TargetConfig {
    /// The secrets this target needs that are missing, as "token_env (X)" strings.
    pub fn missing_secrets(&self) -> Vec<String> {
        let needed: Vec<&Option<Secret>> = match self.kind {
            Kind::Scim | Kind::Teams => vec![&self.token],
            Kind::AssignGroup if self.ssid.is_some() => vec![&self.ssid],
            Kind::AssignGroup => vec![&self.user_id, &self.token],
            Kind::Kazoo if self.api_key.is_some() => vec![&self.api_key],
            Kind::Kazoo => vec![&self.token],
        };
        needed
            .into_iter()
            .filter_map(|s| {
                s.as_ref()
                    .filter(|s| s.value.is_none())
                    .map(|s| s.from.clone())
            })
            .collect()
    }
}

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    /// The file or directory of the source; for a live source, what names it in messages
    /// (the LDAP URL and base, or the command).
    pub source: PathBuf,
    /// `[source.ldap]` or `[source] command`: the source is read live, not from `source`.
    pub live: Option<LiveSource>,
    /// Where the state lives: a SQLite file (the default) or PostgreSQL.
    pub state: StateLocation,
    /// This node's name and the lease's TTL (a PostgreSQL state only).
    pub ha: Ha,
    pub allow_empty_source: bool,
    /// A source whose files add up to more bytes is refused unread (exit 2).
    pub max_source_bytes: u64,
    pub schedule: Schedule,
    pub safety: Safety,
    /// `[safety] defer_online_removals`: a `teams` target keeps agents who are online now
    /// until a later run (SPEC 5, presence before removal).
    pub defer_online_removals: bool,
    pub log: Log,
    pub metrics: Metrics,
    pub targets: Vec<TargetConfig>,
    /// Problems worth a warning that do not stop the program (a secret file readable by
    /// other users, SPEC 6.5). Logged by the caller once logging is set up.
    pub warnings: Vec<String>,
}

impl Config {
    /// Finds the config file: `--config`, `$ROSTERSYNC_CONFIG`, `./config/rostersync.toml`,
    /// then `/etc/rostersync/rostersync.toml`.
    pub fn locate(explicit: Option<&Path>) -> PathBuf {
        if let Some(p) = explicit {
            return p.to_path_buf();
        }
        if let Some(p) = std::env::var_os("ROSTERSYNC_CONFIG") {
            return PathBuf::from(p);
        }
        let local = PathBuf::from("config/rostersync.toml");
        if local.exists() {
            return local;
        }
        PathBuf::from("/etc/rostersync/rostersync.toml")
    }

    /// Reads and validates the file at `path`, with environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(path, format!("cannot read the config file: {e}")))?;
        // Syntax errors with a line number, before the `config` crate (which has none).
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(err(path, format!("not valid TOML: {e}")));
        }
        let raw: RawConfig = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("ROSTERSYNC")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(overrides())),
            )
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| err(path, e.to_string()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        validate(path, &dir, raw)
    }

    pub fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// Reads the source of truth against this config's targets: the files, the directory
    /// (`[source.ldap]`) or the program's output (`[source] command`).
    pub fn load_source(&self) -> Result<crate::model::Desired, crate::source::SourceErrors> {
        self.load_source_allowing_empty(self.allow_empty_source)
    }

    /// [`Config::load_source`] with the empty-source rule given (`explain` reads an empty
    /// source too).
    pub fn load_source_allowing_empty(
        &self,
        allow_empty: bool,
    ) -> Result<crate::model::Desired, crate::source::SourceErrors> {
        let names: Vec<&str> = self.targets.iter().map(|t| t.name.as_str()).collect();
        match &self.live {
            None => crate::source::load_limited(
                &self.source,
                &names,
                allow_empty,
                self.max_source_bytes,
            ),
            Some(LiveSource::Ldap(l)) => crate::source::ldap::load(l, &names, allow_empty),
            Some(LiveSource::Command(c)) => {
                crate::source::command::load(c, &names, allow_empty, self.max_source_bytes)
            }
        }
    }

    /// An error naming every missing secret of these targets, or None when all are set.
    /// Each target's `User-Agent`: `rostersync/VERSION`, with the node's name on a
    /// PostgreSQL state (the vendors' logs, and the failover tests, tell nodes apart).
    pub fn set_user_agents(&mut self) {
        let agent = if self.state.is_postgres() {
            format!(
                "rostersync/{} (node {})",
                env!("CARGO_PKG_VERSION"),
                self.ha.node
            )
        } else {
            concat!("rostersync/", env!("CARGO_PKG_VERSION")).to_string()
        };
        for t in &mut self.targets {
            t.user_agent = agent.clone();
        }
    }

    /// How this node takes part in the lease (a PostgreSQL state): its name, the TTL, and
    /// the longest target timeout (how long a write sent before the lease ran out may take).
    pub fn lease_config(&self) -> crate::store::lease::LeaseConfig {
        crate::store::lease::LeaseConfig {
            node: self.ha.node.clone(),
            ttl: self.ha.lease,
            grace: self
                .targets
                .iter()
                .map(|t| t.timeout)
                .max()
                .unwrap_or_default(),
        }
    }

    pub fn missing_secrets<'a>(
        &self,
        targets: impl IntoIterator<Item = &'a TargetConfig>,
    ) -> Option<String> {
        let missing: Vec<String> = targets
            .into_iter()
            .flat_map(|t| {
                t.missing_secrets()
                    .into_iter()
                    .map(move |m| format!("target \"{}\": {m} is not set", t.name))
            })
            .collect();
        (!missing.is_empty()).then(|| format!("{}: {}", self.path.display(), missing.join("; ")))
    }
}

/// `ROSTERSYNC_*` variables that are not config overrides: the ones rostersync reads for
/// itself (`ROSTERSYNC_CONFIG` names the file, `ROSTERSYNC_LOG` the log filter) and the
/// test suite's soak knobs (`ROSTERSYNC_SOAK_*`). Any other `ROSTERSYNC_*` variable is an
/// override, and an unknown one is an error naming it (a typo is never silently ignored).
fn overrides() -> config::Map<String, String> {
    std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("ROSTERSYNC_")
                && k != "ROSTERSYNC_CONFIG"
                && k != "ROSTERSYNC_LOG"
                && !k.starts_with("ROSTERSYNC_SOAK_")
        })
        .collect()
}

fn resolve(dir: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() { p } else { dir.join(p) }
}

fn duration(file: &Path, key: &str, v: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(v).map_err(|e| {
        err(
            file,
            format!("{key} = \"{v}\" is not a duration ({e}); write e.g. \"30s\" or \"500ms\""),
        )
    })
}

fn one_of<T: for<'de> Deserialize<'de>>(
    file: &Path,
    key: &str,
    v: &str,
    allowed: &str,
) -> Result<T, ConfigError> {
    serde_json::from_value(serde_json::Value::String(v.to_string()))
        .map_err(|_| err(file, format!("{key} = \"{v}\" is not one of {allowed}")))
}

fn validate(file: &Path, dir: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
    let source = raw.source.ok_or_else(|| {
        err(file, "`source` is missing: name the file or directory of groups, e.g. source = \"groups.yaml\"")
    })?;
    let mut warnings = Vec::new();
    let ha = state::validate_ha(file, raw.ha)?;
    let state = state::validate_state(file, dir, raw.state, &ha.node, &mut warnings)?;
    let cron = raw.schedule.cron.unwrap_or_else(|| "*/10 * * * *".into());
    parse_cron(&cron).map_err(|e| err(file, format!("schedule.cron = \"{cron}\": {e}")))?;
    let ratio = raw.safety.max_removal_ratio.unwrap_or(0.25);
    if !(0.0..=1.0).contains(&ratio) {
        return Err(err(
            file,
            format!("safety.max_removal_ratio = {ratio} must be between 0 and 1"),
        ));
    }
    let format = match raw.log.format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(err(
                file,
                format!("log.format = \"{other}\" is not one of text, json"),
            ));
        }
    };
    let listen = match raw.metrics.listen.as_deref().unwrap_or("") {
        "" => None,
        s => Some(s.parse::<SocketAddr>().map_err(|_| {
            err(
                file,
                format!("metrics.listen = \"{s}\" is not an address like \"127.0.0.1:9464\""),
            )
        })?),
    };
    let max_age = match raw.metrics.max_age.as_deref() {
        Some(v) => duration(file, "metrics.max_age", v)?,
        None => Duration::from_secs(3600),
    };

    let max_source_bytes = raw
        .max_source_bytes
        .unwrap_or(crate::source::DEFAULT_MAX_SOURCE_BYTES);
    if max_source_bytes == 0 {
        return Err(err(
            file,
            "max_source_bytes = 0 would refuse every source; give a size in bytes \
             (default 134217728, 128 MiB)",
        ));
    }
    let mut names = BTreeSet::new();
    let mut targets = Vec::new();
    for (i, t) in raw.target.into_iter().enumerate() {
        let tc = validate_target(file, dir, i, t, &mut warnings)?;
        if !names.insert(tc.name.clone()) {
            return Err(err(
                file,
                format!(
                    "target[{i}].name = \"{}\" is used by two targets; names must be unique",
                    tc.name
                ),
            ));
        }
        targets.push(tc);
    }
    let source = source::validate_source(file, dir, source, &targets, &mut warnings)?;
    // A live source has no file to watch: the daemon reads it on its schedule.
    let watch = match (raw.schedule.watch, &source.live) {
        (Some(true), Some(_)) => {
            warnings.push(
                "schedule.watch = true has no effect with a [source.ldap] or [source] command: \
                 the source is read on the schedule"
                    .into(),
            );
            false
        }
        (w, None) => w.unwrap_or(true),
        (_, Some(_)) => false,
    };
    let mut cfg = Config {
        path: file.to_path_buf(),
        source: source.path,
        live: source.live,
        state,
        ha,
        allow_empty_source: raw.allow_empty_source,
        max_source_bytes,
        schedule: Schedule {
            cron,
            full_every: raw.schedule.full_every.unwrap_or(6),
            watch,
        },
        safety: Safety {
            max_removals: raw.safety.max_removals.unwrap_or(100),
            max_removal_ratio: ratio,
            delete_groups: raw.safety.delete_groups.unwrap_or(false),
        },
        defer_online_removals: raw.safety.defer_online_removals.unwrap_or(false),
        log: Log {
            format,
            level: raw.log.level.unwrap_or_else(|| "info".into()),
            history_days: raw.log.history_days.unwrap_or(90),
        },
        metrics: Metrics { listen, max_age },
        targets,
        warnings,
    };
    cfg.set_user_agents();
    Ok(cfg)
}

/// A cron expression that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    #[error("has {0} fields; write 5 (minute hour day month weekday) or 6 (seconds first)")]
    Fields(usize),
    #[error(transparent)]
    Syntax(#[from] croner::errors::CronError),
}

/// Parses a cron expression: standard 5 fields, or 6 with seconds first.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, CronError> {
    let fields = expr.split_whitespace().count();
    if !(expr.starts_with('@') || fields == 5 || fields == 6) {
        return Err(CronError::Fields(fields));
    }
    Ok(croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(expr)?)
}
