//! Self-fencing: this host's countdown and destroys, the announcement, and
//! peers' deadlines under the truth rule.

use super::*;
use crate::engine::model::self_fence::{JOB_BASE, margin_ms};

const N_MS: Millis = 30_000;

/// `lab`, with self-fencing after 30 s.
fn self_fencing(local: NodeId, mine: &[LocalDomain]) -> Cluster {
    let mut c = lab(local, mine);
    c.cfg.fence.self_fence_ms = N_MS;
    c
}

fn tick(c: &mut Cluster, at: Millis) -> Output {
    c.apply(Input::Tick { at })
}

fn quorum(c: &mut Cluster, at: Millis, quorate: bool, members: &[NodeId]) -> Output {
    c.apply(Input::Quorum {
        at,
        quorate,
        members: members.to_vec(),
    })
}

fn membership(out: &Output, action: MembershipAction) -> Vec<(Option<NodeId>, String)> {
    out.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Membership {
                action: a,
                nodeid,
                detail,
                ..
            } if *a == action => Some((*nodeid, detail.clone().unwrap_or_default())),
            _ => None,
        })
        .collect()
}

fn announce(c: &mut Cluster, at: Millis, from: NodeId, secs: Option<u32>) {
    c.apply(Input::PeerMessage {
        at,
        from,
        msg: OwnMessage::Info(PeerInfo {
            version: "t".into(),
            started_at: 0,
            libvirt: vec![],
            inventory_complete: true,
            key_digests: Default::default(),
            self_fence_secs: secs,
        }),
    });
}

/// Node `id` is cut off: its processes leave both groups with `reason`
/// (`NodeDown` when the node went, `ProcDown` when the daemon stopped),
/// then the membership.
fn node_leaves(c: &mut Cluster, at: Millis, id: NodeId, reason: &str) {
    let rest: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&n| n != id).collect();
    let gone = GroupMember {
        nodeid: id,
        pid: 200 + id,
        reason: reason.into(),
    };
    c.apply(Input::GroupChange {
        at,
        group: Group::Own,
        members: rest.iter().map(|&i| member(i, 200 + i)).collect(),
        left: vec![gone],
        joined: vec![],
    });
    fa_members(c, at, &rest, &[id]);
    quorum(c, at, true, &rest);
}

#[test]
fn the_margin_is_half_of_n_but_at_least_5_s() {
    assert_eq!(margin_ms(6_000), 5_000);
    assert_eq!(margin_ms(10_000), 5_000);
    assert_eq!(margin_ms(30_000), 15_000);
}

#[test]
fn a_node_announces_whether_it_self_fences() {
    let mut off = lab(1, &[]);
    let mut on = self_fencing(1, &[]);
    let info = |c: &mut Cluster| {
        c.announce_all().into_iter().find_map(|e| match e {
            Effect::Own(OwnMessage::Info(i)) => Some(i.self_fence_secs),
            _ => None,
        })
    };
    assert_eq!(info(&mut off), Some(None));
    assert_eq!(info(&mut on), Some(Some(30)));
    assert_eq!(node_view(&on, 11, 1).self_fence_secs, Some(30));
    assert_eq!(node_view(&off, 11, 1).self_fence_secs, None);
    // A peer's announcement shows in the snapshot.
    announce(&mut off, 12, 3, Some(6));
    assert_eq!(node_view(&off, 13, 3).self_fence_secs, Some(6));
}

