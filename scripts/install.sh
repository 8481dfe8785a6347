#!/usr/bin/env bash
# Installs n2d on a Debian machine.
#
#   scripts/install.sh           as root: QEMU 10 (from bookworm-backports on Debian 12), the image
#                                build tools and the docker CLI (scripts/deps.sh), then n2d into
#                                /usr/local/bin with shell completions and man pages
#   scripts/install.sh --user    as an ordinary user (the default when not root): n2d into
#                                ~/.local, and the Debian packages still missing named for an
#                                administrator (nothing is installed system-wide)
#   scripts/install.sh --uninstall [--user]
#                                removes what the install put there (the binary, completions, man
#                                pages) and says what it leaves: state homes, docker contexts,
#                                Debian packages
#
# n2d carries its guest init inside itself, so the binary is all there is to install.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=system
[ "$(id -u)" = 0 ] || mode=user
action=install
for arg in "$@"; do
    case "$arg" in
    --user) mode=user ;;
    --uninstall) action=uninstall ;;
    *)
        echo "install.sh: unknown option $arg (use --user and/or --uninstall, or nothing as root)" >&2
        exit 2
        ;;
    esac
done

if [ "$mode" = system ]; then
    prefix=/usr/local
    bash_dir=/usr/share/bash-completion/completions
    fish_dir=/usr/share/fish/vendor_completions.d
else
    prefix=$HOME/.local
    bash_dir=$prefix/share/bash-completion/completions
    fish_dir=${XDG_CONFIG_HOME:-$HOME/.config}/fish/completions
fi
bin=$prefix/bin
zsh_dir=$prefix/share/zsh/site-functions
man_dir=$prefix/share/man/man1

if [ "$action" = uninstall ]; then
    if [ -x "$bin/n2d" ]; then
        machines=$("$bin/n2d" ls -q 2>/dev/null | tr '\n' ' ')
        [ -z "$machines" ] ||
            echo "note: this home still has machines ($machines): they keep running; remove them first with \`n2d rm -f NAME...\` (or \`n2d swarm rm NAME\`) if you want them gone" >&2
    fi
    removed=()
    for f in "$bin/n2d" "$bash_dir/n2d" "$fish_dir/n2d.fish" "$zsh_dir/_n2d" "$man_dir"/n2d.1 "$man_dir"/n2d-*.1; do
        if [ -e "$f" ]; then
            rm -f "$f"
            removed+=("$f")
        fi
    done
    echo "removed ${#removed[@]} files: the binary, completions and man pages under $prefix"
    echo "left in place (remove them yourself if you want them gone):"
    echo "  state homes: ${N2D_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/n2d} (images, machines, certificates) and any other N2D_HOME you used"
    echo "  docker contexts n2d made (docker context ls; docker context rm NAME)"
    [ "$mode" = system ] && echo "  Debian packages scripts/deps.sh installed (QEMU, mmdebstrap, erofs-utils, the docker CLI...)"
    [ "$mode" = system ] && [ -x /usr/local/bin/virtiofsd ] && echo "  virtiofsd in /usr/local/bin, built by scripts/deps.sh (cargo uninstall --root /usr/local virtiofsd)"
    exit 0
fi

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
else
    # The guest init is built for musl: the user's own rustup can add the target.
    if command -v rustup >/dev/null; then
        rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 ||
            echo "warning: could not add the Rust target x86_64-unknown-linux-musl (the guest init needs it)" >&2
    fi
fi

echo "building n2d..."
cargo build --release --locked -p n2d
install -D -m 0755 target/release/n2d "$bin/n2d"
# Completions and man pages, generated from the command line's own definitions.
mkdir -p "$bash_dir" "$fish_dir" "$zsh_dir" "$man_dir"
"$bin/n2d" completions bash >"$bash_dir/n2d"
"$bin/n2d" completions fish >"$fish_dir/n2d.fish"
"$bin/n2d" completions zsh >"$zsh_dir/_n2d"
"$bin/n2d" man "$man_dir"
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
    command -v virtiofsd >/dev/null || [ -x /usr/libexec/virtiofsd ] ||
        echo "note: no virtiofsd: host folders (--mount) need it (sudo scripts/deps.sh builds it on Debian 12)"
    echo "QEMU: $(qemu-system-x86_64 --version | head -n1)"
else
    echo "QEMU: $(qemu-system-x86_64 --version | head -n1)"
fi
echo "check the host with: n2d doctor"
