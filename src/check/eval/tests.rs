use std::collections::BTreeMap;

use fenceline_proto::api::{Counters, LibvirtHealth, Link};

use super::*;

const NOW: Millis = 1_800_000_000_000;
const DIGEST: &str = "00112233aabbccdd";

fn node(id: u32, name: &str, digest: Option<&str>) -> NodeView {
    NodeView {
        nodeid: id,
        name: Some(name.into()),
        member: true,
        since: NOW - 60_000,
        daemons: vec![DaemonKind::Fenceline],
        vm_count: 2,
        libvirt: Vec::new(),
        version: Some("0.1.0".into()),
        accounted: true,
        accounting: None,
        key_digests: digest
            .map(|d| BTreeMap::from([("multicast".to_string(), d.to_string())]))
            .unwrap_or_default(),
        self_fence_secs: None,
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        local: Default::default(),
        version: 7,
        generated_at: NOW,
        cluster_name: Some("c".into()),
        local_nodeid: Some(1),
        quorate: true,
        expected_votes: Some(3),
        total_votes: Some(3),
        quorum: Some(2),
        stale: false,
        corosync: Link {
            connected: true,
            since: NOW - 60_000,
            error: None,
        },
        nodes: vec![
            node(1, "node1", Some(DIGEST)),
            node(2, "node2", Some(DIGEST)),
            node(3, "node3", Some(DIGEST)),
        ],
        domains: Vec::new(),
        libvirt: vec![LibvirtHealth {
            uri: "qemu:///system".into(),
            connected: true,
            since: NOW - 60_000,
            error: None,
            domains: 2,
        }],
        networks: Vec::new(),
        counters: Counters::default(),
        daemon_version: "0.1.0".into(),
    }
}

fn file(path: &str, mode: u32) -> FileFact {
    FileFact {
        path: path.into(),
        mode: Some(mode),
        uid: Some(0),
        problem: None,
    }
}

fn healthy() -> Facts {
    Facts {
        now: NOW,
        config: Some(file("/etc/fenceline/fenceline.toml", 0o644)),
        uris: vec!["qemu:///system".into()],
        keys: vec![KeyFact {
            listener: "multicast".into(),
            file: file("/etc/cluster/fence_xvm.key", 0o600),
            loose_allowed: false,
            digest: Some(DIGEST.into()),
        }],
        snapshot: Ok(snapshot()),
        events: Ok(Vec::new()),
        listeners: vec![ListenerFact::Multicast {
            group: "225.0.0.12".into(),
            port: 1229,
            interface: Some("virbr0".into()),
            interface_exists: Some(true),
            joined: Ok(true),
            bound: Ok(true),
        }],
        self_test: None,
    }
}

fn critical_texts(r: &Report) -> Vec<&str> {
    r.findings
        .iter()
        .filter(|f| f.level == Level::Critical)
        .map(|f| f.text.as_str())
        .collect()
}

#[test]
fn a_healthy_host_is_ok_with_one_summary_line_first() {
    let r = evaluate(&healthy());
    assert_eq!(r.level(), Level::Ok, "{}", r.render());
    let text = r.render();
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("FENCELINE OK - "), "{first}");
    assert!(text.contains("the same on node2 (2), node3 (3)"), "{text}");
    assert!(text.contains("225.0.0.12 joined on virbr0"), "{text}");
    assert!(text.contains("no loopback request"), "{text}");
}

#[test]
fn a_key_the_daemon_refuses_is_critical_and_named() {
    let mut f = healthy();
    f.keys[0].file = FileFact {
        problem: Some("is readable by others than its owner (mode 644); chmod 0600 it".into()),
        ..file("/etc/cluster/fence_xvm.key", 0o644)
    };
    let r = evaluate(&f);
    assert_eq!(r.level(), Level::Critical);
    assert!(
        r.summary().contains("/etc/cluster/fence_xvm.key"),
        "{}",
        r.summary()
    );
    // Allowed loose: a warning that still names the file.
    f.keys[0].file.problem = None;
    f.keys[0].loose_allowed = true;
    let r = evaluate(&f);
    assert_eq!(r.level(), Level::Warning);
    assert!(r.summary().contains("/etc/cluster/fence_xvm.key"));
}

#[test]
fn corosync_down_or_inquorate_is_critical() {
    let mut f = healthy();
    let mut s = snapshot();
    s.corosync = Link {
        connected: false,
        since: NOW - 5_000,
        error: Some("cpg_initialize: CS_ERR_LIBRARY".into()),
    };
    s.stale = true;
    f.snapshot = Ok(s);
    let r = evaluate(&f);
    assert_eq!(r.level(), Level::Critical);
    assert!(
        r.summary().contains("corosync unreachable for 5s"),
        "{}",
        r.summary()
    );

    let mut s = snapshot();
    s.quorate = false;
    s.total_votes = Some(1);
    f.snapshot = Ok(s);
    let r = evaluate(&f);
    assert_eq!(critical_texts(&r).len(), 1, "{}", r.render());
    assert!(r.summary().contains("NOT quorate (votes 1/3, quorum 2)"));

    let mut s = snapshot();
    s.nodes[0].member = false;
    f.snapshot = Ok(s);
    assert!(evaluate(&f).summary().contains("not in the membership"));
}

