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
}

/// Where one node sees a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub nodeid: NodeId,
    pub state: DomainState,
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
    /// Running on two or more hosts at once.
    #[serde(default)]
    pub conflict: bool,
    /// Every node that reported the VM, with the state it reported.
    #[serde(default)]
    pub placements: Vec<Placement>,
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
    /// Inputs a driver could not queue to the engine (channel full).
    pub dropped_inputs: u64,
    /// Events a slow subscriber missed.
    pub dropped_events: u64,
    /// Effects a driver could not take (channel full); each forces a resync.
    pub dropped_effects: u64,
    /// libvirt events lost in the driver (its queue was full); each forces a resync.
    pub dropped_libvirt_events: u64,
}

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
    pub counters: Counters,
    pub daemon_version: String,
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
    /// Its host left the cluster; the domain left the map.
    Purged,
    Conflict,
    ConflictResolved,
    Rebooted,
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
}

impl Request {
    /// True for requests that change anything; the read-only socket refuses them.
    pub fn is_mutating(&self) -> bool {
        match self {
            Request::Status | Request::Events { .. } | Request::Ping => false,
        }
    }
}

/// A reply line on the control socket.
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
    Error {
        /// A stable machine-readable code: `read-only`, `bad-request`, `busy`, `internal`.
        code: String,
        message: String,
    },
}
