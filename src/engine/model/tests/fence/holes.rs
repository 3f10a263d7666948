//! Issue 12's holes: inventories that prove nothing, peers that cannot be
//! parsed, and the smaller cases of the router.

use super::*;

/// A peer's inventory: begin, one `Vms` with `vms`, end announcing `count`.
fn inventory(c: &mut Cluster, at: Millis, from: NodeId, g: u64, vms: Vec<LocalDomain>, count: u64) {
    for msg in [
        OwnMessage::InventoryBegin { generation: g },
        OwnMessage::Vms { vms },
        OwnMessage::InventoryEnd {
            generation: g,
            count: Some(count),
        },
    ] {
        c.apply(Input::PeerMessage { at, from, msg });
    }
}

/// An own-group message from `from` that did not parse.
fn malformed_from(c: &mut Cluster, at: Millis, from: NodeId, reason: &str) {
    c.apply(Input::Malformed {
        at,
        group: Group::Own,
        from,
        reason: reason.into(),
    });
}

#[test]
fn an_inventory_with_a_lost_chunk_removes_nothing() {
    let mut n1 = lab(1, &[]);
    peer_vm(&mut n1, 5, 2, dom("vm2a", 1, Running));
    peer_vm(&mut n1, 5, 2, dom("vm2b", 2, Running));
    // The chunk with vm2b was lost under flow control; the end still came.
    inventory(&mut n1, 10, 2, 2, vec![dom("vm2a", 1, Running)], 2);
    let s = n1.snapshot(11);
    assert!(
        domain(&s, "vm2b").is_some(),
        "not removed: it may still run"
    );
    assert_eq!(s.counters.inventory_gaps, 1);
    // The re-announce that follows the drop is whole: now vm2b is gone.
    inventory(&mut n1, 20, 2, 3, vec![dom("vm2a", 1, Running)], 1);
    let s = n1.snapshot(21);
    assert!(domain(&s, "vm2b").is_none());
    assert!(domain(&s, "vm2a").is_some());
    assert_eq!(s.counters.inventory_gaps, 1);
}

#[test]
fn an_older_peers_end_without_a_count_removes_nothing() {
    let mut n1 = lab(1, &[]);
    peer_vm(&mut n1, 5, 2, dom("vm2b", 2, Running));
    for msg in [
        OwnMessage::InventoryBegin { generation: 4 },
        OwnMessage::InventoryEnd {
            generation: 4,
            count: None,
        },
    ] {
        n1.apply(Input::PeerMessage {
            at: 10,
            from: 2,
            msg,
        });
    }
    let s = n1.snapshot(11);
    assert!(domain(&s, "vm2b").is_some());
    assert_eq!(s.counters.inventory_gaps, 0, "no count: not a gap");
}

#[test]
fn a_peer_whose_messages_cannot_be_parsed_is_not_accounted_for() {
    let mut n1 = lab(1, &[]);
    peer_vm(&mut n1, 5, 2, dom("vm2a", 1, Running));
    assert!(node_view(&n1, 6, 2).accounted);
    malformed_from(
        &mut n1,
        10,
        2,
        "bad JSON payload: unknown variant `hibernating`",
    );
    let v = node_view(&n1, 14_000, 2);
    assert!(!v.accounted);
    let why = v.accounting.unwrap();
    assert!(
        why.contains("its messages cannot be parsed") && why.contains("13s ago"),
        "{why}"
    );
    // An unknown VM is not reported off while node 2 is unaccounted for.
    let seqno = sent_request(&submit(&mut n1, 14_000, 1, "ghost", FenceOp::Status))
        .unwrap()
        .0;
    let out = request(&mut n1, 14_001, 1, seqno, "ghost", FenceOp::Status);
    assert!(sent_replies(&out).is_empty(), "nobody may say off");
    // A newer peer's unknown message type is ignorable: node 3 stays.
    n1.apply(Input::PeerMessage {
        at: 15_000,
        from: 3,
        msg: OwnMessage::Unknown,
    });
    assert!(node_view(&n1, 15_001, 3).accounted);
    assert_eq!(n1.snapshot(15_001).counters.malformed_own, 2);
    // An inventory that a bad message interrupts proves nothing either.
    n1.apply(Input::PeerMessage {
        at: 16_000,
        from: 2,
        msg: OwnMessage::InventoryBegin { generation: 9 },
    });
    malformed_from(&mut n1, 16_001, 2, "bad JSON payload");
    n1.apply(Input::PeerMessage {
        at: 16_002,
        from: 2,
        msg: OwnMessage::InventoryEnd {
            generation: 9,
            count: Some(0),
        },
    });
    assert!(!node_view(&n1, 16_003, 2).accounted);
    assert!(domain(&n1.snapshot(16_003), "vm2a").is_some());
    // Its next complete inventory (after an upgrade) accounts for it again.
    inventory(&mut n1, 20_000, 2, 10, vec![dom("vm2a", 1, Running)], 1);
    assert!(node_view(&n1, 20_001, 2).accounted);
}

