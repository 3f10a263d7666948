//! The fence router on a real 3-node corosync cluster in network namespaces,
//! driven through `fenceline fence` (the read-write control socket) on one
//! node and checked with `virsh` on the node that owns the VM. Nothing is
//! mocked: real corosync, a private libvirtd per node, fenceline daemons.
//!
//! Needs root; each test builds its own lab with a unique prefix and tears it
//! down on every exit path.
#![cfg(feature = "lab")]

use std::time::{Duration, Instant};

use fenceline::sandbox::{CmdOutput, Lab, LabSpec, lab_domains, lab_test_guard};
use serde_json::Value;

mod common;
use common::{CONVERGE, bin, events_lenient, full_map, lab, wait_status};

/// Waits until each of `nodes` is quorate with every lab VM in its map.
fn wait_converged(lab: &Lab, nodes: &[usize], what: &str) {
    for &i in nodes {
        wait_status(lab, i, what, CONVERGE, |v| {
            v["quorate"] == true && full_map(v, &[1, 2, 3], false)
        });
    }
}

/// `fenceline fence ACTION VM [extra...]` on node `i`.
fn fence(lab: &Lab, i: usize, action: &str, vm: &str, extra: &[&str]) -> CmdOutput {
    let mut args = vec!["fence", action, vm];
    args.extend_from_slice(extra);
    lab.fenceline(i, &args).expect("fenceline fence runs")
}

fn code(o: &CmdOutput) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn virsh_state(lab: &Lab, i: usize, vm: &str) -> String {
    lab.virsh(i, &["domstate", vm])
        .expect("virsh domstate")
        .trim()
        .to_string()
}

