//! The networks view, replay marking and ring-overflow counting, with plain values.

use super::*;
use crate::engine::model::{Group, GroupMember, Input, ModelConfig};
use fenceline_proto::api::{Event, Snapshot};

const QEMU: &str = "qemu:///system";

fn cluster(local: NodeId, capacity: usize) -> Cluster {
    let mut c = Cluster::new(ModelConfig {
        event_capacity: capacity,
        version: "test".into(),
        started_at: 0,
        libvirt_uris: Vec::new(),
        key_digests: Default::default(),
        max_peer_vms: crate::engine::model::DEFAULT_MAX_PEER_VMS,
        fence: crate::engine::model::FenceRules::default(),
    });
    c.apply(Input::CorosyncUp {
        at: 1,
        local_nodeid: local,
        cluster_name: Some("lab".into()),
        nodelist: vec![(1, Some("node1".into())), (2, Some("node2".into()))],
    });
    c
}

fn port(n: u8) -> PortView {
    PortView {
        owner: Some(format!("vm{n}")),
        owner_uuid: Some(format!("8f1e0001-0000-4000-9000-0000000000{n:02}")),
        mac: Some(format!("52:54:00:00:00:{n:02x}")),
        plug: Some("bridge".into()),
        uuid: Some(format!("7fad4964-7dc2-44b8-bb73-0000000000{n:02}")),
    }
}

fn hook(c: &mut Cluster, at: Millis, op: &str, p: Option<PortView>) -> Output {
    c.apply(Input::Hook {
        at,
        call: HookCall {
            time: at,
            network: "net1".into(),
            op: op.into(),
            subop: "begin".into(),
            network_uuid: Some("62dbb43f-eb39-4879-8478-d0df01188bd5".into()),
            bridge: Some("br1".into()),
            port: p,
            error: None,
        },
    })
}

fn info(name: &str, active: bool) -> NetInfo {
    NetInfo {
        name: name.into(),
        uuid: format!("uuid-{name}"),
        active,
        bridge: Some(format!("br-{name}")),
    }
}

fn hook_events(out: &Output) -> Vec<(&str, bool)> {
    out.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::NetworkHook { op, replay, .. } => Some((op.as_str(), *replay)),
            _ => None,
        })
        .collect()
}

fn net<'a>(s: &'a Snapshot, node: NodeId, name: &str) -> &'a NetworkView {
    s.networks
        .iter()
        .find(|n| n.node == node && n.name == name)
        .unwrap_or_else(|| panic!("no network {name} on node {node}: {:?}", s.networks))
}

fn net_events(out: &Output) -> Vec<&OwnMessage> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Own(m @ OwnMessage::NetEvent { .. }) => Some(m),
            _ => None,
        })
        .collect()
}

#[test]
fn hooks_build_the_view_and_are_announced() {
    let mut c = cluster(1, 100);
    let out = hook(&mut c, 10, "started", None);
    assert_eq!(hook_events(&out), vec![("started", false)]);
    assert_eq!(out.events[0].node, Some(1));
    assert_eq!(net_events(&out).len(), 1);
    let out = hook(&mut c, 11, "port-created", Some(port(1)));
    assert_eq!(hook_events(&out), vec![("port-created", false)]);
    hook(&mut c, 12, "port-created", Some(port(2)));
    let s = c.snapshot(13);
    let n = net(&s, 1, "net1");
    assert!(n.active);
    assert_eq!(n.bridge.as_deref(), Some("br1"));
    assert_eq!(n.ports, vec![port(1), port(2)]);
    // The network state goes out once per batch, however many hooks.
    let fx = c.flush_effects();
    let states: Vec<_> = fx
        .iter()
        .filter(|e| matches!(e, Effect::Own(OwnMessage::NetState { .. })))
        .collect();
    assert_eq!(states.len(), 1);
    assert!(fx.iter().any(|e| matches!(e, Effect::Own(OwnMessage::NetList { names }) if names == &vec!["net1".to_string()])));
    assert!(c.flush_effects().is_empty());
    hook(&mut c, 14, "port-deleted", Some(port(1)));
    assert_eq!(net(&c.snapshot(15), 1, "net1").ports, vec![port(2)]);
    hook(&mut c, 16, "stopped", None);
    let s = c.snapshot(17);
    assert!(!net(&s, 1, "net1").active);
    assert!(net(&s, 1, "net1").ports.is_empty());
}

