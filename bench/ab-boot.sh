#!/usr/bin/env bash
# One `n2d create` against another, side by side: two variants alternated in ABBA order in a
# network namespace of their own, each run timed to the TLS API, with the guest's milestones
# (from n2d-init's lines on the serial console) and QEMU's RSS. Prints every run, the medians
# and the median of the per-pair ratios B/A. For the A/B measurements in BENCHMARKS.md.
#
#   sudo bench/ab-boot.sh --pairs 3 --a "N2D_TCG_TB_SIZE=1024" --b "N2D_TCG_TB_SIZE=64"
#   sudo bench/ab-boot.sh --a "" --b "" --args-a "--cpus 2" --args-b "--cpus 1"
#   sudo bench/ab-boot.sh --images-a /var/tmp/old-home --images-b /var/tmp/new-home
#
# A variant is environment assignments for n2d (--a/--b), extra `n2d create` arguments
# (--args-a/--args-b) and the home whose images/ it boots (--images-a/--images-b: a home
# holding an image built for this n2d's guest init, e.g. a hand-modified copy; default: a
# home the script builds the image into). Each run gets a fresh home with the images linked
# in. VMs, namespace and homes are removed on exit; only QEMUs this script started are killed.
set -euo pipefail

PAIRS=3
A_ENV="" B_ENV="" A_ARGS="" B_ARGS="" A_IMAGES="" B_IMAGES="" SETTLE=0
while [ $# -gt 0 ]; do
    case $1 in
    --pairs) PAIRS=$2 ;;
    --a) A_ENV=$2 ;;
    --b) B_ENV=$2 ;;
    --args-a) A_ARGS=$2 ;;
    --args-b) B_ARGS=$2 ;;
    --images-a) A_IMAGES=$2 ;;
    --images-b) B_IMAGES=$2 ;;
    --settle) SETTLE=$2 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        echo "Options: --pairs N (3), --a/--b ENV, --args-a/--args-b ARGS, --images-a/--images-b HOME, --settle S (0: RSS read at once)"
        exit 0
        ;;
    *)
        echo "ab-boot: unknown option $1 (see --help)" >&2
        exit 2
        ;;
    esac
    shift 2
done
[[ $PAIRS =~ ^[1-9][0-9]*$ && $SETTLE =~ ^[0-9]+$ ]] || { echo "ab-boot: --pairs takes a number >= 1, --settle a number of seconds" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "ab-boot: run as root (network namespace, taps)" >&2; exit 2; }

cd "$(dirname "$0")/.."
cargo build --release -q -p n2d
N2D=$PWD/target/release/n2d
NS=n2d-ab-$$
WORK=$(mktemp -d /tmp/n2dab.XXXXXX)
PIDS=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        # Only a QEMU whose command line names this run's directory.
        tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -q "qemu-system.*$WORK/" && kill -9 "$p" 2>/dev/null
    done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up

if [ -z "$A_IMAGES" ] || [ -z "$B_IMAGES" ]; then
    N2D_HOME=$WORK/images-home "$N2D" image build >/dev/null
    A_IMAGES=${A_IMAGES:-$WORK/images-home} B_IMAGES=${B_IMAGES:-$WORK/images-home}
fi

milestone() { grep -a "n2d-init.*$2" "$1" | head -1 | grep -o '\[ *[0-9.]*s\]' | tr -d '[]s ' || true; }

# run VARIANT PAIR: one create and rm; appends "PAIR VARIANT seconds rss milestones" to results.
run() {
    local v=$1 i=$2 env args images home t0 t pid rss serial
    if [ "$v" = A ]; then env=$A_ENV args=$A_ARGS images=$A_IMAGES; else env=$B_ENV args=$B_ARGS images=$B_IMAGES; fi
    home=$WORK/h$i$v
    mkdir -p "$home/images"
    cp -al "$images/images/." "$home/images/"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086 # ENV and ARGS are word lists by design
    if env $env N2D_HOME="$home" ip netns exec "$NS" "$N2D" create ab --cold $args >"$WORK/create-$i$v.log" 2>&1; then
        t=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        pid=$(cat "$home/machines/ab/qemu.pid")
        PIDS+=("$pid")
        sleep "$SETTLE"
        rss=$(awk '/^VmRSS:/ { printf "%.0f", $2 * 1024 / 1e6 }' "/proc/$pid/status")
    else
        t=FAIL rss=-
        tail -3 "$WORK/create-$i$v.log" >&2
    fi
    serial=$home/machines/ab/serial.log
    echo "$i $v $t $rss init=$(milestone "$serial" 'stage 1: /dev') modules=$(milestone "$serial" 'stage 2:') containerd=$(milestone "$serial" 'started containerd') dockerd=$(milestone "$serial" 'started dockerd') api=$(milestone "$serial" 'docker engine answers')" | tee -a "$WORK/results"
    N2D_HOME="$home" ip netns exec "$NS" "$N2D" rm -f ab >/dev/null 2>&1 || true
    rm -rf "$home"
}

echo "A: env '${A_ENV}' args '${A_ARGS}' images $A_IMAGES"
echo "B: env '${B_ENV}' args '${B_ARGS}' images $B_IMAGES"
echo "pair variant seconds rss_MB guest-milestones(s)"
for i in $(seq 1 "$PAIRS"); do
    if [ $((i % 2)) = 1 ]; then run A "$i"; run B "$i"; else run B "$i"; run A "$i"; fi
done
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
a=$(awk '$2 == "A" && $3 != "FAIL" { print $3 }' "$WORK/results" | median)
b=$(awk '$2 == "B" && $3 != "FAIL" { print $3 }' "$WORK/results" | median)
r=$(awk '$3 != "FAIL" { v[$1, $2] = $3 } END { for (i = 1; i <= '"$PAIRS"'; i++) if ((i, "A") in v && (i, "B") in v) printf "%.2f\n", v[i, "B"] / v[i, "A"] }' "$WORK/results")
echo "median: A $a s, B $b s; B/A per pair: $(echo "$r" | tr '\n' ' ')-> median $(echo "$r" | median)"
echo "median RSS: A $(awk '$2 == "A" && $4 != "-" { print $4 }' "$WORK/results" | median) MB, B $(awk '$2 == "B" && $4 != "-" { print $4 }' "$WORK/results" | median) MB"
grep -q FAIL "$WORK/results" && exit 1
exit 0
