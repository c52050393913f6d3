//! Reading the directory: the [`Directory`] a loader searches (a real connection, or answers
//! built in a test), and the reader of Active Directory's ranged values.
//!
//! Every search is read to its end or fails: a referral, a size or time limit, a page that
//! fails, a connection that drops, and a range that cannot be completed are each an error,
//! never a shorter answer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::PagedResults;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, ResultEntry, Scope, SearchEntry};
use secrecy::ExposeSecret as _;

use crate::config::{LdapSource, LdapTls};

/// One entry of an answer: its DN and its attributes (names lower-cased, values as bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub dn: String,
    pub attrs: HashMap<String, Vec<Vec<u8>>>,
}

impl Entry {
    /// The values of `attr` (any case), or none.
    pub fn values(&self, attr: &str) -> &[Vec<u8>] {
        self.attrs
            .get(&attr.to_ascii_lowercase())
            .map_or(&[], Vec::as_slice)
    }

    /// Whether the entry's objectClass says it is a group.
    pub fn is_group(&self) -> bool {
        self.values("objectClass").iter().any(|c| {
            let c = String::from_utf8_lossy(c).to_ascii_lowercase();
            GROUP_CLASSES.contains(&c.as_str())
        })
    }
}

/// The object classes of groups (SPEC 3.1), lower-cased.
pub const GROUP_CLASSES: [&str; 4] = ["groupofnames", "groupofuniquenames", "group", "posixgroup"];

/// Why the directory could not be read to the end.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: Box<LdapError>,
    },
    #[error(
        "{url} did not complete the connection (TLS, StartTLS) within {}; raise \
         source.ldap.timeout if the server is only slow",
        humantime::format_duration(*after)
    )]
    ConnectTimeout { url: String, after: Duration },
    #[error(
        "StartTLS was refused by {url} ({source}); rostersync never reads a directory in the \
         clear unless tls = \"none\" is written"
    )]
    StartTls {
        url: String,
        #[source]
        source: Box<LdapError>,
    },
    #[error(
        "the directory refused the bind as {dn:?}: {text} (result code {rc}); check bind_dn and the password"
    )]
    Bind { dn: String, rc: u32, text: String },
    #[error("the bind as {dn:?} failed: {source}")]
    BindFailed {
        dn: String,
        #[source]
        source: Box<LdapError>,
    },
    #[error("the search of {filter} under {base:?} failed: {source}")]
    Search {
        base: String,
        filter: String,
        #[source]
        source: Box<LdapError>,
    },
    #[error(
        "the search of {filter} under {base:?} hit the server's {what} (result code {rc}) after \
         {entries} entries; nothing was planned from a partial answer. Raise the limit for \
         the bind account, or narrow the base"
    )]
    Limit {
        base: String,
        filter: String,
        what: &'static str,
        rc: u32,
        entries: usize,
    },
    #[error(
        "the search of {filter} under {base:?} answered with a referral to {to}, which \
         rostersync does not follow; point the base at the server that holds the entries"
    )]
    Referral {
        base: String,
        filter: String,
        to: String,
    },
    #[error("the search of {filter} under {base:?} ended with result code {rc}: {text}")]
    Result {
        base: String,
        filter: String,
        rc: u32,
        text: String,
    },
    #[error(
        "the values of {attr} on {dn:?} could not be read to the end: {problem}; nothing was \
         planned from a partial group"
    )]
    Range {
        dn: String,
        attr: String,
        problem: String,
    },
}

/// What a loader reads: searches answered in full.
#[allow(async_fn_in_trait)]
pub trait Directory {
    /// Every entry of one search (paged where the scope is not `Base`), or an error.
    async fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
    ) -> Result<Vec<Entry>, ReadError>;
}

/// An entry as the loader keeps it, from ldap3's.
fn entry_of(re: ResultEntry) -> Entry {
    let se = SearchEntry::construct(re);
    let mut attrs: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for (k, v) in se.attrs {
        attrs
            .entry(k.to_ascii_lowercase())
            .or_default()
            .extend(v.into_iter().map(String::into_bytes));
    }
    for (k, v) in se.bin_attrs {
        attrs.entry(k.to_ascii_lowercase()).or_default().extend(v);
    }
    Entry { dn: se.dn, attrs }
}

/// A bound connection to a real directory.
pub struct Conn {
    ldap: Ldap,
    page_size: i32,
    timeout: Duration,
}

/// The certificates of a `source.ldap.ca_file`, as the connection will trust them.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a PEM certificate bundle: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE----- blocks)")]
    Empty { path: PathBuf },
}

