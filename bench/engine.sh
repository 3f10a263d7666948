#!/usr/bin/env bash
# Engine benchmark (run by hand, as root; not in CI). Prints a table with
# fence_virtd measured in the same run. Knobs: ROUNDS, DOMAINS, IDLE_SECS.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin fenceline --example bench_engine
FENCELINE_BIN="$PWD/target/release/fenceline" exec target/release/examples/bench_engine
