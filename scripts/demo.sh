#!/usr/bin/env bash
# Sets everything up and runs the demo: a local 3-node sandbox cluster
# (network namespaces, real corosync, a private libvirtd with VMs per node,
# fenceline daemons). Ctrl-C tears it all down.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
if ! command -v cargo >/dev/null; then
  echo "fenceline: cargo not found; install a Rust toolchain (Rust 1.88 or newer), e.g. with rustup" >&2
  exit 1
fi
fenceline_install_deps
cargo build --release --quiet
exec ./target/release/fenceline demo "$@"
