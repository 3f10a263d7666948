//! libvirt driver: one worker thread per URI plus libvirt's event-loop thread.
//!
//! - The event loop (`virEventRunDefaultImpl`) runs on one process-wide
//!   thread while at least one worker lives; the default implementation is
//!   registered once per process, before any connection is opened.
//! - A worker owns its connection. Callbacks (see [`ffi`]) only copy the
//!   domain's name and UUID and `try_send` into a bounded queue; the worker
//!   re-reads the domain's state for every lifecycle event, runs it through
//!   the [`reboot_filter`] and feeds the engine (`Input::Local*`).
//! - A lost connection (close callback, keepalive, failing call) is reported
//!   as `LibvirtLink { connected: false }`; the worker reconnects with
//!   exponential backoff and re-lists everything.
//! - Commands ([`LibvirtHandle::execute`]) run on the worker thread and reply
//!   through a oneshot.
#![deny(unsafe_code)]

mod fence_act;
mod ffi;
pub mod reboot_filter;

pub use fence_act::{ActTimeouts, run_fence_actions};
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::engine::InputTx;
use fenceline_proto::api::DomainState;

use ffi::{RawEvent, Shared};
use reboot_filter::FilterConfig;

/// Settings of the libvirt driver.
#[derive(Debug, Clone)]
pub struct LibvirtConfig {
    pub uris: Vec<String>,
    /// Full re-listing period (reconcile), at least 30 s.
    pub reconcile_interval: Duration,
}

/// Timings and sizes of the driver; the defaults suit production.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Hold of a running → shutdown / paused(shutting-down) transition.
    pub reboot_hold: Duration,
    /// REBOOT events of one domain closer than this are one reboot.
    pub reboot_dedup: Duration,
    /// First reconnect delay; doubles up to `backoff_max` (±20 % jitter).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// `virConnectSetKeepAlive(interval, count)`.
    pub keepalive_interval: i32,
    pub keepalive_count: u32,
    /// Capacity of the callback → worker queue (per URI).
    pub event_queue: usize,
    /// Capacity of the command queue (per URI).
    pub command_queue: usize,
    /// Commands not started within this time are answered with a timeout.
    pub command_timeout: Duration,
    /// Lower bound applied to `LibvirtConfig::reconcile_interval`.
    pub min_reconcile: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            reboot_hold: Duration::from_millis(1500),
            reboot_dedup: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            keepalive_interval: 5,
            keepalive_count: 3,
            event_queue: 1024,
            command_queue: 64,
            command_timeout: Duration::from_secs(30),
            min_reconcile: Duration::from_secs(30),
        }
    }
}

impl Tuning {
    fn filter(&self) -> FilterConfig {
        FilterConfig {
            hold_ms: u64::try_from(self.reboot_hold.as_millis()).unwrap_or(u64::MAX),
            reboot_dedup_ms: u64::try_from(self.reboot_dedup.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// A domain named by a command: a UUID when the text is the canonical
/// 36-character form, else a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRef {
    Name(String),
    /// Lower case.
    Uuid(String),
}

impl DomainRef {
    pub fn parse(s: &str) -> Self {
        if is_canonical_uuid(s) {
            DomainRef::Uuid(s.to_ascii_lowercase())
        } else {
            DomainRef::Name(s.to_string())
        }
    }
}

impl std::fmt::Display for DomainRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DomainRef::Name(n) => write!(f, "domain {n:?}"),
            DomainRef::Uuid(u) => write!(f, "domain {u}"),
        }
    }
}

use fenceline_proto::api::is_canonical_uuid;

/// Fencing primitives, run on the URI's worker thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibvirtCommand {
    /// Hard power off (`virDomainDestroy`). Already shut off counts as done.
    Destroy(DomainRef),
    /// Power on (`virDomainCreate`). Already active counts as done.
    Start(DomainRef),
    /// Read the state.
    State(DomainRef),
    /// Destroy, wait for the domain to stop, start it again. A shut-off
    /// domain stays off (fence_virtd's rule); the reply then says shutoff.
    Reboot(DomainRef),
}

