//! Bounds on what peers tell us, and the ageing of fence_virtd's STORE_VM
//! records.
//!
//! - Every peer VM entry is checked before it enters the map: a name of 1 to
//!   [`MAX_PEER_NAME`] bytes without NUL, a UUID that is empty or canonical,
//!   and at most `ModelConfig::max_peer_vms` entries per peer. An entry that
//!   fails is dropped and counted (`dropped_peer_vms`); the peer is then not
//!   accounted for until its next complete inventory (we may miss a VM that
//!   runs there), and the first drop of such a run is a [`Notice`].
//! - fence_virtd never removes a record (only a leave does), so a VM that
//!   was undefined on a fence_virtd host, or moved away, would stay there
//!   forever and block fencing it elsewhere (a conflict). A fence_virtd host
//!   re-announces every local VM in a burst (on each REQUEST, join and
//!   leave); a record missing from [`STALE_AFTER_BURSTS`] bursts in a row
//!   goes. The truth rule is unaffected: absence never proves "off" while a
//!   fence_virtd host is a member (`accounting.rs`).

use fenceline_proto::api::{Millis, NodeId, is_canonical_uuid};

use super::{Cause, Cluster, DomKey, NodeRec, Notice, Output};

/// The longest VM name accepted from a peer (libvirt allows long names;
/// fence requests carry at most 127 bytes).
pub const MAX_PEER_NAME: usize = 1024;
/// STORE_VM records of one burst arrive back to back; a longer gap starts
/// the next burst.
pub const BURST_GAP_MS: Millis = 500;
/// A fence_virtd record missing from this many bursts in a row is gone.
pub const STALE_AFTER_BURSTS: u32 = 3;

/// One fence_virtd peer's current burst of records.
#[derive(Debug, Clone, Default)]
pub(super) struct Burst {
    last: Millis,
    keys: std::collections::BTreeSet<DomKey>,
}

impl Cluster {
    /// Why a peer's VM entry is not admitted, if it is not.
    pub(super) fn refuse_peer_vm(
        &self,
        from: NodeId,
        key: &DomKey,
        name: &str,
        uuid: &str,
    ) -> Option<String> {
        if name.is_empty() || name.len() > MAX_PEER_NAME || name.contains('\0') {
            return Some(format!(
                "a VM name of {} bytes (1 to {MAX_PEER_NAME}, no NUL)",
                name.len()
            ));
        }
        if !uuid.is_empty() && !is_canonical_uuid(uuid) {
            return Some("a UUID that is not in canonical form".into());
        }
        let max = self.cfg.max_peer_vms;
        let p = self.peers.get(&from)?;
        (!p.vms.contains_key(key) && p.vms.len() >= max)
            .then(|| format!("more than {max} VMs (max_peer_vms)"))
    }

    /// Drops one peer VM entry: counted, the peer not accounted for until
    /// its next complete inventory, one notice per run of drops.
    pub(super) fn drop_peer_vm(&mut self, at: Millis, from: NodeId, why: String, out: &mut Output) {
        self.counters.dropped_peer_vms += 1;
        out.changed = true;
        let n = self.nodes.entry(from).or_insert_with(|| NodeRec {
            since: at,
            ..NodeRec::default()
        });
        if n.unparsed.is_none() {
            out.notices.push(Notice::PeerVmDropped {
                from,
                why: why.clone(),
            });
        }
        n.unparsed = Some((at, format!("it sent {why}; entries were dropped")));
    }

    /// A STORE_VM record of fence_virtd peer `from` arrived: it belongs to
    /// the current burst; when it starts a new burst, the records missing
    /// from the last [`STALE_AFTER_BURSTS`] bursts go.
    pub(super) fn fvd_burst(&mut self, at: Millis, from: NodeId, key: &DomKey, out: &mut Output) {
        let p = self.peers.entry(from).or_default();
        let closed = match &p.burst {
            Some(b) if at.saturating_sub(b.last) <= BURST_GAP_MS => None,
            _ => p.burst.take(),
        };
        let b = p.burst.get_or_insert_with(Burst::default);
        b.last = at;
        b.keys.insert(key.clone());
        let Some(closed) = closed else { return };
        let mut gone = Vec::new();
        for k in p.vms.keys() {
            if closed.keys.contains(k) {
                p.missed.remove(k);
                continue;
            }
            let m = p.missed.entry(k.clone()).or_default();
            *m += 1;
            if *m >= STALE_AFTER_BURSTS && k != key {
                gone.push(k.clone());
            }
        }
        for k in &gone {
            p.vms.remove(k);
            p.missed.remove(k);
        }
        for k in gone {
            self.refresh(&k, at, Cause::Change, out);
        }
    }
}
