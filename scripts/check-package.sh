#!/usr/bin/env bash
# The package checks of the test command (run by test.sh as root, after the
# workspace build): packages the debug binaries (scripts/package.sh --debug
# --no-build), runs lintian, unpacks the .deb into a throwaway root and
# checks files, owners, modes, the conffiles, the shipped config, the man
# pages (man -l) and completions, runs systemd-analyze verify on the unit,
# and runs the postinst with the real deb-systemd-helper in a private mount
# namespace (its own /etc, /run and /var/lib/systemd): it enables and starts
# fenceline only with a key and without fence_virtd, and never writes
# /etc/fence_virt.conf.
# Any failed check exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "package check FAILED: $*" >&2; exit 1; }
ok() { echo "package: $*"; }

deb=$(./scripts/package.sh --debug --no-build)
[ -f "$deb" ] || fail "no .deb from package.sh"
ok "built $deb"

# lintian: no errors; the one warning is explained in README.md (Install).
if ! out=$(lintian --fail-on error,warning --suppress-tags initial-upload-closes-no-bugs "$deb" 2>&1); then
  echo "$out" >&2
  fail "lintian reports errors or unexplained warnings"
fi
ok "lintian clean"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
dpkg-deb -x "$deb" "$root"

# Files and modes (and root ownership, from the archive listing).
expect() { # mode path
  [ -f "$root/$2" ] || fail "missing /$2"
  local m
  m=$(stat -c %a "$root/$2")
  [ "$m" = "$1" ] || fail "/$2 has mode $m, want $1"
}
expect 755 usr/sbin/fenceline
expect 755 usr/sbin/fenceline-hook
expect 644 lib/systemd/system/fenceline.service
expect 644 etc/fenceline/fenceline.toml
expect 644 etc/logrotate.d/fenceline
expect 644 usr/share/bash-completion/completions/fenceline
expect 644 usr/share/zsh/vendor-completions/_fenceline
expect 644 usr/share/fish/vendor_completions.d/fenceline.fish
expect 644 usr/share/doc/fenceline/copyright
expect 644 usr/share/doc/fenceline/changelog.Debian.gz
for m in fenceline fenceline-daemon fenceline-status fenceline-events fenceline-fence \
  fenceline-console fenceline-monitor fenceline-config fenceline-check fenceline-install-hook fenceline-hook; do
  expect 644 "usr/share/man/man8/$m.8.gz"
done
if dpkg-deb -c "$deb" | awk '{print $2}' | grep -v '^root/root$' | grep -q .; then
  fail "files not owned by root/root: $(dpkg-deb -c "$deb" | grep -v ' root/root ')"
fi
ok "files, modes and owners"

# Conffiles: exactly the config and the logrotate file.
conffiles=$(dpkg-deb -I "$deb" conffiles)
[ "$conffiles" = "$(printf '%s\n' /etc/fenceline/fenceline.toml /etc/logrotate.d/fenceline)" ] ||
  fail "conffiles: $conffiles"
cmp -s contrib/fenceline.toml "$root/etc/fenceline/fenceline.toml" || fail "packaged config differs from contrib/"
# The shipped config loads, and enables no listener (no fencing without a key).
"$root/usr/sbin/fenceline" --config "$root/etc/fenceline/fenceline.toml" console --print-keys >/dev/null ||
  fail "the packaged config does not load"
if grep -Eq '^[[:space:]]*\[listeners' "$root/etc/fenceline/fenceline.toml"; then
  fail "the packaged config enables a listener"
fi
ok "conffiles and config"

# Binaries run.
"$root/usr/sbin/fenceline" --version | grep -q '^fenceline ' || fail "fenceline --version"
"$root/usr/sbin/fenceline-hook" >/dev/null 2>&1 || fail "fenceline-hook without arguments must exit 0"

