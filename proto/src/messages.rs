//! The data fenceline's CPG messages carry, as the model reads and writes
//! it: STORE_VM records (fence_virtd's format), the own group's messages, and
//! the hook call the hook intake hands over. Plain data: it depends on
//! nothing but [`crate::api`] (and is meant to move there).

use crate::api::{DomainState, EventKind, LibvirtHealth, Millis, NetworkView, NodeId, PortView};

/// Ports of one network carried in one [`OwnMessage::NetState`]; a network
/// with more is announced with the first ones (a node with more than this
/// many VM interfaces on one network is far outside what fenceline targets).
pub const MAX_ANNOUNCED_PORTS: usize = 512;

/// A VM record as fence_virtd's STORE_VM message carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRecord {
    pub name: String,
    pub uuid: String,
    pub owner: NodeId,
    pub state: DomainState,
}

/// A domain as a libvirt connection on this host reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LocalDomain {
    pub name: String,
    pub uuid: String,
    pub state: DomainState,
    /// A live migration libvirt reports for this copy (its last lifecycle
    /// event: started or suspended with detail "migrated"). Older peers do
    /// not send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<Migration>,
}

/// Which end of a live migration a local copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Migration {
    /// The target: started paused for an incoming migration.
    Incoming,
    /// The source: paused for the migration's last phase.
    Outgoing,
}

/// What a fenceline peer tells the others about itself (own group).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerInfo {
    pub version: String,
    pub started_at: Millis,
    #[serde(default)]
    pub libvirt: Vec<LibvirtHealth>,
    /// Every configured libvirt URI has been listed since its last
    /// (re)connect, so the sender's inventory is complete. An older peer
    /// does not send it: false, the safe direction.
    #[serde(default)]
    pub inventory_complete: bool,
    /// Listener name (`multicast`, `tcp`, `vsock`) → `fence_xvm::key_digest`
    /// of its key, for `fenceline check`'s same-key test. Never the key.
    /// Older peers send nothing.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub key_digests: std::collections::BTreeMap<String, String>,
    /// The sender self-fences: it destroys its own active VMs once it has
    /// not been part of a quorate membership for this many seconds
    /// (`[fencing] self_fence_secs`). Absent (older peers, or off): it does
    /// not, and peers never assume it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_fence_secs: Option<u32>,
}

/// Messages of fenceline's own CPG group, as the model sees them. The wire
/// format (versioned) lives in the corosync driver.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum OwnMessage {
    Info(PeerInfo),
    /// Start of a full inventory: every key not upserted before the matching
    /// end is gone.
    InventoryBegin {
        generation: u64,
    },
    /// Domains that exist on the sender, with their state (upserts).
    Vms {
        vms: Vec<LocalDomain>,
    },
    /// Domains that no longer exist on the sender.
    Gone {
        vms: Vec<LocalDomain>,
    },
    /// End of an inventory. `count`: how many domains the sender's `Vms`
    /// between begin and end carry (however the driver chunked them); a
    /// receiver that saw fewer lost a chunk and removes nothing. Absent from
    /// older peers, whose inventory then removes nothing either.
    InventoryEnd {
        generation: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
    },
    /// A network hook or network lifecycle event on the sender (its
    /// `EventKind::NetworkHook` / `EventKind::Network`); receivers show it
    /// with the sender as `node`. Older receivers count it as malformed.
    NetEvent {
        time: Millis,
        event: Box<EventKind>,
    },
    /// The full state of one of the sender's libvirt networks (ports capped
    /// at [`MAX_ANNOUNCED_PORTS`]); replaces what receivers had for it.
    NetState {
        network: Box<NetworkView>,
    },
    /// Every network the sender has; receivers drop the sender's others.
    NetList {
        names: Vec<String>,
    },
    /// An operator confirmed on the sender that `nodeid` is down (`fenceline
    /// confirm`); every receiver records the same confirmation. Older
    /// receivers count it as malformed (and keep refusing: safe).
    Confirmed {
        nodeid: NodeId,
        source: String,
    },
    /// The sender claims the connect-back of one fence_xvm multicast run
    /// (`id`: [`FenceRequest::round_id`](crate::fence_xvm::FenceRequest::round_id));
    /// the first claim delivered in total order wins on every node, and only
    /// the winner connects back. Older receivers count it as malformed (and
    /// keep connecting back on their own, like fence_virtd).
    Claim {
        id: String,
    },
    /// A message type this build does not know: a newer peer's addition,
    /// which the compatibility rule lets older receivers ignore (messages
    /// that carry map data never come as new types). Counted, never sent.
    #[serde(other)]
    Unknown,
}

/// One hook call as the hook intake hands it to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCall {
    /// When the hook ran.
    pub time: Millis,
    pub network: String,
    pub op: String,
    pub subop: String,
    pub network_uuid: Option<String>,
    pub bridge: Option<String>,
    pub port: Option<PortView>,
    pub error: Option<String>,
}
