//! The console end to end: the real `fenceline` binary in a private tmux
//! server (`tmux -L <unique>`), driven by keys and read back with
//! `capture-pane`, against a real 3-node lab (corosync, libvirtd and a
//! fenceline daemon per node, in network namespaces). Nothing is mocked.
//!
//! Needs root; each test builds its own lab (unique prefix) and tmux server;
//! both are torn down on every exit path: the lab on drop, the tmux server by
//! its own guard (and the lab kills the server named after it too). Only
//! servers these tests started are killed, by socket name.
//!
//! One assertion depends on the fence router in the daemon (the fencing
//! issue): that fencing vm2a from the console leaves it shut off
//! (`console_fences_a_vm_and_the_monitor_cannot`, last step). Everything
//! before it (the dialog, the request reaching the daemon, the monitor and
//! the read-only socket refusing) does not.
#![cfg(feature = "lab")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fenceline::engine::control::client::Client;
use fenceline::sandbox::{Lab, LabSpec, lab_test_guard};
use fenceline_proto::api::{FenceOp, Reply, Request};

mod common;
use common::{CONVERGE, bin};

const SCREEN: Duration = Duration::from_secs(15);

fn lab() -> Lab {
    let lab = common::lab(LabSpec {
        fenceline_bin: Some(bin()),
        ..LabSpec::default()
    });
    // Node 1 sees all three nodes and all nine domains.
    let t0 = Instant::now();
    loop {
        if let Ok(v) = lab.status_json(1)
            && v["quorate"] == true
            && v["domains"].as_array().map(Vec::len) == Some(9)
            && v["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().filter(|n| n["member"] == true).count() == 3)
        {
            return lab;
        }
        assert!(t0.elapsed() < CONVERGE, "node 1 never saw the full map");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a short command with a deadline; returns (exit code, stdout, stderr).
fn run(cmd: &mut Command, timeout: Duration) -> (Option<i32>, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                st.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A private tmux server; killed (by its socket name only) when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(socket: String) -> Tmux {
        Tmux { socket }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let (code, out, err) = run(
            Command::new("tmux").arg("-L").arg(&self.socket).args(args),
            Duration::from_secs(10),
        );
        assert_eq!(code, Some(0), "tmux {args:?}: {err}");
        out
    }

    /// A detached session `name` of w x h running `argv`.
    fn start(&self, name: &str, w: u16, h: u16, argv: &[&str]) {
        let (w, h) = (w.to_string(), h.to_string());
        // No user config; a window whose program died stays, so its last
        // screen and exit status can be read.
        let mut args = vec![
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &w,
            "-y",
            &h,
        ];
        args.extend_from_slice(argv);
        args.extend_from_slice(&[";", "set-option", "-g", "remain-on-exit", "on"]);
        self.tmux(&args);
    }

    fn keys(&self, name: &str, keys: &[&str]) {
        for k in keys {
            self.tmux(&["send-keys", "-t", name, k]);
            // One key at a time, as a person types: the console reads each.
            std::thread::sleep(Duration::from_millis(40));
        }
    }

    /// Typed text (literal, not key names).
    fn text(&self, name: &str, text: &str) {
        self.tmux(&["send-keys", "-t", name, "-l", text]);
        std::thread::sleep(Duration::from_millis(40));
    }

    fn screen(&self, name: &str) -> String {
        self.tmux(&["capture-pane", "-p", "-t", name])
    }

    fn pane_pid(&self, name: &str) -> u32 {
        self.tmux(&["list-panes", "-t", name, "-F", "#{pane_pid}"])
            .trim()
            .parse()
            .expect("pane pid")
    }

    /// Waits until the screen satisfies `pred`; panics with the screen.
    fn wait(&self, name: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen(name);
            if pred(&s) {
                return s;
            }
            if t0.elapsed() > SCREEN {
                panic!("{name}: no {what} within {SCREEN:?}; screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // tmux leaves its socket file behind; remove ours (by its name only).
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let dir = std::env::var_os("TMUX_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        let _ = std::fs::remove_file(dir.join(format!("tmux-{uid}")).join(&self.socket));
    }
}

fn domstate(lab: &Lab, node: usize, vm: &str) -> String {
    lab.virsh(node, &["domstate", vm])
        .unwrap_or_else(|e| panic!("virsh domstate {vm} on node {node}: {e:#}"))
        .trim()
        .to_string()
}

/// The line of the domain table that shows `vm`.
/// The domains table's row of `vm`: only the table's own cell is searched
/// (the detail pane on the same screen line may mention other VMs).
fn row<'a>(screen: &'a str, vm: &str) -> &'a str {
    screen
        .lines()
        .filter_map(|l| {
            let cell = l.strip_prefix('┃')?;
            Some(cell.split('┃').next().unwrap_or(cell))
        })
        .find(|cell| {
            cell.trim_start_matches(|c: char| c == ' ' || !c.is_alphanumeric())
                .starts_with(&format!("{vm} "))
        })
        .unwrap_or("")
}

fn console(tmux: &Tmux, name: &str, sub: &str, socket: &Path) {
    let exe = bin();
    let sock = socket.to_string_lossy();
    tmux.start(
        name,
        140,
        45,
        &[exe.to_str().unwrap(), sub, "--socket", &sock],
    );
    tmux.wait(name, "a connected console with the lab's domains", |s| {
        s.contains("● connected") && row(s, "vm3off").contains("shut off")
    });
}

fn fence_on(socket: &Path, domain: &str) -> Reply {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = Client::connect(socket).await.expect("connect");
        c.call(&Request::Fence {
            action: FenceOp::Off,
            domain: domain.into(),
        })
        .await
        .expect("a reply")
    })
}

#[test]
fn console_fences_a_vm_and_the_monitor_cannot() {
    if !lab_test_guard("console_fences_a_vm_and_the_monitor_cannot") {
        return;
    }
    let lab = lab();
    let tmux = Tmux::new(lab.tmux_socket());
    let rw = lab.node_path(1, "/run/fenceline/fenceline.sock").unwrap();
    let ro = lab
        .node_path(1, "/run/fenceline/fenceline-ro.sock")
        .unwrap();

    // 1. The monitor: a READ-ONLY badge, no mutating hints, and the same keys
    //    that fence in the console change nothing.
    console(&tmux, "ro", "monitor", &ro);
    let s = tmux.screen("ro");
    assert!(s.contains("READ-ONLY"), "{s}");
    assert!(!s.contains("F fence"), "the monitor offers fencing:\n{s}");
    tmux.keys("ro", &[":"]);
    tmux.text("ro", "vm2b");
    tmux.keys("ro", &["Enter"]);
    tmux.wait("ro", "vm2b selected", |s| s.contains("╭ vm2b "));
    for k in ["F", "y", "Enter", "R", "y", "S", "y"] {
        tmux.keys("ro", &[k]);
    }
    let s = tmux.wait("ro", "the read-only refusal", |s| {
        s.contains("read-only monitor: fence off is not available")
            || s.contains("read-only monitor: reboot is not available")
    });
    assert!(
        !s.contains("Confirm:"),
        "a dialog opened in the monitor:\n{s}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(domstate(&lab, 2, "vm2b"), "running");
    let s = tmux.screen("ro");
    assert!(row(&s, "vm2b").contains("running"), "{s}");
    assert!(!s.contains("console: fence"), "a request was sent:\n{s}");

    // 2. The read-only socket refuses a fence request itself.
    match fence_on(&ro, "vm3a") {
        Reply::Error { code, .. } => assert_eq!(code, "read-only"),
        other => panic!("the read-only socket answered {other:?}"),
    }
    // `fenceline fence` (the fencing issue's CLI), where it exists: exit 3.
    let (help, _, _) = run(
        Command::new(bin()).args(["fence", "--help"]),
        Duration::from_secs(10),
    );
    if help == Some(0) {
        let (code, out, err) = run(
            Command::new(bin())
                .args(["fence", "off", "vm3a", "--socket"])
                .arg(&ro),
            Duration::from_secs(30),
        );
        assert_eq!(code, Some(3), "fence on the ro socket: {out}{err}");
    } else {
        eprintln!("note: no `fenceline fence` subcommand in this build; checked the socket only");
    }
    assert_eq!(domstate(&lab, 3, "vm3a"), "running");

    // 3. The console follows a peer's change, shows a lost daemon greyed and
    //    reconnects by itself.
    console(&tmux, "rw", "console", &rw);
    lab.virsh(2, &["destroy", "vm2b"]).unwrap();
    tmux.wait("rw", "vm2b shut off", |s| {
        row(s, "vm2b").contains("○ shut off")
    });
    lab.virsh(2, &["start", "vm2b"]).unwrap();
    tmux.wait("rw", "vm2b running again", |s| {
        row(s, "vm2b").contains("● running")
    });
    lab.stop_daemon(1, libc::SIGTERM).unwrap();
    tmux.wait("rw", "DISCONNECTED", |s| s.contains("✗ DISCONNECTED"));
    lab.start_daemon(1).unwrap();
    tmux.wait("rw", "a reconnect", |s| {
        s.contains("● connected") && row(s, "vm1a").contains("running")
    });

    // 4. Fence vm2a from the console: keys, a dialog naming VM, owner and
    //    action, confirm, a toast; virsh on node 2 shows it shut off.
    tmux.keys("rw", &[":"]);
    tmux.text("rw", "vm2a");
    tmux.keys("rw", &["Enter"]);
    tmux.wait("rw", "vm2a selected", |s| s.contains("╭ vm2a "));
    tmux.keys("rw", &["F"]);
    let s = tmux.wait("rw", "the confirmation", |s| {
        s.contains("Confirm: fence off")
    });
    assert!(s.contains("Fence off vm2a on node2?"), "{s}");
    assert!(s.contains("owner   node2 (2)"), "{s}");
    assert!(
        s.contains("[ Cancel ]") && s.contains("[ Fence off ]"),
        "{s}"
    );
    assert_eq!(
        domstate(&lab, 2, "vm2a"),
        "running",
        "fenced before confirmation"
    );
    tmux.keys("rw", &["y"]);
    let s = tmux.wait("rw", "the answer", |s| {
        s.contains("✓ fence off vm2a") || s.contains("✗ fence off vm2a")
    });
    assert!(s.contains("console: fence off vm2a requested"), "{s}");
    // Depends on the fence router (fencing issue): the owner acts.
    assert!(
        s.contains("✓ fence off vm2a: ok"),
        "the fence did not succeed (needs the daemon's fence router):\n{s}"
    );
    let t0 = Instant::now();
    while domstate(&lab, 2, "vm2a") != "shut off" {
        assert!(t0.elapsed() < CONVERGE, "vm2a is still running on node 2");
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.wait("rw", "vm2a shut off on screen", |s| {
        row(s, "vm2a").contains("○ shut off")
    });
}

#[test]
fn demo_opens_the_console_and_tears_down_on_sigterm() {
    if !lab_test_guard("demo_opens_the_console_and_tears_down_on_sigterm") {
        return;
    }
    let tmux = Tmux::new(format!("fldemo{}", std::process::id()));
    let exe = bin();
    // The shell reports the demo's exit status on the screen when it ends.
    let exe_s = exe.to_string_lossy().into_owned();
    tmux.start(
        "demo",
        120,
        34,
        &[
            "sh",
            "-c",
            "\"$0\" demo; echo \"demo exit status $?\"",
            &exe_s,
        ],
    );
    let s = tmux.wait("demo", "the console on the demo lab", |s| {
        s.contains("● connected") && row(s, "vm3off").contains("shut off")
    });
    assert!(
        s.contains("demo: lab fl"),
        "the demo's note is missing:\n{s}"
    );
    let prefix = s
        .split("cluster ")
        .nth(1)
        .and_then(|r| r.split("clu").next())
        .expect("cluster name on screen")
        .to_string();
    let dir = PathBuf::from(format!("/tmp/fenceline-lab-{prefix}"));
    assert!(dir.exists(), "{}", dir.display());
    // The demo is the pane shell's only child.
    let sh = tmux.pane_pid("demo");
    let pid: i32 = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children"))
        .expect("children of the pane's shell")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the demo's pid");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "fenceline", "pid {pid} is not the demo");
    // SAFETY: kill(2) on the demo this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let t0 = Instant::now();
    while dir.exists() || Path::new(&format!("/run/netns/{prefix}1")).exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the lab was not torn down after SIGTERM; screen:\n{}",
            tmux.screen("demo")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = tmux.wait("demo", "the demo's exit status", |s| {
        s.contains("demo exit status")
    });
    assert!(
        s.contains("demo exit status 0"),
        "the demo did not exit cleanly:\n{s}"
    );
    assert!(s.contains(&format!("lab {prefix} removed")), "{s}");
}
