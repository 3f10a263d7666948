#!/usr/bin/env bash
# Installs what is missing, then runs every check: rustfmt, clippy, unit tests,
# the real-cluster integration tests (as root: network namespaces, corosync,
# private libvirtds, fence_virtd) and the fuzz targets' smoke runs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
fenceline_install_deps

export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo build"
cargo build --all-targets
# Leftovers of an earlier run that was killed (only fenceline-lab prefixed
# namespaces and PIDs recorded by that lab are touched).
./target/debug/fenceline lab cleanup || true
echo "== cargo test"
# Two test threads: each cluster test runs three corosyncs, three libvirtds
# and three daemons on a 2-core machine.
cargo test -- --test-threads=2
