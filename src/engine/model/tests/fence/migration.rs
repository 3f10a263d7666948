//! Live migration: a copy that left by migration never says "off"/"ok".

use super::*;
use fenceline_proto::messages::Migration;

fn acted(c: &mut Cluster, at: Millis, job: u64, result: FenceResult) -> Output {
    c.apply(Input::FenceActed {
        at,
        job,
        result,
        detail: None,
        not_found: false,
        migrated: false,
    })
}

/// libvirt on this host: `name` left by live migration and is shut off.
fn migrated_away(c: &mut Cluster, at: Millis, name: &str, uuid: u8) {
    let d = dom(name, uuid, Shutoff);
    c.apply(Input::LocalMigrated {
        at,
        uri: URI.into(),
        name: d.name.clone(),
        uuid: d.uuid.clone(),
    });
    c.apply(Input::LocalDomain {
        at,
        uri: URI.into(),
        domain: d,
    });
}

/// Each operation with the libvirt result that would claim the VM off.
const CLAIMS_OFF: [(FenceOp, FenceResult); 3] = [
    (FenceOp::Off, FenceResult::Ok),
    (FenceOp::Reboot, FenceResult::Ok),
    (FenceOp::Status, FenceResult::Off),
];

/// Node 2 runs vm2a (node 3 has a shut-off copy) and acts on `op` from
/// node 1: the cluster and the job.
fn running_here_acting(op: FenceOp) -> (Cluster, u64) {
    let mut n2 = lab(2, &[dom("vm2a", 1, Running)]);
    peer_vm(&mut n2, 5, 3, dom("vm2a", 1, Shutoff));
    let out = request(&mut n2, 10, 1, 7, "vm2a", op);
    let job = acts(&out)[0].job;
    (n2, job)
}

#[test]
fn the_holder_refuses_when_its_copy_migrates_away_during_the_request() {
    for (op, found) in CLAIMS_OFF {
        let (mut n2, job) = running_here_acting(op);
        // It migrates to node 3 before libvirt acts; node 3's report is
        // still on its way.
        migrated_away(&mut n2, 15, "vm2a", 1);
        let out = acted(&mut n2, 30, job, found);
        assert_eq!(sent_replies(&out), vec![(7, 1, FenceResult::Fail)], "{op}");
    }
}

#[test]
fn a_copy_that_migrated_away_refuses_until_the_target_reports() {
    let mut n2 = lab(2, &[dom("vm2a", 1, Running)]);
    peer_vm(&mut n2, 5, 3, dom("vm2a", 1, Shutoff));
    migrated_away(&mut n2, 10, "vm2a", 1);
    // Shut off everywhere in this map: node 2, the lowest defining node,
    // acts, but its copy's "off" is not the VM's.
    let out = request(&mut n2, 20, 1, 7, "vm2a", FenceOp::Status);
    let job = acts(&out)[0].job;
    let out = acted(&mut n2, 25, job, FenceResult::Off);
    assert_eq!(sent_replies(&out), vec![(7, 1, FenceResult::Fail)]);
    // Its own stop comes back in total order, then node 3 reports it
    // running: the router goes there.
    n2.apply(Input::PeerMessage {
        at: 26,
        from: 2,
        msg: OwnMessage::Vms {
            vms: vec![dom("vm2a", 1, Shutoff)],
        },
    });
    peer_vm(&mut n2, 30, 3, dom("vm2a", 1, Running));
    let out = request(&mut n2, 31, 1, 8, "vm2a", FenceOp::Status);
    assert!(
        acts(&out).is_empty() && sent_replies(&out).is_empty(),
        "{out:?}"
    );
    // It stops there later: node 2's shut-off copy answers again.
    peer_vm(&mut n2, 40, 3, dom("vm2a", 1, Shutoff));
    let out = request(&mut n2, 41, 1, 9, "vm2a", FenceOp::Status);
    let job = acts(&out)[0].job;
    let out = acted(&mut n2, 45, job, FenceResult::Off);
    assert_eq!(sent_replies(&out), vec![(9, 1, FenceResult::Off)]);
}

#[test]
fn on_for_a_vm_running_here_starts_nothing() {
    let mut n2 = lab(2, &[dom("vm2a", 1, Running)]);
    peer_vm(&mut n2, 5, 3, dom("vm2a", 1, Shutoff));
    let out = request(&mut n2, 10, 1, 7, "vm2a", FenceOp::On);
    assert!(acts(&out).is_empty(), "a start could race a migration away");
    assert_eq!(sent_replies(&out), vec![(7, 1, FenceResult::Ok)]);
}

