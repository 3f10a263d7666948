//! The engine's public API: the only types that `ui/`, the CLI and the control
//! socket speak. Everything here is plain data with serde derives; JSON field
//! names are a user-facing contract (see README "Contract") and must not be
//! renamed, only extended.

use serde::{Deserialize, Serialize};

/// A corosync node id.
pub type NodeId = u32;

/// Milliseconds since the Unix epoch. The model never reads a clock; drivers
/// stamp their inputs.
pub type Millis = u64;

/// libvirt's `virDomainState`, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum DomainState {
    Nostate,
    Running,
    Blocked,
    Paused,
    Shutdown,
    Shutoff,
    Crashed,
    Pmsuspended,
}

impl DomainState {
    /// Maps a raw `virDomainState` number. Unknown values map to `Nostate`.
    pub fn from_raw(v: i64) -> Self {
        match v {
            1 => Self::Running,
            2 => Self::Blocked,
            3 => Self::Paused,
            4 => Self::Shutdown,
            5 => Self::Shutoff,
            6 => Self::Crashed,
            7 => Self::Pmsuspended,
            _ => Self::Nostate,
        }
    }

    pub fn as_raw(self) -> i32 {
        match self {
            Self::Nostate => 0,
            Self::Running => 1,
            Self::Blocked => 2,
            Self::Paused => 3,
            Self::Shutdown => 4,
            Self::Shutoff => 5,
            Self::Crashed => 6,
            Self::Pmsuspended => 7,
        }
    }

    /// True when a hypervisor process exists for the domain: every state but
    /// shut off and "no state". A domain active on two hosts is a conflict.
    pub fn is_active(self) -> bool {
        !matches!(self, Self::Shutoff | Self::Nostate)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nostate => "nostate",
            Self::Running => "running",
            Self::Blocked => "blocked",
            Self::Paused => "paused",
            Self::Shutdown => "shutdown",
            Self::Shutoff => "shutoff",
            Self::Crashed => "crashed",
            Self::Pmsuspended => "pmsuspended",
        }
    }
}

impl std::fmt::Display for DomainState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fence operation: fence_virt's `fence_cmd_t`, by the client's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FenceOp {
    Null = 0,
    Off = 1,
    Reboot = 2,
    On = 3,
    Status = 4,
    /// `monitor` (fence_virt's FENCE_DEVSTATUS).
    Monitor = 5,
    /// `list` (FENCE_HOSTLIST).
    List = 6,
}

impl FenceOp {
    pub fn from_raw(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Null,
            1 => Self::Off,
            2 => Self::Reboot,
            3 => Self::On,
            4 => Self::Status,
            5 => Self::Monitor,
            6 => Self::List,
            _ => return None,
        })
    }

    pub fn as_raw(self) -> u8 {
        self as u8
    }

    /// The client's name for the operation (`-o` of fence_xvm).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Off => "off",
            Self::Reboot => "reboot",
            Self::On => "on",
            Self::Status => "status",
            Self::Monitor => "monitor",
            Self::List => "list",
        }
    }

    /// Parses the client's name (`off`, `list-status` = `list`, ...).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "null" => Self::Null,
            "off" => Self::Off,
            "reboot" => Self::Reboot,
            "on" => Self::On,
            "status" => Self::Status,
            "monitor" => Self::Monitor,
            "list" | "list-status" => Self::List,
            _ => return None,
        })
    }

    /// Operations that change a VM.
    pub fn is_action(self) -> bool {
        matches!(self, Self::Off | Self::Reboot | Self::On)
    }
}

impl std::fmt::Display for FenceOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one-byte fence result, as fence_xvm's exit code reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FenceResult {
    /// 0: success; for `status`: the VM is on.
    Ok = 0,
    /// 1: the operation failed (or was refused for safety).
    Fail = 1,
    /// 2: `status`: the VM is off.
    Off = 2,
    /// 3: permission denied.
    Denied = 3,
}