#[test]
fn an_unreachable_daemon_is_critical() {
    let mut f = healthy();
    f.snapshot = Err("/run/fenceline/fenceline-ro.sock: connection refused".into());
    let r = evaluate(&f);
    assert_eq!(r.level(), Level::Critical);
    assert!(r.summary().contains("connection refused"));
}

#[test]
fn libvirt_must_be_connected_and_listed() {
    let mut f = healthy();
    f.uris.push("test:///default".into());
    let r = evaluate(&f);
    assert_eq!(
        critical_texts(&r),
        vec!["test:///default: not connected yet"]
    );

    let mut f = healthy();
    let mut s = snapshot();
    s.libvirt[0].connected = false;
    s.libvirt[0].error = Some("Failed to connect socket".into());
    s.nodes[0].accounted = false;
    s.nodes[0].accounting = Some("its inventory is incomplete".into());
    f.snapshot = Ok(s);
    let r = evaluate(&f);
    let c = critical_texts(&r);
    assert_eq!(c.len(), 2, "{c:?}");
    assert!(c[0].contains("Failed to connect socket"));
    assert!(c[1].contains("inventory is not complete (its inventory is incomplete)"));
}

#[test]
fn another_key_on_a_peer_or_in_the_daemon_is_critical() {
    let mut f = healthy();
    let mut s = snapshot();
    s.nodes[2]
        .key_digests
        .insert("multicast".into(), "ffffffffffffffff".into());
    f.snapshot = Ok(s);
    let r = evaluate(&f);
    assert_eq!(r.level(), Level::Critical);
    assert!(
        r.summary()
            .contains("node3 (3) holds a different multicast key")
    );

    // The file changed under a running daemon.
    let mut f = healthy();
    f.keys[0].digest = Some("0000000000000000".into());
    let c = critical_texts(&evaluate(&f)).join("\n");
    assert!(c.contains("the daemon's multicast key"), "{c}");
    assert!(c.contains("node2 (2) holds a different"), "{c}");

    // A peer without a digest (older fenceline) is reported, not failed.
    let mut f = healthy();
    let mut s = snapshot();
    s.nodes[1].key_digests.clear();
    s.nodes[2].daemons = vec![DaemonKind::FenceVirtd];
    f.snapshot = Ok(s);
    let r = evaluate(&f);
    assert_eq!(r.level(), Level::Ok, "{}", r.render());
    assert!(r.render().contains("node2 (2) announces no multicast key"));
    assert!(r.render().contains("fence_virtd on node3 (3)"));
}

#[test]
fn a_listener_that_is_not_up_is_critical() {
    let mut f = healthy();
    f.listeners = vec![ListenerFact::Multicast {
        group: "225.0.0.12".into(),
        port: 1229,
        interface: Some("nosuch0".into()),
        interface_exists: Some(false),
        joined: Ok(false),
        bound: Ok(true),
    }];
    let r = evaluate(&f);
    assert_eq!(
        critical_texts(&r),
        vec!["multicast: interface nosuch0 does not exist"]
    );
    if let ListenerFact::Multicast {
        interface_exists, ..
    } = &mut f.listeners[0]
    {
        *interface_exists = Some(true);
    }
    assert!(evaluate(&f).summary().contains("not joined on nosuch0"));
    if let ListenerFact::Multicast { joined, .. } = &mut f.listeners[0] {
        *joined = Err("/proc/net/igmp: permission denied".into());
    }
    assert_eq!(evaluate(&f).level(), Level::Unknown);
}

#[test]
fn the_self_test_answer_decides() {
    let mut f = healthy();
    f.self_test = Some(SelfTest {
        listener: "tcp".into(),
        target: "127.0.0.1:1229".into(),
        result: Ok(1),
    });
    assert_eq!(evaluate(&f).level(), Level::Ok);
    f.self_test.as_mut().unwrap().result = Err("handshake: the daemon's answer is wrong".into());
    let r = evaluate(&f);
    assert_eq!(r.level(), Level::Critical);
    assert!(r.summary().contains("127.0.0.1:1229"));
}

#[test]
fn no_config_and_no_listener_warn() {
    let mut f = healthy();
    f.config = None;
    f.keys.clear();
    f.listeners.clear();
    let r = evaluate(&f);
    assert_eq!(r.level(), Level::Warning);
    assert!(r.summary().contains("no listener configured"));
}

#[test]
fn the_last_successful_fence_is_reported_with_its_age() {
    let ev = |seq, t, op, result| Event {
        seq,
        time: t,
        node: Some(1),
        kind: EventKind::Fence {
            phase: FencePhase::Result,
            op,
            domain: "vm2a".into(),
            source: "multicast:10.0.0.5".into(),
            requester: Some(1),
            acted_by: Some(2),
            result,
            duration_ms: 20,
            detail: None,
        },
    };
    let mut f = healthy();
    f.events = Ok(vec![
        ev(1, NOW - 7_200_000, FenceOp::Off, FenceResult::Ok),
        ev(2, NOW - 60_000, FenceOp::Reboot, FenceResult::Fail),
    ]);
    let r = evaluate(&f);
    assert!(
        r.render().contains(
            "last successful request here: fence off vm2a from multicast:10.0.0.5 → ok, 2h ago"
        ),
        "{}",
        r.render()
    );
    f.events = Ok(Vec::new());
    assert!(
        evaluate(&f)
            .render()
            .contains("no successful fence request")
    );
    f.events = Err("timed out".into());
    assert_eq!(evaluate(&f).level(), Level::Unknown);
}