/// libvirt did not find the domain of `job` (a transient VM that stopped,
/// or one that moved away).
fn vanished(c: &mut Cluster, job: u64) -> Output {
    c.apply(Input::FenceActed {
        at: 12,
        job,
        result: FenceResult::Ok,
        detail: Some("vanished".into()),
        not_found: true,
        migrated: false,
    })
}

#[test]
fn off_for_a_domain_not_found_where_the_map_had_it_evaluates_the_map_again() {
    // n1 holds vm1 running; by the time libvirt looks, it is gone here.
    let mut n1 = lab(1, &[dom("vm1", 1, Running)]);
    peer_vm(&mut n1, 5, 2, dom("other", 2, Shutoff));
    let out = request(&mut n1, 10, 3, 7, "vm1", FenceOp::Off);
    let job = acts(&out)[0].job;
    // Meanwhile node 2 reports vm1 running (it migrated there).
    n1.apply(Input::PeerMessage {
        at: 11,
        from: 2,
        msg: OwnMessage::Vms {
            vms: vec![dom("vm1", 1, Running)],
        },
    });
    let out = vanished(&mut n1, job);
    assert_eq!(sent_replies(&out), vec![(7, 3, FenceResult::Fail)]);
    assert!(format!("{:?}", out.events).contains("active on nodes 2"));
    // Not found, and the map has no other active placement: ok stands.
    let mut n1 = lab(1, &[dom("vm1", 1, Running)]);
    peer_vm(&mut n1, 5, 2, dom("other", 2, Shutoff));
    let job = acts(&request(&mut n1, 10, 3, 8, "vm1", FenceOp::Off))[0].job;
    let out = vanished(&mut n1, job);
    assert_eq!(sent_replies(&out), vec![(8, 3, FenceResult::Ok)]);
}

#[test]
fn a_name_with_two_uuids_is_refused_as_ambiguous() {
    let mut n1 = lab(1, &[dom("web", 1, Shutoff)]);
    peer_vm(&mut n1, 5, 2, dom("web", 2, Running));
    // A local request is refused at once, without a REQUEST.
    let out = submit(&mut n1, 10, 1, "WEB", FenceOp::Off);
    assert!(sent_request(&out).is_none());
    let (_, result, _, detail) = done(&out).unwrap();
    assert_eq!(result, FenceResult::Fail);
    let detail = detail.unwrap();
    assert!(detail.contains("ambiguous; use the UUID"), "{detail}");
    // A peer's REQUEST (fence_virtd's, by name): nobody acts; the lowest
    // member of `fence-agents` (node 1) says why.
    let out = request(&mut n1, 11, 3, 9, "web", FenceOp::Off);
    assert!(acts(&out).is_empty());
    assert_eq!(sent_replies(&out), vec![(9, 3, FenceResult::Fail)]);
    let mut n2 = lab(2, &[dom("web", 2, Running)]);
    peer_vm(&mut n2, 5, 1, dom("web", 1, Shutoff));
    let out = request(&mut n2, 11, 3, 9, "web", FenceOp::Off);
    assert!(acts(&out).is_empty() && sent_replies(&out).is_empty());
    // With name_mode = "uuid", the UUID picks one.
    n2.cfg.fence.name_match = NameMatch::Uuid;
    let uuid = dom("web", 2, Running).uuid;
    assert_eq!(
        acts(&request(&mut n2, 12, 3, 10, &uuid, FenceOp::Off)).len(),
        1
    );
}

