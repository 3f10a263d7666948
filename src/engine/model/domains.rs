//! The map of VMs: keys, what each node reports, and the ownership and
//! conflict rules that merge the reports into one entry per VM.

use std::collections::{BTreeMap, BTreeSet};

use fenceline_proto::api::{
    DomainAction, DomainState, EventKind, Migrating, Millis, NodeId, Placement,
};
use fenceline_proto::messages::Migration;

use super::{Cluster, Group, NodeRec, Output, OwnMessage, VmRecord};

/// The longest parse error kept for `status` (it may quote peer bytes).
const MAX_REASON: usize = 160;

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
pub(super) struct Obs {
    pub(super) name: String,
    pub(super) uuid: String,
    pub(super) state: DomainState,
    /// The end of a live migration this copy is, as its libvirt reports.
    pub(super) migration: Option<Migration>,
}

impl Obs {
    /// Whether `other` reports something different (worth a refresh).
    pub(super) fn differs(&self, other: &Obs) -> bool {
        self.state != other.state || self.name != other.name || self.migration != other.migration
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct PeerDomains {
    /// What this peer reported, by key.
    pub(super) vms: BTreeMap<DomKey, Obs>,
    /// Keys refreshed since the current inventory began, if one is open.
    pub(super) inventory: Option<(u64, BTreeSet<DomKey>)>,
    /// Since when this peer's placements are lost (its daemon left, or it
    /// left the membership). Cleared by a complete inventory from its
    /// returning daemon; a confirmation removes the peer instead.
    pub(super) lost: Option<Millis>,
    /// A complete inventory of this peer's daemon arrived since it joined.
    pub(super) inventoried: bool,
    /// fence_virtd peers: the current burst of STORE_VM records, and how
    /// many bursts in a row each record was missing from.
    pub(super) burst: Option<super::peer_data::Burst>,
    pub(super) missed: BTreeMap<DomKey, u32>,
}

/// The merged view of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) name: String,
    pub(super) uuid: String,
    pub(super) state: DomainState,
    pub(super) owner: Option<NodeId>,
    pub(super) since: Millis,
    pub(super) uri: Option<String>,
    pub(super) conflict: bool,
    /// Active on two nodes by a live migration one of them reports.
    pub(super) migrating: Option<Migrating>,
    pub(super) placements: Vec<Placement>,
}

/// Why an entry is being recomputed; decides the event for a removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    Change,
    /// The host's daemon or the host left: its placements are lost.
    Lost,
    /// The host's departure was confirmed: its lost placements go.
    Purge,
}

impl Cluster {
    pub(super) fn peer_record(
        &mut self,
        at: Millis,
        from: NodeId,
        rec: VmRecord,
        out: &mut Output,
    ) {
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
        if self
            .refuse_peer_vm(from, &key, &rec.name, &rec.uuid)
            .is_none()
        {
            self.fvd_burst(at, from, &key, out);
        }
        let obs = Obs {
            name: rec.name,
            uuid: rec.uuid,
            state: rec.state,
            migration: None,
        };
        self.upsert_peer(at, from, key, obs, out);
    }

    pub(super) fn upsert_peer(
        &mut self,
        at: Millis,
        from: NodeId,
        key: DomKey,
        obs: Obs,
        out: &mut Output,
    ) {
        if let Some(why) = self.refuse_peer_vm(from, &key, &obs.name, &obs.uuid) {
            return self.drop_peer_vm(at, from, why, out);
        }
        let p = self.peers.entry(from).or_default();
        if let Some((_, seen)) = p.inventory.as_mut() {
            seen.insert(key.clone());
        }
        let changed = p.vms.get(&key).is_none_or(|o| o.differs(&obs));
        p.vms.insert(key.clone(), obs);
        if changed {
            self.refresh(&key, at, Cause::Change, out);
        }
    }

