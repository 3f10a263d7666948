//! Network hook events on a real 2-node corosync cluster in network
//! namespaces, each node with its private libvirtd (qemu:///system with the
//! real network driver, which runs the hooks) and the fenceline hook
//! installed by `fenceline install-hook` into that libvirtd's private
//! /etc/libvirt/hooks before it starts. Nothing is mocked: the hook runs
//! because libvirtd runs it; the one stand-in is the "slow daemon" below, a
//! socket the test binds and never reads, which is what a hung daemon is.
//!
//! Needs root; each test builds its own lab with a unique prefix and tears
//! it down on every exit path (the `Lab` drops on panic too).
#![cfg(feature = "lab")]

use std::time::{Duration, Instant};

use fenceline::sandbox::{Lab, LabSpec, QEMU_URI, lab_test_guard};
use serde_json::Value;

mod common;
use common::{CONVERGE, bin, events, wait_status};

fn lab() -> Lab {
    let spec = LabSpec {
        nodes: 2,
        fenceline_bin: Some(bin()),
        uris: vec![QEMU_URI.to_string()],
        network_hooks: true,
        ..LabSpec::default()
    };
    common::lab(spec)
}

/// Polls node `i`'s events until `pred` holds for the list; panics with the
/// network events seen on timeout.
fn wait_events(lab: &Lab, i: usize, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let t0 = Instant::now();
    let mut last = Vec::new();
    while t0.elapsed() < CONVERGE {
        last = events(lab, i);
        if pred(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let net: Vec<&Value> = last
        .iter()
        .filter(|e| e["kind"] == "network-hook" || e["kind"] == "network")
        .collect();
    panic!(
        "node {i}: timed out waiting for {what}; network events:\n{}",
        serde_json::to_string_pretty(&net).unwrap_or_default()
    );
}

fn hook_ops<'a>(evs: &'a [Value], node: u64, network: &str) -> Vec<&'a Value> {
    evs.iter()
        .filter(|e| e["kind"] == "network-hook" && e["node"] == node && e["network"] == network)
        .collect()
}

fn has_op(evs: &[Value], node: u64, network: &str, op: &str, subop: &str) -> bool {
    hook_ops(evs, node, network)
        .iter()
        .any(|e| e["op"] == op && e["subop"] == subop)
}

fn has_lifecycle(evs: &[Value], node: u64, network: &str, action: &str) -> bool {
    evs.iter().any(|e| {
        e["kind"] == "network"
            && e["node"] == node
            && e["network"] == network
            && e["action"] == action
    })
}

fn network<'a>(v: &'a Value, node: u64, name: &str) -> Option<&'a Value> {
    v["networks"]
        .as_array()?
        .iter()
        .find(|n| n["node"] == node && n["name"] == name)
}

