#!/usr/bin/env bash
# An exported disk booted the way another hypervisor boots it, against n2d's own boot of the
# same image, side by side: A is `n2d create` (QEMU's direct PVH kernel boot, n2d's config and
# data disks), B the image's qcow2 export made `--for` a static address, booted by QEMU + OVMF
# (UEFI firmware, the unified kernel image on the ESP, root/config/data found by partition
# name). Both run in a network namespace of their own, alternated ABAB, each timed from launch
# to the Docker engine answering over TLS (the host's docker CLI, the home's client
# certificate). Prints every run, the medians and the median of the per-pair ratios B/A.
#
#   sudo bench/export-boot.sh --pairs 3
#
# VMs, namespace and home are removed on exit; only QEMUs this script started are killed.
set -euo pipefail

PAIRS=3
while [ $# -gt 0 ]; do
    case $1 in
    --pairs) PAIRS=$2 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        echo "Options: --pairs N (3)"
        exit 0
        ;;
    *)
        echo "export-boot: unknown option $1 (see --help)" >&2
        exit 2
        ;;
    esac
    shift 2
done
[[ $PAIRS =~ ^[1-9][0-9]*$ ]] || { echo "export-boot: --pairs takes a number >= 1" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "export-boot: run as root (network namespace, taps)" >&2; exit 2; }
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
[ -e "$OVMF_CODE" ] || { echo "export-boot: $OVMF_CODE is missing: apt-get install ovmf" >&2; exit 2; }

cd "$(dirname "$0")/.."
cargo build --release -q -p n2d
N2D=$PWD/target/release/n2d
NS=n2d-expb-$$
WORK=$(mktemp -d /tmp/n2dexpb.XXXXXX)
export N2D_HOME=$WORK/home DOCKER_CONFIG=$WORK/docker
QEMU_PID=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    [ -n "$QEMU_PID" ] && kill -9 "$QEMU_PID" 2>/dev/null
    ip netns exec "$NS" "$N2D" rm -f bench-a >/dev/null 2>&1 || true
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$N2D" image build >/dev/null
ip netns add "$NS"
in_ns() { ip netns exec "$NS" "$@"; }
in_ns ip link set lo up
# B's network: a bridge holding the gateway, one tap (A gets n2d's own bridge in the namespace).
in_ns ip link add brb type bridge
in_ns ip addr add 10.97.0.1/24 dev brb
in_ns ip link set brb up
in_ns ip tuntap add tapb mode tap
in_ns ip link set tapb master brb
in_ns ip link set tapb up
"$N2D" image export --format qcow2 --for bench-b --ip 10.97.0.10/24 --gateway 10.97.0.1 --output "$WORK" >"$WORK/export.txt"
DISK=$(awk '{print $1}' "$WORK/export.txt")

now() { date +%s.%N; }
# The TLS engine at $1 answering the home's client certificate.
answers() {
    in_ns env DOCKER_HOST="tcp://$1:2376" DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH="$N2D_HOME/certs" \
        docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

run_a() {
    local t0 t1
    t0=$(now)
    in_ns "$N2D" create bench-a --memory 1536M >/dev/null 2>&1
    t1=$(now)
    in_ns "$N2D" rm -f bench-a >/dev/null 2>&1
    echo "$t1 - $t0" | bc
}

run_b() {
    local t0 t1 vars=$WORK/vars.fd
    cp "$OVMF_VARS" "$vars"
    t0=$(now)
    # `ip netns exec` itself (not the in_ns function, which would fork a subshell): it execs
    # QEMU, so $! is QEMU's pid.
    ip netns exec "$NS" qemu-system-x86_64 -machine q35 -m 1536 -smp 1 -display none -no-reboot \
        -device virtio-rng-pci -netdev tap,id=n0,ifname=tapb,script=no,downscript=no \
        -device virtio-net-pci,netdev=n0 -serial "file:$WORK/b.log" \
        -drive "if=pflash,format=raw,readonly=on,file=$OVMF_CODE" -drive "if=pflash,format=raw,file=$vars" \
        -drive "file=$DISK,if=virtio,format=qcow2,snapshot=on" >"$WORK/b.qemu" 2>&1 &
    QEMU_PID=$!
    until answers 10.97.0.10; do
        kill -0 "$QEMU_PID" 2>/dev/null || { echo "export-boot: the export's QEMU exited: $(cat "$WORK/b.qemu")" >&2; exit 1; }
        sleep 0.5
    done
    t1=$(now)
    kill -9 "$QEMU_PID"
    wait "$QEMU_PID" 2>/dev/null || true
    QEMU_PID=""
    echo "$t1 - $t0" | bc
}

median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
A=() B=() R=()
for i in $(seq "$PAIRS"); do
    a=$(run_a)
    b=$(run_b)
    A+=("$a") B+=("$b") R+=("$(echo "scale=3; $b / $a" | bc)")
    printf 'pair %d: A (n2d create, direct boot) %.1f s   B (qcow2 export, OVMF) %.1f s   B/A %.2f\n' "$i" "$a" "$b" "${R[-1]}"
done
printf 'median: A %.1f s   B %.1f s   B/A %.2f (median of the per-pair ratios)\n' \
    "$(printf '%s\n' "${A[@]}" | median)" "$(printf '%s\n' "${B[@]}" | median)" "$(printf '%s\n' "${R[@]}" | median)"
