//! Which nodes are accounted for, and the truth rule the fence router
//! applies before it says a VM is off (README "When fenceline says off").
//!
//! A node is accounted for when it is a corosync member whose fenceline
//! daemon announced a complete inventory (every configured libvirt URI
//! listed since its last (re)connect) and sent it, or a member running
//! fence_virtd in `fence-agents`, or a departed node an operator confirmed
//! down. The nodes to account for: corosync's nodelist and every node ever
//! seen.

use std::collections::BTreeSet;

use fenceline_proto::api::{FenceOp, MembershipAction, Millis, NodeId};

use super::{Cluster, DomKey, Effect, Output, OwnMessage};

pub(super) fn ago(at: Millis, since: Millis) -> String {
    format!("{} ago", fenceline_proto::display::age(at, since))
}

impl Cluster {
    /// A member running fence_virtd (not fenceline) in `fence-agents`.
    pub(super) fn is_fence_virtd(&self, id: NodeId) -> bool {
        // This node runs fenceline, whatever its own-group join says.
        Some(id) != self.local_nodeid
            && self.nodes.get(&id).is_some_and(|n| {
                n.member && !n.fa_pids.is_empty() && n.own_pids.is_empty() && n.info.is_none()
            })
    }

    /// Every configured and every known libvirt URI of this host has been
    /// listed since its last (re)connect.
    pub(super) fn local_complete(&self) -> bool {
        !self.local.is_empty()
            && self.local.values().all(|u| u.listed)
            && self
                .cfg
                .libvirt_uris
                .iter()
                .all(|uri| self.local.get(uri).is_some_and(|u| u.listed))
    }

    /// `Ok(None)`: accounted for; `Ok(Some(how))`: accounted for by a
    /// confirmation; `Err(why)`: not accounted for.
    pub(super) fn accounting(&self, id: NodeId, at: Millis) -> Result<Option<String>, String> {
        let Some(n) = self.nodes.get(&id) else {
            return Err("unknown node".into());
        };
        if Some(id) == self.local_nodeid {
            return if !self.corosync.connected {
                Err("this daemon has lost corosync".into())
            } else if !self.local_complete() {
                Err("this host's libvirt inventory is incomplete".into())
            } else {
                Ok(None)
            };
        }
        let has_daemon = !n.fa_pids.is_empty() || !n.own_pids.is_empty();
        if let Some((when, by)) = &n.confirmed
            && !(n.member && has_daemon)
        {
            return Ok(Some(format!("confirmed down {} by {by}", ago(at, *when))));
        }
        if let Some(how) = self.self_fenced(id, at) {
            return Ok(Some(how));
        }
        if !n.member {
            return Err(format!(
                "left the membership {}, not confirmed down",
                ago(at, n.since)
            ));
        }
        if !has_daemon {
            return Err("its daemon is down".into());
        }
        if self.is_fence_virtd(id) {
            return Ok(None);
        }
        if let Some((when, why)) = &n.unparsed {
            return Err(format!(
                "its messages cannot be parsed (a version this build does not read?): {} {why}",
                ago(at, *when)
            ));
        }
        let complete = n.info.as_ref().is_some_and(|i| i.inventory_complete);
        let sent = self.peers.get(&id).is_some_and(|p| p.inventoried);
        if n.own_pids.is_empty() {
            Err("its fenceline daemon has not joined its group".into())
        } else if !complete || !sent {
            Err("its inventory is incomplete".into())
        } else {
            Ok(None)
        }
    }

    /// The nodes not accounted for, with the reason.
    pub(super) fn unaccounted(&self, at: Millis) -> Vec<(NodeId, String)> {
        self.nodes
            .keys()
            .filter_map(|id| self.accounting(*id, at).err().map(|why| (*id, why)))
            .collect()
    }

    fn why_node(&self, id: NodeId, at: Millis) -> String {
        let why = self
            .accounting(id, at)
            .err()
            .unwrap_or_else(|| "its daemon is down".into());
        format!("{}: {why}", self.node_label(id))
    }

    /// Why fenceline may not say now that `target` is off (or, for `on`,
    /// start it): `None` when it may. `owner_acted`: an active holder's
    /// libvirt reported the domain inactive for this request.
    pub(super) fn untrue(
        &self,
        at: Millis,
        target: &str,
        op: FenceOp,
        owner_acted: bool,
    ) -> Option<String> {
        self.untrue_vouched(at, target, op, owner_acted, &BTreeSet::new())
    }

