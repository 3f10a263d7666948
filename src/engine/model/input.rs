//! What drivers hand to the model: [`Input`] and the types only inputs carry.

use fenceline_proto::api::{
    FenceOp, FenceResult, ListenerView, Millis, NetworkAction, NodeId, PortView,
};

use fenceline_proto::pcmk_history::FenceRecord;

use super::{FenceWire, HookCall, LocalDomain, OwnMessage, VmRecord};

/// Which CPG group a membership change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// fence_virtd's group, `fence-agents`.
    FenceAgents,
    /// fenceline's own group.
    Own,
}

/// A process in a CPG group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub nodeid: NodeId,
    pub pid: u32,
    /// corosync's reason text for joined/left entries ("Join", "NodeDown", ...).
    pub reason: String,
}

/// Everything that can happen to the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    CorosyncUp {
        at: Millis,
        local_nodeid: NodeId,
        cluster_name: Option<String>,
        /// corosync's nodelist: id and name.
        nodelist: Vec<(NodeId, Option<String>)>,
    },
    CorosyncDown {
        at: Millis,
        error: String,
    },
    Quorum {
        at: Millis,
        quorate: bool,
        members: Vec<NodeId>,
    },
    Votes {
        at: Millis,
        expected: u32,
        total: u32,
        quorum: u32,
    },
    GroupChange {
        at: Millis,
        group: Group,
        members: Vec<GroupMember>,
        left: Vec<GroupMember>,
        joined: Vec<GroupMember>,
    },
    /// A STORE_VM record from `fence-agents`.
    PeerRecord {
        at: Millis,
        from: NodeId,
        record: VmRecord,
    },
    /// A message of fenceline's own group.
    PeerMessage {
        at: Millis,
        from: NodeId,
        msg: OwnMessage,
    },
    /// A CPG message the corosync driver dropped as not authenticated
    /// (counted only: it says nothing about the node it claims to be from).
    Unauthenticated {
        at: Millis,
        group: Group,
        from: NodeId,
    },
    /// A CPG message that failed to parse.
    Malformed {
        at: Millis,
        group: Group,
        from: NodeId,
        reason: String,
    },
    LibvirtLink {
        at: Millis,
        uri: String,
        connected: bool,
        error: Option<String>,
    },
    /// A full listing of one URI: replaces what the model knew of it.
    LocalList {
        at: Millis,
        uri: String,
        domains: Vec<LocalDomain>,
    },
    /// One local domain changed or appeared.
    LocalDomain {
        at: Millis,
        uri: String,
        domain: LocalDomain,
    },
    /// One local domain disappeared (undefined, or a transient one stopped).
    LocalGone {
        at: Millis,
        uri: String,
        name: String,
        uuid: String,
    },
    /// libvirt says a local domain is leaving or left this host by live
    /// migration (stopped or suspended with reason "migrated"): its copy
    /// here proves nothing about the VM (`fence/migration.rs`).
    LocalMigrated {
        at: Millis,
        uri: String,
        name: String,
        uuid: String,
    },
    /// A local domain rebooted in place (its state did not change).
    LocalRebooted {
        at: Millis,
        uri: String,
        name: String,
        uuid: String,
    },
    /// A fence request from a listener or the control socket; `id` is the
    /// state task's handle for the answer ([`Effect::FenceDone`](super::Effect::FenceDone)).
    FenceSubmit {
        at: Millis,
        id: u64,
        op: FenceOp,
        domain: String,
        source: String,
    },
    /// A multicast listener asks whether this node connects back for the
    /// fence_xvm run `claim` (a request for `domain`); answered by
    /// [`Effect::ClaimDone`](super::Effect::ClaimDone) `id` (`fence/claim.rs`).
    ClaimAsk {
        at: Millis,
        id: u64,
        claim: String,
        domain: String,
    },
    /// A REQUEST in `fence-agents` (our own come back too).
    FenceCpgRequest {
        at: Millis,
        from: NodeId,
        seqno: u32,
        body: FenceWire,
    },
    /// A REPLY in `fence-agents`.
    FenceCpgReply {
        at: Millis,
        from: NodeId,
        seqno: u32,
        target: NodeId,
        body: FenceWire,
    },
    /// The corosync driver could not send our REQUEST `seqno`.
    FenceSendFailed {
        at: Millis,
        seqno: u32,
        error: String,
    },
    /// The libvirt driver finished a [`FenceAct`](super::FenceAct).
    FenceActed {
        at: Millis,
        job: u64,
        result: FenceResult,
        detail: Option<String>,
        /// libvirt did not find the domain where the map put it: an "ok"
        /// stands only if the map, evaluated again, has no active placement.
        not_found: bool,
        /// libvirt says the copy is shut off because it left by live
        /// migration: if the map had it active here when the request came,
        /// it moved during the request, and its "off" is not the VM's.
        migrated: bool,
    },
    /// Clock tick for fence timeouts (sent while [`Cluster::fence_busy`](super::Cluster::fence_busy))
    /// and self-fence deadlines (while [`Cluster::self_fence_waiting`](super::Cluster::self_fence_waiting)).
    Tick {
        at: Millis,
    },
    /// A network hook call on this node (hook intake).
    Hook {
        at: Millis,
        call: HookCall,
    },
    /// A full network listing of one URI.
    LocalNetworks {
        at: Millis,
        uri: String,
        networks: Vec<NetInfo>,
    },
    /// A libvirt network lifecycle event, with the network re-read after it
    /// (`None`: it no longer exists).
    LocalNetwork {
        at: Millis,
        uri: String,
        action: NetworkAction,
        name: String,
        info: Option<NetInfo>,
    },
    /// The ports libvirt lists for one local network.
    LocalPorts {
        at: Millis,
        uri: String,
        network: String,
        ports: Vec<PortView>,
    },
    /// An operator confirms that a departed node is down (`fenceline
    /// confirm`); answered by [`Effect::ConfirmDone`](super::Effect::ConfirmDone) `id`.
    Confirm {
        at: Millis,
        id: u64,
        /// A node name or id.
        node: String,
        /// Who asked (for the event and the audit log).
        source: String,
    },
    /// A record of the hosts' Pacemaker fencing history for a departed,
    /// unaccounted node (the Pacemaker driver, `[fencing]
    /// pacemaker_confirm`); it confirms the node down only under the rules
    /// of `model/pacemaker.rs`.
    PacemakerFenced {
        at: Millis,
        record: FenceRecord,
    },
    /// The fence listeners' states (the daemon's listener supervisor).
    Listeners {
        at: Millis,
        listeners: Vec<ListenerView>,
    },
    /// SIGHUP: the config was re-read; `detail` says what changed, what
    /// needs a restart, or why the new config was refused.
    Reloaded {
        at: Millis,
        detail: String,
    },
    /// Counted drops reported by drivers.
    Dropped {
        at: Millis,
        what: DropKind,
        count: u64,
    },
}

