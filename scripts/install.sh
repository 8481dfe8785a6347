#!/usr/bin/env bash
# Installs n2d on a Debian machine.
#
#   scripts/install.sh           as root: QEMU 10 (from bookworm-backports on Debian 12), the image
#                                build tools and the docker CLI (scripts/deps.sh), then n2d into
#                                /usr/local/bin with shell completions and man pages
#   scripts/install.sh --user    as an ordinary user (the default when not root): n2d into
#                                ~/.local, and the Debian packages still missing named for an
#                                administrator (nothing is installed system-wide)
#
# n2d carries its guest init inside itself, so the binary is all there is to install.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=system
[ "$(id -u)" = 0 ] || mode=user
case "${1:-}" in
--user) mode=user ;;
"") ;;
*)
    echo "install.sh: unknown option $1 (use --user, or nothing as root)" >&2
    exit 2
    ;;
esac

if ! command -v cargo >/dev/null; then
    echo "n2d is built with Rust: install a Rust toolchain (https://rustup.rs) and run this again" >&2
    exit 1
fi

# program package: what n2d runs, and the Debian package that has it.
REQUIRED=(
    "qemu-system-x86_64 qemu-system-x86" "qemu-img qemu-utils" "vde_switch vde2"
    "mmdebstrap mmdebstrap" "mkfs.erofs erofs-utils" "lz4 lz4" "xz xz-utils" "depmod kmod"
    "dpkg-deb dpkg" "newuidmap uidmap"
)

# The packages of REQUIRED whose program is missing (depmod lives in /usr/sbin).
missing_packages() {
    local entry program package out=()
    for entry in "${REQUIRED[@]}"; do
        read -r program package <<<"$entry"
        command -v "$program" >/dev/null || [ -x "/usr/sbin/$program" ] || [ -x "/sbin/$program" ] || out+=("$package")
    done
    echo "${out[*]}"
}

if [ "$mode" = system ]; then
    scripts/deps.sh
    prefix=/usr/local
    bin=$prefix/bin
    bash_dir=/usr/share/bash-completion/completions
    fish_dir=/usr/share/fish/vendor_completions.d
    zsh_dir=$prefix/share/zsh/site-functions
else
    # The guest init is built for musl: the user's own rustup can add the target.
    if command -v rustup >/dev/null; then
        rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 ||
            echo "warning: could not add the Rust target x86_64-unknown-linux-musl (the guest init needs it)" >&2
    fi
    prefix=$HOME/.local
    bin=$prefix/bin
    bash_dir=$prefix/share/bash-completion/completions
    fish_dir=${XDG_CONFIG_HOME:-$HOME/.config}/fish/completions
    zsh_dir=$prefix/share/zsh/site-functions
fi

echo "building n2d..."
cargo build --release --locked -p n2d
install -D -m 0755 target/release/n2d "$bin/n2d"
# Completions and man pages, generated from the command line's own definitions.
mkdir -p "$bash_dir" "$fish_dir" "$zsh_dir" "$prefix/share/man/man1"
"$bin/n2d" completions bash >"$bash_dir/n2d"
"$bin/n2d" completions fish >"$fish_dir/n2d.fish"
"$bin/n2d" completions zsh >"$zsh_dir/_n2d"
"$bin/n2d" man "$prefix/share/man/man1"
echo "installed: $bin/n2d ($("$bin/n2d" --version)), completions and man pages under $prefix"

if [ "$mode" = user ]; then
    case ":$PATH:" in
    *":$bin:"*) ;;
    *) echo "note: $bin is not on your PATH: add it (e.g. echo 'export PATH=\"$bin:\$PATH\"' >> ~/.profile)" ;;
    esac
    if [ -e /dev/kvm ] && ! { [ -r /dev/kvm ] && [ -w /dev/kvm ]; }; then
        echo "note: you may not use /dev/kvm, so VMs run under emulation: ask an administrator to run"
        echo "      usermod -aG kvm $USER   (then log in again)"
    fi
    missing=$(missing_packages)
    if [ -n "$missing" ]; then
        echo "n2d needs Debian packages this machine lacks: $missing" >&2
        echo "ask an administrator to run:  sudo scripts/deps.sh   (QEMU 10 from bookworm-backports on Debian 12, and the rest)" >&2
        echo "or at least:                  sudo apt-get install $missing" >&2
        exit 1
    fi
    command -v docker >/dev/null ||
        echo "note: no docker CLI: the VMs work, but you need it to use them (apt-get install docker.io, by an administrator)"
    echo "QEMU: $(qemu-system-x86_64 --version | head -n1)"
else
    echo "QEMU: $(qemu-system-x86_64 --version | head -n1)"
fi
echo "check the host with: n2d doctor"
