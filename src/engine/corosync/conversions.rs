//! Between what corosync delivers (CPG messages, membership changes) and
//! the model's [`Input`]s, and from the model's fence payloads back to
//! `fence-agents` frames.

use crate::engine::model::{FenceWire, Group, GroupMember, Input};
use fenceline_proto::api::NodeId;
use fenceline_proto::cpg::{self, FenceAgentsMsg, FenceReq, Frame};
use fenceline_proto::own;

pub(super) fn fence_req(w: FenceWire) -> FenceReq {
    FenceReq {
        vm_name: w.vm_name,
        request: w.request,
        seqno: w.seqno,
        response: w.response,
    }
}

fn fence_wire(r: FenceReq) -> FenceWire {
    FenceWire {
        vm_name: r.vm_name,
        request: r.request,
        seqno: r.seqno,
        response: r.response,
    }
}

/// `Group` is not `Hash`; a small stable key instead (rate-limit keys).
pub(super) fn group_key(g: Group) -> u8 {
    match g {
        Group::FenceAgents => 0,
        Group::Own => 1,
    }
}

/// A delivered CPG message as a model input; `Err(reason)` when it does not
/// parse.
pub(super) fn deliver_input(
    at: u64,
    group: Group,
    from: NodeId,
    pid: u32,
    data: &[u8],
) -> Result<Option<Input>, String> {
    match group {
        Group::FenceAgents => match cpg::parse(data) {
            Ok(frame) => Ok(fence_agents_input(at, from, pid, frame)),
            Err(e) => Err(e.to_string()),
        },
        Group::Own => match own::parse(data) {
            Ok(msg) => Ok(Some(Input::PeerMessage { at, from, msg })),
            Err(e) => Err(e.to_string()),
        },
    }
}

/// Turns a parsed `fence-agents` frame into a model input.
pub(super) fn fence_agents_input(at: u64, from: NodeId, pid: u32, frame: Frame) -> Option<Input> {
    match frame.msg {
        // `from` is the CPG sender, not `s_owner`: fence_virtd puts its own
        // nodeid there, and only the sender is authenticated by corosync.
        FenceAgentsMsg::StoreVm(record) => Some(Input::PeerRecord { at, from, record }),
        FenceAgentsMsg::Request(req) => {
            tracing::debug!(from, pid, seqno = frame.seqno, vm = %req.vm_name, request = req.request, "fence-agents REQUEST");
            Some(Input::FenceCpgRequest {
                at,
                from,
                seqno: frame.seqno,
                body: fence_wire(req),
            })
        }
        FenceAgentsMsg::Reply(req) => {
            tracing::debug!(from, pid, seqno = frame.seqno, target = frame.target, vm = %req.vm_name, response = req.response, "fence-agents REPLY");
            Some(Input::FenceCpgReply {
                at,
                from,
                seqno: frame.seqno,
                target: frame.target,
                body: fence_wire(req),
            })
        }
    }
}

/// A CPG membership change as a model input (logged).
pub(super) fn group_change_input(
    at: u64,
    group: Group,
    members: Vec<GroupMember>,
    left: Vec<GroupMember>,
    joined: Vec<GroupMember>,
) -> Input {
    tracing::info!(
        group = ?group,
        members = %fmt_members(&members),
        joined = %fmt_members(&joined),
        left = %fmt_members(&left),
        "CPG membership change"
    );
    Input::GroupChange {
        at,
        group,
        members,
        left,
        joined,
    }
}

fn fmt_members(list: &[GroupMember]) -> String {
    let parts: Vec<String> = list
        .iter()
        .map(|m| {
            if m.reason.is_empty() || m.reason == "Undefined" {
                format!("{}/{}", m.nodeid, m.pid)
            } else {
                format!("{}/{}:{}", m.nodeid, m.pid, m.reason)
            }
        })
        .collect();
    format!("[{}]", parts.join(" "))
}
