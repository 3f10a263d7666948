//! libvirt networks in the model: hook events, network lifecycle events,
//! the per-node networks view, and how both cross the cluster.
//!
//! Local networks come from three sources on this node:
//! - libvirt listings ([`Input::LocalNetworks`], at connect and reconcile)
//!   and lifecycle events ([`Input::LocalNetwork`], re-read by the driver):
//!   they own the `active` flag and the list of networks;
//! - the libvirt port listing ([`Input::LocalPorts`]), which seeds the ports
//!   that existed before this daemon started;
//! - hook calls ([`Input::Hook`]): ports come and go, `started`/`stopped`
//!   also set `active` (the lifecycle event arrives just after the hook).
//!
//! Replays: libvirtd re-runs `port-created` for every existing port when it
//! starts (`networkUpdateState` → `networkNotifyPort`), with XML identical
//! to the original. A `port-created` for a port this node already has (same
//! port UUID; else same owner and MAC) is marked `replay`, not a new plug.
//! That holds across a libvirtd restart because ports are kept while the
//! network stays active (only `stopped`, an inactive listing or the port
//! listing remove them), and after a fenceline restart because the port
//! listing at connect seeds them.
//!
//! Peers: every local hook and lifecycle event goes to the own group as
//! [`OwnMessage::NetEvent`], and the state of each changed network as
//! [`OwnMessage::NetState`] (coalesced: at most one per network per engine
//! batch, see [`Cluster::flush_effects`]), with [`OwnMessage::NetList`] when
//! the set of networks changed. Peers show the events with their origin node
//! and keep the origin's view; a node that leaves takes its networks along.

use std::collections::{BTreeMap, BTreeSet};

use super::{Cluster, Effect, Output, OwnMessage};
use fenceline_proto::api::{EventKind, Millis, NetworkAction, NetworkView, NodeId, PortView};

/// Ports of one network carried in one [`OwnMessage::NetState`]; a network
/// with more is announced with the first ones (a node with more than this
/// many VM interfaces on one network is far outside what fenceline targets).
pub const MAX_ANNOUNCED_PORTS: usize = 512;
/// Networks kept per node (local or peer); more are ignored and counted.
pub const MAX_NETWORKS: usize = 256;
/// Ports kept per network; more are ignored and counted.
pub const MAX_PORTS: usize = 4096;
/// A hook time further than this from the receive time is replaced by the
/// receive time (the hook runs on this host; a wild clock value is an error).
const MAX_HOOK_SKEW_MS: u64 = 5 * 60 * 1000;

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

/// A network as a libvirt listing or a re-read after an event reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetInfo {
    pub name: String,
    pub uuid: String,
    pub active: bool,
    pub bridge: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct LocalNet {
    uuid: String,
    bridge: Option<String>,
    active: bool,
    since: Millis,
    /// URIs whose listing has this network; empty = known from hooks only.
    uris: BTreeSet<String>,
    /// The last lifecycle action reported (repeats from a second URI on the
    /// same network driver are not reported again).
    last_action: Option<NetworkAction>,
    ports: BTreeMap<String, PortView>,
}

/// Network state of the model.
#[derive(Debug, Clone, Default)]
pub(super) struct Networks {
    local: BTreeMap<String, LocalNet>,
    peers: BTreeMap<NodeId, BTreeMap<String, NetworkView>>,
    /// Local networks changed since the last flush.
    dirty: BTreeSet<String>,
    /// The set of local network names changed since the last flush.
    list_dirty: bool,
}

/// The identity of a port: its UUID, else owner UUID (or name) and MAC.
pub fn port_key(p: &PortView) -> Option<String> {
    if let Some(u) = &p.uuid {
        return Some(format!("uuid:{}", u.to_ascii_lowercase()));
    }
    let owner = p.owner_uuid.as_deref().or(p.owner.as_deref());
    match (owner, &p.mac) {
        (Some(o), Some(m)) => Some(format!(
            "owner:{}/{}",
            o.to_ascii_lowercase(),
            m.to_ascii_lowercase()
        )),
        (None, Some(m)) => Some(format!("mac:{}", m.to_ascii_lowercase())),
        _ => None,
    }
}

