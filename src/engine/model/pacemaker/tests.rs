use super::super::tests::{cluster_as, fa_members};
use super::super::*;
use fenceline_proto::api::{DomainState, EventKind, MembershipAction, NodeId};
use fenceline_proto::pcmk_history::{FenceRecord, FenceState};

fn cluster() -> Cluster {
    let mut c = cluster_as(1);
    fa_members(&mut c, 5, &[1, 2, 3], &[]);
    c.apply(Input::PeerRecord {
        at: 10,
        from: 3,
        record: VmRecord {
            name: "vm3a".into(),
            uuid: "8f1e0000-0000-4000-8000-000000000003".into(),
            owner: 3,
            state: DomainState::Running,
        },
    });
    c
}

/// Node 3 leaves the corosync membership at `at`.
fn node3_leaves(c: &mut Cluster, at: u64) {
    c.apply(Input::Quorum {
        at,
        quorate: true,
        members: vec![1, 2],
    });
    fa_members(c, at, &[1, 2], &[3]);
}

fn rec(target: &str, action: &str, state: FenceState, completed_ms: Option<u64>) -> FenceRecord {
    FenceRecord {
        action: action.into(),
        target: target.into(),
        state,
        delegate: "node1".into(),
        origin: "node2".into(),
        completed: "2026-12-04 04:30:00 +00:00".into(),
        completed_ms,
    }
}

fn accounted(c: &Cluster, id: NodeId, at: u64) -> bool {
    c.snapshot(at)
        .nodes
        .iter()
        .find(|n| n.nodeid == id)
        .unwrap()
        .accounted
}

fn fenced(c: &mut Cluster, at: u64, r: FenceRecord) -> Output {
    c.apply(Input::PacemakerFenced { at, record: r })
}

fn confirmed_event(out: &Output) -> Option<String> {
    out.events.iter().find_map(|e| match &e.kind {
        EventKind::Membership {
            action: MembershipAction::Confirmed,
            nodeid: Some(3),
            detail,
            ..
        } => detail.clone(),
        _ => None,
    })
}

#[test]
fn a_fence_after_the_departure_confirms_the_node_like_an_operator() {
    let mut c = cluster();
    node3_leaves(&mut c, 1000);
    assert!(!accounted(&c, 3, 1001));
    let out = fenced(
        &mut c,
        5000,
        rec("node3", "reboot", FenceState::Success, Some(4000)),
    );
    let detail = confirmed_event(&out).expect("a confirmed event");
    assert!(
        detail.contains("pacemaker: reboot of node3 completed 2026-12-04 04:30:00 +00:00 by node1 (asked by node2)"),
        "{detail}"
    );
    // The same path as `fenceline confirm`: peers are told, the lost VMs go.
    assert!(out.effects.iter().any(|e| matches!(
        e,
        Effect::Own(OwnMessage::Confirmed { nodeid: 3, source }) if source.starts_with("pacemaker: ")
    )));
    assert!(accounted(&c, 3, 5001));
    let s = c.snapshot(5001);
    assert!(s.domains.iter().all(|d| d.name != "vm3a"));
    let how = s.nodes.iter().find(|n| n.nodeid == 3).unwrap();
    assert!(
        how.accounting
            .as_deref()
            .unwrap()
            .contains("by pacemaker: reboot")
    );
    // Seen again on the next poll: already accounted for, nothing new.
    let again = fenced(
        &mut c,
        7000,
        rec("node3", "reboot", FenceState::Success, Some(4000)),
    );
    assert!(confirmed_event(&again).is_none() && again.effects.is_empty());
}

#[test]
fn off_confirms_too_by_node_id_name_case() {
    let mut c = cluster();
    node3_leaves(&mut c, 1000);
    let out = fenced(
        &mut c,
        5000,
        rec("NODE3", "off", FenceState::Success, Some(1001)),
    );
    assert!(confirmed_event(&out).is_some());
}

#[test]
fn a_fence_recorded_before_the_departure_proves_nothing() {
    let mut c = cluster();
    node3_leaves(&mut c, 10_000);
    for completed in [9_000, 10_000] {
        let out = fenced(
            &mut c,
            20_000,
            rec("node3", "reboot", FenceState::Success, Some(completed)),
        );
        assert!(confirmed_event(&out).is_none(), "{completed}");
        assert!(out.effects.is_empty());
        assert!(!accounted(&c, 3, 20_001));
    }
}

#[test]
fn failed_pending_on_and_untimed_fences_prove_nothing() {
    let mut c = cluster();
    node3_leaves(&mut c, 1000);
    for r in [
        rec("node3", "reboot", FenceState::Failed, Some(4000)),
        rec("node3", "off", FenceState::Pending, Some(4000)),
        rec("node3", "reboot", FenceState::Other, Some(4000)),
        rec("node3", "on", FenceState::Success, Some(4000)),
        rec("node3", "off", FenceState::Success, None),
    ] {
        let out = fenced(&mut c, 5000, r.clone());
        assert!(confirmed_event(&out).is_none(), "{r:?}");
        assert!(!accounted(&c, 3, 5001), "{r:?}");
    }
}

#[test]
fn a_member_is_never_confirmed_by_pacemaker() {
    let mut c = cluster();
    // Node 3 is a member with a running daemon.
    let out = fenced(
        &mut c,
        5000,
        rec("node3", "off", FenceState::Success, Some(4000)),
    );
    assert!(confirmed_event(&out).is_none());
    // Its daemon leaves but the node stays a member: not departed.
    c.apply(Input::GroupChange {
        at: 6000,
        group: Group::FenceAgents,
        members: vec![],
        left: vec![GroupMember {
            nodeid: 3,
            pid: 103,
            reason: "Leave".into(),
        }],
        joined: vec![],
    });
    let out = fenced(
        &mut c,
        8000,
        rec("node3", "off", FenceState::Success, Some(7000)),
    );
    assert!(confirmed_event(&out).is_none());
    assert!(!accounted(&c, 3, 8001));
    // Nor the local node, nor a node nobody knows.
    let out = fenced(
        &mut c,
        8000,
        rec("node1", "off", FenceState::Success, Some(7000)),
    );
    assert!(confirmed_event(&out).is_none() && out.events.is_empty());
    let out = fenced(
        &mut c,
        8000,
        rec("node9", "off", FenceState::Success, Some(7000)),
    );
    assert!(out.events.is_empty() && out.effects.is_empty());
}

#[test]
fn a_node_that_returned_and_left_again_needs_a_new_fence() {
    let mut c = cluster();
    node3_leaves(&mut c, 1000);
    assert!(
        confirmed_event(&fenced(
            &mut c,
            3000,
            rec("node3", "reboot", FenceState::Success, Some(2000))
        ))
        .is_some()
    );
    // It rejoins (the confirmation is cleared) and leaves again.
    c.apply(Input::Quorum {
        at: 4000,
        quorate: true,
        members: vec![1, 2, 3],
    });
    node3_leaves(&mut c, 6000);
    assert!(!accounted(&c, 3, 6001));
    // The old fence is history from before this departure.
    let out = fenced(
        &mut c,
        7000,
        rec("node3", "reboot", FenceState::Success, Some(2000)),
    );
    assert!(confirmed_event(&out).is_none());
    assert!(!accounted(&c, 3, 7001));
}
