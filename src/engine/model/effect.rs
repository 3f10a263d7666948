//! What the model asks the drivers to do.

use fenceline_proto::api::{FenceResult, NodeId};

use super::{FenceAct, FenceWire, OwnMessage, VmRecord};

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
    /// [`Input::FenceActed`].
    FenceAct(FenceAct),
    /// Answer the caller of [`Input::FenceSubmit`] `id`.
    FenceDone {
        id: u64,
        result: FenceResult,
        acted_by: Option<NodeId>,
        duration_ms: u64,
        detail: Option<String>,
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
