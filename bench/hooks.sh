#!/usr/bin/env bash
# Network hook benchmark (run by hand, as root; not in CI): hook process wall
# time and hook → peer event latency on a 2-node lab. Knob: ROUNDS.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p fenceline -p fenceline-hook --bin fenceline --bin fenceline-hook --example bench_hooks
FENCELINE_BIN="$PWD/target/release/fenceline" exec target/release/examples/bench_hooks
