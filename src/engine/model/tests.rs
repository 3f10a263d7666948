use super::*;
use fenceline_proto::api::{DaemonKind, DomainState, DomainView, Millis, NodeId, Snapshot};
use fenceline_proto::api::{DomainAction, DomainState::*, EventKind, MembershipAction};

const URI: &str = "qemu:///system";

pub(super) fn cluster_as(local: NodeId) -> Cluster {
    let mut c = Cluster::new(ModelConfig {
        event_capacity: 100,
        version: "test".into(),
        started_at: 0,
        libvirt_uris: Vec::new(),
        key_digests: Default::default(),
        max_peer_vms: DEFAULT_MAX_PEER_VMS,
        fence: FenceRules::default(),
    });
    c.apply(Input::CorosyncUp {
        at: 1,
        local_nodeid: local,
        cluster_name: Some("lab".into()),
        nodelist: vec![
            (1, Some("node1".into())),
            (2, Some("node2".into())),
            (3, Some("node3".into())),
        ],
    });
    c.apply(Input::Quorum {
        at: 2,
        quorate: true,
        members: vec![1, 2, 3],
    });
    c
}

fn dom(name: &str, n: u8, state: DomainState) -> LocalDomain {
    LocalDomain {
        name: name.into(),
        uuid: format!("8f1e0000-0000-4000-8000-0000000000{n:02}"),
        state,
        migration: None,
    }
}

fn member(nodeid: NodeId, pid: u32) -> GroupMember {
    GroupMember {
        nodeid,
        pid,
        reason: "Join".into(),
    }
}

pub(super) fn fa_members(c: &mut Cluster, at: Millis, ids: &[NodeId], left: &[NodeId]) -> Output {
    c.apply(Input::GroupChange {
        at,
        group: Group::FenceAgents,
        members: ids.iter().map(|&i| member(i, 100 + i)).collect(),
        left: left
            .iter()
            .map(|&i| GroupMember {
                nodeid: i,
                pid: 100 + i,
                reason: "NodeDown".into(),
            })
            .collect(),
        joined: vec![],
    })
}

fn store(c: &mut Cluster, at: Millis, from: NodeId, d: &LocalDomain) -> Output {
    c.apply(Input::PeerRecord {
        at,
        from,
        record: VmRecord {
            name: d.name.clone(),
            uuid: d.uuid.clone(),
            owner: from,
            state: d.state,
        },
    })
}

fn domain<'a>(s: &'a Snapshot, name: &str) -> Option<&'a DomainView> {
    s.domains.iter().find(|d| d.name == name)
}

fn domain_actions(out: &Output) -> Vec<DomainAction> {
    out.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Domain { action, .. } => Some(*action),
            _ => None,
        })
        .collect()
}

#[test]
fn local_listing_is_owned_by_local_node_and_announced() {
    let mut c = cluster_as(1);
    let out = c.apply(Input::LocalList {
        at: 10,
        uri: URI.into(),
        domains: vec![dom("vm1a", 1, Running), dom("vm1off", 2, Shutoff)],
    });
    assert_eq!(domain_actions(&out), vec![DomainAction::Appeared; 2]);
    let stores: Vec<&VmRecord> = out
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::StoreVms(r) => Some(r),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(stores.len(), 2);
    assert!(stores.iter().all(|r| r.owner == 1));
    let s = c.snapshot(11);
    let d = domain(&s, "vm1a").unwrap();
    assert_eq!(
        (d.owner, d.state, d.uri.as_deref()),
        (Some(1), Running, Some(URI))
    );
    assert_eq!(domain(&s, "vm1off").unwrap().owner, Some(1));
    assert_eq!(s.nodes.iter().find(|n| n.nodeid == 1).unwrap().vm_count, 2);
}

#[test]
fn peer_store_records_build_the_map() {
    let mut c = cluster_as(1);
    fa_members(&mut c, 5, &[1, 2], &[]);
    store(&mut c, 10, 2, &dom("vm2a", 3, Running));
    let s = c.snapshot(11);
    let d = domain(&s, "vm2a").unwrap();
    assert_eq!((d.owner, d.state), (Some(2), Running));
    assert_eq!(d.uri, None);
    // The node runs a daemon in fence-agents but not fenceline's group: fence_virtd.
    let n2 = s.nodes.iter().find(|n| n.nodeid == 2).unwrap();
    assert_eq!(n2.daemons, vec![DaemonKind::FenceVirtd]);
}

