//! The truth rule: "off" only when it is true (README "When fenceline says off").

use super::*;

/// Node `id`'s daemon leaves both groups (it crashed; the node stays a member).
fn daemon_dies(c: &mut Cluster, at: Millis, id: NodeId) {
    let rest: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&n| n != id).collect();
    c.apply(Input::GroupChange {
        at,
        group: Group::Own,
        members: rest.iter().map(|&i| member(i, 200 + i)).collect(),
        left: vec![member(id, 200 + id)],
        joined: vec![],
    });
    fa_members(c, at, &rest, &[id]);
}

#[test]
fn a_crashed_owners_vm_is_never_reported_off() {
    let mut n1 = lab(1, &[dom("vm2a", 1, Shutoff)]);
    peer_vm(&mut n1, 5, 2, dom("vm2a", 1, Running));
    daemon_dies(&mut n1, 10, 2);
    for (i, op) in [FenceOp::Status, FenceOp::Off, FenceOp::Reboot]
        .into_iter()
        .enumerate()
    {
        let seqno = sent_request(&submit(&mut n1, 4010, i as u64, "vm2a", op))
            .unwrap()
            .0;
        // The shut-off copy here does not act, and the requester refuses
        // as soon as its REQUEST comes back.
        let out = request(&mut n1, 4011, 1, seqno, "vm2a", op);
        assert!(acts(&out).is_empty(), "{op}");
        let (_, result, _, detail) = done(&out).unwrap();
        assert_eq!(result, FenceResult::Fail, "{op}");
        let detail = detail.unwrap();
        assert!(
            detail.contains("last seen running on node2 (2)")
                && detail.contains("its daemon is down"),
            "{detail}"
        );
    }
    // `on` does not start the shut-off copy while it may run on node 2.
    let out = request(&mut n1, 4020, 3, 9, "vm2a", FenceOp::On);
    assert!(acts(&out).is_empty());
    assert_eq!(sent_replies(&out), vec![(9, 3, FenceResult::Fail)]);
}

#[test]
fn an_ok_from_another_node_is_checked_again_by_the_requester() {
    let mut n1 = lab(1, &[]);
    peer_vm(&mut n1, 5, 2, dom("vm2a", 1, Running));
    peer_vm(&mut n1, 5, 3, dom("vm2a", 1, Shutoff));
    let seqno = sent_request(&submit(&mut n1, 10, 1, "vm2a", FenceOp::Off))
        .unwrap()
        .0;
    request(&mut n1, 11, 1, seqno, "vm2a", FenceOp::Off);
    // Node 2's daemon dies before it answered; node 3 (a peer with an
    // older map, or fence_virtd) says ok for its shut-off copy.
    let out = reply(
        &mut n1,
        12,
        3,
        seqno,
        1,
        "vm2a",
        FenceOp::Off,
        FenceResult::Ok,
    );
    assert!(done(&out).is_none(), "not from the holder");
    let out = daemon_dies_out(&mut n1, 13, 2);
    let (_, result, _, detail) = done(&out).unwrap();
    assert_eq!(result, FenceResult::Fail);
    assert!(detail.unwrap().contains("left before replying"));
}

fn daemon_dies_out(c: &mut Cluster, at: Millis, id: NodeId) -> Output {
    let rest: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&n| n != id).collect();
    c.apply(Input::GroupChange {
        at,
        group: Group::Own,
        members: rest.iter().map(|&i| member(i, 200 + i)).collect(),
        left: vec![],
        joined: vec![],
    });
    fa_members(c, at, &rest, &[id])
}

#[test]
fn nobody_knows_the_vm_but_a_node_is_unaccounted_so_it_is_refused_at_once() {
    let mut n3 = lab(3, &[]);
    peer_vm(&mut n3, 5, 1, dom("vm1a", 1, Running));
    // Node 2 left the membership and is not confirmed down.
    n3.apply(Input::Quorum {
        at: 10,
        quorate: true,
        members: vec![1, 3],
    });
    let out = request(&mut n3, 4010, 1, 5, "ghost", FenceOp::Status);
    assert_eq!(sent_replies(&out), vec![(5, 1, FenceResult::Fail)]);
    assert!(!n3.fence_busy(), "no grace for a refusal");
    let detail = format!("{:?}", out.events);
    assert!(
        detail.contains("node2 (2): left the membership 4s ago, not confirmed down"),
        "{detail}"
    );
    // The operator confirms node 2 down: the unknown-VM rule applies again.
    let out = n3.apply(Input::Confirm {
        at: 5000,
        id: 1,
        node: "node2".into(),
        source: "test".into(),
    });
    assert!(
        out.effects
            .iter()
            .any(|e| matches!(e, Effect::ConfirmDone { result: Ok(_), .. }))
    );
    let out = request(&mut n3, 5010, 1, 6, "ghost", FenceOp::Status);
    assert_eq!(sent_replies(&out), vec![(6, 1, FenceResult::Off)]);
    // A confirmation lapses when the node joins again.
    n3.apply(Input::Quorum {
        at: 7000,
        quorate: true,
        members: vec![1, 2, 3],
    });
    let s = n3.snapshot(7001);
    assert!(!s.nodes.iter().find(|n| n.nodeid == 2).unwrap().accounted);
}

