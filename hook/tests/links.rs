//! libvirtd runs the hook synchronously for every network and port event, so
//! the binary must start fast: it links neither libvirt nor corosync. This
//! reads the built binary's dynamic section (`readelf -d`, binutils), so the
//! property holds for the artefact, not only for the source (the workspace's
//! architecture test checks the dependency tree).

use std::process::Command;

#[test]
fn the_hook_binary_needs_no_libvirt_or_corosync_library() {
    let bin = env!("CARGO_BIN_EXE_fenceline-hook");
    let out = Command::new("readelf")
        .args(["-d", "-W", bin])
        .output()
        .expect("readelf (binutils) runs");
    assert!(out.status.success(), "readelf -d {bin} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = text.lines().filter(|l| l.contains("(NEEDED)")).collect();
    assert!(
        !needed.is_empty(),
        "no NEEDED entries read from {bin}:\n{text}"
    );
    for l in &needed {
        for lib in [
            "libvirt",
            "libcorosync",
            "libcpg",
            "libquorum",
            "libvotequorum",
            "libcmap",
            "libcfg",
            "libqb",
        ] {
            assert!(!l.contains(lib), "{bin} links {lib}: {l}");
        }
    }
}
