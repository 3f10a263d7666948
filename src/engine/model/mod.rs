//! The cluster model: data plus transitions, no I/O, no clock, no tokio.
//!
//! Drivers turn the outside world into [`Input`]s; [`Cluster::apply`] updates
//! the map and returns the [`Effect`]s the drivers must carry out. Events are
//! appended to a bounded ring inside the model and also returned, so the state
//! task can fan them out.
//!
//! Ownership rules (see README):
//! - a VM is owned by the host where it runs (is active);
//! - a VM defined on several hosts belongs to the one where it runs;
//! - a VM active on two or more hosts is a conflict: no owner, flagged;
//! - a VM defined (shut off) on exactly one host is owned by that host;
//! - when a node's daemons leave, its VMs leave the map (fence_virtd's rule).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use fenceline_proto::api::{
    Counters, DaemonAction, DaemonKind, DomainAction, DomainState, DomainView, Event, EventKind,
    FenceOp, FenceResult, LibvirtHealth, Link, MembershipAction, Millis, NodeId, NodeView,
    Placement, Snapshot,
};

mod fence;
mod networks;
#[cfg(test)]
mod tests;

pub use fence::{FenceAct, FenceRules, FenceWire, MAX_CPG_VM_NAME, Route};
pub use networks::{HookCall, MAX_ANNOUNCED_PORTS, NetInfo, port_key};

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
}

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

/// What a fenceline peer tells the others about itself (own group).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerInfo {
    pub version: String,
    pub started_at: Millis,
    #[serde(default)]
    pub libvirt: Vec<LibvirtHealth>,
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
    InventoryEnd {
        generation: u64,
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
        network: Box<fenceline_proto::api::NetworkView>,
    },
    /// Every network the sender has; receivers drop the sender's others.
    NetList {
        names: Vec<String>,
    },
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
    /// A local domain rebooted in place (its state did not change).
    LocalRebooted {
        at: Millis,
        uri: String,
        name: String,
        uuid: String,
    },
    /// A fence request from a listener or the control socket; `id` is the
    /// state task's handle for the answer ([`Effect::FenceDone`]).
    FenceSubmit {
        at: Millis,
        id: u64,
        op: FenceOp,
        domain: String,
        source: String,
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
    /// The libvirt driver finished a [`FenceAct`].
    FenceActed {
        at: Millis,
        job: u64,
        result: FenceResult,
        detail: Option<String>,
    },
    /// Clock tick for fence timeouts (sent while [`Cluster::fence_busy`]).
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
        action: fenceline_proto::api::NetworkAction,
        name: String,
        info: Option<NetInfo>,
    },
    /// The ports libvirt lists for one local network.
    LocalPorts {
        at: Millis,
        uri: String,
        network: String,
        ports: Vec<fenceline_proto::api::PortView>,
    },
    /// Counted drops reported by drivers.
    Dropped {
        at: Millis,
        what: DropKind,
        count: u64,
    },
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

/// Tunables of the model.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub event_capacity: usize,
    pub version: String,
    pub started_at: Millis,
    pub fence: FenceRules,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            event_capacity: 1000,
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: 0,
            fence: FenceRules::default(),
        }
    }
}

/// A domain's identity in the map: the UUID (lower case) when known, else the name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomKey(String);

impl DomKey {
    pub fn of(name: &str, uuid: &str) -> Self {
        if uuid.is_empty() {
            DomKey(format!("name:{name}"))
        } else {
            DomKey(uuid.to_ascii_lowercase())
        }
    }
}

#[derive(Debug, Clone)]
struct Obs {
    name: String,
    uuid: String,
    state: DomainState,
}

#[derive(Debug, Clone, Default)]
struct NodeRec {
    name: Option<String>,
    member: bool,
    since: Millis,
    fa_pids: BTreeSet<u32>,
    own_pids: BTreeSet<u32>,
    info: Option<PeerInfo>,
}

#[derive(Debug, Clone, Default)]
struct PeerDomains {
    /// What this peer reported, by key.
    vms: BTreeMap<DomKey, Obs>,
    /// Keys refreshed since the current inventory began, if one is open.
    inventory: Option<(u64, BTreeSet<DomKey>)>,
}

#[derive(Debug, Clone)]
struct UriRec {
    health: LibvirtHealth,
    domains: BTreeMap<DomKey, Obs>,
}

/// The merged view of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    uuid: String,
    state: DomainState,
    owner: Option<NodeId>,
    since: Millis,
    uri: Option<String>,
    conflict: bool,
    placements: Vec<Placement>,
}

/// Why an entry is being recomputed; decides the event for a removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Change,
    Purge,
}