#[test]
fn libvirts_migrated_reason_refuses_before_its_event_arrives() {
    for (op, found) in CLAIMS_OFF {
        let (mut n2, job) = running_here_acting(op);
        // No event yet: only the action's own read of the state says it
        // is shut off because it migrated.
        let out = n2.apply(Input::FenceActed {
            at: 30,
            job,
            result: found,
            detail: None,
            not_found: false,
            migrated: true,
        });
        assert_eq!(sent_replies(&out), vec![(7, 1, FenceResult::Fail)], "{op}");
    }
}

#[test]
fn a_copy_left_by_an_old_migration_answers_once_the_target_reported() {
    // Shut off here by a migration long ago; the target has reported and
    // stopped it since: the map alone decides, libvirt's old reason does not.
    let mut n2 = lab(2, &[dom("vm2a", 1, Shutoff)]);
    peer_vm(&mut n2, 5, 3, dom("vm2a", 1, Shutoff));
    let out = request(&mut n2, 10, 1, 7, "vm2a", FenceOp::Status);
    let job = acts(&out)[0].job;
    let out = n2.apply(Input::FenceActed {
        at: 30,
        job,
        result: FenceResult::Off,
        detail: None,
        not_found: false,
        migrated: true,
    });
    assert_eq!(sent_replies(&out), vec![(7, 1, FenceResult::Off)]);
}

#[test]
fn a_target_report_during_the_request_does_not_make_the_old_copy_true() {
    let mut n2 = lab(2, &[dom("vm2a", 1, Running)]);
    peer_vm(&mut n2, 5, 3, dom("vm2a", 1, Shutoff));
    migrated_away(&mut n2, 10, "vm2a", 1);
    n2.apply(Input::PeerMessage {
        at: 11,
        from: 2,
        msg: OwnMessage::Vms {
            vms: vec![dom("vm2a", 1, Shutoff)],
        },
    });
    // Shut off everywhere in this map: node 2 acts.
    let out = request(&mut n2, 20, 3, 7, "vm2a", FenceOp::Off);
    let job = acts(&out)[0].job;
    // The target's report arrives while node 2's libvirt acts.
    peer_vm(&mut n2, 25, 3, dom("vm2a", 1, Running));
    let out = acted(&mut n2, 30, job, FenceResult::Ok);
    assert_eq!(sent_replies(&out), vec![(7, 3, FenceResult::Fail)]);
}

fn with_migration(mut d: LocalDomain, m: Migration) -> LocalDomain {
    d.migration = Some(m);
    d
}

#[test]
fn a_live_migration_is_shown_as_such_not_as_a_conflict() {
    use fenceline_proto::api::Migrating;
    // The target (node 3) reports its incoming copy, paused.
    let mut n2 = lab(2, &[dom("vm2a", 1, Running)]);
    peer_vm(&mut n2, 5, 3, dom("vm2a", 1, Shutoff));
    let out = n2.apply(Input::PeerMessage {
        at: 10,
        from: 3,
        msg: OwnMessage::Vms {
            vms: vec![with_migration(dom("vm2a", 1, Paused), Migration::Incoming)],
        },
    });
    let s = n2.snapshot(11);
    let d = s.domains.iter().find(|d| d.name == "vm2a").unwrap();
    assert_eq!(d.migrating, Some(Migrating { from: 2, to: 3 }));
    assert!(!d.conflict, "a migration is no conflict");
    assert!(out.events.iter().any(|e| matches!(
        &e.kind,
        EventKind::Domain { action: DomainAction::Migrating, detail: Some(t), .. } if t == "node 2 → node 3"
    )));
    // The router still treats both copies as active: off waits for both.
    let out = request(&mut n2, 12, 1, 7, "vm2a", FenceOp::Off);
    assert_eq!(acts(&out).len(), 1, "node 2 destroys its copy");
    // The source's last phase: it reports itself outgoing, the target
    // running. Still a migration, from 2 to 3.
    let mut n1 = lab(1, &[]);
    peer_vm(
        &mut n1,
        5,
        2,
        with_migration(dom("vm2a", 1, Paused), Migration::Outgoing),
    );
    peer_vm(&mut n1, 6, 3, dom("vm2a", 1, Running));
    let s = n1.snapshot(7);
    let d = s.domains.iter().find(|d| d.name == "vm2a").unwrap();
    assert_eq!(
        (d.migrating, d.conflict),
        (Some(Migrating { from: 2, to: 3 }), false)
    );
    // Without a migration reported, two active copies are a conflict.
    let mut n1 = lab(1, &[]);
    peer_vm(&mut n1, 5, 2, dom("vm2a", 1, Running));
    peer_vm(&mut n1, 6, 3, dom("vm2a", 1, Running));
    let s = n1.snapshot(7);
    let d = s.domains.iter().find(|d| d.name == "vm2a").unwrap();
    assert_eq!((d.migrating, d.conflict), (None, true));
}
