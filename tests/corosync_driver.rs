//! The corosync driver against a real single-node corosync.
//!
//! The test creates a private network namespace `flcs<random>` with only
//! loopback, starts corosync 3 there (own mount namespace with a tmpfs
//! `/run`), moves its own scenario thread into that namespace with
//! `setns(2)` (libqb IPC uses abstract Unix sockets, which belong to the
//! network namespace) and drives `corosync::spawn` through a full cycle:
//! up → membership/quorum/votes → self-delivered STORE_VM and own-group
//! message → fence_virtd-style and malformed messages from a second CPG
//! handle → SIGKILL of corosync → down → restart → up again → shutdown.
//! Then a second driver with a cluster key and `authenticated_only`: its
//! own sealed messages come back, while an attacker process with a CPG
//! grant but without the key (a forged empty inventory, a wrong key, a
//! sealed message replayed from another process, a fence-agents message)
//! gets nothing through; each attempt is reported as `Unauthenticated`.
//!
//! It needs root, `ip`, `unshare` and `corosync`; otherwise it is skipped
//! with a message. Everything it creates carries the run's prefix and is
//! removed by a `Drop` guard, also on failure. Only processes it started are
//! signalled, by pid.
#![cfg(feature = "lab")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fenceline::engine::InputTx;
use fenceline::engine::corosync::{self, CorosyncConfig};
use fenceline::engine::model::{Effect, Group, Input, LocalDomain, OwnMessage, VmRecord};
use fenceline_proto::api::DomainState;
use fenceline_proto::own;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod common;
use common::run_ok;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Owns the namespace, the scratch directory and the corosync process.
struct Lab {
    prefix: String,
    dir: PathBuf,
    corosync: Option<Child>,
    /// Every corosync pid started, for the /dev/shm cleanup.
    pids: Vec<u32>,
    netns_created: bool,
}

