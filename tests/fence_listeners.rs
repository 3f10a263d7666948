//! The fence listeners against Debian's real `fence_xvm` / `fence_virt`
//! (fence-virt 4.12.1), inside a private network namespace per test.
//!
//! Each test owns a thread that `unshare`s a fresh network namespace, sets
//! up loopback and multicast routes there, and runs the listeners on a tokio
//! runtime built on that thread. The clients run in the same namespace via
//! `nsenter --net=/proc/<pid>/task/<tid>/ns/net`. The namespace belongs to
//! the thread: when the `Ns` guard drops, the thread stops and the kernel
//! frees the namespace, so nothing can leak even if the test process is
//! killed. No traffic leaves the namespace.
//!
//! The engine is replaced by `Recorder`, a recording `FenceService`: these
//! tests check what the listeners hand to the engine and what they answer,
//! not the cluster routing behind `EngineHandle::fence` (tested with the
//! engine). Everything on the wire is real.
//!
//! Needs root (namespaces); skipped otherwise, like the lab tests.
#![cfg(all(feature = "lab", feature = "fixtures"))]

use std::collections::HashMap;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fenceline::engine::fence::audit;
use fenceline::engine::fence::auth::client_handshake;
use fenceline::engine::fence::listeners;
use fenceline::engine::fence::listeners::testing::{Recorder, domain};
use fenceline::engine::model::{DropKind, Input};
use fenceline::engine::{FenceCall, InputTx};
use fenceline::sandbox::{lab_test_guard, wait_until};
use fenceline_config::{Config, HashName, MulticastListener, PermissionGroup, TcpListenerConf};
use fenceline_proto::api::{DomainState, DomainView, Event, EventKind, FenceOp, FenceResult};
use fenceline_proto::fence_xvm::{FenceRequest, HashType};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

mod common;
use common::{BIN, run_ok};

const FENCE_XVM: &str = "/usr/sbin/fence_xvm";
const FENCE_VIRT: &str = "/usr/sbin/fence_virt";
const U1: &str = "8f1e0001-0000-4000-8000-000000000011";
const U2: &str = "8f1e0001-0000-4000-8000-000000000022";
const U3: &str = "8f1e0001-0000-4000-8000-000000000033";

/// vm1 running on node 1, vm2 shut off on node 2 (the whole cluster's map),
/// and a VM whose name is longer than a record's field.
fn cluster_map() -> Vec<DomainView> {
    vec![
        domain("vm1", U1, DomainState::Running, 1),
        domain("vm2", U2, DomainState::Shutoff, 2),
        domain(&"long-name-".repeat(8), U3, DomainState::Paused, 3),
    ]
}

fn recorder() -> Recorder {
    Recorder {
        domains: Arc::new(cluster_map()),
        answers: Arc::new(HashMap::from([("vm2".to_string(), FenceResult::Off)])),
        ..Default::default()
    }
}

/// A network namespace owned by a thread that runs the listeners.
struct Ns {
    net_path: String,
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    drops: Arc<AtomicU64>,
    dir: tempfile::TempDir,
}

#[derive(Default)]
struct Setup {
    ipv6: bool,
    audit: bool,
}

/// Loopback up with a route for the IPv4 multicast range; with `ipv6`, a
/// veth pair whose `va` end carries fd00:1::1 and the only IPv6 multicast
/// route (fence_xvm skips ::1 and link-local addresses, and IPv6 multicast
/// on `lo` is not looped back).
fn setup_network(ipv6: bool) -> Result<(), String> {
    run_ok(&["ip", "link", "set", "lo", "up"])?;
    run_ok(&["ip", "route", "add", "224.0.0.0/4", "dev", "lo"])?;
    if ipv6 {
        run_ok(&[
            "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb",
        ])?;
        run_ok(&["sysctl", "-q", "-w", "net.ipv6.conf.vb.disable_ipv6=1"])?;
        run_ok(&["ip", "link", "set", "vb", "up"])?;
        run_ok(&["ip", "link", "set", "va", "up"])?;
        run_ok(&[
            "ip",
            "-6",
            "addr",
            "add",
            "fd00:1::1/64",
            "dev",
            "va",
            "nodad",
        ])?;
    }
    Ok(())
}

