#!/usr/bin/env bash
# Guest failover benchmark (run by hand, as root; not in CI): a 3-guest
# Pacemaker cluster loses a guest ROUNDS times (default 10), with fenceline
# and then with fence_virtd on the hosts, in one run. Debug build: the
# daemons' share is milliseconds of a multi-second failover.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --all-features --bin fenceline --example bench_guests
dir="${CARGO_TARGET_DIR:-target}"
FENCELINE_BIN="$(realpath "$dir")/debug/fenceline" exec "$dir/debug/examples/bench_guests"
