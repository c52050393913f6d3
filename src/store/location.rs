//! Where the state lives (SPEC 6.7): a SQLite file, or a PostgreSQL database reached by
//! URL, with its password from a file or the environment and TLS through rustls.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{Result, StoreError};

/// `state = "path"`, `[state] path = ...`, or `[state] url = "postgres://..."`.
#[derive(Clone, Debug)]
pub enum StateLocation {
    Sqlite(PathBuf),
    Postgres(PgLocation),
}

impl StateLocation {
    /// How messages name it: the file, or the URL without any password.
    pub fn shown(&self) -> String {
        match self {
            StateLocation::Sqlite(p) => p.display().to_string(),
            StateLocation::Postgres(pg) => pg.url.clone(),
        }
    }

    /// The SQLite file, if that is the backend.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match self {
            StateLocation::Sqlite(p) => Some(p),
            StateLocation::Postgres(_) => None,
        }
    }

    /// Whether the state is in PostgreSQL (so runs that write hold the lease).
    pub fn is_postgres(&self) -> bool {
        matches!(self, StateLocation::Postgres(_))
    }
}

impl std::fmt::Display for StateLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

/// A PostgreSQL state: the URL (never with a password: the config refuses one there), the
/// password from `password_file`/`password_env`, and an optional CA bundle. With a
/// `ca_file`, or `sslmode=require` in the URL, TLS is required and the server's
/// certificate and host name are verified (verify-full); without either, no TLS.
#[derive(Clone, Debug)]
pub struct PgLocation {
    pub url: String,
    pub password: Option<SecretString>,
    /// Where the password comes from, for messages ("password_file (/run/...)").
    pub password_from: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// `application_name`, so `pg_stat_activity` tells the nodes apart.
    pub application: String,
}

impl PgLocation {
    fn setup(&self, message: impl Into<String>) -> StoreError {
        StoreError::Setup {
            location: self.url.clone(),
            message: message.into(),
        }
    }

    /// The connection settings: the URL's, the password, a connect timeout, TLS mode.
    fn config(&self) -> Result<(tokio_postgres::Config, bool)> {
        let mut cfg: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e| self.setup(format!("not a PostgreSQL URL: {e}")))?;
        match (&self.password, &self.password_from) {
            (Some(p), _) => {
                cfg.password(p.expose_secret());
            }
            (None, Some(from)) => {
                return Err(self.setup(format!("{from} is missing or empty")));
            }
            (None, None) => {}
        }
        cfg.application_name(&self.application);
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(Duration::from_secs(10));
        }
        // Keepalives: a connection to a server that vanished (failover, a cut network) is
        // noticed within about a minute, not after the kernel's two hours.
        cfg.keepalives(true);
        cfg.keepalives_idle(Duration::from_secs(30));
        let tls = self.ca_file.is_some()
            || cfg.get_ssl_mode() == tokio_postgres::config::SslMode::Require;
        if tls {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
        } else {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        Ok((cfg, tls))
    }

    /// rustls with the system's roots and the `ca_file`'s: the certificate and the host
    /// name are always verified.
    fn tls(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(ca) = &self.ca_file {
            let certs = crate::source::ldap::read_ca_file(ca)
                .map_err(|e| self.setup(format!("state.ca_file: {e}")))?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| self.setup(format!("state.ca_file: {e}")))?;
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| self.setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }

    fn wrap(&self) -> impl Fn(postgres::Error) -> StoreError + '_ {
        move |source| StoreError::Postgres {
            location: self.url.clone(),
            source,
        }
    }

    /// A blocking connection (the store's thread; never call it on a tokio worker).
    pub fn connect(&self) -> Result<postgres::Client> {
        let (cfg, tls) = self.config()?;
        let cfg = postgres::Config::from(cfg);
        if tls {
            cfg.connect(self.tls()?).map_err(self.wrap())
        } else {
            cfg.connect(postgres::NoTls).map_err(self.wrap())
        }
    }

    /// An async connection (the lease's); its connection task runs on the current runtime
    /// and ends when the client is dropped or the server goes away.
    pub async fn connect_async(&self) -> Result<tokio_postgres::Client> {
        let (cfg, tls) = self.config()?;
        if tls {
            let (client, conn) = cfg.connect(self.tls()?).await.map_err(self.wrap())?;
            tokio::spawn(drive(conn));
            Ok(client)
        } else {
            let (client, conn) = cfg
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(self.wrap())?;
            tokio::spawn(drive(conn));
            Ok(client)
        }
    }
}

/// Runs a connection until its client is dropped or the server goes away.
async fn drive<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "the lease's database connection ended");
    }
}