#[test]
fn state_change_emits_one_event_with_previous_state() {
    let mut c = cluster_as(1);
    fa_members(&mut c, 5, &[1, 2], &[]);
    store(&mut c, 10, 2, &dom("vm2a", 3, Running));
    let out = store(&mut c, 20, 2, &dom("vm2a", 3, Shutoff));
    assert_eq!(out.events.len(), 1);
    match &out.events[0].kind {
        EventKind::Domain {
            action,
            state,
            previous,
            ..
        } => {
            assert_eq!(*action, DomainAction::State);
            assert_eq!(*state, Shutoff);
            assert_eq!(*previous, Some(Running));
        }
        k => panic!("unexpected {k:?}"),
    }
    assert_eq!(domain(&c.snapshot(21), "vm2a").unwrap().since, 20);
    // Repeating the same record changes nothing.
    let again = store(&mut c, 30, 2, &dom("vm2a", 3, Shutoff));
    assert!(again.events.is_empty());
    assert_eq!(domain(&c.snapshot(31), "vm2a").unwrap().since, 20);
}

#[test]
fn vm_defined_on_several_hosts_belongs_to_where_it_runs() {
    let mut c = cluster_as(1);
    fa_members(&mut c, 5, &[1, 2, 3], &[]);
    c.apply(Input::LocalList {
        at: 10,
        uri: URI.into(),
        domains: vec![dom("shared", 9, Shutoff)],
    });
    store(&mut c, 11, 2, &dom("shared", 9, Running));
    store(&mut c, 12, 3, &dom("shared", 9, Shutoff));
    let s = c.snapshot(13);
    let d = domain(&s, "shared").unwrap();
    assert_eq!((d.owner, d.state, d.conflict), (Some(2), Running, false));
    assert_eq!(d.placements.len(), 3);
    // Shut off everywhere: defined on several hosts, no single owner.
    store(&mut c, 14, 2, &dom("shared", 9, Shutoff));
    let d2 = c.snapshot(15);
    let d2 = domain(&d2, "shared").unwrap();
    assert_eq!((d2.owner, d2.state), (None, Shutoff));
}

#[test]
fn vm_running_on_two_hosts_is_a_conflict_never_a_silent_pick() {
    let mut c = cluster_as(1);
    fa_members(&mut c, 5, &[1, 2, 3], &[]);
    store(&mut c, 10, 2, &dom("dup", 7, Running));
    let out = store(&mut c, 11, 3, &dom("dup", 7, Running));
    assert_eq!(domain_actions(&out), vec![DomainAction::Conflict]);
    let s = c.snapshot(12);
    let d = domain(&s, "dup").unwrap();
    assert!(d.conflict);
    assert_eq!(d.owner, None);
    // No node counts it as its own.
    assert!(s.nodes.iter().all(|n| n.vm_count == 0));
    // One copy stops: resolved, owned by the survivor.
    let out = store(&mut c, 13, 3, &dom("dup", 7, Shutoff));
    assert_eq!(domain_actions(&out), vec![DomainAction::ConflictResolved]);
    let s = c.snapshot(14);
    let d = domain(&s, "dup").unwrap();
    assert_eq!((d.conflict, d.owner), (false, Some(2)));
}

#[test]
fn local_and_peer_running_is_a_conflict() {
    let mut c = cluster_as(1);
    fa_members(&mut c, 5, &[1, 2], &[]);
    c.apply(Input::LocalList {
        at: 10,
        uri: URI.into(),
        domains: vec![dom("dup", 7, Running)],
    });
    store(&mut c, 11, 2, &dom("dup", 7, Paused));
    let s = c.snapshot(12);
    assert!(domain(&s, "dup").unwrap().conflict);
}