    pub(super) fn peer_message(
        &mut self,
        at: Millis,
        from: NodeId,
        msg: OwnMessage,
        out: &mut Output,
    ) {
        if Some(from) == self.local_nodeid {
            return self.own_delivered(&msg);
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
            // Handled in `apply` (fence/claim.rs), this node's own included.
            OwnMessage::Claim { .. } => {}
            OwnMessage::Confirmed { nodeid, source } => {
                let source = format!("{source} on {}", self.node_label(from));
                // Refused here (the node is up in our view): nothing changes.
                let _ = self.confirm_node(at, nodeid, &source, out);
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
                    let obs = Obs {
                        name: v.name,
                        uuid: v.uuid,
                        state: v.state,
                        migration: v.migration,
                    };
                    self.upsert_peer(at, from, key, obs, out);
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
            OwnMessage::InventoryEnd { generation, count } => {
                self.inventory_end(at, from, generation, count, out);
            }
            OwnMessage::Unknown => {
                // A newer peer's message type (see `own.rs`): ignorable.
                self.counters.malformed_own += 1;
                out.changed = true;
            }
        }
    }

    /// A peer's inventory ends: what it did not refresh is gone, unless the
    /// inventory proves nothing (libvirt not fully listed, a chunk lost, an
    /// older peer that sends no count).
    fn inventory_end(
        &mut self,
        at: Millis,
        from: NodeId,
        generation: u64,
        count: Option<u64>,
        out: &mut Output,
    ) {
        let complete = self
            .nodes
            .get(&from)
            .and_then(|n| n.info.as_ref())
            .is_some_and(|i| i.inventory_complete);
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        let seen = match p.inventory.take() {
            Some((g, seen)) if g == generation => seen,
            // A mismatched end: ignore it (a begin was lost, or a message
            // of the inventory did not parse); the next inventory fixes it.
            _ => return,
        };
        // An incomplete inventory (libvirt down or not listed yet) proves
        // nothing about what it lacks: nothing is removed and lost
        // placements stay lost.
        if !complete {
            return;
        }
        if count != Some(seen.len() as u64) {
            // Fewer domains than announced: a chunk was lost (or the peer is
            // older and sends no count). Its upserts stand.
            if count.is_some() {
                self.counters.inventory_gaps += 1;
                out.changed = true;
            }
            return;
        }
        let mut touched: Vec<DomKey> = p
            .vms
            .keys()
            .filter(|k| !seen.contains(k))
            .cloned()
            .collect();
        for k in &touched {
            p.vms.remove(k);
        }
        p.inventoried = true;
        if p.lost.take().is_some() {
            touched.extend(p.vms.keys().cloned());
        }
        if let Some(n) = self.nodes.get_mut(&from) {
            n.unparsed = None;
        }
        out.changed = true;
        for k in touched {
            self.refresh(&k, at, Cause::Change, out);
        }
    }

    /// A CPG message did not parse. A fenceline peer whose own-group message
    /// did not parse may have told us something we missed (version skew):
    /// it is not accounted for until its next complete inventory, and an
    /// inventory it has open proves nothing.
    pub(super) fn malformed(
        &mut self,
        at: Millis,
        group: Group,
        from: NodeId,
        reason: String,
        out: &mut Output,
    ) {
        out.changed = true;
        match group {
            Group::FenceAgents => self.counters.malformed_fence_agents += 1,
            Group::Own => self.counters.malformed_own += 1,
        }
        if group != Group::Own || Some(from) == self.local_nodeid {
            return;
        }
        let why: String = reason.chars().take(MAX_REASON).collect();
        self.nodes
            .entry(from)
            .or_insert_with(|| NodeRec {
                since: at,
                ..NodeRec::default()
            })
            .unparsed = Some((at, why));
        if let Some(p) = self.peers.get_mut(&from) {
            p.inventory = None;
        }
    }

    /// Recomputes one entry of the map from every observation and emits the
    /// events that describe the difference.
    pub(super) fn refresh(&mut self, key: &DomKey, at: Millis, cause: Cause, out: &mut Output) {
        self.migration_refresh(key, at);
        // (node, what it reported, local URI, lost since)
        let mut placements: Vec<(NodeId, &Obs, Option<&str>, Option<Millis>)> = Vec::new();
        let me = self.local_nodeid.unwrap_or(0);
        let local = self.local_obs(key);
        if let Some((o, uri)) = local {
            placements.push((me, o, Some(uri), None));
        }
        for (id, p) in &self.peers {
            if Some(*id) == self.local_nodeid {
                continue;
            }
            if let Some(o) = p.vms.get(key) {
                placements.push((*id, o, None, p.lost));
            }
        }
        let old = self.map.get(key).cloned();
        if placements.is_empty() {
            if let Some(old) = old {
                self.map.remove(key);
                let action = match cause {
                    Cause::Purge => DomainAction::Purged,
                    Cause::Change | Cause::Lost => DomainAction::Removed,
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
        let active: Vec<&(NodeId, &Obs, Option<&str>, Option<Millis>)> = placements
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
        let migrating = migration_of(&active);
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
            // Active on two nodes: a conflict, unless a live migration
            // explains it (the router treats both alike: off destroys
            // both copies, on and reboot are refused).
            _ => (None, active[0].1.state, migrating.is_none(), active[0]),
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
                lost: p.3.is_some(),
                lost_since: p.3,
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
            migrating,
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
        if let Some(m) = migrating.filter(|_| old.migrating != migrating) {
            let ev = dom(
                DomainAction::Migrating,
                Some(old.state),
                old.owner,
                Some(format!("node {} → node {}", m.from, m.to)),
            );
            self.emit(at, ev, out);
        } else if conflict && !old.conflict {
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
        } else if old.owner != new.owner && old.owner.is_some() && new.owner.is_some() {
            // From no owner to one is not a move: it is this daemon learning
            // its node id (its own VMs before the corosync join), or a VM
            // starting (a state change, below).
            let ev = dom(DomainAction::Owner, Some(old.state), old.owner, None);
            self.emit(at, ev, out);
        } else if old.state != new.state {
            let ev = dom(DomainAction::State, Some(old.state), old.owner, None);
            self.emit(at, ev, out);
        } else if cause == Cause::Lost {
            let ev = dom(
                DomainAction::Lost,
                Some(old.state),
                old.owner,
                Some(lost_detail(&new.placements)),
            );
            self.emit(at, ev, out);
        }
    }
}

/// The live migration that explains two active copies: one reports itself
/// the target (incoming) or the source (outgoing); neither is lost.
fn migration_of(active: &[&(NodeId, &Obs, Option<&str>, Option<Millis>)]) -> Option<Migrating> {
    let [a, b] = active else {
        return None;
    };
    if a.3.is_some() || b.3.is_some() {
        return None;
    }
    let (from, to) = match (a.1.migration, b.1.migration) {
        (Some(Migration::Incoming), _) | (_, Some(Migration::Outgoing)) => (b.0, a.0),
        (_, Some(Migration::Incoming)) | (Some(Migration::Outgoing), _) => (a.0, b.0),
        (None, None) => return None,
    };
    Some(Migrating { from, to })
}

fn lost_detail(placements: &[Placement]) -> String {
    let lost: Vec<String> = placements
        .iter()
        .filter(|p| p.lost)
        .map(|p| format!("node {} (last {})", p.nodeid, p.state))
        .collect();
    format!("lost on {}: the VM may still be there", lost.join(", "))
}

fn conflict_detail(placements: &[Placement]) -> String {
    let on: Vec<String> = placements
        .iter()
        .filter(|p| p.state.is_active())
        .map(|p| format!("node {} ({})", p.nodeid, p.state))
        .collect();
    format!("active on {}", on.join(", "))
}
