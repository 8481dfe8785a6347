#!/usr/bin/env bash
# The project's tests: formatting, lints, unit tests, then the end-to-end tests that boot real
# VMs under QEMU (root needed; each runs inside its own network namespace).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo build --release --locked -p n2d-init --target x86_64-unknown-linux-musl
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --workspace
cargo test --release --locked -p n2d --test e2e_host --test e2e_swarm -- --ignored --nocapture --test-threads=1
