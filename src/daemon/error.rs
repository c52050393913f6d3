//! Why the daemon cannot start, and what makes a config unfit to run.

use super::watch;
use crate::config::{ConfigError, CronError};
use crate::metrics::MetricsError;
use crate::source::SourceErrors;
use crate::sync::ExitCode;

/// Why the daemon cannot start (nothing has been sent then).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}\nnothing was sent; fix it and start the daemon again")]
    Invalid(#[source] Invalid),
    #[error("cannot handle {signal}: {source}")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("schedule.cron: {0}")]
    Cron(#[source] CronError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("{config}: metrics.listen = \"{addr}\": cannot listen: {source}")]
    Listen {
        config: String,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Watch(#[from] watch::WatchError),
    /// The PostgreSQL state cannot be opened for the lease.
    #[error(transparent)]
    State(crate::store::StoreError),
}

impl DaemonError {
    /// Startup errors the config decides are usage errors (2); the others are failures (1).
    pub fn exit_code(&self) -> ExitCode {
        match self {
            DaemonError::Invalid(_) | DaemonError::Cron(_) | DaemonError::Listen { .. } => {
                ExitCode::Usage
            }
            _ => ExitCode::Failed,
        }
    }
}

/// What makes a config unfit to run (at start or on reload).
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] SourceErrors),
    #[error("{0}")]
    MissingSecrets(String),
    /// The reload's blocking task (reading config and source) stopped unexpectedly.
    #[error("reading the config and the source stopped unexpectedly: {0}")]
    Stopped(#[source] tokio::task::JoinError),
}