#[test]
fn a_host_whose_libvirt_was_not_listed_is_not_accounted_for() {
    let mut n3 = cluster_as(3);
    fa_members(&mut n3, 3, &[1, 2, 3], &[]);
    n3.apply(Input::LibvirtLink {
        at: 4,
        uri: URI.into(),
        connected: false,
        error: Some("Failed to connect socket".into()),
    });
    let out = request(&mut n3, 10, 1, 5, "ghost", FenceOp::Off);
    assert_eq!(sent_replies(&out), vec![(5, 1, FenceResult::Fail)]);
    assert!(format!("{:?}", out.events).contains("libvirt inventory is incomplete"));
    // Once listed, the inventory is complete and announced again.
    let out = n3.apply(Input::LocalList {
        at: 20,
        uri: URI.into(),
        domains: vec![],
    });
    assert!(out.effects.iter().any(|e| matches!(
        e,
        Effect::Own(OwnMessage::Info(PeerInfo {
            inventory_complete: true,
            ..
        }))
    )));
    assert!(
        out.effects
            .iter()
            .any(|e| matches!(e, Effect::Own(OwnMessage::InventoryEnd { .. })))
    );
}

#[test]
fn an_incomplete_inventory_keeps_lost_placements_lost() {
    let mut n1 = lab(1, &[]);
    peer_vm(&mut n1, 5, 2, dom("vm2a", 1, Running));
    daemon_dies(&mut n1, 10, 2);
    // The daemon restarts while libvirtd is down: empty, incomplete.
    let info = |complete| {
        OwnMessage::Info(PeerInfo {
            version: "t".into(),
            started_at: 0,
            libvirt: vec![],
            inventory_complete: complete,
            key_digests: Default::default(),
            self_fence_secs: None,
        })
    };
    for msg in [
        info(false),
        OwnMessage::InventoryBegin { generation: 1 },
        OwnMessage::InventoryEnd {
            generation: 1,
            count: Some(0),
        },
    ] {
        n1.apply(Input::PeerMessage {
            at: 20,
            from: 2,
            msg,
        });
    }
    let d = n1.snapshot(21);
    let d = d.domains.iter().find(|d| d.name == "vm2a").unwrap();
    assert!(d.placements[0].lost, "still lost: the VM may run there");
    // Its libvirt is back: a complete inventory clears the loss.
    for msg in [
        info(true),
        OwnMessage::InventoryBegin { generation: 2 },
        OwnMessage::Vms {
            vms: vec![dom("vm2a", 1, Running)],
        },
        OwnMessage::InventoryEnd {
            generation: 2,
            count: Some(1),
        },
    ] {
        n1.apply(Input::PeerMessage {
            at: 30,
            from: 2,
            msg,
        });
    }
    let s = n1.snapshot(31);
    let d = s.domains.iter().find(|d| d.name == "vm2a").unwrap();
    assert!(!d.placements[0].lost);
}

#[test]
fn the_requester_decides_whom_it_waits_for_when_its_request_comes_back() {
    let mut n1 = lab(1, &[]);
    peer_vm(&mut n1, 5, 2, dom("vm", 1, Running));
    peer_vm(&mut n1, 5, 3, dom("vm", 1, Shutoff));
    let seqno = sent_request(&submit(&mut n1, 10, 1, "vm", FenceOp::Off))
        .unwrap()
        .0;
    // Before our REQUEST comes back, the VM moves from node 2 to node 3.
    for (from, state) in [(2, Shutoff), (3, Running)] {
        n1.apply(Input::PeerMessage {
            at: 11,
            from,
            msg: OwnMessage::Vms {
                vms: vec![dom("vm", 1, state)],
            },
        });
    }
    request(&mut n1, 12, 1, seqno, "vm", FenceOp::Off);
    // Node 3, the holder on the map every node routes on, acts and replies.
    let out = reply(
        &mut n1,
        20,
        3,
        seqno,
        1,
        "vm",
        FenceOp::Off,
        FenceResult::Ok,
    );
    let (_, result, acted_by, _) = done(&out).unwrap();
    assert_eq!((result, acted_by), (FenceResult::Ok, Some(3)));
}

