use std::time::Instant;

use super::callbacks::{Raw, push, take_pending};
use super::conversions::{fence_agents_input, group_key};
use super::driver::{RECONNECT_MAX, RECONNECT_MIN, WARN_INTERVAL, reconnect_backoff, warn_limit};
use crate::engine::model::{Group, Input, VmRecord};
use fenceline_proto::cpg::Frame;

#[test]
fn reconnect_backoff_doubles_within_the_jitter() {
    let mut b = reconnect_backoff();
    let mut base = RECONNECT_MIN;
    for _ in 0..10 {
        let d = b.next_delay();
        assert!(d >= base.mul_f64(0.8) && d < base.mul_f64(1.2), "{d:?}");
        base = (base * 2).min(RECONNECT_MAX);
    }
    b.reset();
    assert!(b.next_delay() < RECONNECT_MIN.mul_f64(1.2));
}

#[test]
fn warn_limiter_allows_one_per_interval_per_key() {
    let mut w = warn_limit();
    let t0 = Instant::now();
    let key = |g, n: u32| (group_key(g), n);
    assert_eq!(w.allow(key(Group::Own, 1), t0), Some(0));
    assert_eq!(w.allow(key(Group::Own, 1), t0), None);
    assert_eq!(w.allow(key(Group::Own, 1), t0), None);
    assert_eq!(w.allow(key(Group::Own, 2), t0), Some(0));
    assert_eq!(w.allow(key(Group::FenceAgents, 1), t0), Some(0));
    // The interval passed.
    assert_eq!(w.allow(key(Group::Own, 1), t0 + WARN_INTERVAL), Some(2));
}

#[test]
fn pending_buffer_round_trip() {
    let _ = take_pending();
    push(Raw::VotesChanged);
    push(Raw::Quorum {
        quorate: true,
        members: vec![1],
    });
    let v = take_pending();
    assert_eq!(v.len(), 2);
    assert!(take_pending().is_empty());
}

#[test]
fn store_vm_becomes_peer_record_from_sender() {
    let frame = Frame::store_vm(VmRecord {
        name: "vm1".into(),
        uuid: "u".into(),
        owner: 9,
        state: fenceline_proto::api::DomainState::Running,
    });
    match fence_agents_input(5, 2, 100, frame) {
        Some(Input::PeerRecord { at, from, record }) => {
            assert_eq!((at, from, record.owner), (5, 2, 9));
        }
        other => panic!("unexpected {other:?}"),
    }
}
