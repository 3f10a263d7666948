//! One connect-back per multicast run: the claim room (`fence/claim.rs`).

use super::super::*;
use crate::engine::model::fence::claim::{CLAIM_DELAY_MS, CLAIM_TTL_MS, MAX_CLAIMS};

const ID: &str = "00112233445566778899aabbccddeeff";

/// A quorate 3-node cluster seen from `local`, fenceline on every node
/// (own group), vm2a running on node 2, vm3off defined shut off on node 3.
fn claimers(local: NodeId) -> Cluster {
    let mut c = cluster_as(local);
    c.apply(Input::GroupChange {
        at: 3,
        group: Group::Own,
        members: vec![member(1, 101), member(2, 102), member(3, 103)],
        left: vec![],
        joined: vec![],
    });
    for (node, d) in [(2, dom("vm2a", 1, Running)), (3, dom("vm3off", 2, Shutoff))] {
        if node == local {
            c.apply(Input::LocalList {
                at: 4,
                uri: URI.into(),
                domains: vec![d],
            });
        } else {
            c.apply(Input::PeerMessage {
                at: 4,
                from: node,
                msg: OwnMessage::Vms { vms: vec![d] },
            });
        }
    }
    c
}

fn ask(c: &mut Cluster, at: Millis, id: u64, claim: &str, vm: &str) -> Output {
    c.apply(Input::ClaimAsk {
        at,
        id,
        claim: claim.into(),
        domain: vm.into(),
    })
}

fn deliver(c: &mut Cluster, at: Millis, from: NodeId, claim: &str) -> Output {
    c.apply(Input::PeerMessage {
        at,
        from,
        msg: OwnMessage::Claim { id: claim.into() },
    })
}

fn tick(c: &mut Cluster, at: Millis) -> Output {
    c.apply(Input::Tick { at })
}

fn claims_sent(out: &Output) -> Vec<&str> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Own(OwnMessage::Claim { id }) => Some(id.as_str()),
            _ => None,
        })
        .collect()
}

