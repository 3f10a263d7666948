#!/usr/bin/env bash
# Installs what is missing, then runs every check: rustfmt, clippy, the
# architecture test (tests/architecture.rs: layers, 800-line rooms, dependency
# trees, toolchain floor), unit tests, the deterministic simulation of the
# fence router (tests/simulation), the Debian package (scripts/check-package.sh),
# the real-cluster integration tests (as
# root: network namespaces, corosync, private libvirtds, fence_virtd) and the
# fuzz targets' smoke runs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
fenceline_install_deps

export CARGO_TERM_COLOR=never
echo "== cargo fmt --all --check"
cargo fmt --all --check
echo "== cargo clippy --workspace --all-targets --all-features -- -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings
# The product without the lab (a distribution build) builds on its own.
echo "== cargo check -p fenceline --no-default-features"
cargo check -p fenceline --no-default-features --all-targets
echo "== cargo build"
cargo build --workspace --all-targets --all-features
# Leftovers of an earlier run that was killed (only fenceline-lab prefixed
# namespaces and PIDs recorded by that lab are touched).
./target/debug/fenceline lab cleanup || true
# The Debian package from the debug binaries just built: lintian, files,
# modes, conffiles, man pages, completions, systemd-analyze verify, postinst.
echo "== package"
./scripts/check-package.sh
echo "== cargo test"
# Two test threads: each cluster test runs three corosyncs, three libvirtds
# and three daemons on a 2-core machine.
test_log=$(mktemp)
trap 'rm -f "$test_log"' EXIT
cargo test --workspace --all-targets --all-features -- --test-threads=2 2>&1 | tee "$test_log"
test "${PIPESTATUS[0]}" -eq 0
passed=$(awk '/^test result:/ {s += $4} END {print s + 0}' "$test_log")
failed=$(awk '/^test result:/ {s += $6} END {print s + 0}' "$test_log")

# Fuzz smoke: every parser of outside input runs under libFuzzer for a short
# while (cargo-fuzz on the stable toolchain via RUSTC_BOOTSTRAP). Longer runs:
#   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target>
echo "== fuzz smoke (${FUZZ_SECS:=15} s per target)"
if ! command -v cargo-fuzz >/dev/null; then
  cargo install --locked --quiet cargo-fuzz
fi
(
  cd fuzz
  export RUSTC_BOOTSTRAP=1
  for t in $(cargo fuzz list); do
    log=$(mktemp)
    if ! cargo fuzz run "$t" -- -max_total_time="$FUZZ_SECS" -rss_limit_mb=2048 >"$log" 2>&1; then
      tail -n 40 "$log" >&2
      echo "fuzz target $t failed (crash input kept under fuzz/artifacts/$t)" >&2
      rm -f "$log"
      exit 1
    fi
    echo "fuzz $t: $(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1)"
    rm -f "$log"
  done
)
echo "fuzz: all targets ran clean"
echo "tests: ${passed} passed, ${failed} failed"