impl Lab {
    fn new() -> Result<Lab, String> {
        let r = (u64::from(std::process::id()) << 20)
            ^ u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0),
            );
        let prefix = format!("flcs{:06x}", r & 0xff_ffff);
        let dir = std::env::temp_dir().join(format!("{prefix}-lab"));
        let mut lab = Lab {
            prefix,
            dir,
            corosync: None,
            pids: Vec::new(),
            netns_created: false,
        };
        std::fs::create_dir_all(lab.dir.join("state")).map_err(|e| e.to_string())?;
        run_ok(&["ip", "netns", "add", &lab.prefix])?;
        lab.netns_created = true;
        run_ok(&["ip", "-n", &lab.prefix, "link", "set", "lo", "up"])?;
        let conf = format!(
            "totem {{\n    version: 2\n    cluster_name: {p}c\n    transport: knet\n    crypto_cipher: none\n    crypto_hash: none\n    token: 1000\n}}\n\
             nodelist {{\n    node {{\n        ring0_addr: 127.0.0.1\n        name: n1\n        nodeid: 1\n    }}\n}}\n\
             quorum {{\n    provider: corosync_votequorum\n}}\n\
             logging {{\n    to_logfile: yes\n    logfile: {d}/corosync.log\n    to_syslog: no\n    to_stderr: no\n    timestamp: hires\n}}\n\
             system {{\n    state_dir: {d}/state\n}}\n",
            p = lab.prefix,
            d = lab.dir.display()
        );
        std::fs::write(lab.dir.join("corosync.conf"), conf).map_err(|e| e.to_string())?;
        Ok(lab)
    }

    fn cluster_name(&self) -> String {
        format!("{}c", self.prefix)
    }

    fn start_corosync(&mut self) -> Result<(), String> {
        let script = format!(
            "mount -t tmpfs tmpfs /run && exec corosync -f -c {}",
            self.dir.join("corosync.conf").display()
        );
        // `ip netns exec` and `unshare` (without --fork) exec in place and
        // the shell execs corosync, so the child's pid is corosync's.
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.prefix,
                "unshare",
                "-m",
                "--propagation",
                "private",
            ])
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start corosync: {e}"))?;
        self.pids.push(child.id());
        self.corosync = Some(child);
        // Ready when a client can read cmap in the namespace.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ok = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.prefix,
                    "corosync-cmapctl",
                    "-g",
                    "totem.cluster_name",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if let Some(c) = self.corosync.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                return Err(format!("corosync exited: {st}; log:\n{}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "corosync not ready after 10 s; log:\n{}",
            self.log_tail()
        ))
    }

    fn kill_corosync(&mut self) {
        if let Some(mut c) = self.corosync.take() {
            let pid = c.id();
            // Only our own child, by pid.
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
            fenceline::sandbox::clean_qb_shm(pid);
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("corosync.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.prefix)
    }
}

/// Kills (by pid, SIGKILL) and reaps a child we started when dropped, also
/// when a test panics.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill_corosync();
        for &pid in &self.pids {
            fenceline::sandbox::clean_qb_shm(pid);
        }
        if self.netns_created {
            let _ = run_ok(&["ip", "netns", "del", &self.prefix]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Moves the calling thread into the lab's network namespace.
fn enter_netns(path: &Path) -> Result<(), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on an fd we own for the duration of the call; it
    // only changes the calling thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("setns: {}", std::io::Error::last_os_error()))
    }
}

/// STORE_VM records in the burst step.
const BURST: usize = 5000;

/// Environment variable that turns [`peer_helper`] into a CPG peer.
const PEER_ENV: &str = "FLCS_PEER_MESSAGES";
/// The group the peer joins.
const PEER_GROUP_ENV: &str = "FLCS_PEER_GROUP";

/// Runs this test binary's `peer_helper` inside the lab namespace; it joins
/// `group`, multicasts `msgs` and exits.
fn spawn_peer(lab: &Lab, group: &str, msgs: &[&[u8]]) -> Child {
    let hex: Vec<String> = msgs
        .iter()
        .map(|m| m.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let exe = std::env::current_exe().expect("current_exe");
    Command::new("ip")
        .args(["netns", "exec", &lab.prefix])
        .arg(exe)
        .args([
            "peer_helper",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PEER_ENV, hex.join(","))
        .env(PEER_GROUP_ENV, group)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn peer helper")
}

/// Not a test on its own: the CPG peer process of `driver_against_real_corosync`.
#[test]
#[ignore = "helper process, run by driver_against_real_corosync"]
fn peer_helper() {
    use rust_corosync::cpg;
    let Ok(spec) = std::env::var(PEER_ENV) else {
        return;
    };
    let msgs: Vec<Vec<u8>> = spec
        .split(',')
        .map(|m| {
            (0..m.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&m[i..i + 2], 16).expect("hex"))
                .collect()
        })
        .collect();
    let h = cpg::initialize(
        &cpg::ModelData::ModelV1(cpg::Model1Data {
            flags: cpg::Model1Flags::None,
            deliver_fn: None,
            confchg_fn: None,
            totem_confchg_fn: None,
        }),
        0,
    )
    .expect("peer cpg_initialize");
    let group = std::env::var(PEER_GROUP_ENV).expect("peer group");
    cpg::join(&h, &group).expect("peer join");
    for m in &msgs {
        cpg::mcast_joined(&h, cpg::Guarantee::TypeAgreed, m).expect("peer mcast");
    }
    std::thread::sleep(Duration::from_millis(300));
    cpg::leave(&h, &group).expect("peer leave");
    drop(h);
}

struct Harness {
    rx: mpsc::Receiver<Input>,
    seen: Vec<String>,
}

impl Harness {
    /// Waits for the first input matching `pred`, skipping others.
    async fn expect(&mut self, what: &str, secs: u64, pred: impl Fn(&Input) -> bool) -> Input {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(i)) => {
                    self.seen.push(format!("{i:?}"));
                    if pred(&i) {
                        return i;
                    }
                }
                Ok(None) => panic!("input channel closed while waiting for {what}"),
                Err(_) => panic!(
                    "timed out after {secs} s waiting for {what}; inputs seen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits until every predicate matched some input, in any order.
    async fn expect_all(&mut self, secs: u64, preds: Vec<(&str, Pred)>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut open = preds;
        while !open.is_empty() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(i)) => {
                    self.seen.push(format!("{i:?}"));
                    open.retain(|(_, p)| !p(&i));
                }
                Ok(None) => panic!("input channel closed"),
                Err(_) => {
                    let names: Vec<&str> = open.iter().map(|(n, _)| *n).collect();
                    panic!(
                        "timed out after {secs} s waiting for {names:?}; inputs seen:\n{}",
                        self.seen.join("\n")
                    )
                }
            }
        }
    }
}

type Pred = Box<dyn Fn(&Input) -> bool>;

fn member_has(list: &[fenceline::engine::model::GroupMember], nodeid: u32, pid: u32) -> bool {
    list.iter().any(|m| m.nodeid == nodeid && m.pid == pid)
}

