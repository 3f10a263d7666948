//! Hand-made snapshots and events with a fixed clock, for the console's
//! snapshot tests, unit tests and the render benchmark. Plain `fenceline_proto::api`
//! values, exactly what a daemon would send.

use fenceline_proto::api::{
    Counters, DaemonKind, DomainAction, DomainState, DomainView, Event, EventKind, FenceOp,
    FencePhase, FenceResult, LibvirtHealth, Link, MembershipAction, Millis, NodeId, NodeView,
    Placement, Snapshot,
};

/// The fixed "now" of every fixture: 2026-11-21T06:13:20Z.
pub const NOW: Millis = 1_795_241_600_000;

pub const URI: &str = "qemu:///system";

pub fn node(id: NodeId, name: &str, member: bool, vms: usize) -> NodeView {
    NodeView {
        nodeid: id,
        name: Some(name.to_string()),
        member,
        since: NOW - 3_600_000 - u64::from(id) * 60_000,
        daemons: if member {
            vec![DaemonKind::Fenceline]
        } else {
            Vec::new()
        },
        vm_count: vms,
        accounted: member,
        accounting: (!member).then(|| "left the membership, not confirmed down".to_string()),
        key_digests: Default::default(),
        self_fence_secs: None,
        libvirt: if member {
            vec![LibvirtHealth {
                uri: URI.into(),
                connected: true,
                since: NOW - 3_600_000,
                error: None,
                domains: vms,
            }]
        } else {
            Vec::new()
        },
        version: Some("0.1.0".into()),
    }
}

/// A uuid derived from a node and an index, like the lab's.
pub fn uuid(node: NodeId, i: usize) -> String {
    format!("8f1e{node:04x}-0000-4000-8000-{i:012x}")
}

pub fn domain(name: &str, node: NodeId, i: usize, state: DomainState, age_s: u64) -> DomainView {
    DomainView {
        name: name.to_string(),
        uuid: uuid(node, i),
        state,
        owner: state.is_active().then_some(node),
        since: NOW - age_s * 1000,
        uri: (node == 1).then(|| URI.to_string()),
        conflict: false,
        migrating: None,
        placements: vec![Placement {
            nodeid: node,
            state,
            lost: false,
            lost_since: None,
        }],
    }
}

fn base(nodes: Vec<NodeView>, domains: Vec<DomainView>) -> Snapshot {
    Snapshot {
        version: 42,
        generated_at: NOW,
        cluster_name: Some("prod-kvm".into()),
        local_nodeid: Some(1),
        quorate: true,
        expected_votes: Some(nodes.len() as u32),
        total_votes: Some(nodes.iter().filter(|n| n.member).count() as u32),
        quorum: Some(nodes.len() as u32 / 2 + 1),
        stale: false,
        corosync: Link {
            connected: true,
            since: NOW - 3_600_000,
            error: None,
        },
        libvirt: vec![LibvirtHealth {
            uri: URI.into(),
            connected: true,
            since: NOW - 3_600_000,
            error: None,
            domains: 3,
        }],
        nodes,
        domains,
        networks: Vec::new(),
        counters: Counters::default(),
        daemon_version: "0.1.0".into(),
        local: Default::default(),
    }
}

/// A cluster that has just started: one node, nothing else known yet.
pub fn empty() -> Snapshot {
    let mut s = base(vec![node(1, "kvm1", true, 0)], Vec::new());
    s.libvirt[0].domains = 0;
    s
}

/// Three healthy nodes with a few VMs each, in assorted states.
pub fn normal() -> Snapshot {
    let states = [
        ("web", DomainState::Running, 4_000),
        ("db", DomainState::Running, 86_400 * 3),
        ("build", DomainState::Paused, 320),
        ("backup", DomainState::Shutoff, 7_200),
    ];
    let mut domains = Vec::new();
    for n in 1..=3u32 {
        for (i, (name, state, age)) in states.iter().enumerate() {
            if n == 3 && *name == "build" {
                domains.push(domain(
                    &format!("{name}{n}"),
                    n,
                    i,
                    DomainState::Crashed,
                    12,
                ));
                continue;
            }
            domains.push(domain(
                &format!("{name}{n}"),
                n,
                i,
                *state,
                age + u64::from(n),
            ));
        }
    }
    domains.sort_by(|a, b| a.name.cmp(&b.name));
    let nodes = (1..=3u32)
        .map(|n| node(n, &format!("kvm{n}"), true, 3))
        .collect();
    base(nodes, domains)
}

/// `normal()` plus a VM running on two hosts at once.
pub fn conflict() -> Snapshot {
    let mut s = normal();
    s.domains.push(DomainView {
        name: "mail".into(),
        uuid: uuid(2, 9),
        state: DomainState::Running,
        owner: None,
        since: NOW - 42_000,
        uri: None,
        conflict: true,
        migrating: None,
        placements: vec![
            Placement {
                nodeid: 2,
                state: DomainState::Running,
                lost: false,
                lost_since: None,
            },
            Placement {
                nodeid: 3,
                state: DomainState::Running,
                lost: false,
                lost_since: None,
            },
        ],
    });
    s.domains.sort_by(|a, b| a.name.cmp(&b.name));
    s
}

/// A live migration of "mail" from node 2 (running) to node 3 (paused,
/// incoming): shown as migrating, not as a conflict.
pub fn migrating() -> Snapshot {
    let mut s = conflict();
    if let Some(d) = s.domains.iter_mut().find(|d| d.name == "mail") {
        d.conflict = false;
        d.migrating = Some(fenceline_proto::api::Migrating { from: 2, to: 3 });
        d.placements[1].state = DomainState::Paused;
    }
    s
}