/// The domain after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandReply {
    pub name: String,
    pub uuid: String,
    pub state: DomainState,
    /// libvirt's reason for the state is that the domain left this host by
    /// live migration (shut off: migrated): this copy says nothing about
    /// the VM, which runs on the target.
    pub migrated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no libvirt URI with index {0}")]
    NoSuchUri(usize),
    #[error("not connected to {0}")]
    NotConnected(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("command queue full")]
    Busy,
    #[error("command timed out")]
    Timeout,
    #[error("libvirt worker stopped")]
    WorkerGone,
    #[error("libvirt: {0}")]
    Libvirt(String),
    /// Reboot: the domain was destroyed but did not start again.
    #[error("destroyed, but the restart failed: {0}")]
    RestartFailed(String),
}

pub type CommandResult = Result<CommandReply, CommandError>;

/// A queued command.
pub(crate) struct CommandRequest {
    pub cmd: LibvirtCommand,
    pub deadline: Instant,
    pub reply: oneshot::Sender<CommandResult>,
}

/// Counters of one worker (monotonic since spawn).
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// `Connect::open` attempts.
    pub connect_attempts: AtomicU64,
    /// Successful connections (registration and listing done).
    pub connects: AtomicU64,
    /// Connections lost after being established.
    pub disconnects: AtomicU64,
    /// Full listings sent.
    pub listings: AtomicU64,
    /// Callback events dropped because the queue was full.
    pub dropped_events: AtomicU64,
    /// True while connected.
    pub connected: AtomicBool,
}

/// A copy of [`WorkerStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub connect_attempts: u64,
    pub connects: u64,
    pub disconnects: u64,
    pub listings: u64,
    pub events_received: u64,
    pub dropped_events: u64,
    pub connected: bool,
}

#[derive(Clone)]
struct WorkerLink {
    uri: String,
    commands: SyncSender<CommandRequest>,
    wake: SyncSender<RawEvent>,
    stats: Arc<WorkerStats>,
    shared: Arc<Shared>,
}

/// Running libvirt workers.
pub struct LibvirtHandle {
    /// One per URI; they exit within about a second of cancellation.
    pub threads: Vec<JoinHandle<()>>,
    workers: Vec<WorkerLink>,
    command_timeout: Duration,
}

impl LibvirtHandle {
    /// The URIs, in worker index order.
    pub fn uris(&self) -> Vec<String> {
        self.workers.iter().map(|w| w.uri.clone()).collect()
    }

    /// Counters of the worker for `uri_index`.
    pub fn stats(&self, uri_index: usize) -> Option<StatsSnapshot> {
        let w = self.workers.get(uri_index)?;
        let s = &w.stats;
        Some(StatsSnapshot {
            connect_attempts: s.connect_attempts.load(Ordering::Relaxed),
            connects: s.connects.load(Ordering::Relaxed),
            disconnects: s.disconnects.load(Ordering::Relaxed),
            listings: s.listings.load(Ordering::Relaxed),
            events_received: w.shared.received.load(Ordering::Relaxed),
            dropped_events: s.dropped_events.load(Ordering::Relaxed),
            connected: s.connected.load(Ordering::Relaxed),
        })
    }

    /// Queues a command on the worker of `uri_index`. The worker answers a
    /// command it could not start within `Tuning::command_timeout` with
    /// [`CommandError::Timeout`]; callers should still bound their wait
    /// (see [`Self::execute_timeout`]).
    pub fn execute(
        &self,
        uri_index: usize,
        cmd: LibvirtCommand,
    ) -> oneshot::Receiver<CommandResult> {
        queue_command(&self.workers, self.command_timeout, uri_index, cmd)
    }

    /// A cloneable command sender for tasks (the fence action runner).
    pub fn commander(&self) -> Commander {
        Commander {
            workers: self.workers.clone(),
            command_timeout: self.command_timeout,
        }
    }

    /// [`Self::execute`] and wait at most `timeout` for the answer.
    pub async fn execute_timeout(
        &self,
        uri_index: usize,
        cmd: LibvirtCommand,
        timeout: Duration,
    ) -> CommandResult {
        match tokio::time::timeout(timeout, self.execute(uri_index, cmd)).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(CommandError::WorkerGone),
            Err(_) => Err(CommandError::Timeout),
        }
    }
}