/// The whole cluster as this node knows it.
#[derive(Debug, Clone)]
pub struct Cluster {
    cfg: ModelConfig,
    version: u64,
    cluster_name: Option<String>,
    local_nodeid: Option<NodeId>,
    corosync: Link,
    quorate: bool,
    votes: Option<(u32, u32, u32)>,
    nodes: BTreeMap<NodeId, NodeRec>,
    local: BTreeMap<String, UriRec>,
    peers: BTreeMap<NodeId, PeerDomains>,
    map: BTreeMap<DomKey, Entry>,
    events: VecDeque<Event>,
    next_seq: u64,
    counters: Counters,
    inventory_generation: u64,
    fence: fence::FenceState,
    nets: networks::Networks,
}

/// What one `apply` produced.
#[derive(Debug, Default)]
pub struct Output {
    pub effects: Vec<Effect>,
    pub events: Vec<Event>,
    /// True when the snapshot changed.
    pub changed: bool,
}

impl Cluster {
    pub fn new(cfg: ModelConfig) -> Self {
        let started = cfg.started_at;
        Self {
            cfg,
            version: 0,
            cluster_name: None,
            local_nodeid: None,
            corosync: Link {
                connected: false,
                since: started,
                error: Some("not connected yet".into()),
            },
            quorate: false,
            votes: None,
            nodes: BTreeMap::new(),
            local: BTreeMap::new(),
            peers: BTreeMap::new(),
            map: BTreeMap::new(),
            events: VecDeque::new(),
            next_seq: 1,
            counters: Counters::default(),
            inventory_generation: 0,
            fence: fence::FenceState::new(u32::try_from(started % 1_000_000_007).unwrap_or(1)),
            nets: networks::Networks::default(),
        }
    }

    pub fn local_nodeid(&self) -> Option<NodeId> {
        self.local_nodeid
    }

    pub fn quorate(&self) -> bool {
        self.quorate && self.corosync.connected
    }