#[test]
fn in_a_mixed_cluster_absence_proves_nothing() {
    // Nodes 1 and 2 run fence_virtd (in `fence-agents`, not in our group).
    let mut n3 = lab(3, &[dom("local", 3, Shutoff)]);
    // An unknown VM: refused at once, not after a grace.
    let out = request(&mut n3, 10, 1, 5, "ghost", FenceOp::Status);
    assert_eq!(sent_replies(&out), vec![(5, 1, FenceResult::Fail)]);
    assert!(format!("{:?}", out.events).contains("runs fence_virtd"));
    assert!(!n3.fence_busy());
    // A shut-off copy here does not answer ok for it.
    let out = request(&mut n3, 11, 1, 6, "local", FenceOp::Off);
    assert!(acts(&out).is_empty());
    assert_eq!(sent_replies(&out), vec![(6, 1, FenceResult::Fail)]);
    // A requester here does not take a shut-off copy's ok either.
    let seqno = sent_request(&submit(&mut n3, 12, 1, "local", FenceOp::Off))
        .unwrap()
        .0;
    let out = request(&mut n3, 13, 3, seqno, "local", FenceOp::Off);
    let (_, result, _, detail) = done(&out).unwrap();
    assert_eq!(result, FenceResult::Fail);
    assert!(detail.unwrap().contains("runs fence_virtd"));
    // The fence_virtd peer that holds the VM active answers for it.
    store(&mut n3, 14, 2, &dom("vm2", 9, Running));
    let seqno = sent_request(&submit(&mut n3, 15, 2, "vm2", FenceOp::Off))
        .unwrap()
        .0;
    request(&mut n3, 16, 3, seqno, "vm2", FenceOp::Off);
    let out = reply(
        &mut n3,
        17,
        2,
        seqno,
        3,
        "vm2",
        FenceOp::Off,
        FenceResult::Ok,
    );
    assert_eq!(done(&out).unwrap().1, FenceResult::Ok);
}

#[test]
fn a_shut_off_vm_on_fence_virtd_hosts_is_answered_by_them() {
    // Nodes 1 and 2 run fence_virtd; node 1 defines vmF, shut off.
    let mut n3 = lab(3, &[]);
    store(&mut n3, 10, 1, &dom("vmF", 9, Shutoff));
    // Node 2 (fence_virtd too) may run it unannounced: refused at once.
    let out = submit(&mut n3, 11, 1, "vmF", FenceOp::Status);
    let seqno = sent_request(&out).unwrap().0;
    let out = request(&mut n3, 12, 3, seqno, "vmF", FenceOp::Status);
    let (_, result, _, detail) = done(&out).unwrap();
    assert_eq!(result, FenceResult::Fail);
    assert!(
        detail.unwrap().contains("node2"),
        "the unvouched fence_virtd host"
    );
    // Both fence_virtd hosts define it: each answers from its own libvirt,
    // so the requester waits for one of them and takes its "off".
    store(&mut n3, 13, 2, &dom("vmF", 9, Shutoff));
    let seqno = sent_request(&submit(&mut n3, 14, 1, "vmF", FenceOp::Status))
        .unwrap()
        .0;
    let out = request(&mut n3, 15, 3, seqno, "vmF", FenceOp::Status);
    assert!(done(&out).is_none(), "{:?}", out.events);
    let out = reply(
        &mut n3,
        16,
        2,
        seqno,
        3,
        "vmF",
        FenceOp::Status,
        FenceResult::Off,
    );
    assert_eq!(done(&out).unwrap().1, FenceResult::Off);
}

#[test]
fn the_call_limit_follows_the_configured_timeouts() {
    let rules = FenceRules {
        timeout_ms: 30_000,
        reboot_timeout_ms: 300_000,
        ..FenceRules::default()
    };
    assert_eq!(rules.call_limit_ms(FenceOp::Off), 40_000);
    assert_eq!(rules.call_limit_ms(FenceOp::Status), 40_000);
    assert_eq!(rules.call_limit_ms(FenceOp::Reboot), 310_000);
    // Always longer than the requester's own wait: the router answers first.
    for op in [FenceOp::Off, FenceOp::On, FenceOp::Reboot, FenceOp::Status] {
        assert!(rules.call_limit_ms(op) > rules.wait_ms(op));
    }
}

