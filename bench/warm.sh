#!/usr/bin/env bash
# Warm starts against cold boots, side by side in one run, in a network namespace of its own
# (issue 20's targets):
#   * making a template (`n2d image warm`), once;
#   * `n2d create` to the TLS API: a clone vs `--cold`, alternated ABBA, with the median of the
#     per-pair ratios;
#   * idle memory and CPU of 3 clones vs 3 cold machines: RSS and PSS of their QEMUs summed
#     (PSS splits the pages clones share), and CPU over a 30 s idle window, in % of a core;
#   * with --swarm: the default 1+3 swarm, warm vs --cold.
#
#   sudo bench/warm.sh [--pairs 3] [--swarm]
#
# One home for the whole run (templates persist in it); VMs, namespace and home are removed on
# exit, and only QEMUs whose command line names this run's directory are killed.
set -euo pipefail

PAIRS=3 SWARM=0
while [ $# -gt 0 ]; do
    case $1 in
    --pairs) PAIRS=$2; shift 2 ;;
    --swarm) SWARM=1; shift ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) echo "warm: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $PAIRS =~ ^[1-9][0-9]*$ ]] || { echo "warm: --pairs takes a number >= 1" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "warm: run as root (network namespace, taps)" >&2; exit 2; }

cd "$(dirname "$0")/.."
cargo build --release -q -p n2d
N2D=$PWD/target/release/n2d
NS=n2d-warm-$$
WORK=$(mktemp -d /tmp/n2dwarm.XXXXXX)
export N2D_HOME=$WORK/home DOCKER_CONFIG=$WORK/docker
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local p
    for p in $(pgrep -f "qemu-system.*$WORK/" || true); do
        tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -q "qemu-system.*$WORK/" && kill -9 "$p" 2>/dev/null
    done
    ip netns del "$NS" 2>/dev/null || true
    rm -f "/run/n2d/netns-$NS_INO.json" 2>/dev/null || true
    rm -rf "$WORK"
}
NS_INO=none
trap cleanup EXIT
ip netns add "$NS"
NS_INO=$(stat -c %i "/run/netns/$NS")
ip netns exec "$NS" ip link set lo up
n2d() { ip netns exec "$NS" "$N2D" "$@"; }

"$N2D" image build >/dev/null
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { echo "scale=3; $1 / $2" | bc; }

t0=$(now)
n2d image warm >/dev/null
echo "template made (n2d image warm, 1 vCPU, 2 GiB): $(secs "$t0" "$(now)") s"

# create VARIANT N: one machine created and removed; prints the seconds to a TLS ping.
create() {
    local flag=() t
    [ "$1" = cold ] && flag=(--cold)
    t=$(now)
    n2d create "$1$2" "${flag[@]}" >/dev/null 2>&1
    secs "$t" "$(now)"
    n2d rm -f "$1$2" >/dev/null 2>&1
}
: >"$WORK/warm" && : >"$WORK/cold" && : >"$WORK/ratios"
for i in $(seq 1 "$PAIRS"); do
    if [ $((i % 2)) = 1 ]; then w=$(create warm "$i"); c=$(create cold "$i"); else c=$(create cold "$i"); w=$(create warm "$i"); fi
    echo "pair $i: warm $w s, cold $c s, warm/cold $(ratio "$w" "$c")"
    echo "$w" >>"$WORK/warm"; echo "$c" >>"$WORK/cold"; ratio "$w" "$c" >>"$WORK/ratios"
done
echo "create to the TLS API, median of $PAIRS: warm $(median <"$WORK/warm") s, cold $(median <"$WORK/cold") s, median warm/cold $(median <"$WORK/ratios")"

# idle VARIANT: 3 machines, settled; prints "rss_mb pss_mb cpu_percent_of_a_core" for the 3.
qemu_of() { tr -d '\n' <"$N2D_HOME/machines/$1/qemu.pid"; }
idle() {
    local flag=() n pids=() rss=0 pss=0 t1=0 t2=0 p
    [ "$1" = cold ] && flag=(--cold)
    for n in 1 2 3; do n2d create "i$1$n" "${flag[@]}" >/dev/null 2>&1; done
    for n in 1 2 3; do pids+=("$(qemu_of "i$1$n")"); done
    sleep 60
    for p in "${pids[@]}"; do
        rss=$((rss + $(awk '/^Rss:/ {print $2}' "/proc/$p/smaps_rollup")))
        pss=$((pss + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup")))
        t1=$((t1 + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    sleep 30
    for p in "${pids[@]}"; do t2=$((t2 + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    for n in 1 2 3; do n2d rm -f "i$1$n" >/dev/null 2>&1; done
    echo "$((rss / 1024)) $((pss / 1024)) $(echo "scale=1; ($t2 - $t1) * 100 / $(getconf CLK_TCK) / 30 / 3" | bc)"
}
read -r wr wp wc <<<"$(idle warm)"
read -r cr cp cc <<<"$(idle cold)"
echo "3 idle machines, QEMU RSS: warm $wr MB, cold $cr MB (warm/cold $(ratio "$wr" "$cr"))"
echo "3 idle machines, QEMU PSS: warm $wp MB, cold $cp MB (warm/cold $(ratio "$wp" "$cp")); per machine: warm $((wp / 3)) MB, cold $((cp / 3)) MB"
echo "idle CPU per machine (30 s after 60 s settled): warm $wc %, cold $cc % of a core"

if [ "$SWARM" = 1 ]; then
    n2d image warm --memory 1G >/dev/null
    t=$(now); n2d swarm create --prefix sw --cold >/dev/null 2>&1; c=$(secs "$t" "$(now)"); n2d swarm rm sw >/dev/null 2>&1
    t=$(now); n2d swarm create --prefix sw >/dev/null 2>&1; w=$(secs "$t" "$(now)"); n2d swarm rm sw >/dev/null 2>&1
    echo "default swarm (1+3) to Ready: warm $w s, cold $c s, warm/cold $(ratio "$w" "$c")"
fi