    /// The recent events, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// Applies one input.
    pub fn apply(&mut self, input: Input) -> Output {
        let mut out = Output::default();
        match input {
            Input::CorosyncUp {
                at,
                local_nodeid,
                cluster_name,
                nodelist,
            } => self.corosync_up(at, local_nodeid, cluster_name, nodelist, &mut out),
            Input::CorosyncDown { at, error } => self.corosync_down(at, error, &mut out),
            Input::Quorum {
                at,
                quorate,
                members,
            } => self.quorum(at, quorate, members, &mut out),
            Input::Votes {
                expected,
                total,
                quorum,
                ..
            } => {
                let v = Some((expected, total, quorum));
                if self.votes != v {
                    self.votes = v;
                    out.changed = true;
                }
            }
            Input::GroupChange {
                at,
                group,
                members,
                left,
                joined,
            } => self.group_change(at, group, members, left, joined, &mut out),
            Input::PeerRecord { at, from, record } => self.peer_record(at, from, record, &mut out),
            Input::PeerMessage { at, from, msg } => self.peer_message(at, from, msg, &mut out),
            Input::Malformed { group, .. } => {
                match group {
                    Group::FenceAgents => self.counters.malformed_fence_agents += 1,
                    Group::Own => self.counters.malformed_own += 1,
                }
                out.changed = true;
            }
            Input::LibvirtLink {
                at,
                uri,
                connected,
                error,
            } => self.libvirt_link(at, uri, connected, error, &mut out),
            Input::LocalList { at, uri, domains } => self.local_list(at, uri, domains, &mut out),
            Input::LocalDomain { at, uri, domain } => {
                let key = DomKey::of(&domain.name, &domain.uuid);
                let rec = self.uri_rec(&uri, at);
                let obs = Obs {
                    name: domain.name.clone(),
                    uuid: domain.uuid.clone(),
                    state: domain.state,
                };
                let changed = rec
                    .domains
                    .get(&key)
                    .is_none_or(|o| o.state != obs.state || o.name != obs.name);
                rec.domains.insert(key.clone(), obs);
                rec.health.domains = rec.domains.len();
                if changed {
                    self.refresh(&key, at, Cause::Change, &mut out);
                    self.announce_local(&[key], &mut out);
                }
            }
            Input::LocalGone {
                at,
                uri,
                name,
                uuid,
            } => {
                let key = DomKey::of(&name, &uuid);
                let rec = self.uri_rec(&uri, at);
                if rec.domains.remove(&key).is_some() {
                    rec.health.domains = rec.domains.len();
                    self.refresh(&key, at, Cause::Change, &mut out);
                    let still_local = self.local_obs(&key).is_some();
                    if !still_local && self.local_nodeid.is_some() {
                        out.effects.push(Effect::Own(OwnMessage::Gone {
                            vms: vec![LocalDomain {
                                name,
                                uuid,
                                state: DomainState::Shutoff,
                            }],
                        }));
                    } else if still_local {
                        self.announce_local(&[key], &mut out);
                    }
                }
            }
            Input::LocalRebooted {
                at,
                uri: _,
                name,
                uuid,
            } => {
                let key = DomKey::of(&name, &uuid);
                if let Some(e) = self.map.get(&key) {
                    let ev = EventKind::Domain {
                        action: DomainAction::Rebooted,
                        name: e.name.clone(),
                        uuid: e.uuid.clone(),
                        state: e.state,
                        previous: None,
                        owner: e.owner,
                        previous_owner: None,
                        detail: None,
                    };
                    self.emit(at, ev, &mut out);
                }
            }
            Input::FenceSubmit {
                at,
                id,
                op,
                domain,
                source,
            } => self.fence_submit(at, id, op, domain, source, &mut out),
            Input::FenceCpgRequest {
                at,
                from,
                seqno,
                body,
            } => self.fence_cpg_request(at, from, seqno, body, &mut out),
            Input::FenceCpgReply {
                at,
                from,
                seqno,
                target,
                body,
            } => self.fence_cpg_reply(at, from, seqno, target, body, &mut out),
            Input::FenceSendFailed { at, seqno, error } => {
                self.fence_send_failed(at, seqno, error, &mut out)
            }
            Input::FenceActed {
                at,
                job,
                result,
                detail,
            } => self.fence_acted(at, job, result, detail, &mut out),
            Input::Tick { at } => self.fence_tick(at, &mut out),
            Input::Hook { at, call } => self.hook(at, call, &mut out),
            Input::LocalNetworks { at, uri, networks } => {
                self.local_networks(at, uri, networks, &mut out)
            }
            Input::LocalNetwork {
                at,
                uri,
                action,
                name,
                info,
            } => self.local_network(at, uri, action, name, info, &mut out),
            Input::LocalPorts {
                at,
                uri: _,
                network,
                ports,
            } => self.local_ports(at, network, ports, &mut out),
            Input::Dropped { at, what, count } => {
                match what {
                    DropKind::Inputs => self.counters.dropped_inputs += count,
                    DropKind::Effects => self.counters.dropped_effects += count,
                    DropKind::LibvirtEvents => self.counters.dropped_libvirt_events += count,
                    DropKind::Events => self.counters.dropped_events += count,
                    DropKind::FencePackets => self.counters.dropped_fence_packets += count,
                    DropKind::Audit => self.counters.dropped_audit += count,
                    DropKind::HookEvents => self.counters.dropped_hook_events += count,
                }
                let detail = format!("{count} {} dropped", what.label());
                self.emit(
                    at,
                    EventKind::Daemon {
                        action: DaemonAction::Dropped,
                        uri: None,
                        detail: Some(detail),
                    },
                    &mut out,
                );
            }
        }
        if out.changed {
            self.version += 1;
        }
        out
    }

    /// All local domains as STORE_VM records and as an own-group inventory.
    /// Used on join and when a driver lost effects and must resync.
    pub fn announce_all(&mut self) -> Vec<Effect> {
        let Some(me) = self.local_nodeid else {
            return Vec::new();
        };
        let merged = self.local_merged();
        let records: Vec<VmRecord> = merged
            .values()
            .map(|o| VmRecord {
                name: o.name.clone(),
                uuid: o.uuid.clone(),
                owner: me,
                state: o.state,
            })
            .collect();
        self.inventory_generation += 1;
        let g = self.inventory_generation;
        let nets = self.announce_networks();
        let mut v = vec![
            Effect::StoreVms(records),
            Effect::Own(OwnMessage::Info(self.peer_info())),
            Effect::Own(OwnMessage::InventoryBegin { generation: g }),
            Effect::Own(OwnMessage::Vms {
                vms: merged
                    .values()
                    .map(|o| LocalDomain {
                        name: o.name.clone(),
                        uuid: o.uuid.clone(),
                        state: o.state,
                    })
                    .collect(),
            }),
            Effect::Own(OwnMessage::InventoryEnd { generation: g }),
        ];
        v.extend(nets);
        v
    }

    fn peer_info(&self) -> PeerInfo {
        PeerInfo {
            version: self.cfg.version.clone(),
            started_at: self.cfg.started_at,
            libvirt: self.local.values().map(|u| u.health.clone()).collect(),
        }
    }