/// Reads and checks a PEM bundle of CA certificates.
pub fn read_ca_file(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, CaFileError> {
    use rustls::pki_types::pem::PemObject as _;
    let pem = std::fs::read(path).map_err(|source| CaFileError::Read {
        path: path.into(),
        source,
    })?;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaFileError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CaFileError::Empty { path: path.into() });
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in &certs {
        roots.add(c.clone()).map_err(|e| CaFileError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
    }
    Ok(certs)
}

/// The TLS settings: the system's roots, plus the `ca_file`'s; always verified.
fn tls_config(cfg: &LdapSource) -> Result<Arc<rustls::ClientConfig>, ReadError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = &cfg.ca_file {
        // Checked at load; read again in case it changed since.
        let certs = read_ca_file(ca).map_err(|e| ReadError::Connect {
            url: cfg.url.clone(),
            source: Box::new(LdapError::Io {
                source: std::io::Error::other(e.to_string()),
            }),
        })?;
        for c in certs {
            let _ = roots.add(c);
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ReadError::Connect {
            url: cfg.url.clone(),
            source: Box::new(LdapError::Io {
                source: std::io::Error::other(e.to_string()),
            }),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Conn {
    /// Connects (TLS as configured, always verified) and binds.
    pub async fn open(cfg: &LdapSource) -> Result<Conn, ReadError> {
        let url = cfg.url.clone();
        let mut settings = LdapConnSettings::new().set_conn_timeout(cfg.timeout);
        if cfg.tls != LdapTls::None {
            settings = settings.set_config(tls_config(cfg)?);
        }
        settings = settings.set_starttls(cfg.tls == LdapTls::StartTls);
        // The TCP connect has its own limit; the TLS handshake and StartTLS get this one.
        let connected = tokio::time::timeout(
            cfg.timeout,
            LdapConnAsync::with_settings(settings, &cfg.url),
        )
        .await
        .map_err(|_| ReadError::ConnectTimeout {
            url: url.clone(),
            after: cfg.timeout,
        })?;
        let (conn, mut ldap) = connected.map_err(|source| match source {
            e @ LdapError::LdapResult { .. } if cfg.tls == LdapTls::StartTls => {
                ReadError::StartTls {
                    url: url.clone(),
                    source: Box::new(e),
                }
            }
            source => ReadError::Connect {
                url: url.clone(),
                source: Box::new(source),
            },
        })?;
        ldap3::drive!(conn);
        if let (Some(dn), Some(pw)) = (&cfg.bind_dn, crate::config::Secret::value_of(&cfg.password))
        {
            let res = ldap
                .with_timeout(cfg.timeout)
                .simple_bind(dn, pw.expose_secret())
                .await
                .map_err(|source| ReadError::BindFailed {
                    dn: dn.clone(),
                    source: Box::new(source),
                })?;
            if res.rc != 0 {
                return Err(ReadError::Bind {
                    dn: dn.clone(),
                    rc: res.rc,
                    text: if res.text.is_empty() {
                        rc_name(res.rc).to_string()
                    } else {
                        res.text
                    },
                });
            }
        }
        Ok(Conn {
            ldap,
            page_size: cfg.page_size,
            timeout: cfg.timeout,
        })
    }

    /// Ends the session (best effort: the answers are all read by now).
    pub async fn close(mut self) {
        let _ = self.ldap.unbind().await;
    }
}

/// A readable name for the result codes a loader may meet.
fn rc_name(rc: u32) -> &'static str {
    match rc {
        3 => "time limit exceeded",
        4 => "size limit exceeded",
        11 => "administrative limit exceeded",
        32 => "no such object",
        49 => "invalid credentials",
        50 => "insufficient access rights",
        51 => "busy",
        52 => "unavailable",
        _ => "error",
    }
}

impl Directory for Conn {
    async fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
    ) -> Result<Vec<Entry>, ReadError> {
        let fail = |source| ReadError::Search {
            base: base.to_string(),
            filter: filter.to_string(),
            source: Box::new(source),
        };
        let attrs: Vec<String> = attrs.to_vec();
        self.ldap.with_timeout(self.timeout);
        let mut stream = if scope == Scope::Base {
            self.ldap
                .streaming_search(base, scope, filter, attrs)
                .await
                .map_err(fail)?
        } else {
            self.ldap
                .streaming_search_with(
                    PagedResults::new(self.page_size),
                    base,
                    scope,
                    filter,
                    attrs,
                )
                .await
                .map_err(fail)?
        };
        let mut entries = Vec::new();
        loop {
            let next = stream.next().await.map_err(fail)?;
            let Some(re) = next else { break };
            if re.is_intermediate() {
                continue;
            }
            if re.is_ref() {
                let to = ldap3::parse_refs(re.0).join(", ");
                return Err(ReadError::Referral {
                    base: base.to_string(),
                    filter: filter.to_string(),
                    to,
                });
            }
            entries.push(entry_of(re));
        }
        let res = stream.finish().await;
        match res.rc {
            0 => Ok(entries),
            3 | 4 | 11 => Err(ReadError::Limit {
                base: base.to_string(),
                filter: filter.to_string(),
                what: match res.rc {
                    3 => "time limit",
                    4 => "size limit",
                    _ => "administrative limit",
                },
                rc: res.rc,
                entries: entries.len(),
            }),
            10 => Err(ReadError::Referral {
                base: base.to_string(),
                filter: filter.to_string(),
                to: res.refs.join(", "),
            }),
            rc => Err(ReadError::Result {
                base: base.to_string(),
                filter: filter.to_string(),
                rc,
                text: if res.text.is_empty() {
                    rc_name(rc).to_string()
                } else {
                    res.text
                },
            }),
        }
    }
}

/// One `attr;range=LOW-HIGH` attribute name: (LOW, HIGH), HIGH None for `*`.
fn parse_range(name: &str, attr: &str) -> Option<(usize, Option<usize>)> {
    let rest = name.strip_prefix(attr)?.strip_prefix(";range=")?;
    let (low, high) = rest.split_once('-')?;
    let low = low.parse().ok()?;
    let high = if high == "*" {
        None
    } else {
        Some(high.parse().ok()?)
    };
    Some((low, high))
}

/// One range of values as an answer holds it: the attribute's name, its first index,
/// its last (None for `*`), and its values.
type Range<'e> = (&'e str, usize, Option<usize>, &'e [Vec<u8>]);

/// Why an entry's ranged attribute cannot be read.
#[derive(Debug, thiserror::Error)]
enum RangeShape {
    #[error("the answer holds two ranges at once")]
    Two,
    #[error("the answer's attribute {0:?} is not a range")]
    NotARange(String),
}

/// The ranged attribute of `entry` for `attr` (lower-case): its name, bounds and values.
fn ranged<'e>(entry: &'e Entry, attr: &str) -> Result<Option<Range<'e>>, RangeShape> {
    let prefix = format!("{attr};range=");
    let mut found = None;
    for (name, values) in &entry.attrs {
        if name.starts_with(&prefix) {
            if found.is_some() {
                return Err(RangeShape::Two);
            }
            let (low, high) =
                parse_range(name, attr).ok_or_else(|| RangeShape::NotARange(name.clone()))?;
            found = Some((name.as_str(), low, high, values.as_slice()));
        }
    }
    Ok(found)
}

