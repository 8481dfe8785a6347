#!/usr/bin/env bash
# n2d's benchmark: every figure side by side with its baseline, printed and written into
# BENCHMARKS.md (between its `<!-- bench:SECTION:begin/end -->` markers).
#
#   sudo scripts/bench.sh                          # everything, 5 pairs (~30-60 min on 2 TCG cores)
#   sudo scripts/bench.sh --pairs 1 --only boot    # a quick try of one section
#
# Sections (--only takes a comma-separated list of them; default: all):
#   image      `n2d image build` cold (fresh N2D_HOME) and warm (same again); compressed and
#              unpacked sizes per component, the largest files of the root; baseline: the stock
#              VM's kernel, initrd and root.
#   boot       `n2d create --cold` to the TLS Docker API vs a stock Debian VM to docker.service up
#              (every n2d VM here boots cold; warm starts against cold ones: bench/warm.sh)
#              (readiness printed on its serial console by a unit ordered after docker.service),
#              same QEMU accelerator, CPU model, 2 vCPUs, 2 GiB, alternated (ABBA) over --pairs
#              pairs: medians and the median of the per-pair ratios.
#   swarm      default `n2d swarm create` (1+3) to all nodes Ready, `n2d swarm scale` +1 worker,
#              the swarm's QEMU RSS, `n2d swarm rm`; baseline: one node's `n2d create`.
#   footprint  guest memory in use (MemTotal - MemAvailable, read on the guest's console) and
#              QEMU RSS of an idle node, both --settle seconds after ready, vs the stock VM; the
#              smallest `--memory` of the list --memories with which a node runs a container.
#   cli        `n2d ls` (table and --json) over 100 machine records vs an empty home, median of
#              --cli-runs runs (fake records, no VM).
#
# The stock VM: mmdebstrap --variant=minbase of the suite of n2d's image, with systemd-sysv,
# udev, docker.io and the kernel package of n2d's image (its initramfs-tools initrd); static
# address by systemd-networkd; root on an ext4 image made with `mkfs.ext4 -d` (no loop mount),
# booted through a qcow2 overlay per run. Cached under --work (rebuilt when its recipe, the
# suite or the kernel package changes, or with --rebuild-stock).
#
# Image builds run in the host's network namespace (they fetch Debian packages); every VM runs
# in a network namespace this script creates and deletes. The stock VM's NIC is a tap in that
# namespace with no bridge and no address: it has no route anywhere. Everything started here
# (VMs, taps, bridge, namespace, temporary homes) is removed on exit, passed or failed; only
# processes this script started are killed, by pid.
#
# Exit status: 0 when every selected section measured something (failed runs are counted and
# reported, not fatal), 1 when one could not be measured, 2 for bad usage.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --only LIST        sections to run: image,boot,swarm,footprint,cli (default: all)
  --pairs N          n2d/stock pairs in `boot` (default 5)
  --settle S         seconds an idle VM waits before its memory is read (default 20)
  --memories LIST    sizes tried, smallest first, for the smallest --memory
                     (default 384M,512M,768M,1G,1536M,2G)
  --cli-runs N       runs of each `n2d ls`, after one not counted (default 30)
  --work DIR         caches (stock VM image, n2d image home) and results (default /var/tmp/n2d-bench)
  --mirror URL       Debian mirror for both images (default: mmdebstrap's)
  --rebuild-stock    rebuild the cached stock VM image
  --bench-md FILE    the file whose generated tables are rewritten (default: BENCHMARKS.md)
  --no-write         print only; leave BENCHMARKS.md alone
  --note TEXT        a note added to every table written (e.g. "quiet host")
EOF
}

ALL_SECTIONS=(image boot swarm footprint cli)
ONLY=$(
    IFS=,
    echo "${ALL_SECTIONS[*]}"
)
PAIRS=5
SETTLE=20
MEMORIES=384M,512M,768M,1G,1536M,2G
TB_SIZES=(1024 256 64 32)
CLI_RUNS=30
WORK=/var/tmp/n2d-bench
MIRROR=${N2D_IMAGE_MIRROR:-}
REBUILD_STOCK=0
WRITE=1
NOTE=""
cd "$(dirname "$0")/.."
REPO=$PWD
BENCH_MD=$REPO/BENCHMARKS.md

die_usage() {
    echo "bench: $*" >&2
    echo "run with --help for the options" >&2
    exit 2
}
need_arg() { if [ $# -lt 2 ] || [ -z "$2" ]; then die_usage "$1 needs a value"; fi; }
while [ $# -gt 0 ]; do
    case $1 in
    --only) need_arg "$@"; ONLY=$2; shift ;;
    --pairs) need_arg "$@"; PAIRS=$2; shift ;;
    --settle) need_arg "$@"; SETTLE=$2; shift ;;
    --memories) need_arg "$@"; MEMORIES=$2; shift ;;
    --cli-runs) need_arg "$@"; CLI_RUNS=$2; shift ;;
    --work) need_arg "$@"; WORK=$2; shift ;;
    --mirror) need_arg "$@"; MIRROR=$2; shift ;;
    --rebuild-stock) REBUILD_STOCK=1 ;;
    --bench-md) need_arg "$@"; BENCH_MD=$2; shift ;;
    --no-write) WRITE=0 ;;
    --note) need_arg "$@"; NOTE=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die_usage "unknown argument: $1" ;;
    esac
    shift