    fn uri_rec(&mut self, uri: &str, at: Millis) -> &mut UriRec {
        self.local.entry(uri.to_string()).or_insert_with(|| UriRec {
            health: LibvirtHealth {
                uri: uri.to_string(),
                connected: false,
                since: at,
                error: None,
                domains: 0,
            },
            domains: BTreeMap::new(),
        })
    }

    fn emit(&mut self, at: Millis, kind: EventKind, out: &mut Output) {
        self.emit_from(at, self.local_nodeid, kind, out);
    }

    /// Emits an event observed on `node` (a peer's, for its network events).
    fn emit_from(&mut self, at: Millis, node: Option<NodeId>, kind: EventKind, out: &mut Output) {
        let ev = Event {
            seq: self.next_seq,
            time: at,
            node,
            kind,
        };
        self.next_seq += 1;
        if self.cfg.event_capacity > 0 {
            while self.events.len() >= self.cfg.event_capacity {
                if let Some(old) = self.events.pop_front() {
                    self.count_ring_overflow(&old, at);
                }
            }
            self.events.push_back(ev.clone());
        }
        out.events.push(ev);
        out.changed = true;
    }

    fn node_name(&self, id: NodeId) -> Option<String> {
        self.nodes.get(&id).and_then(|n| n.name.clone())
    }

    fn membership_event(
        &mut self,
        at: Millis,
        action: MembershipAction,
        nodeid: Option<NodeId>,
        detail: Option<String>,
        out: &mut Output,
    ) {
        let name = nodeid.and_then(|id| self.node_name(id));
        self.emit(
            at,
            EventKind::Membership {
                action,
                nodeid,
                name,
                detail,
            },
            out,
        );
    }

    fn corosync_up(
        &mut self,
        at: Millis,
        local: NodeId,
        cluster_name: Option<String>,
        nodelist: Vec<(NodeId, Option<String>)>,
        out: &mut Output,
    ) {
        let id_changed = self.local_nodeid != Some(local);
        self.local_nodeid = Some(local);
        self.cluster_name = cluster_name;
        for (id, name) in nodelist {
            let n = self.nodes.entry(id).or_insert_with(|| NodeRec {
                since: at,
                ..NodeRec::default()
            });
            if name.is_some() {
                n.name = name;
            }
        }
        self.nodes.entry(local).or_insert_with(|| NodeRec {
            since: at,
            ..NodeRec::default()
        });
        self.corosync = Link {
            connected: true,
            since: at,
            error: None,
        };
        if id_changed {
            let keys: Vec<DomKey> = self.map.keys().cloned().collect();
            let local_keys: Vec<DomKey> = self.local_merged().into_keys().collect();
            for k in keys.iter().chain(local_keys.iter()) {
                self.refresh(k, at, Cause::Change, out);
            }
        }
        self.membership_event(at, MembershipAction::CorosyncUp, Some(local), None, out);
    }

    fn corosync_down(&mut self, at: Millis, error: String, out: &mut Output) {
        if !self.corosync.connected && self.corosync.error.as_deref() == Some(error.as_str()) {
            return;
        }
        let was = self.corosync.connected;
        self.corosync = Link {
            connected: false,
            since: at,
            error: Some(error.clone()),
        };
        self.fence_corosync_down(at, out);
        // Group membership is unknown until we rejoin; records are kept (stale)
        // and reconciled against the first membership after the reconnect.
        for n in self.nodes.values_mut() {
            n.fa_pids.clear();
            n.own_pids.clear();
        }
        if was {
            self.membership_event(at, MembershipAction::CorosyncLost, None, Some(error), out);
        } else {
            out.changed = true;
        }
    }

    fn quorum(&mut self, at: Millis, quorate: bool, members: Vec<NodeId>, out: &mut Output) {
        let members: BTreeSet<NodeId> = members.into_iter().collect();
        let known: Vec<NodeId> = self
            .nodes
            .keys()
            .copied()
            .chain(members.iter().copied())
            .collect();
        let mut left = Vec::new();
        for id in known {
            let is_member = members.contains(&id);
            let n = self.nodes.entry(id).or_insert_with(|| NodeRec {
                since: at,
                ..NodeRec::default()
            });
            if n.member != is_member {
                n.member = is_member;
                n.since = at;
                let action = if is_member {
                    MembershipAction::Joined
                } else {
                    left.push(id);
                    MembershipAction::Left
                };
                self.membership_event(at, action, Some(id), None, out);
            }
        }
        for id in left {
            if Some(id) != self.local_nodeid {
                self.purge_node(at, id, out);
            }
        }
        if quorate != self.quorate {
            self.quorate = quorate;
            let action = if quorate {
                MembershipAction::Quorate
            } else {
                MembershipAction::QuorumLost
            };
            self.membership_event(at, action, None, None, out);
        }
        out.changed = true;
    }

