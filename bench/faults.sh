#!/usr/bin/env bash
# The truth report of issue 12 (run by hand, as root; CI runs the same tests
# without printing): the lab fault matrix against fenceline and against real
# fence_virtd in the same run (real corosync, a private libvirtd per node,
# real fence_xvm from a guest namespace, virsh on the owning node as the
# truth), then the deterministic simulator's sweeps with their schedule and
# step counts; the self-fencing and live-migration rows run in labs of their
# own. Knob: SCHEDULES (simulated schedules per sweep, default 10000).
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
echo "== the owner cut off with self-fencing (fence_xvm and fenceline fence), and live migration (real qemu)"
cargo test --quiet --all-features --test self_fence --test live_migration -- --test-threads=1 --nocapture 2>&1 | tee "$log" |
  grep -E 'left the majority|fence off vm3a|migration|status answers' || true
[ "$(grep -c 'test result: ok' "$log")" -eq 2 ] || { echo "self-fencing / migration FAILED (log: $log)"; trap - EXIT; exit 1; }
echo
echo "== deterministic simulation of the fence router"
cargo test --quiet --all-features --test simulation -- --test-threads=1 --nocapture 2>&1 |
  grep -E 'schedules in|refusal in|×|smallest' || true
