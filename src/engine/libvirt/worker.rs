//! One worker thread per URI: connect, register, list, follow events,
//! reconnect with backoff, run commands.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::{Error, ErrorNumber};
use virt::sys;

use super::ffi::{self, CallbackCtx, RawEvent, Registrations, Shared};
use super::reboot_filter::{Expired, FilterConfig, Ms, RebootFilter, Verdict};
use super::{
    CommandError, CommandReply, CommandRequest, CommandResult, DomainRef, EventLoopLease,
    LibvirtCommand, Tuning, WorkerStats,
};
use crate::engine::InputTx;
use crate::engine::model::{DropKind, Input, LocalDomain, NetInfo};
use fenceline_proto::api::{DomainState, NetworkAction, now_millis};
use fenceline_proto::domxml;

/// Longest single wait, so cancellation is noticed quickly.
const MAX_WAIT: Duration = Duration::from_millis(200);
/// Events handled in one go before looking at flags and commands again.
const BATCH: usize = 64;
/// A session that lasted this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// How long a reboot waits for a destroyed domain to stop (fence_virtd: 15 × 1 s).
const REBOOT_STOP_WAIT: Duration = Duration::from_secs(15);

/// `VIR_DOMAIN_EVENT_UNDEFINED`.
const EVENT_UNDEFINED: i32 = 1;

pub(super) struct Worker {
    pub index: usize,
    pub uri: String,
    pub inputs: InputTx,
    pub cancel: CancellationToken,
    pub tuning: Tuning,
    pub filter_cfg: FilterConfig,
    pub reconcile: Duration,
    pub events_tx: SyncSender<RawEvent>,
    pub events: Receiver<RawEvent>,
    pub commands: Receiver<CommandRequest>,
    pub stats: Arc<WorkerStats>,
    pub shared: Arc<Shared>,
    /// Keeps the event loop running while this worker lives.
    pub _lease: Arc<EventLoopLease>,
}

/// Why a session or the worker stops.
#[derive(Debug)]
enum Stop {
    Cancelled,
    /// The engine dropped its input channel.
    EngineGone,
    /// The connection is gone (or could not be set up).
    Lost(String),
}

enum Open {
    Opened(Connect),
    Failed(String),
    Cancelled,
}

/// A domain read back from libvirt.
enum Read {
    Found {
        name: String,
        state: DomainState,
        reason: i32,
    },
    Gone,
    /// A non-fatal error; the periodic reconcile will catch up.
    Unreadable,
}

struct Session {
    conn: Connect,
    ctx: Arc<CallbackCtx>,
    regs: Registrations,
    filter: RebootFilter,
    /// Last name sent per UUID (renames keep the UUID).
    names: HashMap<String, String>,
}

/// Exponential backoff with ±20 % jitter.
struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    rng: u64,
}

impl Backoff {
    fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        let initial = initial.max(Duration::from_millis(10));
        Self {
            initial,
            max: max.max(initial),
            current: initial,
            rng: seed | 1,
        }
    }

    fn reset(&mut self) {
        self.current = self.initial;
    }

    fn next_delay(&mut self) -> Duration {
        // xorshift64: jitter only, not security relevant.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let factor = 0.8 + (self.rng % 401) as f64 / 1000.0;
        let d = self.current.mul_f64(factor);
        self.current = (self.current * 2).min(self.max);
        d
    }
}