#[test]
fn hook_events_cross_the_cluster_with_ports_and_replays() {
    if !lab_test_guard("hook_events_cross_the_cluster_with_ports_and_replays") {
        return;
    }
    let lab = lab();
    // The lab installed the hook through the real command.
    let hooks = lab
        .node_path(1, "/etc/libvirt/hooks/network.d/50-fenceline")
        .unwrap();
    let script = std::fs::read_to_string(&hooks).expect("hook installed");
    // cargo builds the small `fenceline-hook` next to `fenceline`, so the
    // wrapper runs it (no libvirt/corosync libraries to load).
    assert!(
        script.contains("/fenceline-hook' --socket '/run/fenceline/hook.sock' network \"$@\""),
        "{script}"
    );
    // Every node got its default network; node 2 sees node 1's in the view.
    wait_status(&lab, 2, "node 1's net1 in node 2's view", CONVERGE, |v| {
        network(v, 1, "net1").is_some_and(|n| n["active"] == true)
            && network(v, 2, "net2").is_some()
    });

    // 1. A real network defined, started, updated, stopped on node 1.
    let net = "hooknet";
    let bridge = lab.bridge_name(1, "hk");
    lab.define_network(1, net, &bridge).unwrap();
    let t_start = Instant::now();
    lab.virsh_uri(1, QEMU_URI, &["net-start", net]).unwrap();
    let start_ms = t_start.elapsed().as_millis();
    lab.virsh_uri(
        1,
        QEMU_URI,
        &[
            "net-update",
            net,
            "add-last",
            "portgroup",
            "<portgroup name='pg1'/>",
            "--live",
            "--config",
        ],
    )
    .unwrap();
    let evs = wait_events(&lab, 2, "start/started/updated of node 1 on node 2", |e| {
        has_op(e, 1, net, "start", "begin")
            && has_op(e, 1, net, "started", "begin")
            && has_op(e, 1, net, "updated", "begin")
            && has_lifecycle(e, 1, net, "defined")
            && has_lifecycle(e, 1, net, "started")
    });
    let started = hook_ops(&evs, 1, net)
        .into_iter()
        .find(|e| e["op"] == "started")
        .unwrap();
    assert_eq!(started["bridge"], bridge.as_str());
    assert!(
        started["network_uuid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    // libvirt lifecycle events also come from node 1 only (node 2 has no such network).
    assert!(!has_lifecycle(&evs, 2, net, "started"));
    eprintln!("net-start with the hook installed took {start_ms} ms");

    // 2. A real qemu domain with an interface on it: port-created with the owner.
    let vm = "hookvm1";
    let uuid = lab.start_qemu_domain_on(1, vm, Some(net)).unwrap();
    let mac = Lab::qemu_domain_mac(&uuid);
    let evs = wait_events(&lab, 2, "port-created on node 2", |e| {
        has_op(e, 1, net, "port-created", "begin")
    });
    let created = hook_ops(&evs, 1, net)
        .into_iter()
        .find(|e| e["op"] == "port-created")
        .unwrap()
        .clone();
    assert_eq!(created["port"]["owner"], vm);
    assert_eq!(created["port"]["owner_uuid"], uuid.as_str());
    assert_eq!(created["port"]["mac"], mac.as_str());
    assert_eq!(created["port"]["plug"], "bridge");
    assert!(
        created.get("replay").is_none(),
        "a first plug is no replay: {created}"
    );
    let port_uuid = created["port"]["uuid"].as_str().unwrap().to_string();
    // The networks view on node 2 shows the port with its owner VM.
    wait_status(&lab, 2, "the port in node 2's view", CONVERGE, |v| {
        network(v, 1, net).is_some_and(|n| {
            n["active"] == true
                && n["ports"].as_array().is_some_and(|p| {
                    p.len() == 1 && p[0]["owner"] == vm && p[0]["uuid"] == port_uuid.as_str()
                })
        })
    });
    // The text status has the Networks section.
    let text = lab.fenceline(2, &["status"]).unwrap().stdout;
    assert!(
        text.contains("Networks (") && text.contains(net) && text.contains(vm),
        "{text}"
    );

    // 3. libvirtd restarts with the VM running: libvirt replays port-created.
    lab.restart_libvirtd(1).unwrap();
    let evs = wait_events(&lab, 2, "the replayed port-created on node 2", |e| {
        hook_ops(e, 1, net)
            .iter()
            .any(|x| x["op"] == "port-created" && x["replay"] == true)
    });
    let replays: Vec<&Value> = hook_ops(&evs, 1, net)
        .into_iter()
        .filter(|x| x["op"] == "port-created")
        .collect();
    assert_eq!(replays.len(), 2, "one plug and one replay: {replays:?}");
    assert_eq!(replays[1]["port"]["uuid"], port_uuid.as_str());
    // Node 1 itself shows the same.
    let evs1 = events(&lab, 1);
    assert!(
        hook_ops(&evs1, 1, net)
            .iter()
            .any(|x| x["op"] == "port-created" && x["replay"] == true)
    );

    // 4. The VM stops: port-deleted with the owner; the port leaves the view.
    lab.virsh_uri(1, QEMU_URI, &["destroy", vm]).unwrap();
    let evs = wait_events(&lab, 2, "port-deleted on node 2", |e| {
        has_op(e, 1, net, "port-deleted", "begin")
    });
    let deleted = hook_ops(&evs, 1, net)
        .into_iter()
        .find(|e| e["op"] == "port-deleted")
        .unwrap();
    assert_eq!(deleted["port"]["owner"], vm);
    assert_eq!(deleted["port"]["mac"], mac.as_str());
    wait_status(&lab, 2, "no port left", CONVERGE, |v| {
        network(v, 1, net).is_some_and(|n| n["ports"].as_array().is_some_and(Vec::is_empty))
    });

    // 5. Stopped: hook `stopped end` and the lifecycle event; the view says inactive.
    lab.virsh_uri(1, QEMU_URI, &["net-destroy", net]).unwrap();
    wait_events(&lab, 2, "stopped on node 2", |e| {
        has_op(e, 1, net, "stopped", "end") && has_lifecycle(e, 1, net, "stopped")
    });
    wait_status(&lab, 2, "node 1's network inactive", CONVERGE, |v| {
        network(v, 1, net).is_some_and(|n| n["active"] == false)
    });
    lab.virsh_uri(1, QEMU_URI, &["net-undefine", net]).unwrap();
    wait_events(&lab, 2, "undefined on node 2", |e| {
        has_lifecycle(e, 1, net, "undefined")
    });
    wait_status(&lab, 2, "node 1's network gone", CONVERGE, |v| {
        network(v, 1, net).is_none()
    });

    // Order on the origin: libvirt's order, not shuffled.
    let ops: Vec<String> = hook_ops(&events(&lab, 1), 1, net)
        .iter()
        .map(|e| e["op"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        ops,
        [
            "start",
            "started",
            "updated",
            "port-created",
            "port-created",
            "port-deleted",
            "stopped"
        ],
    );
    let s1 = lab.status_json(1).unwrap();
    assert_eq!(
        s1["counters"]["dropped_hook_events"], 0,
        "{}",
        s1["counters"]
    );
}

/// Sends `n` hook reports (what `fenceline hook` sends) to `sock`, each
/// with the hook's 1 s limit; returns how many could not be delivered.
fn blast(sock: &std::path::Path, thread: usize, n: usize) -> u64 {
    use fenceline_proto::hook::{HookReport, data::HookArgs};
    let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
    s.connect(sock).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let xml = include_bytes!("../proto/src/hook/testdata/updated.xml");
    let mut failed = 0;
    for k in 0..n {
        let extra = format!("{thread}-{k}");
        let args = HookArgs::parse(&["burst", "updated", "begin", extra.as_str()]).unwrap();
        let msg = HookReport::build(&args, Ok(xml), fenceline_proto::api::now_millis()).encode();
        if s.send(&msg).is_err() {
            failed += 1;
        }
    }
    failed
}

/// Runs `fenceline hook` inside node `i` with `stdin` and returns (exit code,
/// stderr, wall time).
fn run_hook(lab: &Lab, i: usize, args: &[&str], stdin: &[u8]) -> (i32, String, Duration) {
    use std::io::Write as _;
    let b = bin().to_string_lossy().into_owned();
    let mut argv = vec![b.as_str(), "hook"];
    argv.extend_from_slice(args);
    let mut c = lab.node_command(i, &argv).unwrap();
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let t0 = Instant::now();
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // The hook may stop reading at its deadline; a broken pipe is fine here.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    let took = t0.elapsed();
    let _ = writer.join();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        took,
    )
}

#[test]
fn hook_never_blocks_libvirt_and_bad_input_and_bursts_end_clearly() {
    if !lab_test_guard("hook_never_blocks_libvirt_and_bad_input_and_bursts_end_clearly") {
        return;
    }
    let lab = lab();
    let good = include_bytes!("../proto/src/hook/testdata/updated.xml");

    // 1. Malformed XML: exit 0, a raw event with the parse error everywhere.
    let (rc, err, took) = run_hook(
        &lab,
        1,
        &["network", "rawnet", "updated", "begin", "-"],
        b"<hookData><network>",
    );
    assert_eq!(rc, 0, "{err}");
    assert!(err.contains("raw event"), "{err}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let evs = wait_events(&lab, 2, "the raw event on node 2", |e| {
        hook_ops(e, 1, "rawnet").iter().any(|x| {
            x["error"]
                .as_str()
                .is_some_and(|m| m.contains("bad XML") && m.contains("raw: <hookData><network>"))
        })
    });
    assert!(!hook_ops(&evs, 1, "rawnet").is_empty());

    // 2. Oversized XML (2 MiB): exit 0, refused before parsing, reported.
    let mut big = b"<hookData><network><name>".to_vec();
    big.resize(2 * 1024 * 1024, b'x');
    let (rc, err, took) = run_hook(
        &lab,
        1,
        &["network", "bignet", "updated", "begin", "-"],
        &big,
    );
    assert_eq!(rc, 0, "{err}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    wait_events(&lab, 1, "the oversized event", |e| {
        hook_ops(e, 1, "bignet").iter().any(|x| {
            x["error"]
                .as_str()
                .is_some_and(|m| m.contains("exceeds the limit"))
        })
    });

    // 3. Daemon stopped: the hook returns at once with 0 and libvirt's
    //    operation succeeds (the hook runs inside net-start).
    lab.stop_daemon(1, libc::SIGTERM).unwrap();
    let (rc, err, took) = run_hook(&lab, 1, &["network", "x", "updated", "begin", "-"], good);
    assert_eq!(rc, 0, "{err}");
    assert!(err.contains("cannot reach the daemon"), "{err}");
    assert!(took < Duration::from_secs(1), "no daemon: {took:?}");
    let bridge = lab.bridge_name(1, "nd");
    lab.define_network(1, "nodaemon", &bridge).unwrap();
    let t0 = Instant::now();
    lab.virsh_uri(1, QEMU_URI, &["net-start", "nodaemon"])
        .unwrap();
    let start = t0.elapsed();
    assert!(
        start < Duration::from_secs(3),
        "net-start without daemon took {start:?}"
    );
    assert!(
        lab.virsh_uri(1, QEMU_URI, &["net-info", "nodaemon"])
            .unwrap()
            .contains("Active:         yes")
    );

    // 4. A daemon that hangs (bound, never reads): the hook gives up at its
    //    1 s deadline, exits 0, and net-destroy/net-start still succeed.
    let sock_path = lab.node_path(1, "/run/fenceline/hook.sock").unwrap();
    let _ = std::fs::remove_file(&sock_path);
    let hung = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    let t0 = Instant::now();
    lab.virsh_uri(1, QEMU_URI, &["net-destroy", "nodaemon"])
        .unwrap();
    lab.virsh_uri(1, QEMU_URI, &["net-start", "nodaemon"])
        .unwrap();
    let ops = t0.elapsed();
    // Each call waits at most 1 s once the kernel queue (10 datagrams) is full.
    assert!(ops < Duration::from_secs(8), "{ops:?}");
    let mut worst = Duration::ZERO;
    for _ in 0..12 {
        let (rc, err, took) = run_hook(&lab, 1, &["network", "x", "updated", "begin", "-"], good);
        assert_eq!(rc, 0, "{err}");
        worst = worst.max(took);
    }
    assert!(
        worst < Duration::from_millis(1500),
        "hung daemon: worst hook {worst:?}"
    );
    assert!(
        worst >= Duration::from_millis(900),
        "the queue should have filled: {worst:?}"
    );
    drop(hung);
    let _ = std::fs::remove_file(&sock_path);
    lab.start_daemon(1).unwrap();
    wait_status(&lab, 1, "daemon back, node 2 seen", CONVERGE, |v| {
        v["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().filter(|x| x["member"] == true).count() == 2)
    });

    // 5. A burst of 10,000 hook events: 1,000 real `fenceline hook`
    //    processes (16 at a time, as libvirtd would run them for many
    //    networks at once) plus 9,000 hook reports sent straight into the
    //    hook socket by 8 threads as fast as the daemon takes them (what
    //    10,000 processes would send, without the cost of 10,000 process
    //    starts on a 2-core CI machine).
    let before = lab.status_json(1).unwrap()["counters"]["dropped_hook_events"]
        .as_u64()
        .unwrap();
    let input = lab.node_dir(1).join("burst.xml");
    std::fs::write(&input, good).unwrap();
    let b = bin().to_string_lossy().into_owned();
    let script = format!(
        "seq 1000 | xargs -P 16 -I{{}} sh -c '{b} hook network burst updated begin {{}} < {} 2>>{}'",
        input.display(),
        lab.node_dir(1).join("burst.err").display()
    );
    let sock = lab.node_path(1, "/run/fenceline/hook.sock").unwrap();
    let t0 = Instant::now();
    let blasters: Vec<_> = (0..8)
        .map(|t| {
            let sock = sock.clone();
            std::thread::spawn(move || blast(&sock, t, 9_000 / 8))
        })
        .collect();
    let out = lab
        .exec_timeout(1, &["sh", "-c", &script], Duration::from_secs(300))
        .expect("burst ran");
    let blast_failed: u64 = blasters.into_iter().map(|h| h.join().unwrap()).sum();
    let took = t0.elapsed();
    // xargs exits 0 only when every hook exited 0.
    assert!(out.success(), "burst: {}", out.stderr);
    assert!(took < Duration::from_secs(240), "{took:?}");
    let failed = std::fs::read_to_string(lab.node_dir(1).join("burst.err"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("not recorded"))
        .count() as u64
        + blast_failed;
    // Every call is either in the ring, counted as dropped, or reported lost
    // by the hook itself: nothing is silent.
    let (s, _) = wait_status(&lab, 1, "the burst accounted for", CONVERGE, |v| {
        let dropped = v["counters"]["dropped_hook_events"].as_u64().unwrap_or(0) - before;
        let in_ring = hook_ops(&events(&lab, 1), 1, "burst").len() as u64;
        in_ring + dropped + failed == 10_000
    });
    let dropped = s["counters"]["dropped_hook_events"].as_u64().unwrap() - before;
    eprintln!(
        "burst: 10000 hook events in {:.1} s; {failed} not delivered by the senders, {dropped} counted as dropped in the daemon",
        took.as_secs_f64()
    );
    // The ring keeps 1000 events: most of the burst was counted.
    assert!(dropped >= 8_000, "{dropped}");
    // The daemons are alive and node 2 got the burst's end, with node 1 as origin.
    wait_events(&lab, 2, "the burst on node 2", |e| {
        !hook_ops(e, 1, "burst").is_empty()
    });
    let text = lab.fenceline(1, &["status"]).unwrap().stdout;
    assert!(text.contains("dropped hook events"), "{text}");
}