# Every man page renders without a groff warning.
for m in "$root"/usr/share/man/man8/*.8.gz; do
  out=$(MANWIDTH=80 man --warnings -l "$m" 2>&1 >/dev/null) || fail "man -l $(basename "$m")"
  [ -z "$out" ] || fail "man -l $(basename "$m"): $out"
  MANWIDTH=80 man -l "$m" 2>/dev/null | grep -q '^NAME' || fail "man -l $(basename "$m"): no NAME section"
done
ok "man pages render ($(ls "$root"/usr/share/man/man8 | wc -l))"

# Completions: bash loads and registers; zsh and fish files name the command.
bash -c ". '$root/usr/share/bash-completion/completions/fenceline' && complete -p fenceline" >/dev/null ||
  fail "bash completion does not register"
grep -q '^#compdef fenceline' "$root/usr/share/zsh/vendor-completions/_fenceline" || fail "zsh completion"
grep -q 'complete -c fenceline' "$root/usr/share/fish/vendor_completions.d/fenceline.fish" || fail "fish completion"
logrotate --debug "$root/etc/logrotate.d/fenceline" >/dev/null 2>&1 || fail "logrotate rejects its file"
ok "completions and logrotate"

# The unit, with ExecStart pointing at the unpacked binary and the package's
# man pages for Documentation=.
mkdir -p "$work/unit"
sed "s|/usr/sbin/fenceline|$root/usr/sbin/fenceline|" "$root/lib/systemd/system/fenceline.service" \
  >"$work/unit/fenceline.service"
# verify exits 0 on unknown keys and unparsable values: any output fails.
out=$(MANPATH=$root/usr/share/man systemd-analyze verify "$work/unit/fenceline.service" 2>&1) ||
  fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify: $out"
ok "systemd-analyze verify; $(systemd-analyze security --offline=true "$work/unit/fenceline.service" 2>/dev/null | tail -n 1)"

# Maintainer scripts: syntax, then the postinst's decisions.
for s in postinst prerm postrm; do
  dpkg-deb --ctrl-tarfile "$deb" | tar -xO "./$s" >"$work/$s"
  sh -n "$work/$s" || fail "$s: syntax"
  chmod 755 "$work/$s"
done
if [ "$(id -u)" -ne 0 ]; then
  echo "package: postinst checks SKIPPED: they need root (a private mount namespace over /etc and /run)"
  echo "package: all other checks passed"
  exit 0
fi
# The postinst runs with Debian's real deb-systemd-helper (its state and the
# unit links are what decide enable/upgrade); only what would reach a running
# systemd is stubbed: deb-systemd-invoke, systemctl (but for its offline
# --root= operations), and pidof (fence_virtd "running"). Each run has its
# own /etc, /run, /var/lib/systemd and unit directory in a private mount
# namespace.
command -v deb-systemd-helper >/dev/null || fail "deb-systemd-helper (init-system-helpers) is missing"
stubs=$work/stubs
mkdir -p "$stubs"
printf '#!/bin/sh\necho "invoke $*" >>"$STUB_LOG"\n' >"$stubs/deb-systemd-invoke"
# systemctl: what needs a running systemd is logged only; --root= calls
# (deb-systemd-helper's enable runs `systemctl --root=/ preset`) are offline
# file operations, done for real on the private /etc.
cat >"$stubs/systemctl" <<'STUB'
#!/bin/sh
echo "systemctl $*" >>"$STUB_LOG"
case "$1" in --root=*) exec /usr/bin/systemctl "$@" ;; esac
STUB
printf '#!/bin/sh\n[ "$1" = fence_virtd ] && [ -n "${FVD_RUNNING:-}" ]\n' >"$stubs/pidof"
chmod 755 "$stubs"/*
etc=$work/etc run=$work/run var=$work/varlib units=$work/units
link=$etc/systemd/system/multi-user.target.wants/fenceline.service

# Runs "$@" in the private namespace, with the stubs first on PATH, as dpkg
# runs a maintainer script (deb-systemd-helper refuses to run otherwise).
in_ns() {
  env STUB_LOG="$work/log" PATH="$stubs:$PATH" \
    DPKG_MAINTSCRIPT_PACKAGE=fenceline DPKG_MAINTSCRIPT_NAME=postinst \
    unshare --mount sh -c 'mount --bind "$1" /etc && mount --bind "$2" /run &&
      mount --bind "$3" /var/lib/systemd && mount --bind "$4" /usr/lib/systemd/system &&
      shift 4 && exec "$@"' sh "$etc" "$run" "$var" "$units" "$@"
}

# A fresh host: key none|default|config; fence_virtd installed (not enabled).
fresh() {
  rm -rf "$etc" "$run" "$var" "$units" "$work/log"
  mkdir -p "$etc/fenceline" "$etc/cluster" "$run/systemd/system" "$var" "$units"
  cp "$root/etc/fenceline/fenceline.toml" "$etc/fenceline/"
  cp "$root/lib/systemd/system/fenceline.service" "$units/"
  printf '[Unit]\nDescription=fence_virtd\n[Service]\nExecStart=/usr/sbin/fence_virtd -F\n[Install]\nWantedBy=multi-user.target\n' \
    >"$units/fence_virtd.service"
  printf 'fence_virtd {\n  listener = "multicast";\n}\n' >"$etc/fence_virt.conf"
  case "$1" in
    default) head -c 4096 /dev/urandom >"$etc/cluster/fence_xvm.key" ;;
    config)
      head -c 4096 /dev/urandom >"$etc/cluster/other.key"
      printf '\n[listeners.tcp]\nkey_file = "/etc/cluster/other.key"\n' >>"$etc/fenceline/fenceline.toml"
      ;;
  esac
}

# configure [OLD_VERSION], as dpkg runs it; env settings first.
postinst() {
  local before
  before=$(md5sum <"$etc/fence_virt.conf")
  : >"$work/log"
  in_ns env "$@" "$work/postinst" configure "${OLD:-}" 2>"$work/err" || fail "postinst exited non-zero: $(cat "$work/err")"
  [ "$(md5sum <"$etc/fence_virt.conf")" = "$before" ] || fail "postinst changed /etc/fence_virt.conf"
  [ -z "$(ls "$etc" | grep -vxE 'cluster|fence_virt.conf|fenceline|systemd')" ] || fail "postinst wrote into /etc: $(ls "$etc")"
}
invoked() { grep -q "^invoke $1 fenceline.service\$" "$work/log"; }
started() { [ -L "$link" ] && invoked start; }
left_alone() {
  [ ! -L "$link" ] && ! grep -q '^invoke' "$work/log" &&
    [ -e "$var/deb-systemd-helper-enabled/fenceline.service.dsh-also" ]
}
state() { echo "link: $(ls -l "$link" 2>&1); log: $(tr '\n' ';' <"$work/log")"; }

fresh none; OLD= postinst
left_alone || fail "first install without a key: $(state)"
grep -q "not enabled: no fence key yet" "$work/err" || fail "first install without a key: says $(cat "$work/err")"
fresh default; OLD= postinst
started || fail "first install with the default key did not enable and start: $(state)"
fresh config; OLD= postinst
started || fail "first install with the config's key_file did not enable and start: $(state)"
fresh default; in_ns deb-systemd-helper enable fence_virtd.service >/dev/null 2>&1; OLD= postinst
left_alone || fail "first install with fence_virtd enabled: $(state)"
[ -L "$etc/systemd/system/multi-user.target.wants/fence_virtd.service" ] || fail "fence_virtd was disabled"
fresh default; OLD= postinst FVD_RUNNING=1
left_alone || fail "first install with fence_virtd running: $(state)"
grep -q "not enabled: fence_virtd is enabled or running" "$work/err" || fail "with fence_virtd: says $(cat "$work/err")"
# Upgrades: the earlier postinst enabled the unit (it had a key) ...
fresh none; in_ns deb-systemd-helper enable fenceline.service >/dev/null 2>&1; OLD=0.0.9 postinst
{ [ -L "$link" ] && invoked try-restart; } || fail "upgrade of an enabled unit: $(state)"
# ... or left it alone (no key), and the admin enabled it with systemctl ...
fresh default; in_ns deb-systemd-helper update-state fenceline.service >/dev/null 2>&1
mkdir -p "$(dirname "$link")"; ln -s /lib/systemd/system/fenceline.service "$link"
OLD=0.0.9 postinst
{ [ -L "$link" ] && invoked try-restart; } || fail "upgrade of a unit enabled by systemctl: $(state)"
# ... or never did: an upgrade does not enable it, key or not.
fresh default; in_ns deb-systemd-helper update-state fenceline.service >/dev/null 2>&1; OLD=0.0.9 postinst
left_alone || fail "upgrade of a disabled unit enabled it: $(state)"
ok "postinst: starts only with a key and without fence_virtd; /etc/fence_virt.conf untouched"
echo "package: all checks passed"
