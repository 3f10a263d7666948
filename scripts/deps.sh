#!/usr/bin/env bash
# Installs the Debian 12 packages fenceline needs to build, test and run the
# sandbox lab. Only missing packages are installed; apt-get update runs only
# when something is missing. Sourced by test.sh and demo.sh.
set -euo pipefail

FENCELINE_PACKAGES=(
  # build: -sys crates link these
  pkg-config binutils libvirt-dev
  libcorosync-common-dev libcpg-dev libcfg-dev libcmap-dev libquorum-dev libvotequorum-dev
  # the sandbox lab: real corosync, libvirtd, qemu, fence_virtd, tmux
  corosync libvirt-daemon libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
  qemu-system-x86 fence-virt fence-virtd iproute2 util-linux procps tmux
  # the package and its checks (scripts/package.sh, scripts/check-package.sh)
  dpkg-dev lintian man-db logrotate systemd
)

fenceline_install_deps() {
  local missing=()
  for p in "${FENCELINE_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "fenceline: missing packages: ${missing[*]}" >&2
    echo "fenceline: run as root, or: sudo apt-get install ${missing[*]}" >&2
    return 1
  fi
  echo "fenceline: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps the system libvirtd/corosync services out;
  # the lab runs its own private daemons in namespaces.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
