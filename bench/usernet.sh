#!/usr/bin/env bash
# User-mode networking against bridge networking, and slirp against passt for the uplink, side
# by side in one run. Every figure is printed with its baseline from the same run and the ratio.
#
#   sudo bench/usernet.sh                    # from anywhere, as root (bridge mode needs it)
#   sudo bench/usernet.sh --pairs 2 --only uplink
#
# Parts (--only PART runs one):
#   create  `n2d swarm create` (1 manager + 3 workers) with `--network user` vs the default
#           bridge, alternated (ABBA over --pairs), each from a fresh N2D_HOME with the image
#           hard-linked in, then `n2d swarm rm`. As root, user mode takes the same code path as
#           for an ordinary user: root only chooses the default network (and doctor's line).
#   tput    create, and in each swarm before its removal: TCP throughput from n2d-mngr-0 to
#           n2d-wrkr-0 over their 10.77.0.x addresses (the VDE switch vs tap + bridge), with
#           bench/nettput (a static musl binary, `docker import`ed into both nodes) in
#           `--network host` containers: median of 3 transfers of --mib MiB per swarm.
#   uplink  one user-mode VM, booted by hand from the command line n2d gave its QEMU, with
#           the uplink on slirp (`-netdev user`, n2d's) or on passt (`-netdev stream` to a
#           passt process), alternated over --pairs: host-to-guest TCP throughput through a
#           127.0.0.1 forward (median of 3 transfers), time to the Docker API, QEMU (+ passt)
#           RSS; and whether each starts in a namespace with only loopback. passt gets a veth
#           pair whose two ends stay in the namespace (it refuses to run without an interface).
# Default: create + tput, then uplink.
#
# Everything runs in a network namespace of its own (loopback only; the veth pair above is
# added for passt), with no route out of it; the image is built first in the host's namespace
# (it fetches packages) unless --images-from names a home that holds one. n2d is a copy of
# target/release/n2d (built when missing). On exit the VMs are removed, and only QEMU, passt
# and vde_switch processes whose command line names this run's work directory are killed;
# the namespace and the homes are removed. Logs and raw numbers stay in the results directory.
set -euo pipefail

PAIRS=1 ONLY=all MIB=256 IMAGES_FROM="" RESULTS=""
usage_options() {
    echo "Options: --pairs N (1), --only create|tput|uplink (all), --mib N (256: MiB per transfer),"
    echo "         --images-from HOME (an N2D_HOME whose images/ to use instead of building one),"
    echo "         --results DIR (/tmp/n2d-usernet-PID)"
}
while [ $# -gt 0 ]; do
    case $1 in
    --pairs) PAIRS=${2-} ;;
    --only) ONLY=${2-} ;;
    --mib) MIB=${2-} ;;
    --images-from) IMAGES_FROM=${2-} ;;
    --results) RESULTS=${2-} ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        usage_options
        exit 0
        ;;
    *)
        echo "usernet: unknown option $1 (see --help)" >&2
        exit 2
        ;;
    esac
    [ $# -ge 2 ] || { echo "usernet: $1 needs a value (see --help)" >&2; exit 2; }
    shift 2
done
[[ $PAIRS =~ ^[1-9][0-9]*$ && $MIB =~ ^[1-9][0-9]*$ ]] || { echo "usernet: --pairs and --mib take a number >= 1" >&2; exit 2; }
case $ONLY in all | create | tput | uplink) ;; *) echo "usernet: --only takes create, tput or uplink" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "usernet: run as root (network namespace, bridge and taps)" >&2; exit 2; }
for tool in qemu-system-x86_64 vde_switch passt docker ip cargo; do
    command -v "$tool" >/dev/null || { echo "usernet: $tool is not installed" >&2; exit 2; }
done
if [ -n "$IMAGES_FROM" ] && [ ! -d "$IMAGES_FROM/images" ]; then
    echo "usernet: $IMAGES_FROM has no images/ directory" >&2
    exit 2
fi