/// Node 3 and node 2 gone: this node alone, without quorum; their VMs purged.
pub fn quorum_lost() -> Snapshot {
    let mut s = normal();
    s.quorate = false;
    s.total_votes = Some(1);
    for n in &mut s.nodes {
        if n.nodeid != 1 {
            n.member = false;
            n.since = NOW - 25_000;
            n.daemons.clear();
            n.libvirt.clear();
            n.vm_count = 0;
            n.accounted = false;
            n.accounting = Some("left the membership 25 s ago, not confirmed down".into());
        }
    }
    s.domains
        .retain(|d| d.placements.iter().any(|p| p.nodeid == 1));
    s
}

/// The truth rule's states, seen from kvm1 (which self-fences after 30 s):
/// kvm2 a member whose daemon is down (vm2a lost, last seen running 3 s
/// ago), kvm3 left 4 s ago and is not confirmed down (vm3a lost; it
/// self-fences, its deadline is ahead), kvm4 left 60 s ago and is past its
/// self-fence deadline (accounted for).
pub fn departures() -> Snapshot {
    let lost = |name: &str, node: NodeId, ago_s: u64| {
        let mut d = domain(name, node, 1, DomainState::Running, 600);
        d.placements[0].lost = true;
        d.placements[0].lost_since = Some(NOW - ago_s * 1000);
        d
    };
    let mut n1 = node(1, "kvm1", true, 2);
    n1.self_fence_secs = Some(30);
    let mut n2 = node(2, "kvm2", true, 1);
    n2.daemons.clear();
    n2.libvirt.clear();
    n2.accounted = false;
    n2.accounting = Some("its daemon is down".into());
    let mut n3 = node(3, "kvm3", false, 1);
    n3.since = NOW - 4_000;
    n3.accounting = Some("left the membership 4 s ago, not confirmed down".into());
    n3.self_fence_secs = Some(30);
    let mut n4 = node(4, "kvm4", false, 0);
    n4.since = NOW - 60_000;
    n4.accounted = true;
    n4.accounting = Some("kvm4 self-fenced (left 60 s ago, self_fence_secs 30)".into());
    n4.self_fence_secs = Some(30);
    let domains = vec![
        domain("db1", 1, 2, DomainState::Running, 86_400),
        domain("web1", 1, 3, DomainState::Running, 4_000),
        lost("vm2a", 2, 3),
        lost("vm3a", 3, 4),
    ];
    let mut s = base(vec![n1, n2, n3, n4], domains);
    // kvm4 was removed from the expected votes (votequorum's
    // last_man_standing): kvm1 and kvm2 stay quorate.
    s.total_votes = Some(2);
    s.expected_votes = Some(3);
    s.quorum = Some(2);
    s
}

/// `n` domains over 8 nodes (benchmark, scrolling tests).
pub fn big(n: usize) -> Snapshot {
    let nodes: Vec<NodeView> = (1..=8u32)
        .map(|i| node(i, &format!("kvm{i}"), true, n / 8))
        .collect();
    let domains = (0..n)
        .map(|i| {
            let owner = (i % 8) as NodeId + 1;
            let state = match i % 10 {
                0..=6 => DomainState::Running,
                7 => DomainState::Paused,
                _ => DomainState::Shutoff,
            };
            domain(
                &format!("vm{i:05}"),
                owner,
                i,
                state,
                (i as u64 * 37) % 90_000,
            )
        })
        .collect();
    base(nodes, domains)
}

pub fn event(seq: u64, ago_s: u64, kind: EventKind) -> Event {
    Event {
        seq,
        time: NOW - ago_s * 1000,
        node: Some(1),
        kind,
    }
}

pub fn state_event(seq: u64, ago_s: u64, d: &DomainView, previous: DomainState) -> Event {
    event(
        seq,
        ago_s,
        EventKind::Domain {
            action: DomainAction::State,
            name: d.name.clone(),
            uuid: d.uuid.clone(),
            state: d.state,
            previous: Some(previous),
            owner: d.owner,
            previous_owner: None,
            detail: None,
        },
    )
}

/// A plausible recent history for `normal()`.
pub fn events(s: &Snapshot) -> Vec<Event> {
    let find = |n: &str| s.domains.iter().find(|d| d.name == n);
    let mut out = vec![
        event(
            1,
            3_000,
            EventKind::Membership {
                action: MembershipAction::Joined,
                nodeid: Some(3),
                name: Some("kvm3".into()),
                detail: None,
            },
        ),
        event(
            2,
            2_990,
            EventKind::Membership {
                action: MembershipAction::Quorate,
                nodeid: None,
                name: None,
                detail: None,
            },
        ),
    ];
    if let Some(d) = find("build1") {
        out.push(state_event(3, 320, d, DomainState::Running));
    }
    if let Some(d) = find("web2") {
        out.push(event(
            4,
            90,
            EventKind::Fence {
                phase: FencePhase::Result,
                op: FenceOp::Reboot,
                domain: d.name.clone(),
                source: "multicast:10.0.0.21".into(),
                requester: Some(1),
                acted_by: Some(2),
                result: FenceResult::Ok,
                duration_ms: 1840,
                detail: None,
            },
        ));
    }
    if let Some(d) = find("build3") {
        out.push(state_event(5, 12, d, DomainState::Running));
    }
    out
}
