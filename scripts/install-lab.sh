#!/bin/bash
# The install lab: three Debian 12 "KVM hosts" with systemd as PID 1, for
# following the README's Install and "Set up a host" sections word for word
# with the real package, under a real systemd (the sandbox lab's nodes are
# network namespaces without one). By hand, as root; not in the test command
# (the first `up` debootstraps a root file system, about 2 minutes).
#
#   scripts/install-lab.sh up          # build and boot kvm1..3 and guest g1
#   scripts/install-lab.sh host N      # a root shell on kvmN (or: host N CMD...)
#   scripts/install-lab.sh guest CMD   # run CMD in the guest g1
#   scripts/install-lab.sh down        # power off, remove everything it made
#
# What each host has before the README's steps, as a real host would:
# - systemd-nspawn containers booted from one debootstrapped bookworm root
#   (corosync, libvirt-daemon-system, qemu-system-x86), each in a network
#   namespace of its own on one bridge (10.214.0.11..13, eth0);
# - a 3-node corosync cluster (knet, one authkey), started by systemd;
# - libvirtd (socket-activated) with one running VM each: vmN, a real qemu
#   TCG guest, 32 MiB, no disk. qemu.conf turns off what a container cannot
#   give qemu (cgroups, namespaces, security drivers); a real host needs none
#   of that.
# - this checkout's target/debian/ bound read-only at /root/target/debian, so
#   the README's `apt install ./target/debian/...` runs as written from /root.
# The guest g1 is a network namespace on the same bridge (10.214.0.101) with
# a private /etc (an overlay kept in $STATE/guest/etc), using this machine's
# fence_xvm.
#
# Everything gets the prefix in $STATE/prefix; `down` ends only the processes
# it started (by PID), deletes its namespaces and its host roots.
set -euo pipefail

