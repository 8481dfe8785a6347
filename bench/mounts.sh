#!/usr/bin/env bash
# Host folders (`--mount`, virtio-fs and virtiofsd) against the guest's own disk (issue 21, part 2).
#
#   sudo bench/mounts.sh [--mib N] [--rounds R]     # defaults: 256 MiB, 3 rounds
#
# One cold machine with a host folder (a directory on the host's disk) mounted at /shared.
# Each round, inside the guest (`n2d exec`): a sequential write of N MiB (dd, fsync at the
# end), the page cache dropped, a sequential read of it, and 2000 small files (4 KiB) written
# then listed and read back by `cat`; the same on the data disk (/var/lib/docker, ext4 on
# virtio-blk) right after, so both see the same host load. Prints each pair and its ratio.
# Everything runs in a network namespace of its own; only the QEMU started here is killed.
set -euo pipefail
MIB=256 ROUNDS=3
while [ $# -gt 0 ]; do
    case $1 in
    --mib) MIB=$2 ;;
    --rounds) ROUNDS=$2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "mounts: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift 2
done
[ "$(id -u)" = 0 ] || { echo "mounts: run as root (network namespace, taps)" >&2; exit 2; }
cd "$(dirname "$0")/.."
cargo build --release -q -p n2d
N2D=$PWD/target/release/n2d
NS=n2d-mounts-$$; WORK=$(mktemp -d /var/tmp/mounts.XXXXXX)
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    for p in $(pgrep -f "qemu-system.*$WORK/" || true); do kill -9 "$p" 2>/dev/null || true; done
    local ino; ino=$(stat -c %i "/run/netns/$NS" 2>/dev/null || echo none)
    ip netns del "$NS" 2>/dev/null || true
    rm -f "/run/n2d/netns-$ino.json"
    rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS"; ip netns exec "$NS" ip link set lo up
mkdir -p "$WORK/home" "$WORK/shared"
cp -a target/tmp/e2e-home/cache "$WORK/home/" 2>/dev/null || true
export N2D_HOME=$WORK/home DOCKER_CONFIG=$WORK/home/docker
"$N2D" image build >/dev/null 2>&1
ip netns exec "$NS" "$N2D" create bench --memory 1G --mount "$WORK/shared:/shared" >/dev/null
in_guest() { ip netns exec "$NS" "$N2D" exec bench -- sh -c "$1"; }
# Seconds a guest shell snippet takes, timed inside the guest (its shell's arithmetic: the
# image has no awk), printed with 3 decimals.
timed() {
    local ms; ms=$(in_guest "s=\$(date +%s%N); $1 >/dev/null 2>&1; e=\$(date +%s%N); echo \$(( (e - s) / 1000000 ))")
    awk -v ms="$ms" 'BEGIN { printf "%.3f", ms / 1000 }'
}
drop() { in_guest "sync; echo 3 > /proc/sys/vm/drop_caches"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "host folder (virtio-fs) vs data disk (ext4 on virtio-blk), $MIB MiB sequential and 2000 x 4 KiB files"
for r in $(seq "$ROUNDS"); do
    for dir in /shared /var/lib/docker/bench; do
        in_guest "mkdir -p $dir && rm -rf $dir/* "
        w=$(timed "dd if=/dev/zero of=$dir/big bs=1M count=$MIB conv=fsync")
        drop
        rd=$(timed "dd if=$dir/big of=/dev/null bs=1M")
        small=$(timed "mkdir -p $dir/small && for i in \$(seq 2000); do head -c 4096 /dev/zero > $dir/small/\$i; done")
        drop
        scan=$(timed "cat $dir/small/* > /dev/null")
        in_guest "rm -rf $dir/big $dir/small"
        eval "w_${dir//[^a-z]/}=$w rd_${dir//[^a-z]/}=$rd small_${dir//[^a-z]/}=$small scan_${dir//[^a-z]/}=$scan"
    done
    printf 'round %s: write %s MiB: virtio-fs %ss, disk %ss (%sx) | read: virtio-fs %ss, disk %ss (%sx) | 2000 small writes: virtio-fs %ss, disk %ss (%sx) | read back: virtio-fs %ss, disk %ss (%sx)\n' \
        "$r" "$MIB" "$w_shared" "$w_varlibdockerbench" "$(ratio "$w_shared" "$w_varlibdockerbench")" \
        "$rd_shared" "$rd_varlibdockerbench" "$(ratio "$rd_shared" "$rd_varlibdockerbench")" \
        "$small_shared" "$small_varlibdockerbench" "$(ratio "$small_shared" "$small_varlibdockerbench")" \
        "$scan_shared" "$scan_varlibdockerbench" "$(ratio "$scan_shared" "$scan_varlibdockerbench")"
done
ip netns exec "$NS" "$N2D" rm -f bench >/dev/null
