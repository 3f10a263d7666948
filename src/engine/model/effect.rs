//! What the model asks the drivers to do, and what it leaves the state task
//! to log.

use fenceline_proto::api::{FenceResult, NodeId};

use super::{ClaimOutcome, FenceAct, FenceWire, OwnMessage, VmRecord};

/// What the drivers must do after an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Multicast these records to `fence-agents` as STORE_VM (fence_virtd format).
    StoreVms(Vec<VmRecord>),
    /// Multicast this message to fenceline's own group.
    Own(OwnMessage),
    /// Send a REQUEST to `fence-agents` (header target: none).
    FenceCpgRequest { seqno: u32, body: FenceWire },
    /// Send a REPLY to `fence-agents` for `target`'s request `seqno`.
    FenceCpgReply {
        seqno: u32,
        target: NodeId,
        body: FenceWire,
    },
    /// The libvirt driver must act on a local domain, then report
    /// [`Input::FenceActed`](super::Input::FenceActed).
    FenceAct(FenceAct),
    /// Answer the caller of [`Input::FenceSubmit`](super::Input::FenceSubmit) `id`.
    FenceDone {
        id: u64,
        result: FenceResult,
        acted_by: Option<NodeId>,
        duration_ms: u64,
        detail: Option<String>,
    },
    /// Answer the listener of [`Input::ClaimAsk`](super::Input::ClaimAsk) `id`.
    ClaimDone { id: u64, outcome: ClaimOutcome },
    /// Answer the caller of [`Input::Confirm`](super::Input::Confirm) `id`:
    /// what was confirmed, or why not.
    ConfirmDone {
        id: u64,
        result: Result<String, String>,
    },
}

impl Effect {
    /// Effects the corosync driver carries out.
    pub fn is_corosync(&self) -> bool {
        matches!(
            self,
            Effect::StoreVms(_)
                | Effect::Own(_)
                | Effect::FenceCpgRequest { .. }
                | Effect::FenceCpgReply { .. }
        )
    }
}

/// Something worth a log line that is neither an event nor an effect. The
/// model does no logging: the state task logs these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A `fence-agents` REQUEST with an op nobody routes; ignored.
    UnroutedRequest {
        from: NodeId,
        seqno: u32,
        request: i32,
    },
    /// A REPLY to our request `seqno` that does not match it; ignored.
    MismatchedReply {
        from: NodeId,
        seqno: u32,
        vm: String,
    },
    /// A REPLY from a node that does not hold the VM; the requester keeps
    /// waiting for one of `holders`.
    ReplyFromNonHolder {
        from: NodeId,
        seqno: u32,
        holders: Vec<NodeId>,
    },
    /// Self-fencing: why this host arms, destroys its VMs, or a destroy
    /// failed (logged at error level).
    SelfFence(String),
    /// A peer's VM entry was dropped (out of bounds); the first of a run.
    PeerVmDropped { from: NodeId, why: String },
}
