//! One `[[target]]`: its keys validated, its secrets read from `*_env` or `*_file`.

use super::*;

/// Where a target's secrets are read, and where warnings about them go.
struct SecretCtx<'a> {
    file: &'a Path,
    dir: &'a Path,
    ctx: &'a str,
    warnings: &'a mut Vec<String>,
}

/// A warning when the secret file at `path` can be read by its group or by other users.
fn check_secret_mode(path: &Path, ctx: &str, what: &str, warnings: &mut Vec<String>) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o044 != 0 {
        let who = match (mode & 0o040 != 0, mode & 0o004 != 0) {
            (true, true) => "its group and all other users",
            (true, false) => "its group",
            _ => "all other users",
        };
        warnings.push(format!(
            "{ctx}: {what}_file {} is readable by {who} (mode {mode:04o}); \
             restrict it with `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
}

fn secret(
    sc: &mut SecretCtx<'_>,
    what: &str,
    env: Option<String>,
    path: Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    let (file, dir, ctx) = (sc.file, sc.dir, sc.ctx);
    match (env, path) {
        (Some(_), Some(_)) => Err(err(
            file,
            format!("{ctx}: give {what}_env or {what}_file, not both"),
        )),
        (Some(var), None) => {
            if var.is_empty() {
                return Err(err(
                    file,
                    format!("{ctx}.{what}_env is empty: name an environment variable"),
                ));
            }
            let value = std::env::var(&var)
                .ok()
                .filter(|v| !v.is_empty())
                .map(SecretString::from);
            Ok(Some(Secret {
                from: format!("{what}_env ({var})"),
                value,
            }))
        }
        (None, Some(p)) => {
            // `$CREDENTIALS_DIRECTORY` works for systemd's LoadCredential=.
            let expanded = match std::env::var("CREDENTIALS_DIRECTORY") {
                Ok(d) => p
                    .replace("$CREDENTIALS_DIRECTORY", &d)
                    .replace("${CREDENTIALS_DIRECTORY}", &d),
                Err(_) => p.clone(),
            };
            let full = resolve(dir, &expanded);
            check_secret_mode(&full, ctx, what, sc.warnings);
            let value = std::fs::read_to_string(&full)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .map(SecretString::from);
            Ok(Some(Secret {
                from: format!("{what}_file ({})", full.display()),
                value,
            }))
        }
        (None, None) => Ok(None),
    }
}

/// A secret from `{what}_env` or `{what}_file` of the table named `ctx` (for messages).
pub(super) fn secret_of(
    file: &Path,
    dir: &Path,
    ctx: &str,
    what: &str,
    env: Option<String>,
    path: Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Option<Secret>, ConfigError> {
    let mut sc = SecretCtx {
        file,
        dir,
        ctx,
        warnings,
    };
    secret(&mut sc, what, env, path)
}

pub(super) fn validate_target(
    file: &Path,
    dir: &Path,
    i: usize,
    t: RawTarget,
    warnings: &mut Vec<String>,
) -> Result<TargetConfig, ConfigError> {
    let name = t
        .name
        .ok_or_else(|| err(file, format!("target[{i}].name is missing")))?;
    if name.is_empty() || name.chars().any(|c| c.is_whitespace()) {
        return Err(err(
            file,
            format!("target[{i}].name = \"{name}\" must be a non-empty word"),
        ));
    }
    let ctx = format!("target \"{name}\"");
    let kind_s = t.kind.ok_or_else(|| {
        err(
            file,
            format!("{ctx}: `kind` is missing (scim, teams, assign_group or kazoo)"),
        )
    })?;
    let kind: Kind = one_of(
        file,
        &format!("{ctx}: kind"),
        &kind_s,
        "scim, teams, assign_group, kazoo",
    )?;
    let base = t
        .base_url
        .ok_or_else(|| err(file, format!("{ctx}: `base_url` is missing")))?;
    let parsed = url::Url::parse(&base).map_err(|e| {
        err(
            file,
            format!("{ctx}: base_url = \"{base}\" is not a URL ({e})"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(err(
            file,
            format!("{ctx}: base_url = \"{base}\" must be an http:// or https:// URL with a host"),
        ));
    }
    let flavor = match t.flavor.as_deref() {
        Some(f) => one_of(file, &format!("{ctx}: flavor"), f, "maestroqa, rfc7644")?,
        None => Flavor::Rfc7644,
    };
    let auth = match t.auth.as_deref() {
        Some(a) => one_of(file, &format!("{ctx}: auth"), a, "api_token, basic, bearer")?,
        None if flavor == Flavor::Maestroqa => Auth::ApiToken,
        None => Auth::Bearer,
    };
    let membership = match t.membership.as_deref() {
        Some(m) => one_of(
            file,
            &format!("{ctx}: membership"),
            m,
            "authoritative, owned, add_only",
        )?,
        None => Mode::Authoritative,
    };
    let keep_members = Keep::new(t.keep_members.as_deref().unwrap_or_default()).map_err(|e| {
        err(
            file,
            format!("{ctx}: keep_members: {e}; write globs on emails (\"svc-*@example.com\") or on member ids (\"id:4711\")"),
        )
    })?;
    let mut sc = SecretCtx {
        file,
        dir,
        ctx: &ctx,
        warnings,
    };
    let token = secret(&mut sc, "token", t.token_env, t.token_file)?;
    let user_id = secret(&mut sc, "user_id", t.user_id_env, t.user_id_file)?;
    let api_key = secret(&mut sc, "api_key", t.api_key_env, t.api_key_file)?;
    let ssid = secret(&mut sc, "ssid", t.ssid_env, t.ssid_file)?;
    match kind {
        Kind::Scim | Kind::Teams if token.is_none() => {
            return Err(err(
                file,
                format!("{ctx}: token_env or token_file is missing"),
            ));
        }
        Kind::AssignGroup if ssid.is_none() && (user_id.is_none() || token.is_none()) => {
            return Err(err(
                file,
                format!("{ctx}: give user_id_env and token_env (or ssid_env)"),
            ));
        }
        Kind::Kazoo if api_key.is_none() && token.is_none() => {
            return Err(err(file, format!("{ctx}: give api_key_env (or token_env)")));
        }
        Kind::Kazoo if t.account_id.as_deref().unwrap_or("").is_empty() => {
            return Err(err(file, format!("{ctx}: account_id is missing")));
        }
        _ => {}
    }
    let timeout = duration(
        file,
        &format!("{ctx}: timeout"),
        t.timeout.as_deref().unwrap_or("30s"),
    )?;
    let retry_base = duration(
        file,
        &format!("{ctx}: retry_base"),
        t.retry_base.as_deref().unwrap_or("500ms"),
    )?;
    let concurrency = t.concurrency.unwrap_or(4);
    if concurrency == 0 {
        return Err(err(file, format!("{ctx}: concurrency must be at least 1")));
    }
    let batch_size = t.batch_size.unwrap_or(100);
    if batch_size == 0 {
        return Err(err(file, format!("{ctx}: batch_size must be at least 1")));
    }
    let rate_limit = match t.rate_limit {
        Some(r) if r < 0.0 || !r.is_finite() => {
            return Err(err(
                file,
                format!("{ctx}: rate_limit = {r} must be a positive number (0 = unlimited)"),
            ));
        }
        Some(0.0) => None,
        Some(r) => Some(r),
        None if matches!(kind, Kind::Teams | Kind::Kazoo) => Some(10.0),
        None => None,
    };
    let burst = t.burst.unwrap_or(match kind {
        Kind::Teams => 4,
        _ => rate_limit.map(|r| r.ceil() as u32).unwrap_or(1).max(1),
    });
    if burst == 0 {
        return Err(err(file, format!("{ctx}: burst must be at least 1")));
    }
    let max_response_bytes = t.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
    if max_response_bytes < 1024 {
        return Err(err(
            file,
            format!(
                "{ctx}: max_response_bytes = {max_response_bytes} is too small; \
                 give at least 1024 (default {DEFAULT_MAX_RESPONSE_BYTES})"
            ),
        ));
    }
    let groups_at = records_path(file, &ctx, kind, "groups_at", t.groups_at)?;
    let agents_at = records_path(file, &ctx, kind, "agents_at", t.agents_at)?;
    let remove_form = match t.remove_form.as_deref() {
        None => None,
        Some(_) if kind != Kind::Scim => {
            return Err(err(
                file,
                format!("{ctx}: remove_form applies to kind = \"scim\" only"),
            ));
        }
        Some(f) => Some(one_of(
            file,
            &format!("{ctx}: remove_form"),
            f,
            "filter, value",
        )?),
    };
    let ca_file = t.ca_file.map(|p| resolve(dir, &p));
    if let Some(ca) = &ca_file {
        crate::targets::http::read_ca_file(ca).map_err(|e| err(file, format!("{ctx}: {e}")))?;
    }
    Ok(TargetConfig {
        name,
        kind,
        flavor,
        auth,
        base_url: base.trim_end_matches('/').to_string(),
        token,
        user_id,
        api_key,
        ssid,
        account_id: t.account_id,
        ca_file,
        timeout,
        user_agent: concat!("rostersync/", env!("CARGO_PKG_VERSION")).into(),
        concurrency,
        rate_limit,
        burst,
        max_retries: t.max_retries.unwrap_or(5),
        retry_base,
        batch_size,
        membership,
        keep_members,
        max_response_bytes,
        groups_at,
        agents_at,
        remove_form,
    })
}

/// `groups_at` / `agents_at`: where a DeepCall answer puts its records, as dot-separated
/// keys (`response`, `response.relationData`), or `.` for an answer that is the array.
fn records_path(
    file: &Path,
    ctx: &str,
    kind: Kind,
    key: &str,
    v: Option<String>,
) -> Result<Option<String>, ConfigError> {
    let Some(p) = v else { return Ok(None) };
    if kind != Kind::AssignGroup {
        return Err(err(
            file,
            format!("{ctx}: {key} = \"{p}\" applies only to kind = \"assign_group\"; remove it"),
        ));
    }
    let ok = p == "."
        || (!p.is_empty()
            && p.split('.').count() <= 8
            && p.split('.')
                .all(|s| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())));
    if !ok {
        return Err(err(
            file,
            format!(
                "{ctx}: {key} = \"{p}\" is not a path; give the keys from the answer down to the \
                 array, separated by dots (\"response\", \"response.relationData\"), or \".\" for an \
                 answer that is the array"
            ),
        ));
    }
    Ok(Some(p))
}