#[test]
fn replayed_port_created_is_marked() {
    let mut c = cluster(1, 100);
    hook(&mut c, 10, "started", None);
    let out = hook(&mut c, 11, "port-created", Some(port(1)));
    assert_eq!(hook_events(&out), vec![("port-created", false)]);
    // libvirtd restarts: the same port-created again.
    let out = hook(&mut c, 20, "port-created", Some(port(1)));
    assert_eq!(hook_events(&out), vec![("port-created", true)]);
    assert_eq!(net(&c.snapshot(21), 1, "net1").ports.len(), 1);
    // The flag travels to peers.
    match net_events(&out)[0] {
        OwnMessage::NetEvent { event, .. } => {
            assert!(matches!(
                **event,
                EventKind::NetworkHook { replay: true, .. }
            ))
        }
        other => panic!("{other:?}"),
    }
    // After port-deleted, the same owner plugging again is a new port.
    hook(&mut c, 30, "port-deleted", Some(port(1)));
    let out = hook(&mut c, 31, "port-created", Some(port(1)));
    assert_eq!(hook_events(&out), vec![("port-created", false)]);
    // A stop drops every port (net-destroy sends no port-deleted).
    hook(&mut c, 40, "stopped", None);
    let out = hook(&mut c, 41, "port-created", Some(port(1)));
    assert_eq!(hook_events(&out), vec![("port-created", false)]);
}

#[test]
fn ports_listed_by_libvirt_make_the_replay_after_a_fenceline_restart() {
    // A fresh daemon: libvirt lists the network and its port ...
    let mut c = cluster(1, 100);
    c.apply(Input::LocalNetworks {
        at: 5,
        uri: QEMU.into(),
        networks: vec![info("net1", true)],
    });
    c.apply(Input::LocalPorts {
        at: 5,
        uri: QEMU.into(),
        network: "net1".into(),
        ports: vec![port(1)],
    });
    // ... then libvirtd restarts and replays it.
    let out = hook(&mut c, 10, "port-created", Some(port(1)));
    assert_eq!(hook_events(&out), vec![("port-created", true)]);
    let out = hook(&mut c, 11, "port-created", Some(port(2)));
    assert_eq!(hook_events(&out), vec![("port-created", false)]);
}

#[test]
fn old_plugged_format_uses_owner_and_mac() {
    let mut c = cluster(1, 100);
    let mut p = port(3);
    p.uuid = None;
    let out = hook(&mut c, 10, "plugged", Some(p.clone()));
    assert_eq!(hook_events(&out), vec![("plugged", false)]);
    // "plugged" is never a replay (that behaviour came with port-created).
    let out = hook(&mut c, 11, "plugged", Some(p.clone()));
    assert_eq!(hook_events(&out), vec![("plugged", false)]);
    assert_eq!(net(&c.snapshot(12), 1, "net1").ports, vec![p.clone()]);
    hook(&mut c, 13, "unplugged", Some(p));
    assert!(net(&c.snapshot(14), 1, "net1").ports.is_empty());
}

