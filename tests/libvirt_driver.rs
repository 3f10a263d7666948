//! Integration tests of the libvirt driver against real libvirt (no mocks):
//! the in-process test driver, and a private libvirtd in its own mount
//! namespace for the reconnect test. Run with `--nocapture` and
//! `RUST_LOG=fenceline=debug` to see the driver's logs.

use std::io::Read as _;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fenceline::engine::InputTx;
use fenceline::engine::libvirt::{
    self, CommandError, DomainRef, LibvirtCommand, LibvirtConfig, LibvirtHandle, Tuning,
};
use fenceline::engine::model::{Input, LocalDomain};
use fenceline_proto::api::DomainState;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use virt::connect::Connect;

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("fenceline=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Collects the driver's inputs with timestamps.
struct Feed {
    rt: tokio::runtime::Runtime,
    rx: mpsc::Receiver<Input>,
    log: Vec<(Duration, Input)>,
    origin: Instant,
}

impl Feed {
    fn new(rx: mpsc::Receiver<Input>) -> Self {
        Feed {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap(),
            rx,
            log: Vec::new(),
            origin: Instant::now(),
        }
    }

    fn next(&mut self, timeout: Duration) -> Option<Input> {
        let rx = &mut self.rx;
        let got = self.rt.block_on(async {
            tokio::time::timeout(timeout, rx.recv())
                .await
                .ok()
                .flatten()
        });
        if let Some(i) = &got {
            self.log.push((self.origin.elapsed(), i.clone()));
        }
        got
    }

    /// The first input matching `pred` within `timeout`; panics (with the
    /// log) otherwise.
    fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Input) -> bool) -> Input {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(i) if pred(&i) => return i,
                Some(_) => {}
                None => panic!(
                    "timed out waiting for {what}; inputs so far:\n{}",
                    self.dump()
                ),
            }
        }
    }

    /// Everything that arrives within `dur`.
    fn collect(&mut self, dur: Duration) -> Vec<Input> {
        let until = Instant::now() + dur;
        let mut out = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            if let Some(i) = self.next(left) {
                out.push(i);
            }
        }
    }

    fn dump(&self) -> String {
        self.log
            .iter()
            .map(|(t, i)| format!("  {:>8.3}s {i:?}", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn domain_update<'a>(i: &'a Input, name: &str) -> Option<&'a LocalDomain> {
    match i {
        Input::LocalDomain { domain, .. } if domain.name == name => Some(domain),
        _ => None,
    }
}

fn is_state(i: &Input, name: &str, state: DomainState) -> bool {
    domain_update(i, name).is_some_and(|d| d.state == state)
}

fn listing(i: &Input) -> Option<&Vec<LocalDomain>> {
    match i {
        Input::LocalList { domains, .. } => Some(domains),
        _ => None,
    }
}

fn link(i: &Input) -> Option<bool> {
    match i {
        Input::LibvirtLink { connected, .. } => Some(*connected),
        _ => None,
    }
}

/// Cancels and checks that every worker thread exits promptly.
fn shut_down(handle: LibvirtHandle, cancel: &CancellationToken) -> Duration {
    let t = Instant::now();
    cancel.cancel();
    for th in handle.threads {
        th.join().expect("worker panicked");
    }
    t.elapsed()
}

#[test]
fn test_driver_lifecycle_and_commands() {
    init_logs();
    libvirt::prepare().unwrap();
    let started = Instant::now();
    // test:///default is shared by the connections of this process while
    // any of them is open: ours drives the changes, the driver sees them.
    let conn = Connect::open(Some("test:///default")).unwrap();
    let (tx, rx) = InputTx::channel(1024);
    let mut feed = Feed::new(rx);
    let cancel = CancellationToken::new();
    let handle = libvirt::spawn(
        LibvirtConfig {
            uris: vec!["test:///default".into()],
            reconcile_interval: Duration::from_secs(60),
        },
        tx,
        cancel.clone(),
    )
    .unwrap();

    let first = feed.wait_for("link up", Duration::from_secs(5), |i| link(i).is_some());
    assert_eq!(link(&first), Some(true), "{first:?}");
    let list = feed.wait_for("listing", Duration::from_secs(2), |i| listing(i).is_some());
    let doms = listing(&list).unwrap();
    let test = doms.iter().find(|d| d.name == "test").expect("domain test");
    assert_eq!(test.state, DomainState::Running);
    assert_eq!(test.uuid.len(), 36);
    let uuid = test.uuid.clone();

    let dom = conn.lookup_domain_by_name("test").unwrap();
    dom.destroy().unwrap();
    let i = feed.wait_for("test shut off", Duration::from_secs(2), |i| {
        is_state(i, "test", DomainState::Shutoff)
    });
    assert_eq!(domain_update(&i, "test").unwrap().uuid, uuid);

    dom.create().unwrap();
    feed.wait_for("test running", Duration::from_secs(2), |i| {
        is_state(i, "test", DomainState::Running)
    });

    // A pause by the user is not a reboot: reported at once, not held.
    let t = Instant::now();
    dom.suspend().unwrap();
    feed.wait_for("test paused", Duration::from_secs(2), |i| {
        is_state(i, "test", DomainState::Paused)
    });
    let pause_latency = t.elapsed();
    assert!(
        pause_latency < Duration::from_millis(700),
        "user pause held for {pause_latency:?}"
    );
    dom.resume().unwrap();
    feed.wait_for("test resumed", Duration::from_secs(2), |i| {
        is_state(i, "test", DomainState::Running)
    });

    // Define and undefine a domain: appears shut off, then gone.
    let xml = "<domain type='test'><name>flt-probe</name><memory>1024</memory>\
               <os><type>hvm</type></os></domain>";
    let probe = conn.define_domain_xml(xml).unwrap();
    feed.wait_for("probe defined", Duration::from_secs(2), |i| {
        is_state(i, "flt-probe", DomainState::Shutoff)
    });
    probe.undefine().unwrap();
    drop(probe);
    feed.wait_for(
        "probe gone",
        Duration::from_secs(2),
        |i| matches!(i, Input::LocalGone { name, .. } if name == "flt-probe"),
    );

    // Commands, run on the worker thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let exec = |cmd| rt.block_on(handle.execute_timeout(0, cmd, Duration::from_secs(5)));
    let r = exec(LibvirtCommand::State(DomainRef::parse("test"))).unwrap();
    assert_eq!((r.name.as_str(), r.state), ("test", DomainState::Running));
    assert_eq!(r.uuid, uuid);
    let r = exec(LibvirtCommand::Destroy(DomainRef::parse(
        &uuid.to_uppercase(),
    )))
    .unwrap();
    assert_eq!(r.state, DomainState::Shutoff);
    feed.wait_for("destroyed by command", Duration::from_secs(2), |i| {
        is_state(i, "test", DomainState::Shutoff)
    });
    // Idempotent: destroying a shut-off domain succeeds.
    let r = exec(LibvirtCommand::Destroy(DomainRef::parse("test"))).unwrap();
    assert_eq!(r.state, DomainState::Shutoff);
    let r = exec(LibvirtCommand::Start(DomainRef::parse("test"))).unwrap();
    assert_eq!(r.state, DomainState::Running);
    feed.wait_for("started by command", Duration::from_secs(2), |i| {
        is_state(i, "test", DomainState::Running)
    });
    assert!(matches!(
        exec(LibvirtCommand::State(DomainRef::parse("no-such-domain"))),
        Err(CommandError::NotFound(_))
    ));
    assert!(matches!(
        rt.block_on(handle.execute_timeout(
            7,
            LibvirtCommand::State(DomainRef::parse("test")),
            Duration::from_secs(1)
        )),
        Err(CommandError::NoSuchUri(7))
    ));

    // No flapping: nothing else arrives for the domain.
    let extra = feed.collect(Duration::from_millis(300));
    assert!(extra.is_empty(), "unexpected inputs: {extra:?}");

    let stats = handle.stats(0).unwrap();
    assert_eq!(stats.connects, 1);
    assert_eq!(stats.dropped_events, 0);
    assert!(stats.connected);
    let stop = shut_down(handle, &cancel);
    assert!(stop < Duration::from_secs(1), "shutdown took {stop:?}");
    drop(dom);
    drop(conn);
    eprintln!(
        "test driver scenario: {:?} (shutdown {stop:?}, user pause reported after {pause_latency:?})\n{}",
        started.elapsed(),
        feed.dump()
    );
}

// ---------------------------------------------------------------------------
// A private libvirtd in its own mount namespace.

/// A mount namespace (held by a `sleep` process) with private /run and
/// libvirt state directories, and a libvirtd started inside it. Drop kills
/// only the processes it started, by pid.
struct PrivateLibvirt {
    dir: tempfile::TempDir,
    holder: Child,
    daemon: Option<Child>,
    /// virtlogd, for qemu domains.
    logd: Option<Child>,
    starts: u32,
    /// qemu domains to destroy on teardown.
    domains: Vec<String>,
}

impl PrivateLibvirt {
    /// All of /etc/libvirt is a private tmpfs, so libvirtd writes nothing to
    /// the host's config. `qemu`: also a qemu.conf (root, no security
    /// driver) and virtlogd.
    fn start(qemu: bool) -> Option<Self> {
        let dir = tempfile::Builder::new()
            .prefix("flt-lvdrv-")
            .tempdir()
            .ok()?;
        let conf = dir.path().join("qemu.conf");
        std::fs::write(
            &conf,
            "user = \"root\"\ngroup = \"root\"\nsecurity_driver = \"none\"\n",
        )
        .ok()?;
        let copy = if qemu {
            format!("cp {} /etc/libvirt/qemu.conf; ", conf.display())
        } else {
            String::new()
        };
        let script = format!(
            "set -e; \
            for d in /run /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /etc/libvirt; do \
              mount -t tmpfs tmpfs $d; done; \
            mkdir -p /var/lib/libvirt/qemu /var/cache/libvirt/qemu /var/log/libvirt/qemu \
              /etc/libvirt/qemu/networks /run/libvirt; {copy}\
            touch /run/flt-ns-ready; \
            exec sleep 100000"
        );
        let holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .ok()?;
        let mut me = PrivateLibvirt {
            dir,
            holder,
            daemon: None,
            logd: None,
            starts: 0,
            domains: Vec::new(),
        };
        let ready = format!("/proc/{}/root/run/flt-ns-ready", me.holder.id());
        let until = Instant::now() + Duration::from_secs(5);
        while !std::path::Path::new(&ready).exists() {
            if Instant::now() > until || me.holder.try_wait().ok().flatten().is_some() {
                eprintln!("cannot set up a private mount namespace; skipping");
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if qemu {
            let logd = Command::new("nsenter")
                .args(["-t", &me.holder.id().to_string(), "-m", "virtlogd"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            me.logd = Some(logd);
        }
        Some(me)
    }

    fn socket(&self) -> String {
        format!("/proc/{}/root/run/libvirt/libvirt-sock", self.holder.id())
    }

    fn uri(&self) -> String {
        format!("test+unix:///default?socket={}", self.socket())
    }

    fn qemu_uri(&self) -> String {
        format!("qemu+unix:///system?socket={}", self.socket())
    }

    fn virsh(&self, uri: &str, args: &[&str]) -> std::process::Output {
        Command::new("virsh")
            .args(["-c", uri])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn start_daemon(&mut self) {
        assert!(self.daemon.is_none());
        self.starts += 1;
        let err = std::fs::File::create(
            self.dir
                .path()
                .join(format!("libvirtd-{}.err", self.starts)),
        )
        .unwrap();
        // nsenter execs libvirtd (mount namespace only): the child is libvirtd.
        let child = Command::new("nsenter")
            .args(["-t", &self.holder.id().to_string(), "-m", "libvirtd"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(self.socket()).is_err() {
            assert!(
                Instant::now() < until,
                "libvirtd did not come up: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            terminate(&mut child);
        }
    }

    fn stderr(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(
            self.dir
                .path()
                .join(format!("libvirtd-{}.err", self.starts)),
        ) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

/// SIGTERM by pid, then SIGKILL if it does not exit within 5 s; reaps it.
fn terminate(child: &mut Child) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: plain kill(2) on a child we spawned and have not reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for PrivateLibvirt {
    fn drop(&mut self) {
        let root = format!("/proc/{}/root", self.holder.id());
        for name in std::mem::take(&mut self.domains) {
            if self.daemon.is_some() {
                let _ = self.virsh(&self.qemu_uri(), &["destroy", &name]);
            }
            // libvirtd leaves running guests alone when it stops: kill our
            // QEMU by the pid libvirt recorded, if it is still there.
            let pidfile = format!("{root}/run/libvirt/qemu/{name}.pid");
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<libc::pid_t>().ok())
                && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.contains(&name))
            {
                // SAFETY: kill(2) on the QEMU process of our own domain.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        self.stop_daemon();
        if let Some(mut logd) = self.logd.take() {
            terminate(&mut logd);
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// As root: a private libvirtd (test driver only) with its daemon running;
/// `None` (the test is skipped) otherwise.
fn private_libvirt_as_root() -> Option<PrivateLibvirt> {
    init_logs();
    if !nix_root() {
        eprintln!("not root; skipping");
        return None;
    }
    let mut lv = PrivateLibvirt::start(false)?;
    lv.start_daemon();
    Some(lv)
}

#[test]
fn private_libvirtd_loss_and_reconnect() {
    let Some(mut lv) = private_libvirt_as_root() else {
        return;
    };
    let uri = lv.uri();
    let (tx, rx) = InputTx::channel(1024);
    let mut feed = Feed::new(rx);
    let cancel = CancellationToken::new();
    let tuning = Tuning::default();
    let handle = libvirt::spawn_with(
        LibvirtConfig {
            uris: vec![uri.clone()],
            reconcile_interval: Duration::from_secs(60),
        },
        tuning.clone(),
        tx,
        cancel.clone(),
    )
    .unwrap();

    let i = feed.wait_for("link up", Duration::from_secs(5), |i| link(i).is_some());
    assert_eq!(link(&i), Some(true), "{i:?}");
    let l = feed.wait_for("listing", Duration::from_secs(2), |i| listing(i).is_some());
    assert!(
        listing(&l)
            .unwrap()
            .iter()
            .any(|d| d.name == "test" && d.state == DomainState::Running)
    );

    // A change made by another client reaches the driver as an event.
    let out = lv.virsh(&uri, &["destroy", "test"]);
    assert!(out.status.success(), "virsh: {out:?}");
    feed.wait_for("destroy event", Duration::from_secs(2), |i| {
        is_state(i, "test", DomainState::Shutoff)
    });

    // Lose the daemon: the close callback reports EOF almost at once.
    let killed = Instant::now();
    lv.stop_daemon();
    let i = feed.wait_for("link down", Duration::from_secs(3), |i| link(i).is_some());
    let down_after = killed.elapsed();
    assert_eq!(link(&i), Some(false), "{i:?}");
    assert!(
        down_after < Duration::from_millis(1500),
        "loss noticed after {down_after:?}"
    );
    let attempts_at_loss = handle.stats(0).unwrap().connect_attempts;

    // Stay down for a while: reconnect attempts must back off.
    let gap = Duration::from_millis(3500);
    let during = feed.collect(gap);
    assert!(during.is_empty(), "inputs while down: {during:?}");
    let attempts_in_gap = handle.stats(0).unwrap().connect_attempts - attempts_at_loss;
    // 0.5 s, 1 s, 2 s (±20 %) → 2 or 3 attempts in 3.5 s; a busy loop would make hundreds.
    assert!(
        (1..=4).contains(&attempts_in_gap),
        "{attempts_in_gap} attempts in {gap:?}"
    );

    // A new daemon (the test driver's state starts afresh): reconnected and re-listed.
    let restarted = Instant::now();
    lv.start_daemon();
    let i = feed.wait_for("link up again", Duration::from_secs(10), |i| {
        link(i).is_some()
    });
    assert_eq!(link(&i), Some(true), "{i:?}");
    let l = feed.wait_for("fresh listing", Duration::from_secs(2), |i| {
        listing(i).is_some()
    });
    assert!(
        listing(&l)
            .unwrap()
            .iter()
            .any(|d| d.name == "test" && d.state == DomainState::Running),
        "{l:?}"
    );
    let reconnect_after = restarted.elapsed();
    let stats = handle.stats(0).unwrap();
    assert_eq!(stats.connects, 2);
    assert_eq!(stats.disconnects, 1);

    // Events flow on the new connection.
    let out = lv.virsh(&uri, &["suspend", "test"]);
    assert!(out.status.success(), "virsh: {out:?}");
    feed.wait_for("suspend event", Duration::from_secs(2), |i| {
        is_state(i, "test", DomainState::Paused)
    });

    let stop = shut_down(handle, &cancel);
    assert!(stop < Duration::from_secs(1), "shutdown took {stop:?}");
    eprintln!(
        "reconnect scenario: loss noticed after {down_after:?}, {attempts_in_gap} attempts in {gap:?}, \
         reconnected {reconnect_after:?} after restart, shutdown {stop:?}\n{}",
        feed.dump()
    );
}

/// A hung (SIGSTOPped) libvirtd is detected by keepalive, and a reconnect
/// attempt stuck in `virConnectOpen` does not delay shutdown.
#[test]
fn private_libvirtd_hang_detected_by_keepalive() {
    let Some(lv) = private_libvirt_as_root() else {
        return;
    };
    let (tx, rx) = InputTx::channel(1024);
    let mut feed = Feed::new(rx);
    let cancel = CancellationToken::new();
    let tuning = Tuning {
        keepalive_interval: 1,
        keepalive_count: 1,
        backoff_initial: Duration::from_millis(200),
        ..Tuning::default()
    };
    let handle = libvirt::spawn_with(
        LibvirtConfig {
            uris: vec![lv.uri()],
            reconcile_interval: Duration::from_secs(60),
        },
        tuning,
        tx,
        cancel.clone(),
    )
    .unwrap();
    feed.wait_for("listing", Duration::from_secs(5), |i| listing(i).is_some());

    let pid = libc::pid_t::try_from(lv.daemon.as_ref().unwrap().id()).unwrap();
    // SAFETY: kill(2) on the libvirtd we started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let stopped = Instant::now();
    let i = feed.wait_for("link down", Duration::from_secs(8), |i| link(i).is_some());
    let detected = stopped.elapsed();
    match &i {
        Input::LibvirtLink {
            connected: false,
            error: Some(e),
            ..
        } => assert!(e.contains("keepalive"), "{e}"),
        other => panic!("unexpected {other:?}"),
    }
    // Give the reconnect attempt time to get stuck on the stopped daemon.
    std::thread::sleep(Duration::from_millis(800));
    let attempts = handle.stats(0).unwrap().connect_attempts;
    let stop = shut_down(handle, &cancel);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(attempts >= 2, "no reconnect attempt ({attempts})");
    assert!(stop < Duration::from_secs(1), "shutdown took {stop:?}");
    eprintln!(
        "hang scenario: keepalive loss after {detected:?}, shutdown with a stuck connect {stop:?}\n{}",
        feed.dump()
    );
}

/// A real (TCG) qemu guest: `virsh reset` must surface as one
/// `LocalRebooted` per reset, with no state flapping.
#[test]
fn qemu_reset_is_a_reboot_not_a_flap() {
    init_logs();
    if !nix_root() || !std::path::Path::new("/usr/bin/qemu-system-x86_64").exists() {
        eprintln!("no root or no qemu-system-x86_64; skipping");
        return;
    }
    let Some(mut lv) = PrivateLibvirt::start(true) else {
        return;
    };
    lv.start_daemon();
    let uri = lv.qemu_uri();
    let name = format!("flt-lvdrv-{}", std::process::id());
    let xml = format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type></os><features><acpi/></features>\
         <on_reboot>restart</on_reboot>\
         <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices></domain>"
    );
    let xml_path = lv.dir.path().join("dom.xml");
    std::fs::write(&xml_path, xml).unwrap();
    lv.domains.push(name.clone());
    let out = lv.virsh(&uri, &["define", &xml_path.display().to_string()]);
    assert!(out.status.success(), "define: {out:?}");

    let (tx, rx) = InputTx::channel(1024);
    let mut feed = Feed::new(rx);
    let cancel = CancellationToken::new();
    let handle = libvirt::spawn(
        LibvirtConfig {
            uris: vec![uri.clone()],
            reconcile_interval: Duration::from_secs(60),
        },
        tx,
        cancel.clone(),
    )
    .unwrap();
    let l = feed.wait_for("listing", Duration::from_secs(10), |i| listing(i).is_some());
    assert!(
        listing(&l)
            .unwrap()
            .iter()
            .any(|d| d.name == name && d.state == DomainState::Shutoff),
        "{l:?}"
    );

    // Start through the driver's command path.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let r = rt
        .block_on(handle.execute_timeout(
            0,
            LibvirtCommand::Start(DomainRef::parse(&name)),
            Duration::from_secs(20),
        ))
        .unwrap();
    assert_eq!(r.state, DomainState::Running);
    feed.wait_for("running", Duration::from_secs(5), |i| {
        is_state(i, &name, DomainState::Running)
    });
    // Let the firmware settle (its own resets would count as reboots).
    let _ = feed.collect(Duration::from_millis(1500));

    for round in 1..=2 {
        let t = Instant::now();
        let out = lv.virsh(&uri, &["reset", &name]);
        assert!(out.status.success(), "reset: {out:?}");
        feed.wait_for(
            "rebooted",
            Duration::from_secs(3),
            |i| matches!(i, Input::LocalRebooted { name: n, .. } if *n == name),
        );
        let latency = t.elapsed();
        // Longer than the hold window: nothing else may follow.
        let after = feed.collect(Duration::from_millis(2000));
        let noise: Vec<&Input> = after
            .iter()
            .filter(|i| match i {
                Input::LocalRebooted { name: n, .. } | Input::LocalGone { name: n, .. } => {
                    *n == name
                }
                Input::LocalDomain { domain, .. } => domain.name == name,
                _ => false,
            })
            .collect();
        assert!(
            noise.is_empty(),
            "round {round}: after the reboot: {noise:?}"
        );
        eprintln!("reset {round}: LocalRebooted after {latency:?}");
    }

    let r = rt
        .block_on(handle.execute_timeout(
            0,
            LibvirtCommand::Destroy(DomainRef::parse(&name)),
            Duration::from_secs(20),
        ))
        .unwrap();
    assert_eq!(r.state, DomainState::Shutoff);
    feed.wait_for("shut off", Duration::from_secs(5), |i| {
        is_state(i, &name, DomainState::Shutoff)
    });
    let stop = shut_down(handle, &cancel);
    assert!(stop < Duration::from_secs(1), "shutdown took {stop:?}");
    eprintln!("qemu scenario: shutdown {stop:?}\n{}", feed.dump());
}

fn nix_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
