//! One libvirt event at a time: re-read what it is about, let the reboot
//! filter decide, tell the engine.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::debug;

use super::super::ffi::RawEvent;
use super::super::reboot_filter::{Expired, Verdict};
use super::inventory::{Read, net_info};
use super::session::Session;
use super::{Stop, Worker, mono};
use crate::engine::model::{Input, LocalDomain};
use fenceline_proto::api::{DomainState, NetworkAction, now_millis};
use fenceline_proto::messages::Migration;

/// `VIR_DOMAIN_EVENT_DEFINED`.
const EVENT_DEFINED: i32 = 0;
/// `VIR_DOMAIN_EVENT_UNDEFINED`.
const EVENT_UNDEFINED: i32 = 1;

/// Whether a lifecycle event says the domain is leaving or left this host by
/// live migration: `SUSPENDED` with `MIGRATED` (1) or `POSTCOPY` (7), where
/// the target takes over, or `STOPPED` with `MIGRATED` (3).
pub(super) fn left_by_migration(event: i32, detail: i32) -> bool {
    matches!((event, detail), (3, 1) | (3, 7) | (5, 3))
}

/// Which end of a live migration a lifecycle event shows this host to be:
/// `STARTED` with `MIGRATED` (1), the target; `SUSPENDED` with `MIGRATED`
/// (1) or `POSTCOPY` (7), the source. `None` for any other event.
pub(super) fn migration_end(event: i32, detail: i32) -> Option<Migration> {
    match (event, detail) {
        (2, 1) => Some(Migration::Incoming),
        (3, 1) | (3, 7) => Some(Migration::Outgoing),
        _ => None,
    }
}

fn lifecycle_name(event: i32) -> &'static str {
    match event {
        0 => "defined",
        1 => "undefined",
        2 => "started",
        3 => "suspended",
        4 => "resumed",
        5 => "stopped",
        6 => "shutdown",
        7 => "pmsuspended",
        8 => "crashed",
        _ => "unknown",
    }
}

impl Worker {
    pub(super) fn handle(
        &self,
        s: &mut Session,
        ev: RawEvent,
        origin: Instant,
    ) -> Result<(), Stop> {
        match ev {
            RawEvent::Wake => Ok(()),
            RawEvent::Lifecycle { generation, .. }
            | RawEvent::Reboot { generation, .. }
            | RawEvent::Network { generation, .. }
                if generation != s.ctx.generation() =>
            {
                debug!(uri = %self.uri, generation, "event of an older connection ignored");
                Ok(())
            }
            RawEvent::Lifecycle {
                uuid,
                name,
                event,
                detail,
                ..
            } => {
                debug!(
                    uri = %self.uri, %name, %uuid, event = lifecycle_name(event), detail,
                    "lifecycle event"
                );
                if uuid.is_empty() {
                    self.shared.resync.store(true, Ordering::Release);
                    return Ok(());
                }
                if event == EVENT_UNDEFINED {
                    // A running domain that is undefined lives on as a
                    // transient one; the re-read below tells which.
                    debug!(uri = %self.uri, %name, "undefined");
                }
                match migration_end(event, detail) {
                    Some(m) => {
                        s.migration.insert(uuid.clone(), m);
                    }
                    // A (re)definition during a migration does not end it.
                    None if event == EVENT_DEFINED => {}
                    None => {
                        s.migration.remove(&uuid);
                    }
                }
                if left_by_migration(event, detail) {
                    // Before the state it left behind: that copy's
                    // "shut off" or "paused" says nothing about the VM.
                    self.send(Input::LocalMigrated {
                        at: now_millis(),
                        uri: self.uri.clone(),
                        name: s.names.get(&uuid).cloned().unwrap_or_else(|| name.clone()),
                        uuid: uuid.clone(),
                    })?;
                }
                self.refresh(s, &uuid, &name, origin)
            }
            RawEvent::Network {
                uuid, name, event, ..
            } => {
                let action = match event {
                    0 => NetworkAction::Defined,
                    1 => NetworkAction::Undefined,
                    2 => NetworkAction::Started,
                    3 => NetworkAction::Stopped,
                    other => {
                        debug!(uri = %self.uri, %name, event = other, "unknown network event ignored");
                        return Ok(());
                    }
                };
                debug!(uri = %self.uri, %name, %uuid, ?action, "network event");
                // Re-read: events may be duplicated or out of order.
                let info = match s.conn.lookup_network_by_uuid_string(&uuid) {
                    Ok(net) => Some(net_info(&net, name.clone(), uuid.clone())),
                    Err(_) => None,
                };
                self.send(Input::LocalNetwork {
                    at: now_millis(),
                    uri: self.uri.clone(),
                    action,
                    name,
                    info,
                })
            }
            RawEvent::Reboot { uuid, name, .. } => {
                let verdict = s.filter.reboot(mono(origin), &uuid);
                debug!(uri = %self.uri, %name, %uuid, ?verdict, "reboot event");
                if verdict == Verdict::Rebooted {
                    let name = s.names.get(&uuid).cloned().unwrap_or(name);
                    self.send_rebooted(name, uuid)?;
                }
                Ok(())
            }
        }
    }