    /// [`untrue`](Self::untrue), where the fence_virtd members in
    /// `vouched` answer for themselves: the requester waits for one of
    /// their replies, which reads their own libvirt.
    pub(super) fn untrue_vouched(
        &self,
        at: Millis,
        target: &str,
        op: FenceOp,
        owner_acted: bool,
        vouched: &BTreeSet<NodeId>,
    ) -> Option<String> {
        let lost: Vec<(NodeId, bool, Millis)> = self
            .entry_of(target)
            .map(|e| {
                e.placements
                    .iter()
                    .filter(|p| p.lost)
                    .map(|p| (p.nodeid, p.state.is_active(), p.lost_since.unwrap_or(at)))
                    .collect()
            })
            .unwrap_or_default();
        if let Some((id, _, since)) = lost.iter().find(|l| l.1) {
            return Some(format!(
                "`{target}` was last seen running on {} (lost {}; {}), which is not confirmed down; refusing to {}",
                self.node_label(*id),
                ago(at, *since),
                self.why_node(*id, at),
                claim(op)
            ));
        }
        if owner_acted {
            return None;
        }
        if let Some((id, _, since)) = lost.first() {
            return Some(format!(
                "`{target}` has a copy on {} whose state is unknown since {} ({}); refusing to {}",
                self.node_label(*id),
                ago(at, *since),
                self.why_node(*id, at),
                claim(op)
            ));
        }
        // `unknown_vm_without_quorum` is the operator's explicit opt-in to
        // fence_virtd's unsafe rule: it also waives the accounting.
        if self.cfg.fence.unknown_without_quorum {
            return None;
        }
        let un = self.unaccounted(at);
        if !un.is_empty() {
            let list: Vec<String> = un
                .iter()
                .map(|(id, why)| format!("{}: {why}", self.node_label(*id)))
                .collect();
            return Some(format!(
                "not every node is accounted for ({}); `{target}` may run there; refusing to {}",
                list.join("; "),
                claim(op)
            ));
        }
        // fence_virtd sends no inventory: a VM may run on such a peer
        // unannounced (its libvirtd was down at its start, or its record is
        // not out yet). Only its own answer, as the holder, proves "off".
        if let Some(id) = self
            .nodes
            .keys()
            .find(|id| self.is_fence_virtd(**id) && !vouched.contains(id))
        {
            return Some(format!(
                "{} runs fence_virtd, which announces no complete inventory: `{target}` may run there unannounced; refusing to {}",
                self.node_label(*id),
                claim(op)
            ));
        }
        None
    }

    pub(super) fn entry_of(&self, target: &str) -> Option<&super::Entry> {
        let mode = self.cfg.fence.name_match;
        let key_hit = if mode == super::NameMatch::Uuid {
            self.map.get(&DomKey::of("", target))
        } else {
            None
        };
        key_hit.or_else(|| {
            self.map
                .values()
                .find(|e| mode.matches(target, &e.name, &e.uuid))
        })
    }

    /// The operator confirms that `node` (a name or an id) is down; the
    /// confirmation goes to every fenceline peer too.
    pub(super) fn confirm(
        &mut self,
        at: Millis,
        node: &str,
        source: &str,
        out: &mut Output,
    ) -> Result<String, String> {
        let id = self.confirm_target(node)?;
        let detail = self.confirm_node(at, id, source, out)?;
        out.effects.push(Effect::Own(OwnMessage::Confirmed {
            nodeid: id,
            source: source.to_string(),
        }));
        Ok(detail)
    }

    pub(super) fn confirm_target(&self, node: &str) -> Result<NodeId, String> {
        self.nodes
            .iter()
            .find(|(id, n)| {
                n.name
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(node))
                    || id.to_string() == node
            })
            .map(|(id, _)| *id)
            .ok_or_else(|| format!("no node `{node}` in this cluster"))
    }

    /// Records that node `id` is down (an operator's word, here or on a
    /// peer): its lost placements leave the map.
    pub(super) fn confirm_node(
        &mut self,
        at: Millis,
        id: NodeId,
        source: &str,
        out: &mut Output,
    ) -> Result<String, String> {
        if Some(id) == self.local_nodeid {
            return Err("this is the local node: it is not down".into());
        }
        let n = &self.nodes[&id];
        if n.member && (!n.fa_pids.is_empty() || !n.own_pids.is_empty()) {
            return Err(format!(
                "{} is a member with a running daemon: it is not down",
                self.node_label(id)
            ));
        }
        if let Some(n) = self.nodes.get_mut(&id) {
            n.confirmed = Some((at, source.to_string()));
        }
        self.purge_node(at, id, out);
        let detail = format!(
            "{source} asserts that {} is down (powered off or fenced); its VMs are treated as off",
            self.node_label(id)
        );
        self.membership_event(
            at,
            MembershipAction::Confirmed,
            Some(id),
            Some(detail.clone()),
            out,
        );
        Ok(detail)
    }
}

fn claim(op: FenceOp) -> &'static str {
    match op {
        FenceOp::Status => "answer off",
        FenceOp::On => "start it",
        _ => "answer ok",
    }
}