/// Queues commands on the workers; cheap to clone.
#[derive(Clone)]
pub struct Commander {
    workers: Vec<WorkerLink>,
    command_timeout: Duration,
}

impl Commander {
    /// The worker index serving `uri`.
    pub fn uri_index(&self, uri: &str) -> Option<usize> {
        self.workers.iter().position(|w| w.uri == uri)
    }

    /// [`LibvirtHandle::execute`], bounded by `timeout`.
    pub async fn execute_timeout(
        &self,
        uri_index: usize,
        cmd: LibvirtCommand,
        timeout: Duration,
    ) -> CommandResult {
        let rx = queue_command(&self.workers, self.command_timeout, uri_index, cmd);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(CommandError::WorkerGone),
            Err(_) => Err(CommandError::Timeout),
        }
    }
}

fn queue_command(
    workers: &[WorkerLink],
    command_timeout: Duration,
    uri_index: usize,
    cmd: LibvirtCommand,
) -> oneshot::Receiver<CommandResult> {
    let (tx, rx) = oneshot::channel();
    let Some(w) = workers.get(uri_index) else {
        let _ = tx.send(Err(CommandError::NoSuchUri(uri_index)));
        return rx;
    };
    let req = CommandRequest {
        cmd,
        deadline: Instant::now() + command_timeout,
        reply: tx,
    };
    match w.commands.try_send(req) {
        Ok(()) => {
            // Wake the worker; when the event queue is full it is busy
            // and looks at commands after every event anyway.
            let _ = w.wake.try_send(RawEvent::Wake);
        }
        Err(TrySendError::Full(req)) => {
            let _ = req.reply.send(Err(CommandError::Busy));
        }
        Err(TrySendError::Disconnected(req)) => {
            let _ = req.reply.send(Err(CommandError::WorkerGone));
        }
    }
    rx
}

/// Starts one worker per URI with the default [`Tuning`].
pub fn spawn(
    cfg: LibvirtConfig,
    inputs: InputTx,
    cancel: CancellationToken,
) -> std::io::Result<LibvirtHandle> {
    spawn_with(cfg, Tuning::default(), inputs, cancel)
}

/// Starts one worker per URI.
pub fn spawn_with(
    cfg: LibvirtConfig,
    tuning: Tuning,
    inputs: InputTx,
    cancel: CancellationToken,
) -> std::io::Result<LibvirtHandle> {
    let mut handle = LibvirtHandle {
        threads: Vec::new(),
        workers: Vec::new(),
        command_timeout: tuning.command_timeout,
    };
    if cfg.uris.is_empty() {
        return Ok(handle);
    }
    // Our own token: a failed spawn stops only the workers started here.
    let cancel = cancel.child_token();
    let lease = Arc::new(EventLoopLease::acquire()?);
    let reconcile = cfg.reconcile_interval.max(tuning.min_reconcile);
    for (index, uri) in cfg.uris.iter().enumerate() {
        let (ev_tx, ev_rx) = mpsc::sync_channel(tuning.event_queue.max(1));
        let (cmd_tx, cmd_rx) = mpsc::sync_channel(tuning.command_queue.max(1));
        let stats = Arc::new(WorkerStats::default());
        let shared = Arc::new(Shared::default());
        let w = worker::Worker {
            index,
            uri: uri.clone(),
            inputs: inputs.clone(),
            cancel: cancel.clone(),
            tuning: tuning.clone(),
            filter_cfg: tuning.filter(),
            reconcile,
            events_tx: ev_tx.clone(),
            events: ev_rx,
            commands: cmd_rx,
            stats: stats.clone(),
            shared: shared.clone(),
            _lease: lease.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("libvirt-{index}"))
            .spawn(move || w.run());
        match spawned {
            Ok(t) => handle.threads.push(t),
            Err(e) => {
                // Stop the workers already running before failing.
                cancel.cancel();
                for t in handle.threads.drain(..) {
                    let _ = t.join();
                }
                return Err(e);
            }
        }
        handle.workers.push(WorkerLink {
            uri: uri.clone(),
            commands: cmd_tx,
            wake: ev_tx,
            stats,
            shared,
        });
    }
    Ok(handle)
}

