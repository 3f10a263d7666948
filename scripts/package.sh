#!/usr/bin/env bash
# Builds the Debian package: target/debian/fenceline_<version>_<arch>.deb
# (under $CARGO_TARGET_DIR if set). Plain dpkg-deb, no cargo plugin:
#   ./scripts/package.sh                   release build without the lab (a distribution build)
#   ./scripts/package.sh --debug --no-build   package the binaries already in target/debug
#                                          (the test command's quick package; they carry the lab)
# Contents: /usr/sbin/fenceline and fenceline-hook, the systemd unit, the
# commented config as a conffile, man pages and bash/zsh/fish completions
# generated from the CLI (`fenceline generate`), logrotate for the file log,
# maintainer scripts from contrib/debian. See README.md, "Install".
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=1
for a in "$@"; do
  case "$a" in
    --debug) profile=debug ;;
    --no-build) build=0 ;;
    *) echo "usage: $0 [--debug] [--no-build]" >&2; exit 2 ;;
  esac
done

target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
if [ "$build" = 1 ]; then
  flags=(--locked --no-default-features -p fenceline -p fenceline-hook --bins)
  [ "$profile" = release ] && flags+=(--release)
  cargo build "${flags[@]}"
fi
bin=$target/$profile
for b in fenceline fenceline-hook; do
  [ -x "$bin/$b" ] || { echo "package: $bin/$b missing (build it, or drop --no-build)" >&2; exit 1; }
done

name=fenceline
upstream=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
version="$upstream-1"
arch=$(dpkg --print-architecture)
out=$target/debian
root=$out/root
rm -rf "$root"
mkdir -p "$out"
install -d -m 0755 "$root/DEBIAN" "$root/usr/sbin" "$root/lib/systemd/system" \
  "$root/etc/fenceline" "$root/etc/logrotate.d" "$root/usr/share/man/man8" \
  "$root/usr/share/doc/$name" "$root/usr/share/bash-completion/completions" \
  "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d"

# Binaries, stripped (the release profile keeps line tables for backtraces).
for b in fenceline fenceline-hook; do
  install -m 0755 "$bin/$b" "$root/usr/sbin/$b"
  strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/sbin/$b"
done
install -m 0644 contrib/fenceline.service "$root/lib/systemd/system/fenceline.service"
install -m 0644 contrib/fenceline.toml "$root/etc/fenceline/fenceline.toml"
install -m 0644 contrib/debian/logrotate "$root/etc/logrotate.d/fenceline"

# Man pages and completions from the CLI itself.
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
"$bin/fenceline" generate man "$gen/man"
"$bin/fenceline" generate completions "$gen/completions"
for m in "$gen"/man/*.8; do
  gzip -9n -c "$m" >"$root/usr/share/man/man8/$(basename "$m").gz"
done
install -m 0644 "$gen/completions/fenceline.bash" "$root/usr/share/bash-completion/completions/fenceline"
install -m 0644 "$gen/completions/_fenceline" "$root/usr/share/zsh/vendor-completions/_fenceline"
install -m 0644 "$gen/completions/fenceline.fish" "$root/usr/share/fish/vendor_completions.d/fenceline.fish"

install -m 0644 contrib/debian/copyright "$root/usr/share/doc/$name/copyright"
gzip -9n -c contrib/debian/changelog >"$root/usr/share/doc/$name/changelog.Debian.gz"
gzip -9n -c README.md >"$root/usr/share/doc/$name/README.md.gz"
for s in postinst prerm postrm; do
  install -m 0755 "contrib/debian/$s" "$root/DEBIAN/$s"
done
printf '%s\n' /etc/fenceline/fenceline.toml /etc/logrotate.d/fenceline >"$root/DEBIAN/conffiles"
chmod 0644 "$root/DEBIAN/conffiles"

# Shared-library dependencies (libvirt, corosync, libc), as dpkg-shlibdeps
# finds them; it wants a debian/control beside it.
shl=$gen/shlibs
mkdir -p "$shl/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$name" "$name" >"$shl/debian/control"
shlibs=$(cd "$shl" && dpkg-shlibdeps -O "-e$(realpath "$root/usr/sbin/fenceline")" \
  "-e$(realpath "$root/usr/sbin/fenceline-hook")" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "package: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

(cd "$root" && find usr lib -type f -print0 | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"
installed=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Maintainer: fenceline maintainers <fenceline@example.org>
Installed-Size: $installed
Depends: $shlibs, init-system-helpers (>= 1.54~)
Recommends: corosync, libvirt-daemon-system, logrotate
Suggests: fence-virt
Section: admin
Priority: optional
Description: fencing daemon and cluster console for KVM hosts in a corosync cluster
 fenceline answers fence_xvm and fence_virt requests from guests (multicast,
 TCP and vsock listeners, fence_virtd's wire protocol and keys) and routes
 them through the corosync cluster to the host that runs the VM, which
 destroys, starts or reports it through libvirtd.
 .
 It also ships a live terminal console of the cluster's nodes and VMs,
 one-shot status, events and fence commands, and a libvirt network hook.
 The service is not enabled on install unless a fence key exists and
 fence_virtd is not in use.
CONTROL

deb=$out/${name}_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
