#!/usr/bin/env bash
# Tests scripts/deps.sh's reading of apt sources (no root, no network): which Debian archive a
# host uses, and whether it already has bookworm-backports.
set -euo pipefail
cd "$(dirname "$0")"
. ./deps.sh

dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
failures=0
check() { # name expected actual
    if [ "$2" = "$3" ]; then
        echo "ok   $1"
    else
        echo "FAIL $1: expected '$2', got '$3'"
        failures=$((failures + 1))
    fi
}

# A fresh Debian 12 machine: deb822 sources with a mirror, security in a second stanza.
mkdir -p "$dir/a/sources.list.d"
cat >"$dir/a/sources.list.d/debian.sources" <<'SRC'
Types: deb
URIs: http://mirror.example.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example.org/debian-security
Suites: bookworm-security
Components: main
SRC
check "deb822 archive URI" "http://mirror.example.org/debian" "$(debian_archive_uri bookworm "$dir/a" | head -n1)"
check "deb822 without backports" "no" "$(has_suite bookworm-backports "$dir/a" && echo yes || echo no)"

# An older host: one-line sources.list with options, a commented-out backports line.
mkdir -p "$dir/b/sources.list.d"
cat >"$dir/b/sources.list" <<'SRC'
deb-src http://src.example.org/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://old.example.org/debian bookworm main contrib
deb http://security.debian.org/debian-security bookworm-security main
# deb http://old.example.org/debian bookworm-backports main
SRC
check "one-line archive URI" "http://old.example.org/debian" "$(debian_archive_uri bookworm "$dir/b" | head -n1)"
check "commented-out backports does not count" "no" "$(has_suite bookworm-backports "$dir/b" && echo yes || echo no)"

# A host that has backports already.
echo "deb http://old.example.org/debian bookworm-backports main" >>"$dir/b/sources.list"
check "one-line backports found" "yes" "$(has_suite bookworm-backports "$dir/b" && echo yes || echo no)"
backports_stanza "http://mirror.example.org/debian" >"$dir/a/sources.list.d/n2d-bookworm-backports.sources"
check "the stanza deps.sh writes is found again" "yes" "$(has_suite bookworm-backports "$dir/a" && echo yes || echo no)"

[ "$failures" = 0 ] || { echo "$failures deps.sh check(s) failed"; exit 1; }
echo "deps.sh: all checks passed"
