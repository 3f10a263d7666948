//! `fenceline install-hook`: puts the network hook wrapper into libvirt's
//! hooks directory. The hook itself is the `fenceline-hook` crate.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The file name inside `network.d/` (libvirt ≥ 6.5).
pub const HOOK_FILE: &str = "50-fenceline";
/// Marks a script as ours (so a re-install may replace it).
const MARKER: &str = "# fenceline-hook-wrapper";

/// Options of `fenceline install-hook`.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// libvirt's hooks directory.
    pub hooks_dir: PathBuf,
    /// Socket the wrapper passes to `fenceline hook --socket`.
    pub socket: PathBuf,
    /// The fenceline binary the wrapper runs (absolute).
    pub binary: PathBuf,
    /// libvirt version, e.g. "9.0.0"; detected when `None`.
    pub libvirt_version: Option<String>,
}

/// What `install-hook` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub path: PathBuf,
    pub version: (u32, u32, u32),
    /// True when the same wrapper was already there.
    pub unchanged: bool,
    /// libvirtd ran no network hook before (it must be reloaded to run ours).
    pub needs_reload: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Refused(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot tell the libvirt version ({0}); pass --libvirt-version X.Y.Z")]
    Version(String),
}

/// "libvirtd (libvirt) 9.0.0", "9.0.0" → (9, 0, 0).
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    text.split_whitespace().rev().find_map(|w| {
        let mut it = w.trim().split('.');
        let a = it.next()?.parse().ok()?;
        let b = it.next()?.parse().ok()?;
        let c = it.next().map(|c| c.parse().ok()).unwrap_or(Some(0))?;
        Some((a, b, c))
    })
}

/// Asks `libvirtd --version`, then `virsh --version` (5 s each).
pub fn detect_libvirt_version() -> Result<(u32, u32, u32), String> {
    let mut why = Vec::new();
    for prog in ["libvirtd", "virsh"] {
        match run_for_output(prog, &["--version"], Duration::from_secs(5)) {
            Ok(out) => match parse_version(&out) {
                Some(v) => return Ok(v),
                None => why.push(format!("{prog} printed {:?}", out.trim())),
            },
            Err(e) => why.push(format!("{prog}: {e}")),
        }
    }
    Err(why.join("; "))
}

fn run_for_output(prog: &str, args: &[&str], limit: Duration) -> Result<String, String> {
    let mut child = std::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let until = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() >= until => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {limit:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e.to_string()),
        }
    }
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    Ok(out)
}