async fn scenario(lab: &mut Lab) {
    let me = std::process::id();
    let (tx, rx) = InputTx::channel(1024);
    let (eff_tx, eff_rx) = mpsc::channel::<Effect>(64);
    let cancel = CancellationToken::new();
    let cfg = CorosyncConfig {
        fence_group: "fence-agents".into(),
        own_group: format!("{}own", lab.prefix),
        auth: Default::default(),
    };
    let t0 = Instant::now();
    let driver = corosync::spawn(cfg, tx, eff_rx, cancel.clone()).expect("spawn driver");
    let mut h = Harness {
        rx,
        seen: Vec::new(),
    };

    // 1. Up, with the nodelist and the cluster name from cmap.
    let cluster = lab.cluster_name();
    match h
        .expect("CorosyncUp", 10, |i| matches!(i, Input::CorosyncUp { .. }))
        .await
    {
        Input::CorosyncUp {
            local_nodeid,
            cluster_name,
            nodelist,
            ..
        } => {
            assert_eq!(local_nodeid, 1);
            assert_eq!(cluster_name.as_deref(), Some(cluster.as_str()));
            assert_eq!(nodelist, vec![(1, Some("n1".to_string()))]);
        }
        _ => unreachable!(),
    }
    // 2. Quorum, votes and our own join in both groups (any order). Our
    //    own join is a confchg listing the full membership.
    let join = |group: Group| -> Pred {
        Box::new(move |i: &Input| {
            matches!(i, Input::GroupChange { group: g, members, joined, left, .. }
                if *g == group && member_has(members, 1, me) && member_has(joined, 1, me)
                    && left.is_empty() && joined.iter().all(|m| m.reason == "Join"))
        })
    };
    h.expect_all(
        5,
        vec![
            (
                "Quorum",
                Box::new(|i: &Input| {
                    matches!(i, Input::Quorum { quorate: true, members, .. } if members == &[1])
                }),
            ),
            (
                "Votes",
                Box::new(|i: &Input| {
                    matches!(i, Input::Votes { expected: 1, total: 1, quorum: 1, .. })
                }),
            ),
            ("join fence-agents", join(Group::FenceAgents)),
            ("join own group", join(Group::Own)),
        ],
    )
    .await;
    eprintln!("up, quorate and joined after {:?}", t0.elapsed());

    // 3. A STORE_VM effect comes back to us as a PeerRecord from node 1.
    let rec = VmRecord {
        name: "vm1".into(),
        uuid: "8f1e0001-0000-4000-8000-000000000011".into(),
        owner: 1,
        state: DomainState::Running,
    };
    eff_tx
        .send(Effect::StoreVms(vec![rec.clone()]))
        .await
        .expect("send effect");
    let want = rec.clone();
    h.expect(
        "self-delivered PeerRecord",
        5,
        |i| matches!(i, Input::PeerRecord { from: 1, record, .. } if *record == want),
    )
    .await;

    // 3b. A burst of STORE_VMs (one CPG message each) all come back, in
    //     order, with nothing dropped (flow control is retried, not lost).
    let burst: Vec<VmRecord> = (0..BURST)
        .map(|i| VmRecord {
            name: format!("burst-{i:05}"),
            uuid: String::new(),
            owner: 1,
            state: DomainState::Paused,
        })
        .collect();
    let sent_at = Instant::now();
    eff_tx
        .send(Effect::StoreVms(burst.clone()))
        .await
        .expect("send effect");
    for want in &burst {
        let got = h
            .expect("burst PeerRecord", 10, |i| {
                matches!(i, Input::PeerRecord { .. } | Input::Dropped { .. })
            })
            .await;
        match got {
            Input::PeerRecord { record, .. } => assert_eq!(&record, want),
            other => panic!("dropped during burst: {other:?}"),
        }
    }
    eprintln!("{BURST} STORE_VMs looped back in {:?}", sent_at.elapsed());

    // 4. A big own-group message is chunked and comes back in order.
    let vms: Vec<LocalDomain> = (0..6000)
        .map(|i| LocalDomain {
            name: format!("vm-{i:05}"),
            uuid: format!("8f1e0001-0000-4000-8000-{i:012}"),
            state: DomainState::Shutoff,
            migration: None,
        })
        .collect();
    let chunks = own::encode_chunked(&OwnMessage::Vms { vms: vms.clone() }, own::DEFAULT_CHUNK)
        .expect("chunk")
        .len();
    assert!(chunks > 1, "test message should need several chunks");
    eff_tx
        .send(Effect::Own(OwnMessage::Vms { vms: vms.clone() }))
        .await
        .expect("send effect");
    let mut back = Vec::new();
    for _ in 0..chunks {
        match h
            .expect("own Vms chunk", 5, |i| {
                matches!(
                    i,
                    Input::PeerMessage {
                        from: 1,
                        msg: OwnMessage::Vms { .. },
                        ..
                    }
                )
            })
            .await
        {
            Input::PeerMessage {
                msg: OwnMessage::Vms { vms },
                ..
            } => back.extend(vms),
            _ => unreachable!(),
        }
    }
    assert_eq!(back, vms);

    // 5. A second CPG client (another process: corosync allows one join of
    //    a group per pid) sends a fence_virtd-format STORE_VM built by hand
    //    and garbage, then exits.
    let mut store = vec![0u8; 156];
    store[0] = 2;
    store[8..12].copy_from_slice(&[0xff; 4]);
    store[16..21].copy_from_slice(b"alpha");
    store[148] = 7; // s_owner 7: the driver must report the sender (1)
    store[152] = 5; // shutoff
    let peer = KillOnDrop(spawn_peer(lab, "fence-agents", &[&store, b"junk"]));
    let peer_pid = peer.0.id();
    h.expect("peer join confchg", 5, |i| {
        matches!(i, Input::GroupChange { group: Group::FenceAgents, members, joined, .. }
            if members.len() == 2 && member_has(joined, 1, peer_pid))
    })
    .await;
    h.expect("fence_virtd-style PeerRecord", 5, |i| {
        matches!(i, Input::PeerRecord { from: 1, record, .. }
            if record.name == "alpha" && record.uuid.is_empty() && record.owner == 7
                && record.state == DomainState::Shutoff)
    })
    .await;
    h.expect("Malformed", 5, |i| {
        matches!(i, Input::Malformed { group: Group::FenceAgents, from: 1, reason, .. }
            if reason.contains("too short"))
    })
    .await;
    h.expect("peer leave confchg", 5, |i| {
        matches!(i, Input::GroupChange { group: Group::FenceAgents, members, left, .. }
            if members.len() == 1 && member_has(left, 1, peer_pid))
    })
    .await;
    wait_peer(peer).await;

    // 6. corosync dies: CorosyncDown quickly; effects meanwhile are discarded.
    let killed = Instant::now();
    lab.kill_corosync();
    h.expect("CorosyncDown", 5, |i| {
        matches!(i, Input::CorosyncDown { .. })
    })
    .await;
    eprintln!("CorosyncDown {:?} after SIGKILL", killed.elapsed());
    eff_tx
        .send(Effect::StoreVms(vec![rec.clone()]))
        .await
        .expect("send effect while down");

    // 7. corosync comes back: CorosyncUp, then our joins again.
    lab.start_corosync().expect("restart corosync");
    let restarted = Instant::now();
    h.expect("CorosyncUp again", 12, |i| {
        matches!(
            i,
            Input::CorosyncUp {
                local_nodeid: 1,
                ..
            }
        )
    })
    .await;
    eprintln!("CorosyncUp {:?} after restart", restarted.elapsed());
    h.expect_all(
        5,
        vec![
            ("rejoin fence-agents", join(Group::FenceAgents)),
            ("rejoin own group", join(Group::Own)),
            (
                "Quorum again",
                Box::new(|i: &Input| matches!(i, Input::Quorum { quorate: true, .. })),
            ),
        ],
    )
    .await;

    // 8. Shutdown: the driver leaves and its thread ends promptly.
    stop_driver(cancel, driver).await;
    eprintln!("total {:?}", t0.elapsed());
}