#[test]
fn node_leaving_keeps_its_vms_as_lost_until_confirmed() {
    let mut c = cluster_as(1);
    fa_members(&mut c, 5, &[1, 2, 3], &[]);
    store(&mut c, 10, 2, &dom("vm2a", 1, Running));
    store(&mut c, 10, 2, &dom("vm2b", 2, Running));
    store(&mut c, 10, 3, &dom("vm3a", 3, Running));
    let out = fa_members(&mut c, 20, &[1, 3], &[2]);
    // The VMs on a host whose daemon stopped are still running: they stay,
    // lost, not purged.
    assert_eq!(
        domain_actions(&out),
        vec![DomainAction::Lost, DomainAction::Lost]
    );
    assert!(out.events.iter().any(|e| matches!(
        e.kind,
        EventKind::Membership {
            action: MembershipAction::DaemonLeft,
            nodeid: Some(2),
            ..
        }
    )));
    let s = c.snapshot(21);
    let d = domain(&s, "vm2a").unwrap();
    assert_eq!((d.state, d.owner), (Running, Some(2)));
    assert!(d.placements[0].lost);
    assert_eq!(d.placements[0].lost_since, Some(20));
    assert!(!domain(&s, "vm3a").unwrap().placements[0].lost);
    let n2 = s.nodes.iter().find(|n| n.nodeid == 2).unwrap();
    assert!(!n2.accounted);
    assert_eq!(n2.accounting.as_deref(), Some("its daemon is down"));
    // An operator confirms node 2 down: its VMs leave the map.
    let out = c.apply(Input::Confirm {
        at: 30,
        id: 7,
        node: "node2".into(),
        source: "test".into(),
    });
    assert_eq!(
        domain_actions(&out),
        vec![DomainAction::Purged, DomainAction::Purged]
    );
    assert!(out.effects.iter().any(|e| matches!(
        e,
        Effect::ConfirmDone {
            id: 7,
            result: Ok(_)
        }
    )));
    assert!(out.events.iter().any(|e| matches!(
        e.kind,
        EventKind::Membership {
            action: MembershipAction::Confirmed,
            nodeid: Some(2),
            ..
        }
    )));
    let s = c.snapshot(31);
    assert!(domain(&s, "vm2a").is_none());
    assert!(s.nodes.iter().find(|n| n.nodeid == 2).unwrap().accounted);
}

#[test]
fn a_member_with_a_daemon_cannot_be_confirmed_down() {
    let mut c = cluster_as(1);
    fa_members(&mut c, 5, &[1, 2, 3], &[]);
    let out = c.apply(Input::Confirm {
        at: 30,
        id: 1,
        node: "3".into(),
        source: "test".into(),
    });
    assert!(out.effects.iter().any(|e| matches!(
        e,
        Effect::ConfirmDone {
            id: 1,
            result: Err(_)
        }
    )));
    let out = c.apply(Input::Confirm {
        at: 30,
        id: 2,
        node: "node9".into(),
        source: "test".into(),
    });
    assert!(out.effects.iter().any(|e| matches!(
        e,
        Effect::ConfirmDone {
            id: 2,
            result: Err(_)
        }
    )));
}

#[test]
fn corosync_membership_loss_also_loses_the_placements() {
    let mut c = cluster_as(1);
    fa_members(&mut c, 5, &[1, 2, 3], &[]);
    store(&mut c, 10, 3, &dom("vm3a", 3, Running));
    let out = c.apply(Input::Quorum {
        at: 20,
        quorate: true,
        members: vec![1, 2],
    });
    assert!(domain_actions(&out).contains(&DomainAction::Lost));
    let s = c.snapshot(4021);
    let n3 = s.nodes.iter().find(|n| n.nodeid == 3).unwrap();
    assert!(!n3.member && !n3.accounted);
    assert_eq!(
        n3.accounting.as_deref(),
        Some("left the membership 4s ago, not confirmed down")
    );
    assert!(domain(&s, "vm3a").unwrap().placements[0].lost);
}

#[test]
fn quorum_loss_is_an_event_and_shown() {
    let mut c = cluster_as(1);
    let out = c.apply(Input::Quorum {
        at: 20,
        quorate: false,
        members: vec![1],
    });
    assert!(out.events.iter().any(|e| matches!(
        e.kind,
        EventKind::Membership {
            action: MembershipAction::QuorumLost,
            ..
        }
    )));
    assert!(!c.snapshot(21).quorate);
}