#[test]
fn fence_through_the_cluster_the_owner_acts() {
    if !lab_test_guard("fence_through_the_cluster_the_owner_acts") {
        return;
    }
    let lab = lab(LabSpec {
        fenceline_bin: Some(bin()),
        ..LabSpec::default()
    });
    wait_converged(&lab, &[1, 2, 3], "quorate with the full map");

    // status of a VM on another node: answered by its owner.
    let o = fence(&lab, 1, "status", "vm2a", &["--json"]);
    assert_eq!(code(&o), 0, "{o:?}");
    let v: Value = serde_json::from_str(o.stdout.trim()).expect("json");
    assert_eq!(
        (v["result"].as_str(), v["acted_by"].as_u64()),
        (Some("ok"), Some(2))
    );

    // off from node 1, acted on node 2.
    let o = fence(&lab, 1, "off", "vm2a", &[]);
    assert_eq!(code(&o), 0, "{o:?}");
    assert_eq!(virsh_state(&lab, 2, "vm2a"), "shut off");
    let o = fence(&lab, 3, "status", "vm2a", &[]);
    assert_eq!(code(&o), 2, "{o:?}");
    assert!(o.stdout.starts_with("Status: OFF"), "{o:?}");

    // By UUID: the lab runs name_mode = "name" (fence_virtd's default),
    // which matches names only, so a UUID is refused, never "unknown".
    let uuid = lab_domains(2)
        .into_iter()
        .find(|d| d.name == "vm2a")
        .unwrap()
        .uuid;
    let o = fence(&lab, 3, "on", &uuid, &[]);
    assert_eq!(code(&o), 1, "{o:?}");
    assert!(format!("{o:?}").contains("name_mode"), "{o:?}");
    assert_eq!(virsh_state(&lab, 2, "vm2a"), "shut off");
    // on again, by name.
    let o = fence(&lab, 3, "on", "vm2a", &[]);
    assert_eq!(code(&o), 0, "{o:?}");
    assert_eq!(virsh_state(&lab, 2, "vm2a"), "running");

    // reboot: destroyed and started again, no fixed sleep.
    let t0 = Instant::now();
    let o = fence(&lab, 1, "reboot", "vm3a", &[]);
    let took = t0.elapsed();
    assert_eq!(code(&o), 0, "{o:?}");
    assert_eq!(virsh_state(&lab, 3, "vm3a"), "running");
    assert!(took < Duration::from_secs(5), "reboot took {took:?}");
    // Node 3 recorded the reboot (it stopped and started again).
    let t0 = Instant::now();
    loop {
        let ev: Vec<Value> = events_lenient(&lab, 3)
            .into_iter()
            .filter(|e| e["kind"] == "domain" && e["name"] == "vm3a")
            .collect();
        if ev.iter().any(|e| e["action"] == "rebooted") {
            break;
        }
        assert!(t0.elapsed() < CONVERGE, "vm3a events on node 3: {ev:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A shut-off VM stays off on reboot (fence_virtd's rule).
    let o = fence(&lab, 2, "reboot", "vm1off", &[]);
    assert_eq!(code(&o), 0, "{o:?}");
    assert_eq!(virsh_state(&lab, 1, "vm1off"), "shut off");

    // Nobody knows it, and the cluster is quorate: the highest id answers.
    let o = fence(&lab, 1, "status", "no-such-vm", &["--json"]);
    assert_eq!(code(&o), 2, "{o:?}");
    let v: Value = serde_json::from_str(o.stdout.trim()).expect("json");
    assert_eq!(v["acted_by"].as_u64(), Some(3));
    assert_eq!(code(&fence(&lab, 1, "off", "no-such-vm", &[])), 0);
    assert_eq!(code(&fence(&lab, 1, "on", "no-such-vm", &[])), 1);

    // The read-only socket refuses even status, with fence_xvm's "denied".
    let ro = ["--socket", "/run/fenceline/fenceline-ro.sock"];
    let o = fence(&lab, 1, "off", "vm2b", &ro);
    assert_eq!(code(&o), 3, "{o:?}");
    assert!(o.stderr.contains("Permission denied"), "{o:?}");
    assert_eq!(virsh_state(&lab, 2, "vm2b"), "running");
    assert_eq!(code(&fence(&lab, 1, "status", "vm2b", &ro)), 3);

    // Every request is an event on the node that received it, with the
    // node that acted; the acting node records what it did.
    let ev = events_lenient(&lab, 1);
    assert!(
        ev.iter().any(|e| e["kind"] == "fence"
            && e["phase"] == "result"
            && e["op"] == "off"
            && e["domain"] == "vm2a"
            && e["result"] == "ok"
            && e["acted_by"] == 2
            && e["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("control:uid=0"))),
        "{ev:?}"
    );
    let ev2 = events_lenient(&lab, 2);
    assert!(
        ev2.iter().any(|e| e["kind"] == "fence"
            && e["phase"] == "acted"
            && e["op"] == "off"
            && e["domain"] == "vm2a"
            && e["requester"] == 1),
        "{ev2:?}"
    );
    lab.down().unwrap();
}

#[test]
fn a_partitioned_minority_refuses_to_assume_an_unknown_vm_is_off() {
    if !lab_test_guard("a_partitioned_minority_refuses_to_assume_an_unknown_vm_is_off") {
        return;
    }
    let lab = lab(LabSpec {
        fenceline_bin: Some(bin()),
        ..LabSpec::default()
    });
    wait_converged(&lab, &[1, 2, 3], "quorate with the full map");
    // Cut node 3 (the highest id) off: it is alone and inquorate.
    lab.set_link(3, false).unwrap();
    wait_status(&lab, 3, "node 3 inquorate", CONVERGE, |v| {
        v["quorate"] == false
    });
    wait_status(&lab, 1, "nodes 1-2 quorate without node 3", CONVERGE, |v| {
        v["quorate"] == true
            && v["nodes"]
                .as_array()
                .is_some_and(|ns| ns.iter().any(|n| n["nodeid"] == 3 && n["member"] == false))
    });
    // vm1a runs on node 1, out of node 3's sight: node 3 must not say "off".
    for vm in ["vm1a", "never-defined"] {
        let o = fence(&lab, 3, "status", vm, &[]);
        assert_eq!(code(&o), 1, "{vm}: {o:?}");
        assert!(o.stderr.contains("no quorum"), "{vm}: {o:?}");
        let o = fence(&lab, 3, "off", vm, &[]);
        assert_eq!(code(&o), 1, "{vm}: {o:?}");
    }
    assert_eq!(virsh_state(&lab, 1, "vm1a"), "running");
    // Its own VMs it still knows and can act on... through the cluster only
    // when quorate: fencing is refused for unknown VMs, not for its own.
    let o = fence(&lab, 3, "status", "vm3a", &[]);
    assert_eq!(code(&o), 0, "{o:?}");
    // The quorate side does not answer for node 3's VMs either: node 3 left
    // and is not confirmed down, and its VMs still run there (issue 12).
    for vm in ["vm3a", "no-such-vm"] {
        let o = fence(&lab, 1, "status", vm, &[]);
        assert_eq!(code(&o), 1, "{vm}: {o:?}");
        assert!(o.stderr.contains("not confirmed down"), "{vm}: {o:?}");
        let o = fence(&lab, 1, "off", vm, &[]);
        assert_eq!(code(&o), 1, "{vm}: {o:?}");
    }
    assert_eq!(virsh_state(&lab, 3, "vm3a"), "running");
    // Once an operator confirms node 3 down, the majority answers again.
    let c = lab.fenceline(1, &["confirm", "node3"]).unwrap();
    assert!(c.success(), "{c:?}");
    let o = fence(&lab, 1, "status", "no-such-vm", &[]);
    assert_eq!(code(&o), 2, "{o:?}");
    lab.set_link(3, true).unwrap();
    lab.down().unwrap();
}

/// `PROGRAM [TARGET...] -k KEY -t 10 -o OP [-H VM]` from the client
/// namespace (a guest), with the lab's key.
fn guest_fence(lab: &Lab, program: &str, target: &[&str], op: &str, vm: &str) -> CmdOutput {
    let key = lab.fence_key_path();
    let mut argv = vec![program];
    argv.extend_from_slice(target);
    argv.extend(["-k", key.to_str().unwrap(), "-t", "10", "-o", op]);
    if !vm.is_empty() {
        argv.extend(["-H", vm]);
    }
    lab.exec_client(&argv, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{program} runs: {e:?}"))
}

/// `fence_xvm -o OP -H VM` from the client namespace (a guest).
fn fence_xvm(lab: &Lab, op: &str, vm: &str) -> CmdOutput {
    guest_fence(lab, "fence_xvm", &[], op, vm)
}

#[test]
fn requests_cross_between_fenceline_and_real_fence_virtd() {
    if !lab_test_guard("requests_cross_between_fenceline_and_real_fence_virtd") {
        return;
    }
    let lab = lab(LabSpec {
        fenceline_bin: Some(bin()),
        fence_virtd_nodes: vec![3],
        client_ns: true,
        ..LabSpec::default()
    });
    wait_converged(&lab, &[1, 2], "quorate with fence_virtd's VMs");
    // fenceline → fence_virtd: node 1's daemon routes, fence_virtd on node 3 acts.
    let o = fence(&lab, 1, "off", "vm3a", &["--json"]);
    assert_eq!(code(&o), 0, "{o:?}");
    let v: Value = serde_json::from_str(o.stdout.trim()).expect("json");
    assert_eq!(v["acted_by"].as_u64(), Some(3), "fence_virtd replied");
    assert_eq!(virsh_state(&lab, 3, "vm3a"), "shut off");
    assert_eq!(code(&fence(&lab, 2, "status", "vm3a", &[])), 2);
    assert_eq!(code(&fence(&lab, 2, "on", "vm3a", &[])), 0);
    assert_eq!(virsh_state(&lab, 3, "vm3a"), "running");

    // fence_virtd → fenceline: a guest's fence_xvm reaches whichever daemon
    // answers its multicast; a request for node 1's VM is acted on by node 1's
    // fenceline (through CPG when fence_virtd took it).
    let o = fence_xvm(&lab, "off", "vm1a");
    assert_eq!(code(&o), 0, "{o:?}");
    assert_eq!(virsh_state(&lab, 1, "vm1a"), "shut off");
    // Shut off on a fenceline host while node 3 runs fence_virtd, which
    // announces no complete inventory: nothing proves vm1a does not run
    // there unannounced, so "off" for status and a start are refused (a
    // safe failure; fence_virtd's own VMs answer for themselves above).
    let o = fence_xvm(&lab, "status", "vm1a");
    assert_eq!(code(&o), 1, "{o:?}");
    let o = fence(&lab, 1, "status", "vm1a", &[]);
    assert_eq!(code(&o), 1, "{o:?}");
    assert!(o.stderr.contains("runs fence_virtd"), "{o:?}");
    let o = fence_xvm(&lab, "on", "vm1a");
    assert_eq!(code(&o), 1, "{o:?}");
    assert_eq!(virsh_state(&lab, 1, "vm1a"), "shut off");
    lab.virsh(1, &["start", "vm1a"]).expect("virsh start");
    let o = fence_xvm(&lab, "status", "vm1a");
    assert_eq!(code(&o), 0, "{o:?}");
    let o = fence_xvm(&lab, "status", "vm2b");
    assert_eq!(code(&o), 0, "{o:?}");
    let o = fence_xvm(&lab, "status", "vm3b");
    assert_eq!(code(&o), 0, "{o:?}");
    lab.down().unwrap();
}

/// `fence_virt -T NODE_IP -o OP -H VM` from the client namespace.
fn fence_virt_tcp(lab: &Lab, node: usize, op: &str, vm: &str) -> CmdOutput {
    let ip = lab.node_ip(node);
    guest_fence(lab, "fence_virt", &["-T", &ip], op, vm)
}

#[test]
fn guests_fence_with_real_fence_xvm_and_fence_virt() {
    if !lab_test_guard("guests_fence_with_real_fence_xvm_and_fence_virt") {
        return;
    }
    let lab = lab(LabSpec {
        fenceline_bin: Some(bin()),
        client_ns: true,
        ..LabSpec::default()
    });
    wait_converged(&lab, &[1, 2, 3], "quorate with the full map");
    // Multicast (fence_xvm): every operation.
    let o = fence_xvm(&lab, "monitor", "");
    assert_eq!(code(&o), 0, "{o:?}");
    let o = fence_xvm(&lab, "list", "");
    assert_eq!(code(&o), 0, "{o:?}");
    // Every VM of the cluster, whichever daemon answered.
    for n in 1..=3 {
        for d in lab_domains(n) {
            let line = o
                .stdout
                .lines()
                .find(|l| l.starts_with(&format!("{:<32} ", d.name)))
                .unwrap_or_else(|| panic!("{} missing from the list:\n{}", d.name, o.stdout));
            let want = if d.running { "on" } else { "off" };
            assert!(line.ends_with(&format!("{} {want}", d.uuid)), "{line}");
        }
    }
    assert_eq!(code(&fence_xvm(&lab, "status", "vm2a")), 0);
    assert_eq!(code(&fence_xvm(&lab, "status", "vm2off")), 2);
    assert_eq!(code(&fence_xvm(&lab, "off", "vm2a")), 0);
    assert_eq!(virsh_state(&lab, 2, "vm2a"), "shut off");
    assert_eq!(code(&fence_xvm(&lab, "status", "vm2a")), 2);
    assert_eq!(code(&fence_xvm(&lab, "on", "vm2a")), 0);
    assert_eq!(virsh_state(&lab, 2, "vm2a"), "running");
    assert_eq!(code(&fence_xvm(&lab, "reboot", "vm3b")), 0);
    assert_eq!(virsh_state(&lab, 3, "vm3b"), "running");
    // fence_virt's "null" gets fence_virtd's answer: 1.
    assert_eq!(code(&fence_xvm(&lab, "null", "vm1a")), 1);

    // TCP (fence_virt -T), to node 1's listener, for VMs on every node.
    assert_eq!(code(&fence_virt_tcp(&lab, 1, "monitor", "")), 0);
    let o = fence_virt_tcp(&lab, 1, "list", "");
    assert_eq!(code(&o), 0, "{o:?}");
    assert!(o.stdout.contains("vm3off"), "{}", o.stdout);
    assert_eq!(code(&fence_virt_tcp(&lab, 1, "status", "vm3a")), 0);
    assert_eq!(code(&fence_virt_tcp(&lab, 1, "off", "vm3a")), 0);
    assert_eq!(virsh_state(&lab, 3, "vm3a"), "shut off");
    assert_eq!(code(&fence_virt_tcp(&lab, 1, "status", "vm3a")), 2);
    assert_eq!(code(&fence_virt_tcp(&lab, 1, "on", "vm3a")), 0);
    assert_eq!(virsh_state(&lab, 3, "vm3a"), "running");
    assert_eq!(code(&fence_virt_tcp(&lab, 1, "reboot", "vm1b")), 0);
    assert_eq!(virsh_state(&lab, 1, "vm1b"), "running");
    assert_eq!(code(&fence_virt_tcp(&lab, 1, "reboot", "vm2off")), 0);
    assert_eq!(virsh_state(&lab, 2, "vm2off"), "shut off");

    // The audit log of the node whose listener took the TCP requests has
    // them, one JSON object per line, with the node that acted.
    let audit = std::fs::read_to_string(lab.node_dir(1).join("audit.jsonl")).expect("audit log");
    let recs: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
        .collect();
    assert!(
        recs.iter().any(|r| r["phase"] == "result"
            && r["op"] == "off"
            && r["domain"] == "vm3a"
            && r["acted_by"] == 3
            && r["result"] == "ok"
            && r["source"].as_str().is_some_and(|s| s.starts_with("tcp:"))
            && r["duration_ms"].is_u64()),
        "{audit}"
    );
    lab.down().unwrap();
}
