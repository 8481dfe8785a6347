#!/usr/bin/env bash
# n2d's benchmark (bench/run.sh): n2d side by side with a stock Debian VM, the swarm, the
# footprint, the image and the CLI; prints the tables and rewrites BENCHMARKS.md's generated
# ones. `scripts/bench.sh --help` for the options. As root, from anywhere.
exec "$(dirname "$0")/../bench/run.sh" "$@"
