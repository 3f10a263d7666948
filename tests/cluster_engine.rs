//! The engine on a real 3-node corosync cluster in network namespaces, with a
//! private libvirtd per node (test driver served by libvirtd, so `virsh` from
//! outside changes what the daemon sees, with events). Nothing is mocked.
//!
//! Needs root; each test builds its own lab with a unique prefix and tears it
//! down on every exit path (the `Lab` drops on panic too).
#![cfg(feature = "lab")]

use std::time::Duration;

use fenceline::sandbox::{LabSpec, lab_domains, lab_test_guard};
use serde_json::Value;

mod common;
use common::{CONVERGE, bin, domain, events, full_map, lab, wait_status};

fn has(v: &Value, name: &str, state: &str, owner: u64) -> bool {
    domain(v, name).is_some_and(|d| d["state"] == state && d["owner"] == owner)
}

/// `name` is in the map with a lost placement on `node` (its host's daemon
/// or the host left; the VM may still run there).
fn lost_on(v: &Value, name: &str, node: u64) -> bool {
    domain(v, name).is_some_and(|d| {
        d["placements"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["nodeid"] == node && p["lost"] == true && p["lost_since"].is_u64())
        })
    })
}

fn node_view(v: &Value, id: u64) -> Value {
    v["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["nodeid"] == id).cloned())
        .unwrap_or_default()
}

fn members(v: &Value) -> Vec<u64> {
    v["nodes"]
        .as_array()
        .map(|ns| {
            ns.iter()
                .filter(|n| n["member"] == true)
                .filter_map(|n| n["nodeid"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn three_node_map_converges_and_follows_failures() {
    if !lab_test_guard("three_node_map_converges_and_follows_failures") {
        return;
    }
    let lab = lab(LabSpec {
        fenceline_bin: Some(bin()),
        ..LabSpec::default()
    });

    // 1. Membership and map convergence on every node.
    for i in 1..=3 {
        wait_status(&lab, i, "3 members, quorate, full map", CONVERGE, |v| {
            v["quorate"] == true
                && v["local_nodeid"] == i as u64
                && members(v) == vec![1, 2, 3]
                && full_map(v, &[1, 2, 3], true)
                && v["domains"].as_array().map(Vec::len) == Some(9)
        });
    }
    let s1 = lab.status_json(1).unwrap();
    let names: Vec<&str> = s1["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(
        names,
        vec!["node1", "node2", "node3"],
        "names from corosync's nodelist"
    );
    assert!(
        s1["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["daemons"] == serde_json::json!(["fenceline"]))
    );
    // Text output works too.
    let text = lab.fenceline(1, &["status"]).unwrap();
    assert!(text.success());
    assert!(text.stdout.contains("quorate"), "{}", text.stdout);
    assert!(text.stdout.contains("vm2a"), "{}", text.stdout);

    // 2. An external `virsh destroy` / `start` reaches every node.
    lab.virsh(2, &["destroy", "vm2a"]).unwrap();
    for i in 1..=3 {
        wait_status(&lab, i, "vm2a shut off", CONVERGE, |v| {
            has(v, "vm2a", "shutoff", 2)
        });
    }
    lab.virsh(2, &["start", "vm2a"]).unwrap();
    for i in 1..=3 {
        wait_status(&lab, i, "vm2a running again", CONVERGE, |v| {
            has(v, "vm2a", "running", 2)
        });
    }
    let ev = events(&lab, 1);
    assert!(
        ev.iter().any(|e| e["kind"] == "domain"
            && e["name"] == "vm2a"
            && e["state"] == "shutoff"
            && e["previous"] == "running"),
        "node 1's event stream shows vm2a stopping: {ev:?}"
    );
    assert!(
        ev.iter()
            .all(|e| e["time"].is_string() && e["kind"].is_string())
    );

    // 3. corosync SIGKILL on node 3: its VMs still run there, so the others
    //    keep them as lost placements (never a silent purge), and node 3 is
    //    not accounted for.
    lab.kill_corosync(3, libc::SIGKILL).unwrap();
    for i in 1..=2 {
        wait_status(&lab, i, "node 3 gone and its VMs lost", CONVERGE, |v| {
            members(v) == vec![1, 2]
                && v["quorate"] == true
                && lab_domains(3).iter().all(|d| lost_on(v, &d.name, 3))
                && full_map(v, &[1, 2], true)
                && node_view(v, 3)["accounted"] == false
        });
    }
    let ev = events(&lab, 1);
    assert!(
        ev.iter()
            .any(|e| e["kind"] == "domain" && e["action"] == "lost" && e["name"] == "vm3a"),
        "the loss is recorded as an event"
    );
    let text = lab.fenceline(1, &["status"]).unwrap();
    assert!(text.stdout.contains("LOST on node3"), "{}", text.stdout);
    assert!(text.stdout.contains("NOT ACCOUNTED FOR"), "{}", text.stdout);
    // Node 3's own daemon lost corosync: stale, and says so.
    wait_status(&lab, 3, "stale after corosync loss", CONVERGE, |v| {
        v["stale"] == true && v["corosync"]["connected"] == false
    });

    // 4. corosync restarts on node 3: its daemon reconnects and the map heals.
    lab.start_corosync(3).unwrap();
    for i in 1..=3 {
        wait_status(&lab, i, "node 3 back with its VMs", CONVERGE, |v| {
            members(v) == vec![1, 2, 3]
                && v["stale"] == false
                && full_map(v, &[1, 2, 3], true)
                && lab_domains(3).iter().all(|d| !lost_on(v, &d.name, 3))
                && node_view(v, 3)["accounted"] == true
        });
    }

    // 5. libvirtd restart on node 1: reconnect and resync. The test driver
    //    starts fresh, so a VM we stopped before comes back running.
    lab.virsh(1, &["destroy", "vm1b"]).unwrap();
    wait_status(&lab, 2, "vm1b shut off", CONVERGE, |v| {
        has(v, "vm1b", "shutoff", 1)
    });
    lab.restart_libvirtd(1).unwrap();
    for i in 1..=3 {
        wait_status(&lab, i, "vm1b running after resync", CONVERGE, |v| {
            has(v, "vm1b", "running", 1)
        });
    }
    let s1 = lab.status_json(1).unwrap();
    assert_eq!(s1["libvirt"][0]["connected"], true);
    let ev = events(&lab, 1);
    for action in ["libvirt-lost", "libvirt-connected"] {
        assert!(
            ev.iter()
                .any(|e| e["kind"] == "daemon" && e["action"] == action),
            "{action} in node 1's events"
        );
    }

    // 6. SIGTERM: the daemon leaves CPG cleanly and exits 0; peers mark its
    //    VMs lost at once (they still run on node 2).
    let st = lab.stop_daemon(2, libc::SIGTERM).unwrap();
    assert!(st.is_some_and(|s| s.success()), "daemon exit status {st:?}");
    let (_, took) = wait_status(&lab, 1, "node 2's VMs lost", Duration::from_secs(10), |v| {
        lab_domains(2).iter().all(|d| lost_on(v, &d.name, 2))
            && node_view(v, 2)["accounting"] == "its daemon is down"
    });
    assert!(
        took < Duration::from_secs(5),
        "a clean leave is seen at once, not after a token timeout ({took:?})"
    );
    // Node 2 is still a corosync member; only its daemon left.
    let s1 = lab.status_json(1).unwrap();
    assert_eq!(members(&s1), vec![1, 2, 3]);
    // 7. The operator confirms node 2 down: its lost VMs leave the map.
    //    (The read-only socket refuses it.)
    let ro = lab
        .fenceline(
            1,
            &[
                "confirm",
                "node2",
                "--socket",
                "/run/fenceline/fenceline-ro.sock",
            ],
        )
        .unwrap();
    assert!(!ro.success());
    let c = lab.fenceline(1, &["confirm", "node2"]).unwrap();
    assert!(c.success(), "{} {}", c.stdout, c.stderr);
    wait_status(&lab, 1, "node 2 confirmed down", CONVERGE, |v| {
        lab_domains(2).iter().all(|d| domain(v, &d.name).is_none())
            && node_view(v, 2)["accounted"] == true
    });
    let ev = events(&lab, 1);
    assert!(
        ev.iter()
            .any(|e| e["kind"] == "membership" && e["action"] == "confirmed" && e["nodeid"] == 2),
        "the confirmation is an event"
    );
    // A member with a running daemon cannot be confirmed down.
    let c = lab.fenceline(1, &["confirm", "node3"]).unwrap();
    assert!(!c.success());
    lab.down().unwrap();
}

#[test]
fn fence_virtd_node_shares_the_map() {
    if !lab_test_guard("fence_virtd_node_shares_the_map") {
        return;
    }
    let lab = lab(LabSpec {
        fenceline_bin: Some(bin()),
        fence_virtd_nodes: vec![3],
        ..LabSpec::default()
    });
    // fence_virtd broadcasts its VMs on every join; fenceline parses them.
    for i in 1..=2 {
        wait_status(&lab, i, "fence_virtd's VMs with owner 3", CONVERGE, |v| {
            full_map(v, &[1, 2, 3], true)
                && v["nodes"]
                    .as_array()
                    .and_then(|ns| ns.iter().find(|n| n["nodeid"] == 3))
                    .is_some_and(|n| n["daemons"] == serde_json::json!(["fence-virtd"]))
        });
    }
    let s = lab.status_json(1).unwrap();
    assert_eq!(s["counters"]["malformed_fence_agents"], 0);
    // fence_virtd leaving the group: its VMs are kept as lost (fence_virtd
    // purges them; fenceline does not claim to know they stopped).
    lab.stop_fence_virtd(3, libc::SIGTERM).unwrap();
    wait_status(&lab, 1, "fence_virtd's VMs lost", CONVERGE, |v| {
        lab_domains(3).iter().all(|d| lost_on(v, &d.name, 3))
    });
    lab.down().unwrap();
}
