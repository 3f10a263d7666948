//! The fence router's rules, with plain values (no I/O).

use super::*;
use fenceline_proto::api::{FenceOp, FencePhase, FenceResult};

/// A 3-node quorate cluster seen from `local`, every node in fence-agents
/// (fenceline on all), with `local`'s own domains listed.
fn lab(local: NodeId, mine: &[LocalDomain]) -> Cluster {
    let mut c = cluster_as(local);
    fa_members(&mut c, 3, &[1, 2, 3], &[]);
    c.apply(Input::LocalList {
        at: 4,
        uri: URI.into(),
        domains: mine.to_vec(),
    });
    c
}

/// Node `id` as `c`'s snapshot shows it.
fn node_view(c: &Cluster, at: Millis, id: NodeId) -> fenceline_proto::api::NodeView {
    c.snapshot(at)
        .nodes
        .into_iter()
        .find(|n| n.nodeid == id)
        .unwrap()
}

fn wire(vm: &str, op: FenceOp) -> FenceWire {
    FenceWire {
        vm_name: vm.into(),
        request: i32::from(op.as_raw()),
        seqno: 0,
        response: 0,
    }
}

fn request(c: &mut Cluster, at: Millis, from: NodeId, seqno: u32, vm: &str, op: FenceOp) -> Output {
    c.apply(Input::FenceCpgRequest {
        at,
        from,
        seqno,
        body: wire(vm, op),
    })
}

#[allow(clippy::too_many_arguments)]
fn reply(
    c: &mut Cluster,
    at: Millis,
    from: NodeId,
    seqno: u32,
    target: NodeId,
    vm: &str,
    op: FenceOp,
    r: FenceResult,
) -> Output {
    let mut body = wire(vm, op);
    body.response = i32::from(r.as_raw());
    c.apply(Input::FenceCpgReply {
        at,
        from,
        seqno,
        target,
        body,
    })
}

fn submit(c: &mut Cluster, at: Millis, id: u64, vm: &str, op: FenceOp) -> Output {
    c.apply(Input::FenceSubmit {
        at,
        id,
        op,
        domain: vm.into(),
        source: "tcp:127.0.0.1".into(),
    })
}

fn acts(out: &Output) -> Vec<&FenceAct> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::FenceAct(a) => Some(a),
            _ => None,
        })
        .collect()
}

fn sent_request(out: &Output) -> Option<(u32, &FenceWire)> {
    out.effects.iter().find_map(|e| match e {
        Effect::FenceCpgRequest { seqno, body } => Some((*seqno, body)),
        _ => None,
    })
}

fn sent_replies(out: &Output) -> Vec<(u32, NodeId, FenceResult)> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::FenceCpgReply {
                seqno,
                target,
                body,
            } => Some((
                *seqno,
                *target,
                FenceResult::from_raw(u8::try_from(body.response).unwrap()).unwrap(),
            )),
            _ => None,
        })
        .collect()
}

fn done(out: &Output) -> Option<(u64, FenceResult, Option<NodeId>, Option<String>)> {
    out.effects.iter().find_map(|e| match e {
        Effect::FenceDone {
            id,
            result,
            acted_by,
            detail,
            ..
        } => Some((*id, *result, *acted_by, detail.clone())),
        _ => None,
    })
}

fn fence_events(out: &Output) -> Vec<(FencePhase, FenceResult)> {
    out.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Fence { phase, result, .. } => Some((*phase, *result)),
            _ => None,
        })
        .collect()
}

/// Node 2's view of vm2a as its peers learn it (own group inventory).
fn peer_vm(c: &mut Cluster, at: Millis, from: NodeId, d: LocalDomain) {
    c.apply(Input::GroupChange {
        at,
        group: Group::Own,
        members: [1, 2, 3].iter().map(|&i| member(i, 200 + i)).collect(),
        left: vec![],
        joined: vec![],
    });
    // Every fenceline peer announces a complete inventory (once).
    for id in [1, 2, 3] {
        let accounted = c
            .snapshot(at)
            .nodes
            .iter()
            .any(|n| n.nodeid == id && n.accounted);
        if Some(id) == c.local_nodeid() || accounted {
            continue;
        }
        for msg in [
            OwnMessage::Info(PeerInfo {
                version: "t".into(),
                started_at: 0,
                libvirt: vec![],
                inventory_complete: true,
                key_digests: Default::default(),
                self_fence_secs: None,
            }),
            OwnMessage::InventoryBegin { generation: 1 },
            OwnMessage::InventoryEnd {
                generation: 1,
                count: Some(0),
            },
        ] {
            c.apply(Input::PeerMessage { at, from: id, msg });
        }
    }
    c.apply(Input::PeerMessage {
        at,
        from,
        msg: OwnMessage::Vms { vms: vec![d] },
    });
}