#[test]
fn lifecycle_events_and_listings() {
    let mut c = cluster(1, 100);
    c.apply(Input::LocalNetworks {
        at: 5,
        uri: QEMU.into(),
        networks: vec![info("a", true), info("b", false)],
    });
    let s = c.snapshot(6);
    assert!(net(&s, 1, "a").active && !net(&s, 1, "b").active);
    let ev = |c: &mut Cluster, uri: &str, action, name: &str, i: Option<NetInfo>| {
        let out = c.apply(Input::LocalNetwork {
            at: 10,
            uri: uri.into(),
            action,
            name: name.into(),
            info: i,
        });
        out.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Network {
                    action, network, ..
                } => Some((*action, network.clone())),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ev(
            &mut c,
            QEMU,
            NetworkAction::Started,
            "b",
            Some(info("b", true))
        ),
        vec![(NetworkAction::Started, "b".to_string())]
    );
    // The same event through a second URI on the same network driver.
    assert!(
        ev(
            &mut c,
            "lxc:///system",
            NetworkAction::Started,
            "b",
            Some(info("b", true))
        )
        .is_empty()
    );
    assert!(net(&c.snapshot(11), 1, "b").active);
    // Stopped clears the ports (no port-deleted comes for them).
    c.apply(Input::LocalPorts {
        at: 12,
        uri: QEMU.into(),
        network: "b".into(),
        ports: vec![port(1)],
    });
    assert_eq!(
        ev(
            &mut c,
            QEMU,
            NetworkAction::Stopped,
            "b",
            Some(info("b", false))
        ),
        vec![(NetworkAction::Stopped, "b".to_string())]
    );
    assert!(net(&c.snapshot(13), 1, "b").ports.is_empty());
    assert_eq!(
        ev(&mut c, QEMU, NetworkAction::Undefined, "b", None),
        vec![(NetworkAction::Undefined, "b".to_string())]
    );
    // Still listed by the second URI: not gone yet.
    assert!(c.snapshot(14).networks.iter().any(|n| n.name == "b"));
    ev(&mut c, "lxc:///system", NetworkAction::Undefined, "b", None);
    assert!(!c.snapshot(15).networks.iter().any(|n| n.name == "b"));
    // A relisting without "a" removes it (a missed undefine).
    c.apply(Input::LocalNetworks {
        at: 20,
        uri: QEMU.into(),
        networks: vec![],
    });
    assert!(c.snapshot(21).networks.is_empty());
    // Defined then started: both reported.
    assert_eq!(
        ev(
            &mut c,
            QEMU,
            NetworkAction::Defined,
            "c",
            Some(info("c", false))
        ),
        vec![(NetworkAction::Defined, "c".to_string())]
    );
}

#[test]
fn peers_show_events_with_their_origin_and_keep_its_view() {
    // Node 1 produces ...
    let mut a = cluster(1, 100);
    hook(&mut a, 10, "started", None);
    let out = hook(&mut a, 11, "port-created", Some(port(1)));
    let msg = net_events(&out)[0].clone();
    let mut fx = a.flush_effects();
    // ... node 2 receives.
    let mut b = cluster(2, 100);
    let got = b.apply(Input::PeerMessage {
        at: 12,
        from: 1,
        msg,
    });
    assert_eq!(got.events.len(), 1);
    let e: &Event = &got.events[0];
    assert_eq!(e.node, Some(1));
    assert_eq!(e.time, 11);
    assert!(
        matches!(&e.kind, EventKind::NetworkHook { op, port: Some(p), .. } if op == "port-created" && p.owner.as_deref() == Some("vm1"))
    );
    for eff in fx.drain(..) {
        let Effect::Own(msg) = eff else { continue };
        b.apply(Input::PeerMessage {
            at: 13,
            from: 1,
            msg,
        });
    }
    let s = b.snapshot(14);
    let n = net(&s, 1, "net1");
    assert!(n.active);
    assert_eq!(n.ports, vec![port(1)]);
    // A peer's view never claims to be ours, even if it says so.
    let mut forged = n.clone();
    forged.node = 2;
    forged.name = "forged".into();
    b.apply(Input::PeerMessage {
        at: 15,
        from: 1,
        msg: OwnMessage::NetState {
            network: Box::new(forged),
        },
    });
    assert!(b.snapshot(16).networks.iter().all(|n| n.node == 1));
    // A list without "forged" drops it.
    b.apply(Input::PeerMessage {
        at: 17,
        from: 1,
        msg: OwnMessage::NetList {
            names: vec!["net1".into()],
        },
    });
    assert_eq!(b.snapshot(18).networks.len(), 1);
    // Only network kinds travel this way.
    let out = b.apply(Input::PeerMessage {
        at: 19,
        from: 1,
        msg: OwnMessage::NetEvent {
            time: 19,
            event: Box::new(EventKind::Daemon {
                action: fenceline_proto::api::DaemonAction::Started,
                uri: None,
                detail: None,
            }),
        },
    });
    assert!(out.events.is_empty());
    assert_eq!(b.snapshot(20).counters.malformed_own, 1);
    // The peer's daemon leaves both groups: its networks go.
    b.apply(Input::GroupChange {
        at: 21,
        group: Group::Own,
        members: vec![GroupMember {
            nodeid: 2,
            pid: 5,
            reason: "Join".into(),
        }],
        left: vec![GroupMember {
            nodeid: 1,
            pid: 4,
            reason: "ProcDown".into(),
        }],
        joined: vec![],
    });
    assert!(b.snapshot(22).networks.is_empty());
}