#[test]
fn name_mode_name_refuses_a_uuid_and_uuid_refuses_a_name() {
    let vm = dom("vm1", 1, Running);
    // name_mode = "name" (the default, as in fence_virtd).
    let mut n1 = lab(1, std::slice::from_ref(&vm));
    peer_vm(&mut n1, 5, 2, dom("other", 2, Shutoff));
    let out = submit(&mut n1, 10, 1, &vm.uuid, FenceOp::Status);
    assert!(sent_request(&out).is_none());
    let (_, result, _, detail) = done(&out).unwrap();
    assert_eq!(result, FenceResult::Fail);
    assert!(detail.unwrap().contains("name_mode = \"name\""));
    // A peer's REQUEST by UUID: nobody acts, nobody says "off" for it.
    let out = request(&mut n1, 11, 3, 4, &vm.uuid, FenceOp::Status);
    assert!(acts(&out).is_empty());
    assert_eq!(sent_replies(&out), vec![(4, 3, FenceResult::Fail)]);
    assert_eq!(
        acts(&request(&mut n1, 12, 3, 5, "VM1", FenceOp::Status)).len(),
        1
    );
    // name_mode = "uuid".
    n1.cfg.fence.name_match = NameMatch::Uuid;
    let out = submit(&mut n1, 20, 2, "vm1", FenceOp::Off);
    assert!(sent_request(&out).is_none());
    let (_, result, _, detail) = done(&out).unwrap();
    assert_eq!(result, FenceResult::Fail);
    assert!(detail.unwrap().contains("name_mode = \"uuid\""));
    let out = request(&mut n1, 21, 3, 6, "vm1", FenceOp::Off);
    assert!(acts(&out).is_empty());
    assert_eq!(sent_replies(&out), vec![(6, 3, FenceResult::Fail)]);
    let out = request(&mut n1, 22, 3, 7, &vm.uuid.to_uppercase(), FenceOp::Off);
    assert_eq!(acts(&out).len(), 1);
}

#[test]
fn peer_inventories_are_bounded_and_the_overflow_counted() {
    let mut n1 = lab(1, &[]);
    n1.cfg.max_peer_vms = 3;
    peer_vm(&mut n1, 5, 2, dom("vm2a", 1, Running));
    let vms: Vec<LocalDomain> = (1..=5)
        .map(|i| dom(&format!("vm{i}"), 10 + i, Running))
        .collect();
    let mut notices = 0;
    for msg in [
        OwnMessage::InventoryBegin { generation: 2 },
        OwnMessage::Vms { vms },
        OwnMessage::InventoryEnd {
            generation: 2,
            count: Some(5),
        },
    ] {
        let out = n1.apply(Input::PeerMessage {
            at: 10,
            from: 2,
            msg,
        });
        notices += out
            .notices
            .iter()
            .filter(|n| matches!(n, Notice::PeerVmDropped { from: 2, .. }))
            .count();
    }
    let s = n1.snapshot(11);
    let on2 = s
        .domains
        .iter()
        .filter(|d| d.placements.iter().any(|p| p.nodeid == 2))
        .count();
    assert_eq!(on2, 3, "the bound holds");
    assert_eq!(s.counters.dropped_peer_vms, 3, "vm3, vm4, vm5");
    assert_eq!(notices, 1, "one log line per run of drops");
    let v = node_view(&n1, 11, 2);
    assert!(!v.accounted, "a VM we dropped may run there");
    assert!(v.accounting.unwrap().contains("max_peer_vms"));
    // Names and UUIDs out of bounds are dropped too, never a panic.
    for (name, uuid) in [
        ("x".repeat(5000), String::new()),
        (String::new(), dom("a", 1, Running).uuid),
        ("bad\0name".into(), String::new()),
        ("ok-name".into(), "not-a-uuid".into()),
    ] {
        n1.apply(Input::PeerMessage {
            at: 12,
            from: 3,
            msg: OwnMessage::Vms {
                vms: vec![LocalDomain {
                    name,
                    uuid,
                    state: Running,
                    migration: None,
                }],
            },
        });
    }
    assert_eq!(n1.snapshot(13).counters.dropped_peer_vms, 7);
}

