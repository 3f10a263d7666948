//! The C callback trampolines. rust-corosync callbacks are plain `fn`s run
//! inside `dispatch` (under rust-corosync's global mutex): they only copy
//! their arguments into a thread-local buffer ([`PENDING`]), which the
//! driver drains after each dispatch. Nothing here calls into corosync.

use std::cell::RefCell;

use rust_corosync::NodeId as CsNodeId;
use rust_corosync::{cpg, quorum, votequorum};

use crate::engine::model::{Group, GroupMember};
use fenceline_proto::api::NodeId;

/// What a callback saw, copied out of corosync's buffers.
pub(super) enum Raw {
    Deliver {
        group: Group,
        nodeid: NodeId,
        pid: u32,
        data: Vec<u8>,
    },
    Confchg {
        group: Group,
        members: Vec<GroupMember>,
        left: Vec<GroupMember>,
        joined: Vec<GroupMember>,
    },
    Quorum {
        quorate: bool,
        members: Vec<NodeId>,
    },
    /// votequorum reported a change: re-read the vote counts.
    VotesChanged,
}

thread_local! {
    /// Filled by the callbacks while `dispatch` runs on this thread, drained
    /// right after it. Only the driver thread ever touches its copy.
    static PENDING: RefCell<Vec<Raw>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn push(raw: Raw) {
    PENDING.with(|p| {
        // A callback cannot run while the driver holds the borrow (the driver
        // never dispatches while draining), so this never fails; use
        // try_borrow_mut anyway because a panic here would cross an
        // `extern "C"` frame and abort the process.
        if let Ok(mut v) = p.try_borrow_mut() {
            v.push(raw);
        }
    });
}

pub(super) fn take_pending() -> Vec<Raw> {
    PENDING.with(|p| {
        p.try_borrow_mut()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    })
}

/// CPG addresses as model members. corosync only sets a reason on joined
/// and left entries; member-list entries carry none (an empty string).
fn members_of(list: &[cpg::Address], with_reason: bool) -> Vec<GroupMember> {
    list.iter()
        .map(|a| GroupMember {
            nodeid: u32::from(a.nodeid),
            pid: a.pid,
            reason: if with_reason {
                a.reason.to_string()
            } else {
                String::new()
            },
        })
        .collect()
}

/// The group a callback instance serves (`OWN`: fenceline's own group).
fn group_of<const OWN: bool>() -> Group {
    if OWN { Group::Own } else { Group::FenceAgents }
}

// One instance of each CPG callback per group: the fn pointer itself tells
// the groups apart, even if both groups were configured with the same name.
fn deliver_cb<const OWN: bool>(
    _h: &cpg::Handle,
    _g: String,
    nodeid: CsNodeId,
    pid: u32,
    msg: &[u8],
    _l: usize,
) {
    push(Raw::Deliver {
        group: group_of::<OWN>(),
        nodeid: u32::from(nodeid),
        pid,
        data: msg.to_vec(),
    });
}

fn confchg_cb<const OWN: bool>(
    _h: &cpg::Handle,
    _g: &str,
    members: Vec<cpg::Address>,
    left: Vec<cpg::Address>,
    joined: Vec<cpg::Address>,
) {
    push(Raw::Confchg {
        group: group_of::<OWN>(),
        members: members_of(&members, false),
        left: members_of(&left, true),
        joined: members_of(&joined, true),
    });
}

fn quorum_cb(_h: &quorum::Handle, quorate: bool, _ring: quorum::RingId, members: Vec<CsNodeId>) {
    push(Raw::Quorum {
        quorate,
        members: members.into_iter().map(u32::from).collect(),
    });
}

fn vq_expected_cb(_h: &votequorum::Handle, _ctx: u64, _expected: u32) {
    push(Raw::VotesChanged);
}

fn vq_quorum_cb(_h: &votequorum::Handle, _ctx: u64, _quorate: bool, _nodes: Vec<votequorum::Node>) {
    push(Raw::VotesChanged);
}

fn cpg_model<const OWN: bool>() -> cpg::ModelData {
    cpg::ModelData::ModelV1(cpg::Model1Data {
        flags: cpg::Model1Flags::None,
        deliver_fn: Some(deliver_cb::<OWN>),
        confchg_fn: Some(confchg_cb::<OWN>),
        totem_confchg_fn: None,
    })
}

/// The CPG model of the `fence-agents` group.
pub(super) fn fence_model() -> cpg::ModelData {
    cpg_model::<false>()
}

/// The CPG model of fenceline's own group.
pub(super) fn own_model() -> cpg::ModelData {
    cpg_model::<true>()
}

/// Quorum notifications (membership + quorate).
pub(super) fn quorum_model() -> quorum::ModelData {
    quorum::ModelData::ModelV1(quorum::Model1Data {
        flags: quorum::Model1Flags::None,
        quorum_notification_fn: Some(quorum_cb),
        nodelist_notification_fn: None,
    })
}

/// votequorum notifications (any change: re-read the votes).
pub(super) fn votequorum_callbacks() -> votequorum::Callbacks {
    votequorum::Callbacks {
        quorum_notification_fn: Some(vq_quorum_cb),
        nodelist_notification_fn: None,
        expectedvotes_notification_fn: Some(vq_expected_cb),
    }
}