fn is_net_kind(k: &EventKind) -> bool {
    matches!(k, EventKind::NetworkHook { .. } | EventKind::Network { .. })
}

impl Networks {
    fn view(&self, node: NodeId, name: &str, n: &LocalNet, max_ports: usize) -> NetworkView {
        NetworkView {
            node,
            name: name.to_string(),
            uuid: n.uuid.clone(),
            active: n.active,
            bridge: n.bridge.clone(),
            ports: n.ports.values().take(max_ports).cloned().collect(),
            since: n.since,
        }
    }
}

impl Cluster {
    /// Counts an event of the network kinds that the ring pushed out within
    /// `window` of the newest one: a burst larger than the ring.
    pub(super) fn count_ring_overflow(
        &mut self,
        evicted: &fenceline_proto::api::Event,
        now: Millis,
    ) {
        const WINDOW_MS: u64 = 300_000;
        if is_net_kind(&evicted.kind) && now.saturating_sub(evicted.time) < WINDOW_MS {
            self.counters.dropped_hook_events += 1;
        }
    }

    fn net_entry(&mut self, name: &str, at: Millis) -> Option<&mut LocalNet> {
        if !self.nets.local.contains_key(name) {
            if self.nets.local.len() >= MAX_NETWORKS {
                self.counters.dropped_hook_events += 1;
                return None;
            }
            self.nets.list_dirty = true;
            self.nets.local.insert(
                name.to_string(),
                LocalNet {
                    since: at,
                    ..LocalNet::default()
                },
            );
        }
        self.nets.local.get_mut(name)
    }

    fn mark_dirty(&mut self, name: &str, out: &mut Output) {
        self.nets.dirty.insert(name.to_string());
        out.changed = true;
    }

    /// A local hook call.
    pub(super) fn hook(&mut self, at: Millis, call: HookCall, out: &mut Output) {
        let time = if call.time.abs_diff(at) > MAX_HOOK_SKEW_MS {
            at
        } else {
            call.time
        };
        let mut replay = false;
        let mut changed = false;
        let mut overflow = false;
        if let Some(n) = self.net_entry(&call.network, time) {
            if let Some(u) = &call.network_uuid
                && n.uuid != *u
            {
                n.uuid.clone_from(u);
                changed = true;
            }
            if call.bridge.is_some() && n.bridge != call.bridge {
                n.bridge.clone_from(&call.bridge);
                changed = true;
            }
            let set_active = |n: &mut LocalNet, active: bool| {
                if n.active != active {
                    n.active = active;
                    n.since = time;
                    true
                } else {
                    false
                }
            };
            let key = call.port.as_ref().and_then(port_key);
            match call.op.as_str() {
                "started" => changed |= set_active(n, true),
                "stopped" => {
                    changed |= set_active(n, false);
                    if !n.ports.is_empty() {
                        n.ports.clear();
                        changed = true;
                    }
                }
                "port-created" | "plugged" => {
                    changed |= set_active(n, true);
                    if let (Some(k), Some(p)) = (key, &call.port) {
                        match n.ports.get(&k) {
                            Some(old) => {
                                replay = call.op == "port-created";
                                if old != p {
                                    n.ports.insert(k, p.clone());
                                    changed = true;
                                }
                            }
                            None if n.ports.len() >= MAX_PORTS => overflow = true,
                            None => {
                                n.ports.insert(k, p.clone());
                                changed = true;
                            }
                        }
                    }
                }
                "port-deleted" | "unplugged" => {
                    if let Some(k) = key {
                        changed |= n.ports.remove(&k).is_some();
                    } else if let Some(p) = &call.port
                        && (p.owner_uuid.is_some() || p.owner.is_some())
                    {
                        // Old format, several interfaces: all of that owner's.
                        let before = n.ports.len();
                        n.ports
                            .retain(|_, q| !(q.owner_uuid == p.owner_uuid && q.owner == p.owner));
                        changed |= n.ports.len() != before;
                    }
                }
                _ => {}
            }
        }
        if overflow {
            self.counters.dropped_hook_events += 1;
        }
        if changed {
            self.mark_dirty(&call.network, out);
        }
        let kind = EventKind::NetworkHook {
            network: call.network,
            op: call.op,
            subop: call.subop,
            network_uuid: call.network_uuid,
            bridge: call.bridge,
            port: call.port,
            replay,
            error: call.error,
        };
        self.emit(time, kind.clone(), out);
        if self.local_nodeid.is_some() {
            out.effects.push(Effect::Own(OwnMessage::NetEvent {
                time,
                event: Box::new(kind),
            }));
        }
    }