/// How many range reads one attribute may take before the reader gives up (a million
/// values at AD's 1,500 a read is 667).
const MAX_RANGE_READS: usize = 10_000;

/// Every value of `attr` on `entry`, Active Directory's ranged values (`member;range=0-1499`,
/// then `member;range=1500-*`, ...) read to the range that ends in `*`. An entry without the
/// attribute has none (the directory was asked for it and shows none).
///
/// # Errors
///
/// [`ReadError::Range`] when a range is not where the previous one said the next starts,
/// holds fewer values than it says, or does not come back at all; any error of a read.
pub async fn full_values<D: Directory>(
    dir: &mut D,
    entry: &Entry,
    attr: &str,
) -> Result<Vec<Vec<u8>>, ReadError> {
    let attr = attr.to_ascii_lowercase();
    let fail = |problem: String| ReadError::Range {
        dn: entry.dn.clone(),
        attr: attr.clone(),
        problem,
    };
    let plain = entry.values(&attr);
    let Some(first) = ranged(entry, &attr).map_err(|e| fail(e.to_string()))? else {
        return Ok(plain.to_vec());
    };
    if !plain.is_empty() {
        return Err(fail(format!(
            "the answer holds {} plain values beside the range {:?}; not understood",
            plain.len(),
            first.0
        )));
    }
    let mut values: Vec<Vec<u8>> = Vec::new();
    let mut expect = 0usize;
    let mut range = (first.0.to_string(), first.1, first.2, first.3.to_vec());
    for _ in 0..MAX_RANGE_READS {
        let (name, low, high, vals) = range;
        if low != expect {
            return Err(fail(format!(
                "the range {name:?} does not start at {expect}, where the previous one ended"
            )));
        }
        let Some(h) = high else {
            values.extend(vals);
            return Ok(values);
        };
        if h < low || vals.len() != h - low + 1 {
            return Err(fail(format!(
                "the range {name:?} holds {} values",
                vals.len()
            )));
        }
        values.extend(vals);
        expect = h + 1;
        let ask = format!("{attr};range={expect}-*");
        let mut answer = dir
            .search(
                &entry.dn,
                Scope::Base,
                "(objectClass=*)",
                std::slice::from_ref(&ask),
            )
            .await?;
        if answer.len() != 1 {
            return Err(fail(format!(
                "asking for {ask:?} gave {} entries, not the group",
                answer.len()
            )));
        }
        let current = answer.remove(0);
        let Some(next) = ranged(&current, &attr).map_err(|e| fail(e.to_string()))? else {
            return Err(fail(format!(
                "asking for {ask:?} gave no range (attributes seen: {})",
                seen(&current)
            )));
        };
        range = (next.0.to_string(), next.1, next.2, next.3.to_vec());
    }
    Err(fail(format!(
        "more than {MAX_RANGE_READS} ranges; not read to the end"
    )))
}

/// The attribute names of an entry, for messages.
fn seen(e: &Entry) -> String {
    let mut names: Vec<&str> = e.attrs.keys().map(String::as_str).collect();
    names.sort_unstable();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