#[test]
fn the_owner_acts_and_the_others_stay_silent() {
    let vm = dom("vm2a", 1, Running);
    let mut n2 = lab(2, std::slice::from_ref(&vm));
    let out = request(&mut n2, 10, 1, 7, "vm2a", FenceOp::Off);
    let a = acts(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].op, a[0].name.as_str(), a[0].uri.as_str()),
        (FenceOp::Off, "vm2a", URI)
    );
    assert!(sent_replies(&out).is_empty(), "no reply before the action");
    // The action finishes: the reply goes to the requester with its seqno.
    let out = n2.apply(Input::FenceActed {
        at: 30,
        job: a[0].job,
        result: FenceResult::Ok,
        detail: None,
        not_found: false,
        migrated: false,
    });
    assert_eq!(sent_replies(&out), vec![(7, 1, FenceResult::Ok)]);
    assert_eq!(
        fence_events(&out),
        vec![(FencePhase::Acted, FenceResult::Ok)]
    );

    let mut n3 = lab(3, &[]);
    peer_vm(&mut n3, 5, 2, vm.clone());
    let out = request(&mut n3, 10, 1, 7, "vm2a", FenceOp::Off);
    assert!(acts(&out).is_empty() && sent_replies(&out).is_empty());
    // By UUID (name_mode = "uuid"), case-insensitively, too.
    n2.cfg.fence.name_match = NameMatch::Uuid;
    let out = request(&mut n2, 40, 1, 8, &vm.uuid.to_uppercase(), FenceOp::Status);
    assert_eq!(acts(&out).len(), 1);
}

#[test]
fn the_requester_waits_for_the_holder_not_for_a_shut_off_copy() {
    let mut n1 = lab(1, &[]);
    peer_vm(&mut n1, 5, 2, dom("vm2a", 1, Running));
    // Node 3 has a shut-off definition of the same VM (shared storage).
    peer_vm(&mut n1, 6, 3, dom("vm2a", 1, Shutoff));
    let out = submit(&mut n1, 10, 42, "vm2a", FenceOp::Off);
    let (seqno, body) = sent_request(&out).expect("a REQUEST goes out");
    assert_eq!((body.vm_name.as_str(), body.request), ("vm2a", 1));
    // fence_virtd's bug: the shut-off copy answers "ok" at once. Ignored.
    let out = reply(
        &mut n1,
        11,
        3,
        seqno,
        1,
        "vm2a",
        FenceOp::Off,
        FenceResult::Ok,
    );
    assert!(done(&out).is_none());
    let out = reply(
        &mut n1,
        25,
        2,
        seqno,
        1,
        "vm2a",
        FenceOp::Off,
        FenceResult::Ok,
    );
    let (id, result, by, _) = done(&out).expect("answered");
    assert_eq!((id, result, by), (42, FenceResult::Ok, Some(2)));
    assert_eq!(
        fence_events(&out),
        vec![(FencePhase::Result, FenceResult::Ok)]
    );
    assert!(!n1.fence_busy());
}

#[test]
fn replies_for_other_requesters_or_other_requests_are_ignored() {
    let mut n1 = lab(1, &[]);
    peer_vm(&mut n1, 5, 2, dom("vm2a", 1, Running));
    let out = submit(&mut n1, 10, 1, "vm2a", FenceOp::Status);
    let (seqno, _) = sent_request(&out).unwrap();
    assert!(
        done(&reply(
            &mut n1,
            11,
            2,
            seqno,
            3,
            "vm2a",
            FenceOp::Status,
            FenceResult::Ok
        ))
        .is_none()
    );
    assert!(
        done(&reply(
            &mut n1,
            11,
            2,
            seqno + 1,
            1,
            "vm2a",
            FenceOp::Status,
            FenceResult::Ok
        ))
        .is_none()
    );
    assert!(
        done(&reply(
            &mut n1,
            11,
            2,
            seqno,
            1,
            "other",
            FenceOp::Status,
            FenceResult::Ok
        ))
        .is_none()
    );
    assert!(
        done(&reply(
            &mut n1,
            11,
            2,
            seqno,
            1,
            "vm2a",
            FenceOp::Off,
            FenceResult::Ok
        ))
        .is_none()
    );
    let out = reply(
        &mut n1,
        12,
        2,
        seqno,
        1,
        "VM2A",
        FenceOp::Status,
        FenceResult::Off,
    );
    assert_eq!(done(&out).unwrap().1, FenceResult::Off);
}