impl FenceResult {
    pub fn from_raw(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Ok,
            1 => Self::Fail,
            2 => Self::Off,
            3 => Self::Denied,
            _ => return None,
        })
    }

    /// The result byte, which is also fence_xvm's exit code.
    pub fn as_raw(self) -> u8 {
        self as u8
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Fail => "fail",
            Self::Off => "off",
            Self::Denied => "denied",
        }
    }
}

impl std::fmt::Display for FenceResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which step of a fence request an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FencePhase {
    /// A request this node received (listener or control socket) is finished.
    Result,
    /// This node acted on a VM it owns, for any requester (fence_virtd too).
    Acted,
}

/// A libvirt network as one node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    /// The node the network lives on.
    pub node: NodeId,
    pub name: String,
    #[serde(default)]
    pub uuid: String,
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Ports (VM interfaces) plugged into the network, as hooks reported them.
    #[serde(default)]
    pub ports: Vec<PortView>,
    pub since: Millis,
}

/// A VM interface on a libvirt network (`<networkport>`, or the old
/// plugged/unplugged domain element).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PortView {
    /// The owner VM's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// `<plug type=...>` (network, bridge, direct, hostdev-pci).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plug: Option<String>,
    /// The port's own UUID (`<networkport><uuid>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// A libvirt network lifecycle event (from libvirt's event API, not hooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkAction {
    Defined,
    Undefined,
    Started,
    Stopped,
}

/// Which kind of daemon a node runs in the `fence-agents` CPG group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DaemonKind {
    /// A fenceline daemon (it also joined fenceline's own group).
    Fenceline,
    /// A member of `fence-agents` that is not fenceline: fence_virtd.
    FenceVirtd,
}

/// Health of one libvirt connection, as a node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibvirtHealth {
    pub uri: String,
    pub connected: bool,
    /// When the connection last changed state.
    pub since: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub domains: usize,
}

/// One cluster node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub nodeid: NodeId,
    pub name: Option<String>,
    /// Member of the corosync membership right now.
    pub member: bool,
    /// When `member` last changed (or when this node was first seen).
    pub since: Millis,
    /// The daemons this node runs in the `fence-agents` group.
    #[serde(default)]
    pub daemons: Vec<DaemonKind>,
    /// Number of domains this node owns in the map.
    #[serde(default)]
    pub vm_count: usize,
    /// libvirt health as the node's fenceline reports it; empty when unknown
    /// (fence_virtd nodes do not report it).
    #[serde(default)]
    pub libvirt: Vec<LibvirtHealth>,
    /// fenceline version the node runs, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Whether this node is accounted for (README "When fenceline says
    /// off"): a member whose daemon's inventory is complete, or a departure
    /// confirmed down. Older daemons do not send it: false.
    #[serde(default)]
    pub accounted: bool,
    /// Why the node is not accounted for ("daemon down", "left the
    /// membership 4s ago, not confirmed", "inventory incomplete"), or how it
    /// is ("confirmed down by ...").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounting: Option<String>,
    /// Listener name → digest of its fence key, as the node's fenceline
    /// announces it (`fence_xvm::key_digest`, never the key); empty when
    /// unknown (fence_virtd, older fenceline, no listener).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub key_digests: std::collections::BTreeMap<String, String>,
    /// The node announced that it self-fences after this many seconds out
    /// of a quorate membership (`[fencing] self_fence_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_fence_secs: Option<u32>,
}

/// Where one node sees a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub nodeid: NodeId,
    /// The state last reported (for a lost placement: before it was lost).
    pub state: DomainState,
    /// The node's daemon left or the node left the membership: the VM may
    /// still be in `state` there, nobody can tell. Kept until the node
    /// returns with a complete inventory or its departure is confirmed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
    /// When the placement was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_since: Option<Millis>,
}