#[test]
fn a_confirmation_reaches_every_fenceline_peer() {
    let mut n1 = lab(1, &[]);
    peer_vm(&mut n1, 5, 3, dom("vm3a", 1, Running));
    n1.apply(Input::Quorum {
        at: 10,
        quorate: true,
        members: vec![1, 2],
    });
    let out = n1.apply(Input::Confirm {
        at: 20,
        id: 1,
        node: "node3".into(),
        source: "op".into(),
    });
    let msg = out
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Own(m @ OwnMessage::Confirmed { .. }) => Some(m.clone()),
            _ => None,
        })
        .expect("broadcast");
    let mut n2 = lab(2, &[]);
    peer_vm(&mut n2, 5, 3, dom("vm3a", 1, Running));
    n2.apply(Input::Quorum {
        at: 10,
        quorate: true,
        members: vec![1, 2],
    });
    assert!(n2.snapshot(11).domains.iter().any(|d| d.name == "vm3a"));
    n2.apply(Input::PeerMessage {
        at: 21,
        from: 1,
        msg,
    });
    let s = n2.snapshot(22);
    assert!(s.domains.iter().all(|d| d.name != "vm3a"));
    let n3 = s.nodes.iter().find(|n| n.nodeid == 3).unwrap();
    assert!(n3.accounted);
    assert!(
        n3.accounting
            .as_deref()
            .unwrap()
            .contains("op on node1 (1)")
    );
}

#[test]
fn a_fence_reboots_momentary_stop_is_not_announced() {
    let vm = dom("vm1a", 1, Running);
    let mut n1 = lab(1, std::slice::from_ref(&vm));
    let out = request(&mut n1, 10, 2, 7, "vm1a", FenceOp::Reboot);
    let job = acts(&out)[0].job;
    // destroy: libvirt reports it shut off; nobody hears of it.
    let out = n1.apply(Input::LocalDomain {
        at: 11,
        uri: URI.into(),
        domain: dom("vm1a", 1, Shutoff),
    });
    assert!(out.effects.is_empty(), "{:?}", out.effects);
    assert_eq!(domain(&n1.snapshot(12), "vm1a").unwrap().state, Running);
    // The restart succeeds: still nothing to announce.
    let out = n1.apply(Input::FenceActed {
        at: 13,
        job,
        result: FenceResult::Ok,
        detail: None,
        not_found: false,
        migrated: false,
    });
    assert_eq!(sent_replies(&out), vec![(7, 2, FenceResult::Ok)]);
    assert!(!out.effects.iter().any(|e| matches!(e, Effect::Own(_))));
    // A reboot whose restart failed: the stop is applied and announced.
    let out = request(&mut n1, 20, 2, 8, "vm1a", FenceOp::Reboot);
    let job = acts(&out)[0].job;
    n1.apply(Input::LocalDomain {
        at: 21,
        uri: URI.into(),
        domain: dom("vm1a", 1, Shutoff),
    });
    let out = n1.apply(Input::FenceActed {
        at: 22,
        job,
        result: FenceResult::Ok,
        detail: Some("powered off, but the restart failed: x".into()),
        not_found: false,
        migrated: false,
    });
    assert!(
        out.effects
            .iter()
            .any(|e| matches!(e, Effect::Own(OwnMessage::Vms { .. })))
    );
    assert_eq!(domain(&n1.snapshot(23), "vm1a").unwrap().state, Shutoff);
}

#[test]
fn an_off_is_refused_when_a_copy_reported_running_meanwhile() {
    let mut n1 = lab(1, &[]);
    peer_vm(&mut n1, 5, 2, dom("vm2a", 1, Shutoff));
    peer_vm(&mut n1, 5, 3, dom("vm2a", 1, Shutoff));
    let seqno = sent_request(&submit(&mut n1, 10, 1, "vm2a", FenceOp::Status))
        .unwrap()
        .0;
    request(&mut n1, 11, 1, seqno, "vm2a", FenceOp::Status);
    // Shut off everywhere when the REQUEST came back; then node 3 reports
    // it running (started there) before node 2's "off" for its own copy.
    peer_vm(&mut n1, 15, 3, dom("vm2a", 1, Running));
    let out = reply(
        &mut n1,
        20,
        2,
        seqno,
        1,
        "vm2a",
        FenceOp::Status,
        FenceResult::Off,
    );
    let (_, result, _, detail) = done(&out).unwrap();
    assert_eq!(result, FenceResult::Fail);
    assert!(
        detail.unwrap().contains("runs on node3"),
        "the reason names it"
    );
}
