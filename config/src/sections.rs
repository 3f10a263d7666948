//! The sections of the TOML config and their defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{DEFAULT_READONLY_SOCKET, DEFAULT_SOCKET};

/// How fence requests are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FenceBackend {
    /// Route through the cluster over CPG `fence-agents` (fence_virtd's cpg backend).
    #[default]
    Cpg,
    /// Act on this host's VMs only, no routing (fence_virtd's libvirt backend).
    Libvirt,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FencingSection {
    pub backend: FenceBackend,
    /// How long a requester waits for the acting node's reply (off, on, status).
    pub timeout_secs: u64,
    /// How long a reboot may take end to end (destroy, stopped event, start).
    pub reboot_timeout_secs: u64,
    /// fence_virtd's old rule: the highest node id answers "off" for a VM
    /// nobody knows even WITHOUT quorum. Unsafe in a partition; off by default.
    pub unknown_vm_without_quorum: bool,
    /// Append-only JSON-lines audit log of every fence request (fsync'd).
    /// Empty = no audit file (events still carry every request).
    pub audit_log: PathBuf,
    /// Fail closed: refuse a local fence action (answer "fail") when its
    /// intent record cannot be written and synced to the audit log first.
    pub audit_required: bool,
    /// Self-fencing (Proxmox HA's model): after this many seconds out of a
    /// quorate membership (corosync lost, inquorate, cut off) this node
    /// destroys its own active VMs, and peers treat its lost VMs as off once
    /// that time plus a margin has passed. 0 = off.
    pub self_fence_secs: u64,
    /// The hosts' own Pacemaker confirms a departed host down: a successful
    /// off/reboot of that host in Pacemaker's fencing history
    /// (`stonith_admin --history`), completed after it left by this
    /// daemon's record, counts like `fenceline confirm`. Trusts Pacemaker's
    /// history, manual `stonith_admin --confirm` included. Off by default.
    pub pacemaker_confirm: bool,
}

/// The smallest `self_fence_secs`: shorter than a few corosync token
/// timeouts would destroy VMs on a membership blip.
pub const MIN_SELF_FENCE_SECS: u64 = 5;
/// The largest `self_fence_secs` (one hour).
pub const MAX_SELF_FENCE_SECS: u64 = 3600;

pub const DEFAULT_AUDIT_LOG: &str = "/var/log/fenceline/audit.jsonl";

impl Default for FencingSection {
    fn default() -> Self {
        Self {
            backend: FenceBackend::Cpg,
            timeout_secs: 20,
            reboot_timeout_secs: 60,
            unknown_vm_without_quorum: false,
            audit_log: DEFAULT_AUDIT_LOG.into(),
            audit_required: false,
            self_fence_secs: 0,
            pacemaker_confirm: false,
        }
    }
}

/// fence_xvm / fence_virt listeners; an absent section is off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenersSection {
    /// Accept key files that group or others may read (refused otherwise).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_loose_key_mode: bool,
    /// fence_xvm `monitor` also answers fail while this host's libvirt is
    /// down or not fully listed (corosync down, not in `fence-agents` and
    /// inquorate always fail it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub monitor_requires_libvirt: bool,
    /// A hosts(5) file (e.g. /etc/hosts) naming fence requesters by
    /// address: events and the audit log then say `multicast:guest1
    /// (10.0.0.5)`. Read at start and on reload; absent = addresses only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requester_names: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multicast: Option<MulticastListener>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpListenerConf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockListener>,
}

pub const DEFAULT_KEY_FILE: &str = "/etc/cluster/fence_xvm.key";
/// Where `config init` puts the cluster key (`[corosync] cluster_key`).
pub const DEFAULT_CLUSTER_KEY_FILE: &str = "/etc/fenceline/cluster.key";

/// Hash names as fence_virt.conf spells them: none, sha1, sha256, sha512.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HashName {
    None,
    Sha1,
    #[default]
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MulticastListener {
    /// The group to join: 225.0.0.12 (IPv4) or ff05::3:1 (IPv6).
    pub address: String,
    pub port: u16,
    /// Join on this interface only; absent = the kernel's choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    pub key_file: PathBuf,
    /// The weakest packet hash accepted.
    pub hash: HashName,
    /// The challenge/response hash.
    pub auth: HashName,
    /// Networks (CIDR) connect-backs may go to; empty = any address that
    /// is not loopback, link-local, unspecified, multicast or broadcast.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub callback_networks: Vec<String>,
}