    fn upsert_listed(&mut self, at: Millis, uri: &str, info: &NetInfo) -> bool {
        let Some(n) = self.net_entry(&info.name, at) else {
            return false;
        };
        let mut changed = n.uris.insert(uri.to_string());
        if n.uuid != info.uuid {
            n.uuid.clone_from(&info.uuid);
            changed = true;
        }
        if info.bridge.is_some() && n.bridge != info.bridge {
            n.bridge.clone_from(&info.bridge);
            changed = true;
        }
        if n.active != info.active {
            n.active = info.active;
            n.since = at;
            changed = true;
        }
        // An inactive network has no ports (net-destroy drops them without
        // a port-deleted hook).
        if !info.active && !n.ports.is_empty() {
            n.ports.clear();
            changed = true;
        }
        changed
    }

    /// Removes `uri` from a network; the network goes when no URI lists it.
    fn unlist(&mut self, uri: &str, name: &str) -> bool {
        let Some(n) = self.nets.local.get_mut(name) else {
            return false;
        };
        if !n.uris.remove(uri) {
            return false;
        }
        if n.uris.is_empty() {
            self.nets.local.remove(name);
            self.nets.list_dirty = true;
        }
        true
    }

    /// A full network listing of one URI.
    pub(super) fn local_networks(
        &mut self,
        at: Millis,
        uri: String,
        networks: Vec<NetInfo>,
        out: &mut Output,
    ) {
        let listed: BTreeSet<&str> = networks.iter().map(|n| n.name.as_str()).collect();
        let stale: Vec<String> = self
            .nets
            .local
            .iter()
            .filter(|(name, n)| n.uris.contains(&uri) && !listed.contains(name.as_str()))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if self.unlist(&uri, &name) {
                self.mark_dirty(&name, out);
            }
        }
        for info in &networks {
            if self.upsert_listed(at, &uri, info) {
                self.mark_dirty(&info.name, out);
            }
        }
    }

    /// A network lifecycle event, with the network as re-read afterwards
    /// (`None`: it no longer exists).
    pub(super) fn local_network(
        &mut self,
        at: Millis,
        uri: String,
        action: NetworkAction,
        name: String,
        info: Option<NetInfo>,
        out: &mut Output,
    ) {
        let changed = match &info {
            Some(i) => self.upsert_listed(at, &uri, i),
            None => self.unlist(&uri, &name),
        };
        if changed {
            self.mark_dirty(&name, out);
        }
        let uuid = info.as_ref().map(|i| i.uuid.clone());
        let repeat = match self.nets.local.get_mut(&name) {
            Some(n) => {
                let r = n.last_action == Some(action);
                n.last_action = Some(action);
                r
            }
            // Gone: an undefined of a network we no longer have is reported
            // once (the removal above), a repeat finds nothing.
            None => !changed && action == NetworkAction::Undefined,
        };
        if repeat {
            return;
        }
        let kind = EventKind::Network {
            action,
            network: name,
            uuid,
        };
        self.emit(at, kind.clone(), out);
        if self.local_nodeid.is_some() {
            out.effects.push(Effect::Own(OwnMessage::NetEvent {
                time: at,
                event: Box::new(kind),
            }));
        }
    }

    /// The ports libvirt lists for one local network (replaces what hooks
    /// reported; seeds replay detection after a fenceline restart).
    pub(super) fn local_ports(
        &mut self,
        at: Millis,
        network: String,
        ports: Vec<PortView>,
        out: &mut Output,
    ) {
        let mut fresh = BTreeMap::new();
        for p in ports {
            if let Some(k) = port_key(&p) {
                if fresh.len() >= MAX_PORTS {
                    self.counters.dropped_hook_events += 1;
                    break;
                }
                fresh.insert(k, p);
            }
        }
        let Some(n) = self.net_entry(&network, at) else {
            return;
        };
        if n.ports != fresh {
            n.ports = fresh;
            self.mark_dirty(&network, out);
        }
    }

    /// A peer's network message.
    pub(super) fn peer_net_message(
        &mut self,
        at: Millis,
        from: NodeId,
        msg: OwnMessage,
        out: &mut Output,
    ) {
        match msg {
            OwnMessage::NetEvent { time, event } => {
                if !is_net_kind(&event) {
                    self.counters.malformed_own += 1;
                    out.changed = true;
                    return;
                }
                let time = if time.abs_diff(at) > MAX_HOOK_SKEW_MS {
                    at
                } else {
                    time
                };
                self.emit_from(time, Some(from), *event, out);
            }
            OwnMessage::NetState { network } => {
                let mut view = *network;
                view.node = from;
                view.ports.truncate(MAX_PORTS);
                let nets = self.nets.peers.entry(from).or_default();
                if !nets.contains_key(&view.name) && nets.len() >= MAX_NETWORKS {
                    self.counters.dropped_hook_events += 1;
                } else if nets.get(&view.name) != Some(&view) {
                    nets.insert(view.name.clone(), view);
                }
                out.changed = true;
            }
            OwnMessage::NetList { names } => {
                let keep: BTreeSet<String> = names.into_iter().collect();
                if let Some(nets) = self.nets.peers.get_mut(&from) {
                    nets.retain(|n, _| keep.contains(n));
                }
                out.changed = true;
            }
            _ => {}
        }
    }

    /// Drops a peer's networks (it left the cluster or its daemon stopped).
    pub(super) fn forget_peer_networks(&mut self, id: NodeId, out: &mut Output) {
        if self.nets.peers.remove(&id).is_some() {
            out.changed = true;
        }
    }

    /// Peers whose daemon is in neither group take their networks along.
    pub(super) fn prune_peer_networks(&mut self, out: &mut Output) {
        let gone: Vec<NodeId> = self
            .nets
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
            self.forget_peer_networks(id, out);
        }
    }

    /// Every local network's state and the list of names (join, resync).
    pub(super) fn announce_networks(&self) -> Vec<Effect> {
        let me = self.local_nodeid.unwrap_or(0);
        let mut v: Vec<Effect> = self
            .nets
            .local
            .iter()
            .map(|(name, n)| {
                Effect::Own(OwnMessage::NetState {
                    network: Box::new(self.nets.view(me, name, n, MAX_ANNOUNCED_PORTS)),
                })
            })
            .collect();
        v.push(Effect::Own(OwnMessage::NetList {
            names: self.nets.local.keys().cloned().collect(),
        }));
        v
    }

    /// Effects deferred and coalesced over a batch of inputs: the state of
    /// every local network that changed (once each), and the list of names
    /// when it changed. The state task calls this after each batch.
    pub fn flush_effects(&mut self) -> Vec<Effect> {
        let dirty = std::mem::take(&mut self.nets.dirty);
        let list = std::mem::take(&mut self.nets.list_dirty);
        let Some(me) = self.local_nodeid else {
            // Not in the cluster yet: the join announces everything.
            return Vec::new();
        };
        let mut v: Vec<Effect> = dirty
            .iter()
            .filter_map(|name| {
                self.nets.local.get(name).map(|n| {
                    Effect::Own(OwnMessage::NetState {
                        network: Box::new(self.nets.view(me, name, n, MAX_ANNOUNCED_PORTS)),
                    })
                })
            })
            .collect();
        if list {
            v.push(Effect::Own(OwnMessage::NetList {
                names: self.nets.local.keys().cloned().collect(),
            }));
        }
        v
    }

    /// Every node's networks, sorted by node and name.
    pub(super) fn network_views(&self) -> Vec<NetworkView> {
        let me = self.local_nodeid.unwrap_or(0);
        let mut v: Vec<NetworkView> = self
            .nets
            .local
            .iter()
            .map(|(name, n)| self.nets.view(me, name, n, usize::MAX))
            .collect();
        for (id, nets) in &self.nets.peers {
            if Some(*id) == self.local_nodeid {
                continue;
            }
            v.extend(nets.values().cloned());
        }
        v.sort_by(|a, b| a.node.cmp(&b.node).then_with(|| a.name.cmp(&b.name)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::{Group, GroupMember, Input, ModelConfig};
    use fenceline_proto::api::{Event, Snapshot};

    const QEMU: &str = "qemu:///system";

    fn cluster(local: NodeId, capacity: usize) -> Cluster {
        let mut c = Cluster::new(ModelConfig {
            event_capacity: capacity,
            version: "test".into(),
            started_at: 0,
            fence: crate::engine::model::FenceRules::default(),
        });
        c.apply(Input::CorosyncUp {
            at: 1,
            local_nodeid: local,
            cluster_name: Some("lab".into()),
            nodelist: vec![(1, Some("node1".into())), (2, Some("node2".into()))],
        });
        c
    }

    fn port(n: u8) -> PortView {
        PortView {
            owner: Some(format!("vm{n}")),
            owner_uuid: Some(format!("8f1e0001-0000-4000-9000-0000000000{n:02}")),
            mac: Some(format!("52:54:00:00:00:{n:02x}")),
            plug: Some("bridge".into()),
            uuid: Some(format!("7fad4964-7dc2-44b8-bb73-0000000000{n:02}")),
        }
    }

    fn hook(c: &mut Cluster, at: Millis, op: &str, p: Option<PortView>) -> Output {
        c.apply(Input::Hook {
            at,
            call: HookCall {
                time: at,
                network: "net1".into(),
                op: op.into(),
                subop: "begin".into(),
                network_uuid: Some("62dbb43f-eb39-4879-8478-d0df01188bd5".into()),
                bridge: Some("br1".into()),
                port: p,
                error: None,
            },
        })
    }

    fn info(name: &str, active: bool) -> NetInfo {
        NetInfo {
            name: name.into(),
            uuid: format!("uuid-{name}"),
            active,
            bridge: Some(format!("br-{name}")),
        }
    }

    fn hook_events(out: &Output) -> Vec<(&str, bool)> {
        out.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::NetworkHook { op, replay, .. } => Some((op.as_str(), *replay)),
                _ => None,
            })
            .collect()
    }

    fn net<'a>(s: &'a Snapshot, node: NodeId, name: &str) -> &'a NetworkView {
        s.networks
            .iter()
            .find(|n| n.node == node && n.name == name)
            .unwrap_or_else(|| panic!("no network {name} on node {node}: {:?}", s.networks))
    }

    fn net_events(out: &Output) -> Vec<&OwnMessage> {
        out.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Own(m @ OwnMessage::NetEvent { .. }) => Some(m),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn hooks_build_the_view_and_are_announced() {
        let mut c = cluster(1, 100);
        let out = hook(&mut c, 10, "started", None);
        assert_eq!(hook_events(&out), vec![("started", false)]);
        assert_eq!(out.events[0].node, Some(1));
        assert_eq!(net_events(&out).len(), 1);
        let out = hook(&mut c, 11, "port-created", Some(port(1)));
        assert_eq!(hook_events(&out), vec![("port-created", false)]);
        hook(&mut c, 12, "port-created", Some(port(2)));
        let s = c.snapshot(13);
        let n = net(&s, 1, "net1");
        assert!(n.active);
        assert_eq!(n.bridge.as_deref(), Some("br1"));
        assert_eq!(n.ports, vec![port(1), port(2)]);
        // The network state goes out once per batch, however many hooks.
        let fx = c.flush_effects();
        let states: Vec<_> = fx
            .iter()
            .filter(|e| matches!(e, Effect::Own(OwnMessage::NetState { .. })))
            .collect();
        assert_eq!(states.len(), 1);
        assert!(fx.iter().any(|e| matches!(e, Effect::Own(OwnMessage::NetList { names }) if names == &vec!["net1".to_string()])));
        assert!(c.flush_effects().is_empty());
        hook(&mut c, 14, "port-deleted", Some(port(1)));
        assert_eq!(net(&c.snapshot(15), 1, "net1").ports, vec![port(2)]);
        hook(&mut c, 16, "stopped", None);
        let s = c.snapshot(17);
        assert!(!net(&s, 1, "net1").active);
        assert!(net(&s, 1, "net1").ports.is_empty());
    }

    #[test]
    fn replayed_port_created_is_marked() {
        let mut c = cluster(1, 100);
        hook(&mut c, 10, "started", None);
        let out = hook(&mut c, 11, "port-created", Some(port(1)));
        assert_eq!(hook_events(&out), vec![("port-created", false)]);
        // libvirtd restarts: the same port-created again.
        let out = hook(&mut c, 20, "port-created", Some(port(1)));
        assert_eq!(hook_events(&out), vec![("port-created", true)]);
        assert_eq!(net(&c.snapshot(21), 1, "net1").ports.len(), 1);
        // The flag travels to peers.
        match net_events(&out)[0] {
            OwnMessage::NetEvent { event, .. } => {
                assert!(matches!(
                    **event,
                    EventKind::NetworkHook { replay: true, .. }
                ))
            }
            other => panic!("{other:?}"),
        }
        // After port-deleted, the same owner plugging again is a new port.
        hook(&mut c, 30, "port-deleted", Some(port(1)));
        let out = hook(&mut c, 31, "port-created", Some(port(1)));
        assert_eq!(hook_events(&out), vec![("port-created", false)]);
        // A stop drops every port (net-destroy sends no port-deleted).
        hook(&mut c, 40, "stopped", None);
        let out = hook(&mut c, 41, "port-created", Some(port(1)));
        assert_eq!(hook_events(&out), vec![("port-created", false)]);
    }

    #[test]
    fn ports_listed_by_libvirt_make_the_replay_after_a_fenceline_restart() {
        // A fresh daemon: libvirt lists the network and its port ...
        let mut c = cluster(1, 100);
        c.apply(Input::LocalNetworks {
            at: 5,
            uri: QEMU.into(),
            networks: vec![info("net1", true)],
        });
        c.apply(Input::LocalPorts {
            at: 5,
            uri: QEMU.into(),
            network: "net1".into(),
            ports: vec![port(1)],
        });
        // ... then libvirtd restarts and replays it.
        let out = hook(&mut c, 10, "port-created", Some(port(1)));
        assert_eq!(hook_events(&out), vec![("port-created", true)]);
        let out = hook(&mut c, 11, "port-created", Some(port(2)));
        assert_eq!(hook_events(&out), vec![("port-created", false)]);
    }

    #[test]
    fn old_plugged_format_uses_owner_and_mac() {
        let mut c = cluster(1, 100);
        let mut p = port(3);
        p.uuid = None;
        let out = hook(&mut c, 10, "plugged", Some(p.clone()));
        assert_eq!(hook_events(&out), vec![("plugged", false)]);
        // "plugged" is never a replay (that behaviour came with port-created).
        let out = hook(&mut c, 11, "plugged", Some(p.clone()));
        assert_eq!(hook_events(&out), vec![("plugged", false)]);
        assert_eq!(net(&c.snapshot(12), 1, "net1").ports, vec![p.clone()]);
        hook(&mut c, 13, "unplugged", Some(p));
        assert!(net(&c.snapshot(14), 1, "net1").ports.is_empty());
    }

    #[test]
    fn lifecycle_events_and_listings() {
        let mut c = cluster(1, 100);
        c.apply(Input::LocalNetworks {
            at: 5,
            uri: QEMU.into(),
            networks: vec![info("a", true), info("b", false)],
        });
        let s = c.snapshot(6);
        assert!(net(&s, 1, "a").active && !net(&s, 1, "b").active);
        let ev = |c: &mut Cluster, uri: &str, action, name: &str, i: Option<NetInfo>| {
            let out = c.apply(Input::LocalNetwork {
                at: 10,
                uri: uri.into(),
                action,
                name: name.into(),
                info: i,
            });
            out.events
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::Network {
                        action, network, ..
                    } => Some((*action, network.clone())),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ev(
                &mut c,
                QEMU,
                NetworkAction::Started,
                "b",
                Some(info("b", true))
            ),
            vec![(NetworkAction::Started, "b".to_string())]
        );
        // The same event through a second URI on the same network driver.
        assert!(
            ev(
                &mut c,
                "lxc:///system",
                NetworkAction::Started,
                "b",
                Some(info("b", true))
            )
            .is_empty()
        );
        assert!(net(&c.snapshot(11), 1, "b").active);
        // Stopped clears the ports (no port-deleted comes for them).
        c.apply(Input::LocalPorts {
            at: 12,
            uri: QEMU.into(),
            network: "b".into(),
            ports: vec![port(1)],
        });
        assert_eq!(
            ev(
                &mut c,
                QEMU,
                NetworkAction::Stopped,
                "b",
                Some(info("b", false))
            ),
            vec![(NetworkAction::Stopped, "b".to_string())]
        );
        assert!(net(&c.snapshot(13), 1, "b").ports.is_empty());
        assert_eq!(
            ev(&mut c, QEMU, NetworkAction::Undefined, "b", None),
            vec![(NetworkAction::Undefined, "b".to_string())]
        );
        // Still listed by the second URI: not gone yet.
        assert!(c.snapshot(14).networks.iter().any(|n| n.name == "b"));
        ev(&mut c, "lxc:///system", NetworkAction::Undefined, "b", None);
        assert!(!c.snapshot(15).networks.iter().any(|n| n.name == "b"));
        // A relisting without "a" removes it (a missed undefine).
        c.apply(Input::LocalNetworks {
            at: 20,
            uri: QEMU.into(),
            networks: vec![],
        });
        assert!(c.snapshot(21).networks.is_empty());
        // Defined then started: both reported.
        assert_eq!(
            ev(
                &mut c,
                QEMU,
                NetworkAction::Defined,
                "c",
                Some(info("c", false))
            ),
            vec![(NetworkAction::Defined, "c".to_string())]
        );
    }

    #[test]
    fn peers_show_events_with_their_origin_and_keep_its_view() {
        // Node 1 produces ...
        let mut a = cluster(1, 100);
        hook(&mut a, 10, "started", None);
        let out = hook(&mut a, 11, "port-created", Some(port(1)));
        let msg = net_events(&out)[0].clone();
        let mut fx = a.flush_effects();
        // ... node 2 receives.
        let mut b = cluster(2, 100);
        let got = b.apply(Input::PeerMessage {
            at: 12,
            from: 1,
            msg,
        });
        assert_eq!(got.events.len(), 1);
        let e: &Event = &got.events[0];
        assert_eq!(e.node, Some(1));
        assert_eq!(e.time, 11);
        assert!(
            matches!(&e.kind, EventKind::NetworkHook { op, port: Some(p), .. } if op == "port-created" && p.owner.as_deref() == Some("vm1"))
        );
        for eff in fx.drain(..) {
            let Effect::Own(msg) = eff else { continue };
            b.apply(Input::PeerMessage {
                at: 13,
                from: 1,
                msg,
            });
        }
        let s = b.snapshot(14);
        let n = net(&s, 1, "net1");
        assert!(n.active);
        assert_eq!(n.ports, vec![port(1)]);
        // A peer's view never claims to be ours, even if it says so.
        let mut forged = n.clone();
        forged.node = 2;
        forged.name = "forged".into();
        b.apply(Input::PeerMessage {
            at: 15,
            from: 1,
            msg: OwnMessage::NetState {
                network: Box::new(forged),
            },
        });
        assert!(b.snapshot(16).networks.iter().all(|n| n.node == 1));
        // A list without "forged" drops it.
        b.apply(Input::PeerMessage {
            at: 17,
            from: 1,
            msg: OwnMessage::NetList {
                names: vec!["net1".into()],
            },
        });
        assert_eq!(b.snapshot(18).networks.len(), 1);
        // Only network kinds travel this way.
        let out = b.apply(Input::PeerMessage {
            at: 19,
            from: 1,
            msg: OwnMessage::NetEvent {
                time: 19,
                event: Box::new(EventKind::Daemon {
                    action: fenceline_proto::api::DaemonAction::Started,
                    uri: None,
                    detail: None,
                }),
            },
        });
        assert!(out.events.is_empty());
        assert_eq!(b.snapshot(20).counters.malformed_own, 1);
        // The peer's daemon leaves both groups: its networks go.
        b.apply(Input::GroupChange {
            at: 21,
            group: Group::Own,
            members: vec![GroupMember {
                nodeid: 2,
                pid: 5,
                reason: "Join".into(),
            }],
            left: vec![GroupMember {
                nodeid: 1,
                pid: 4,
                reason: "ProcDown".into(),
            }],
            joined: vec![],
        });
        assert!(b.snapshot(22).networks.is_empty());
    }

    #[test]
    fn join_announces_the_networks() {
        let mut c = cluster(1, 100);
        hook(&mut c, 10, "port-created", Some(port(1)));
        let all = c.announce_all();
        assert!(all.iter().any(|e| matches!(e, Effect::Own(OwnMessage::NetState { network }) if network.name == "net1" && network.ports.len() == 1)));
        assert!(
            all.iter()
                .any(|e| matches!(e, Effect::Own(OwnMessage::NetList { .. })))
        );
    }

    #[test]
    fn a_burst_over_the_ring_is_counted() {
        let mut c = cluster(1, 50);
        for i in 0..200u64 {
            hook(&mut c, 1000 + i, "updated", None);
        }
        let s = c.snapshot(2000);
        // 200 hook events (plus the corosync-up event) into a ring of 50.
        assert_eq!(c.events().count(), 50);
        assert_eq!(s.counters.dropped_hook_events, 150);
        // Old events that age out of the ring are not drops.
        let mut c = cluster(1, 50);
        for i in 0..50u64 {
            hook(&mut c, 1000 + i, "updated", None);
        }
        let before = c.snapshot(0).counters.dropped_hook_events;
        for i in 0..50u64 {
            hook(&mut c, 1_000_000 + i, "updated", None);
        }
        assert_eq!(c.snapshot(0).counters.dropped_hook_events, before);
    }

    #[test]
    fn a_hook_clock_far_off_is_replaced_by_the_receive_time() {
        let mut c = cluster(1, 100);
        let out = c.apply(Input::Hook {
            at: 10_000_000,
            call: HookCall {
                time: 1,
                network: "n".into(),
                op: "updated".into(),
                subop: "begin".into(),
                network_uuid: None,
                bridge: None,
                port: None,
                error: Some("bad XML: x".into()),
            },
        });
        assert_eq!(out.events[0].time, 10_000_000);
        assert!(matches!(
            &out.events[0].kind,
            EventKind::NetworkHook { error: Some(_), .. }
        ));
    }

    #[test]
    fn limits_hold() {
        let mut c = cluster(1, 10);
        for i in 0..(MAX_NETWORKS + 5) {
            c.apply(Input::Hook {
                at: 10,
                call: HookCall {
                    time: 10,
                    network: format!("n{i}"),
                    op: "started".into(),
                    subop: "begin".into(),
                    network_uuid: None,
                    bridge: None,
                    port: None,
                    error: None,
                },
            });
        }
        assert_eq!(c.snapshot(11).networks.len(), MAX_NETWORKS);
    }

    #[test]
    fn port_keys() {
        assert!(port_key(&port(1)).unwrap().starts_with("uuid:"));
        let mut p = port(1);
        p.uuid = None;
        assert!(port_key(&p).unwrap().starts_with("owner:"));
        p.owner = None;
        p.owner_uuid = None;
        assert!(port_key(&p).unwrap().starts_with("mac:"));
        p.mac = None;
        assert_eq!(port_key(&p), None);
    }
}
