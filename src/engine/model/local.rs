//! This host's libvirt view: per-URI health and domains, and how they are
//! announced to the cluster (STORE_VM records and own-group inventories).

use std::collections::{BTreeMap, BTreeSet};

use fenceline_proto::api::{
    DaemonAction, DomainAction, DomainState, EventKind, LibvirtHealth, Millis,
};

use super::{
    Cause, Cluster, DomKey, Effect, LocalDomain, Obs, Output, OwnMessage, PeerInfo, VmRecord,
};

#[derive(Debug, Clone)]
pub(super) struct UriRec {
    pub(super) health: LibvirtHealth,
    pub(super) domains: BTreeMap<DomKey, Obs>,
    /// Listed since the last (re)connect.
    pub(super) listed: bool,
}

impl Cluster {
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
        let count = Some(merged.len() as u64);
        let vms: Vec<LocalDomain> = merged
            .values()
            .map(|o| LocalDomain {
                name: o.name.clone(),
                uuid: o.uuid.clone(),
                state: o.state,
                migration: o.migration,
            })
            .collect();
        self.track_sent(&vms);
        let mut v = vec![
            Effect::StoreVms(records),
            Effect::Own(OwnMessage::Info(self.peer_info())),
            Effect::Own(OwnMessage::InventoryBegin { generation: g }),
            Effect::Own(OwnMessage::Vms { vms }),
            Effect::Own(OwnMessage::InventoryEnd {
                generation: g,
                count,
            }),
        ];
        v.extend(nets);
        v
    }

    pub(super) fn peer_info(&self) -> PeerInfo {
        PeerInfo {
            version: self.cfg.version.clone(),
            started_at: self.cfg.started_at,
            libvirt: self.local.values().map(|u| u.health.clone()).collect(),
            inventory_complete: self.local_complete(),
            key_digests: self.cfg.key_digests.clone(),
            self_fence_secs: self.self_fence_secs(),
        }
    }

    pub(super) fn uri_rec(&mut self, uri: &str, at: Millis) -> &mut UriRec {
        self.local.entry(uri.to_string()).or_insert_with(|| UriRec {
            health: LibvirtHealth {
                uri: uri.to_string(),
                connected: false,
                since: at,
                error: None,
                domains: 0,
            },
            domains: BTreeMap::new(),
            listed: false,
        })
    }

    pub(super) fn libvirt_link(
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
        // A (re)connect needs a fresh listing before the inventory is
        // complete again.
        rec.listed = false;
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

    pub(super) fn local_list(
        &mut self,
        at: Millis,
        uri: String,
        domains: Vec<LocalDomain>,
        out: &mut Output,
    ) {
        let mut fresh = BTreeMap::new();
        for d in domains {
            fresh.insert(
                DomKey::of(&d.name, &d.uuid),
                Obs {
                    name: d.name,
                    uuid: d.uuid,
                    state: d.state,
                    migration: d.migration,
                },
            );
        }
        let was_complete = self.local_complete();
        let rec = self.uri_rec(&uri, at);
        rec.listed = true;
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
                        migration: None,
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
        if !was_complete && self.local_complete() {
            // Complete now: the peers get the whole inventory, which clears
            // what they kept as lost.
            let all = self.announce_all();
            out.effects
                .extend(all.into_iter().filter(|e| matches!(e, Effect::Own(_))));
        }
        out.changed = true;
    }

    /// This host's view of one domain across all URIs, with the URI it came
    /// from; when several URIs have it, the most active state wins.
    pub(super) fn local_obs(&self, key: &DomKey) -> Option<(&Obs, &str)> {
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
    pub(super) fn local_merged(&self) -> BTreeMap<DomKey, Obs> {
        let keys: BTreeSet<&DomKey> = self.local.values().flat_map(|u| u.domains.keys()).collect();
        keys.into_iter()
            .filter_map(|k| self.local_obs(k).map(|(o, _)| (k.clone(), o.clone())))
            .collect()
    }

    pub(super) fn announce_local(&mut self, keys: &[DomKey], out: &mut Output) {
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
                    migration: o.migration,
                });
            }
        }
        if !records.is_empty() {
            self.track_sent(&vms);
            out.effects.push(Effect::StoreVms(records));
            out.effects.push(Effect::Own(OwnMessage::Vms { vms }));
        }
    }

    /// Records the stops this host announces: until its own message comes
    /// back in total order, every peer still sees the domain active here,
    /// so a REQUEST delivered before it expects this host to answer.
    fn track_sent(&mut self, vms: &[LocalDomain]) {
        for v in vms {
            let key = DomKey::of(&v.name, &v.uuid);
            let active = v.state.is_active();
            let was = self.sent_active.insert(key.clone(), active);
            if was == Some(true) && !active {
                *self.stops_in_flight.entry(key).or_default() += 1;
            }
        }
    }

    /// One of this host's own-group messages came back in total order.
    pub(super) fn own_delivered(&mut self, msg: &OwnMessage) {
        if let OwnMessage::Vms { vms } = msg {
            for v in vms {
                let key = DomKey::of(&v.name, &v.uuid);
                if !v.state.is_active()
                    && let Some(n) = self.stops_in_flight.get_mut(&key)
                {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.stops_in_flight.remove(&key);
                    }
                }
            }
        }
    }

    /// Peers still see `key` active here: its stop is not delivered yet.
    pub(super) fn stop_in_flight(&self, key: &DomKey) -> bool {
        self.stops_in_flight.contains_key(key)
    }

    /// One local domain changed or appeared.
    pub(super) fn local_domain(
        &mut self,
        at: Millis,
        uri: String,
        domain: LocalDomain,
        out: &mut Output,
    ) {
        let key = DomKey::of(&domain.name, &domain.uuid);
        if self.hold_during_reboot(&key, &uri, &domain) {
            return;
        }
        let rec = self.uri_rec(&uri, at);
        let obs = Obs {
            name: domain.name.clone(),
            uuid: domain.uuid.clone(),
            state: domain.state,
            migration: domain.migration,
        };
        let changed = rec.domains.get(&key).is_none_or(|o| o.differs(&obs));
        rec.domains.insert(key.clone(), obs);
        rec.health.domains = rec.domains.len();
        if changed {
            self.refresh(&key, at, Cause::Change, out);
            self.announce_local(&[key], out);
        }
    }

    /// One local domain disappeared.
    pub(super) fn local_gone(
        &mut self,
        at: Millis,
        uri: String,
        name: String,
        uuid: String,
        out: &mut Output,
    ) {
        let key = DomKey::of(&name, &uuid);
        let rec = self.uri_rec(&uri, at);
        if rec.domains.remove(&key).is_some() {
            rec.health.domains = rec.domains.len();
            self.refresh(&key, at, Cause::Change, out);
            let still_local = self.local_obs(&key).is_some();
            if !still_local && self.local_nodeid.is_some() {
                out.effects.push(Effect::Own(OwnMessage::Gone {
                    vms: vec![LocalDomain {
                        name,
                        uuid,
                        state: DomainState::Shutoff,
                        migration: None,
                    }],
                }));
            } else if still_local {
                self.announce_local(&[key], out);
            }
        }
    }

    /// A local domain rebooted in place: an event, nothing else changes.
    pub(super) fn local_rebooted(
        &mut self,
        at: Millis,
        name: String,
        uuid: String,
        out: &mut Output,
    ) {
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
            self.emit(at, ev, out);
        }
    }
}
