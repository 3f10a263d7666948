//! One connection: register the callbacks, list, follow the events until
//! the connection is lost, close.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use virt::connect::Connect;
use virt::error::Error;

use super::super::ffi::{self, CallbackCtx, Registrations};
use super::super::reboot_filter::RebootFilter;
use super::{MAX_WAIT, Stop, Worker, mono};
use crate::engine::model::{DropKind, Input};
use fenceline_proto::api::now_millis;
use fenceline_proto::messages::Migration;

/// Events handled in one go before looking at flags and commands again.
const BATCH: usize = 64;

pub(super) struct Session {
    pub(super) conn: Connect,
    pub(super) ctx: Arc<CallbackCtx>,
    pub(super) regs: Registrations,
    pub(super) filter: RebootFilter,
    /// Last name sent per UUID (renames keep the UUID).
    pub(super) names: HashMap<String, String>,
    /// Domains in a live migration, by UUID: which end this host is (from
    /// the last lifecycle event's detail).
    pub(super) migration: HashMap<String, Migration>,
}

impl Worker {
    /// Registers, lists and follows one connection until it stops. Always
    /// closes the connection. The flag says whether the engine was told
    /// "connected".
    pub(super) fn session(&self, conn: Connect, generation: u64, origin: Instant) -> (Stop, bool) {
        let ctx = Arc::new(CallbackCtx::new(
            self.events_tx.clone(),
            generation,
            self.shared.clone(),
        ));
        let regs = match ffi::register(&conn, &ctx) {
            Ok(r) => r,
            Err(mut e) => {
                let msg = format!("registering {}: {}", e.what, e.error);
                self.close(conn, &mut e.partial);
                return (Stop::Lost(msg), false);
            }
        };
        match conn.set_keep_alive(self.tuning.keepalive_interval, self.tuning.keepalive_count) {
            Ok(()) => debug!(uri = %self.uri, "keepalive enabled"),
            // The in-process test driver does not support keepalive.
            Err(e) => debug!(uri = %self.uri, "keepalive not enabled: {e}"),
        }
        let mut s = Session {
            conn,
            ctx,
            regs,
            filter: RebootFilter::new(self.filter_cfg),
            names: HashMap::new(),
            migration: HashMap::new(),
        };
        // Anything still queued belongs to an older connection; the listing
        // below supersedes it.
        self.shared.resync.store(false, Ordering::Release);
        let first = self.list_all(&mut s, origin, true);
        let (stop, established) = match first {
            Err(stop) => (stop, false),
            Ok(false) => (Stop::Lost("initial domain listing failed".into()), false),
            Ok(true) => {
                info!(uri = %self.uri, domains = s.names.len(), "libvirt connected");
                let stop = self.follow(&mut s, origin);
                if matches!(stop, Stop::Lost(_)) {
                    self.stats.disconnects.fetch_add(1, Ordering::Relaxed);
                }
                (stop, true)
            }
        };
        self.stats.connected.store(false, Ordering::Relaxed);
        let Session {
            conn,
            mut regs,
            ctx,
            ..
        } = s;
        self.close(conn, &mut regs);
        // 1 once libvirt released every callback reference (on some paths it
        // does so later, from the event loop).
        debug!(uri = %self.uri, refs = Arc::strong_count(&ctx), "callback context after close");
        (stop, established)
    }

    /// Deregisters what is registered and closes the connection, logging
    /// (not panicking on) errors: expected when libvirtd is gone.
    pub(super) fn close(&self, conn: Connect, regs: &mut Registrations) {
        for (what, e) in ffi::deregister(&conn, regs) {
            debug!(uri = %self.uri, "deregistering {what}: {e}");
        }
        match ffi::close(conn) {
            Ok(0) => debug!(uri = %self.uri, "connection closed"),
            Ok(refs) => debug!(uri = %self.uri, refs, "connection released, still referenced"),
            Err(e) => debug!(uri = %self.uri, "closing connection: {e}"),
        }
    }

    /// The event loop of one connection.
    pub(super) fn follow(&self, s: &mut Session, origin: Instant) -> Stop {
        let mut next_reconcile = Instant::now() + self.reconcile;
        loop {
            if let Err(stop) = self.follow_step(s, origin, &mut next_reconcile) {
                return stop;
            }
        }
    }

    pub(super) fn follow_step(
        &self,
        s: &mut Session,
        origin: Instant,
        next_reconcile: &mut Instant,
    ) -> Result<(), Stop> {
        if self.cancel.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        self.check_closed(s)?;
        self.report_drops();
        let resync = self.shared.resync.swap(false, Ordering::AcqRel);
        if resync || Instant::now() >= *next_reconcile {
            if resync {
                info!(uri = %self.uri, "events were dropped: re-listing domains");
            } else {
                debug!(uri = %self.uri, "periodic reconcile");
            }
            self.list_all(s, origin, false)?;
            *next_reconcile = Instant::now() + self.reconcile;
        }
        self.run_commands(Some(s), origin);
        let now = mono(origin);
        for e in s.filter.take_expired(now) {
            self.resolve_hold(s, &e, origin)?;
        }
        let mut wait = MAX_WAIT.min(next_reconcile.saturating_duration_since(Instant::now()));
        if let Some(deadline) = s.filter.next_deadline() {
            wait = wait.min(Duration::from_millis(deadline.saturating_sub(mono(origin))));
        }
        let first = match self.events.recv_timeout(wait) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => return Ok(()),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Stop::Lost("event queue closed".into()));
            }
        };
        self.handle(s, first, origin)?;
        for _ in 1..BATCH {
            match self.events.try_recv() {
                Ok(ev) => self.handle(s, ev, origin)?,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        Ok(())
    }

    pub(super) fn check_closed(&self, s: &Session) -> Result<(), Stop> {
        match s.ctx.close_reason() {
            Some(r) => Err(Stop::Lost(ffi::close_reason_text(r).to_string())),
            None => Ok(()),
        }
    }

    /// After a failed call: is the connection dead (→ `Stop::Lost`) or was it
    /// a per-call error (→ Ok, logged)?
    pub(super) fn check_api(&self, s: &Session, what: &str, e: &Error) -> Result<(), Stop> {
        self.check_closed(s)?;
        match s.conn.is_alive() {
            Ok(true) => {
                warn!(uri = %self.uri, "{what}: {e}");
                Ok(())
            }
            Ok(false) | Err(_) => Err(Stop::Lost(format!("{what}: {e}"))),
        }
    }

    pub(super) fn report_drops(&self) {
        let n = self.shared.dropped.swap(0, Ordering::AcqRel);
        if n == 0 {
            return;
        }
        warn!(uri = %self.uri, count = n, "libvirt event queue full: events dropped");
        let sent = self.inputs.try_send(Input::Dropped {
            at: now_millis(),
            what: DropKind::LibvirtEvents,
            count: n,
        });
        if sent {
            self.stats.dropped_events.fetch_add(n, Ordering::Relaxed);
        } else {
            // Report them next time.
            self.shared.dropped.fetch_add(n, Ordering::AcqRel);
        }
    }
}