STATE=${FENCELINE_INSTALL_LAB:-/var/tmp/fenceline-install-lab}
BASE=$STATE/base
NET=10.214.0
HERE=$(cd "$(dirname "$0")/.." && pwd)
MIRROR=${MIRROR:-http://deb.debian.org/debian}

die() { echo "install-lab: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"

prefix() { cat "$STATE/prefix" 2>/dev/null || die "no lab is up ($STATE/prefix missing)"; }

leader() { # PID 1 of host N's container
  local pid
  pid=$(cat "$STATE/h$1.pid" 2>/dev/null) || die "kvm$1 is not up"
  pgrep -P "$pid" | head -n1
}

in_host() { local n=$1; shift; nsenter -t "$(leader "$n")" -a "$@"; }

base_root() {
  command -v systemd-nspawn >/dev/null || apt-get install -y -q systemd-container
  [ -x "$BASE/usr/sbin/corosync" ] && return 0
  command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
  rm -rf "$BASE.tmp"
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,iproute2,procps,less \
    bookworm "$BASE.tmp" "$MIRROR"
  systemd-nspawn -q -D "$BASE.tmp" --keep-unit --register=no sh -c \
    'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
       --no-install-recommends corosync libvirt-daemon-system libvirt-clients \
       qemu-system-x86 man-db && apt-get clean && rm -rf /var/lib/apt/lists/*'
  mv "$BASE.tmp" "$BASE"
}

corosync_conf() {
  cat <<EOF
totem {
    version: 2
    cluster_name: $1
    transport: knet
    crypto_cipher: aes256
    crypto_hash: sha256
}
nodelist {
$(for i in 1 2 3; do printf '    node {\n        ring0_addr: %s.1%s\n        name: kvm%s\n        nodeid: %s\n    }\n' "$NET" "$i" "$i" "$i"; done)
}
quorum {
    provider: corosync_votequorum
}
logging {
    to_syslog: yes
}
EOF
}

vm_xml() {
  cat <<EOF
<domain type='qemu'>
  <name>vm$1</name>
  <uuid>5a1e0000-0000-4000-a000-00000000000$1</uuid>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>
EOF
}

up() {
  [ -e "$STATE/prefix" ] && die "a lab is up already (scripts/install-lab.sh down)"
  mkdir -p "$STATE"
  base_root
  local p="fli$(printf %04x $((RANDOM % 65536)))"
  echo "$p" >"$STATE/prefix"
  trap 'echo "install-lab: up failed; tearing down" >&2; down' ERR

  ip netns add "${p}br"
  ip -n "${p}br" link add br0 type bridge
  ip -n "${p}br" link set br0 type bridge mcast_snooping 0
  ip -n "${p}br" link set br0 up
  dd if=/dev/urandom of="$STATE/authkey" bs=256 count=1 status=none
  local n
  for n in 1 2 3 g; do
    local ns="${p}$n" ip=$NET.1$n
    [ "$n" = g ] && ip=$NET.101
    ip netns add "$ns"
    ip link add eth0 netns "$ns" type veth peer name "v$n" netns "${p}br"
    ip -n "${p}br" link set "v$n" master br0 up
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add 224.0.0.0/4 dev eth0
  done
  for n in 1 2 3; do
    local r="$STATE/h$n"
    cp -a --reflink=auto "$BASE" "$r"
    echo "kvm$n" >"$r/etc/hostname"
    printf '%s.1%s %s\n' "$NET" 1 kvm1 "$NET" 2 kvm2 "$NET" 3 kvm3 >>"$r/etc/hosts"
    corosync_conf "$p" >"$r/etc/corosync/corosync.conf"
    install -m 0400 "$STATE/authkey" "$r/etc/corosync/authkey"
    cat >>"$r/etc/libvirt/qemu.conf" <<'EOF'
# install lab: a container gives qemu no cgroups, namespaces or security driver
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
EOF
    vm_xml "$n" >"$r/root/vm$n.xml"
    mkdir -p "$r/root/target/debian"
    systemd-nspawn -q -D "$r" -b --machine="${p}h$n" --console=pipe --register=no \
      --keep-unit --network-namespace-path="/run/netns/${p}$n" \
      --bind-ro="$HERE/target/debian:/root/target/debian" \
      >"$STATE/h$n.log" 2>&1 </dev/null &
    echo $! >"$STATE/h$n.pid"
  done
  for n in 1 2 3; do
    local i
    for i in $(seq 100); do
      [ -n "$(leader "$n" 2>/dev/null)" ] &&
        in_host "$n" systemctl is-system-running --wait >/dev/null 2>&1 && break
      sleep 0.2
    done
    in_host "$n" systemctl is-system-running | grep -qx running ||
      { in_host "$n" systemctl --failed --no-pager || true
        in_host "$n" journalctl -b --no-pager -u corosync | tail -n 20 || true; false; }
    in_host "$n" virsh -q define "/root/vm$n.xml" >/dev/null
    in_host "$n" virsh -q start "vm$n" >/dev/null
  done
  for i in $(seq 100); do
    in_host 1 corosync-quorumtool -s 2>/dev/null | grep -q 'Quorate:.*Yes' && break
    sleep 0.3
  done
  in_host 1 corosync-quorumtool -s | grep -q 'Quorate:.*Yes'
  trap - ERR
  echo "install lab $p up: kvm1..3 ($NET.11-13, quorate, vm1..3 running), guest g1 ($NET.101)"
}

down() {
  local p n
  p=$(cat "$STATE/prefix" 2>/dev/null) || { echo "install-lab: nothing is up"; return 0; }
  for n in 1 2 3; do
    local pid
    pid=$(cat "$STATE/h$n.pid" 2>/dev/null) || continue
    if kill -0 "$pid" 2>/dev/null; then
      in_host "$n" systemctl poweroff 2>/dev/null || kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE/h$n.pid"
  done
  for n in 1 2 3 g br; do ip netns del "${p}$n" 2>/dev/null || true; done
  rm -rf "$STATE/h1" "$STATE/h2" "$STATE/h3" "$STATE/guest" "$STATE/authkey" "$STATE/prefix"
  echo "install lab $p down"
}

guest() {
  local p
  p=$(prefix)
  # The guest's own /etc: this machine's, with the guest's changes (such as
  # /etc/cluster/fence_xvm.key) in $STATE/guest/etc, in a private mount ns.
  mkdir -p "$STATE/guest/etc" "$STATE/guest/work"
  ip netns exec "${p}g" unshare -m --propagation private sh -c \
    'mount -t overlay overlay -o "lowerdir=/etc,upperdir=$0/guest/etc,workdir=$0/guest/work" /etc &&
     exec "$@"' "$STATE" "$@"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  host) shift; n=${1:?host N}; shift
        if [ $# -eq 0 ]; then in_host "$n" bash -l; else in_host "$n" "$@"; fi ;;
  guest) shift; [ $# -gt 0 ] || set -- bash; guest "$@" ;;
  *) sed -n '2,30p' "$0"; exit 2 ;;
esac
