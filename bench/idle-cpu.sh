#!/usr/bin/env bash
# What an idle n2d machine costs, and who wakes it (issue 20, part 4).
#
#   sudo bench/idle-cpu.sh                     # a clone and a cold boot, one after the other
#   sudo bench/idle-cpu.sh --a BIN_A --b BIN_B # two n2d builds side by side (e.g. a kernel
#                                              # command line change), cold boots
#
# Default: for each machine, after 60 s settled, QEMU's CPU on the host over 60 s with nothing
# else running; then the guest's wakeups over 30 s, read by one `grep` over /proc from a
# container sharing the guest's pid namespace (one process at each end of the window, so the
# measurement adds little): local timer interrupts, context switches in all, and per process.
# With --a/--b: two cold machines, each made by its own n2d binary in its own home, settled
# 60 s, QEMU's CPU over the same 90 s window for both (the host's noise hits both alike).
# Everything runs in a network namespace of its own; only QEMUs started here are killed.
set -euo pipefail
A_BIN="" B_BIN=""
while [ $# -gt 0 ]; do
    case $1 in
    --a) A_BIN=$2 ;;
    --b) B_BIN=$2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "idle-cpu: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift 2
done
[ "$(id -u)" = 0 ] || { echo "idle-cpu: run as root (network namespace, taps)" >&2; exit 2; }
cd "$(dirname "$0")/.."
cargo build --release -q -p n2d
N2D=$PWD/target/release/n2d
NS=n2d-idle-$$; WORK=$(mktemp -d /tmp/idle.XXXXXX)
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
# A home per variant; the e2e tests' package cache, when there: the image build fetches nothing.
home() {
    mkdir -p "$WORK/$1"
    cp -a target/tmp/e2e-home/cache "$WORK/$1/" 2>/dev/null || true
    N2D_HOME=$WORK/$1 "${2:-$N2D}" image build >/dev/null 2>&1
}
n2d_in() { local h=$1 bin=$2; shift 2; N2D_HOME=$WORK/$h DOCKER_CONFIG=$WORK/$h/docker ip netns exec "$NS" "$bin" "$@"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
percent() { echo "scale=2; $1 * 100 / $(getconf CLK_TCK) / $2" | bc; }

if [ -n "$A_BIN$B_BIN" ]; then
    [ -x "$A_BIN" ] && [ -x "$B_BIN" ] || { echo "idle-cpu: --a and --b each take an n2d binary" >&2; exit 2; }
    home ha "$A_BIN"; home hb "$B_BIN"
    n2d_in ha "$A_BIN" create idle-a --cold --memory 1G >/dev/null
    n2d_in hb "$B_BIN" create idle-b --cold --memory 1G >/dev/null
    sleep 60
    pa=$(cat "$WORK/ha/machines/idle-a/qemu.pid") pb=$(cat "$WORK/hb/machines/idle-b/qemu.pid")
    a0=$(cpu_ticks "$pa") b0=$(cpu_ticks "$pb"); sleep 90; a1=$(cpu_ticks "$pa") b1=$(cpu_ticks "$pb")
    echo "A ($A_BIN): idle QEMU $(percent $((a1 - a0)) 90) % of a core over 90 s"
    echo "B ($B_BIN): idle QEMU $(percent $((b1 - b0)) 90) % of a core over the same 90 s"
    exit 0
fi

home h
mkdir -p "$WORK/bb/bin"; cp /bin/busybox "$WORK/bb/bin/"; for a in sh grep sleep; do ln -s busybox "$WORK/bb/bin/$a"; done
tar -C "$WORK/bb" -cf "$WORK/bb.tar" .
SNAP='grep -H LOC /proc/interrupts; grep -H ctxt /proc/stat; grep -H ctxt_switches /proc/[0-9]*/task/[0-9]*/status; grep -H ^Name /proc/[0-9]*/status'
measure() {
    local name=$1; shift
    n2d_in h "$N2D" create "$name" --memory 1G "$@" >/dev/null 2>&1
    local pid; pid=$(cat "$WORK/h/machines/$name/qemu.pid")
    n2d_in h docker --context "$name" import "$WORK/bb.tar" bb:1 >/dev/null
    sleep 60
    local t1 t2; t1=$(cpu_ticks "$pid"); sleep 60; t2=$(cpu_ticks "$pid")
    echo "== $name ($*): idle QEMU $(percent $((t2 - t1)) 60) % of a core over 60 s; guest wakeups over 30 s:"
    n2d_in h docker --context "$name" run --rm --pid host bb:1 sh -c "$SNAP; echo ===; sleep 30; $SNAP" |
        python3 -c '
import collections, re, sys
def parse(text):
    switches, names, totals = collections.Counter(), {}, {}
    for line in text.splitlines():
        if m := re.match(r"/proc/(\d+)/task/\d+/status:\w+:\s+(\d+)", line):
            switches[m[1]] += int(m[2])
        elif m := re.match(r"/proc/(\d+)/status:Name:\s+(.*)", line):
            names[m[1]] = m[2]
        elif "LOC:" in line:
            totals["local timer interrupts"] = int(line.split()[1])
        elif "ctxt" in line:
            totals["context switches"] = int(line.split()[-1])
    return switches, names, totals
(s1, _, t1), (s2, names, t2) = (parse(part) for part in sys.stdin.read().split("===\n"))
for k in t1:
    print(f"  {k}: {t2[k] - t1[k]}")
per = collections.Counter()
for pid, n in s2.items():
    if pid in s1:
        per[names.get(pid, pid)] += n - s1[pid]
for name, n in per.most_common(12):
    print(f"  {name:28s} {n:6d} context switches")
'
    n2d_in h "$N2D" rm -f "$name" >/dev/null 2>&1
}
measure warm1
measure cold1 --cold
