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
  # the guest Pacemaker clusters of the lab (pacemakerd, cibadmin, crm_mon,
  # stonith_admin; ocf:pacemaker:Dummy comes with pacemaker-resource-agents)
  pacemaker pacemaker-cli-utils pacemaker-resource-agents
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
  # The lab runs its own private daemons in namespaces; installing must not
  # start the host's corosync, pacemaker or libvirtd. Unless the host has a
  # policy-rc.d already, a temporary one denies every service start (also
  # honoured by deb-systemd-invoke under systemd) for the install only.
  local policy=/usr/sbin/policy-rc.d own_policy=0 rc=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# fenceline scripts/deps.sh: no service starts while installing\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    own_policy=1
  fi
  # --no-install-recommends keeps the system libvirtd/corosync services out.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  if [ "$own_policy" -eq 1 ]; then
    rm -f "$policy"
  fi
  # A freshly installed pacemaker is enabled for the next boot; the host has
  # no cluster of its own, so it stays off (an admin's pacemaker is kept).
  if [ "$rc" -eq 0 ] && [[ " ${missing[*]} " == *" pacemaker "* ]] &&
    command -v systemctl >/dev/null; then
    # Works offline too (no running systemd: it only removes the symlink).
    systemctl disable --quiet pacemaker.service >/dev/null 2>&1 || true
  fi
  return "$rc"
}
