#!/usr/bin/env bash
# The package checks of the test command (run by test.sh as root, after the
# workspace build): packages the debug binaries (scripts/package.sh --debug
# --no-build), runs lintian, unpacks the .deb into a throwaway root and
# checks files, owners, modes, the conffiles, the shipped config, the man
# pages (man -l) and completions, runs systemd-analyze verify on the unit,
# and runs the postinst against stubbed systemd helpers in a private mount
# namespace (its own /etc and /run): it enables and starts fenceline only
# with a key and without fence_virtd, and never writes /etc/fence_virt.conf.
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
stubs=$work/stubs
mkdir -p "$stubs"
cat >"$stubs/deb-systemd-helper" <<'STUB'
#!/bin/sh
echo "helper $*" >>"$STUB_LOG"
case "$*" in
  "--quiet was-enabled fenceline.service") [ -n "${WAS_ENABLED:-}" ] ;;
  "--quiet is-enabled fence_virtd.service") [ -n "${FVD_ENABLED:-}" ] ;;
  *) exit 0 ;;
esac
STUB
printf '#!/bin/sh\necho "invoke $*" >>"$STUB_LOG"\n' >"$stubs/deb-systemd-invoke"
printf '#!/bin/sh\necho "systemctl $*" >>"$STUB_LOG"\n' >"$stubs/systemctl"
printf '#!/bin/sh\n[ "$1" = fence_virtd ] && [ -n "${FVD_RUNNING:-}" ]\n' >"$stubs/pidof"
chmod 755 "$stubs"/*

# One postinst run in a private mount namespace with its own /etc and /run.
# Args: key (none|default|config), then env settings, then postinst args.
postinst() {
  local key=$1
  shift
  local etc=$work/etc run=$work/run
  rm -rf "$etc" "$run" "$work/log"
  mkdir -p "$etc/fenceline" "$etc/cluster" "$run/systemd/system"
  cp "$root/etc/fenceline/fenceline.toml" "$etc/fenceline/"
  printf 'fence_virtd {\n  listener = "multicast";\n}\n' >"$etc/fence_virt.conf"
  case "$key" in
    default) head -c 4096 /dev/urandom >"$etc/cluster/fence_xvm.key" ;;
    config)
      head -c 4096 /dev/urandom >"$etc/cluster/other.key"
      printf '\n[listeners.tcp]\nkey_file = "/etc/cluster/other.key"\n' >>"$etc/fenceline/fenceline.toml"
      ;;
  esac
  local before
  before=$(md5sum <"$etc/fence_virt.conf")
  env STUB_LOG="$work/log" PATH="$stubs:$PATH" "$@" \
    unshare --mount sh -c 'mount --bind "$1" /etc && mount --bind "$2" /run && shift 2 && exec "$@"' \
    sh "$etc" "$run" "$work/postinst" configure "${POSTINST_OLD:-}" 2>/dev/null ||
    fail "postinst exited non-zero"
  [ "$(md5sum <"$etc/fence_virt.conf")" = "$before" ] || fail "postinst changed /etc/fence_virt.conf"
  [ "$(ls "$etc")" = "$(printf '%s\n' cluster fence_virt.conf fenceline)" ] || fail "postinst wrote into /etc"
  touch "$work/log"
}
started() { grep -q '^helper enable fenceline.service$' "$work/log" && grep -q '^invoke start fenceline.service$' "$work/log"; }
left_alone() { ! grep -Eq '^helper enable|^invoke' "$work/log" && grep -q '^helper update-state fenceline.service$' "$work/log"; }

postinst none
left_alone || fail "postinst without a key: $(cat "$work/log")"
postinst default
started || fail "postinst with the default key did not enable and start: $(cat "$work/log")"
postinst config
started || fail "postinst with the config's key_file did not enable and start: $(cat "$work/log")"
postinst default FVD_ENABLED=1
left_alone || fail "postinst with fence_virtd enabled: $(cat "$work/log")"
postinst default FVD_RUNNING=1
left_alone || fail "postinst with fence_virtd running: $(cat "$work/log")"
POSTINST_OLD=0.0.9 postinst none WAS_ENABLED=1
grep -q '^invoke try-restart fenceline.service$' "$work/log" || fail "upgrade of an enabled unit: $(cat "$work/log")"
POSTINST_OLD=0.0.9 postinst default
left_alone || fail "upgrade of a disabled unit enabled it: $(cat "$work/log")"
ok "postinst: starts only with a key and without fence_virtd; /etc/fence_virt.conf untouched"
echo "package: all checks passed"