impl Default for MulticastListener {
    fn default() -> Self {
        Self {
            address: "225.0.0.12".into(),
            port: 1229,
            interface: None,
            key_file: DEFAULT_KEY_FILE.into(),
            hash: HashName::Sha256,
            auth: HashName::Sha256,
            callback_networks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpListenerConf {
    /// 127.0.0.1 or ::1 by default; an IPv6 address listens on IPv6.
    pub address: String,
    pub port: u16,
    pub key_file: PathBuf,
    pub hash: HashName,
    /// Used as configured (fence_virtd's tcp listener ignores it: its bug).
    pub auth: HashName,
}

impl Default for TcpListenerConf {
    fn default() -> Self {
        Self {
            address: "127.0.0.1".into(),
            port: 1229,
            key_file: DEFAULT_KEY_FILE.into(),
            hash: HashName::Sha256,
            auth: HashName::Sha256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VsockListener {
    pub port: u32,
    pub key_file: PathBuf,
    pub hash: HashName,
    pub auth: HashName,
}

impl Default for VsockListener {
    fn default() -> Self {
        Self {
            port: 1229,
            key_file: DEFAULT_KEY_FILE.into(),
            hash: HashName::Sha256,
            auth: HashName::Sha256,
        }
    }
}

/// One fence_virtd permission group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PermissionGroup {
    pub name: String,
    /// VM names or UUIDs this group may fence (case-insensitive).
    pub uuid: Vec<String>,
    /// Sources (client IPs, vsock CIDs) in this group.
    pub ip: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NameMode {
    #[default]
    Name,
    Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LibvirtSection {
    /// One or more libvirt URIs on this host.
    pub uris: Vec<String>,
    /// Whether fence requests name VMs by name or by UUID (fence_virtd's `name_mode`).
    pub name_mode: NameMode,
    /// Seconds between full re-listings (reconcile); at least 30.
    pub reconcile_secs: u64,
}

impl Default for LibvirtSection {
    fn default() -> Self {
        Self {
            uris: vec!["qemu:///system".into()],
            name_mode: NameMode::Name,
            reconcile_secs: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSection {
    /// Read-write socket, mode 0600; peers must be root or in `admin_group`.
    pub socket: PathBuf,
    /// Read-only socket, mode 0660, group `readonly_group`.
    pub readonly_socket: PathBuf,
    /// The read-only socket's group. Absent = `haclient` if that group
    /// exists, else root only; `""` = root only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readonly_group: Option<String>,
    /// Members of this group may use the read-write socket (fence, ...)
    /// besides root. Absent = root only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_group: Option<String>,
    /// Concurrent `watch` / `events --follow` streams per user (uid).
    pub max_streams_per_uid: usize,
}

/// The read-only socket's group when none is configured (if it exists).
pub const DEFAULT_READONLY_GROUP: &str = "haclient";

impl Default for ControlSection {
    fn default() -> Self {
        Self {
            socket: DEFAULT_SOCKET.into(),
            readonly_socket: DEFAULT_READONLY_SOCKET.into(),
            readonly_group: None,
            admin_group: None,
            max_streams_per_uid: 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A log file as well (appended); empty (the default) = none: the
    /// journal under systemd, else stderr, has every line.
    pub file: PathBuf,
    /// A tracing filter, e.g. "info" or "fenceline=debug".
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            file: PathBuf::new(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSection {
    /// How many recent events the daemon keeps for `fenceline events`.
    pub capacity: usize,
}

impl Default for EventsSection {
    fn default() -> Self {
        Self { capacity: 1000 }
    }
}

/// The libvirt network hook (`fenceline hook`, `fenceline install-hook`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksSection {
    /// Unix datagram socket the daemon receives hook events on (mode 0600).
    pub socket: PathBuf,
    /// Hook events queued between the socket and the engine; a burst beyond
    /// it is dropped and counted (`dropped_hook_events`).
    pub queue: usize,
}

impl Default for HooksSection {
    fn default() -> Self {
        Self {
            socket: fenceline_proto::paths::DEFAULT_HOOK_SOCKET.into(),
            queue: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorosyncSection {
    /// fence_virtd's CPG group; change only for tests.
    pub fence_group: String,
    /// fenceline's own CPG group.
    pub own_group: String,
    /// The cluster key (at least 32 bytes, mode 0600, the same file on every
    /// fenceline host): own-group messages are sealed with it and a message
    /// not sealed by its sender is dropped. Unset: every process corosync
    /// admits to the groups is trusted (fence_virtd's model).
    pub cluster_key: Option<PathBuf>,
    /// With `cluster_key`: accept fence-agents messages (REQUEST, REPLY,
    /// STORE_VM) only from authenticated fenceline peers. For clusters with
    /// no fence_virtd left; a fence_virtd host's requests are then dropped.
    pub authenticated_only: bool,
    /// The most VMs kept per peer (its inventory or fence_virtd records);
    /// entries past it are dropped and counted, and the peer is not
    /// accounted for until its next complete inventory (100-1,000,000).
    pub max_peer_vms: usize,
}

impl Default for CorosyncSection {
    fn default() -> Self {
        Self {
            fence_group: "fence-agents".into(),
            own_group: "fenceline".into(),
            cluster_key: None,
            authenticated_only: false,
            max_peer_vms: 10_000,
        }
    }
}
