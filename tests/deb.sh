#!/usr/bin/env bash
# The Debian package (SPEC 8), as CI checks it: `cargo deb` builds it (cargo-deb is
# installed once into target/cargo-deb and reused from there), `dpkg-deb -c` lists it, and
# the package is extracted into a temporary root whose binary must run `--version` and
# `check` on the extracted example config. Packages the debug binary unless DEB_PROFILE is
# set (see below).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

tools="$root/target/cargo-deb"
if [[ ! -x "$tools/bin/cargo-deb" ]]; then
    echo "tests/deb.sh: installing cargo-deb into $tools" >&2
    cargo install cargo-deb --locked --version 3.8.0 --root "$tools"
fi
export PATH="$tools/bin:$PATH"

# cargo deb prints the package's path as its last line. CI packages the debug binary the
# test suite has just built (no second, release build: it keeps CI within its time
# budget; the package's layout is what is checked here). `DEB_PROFILE=release` builds
# what operators install, as README's `cargo deb` does.
if [[ "${DEB_PROFILE:-dev}" == dev ]]; then
    cargo build --bin rostersync
    deb="$(cargo deb --profile dev --no-build 2>/dev/null | tail -n 1)"
else
    deb="$(cargo deb --profile "$DEB_PROFILE" | tail -n 1)"
fi
[[ -f "$deb" ]] || { echo "tests/deb.sh: cargo deb gave no package ($deb)" >&2; exit 1; }
echo "tests/deb.sh: built $deb"

listing="$(dpkg-deb -c "$deb")"
echo "$listing"
for path in \
    ./usr/bin/rostersync \
    ./usr/lib/systemd/system/rostersync.service \
    ./usr/lib/systemd/system/rostersync-sync.service \
    ./usr/lib/systemd/system/rostersync-sync.timer \
    ./etc/rostersync/rostersync.toml \
    ./etc/rostersync/groups.yaml \
    ./usr/share/man/man1/rostersync.1 \
    ./usr/share/man/man1/rostersync-check.1 \
    ./usr/share/bash-completion/completions/rostersync \
    ./usr/share/zsh/vendor-completions/_rostersync \
    ./usr/share/fish/vendor_completions.d/rostersync.fish
do
    # Man pages may be compressed by the packager.
    grep -Eq " ${path}(\.gz)?\$" <<<"$listing" || { echo "tests/deb.sh: $path is not in the package" >&2; exit 1; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -e "$deb" "$tmp/DEBIAN"
for conf in /etc/rostersync/rostersync.toml /etc/rostersync/groups.yaml; do
    grep -qx "$conf" "$tmp/DEBIAN/conffiles" || { echo "tests/deb.sh: $conf is not a conffile" >&2; exit 1; }
done

dpkg-deb -x "$deb" "$tmp/root"
bin="$tmp/root/usr/bin/rostersync"
"$bin" --version
# The example config names its secrets by environment variables: give it stand-ins (check
# sends nothing without --online).
env -u ROSTERSYNC_CONFIG MAESTRO_TOKEN=x DIXA_TOKEN=x DEEPCALL_USER_ID=x DEEPCALL_TOKEN=x KAZOO_API_KEY=x \
    "$bin" --config "$tmp/root/etc/rostersync/rostersync.toml" check
if command -v groff >/dev/null 2>&1; then
    page="$(ls "$tmp"/root/usr/share/man/man1/rostersync.1*)"
    if [[ "$page" == *.gz ]]; then zcat "$page"; else cat "$page"; fi \
        | groff -man -Tutf8 -ww -z
fi
echo "tests/deb.sh: package ok"