/// One VM in the cluster map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainView {
    pub name: String,
    pub uuid: String,
    pub state: DomainState,
    /// The node that owns the VM; `None` when nobody owns it unambiguously
    /// (a conflict, or defined and shut off on several hosts).
    pub owner: Option<NodeId>,
    /// When the state or owner last changed.
    pub since: Millis,
    /// The libvirt URI the VM came from, when it is local to this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Running on two or more hosts at once (not counting a live migration).
    #[serde(default)]
    pub conflict: bool,
    /// Active on two hosts because of a live migration that one of them
    /// reports: from the source to the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrating: Option<Migrating>,
    /// Every node that reported the VM, with the state it reported.
    #[serde(default)]
    pub placements: Vec<Placement>,
}

/// A live migration of a VM between two nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migrating {
    pub from: NodeId,
    pub to: NodeId,
}

/// Connection state of a driver towards its service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub connected: bool,
    pub since: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Counters of everything the engine dropped or refused. Shown, never silent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Malformed or unknown messages in the `fence-agents` group.
    pub malformed_fence_agents: u64,
    /// Malformed or unknown messages in fenceline's own group.
    pub malformed_own: u64,
    /// CPG messages dropped because they were not authenticated (an
    /// own-group message without a valid cluster-key seal from its sender;
    /// with `corosync.authenticated_only`, fence-agents messages from
    /// processes that are not authenticated fenceline peers).
    #[serde(default)]
    pub unauthenticated_cpg: u64,
    /// Inputs a driver could not queue to the engine (channel full).
    pub dropped_inputs: u64,
    /// Events a slow subscriber missed.
    pub dropped_events: u64,
    /// Effects a driver could not take (channel full); each forces a resync.
    pub dropped_effects: u64,
    /// libvirt events lost in the driver (its queue was full); each forces a resync.
    pub dropped_libvirt_events: u64,
    /// Fence packets dropped before any action: bad hash, weaker hash,
    /// duplicate, truncated, garbage (each also logged with its reason).
    #[serde(default)]
    pub dropped_fence_packets: u64,
    /// Fence records the audit log could not take (its queue was full).
    #[serde(default)]
    pub dropped_audit: u64,
    /// Hook events dropped (burst over the ring, queue full, malformed).
    #[serde(default)]
    pub dropped_hook_events: u64,
    /// Multicast requests this node won the connect-back of (one claim
    /// round over the own group per fence_xvm run; only the winner connects back).
    #[serde(default)]
    pub claims_won: u64,
    /// Multicast requests another fenceline node claimed (dropped here quietly).
    #[serde(default)]
    pub claims_lost: u64,
    /// Multicast requests dropped because no claim was decided in time (own
    /// group unavailable, no quorum): nobody here connects back.
    #[serde(default)]
    pub claims_unavailable: u64,
    /// Claims forgotten early because the claim table was full.
    #[serde(default)]
    pub claims_evicted: u64,
    /// Peer inventories with fewer domains than their end announced (a
    /// chunk lost): applied without removals.
    #[serde(default)]
    pub inventory_gaps: u64,
    /// Peer VM entries dropped over the per-peer bound, or with a name or
    /// UUID out of bounds.
    #[serde(default)]
    pub dropped_peer_vms: u64,
}

pub use crate::readiness::{ListenerState, ListenerView, LocalView};

/// An immutable picture of the cluster, as this node's engine knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Engine-local sequence number; increases with every change.
    pub version: u64,
    pub generated_at: Millis,
    pub cluster_name: Option<String>,
    pub local_nodeid: Option<NodeId>,
    pub quorate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_votes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_votes: Option<u32>,
    /// Votes needed for quorum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// True while corosync is unreachable: membership and the peers' part of
    /// the map are the last known state, not the live one.
    pub stale: bool,
    pub corosync: Link,
    pub nodes: Vec<NodeView>,
    pub domains: Vec<DomainView>,
    /// This node's libvirt connections.
    pub libvirt: Vec<LibvirtHealth>,
    /// libvirt networks of every fenceline node (hook and lifecycle events).
    #[serde(default)]
    pub networks: Vec<NetworkView>,
    pub counters: Counters,
    pub daemon_version: String,
    /// This daemon's own readiness: its CPG joins, its libvirt inventory,
    /// its fence listeners.
    #[serde(default)]
    pub local: LocalView,
}