#[test]
fn corosync_lost_marks_stale_and_reconnect_reconciles_departed_peers() {
    let mut c = cluster_as(1);
    fa_members(&mut c, 5, &[1, 2, 3], &[]);
    store(&mut c, 10, 2, &dom("vm2a", 1, Running));
    store(&mut c, 10, 3, &dom("vm3a", 2, Running));
    c.apply(Input::CorosyncDown {
        at: 20,
        error: "CsErrLibrary".into(),
    });
    let s = c.snapshot(21);
    assert!(s.stale);
    assert!(!s.quorate, "no quorum claim while corosync is gone");
    // Last known map is kept while stale.
    assert!(domain(&s, "vm2a").is_some());
    // Reconnect: node 3's daemon is gone from the group now.
    c.apply(Input::CorosyncUp {
        at: 30,
        local_nodeid: 1,
        cluster_name: Some("lab".into()),
        nodelist: vec![],
    });
    let out = c.apply(Input::GroupChange {
        at: 31,
        group: Group::FenceAgents,
        members: vec![member(1, 101), member(2, 102)],
        left: vec![],
        joined: vec![member(1, 101)],
    });
    // Our own join makes us re-announce, as fence_virtd does.
    assert!(out.effects.iter().any(|e| matches!(e, Effect::StoreVms(_))));
    let s = c.snapshot(32);
    assert!(!s.stale);
    assert!(domain(&s, "vm2a").is_some());
    // Node 3's daemon is gone: its VM is lost, not purged.
    assert!(domain(&s, "vm3a").unwrap().placements[0].lost);
}

#[test]
fn own_messages_from_fenceline_peer_win_over_store_copies() {
    let mut c = cluster_as(1);
    fa_members(&mut c, 5, &[1, 2], &[]);
    c.apply(Input::GroupChange {
        at: 6,
        group: Group::Own,
        members: vec![member(1, 101), member(2, 102)],
        left: vec![],
        joined: vec![member(2, 102)],
    });
    c.apply(Input::PeerMessage {
        at: 10,
        from: 2,
        msg: OwnMessage::Vms {
            vms: vec![dom("vm2a", 1, Running)],
        },
    });
    // A STORE copy from a fenceline peer is ignored (own group is authoritative).
    store(&mut c, 11, 2, &dom("vm2a", 1, Shutoff));
    assert_eq!(domain(&c.snapshot(12), "vm2a").unwrap().state, Running);
    // Gone removes it.
    let out = c.apply(Input::PeerMessage {
        at: 13,
        from: 2,
        msg: OwnMessage::Gone {
            vms: vec![dom("vm2a", 1, Shutoff)],
        },
    });
    assert_eq!(domain_actions(&out), vec![DomainAction::Removed]);
    let s = c.snapshot(14);
    assert!(domain(&s, "vm2a").is_none());
    assert_eq!(
        s.nodes.iter().find(|n| n.nodeid == 2).unwrap().daemons,
        vec![DaemonKind::Fenceline]
    );
}

#[test]
fn inventory_drops_what_the_peer_no_longer_has() {
    let mut c = cluster_as(1);
    c.apply(Input::GroupChange {
        at: 6,
        group: Group::Own,
        members: vec![member(1, 101), member(2, 102)],
        left: vec![],
        joined: vec![],
    });
    let v = |vms| Input::PeerMessage {
        at: 10,
        from: 2,
        msg: OwnMessage::Vms { vms },
    };
    c.apply(v(vec![dom("a", 1, Running), dom("b", 2, Running)]));
    let info = |complete| Input::PeerMessage {
        at: 10,
        from: 2,
        msg: OwnMessage::Info(PeerInfo {
            version: "t".into(),
            started_at: 0,
            libvirt: vec![],
            inventory_complete: complete,
            key_digests: Default::default(),
            self_fence_secs: None,
        }),
    };
    // An incomplete inventory (libvirt down there) removes nothing.
    c.apply(info(false));
    for (at, g) in [(11, 5), (12, 5)] {
        let msg = if at == 11 {
            OwnMessage::InventoryBegin { generation: g }
        } else {
            OwnMessage::InventoryEnd {
                generation: g,
                count: Some(0),
            }
        };
        c.apply(Input::PeerMessage { at, from: 2, msg });
    }
    assert!(domain(&c.snapshot(13), "b").is_some());
    c.apply(info(true));
    c.apply(Input::PeerMessage {
        at: 20,
        from: 2,
        msg: OwnMessage::InventoryBegin { generation: 7 },
    });
    c.apply(v(vec![dom("a", 1, Running)]));
    // A mismatched end changes nothing.
    c.apply(Input::PeerMessage {
        at: 21,
        from: 2,
        msg: OwnMessage::InventoryEnd {
            generation: 6,
            count: Some(1),
        },
    });
    assert!(domain(&c.snapshot(22), "b").is_some());
    c.apply(Input::PeerMessage {
        at: 23,
        from: 2,
        msg: OwnMessage::InventoryBegin { generation: 8 },
    });
    c.apply(v(vec![dom("a", 1, Running)]));
    c.apply(Input::PeerMessage {
        at: 24,
        from: 2,
        msg: OwnMessage::InventoryEnd {
            generation: 8,
            count: Some(1),
        },
    });
    let s = c.snapshot(25);
    assert!(domain(&s, "a").is_some());
    assert!(domain(&s, "b").is_none());
}

