//! The systemd-native service on real lab nodes (real corosync, a private
//! libvirtd per node, real fence_xvm): readiness through a fake
//! NOTIFY_SOCKET (a datagram socket the test binds, standing in for
//! systemd), a listener that waits for its interface, SIGHUP reloading the
//! permission groups without leaving the CPG groups, and fence_xvm's
//! `monitor` failing while the node's corosync is down.
//!
//! Needs root; each test builds its own lab with a unique prefix and tears
//! it down on every exit path; the daemon a test starts itself is killed by
//! its PID when the test ends.
#![cfg(feature = "lab")]

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use fenceline::sandbox::{CmdOutput, Lab, LabSpec, lab_test_guard};
use serde_json::Value;

mod common;
use common::{CONVERGE, bin, events_lenient, lab, wait_status};

/// A daemon the test started in a node (`nsenter` execs it: the child's
/// PID is the daemon's). Killed by that PID on drop.
struct OwnDaemon(Child);

impl Drop for OwnDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every datagram systemd would have received, in order.
struct FakeSystemd {
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl FakeSystemd {
    fn bind(path: &Path) -> Self {
        let _ = std::fs::remove_file(path);
        let sock = UnixDatagram::bind(path).expect("bind the fake NOTIFY_SOCKET");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        FakeSystemd {
            sock,
            seen: Vec::new(),
        }
    }

    /// Reads for `d`.
    fn drain_for(&mut self, d: Duration) {
        let t0 = Instant::now();
        let mut buf = [0u8; 4096];
        while t0.elapsed() < d {
            if let Ok(n) = self.sock.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }

    /// Reads until a message contains `what`; panics with everything seen
    /// after `timeout`. Returns its index.
    fn wait_for(&mut self, what: &str, timeout: Duration) -> usize {
        let t0 = Instant::now();
        loop {
            if let Some(i) = self.seen.iter().position(|m| m.contains(what)) {
                return i;
            }
            assert!(
                t0.elapsed() < timeout,
                "no {what:?} within {timeout:?}; seen: {:#?}",
                self.seen
            );
            self.drain_for(Duration::from_millis(200));
        }
    }

    fn any(&self, what: &str) -> bool {
        self.seen.iter().any(|m| m.contains(what))
    }
}

fn write_private(path: &Path, text: &str) {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
}

fn hup(pid: u32) {
    // SAFETY: kill(2) with a PID this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
}

fn listener<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v["local"]["listeners"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == name)
}

/// The newest event of node `i` matching `pred`, waited for.
fn wait_event(lab: &Lab, i: usize, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let ev = events_lenient(lab, i);
        if let Some(e) = ev.iter().rev().find(|e| pred(e)) {
            return e.clone();
        }
        assert!(
            t0.elapsed() < CONVERGE,
            "node {i}: no {what}; events: {ev:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn max_seq(lab: &Lab, i: usize) -> u64 {
    events_lenient(lab, i)
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

/// READY=1 only after the corosync join, the inventory and the bound
/// listener (whose interface the test creates late); then STATUS= and
/// WATCHDOG=1. SIGHUP then changes the permission groups without one CPG
/// leave seen by the peer, and a broken config is refused.
#[test]
fn notify_ready_after_join_and_listener_then_reload_without_leaving() {
    if !lab_test_guard("notify_ready_after_join_and_listener_then_reload_without_leaving") {
        return;
    }
    let lab = lab(LabSpec {
        nodes: 2,
        fenceline_bin: Some(bin()),
        ..LabSpec::default()
    });
    wait_status(&lab, 2, "both nodes members", CONVERGE, |v| {
        v["quorate"] == true && v["local"]["fence_group"] == true
    });
    // Node 1 runs the test's own daemon instead of the lab's, with corosync
    // down at first and a multicast listener on an interface not there yet.
    lab.stop_daemon(1, libc::SIGTERM).unwrap();
    lab.kill_corosync(1, libc::SIGKILL).unwrap();
    let iface = format!("{}w", lab.prefix());
    let lab_conf = std::fs::read_to_string(lab.fenceline_config_path(1)).unwrap();
    assert!(lab_conf.contains("interface = \"eth0\""), "{lab_conf}");
    let conf_text = lab_conf.replace("interface = \"eth0\"", &format!("interface = \"{iface}\""));
    let conf: PathBuf = lab.node_dir(1).join("service.toml");
    write_private(&conf, &conf_text);
    let notify_path = lab.node_dir(1).join("notify.sock");
    let mut systemd = FakeSystemd::bind(&notify_path);
    let bin = bin();
    let mut cmd = lab
        .node_command(
            1,
            &[
                bin.to_str().unwrap(),
                "daemon",
                "--config",
                conf.to_str().unwrap(),
            ],
        )
        .unwrap();
    cmd.env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(lab.node_dir(1).join("service.err")).unwrap());
    let mut daemon = OwnDaemon(cmd.spawn().unwrap());
    let pid = daemon.0.id();

    // corosync down: said in STATUS=, no READY.
    systemd.wait_for("starting, corosync down", Duration::from_secs(15));
    systemd.drain_for(Duration::from_secs(2));
    assert!(!systemd.any("READY=1"), "{:#?}", systemd.seen);

    // corosync back: joined and listed, but the listener still waits.
    lab.start_corosync(1).unwrap();
    let (v, _) = wait_status(&lab, 1, "joined, listener waiting", CONVERGE, |v| {
        v["local"]["fence_group"] == true
            && v["local"]["own_group"] == true
            && v["local"]["inventory_complete"] == true
            && listener(v, "multicast").is_some_and(|l| l["state"] == "waiting")
    });
    let l = listener(&v, "multicast").unwrap();
    assert_eq!(
        l["detail"].as_str(),
        Some(format!("waiting for interface {iface}").as_str()),
        "{v:#}"
    );
    assert_eq!(listener(&v, "tcp").unwrap()["state"], "bound", "{v:#}");
    let status = lab.fenceline(1, &["status"]).unwrap();
    assert!(
        status
            .stdout
            .contains(&format!("waiting for interface {iface}")),
        "{status:?}"
    );
    systemd.wait_for(
        &format!("multicast: waiting for interface {iface}"),
        Duration::from_secs(10),
    );
    systemd.drain_for(Duration::from_secs(2));
    assert!(!systemd.any("READY=1"), "{:#?}", systemd.seen);

    // The interface appears: bound, then READY=1.
    let peer = format!("{iface}p");
    lab.exec_ok(
        1,
        &[
            "ip", "link", "add", &iface, "type", "veth", "peer", "name", &peer,
        ],
    )
    .unwrap();
    lab.exec_ok(1, &["ip", "link", "set", &iface, "up"])
        .unwrap();
    let ready = systemd.wait_for("READY=1", Duration::from_secs(30));
    let (v, _) = wait_status(&lab, 1, "multicast bound", CONVERGE, |v| {
        listener(v, "multicast").is_some_and(|l| l["state"] == "bound")
    });
    assert_eq!(v["local"]["fence_group"], true);
    let joined = systemd
        .seen
        .iter()
        .rposition(|m| m.contains("corosync down"))
        .unwrap();
    assert!(joined < ready, "{:#?}", systemd.seen);
    assert!(
        systemd.seen[ready].contains("STATUS=2/2 members, "),
        "{:#?}",
        systemd.seen
    );
    assert!(
        systemd.seen[ready].contains(&format!("listeners: multicast@{iface}, tcp@")),
        "{:#?}",
        systemd.seen
    );
    systemd.wait_for("WATCHDOG=1", Duration::from_secs(5));

    // SIGHUP with a permission group: applied, one event, no CPG leave.
    let before = max_seq(&lab, 2);
    write_private(
        &conf,
        &format!(
            "{conf_text}\n[[groups]]\nname = \"guests\"\nuuid = [\"vm1a\"]\nip = [\"10.213.37.200\"]\n"
        ),
    );
    hup(pid);
    let e = wait_event(&lab, 1, "a reload event", |e| {
        e["kind"] == "daemon" && e["action"] == "reloaded"
    });
    let detail = e["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("permission groups (1 configured)") && !detail.contains("listener"),
        "{e:#}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let left: Vec<Value> = events_lenient(&lab, 2)
        .into_iter()
        .filter(|e| e["seq"].as_u64().is_some_and(|s| s > before))
        .filter(|e| e["kind"] == "membership" && e["nodeid"] == 1)
        .collect();
    assert!(left.is_empty(), "node 2 saw node 1 change: {left:#?}");
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon exited");
    let (v, _) = wait_status(&lab, 1, "still bound", CONVERGE, |v| {
        listener(v, "multicast").is_some_and(|l| l["state"] == "bound")
    });
    assert_eq!(v["local"]["fence_group"], true);

    // A broken config is refused; the old one stays in force.
    write_private(&conf, &format!("{conf_text}\n[[groups]\n"));
    hup(pid);
    let e = wait_event(&lab, 1, "a refused reload", |e| {
        e["kind"] == "daemon"
            && e["action"] == "reloaded"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("refused"))
    });
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("the old config stays in force"),
        "{e:#}"
    );
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon exited");
    drop(daemon);
    lab.down().unwrap();
}

/// `fence_xvm -o monitor` from a guest on a one-node lab.
fn monitor(lab: &Lab) -> CmdOutput {
    let key = lab.fence_key_path();
    lab.exec_client(
        &[
            "fence_xvm",
            "-k",
            key.to_str().unwrap(),
            "-t",
            "10",
            "-o",
            "monitor",
        ],
        Duration::from_secs(30),
    )
    .expect("fence_xvm runs")
}

/// Real fence_xvm's `monitor` fails while the node's corosync is down and
/// succeeds again once it is back (fence_virtd always says ok).
#[test]
fn fence_xvm_monitor_fails_while_corosync_is_down() {
    if !lab_test_guard("fence_xvm_monitor_fails_while_corosync_is_down") {
        return;
    }
    let lab = lab(LabSpec {
        nodes: 1,
        fenceline_bin: Some(bin()),
        client_ns: true,
        ..LabSpec::default()
    });
    let healthy = |v: &Value| {
        v["quorate"] == true
            && v["local"]["fence_group"] == true
            && listener(v, "multicast").is_some_and(|l| l["state"] == "bound")
    };
    wait_status(&lab, 1, "quorate, joined, bound", CONVERGE, healthy);
    let o = monitor(&lab);
    assert_eq!(o.status.code(), Some(0), "{o:?}");

    lab.kill_corosync(1, libc::SIGKILL).unwrap();
    wait_status(&lab, 1, "corosync lost", CONVERGE, |v| {
        v["corosync"]["connected"] == false
    });
    let o = monitor(&lab);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let status = lab.fenceline(1, &["status"]).unwrap();
    assert!(
        status
            .stdout
            .contains("THIS HOST CANNOT FENCE: corosync down"),
        "{status:?}"
    );

    lab.start_corosync(1).unwrap();
    wait_status(&lab, 1, "corosync back", CONVERGE, healthy);
    let o = monitor(&lab);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    lab.down().unwrap();
}
