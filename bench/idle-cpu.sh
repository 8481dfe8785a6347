#!/usr/bin/env bash
# Idle CPU of one n2d machine, a clone and a cold boot: per guest process (busybox top in a
# container sharing the guest's pid namespace, over 30 s after 60 s settled) and QEMU's on the host
# over the same window. A first look for issue 20's part 4.
#
#   sudo bench/idle-cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p n2d
N2D=$PWD/target/release/n2d
NS=n2d-idle-$$; WORK=$(mktemp -d /tmp/idle.XXXXXX)
export N2D_HOME=$WORK/home DOCKER_CONFIG=$WORK/docker
cleanup() {
    for p in $(pgrep -f "qemu-system.*$WORK/" || true); do kill -9 "$p" 2>/dev/null || true; done
    ino=$(stat -c %i "/run/netns/$NS" 2>/dev/null || echo none)
    ip netns del "$NS" 2>/dev/null || true
    rm -f "/run/n2d/netns-$ino.json"
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$N2D_HOME"
# The e2e tests' package cache, when there: the image build then fetches nothing.
cp -a target/tmp/e2e-home/cache "$N2D_HOME/" 2>/dev/null || true
ip netns add "$NS"; ip netns exec "$NS" ip link set lo up
n2d() { ip netns exec "$NS" "$N2D" "$@"; }
"$N2D" image build >/dev/null 2>&1
mkdir -p "$WORK/bb/bin"; cp /bin/busybox "$WORK/bb/bin/"; for a in sh top cat; do ln -s busybox "$WORK/bb/bin/$a"; done
tar -C "$WORK/bb" -cf "$WORK/bb.tar" .
measure() {
    local name=$1; shift
    n2d create "$name" "$@" >/dev/null 2>&1
    local pid; pid=$(cat "$N2D_HOME/machines/$name/qemu.pid")
    ip netns exec "$NS" docker --context "$name" import "$WORK/bb.tar" bb:1 >/dev/null
    sleep 60
    local t1; t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    echo "== $name ($*): guest processes over 30 s (busybox top, 2nd sample)"
    ip netns exec "$NS" docker --context "$name" run --rm --pid host bb:1 top -b -n 2 -d 30 | awk '/^Mem:/ {n++} n == 2' | head -25
    local t2; t2=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    echo "QEMU on the host over the same ~30 s: $(echo "scale=1; ($t2 - $t1) * 100 / $(getconf CLK_TCK) / 30" | bc) % of a core"
    n2d rm -f "$name" >/dev/null 2>&1
}
measure warm1
measure cold1 --cold