fn is_no_domain(e: &Error) -> bool {
    e.code().is(ErrorNumber::NoDomain)
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
    pub fn run(self) {
        let origin = Instant::now();
        let seed = now_millis() ^ ((self.index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut backoff = Backoff::new(self.tuning.backoff_initial, self.tuning.backoff_max, seed);
        let mut generation = 0u64;
        let mut down_reported = false;
        info!(uri = %self.uri, "libvirt worker started");
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            generation += 1;
            let attempt = self.stats.connect_attempts.fetch_add(1, Ordering::Relaxed) + 1;
            debug!(uri = %self.uri, attempt, "connecting to libvirt");
            let (failure, established) = match self.open() {
                Open::Cancelled => break,
                Open::Failed(e) => (e, false),
                Open::Opened(conn) => {
                    let started = Instant::now();
                    let (stop, established) = self.session(conn, generation, origin);
                    match stop {
                        Stop::Cancelled | Stop::EngineGone => break,
                        Stop::Lost(e) => {
                            if established && started.elapsed() >= STABLE_SESSION {
                                backoff.reset();
                            }
                            (e, established)
                        }
                    }
                }
            };
            if established {
                down_reported = false;
            }
            if down_reported {
                debug!(uri = %self.uri, attempt, error = %failure, "libvirt still unreachable");
            } else {
                warn!(uri = %self.uri, attempt, error = %failure, "libvirt connection down");
                down_reported = true;
                let sent = self.send(Input::LibvirtLink {
                    at: now_millis(),
                    uri: self.uri.clone(),
                    connected: false,
                    error: Some(failure),
                });
                if sent.is_err() {
                    break;
                }
            }
            let delay = backoff.next_delay();
            debug!(uri = %self.uri, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "reconnect backoff");
            if !self.idle_wait(delay) {
                break;
            }
        }
        // Answer whatever is still queued.
        self.run_commands(None, Instant::now());
        info!(uri = %self.uri, "libvirt worker stopped");
    }

    fn send(&self, input: Input) -> Result<(), Stop> {
        if self.inputs.blocking_send(input) {
            Ok(())
        } else {
            Err(Stop::EngineGone)
        }
    }

    /// Opens the connection on a helper thread so cancellation is noticed
    /// even while `virConnectOpen` hangs on an unresponsive daemon.
    fn open(&self) -> Open {
        let (tx, rx) = mpsc::sync_channel::<Result<Connect, Error>>(1);
        let uri = self.uri.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("libvirt-open-{}", self.index))
            .spawn(move || {
                let r = Connect::open(Some(&uri));
                if let Err(mpsc::SendError(Ok(conn))) = tx.send(r) {
                    // The worker gave up waiting (shutdown): close what we got.
                    if let Err(e) = ffi::close(conn) {
                        debug!(%uri, "closing abandoned connection: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            return Open::Failed(format!("cannot start connect thread: {e}"));
        }
        loop {
            match rx.recv_timeout(MAX_WAIT) {
                Ok(Ok(conn)) => return Open::Opened(conn),
                Ok(Err(e)) => return Open::Failed(e.to_string()),
                Err(RecvTimeoutError::Timeout) => {
                    if self.cancel.is_cancelled() {
                        // Not waiting any longer. A connection that arrives
                        // later is closed by the helper thread itself.
                        if let Ok(Ok(conn)) = rx.try_recv()
                            && let Err(e) = ffi::close(conn)
                        {
                            debug!(uri = %self.uri, "closing connection: {e}");
                        }
                        return Open::Cancelled;
                    }
                    self.run_commands(None, Instant::now());
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Open::Failed("connect thread ended without a result".into());
                }
            }
        }
    }

    /// Waits `delay` (cancellable), answering commands with "not connected".
    /// Returns false when cancelled.
    fn idle_wait(&self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            if self.cancel.is_cancelled() {
                return false;
            }
            self.run_commands(None, Instant::now());
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            // Events of closed connections and wake-ups: nothing to do.
            match self.events.recv_timeout(left.min(MAX_WAIT)) {
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(left.min(MAX_WAIT)),
            }
        }
    }

    /// Registers, lists and follows one connection until it stops. Always
    /// closes the connection. The flag says whether the engine was told
    /// "connected".
    fn session(&self, conn: Connect, generation: u64, origin: Instant) -> (Stop, bool) {
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
    fn close(&self, conn: Connect, regs: &mut Registrations) {
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
    fn follow(&self, s: &mut Session, origin: Instant) -> Stop {
        let mut next_reconcile = Instant::now() + self.reconcile;
        loop {
            if let Err(stop) = self.follow_step(s, origin, &mut next_reconcile) {
                return stop;
            }
        }
    }

    fn follow_step(
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

    fn check_closed(&self, s: &Session) -> Result<(), Stop> {
        match s.ctx.close_reason() {
            Some(r) => Err(Stop::Lost(ffi::close_reason_text(r).to_string())),
            None => Ok(()),
        }
    }

    /// After a failed call: is the connection dead (→ `Stop::Lost`) or was it
    /// a per-call error (→ Ok, logged)?
    fn check_api(&self, s: &Session, what: &str, e: &Error) -> Result<(), Stop> {
        self.check_closed(s)?;
        match s.conn.is_alive() {
            Ok(true) => {
                warn!(uri = %self.uri, "{what}: {e}");
                Ok(())
            }
            Ok(false) | Err(_) => Err(Stop::Lost(format!("{what}: {e}"))),
        }
    }

    fn report_drops(&self) {
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

    fn handle(&self, s: &mut Session, ev: RawEvent, origin: Instant) -> Result<(), Stop> {
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
    fn refresh(
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

    fn apply(
        &self,
        s: &mut Session,
        uuid: &str,
        name: String,
        observed: DomainState,
        verdict: Verdict,
    ) -> Result<(), Stop> {
        let renamed = s.names.get(uuid).is_some_and(|n| *n != name);
        s.names.insert(uuid.to_string(), name.clone());
        match verdict {
            Verdict::Report(state) => self.send_domain(uuid, name, state),
            Verdict::Rebooted => {
                if renamed {
                    let shown = s.filter.shown(uuid).unwrap_or(observed);
                    self.send_domain(uuid, name.clone(), shown)?;
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
                    self.send_domain(uuid, name, shown)?;
                }
                Ok(())
            }
            Verdict::Quiet => {
                if renamed {
                    let shown = s.filter.shown(uuid).unwrap_or(observed);
                    self.send_domain(uuid, name, shown)?;
                }
                Ok(())
            }
        }
    }

    fn send_domain(&self, uuid: &str, name: String, state: DomainState) -> Result<(), Stop> {
        debug!(uri = %self.uri, %name, %uuid, %state, "domain state");
        self.send(Input::LocalDomain {
            at: now_millis(),
            uri: self.uri.clone(),
            domain: LocalDomain {
                name,
                uuid: uuid.to_string(),
                state,
            },
        })
    }

    fn gone(&self, s: &mut Session, uuid: &str, hint: &str) -> Result<(), Stop> {
        s.filter.forget(uuid);
        let name = s.names.remove(uuid).unwrap_or_else(|| hint.to_string());
        debug!(uri = %self.uri, %name, %uuid, "domain gone");
        self.send(Input::LocalGone {
            at: now_millis(),
            uri: self.uri.clone(),
            name,
            uuid: uuid.to_string(),
        })
    }

    fn resolve_hold(&self, s: &mut Session, e: &Expired, origin: Instant) -> Result<(), Stop> {
        let (name, reread) = match self.read(s, &e.uuid)? {
            Read::Gone => return self.gone(s, &e.uuid, ""),
            Read::Unreadable => (s.names.get(&e.uuid).cloned().unwrap_or_default(), None),
            Read::Found { name, state, .. } => (name, Some(state)),
        };
        let verdict = s.filter.resolve_expired(mono(origin), e, reread);
        debug!(uri = %self.uri, %name, uuid = %e.uuid, ?verdict, "hold expired");
        self.apply(s, &e.uuid, name, reread.unwrap_or(e.held), verdict)
    }

    /// Reads a domain's name and state by UUID.
    fn read(&self, s: &Session, uuid: &str) -> Result<Read, Stop> {
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

    fn read_dom(&self, s: &Session, dom: &Domain) -> Result<Read, Stop> {
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

    /// Reports a reboot that the filter hid from the state.
    fn send_rebooted(&self, name: String, uuid: String) -> Result<(), Stop> {
        self.send(Input::LocalRebooted {
            at: now_millis(),
            uri: self.uri.clone(),
            name,
            uuid,
        })
    }

    /// Full listing (active and inactive) → `LocalList`, preceded by
    /// `LibvirtLink { connected: true }` when `announce`. Ok(false) when the
    /// listing call failed on a live connection (retried at the next reconcile).
    fn list_all(&self, s: &mut Session, origin: Instant, announce: bool) -> Result<bool, Stop> {
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
            domains.push(LocalDomain {
                name,
                uuid,
                state: shown,
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
    fn list_networks(&self, s: &Session) -> Result<(), Stop> {
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

    /// Answers queued commands; `None` when not connected.
    fn run_commands(&self, mut s: Option<&mut Session>, origin: Instant) {
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

    fn execute(&self, s: &mut Session, cmd: &LibvirtCommand, origin: Instant) -> CommandResult {
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
        let state_of = |dom: &Domain| -> Result<DomainState, CommandError> {
            match ffi::domain_state(dom) {
                Ok((st, _)) => Ok(DomainState::from_raw(i64::from(st))),
                Err(e) if is_no_domain(&e) => Err(CommandError::NotFound(target.to_string())),
                Err(e) => Err(self.command_failure(s, e)),
            }
        };
        let before = state_of(&dom)?;
        match cmd {
            LibvirtCommand::Destroy(_) if before.is_active() => {
                // It may have stopped by itself meanwhile.
                if let Err(e) = dom.destroy()
                    && state_of(&dom)?.is_active()
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
            LibvirtCommand::Reboot(_) if before.is_active() => {
                return self.reboot(s, dom, target, origin);
            }
            _ => {}
        }
        let state = state_of(&dom)?;
        let name = dom.name().map_err(lv)?;
        let uuid = dom.uuid_string().map_err(lv)?;
        Ok(CommandReply { name, uuid, state })
    }

    /// Destroy, wait until libvirt reports the domain stopped (its lifecycle
    /// event, checked against the state; no fixed sleep), start it again. A
    /// transient domain is re-created from the XML it had.
    fn reboot(
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
                Ok(CommandReply { name, uuid, state })
            }
            Err(e) => {
                warn!(uri = %self.uri, domain = %target, error = %e, "destroyed, but the restart failed");
                Err(CommandError::RestartFailed(e.to_string()))
            }
        }
    }

    fn command_failure(&self, s: &Session, e: Error) -> CommandError {
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

fn net_info(net: &virt::network::Network, name: String, uuid: String) -> NetInfo {
    NetInfo {
        name,
        uuid,
        active: net.is_active().unwrap_or(false),
        bridge: net.bridge_name().ok().filter(|b| !b.is_empty()),
    }
}

fn mono(origin: Instant) -> Ms {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30), 42);
        let mut prev_base = 500.0;
        for i in 0..12 {
            let d = b.next_delay().as_secs_f64() * 1000.0;
            let base: f64 = if i == 0 {
                500.0
            } else {
                (prev_base * 2.0_f64).min(30_000.0)
            };
            assert!(
                d >= base * 0.79 && d <= base * 1.21,
                "step {i}: {d} vs {base}"
            );
            prev_base = base;
        }
        b.reset();
        let d = b.next_delay();
        assert!(d >= Duration::from_millis(395) && d <= Duration::from_millis(605));
    }
}