#[test]
fn join_announces_the_networks() {
    let mut c = cluster(1, 100);
    hook(&mut c, 10, "port-created", Some(port(1)));
    let all = c.announce_all();
    assert!(all.iter().any(|e| matches!(e, Effect::Own(OwnMessage::NetState { network }) if network.name == "net1" && network.ports.len() == 1)));
    assert!(
        all.iter()
            .any(|e| matches!(e, Effect::Own(OwnMessage::NetList { .. })))
    );
}

#[test]
fn a_burst_over_the_ring_is_counted() {
    let mut c = cluster(1, 50);
    for i in 0..200u64 {
        hook(&mut c, 1000 + i, "updated", None);
    }
    let s = c.snapshot(2000);
    // 200 hook events (plus the corosync-up event) into a ring of 50.
    assert_eq!(c.events().count(), 50);
    assert_eq!(s.counters.dropped_hook_events, 150);
    // Old events that age out of the ring are not drops.
    let mut c = cluster(1, 50);
    for i in 0..50u64 {
        hook(&mut c, 1000 + i, "updated", None);
    }
    let before = c.snapshot(0).counters.dropped_hook_events;
    for i in 0..50u64 {
        hook(&mut c, 1_000_000 + i, "updated", None);
    }
    assert_eq!(c.snapshot(0).counters.dropped_hook_events, before);
}

#[test]
fn a_hook_clock_far_off_is_replaced_by_the_receive_time() {
    let mut c = cluster(1, 100);
    let out = c.apply(Input::Hook {
        at: 10_000_000,
        call: HookCall {
            time: 1,
            network: "n".into(),
            op: "updated".into(),
            subop: "begin".into(),
            network_uuid: None,
            bridge: None,
            port: None,
            error: Some("bad XML: x".into()),
        },
    });
    assert_eq!(out.events[0].time, 10_000_000);
    assert!(matches!(
        &out.events[0].kind,
        EventKind::NetworkHook { error: Some(_), .. }
    ));
}

#[test]
fn limits_hold() {
    let mut c = cluster(1, 10);
    for i in 0..(MAX_NETWORKS + 5) {
        c.apply(Input::Hook {
            at: 10,
            call: HookCall {
                time: 10,
                network: format!("n{i}"),
                op: "started".into(),
                subop: "begin".into(),
                network_uuid: None,
                bridge: None,
                port: None,
                error: None,
            },
        });
    }
    assert_eq!(c.snapshot(11).networks.len(), MAX_NETWORKS);
}

#[test]
fn port_keys() {
    assert!(port_key(&port(1)).unwrap().starts_with("uuid:"));
    let mut p = port(1);
    p.uuid = None;
    assert!(port_key(&p).unwrap().starts_with("owner:"));
    p.owner = None;
    p.owner_uuid = None;
    assert!(port_key(&p).unwrap().starts_with("mac:"));
    p.mac = None;
    assert_eq!(port_key(&p), None);
}