#[test]
fn nobody_knows_the_vm_the_highest_id_answers_at_once_when_every_node_is_accounted_for() {
    let mut n3 = lab(3, &[]);
    let mut n2 = lab(2, &[]);
    // Every peer is a fenceline daemon with a complete inventory.
    peer_vm(&mut n3, 5, 1, dom("other", 9, Running));
    peer_vm(&mut n2, 5, 1, dom("other", 9, Running));
    for (op, want) in [
        (FenceOp::Status, FenceResult::Off),
        (FenceOp::Off, FenceResult::Ok),
        (FenceOp::Reboot, FenceResult::Ok),
        (FenceOp::On, FenceResult::Fail),
    ] {
        assert!(sent_replies(&request(&mut n2, 10, 1, 5, "ghost", op)).is_empty());
        // Every inventory came before the REQUEST in total order: no grace.
        let out = request(&mut n3, 10, 1, 5, "ghost", op);
        assert_eq!(sent_replies(&out), vec![(5, 1, want)], "{op}");
        assert!(!n3.fence_busy());
    }
}

#[test]
fn a_reply_from_a_real_owner_cancels_the_unknown_answer() {
    // Nodes 1 and 2 run fence_virtd: only with the legacy switch does the
    // highest node answer for an unknown VM (else see `holes.rs`), and it
    // waits out the grace first.
    let mut n3 = lab(3, &[]);
    n3.cfg.fence.unknown_without_quorum = true;
    let out = request(&mut n3, 1, 1, 4, "ghost", FenceOp::Status);
    assert!(sent_replies(&out).is_empty(), "waits out the grace first");
    let out = n3.apply(Input::Tick {
        at: 1 + FenceRules::default().unknown_grace_ms,
    });
    assert_eq!(sent_replies(&out), vec![(4, 1, FenceResult::Off)]);
    request(&mut n3, 10, 1, 5, "fresh", FenceOp::Off);
    // A fence_virtd host that had not announced the VM yet replies first.
    reply(&mut n3, 50, 2, 5, 1, "fresh", FenceOp::Off, FenceResult::Ok);
    let out = n3.apply(Input::Tick { at: 10_000 });
    assert!(sent_replies(&out).is_empty());
    // Or its STORE arrives during the grace: the owner answers, not us.
    request(&mut n3, 20_000, 1, 6, "late", FenceOp::Off);
    store(&mut n3, 20_010, 2, &dom("late", 9, Running));
    let out = n3.apply(Input::Tick { at: 30_000 });
    assert!(sent_replies(&out).is_empty());
}

#[test]
fn without_quorum_an_unknown_vm_is_never_assumed_off() {
    let mut n3 = lab(3, &[]);
    n3.apply(Input::Quorum {
        at: 5,
        quorate: false,
        members: vec![3],
    });
    // The high id answers "fail" at once, and says why.
    let out = request(&mut n3, 10, 1, 5, "ghost", FenceOp::Off);
    assert_eq!(sent_replies(&out), vec![(5, 1, FenceResult::Fail)]);
    // A local requester refuses without asking anyone.
    let out = submit(&mut n3, 11, 9, "ghost", FenceOp::Status);
    assert!(sent_request(&out).is_none());
    let (_, result, _, detail) = done(&out).unwrap();
    assert_eq!(result, FenceResult::Fail);
    assert!(detail.unwrap().contains("no quorum"));
    // A VM the map does know is still routed to its owner.
    peer_vm(&mut n3, 12, 2, dom("vm2a", 1, Running));
    assert!(sent_request(&submit(&mut n3, 13, 10, "vm2a", FenceOp::Status)).is_some());
}

#[test]
fn the_legacy_switch_restores_fence_virtds_answer_without_quorum() {
    let mut c = Cluster::new(ModelConfig {
        event_capacity: 100,
        version: "t".into(),
        started_at: 0,
        libvirt_uris: Vec::new(),
        key_digests: Default::default(),
        max_peer_vms: DEFAULT_MAX_PEER_VMS,
        fence: FenceRules {
            unknown_without_quorum: true,
            ..FenceRules::default()
        },
    });
    c.apply(Input::CorosyncUp {
        at: 1,
        local_nodeid: 3,
        cluster_name: None,
        nodelist: vec![(1, None), (3, None)],
    });
    c.apply(Input::Quorum {
        at: 2,
        quorate: false,
        members: vec![3],
    });
    fa_members(&mut c, 3, &[1, 3], &[]);
    c.apply(Input::LocalList {
        at: 4,
        uri: URI.into(),
        domains: vec![],
    });
    request(&mut c, 10, 1, 5, "ghost", FenceOp::Off);
    let out = c.apply(Input::Tick { at: 1000 });
    assert_eq!(sent_replies(&out), vec![(5, 1, FenceResult::Ok)]);
}

