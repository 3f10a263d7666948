//! Self-fencing on a real 3-node corosync cluster in network namespaces
//! (`[fencing] self_fence_secs = 6` on every node): node 3 is cut off; its
//! daemon destroys its own VMs (checked with `virsh` on node 3), and the
//! majority refuses `off` for node 3's VM before node 3's deadline and
//! answers ok after it, through `fenceline fence` and through the real
//! `fence_xvm` from a guest namespace (the fault matrix's row "owner cut off,
//! with self-fencing"). Nothing is mocked: real corosync, a private libvirtd
//! per node (test driver), fenceline daemons.
//!
//! Needs root; the lab has a unique prefix and is torn down on every exit
//! path.
#![cfg(feature = "lab")]

use std::time::{Duration, Instant};

use fenceline::sandbox::{Lab, LabSpec, lab_test_guard};
use serde_json::Value;

mod common;
use common::{CONVERGE, bin, client_fence_xvm, events_lenient, full_map, lab, wait_status};

const N_SECS: u64 = 6;

fn node(v: &Value, id: u64) -> Option<&Value> {
    v["nodes"].as_array()?.iter().find(|n| n["nodeid"] == id)
}

fn virsh_state(lab: &Lab, i: usize, vm: &str) -> String {
    lab.virsh(i, &["domstate", vm])
        .expect("virsh domstate")
        .trim()
        .to_string()
}

/// The real fence_xvm from the guest namespace: (exit code, stderr).
fn fence_xvm(lab: &Lab, op: &str, vm: &str) -> (i32, String) {
    let o = client_fence_xvm(lab, op, vm);
    (o.status.code().unwrap_or(-1), o.stderr.trim().to_string())
}

fn has_event(lab: &Lab, i: usize, action: &str, nodeid: u64) -> bool {
    events_lenient(lab, i)
        .iter()
        .any(|e| e["kind"] == "membership" && e["action"] == action && e["nodeid"] == nodeid)
}

#[test]
fn a_cut_off_node_destroys_its_vms_and_the_majority_answers_only_after_its_deadline() {
    if !lab_test_guard(
        "a_cut_off_node_destroys_its_vms_and_the_majority_answers_only_after_its_deadline",
    ) {
        return;
    }
    let lab = lab(LabSpec {
        fenceline_bin: Some(bin()),
        fenceline_extra_toml: format!("[fencing]\nself_fence_secs = {N_SECS}\n"),
        client_ns: true,
        ..LabSpec::default()
    });
    for i in [1, 2, 3] {
        wait_status(&lab, i, "quorate with the full map", CONVERGE, |v| {
            v["quorate"] == true && full_map(v, &[1, 2, 3], false)
        });
    }
    // Every node announces it self-fences.
    wait_status(&lab, 1, "node 3 announces self-fencing", CONVERGE, |v| {
        node(v, 3).is_some_and(|n| n["self_fence_secs"] == N_SECS)
    });
    assert_eq!(virsh_state(&lab, 3, "vm3a"), "running");

    let cut = Instant::now();
    lab.set_link(3, false).unwrap();
    let (_, seen) = wait_status(&lab, 1, "node 3 left", CONVERGE, |v| {
        v["quorate"] == true && node(v, 3).is_some_and(|n| n["member"] == false)
    });
    // Before node 3's deadline the majority refuses: vm3a may still run.
    let o = lab.fenceline(1, &["fence", "off", "vm3a"]).unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(o.stderr.contains("not confirmed down"), "{o:?}");
    assert_eq!(virsh_state(&lab, 3, "vm3a"), "running");
    // The guests' fence_xvm gets the same refusal (rc 1), never "off".
    let (rc, err) = fence_xvm(&lab, "status", "vm3b");
    assert_eq!(rc, 1, "fence_xvm status vm3b before the deadline: {err}");
    assert_eq!(virsh_state(&lab, 3, "vm3b"), "running");

    // Node 3 destroys its own VMs once it has been out of a quorate
    // membership for N s (never before: it noticed the cut after the cut).
    let t0 = Instant::now();
    let destroyed = loop {
        let states: Vec<String> = ["vm3a", "vm3b"]
            .iter()
            .map(|vm| virsh_state(&lab, 3, vm))
            .collect();
        if states.iter().all(|s| s == "shut off") {
            break Some(cut.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(N_SECS + 20) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let destroyed = destroyed.expect("node 3 destroyed its VMs");
    assert!(
        destroyed >= Duration::from_secs(N_SECS),
        "destroyed after {destroyed:?}, before self_fence_secs"
    );
    println!(
        "node 3 left the majority's view after {seen:?}; its VMs were shut off {destroyed:?} after the cut"
    );
    assert!(
        has_event(&lab, 3, "self-fenced", 3),
        "node 3 has its self-fenced event"
    );

    // After N + max(5 s, N/2) since it left, the majority counts node 3 as
    // self-fenced and answers ok for its VM.
    let (v, _) = wait_status(&lab, 1, "node 3 accounted for", CONVERGE, |v| {
        node(v, 3).is_some_and(|n| n["accounted"] == true)
    });
    let how = node(&v, 3).unwrap()["accounting"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(how.contains("self-fenced (left"), "{how}");
    let o = lab.fenceline(1, &["fence", "off", "vm3a"]).unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        virsh_state(&lab, 3, "vm3a"),
        "shut off",
        "the answer is true"
    );
    assert!(has_event(&lab, 1, "self-fenced", 3));
    println!("node 1: {how}; fence off vm3a: {}", o.stdout.trim());
    // fence_xvm from a guest: status off (rc 2) and off ok (rc 0), true.
    let (rc, err) = fence_xvm(&lab, "status", "vm3b");
    assert_eq!(rc, 2, "fence_xvm status vm3b after the deadline: {err}");
    let (rc, err) = fence_xvm(&lab, "off", "vm3b");
    assert_eq!(rc, 0, "fence_xvm off vm3b after the deadline: {err}");
    assert_eq!(
        virsh_state(&lab, 3, "vm3b"),
        "shut off",
        "the answers are true"
    );

    let status = lab.fenceline(1, &["status"]).unwrap();
    assert!(
        status.stdout.contains("DEPARTED, ACCOUNTED FOR"),
        "{status:?}"
    );
    println!("{}", status.stdout);

    lab.set_link(3, true).unwrap();
    lab.down().unwrap();
}
