//! Sandbox lab: real multi-node corosync clusters in network namespaces, with a
//! private libvirtd per node. Used by `fenceline demo` and the integration tests.
//!
//! # Layout of a lab with prefix `P` (e.g. `fl3a9c`)
//! - netns `<P>sw` holds bridge `<P>br0`; node netns `<P>1..<P>N` each have
//!   `eth0` = 10.213.37.i/24 (veth peer `<P>v<i>` on the bridge), lo up and a
//!   route for 224.0.0.0/4; optional client-only netns `<P>c` = 10.213.37.200;
//!   optional guest netns `<P>g1..3` = 10.213.37.101..103 (`LabSpec.guests`:
//!   a Pacemaker guest cluster, see `lab/guests.rs`).
//! - Each node has one *holder* process (`sleep infinity`) living in the node
//!   netns and in a private mount namespace with tmpfs over /run,
//!   /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt, /etc/libvirt
//!   (filled with the lab's qemu.conf and libvirtd.conf) and /var/lib/corosync.
//!   Everything of a node (corosync, virtlogd, libvirtd, fenceline daemon,
//!   fence_virtd, virsh, `fenceline status`) runs under
//!   `nsenter -t <holder> -m -n`, so a node looks like a host: the default
//!   sockets /run/libvirt/libvirt-sock and /run/fenceline/*.sock are per node.
//! - Scratch dir `/tmp/fenceline-lab-<P>/`: `pids` (owner line, then
//!   `<pid> <starttime> <role> <program>` per started process), `qemu.conf`,
//!   `libvirtd.conf`, `fence_xvm.key`, and per node `n<i>/`: corosync.conf,
//!   corosync.log, libvirtd.err, virtlogd.log, fenceline.toml, fenceline.err,
//!   fenceline.log, fence_virt.conf, fence_virtd.log, domain XML.
//!
//! # Test-driver domains
//! libvirtd's `test:///default` starts with a built-in running domain "test"
//! (same UUID everywhere). The lab starts every libvirtd with its sockets in a
//! setup directory, removes "test", defines vm<i>a/vm<i>b (running) and
//! vm<i>off (shut off), and only then moves the sockets to /run/libvirt, so no
//! client ever sees "test" — also after [`Lab::restart_libvirtd`], which
//! restores the initial domain states (the test driver keeps no state).
//!
//! Every external command has a deadline; every process is stopped by PID.
//! Dropping a [`Lab`] tears it down; [`cleanup_stale`] removes labs of
//! crashed runs.

mod cmd;
mod conf;
mod lab;
mod prereq;
mod procs;
mod stale;

pub use cmd::{CmdOutput, DEFAULT_TIMEOUT, wait_until};
pub use conf::{QEMU_URI, SUBNET, TEST_URI};
pub use lab::{
    FenceEvent, GuestFailover, GuestOp, GuestResource, GuestStatus, KEEP_ENV, Lab, LabDomain,
    LabSpec, QuorumInfo, lab_domains, qemu_domain_uuid,
};
pub use prereq::{check_prerequisites, check_prerequisites_for, which};
pub use procs::clean_qb_shm;
pub use stale::cleanup_stale;

/// For tests: true when lab tests should run. They are skipped (with a
/// message on stderr) when not running as root, or when
/// `FENCELINE_SKIP_LAB_TESTS=1`. Missing tools are not a reason to skip:
/// [`Lab::up`] then fails and names the Debian packages to install.
pub fn lab_test_guard(test: &str) -> bool {
    if std::env::var("FENCELINE_SKIP_LAB_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED {test}: FENCELINE_SKIP_LAB_TESTS=1");
        return false;
    }
    if !prereq::is_root() {
        eprintln!(
            "SKIPPED {test}: sandbox lab tests need root (network namespaces, mounts, libvirtd); run as root"
        );
        return false;
    }
    true
}