#[test]
fn this_host_destroys_its_active_vms_after_n_seconds_out_of_a_quorate_membership() {
    let mut n1 = self_fencing(1, &[dom("vm1a", 1, Running), dom("vm1b", 2, Shutoff)]);
    assert!(!n1.self_fence_waiting(), "quorate: nothing to wait for");
    let out = quorum(&mut n1, 1_000, false, &[1]);
    let armed = membership(&out, MembershipAction::SelfFenceArmed);
    assert_eq!(armed.len(), 1);
    assert!(armed[0].1.contains("in 30 s"), "{armed:?}");
    assert!(n1.self_fence_waiting());
    // Never before the deadline.
    let out = tick(&mut n1, 1_000 + N_MS - 1);
    assert!(acts(&out).is_empty());
    let out = tick(&mut n1, 1_000 + N_MS);
    let a = acts(&out);
    assert_eq!(a.len(), 1, "only the running VM");
    assert_eq!((a[0].op, a[0].name.as_str()), (FenceOp::Off, "vm1a"));
    assert!(a[0].job >= JOB_BASE);
    let job = a[0].job;
    let fenced = membership(&out, MembershipAction::SelfFenced);
    assert_eq!(fenced.len(), 1);
    assert!(
        fenced[0]
            .1
            .contains("not part of a quorate membership for 30 s"),
        "{fenced:?}"
    );
    assert!(
        out.notices
            .iter()
            .any(|n| matches!(n, Notice::SelfFence(t) if t.contains("destroying vm1a"))),
        "an error-level log line says why: {:?}",
        out.notices
    );
    // In flight: not sent twice.
    assert!(acts(&tick(&mut n1, 1_000 + N_MS + 500)).is_empty());
    // The driver reports the destroy: an audited fence event.
    let out = n1.apply(Input::FenceActed {
        at: 32_000,
        job,
        result: FenceResult::Ok,
        detail: None,
        not_found: false,
        migrated: false,
    });
    let ev = out
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Fence {
                source,
                domain,
                result,
                ..
            } => Some((source.clone(), domain.clone(), *result)),
            _ => None,
        })
        .unwrap();
    assert_eq!(ev, ("self-fence".into(), "vm1a".into(), FenceResult::Ok));
    assert!(done(&out).is_none(), "no fence caller to answer");
    n1.apply(Input::LocalDomain {
        at: 32_001,
        uri: URI.into(),
        domain: dom("vm1a", 1, Shutoff),
    });
    // A VM that starts while the host stays out is destroyed too.
    let out = n1.apply(Input::LocalDomain {
        at: 40_000,
        uri: URI.into(),
        domain: dom("vm1b", 2, Running),
    });
    assert_eq!(acts(&out).len(), 1);
    assert_eq!(acts(&out)[0].name, "vm1b");
    // Back in a quorate membership: nothing more.
    quorum(&mut n1, 41_000, true, &[1, 2, 3]);
    let out = n1.apply(Input::LocalDomain {
        at: 42_000,
        uri: URI.into(),
        domain: dom("vm1a", 1, Running),
    });
    assert!(acts(&out).is_empty());
}

#[test]
fn a_short_quorum_loss_destroys_nothing_and_corosync_loss_counts() {
    let mut n1 = self_fencing(1, &[dom("vm1a", 1, Running)]);
    quorum(&mut n1, 1_000, false, &[1]);
    quorum(&mut n1, 20_000, true, &[1, 2, 3]);
    assert!(acts(&tick(&mut n1, 90_000)).is_empty());
    // corosync lost: the same countdown.
    n1.apply(Input::CorosyncDown {
        at: 100_000,
        error: "gone".into(),
    });
    assert!(acts(&tick(&mut n1, 100_000 + N_MS - 1)).is_empty());
    let out = tick(&mut n1, 100_000 + N_MS);
    assert_eq!(acts(&out).len(), 1);
    assert!(
        membership(&out, MembershipAction::SelfFenced)[0]
            .1
            .contains("corosync is lost")
    );
}

#[test]
fn a_failed_destroy_is_tried_again_after_5_s() {
    let mut n1 = self_fencing(1, &[dom("vm1a", 1, Running)]);
    quorum(&mut n1, 1_000, false, &[1]);
    let job = acts(&tick(&mut n1, 31_000))[0].job;
    let out = n1.apply(Input::FenceActed {
        at: 31_100,
        job,
        result: FenceResult::Fail,
        detail: Some("libvirt is down".into()),
        not_found: false,
        migrated: false,
    });
    assert!(
        out.notices
            .iter()
            .any(|n| matches!(n, Notice::SelfFence(t) if t.contains("failed: libvirt is down")))
    );
    assert!(acts(&tick(&mut n1, 35_999)).is_empty());
    assert_eq!(acts(&tick(&mut n1, 36_000)).len(), 1);
}

