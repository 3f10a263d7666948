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
//! - when a node's daemons leave, or the node leaves the membership, its VMs
//!   stay as *lost* placements until it returns with a complete inventory
//!   or an operator confirms it down (`accounting.rs` has the truth rule).
//!
//! Rooms: `input.rs` (what drivers hand in), `effect.rs` (what comes out
//! besides events), `messages.rs` (CPG message data, proto-only), this file
//! (the [`Cluster`], `apply`'s dispatch, the event ring), `membership.rs`,
//! `domains.rs` (the map and its ownership rules), `local.rs` (this host's
//! libvirt view and its announcements), `networks/`, `fence/` (the router),
//! `accounting.rs` (which nodes are accounted for, the truth rule, operator
//! confirmations), `self_fence.rs` (opt-in self-fencing: this host's
//! countdown and destroys, peers' deadlines), `snapshot.rs`.
//! confirmations), `peer_data.rs` (bounds on peer data, ageing of
//! fence_virtd records), `snapshot.rs`.

use std::collections::{BTreeMap, VecDeque};

use fenceline_proto::api::{
    Counters, DaemonAction, Event, EventKind, Link, ListenerView, Millis, NodeId,
};

mod accounting;
mod domains;
mod effect;
mod fence;
mod input;
mod local;
mod membership;
mod networks;
mod pacemaker;
mod peer_data;
mod self_fence;
mod snapshot;
#[cfg(test)]
mod tests;

use domains::{Cause, Entry, Obs, PeerDomains};
use local::UriRec;
use membership::NodeRec;

pub use domains::DomKey;
pub use effect::{Effect, Notice};
pub use fence::{
    CLAIM_TIMEOUT_MS, ClaimOutcome, FenceAct, FenceRules, FenceWire, MAX_CPG_VM_NAME, NameMatch,
    Route,
};
pub use fenceline_proto::messages::{
    HookCall, LocalDomain, MAX_ANNOUNCED_PORTS, OwnMessage, PeerInfo, VmRecord,
};
pub use input::{DropKind, Group, GroupMember, Input, NetInfo};
pub use networks::port_key;
pub use self_fence::margin_ms as self_fence_margin_ms;

/// The default bound of VMs per peer: far above what one host runs.
pub const DEFAULT_MAX_PEER_VMS: usize = 10_000;

/// Tunables of the model.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub event_capacity: usize,
    pub version: String,
    pub started_at: Millis,
    pub fence: FenceRules,
    /// The configured libvirt URIs: the inventory is complete only when
    /// every one has been listed since its last (re)connect.
    pub libvirt_uris: Vec<String>,
    /// Listener name → `fence_xvm::key_digest` of its key, announced to
    /// the peers (`PeerInfo.key_digests`) for `fenceline check`.
    pub key_digests: std::collections::BTreeMap<String, String>,
    /// The most VMs kept per peer (`peer_data.rs`).
    pub max_peer_vms: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            event_capacity: 1000,
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: 0,
            fence: FenceRules::default(),
            libvirt_uris: Vec::new(),
            key_digests: Default::default(),
            max_peer_vms: DEFAULT_MAX_PEER_VMS,
        }
    }
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
    /// The state last announced per local domain (active or not), and the
    /// stops announced but not yet delivered back to us (`local.rs`).
    sent_active: BTreeMap<DomKey, bool>,
    stops_in_flight: BTreeMap<DomKey, u32>,
    fence: fence::FenceState,
    nets: networks::Networks,
    self_fence: self_fence::SelfFence,
    /// The fence listeners' states, as the daemon reports them.
    listeners: Vec<ListenerView>,
}

/// What one `apply` produced.
#[derive(Debug, Default)]
pub struct Output {
    pub effects: Vec<Effect>,
    pub events: Vec<Event>,
    /// Log lines for the state task (the model does no logging).
    pub notices: Vec<Notice>,
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
            sent_active: BTreeMap::new(),
            stops_in_flight: BTreeMap::new(),
            fence: fence::FenceState::new(u32::try_from(started % 1_000_000_007).unwrap_or(1)),
            nets: networks::Networks::default(),
            self_fence: self_fence::SelfFence::new(started),
            listeners: Vec::new(),
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
        let at = input.at();
        if self.self_fence_input(&input, &mut out) {
            self.self_fence_after(at, &mut out);
            if out.changed {
                self.version += 1;
            }
            return out;
        }
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
            // Claims count from every sender, this node included.
            Input::PeerMessage {
                at,
                from,
                msg: OwnMessage::Claim { id },
            } => self.claim_delivered(at, from, id, &mut out),
            Input::PeerMessage { at, from, msg } => self.peer_message(at, from, msg, &mut out),
            Input::Unauthenticated { .. } => {
                self.counters.unauthenticated_cpg += 1;
                out.changed = true;
            }
            Input::ClaimAsk {
                at,
                id,
                claim,
                domain,
            } => self.claim_ask(at, id, claim, &domain, &mut out),
            Input::Malformed {
                at,
                group,
                from,
                reason,
            } => self.malformed(at, group, from, reason, &mut out),
            Input::LibvirtLink {
                at,
                uri,
                connected,
                error,
            } => self.libvirt_link(at, uri, connected, error, &mut out),
            Input::LocalList { at, uri, domains } => self.local_list(at, uri, domains, &mut out),
            Input::LocalDomain { at, uri, domain } => self.local_domain(at, uri, domain, &mut out),
            Input::LocalGone {
                at,
                uri,
                name,
                uuid,
            } => self.local_gone(at, uri, name, uuid, &mut out),
            Input::LocalMigrated { at, name, uuid, .. } => {
                self.local_migrated(at, &name, &uuid);
            }
            Input::LocalRebooted {
                at,
                uri: _,
                name,
                uuid,
            } => self.local_rebooted(at, name, uuid, &mut out),
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
                not_found,
                migrated,
            } => {
                let seen = fence::Seen {
                    not_found,
                    migrated,
                };
                self.fence_acted(at, job, result, detail, seen, &mut out)
            }
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
            Input::Dropped { at, what, count } => self.dropped(at, what, count, &mut out),
            Input::Listeners { listeners, .. } => {
                if self.listeners != listeners {
                    self.listeners = listeners;
                    out.changed = true;
                }
            }
            Input::Reloaded { at, detail } => self.emit(
                at,
                EventKind::Daemon {
                    action: DaemonAction::Reloaded,
                    uri: None,
                    detail: Some(detail),
                },
                &mut out,
            ),
            Input::Confirm {
                at,
                id,
                node,
                source,
            } => {
                let result = self.confirm(at, &node, &source, &mut out);
                out.effects.push(Effect::ConfirmDone { id, result });
                out.changed = true;
            }
            Input::PacemakerFenced { at, record } => {
                // A refusal is the common case (polled every few seconds):
                // nothing to report.
                let _ = self.pacemaker_fenced(at, &record, &mut out);
            }
        }
        self.self_fence_after(at, &mut out);
        if out.changed {
            self.version += 1;
        }
        out
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

    /// Drivers reported counted drops.
    fn dropped(&mut self, at: Millis, what: DropKind, count: u64, out: &mut Output) {
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
            out,
        );
    }
}
