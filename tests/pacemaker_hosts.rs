//! The hosts' own Pacemaker confirms a departed host down
//! (`[fencing] pacemaker_confirm = true`): 3 hosts with fenceline and
//! Pacemaker (no fence device, `stonith-enabled=false`). Node 3 is cut off;
//! the majority refuses to say its VM is off; the admin powers node 3's VMs
//! off (virsh destroy: the truth stays honest) and records it in
//! Pacemaker with `stonith_admin --confirm node3`; fenceline on node 1 then
//! shows node 3 accounted for by Pacemaker, audits it, and answers "ok".
//!
//! Needs root, `pacemaker` and `pacemaker-cli-utils`; unique lab prefix,
//! torn down on every path (drop).
#![cfg(feature = "lab")]

use std::time::{Duration, Instant};

use fenceline::sandbox::{CmdOutput, Lab, LabSpec, lab_test_guard};
use serde_json::Value;

mod common;
use common::{CONVERGE, bin, events_lenient, full_map, lab, wait_status};

fn fence(lab: &Lab, i: usize, action: &str, vm: &str) -> CmdOutput {
    lab.fenceline(i, &["fence", action, vm])
        .expect("fenceline fence runs")
}

fn node3(v: &Value) -> Option<&Value> {
    v["nodes"].as_array()?.iter().find(|n| n["nodeid"] == 3)
}

/// Prints node 1's fenceline log lines about Pacemaker when the test fails.
struct PrintLogOnPanic(std::path::PathBuf);

impl Drop for PrintLogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            for l in log.lines().filter(|l| l.contains("pacemaker")) {
                eprintln!("node 1 log: {l}");
            }
        }
    }
}

#[test]
fn pacemaker_fence_history_confirms_a_departed_host() {
    if !lab_test_guard("pacemaker_fence_history_confirms_a_departed_host") {
        return;
    }
    let t0 = Instant::now();
    let lab = lab(LabSpec {
        fenceline_bin: Some(bin()),
        host_pacemaker: true,
        networks: false,
        fenceline_extra_toml: "[fencing]\npacemaker_confirm = true\n".into(),
        ..LabSpec::default()
    });
    eprintln!("lab up in {:?}", t0.elapsed());
    for i in [1, 2, 3] {
        wait_status(&lab, i, "quorate with the full map", CONVERGE, |v| {
            v["quorate"] == true && full_map(v, &[1, 2, 3], false)
        });
    }

    // Cut node 3 off: nodes 1-2 keep quorum, node 3 is departed and not
    // accounted for.
    lab.set_link(3, false).unwrap();
    let (v, _) = wait_status(&lab, 1, "node 3 left", CONVERGE, |v| {
        v["quorate"] == true && node3(v).is_some_and(|n| n["member"] == false)
    });
    eprintln!("node 3 on node 1: {}", node3(&v).unwrap());
    // Pacemaker has no record yet: the majority refuses.
    let o = fence(&lab, 1, "off", "vm3a");
    eprintln!("fence off vm3a before: {:?} {}", o.status, o.stderr.trim());
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(o.stderr.contains("not confirmed down"), "{o:?}");
    assert_eq!(
        lab.virsh(3, &["domstate", "vm3a"]).unwrap().trim(),
        "running"
    );

    // The admin powers node 3 off (its VMs stop for real), then tells
    // Pacemaker so on node 1.
    for vm in ["vm3a", "vm3b"] {
        lab.virsh(3, &["destroy", vm]).unwrap();
    }
    // Pacemaker records whole seconds: a fence stamped in the second of the
    // departure cannot be told from one before it, and fenceline refuses
    // it. The admin is not that fast; make sure the test is not either.
    let left_ms = node3(&v).unwrap()["since"].as_u64().unwrap();
    while fenceline_proto::api::now_millis() < (left_ms / 1000 + 1) * 1000 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let c = lab.host_stonith_admin(1, &["--confirm", "node3"]).unwrap();
    eprintln!(
        "stonith_admin --confirm node3: {:?} {}{}",
        c.status,
        c.stdout.trim(),
        c.stderr.trim()
    );
    assert!(c.success(), "{c:?}");
    let h = lab
        .host_stonith_admin(1, &["--history", "node3", "--verbose", "--output-as=xml"])
        .unwrap();
    eprintln!(
        "stonith_admin --history node3 --verbose --output-as=xml:\n{}",
        h.stdout
    );
    let recs = fenceline_proto::pcmk_history::parse_history(&h.stdout).expect("real output parses");
    assert!(
        recs.iter()
            .any(|r| r.target == "node3" && r.is_successful_kill() && r.completed_ms.is_some()),
        "{recs:?}"
    );

    let t1 = Instant::now();
    let log = lab.node_dir(1).join("fenceline.log");
    let _guard = PrintLogOnPanic(log);
    let (v, took) = wait_status(
        &lab,
        1,
        "node 3 accounted for via Pacemaker",
        Duration::from_secs(20),
        |v| {
            node3(v).is_some_and(|n| {
                n["accounted"] == true
                    && n["accounting"]
                        .as_str()
                        .is_some_and(|a| a.contains("pacemaker: "))
            })
        },
    );
    eprintln!(
        "node 3 accounted for on node 1 after {took:?} ({:?} since the confirm): {}",
        t1.elapsed(),
        node3(&v).unwrap()["accounting"]
    );
    // The event stream and the audit log name Pacemaker.
    let ev = events_lenient(&lab, 1);
    let confirmed: Vec<&Value> = ev
        .iter()
        .filter(|e| {
            e["kind"] == "membership"
                && e["action"] == "confirmed"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("pacemaker: "))
        })
        .collect();
    assert_eq!(confirmed.len(), 1, "{ev:#?}");
    eprintln!("event: {}", confirmed[0]);
    let audit = std::fs::read_to_string(lab.node_dir(1).join("audit.jsonl")).unwrap_or_default();
    let line = audit
        .lines()
        .find(|l| l.contains("pacemaker: ") && l.contains("confirmed"))
        .unwrap_or_else(|| panic!("no audit record naming Pacemaker:\n{audit}"));
    eprintln!("audit: {line}");
    // Node 2 got the confirmation as a peer.
    wait_status(&lab, 2, "node 3 accounted for on node 2", CONVERGE, |v| {
        node3(v).is_some_and(|n| n["accounted"] == true)
    });

    let o = fence(&lab, 1, "off", "vm3a");
    eprintln!(
        "fence off vm3a after: {:?} {}{}",
        o.status,
        o.stdout.trim(),
        o.stderr.trim()
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    lab.down().unwrap();
    eprintln!("total {:?}", t0.elapsed());
}