/// Node 2's view: node 3 (announcing `secs`) holds vm3a, then leaves at
/// 10 s with `reason`.
fn peer_departs(secs: Option<u32>, reason: &str) -> Cluster {
    let mut n2 = lab(2, &[]);
    peer_vm(&mut n2, 5, 3, dom("vm3a", 1, Running));
    announce(&mut n2, 6, 3, secs);
    node_leaves(&mut n2, 10_000, 3, reason);
    n2
}

/// A status request for vm3a from node 1, answered by node 2.
fn status_answer(n2: &mut Cluster, at: Millis, seqno: u32) -> Vec<(u32, NodeId, FenceResult)> {
    sent_replies(&request(n2, at, 1, seqno, "vm3a", FenceOp::Status))
}

#[test]
fn a_departed_self_fencing_peer_is_accounted_for_only_after_n_plus_the_margin() {
    let mut n2 = peer_departs(Some(30), "NodeDown");
    let deadline = 10_000 + N_MS + margin_ms(N_MS);
    assert!(n2.self_fence_waiting());
    // Before the deadline: refused, and node 3 is not accounted for.
    tick(&mut n2, deadline - 1);
    assert_eq!(
        status_answer(&mut n2, deadline - 1, 7),
        vec![(7, 1, FenceResult::Fail)]
    );
    assert!(!node_view(&n2, deadline - 1, 3).accounted);
    // At the deadline: an audited event, the lost VM leaves the map, and
    // node 3 is accounted for with the reason.
    let out = tick(&mut n2, deadline);
    let ev = membership(&out, MembershipAction::SelfFenced);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].0, Some(3));
    assert!(ev[0].1.contains("treated as off"), "{ev:?}");
    let v = node_view(&n2, deadline, 3);
    assert!(v.accounted);
    assert_eq!(
        v.accounting.as_deref(),
        Some("node3 self-fenced (left 45 s ago, self_fence_secs 30)")
    );
    assert!(!n2.self_fence_waiting());
    assert_eq!(
        status_answer(&mut n2, deadline + 10, 8),
        vec![(8, 1, FenceResult::Off)]
    );
    // Node 3 returns: it is a member again, accounted for by its inventory.
    quorum(&mut n2, deadline + 20, true, &[1, 2, 3]);
    assert_ne!(
        node_view(&n2, deadline + 20, 3).accounting.as_deref(),
        Some("node3 self-fenced (left 45 s ago, self_fence_secs 30)")
    );
}

#[test]
fn a_peer_that_did_not_announce_is_never_assumed() {
    let mut n2 = peer_departs(None, "NodeDown");
    assert!(!n2.self_fence_waiting());
    let out = tick(&mut n2, 3_600_000);
    assert!(membership(&out, MembershipAction::SelfFenced).is_empty());
    assert_eq!(
        status_answer(&mut n2, 3_600_001, 7),
        vec![(7, 1, FenceResult::Fail)]
    );
}

#[test]
fn a_peer_whose_daemon_stopped_before_its_node_left_is_never_assumed() {
    // The daemon left the group on its own (ProcDown): nothing runs on
    // node 3 to destroy its VMs.
    let mut n2 = peer_departs(Some(30), "ProcDown");
    tick(&mut n2, 3_600_000);
    assert!(!node_view(&n2, 3_600_000, 3).accounted);
    assert_eq!(node_view(&n2, 3_600_000, 3).self_fence_secs, None);
    assert_eq!(
        status_answer(&mut n2, 3_600_001, 7),
        vec![(7, 1, FenceResult::Fail)]
    );
}

#[test]
fn an_inquorate_node_assumes_nothing_about_its_peers() {
    let mut n2 = peer_departs(Some(30), "NodeDown");
    quorum(&mut n2, 11_000, false, &[2]);
    let out = tick(&mut n2, 3_600_000);
    assert!(membership(&out, MembershipAction::SelfFenced).is_empty());
    assert!(!node_view(&n2, 3_600_000, 3).accounted);
}
