//! libvirt networks in the model: hook events, network lifecycle events,
//! the per-node networks view, and how both cross the cluster.
//!
//! Local networks come from three sources on this node:
//! - libvirt listings ([`Input::LocalNetworks`](super::Input::LocalNetworks), at connect and reconcile)
//!   and lifecycle events ([`Input::LocalNetwork`](super::Input::LocalNetwork), re-read by the driver):
//!   they own the `active` flag and the list of networks;
//! - the libvirt port listing ([`Input::LocalPorts`](super::Input::LocalPorts)), which seeds the ports
//!   that existed before this daemon started;
//! - hook calls ([`Input::Hook`](super::Input::Hook)): ports come and go, `started`/`stopped`
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
//! (`peers.rs`: that side: announcements, peer messages, the merged view.)

use std::collections::{BTreeMap, BTreeSet};

use super::{Cluster, Effect, HookCall, NetInfo, Output, OwnMessage};
use fenceline_proto::api::{EventKind, Millis, NetworkAction, NetworkView, NodeId, PortView};

/// Networks kept per node (local or peer); more are ignored and counted.
pub const MAX_NETWORKS: usize = 256;
/// Ports kept per network; more are ignored and counted.
pub const MAX_PORTS: usize = 4096;
/// A hook time further than this from the receive time is replaced by the
/// receive time (the hook runs on this host; a wild clock value is an error).
const MAX_HOOK_SKEW_MS: u64 = 5 * 60 * 1000;

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
}

mod peers;
#[cfg(test)]
mod tests;
