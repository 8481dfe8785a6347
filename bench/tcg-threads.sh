#!/usr/bin/env bash
# Single- vs multi-threaded TCG (`-accel tcg,thread=single|multi`), side by side in one run.
#
#   sudo bench/tcg-threads.sh            # from the repository root, as root
#
# Builds n2d and the static n2d-init, builds the image in a temporary N2D_HOME (in the host's
# network namespace: it fetches Debian packages), then, inside a network namespace of its own:
#   1. one VM (`n2d create`, 2 vCPUs, 2 GiB) to the Docker TLS API: single vs multi, alternated
#      (ABBA order) over $PAIRS1 pairs;
#   2. the default swarm (`n2d swarm create`: 1 manager + 3 workers, 2 vCPUs, 1.5 GiB each, booted
#      in parallel) to all nodes joined: single vs multi, alternated over $PAIRS4 pairs;
#   3. safety: $SAFETY boots of a 2-vCPU VM under multi, counting guest kernel panics (in the serial
#      logs, in n2d's "kernel panicked ... booting it again" warning, and failed creates).
# Panics seen in steps 1-2 are counted too, per mode. Prints medians and multi/single ratios.
# Everything it starts (VMs, bridge, taps, namespace, temporary home) is removed on exit, passed
# or failed. Results (per-run logs, the serial log of any boot that panicked) stay in $RESULTS.
#
# Knobs: PAIRS1 (default 5), PAIRS4 (3), SAFETY (20), RESULTS (default /tmp/n2d-tcg-bench-PID),
# N2D_IMAGE_MIRROR (passed to `n2d image build --mirror`), IMAGES_FROM (an N2D_HOME whose images/
# are copied instead of building one).
set -euo pipefail

PAIRS1=${PAIRS1:-5}
PAIRS4=${PAIRS4:-3}
SAFETY=${SAFETY:-20}
RESULTS=${RESULTS:-/tmp/n2d-tcg-bench-$$}

cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces, bridges, taps)" >&2; exit 2; }

NS=n2d-bench-$$
# Short: QEMU's socket paths must fit in 107 bytes.
BENCH_HOME=$(mktemp -d /tmp/n2db.XXXXXX)
export N2D_HOME=$BENCH_HOME
mkdir -p "$RESULTS"
NS_MADE=0

log() { printf '%s %s\n' "$(date +%T)" "$*" | tee -a "$RESULTS/summary.txt" >&2; }

# The pids of QEMU processes started from the bench home (their command lines hold its paths).
bench_qemus() {
    local d pid
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        if tr '\0' ' ' 2>/dev/null <"$d/cmdline" | grep -q -- "qemu-system.*$BENCH_HOME/"; then
            echo "$pid"
        fi
    done
}