done
for n in "$PAIRS" "$SETTLE" "$CLI_RUNS"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || die_usage "--pairs, --settle and --cli-runs take a whole number >= 1, not '$n'"
done
IFS=, read -r -a SECTIONS <<<"$ONLY"
[ ${#SECTIONS[@]} -gt 0 ] || die_usage "--only needs at least one section"
for s in "${SECTIONS[@]}"; do
    [[ " ${ALL_SECTIONS[*]} " == *" $s "* ]] || die_usage "unknown section '$s' (use ${ALL_SECTIONS[*]})"
done
IFS=, read -r -a MEMORY_LIST <<<"$MEMORIES"
wants() { [[ " ${SECTIONS[*]} " == *" $1 "* ]]; }
[ "$(id -u)" = 0 ] || { echo "bench: run as root (network namespaces, taps, mmdebstrap)" >&2; exit 2; }
for tool in qemu-system-x86_64 qemu-img mmdebstrap mkfs.ext4 jq ip fsck.erofs; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (scripts/deps.sh installs n2d's tools; jq, erofs-utils and e2fsprogs are Debian packages)" >&2; exit 1; }
done

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
RESULTS=$WORK/runs/$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$RESULTS"
NS=n2d-bench-$$
STOCK_TAP=n2dbst0
NS_MADE=0
# Short paths: QEMU's socket paths (in the machine directories) must fit in 107 bytes.
BENCH_HOME=$(mktemp -d /tmp/n2db.XXXXXX)
SCRATCH=()            # temporary homes and directories removed on exit
STOCK_PIDS=()         # stock VMs' QEMU pids (checked against their run directory before a kill)
FAILED_SECTIONS=()
export N2D_HOME=$BENCH_HOME
# n2d registers docker contexts through the docker CLI: keep them out of the user's config.
export DOCKER_CONFIG=$RESULTS/docker-config
mkdir -p "$DOCKER_CONFIG"

log() { printf '%s %s\n' "$(date +%T)" "$*" | tee -a "$RESULTS/log.txt" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
in_ns() { ip netns exec "$NS" "$@"; }
first() { # the first of its arguments that exists (a glob's first match)
    local f
    for f in "$@"; do [ -e "$f" ] && { echo "$f"; return 0; }; done
    return 1
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
fmt1() { awk -v a="$1" 'BEGIN { if (a == "-" || a == "") print "-"; else printf "%.1f", a }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }

# The pids of QEMU processes whose command line holds one of this run's paths.
bench_qemus() {
    local d
    for d in /proc/[0-9]*; do
        if tr '\0' ' ' 2>/dev/null <"$d/cmdline" | grep -qE -- "qemu-system.*($BENCH_HOME/|$RESULTS/)"; then
            echo "${d#/proc/}"
        fi
    done
}

# Kills one QEMU this script started, if its command line still holds this run's path $2.
kill_ours() {
    local pid=$1 path=$2 i
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$path" || return 0
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 1 50); do
        [ -d "/proc/$pid" ] || return 0
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
}

rm_all_machines() {
    local m s
    [ -n "${N2D:-}" ] && [ "$NS_MADE" = 1 ] || return 0
    for s in "$BENCH_HOME"/swarms/*.json; do
        [ -f "$s" ] || continue
        in_ns "$N2D" swarm rm "$(basename "$s" .json)" >>"$RESULTS/rm.log" 2>&1 || true
    done
    for m in "$BENCH_HOME"/machines/*/; do
        [ -d "$m" ] || continue
        in_ns "$N2D" rm -f "$(basename "$m")" >>"$RESULTS/rm.log" 2>&1 || true
    done
}

cleanup() {
    local rc=$? pid
    set +e
    trap - EXIT INT TERM
    rm_all_machines
    for pid in "${STOCK_PIDS[@]}"; do kill_ours "$pid" "$RESULTS/"; done
    for pid in $(bench_qemus); do
        echo "bench: killing leftover QEMU $pid (started by this run)" >&2
        kill "$pid" 2>/dev/null
    done
    sleep 1
    for pid in $(bench_qemus); do kill -9 "$pid" 2>/dev/null; done
    [ "$NS_MADE" = 1 ] && ip netns del "$NS"
    rm -rf "$BENCH_HOME" "${SCRATCH[@]}" "$RESULTS"/stock-run-*/root.qcow2
    echo "bench: logs in $RESULTS" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

section_failed() {
    log "could not measure: $1"
    FAILED_SECTIONS+=("$1")
}

make_ns() {
    [ "$NS_MADE" = 1 ] && return 0
    ip netns add "$NS"
    NS_MADE=1
    in_ns ip link set lo up
    # The stock VM's NIC: a tap with no bridge and no address (link up, so the guest has a carrier).
    in_ns ip tuntap add dev "$STOCK_TAP" mode tap
    in_ns ip link set "$STOCK_TAP" up
}

# ---------------------------------------------------------------------------------------------
# The machine, the tools, the build.

log "building n2d (cargo build --release -p n2d)"
cargo build --release -q -p n2d
N2D=$REPO/target/release/n2d
QEMU_VERSION=$(qemu-system-x86_64 --version | head -1 | sed 's/^QEMU emulator version //')
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM_GIB=$(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
KVM_NOTE="no /dev/kvm"
if [ -e /dev/kvm ]; then
    if grep -qwE 'vmx|svm' /proc/cpuinfo; then KVM_NOTE="/dev/kvm with vmx/svm"; else KVM_NOTE="/dev/kvm present but no vmx/svm flag (unusable)"; fi
fi
N2D_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$REPO" diff --quiet 2>/dev/null || N2D_REV="$N2D_REV+dirty"
DATE=$(date -u +%F)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
DEFAULT_CPUS_WORDS="?" # the vCPUs n2d gives a machine by default on this host
ACCEL=""    # the -accel value n2d's QEMU used (read from its command line), copied by the stock VM
CPU_OPT=""
{
    echo "machine: $CPU_MODEL, $(nproc) cores, $MEM_GIB GiB; $KVM_NOTE; host kernel $(uname -r)"
    echo "qemu: $QEMU_VERSION"
    echo "n2d: $N2D_REV; date $DATE; load at start $LOAD_START"
    echo "sections: ${SECTIONS[*]}; pairs $PAIRS; results $RESULTS"
} | tee -a "$RESULTS/log.txt" >&2

# Reads the accelerator and CPU model of n2d's QEMU (pid $1) the first time, for the stock VM.
learn_accel() {
    local args
    [ -n "$ACCEL" ] && return 0
    args=$(tr '\0' '\n' <"/proc/$1/cmdline")
    ACCEL=$(grep -A1 -x -- -accel <<<"$args" | tail -1)
    CPU_OPT=$(grep -A1 -x -- -cpu <<<"$args" | tail -1)
    log "n2d's QEMU runs with -accel $ACCEL -cpu $CPU_OPT; the stock VM gets the same"
}
accel_words() {
    case $ACCEL in
    kvm*) echo "KVM (-accel $ACCEL)" ;;
    "") echo "accelerator not seen" ;;
    *) echo "TCG, no usable KVM (-accel $ACCEL)" ;;
    esac
}
# run_line [vm]: the table's first line (with the accelerator for sections that boot VMs).
run_line() {
    printf 'Run %s: %s, %s cores, %s GiB; QEMU %s%s; n2d %s; load average %s at start, %s at the end.%s' \
        "$DATE" "$CPU_MODEL" "$(nproc)" "$MEM_GIB" "$QEMU_VERSION" "$([ "${1:-}" = vm ] && echo "; $(accel_words)")" \
        "$N2D_REV" "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)" "${NOTE:+ $NOTE.}"
}

# ---------------------------------------------------------------------------------------------
# Images: n2d's (section `image`, or a cached home) and the stock VM's.

IMAGE_HOME=$WORK/n2d-images     # a home that only holds images: a rebuild with the same inputs is a cache hit
declare -A IMG=()               # image section results
manifest_field() { "$N2D" image ls --json | jq -r ".[0].$1"; }

image_section() {
    local cold t0 t_cold t_warm id1 id2 extract
    cold=$(mktemp -d /tmp/n2dbi.XXXXXX)
    SCRATCH+=("$cold")
    log "image: cold build in a fresh N2D_HOME (host namespace: it fetches packages)"
    t0=$(now)
    if ! N2D_HOME=$cold "$N2D" image build ${MIRROR:+--mirror "$MIRROR"} >"$RESULTS/image-cold.id" 2>"$RESULTS/image-cold.log"; then
        tail -5 "$RESULTS/image-cold.log" >&2
        section_failed "image (cold build failed)"
        return 1
    fi
    t_cold=$(since "$t0")
    id1=$(tail -1 "$RESULTS/image-cold.id")
    log "image: warm build (same inputs again)"
    t0=$(now)
    N2D_HOME=$cold "$N2D" image build ${MIRROR:+--mirror "$MIRROR"} >"$RESULTS/image-warm.id" 2>"$RESULTS/image-warm.log" || {
        section_failed "image (warm build failed)"
        return 1
    }
    t_warm=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
    id2=$(tail -1 "$RESULTS/image-warm.id")
    IMG[cold]=$t_cold IMG[warm]=$t_warm IMG[same_id]=$([ "$id1" = "$id2" ] && echo yes || echo "no ($id1 vs $id2)")
    N2D_HOME=$cold "$N2D" image ls --json >"$RESULTS/image-ls.json"
    IMG[id]=$(jq -r '.[0].id[0:12]' "$RESULTS/image-ls.json")
    for f in kernel_bytes initrd_bytes rootfs_bytes rootfs_unpacked_bytes; do
        IMG[$f]=$(jq -r ".[0].$f" "$RESULTS/image-ls.json")
    done
    IMG[kernel_release]=$(jq -r '.[0].kernel_release' "$RESULTS/image-ls.json")
    # What the unpacked root is made of: extract the erofs and list its largest files.
    extract=$(mktemp -d /var/tmp/n2dbx.XXXXXX)
    SCRATCH+=("$extract")
    if fsck.erofs --extract="$extract/root" "$(first "$cold"/images/*/rootfs.erofs)" >"$RESULTS/erofs-extract.log" 2>&1; then
        (cd "$extract/root" && find . -xdev -type f -printf '%s %p\n' | sort -rn | head -8) >"$RESULTS/image-largest.txt"
        for d in usr/bin usr/sbin usr/lib/modules usr/lib/x86_64-linux-gnu usr/share; do
            echo "$(du -sb --apparent-size "$extract/root/$d" 2>/dev/null | cut -f1) $d"
        done >"$RESULTS/image-dirs.txt"
        rm -rf "$extract"
    else
        log "image: fsck.erofs --extract failed; no per-file breakdown (see erofs-extract.log)"
        : >"$RESULTS/image-largest.txt"
        : >"$RESULTS/image-dirs.txt"
    fi
    # The run's VMs boot this image.
    rm -rf "$IMAGE_HOME"
    mkdir -p "$IMAGE_HOME"
    cp -a "$cold/images" "$IMAGE_HOME/"
    log "image: cold ${t_cold}s, warm ${t_warm}s, id ${IMG[id]}"
}

ensure_images() {
    # The VMs' image: built in a home kept under --work (a cache hit when n2d's recipe is
    # unchanged, e.g. right after the image section's cold build put its image there).
    local id d
    log "image for the VMs: n2d image build in $IMAGE_HOME (a cache hit when the inputs are unchanged)"
    mkdir -p "$IMAGE_HOME"
    N2D_HOME=$IMAGE_HOME "$N2D" image build ${MIRROR:+--mirror "$MIRROR"} >"$RESULTS/image-vms.id" 2>"$RESULTS/image-vms.log" || {
        tail -5 "$RESULTS/image-vms.log" >&2
        return 1
    }
    id=$(tail -1 "$RESULTS/image-vms.id")
    rm -rf "$BENCH_HOME/images"
    cp -a "$IMAGE_HOME/images" "$BENCH_HOME/"
    # Keep only that image (the cached home may hold older ones).
    for d in "$BENCH_HOME"/images/*/; do
        [ "$(basename "$d")" = "$id" ] || rm -rf "$d"
    done
    IMAGE_ID=$id
    SUITE=$(manifest_field recipe.suite)
    KERNEL_PKG=$(manifest_field recipe.kernel_package)
    KERNEL_RELEASE=$(manifest_field kernel_release)
    IMAGE_MIRROR=$(manifest_field recipe.mirror)
}

# The stock VM's recipe. Its text is part of the cache key: change it and the image is rebuilt.
build_stock() {
    local dest=$1 tree=$1.tree t0
    rm -rf "$tree" "$dest"
    mkdir -p "$dest"
    t0=$(now)
    mmdebstrap --variant=minbase --include="systemd,systemd-sysv,udev,docker.io,$KERNEL_PKG" \
        "$SUITE" "$tree" ${IMAGE_MIRROR:+"$IMAGE_MIRROR"}
    echo stock >"$tree/etc/hostname"
    echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >"$tree/etc/fstab"
    cat >"$tree/etc/systemd/network/20-wired.network" <<'EOF'
[Match]
Type=ether

[Network]
Address=10.77.99.2/24
EOF
    cat >"$tree/usr/local/sbin/bench-ready" <<'EOF'
#!/bin/sh
# Readiness on the serial console (docker.service is active: the engine answers on its socket),
# then the guest's memory once it has idled.
echo "STOCK-READY docker $(cut -d' ' -f1 /proc/uptime)" >/dev/ttyS0
settle=$(sed -n 's/.*bench\.settle=\([0-9]*\).*/\1/p' /proc/cmdline)
sleep "${settle:-20}"
echo "STOCK-MEM $(awk '/^MemTotal:/ { t = $2 } /^MemAvailable:/ { a = $2 } END { print t, a }' /proc/meminfo)" >/dev/ttyS0
EOF
    chmod 755 "$tree/usr/local/sbin/bench-ready"
    cat >"$tree/etc/systemd/system/bench-ready.service" <<'EOF'
[Unit]
Description=n2d bench: readiness marker on the serial console
After=docker.service
Requires=docker.service

[Service]
Type=simple
ExecStart=/usr/local/sbin/bench-ready

[Install]
WantedBy=multi-user.target
EOF
    systemctl --root="$tree" enable docker.service systemd-networkd.service bench-ready.service
    # A template's first boot runs systemd-firstboot, which would prompt on the console for a
    # locale and time zone (machine-id is left empty, as in any VM template): no one answers here.
    systemctl --root="$tree" mask systemd-firstboot.service
    cp "$(first "$tree"/boot/vmlinuz-*)" "$dest/vmlinuz"
    cp "$(first "$tree"/boot/initrd.img-*)" "$dest/initrd.img"
    basename "$(first "$tree"/boot/vmlinuz-*)" | sed 's/^vmlinuz-//' >"$dest/kernel_release"
    du -sb --apparent-size "$tree" | cut -f1 >"$dest/unpacked_bytes"
    mkfs.ext4 -q -F -L stockroot -d "$tree" "$dest/root.ext4" 4G
    rm -rf "$tree"
    since "$t0" >"$dest/build_seconds"
    date -u +%F >"$dest/built"
}

ensure_stock() {
    local key
    key=$(printf '%s\n' "$SUITE" "$KERNEL_PKG" "$IMAGE_MIRROR" "$(declare -f build_stock)" | sha256sum | cut -c1-12)
    STOCK=$WORK/stock-$SUITE-$key
    if [ "$REBUILD_STOCK" = 1 ] || ! [ -f "$STOCK/built" ]; then
        log "stock VM: building $STOCK ($SUITE minbase + systemd + docker.io + $KERNEL_PKG; host namespace: it fetches packages)"
        build_stock "$STOCK" >"$RESULTS/stock-build.log" 2>&1 || {
            tail -5 "$RESULTS/stock-build.log" >&2
            rm -rf "$STOCK"
            return 1
        }
        log "stock VM: built in $(cat "$STOCK/build_seconds")s"
    else
        log "stock VM: cached $STOCK (built $(cat "$STOCK/built"))"
    fi
    STOCK_KERNEL=$(cat "$STOCK/kernel_release")
    [ "$STOCK_KERNEL" = "$KERNEL_RELEASE" ] || log "note: the stock VM's kernel $STOCK_KERNEL differs from n2d's image's $KERNEL_RELEASE (rerun with --rebuild-stock)"
}

# ---------------------------------------------------------------------------------------------
# Boots.

# n2d_create NAME [ARGS...]: `n2d create` in the namespace; sets T to its seconds, or FAIL.
# (No command substitution around it: it sets ACCEL the first time.)
n2d_create() {
    local name=$1 t0 pidf
    shift
    t0=$(now)
    # --cold: a first boot, as these tables have always measured (warm starts: bench/warm.sh).
    if in_ns timeout 900 "$N2D" create "$name" --cold "$@" >"$RESULTS/create-$name-$(date +%s%N).log" 2>&1; then
        T=$(since "$t0")
        pidf=$BENCH_HOME/machines/$name/qemu.pid
        [ -f "$pidf" ] && learn_accel "$(cat "$pidf")"
    else
        log "n2d create $name $* failed (logs in $RESULTS)"
        T=FAIL
    fi
}

n2d_rm() { in_ns "$N2D" rm -f "$1" >>"$RESULTS/rm.log" 2>&1 || log "n2d rm -f $1 failed"; }

# stock_start TAG: starts the stock VM (a fresh qcow2 overlay on the cached ext4 root) in the
# namespace. Sets STOCK_RUN (its directory), STOCK_T0 and STOCK_PID.
stock_start() {
    STOCK_RUN=$RESULTS/stock-run-$1
    mkdir -p "$STOCK_RUN"
    qemu-img create -q -f qcow2 -F raw -b "$STOCK/root.ext4" "$STOCK_RUN/root.qcow2"
    local accel=${ACCEL:-tcg,thread=single} cpu=${CPU_OPT:-max}
    STOCK_T0=$(now)
    in_ns qemu-system-x86_64 -name n2d-bench-stock -machine q35 -accel "$accel" -cpu "$cpu" \
        -smp 2 -m 2048M -nodefaults -no-user-config -display none -no-reboot \
        -kernel "$STOCK/vmlinuz" -initrd "$STOCK/initrd.img" \
        -append "console=ttyS0 root=/dev/vda rw panic=-1 loglevel=4 no_timer_check bench.settle=$SETTLE" \
        -chardev "file,id=serial0,path=$STOCK_RUN/serial.log,append=on" -serial chardev:serial0 \
        -drive "file=$STOCK_RUN/root.qcow2,if=none,id=root,format=qcow2,discard=unmap" \
        -device virtio-blk-pci,drive=root \
        -netdev "tap,id=net0,ifname=$STOCK_TAP,script=no,downscript=no" \
        -device virtio-net-pci,netdev=net0,mac=52:54:00:be:0c:01 \
        -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0 \
        -device virtio-balloon-pci,free-page-reporting=on \
        -pidfile "$STOCK_RUN/qemu.pid" -daemonize
    STOCK_PID=$(cat "$STOCK_RUN/qemu.pid")
    STOCK_PIDS+=("$STOCK_PID")
}

# wait_serial FILE PATTERN TIMEOUT PID: 0 once PATTERN is in FILE; 1 on timeout or when PID ends.
# (Not anchored: the guest's lines can follow a getty prompt that ends without a newline.)
wait_serial() {
    local file=$1 pattern=$2 deadline=$(($(date +%s) + $3)) pid=$4
    while [ "$(date +%s)" -lt "$deadline" ]; do
        grep -q -- "$pattern" "$file" 2>/dev/null && return 0
        [ -d "/proc/$pid" ] || return 1
        sleep 0.2
    done
    return 1
}

stock_stop() {
    kill_ours "$STOCK_PID" "$STOCK_RUN/"
    rm -f "$STOCK_RUN/root.qcow2"
}

# stock_boot TAG: boots the stock VM to its ready marker; sets T to the seconds, or FAIL.
# Leaves it running (stock_stop).
stock_boot() {
    stock_start "$1"
    if wait_serial "$STOCK_RUN/serial.log" "STOCK-READY docker" 900 "$STOCK_PID"; then
        T=$(since "$STOCK_T0")
    else
        log "stock VM $1 did not get ready (serial log: $STOCK_RUN/serial.log)"
        T=FAIL
    fi
}

boot_section() {
    local i
    : >"$RESULTS/boot.txt"
    log "boot: n2d create vs stock VM, $PAIRS pairs (ABBA)"
    one_n2d() {
        n2d_create bench1 --cpus 2 --memory 2G
        n2d_rm bench1
        log "boot pair $i: n2d $T s"
        echo "$i n2d $T" >>"$RESULTS/boot.txt"
    }
    # n2d as a user gets it: its default vCPUs (1 under single-threaded TCG), 2 GiB.
    one_n2d_default() {
        n2d_create bench2 --memory 2G
        [ -f "$BENCH_HOME/machines/bench2/machine.json" ] &&
            DEFAULT_CPUS_WORDS="$(jq -r .spec.cpus "$BENCH_HOME/machines/bench2/machine.json") vCPU here"
        n2d_rm bench2
        log "boot pair $i: n2d, default vCPUs, $T s"
        echo "$i n2ddef $T" >>"$RESULTS/boot.txt"
    }
    one_stock() {
        stock_boot "boot-$i"
        stock_stop
        log "boot pair $i: stock $T s"
        echo "$i stock $T" >>"$RESULTS/boot.txt"
    }
    for i in $(seq 1 "$PAIRS"); do
        if [ $((i % 2)) = 1 ]; then one_n2d; one_stock; one_n2d_default; else one_n2d_default; one_stock; one_n2d; fi
    done
    [ "$(awk '$3 != "FAIL" && ($2 == "n2d" || $2 == "stock")' "$RESULTS/boot.txt" | cut -d' ' -f2 | sort -u | wc -l)" = 2 ] || {
        section_failed "boot (no successful boot of n2d or of the stock VM)"
        return 1
    }
}

# ---------------------------------------------------------------------------------------------
# Footprint.

# MiB in use (MemTotal - MemAvailable) from meminfo lines anywhere in the input (a console's
# lines carry terminal escapes; the echoed command holds no "MemTotal:").
meminfo_used() {
    awk 'function kb(s) { gsub(/[^0-9]/, "", s); return s }
        match($0, /MemTotal: *[0-9]+/) { t = kb(substr($0, RSTART, RLENGTH)) }
        match($0, /MemAvailable: *[0-9]+/) { a = kb(substr($0, RSTART, RLENGTH)) }
        END { if (t && a) printf "%.0f\n", (t - a) / 1024 }'
}

rss_mb() { awk '/^VmRSS:/ { printf "%.0f", $2 * 1024 / 1e6 }' "/proc/$1/status"; }

# A container image made here: busybox-static, imported with `docker import` (no registry).
BB_TAR=$RESULTS/busybox.tar
make_busybox_tar() {
    local d bb
    [ -f "$BB_TAR" ] && return 0
    bb=$(command -v busybox) || { log "busybox-static is not installed (apt-get install busybox-static)"; return 1; }
    # (ldd fails on a static binary: its status must not count under pipefail.)
    grep -qE 'not a dynamic|statically linked' <<<"$(ldd "$bb" 2>&1 || true)" || {
        log "$bb is not static (install busybox-static)"
        return 1
    }
    d=$(mktemp -d)
    mkdir -p "$d/bin"
    cp "$bb" "$d/bin/busybox"
    for a in sh cat true free; do ln -s busybox "$d/bin/$a"; done
    tar -C "$d" -cf "$BB_TAR" .
    rm -rf "$d"
}

# runs_container NAME [COMMAND...]: imports the busybox image into machine NAME and runs a
# container there (COMMAND, default `true`).
runs_container() {
    local name=$1
    shift
    [ $# -gt 0 ] || set -- true
    (
        eval "$("$N2D" env "$name")"
        in_ns docker image import - n2d-bench/busybox:latest <"$BB_TAR" >/dev/null &&
            in_ns docker run --rm n2d-bench/busybox:latest "$@"
    ) >>"$RESULTS/container-$name.log" 2>&1
}

declare -A FP=()
footprint_section() {
    local pid used m out
    log "footprint: one idle n2d node, ${SETTLE}s after ready"
    n2d_create fp --cpus 2 --memory 2G
    if [ "$T" != FAIL ]; then
        sleep "$SETTLE"
        pid=$(cat "$BENCH_HOME/machines/fp/qemu.pid")
        FP[n2d_rss]=$(rss_mb "$pid")
        # Guest memory, read on the guest's root console (no container started for it); through
        # a container if the console did not answer.
        out=$({ sleep 2; echo "grep -E '^Mem(Total|Available):' /proc/meminfo"; sleep 8; } |
            timeout 20 "$N2D" console fp 2>/dev/null || true)
        FP[n2d_used_how]="on \`n2d console\`"
        used=$(meminfo_used <<<"$out")
        if [ -z "$used" ] && make_busybox_tar; then
            out=$(
                eval "$("$N2D" env fp)"
                in_ns docker image import - n2d-bench/busybox:latest <"$BB_TAR" >/dev/null &&
                    in_ns docker run --rm n2d-bench/busybox:latest cat /proc/meminfo
            ) || true
            FP[n2d_used_how]="through \`docker run\` (the console did not answer)"
            used=$(meminfo_used <<<"$out")
        fi
        FP[n2d_used]=${used:--}
        log "footprint: n2d QEMU RSS ${FP[n2d_rss]} MB, guest in use ${FP[n2d_used]} MiB"
        # Free page reporting: a container touches 500 MB and exits; does QEMU give it back?
        if make_busybox_tar && runs_container fp busybox dd if=/dev/zero of=/dev/null bs=500M count=1; then
            FP[fpr_after]=$(rss_mb "$pid")
            sleep "$SETTLE"
            FP[fpr_settled]=$(rss_mb "$pid")
            log "footprint: after a 500 MB container: QEMU RSS ${FP[fpr_after]} MB, ${SETTLE}s later ${FP[fpr_settled]} MB"
        fi
    fi
    n2d_rm fp
    log "footprint: one idle stock VM"
    stock_boot fp
    if [ "$T" != FAIL ]; then
        sleep "$SETTLE"
        FP[stock_rss]=$(rss_mb "$STOCK_PID")
        if wait_serial "$STOCK_RUN/serial.log" "STOCK-MEM [0-9]" 120 "$STOCK_PID"; then
            FP[stock_used]=$(grep -ao 'STOCK-MEM [0-9]* [0-9]*' "$STOCK_RUN/serial.log" | awk '{ printf "%.0f\n", ($2 - $3) / 1024 }' | tail -1)
        fi
        log "footprint: stock QEMU RSS ${FP[stock_rss]} MB, guest in use ${FP[stock_used]:--} MiB"
    fi
    stock_stop
    # TCG's translation cache: n2d create time and idle QEMU RSS per size (n2d's defaults
    # otherwise), the sizes in a rotated order so none always runs first.
    : >"$RESULTS/tbsize.txt"
    if [[ $ACCEL == tcg* ]]; then
        local tb
        for tb in "${TB_SIZES[@]}"; do
            log "footprint: TCG translation cache $tb MiB"
            N2D_TCG_TB_SIZE=$tb n2d_create fptb --memory 2G
            if [ "$T" != FAIL ]; then
                sleep "$SETTLE"
                echo "$tb $T $(rss_mb "$(cat "$BENCH_HOME/machines/fptb/qemu.pid")")" >>"$RESULTS/tbsize.txt"
            fi
            n2d_rm fptb
        done
    fi
    # The smallest --memory with which a node boots and runs a container, smallest first.
    : >"$RESULTS/memory.txt"
    if make_busybox_tar; then
        for m in "${MEMORY_LIST[@]}"; do
            log "footprint: --memory $m"
            if in_ns "$N2D" create fpm --cold --memory "$m" --timeout 300 >"$RESULTS/create-fpm-$m.log" 2>&1; then
                if runs_container fpm; then
                    echo "$m ok" >>"$RESULTS/memory.txt"
                else
                    echo "$m no-container" >>"$RESULTS/memory.txt"
                fi
            elif [ $? = 2 ]; then # a usage error: n2d refuses that size
                echo "$m refused" >>"$RESULTS/memory.txt"
            else
                echo "$m no-boot" >>"$RESULTS/memory.txt"
            fi
            [ -d "$BENCH_HOME/machines/fpm" ] && n2d_rm fpm
            log "footprint: --memory $m: $(tail -1 "$RESULTS/memory.txt" | cut -d' ' -f2)"
            [ "$(tail -1 "$RESULTS/memory.txt" | cut -d' ' -f2)" = ok ] && break
        done
    fi
    FP[min_memory]=$(awk '$2 == "ok" { print $1; exit }' "$RESULTS/memory.txt")
    [ -s "$RESULTS/memory.txt" ] || section_failed "footprint (smallest --memory: no size could be tried)"
    [ -n "${FP[n2d_rss]:-}" ] || [ -n "${FP[min_memory]}" ] || {
        section_failed "footprint (no n2d node came up)"
        return 1
    }
}

# ---------------------------------------------------------------------------------------------
# Swarm.

declare -A SW=()
swarm_section() {
    local t0 total pid pidf
    log "swarm: default n2d swarm create (1 manager + 3 workers)"
    t0=$(now)
    if in_ns timeout 1500 "$N2D" swarm create --cold >"$RESULTS/swarm-create.log" 2>&1; then
        SW[create]=$(since "$t0")
        log "swarm: create ${SW[create]}s"
        pid=$(cat "$BENCH_HOME"/machines/*/qemu.pid | head -1)
        learn_accel "$pid"
        SW[node]=$(jq -r '"\(.spec.cpus) vCPU, \(.spec.memory / 1073741824) GiB"' "$(first "$BENCH_HOME"/machines/*/machine.json)")
        sleep "$SETTLE"
        total=0
        for pidf in "$BENCH_HOME"/machines/*/qemu.pid; do total=$((total + $(rss_mb "$(cat "$pidf")"))); done
        SW[rss]=$total
        log "swarm: scale to 4 workers"
        t0=$(now)
        if in_ns timeout 1200 "$N2D" swarm scale n2d --workers 4 >"$RESULTS/swarm-scale.log" 2>&1; then
            SW[scale]=$(since "$t0")
            log "swarm: scale +1 ${SW[scale]}s"
        else
            log "swarm: scale failed (swarm-scale.log)"
        fi
        t0=$(now)
        in_ns "$N2D" swarm rm n2d >"$RESULTS/swarm-rm.log" 2>&1 && SW[rm]=$(since "$t0")
    else
        log "swarm: create failed (swarm-create.log)"
        tail -5 "$RESULTS/swarm-create.log" >&2
    fi
    rm_all_machines
    # Baseline: one node, the same way, in this run (boot's median when it ran).
    if wants boot; then
        SW[one]=$(awk '$2 == "n2d" && $3 != "FAIL" { print $3 }' "$RESULTS/boot.txt" | median)
    else
        n2d_create bench1
        SW[one]=$([ "$T" = FAIL ] && echo - || echo "$T")
        n2d_rm bench1
    fi
    [ -n "${SW[create]:-}" ] || {
        section_failed "swarm (swarm create failed)"
        return 1
    }
}

# ---------------------------------------------------------------------------------------------
# CLI.

declare -A CLI=()
cli_section() {
    local empty full i name d
    empty=$(mktemp -d /tmp/n2dbc.XXXXXX)
    full=$(mktemp -d /tmp/n2dbc.XXXXXX)
    SCRATCH+=("$empty" "$full")
    mkdir -m 0700 "$full/machines"
    # 100 records as `n2d create` writes them (crates/n2d-store/src/records.rs MachineRecord);
    # no qemu.pid, so every one is stopped.
    for i in $(seq 1 100); do
        name=$(printf 'node-%03d' "$i")
        d=$full/machines/$name
        mkdir -m 0700 "$d"
        (
            umask 077
            printf '{"spec":{"name":"%s","cpus":2,"memory":2147483648,"disk":21474836480,"bridge":"n2d0","image":"%s","insecure_tcp":false,"labels":{}},"ip":"10.77.0.%d","prefix_len":24,"gateway":"10.77.0.1","mac":"52:54:00:00:00:%02x","tap":"n2dt%08x","swarm":null}\n' \
                "$name" "${IMAGE_ID:-0123456789abcdef}" $((i + 1)) "$i" "$i" >"$d/machine.json"
        )
    done
    local rows
    rows=$(N2D_HOME=$full "$N2D" ls | tail -n +2 | grep -vc ' error ' || true)
    [ "$rows" = 100 ] || {
        N2D_HOME=$full "$N2D" ls >"$RESULTS/cli-ls.txt" 2>&1 || true
        section_failed "cli (n2d ls read $rows of 100 fake records: cli-ls.txt)"
        return 1
    }
    time_ls() { # HOME ARGS...: median milliseconds of CLI_RUNS runs
        local home=$1 t0 t1
        shift
        N2D_HOME=$home "$N2D" ls "$@" >/dev/null # warms the page cache; not counted
        for _ in $(seq 1 "$CLI_RUNS"); do
            t0=$(date +%s%N)
            N2D_HOME=$home "$N2D" ls "$@" >/dev/null
            t1=$(date +%s%N)
            echo $(((t1 - t0) / 1000))
        done | median | awk '{ printf "%.1f", $1 / 1000 }'
    }
    log "cli: n2d ls, $CLI_RUNS runs each"
    CLI[empty]=$(time_ls "$empty")
    CLI[full]=$(time_ls "$full")
    CLI[empty_json]=$(time_ls "$empty" --json)
    CLI[full_json]=$(time_ls "$full" --json)
    log "cli: ls 0 records ${CLI[empty]} ms, 100 records ${CLI[full]} ms; --json ${CLI[empty_json]} / ${CLI[full_json]} ms"
}

# ---------------------------------------------------------------------------------------------
# Run the sections.

if wants image; then image_section || true; fi
if wants boot || wants footprint || wants swarm || wants image; then
    ensure_images || { log "could not build n2d's image"; exit 1; }
fi
HAVE_STOCK=0
if wants boot || wants footprint; then
    if ensure_stock; then HAVE_STOCK=1; else section_failed "stock VM image (stock-build.log)"; fi
elif wants image; then
    # The image table compares with the stock VM when one is cached; it builds none.
    key_dir=$(first "$WORK"/stock-"$SUITE"-*/ || true)
    if [ -n "$key_dir" ] && [ -f "$key_dir/built" ]; then STOCK=${key_dir%/} HAVE_STOCK=1; fi
fi
if wants boot || wants footprint || wants swarm; then make_ns; fi
if wants boot; then
    if [ "$HAVE_STOCK" = 1 ]; then boot_section || true; fi
fi
if wants footprint; then
    if [ "$HAVE_STOCK" = 1 ]; then footprint_section || true; else section_failed "footprint (no stock VM)"; fi
fi
if wants swarm; then swarm_section || true; fi
if wants cli; then cli_section || true; fi

# ---------------------------------------------------------------------------------------------
# Tables: printed, and written between BENCHMARKS.md's markers.

TABLES=$RESULTS/tables
mkdir -p "$TABLES"
secs() { [ "$1" = "-" ] || [ -z "$1" ] && echo "-" || echo "$1 s"; }
list_of() { tr '\n' ' ' | sed 's/ $//; s/ /, /g'; }

if wants boot && [ -s "$RESULTS/boot.txt" ]; then
    n_med=$(awk '$2 == "n2d" && $3 != "FAIL" { print $3 }' "$RESULTS/boot.txt" | median)
    s_med=$(awk '$2 == "stock" && $3 != "FAIL" { print $3 }' "$RESULTS/boot.txt" | median)
    per_pair=$(awk '$3 != "FAIL" { v[$1, $2] = $3 } END { for (i = 1; i <= '"$PAIRS"'; i++) if ((i, "n2d") in v && (i, "stock") in v) printf "%.2f\n", v[i, "n2d"] / v[i, "stock"] }' "$RESULTS/boot.txt")
    fails=$(awk '$3 == "FAIL" { printf "%s %s; ", $2, $1 }' "$RESULTS/boot.txt")
    {
        echo "$(run_line vm) Image ${IMAGE_ID:0:12} ($SUITE, kernel $KERNEL_RELEASE); stock VM kernel ${STOCK_KERNEL:-?}. $PAIRS pair(s), ABBA order$([ "$PAIRS" -lt 5 ] && echo ": a quick run, not a measurement to quote")."
        echo
        echo "| 2 vCPU, 2 GiB, first boot | n2d: median (runs) | stock VM: median (runs) | n2d/stock: median of per-pair ratios (per pair) |"
        echo "|---|---|---|---|"
        echo "| start → Docker API answering (n2d: \`n2d create\` to the TLS ping; stock: QEMU start to the marker after docker.service) | $(secs "$n_med") ($(awk '$2 == "n2d" { print $3 }' "$RESULTS/boot.txt" | list_of)) | $(secs "$s_med") ($(awk '$2 == "stock" { print $3 }' "$RESULTS/boot.txt" | list_of)) | $(echo "$per_pair" | median) ($(echo "$per_pair" | list_of)) |"
        d_med=$(awk '$2 == "n2ddef" && $3 != "FAIL" { print $3 }' "$RESULTS/boot.txt" | median)
        d_pair=$(awk '$3 != "FAIL" { v[$1, $2] = $3 } END { for (i = 1; i <= '"$PAIRS"'; i++) if ((i, "n2ddef") in v && (i, "n2d") in v) printf "%.2f\n", v[i, "n2ddef"] / v[i, "n2d"] }' "$RESULTS/boot.txt")
        if [ "$d_med" != "-" ]; then
            echo
            echo "n2d as users get it, with its default vCPUs ($DEFAULT_CPUS_WORDS), in the same pairs:"
            echo
            echo "| 2 GiB, first boot | n2d, default vCPUs: median (runs) | n2d, 2 vCPU: median | default/2 vCPU: median of per-pair ratios (per pair) | default vCPUs/stock |"
            echo "|---|---|---|---|---|"
            echo "| \`n2d create\` to the TLS ping | $(secs "$d_med") ($(awk '$2 == "n2ddef" { print $3 }' "$RESULTS/boot.txt" | list_of)) | $(secs "$n_med") | $(echo "$d_pair" | median) ($(echo "$d_pair" | list_of)) | $(ratio "$d_med" "$s_med") (the stock VM with 2 vCPUs) |"
        fi
        [ -z "$fails" ] || echo "
Failed runs: $fails(logs in the run's results directory)."
    } >"$TABLES/boot.md"
fi

if wants swarm && [ -n "${SW[create]:-}" ]; then
    one=${SW[one]:-}
    {
        echo "$(run_line vm) Image ${IMAGE_ID:0:12}. One run each; the baseline is one node's \`n2d create\` (2 vCPU, 2 GiB) in the same run$(wants boot && echo " (boot's median)" || echo ", after the swarm was removed (so under the host's load of that moment)")."
        echo
        echo "| what | time | one node | ratio |"
        echo "|---|---|---|---|"
        echo "| \`n2d swarm create\` (1 manager + 3 workers, ${SW[node]:-?} each: the defaults) to all nodes Ready | ${SW[create]} s | $(secs "$one") | $(ratio "${SW[create]}" "$one") |"
        echo "| \`n2d swarm scale n2d --workers 4\` (+1 worker, joined) | $(secs "${SW[scale]:--}") | $(secs "$one") | $(ratio "${SW[scale]:-0}" "$one") |"
        echo "| \`n2d swarm rm n2d\` (5 nodes) | $(secs "${SW[rm]:--}") | | |"
        echo
        echo "QEMU RSS of the 4 idle nodes, ${SETTLE} s after Ready: ${SW[rss]} MB in all ($(awk -v t="${SW[rss]}" 'BEGIN { printf "%.0f", t / 4 }') MB a node)."
    } >"$TABLES/swarm.md"
fi

if wants footprint && { [ -n "${FP[n2d_rss]:-}" ] || [ -n "${FP[min_memory]:-}" ]; }; then
    {
        echo "$(run_line vm) Image ${IMAGE_ID:0:12}. One idle VM of each (2 vCPU, 2 GiB), read ${SETTLE} s after ready."
        echo
        echo "| what | n2d | stock VM | n2d/stock |"
        echo "|---|---|---|---|"
        echo "| guest memory in use (MemTotal − MemAvailable; n2d: ${FP[n2d_used_how]:-}, stock: by the ready unit) | ${FP[n2d_used]:--} MiB | ${FP[stock_used]:--} MiB | $(ratio "${FP[n2d_used]:-}" "${FP[stock_used]:-}") |"
        echo "| QEMU resident memory (VmRSS) | ${FP[n2d_rss]:--} MB | ${FP[stock_rss]:--} MB | $(ratio "${FP[n2d_rss]:-}" "${FP[stock_rss]:-}") |"
        echo
        if [ -n "${FP[fpr_after]:-}" ]; then
            echo "Free page reporting: after a container that touched 500 MB (\`dd bs=500M\`) exited, n2d's QEMU RSS was ${FP[fpr_after]} MB, and ${FP[fpr_settled]} MB ${SETTLE} s later (idle before: ${FP[n2d_rss]} MB)."
            echo
        fi
        if [ -s "$RESULTS/tbsize.txt" ]; then
            echo "TCG translation cache (\`-accel tcg,tb-size=N\`, \`N2D_TCG_TB_SIZE\`), one node each with n2d's defaults, RSS read ${SETTLE} s after ready:"
            echo
            echo "| tb-size | \`n2d create\` to the TLS ping | QEMU RSS, idle | RSS vs 1024 MiB (QEMU's default) |"
            echo "|---|---|---|---|"
            base=$(awk '$1 == 1024 { print $3 }' "$RESULTS/tbsize.txt")
            while read -r tb t rss; do
                echo "| $tb MiB | $t s | $rss MB | $(ratio "$rss" "$base") |"
            done <"$RESULTS/tbsize.txt"
            echo
        fi
        # shellcheck disable=SC2016 # backquotes are Markdown here
        printf 'Smallest `--memory` with which a node boots and runs a container (`docker run` of a busybox image made with `docker import`), sizes tried smallest first: **%s** (%s).\n' \
            "${FP[min_memory]:-none of those tried}" "$(awk '{ w = $2 == "refused" ? "refused by n2d" : $2 == "no-boot" ? "did not boot" : $2 == "no-container" ? "booted, container failed" : $2; printf "%s%s %s", (NR > 1 ? "; " : ""), $1, w }' "$RESULTS/memory.txt")"
    } >"$TABLES/footprint.md"
fi

if wants image && [ -n "${IMG[cold]:-}" ]; then
    sk() { [ "$HAVE_STOCK" = 1 ] && [ -f "$STOCK/$1" ] && stat -c %s "$STOCK/$1" || echo; }
    s_kernel=$(sk vmlinuz) s_initrd=$(sk initrd.img)
    s_root=$([ "$HAVE_STOCK" = 1 ] && du -B1 "$STOCK/root.ext4" | cut -f1 || echo)
    s_unpacked=$([ "$HAVE_STOCK" = 1 ] && cat "$STOCK/unpacked_bytes" || echo)
    n_total=$((IMG[kernel_bytes] + IMG[initrd_bytes] + IMG[rootfs_bytes]))
    s_total=$([ -n "$s_kernel" ] && echo $((s_kernel + s_initrd + s_root)) || echo)
    mbs() { [ -n "$1" ] && echo "$(mb "$1") MB" || echo "-"; }
    {
        echo "$(run_line) Image ${IMG[id]} ($(jq -r '.[0].recipe.suite' "$RESULTS/image-ls.json"), kernel ${IMG[kernel_release]}). Stock VM: $([ "$HAVE_STOCK" = 1 ] && echo "$(basename "$STOCK"), built $(cat "$STOCK/built") in $(cat "$STOCK/build_seconds") s" || echo "none cached (run the boot section once)")."
        echo
        echo "| what | n2d | stock VM | n2d/stock |"
        echo "|---|---|---|---|"
        echo "| kernel (vmlinuz) | $(mbs "${IMG[kernel_bytes]}") | $(mbs "$s_kernel") | $(ratio "${IMG[kernel_bytes]}" "$s_kernel") |"
        echo "| initrd (n2d: n2d-init + modules, lz4; stock: initramfs-tools) | $(mbs "${IMG[initrd_bytes]}") | $(mbs "$s_initrd") | $(ratio "${IMG[initrd_bytes]}" "$s_initrd") |"
        echo "| root as stored (n2d: erofs lz4hc; stock: ext4 image, blocks in use) | $(mbs "${IMG[rootfs_bytes]}") | $(mbs "$s_root") | $(ratio "${IMG[rootfs_bytes]}" "$s_root") |"
        echo "| **all, as stored** | **$(mbs "$n_total")** | $(mbs "$s_total") | $(ratio "$n_total" "$s_total") |"
        echo "| root unpacked (file sizes) | $(mbs "${IMG[rootfs_unpacked_bytes]}") | $(mbs "$s_unpacked") | $(ratio "${IMG[rootfs_unpacked_bytes]}" "$s_unpacked") |"
        echo "| \`n2d image build\`, cold (fresh N2D_HOME, packages fetched) | ${IMG[cold]} s | $([ "$HAVE_STOCK" = 1 ] && echo "$(cat "$STOCK/build_seconds") s (mmdebstrap + mkfs.ext4, when built)" || echo -) | $([ "$HAVE_STOCK" = 1 ] && ratio "${IMG[cold]}" "$(cat "$STOCK/build_seconds")" || echo -) |"
        echo "| \`n2d image build\`, warm (same inputs again; same ID: ${IMG[same_id]}) | ${IMG[warm]} s | | |"
        if [ -s "$RESULTS/image-dirs.txt" ]; then
            echo
            echo "n2d's root unpacked, by directory: $(awk '$1 != "" { printf "%s%s %.1f MB", (n++ ? ", " : ""), $2, $1 / 1e6 }' "$RESULTS/image-dirs.txt"); largest files: $(awk '{ n = split($2, p, "/"); printf "%s%s %.1f MB", (NR > 1 ? ", " : ""), p[n], $1 / 1e6 }' "$RESULTS/image-largest.txt")."
        fi
    } >"$TABLES/image.md"
fi

if wants cli && [ -n "${CLI[full]:-}" ]; then
    {
        echo "$(run_line) Median of $CLI_RUNS runs each; 100 fake machine records (stopped), no VM."
        echo
        echo "| command | 100 records | empty home | ratio |"
        echo "|---|---|---|---|"
        echo "| \`n2d ls\` | ${CLI[full]} ms | ${CLI[empty]} ms | $(ratio "${CLI[full]}" "${CLI[empty]}") |"
        echo "| \`n2d ls --json\` | ${CLI[full_json]} ms | ${CLI[empty_json]} ms | $(ratio "${CLI[full_json]}" "${CLI[empty_json]}") |"
    } >"$TABLES/cli.md"
fi

# Replaces what lies between <!-- bench:NAME:begin --> and <!-- bench:NAME:end --> in FILE with
# the table; a file without those markers gets them appended at its end.
write_block() {
    local name=$1 table=$2 file=$3 tmp
    if ! grep -qx "<!-- bench:$name:begin -->" "$file"; then
        printf '\n<!-- bench:%s:begin -->\n<!-- bench:%s:end -->\n' "$name" "$name" >>"$file"
    fi
    tmp=$(mktemp "$file.XXXXXX")
    awk -v begin="<!-- bench:$name:begin -->" -v end="<!-- bench:$name:end -->" -v table="$table" '
        $0 == begin { print; while ((getline line < table) > 0) print line; skip = 1; next }
        $0 == end { skip = 0 }
        !skip { print }' "$file" >"$tmp"
    chmod --reference="$file" "$tmp"
    mv "$tmp" "$file"
}

echo
for s in image boot swarm footprint cli; do
    [ -f "$TABLES/$s.md" ] || continue
    echo "## $s"
    cat "$TABLES/$s.md"
    echo
    if [ "$WRITE" = 1 ]; then write_block "$s" "$TABLES/$s.md" "$BENCH_MD"; fi
done
[ "$WRITE" = 1 ] && log "tables written into $BENCH_MD"
for s in "${SECTIONS[@]}"; do
    [ -f "$TABLES/$s.md" ] || { [[ " ${FAILED_SECTIONS[*]} " == *" $s"* ]] || FAILED_SECTIONS+=("$s (nothing measured)"); }
done
if [ ${#FAILED_SECTIONS[@]} -gt 0 ]; then
    log "could not measure: ${FAILED_SECTIONS[*]}"
    exit 1
fi
log "done"