/// Cancels the driver and waits (3 s at most) for its thread to end.
async fn stop_driver(cancel: CancellationToken, driver: std::thread::JoinHandle<()>) {
    cancel.cancel();
    let stop = Instant::now();
    while !driver.is_finished() {
        assert!(
            stop.elapsed() < Duration::from_secs(3),
            "driver did not stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    driver.join().expect("driver thread panicked");
}

#[test]
fn driver_against_real_corosync() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED driver_against_real_corosync: needs root (network namespaces)");
        return;
    }
    for tool in ["ip", "unshare", "corosync", "corosync-cmapctl"] {
        if !have(tool) {
            eprintln!("SKIPPED driver_against_real_corosync: `{tool}` not found");
            return;
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("fenceline=debug")),
        )
        .with_test_writer()
        .try_init();
    let mut lab = Lab::new().expect("create lab");
    lab.start_corosync().expect("start corosync");
    let netns = lab.netns_path();
    // The scenario runs on its own thread, moved into the lab namespace; the
    // driver thread it spawns inherits that namespace.
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(&netns).expect("enter netns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(scenario(&mut lab));
            rt.block_on(sealed_scenario(&lab));
        })
        .join()
    });
    if let Err(panic) = result {
        eprintln!("corosync log tail:\n{}", lab.log_tail());
        drop(lab);
        std::panic::resume_unwind(panic);
    }
}

