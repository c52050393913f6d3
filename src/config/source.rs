//! `source`: a path (SPEC 3), or a table with `[source.ldap]` (a directory read live) or
//! `command = [...]` (a program's stdout), SPEC 3.1. Everything the config alone decides
//! (URL, TLS mode, filters, attribute names, routes' targets, the `ca_file`, the password's
//! place) is checked here, so a mistake stops the program with exit 2 before any request.

use std::collections::BTreeMap;

use super::*;

/// `source = { ... }` as written, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSourceTable {
    path: Option<String>,
    ldap: Option<RawLdap>,
    command: Option<Vec<String>>,
    timeout: Option<String>,
}

/// `[source.ldap]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdap {
    url: Option<String>,
    tls: Option<String>,
    bind_dn: Option<String>,
    password_env: Option<String>,
    password_file: Option<String>,
    ca_file: Option<String>,
    groups_base: Option<String>,
    groups_filter: Option<String>,
    member_attribute: Option<String>,
    people_base: Option<String>,
    people_filter: Option<String>,
    email_attribute: Option<String>,
    name_attribute: Option<String>,
    key_attribute: Option<String>,
    uid_attribute: Option<String>,
    nested: Option<bool>,
    max_depth: Option<usize>,
    page_size: Option<i64>,
    timeout: Option<String>,
    #[serde(default)]
    ids: BTreeMap<String, String>,
    #[serde(default)]
    route: Vec<RawRoute>,
}

/// `[[source.ldap.route]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    filter: Option<String>,
    targets: Option<Vec<String>>,
}

/// A source read live instead of from files (SPEC 3.1).
#[derive(Clone, Debug)]
pub enum LiveSource {
    /// `[source.ldap]`: groups and people read from LDAP or Active Directory.
    Ldap(Box<LdapSource>),
    /// `[source] command`: a program whose stdout is a JSON or YAML source.
    Command(CommandSource),
}

/// How the LDAP connection is protected. TLS is always verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LdapTls {
    /// `ldaps://`: TLS from the first byte.
    Ldaps,
    /// `ldap://` then the StartTLS operation; a server that refuses it is an error.
    StartTls,
    /// `ldap://` in the clear: only when `tls = "none"` is written.
    None,
}

/// `[source.ldap]`, validated.
#[derive(Clone, Debug)]
pub struct LdapSource {
    /// `ldap://host:port` or `ldaps://host:port`, as written.
    pub url: String,
    pub tls: LdapTls,
    /// None: an anonymous bind.
    pub bind_dn: Option<String>,
    pub password: Option<Secret>,
    /// Extra CA certificates (PEM) to trust beside the system's.
    pub ca_file: Option<PathBuf>,
    pub groups_base: String,
    pub groups_filter: String,
    /// `member`, `uniqueMember` (values are DNs) or `memberUid` (values are uids).
    pub member_attribute: String,
    pub people_base: String,
    /// Which entries under `people_base` are people (for `memberUid` and the id lookup).
    pub people_filter: String,
    /// The person's email: `mail` by default, or e.g. `userPrincipalName`.
    pub email_attribute: String,
    /// The group's display name at the targets: `cn` by default.
    pub name_attribute: String,
    /// The group's stable key: `entryUUID` by default (`objectGUID` on AD).
    pub key_attribute: String,
    /// The attribute `memberUid` values match: `uid` by default.
    pub uid_attribute: String,
    /// Members that are groups contribute their people (cycle-safe).
    pub nested: bool,
    /// How deep nested groups are followed; deeper is a source error.
    pub max_depth: usize,
    /// Entries per page (RFC 2696).
    pub page_size: i32,
    /// The limit of each LDAP operation (connect, bind, one page).
    pub timeout: Duration,
    /// Target name -> the person attribute holding their member id there.
    pub ids: BTreeMap<String, String>,
    /// Which groups go to which targets; empty: every group to every target.
    pub routes: Vec<Route>,
}

/// `[[source.ldap.route]]`: the groups its filter matches go to its targets.
#[derive(Clone, Debug)]
pub struct Route {
    pub filter: String,
    pub targets: Vec<String>,
}

/// `[source] command`, validated.
#[derive(Clone, Debug)]
pub struct CommandSource {
    /// The program and its arguments (no shell).
    pub argv: Vec<String>,
    /// The program is killed after this long (default 60 s).
    pub timeout: Duration,
}