#[test]
fn a_stale_fence_virtd_record_ages_out_but_never_proves_off() {
    // Nodes 1 and 2 run fence_virtd. vmB moved from node 2 to this node.
    let mut n3 = lab(3, &[dom("vmB", 2, Running)]);
    let burst = |c: &mut Cluster, at: Millis, vms: &[LocalDomain]| {
        for (i, v) in vms.iter().enumerate() {
            store(c, at + i as u64, 2, v);
        }
    };
    burst(
        &mut n3,
        10,
        &[
            dom("vmA", 1, Running),
            dom("vmB", 2, Running),
            dom("vmC", 3, Running),
        ],
    );
    assert!(domain(&n3.snapshot(11), "vmB").unwrap().conflict);
    // Node 2's bursts (one per REQUEST) no longer carry vmB and vmC.
    for at in [2_000, 4_000, 6_000] {
        burst(&mut n3, at, &[dom("vmA", 1, Running)]);
        assert!(
            domain(&n3.snapshot(at + 10), "vmB").unwrap().conflict,
            "{at}"
        );
    }
    // Missing from three bursts in a row: gone when the next one starts.
    burst(&mut n3, 8_000, &[dom("vmA", 1, Running)]);
    let s = n3.snapshot(8_010);
    let b = domain(&s, "vmB").unwrap();
    assert!(!b.conflict);
    assert_eq!(b.owner, Some(3), "fencing it here is no longer blocked");
    assert!(domain(&s, "vmA").is_some(), "announced: kept");
    // vmC is unknown now, but absence proves nothing with fence_virtd
    // members: it is never reported off.
    let out = request(&mut n3, 9_000, 1, 4, "vmC", FenceOp::Status);
    assert_eq!(sent_replies(&out), vec![(4, 1, FenceResult::Fail)]);
    let seqno = sent_request(&submit(&mut n3, 9_001, 1, "vmC", FenceOp::Off))
        .unwrap()
        .0;
    let out = request(&mut n3, 9_002, 3, seqno, "vmC", FenceOp::Off);
    assert_eq!(done(&out).unwrap().1, FenceResult::Fail);
}

#[test]
fn a_holder_answers_while_its_stop_is_not_delivered_back() {
    // vm3b runs here (node 3) and is defined, shut off, on node 1.
    let mut n3 = lab(3, &[dom("vm3b", 2, Running)]);
    peer_vm(&mut n3, 5, 1, dom("vm3b", 2, Shutoff));
    // It stops here; the announcement is multicast, not yet delivered.
    let out = n3.apply(Input::LocalDomain {
        at: 10,
        uri: URI.into(),
        domain: dom("vm3b", 2, Shutoff),
    });
    let sent = out
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Own(m @ OwnMessage::Vms { .. }) => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    // A REQUEST ordered before it: every requester still expects node 3.
    let out = request(&mut n3, 11, 2, 7, "vm3b", FenceOp::Off);
    assert_eq!(acts(&out).len(), 1, "the expected holder answers");
    // Once its own message is back, node 1 (lowest defining) answers.
    n3.apply(Input::PeerMessage {
        at: 12,
        from: 3,
        msg: sent,
    });
    let out = request(&mut n3, 13, 2, 8, "vm3b", FenceOp::Off);
    assert!(acts(&out).is_empty() && sent_replies(&out).is_empty());
}

#[test]
fn a_stop_in_flight_never_makes_on_start_a_copy_here() {
    let mut n3 = lab(3, &[dom("vm3b", 2, Running)]);
    peer_vm(&mut n3, 5, 1, dom("vm3b", 2, Shutoff));
    // It migrated away: stopped here, the announcement still in flight.
    n3.apply(Input::LocalDomain {
        at: 10,
        uri: URI.into(),
        domain: dom("vm3b", 2, Shutoff),
    });
    let out = request(&mut n3, 11, 2, 7, "vm3b", FenceOp::On);
    assert!(
        acts(&out).is_empty(),
        "no start here: it may run elsewhere now"
    );
}
