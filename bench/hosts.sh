#!/usr/bin/env bash
# Time to a ready swarm across three hosts (on a LAN bridge, and over WireGuard links between
# the hosts' own bridges) against the same swarm on one host (issue 22).
#
#   sudo bench/hosts.sh [--rounds R]     # default: 2 rounds (after one uncounted warm-up)
#
# The three "hosts" are network namespaces of this machine, each with its own sshd and
# N2D_HOME, on one veth LAN (crates/n2d/tests/common/lab.rs): they share its CPUs, so the
# ratio is what SSH, the remote creates and the relayed certificates cost, not a speed-up.
# Prints each round's two times and their ratio; cleans up what it made.
set -euo pipefail
ROUNDS=2
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "hosts: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "hosts: run as root (network namespaces, sshd)" >&2; exit 2; }
cd "$(dirname "$0")/.."
N2D_BENCH_ROUNDS=$ROUNDS cargo test --release -q -p n2d --test bench_hosts -- --ignored --nocapture 2>&1 |
    grep -E '^(time to a ready swarm|  round )'