    fn group_change(
        &mut self,
        at: Millis,
        group: Group,
        members: Vec<GroupMember>,
        left: Vec<GroupMember>,
        joined: Vec<GroupMember>,
        out: &mut Output,
    ) {
        let fa_before = self.fa_members();
        // Replace the pid sets of this group from the full member list.
        for n in self.nodes.values_mut() {
            match group {
                Group::FenceAgents => n.fa_pids.clear(),
                Group::Own => n.own_pids.clear(),
            }
        }
        for m in &members {
            let n = self.nodes.entry(m.nodeid).or_insert_with(|| NodeRec {
                since: at,
                ..NodeRec::default()
            });
            match group {
                Group::FenceAgents => n.fa_pids.insert(m.pid),
                Group::Own => n.own_pids.insert(m.pid),
            };
        }
        if group == Group::FenceAgents {
            let gone: BTreeSet<NodeId> =
                fa_before.difference(&self.fa_members()).copied().collect();
            if !gone.is_empty() {
                self.fence_nodes_left(at, &gone, out);
            }
            for j in &joined {
                if Some(j.nodeid) != self.local_nodeid {
                    self.membership_event(
                        at,
                        MembershipAction::DaemonJoined,
                        Some(j.nodeid),
                        Some(format!("pid {} {}", j.pid, j.reason)),
                        out,
                    );
                }
            }
            for l in &left {
                if Some(l.nodeid) != self.local_nodeid {
                    self.membership_event(
                        at,
                        MembershipAction::DaemonLeft,
                        Some(l.nodeid),
                        Some(format!("pid {} {}", l.pid, l.reason)),
                        out,
                    );
                }
            }
        }
        // Every peer with records but no daemon left in either group leaves
        // the map. This also reconciles after a corosync reconnect.
        let gone: Vec<NodeId> = self
            .peers
            .keys()
            .copied()
            .filter(|id| {
                self.nodes
                    .get(id)
                    .is_none_or(|n| n.fa_pids.is_empty() && n.own_pids.is_empty())
            })
            .collect();
        for id in gone {
            self.purge_node(at, id, out);
        }
        self.prune_peer_networks(out);
        // Any join (our own included) makes every member re-announce, as
        // fence_virtd does; that is how a newcomer learns the map.
        if !joined.is_empty() {
            let all = self.announce_all();
            match group {
                Group::FenceAgents => out
                    .effects
                    .extend(all.into_iter().filter(|e| matches!(e, Effect::StoreVms(_)))),
                Group::Own => out
                    .effects
                    .extend(all.into_iter().filter(|e| matches!(e, Effect::Own(_)))),
            }
        }
        out.changed = true;
    }