#[test]
fn relisting_a_uri_removes_vanished_domains_and_announces_gone() {
    let mut c = cluster_as(1);
    c.apply(Input::LocalList {
        at: 10,
        uri: URI.into(),
        domains: vec![dom("a", 1, Running), dom("b", 2, Running)],
    });
    let out = c.apply(Input::LocalList {
        at: 20,
        uri: URI.into(),
        domains: vec![dom("a", 1, Shutoff)],
    });
    let mut actions = domain_actions(&out);
    actions.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(actions, vec![DomainAction::Removed, DomainAction::State]);
    assert!(out.effects.iter().any(|e| matches!(
        e,
        Effect::Own(OwnMessage::Gone { vms }) if vms.len() == 1 && vms[0].name == "b"
    )));
}

#[test]
fn two_uris_do_not_corrupt_each_other() {
    // fence_virtd's multi-URI bug: later URIs overwrote earlier ones.
    let mut c = cluster_as(1);
    c.apply(Input::LocalList {
        at: 10,
        uri: "qemu:///system".into(),
        domains: vec![dom("alpha", 1, Running), dom("beta", 2, Shutoff)],
    });
    c.apply(Input::LocalList {
        at: 11,
        uri: "qemu:///session".into(),
        domains: vec![dom("gamma", 3, Running), dom("delta", 4, Shutoff)],
    });
    let s = c.snapshot(12);
    let names: Vec<&str> = s.domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, vec!["alpha", "beta", "delta", "gamma"]);
    assert_eq!(
        domain(&s, "gamma").unwrap().uri.as_deref(),
        Some("qemu:///session")
    );
    assert_eq!(s.libvirt.len(), 2);
}

#[test]
fn local_domains_before_corosync_have_no_owner_then_get_one() {
    let mut c = Cluster::new(ModelConfig::default());
    let out = c.apply(Input::LocalList {
        at: 1,
        uri: URI.into(),
        domains: vec![dom("early", 1, Running)],
    });
    assert!(
        out.effects.is_empty(),
        "nothing to announce without corosync"
    );
    assert_eq!(domain(&c.snapshot(2), "early").unwrap().owner, None);
    assert!(c.snapshot(2).stale);
    let out = c.apply(Input::CorosyncUp {
        at: 3,
        local_nodeid: 4,
        cluster_name: None,
        nodelist: vec![],
    });
    assert_eq!(domain(&c.snapshot(4), "early").unwrap().owner, Some(4));
    // Learning the node id is not a move: no "owner changed" event.
    assert_eq!(domain_actions(&out), vec![]);
}

#[test]
fn own_join_reannounces_everything() {
    let mut c = cluster_as(1);
    c.apply(Input::LocalList {
        at: 10,
        uri: URI.into(),
        domains: vec![dom("a", 1, Running)],
    });
    let out = c.apply(Input::GroupChange {
        at: 20,
        group: Group::Own,
        members: vec![member(1, 101), member(3, 103)],
        left: vec![],
        joined: vec![member(3, 103)],
    });
    assert!(
        out.effects
            .iter()
            .any(|e| matches!(e, Effect::Own(OwnMessage::Info(_))))
    );
    assert!(
        out.effects
            .iter()
            .any(|e| matches!(e, Effect::Own(OwnMessage::Vms { vms }) if vms.len() == 1))
    );
    assert!(!out.effects.iter().any(|e| matches!(e, Effect::StoreVms(_))));
}