/// A membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MembershipAction {
    Joined,
    Left,
    Quorate,
    QuorumLost,
    /// A daemon joined the `fence-agents` group.
    DaemonJoined,
    /// A daemon left the `fence-agents` group; its VMs leave the map.
    DaemonLeft,
    CorosyncUp,
    CorosyncLost,
    /// An operator confirmed that a departed node is down (`fenceline
    /// confirm`): its lost placements leave the map. Audited.
    Confirmed,
    /// This node is not part of a quorate membership and self-fences
    /// (`[fencing] self_fence_secs`): its VMs are destroyed when the time is up.
    SelfFenceArmed,
    /// This node's time is up: it destroys its own active VMs. On a peer: a
    /// departed self-fencing node is past its deadline; its VMs are treated
    /// as off. Audited.
    SelfFenced,
}

/// What happened to a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DomainAction {
    Appeared,
    State,
    Owner,
    /// The domain was undefined or vanished from its host.
    Removed,
    /// Its host's departure was confirmed (`fenceline confirm`): its
    /// lost placement left the map.
    Purged,
    /// Its host's daemon left or the host left the membership: the
    /// placement is kept as lost (the VM may still run there).
    Lost,
    Conflict,
    ConflictResolved,
    Rebooted,
    /// A live migration began (active on the source and the target).
    Migrating,
}

/// A daemon-level happening (connections, drops).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DaemonAction {
    LibvirtConnected,
    LibvirtLost,
    Dropped,
    Started,
    Stopping,
    /// SIGHUP: the config was re-read (applied or refused; the detail says).
    Reloaded,
}