fn outcomes(out: &Output) -> Vec<(u64, ClaimOutcome)> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::ClaimDone { id, outcome } => Some((*id, outcome.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn the_owner_claims_at_once_and_wins_in_one_round() {
    let mut c = claimers(2);
    let out = ask(&mut c, 100, 7, ID, "vm2a");
    assert_eq!(claims_sent(&out), vec![ID]);
    assert!(outcomes(&out).is_empty(), "decided on delivery, not before");
    assert!(c.claims_busy());
    let out = deliver(&mut c, 102, 2, ID);
    assert_eq!(outcomes(&out), vec![(7, ClaimOutcome::Won)]);
    assert!(!c.claims_busy());
    assert_eq!(c.snapshot(103).counters.claims_won, 1);
    // A retransmission of the run (new packet, same id): won, no new round.
    let out = ask(&mut c, 2_100, 8, ID, "vm2a");
    assert_eq!(outcomes(&out), vec![(8, ClaimOutcome::Won)]);
    assert!(claims_sent(&out).is_empty());
}

#[test]
fn a_non_owner_waits_and_loses_to_the_owner() {
    let mut c = claimers(1);
    let out = ask(&mut c, 100, 7, ID, "vm2a");
    assert!(
        claims_sent(&out).is_empty(),
        "node 2 owns vm2a: node 1 waits"
    );
    assert!(claims_sent(&tick(&mut c, 100 + CLAIM_DELAY_MS - 1)).is_empty());
    let out = deliver(&mut c, 120, 2, ID);
    assert_eq!(outcomes(&out), vec![(7, ClaimOutcome::Lost(2))]);
    // Decided: its delayed claim never goes out.
    assert!(claims_sent(&tick(&mut c, 100 + CLAIM_DELAY_MS)).is_empty());
    assert!(!c.claims_busy());
    let s = c.snapshot(130);
    assert_eq!((s.counters.claims_won, s.counters.claims_lost), (0, 1));
}

#[test]
fn when_the_preferred_node_is_silent_the_others_claim_after_the_delay() {
    let mut c = claimers(1);
    ask(&mut c, 100, 7, ID, "vm2a");
    let out = tick(&mut c, 100 + CLAIM_DELAY_MS);
    assert_eq!(claims_sent(&out), vec![ID]);
    // Node 3 claimed too; node 1's claim is delivered first: node 1 wins,
    // and node 3's later claim changes nothing.
    let out = deliver(&mut c, 260, 1, ID);
    assert_eq!(outcomes(&out), vec![(7, ClaimOutcome::Won)]);
    let out = deliver(&mut c, 261, 3, ID);
    assert!(outcomes(&out).is_empty());
    assert_eq!(
        outcomes(&ask(&mut c, 300, 8, ID, "vm2a")),
        vec![(8, ClaimOutcome::Won)]
    );
}

#[test]
fn late_claims_lose_and_a_late_packet_is_not_connected_back() {
    let mut c = claimers(1);
    // Node 3's claim and node 2's arrive before node 1 even got the packet.
    deliver(&mut c, 100, 3, ID);
    deliver(&mut c, 101, 2, ID);
    let out = ask(&mut c, 150, 7, ID, "vm2a");
    assert_eq!(outcomes(&out), vec![(7, ClaimOutcome::Lost(3))]);
    assert!(claims_sent(&out).is_empty());
    assert!(!c.claims_busy());
}

#[test]
fn packets_of_one_run_on_two_interfaces_share_one_decision() {
    let mut c = claimers(2);
    let out = ask(&mut c, 100, 7, ID, "vm2a");
    assert_eq!(claims_sent(&out), vec![ID]);
    let out = ask(&mut c, 101, 8, ID, "vm2a");
    assert!(claims_sent(&out).is_empty(), "one claim per run");
    let out = deliver(&mut c, 103, 2, ID);
    assert_eq!(
        outcomes(&out),
        vec![(7, ClaimOutcome::Won), (8, ClaimOutcome::Won)]
    );
}

#[test]
fn no_decision_in_time_is_unavailable_and_a_later_delivery_still_counts() {
    let mut c = claimers(2);
    ask(&mut c, 100, 7, ID, "vm2a");
    assert!(outcomes(&tick(&mut c, 1_599)).is_empty());
    let out = tick(&mut c, 1_600);
    let got = outcomes(&out);
    assert_eq!(got.len(), 1);
    assert!(
        matches!(&got[0], (7, ClaimOutcome::Unavailable(why)) if why.contains("within 1500 ms")),
        "{got:?}"
    );
    assert_eq!(c.snapshot(1_601).counters.claims_unavailable, 1);
    assert!(!c.claims_busy(), "nothing left to wait for");
    // The claim is delivered after all: the decision stands for the
    // retransmission (fence_xvm got no connect-back, so it resends).
    deliver(&mut c, 1_700, 2, ID);
    assert_eq!(
        outcomes(&ask(&mut c, 2_100, 8, ID, "vm2a")),
        vec![(8, ClaimOutcome::Won)]
    );
}

#[test]
fn without_quorum_or_the_own_group_nobody_here_connects_back() {
    let mut c = claimers(2);
    c.apply(Input::Quorum {
        at: 50,
        quorate: false,
        members: vec![2],
    });
    let out = ask(&mut c, 100, 7, ID, "vm2a");
    assert!(claims_sent(&out).is_empty());
    assert!(
        matches!(&outcomes(&out)[..], [(7, ClaimOutcome::Unavailable(w))] if w.contains("quorum"))
    );
    // Quorate, but this daemon is not in the own group (yet).
    let mut c = cluster_as(2);
    let out = ask(&mut c, 100, 7, ID, "vm2a");
    assert!(
        matches!(&outcomes(&out)[..], [(7, ClaimOutcome::Unavailable(w))] if w.contains("own CPG group"))
    );
    // The libvirt backend has nobody to agree with: it answers.
    let mut c = Cluster::new(ModelConfig {
        fence: FenceRules {
            cpg: false,
            ..FenceRules::default()
        },
        ..ModelConfig::default()
    });
    assert_eq!(
        outcomes(&ask(&mut c, 100, 7, ID, "vm")),
        vec![(7, ClaimOutcome::Won)]
    );
}

#[test]
fn who_claims_first() {
    // The active owner.
    assert!(claimers(2).claim_preferred("vm2a"));
    assert!(!claimers(1).claim_preferred("vm2a"));
    // Shut off everywhere: the lowest node that defines it.
    assert!(claimers(3).claim_preferred("vm3off"));
    assert!(!claimers(1).claim_preferred("vm3off"));
    // Nobody knows it: the lowest fenceline node.
    assert!(claimers(1).claim_preferred("no-such-vm"));
    assert!(!claimers(2).claim_preferred("no-such-vm"));
}

#[test]
fn ids_expire_after_their_ttl() {
    let mut c = claimers(2);
    ask(&mut c, 100, 7, ID, "vm2a");
    deliver(&mut c, 101, 3, ID);
    assert_eq!(
        outcomes(&ask(&mut c, 100 + CLAIM_TTL_MS - 1, 8, ID, "vm2a")),
        vec![(8, ClaimOutcome::Lost(3))]
    );
    // Forgotten: a new round, claimed at once by the owner.
    let out = ask(&mut c, 100 + CLAIM_TTL_MS, 9, ID, "vm2a");
    assert!(outcomes(&out).is_empty());
    assert_eq!(claims_sent(&out), vec![ID]);
}

#[test]
fn the_table_is_bounded_and_evictions_are_counted() {
    let mut c = claimers(1);
    let id = |i: usize| format!("{i:032x}");
    for i in 0..=MAX_CLAIMS {
        deliver(&mut c, 100 + i as Millis, 3, &id(i));
    }
    assert_eq!(c.snapshot(10_000).counters.claims_evicted, 1);
    // The oldest was forgotten: a new round (node 1 is not preferred for
    // vm2a, so it waits); the newest is still decided.
    let out = ask(&mut c, 10_000, 7, &id(0), "vm2a");
    assert!(outcomes(&out).is_empty());
    assert_eq!(
        outcomes(&ask(&mut c, 10_001, 8, &id(MAX_CLAIMS), "vm2a")),
        vec![(8, ClaimOutcome::Lost(3))]
    );
}

#[test]
fn hostile_claim_ids_are_counted_not_stored() {
    let mut c = claimers(1);
    for bad in ["", "not hex!", &"a".repeat(65)] {
        deliver(&mut c, 100, 3, bad);
    }
    assert_eq!(c.snapshot(101).counters.malformed_own, 3);
    assert!(!c.claims_busy());
    assert_eq!(
        outcomes(&ask(&mut c, 102, 7, &"b".repeat(65), "vm2a")),
        vec![(7, ClaimOutcome::Unavailable("malformed claim id".into()))]
    );
}