impl LiveSource {
    /// What `source` shows in messages and `check`: the URL or the program.
    pub fn describe(&self) -> String {
        match self {
            LiveSource::Ldap(l) => format!("{}/{}", l.url.trim_end_matches('/'), l.groups_base),
            LiveSource::Command(c) => format!("command {}", c.argv.join(" ")),
        }
    }
}

/// `source` validated: the path of files, and the live source when there is one.
pub(super) struct Validated {
    pub path: PathBuf,
    pub live: Option<LiveSource>,
}

/// Validates `source` (a string or a table) against the configured `targets`.
pub(super) fn validate_source(
    file: &Path,
    dir: &Path,
    raw: serde_json::Value,
    targets: &[TargetConfig],
    warnings: &mut Vec<String>,
) -> Result<Validated, ConfigError> {
    let table: RawSourceTable = match raw {
        serde_json::Value::String(p) => {
            return Ok(Validated {
                path: resolve(dir, &p),
                live: None,
            });
        }
        serde_json::Value::Object(_) => {
            serde_json::from_value(raw).map_err(|e| err(file, format!("[source]: {e}")))?
        }
        other => {
            return Err(err(
                file,
                format!(
                    "source = {other} is neither a path nor a table; write \
                     source = \"groups.yaml\", a [source.ldap] table or [source] command = [...]"
                ),
            ));
        }
    };
    let given = [
        table.path.is_some(),
        table.ldap.is_some(),
        table.command.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if given != 1 {
        return Err(err(
            file,
            "[source] needs exactly one of `path`, `command` or a [source.ldap] table",
        ));
    }
    if table.timeout.is_some() && table.command.is_none() {
        return Err(err(
            file,
            "source.timeout applies to `command` only; for LDAP write source.ldap.timeout",
        ));
    }
    if let Some(p) = table.path {
        return Ok(Validated {
            path: resolve(dir, &p),
            live: None,
        });
    }
    let live = if let Some(argv) = table.command {
        let timeout = match &table.timeout {
            Some(t) => duration(file, "source.timeout", t)?,
            None => Duration::from_secs(60),
        };
        validate_command(file, dir, argv, timeout)?
    } else {
        let ldap = table.ldap.unwrap_or_default();
        LiveSource::Ldap(Box::new(validate_ldap(file, dir, ldap, targets, warnings)?))
    };
    Ok(Validated {
        path: PathBuf::from(live.describe()),
        live: Some(live),
    })
}

fn validate_command(
    file: &Path,
    dir: &Path,
    mut argv: Vec<String>,
    timeout: Duration,
) -> Result<LiveSource, ConfigError> {
    let Some(program) = argv.first() else {
        return Err(err(
            file,
            "source.command = [] names no program; write e.g. \
             command = [\"/usr/local/bin/export-agents\", \"--json\"]",
        ));
    };
    if program.is_empty() {
        return Err(err(file, "source.command[0] is empty: name the program"));
    }
    if timeout.is_zero() {
        return Err(err(
            file,
            "source.timeout = 0 would stop every command at once",
        ));
    }
    // A relative program with a slash is relative to the config's folder, like every path.
    if program.contains('/') {
        argv[0] = resolve(dir, program).to_string_lossy().into_owned();
    }
    Ok(LiveSource::Command(CommandSource { argv, timeout }))
}

/// An attribute description: letters, digits and hyphens (and `;` options), starting with
/// a letter; or a numeric OID.
fn attribute_ok(a: &str) -> bool {
    let mut chars = a.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';'),
        Some(c) if c.is_ascii_digit() => a.chars().all(|c| c.is_ascii_digit() || c == '.'),
        _ => false,
    }
}

