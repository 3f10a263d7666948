//! What libvirt has: one domain read back, the full domain listing, the
//! networks and their ports.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::debug;
use virt::domain::Domain;
use virt::sys;

use super::super::ffi;
use super::super::reboot_filter::Verdict;
use super::session::Session;
use super::{Stop, Worker, is_no_domain, mono};
use crate::engine::model::{Input, LocalDomain, NetInfo};
use fenceline_proto::api::{DomainState, now_millis};
use fenceline_proto::domxml;

/// A domain read back from libvirt.
pub(super) enum Read {
    Found {
        name: String,
        state: DomainState,
        reason: i32,
    },
    Gone,
    /// A non-fatal error; the periodic reconcile will catch up.
    Unreadable,
}

impl Worker {
    /// Reads a domain's name and state by UUID.
    pub(super) fn read(&self, s: &Session, uuid: &str) -> Result<Read, Stop> {
        let dom = match s.conn.lookup_domain_by_uuid_string(uuid) {
            Ok(d) => d,
            Err(e) if is_no_domain(&e) => return Ok(Read::Gone),
            Err(e) => {
                self.check_api(s, "looking up domain", &e)?;
                return Ok(Read::Unreadable);
            }
        };
        self.read_dom(s, &dom)
    }

    pub(super) fn read_dom(&self, s: &Session, dom: &Domain) -> Result<Read, Stop> {
        let (raw_state, reason) = match ffi::domain_state(dom) {
            Ok(x) => x,
            Err(e) if is_no_domain(&e) => return Ok(Read::Gone),
            Err(e) => {
                self.check_api(s, "reading domain state", &e)?;
                return Ok(Read::Unreadable);
            }
        };
        let name = match dom.name() {
            Ok(n) => n,
            Err(e) => {
                self.check_api(s, "reading domain name", &e)?;
                return Ok(Read::Unreadable);
            }
        };
        Ok(Read::Found {
            name,
            state: DomainState::from_raw(i64::from(raw_state)),
            reason,
        })
    }

    /// Full listing (active and inactive) → `LocalList`, preceded by
    /// `LibvirtLink { connected: true }` when `announce`. Ok(false) when the
    /// listing call failed on a live connection (retried at the next reconcile).
    pub(super) fn list_all(
        &self,
        s: &mut Session,
        origin: Instant,
        announce: bool,
    ) -> Result<bool, Stop> {
        let doms = match s.conn.list_all_domains(0) {
            Ok(d) => d,
            Err(e) => {
                self.check_api(s, "listing domains", &e)?;
                return Ok(false);
            }
        };
        // States in bulk: two state-filtered listings are two RPCs, where a
        // virDomainGetState per domain is one RPC each (10,000 domains: 3 s
        // against 0.3 s). Only domains in neither list are read one by one.
        // Name and UUID travel with each listed domain, so they cost nothing.
        let mut known: HashMap<String, DomainState> = HashMap::new();
        for (flag, state) in [
            (sys::VIR_CONNECT_LIST_DOMAINS_RUNNING, DomainState::Running),
            (sys::VIR_CONNECT_LIST_DOMAINS_SHUTOFF, DomainState::Shutoff),
        ] {
            // A failed bulk listing only costs speed: those domains are read singly.
            if let Ok(list) = s.conn.list_all_domains(flag) {
                for d in &list {
                    if let Ok(u) = d.uuid_string() {
                        known.insert(u, state);
                    }
                }
            }
        }
        let now = mono(origin);
        let mut domains = Vec::with_capacity(doms.len());
        let mut rebooted = Vec::new();
        for dom in &doms {
            let uuid = match dom.uuid_string() {
                Ok(u) => u,
                Err(e) => {
                    self.check_api(s, "reading domain uuid", &e)?;
                    continue;
                }
            };
            let bulk = match (known.get(&uuid), dom.name()) {
                (Some(&state), Ok(name)) => Some((name, state, 0)),
                _ => None,
            };
            let (name, state, reason) = match bulk {
                Some(x) => x,
                None => match self.read_dom(s, dom)? {
                    Read::Found {
                        name,
                        state,
                        reason,
                    } => (name, state, reason),
                    // Vanished between the listing and the read, or unreadable.
                    Read::Gone | Read::Unreadable => continue,
                },
            };
            if s.filter.observe(now, &uuid, state, reason) == Verdict::Rebooted {
                rebooted.push((name.clone(), uuid.clone()));
            }
            let shown = s.filter.shown(&uuid).unwrap_or(state);
            let migration = s.migration.get(&uuid).copied();
            domains.push(LocalDomain {
                name,
                uuid,
                state: shown,
                migration,
            });
        }
        drop(doms);
        let keep: HashSet<&str> = domains.iter().map(|d| d.uuid.as_str()).collect();
        s.filter.retain(|u| keep.contains(u));
        s.names = domains
            .iter()
            .map(|d| (d.uuid.clone(), d.name.clone()))
            .collect();
        debug!(uri = %self.uri, count = domains.len(), "domain listing");
        if announce {
            // Counted before the engine hears of it, so the counters never lag.
            self.stats.connects.fetch_add(1, Ordering::Relaxed);
            self.stats.connected.store(true, Ordering::Relaxed);
            self.send(Input::LibvirtLink {
                at: now_millis(),
                uri: self.uri.clone(),
                connected: true,
                error: None,
            })?;
        }
        self.send(Input::LocalList {
            at: now_millis(),
            uri: self.uri.clone(),
            domains,
        })?;
        self.stats.listings.fetch_add(1, Ordering::Relaxed);
        for (name, uuid) in rebooted {
            self.send_rebooted(name, uuid)?;
        }
        self.list_networks(s)?;
        Ok(true)
    }

    /// Network listing (`LocalNetworks`) and the ports of each active
    /// network (`LocalPorts`). Drivers without networks or ports are skipped.
    pub(super) fn list_networks(&self, s: &Session) -> Result<(), Stop> {
        let nets = match s.conn.list_all_networks(0) {
            Ok(n) => n,
            Err(e) => {
                debug!(uri = %self.uri, "listing networks: {e}");
                return Ok(());
            }
        };
        let mut infos = Vec::with_capacity(nets.len());
        let mut ports = Vec::new();
        for net in &nets {
            let (Ok(name), Ok(uuid)) = (net.name(), net.uuid_string()) else {
                continue;
            };
            let info = net_info(net, name, uuid);
            if info.active {
                match ffi::network_port_xmls(net) {
                    Ok(xmls) => {
                        let list: Vec<_> = xmls
                            .iter()
                            .filter_map(|x| domxml::parse_port(x).ok())
                            .collect();
                        ports.push((info.name.clone(), list));
                    }
                    Err(e) => debug!(uri = %self.uri, network = %info.name, "listing ports: {e}"),
                }
            }
            infos.push(info);
        }
        debug!(uri = %self.uri, count = infos.len(), "network listing");
        self.send(Input::LocalNetworks {
            at: now_millis(),
            uri: self.uri.clone(),
            networks: infos,
        })?;
        for (network, ports) in ports {
            self.send(Input::LocalPorts {
                at: now_millis(),
                uri: self.uri.clone(),
                network,
                ports,
            })?;
        }
        Ok(())
    }
}

pub(super) fn net_info(net: &virt::network::Network, name: String, uuid: String) -> NetInfo {
    NetInfo {
        name,
        uuid,
        active: net.is_active().unwrap_or(false),
        bridge: net.bridge_name().ok().filter(|b| !b.is_empty()),
    }
}