impl Ns {
    /// Starts the listeners of `cfg` (key files: `<dir>/key`) in a new
    /// namespace. `edit` adjusts the config once the key path is known.
    fn start(rec: Recorder, setup: Setup, edit: impl FnOnce(&mut Config, &Path)) -> Ns {
        let dir = tempfile::tempdir().unwrap();
        write_key(&dir.path().join("key"), &random_key());
        write_key(&dir.path().join("other.key"), &random_key());
        let mut cfg = Config::default();
        edit(&mut cfg, &dir.path().join("key"));
        let audit_path = setup.audit.then(|| dir.path().join("audit.jsonl"));
        let cancel = CancellationToken::new();
        let drops = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel::<Result<i32, String>>();
        let (c2, d2) = (cancel.clone(), drops.clone());
        let thread = std::thread::spawn(move || {
            // SAFETY: unshare(CLONE_NEWNET) has no memory-safety
            // preconditions; it moves only this thread into a new namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                let _ = tx.send(Err(format!("unshare: {}", std::io::Error::last_os_error())));
                return;
            }
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            // Child processes inherit this thread's namespace.
            if let Err(e) = setup_network(setup.ipv6) {
                let _ = tx.send(Err(e));
                return;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (itx, mut irx) = InputTx::channel(1024);
                let audit_w = audit_path.map(|p| audit::spawn(&p, itx.clone()).unwrap());
                let audit_tx = audit_w.as_ref().map(|w| w.tx.clone());
                let tasks = match listeners::spawn(&cfg, rec, itx, audit_tx, c2.clone()) {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = tx.send(Err(format!("{e:#}")));
                        return;
                    }
                };
                let _ = tx.send(Ok(tid));
                loop {
                    tokio::select! {
                        _ = c2.cancelled() => break,
                        Some(i) = irx.recv() => {
                            if let Input::Dropped { what: DropKind::FencePackets, count, .. } = i {
                                d2.fetch_add(count, Ordering::Relaxed);
                            }
                        }
                    }
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        });
        let tid = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(tid)) => tid,
            Ok(Err(e)) => panic!("namespace/listener setup failed: {e}"),
            Err(e) => panic!("namespace thread did not report: {e}"),
        };
        Ns {
            net_path: format!("/proc/{}/task/{tid}/ns/net", std::process::id()),
            cancel,
            thread: Some(thread),
            drops,
            dir,
        }
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key")
    }

    fn other_key(&self) -> PathBuf {
        self.dir.path().join("other.key")
    }

    fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    fn drops(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }

    /// Waits (up to 4 s: drops are reported once a second) until at least
    /// `n` drops were counted; returns the count.
    fn wait_drops(&self, n: u64) -> u64 {
        wait_until(Duration::from_secs(4), Duration::from_millis(50), || {
            self.drops() >= n
        });
        self.drops()
    }

    fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.net_path))
            .arg("--")
            .args(argv);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs a client in the namespace; kills it (by its pid) after 30 s.
    fn client(&self, argv: &[&str]) -> ClientOut {
        finish(self.command(argv).spawn().unwrap(), argv)
    }

    /// Runs `f` on a thread inside the namespace. Sockets made there stay in
    /// the namespace when used from any thread afterwards.
    fn inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.net_path.clone();
        std::thread::scope(|s| {
            s.spawn(move || {
                let ns = std::fs::File::open(&path).unwrap();
                // SAFETY: setns on a namespace fd we hold open; it moves
                // only this (short-lived) thread.
                let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A key file as the daemon accepts it: mode 0600 (a looser key file stops
/// the start unless `listeners.allow_loose_key_mode`).
fn write_key(path: &Path, key: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut f, key).unwrap();
}

fn random_key() -> Vec<u8> {
    let mut k = vec![0u8; 64];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut k)
        .unwrap();
    k
}

#[derive(Debug)]
struct ClientOut {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn finish(mut child: Child, argv: &[&str]) -> ClientOut {
    // Read both pipes while waiting, so a chatty child cannot block on them.
    fn reader(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    }
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{argv:?} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    ClientOut {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        took: t0.elapsed(),
    }
}

fn key_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// fence_xvm with a short timeout; `extra` are more flags.
fn xvm(ns: &Ns, op: &str, domain: Option<&str>, extra: &[&str]) -> ClientOut {
    let key = ns.key();
    let mut argv = vec![FENCE_XVM, "-o", op, "-k", key_str(&key), "-t", "5"];
    if let Some(d) = domain {
        argv.extend(["-H", d]);
    }
    argv.extend(extra);
    ns.client(&argv)
}

/// The TCP listener's port in these tests: fence_xvm's callback listener
/// takes TCP *:1229 in the same namespace.
const TCP_PORT: &str = "1230";

fn tcp_cfg(key: &Path) -> TcpListenerConf {
    TcpListenerConf {
        key_file: key.to_path_buf(),
        port: 1230,
        ..Default::default()
    }
}

/// fence_virt -T 127.0.0.1 -p 1230.
fn tcp_client(ns: &Ns, op: &str, domain: Option<&str>, extra: &[&str]) -> ClientOut {
    let key = ns.key();
    let mut argv = vec![
        FENCE_VIRT,
        "-T",
        "127.0.0.1",
        "-p",
        TCP_PORT,
        "-o",
        op,
        "-k",
        key_str(&key),
        "-t",
        "5",
    ];
    if let Some(d) = domain {
        argv.extend(["-H", d]);
    }
    argv.extend(extra);
    ns.client(&argv)
}

fn call(op: FenceOp, domain: &str, source: &str) -> FenceCall {
    FenceCall {
        op,
        domain: domain.into(),
        source: source.into(),
    }
}

/// The lab's clients and the listener share one namespace (loopback only,
/// plus fd00:1::1 for IPv6), so the connect-back to 127.0.0.1 must be named
/// explicitly.
fn mcast_cfg(key: &Path) -> MulticastListener {
    MulticastListener {
        key_file: key.to_path_buf(),
        callback_networks: vec!["127.0.0.1".into(), "fd00:1::/64".into()],
        ..Default::default()
    }
}

/// A namespace with only the default multicast listener.
fn mcast_ns(rec: Recorder) -> Ns {
    Ns::start(rec, Setup::default(), |c, key| {
        c.listeners.multicast = Some(mcast_cfg(key));
    })
}

/// fence_xvm's `list` output lines for the cluster map (fence_xvm prints
/// `%-32s %s %s`, "on" only for running).
fn expected_list(domains: &[DomainView]) -> String {
    domains
        .iter()
        .map(|d| {
            let name: String = d.name.chars().take(63).collect();
            let on = if d.state == DomainState::Running {
                "on"
            } else {
                "off"
            };
            format!("{name:<32} {} {on}\n", d.uuid)
        })
        .collect()
}

macro_rules! guard {
    ($name:expr) => {
        if !lab_test_guard($name) {
            return;
        }
    };
}

#[test]
fn multicast_ipv4_every_operation_with_real_fence_xvm() {
    guard!("multicast_ipv4_every_operation_with_real_fence_xvm");
    let rec = recorder();
    let ns = Ns::start(rec.clone(), Setup::default(), |c, key| {
        c.listeners.multicast = Some(MulticastListener {
            interface: Some("lo".into()),
            ..mcast_cfg(key)
        });
    });
    let src = "multicast:127.0.0.1";

    let o = xvm(&ns, "status", Some("vm1"), &[]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.took < Duration::from_secs(2), "answered at once: {o:?}");
    let o = xvm(&ns, "status", Some("vm2"), &[]);
    assert_eq!(o.code, Some(2), "status of an off VM exits 2: {o:?}");
    for op in ["off", "on", "reboot"] {
        let o = xvm(&ns, op, Some("vm1"), &[]);
        assert_eq!(o.code, Some(0), "{op}: {o:?}");
    }
    assert_eq!(
        rec.calls(),
        vec![
            call(FenceOp::Status, "vm1", src),
            call(FenceOp::Status, "vm2", src),
            call(FenceOp::Off, "vm1", src),
            call(FenceOp::On, "vm1", src),
            call(FenceOp::Reboot, "vm1", src),
        ]
    );

    // Answered by the listener itself, without the engine.
    let o = xvm(&ns, "monitor", None, &[]);
    assert_eq!(o.code, Some(0), "{o:?}");
    let o = xvm(&ns, "null", Some("vm1"), &[]);
    assert_eq!(o.code, Some(1), "null answers 1 like fence_virtd: {o:?}");
    let o = xvm(&ns, "list", None, &[]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stdout, expected_list(&cluster_map()), "{o:?}");
    let o = xvm(&ns, "list-status", None, &[]);
    assert_eq!(o.stdout, expected_list(&cluster_map()));
    assert_eq!(
        rec.calls().len(),
        5,
        "null, monitor and list never reach the engine"
    );
    assert_eq!(ns.drops(), 0, "nothing was refused");

    // Stronger hashes than the configured minimum are accepted.
    let o = xvm(&ns, "status", Some("vm1"), &["-c", "sha512"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(rec.calls().len(), 6);
}

#[test]
fn multicast_ipv6_with_real_fence_xvm() {
    guard!("multicast_ipv6_with_real_fence_xvm");
    let rec = recorder();
    let ns = Ns::start(
        rec.clone(),
        Setup {
            ipv6: true,
            audit: false,
        },
        |c, key| {
            c.listeners.multicast = Some(MulticastListener {
                address: "ff05::3:1".into(),
                ..mcast_cfg(key)
            });
        },
    );
    let o = xvm(&ns, "status", Some("vm2"), &["-a", "ff05::3:1"]);
    assert_eq!(o.code, Some(2), "{o:?}");
    let o = xvm(&ns, "off", Some("vm1"), &["-a", "ff05::3:1"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    let o = xvm(&ns, "list", None, &["-a", "ff05::3:1"]);
    assert_eq!(o.stdout, expected_list(&cluster_map()), "{o:?}");
    assert_eq!(
        rec.calls(),
        vec![
            call(FenceOp::Status, "vm2", "multicast:fd00:1::1"),
            call(FenceOp::Off, "vm1", "multicast:fd00:1::1"),
        ]
    );
}

#[test]
fn permission_groups_deny_without_the_engine_and_are_audited() {
    guard!("permission_groups_deny_without_the_engine_and_are_audited");
    let rec = recorder();
    let ns = Ns::start(
        rec.clone(),
        Setup {
            ipv6: false,
            audit: true,
        },
        |c, key| {
            c.listeners.multicast = Some(mcast_cfg(key));
            c.listeners.tcp = Some(tcp_cfg(key));
            c.groups = vec![
                PermissionGroup {
                    name: "web".into(),
                    // A name and, in another case, the other VM's UUID.
                    uuid: vec!["VM1".into()],
                    ip: vec!["127.0.0.1".into()],
                },
                PermissionGroup {
                    name: "elsewhere".into(),
                    uuid: vec![U2.into()],
                    ip: vec!["10.9.9.9".into()],
                },
            ];
        },
    );
    let o = xvm(&ns, "off", Some("vm2"), &[]);
    assert_eq!(o.code, Some(3), "denied: {o:?}");
    assert!(
        o.stdout.contains("Permission denied") || o.stderr.contains("Permission denied"),
        "{o:?}"
    );
    let o = tcp_client(&ns, "status", Some(U2), &[]);
    assert_eq!(o.code, Some(3), "denied over tcp too: {o:?}");
    assert!(
        rec.calls().is_empty(),
        "the engine is not called for denied requests"
    );

    let o = xvm(&ns, "off", Some("vm1"), &[]);
    assert_eq!(o.code, Some(0), "allowed (case-insensitive name): {o:?}");
    assert_eq!(
        rec.calls(),
        vec![call(FenceOp::Off, "vm1", "multicast:127.0.0.1")]
    );

    // The list shows only the group's VMs; monitor is never checked.
    let o = xvm(&ns, "list", None, &[]);
    assert_eq!(o.stdout, expected_list(&cluster_map()[..1]), "{o:?}");
    let o = xvm(&ns, "monitor", None, &[]);
    assert_eq!(o.code, Some(0), "{o:?}");

    // Both denials are in the audit log, marked as the listener's own records.
    let audit_text = std::fs::read_to_string(ns.audit_path()).unwrap();
    let records: Vec<Event> = audit_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{audit_text}");
    let sources: Vec<(String, String, FenceResult, u64)> = records
        .iter()
        .map(|e| match &e.kind {
            EventKind::Fence {
                source,
                domain,
                result,
                ..
            } => (source.clone(), domain.clone(), *result, e.seq),
            other => panic!("not a fence record: {other:?}"),
        })
        .collect();
    assert_eq!(
        sources,
        vec![
            (
                "multicast:127.0.0.1".into(),
                "vm2".into(),
                FenceResult::Denied,
                0
            ),
            ("tcp:127.0.0.1".into(), U2.into(), FenceResult::Denied, 0),
        ]
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ns.audit_path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn tcp_listener_with_real_fence_virt_uses_the_configured_auth() {
    guard!("tcp_listener_with_real_fence_virt_uses_the_configured_auth");
    let rec = recorder();
    let ns = Ns::start(rec.clone(), Setup::default(), |c, key| {
        c.listeners.tcp = Some(TcpListenerConf {
            auth: HashName::Sha512,
            ..tcp_cfg(key)
        });
    });
    let src = "tcp:127.0.0.1";
    let o = tcp_client(&ns, "status", Some("vm1"), &["-C", "sha512"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    let o = tcp_client(&ns, "status", Some("vm2"), &["-C", "sha512"]);
    assert_eq!(o.code, Some(2), "{o:?}");
    let o = tcp_client(&ns, "reboot", Some("vm1"), &["-C", "sha512"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    let o = tcp_client(&ns, "list", None, &["-C", "sha512"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stdout, expected_list(&cluster_map()), "{o:?}");
    assert_eq!(
        rec.calls(),
        vec![
            call(FenceOp::Status, "vm1", src),
            call(FenceOp::Status, "vm2", src),
            call(FenceOp::Reboot, "vm1", src),
        ]
    );
    // fence_virtd would have used sha256 here (its bug); we use what is
    // configured, so a sha256 client fails the challenge and nothing runs.
    let o = tcp_client(&ns, "off", Some("vm1"), &[]);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert_eq!(rec.calls().len(), 3);
    assert!(ns.wait_drops(1) >= 1, "the failed handshake is counted");
    // A wrong key is refused before the handshake.
    let other = ns.other_key();
    let o = ns.client(&[
        FENCE_VIRT,
        "-T",
        "127.0.0.1",
        "-p",
        TCP_PORT,
        "-o",
        "off",
        "-H",
        "vm1",
        "-k",
        key_str(&other),
        "-C",
        "sha512",
        "-t",
        "5",
    ]);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert_eq!(rec.calls().len(), 3);
    assert!(ns.wait_drops(2) >= 2);
}

#[test]
fn requests_are_handled_concurrently() {
    guard!("requests_are_handled_concurrently");
    let rec = Recorder {
        delays: Arc::new(HashMap::from([(
            "slow".to_string(),
            Duration::from_secs(3),
        )])),
        ..recorder()
    };
    let ns = Ns::start(rec.clone(), Setup::default(), |c, key| {
        c.listeners.multicast = Some(mcast_cfg(key));
        c.listeners.tcp = Some(tcp_cfg(key));
    });
    let key = ns.key();
    let slow_argv = [
        FENCE_VIRT,
        "-T",
        "127.0.0.1",
        "-p",
        TCP_PORT,
        "-o",
        "off",
        "-H",
        "slow",
        "-k",
        key_str(&key),
        "-t",
        "10",
    ];
    let slow = ns.command(&slow_argv).spawn().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(10), || rec
            .calls()
            .len()
            == 1),
        "the slow request reached the engine"
    );
    // While the engine works on `slow`, other requests are answered at once
    // (fence_virtd would make them wait).
    let o = tcp_client(&ns, "status", Some("vm1"), &[]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.took < Duration::from_millis(1500), "{o:?}");
    let o = xvm(&ns, "status", Some("vm2"), &[]);
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.took < Duration::from_millis(1500), "{o:?}");
    let s = finish(slow, &slow_argv);
    assert_eq!(s.code, Some(0), "{s:?}");
    assert!(s.took >= Duration::from_secs(2), "{s:?}");
}

/// A hand-written fence_xvm: listens for the callback in the namespace,
/// sends `datagram` to the group, and if the daemon calls back within
/// `wait`, runs the client handshake and returns the daemon's answer.
fn hand_client(ns: &Ns, datagram: &[u8], key: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let (udp, listener) = ns.inside(|| {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let l = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        l.set_reuse_address(true).unwrap();
        let addr: SocketAddr = "127.0.0.1:1229".parse().unwrap();
        l.bind(&addr.into()).unwrap();
        l.listen(4).unwrap();
        l.set_nonblocking(true).unwrap();
        (udp, std::net::TcpListener::from(l))
    });
    udp.send_to(datagram, (Ipv4Addr::new(225, 0, 0, 12), 1229))
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l = tokio::net::TcpListener::from_std(listener).unwrap();
        let (mut s, _) = tokio::time::timeout(wait, l.accept()).await.ok()?.unwrap();
        client_handshake(&mut s, HashType::Sha256, key, Duration::from_secs(5))
            .await
            .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        Some(out)
    })
}

fn signed(key: &[u8], op: FenceOp, domain: &str, seq: u32, ht: HashType) -> Vec<u8> {
    let mut r = FenceRequest::new(op, domain, seq).unwrap();
    r.set_callback("127.0.0.1:1229".parse().unwrap());
    r.sign(key, ht, [7; 6]).unwrap();
    r.encode().unwrap().to_vec()
}

#[test]
fn refused_packets_do_nothing_and_are_counted() {
    guard!("refused_packets_do_nothing_and_are_counted");
    let rec = recorder();
    let ns = mcast_ns(rec.clone());
    let key = std::fs::read(ns.key()).unwrap();

    // The harness sees a dispatched request (so the checks below can fail).
    let out = hand_client(
        &ns,
        &signed(&key, FenceOp::Off, "vm1", 1, HashType::Sha256),
        &key,
        Duration::from_secs(3),
    );
    assert_eq!(out, Some(vec![0]));
    assert_eq!(rec.calls().len(), 1);

    // Truncated, oversized, empty and garbage datagrams.
    let sender = ns.inside(|| UdpSocket::bind("127.0.0.1:0").unwrap());
    let group = (Ipv4Addr::new(225, 0, 0, 12), 1229);
    let good = signed(&key, FenceOp::Off, "vm1", 2, HashType::Sha256);
    let mut garbage = vec![0u8; 176];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut garbage)
        .unwrap();
    garbage[1] = 2; // claims sha256
    let mut long = good.clone();
    long.extend([0u8; 800]);
    for d in [&good[..100], &long[..], &[][..], &garbage[..], &good[..175]] {
        sender.send_to(d, group).unwrap();
    }
    assert_eq!(ns.wait_drops(5), 5, "each bad datagram counted once");

    // Signed with another key, or with a weaker hash than the minimum.
    let other = std::fs::read(ns.other_key()).unwrap();
    let bad = [
        signed(&other, FenceOp::Off, "vm1", 3, HashType::Sha256),
        signed(&key, FenceOp::Off, "vm1", 4, HashType::Sha1),
        signed(&key, FenceOp::Off, "vm1", 5, HashType::None),
    ];
    for d in &bad {
        assert_eq!(
            hand_client(&ns, d, &key, Duration::from_millis(800)),
            None,
            "no callback"
        );
    }
    assert_eq!(ns.wait_drops(8), 8);
    assert_eq!(rec.calls().len(), 1, "nothing reached the engine");

    // The real client with a wrong key or a weaker hash times out.
    let other_path = ns.other_key();
    let o = ns.client(&[
        FENCE_XVM,
        "-o",
        "off",
        "-H",
        "vm1",
        "-k",
        key_str(&other_path),
        "-t",
        "2",
        "-r",
        "10",
    ]);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stdout.contains("Timed out") || o.stderr.contains("Timed out"),
        "{o:?}"
    );
    let o = xvm(
        &ns,
        "off",
        Some("vm1"),
        &["-c", "sha1", "-t", "2", "-r", "10"],
    );
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(ns.wait_drops(10) >= 10);
    assert_eq!(rec.calls().len(), 1);

    // Still serving.
    let o = xvm(&ns, "status", Some("vm1"), &[]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(rec.calls().len(), 2);
}

#[test]
fn a_replayed_fence_xvm_datagram_is_dropped_within_ten_seconds() {
    guard!("a_replayed_fence_xvm_datagram_is_dropped_within_ten_seconds");
    let rec = recorder();
    let ns = mcast_ns(rec.clone());
    let key = std::fs::read(ns.key()).unwrap();
    // Capture what fence_xvm sends: a second socket on the group and port
    // (both have SO_REUSEADDR, so each gets a copy).
    let capture = ns.inside(|| {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_address(true).unwrap();
        let addr: SocketAddr = "225.0.0.12:1229".parse().unwrap();
        s.bind(&addr.into()).unwrap();
        s.join_multicast_v4(&Ipv4Addr::new(225, 0, 0, 12), &Ipv4Addr::UNSPECIFIED)
            .unwrap();
        UdpSocket::from(s)
    });
    capture
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let o = xvm(&ns, "off", Some("vm1"), &[]);
    assert_eq!(o.code, Some(0), "{o:?}");
    let mut buf = [0u8; 2048];
    let (n, _) = capture.recv_from(&mut buf).unwrap();
    assert_eq!(n, 176);
    let captured = buf[..n].to_vec();
    assert_eq!(rec.calls().len(), 1);

    // Replayed at once, with someone ready to complete the handshake: no
    // callback, no second action.
    let out = hand_client(&ns, &captured, &key, Duration::from_secs(2));
    assert_eq!(out, None, "a replay within 10 s gets no callback");
    assert_eq!(rec.calls().len(), 1, "the engine was called once");
    assert_eq!(ns.wait_drops(1), 1, "the replay is counted");

    // The same op/seqno/domain in other letter case is the same request;
    // another op with the same seqno is not (fence_virtd's rule).
    let parsed = FenceRequest::parse(&captured).unwrap();
    let upper = signed(&key, FenceOp::Off, "VM1", parsed.seqno, HashType::Sha256);
    assert_eq!(hand_client(&ns, &upper, &key, Duration::from_secs(2)), None);
    assert_eq!(ns.wait_drops(2), 2);
    let on = signed(&key, FenceOp::On, "vm1", parsed.seqno, HashType::Sha256);
    assert_eq!(
        hand_client(&ns, &on, &key, Duration::from_secs(3)),
        Some(vec![0])
    );
    assert_eq!(rec.calls().len(), 2);
}

/// A fenceline TOML for a daemon in `dir` (sockets, log, audit there); no
/// libvirt URIs: those come from fence_virt.conf.
fn daemon_toml(dir: &Path) -> String {
    format!(
        "[control]\nsocket = \"{0}/rw.sock\"\nreadonly_socket = \"{0}/ro.sock\"\n[log]\nfile = \"{0}/fenceline.log\"\n[corosync]\nfence_group = \"fl-test-fa\"\nown_group = \"fl-test-own\"\n[fencing]\naudit_log = \"{0}/audit/audit.jsonl\"\n",
        dir.display()
    )
}

/// The real daemon, configured from a fence_virt.conf, in the namespace:
/// the listener reaches the real engine (`EngineHandle`), and `list` shows
/// the engine's map (libvirt's test driver, in process).
#[test]
fn the_daemon_runs_a_fence_virt_conf() {
    guard!("the_daemon_runs_a_fence_virt_conf");
    let ns = Ns::start(recorder(), Setup::default(), |_, _| {});
    let dir = ns.dir.path();
    std::fs::write(dir.join("fenceline.toml"), daemon_toml(dir)).unwrap();
    std::fs::write(
        dir.join("fence_virt.conf"),
        format!(
            "fence_virtd {{\n\tlistener = \"tcp\";\n\tbackend = \"cpg\";\n\tmodule_path = \"/usr/lib/x86_64-linux-gnu/fence-virt\";\n}}\n\nlisteners {{\n\ttcp {{\n\t\tkey_file = \"{}\";\n\t\tport = \"1230\";\n\t}}\n}}\n\nbackends {{\n\tcpg {{\n\t\turi = \"test:///default\";\n\t}}\n}}\n",
            ns.key().display()
        ),
    )
    .unwrap();
    let (toml_path, fvc_path) = (dir.join("fenceline.toml"), dir.join("fence_virt.conf"));
    let argv = [
        BIN,
        "daemon",
        "--config",
        toml_path.to_str().unwrap(),
        "--fence-virt-conf",
        fvc_path.to_str().unwrap(),
    ];
    let err_file = std::fs::File::create(dir.join("daemon.err")).unwrap();
    let mut daemon = ns
        .command(&argv)
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = daemon.id();
    let guard = Kill(&mut daemon);

    // The engine lists libvirt's test domain once the driver has read it.
    let mut last = None;
    let listed = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let o = tcp_client(&ns, "list", None, &[]);
        let ok = o.code == Some(0)
            && o.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{:<32} ", "test")) && l.ends_with(" on"));
        last = Some(o);
        ok
    });
    assert!(listed, "fence_virt -o list never showed `test`: {last:?}");
    // No corosync in this namespace: `monitor` says this host cannot fence
    // (fence_virtd would say ok).
    let o = tcp_client(&ns, "monitor", None, &[]);
    assert_eq!(o.code, Some(1), "{o:?}");
    // The answer comes from the engine's router; whatever it is, it is a
    // result byte and it comes in time.
    let o = tcp_client(&ns, "status", Some("test"), &["-t", "25"]);
    assert!(matches!(o.code, Some(0..=2)), "{o:?}");
    let audit = dir.join("audit/audit.jsonl");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the audit log is created at start, 0600");

    // SIGTERM (to the daemon we started, by pid): a clean stop.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = guard.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "daemon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(dir.join("fenceline.log")).unwrap_or_default();
    assert!(log.contains("fence tcp listener ready"), "{log}");
    let err = std::fs::read_to_string(dir.join("daemon.err")).unwrap();
    assert!(
        err.contains(
            "fence_virtd/@module_path = \"/usr/lib/x86_64-linux-gnu/fence-virt\" is not used"
        ),
        "the import's notes are shown: {err}"
    );
}

/// Settings that cannot work stop the daemon at start with a clear message
/// (no namespace needed: it fails before opening any network socket).
#[test]
fn listener_settings_that_cannot_work_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = d.join("key");
    write_key(&key, b"secret");
    let toml_path = d.join("fenceline.toml");
    let run = |extra_toml: &str, fvc: Option<&str>| {
        std::fs::write(
            &toml_path,
            format!(
                "{}[libvirt]\nuris = [\"test:///default\"]\n{extra_toml}",
                daemon_toml(d)
            ),
        )
        .unwrap();
        let mut c = Command::new(BIN);
        c.args(["daemon", "--config"]).arg(&toml_path);
        if let Some(text) = fvc {
            let p = d.join("fence_virt.conf");
            std::fs::write(&p, text).unwrap();
            c.arg("--fence-virt-conf").arg(p);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        finish(c.spawn().unwrap(), &["fenceline", "daemon"])
    };
    let o = run(
        &format!(
            "[listeners.tcp]\nkey_file = \"{}/missing.key\"\nport = 1230\n",
            d.display()
        ),
        None,
    );
    assert_ne!(o.code, Some(0));
    assert!(
        o.stderr.contains("listeners.tcp.key_file") && o.stderr.contains("missing.key"),
        "{o:?}"
    );
    let o = run(
        &format!(
            "[listeners.multicast]\nkey_file = \"{}\"\ninterface = \"no/such-interface-name\"\n",
            key.display()
        ),
        None,
    );
    // A missing interface is waited for; a name no interface can have is refused.
    assert_ne!(o.code, Some(0));
    assert!(
        o.stderr
            .contains("`no/such-interface-name` is not an interface name"),
        "{o:?}"
    );
    // fence_virt.conf owns libvirt.uris: giving them in both is refused.
    let o = run(
        "",
        Some(
            "fence_virtd { listener = \"tcp\"; backend = \"libvirt\"; }\nbackends { libvirt { uri = \"test:///default\"; } }\n",
        ),
    );
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(
        o.stderr.contains("key `libvirt.uris`") && o.stderr.contains("--fence-virt-conf"),
        "{o:?}"
    );
    // A fence_virt.conf error names the file, line and key.
    std::fs::write(&toml_path, daemon_toml(d)).unwrap();
    let p = d.join("fence_virt.conf");
    std::fs::write(
        &p,
        "fence_virtd {\n\tlistener = \"serial\";\n\tbackend = \"libvirt\";\n}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["daemon", "--config"])
        .arg(&toml_path)
        .arg("--fence-virt-conf")
        .arg(&p)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:2:", p.display()))
            && err.contains("fence_virtd/@listener")
            && err.contains("not supported"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Attacks with real sockets: each must fail, be counted, and never reach the
// engine stand-in.

/// A namespace with multicast and tcp (port 1230) on one key, the README's
/// old example.
fn mcast_tcp_ns(rec: Recorder) -> Ns {
    Ns::start(rec, Setup::default(), |c, key| {
        c.listeners.multicast = Some(mcast_cfg(key));
        c.listeners.tcp = Some(tcp_cfg(key));
    })
}

/// A stream request (callback fields zero), signed with fresh random bytes.
fn stream_signed(key: &[u8], op: FenceOp, domain: &str, seq: u32) -> Vec<u8> {
    let mut r = FenceRequest::new(op, domain, seq).unwrap();
    let mut random = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut random)
        .unwrap();
    r.sign(key, HashType::Sha256, random).unwrap();
    r.encode().unwrap().to_vec()
}

/// A TCP connection to the tcp listener (127.0.0.1:1230) made inside the
/// namespace, usable from `rt`.
fn tcp_connect(ns: &Ns, rt: &tokio::runtime::Runtime) -> tokio::net::TcpStream {
    let s = ns.inside(|| std::net::TcpStream::connect("127.0.0.1:1230").unwrap());
    s.set_nonblocking(true).unwrap();
    let _g = rt.enter();
    tokio::net::TcpStream::from_std(s).unwrap()
}

/// Everything the daemon writes until it closes (or 3 s pass).
async fn read_rest(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    out
}

#[test]
fn late_replays_of_a_captured_datagram_are_refused() {
    guard!("late_replays_of_a_captured_datagram_are_refused");
    let rec = recorder();
    let ns = mcast_ns(rec.clone());
    let key = std::fs::read(ns.key()).unwrap();
    // The attacker captured a request that was answered.
    let captured = signed(&key, FenceOp::Off, "vm1", 4711, HashType::Sha256);
    assert_eq!(
        hand_client(&ns, &captured, &key, Duration::from_secs(3)),
        Some(vec![0])
    );
    assert_eq!(rec.calls().len(), 1);
    let base = ns.wait_drops(0);
    // 1 s later: the hosts whose connect-back was not taken used to answer.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        hand_client(&ns, &captured, &key, Duration::from_secs(2)),
        None
    );
    assert_eq!(ns.wait_drops(base + 1), base + 1, "the replay is counted");
    // After fence_virtd's 10 s window (all hosts used to answer "ok").
    std::thread::sleep(Duration::from_secs(9));
    assert_eq!(
        hand_client(&ns, &captured, &key, Duration::from_secs(2)),
        None
    );
    assert_eq!(ns.wait_drops(base + 2), base + 2);
    assert_eq!(rec.calls().len(), 1, "the engine was called once");
    // Real retransmissions stay distinct: two fence_xvm runs, both answered.
    for _ in 0..2 {
        let o = xvm(&ns, "status", Some("vm1"), &[]);
        assert_eq!(o.code, Some(0), "{o:?}");
    }
    assert_eq!(rec.calls().len(), 3);
}

#[test]
fn a_multicast_packet_relayed_to_tcp_gets_no_answer() {
    guard!("a_multicast_packet_relayed_to_tcp_gets_no_answer");
    let rec = recorder();
    let ns = mcast_tcp_ns(rec.clone());
    let key = std::fs::read(ns.key()).unwrap();
    // A fresh multicast packet from the victim, relayed to tcp by a guest
    // without the key, offering the victim's challenge C.
    let fresh = signed(&key, FenceOp::Off, "vm1", 99, HashType::Sha256);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut s = tcp_connect(&ns, &rt);
    let got = rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        s.write_all(&fresh).await.unwrap();
        let _ = s.write_all(&[0x42; 64]).await;
        read_rest(&mut s).await
    });
    assert!(got.is_empty(), "no SHA(key‖C) for the relay: {got:?}");
    assert!(ns.wait_drops(1) >= 1, "the relay is counted");
    assert!(rec.calls().is_empty());
    // The real multicast request is not spoiled by the relayed copy.
    assert_eq!(
        hand_client(&ns, &fresh, &key, Duration::from_secs(3)),
        Some(vec![0])
    );
    assert_eq!(rec.calls().len(), 1);
}

#[test]
fn a_reflected_challenge_gets_no_answer() {
    guard!("a_reflected_challenge_gets_no_answer");
    let rec = recorder();
    let ns = mcast_tcp_ns(rec.clone());
    let key = std::fs::read(ns.key()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut a, mut b) = (tcp_connect(&ns, &rt), tcp_connect(&ns, &rt));
    let (r1, r2) = (
        stream_signed(&key, FenceOp::Off, "vm1", 1),
        stream_signed(&key, FenceOp::Off, "vm1", 2),
    );
    let (answer_b, rest_a) = rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        // Connection A: request, any challenge, then the daemon's challenge D.
        a.write_all(&r1).await.unwrap();
        a.write_all(&[0x11; 64]).await.unwrap();
        let mut ans = [0u8; 64];
        a.read_exact(&mut ans).await.unwrap();
        let mut d = [0u8; 64];
        a.read_exact(&mut d).await.unwrap();
        // Connection B: another request, offering D as its challenge.
        b.write_all(&r2).await.unwrap();
        b.write_all(&d).await.unwrap();
        let answer_b = read_rest(&mut b).await;
        // Without SHA(key‖D), A has nothing to answer with.
        let _ = a.write_all(&[0u8; 64]).await;
        (answer_b, read_rest(&mut a).await)
    });
    assert!(answer_b.is_empty(), "D was answered: {answer_b:?}");
    assert!(rest_a.is_empty(), "{rest_a:?}");
    assert!(ns.wait_drops(2) >= 2, "both refusals counted");
    assert!(rec.calls().is_empty());
}

#[test]
fn connect_backs_to_loopback_are_refused_by_default() {
    guard!("connect_backs_to_loopback_are_refused_by_default");
    let rec = recorder();
    let ns = Ns::start(rec.clone(), Setup::default(), |c, key| {
        c.listeners.multicast = Some(MulticastListener {
            callback_networks: vec![],
            ..mcast_cfg(key)
        });
    });
    let key = std::fs::read(ns.key()).unwrap();
    let probe = signed(&key, FenceOp::Status, "vm1", 5, HashType::Sha256);
    assert_eq!(hand_client(&ns, &probe, &key, Duration::from_secs(2)), None);
    assert_eq!(ns.wait_drops(1), 1, "the refused destination is counted");
    assert!(rec.calls().is_empty());
}

#[test]
fn callback_networks_limit_connect_backs() {
    guard!("callback_networks_limit_connect_backs");
    let rec = recorder();
    let ns = Ns::start(rec.clone(), Setup::default(), |c, key| {
        c.listeners.multicast = Some(MulticastListener {
            callback_networks: vec!["10.0.0.0/24".into()],
            ..mcast_cfg(key)
        });
    });
    let key = std::fs::read(ns.key()).unwrap();
    let probe = signed(&key, FenceOp::Status, "vm1", 6, HashType::Sha256);
    assert_eq!(hand_client(&ns, &probe, &key, Duration::from_secs(2)), None);
    assert_eq!(ns.wait_drops(1), 1);
    assert!(rec.calls().is_empty());
}

#[test]
fn idle_connections_from_one_guest_do_not_block_fencing() {
    guard!("idle_connections_from_one_guest_do_not_block_fencing");
    let rec = recorder();
    let ns = Ns::start(rec.clone(), Setup::default(), |c, key| {
        c.listeners.tcp = Some(tcp_cfg(key));
    });
    // 40 connections from 127.0.0.2 that never send a request (more than
    // the 32 serving slots); the real client comes from 127.0.0.1.
    let idle: Vec<std::net::TcpStream> = ns.inside(|| {
        (0..40)
            .filter_map(|_| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
                let from: SocketAddr = "127.0.0.2:0".parse().unwrap();
                s.bind(&from.into()).unwrap();
                let to: SocketAddr = "127.0.0.1:1230".parse().unwrap();
                s.connect(&to.into())
                    .ok()
                    .map(|()| std::net::TcpStream::from(s))
            })
            .collect()
    });
    assert_eq!(idle.len(), 40);
    let o = tcp_client(&ns, "status", Some("vm1"), &[]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(rec.calls().len(), 1);
    // All but 4 were refused at once; those 4 after 1 s without a request.
    assert_eq!(ns.wait_drops(40), 40);
    drop(idle);
}

#[test]
fn a_key_holder_stalling_handshakes_cannot_take_every_serving_slot() {
    guard!("a_key_holder_stalling_handshakes_cannot_take_every_serving_slot");
    let rec = recorder();
    let ns = Ns::start(rec.clone(), Setup::default(), |c, key| {
        c.listeners.tcp = Some(tcp_cfg(key));
    });
    let key = std::fs::read(ns.key()).unwrap();
    // A guest holding the key, from 127.0.0.2: 36 connections (more than
    // the 32 serving slots), each sends a valid request and then never its
    // challenge, so the daemon waits 10 s in the handshake on each. A few
    // at a time, so each leaves the pre-authentication pool first.
    let mut stalled: Vec<std::net::TcpStream> = Vec::new();
    for seq in 0..36u32 {
        let s = ns.inside(|| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
            let from: SocketAddr = "127.0.0.2:0".parse().unwrap();
            s.bind(&from.into()).unwrap();
            let to: SocketAddr = "127.0.0.1:1230".parse().unwrap();
            s.connect(&to.into()).unwrap();
            std::net::TcpStream::from(s)
        });
        use std::io::Write;
        (&s).write_all(&stream_signed(&key, FenceOp::Status, "vm1", 1000 + seq))
            .unwrap();
        stalled.push(s);
        if seq % 4 == 3 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Past its 24 serving slots the stalling source is refused; the other
    // guest (127.0.0.1, real fence_virt) is answered at once.
    assert!(
        ns.wait_drops(36 - 24) >= 36 - 24,
        "the excess is refused and counted"
    );
    let t0 = Instant::now();
    let o = tcp_client(&ns, "status", Some("vm1"), &[]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "answered without waiting for a slot"
    );
    assert_eq!(
        rec.calls().len(),
        1,
        "no stalled request reached the engine"
    );
    drop(stalled);
}

#[test]
fn real_fence_xvm_retransmissions_are_distinct_packets() {
    guard!("real_fence_xvm_retransmissions_are_distinct_packets");
    // No multicast listener: nobody answers, so fence_xvm retransmits.
    let ns = Ns::start(recorder(), Setup::default(), |c, key| {
        c.listeners.tcp = Some(tcp_cfg(key));
    });
    let capture = ns.inside(|| {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_address(true).unwrap();
        let addr: SocketAddr = "225.0.0.12:1229".parse().unwrap();
        s.bind(&addr.into()).unwrap();
        s.join_multicast_v4(&Ipv4Addr::new(225, 0, 0, 12), &Ipv4Addr::UNSPECIFIED)
            .unwrap();
        UdpSocket::from(s)
    });
    capture
        .set_read_timeout(Some(Duration::from_secs(4)))
        .unwrap();
    let o = xvm(&ns, "status", Some("vm1"), &["-t", "3", "-r", "10"]);
    assert_eq!(o.code, Some(1), "nobody answers: {o:?}");
    let mut rounds = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = capture.recv_from(&mut buf) {
        rounds.push(FenceRequest::parse(&buf[..n]).unwrap());
        if rounds.len() == 3 {
            break;
        }
    }
    assert!(rounds.len() >= 2, "{} packets", rounds.len());
    // One request (same seqno), re-signed with fresh random bytes each time:
    // the replay record never mistakes a retransmission for a replay.
    assert!(rounds.iter().all(|r| r.seqno == rounds[0].seqno));
    for (i, a) in rounds.iter().enumerate() {
        for b in &rounds[i + 1..] {
            assert_ne!(a.random, b.random);
            assert_ne!(a.hash, b.hash);
        }
    }
}