    /// Re-reads one domain after an event and tells the engine what the
    /// filter lets through.
    pub(super) fn refresh(
        &self,
        s: &mut Session,
        uuid: &str,
        hint: &str,
        origin: Instant,
    ) -> Result<(), Stop> {
        match self.read(s, uuid)? {
            Read::Gone => self.gone(s, uuid, hint),
            Read::Unreadable => Ok(()),
            Read::Found {
                name,
                state,
                reason,
            } => {
                let verdict = s.filter.observe(mono(origin), uuid, state, reason);
                self.apply(s, uuid, name, state, verdict)
            }
        }
    }

    pub(super) fn apply(
        &self,
        s: &mut Session,
        uuid: &str,
        name: String,
        observed: DomainState,
        verdict: Verdict,
    ) -> Result<(), Stop> {
        let renamed = s.names.get(uuid).is_some_and(|n| *n != name);
        let mig = s.migration.get(uuid).copied();
        s.names.insert(uuid.to_string(), name.clone());
        match verdict {
            Verdict::Report(state) => self.send_domain(uuid, name, state, mig),
            Verdict::Rebooted => {
                if renamed {
                    let shown = s.filter.shown(uuid).unwrap_or(observed);
                    self.send_domain(uuid, name.clone(), shown, mig)?;
                }
                self.send(Input::LocalRebooted {
                    at: now_millis(),
                    uri: self.uri.clone(),
                    name,
                    uuid: uuid.to_string(),
                })
            }
            Verdict::Held => {
                debug!(uri = %self.uri, %name, %uuid, state = %observed, "holding transition (possible reboot)");
                if renamed {
                    let shown = s.filter.shown(uuid).unwrap_or(observed);
                    self.send_domain(uuid, name, shown, mig)?;
                }
                Ok(())
            }
            Verdict::Quiet => {
                if renamed {
                    let shown = s.filter.shown(uuid).unwrap_or(observed);
                    self.send_domain(uuid, name, shown, mig)?;
                }
                Ok(())
            }
        }
    }

    pub(super) fn send_domain(
        &self,
        uuid: &str,
        name: String,
        state: DomainState,
        migration: Option<Migration>,
    ) -> Result<(), Stop> {
        debug!(uri = %self.uri, %name, %uuid, %state, ?migration, "domain state");
        self.send(Input::LocalDomain {
            at: now_millis(),
            uri: self.uri.clone(),
            domain: LocalDomain {
                name,
                uuid: uuid.to_string(),
                state,
                migration,
            },
        })
    }

    pub(super) fn gone(&self, s: &mut Session, uuid: &str, hint: &str) -> Result<(), Stop> {
        s.filter.forget(uuid);
        s.migration.remove(uuid);
        let name = s.names.remove(uuid).unwrap_or_else(|| hint.to_string());
        debug!(uri = %self.uri, %name, %uuid, "domain gone");
        self.send(Input::LocalGone {
            at: now_millis(),
            uri: self.uri.clone(),
            name,
            uuid: uuid.to_string(),
        })
    }

    pub(super) fn resolve_hold(
        &self,
        s: &mut Session,
        e: &Expired,
        origin: Instant,
    ) -> Result<(), Stop> {
        let (name, reread) = match self.read(s, &e.uuid)? {
            Read::Gone => return self.gone(s, &e.uuid, ""),
            Read::Unreadable => (s.names.get(&e.uuid).cloned().unwrap_or_default(), None),
            Read::Found { name, state, .. } => (name, Some(state)),
        };
        let verdict = s.filter.resolve_expired(mono(origin), e, reread);
        debug!(uri = %self.uri, %name, uuid = %e.uuid, ?verdict, "hold expired");
        self.apply(s, &e.uuid, name, reread.unwrap_or(e.held), verdict)
    }

    /// Reports a reboot that the filter hid from the state.
    pub(super) fn send_rebooted(&self, name: String, uuid: String) -> Result<(), Stop> {
        self.send(Input::LocalRebooted {
            at: now_millis(),
            uri: self.uri.clone(),
            name,
            uuid,
        })
    }
}
