#!/usr/bin/env bash
# Installs n2d and what it needs on a Debian machine (run as root): QEMU 10 (from
# bookworm-backports on Debian 12), the image build tools and the docker CLI (scripts/deps.sh),
# then builds n2d (which carries its guest init inside itself) into /usr/local/bin, with shell
# completions and a man page.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "n2d is built with Rust: install a Rust toolchain (https://rustup.rs) and run this again" >&2
    exit 1
fi
scripts/deps.sh
echo "building n2d..."
cargo build --release --locked -p n2d
install -D -m 0755 target/release/n2d /usr/local/bin/n2d
# Completions and man pages, generated from the command line's own definitions.
mkdir -p /usr/share/bash-completion/completions /usr/share/fish/vendor_completions.d \
    /usr/local/share/zsh/site-functions /usr/local/share/man/man1
n2d completions bash >/usr/share/bash-completion/completions/n2d
n2d completions fish >/usr/share/fish/vendor_completions.d/n2d.fish
n2d completions zsh >/usr/local/share/zsh/site-functions/_n2d
n2d man /usr/local/share/man/man1
echo "installed: /usr/local/bin/n2d ($(n2d --version)), completions and man pages"
echo "QEMU: $(qemu-system-x86_64 --version | head -n1)"
echo "check the host with: n2d doctor"