    /// A fenceline peer's data comes from the own group (FIFO per sender, with
    /// removals); its STORE_VM copies would race with that, so they are ignored.
    fn is_fenceline_peer(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| !n.own_pids.is_empty())
    }

    fn peer_record(&mut self, at: Millis, from: NodeId, rec: VmRecord, out: &mut Output) {
        if Some(from) == self.local_nodeid || self.is_fenceline_peer(from) {
            return;
        }
        if rec.name.is_empty() && rec.uuid.is_empty() {
            self.counters.malformed_fence_agents += 1;
            out.changed = true;
            return;
        }
        // fence_virtd puts its own nodeid in s_owner; trust the sender, not the field.
        let key = DomKey::of(&rec.name, &rec.uuid);
        self.upsert_peer(at, from, key, rec.name, rec.uuid, rec.state, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn upsert_peer(
        &mut self,
        at: Millis,
        from: NodeId,
        key: DomKey,
        name: String,
        uuid: String,
        state: DomainState,
        out: &mut Output,
    ) {
        let p = self.peers.entry(from).or_default();
        if let Some((_, seen)) = p.inventory.as_mut() {
            seen.insert(key.clone());
        }
        let changed = p
            .vms
            .get(&key)
            .is_none_or(|o| o.state != state || o.name != name);
        p.vms.insert(key.clone(), Obs { name, uuid, state });
        if changed {
            self.refresh(&key, at, Cause::Change, out);
        }
    }

    fn peer_message(&mut self, at: Millis, from: NodeId, msg: OwnMessage, out: &mut Output) {
        if Some(from) == self.local_nodeid {
            return;
        }
        match msg {
            m @ (OwnMessage::NetEvent { .. }
            | OwnMessage::NetState { .. }
            | OwnMessage::NetList { .. }) => self.peer_net_message(at, from, m, out),
            OwnMessage::Info(info) => {
                let n = self.nodes.entry(from).or_insert_with(|| NodeRec {
                    since: at,
                    ..NodeRec::default()
                });
                n.info = Some(info);
                out.changed = true;
            }
            OwnMessage::InventoryBegin { generation } => {
                self.peers.entry(from).or_default().inventory = Some((generation, BTreeSet::new()));
            }
            OwnMessage::Vms { vms } => {
                for v in vms {
                    if v.name.is_empty() && v.uuid.is_empty() {
                        self.counters.malformed_own += 1;
                        out.changed = true;
                        continue;
                    }
                    let key = DomKey::of(&v.name, &v.uuid);
                    self.upsert_peer(at, from, key, v.name, v.uuid, v.state, out);
                }
            }
            OwnMessage::Gone { vms } => {
                for v in vms {
                    let key = DomKey::of(&v.name, &v.uuid);
                    let removed = self
                        .peers
                        .get_mut(&from)
                        .and_then(|p| p.vms.remove(&key))
                        .is_some();
                    if removed {
                        self.refresh(&key, at, Cause::Change, out);
                    }
                }
            }
            OwnMessage::InventoryEnd { generation } => {
                let Some(p) = self.peers.get_mut(&from) else {
                    return;
                };
                match p.inventory.take() {
                    Some((g, seen)) if g == generation => {
                        let stale: Vec<DomKey> = p
                            .vms
                            .keys()
                            .filter(|k| !seen.contains(k))
                            .cloned()
                            .collect();
                        for k in &stale {
                            p.vms.remove(k);
                        }
                        for k in stale {
                            self.refresh(&k, at, Cause::Change, out);
                        }
                    }
                    // A mismatched end: ignore it (a begin was lost); the next
                    // inventory fixes the map.
                    _ => {}
                }
            }
        }
    }

    fn purge_node(&mut self, at: Millis, id: NodeId, out: &mut Output) {
        self.forget_peer_networks(id, out);
        let Some(p) = self.peers.remove(&id) else {
            return;
        };
        for k in p.vms.keys() {
            self.refresh(k, at, Cause::Purge, out);
        }
    }

    fn libvirt_link(
        &mut self,
        at: Millis,
        uri: String,
        connected: bool,
        error: Option<String>,
        out: &mut Output,
    ) {
        let rec = self.uri_rec(&uri, at);
        if rec.health.connected == connected && rec.health.error == error {
            return;
        }
        rec.health.connected = connected;
        rec.health.error = error.clone();
        rec.health.since = at;
        let action = if connected {
            DaemonAction::LibvirtConnected
        } else {
            DaemonAction::LibvirtLost
        };
        self.emit(
            at,
            EventKind::Daemon {
                action,
                uri: Some(uri),
                detail: error,
            },
            out,
        );
        if self.local_nodeid.is_some() {
            out.effects
                .push(Effect::Own(OwnMessage::Info(self.peer_info())));
        }
    }

    fn local_list(&mut self, at: Millis, uri: String, domains: Vec<LocalDomain>, out: &mut Output) {
        let mut fresh = BTreeMap::new();
        for d in domains {
            fresh.insert(
                DomKey::of(&d.name, &d.uuid),
                Obs {
                    name: d.name,
                    uuid: d.uuid,
                    state: d.state,
                },
            );
        }
        let rec = self.uri_rec(&uri, at);
        let old = std::mem::replace(&mut rec.domains, fresh);
        rec.health.domains = rec.domains.len();
        let mut touched: Vec<DomKey> = Vec::new();
        let mut gone: Vec<LocalDomain> = Vec::new();
        for (k, o) in &old {
            match rec.domains.get(k) {
                None => {
                    touched.push(k.clone());
                    gone.push(LocalDomain {
                        name: o.name.clone(),
                        uuid: o.uuid.clone(),
                        state: DomainState::Shutoff,
                    });
                }
                Some(n) if n.state != o.state || n.name != o.name => touched.push(k.clone()),
                _ => {}
            }
        }
        for k in rec.domains.keys() {
            if !old.contains_key(k) {
                touched.push(k.clone());
            }
        }
        for k in &touched {
            self.refresh(k, at, Cause::Change, out);
        }
        // Gone keys that another local URI still has are not gone.
        gone.retain(|g| self.local_obs(&DomKey::of(&g.name, &g.uuid)).is_none());
        let present: Vec<DomKey> = touched
            .into_iter()
            .filter(|k| self.local_obs(k).is_some())
            .collect();
        self.announce_local(&present, out);
        if !gone.is_empty() && self.local_nodeid.is_some() {
            out.effects
                .push(Effect::Own(OwnMessage::Gone { vms: gone }));
        }
        out.changed = true;
    }

    /// This host's view of one domain across all URIs, with the URI it came
    /// from; when several URIs have it, the most active state wins.
    fn local_obs(&self, key: &DomKey) -> Option<(&Obs, &str)> {
        let mut best: Option<(&Obs, &str)> = None;
        for (uri, u) in &self.local {
            if let Some(o) = u.domains.get(key) {
                match best {
                    Some((prev, _)) if prev.state.is_active() || !o.state.is_active() => {}
                    _ => best = Some((o, uri.as_str())),
                }
            }
        }
        best
    }

    /// Every local domain, one per key, as [`Self::local_obs`] picks it.
    fn local_merged(&self) -> BTreeMap<DomKey, Obs> {
        let keys: BTreeSet<&DomKey> = self.local.values().flat_map(|u| u.domains.keys()).collect();
        keys.into_iter()
            .filter_map(|k| self.local_obs(k).map(|(o, _)| (k.clone(), o.clone())))
            .collect()
    }

    fn announce_local(&mut self, keys: &[DomKey], out: &mut Output) {
        let Some(me) = self.local_nodeid else {
            return;
        };
        if keys.is_empty() {
            return;
        }
        let mut records = Vec::new();
        let mut vms = Vec::new();
        for k in keys {
            if let Some((o, _)) = self.local_obs(k) {
                records.push(VmRecord {
                    name: o.name.clone(),
                    uuid: o.uuid.clone(),
                    owner: me,
                    state: o.state,
                });
                vms.push(LocalDomain {
                    name: o.name.clone(),
                    uuid: o.uuid.clone(),
                    state: o.state,
                });
            }
        }
        if !records.is_empty() {
            out.effects.push(Effect::StoreVms(records));
            out.effects.push(Effect::Own(OwnMessage::Vms { vms }));
        }
    }

    /// Recomputes one entry of the map from every observation and emits the
    /// events that describe the difference.
    fn refresh(&mut self, key: &DomKey, at: Millis, cause: Cause, out: &mut Output) {
        let mut placements: Vec<(NodeId, &Obs, Option<&str>)> = Vec::new();
        let me = self.local_nodeid.unwrap_or(0);
        let local = self.local_obs(key);
        if let Some((o, uri)) = local {
            placements.push((me, o, Some(uri)));
        }
        for (id, p) in &self.peers {
            if Some(*id) == self.local_nodeid {
                continue;
            }
            if let Some(o) = p.vms.get(key) {
                placements.push((*id, o, None));
            }
        }
        let old = self.map.get(key).cloned();
        if placements.is_empty() {
            if let Some(old) = old {
                self.map.remove(key);
                let action = match cause {
                    Cause::Purge => DomainAction::Purged,
                    Cause::Change => DomainAction::Removed,
                };
                self.emit(
                    at,
                    EventKind::Domain {
                        action,
                        name: old.name,
                        uuid: old.uuid,
                        state: old.state,
                        previous: None,
                        owner: None,
                        previous_owner: old.owner,
                        detail: None,
                    },
                    out,
                );
            }
            return;
        }
        let active: Vec<&(NodeId, &Obs, Option<&str>)> = placements
            .iter()
            .filter(|p| p.1.state.is_active())
            .collect();
        let known_owner = |id: NodeId| -> Option<NodeId> {
            // Before corosync tells us our id, a local VM has no known owner.
            if id == 0 && self.local_nodeid.is_none() {
                None
            } else {
                Some(id)
            }
        };
        let (owner, state, conflict, primary) = match active.len() {
            0 => {
                let owner = if placements.len() == 1 {
                    known_owner(placements[0].0)
                } else {
                    None
                };
                (owner, placements[0].1.state, false, &placements[0])
            }
            1 => (
                known_owner(active[0].0),
                active[0].1.state,
                false,
                active[0],
            ),
            _ => (None, active[0].1.state, true, active[0]),
        };
        let name = primary.1.name.clone();
        let uuid = placements
            .iter()
            .map(|p| p.1.uuid.as_str())
            .find(|u| !u.is_empty())
            .unwrap_or("")
            .to_string();
        let uri = local.map(|(_, u)| u.to_string());
        let mut pl: Vec<Placement> = placements
            .iter()
            .map(|p| Placement {
                nodeid: p.0,
                state: p.1.state,
            })
            .collect();
        pl.sort_by_key(|p| p.nodeid);
        let since = match &old {
            Some(o) if o.state == state && o.owner == owner && o.conflict == conflict => o.since,
            _ => at,
        };
        let new = Entry {
            name,
            uuid,
            state,
            owner,
            since,
            uri,
            conflict,
            placements: pl,
        };
        if old.as_ref() == Some(&new) {
            return;
        }
        self.map.insert(key.clone(), new.clone());
        out.changed = true;
        let dom = |action, previous, previous_owner, detail| EventKind::Domain {
            action,
            name: new.name.clone(),
            uuid: new.uuid.clone(),
            state: new.state,
            previous,
            owner: new.owner,
            previous_owner,
            detail,
        };
        let Some(old) = old else {
            let ev = if conflict {
                dom(
                    DomainAction::Conflict,
                    None,
                    None,
                    Some(conflict_detail(&new.placements)),
                )
            } else {
                dom(DomainAction::Appeared, None, None, None)
            };
            self.emit(at, ev, out);
            return;
        };
        if conflict && !old.conflict {
            let ev = dom(
                DomainAction::Conflict,
                Some(old.state),
                old.owner,
                Some(conflict_detail(&new.placements)),
            );
            self.emit(at, ev, out);
        } else if !conflict && old.conflict {
            let ev = dom(DomainAction::ConflictResolved, Some(old.state), None, None);
            self.emit(at, ev, out);
        } else if old.owner != new.owner && new.owner.is_some() {
            let ev = dom(DomainAction::Owner, Some(old.state), old.owner, None);
            self.emit(at, ev, out);
        } else if old.state != new.state {
            let ev = dom(DomainAction::State, Some(old.state), old.owner, None);
            self.emit(at, ev, out);
        }
    }

    /// Builds the immutable picture of the cluster.
    pub fn snapshot(&self, at: Millis) -> Snapshot {
        let mut vm_count: BTreeMap<NodeId, usize> = BTreeMap::new();
        for e in self.map.values() {
            if let Some(o) = e.owner {
                *vm_count.entry(o).or_default() += 1;
            }
        }
        let local_health: Vec<LibvirtHealth> =
            self.local.values().map(|u| u.health.clone()).collect();
        let nodes = self
            .nodes
            .iter()
            .map(|(id, n)| {
                let is_local = Some(*id) == self.local_nodeid;
                let mut daemons = Vec::new();
                if is_local || !n.own_pids.is_empty() {
                    daemons.push(DaemonKind::Fenceline);
                }
                // More fence-agents processes than fenceline ones: fence_virtd.
                let fenceline_procs = usize::from(is_local || !n.own_pids.is_empty());
                if n.fa_pids.len() > fenceline_procs
                    || (!n.fa_pids.is_empty() && fenceline_procs == 0)
                {
                    daemons.push(DaemonKind::FenceVirtd);
                }
                let (libvirt, version) = if is_local {
                    (local_health.clone(), Some(self.cfg.version.clone()))
                } else {
                    match &n.info {
                        Some(i) => (i.libvirt.clone(), Some(i.version.clone())),
                        None => (Vec::new(), None),
                    }
                };
                NodeView {
                    nodeid: *id,
                    name: n.name.clone(),
                    member: n.member,
                    since: n.since,
                    daemons,
                    vm_count: vm_count.get(id).copied().unwrap_or(0),
                    libvirt,
                    version,
                }
            })
            .collect();
        let domains = self
            .map
            .values()
            .map(|e| DomainView {
                name: e.name.clone(),
                uuid: e.uuid.clone(),
                state: e.state,
                owner: e.owner,
                since: e.since,
                uri: e.uri.clone(),
                conflict: e.conflict,
                placements: e.placements.clone(),
            })
            .collect::<Vec<_>>();
        let mut domains = domains;
        domains.sort_by(|a, b| a.name.cmp(&b.name).then(a.uuid.cmp(&b.uuid)));
        Snapshot {
            version: self.version,
            generated_at: at,
            cluster_name: self.cluster_name.clone(),
            local_nodeid: self.local_nodeid,
            quorate: self.quorate(),
            expected_votes: self.votes.map(|v| v.0),
            total_votes: self.votes.map(|v| v.1),
            quorum: self.votes.map(|v| v.2),
            stale: !self.corosync.connected,
            corosync: self.corosync.clone(),
            nodes,
            domains,
            libvirt: local_health,
            networks: self.network_views(),
            counters: self.counters.clone(),
            daemon_version: self.cfg.version.clone(),
        }
    }
}

fn conflict_detail(placements: &[Placement]) -> String {
    let on: Vec<String> = placements
        .iter()
        .filter(|p| p.state.is_active())
        .map(|p| format!("node {} ({})", p.nodeid, p.state))
        .collect();
    format!("active on {}", on.join(", "))
}