impl Input {
    /// When the input happened (every input carries its time).
    pub fn at(&self) -> Millis {
        match self {
            Input::CorosyncUp { at, .. }
            | Input::CorosyncDown { at, .. }
            | Input::Quorum { at, .. }
            | Input::Votes { at, .. }
            | Input::GroupChange { at, .. }
            | Input::PeerRecord { at, .. }
            | Input::PeerMessage { at, .. }
            | Input::Malformed { at, .. }
            | Input::Unauthenticated { at, .. }
            | Input::ClaimAsk { at, .. }
            | Input::Listeners { at, .. }
            | Input::Reloaded { at, .. }
            | Input::LibvirtLink { at, .. }
            | Input::LocalList { at, .. }
            | Input::LocalDomain { at, .. }
            | Input::LocalGone { at, .. }
            | Input::LocalRebooted { at, .. }
            | Input::LocalMigrated { at, .. }
            | Input::FenceSubmit { at, .. }
            | Input::FenceCpgRequest { at, .. }
            | Input::FenceCpgReply { at, .. }
            | Input::FenceSendFailed { at, .. }
            | Input::FenceActed { at, .. }
            | Input::Tick { at }
            | Input::Hook { at, .. }
            | Input::LocalNetworks { at, .. }
            | Input::LocalNetwork { at, .. }
            | Input::LocalPorts { at, .. }
            | Input::Confirm { at, .. }
            | Input::PacemakerFenced { at, .. }
            | Input::Dropped { at, .. } => *at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropKind {
    Inputs,
    Effects,
    LibvirtEvents,
    Events,
    /// Fence packets refused before any action (bad hash, duplicate, ...).
    FencePackets,
    /// Audit records the audit writer could not take.
    Audit,
    /// Hook events lost (ring overflow, queue full).
    HookEvents,
}

impl DropKind {
    pub fn label(self) -> &'static str {
        match self {
            DropKind::Inputs => "inputs",
            DropKind::Effects => "effects",
            DropKind::LibvirtEvents => "libvirt events",
            DropKind::Events => "events",
            DropKind::FencePackets => "fence packets",
            DropKind::Audit => "audit records",
            DropKind::HookEvents => "hook events",
        }
    }
}

/// A network as a libvirt listing or a re-read after an event reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetInfo {
    pub name: String,
    pub uuid: String,
    pub active: bool,
    pub bridge: Option<String>,
}
