//! The immutable picture of the cluster the state task publishes.

use std::collections::BTreeMap;

use fenceline_proto::api::{
    DaemonKind, DomainView, LibvirtHealth, LocalView, Millis, NodeId, NodeView, Snapshot,
};

use super::Cluster;

impl Cluster {
    /// This daemon's readiness: its groups (while corosync is up), its
    /// inventory, its listeners.
    fn local_view(&self) -> LocalView {
        let me = self
            .local_nodeid
            .filter(|_| self.corosync.connected)
            .and_then(|id| self.nodes.get(&id));
        LocalView {
            fence_group: me.is_some_and(|n| !n.fa_pids.is_empty()),
            own_group: me.is_some_and(|n| !n.own_pids.is_empty()),
            inventory_complete: self.local_complete(),
            listeners: self.listeners.clone(),
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
                let (libvirt, version, key_digests) = if is_local {
                    (
                        local_health.clone(),
                        Some(self.cfg.version.clone()),
                        self.cfg.key_digests.clone(),
                    )
                } else {
                    match &n.info {
                        Some(i) => (
                            i.libvirt.clone(),
                            Some(i.version.clone()),
                            i.key_digests.clone(),
                        ),
                        None => (Vec::new(), None, Default::default()),
                    }
                };
                let (accounted, accounting) = match self.accounting(*id, at) {
                    Ok(how) => (true, how),
                    Err(why) => (false, Some(why)),
                };
                NodeView {
                    accounted,
                    accounting,
                    nodeid: *id,
                    name: n.name.clone(),
                    member: n.member,
                    since: n.since,
                    daemons,
                    vm_count: vm_count.get(id).copied().unwrap_or(0),
                    libvirt,
                    version,
                    key_digests,
                    self_fence_secs: self.announced_self_fence(*id),
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
                migrating: e.migrating,
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
            local: self.local_view(),
        }
    }
}
