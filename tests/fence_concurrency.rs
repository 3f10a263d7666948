//! Concurrent fence_xvm requests from one guest against a 3-node fenceline
//! cluster (issue 12, point 5): real corosync, a private libvirtd per node,
//! real `fence_xvm` processes from the client namespace, `virsh` on the
//! owning node as the truth.
//!
//! fence_xvm listens for the connect-back on one fixed TCP port and takes
//! the first connection; when every host that got the multicast connects
//! back, a late connect-back is accepted by the next fence_xvm process and
//! answers cross (a running VM reported off). With the claim over the own
//! CPG group exactly one fenceline node connects back per request.
//!
//! Needs root; builds its own lab with a unique prefix and tears it down on
//! every exit path.
#![cfg(feature = "lab")]

use std::time::{Duration, Instant};

use fenceline::sandbox::{CmdOutput, Lab, LabSpec, lab_domains, lab_test_guard};

mod common;
use common::{CONVERGE, bin, domain, events_lenient, full_map, lab, wait_status};

/// Requests per round: three for each of the lab's nine VMs.
const PER_VM: usize = 3;
const ROUNDS: usize = 8;

/// `fence_xvm -o status -H VM` from the guest namespace.
fn status(lab: &Lab, vm: &str) -> CmdOutput {
    let key = lab.fence_key_path();
    let argv = [
        "fence_xvm",
        "-k",
        key.to_str().unwrap(),
        "-t",
        "60",
        // Retry (listen, resend) every 0.5 s, not 2 s: the 27 processes
        // share one callback port and take turns on it.
        "-r",
        "5",
        "-o",
        "status",
        "-H",
        vm,
    ];
    lab.exec_client(&argv, Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("fence_xvm runs: {e:?}"))
}

/// `virsh domstate` on the node that defines the VM: "running" → fence_xvm
/// must exit 0 ("Status: ON"), "shut off" → 2 ("Status: OFF").
fn truth(lab: &Lab, node: usize, vm: &str) -> i32 {
    let s = lab.virsh(node, &["domstate", vm]).expect("virsh domstate");
    match s.trim() {
        "running" => 0,
        "shut off" => 2,
        other => panic!("{vm} on node {node}: unexpected state {other:?}"),
    }
}

/// (won, lost, unavailable) claim counters of node `i`, and its dropped
/// fence packets (an extra connect-back that fence_xvm does not accept, or
/// whose handshake fails, is counted there).
fn claims(lab: &Lab, i: usize) -> [u64; 4] {
    let v = lab.status_json(i).expect("status");
    let c = &v["counters"];
    [
        "claims_won",
        "claims_lost",
        "claims_unavailable",
        "dropped_fence_packets",
    ]
    .map(|k| c[k].as_u64().unwrap_or(0))
}

/// Fence results of multicast requests answered on node `i` (one per
/// completed connect-back of an engine op).
fn multicast_results(lab: &Lab, i: usize) -> usize {
    events_lenient(lab, i)
        .iter()
        .filter(|e| {
            e["kind"] == "fence"
                && e["phase"] == "result"
                && e["source"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("multicast:"))
        })
        .count()
}

fn totals(lab: &Lab) -> ([u64; 4], usize) {
    let mut c = [0u64; 4];
    let mut results = 0;
    for i in 1..=3 {
        for (a, b) in c.iter_mut().zip(claims(lab, i)) {
            *a += b;
        }
        results += multicast_results(lab, i);
    }
    (c, results)
}

#[test]
fn concurrent_fence_xvm_requests_get_one_connect_back_and_true_answers() {
    if !lab_test_guard("concurrent_fence_xvm_requests_get_one_connect_back_and_true_answers") {
        return;
    }
    let lab = lab(LabSpec {
        fenceline_bin: Some(bin()),
        client_ns: true,
        ..LabSpec::default()
    });
    for i in 1..=3 {
        wait_status(&lab, i, "quorate with the full map", CONVERGE, |v| {
            v["quorate"] == true && full_map(v, &[1, 2, 3], false)
        });
    }
    let vms: Vec<(usize, String)> = (1..=3)
        .flat_map(|n| lab_domains(n).into_iter().map(move |d| (n, d.name)))
        .collect();
    let t_all = Instant::now();
    let mut wrong = Vec::new();
    let mut failed = Vec::new();
    let mut requests = 0usize;
    for round in 0..ROUNDS {
        // Vary the truth between rounds: vm2b off in rounds 1 and 3.
        if round > 0 {
            let verb = if round % 2 == 1 { "destroy" } else { "start" };
            lab.virsh(2, &[verb, "vm2b"]).expect("virsh");
            let want = if round % 2 == 1 { "shutoff" } else { "running" };
            for i in 1..=3 {
                wait_status(&lab, i, "vm2b's new state in the map", CONVERGE, |v| {
                    domain(v, "vm2b").is_some_and(|d| d["state"] == want)
                });
            }
        }
        let expect: Vec<(String, i32)> = vms
            .iter()
            .map(|(n, vm)| (vm.clone(), truth(&lab, *n, vm)))
            .collect();
        let t0 = Instant::now();
        let answers: Vec<(String, i32, CmdOutput)> = std::thread::scope(|s| {
            let lab = &lab;
            let handles: Vec<_> = expect
                .iter()
                .flat_map(|e| std::iter::repeat_n(e, PER_VM))
                .map(|(vm, want)| s.spawn(move || (vm.clone(), *want, status(lab, vm))))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        requests += answers.len();
        for (vm, want, o) in &answers {
            match o.status.code() {
                Some(rc) if rc == *want => {}
                // 0 and 2 are answers: a wrong one is a crossed answer.
                Some(rc @ (0 | 2)) => {
                    wrong.push(format!("round {round}: {vm}: rc {rc}, truth {want}"))
                }
                rc => failed.push(format!("round {round}: {vm}: {rc:?} {}", o.stderr.trim())),
            }
        }
        eprintln!(
            "round {round}: {} requests in {:?}",
            answers.len(),
            t0.elapsed()
        );
    }
    // The listeners report their drops once a second.
    std::thread::sleep(Duration::from_millis(1_500));
    let (c, results) = totals(&lab);
    eprintln!(
        "{requests} requests in {:?}: claims won/lost/unavailable, dropped packets {c:?}, {results} multicast results",
        t_all.elapsed()
    );
    assert!(wrong.is_empty(), "crossed answers: {wrong:#?}");
    assert!(failed.is_empty(), "unanswered requests: {failed:#?}");
    // Exactly one connect-back per request, cluster-wide: one node won each
    // run, and one fence result per request was answered over a connect-back.
    assert_eq!(c[0], requests as u64, "connect-backs (claims won)");
    assert_eq!(results, requests, "answers over a connect-back");
    assert_eq!(c[2], 0, "no claim left undecided");
    // No connect-back failed or was refused (an extra one would be).
    assert_eq!(c[3], 0, "dropped fence packets");
    // Every node got every packet: the two others lost each run.
    assert_eq!(c[1], 2 * requests as u64, "claims lost");
    // `fenceline status` shows the outcomes.
    for i in 1..=3 {
        let o = lab.fenceline(i, &["status"]).expect("status");
        let line = o
            .stdout
            .lines()
            .find(|l| l.starts_with("Counters:"))
            .unwrap_or_else(|| panic!("node {i}: no counters line:\n{}", o.stdout));
        eprintln!("node {i}: {line}");
        assert!(
            line.contains("multicast requests connected back here")
                && line.contains("claimed by another node"),
            "{line}"
        );
    }
    lab.down().unwrap();
}