fn validate_ldap(
    file: &Path,
    dir: &Path,
    raw: RawLdap,
    targets: &[TargetConfig],
    warnings: &mut Vec<String>,
) -> Result<LdapSource, ConfigError> {
    let url = raw.url.ok_or_else(|| {
        err(
            file,
            "source.ldap.url is missing; write e.g. url = \"ldaps://dc1.example.com\"",
        )
    })?;
    let parsed = url::Url::parse(&url).map_err(|e| {
        err(
            file,
            format!("source.ldap.url = \"{url}\" is not a URL ({e}); write e.g. \"ldaps://dc1.example.com\""),
        )
    })?;
    let scheme_tls = match parsed.scheme() {
        "ldaps" => LdapTls::Ldaps,
        "ldap" => LdapTls::StartTls,
        other => {
            return Err(err(
                file,
                format!(
                    "source.ldap.url = \"{url}\": the scheme {other:?} is not ldap:// or ldaps://"
                ),
            ));
        }
    };
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(err(
            file,
            format!("source.ldap.url = \"{url}\" names no host"),
        ));
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(err(
            file,
            format!(
                "source.ldap.url = \"{url}\": write only the scheme, host and port; the base \
                 DN and filter go in groups_base and groups_filter"
            ),
        ));
    }
    let tls = match raw.tls.as_deref() {
        None => scheme_tls,
        Some("ldaps") if scheme_tls == LdapTls::Ldaps => LdapTls::Ldaps,
        Some("starttls") if scheme_tls == LdapTls::StartTls => LdapTls::StartTls,
        Some("none") if scheme_tls == LdapTls::StartTls => LdapTls::None,
        Some(t @ ("ldaps" | "starttls" | "none")) => {
            return Err(err(
                file,
                format!(
                    "source.ldap.tls = \"{t}\" does not fit url = \"{url}\": ldaps:// is always \
                     TLS; ldap:// takes \"starttls\" (the default) or \"none\""
                ),
            ));
        }
        Some(t) => {
            return Err(err(
                file,
                format!("source.ldap.tls = \"{t}\" is not one of ldaps, starttls, none"),
            ));
        }
    };
    let password = super::target::secret_of(
        file,
        dir,
        "source.ldap",
        "password",
        raw.password_env,
        raw.password_file,
        warnings,
    )?;
    let bind_dn = raw.bind_dn.filter(|d| !d.trim().is_empty());
    match (&bind_dn, &password) {
        (Some(_), None) => {
            return Err(err(
                file,
                "source.ldap.bind_dn is set but no password: give password_file or password_env",
            ));
        }
        (None, Some(_)) => {
            return Err(err(
                file,
                "source.ldap has a password but no bind_dn: name the account to bind as",
            ));
        }
        _ => {}
    }
    if let Some(p) = &password
        && p.value.is_none()
    {
        return Err(err(
            file,
            format!("source.ldap: {} is not set (or empty)", p.from),
        ));
    }
    let ca_file = raw.ca_file.map(|p| resolve(dir, &p));
    if let Some(ca) = &ca_file {
        crate::source::ldap::read_ca_file(ca)
            .map_err(|e| err(file, format!("source.ldap.ca_file: {e}")))?;
    }
    if ca_file.is_some() && tls == LdapTls::None {
        return Err(err(
            file,
            "source.ldap.ca_file is set but tls = \"none\": the CA would never be used",
        ));
    }
    let groups_base = raw
        .groups_base
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| {
            err(
                file,
                "source.ldap.groups_base is missing: the DN under which the groups to sync are, \
             e.g. \"OU=Contact Centre,DC=example,DC=com\"",
            )
        })?;
    let people_base = raw
        .people_base
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| groups_base.clone());
    let filter = |key: &str, v: Option<String>, default: &str| -> Result<String, ConfigError> {
        let v = v.unwrap_or_else(|| default.to_string()).trim().to_string();
        // A bare `cn=x` is one item; parenthesized, it can be combined with another filter.
        let v = if v.starts_with('(') {
            v
        } else {
            format!("({v})")
        };
        ldap3::parse_filter(&v).map_err(|()| {
            err(
                file,
                format!(
                    "source.ldap.{key} = \"{v}\" is not an LDAP filter (RFC 4515); write e.g. \
                     \"(&(objectClass=group)(cn=cc-*))\""
                ),
            )
        })?;
        Ok(v)
    };
    let groups_filter = filter(
        "groups_filter",
        raw.groups_filter,
        "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=group)(objectClass=posixGroup))",
    )?;
    let people_filter = filter(
        "people_filter",
        raw.people_filter,
        "(|(objectClass=person)(objectClass=posixAccount))",
    )?;
    let attr = |key: &str, v: Option<String>, default: &str| -> Result<String, ConfigError> {
        let v = v.unwrap_or_else(|| default.to_string());
        if attribute_ok(&v) {
            Ok(v)
        } else {
            Err(err(
                file,
                format!("source.ldap.{key} = \"{v}\" is not an attribute name"),
            ))
        }
    };
    let member_attribute = attr("member_attribute", raw.member_attribute, "member")?;
    if !["member", "uniquemember", "memberuid"]
        .contains(&member_attribute.to_ascii_lowercase().as_str())
    {
        return Err(err(
            file,
            format!(
                "source.ldap.member_attribute = \"{member_attribute}\" is not one of member, \
                 uniqueMember, memberUid"
            ),
        ));
    }
    let email_attribute = attr("email_attribute", raw.email_attribute, "mail")?;
    let name_attribute = attr("name_attribute", raw.name_attribute, "cn")?;
    let key_attribute = attr("key_attribute", raw.key_attribute, "entryUUID")?;
    let uid_attribute = attr("uid_attribute", raw.uid_attribute, "uid")?;
    let mut ids = BTreeMap::new();
    for (target, a) in raw.ids {
        if !targets.iter().any(|t| t.name == target) {
            return Err(err(
                file,
                format!(
                    "source.ldap.ids: unknown target {target:?}; the config has {}",
                    names(targets)
                ),
            ));
        }
        let a = attr(&format!("ids.{target}"), Some(a), "")?;
        ids.insert(target, a);
    }
    let mut routes = Vec::new();
    for (i, r) in raw.route.into_iter().enumerate() {
        let f =
            filter(
                &format!("route[{i}].filter"),
                Some(r.filter.ok_or_else(|| {
                    err(file, format!("source.ldap.route[{i}].filter is missing"))
                })?),
                "",
            )?;
        let ts = r.targets.ok_or_else(|| {
            err(
                file,
                format!(
                    "source.ldap.route[{i}].targets is missing: name the targets its groups go to"
                ),
            )
        })?;
        for t in &ts {
            if !targets.iter().any(|c| &c.name == t) {
                return Err(err(
                    file,
                    format!(
                        "source.ldap.route[{i}].targets: unknown target {t:?}; the config has {}",
                        names(targets)
                    ),
                ));
            }
        }
        routes.push(Route {
            filter: f,
            targets: ts,
        });
    }
    let max_depth = raw.max_depth.unwrap_or(10);
    if max_depth == 0 {
        return Err(err(
            file,
            "source.ldap.max_depth = 0: write nested = false to ignore member groups",
        ));
    }
    let page_size = raw.page_size.unwrap_or(500);
    let page_size = i32::try_from(page_size)
        .ok()
        .filter(|p| (1..=100_000).contains(p))
        .ok_or_else(|| {
            err(
                file,
                format!("source.ldap.page_size = {page_size} must be between 1 and 100000"),
            )
        })?;
    let timeout = match &raw.timeout {
        Some(t) => duration(file, "source.ldap.timeout", t)?,
        None => Duration::from_secs(30),
    };
    if timeout.is_zero() {
        return Err(err(
            file,
            "source.ldap.timeout = 0 would stop every read at once",
        ));
    }
    Ok(LdapSource {
        url: url.trim_end_matches('/').to_string(),
        tls,
        bind_dn,
        password,
        ca_file,
        groups_base,
        groups_filter,
        member_attribute,
        people_base,
        people_filter,
        email_attribute,
        name_attribute,
        key_attribute,
        uid_attribute,
        nested: raw.nested.unwrap_or(true),
        max_depth,
        page_size,
        timeout,
        ids,
        routes,
    })
}