// ---------------------------------------------------------------------------
// The process-wide event loop.

/// How often the event loop wakes up without events.
const LOOP_TICK_MS: i32 = 200;

static LOOP_INIT: Once = Once::new();
static LOOP_INIT_RESULT: OnceLock<Result<(), String>> = OnceLock::new();
static LOOP: Mutex<LoopState> = Mutex::new(LoopState {
    users: 0,
    running: None,
});

struct LoopState {
    users: usize,
    running: Option<(JoinHandle<()>, Arc<AtomicBool>)>,
}

/// Registers libvirt's default event loop implementation (once per process,
/// before any connection is opened) and a wake-up timer.
fn init_event_impl() -> Result<(), String> {
    LOOP_INIT.call_once(|| {
        virt::error::clear_error_callback();
        let r = virt::event::event_register_default_impl()
            .map_err(|e| format!("virEventRegisterDefaultImpl: {e}"))
            .and_then(|()| {
                ffi::add_wakeup_timer(LOOP_TICK_MS)
                    .map(|_| ())
                    .map_err(|e| format!("virEventAddTimeout: {e}"))
            });
        let _ = LOOP_INIT_RESULT.set(r);
    });
    LOOP_INIT_RESULT
        .get()
        .cloned()
        .unwrap_or_else(|| Err("libvirt event loop initialisation failed".into()))
}

/// Registers libvirt's default event loop implementation and silences
/// libvirt's stderr error printer. [`spawn`] does this itself; call it first
/// only when the process opens other libvirt connections before spawning
/// (libvirt requires the implementation to be registered before any
/// connection is opened). Idempotent.
pub fn prepare() -> std::io::Result<()> {
    init_event_impl().map_err(std::io::Error::other)
}

/// Keeps the event-loop thread running; the last lease stops and joins it.
struct EventLoopLease;

impl EventLoopLease {
    fn acquire() -> std::io::Result<Self> {
        init_event_impl().map_err(std::io::Error::other)?;
        let mut st = LOOP.lock().unwrap_or_else(|p| p.into_inner());
        if st.users == 0 {
            // A previous loop thread may still be winding down.
            if let Some((t, stop)) = st.running.take() {
                stop.store(true, Ordering::Release);
                let _ = t.join();
            }
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let t = std::thread::Builder::new()
                .name("libvirt-events".into())
                .spawn(move || run_event_loop(&flag))?;
            st.running = Some((t, stop));
        }
        st.users += 1;
        Ok(EventLoopLease)
    }
}

impl Drop for EventLoopLease {
    fn drop(&mut self) {
        let mut st = LOOP.lock().unwrap_or_else(|p| p.into_inner());
        st.users = st.users.saturating_sub(1);
        if st.users == 0
            && let Some((t, stop)) = st.running.take()
        {
            stop.store(true, Ordering::Release);
            // Returns within one tick: the loop wakes up at least every LOOP_TICK_MS.
            let _ = t.join();
            debug!("libvirt event loop stopped");
        }
    }
}

fn run_event_loop(stop: &AtomicBool) {
    debug!("libvirt event loop started");
    let mut failures = 0u32;
    while !stop.load(Ordering::Acquire) {
        match virt::event::event_run_default_impl() {
            Ok(()) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    error!("libvirt event loop iteration failed: {e}");
                } else {
                    warn!(failures, "libvirt event loop still failing: {e}");
                }
                // Never spin.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_ref_parsing() {
        assert_eq!(
            DomainRef::parse("6695EB01-f6a4-8304-79aa-97f2502e193f"),
            DomainRef::Uuid("6695eb01-f6a4-8304-79aa-97f2502e193f".into())
        );
        assert_eq!(DomainRef::parse("test"), DomainRef::Name("test".into()));
        // Not canonical: no dashes, wrong places, non-hex.
        for s in [
            "6695eb01f6a4830479aa97f2502e193f",
            "6695eb01-f6a48-304-79aa-97f2502e193f",
            "6695eb01-f6a4-8304-79aa-97f2502e193g",
            "6695eb01-f6a4-8304-79aa-97f2502e193f0",
        ] {
            assert_eq!(DomainRef::parse(s), DomainRef::Name(s.into()), "{s}");
        }
    }
}