/// Runs `peer` to its end (it exits after sending).
async fn wait_peer(peer: KillOnDrop) {
    let status = tokio::task::spawn_blocking(move || {
        let mut peer = peer;
        peer.0.wait()
    })
    .await
    .expect("join")
    .expect("wait peer");
    assert!(status.success(), "peer helper failed: {status}");
}

/// A driver with a cluster key against a keyless attacker process.
async fn sealed_scenario(lab: &Lab) {
    use fenceline_proto::seal;
    const KEY: [u8; 32] = [0x5a; 32];
    let me = std::process::id();
    let own_group = format!("{}sealed", lab.prefix);
    let (tx, rx) = InputTx::channel(1024);
    let (eff_tx, eff_rx) = mpsc::channel::<Effect>(64);
    let cancel = CancellationToken::new();
    let cfg = CorosyncConfig {
        fence_group: "fence-agents".into(),
        own_group: own_group.clone(),
        auth: corosync::CpgAuth {
            key: Some(KEY.to_vec().into()),
            authenticated_only: true,
        },
    };
    let driver = corosync::spawn(cfg, tx, eff_rx, cancel.clone()).expect("spawn driver");
    let mut h = Harness {
        rx,
        seen: Vec::new(),
    };
    h.expect("own group joined", 10, |i| {
        matches!(i, Input::GroupChange { group: Group::Own, joined, .. } if member_has(joined, 1, me))
    })
    .await;

    // Our own message goes out sealed and comes back opened.
    let vm = LocalDomain {
        name: "sealed-vm".into(),
        uuid: "8f1e0002-0000-4000-8000-000000000001".into(),
        state: DomainState::Running,
        migration: None,
    };
    eff_tx
        .send(Effect::Own(OwnMessage::Vms {
            vms: vec![vm.clone()],
        }))
        .await
        .expect("send effect");
    h.expect("own sealed message back", 5, |i| {
        matches!(i, Input::PeerMessage { from: 1, msg: OwnMessage::Vms { vms }, .. } if *vms == [vm.clone()])
    })
    .await;

    // The attacker: same node, another process, no key.
    let forged = own::encode(&OwnMessage::Vms { vms: vec![] }).expect("encode");
    let wrong_key = seal::seal(&[0x11; 32], &own_group, 1, 4242, &forged);
    // A sealed message as our driver would send it, replayed by the attacker.
    let replayed = seal::seal(&KEY, &own_group, 1, me, &forged);
    let peer = KillOnDrop(spawn_peer(
        lab,
        &own_group,
        &[&forged, &wrong_key, &replayed],
    ));
    for n in 1..=3 {
        h.expect(&format!("Unauthenticated own #{n}"), 5, |i| {
            matches!(
                i,
                Input::Unauthenticated {
                    group: Group::Own,
                    from: 1,
                    ..
                }
            )
        })
        .await;
    }
    wait_peer(peer).await;
    // A fence-agents STORE_VM from a process that never sealed anything.
    let mut store = vec![0u8; 156];
    store[0] = 2;
    store[16..21].copy_from_slice(b"beta1");
    store[152] = 1;
    let peer = KillOnDrop(spawn_peer(lab, "fence-agents", &[&store]));
    h.expect("Unauthenticated fence-agents", 5, |i| {
        matches!(
            i,
            Input::Unauthenticated {
                group: Group::FenceAgents,
                from: 1,
                ..
            }
        )
    })
    .await;
    wait_peer(peer).await;
    // Nothing the attacker sent reached the model.
    h.expect("peer leave confchg", 5, |i| {
        matches!(i, Input::GroupChange { group: Group::FenceAgents, left, .. } if !left.is_empty())
    })
    .await;
    let leaked: Vec<&String> = h
        .seen
        .iter()
        .filter(|s| s.contains("PeerRecord") || s.contains("vms: []"))
        .collect();
    assert!(
        leaked.is_empty(),
        "attacker messages got through: {leaked:?}"
    );

    stop_driver(cancel, driver).await;
}
