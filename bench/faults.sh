#!/usr/bin/env bash
# The truth report of issue 12 (run by hand, as root; CI runs the same tests
# without printing): the lab fault matrix against fenceline and against real
# fence_virtd in the same run (real corosync, a private libvirtd per node,
# real fence_xvm from a guest namespace, virsh on the owning node as the
# truth), then the deterministic simulator's sweeps with their schedule and
# step counts. Knob: SCHEDULES (simulated schedules per sweep, default 10000).
set -euo pipefail
cd "$(dirname "$0")/.."
export FENCELINE_SIM_SCHEDULES=${SCHEDULES:-10000}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "== lab fault matrix (fenceline, then fence_virtd 4.12 in a second lab)"
cargo test --quiet --all-features --test fault_matrix -- --test-threads=1 --nocapture 2>&1 | tee "$log" |
  grep -E '^(== fault|fault  |[a-z].* ms$|fenceline:|fence_virtd:)' || true
grep -q 'test result: ok' "$log" || { echo "fault matrix FAILED (log: $log)"; trap - EXIT; exit 1; }
echo
echo "== deterministic simulation of the fence router"
cargo test --quiet --all-features --test simulation -- --include-ignored --test-threads=1 --nocapture 2>&1 |
  grep -E 'schedules in|refusal in|×|smallest' || true
