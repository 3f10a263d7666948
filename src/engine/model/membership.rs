//! Nodes and membership: corosync up/down, quorum, CPG joins and leaves;
//! a node's VMs become lost placements when its daemons or the node leave
//! (never silently purged), and leave the map when an operator confirms
//! the node down.

use std::collections::BTreeSet;

use fenceline_proto::api::{EventKind, Link, MembershipAction, Millis, NodeId};

use super::{Cause, Cluster, DomKey, Effect, Group, GroupMember, Output, PeerInfo};

#[derive(Debug, Clone, Default)]
pub(super) struct NodeRec {
    pub(super) name: Option<String>,
    pub(super) member: bool,
    pub(super) since: Millis,
    pub(super) fa_pids: BTreeSet<u32>,
    pub(super) own_pids: BTreeSet<u32>,
    pub(super) info: Option<PeerInfo>,
    /// An operator confirmed the node down (when, and the request's source);
    /// cleared when it joins the membership again.
    pub(super) confirmed: Option<(Millis, String)>,
    /// A message of its daemon did not parse (when, why): not accounted for
    /// until its next complete inventory is applied.
    pub(super) unparsed: Option<(Millis, String)>,
}

impl Cluster {
    pub(super) fn node_name(&self, id: NodeId) -> Option<String> {
        self.nodes.get(&id).and_then(|n| n.name.clone())
    }

    pub(super) fn membership_event(
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

    pub(super) fn corosync_up(
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

    pub(super) fn corosync_down(&mut self, at: Millis, error: String, out: &mut Output) {
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
        // What was in flight is lost; the rejoin re-announces everything.
        self.stops_in_flight.clear();
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

    pub(super) fn quorum(
        &mut self,
        at: Millis,
        quorate: bool,
        members: Vec<NodeId>,
        out: &mut Output,
    ) {
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
                if is_member {
                    n.confirmed = None;
                }
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
                self.lose_node(at, id, out);
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

    pub(super) fn group_change(
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
        // Every peer with records but no daemon left in either group loses
        // its placements. This also reconciles after a corosync reconnect.
        let gone: Vec<NodeId> = self
            .peers
            .keys()
            .copied()
            .filter(|id| self.no_daemon(*id))
            .collect();
        for id in gone {
            self.lose_node(at, id, out);
        }
        // A fence_virtd peer that is back re-announces every VM it has (it
        // sends no inventories): its placements are no longer lost.
        let back: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(id, p)| p.lost.is_some() && self.is_fence_virtd(**id))
            .map(|(id, _)| *id)
            .collect();
        for id in back {
            if let Some(p) = self.peers.get_mut(&id) {
                p.lost = None;
                let keys: Vec<_> = p.vms.keys().cloned().collect();
                for k in keys {
                    self.refresh(&k, at, Cause::Change, out);
                }
            }
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

    /// Nodes in `fence-agents` (any daemon) and the highest of them.
    pub(super) fn fa_members(&self) -> BTreeSet<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.fa_pids.is_empty())
            .map(|(id, _)| *id)
            .collect()
    }

    /// No daemon of this node is in either group (or the node is unknown).
    pub(super) fn no_daemon(&self, id: NodeId) -> bool {
        self.nodes
            .get(&id)
            .is_none_or(|n| n.fa_pids.is_empty() && n.own_pids.is_empty())
    }

    /// A fenceline peer's data comes from the own group (FIFO per sender, with
    /// removals); its STORE_VM copies would race with that, so they are ignored.
    pub(super) fn is_fenceline_peer(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| !n.own_pids.is_empty())
    }

    /// A node's daemons or the node left: its VMs stay in the map as lost
    /// placements (each with a `lost` event; the VM may still run there),
    /// and its networks go.
    pub(super) fn lose_node(&mut self, at: Millis, id: NodeId, out: &mut Output) {
        self.forget_peer_networks(id, out);
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.inventory = None;
        p.inventoried = false;
        if p.lost.is_some() {
            return;
        }
        p.lost = Some(at);
        let keys: Vec<DomKey> = p.vms.keys().cloned().collect();
        for k in &keys {
            self.refresh(k, at, Cause::Lost, out);
        }
    }

    /// A node confirmed down: its lost placements leave the map (each with
    /// a `purged` event).
    pub(super) fn purge_node(&mut self, at: Millis, id: NodeId, out: &mut Output) {
        self.forget_peer_networks(id, out);
        let Some(p) = self.peers.remove(&id) else {
            return;
        };
        for k in p.vms.keys() {
            self.refresh(k, at, Cause::Purge, out);
        }
    }
}
