#!/usr/bin/env bash
# Fencing benchmark (run by hand, as root; not in CI): real fence_xvm against
# real fence_virtd and against fenceline in the same lab. Knob: ROUNDS.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin fenceline --example bench_fence
FENCELINE_BIN="$PWD/target/release/fenceline" exec target/release/examples/bench_fence