rm_all_machines() {
    local m s
    for s in "$BENCH_HOME"/swarms/*.json; do
        [ -f "$s" ] || continue
        ip netns exec "$NS" "$N2D" swarm rm "$(basename "$s" .json)" >>"$RESULTS/rm.log" 2>&1 || true
    done
    [ -d "$BENCH_HOME/machines" ] || return 0
    for m in $(ls "$BENCH_HOME/machines"); do
        ip netns exec "$NS" "$N2D" rm -f "$m" >>"$RESULTS/rm.log" 2>&1 || true
    done
    rm -f "$BENCH_HOME"/swarms/*.json 2>/dev/null || true
}

cleanup() {
    local rc=$? pid
    set +e
    trap - EXIT INT TERM
    if [ "$NS_MADE" = 1 ] && [ -n "${N2D:-}" ]; then
        rm_all_machines
    fi
    for pid in $(bench_qemus); do
        echo "killing leftover QEMU $pid (started by this bench)" >&2
        kill "$pid" 2>/dev/null
    done
    sleep 1
    for pid in $(bench_qemus); do kill -9 "$pid" 2>/dev/null; done
    [ "$NS_MADE" = 1 ] && ip netns del "$NS"
    rm -rf "$BENCH_HOME"
    echo "results: $RESULTS" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building n2d and n2d-init"
cargo build --release -q -p n2d
cargo build --release -q -p n2d-init --target x86_64-unknown-linux-musl
N2D=$PWD/target/release/n2d
export N2D_INIT=$PWD/target/x86_64-unknown-linux-musl/release/n2d-init

if [ -n "${IMAGES_FROM:-}" ]; then
    log "copying the images of $IMAGES_FROM into $BENCH_HOME"
    cp -a "$IMAGES_FROM/images" "$BENCH_HOME/"
else
    log "building the image in $BENCH_HOME (host namespace: it fetches packages)"
    "$N2D" image build ${N2D_IMAGE_MIRROR:+--mirror "$N2D_IMAGE_MIRROR"} >"$RESULTS/image-build.log" 2>&1
fi

ip netns add "$NS"
NS_MADE=1
ip netns exec "$NS" ip link set lo up
in_ns() { ip netns exec "$NS" "$@"; }

{
    echo "host: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -r)"
    echo "qemu: $(qemu-system-x86_64 --version | head -1)"
    echo "n2d: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
    echo "date: $(date -u +%FT%TZ)"
    echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "PAIRS1=$PAIRS1 PAIRS4=$PAIRS4 SAFETY=$SAFETY"
} | tee -a "$RESULTS/summary.txt" >&2

# Panics in the serial logs of every machine in the bench home (each boot appends to its log).
count_panics() {
    cat "$BENCH_HOME"/machines/*/serial.log 2>/dev/null | grep -c "Kernel panic" || true
}
save_panic_logs() {
    local tag=$1 f
    for f in "$BENCH_HOME"/machines/*/serial.log; do
        [ -f "$f" ] || continue
        if grep -qE "Kernel panic|BUG:|Oops|invalid opcode|int3|rcu.*stall|blocked for more than" "$f"; then
            cp "$f" "$RESULTS/$tag-$(basename "$(dirname "$f")")-serial.log"
        fi
    done
}

# Checks that QEMU really runs with the mode asked for (once per mode and kind of run).
check_mode() {
    local mode=$1 pid
    for pid in $(bench_qemus); do
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "tcg,thread=$mode" \
            || { log "QEMU $pid does not run with thread=$mode"; exit 1; }
    done
}

# run_one TAG MODE COMMAND...: times COMMAND under N2D_TCG_THREAD=MODE; appends
# "TAG MODE SECONDS|FAIL PANICS WARNINGS" to $RESULTS/runs.txt; removes every machine after.
run_one() {
    local tag=$1 mode=$2 t0 t1 secs ok=1 panics warns out
    shift 2
    out="$RESULTS/$tag-$mode-$(date +%s%N).log"
    t0=$(date +%s.%N)
    N2D_TCG_THREAD=$mode in_ns timeout 1200 "$@" >"$out" 2>&1 || ok=0
    t1=$(date +%s.%N)
    if [ "$ok" = 1 ]; then check_mode "$mode"; fi
    panics=$(count_panics)
    warns=$(grep -c "kernel panicked" "$out" || true)
    [ "$panics" = 0 ] && [ "$ok" = 1 ] || save_panic_logs "$tag-$mode-$(date +%s)"
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    [ "$ok" = 1 ] || { secs=FAIL; log "FAILED: $tag $mode (log: $out)"; tail -5 "$out" >&2; }
    echo "$tag $mode $secs $panics $warns" >>"$RESULTS/runs.txt"
    log "$tag $mode: ${secs/%[0-9]/&s}, panics in serial logs $panics, n2d panic warnings $warns"
    rm_all_machines
    [ -z "$(bench_qemus)" ] || { log "QEMU still running after rm"; exit 1; }
}

one_vm() { run_one one-vm "$1" "$N2D" create bench1 --cold --cpus 2 --memory 2G; }
swarm4() { run_one swarm4 "$1" "$N2D" swarm create --cold; }

log "1 VM, single vs multi, $PAIRS1 pairs"
for i in $(seq 1 "$PAIRS1"); do
    if [ $((i % 2)) = 1 ]; then one_vm single; one_vm multi; else one_vm multi; one_vm single; fi
done

log "default swarm (4 VMs x 2 vCPUs, in parallel), single vs multi, $PAIRS4 pairs"
for i in $(seq 1 "$PAIRS4"); do
    if [ $((i % 2)) = 1 ]; then swarm4 single; swarm4 multi; else swarm4 multi; swarm4 single; fi
done

log "safety: $SAFETY boots of a 2-vCPU VM under multi"
for i in $(seq 1 "$SAFETY"); do
    run_one safety multi "$N2D" create bench1 --cpus 2 --memory 2G
done

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
secs_of() { awk -v t="$1" -v m="$2" '$1 == t && $2 == m && $3 != "FAIL" { print $3 }' "$RESULTS/runs.txt"; }
sum_col() { awk -v t="$1" -v m="$2" -v c="$3" '$1 == t && $2 == m { s += $c } END { print s + 0 }' "$RESULTS/runs.txt"; }
fails() { awk -v t="$1" -v m="$2" '$1 == t && $2 == m && $3 == "FAIL" { n++ } END { print n + 0 }' "$RESULTS/runs.txt"; }
runs() { awk -v t="$1" -v m="$2" '$1 == t && $2 == m { n++ } END { print n + 0 }' "$RESULTS/runs.txt"; }

{
    echo
    echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    printf '%-8s %-7s %5s %10s %s\n' what mode runs median_s "all (s) / failed / panics in serial logs / n2d panic warnings"
    for t in one-vm swarm4 safety; do
        for m in single multi; do
            [ "$(runs $t $m)" = 0 ] && continue
            printf '%-8s %-7s %5s %10s %s / %s / %s / %s\n' "$t" "$m" "$(runs $t $m)" \
                "$(secs_of $t $m | median)" "$(secs_of $t $m | tr '\n' ' ')" "$(fails $t $m)" \
                "$(sum_col $t $m 4)" "$(sum_col $t $m 5)"
        done
    done
    for t in one-vm swarm4; do
        s=$(secs_of $t single | median) m=$(secs_of $t multi | median)
        awk -v t="$t" -v s="$s" -v m="$m" 'BEGIN { if (s + 0 > 0 && m + 0 > 0) printf "%s: multi/single median ratio %.2f\n", t, m / s }'
    done
    # Per pair ratios (pairs are adjacent runs of the same kind).
    for t in one-vm swarm4; do
        awk -v t="$t" '$1 == t { v[$2] = $3; n[$2]++; if (n["single"] == n["multi"] && v["single"] != "FAIL" && v["multi"] != "FAIL") r = r sprintf(" %.2f", v["multi"] / v["single"]) }
            END { print t ": per-pair multi/single" r }' "$RESULTS/runs.txt"
    done
    echo "multi boots: $(($(runs one-vm multi) + $(runs swarm4 multi) * 4 + $(runs safety multi))) VMs," \
        "panics $(($(sum_col one-vm multi 4) + $(sum_col swarm4 multi 4) + $(sum_col safety multi 4)))," \
        "failed runs $(($(fails one-vm multi) + $(fails swarm4 multi) + $(fails safety multi)))"
    echo "single boots: $(($(runs one-vm single) + $(runs swarm4 single) * 4)) VMs," \
        "panics $(($(sum_col one-vm single 4) + $(sum_col swarm4 single 4)))," \
        "failed runs $(($(fails one-vm single) + $(fails swarm4 single)))"
} | tee -a "$RESULTS/summary.txt"