cd "$(dirname "$0")/.."
START=$(date +%s)
NS=n2d-un-$$
# Short: socket paths (QEMU's, the switch's, passt's) must fit in 107 bytes.
WORK=$(mktemp -d /tmp/n2dun.XXXXXX)
RESULTS=${RESULTS:-/tmp/n2d-usernet-$$}
mkdir -p "$RESULTS"
RUNS=$RESULTS/runs.txt
: >"$RUNS"
NS_MADE=0
PASST_PIDS=()
FWD_HOST=15001 FWD_GUEST=5001 SRV_PORT=5001
GUEST=100.64.77.15 GATEWAY=100.64.77.2 DNS=100.64.77.3

log() { printf '%s %s\n' "$(date +%T)" "$*" | tee -a "$RESULTS/summary.txt" >&2; }
in_ns() { ip netns exec "$NS" "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# record KIND VARIANT PAIR VALUE
record() { echo "$*" >>"$RUNS"; }

# The pids of the processes this run started: QEMU, passt or vde_switch with this run's work
# directory on their command line.
own_processes() {
    local d argv0
    for d in /proc/[0-9]*; do
        argv0=
        read -r -d '' argv0 2>/dev/null <"$d/cmdline" || [ -n "$argv0" ] || continue
        case ${argv0##*/} in qemu-system-x86_64 | passt | passt.avx2 | vde_switch) ;; *) continue ;; esac
        tr '\0' ' ' 2>/dev/null <"$d/cmdline" | grep -qF -- "$WORK/" && echo "${d#/proc/}"
    done
    return 0
}

# n2d in the namespace with HOME as N2D_HOME and a docker config of its own (the docker
# contexts n2d registers never touch the caller's ~/.docker).
n2d_in() {
    local home=$1
    shift
    N2D_HOME=$home DOCKER_CONFIG=$home.docker in_ns timeout 1800 "$N2D" "$@"
}
# dk HOME NODE ARGS...: the docker CLI against NODE's engine (from `n2d env`).
dk() {
    local home=$1 node=$2 envs
    shift 2
    envs=$(N2D_HOME=$home "$N2D" env "$node") || return 1
    (
        eval "$envs"
        DOCKER_CONFIG=$home.docker in_ns timeout "${DK_TIMEOUT:-900}" docker "$@"
    )
}

remove_home_machines() {
    local home=$1 s m
    [ -d "$home/machines" ] || return 0
    for s in "$home"/swarms/*.json; do
        [ -f "$s" ] || continue
        n2d_in "$home" swarm rm "$(basename "$s" .json)" >>"$RESULTS/rm.log" 2>&1 || true
    done
    for m in "$home"/machines/*/; do
        [ -d "$m" ] || continue
        n2d_in "$home" rm -f "$(basename "$m")" >>"$RESULTS/rm.log" 2>&1 || true
    done
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local rc=$? pid home ino
    set +e
    trap - EXIT INT TERM
    if [ "$NS_MADE" = 1 ]; then
        for home in "$WORK"/*/; do remove_home_machines "${home%/}"; done
    fi
    for pid in "${PASST_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in $(own_processes); do
        echo "usernet: stopping leftover $(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-60)... (pid $pid, started by this run)" >&2
        kill "$pid" 2>/dev/null
    done
    sleep 1
    for pid in $(own_processes); do kill -9 "$pid" 2>/dev/null; done
    if [ "$NS_MADE" = 1 ]; then
        # n2d's host-wide record for this namespace, if a failed rm left one (the kernel reuses
        # namespace inodes, so it would describe a later namespace).
        ino=$(stat -L -c %i "/run/netns/$NS" 2>/dev/null)
        if [ -n "$ino" ] && [ -f "/run/n2d/netns-$ino.json" ]; then
            flock /run/n2d/lock rm -f "/run/n2d/netns-$ino.json"
        fi
        ip netns del "$NS"
    fi
    rm -rf "$WORK"
    echo "usernet: logs and raw numbers in $RESULTS" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# n2d: a copy of the release build, so that a rebuild by someone else cannot change it mid-run.
if [ ! -x target/release/n2d ]; then
    log "building n2d (target/release/n2d is missing)"
    cargo build --release -q -p n2d
fi
cp target/release/n2d "$WORK/n2d"
N2D=$WORK/n2d
"$N2D" swarm create --help | grep -q -- '--publish' \
    || { echo "usernet: target/release/n2d has no user-mode networking: rebuild it" >&2; exit 2; }

log "building bench/nettput (static, musl)"
cargo build --release -q --manifest-path bench/nettput/Cargo.toml \
    --target x86_64-unknown-linux-musl --target-dir "$WORK/nettput-target"
mkdir -p "$WORK/nettput-root"
cp "$WORK/nettput-target/x86_64-unknown-linux-musl/release/nettput" "$WORK/nettput-root/nettput"
NETTPUT=$WORK/nettput-root/nettput
tar --owner=0 --group=0 -C "$WORK/nettput-root" -cf "$WORK/nettput.tar" nettput

if [ -n "$IMAGES_FROM" ]; then
    IMAGES=$IMAGES_FROM
else
    log "building the image (host namespace: it fetches packages)"
    IMAGES=$WORK/images-home
    N2D_HOME=$IMAGES "$N2D" image build >"$RESULTS/image-build.log" 2>&1 \
        || { tail -5 "$RESULTS/image-build.log" >&2; exit 1; }
fi

ip netns add "$NS"
NS_MADE=1
in_ns ip link set lo up

{
    echo "host: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -r)"
    echo "qemu: $(qemu-system-x86_64 --version | head -1)"
    echo "passt: $(dpkg-query -W -f '${Version}' passt 2>/dev/null || echo unknown), vde2: $(dpkg-query -W -f '${Version}' vde2 2>/dev/null || echo unknown)"
    echo "n2d: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo '+dirty'), binary built $(date -r target/release/n2d '+%F %T')"
    echo "date: $(date -u +%FT%TZ), load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "pairs: $PAIRS, part: $ONLY, transfers: 3 x $MIB MiB"
} | tee -a "$RESULTS/summary.txt" >&2

fresh_home() {
    mkdir -p "$1/images"
    cp -al "$IMAGES/images/." "$1/images/"
}

load1() { cut -d' ' -f1 /proc/loadavg; }
# cpu_secs HOME: CPU seconds (user + system) used so far by this run's processes of HOME
# (QEMUs and the switch): the work done, which other load on the host does not inflate the
# way it inflates wall time.
cpu_secs() {
    local pid tck total=0 t
    tck=$(getconf CLK_TCK)
    for pid in $(own_processes); do
        tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$1/" || continue
        t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }') || continue
        total=$((total + ${t:-0}))
    done
    awk -v t="$total" -v k="$tck" 'BEGIN { printf "%.1f", t / k }'
}

# Checks that every QEMU of HOME has its first NIC on the switch (user) or a tap (bridge).
check_nics() {
    local home=$1 mode=$2 want pid n=0
    if [ "$mode" = user ]; then want="vde,id=net0"; else want="tap,id=net0"; fi
    for pid in $(own_processes); do
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$home/machines/" || continue
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q '^qemu-system' || continue
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$want" || { log "QEMU $pid of $home lacks $want"; return 1; }
        n=$((n + 1))
    done
    [ "$n" -gt 0 ] || { log "no QEMU found for $home"; return 1; }
}

# wait_listening HOME NODE: until the server container says it listens.
wait_listening() {
    local i
    for i in $(seq 1 150); do
        dk "$1" "$2" logs nettput-srv 2>/dev/null | grep -q listening && return 0
        sleep 2
    done
    log "nettput server on $2 did not start"
    return 1
}

# Three transfers; CLIENT... is the client command without its last argument (the MiB).
# Records KIND VARIANT PAIR for each and the run's median as KIND.
transfers() {
    local kind=$1 variant=$2 i=$3 k out v vals=()
    shift 3
    for k in 1 2 3; do
        out=$("$@" "$MIB" 2>&1) || true
        v=$(echo "$out" | awk '/ MB\/s \(/ { v = $1 } END { print v }')
        if [[ $v =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
            log "  $kind $variant transfer $k: $(echo "$out" | grep ' MB/s (' | tail -1)"
            record "$kind-each" "$variant" "$i" "$v"
            vals+=("$v")
        else
            log "  $kind $variant transfer $k FAILED: $(echo "$out" | tail -3)"
            record "$kind-each" "$variant" "$i" FAIL
        fi
    done
    [ "${#vals[@]}" -gt 0 ] || return 1
    record "$kind" "$variant" "$i" "$(printf '%s\n' "${vals[@]}" | median)"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# --- parts 1 and 2: swarms ---------------------------------------------------------------

swarm_tput() {
    local home=$1 mode=$2 i=$3 wip node
    wip=$(N2D_HOME=$home "$N2D" ip n2d-wrkr-0) || return 1
    for node in n2d-wrkr-0 n2d-mngr-0; do
        dk "$home" "$node" import "$WORK/nettput.tar" nettput:bench >/dev/null || return 1
    done
    dk "$home" n2d-wrkr-0 run -d --rm --name nettput-srv --network host nettput:bench \
        /nettput server "$SRV_PORT" 3 >/dev/null || return 1
    wait_listening "$home" n2d-wrkr-0 || return 1
    log "  $mode swarm: n2d-mngr-0 -> n2d-wrkr-0 ($wip:$SRV_PORT), load $(load1)"
    transfers vm2vm "$mode" "$i" dk "$home" n2d-mngr-0 run --rm --network host nettput:bench \
        /nettput client "$wip" "$SRV_PORT"
}

swarm_run() {
    local mode=$1 i=$2 home=$WORK/s$2$1 args=(--cold) t0 t log cpu
    [ "$mode" = user ] && args+=(--network user)
    fresh_home "$home"
    log="$RESULTS/swarm-create-$i-$mode.log"
    log "pair $i: n2d swarm create ${args[*]} (1 manager + 3 workers), load $(load1)"
    t0=$(now)
    if n2d_in "$home" swarm create "${args[@]}" >"$log" 2>&1; then t=$(since "$t0"); else t=FAIL; fi
    if [ "$t" != FAIL ] && check_nics "$home" "$mode"; then
        cpu=$(cpu_secs "$home")
        record create "$mode" "$i" "$t"
        record create-cpu "$mode" "$i" "$cpu"
        log "  create $mode: ${t}s, QEMUs and switch used ${cpu} CPU-s; load $(load1)"
        if [ "$ONLY" != create ]; then
            swarm_tput "$home" "$mode" "$i" || { log "  throughput in the $mode swarm FAILED"; record vm2vm "$mode" "$i" FAIL; }
        fi
    else
        log "  create $mode FAILED (log: $log)"
        tail -5 "$log" >&2
        record create "$mode" "$i" FAIL
    fi
    n2d_in "$home" swarm rm n2d >"$RESULTS/swarm-rm-$i-$mode.log" 2>&1 || log "  swarm rm $mode failed"
    remove_home_machines "$home"
    rm -rf "$home" "$home.docker"
}

if [ "$ONLY" != uplink ]; then
    log "note: user mode as root takes the same code path as for an ordinary user (root only picks the default network, and doctor's privileges line); bridge mode needs root"
    for i in $(seq 1 "$PAIRS"); do
        if [ $((i % 2)) = 1 ]; then swarm_run user "$i"; swarm_run bridge "$i"; else swarm_run bridge "$i"; swarm_run user "$i"; fi
    done
fi

# --- part 3: the uplink, slirp vs passt ---------------------------------------------------

# pid_ticks PID...: their CPU time (user + system) in clock ticks.
pid_ticks() {
    local pid sum=0 t
    for pid in "$@"; do
        t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }') || t=0
        sum=$((sum + ${t:-0}))
    done
    echo "$sum"
}
rss_mb() { awk '/^VmRSS:/ { printf "%.0f", $2 * 1024 / 1e6 }' "/proc/$1/status"; }

# passt with the forwards n2d would give (the Docker API and the bench's port) on 127.0.0.1.
PSOCK_DIR=$WORK/passt
PSOCK=$PSOCK_DIR/passt.sock
PASST=()

# The switch, as n2d starts it (n2d stopped it with the machine, the last of its home).
ensure_switch() {
    local net=$UHOME/network pid
    pid=$(cat "$net/switch.pid" 2>/dev/null) || true
    if [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$net/switch "; then return 0; fi
    rm -rf "$net/switch" "$net/switch.pid"
    mkdir -p "$net"
    chmod 0700 "$net"
    in_ns vde_switch --sock "$net/switch" --dirmode 0700 --mode 0600 --numports 256 --daemon --pidfile "$net/switch.pid"
    for _ in $(seq 1 100); do [ -S "$net/switch/ctl" ] && return 0; sleep 0.05; done
    log "the switch did not open its socket"
    return 1
}

stop_vm() {
    local pid
    n2d_in "$UHOME" stop up >>"$RESULTS/uplink-stop.log" 2>&1 || true
    pid=$(cat "$UHOME/machines/up/qemu.pid" 2>/dev/null) || true
    if [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$UHOME/machines/up/"; then
        log "  n2d stop left QEMU $pid running: killing it"
        kill "$pid"
        sleep 2
    fi
}

# uplink_run VARIANT PAIR: boots the VM by hand with its uplink on VARIANT, measures, stops it.
uplink_run() {
    local variant=$1 i=$2 argv=() k t0 qpid ppid="" api=FAIL gapi c0 cpu
    log "pair $i: uplink on $variant, load $(load1)"
    ensure_switch || return 1
    mapfile -d '' argv <"$WORK/up-argv"
    if [ "$variant" = passt ]; then
        rm -f "$PSOCK"
        # Not through in_ns: $! must be passt itself (ip netns exec execs it; passt -f stays
        # in the foreground, in this pid namespace).
        ip netns exec "$NS" "${PASST[@]}" >>"$RESULTS/passt-$i.log" 2>&1 &
        ppid=$!
        PASST_PIDS+=("$ppid")
        for _ in $(seq 1 100); do [ -S "$PSOCK" ] && break; sleep 0.05; done
        [ -S "$PSOCK" ] || { log "  passt did not open $PSOCK"; cat "$RESULTS/passt-$i.log" >&2; return 1; }
        for k in "${!argv[@]}"; do
            case ${argv[$k]} in user,id=uplink,*) argv[k]="stream,id=uplink,server=off,addr.type=unix,addr.path=$PSOCK" ;; esac
        done
    fi
    printf '%s\n' "${argv[@]}" >"$RESULTS/uplink-argv-$i-$variant.txt"
    t0=$(now)
    (cd "$UHOME/machines/up" && in_ns "${argv[@]}") >>"$RESULTS/uplink-qemu.log" 2>&1 \
        || { log "  QEMU did not start (log: $RESULTS/uplink-qemu.log)"; return 1; }
    qpid=$(cat "$UHOME/machines/up/qemu.pid")
    for _ in $(seq 1 450); do
        if DK_TIMEOUT=10 dk "$UHOME" up version --format '{{.Server.Version}}' >/dev/null 2>&1; then api=$(since "$t0"); break; fi
        sleep 2
    done
    record api "$variant" "$i" "$api"
    # The guest's own clock for the same boot (serial.log is appended to by every boot).
    gapi=$(grep -a 'n2d-init.*docker engine answers' "$UHOME/machines/up/serial.log" | tail -1 | grep -o '\[ *[0-9.]*s\]' | tr -d '[]s ' || true)
    [ -n "$gapi" ] && record api-guest "$variant" "$i" "$gapi"
    log "  $variant: Docker API through the forward after ${api}s (in the guest: dockerd answered ${gapi:-?}s after boot)"
    if [ "$api" != FAIL ]; then
        record rss-boot "$variant" "$i" "$(rss_mb "$qpid")"
        dk "$UHOME" up rm -f nettput-srv >/dev/null 2>&1 || true
        if dk "$UHOME" up run -d --rm --name nettput-srv --network host nettput:bench \
            /nettput server "$FWD_GUEST" 3 >/dev/null && wait_listening "$UHOME" up; then
            # shellcheck disable=SC2086 # $ppid is empty or one pid
            c0=$(pid_ticks "$qpid" $ppid)
            transfers h2g "$variant" "$i" in_ns timeout 900 "$NETTPUT" client 127.0.0.1 "$FWD_HOST" || true
            # shellcheck disable=SC2086
            cpu=$(awk -v a="$c0" -v b="$(pid_ticks "$qpid" $ppid)" -v k="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (b - a) / k }')
            record h2g-cpu "$variant" "$i" "$cpu"
            log "  $variant: QEMU${ppid:+ + passt} used $cpu CPU-s for the 3 transfers"
        else
            log "  $variant: the nettput server did not start"
            record h2g "$variant" "$i" FAIL
        fi
        record rss-qemu "$variant" "$i" "$(rss_mb "$qpid")"
        if [ -n "$ppid" ]; then
            record rss-passt "$variant" "$i" "$(rss_mb "$ppid")"
            record rss-total "$variant" "$i" $(($(rss_mb "$qpid") + $(rss_mb "$ppid")))
        else
            record rss-total "$variant" "$i" "$(rss_mb "$qpid")"
        fi
        log "  $variant: RSS QEMU $(rss_mb "$qpid") MB${ppid:+, passt $(rss_mb "$ppid") MB}"
    fi
    stop_vm
    if [ -n "$ppid" ]; then
        kill "$ppid" 2>/dev/null || true
        wait "$ppid" 2>/dev/null || true
    fi
}

if [ "$ONLY" = all ] || [ "$ONLY" = uplink ]; then
    UHOME=$WORK/up
    fresh_home "$UHOME"
    log "uplink: n2d create up --network user --publish $FWD_HOST:$FWD_GUEST (namespace with only loopback)"
    if n2d_in "$UHOME" create up --cold --network user --publish "$FWD_HOST:$FWD_GUEST" >"$RESULTS/uplink-create.log" 2>&1; then
        record loopback-only slirp 0 yes
        log "  slirp in a loopback-only namespace: works (the Docker API answered through its 127.0.0.1 forward)"
    else
        record loopback-only slirp 0 no
        tail -5 "$RESULTS/uplink-create.log" >&2
        log "  n2d create up FAILED in a loopback-only namespace"
        exit 1
    fi
    dk "$UHOME" up import "$WORK/nettput.tar" nettput:bench >/dev/null || { log "docker import into up failed"; exit 1; }
    cp "/proc/$(cat "$UHOME/machines/up/qemu.pid")/cmdline" "$WORK/up-argv"
    API_PORT=$(N2D_HOME=$UHOME "$N2D" env up | sed -n 's/^export DOCKER_HOST="tcp:\/\/127\.0\.0\.1:\([0-9]*\)"$/\1/p')
    [ -n "$API_PORT" ] || { log "cannot read the Docker API's port from n2d env up"; exit 1; }
    tr '\0' '\n' <"$WORK/up-argv" | grep -q "hostfwd=tcp:127.0.0.1:$FWD_HOST-$GUEST:$FWD_GUEST" \
        || { log "QEMU's command line lacks the forward of $FWD_HOST"; exit 1; }
    stop_vm
    PASST=(passt -f -q -4 -s "$PSOCK" -a "$GUEST" -n 24 -g "$GATEWAY" --dns-forward "$DNS"
        -t "127.0.0.1/$API_PORT:2376" -t "127.0.0.1/$FWD_HOST:$FWD_GUEST")

    # passt runs as nobody when started as root: it needs a directory of its own for its socket.
    mkdir -p "$PSOCK_DIR"
    chown 65534:65534 "$PSOCK_DIR"
    chmod 0700 "$PSOCK_DIR"
    chmod 0711 "$WORK"
    if out=$(in_ns timeout 5 "${PASST[@]}" 2>&1); then rc=0; else rc=$?; fi
    if [ "$rc" = 124 ]; then
        record loopback-only passt 0 yes
        log "  passt in a loopback-only namespace: works"
    else
        why=$(echo "$out" | grep -v -e 'to syslog' -e "Don't run as root" | tail -1)
        record loopback-only passt 0 "no: $why"
        log "  passt in a loopback-only namespace: refuses to start (exit $rc: $why)"
    fi
    # An interface for passt, with both ends in the namespace: nothing can leave it.
    in_ns ip link add unv0 type veth peer name unv1
    in_ns ip addr add 192.0.2.1/30 dev unv0
    in_ns ip addr add 192.0.2.2/30 dev unv1
    in_ns ip link set unv0 up
    in_ns ip link set unv1 up
    in_ns ip route add default via 192.0.2.2 dev unv0
    log "  added veth unv0/unv1 (192.0.2.1-2/30) inside the namespace, default route via 192.0.2.2"
    for i in $(seq 1 "$PAIRS"); do
        if [ $((i % 2)) = 1 ]; then order=(slirp passt); else order=(passt slirp); fi
        for v in "${order[@]}"; do
            uplink_run "$v" "$i" || { log "  uplink on $v FAILED"; record api "$v" "$i" FAIL; stop_vm; }
        done
    done
    n2d_in "$UHOME" rm -f up >>"$RESULTS/rm.log" 2>&1 || log "n2d rm -f up failed"
fi

# --- summary ------------------------------------------------------------------------------

vals() { awk -v k="$1" -v v="$2" '$1 == k && $2 == v && $4 != "FAIL" { print $4 }' "$RUNS"; }
# row LABEL KIND A B: A's median, B's (the baseline) median, median of the per-pair A/B ratios.
row() {
    local label=$1 kind=$2 a=$3 b=$4 ma mb ratios
    ma=$(vals "$kind" "$a" | median)
    mb=$(vals "$kind" "$b" | median)
    ratios=$(awk -v k="$kind" -v a="$a" -v b="$b" '$1 == k && $4 != "FAIL" { v[$3, $2] = $4; p[$3] = 1 }
        END { for (i in p) if ((i, a) in v && (i, b) in v && v[i, b] > 0) printf "%.2f\n", v[i, a] / v[i, b] }' "$RUNS")
    printf '| %-48s | %-7s %8s | %-7s %8s | %5s | %s |\n' "$label" "$a" "$(fmt 1 "$ma")" "$b" "$(fmt 1 "$mb")" \
        "$(fmt 2 "$(echo "$ratios" | median)")" "$(echo "$ratios" | sort -g | tr '\n' ' ')"
}
has() { grep -q "^$1 " "$RUNS"; }
# fmt DECIMALS VALUE: a fraction rounded, anything else (integers, "-") as it is.
fmt() { awk -v d="$1" -v v="$2" 'BEGIN { if (v ~ /^[0-9]+$/) printf "%s", v; else if (v ~ /^[0-9.]+$/) printf "%.*f", d, v; else printf "%s", v }'; }
{
    echo
    echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg); bench took $(($(date +%s) - START)) s"
    echo "medians over $PAIRS pair(s); throughput per run is the median of 3 transfers of $MIB MiB; MB = 10^6 bytes"
    printf '| %-48s | %-16s | %-16s | %5s | %s |\n' measurement "measured" "baseline" ratio "per-pair ratios"
    printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..50})" "$(printf -- '-%.0s' {1..18})" "$(printf -- '-%.0s' {1..18})" "-------" "---"
    has create && row "swarm create, 1 manager + 3 workers (s)" create user bridge
    has create-cpu && row "  CPU-s of its QEMUs (+ switch) to ready" create-cpu user bridge
    has vm2vm && row "VM-to-VM TCP, mngr-0 -> wrkr-0 (MB/s)" vm2vm user bridge
    has h2g && row "host -> guest TCP via 127.0.0.1 forward (MB/s)" h2g passt slirp
    has h2g-cpu && row "  CPU-s of QEMU (+ passt) for the 3 transfers" h2g-cpu passt slirp
    has api && row "hand-started VM to Docker API via fwd (s)" api passt slirp
    has api-guest && row "  same boot, guest clock: dockerd answers (s)" api-guest passt slirp
    has rss-total && row "RSS after transfers: QEMU (+ passt) (MB)" rss-total passt slirp
    has rss-qemu && row "RSS after transfers: QEMU alone (MB)" rss-qemu passt slirp
    has rss-passt && echo "passt's own RSS after transfers: $(vals rss-passt passt | median) MB"
    has loopback-only && awk '$1 == "loopback-only" { $1 = ""; $3 = ""; printf "works in a loopback-only namespace:%s\n", $0 }' "$RUNS" | tr -s ' '
} | tee -a "$RESULTS/summary.txt"
if grep -q ' FAIL$' "$RUNS"; then exit 1; fi
exit 0
