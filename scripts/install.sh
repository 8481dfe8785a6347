#!/usr/bin/env bash
# Installs n2d and what it needs on a Debian machine (run as root):
# QEMU, the image build tools, the docker CLI, the musl target for the guest init; then builds
# n2d and n2d-init and installs them to /usr/local/bin and /usr/local/lib/n2d.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(qemu-system-x86 qemu-utils mmdebstrap erofs-utils lz4 xz-utils kmod iproute2 iptables dpkg ca-certificates)
command -v docker >/dev/null || packages+=(docker.io)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

if ! command -v cargo >/dev/null; then
    echo "n2d is built with Rust: install a Rust toolchain (https://rustup.rs) and run this again" >&2
    exit 1
fi
rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 || true
cargo build --release --locked -p n2d-init --target x86_64-unknown-linux-musl
cargo build --release --locked -p n2d
install -D -m 0755 target/release/n2d /usr/local/bin/n2d
install -D -m 0755 target/x86_64-unknown-linux-musl/release/n2d-init /usr/local/lib/n2d/n2d-init
echo "installed: /usr/local/bin/n2d ($(n2d --version))"