#[test]
fn self_delivered_messages_are_ignored() {
    let mut c = cluster_as(1);
    store(&mut c, 10, 1, &dom("mine", 1, Running));
    assert!(domain(&c.snapshot(11), "mine").is_none());
}

#[test]
fn malformed_messages_are_counted() {
    let mut c = cluster_as(1);
    c.apply(Input::Malformed {
        at: 1,
        group: Group::FenceAgents,
        from: 2,
        reason: "short".into(),
    });
    c.apply(Input::Malformed {
        at: 1,
        group: Group::Own,
        from: 2,
        reason: "bad magic".into(),
    });
    store(
        &mut c,
        2,
        2,
        &LocalDomain {
            name: String::new(),
            uuid: String::new(),
            state: Running,
            migration: None,
        },
    );
    let s = c.snapshot(3);
    assert_eq!(s.counters.malformed_fence_agents, 2);
    assert_eq!(s.counters.malformed_own, 1);
}

#[test]
fn event_ring_is_bounded_and_sequence_numbers_increase() {
    let mut c = Cluster::new(ModelConfig {
        event_capacity: 5,
        ..ModelConfig::default()
    });
    for i in 0..20u8 {
        c.apply(Input::LocalDomain {
            at: u64::from(i),
            uri: URI.into(),
            domain: dom(&format!("d{i}"), i, Running),
        });
    }
    let seqs: Vec<u64> = c.events().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![16, 17, 18, 19, 20]);
}

#[test]
fn dropped_counts_are_shown() {
    let mut c = cluster_as(1);
    let out = c.apply(Input::Dropped {
        at: 5,
        what: DropKind::LibvirtEvents,
        count: 3,
    });
    assert_eq!(out.events.len(), 1);
    assert_eq!(c.snapshot(6).counters.dropped_libvirt_events, 3);
}

#[test]
fn libvirt_link_changes_are_events_and_health() {
    let mut c = cluster_as(1);
    c.apply(Input::LibvirtLink {
        at: 5,
        uri: URI.into(),
        connected: true,
        error: None,
    });
    let out = c.apply(Input::LibvirtLink {
        at: 6,
        uri: URI.into(),
        connected: false,
        error: Some("EOF".into()),
    });
    assert_eq!(out.events.len(), 1);
    assert!(
        out.effects
            .iter()
            .any(|e| matches!(e, Effect::Own(OwnMessage::Info(_))))
    );
    let s = c.snapshot(7);
    assert!(!s.libvirt[0].connected);
    let me = s.nodes.iter().find(|n| n.nodeid == 1).unwrap();
    assert_eq!(me.libvirt.len(), 1);
}

#[test]
fn snapshot_json_has_the_contract_fields() {
    let mut c = cluster_as(2);
    c.apply(Input::LocalList {
        at: 10,
        uri: URI.into(),
        domains: vec![dom("vm1", 1, Running)],
    });
    let v = serde_json::to_value(c.snapshot(11)).unwrap();
    assert_eq!(v["local_nodeid"], 2);
    assert_eq!(v["quorate"], true);
    assert_eq!(v["nodes"][0]["nodeid"], 1);
    assert_eq!(v["nodes"][0]["name"], "node1");
    assert_eq!(v["nodes"][0]["member"], true);
    assert_eq!(v["domains"][0]["name"], "vm1");
    assert_eq!(v["domains"][0]["state"], "running");
    assert_eq!(v["domains"][0]["owner"], 2);
    assert!(v["domains"][0]["uuid"].is_string());
}

#[test]
fn event_json_has_time_and_kind() {
    let mut c = cluster_as(1);
    let out = c.apply(Input::LocalDomain {
        at: 1_700_000_000_123,
        uri: URI.into(),
        domain: dom("vm1", 1, Running),
    });
    let v = serde_json::to_value(&out.events[0]).unwrap();
    assert_eq!(v["kind"], "domain");
    assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
    assert_eq!(v["action"], "appeared");
    let back: Event = serde_json::from_value(v).unwrap();
    assert_eq!(back, out.events[0]);
}

mod fence;
