//! Commands from the engine (fence actions, the control socket): destroy,
//! start, state, reboot, answered on the worker thread.

use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use virt::domain::Domain;
use virt::error::Error;

use super::super::fence_act::must_destroy;
use super::super::ffi;
use super::super::{CommandError, CommandReply, CommandResult, DomainRef, LibvirtCommand};
use super::session::Session;
use super::{Worker, is_no_domain};
use fenceline_proto::api::DomainState;

/// How long a reboot waits for a destroyed domain to stop (fence_virtd: 15 × 1 s).
/// `VIR_DOMAIN_SHUTOFF_MIGRATED`: shut off because it migrated away.
const SHUTOFF_MIGRATED: i32 = 4;

const REBOOT_STOP_WAIT: Duration = Duration::from_secs(15);

impl Worker {
    /// Answers queued commands; `None` when not connected.
    pub(super) fn run_commands(&self, mut s: Option<&mut Session>, origin: Instant) {
        while let Ok(req) = self.commands.try_recv() {
            let result = if Instant::now() > req.deadline {
                Err(CommandError::Timeout)
            } else if self.cancel.is_cancelled() {
                Err(CommandError::WorkerGone)
            } else {
                match s.as_deref_mut() {
                    None => Err(CommandError::NotConnected(self.uri.clone())),
                    Some(s) => self.execute(s, &req.cmd, origin),
                }
            };
            debug!(uri = %self.uri, cmd = ?req.cmd, ?result, "command");
            let _ = req.reply.send(result);
        }
    }

    pub(super) fn execute(
        &self,
        s: &mut Session,
        cmd: &LibvirtCommand,
        origin: Instant,
    ) -> CommandResult {
        let lv = |e: Error| CommandError::Libvirt(e.to_string());
        let target = match cmd {
            LibvirtCommand::Destroy(r)
            | LibvirtCommand::Start(r)
            | LibvirtCommand::State(r)
            | LibvirtCommand::Reboot(r) => r,
        };
        let found = match target {
            DomainRef::Name(n) => s.conn.lookup_domain_by_name(n),
            DomainRef::Uuid(u) => s.conn.lookup_domain_by_uuid_string(u),
        };
        let dom = match found {
            Ok(d) => d,
            Err(e) if is_no_domain(&e) => return Err(CommandError::NotFound(target.to_string())),
            Err(e) => return Err(self.command_failure(s, e)),
        };
        let state_reason = |dom: &Domain| -> Result<(DomainState, i32), CommandError> {
            match ffi::domain_state(dom) {
                Ok((st, reason)) => Ok((DomainState::from_raw(i64::from(st)), reason)),
                Err(e) if is_no_domain(&e) => Err(CommandError::NotFound(target.to_string())),
                Err(e) => Err(self.command_failure(s, e)),
            }
        };
        let state_of = |dom: &Domain| state_reason(dom).map(|(st, _)| st);
        let before = state_of(&dom)?;
        match cmd {
            LibvirtCommand::Destroy(_) if must_destroy(before) => {
                // It may have stopped by itself meanwhile.
                if let Err(e) = dom.destroy()
                    && must_destroy(state_of(&dom)?)
                {
                    return Err(self.command_failure(s, e));
                }
                info!(uri = %self.uri, domain = %target, "destroyed");
            }
            LibvirtCommand::Start(_) if !before.is_active() => {
                if let Err(e) = dom.create()
                    && !state_of(&dom)?.is_active()
                {
                    return Err(self.command_failure(s, e));
                }
                info!(uri = %self.uri, domain = %target, "started");
            }
            LibvirtCommand::Reboot(_) if must_destroy(before) => {
                return self.reboot(s, dom, target, origin);
            }
            _ => {}
        }
        let (state, reason) = state_reason(&dom)?;
        let name = dom.name().map_err(lv)?;
        let uuid = dom.uuid_string().map_err(lv)?;
        Ok(CommandReply {
            name,
            uuid,
            state,
            migrated: state == DomainState::Shutoff && reason == SHUTOFF_MIGRATED,
        })
    }

    /// Destroy, wait until libvirt reports the domain stopped (its lifecycle
    /// event, checked against the state; no fixed sleep), start it again. A
    /// transient domain is re-created from the XML it had.
    pub(super) fn reboot(
        &self,
        s: &mut Session,
        dom: Domain,
        target: &DomainRef,
        origin: Instant,
    ) -> CommandResult {
        let lv = |e: Error| CommandError::Libvirt(e.to_string());
        let name = dom.name().map_err(lv)?;
        let uuid = dom.uuid_string().map_err(lv)?;
        let persistent = dom.is_persistent().map_err(lv)?;
        let xml = if persistent {
            None
        } else {
            Some(dom.xml_desc(0).map_err(lv)?)
        };
        let running = |s: &Session, dom: &Domain| -> Result<bool, CommandError> {
            match ffi::domain_state(dom) {
                Ok((st, _)) => Ok(DomainState::from_raw(i64::from(st)).is_active()),
                Err(e) if is_no_domain(&e) => Ok(false),
                Err(e) => Err(self.command_failure(s, e)),
            }
        };
        if let Err(e) = dom.destroy()
            && running(s, &dom)?
        {
            return Err(self.command_failure(s, e));
        }
        info!(uri = %self.uri, domain = %target, "destroyed (reboot)");
        let deadline = Instant::now() + REBOOT_STOP_WAIT;
        while running(s, &dom)? {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CommandError::Libvirt(format!(
                    "{target} still runs {} s after destroy",
                    REBOOT_STOP_WAIT.as_secs()
                )));
            }
            // Wake on the next event (ours is the STOPPED one) and feed it
            // to the engine as usual; the bound only guards a lost event.
            match self
                .events
                .recv_timeout(left.min(Duration::from_millis(500)))
            {
                Ok(ev) => {
                    if self.handle(s, ev, origin).is_err() {
                        return Err(CommandError::NotConnected(self.uri.clone()));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(CommandError::WorkerGone),
            }
        }
        let started = match &xml {
            None => dom.create().map(|_| dom),
            Some(x) => s.conn.create_domain_xml(x, 0),
        };
        match started {
            Ok(d) => {
                info!(uri = %self.uri, domain = %target, "started again (reboot)");
                // The stop and start are usually over before their events are
                // read, so the state never looks different: say it rebooted.
                let _ = self.send_rebooted(name.clone(), uuid.clone());
                let state = match ffi::domain_state(&d) {
                    Ok((st, _)) => DomainState::from_raw(i64::from(st)),
                    Err(e) => return Err(self.command_failure(s, e)),
                };
                // Destroyed and started here: not a migrated copy.
                Ok(CommandReply {
                    name,
                    uuid,
                    state,
                    migrated: false,
                })
            }
            Err(e) => {
                warn!(uri = %self.uri, domain = %target, error = %e, "destroyed, but the restart failed");
                Err(CommandError::RestartFailed(e.to_string()))
            }
        }
    }

    pub(super) fn command_failure(&self, s: &Session, e: Error) -> CommandError {
        let alive = s.ctx.close_reason().is_none() && matches!(s.conn.is_alive(), Ok(true));
        if alive {
            CommandError::Libvirt(e.to_string())
        } else {
            // The follow loop notices the loss through the close callback or
            // its next call.
            self.shared.resync.store(true, Ordering::Release);
            CommandError::NotConnected(self.uri.clone())
        }
    }
}