/// The wrapper script libvirt runs. It exits 0 when the binary is missing,
/// so a removed fenceline never blocks a network or domain start.
///
/// When the small `fenceline-hook` binary sits next to `binary`, the wrapper
/// runs it instead of `fenceline hook`: same code, but it loads neither
/// libvirt nor corosync libraries, so libvirtd waits ~1 ms instead of ~25 ms.
pub fn wrapper_script(binary: &Path, socket: &Path) -> String {
    let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let small = binary.with_file_name("fenceline-hook");
    if is_executable_file(&small) {
        return format!(
            "#!/bin/sh\n{MARKER} v1\n# Installed by `fenceline install-hook`: forwards libvirt network hook\n# events to the fenceline daemon. Always exits 0 (never vetoes libvirt).\n[ -x {bin} ] || exit 0\nexec {bin} --socket {sock} network \"$@\"\n",
            bin = q(&small),
            sock = q(socket)
        );
    }
    format!(
        "#!/bin/sh\n{MARKER} v1\n# Installed by `fenceline install-hook`: forwards libvirt network hook\n# events to the fenceline daemon. Always exits 0 (never vetoes libvirt).\n[ -x {bin} ] || exit 0\nexec {bin} hook --socket {sock} network \"$@\"\n",
        bin = q(binary),
        sock = q(socket)
    )
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn is_ours(p: &Path) -> bool {
    std::fs::read_to_string(p)
        .is_ok_and(|s| s.lines().nth(1).is_some_and(|l| l.starts_with(MARKER)))
}

/// Installs the wrapper: `network.d/50-fenceline` on libvirt ≥ 6.5, else
/// `network` (refusing to replace someone else's script).
pub fn install(opts: &InstallOptions) -> Result<Installed, InstallError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InstallError::Io { path, source }
    };
    let version = match &opts.libvirt_version {
        Some(v) => {
            parse_version(v).ok_or_else(|| InstallError::Version(format!("`{v}` is not X.Y.Z")))?
        }
        None => detect_libvirt_version().map_err(InstallError::Version)?,
    };
    if !opts.binary.is_absolute() {
        return Err(InstallError::Refused(format!(
            "the fenceline binary path must be absolute, got {}",
            opts.binary.display()
        )));
    }
    let dir = &opts.hooks_dir;
    let main = dir.join("network");
    let netd = dir.join("network.d");
    let supports_d = version >= (6, 5, 0);
    // Did libvirtd have any network hook to run before? (It decides at start.)
    let had_hooks = (is_executable_file(&main) && !is_ours(&main))
        || std::fs::read_dir(&netd).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| is_executable_file(&e.path()) && !is_ours(&e.path()))
        });
    let path = if supports_d {
        netd.join(HOOK_FILE)
    } else {
        if main.exists() && !is_ours(&main) {
            return Err(InstallError::Refused(format!(
                "{} exists and is not fenceline's; libvirt {}.{}.{} runs only that one script \
                 (network.d/ needs 6.5). Not replacing it. To chain, put at its top:\n  \
                 data=$(cat); printf '%s' \"$data\" | {} hook --socket {} network \"$@\"\n\
                 and feed \"$data\" instead of stdin to the rest of it.",
                main.display(),
                version.0,
                version.1,
                version.2,
                opts.binary.display(),
                opts.socket.display()
            )));
        }
        main
    };
    if path.exists() && !is_ours(&path) {
        return Err(InstallError::Refused(format!(
            "{} exists and is not fenceline's; not replacing it",
            path.display()
        )));
    }
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let script = wrapper_script(&opts.binary, &opts.socket);
    let unchanged =
        std::fs::read_to_string(&path).is_ok_and(|s| s == script) && is_executable_file(&path);
    if !unchanged {
        // Write next to it and rename: libvirt never sees a half-written script.
        let tmp = parent.join(format!(".{HOOK_FILE}.tmp"));
        std::fs::write(&tmp, &script).map_err(io(&tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    Ok(Installed {
        path,
        version,
        unchanged,
        needs_reload: !had_hooks,
    })
}

/// The text `install-hook` prints.
pub fn describe(i: &Installed) -> String {
    let (a, b, c) = i.version;
    let what = if i.unchanged {
        "already installed"
    } else {
        "installed"
    };
    let reload = if i.needs_reload {
        "libvirtd reads the hooks directory when it starts: reload it now \
         (`systemctl reload libvirtd`, i.e. SIGHUP) or restart it, or no hook event will arrive."
    } else {
        "Other network hooks were already there, so a libvirtd started with them runs this one \
         on the next hook call; if libvirtd started before any network hook existed, reload it \
         (`systemctl reload libvirtd`)."
    };
    format!(
        "{what}: {} (libvirt {a}.{b}.{c})\n{reload}\n",
        i.path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path, v: &str) -> InstallOptions {
        InstallOptions {
            hooks_dir: dir.to_path_buf(),
            socket: "/run/fenceline/hook.sock".into(),
            binary: "/usr/sbin/fenceline".into(),
            libvirt_version: Some(v.into()),
        }
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("libvirtd (libvirt) 9.0.0\n"), Some((9, 0, 0)));
        assert_eq!(parse_version("6.5.0"), Some((6, 5, 0)));
        assert_eq!(parse_version("10.1"), Some((10, 1, 0)));
        assert_eq!(parse_version("nothing here"), None);
    }

    #[test]
    fn installs_into_network_d_and_is_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let i = install(&opts(d.path(), "9.0.0")).unwrap();
        assert_eq!(i.path, d.path().join("network.d/50-fenceline"));
        assert!(i.needs_reload && !i.unchanged);
        assert!(is_executable_file(&i.path));
        let text = std::fs::read_to_string(&i.path).unwrap();
        assert!(text.contains(
            "exec '/usr/sbin/fenceline' hook --socket '/run/fenceline/hook.sock' network \"$@\""
        ));
        let again = install(&opts(d.path(), "9.0.0")).unwrap();
        assert!(again.unchanged);
        assert!(describe(&again).contains("already installed"));
    }

    #[test]
    fn other_hooks_mean_no_reload_and_are_never_touched() {
        let d = tempfile::tempdir().unwrap();
        let other = d.path().join("network.d/10-vlan");
        std::fs::create_dir_all(other.parent().unwrap()).unwrap();
        std::fs::write(&other, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).unwrap();
        let i = install(&opts(d.path(), "9.0.0")).unwrap();
        assert!(!i.needs_reload);
        assert_eq!(
            std::fs::read_to_string(&other).unwrap(),
            "#!/bin/sh\nexit 0\n"
        );
        // A foreign file with our name is refused.
        std::fs::write(&i.path, "#!/bin/sh\n# mine\n").unwrap();
        let e = install(&opts(d.path(), "9.0.0")).unwrap_err();
        assert!(e.to_string().contains("not fenceline's"), "{e}");
    }

    #[test]
    fn old_libvirt_uses_the_main_script_and_refuses_to_clobber() {
        let d = tempfile::tempdir().unwrap();
        let i = install(&opts(d.path(), "5.0.0")).unwrap();
        assert_eq!(i.path, d.path().join("network"));
        let d2 = tempfile::tempdir().unwrap();
        std::fs::write(
            d2.path().join("network"),
            "#!/bin/sh\n/usr/local/bin/vlan \"$@\"\n",
        )
        .unwrap();
        let e = install(&opts(d2.path(), "5.0.0")).unwrap_err().to_string();
        assert!(
            e.contains("Not replacing it") && e.contains("hook --socket"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(d2.path().join("network")).unwrap(),
            "#!/bin/sh\n/usr/local/bin/vlan \"$@\"\n"
        );
    }

    #[test]
    fn wrapper_quotes_paths_and_tolerates_a_missing_binary() {
        let s = wrapper_script(Path::new("/opt/it's/fenceline"), Path::new("/run/h.sock"));
        assert!(s.contains(r"'/opt/it'\''s/fenceline'"), "{s}");
        // Run it for real: the binary does not exist → exit 0.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("w");
        std::fs::write(
            &p,
            wrapper_script(&d.path().join("missing"), Path::new("/x")),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let st = std::process::Command::new(&p)
            .args(["net", "start", "begin", "-"])
            .status()
            .unwrap();
        assert!(st.success());
    }
}