#[test]
fn a_conflict_is_destroyed_everywhere_and_never_started_twice() {
    let vm = dom("split", 4, Running);
    let mut n1 = lab(1, std::slice::from_ref(&vm));
    peer_vm(&mut n1, 5, 2, vm.clone());
    // off: every holder acts; the requester needs both replies.
    let out = submit(&mut n1, 10, 77, "split", FenceOp::Off);
    let (seqno, _) = sent_request(&out).unwrap();
    let out = request(&mut n1, 11, 1, seqno, "split", FenceOp::Off);
    assert_eq!(acts(&out).len(), 1, "node 1 holds it too");
    let out = reply(
        &mut n1,
        20,
        2,
        seqno,
        1,
        "split",
        FenceOp::Off,
        FenceResult::Ok,
    );
    assert!(
        done(&out).is_none(),
        "node 1's own destroy is still running"
    );
    let out = reply(
        &mut n1,
        21,
        1,
        seqno,
        1,
        "split",
        FenceOp::Off,
        FenceResult::Fail,
    );
    assert_eq!(
        done(&out).unwrap().1,
        FenceResult::Fail,
        "the worst result wins"
    );
    // on and reboot are refused while it runs twice.
    for op in [FenceOp::On, FenceOp::Reboot] {
        let out = submit(&mut n1, 30, 78, "split", op);
        assert!(sent_request(&out).is_none());
        assert_eq!(done(&out).unwrap().1, FenceResult::Fail);
        // A fence_virtd requester gets one refusal, from the lowest holder.
        let out = request(&mut n1, 31, 3, 9, "split", op);
        assert_eq!(sent_replies(&out), vec![(9, 3, FenceResult::Fail)]);
        assert!(acts(&out).is_empty());
    }
}

#[test]
fn shut_off_on_several_hosts_the_lowest_answers_and_on_is_refused() {
    let vm = dom("shared", 5, Shutoff);
    let mut n1 = lab(1, std::slice::from_ref(&vm));
    peer_vm(&mut n1, 5, 3, vm.clone());
    let mut n3 = lab(3, std::slice::from_ref(&vm));
    peer_vm(&mut n3, 5, 1, vm.clone());
    for op in [FenceOp::Off, FenceOp::Status, FenceOp::Reboot] {
        assert_eq!(
            acts(&request(&mut n1, 10, 2, 1, "shared", op)).len(),
            1,
            "{op}"
        );
        let out = request(&mut n3, 10, 2, 1, "shared", op);
        assert!(
            acts(&out).is_empty() && sent_replies(&out).is_empty(),
            "{op}"
        );
    }
    let out = request(&mut n1, 10, 2, 2, "shared", FenceOp::On);
    assert_eq!(sent_replies(&out), vec![(2, 2, FenceResult::Fail)]);
    // Defined on one host only: that host starts it.
    let mut n2 = lab(2, &[dom("solo", 6, Shutoff)]);
    peer_vm(&mut n2, 5, 3, dom("other", 7, Shutoff));
    assert_eq!(
        acts(&request(&mut n2, 10, 1, 3, "solo", FenceOp::On)).len(),
        1
    );
}

