//! Preflight checks: root, and the external programs the lab runs.

use std::path::{Path, PathBuf};

/// Program name → Debian package that provides it.
const BASE: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("unshare", "util-linux"),
    ("nsenter", "util-linux"),
    ("sh", "dash"),
    ("sleep", "coreutils"),
    ("corosync", "corosync"),
    ("corosync-quorumtool", "corosync"),
    ("corosync-cpgtool", "corosync"),
    ("libvirtd", "libvirt-daemon"),
    ("virtlogd", "libvirt-daemon"),
    ("virsh", "libvirt-clients"),
];
const FENCE_VIRTD: &[(&str, &str)] = &[("fence_virtd", "fence-virtd"), ("stdbuf", "coreutils")];
const QEMU: &[(&str, &str)] = &[("qemu-system-x86_64", "qemu-system-x86")];

/// Find an executable in $PATH, then in the sbin/bin directories (root's
/// PATH sometimes lacks /usr/sbin).
pub fn which(prog: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter()
        .map(|d| d.join(prog))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Directory holding fence_virtd's plugins (cpg.so, multicast.so).
pub(crate) fn fence_virt_module_path() -> Option<PathBuf> {
    let mut cands = vec![PathBuf::from("/usr/lib/x86_64-linux-gnu/fence-virt")];
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        for e in rd.flatten() {
            cands.push(e.path().join("fence-virt"));
        }
    }
    cands.push(PathBuf::from("/usr/lib64/fence-virt"));
    cands.push(PathBuf::from("/usr/lib/fence-virt"));
    cands.into_iter().find(|p| p.join("cpg.so").exists())
}

fn check(sets: &[&[(&str, &str)]], extra: &[String]) -> Result<(), String> {
    let mut problems: Vec<String> = Vec::new();
    if !is_root() {
        problems.push(
            "must run as root (network namespaces, mounts and libvirtd need it); run the tests with sudo or as root"
                .to_string(),
        );
    }
    let mut pkgs: Vec<&str> = Vec::new();
    for set in sets {
        for (prog, pkg) in set.iter() {
            if which(prog).is_none() {
                problems.push(format!(
                    "command `{prog}` not found (Debian package: {pkg})"
                ));
                if !pkgs.contains(pkg) {
                    pkgs.push(pkg);
                }
            }
        }
    }
    problems.extend(extra.iter().cloned());
    if problems.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "sandbox lab prerequisites missing:\n  - {}",
        problems.join("\n  - ")
    );
    if !pkgs.is_empty() {
        msg.push_str(&format!(
            "\ninstall with: apt-get install -y {}",
            pkgs.join(" ")
        ));
    }
    Err(msg)
}

/// Check what every lab needs: root, iproute2, util-linux, corosync,
/// libvirt-daemon and libvirt-clients. The message says what is missing and
/// which Debian package provides it.
pub fn check_prerequisites() -> Result<(), String> {
    check(&[BASE], &[])
}

/// Like [`check_prerequisites`], plus fence_virtd (with its cpg plugin),
/// qemu and the fenceline binary when the spec asks for them.
pub fn check_prerequisites_for(
    fence_virtd: bool,
    qemu: bool,
    fenceline_bin: Option<&Path>,
) -> Result<(), String> {
    let mut sets: Vec<&[(&str, &str)]> = vec![BASE];
    let mut extra = Vec::new();
    if fence_virtd {
        sets.push(FENCE_VIRTD);
        if which("fence_virtd").is_some() && fence_virt_module_path().is_none() {
            extra.push(
                "fence_virtd's cpg plugin (fence-virt/cpg.so) not found (Debian package: fence-virtd)"
                    .to_string(),
            );
        }
    }
    if qemu {
        sets.push(QEMU);
    }
    if let Some(b) = fenceline_bin
        && !is_executable(b)
    {
        extra.push(format!(
            "fenceline binary {} is missing or not executable (run `cargo build`)",
            b.display()
        ));
    }
    check(&sets, &extra)
}
