//! How networks cross the cluster: what goes out to peers (the full
//! announcement on join, the coalesced per-batch states), what comes in from
//! them, and every node's networks as the snapshot shows them.

use std::collections::BTreeSet;

use super::{MAX_HOOK_SKEW_MS, MAX_NETWORKS, MAX_PORTS, is_net_kind};
use crate::engine::model::{Cluster, Effect, MAX_ANNOUNCED_PORTS, Output, OwnMessage};
use fenceline_proto::api::{Millis, NetworkView, NodeId};

impl Cluster {
    /// A peer's network message.
    pub(in crate::engine::model) fn peer_net_message(
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
    pub(in crate::engine::model) fn forget_peer_networks(&mut self, id: NodeId, out: &mut Output) {
        if self.nets.peers.remove(&id).is_some() {
            out.changed = true;
        }
    }

    /// Peers whose daemon is in neither group take their networks along.
    pub(in crate::engine::model) fn prune_peer_networks(&mut self, out: &mut Output) {
        let gone: Vec<NodeId> = self
            .nets
            .peers
            .keys()
            .copied()
            .filter(|id| self.no_daemon(*id))
            .collect();
        for id in gone {
            self.forget_peer_networks(id, out);
        }
    }

    /// Every local network's state and the list of names (join, resync).
    pub(in crate::engine::model) fn announce_networks(&self) -> Vec<Effect> {
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
    pub(in crate::engine::model) fn network_views(&self) -> Vec<NetworkView> {
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