#[test]
fn every_wait_ends_timeout_node_loss_or_corosync_loss() {
    let mut n1 = lab(1, &[]);
    peer_vm(&mut n1, 5, 2, dom("vm2a", 1, Running));
    let rules = FenceRules::default();
    let seqno = sent_request(&submit(&mut n1, 10, 1, "vm2a", FenceOp::Off))
        .unwrap()
        .0;
    // Whom it waits for is decided when its REQUEST comes back.
    request(&mut n1, 10, 1, seqno, "vm2a", FenceOp::Off);
    assert!(
        done(&n1.apply(Input::Tick {
            at: 10 + rules.timeout_ms - 1
        }))
        .is_none()
    );
    let out = n1.apply(Input::Tick {
        at: 10 + rules.timeout_ms,
    });
    let (_, result, _, detail) = done(&out).unwrap();
    assert_eq!(result, FenceResult::Fail);
    assert!(detail.unwrap().contains("no reply from node(s) 2"));
    // Reboot waits longer.
    let seqno = sent_request(&submit(&mut n1, 100_000, 2, "vm2a", FenceOp::Reboot))
        .unwrap()
        .0;
    request(&mut n1, 100_000, 1, seqno, "vm2a", FenceOp::Reboot);
    assert!(
        done(&n1.apply(Input::Tick {
            at: 100_000 + rules.timeout_ms
        }))
        .is_none()
    );
    // The holder leaves fence-agents: fail now, not at the deadline.
    let out = fa_members(&mut n1, 100_010, &[1, 3], &[2]);
    let (id, result, _, detail) = done(&out).unwrap();
    assert_eq!((id, result), (2, FenceResult::Fail));
    assert!(detail.unwrap().contains("left before replying"));
    // Corosync lost: everything pending fails.
    peer_vm(&mut n1, 100_020, 3, dom("vm3a", 2, Running));
    submit(&mut n1, 100_030, 3, "vm3a", FenceOp::Status);
    let out = n1.apply(Input::CorosyncDown {
        at: 100_040,
        error: "gone".into(),
    });
    assert_eq!(done(&out).unwrap().0, 3);
    // ... and new requests are refused while it is down.
    let out = submit(&mut n1, 100_050, 4, "vm3a", FenceOp::Status);
    assert!(sent_request(&out).is_none());
    assert!(done(&out).unwrap().3.unwrap().contains("corosync"));
    assert!(!n1.fence_busy());
}

#[test]
fn a_request_that_cannot_be_sent_fails_at_once() {
    let mut n1 = lab(1, &[]);
    peer_vm(&mut n1, 5, 2, dom("vm2a", 1, Running));
    let out = submit(&mut n1, 10, 5, "vm2a", FenceOp::Off);
    let (seqno, _) = sent_request(&out).unwrap();
    let out = n1.apply(Input::FenceSendFailed {
        at: 11,
        seqno,
        error: "CS_ERR_TRY_AGAIN".into(),
    });
    assert_eq!(done(&out).unwrap().1, FenceResult::Fail);
}

#[test]
fn bad_requests_are_refused_before_routing() {
    let mut n1 = lab(1, &[]);
    for (vm, op) in [
        ("", FenceOp::Off),
        (&"x".repeat(128) as &str, FenceOp::Off),
        ("vm", FenceOp::List),
    ] {
        let out = submit(&mut n1, 10, 1, vm, op);
        assert!(sent_request(&out).is_none());
        assert_eq!(done(&out).unwrap().1, FenceResult::Fail);
    }
    // CPG requests with ops nobody routes are ignored.
    let out = request(&mut n1, 10, 2, 1, "vm", FenceOp::List);
    assert!(out.effects.is_empty());
}

#[test]
fn libvirt_backend_acts_locally_without_cpg() {
    let mut c = Cluster::new(ModelConfig {
        event_capacity: 100,
        version: "t".into(),
        started_at: 0,
        libvirt_uris: Vec::new(),
        key_digests: Default::default(),
        max_peer_vms: DEFAULT_MAX_PEER_VMS,
        fence: FenceRules {
            cpg: false,
            ..FenceRules::default()
        },
    });
    c.apply(Input::LocalList {
        at: 1,
        uri: URI.into(),
        domains: vec![dom("here", 1, Running)],
    });
    let out = submit(&mut c, 5, 1, "here", FenceOp::Reboot);
    assert!(sent_request(&out).is_none());
    let a = acts(&out);
    assert_eq!(a.len(), 1);
    let out = c.apply(Input::FenceActed {
        at: 9,
        job: a[0].job,
        result: FenceResult::Ok,
        detail: None,
        not_found: false,
        migrated: false,
    });
    let (id, result, _, _) = done(&out).unwrap();
    assert_eq!((id, result), (1, FenceResult::Ok));
    assert_eq!(
        fence_events(&out),
        vec![(FencePhase::Result, FenceResult::Ok)]
    );
    // Unknown here: status off, the rest fail (fence_virtd's libvirt backend).
    assert_eq!(
        done(&submit(&mut c, 10, 2, "elsewhere", FenceOp::Status))
            .unwrap()
            .1,
        FenceResult::Off
    );
    assert_eq!(
        done(&submit(&mut c, 10, 3, "elsewhere", FenceOp::Off))
            .unwrap()
            .1,
        FenceResult::Fail
    );
}

mod claim;
mod holes;
mod migration;
mod self_fence;
mod truth;
