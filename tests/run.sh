#!/usr/bin/env bash
# The whole test suite: `bash tests/run.sh [cargo test args...]`.
#
# The integration tests run a real third-party SCIM server, `scim2-server` from PyPI, as
# one of the fake targets. This script installs it (once) into target/scim-venv, exports
# SCIM2_SERVER_BIN for the tests, then runs `cargo test --all-targets "$@"`.
# Needs: Rust, Python 3 with venv + pip, and access to PyPI the first time; as root with
# apt, it installs Debian's systemd (systemd-analyze), slapd + ldap-utils and postgresql
# when missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

venv="$root/target/scim-venv"
# The versions the fakes were written and tested against (scim2-server's behaviour,
# error texts and status codes are pinned with them).
pins=(
    scim2-server==0.8.3
    scim2-models==0.12.3
    pydantic==2.14.4
    pydantic_core==2.50.5
    annotated-types==0.8.0
    typing-inspection==0.4.5
    typing_extensions==4.16.0
    email-validator==2.4.0
    dnspython==2.9.2
    idna==3.20
    lark==1.3.1
)
stamp="$venv/.installed-$(printf '%s\n' "${pins[@]}" | cksum | cut -d' ' -f1)"
python="${PYTHON:-python3}"
pip_flags=(--disable-pip-version-check --no-input -q)

if [[ ! -x "$venv/bin/scim2-server" || ! -f "$stamp" ]]; then
    echo "tests/run.sh: installing ${pins[0]} into $venv" >&2
    mkdir -p "$root/target"
    if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        rm -rf "$venv"
        if ! "$python" -m venv "$venv" || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1
        then
            # No ensurepip (e.g. Debian without python3-venv): install into a plain folder
            # with the system pip and wrap the entry point.
            echo "tests/run.sh: '$python -m venv' gave no pip; using pip --target" >&2
            rm -rf "$venv"
            mkdir -p "$venv/bin"
            "$python" -m pip install "${pip_flags[@]}" --target "$venv/site" "${pins[@]}"
            py="$(command -v "$python")"
            {
                echo '#!/bin/sh'
                echo "PYTHONPATH=\"$venv/site\${PYTHONPATH:+:\$PYTHONPATH}\" exec \"$py\" \\"
                echo "    -c 'from scim2_server.testserver.cli import main; main()' \"\$@\""
            } >"$venv/bin/scim2-server"
            chmod +x "$venv/bin/scim2-server"
        fi
    fi
    if [[ -x "$venv/bin/python" ]]; then
        "$venv/bin/python" -m pip install "${pip_flags[@]}" "${pins[@]}"
    fi
    "$venv/bin/scim2-server" --help >/dev/null
    rm -f "$venv"/.installed-*
    touch "$stamp"
fi

# Debian packages the tests need, installed when missing (root, apt; `apt-get update` runs
# once, before the first install).
apt_updated=0
apt_install() {
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        return 1
    fi
    if [[ "$apt_updated" == 0 ]]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The daemon tests check the unit files in systemd/ with `systemd-analyze` (verify, and
# security --offline); they fail with a clear message when it is missing.
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "tests/run.sh: installing Debian's systemd package for systemd-analyze" >&2
    apt_install systemd ||
        echo "tests/run.sh: systemd-analyze is missing and cannot be installed here (not root);" \
            "the unit-file tests will fail" >&2
fi

# The LDAP source's tests (tests/it/ldap.rs) start throwaway OpenLDAP servers: Debian's
# `slapd` (and `ldap-utils`). The package configures and may start a system slapd of its
# own, which the tests neither need nor use. The tests fail (never skip) without it.
if ! PATH="$PATH:/usr/sbin" command -v slapd >/dev/null 2>&1 \
    || ! PATH="$PATH:/usr/sbin" command -v slapadd >/dev/null 2>&1; then
    echo "tests/run.sh: installing Debian's slapd and ldap-utils for the LDAP tests" >&2
    apt_install slapd ldap-utils ||
        echo "tests/run.sh: slapd is missing and cannot be installed here (not root);" \
            "the LDAP tests will fail" >&2
fi

# The PostgreSQL tests (src/store/pg_cluster.rs, tests/it/pg_harness.rs) start throwaway
# clusters of Debian's `postgresql` (initdb and postgres from /usr/lib/postgresql/*/bin, or
# PG_BIN), as its `postgres` user when run as root, on free 127.0.0.1 ports. The package
# creates and may start a system cluster of its own, which the tests neither need nor use.
# The tests fail (never skip) without it.
if [[ -z "${PG_BIN:-}" ]] && ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
    echo "tests/run.sh: installing Debian's postgresql for the PostgreSQL tests" >&2
    apt_install postgresql ||
        echo "tests/run.sh: PostgreSQL is missing and cannot be installed here (not root);" \
            "the PostgreSQL tests will fail" >&2
fi

export SCIM2_SERVER_BIN="$venv/bin/scim2-server"
exec cargo test --all-targets "$@"
