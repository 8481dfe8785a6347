#!/usr/bin/env bash
# The project's tests: formatting, lints, unit tests, then the end-to-end tests that boot real
# VMs under QEMU (root needed; each runs inside its own network namespace).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-deps.sh
cargo fmt --all --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --workspace
# A plain release build of the workspace, as a contributor makes it: it also leaves a
# glibc-linked n2d-init in target/release/, which n2d must not pick up (it embeds its own).
cargo build --release --locked
cargo test --release --locked -p n2d --test e2e_host --test e2e_swarm -- --ignored --nocapture --test-threads=1
