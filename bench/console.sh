#!/usr/bin/env bash
# Console benchmark (run by hand; not in CI). Prints the frame render time at
# 100, 1,000 and 10,000 domains; as root also the time from a domain change on
# a peer node to the change on the screen of a console on node 1 (a 3-node lab
# and a private tmux server). Knobs: FRAMES, ROUNDS; NO_LAB=1 skips the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --features fixtures --bin fenceline --example bench_console
latency=--latency
if [ "${NO_LAB:-0}" = 1 ] || [ "$(id -u)" -ne 0 ]; then
  latency=
fi
FENCELINE_BIN="$PWD/target/release/fenceline" exec target/release/examples/bench_console $latency