fn names(targets: &[TargetConfig]) -> String {
    if targets.is_empty() {
        return "no targets".into();
    }
    targets
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads `text` as a config file in a temp dir (with `ldap.pw` beside it).
    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("ldap.pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("rostersync.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    const TARGET: &str = "[[target]]\nname = \"kazoo\"\nkind = \"kazoo\"\n\
        base_url = \"http://127.0.0.1:1\"\naccount_id = \"a1\"\ntoken_env = \"NOPE\"\n";

    fn ldap(lines: &str) -> String {
        format!(
            "[source.ldap]\nurl = \"ldap://dc1.example.com\"\nbind_dn = \"cn=r,dc=x\"\n\
             password_file = \"ldap.pw\"\ngroups_base = \"ou=g,dc=x\"\n{lines}\n{TARGET}"
        )
    }

    fn the_ldap(c: &Config) -> &LdapSource {
        match &c.live {
            Some(LiveSource::Ldap(l)) => l,
            other => panic!("not an LDAP source: {other:?}"),
        }
    }

    #[test]
    fn ldap_defaults_starttls_and_turns_the_watch_off() {
        let c = load(&ldap("")).expect("loads");
        let l = the_ldap(&c);
        assert_eq!(l.tls, LdapTls::StartTls);
        assert_eq!(l.key_attribute, "entryUUID");
        assert_eq!(l.member_attribute, "member");
        assert_eq!(l.email_attribute, "mail");
        assert_eq!(l.people_base, "ou=g,dc=x");
        assert!(l.nested);
        assert!(!c.schedule.watch, "a directory has no file to watch");
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "the password never prints"
        );
        let c = load(&ldap("").replace("ldap://", "ldaps://")).expect("loads");
        assert_eq!(the_ldap(&c).tls, LdapTls::Ldaps);
        let c = load(&ldap("tls = \"none\"")).expect("loads");
        assert_eq!(the_ldap(&c).tls, LdapTls::None);
        // Files keep the watch.
        let c = load(&format!("source = \"groups.yaml\"\n{TARGET}")).expect("loads");
        assert!(c.live.is_none() && c.schedule.watch);
    }

    #[test]
    fn ldap_mistakes_name_the_key() {
        for (lines, needle) in [
            ("tls = \"none\"\nca_file = \"ca.pem\"", "ca_file"),
            ("tls = \"ldaps\"", "source.ldap.tls"),
            ("tls = \"plain\"", "source.ldap.tls"),
            ("groups_filter = \"(&(cn=x)\"", "groups_filter"),
            ("member_attribute = \"owner\"", "member_attribute"),
            ("email_attribute = \"mail address\"", "email_attribute"),
            (
                "ids = { deepcall = \"employeeNumber\" }",
                "unknown target \"deepcall\"",
            ),
            (
                "[[source.ldap.route]]\nfilter = \"(cn=a*)\"\ntargets = [\"dixa\"]",
                "route[0].targets",
            ),
            (
                "[[source.ldap.route]]\ntargets = [\"kazoo\"]",
                "route[0].filter",
            ),
            ("max_depth = 0", "max_depth"),
            ("page_size = 0", "page_size"),
            ("timeout = \"soon\"", "source.ldap.timeout"),
            ("colour = \"blue\"", "colour"),
        ] {
            let e = load(&ldap(lines)).expect_err(lines);
            assert!(e.to_string().contains(needle), "{lines}: {needle:?} in {e}");
        }
        let e = load(&ldap("").replace("password_file = \"ldap.pw\"\n", "")).unwrap_err();
        assert!(e.to_string().contains("no password"), "{e}");
        let e =
            load(&ldap("").replace("ldap://dc1.example.com", "ldap://dc1/dc=x?cn")).unwrap_err();
        assert!(e.to_string().contains("only the scheme"), "{e}");
    }

    #[test]
    fn command_sources_and_their_mistakes() {
        let c = load(&format!(
            "[source]\ncommand = [\"bin/export\", \"--json\"]\ntimeout = \"5s\"\n{TARGET}"
        ))
        .expect("loads");
        match &c.live {
            Some(LiveSource::Command(cmd)) => {
                assert!(cmd.argv[0].ends_with("/bin/export") && cmd.argv[0].starts_with('/'));
                assert_eq!(cmd.argv[1], "--json");
                assert_eq!(cmd.timeout, Duration::from_secs(5));
            }
            other => panic!("{other:?}"),
        }
        assert!(!c.schedule.watch);
        for (text, needle) in [
            ("[source]\ncommand = []\n", "names no program"),
            (
                "[source]\ncommand = [\"x\"]\ntimeout = \"0s\"\n",
                "source.timeout",
            ),
            ("[source]\n", "exactly one"),
            (
                "[source]\ncommand = [\"x\"]\n[source.ldap]\nurl = \"ldaps://h\"\n",
                "exactly one",
            ),
            ("source = 3\n", "neither a path nor a table"),
        ] {
            let e = load(&format!("{text}{TARGET}")).expect_err(text);
            assert!(e.to_string().contains(needle), "{text}: {needle:?} in {e}");
        }
    }
}