/// The payload of an event; `kind` is the JSON tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EventKind {
    Membership {
        action: MembershipAction,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nodeid: Option<NodeId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    Domain {
        action: DomainAction,
        name: String,
        uuid: String,
        state: DomainState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<DomainState>,
        owner: Option<NodeId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_owner: Option<NodeId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    Daemon {
        action: DaemonAction,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uri: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A fence request finished here, or this node acted on one.
    Fence {
        phase: FencePhase,
        op: FenceOp,
        domain: String,
        /// Who asked: `multicast:10.0.0.5`, `tcp:127.0.0.1`, `control:uid=0`,
        /// `cpg:node2` (a request another node routed here); with
        /// `[listeners] requester_names`, `multicast:g1 (10.0.0.5)`.
        source: String,
        /// The node whose daemon received the request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requester: Option<NodeId>,
        /// The node that acted (or answered).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        acted_by: Option<NodeId>,
        result: FenceResult,
        duration_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// libvirt ran the network hook on `node` (see the event's `node`).
    NetworkHook {
        network: String,
        op: String,
        #[serde(default)]
        subop: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network_uuid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bridge: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<PortView>,
        /// A port-created that libvirt repeats for an existing port when
        /// libvirtd restarts: not a new plug.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        replay: bool,
        /// The hook's XML did not parse; the raw text is kept (bounded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A libvirt network lifecycle event on `node`.
    Network {
        action: NetworkAction,
        network: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uuid: Option<String>,
    },
}

/// One entry of the live event stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Per-engine sequence number; gaps mean dropped events.
    pub seq: u64,
    /// RFC 3339 time, UTC, millisecond precision.
    #[serde(with = "rfc3339")]
    pub time: Millis,
    /// The node where the event was observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Formats `Millis` as RFC 3339 text and back.
pub mod rfc3339 {
    use super::Millis;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::{Duration, UNIX_EPOCH};

    pub fn format(ms: Millis) -> String {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    }

    pub fn parse(s: &str) -> Option<Millis> {
        let t = humantime::parse_rfc3339_weak(s).ok()?;
        let d = t.duration_since(UNIX_EPOCH).ok()?;
        u64::try_from(d.as_millis()).ok()
    }

    pub fn serialize<S: Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {s}")))
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` with hex digits: the form in which
/// fence_virt and libvirt treat a VM reference as a UUID rather than a name.
pub fn is_canonical_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The current wall clock as `Millis` (drivers use this; the model never does).
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A request on the control socket (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// One snapshot.
    Status,
    /// The recent events, then (with `follow`) the live stream.
    Events {
        #[serde(default)]
        follow: bool,
    },
    /// Liveness check.
    Ping,
    /// A fence operation on one VM, routed through the cluster exactly like a
    /// fence_xvm request. Refused on the read-only socket (even `status`,
    /// so that `fenceline fence` answers 3 there, like fence_xvm's denied).
    Fence { action: FenceOp, domain: String },
    /// Snapshots as they change: the current one at once, then the latest
    /// one after each change, at most one per `interval_ms` (changes in
    /// between are coalesced; default [`WATCH_DEFAULT_MS`], clamped to
    /// [`WATCH_MIN_MS`]..=[`WATCH_MAX_MS`]). Each arrives as a `status` reply;
    /// while nothing changes a `pong` every [`WATCH_HEARTBEAT_MS`] shows the
    /// daemon is alive. The stream ends when the client closes the connection
    /// (a half-close keeps it) or the daemon stops.
    Watch {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interval_ms: Option<u64>,
    },
    /// The operator asserts that a departed node is down (powered off or
    /// fenced): its lost placements leave the map and the fence router
    /// counts it as accounted for. Refused while the node is a member with
    /// a daemon. Read-write socket only.
    Confirm { node: String },
}

/// Default coalescing interval of a `watch` stream.
pub const WATCH_DEFAULT_MS: u64 = 50;
/// Shortest coalescing interval a `watch` client may ask for.
pub const WATCH_MIN_MS: u64 = 20;
/// Longest coalescing interval a `watch` client may ask for.
pub const WATCH_MAX_MS: u64 = 5000;
/// A quiet `watch` stream sends a `pong` this often.
pub const WATCH_HEARTBEAT_MS: u64 = 5000;
/// Longest request line the control server accepts.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// Longest reply line a control client accepts (a 10,000-domain snapshot is ~3 MiB).
pub const MAX_REPLY_LINE: usize = 64 * 1024 * 1024;
/// How long a control client (the console) waits for a fence answer. The
/// daemon's own limit follows its configured timeouts (`fencing.timeout_secs`,
/// `reboot_timeout_secs`, plus 10 s); with a reboot timeout above 110 s a
/// client gives up first (a failure, never a false ok).
pub const FENCE_CALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

impl Request {
    /// True for requests that change anything; the read-only socket refuses them.
    pub fn is_mutating(&self) -> bool {
        match self {
            Request::Status | Request::Events { .. } | Request::Ping | Request::Watch { .. } => {
                false
            }
            Request::Fence { .. } | Request::Confirm { .. } => true,
        }
    }
}

/// A reply line on the control socket.
// Replies are built, written and dropped one at a time; boxing `Event` would
// only add an allocation per streamed event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    Status {
        snapshot: std::sync::Arc<Snapshot>,
    },
    Event {
        event: Event,
    },
    /// The subscriber fell behind and missed this many events.
    Dropped {
        count: u64,
    },
    /// End of the backlog in an `events` request.
    BacklogEnd,
    Pong {
        version: String,
    },
    /// The outcome of a `fence` request.
    Fence {
        result: FenceResult,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        acted_by: Option<NodeId>,
        duration_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A `confirm` was accepted: what the operator asserted.
    Confirmed {
        detail: String,
    },
    Error {
        /// A stable machine-readable code: `read-only`, `bad-request`, `busy`,
        /// `internal`, `refused` (a `confirm` of a node that is up).
        code: String,
        message: String,
    },
}
